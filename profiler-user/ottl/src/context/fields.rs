//! `fld!`: one-line [`super::Field`] entries for plain OTLP scalar fields, so the context
//! tables read as lists of paths.

/// `fld!(kind, proj, proj_mut, field)`: a field reached through the context's `proj(&self)`
/// / `proj_mut(&mut self)` accessors. Kinds: `str`, `u32`, `i32`, `i64`, `bool`,
/// `nanos` (a `u64` read as `Int`), `time` (a `u64` read as `Time`), `bytes`.
macro_rules! fld {
    (str, $p:ident, $pm:ident, $f:ident) => {
        $crate::context::Field::Value {
            get: |c| $crate::value::Value::String(c.$p().$f.clone()),
            set: Some(|c, v| $crate::context::set_string(&mut c.$pm().$f, v)),
        }
    };
    (u32, $p:ident, $pm:ident, $f:ident) => {
        $crate::context::Field::Value {
            get: |c| $crate::value::Value::Int(c.$p().$f.into()),
            set: Some(|c, v| $crate::context::set_u32(&mut c.$pm().$f, v)),
        }
    };
    (i32, $p:ident, $pm:ident, $f:ident) => {
        $crate::context::Field::Value {
            get: |c| $crate::value::Value::Int(c.$p().$f.into()),
            set: Some(|c, v| $crate::context::set_i32(&mut c.$pm().$f, v)),
        }
    };
    (i64, $p:ident, $pm:ident, $f:ident) => {
        $crate::context::Field::Value {
            get: |c| $crate::value::Value::Int(c.$p().$f),
            set: Some(|c, v| $crate::context::set_i64(&mut c.$pm().$f, v)),
        }
    };
    (bool, $p:ident, $pm:ident, $f:ident) => {
        $crate::context::Field::Value {
            get: |c| $crate::value::Value::Bool(c.$p().$f),
            set: Some(|c, v| {
                c.$pm().$f = v.expect_bool()?;
                Ok(())
            }),
        }
    };
    (nanos, $p:ident, $pm:ident, $f:ident) => {
        $crate::context::Field::Value {
            get: |c| $crate::context::int_of(c.$p().$f),
            set: Some(|c, v| $crate::context::set_u64(&mut c.$pm().$f, v)),
        }
    };
    (time, $p:ident, $pm:ident, $f:ident) => {
        $crate::context::Field::Value {
            get: |c| $crate::context::time_of(c.$p().$f),
            set: Some(|c, v| $crate::context::set_time(&mut c.$pm().$f, v)),
        }
    };
    (bytes, $p:ident, $pm:ident, $f:ident) => {
        $crate::context::Field::Value {
            get: |c| $crate::value::Value::Bytes(c.$p().$f.clone()),
            set: Some(|c, v| match v {
                $crate::value::Value::Bytes(b) => {
                    c.$pm().$f = b;
                    Ok(())
                }
                other => Err($crate::value::type_error($crate::value::Type::Bytes, &other)),
            }),
        }
    };
    (attrs, $p:ident, $pm:ident, $f:ident) => {
        $crate::context::Field::Attributes { get: |c| &c.$p().$f, get_mut: |c| &mut c.$pm().$f }
    };
    (id $n:literal, $p:ident, $pm:ident, $f:ident) => {
        $crate::context::Field::Value {
            get: |c| $crate::value::Value::Bytes(c.$p().$f.clone()),
            set: Some(|c, v| $crate::context::set_id(&mut c.$pm().$f, v, $n, false)),
        }
    };
    (idhex $n:literal, $p:ident, $pm:ident, $f:ident) => {
        $crate::context::Field::Value {
            get: |c| $crate::value::Value::String($crate::value::hex(&c.$p().$f)),
            set: Some(|c, v| $crate::context::set_id(&mut c.$pm().$f, v, $n, true)),
        }
    };
}
pub(crate) use fld;
