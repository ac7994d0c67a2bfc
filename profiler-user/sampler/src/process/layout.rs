//! Where a file's own virtual addresses land in a process: the load bias of a mapping.

use object::{Object, ObjectSegment};

use super::Mapping;

/// (file offset, virtual address, size in file) of every PT_LOAD segment with file bytes.
pub type Segments = Vec<(u64, u64, u64)>;

pub fn segments(file: &object::File<'_>) -> Segments {
    file.segments()
        .filter(|s| s.file_range().1 > 0)
        .map(|s| (s.file_range().0, s.address(), s.file_range().1))
        .collect()
}

/// The bias of mapping `m` of a file with `segments`: process address = file vaddr + bias.
///
/// The segment the mapping maps gives the file's virtual address at its start. The kernel maps
/// from the page-aligned file offset, which can lie inside the previous segment's bytes (lld lays
/// out `R` at 0..0x16954 and `R E` at file 0x16960 / vaddr 0x17960, mapped from 0x16000): take the
/// last segment whose page-aligned start is at or below the offset.
pub fn bias(segments: &[(u64, u64, u64)], m: &Mapping) -> Option<u64> {
    let &(p_offset, p_vaddr, _) = segments
        .iter()
        .filter(|(off, _, size)| off & !0xfff <= m.offset && m.offset < off + size)
        .max_by_key(|(off, _, _)| *off)?;
    // p_vaddr + (m.offset - p_offset), where m.offset may be below p_offset (see above).
    let vaddr_at_start = p_vaddr.wrapping_add(m.offset).wrapping_sub(p_offset);
    Some(m.start.wrapping_sub(vaddr_at_start))
}
