//! The built-in editors and converters.

use crate::func::Function;

/// Every built-in function.
pub(crate) fn all() -> &'static [Function] {
    &[]
}
