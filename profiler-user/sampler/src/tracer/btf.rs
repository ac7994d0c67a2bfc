//! Kernel struct offsets from the kernel's BTF (`/sys/kernel/btf/vmlinux`).
//!
//! aya-ebpf cannot relocate struct fields from Rust (no CO-RE), so the BPF programs get the few
//! offsets they need from here: a small reader of the BTF type section, enough to walk a struct's
//! members through typedefs and qualifiers.

use std::collections::HashMap;

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("reading {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("malformed BTF: {0}")]
    Malformed(&'static str),
    #[error("no {0} in the kernel's BTF")]
    Missing(String),
}

const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

struct Type {
    name_off: u32,
    info: u32,
    /// Size, or referenced type id.
    size_type: u32,
    /// Byte range of the kind-specific data after the common header.
    extra: std::ops::Range<usize>,
}

impl Type {
    fn kind(&self) -> u32 {
        (self.info >> 24) & 0x1f
    }
    fn vlen(&self) -> usize {
        (self.info & 0xffff) as usize
    }
    fn kflag(&self) -> bool {
        self.info >> 31 == 1
    }
}

/// The type section of a BTF blob, indexed by type id.
pub struct Btf {
    data: Vec<u8>,
    strings: std::ops::Range<usize>,
    /// Index 0 is `void`.
    types: Vec<Type>,
    structs: HashMap<String, u32>,
}

fn u32_at(d: &[u8], at: usize) -> Result<u32, BtfError> {
    d.get(at..at + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])).ok_or(BtfError::Malformed("truncated"))
}

impl Btf {
    pub fn from_sys_fs() -> Result<Self, BtfError> {
        let path = "/sys/kernel/btf/vmlinux";
        let data = std::fs::read(path).map_err(|source| BtfError::Read { path: path.into(), source })?;
        Self::parse(data)
    }

    pub fn parse(data: Vec<u8>) -> Result<Self, BtfError> {
        if data.get(0..2) != Some(&[0x9f, 0xeb]) {
            return Err(BtfError::Malformed("bad magic (or not little-endian)"));
        }
        let hdr_len = u32_at(&data, 4)? as usize;
        let (type_off, type_len) = (u32_at(&data, 8)? as usize, u32_at(&data, 12)? as usize);
        let (str_off, str_len) = (u32_at(&data, 16)? as usize, u32_at(&data, 20)? as usize);
        let types_start = hdr_len + type_off;
        let types_end = types_start.checked_add(type_len).ok_or(BtfError::Malformed("type section"))?;
        let strings = hdr_len + str_off..hdr_len + str_off + str_len;
        if types_end > data.len() || strings.end > data.len() {
            return Err(BtfError::Malformed("sections past the end"));
        }
        let mut types = vec![Type { name_off: 0, info: 0, size_type: 0, extra: 0..0 }];
        let mut at = types_start;
        while at < types_end {
            let (name_off, info, size_type) = (u32_at(&data, at)?, u32_at(&data, at + 4)?, u32_at(&data, at + 8)?);
            at += 12;
            let t = Type { name_off, info, size_type, extra: at..at };
            let extra = match t.kind() {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 12 * t.vlen(),
                KIND_ENUM | KIND_FUNC_PROTO => 8 * t.vlen(),
                _ => 0,
            };
            types.push(Type { extra: at..at + extra, ..t });
            at += extra;
        }
        let mut btf = Self { data, strings, types, structs: HashMap::new() };
        for (id, t) in btf.types.iter().enumerate() {
            if t.kind() == KIND_STRUCT {
                let name = btf.name(t.name_off).to_string();
                btf.structs.entry(name).or_insert(id as u32);
            }
        }
        Ok(btf)
    }

    fn name(&self, off: u32) -> &str {
        let start = self.strings.start + off as usize;
        let bytes = self.data.get(start..self.strings.end).unwrap_or_default();
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        std::str::from_utf8(&bytes[..end]).unwrap_or("")
    }

    /// Follows typedefs and qualifiers to the underlying type id.
    fn resolve(&self, mut id: u32) -> u32 {
        for _ in 0..32 {
            match self.types.get(id as usize).map(Type::kind) {
                Some(KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG) => {
                    id = self.types[id as usize].size_type
                }
                _ => break,
            }
        }
        id
    }

    /// (byte offset, type id) of member `name` of struct/union type `id`.
    fn member(&self, id: u32, name: &str) -> Option<(usize, u32)> {
        let t = self.types.get(id as usize)?;
        if t.kind() != KIND_STRUCT && t.kind() != KIND_UNION {
            return None;
        }
        (0..t.vlen()).find_map(|i| {
            let at = t.extra.start + 12 * i;
            let (name_off, ty, off) =
                (u32_at(&self.data, at).ok()?, u32_at(&self.data, at + 4).ok()?, u32_at(&self.data, at + 8).ok()?);
            let bits = if t.kflag() { off & 0xff_ffff } else { off };
            (self.name(name_off) == name).then_some((bits as usize / 8, ty))
        })
    }

    /// Byte offset of a member path such as `task_struct` / `["thread", "fsbase"]`.
    pub fn offset_of(&self, structure: &str, path: &[&str]) -> Result<usize, BtfError> {
        let mut id = *self.structs.get(structure).ok_or_else(|| BtfError::Missing(format!("struct {structure}")))?;
        let mut offset = 0;
        for field in path {
            let (off, ty) = self
                .member(self.resolve(id), field)
                .ok_or_else(|| BtfError::Missing(format!("{structure}.{}", path.join("."))))?;
            offset += off;
            id = ty;
        }
        Ok(offset)
    }
}

/// Offset of `task_struct.thread.fsbase`: where the kernel keeps a task's thread pointer.
pub fn fsbase_offset() -> Result<u32, BtfError> {
    let off = Btf::from_sys_fs()?.offset_of("task_struct", &["thread", "fsbase"])?;
    u32::try_from(off).map_err(|_| BtfError::Malformed("offset out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_task_struct_fields_in_the_running_kernel() {
        let Ok(btf) = Btf::from_sys_fs() else {
            eprintln!("skipped: no /sys/kernel/btf/vmlinux");
            return;
        };
        let fsbase = btf.offset_of("task_struct", &["thread", "fsbase"]).unwrap();
        let thread = btf.offset_of("task_struct", &["thread"]).unwrap();
        // thread_struct is the last member of task_struct and fsbase lies inside it.
        assert!(thread > 1000 && fsbase > thread && fsbase < thread + 256, "thread {thread}, fsbase {fsbase}");
        assert_eq!(btf.offset_of("task_struct", &["pid"]).unwrap() % 4, 0);
        assert!(btf.offset_of("task_struct", &["no_such_field"]).is_err());
        assert!(btf.offset_of("no_such_struct", &[]).is_err());
        assert!(Btf::parse(vec![1, 2, 3]).is_err());
    }
}
