//! The running kernel: `/proc/kallsyms` (and vmlinux DWARF where installed), through blazesym.

use blazesym::symbolize::{source, Input};

use crate::{elf::convert, Error, Symbol};

/// Resolves sorted, unique absolute kernel addresses.
pub(crate) fn resolve(blaze: &blazesym::symbolize::Symbolizer, addrs: &[u64]) -> Result<Vec<Symbol>, Error> {
    let src = source::Source::Kernel(source::Kernel::default());
    let out = blaze.symbolize(&src, Input::AbsAddr(addrs)).map_err(Error::Kernel)?;
    Ok(out.into_iter().map(convert).collect())
}
