//! Unwind tables in the kernel: compiled once per file (keyed by build ID or inode identity),
//! uploaded into the `UNWIND_ROWS` array, and described per process in `PROC_UNWIND`.
//!
//! Rows are placed with a bump allocator in an array of fixed capacity; when it is full, further
//! files get no table (their frames fall back to frame pointers) and the count says so.

use std::{collections::HashMap, path::PathBuf, sync::Arc};

use object::{Object, ObjectSegment};
use profiler_common::{ProcUnwind, UnwindMapping, MAX_UNWIND_MAPPINGS};
use symbolizer::FileKey;

use super::compile;
use crate::{
    process::{files::MappedFile, Mapping, Refreshed},
    tracer::Tracer,
};

/// A copy of this process's `[vdso]` image.
fn own_vdso() -> Option<Vec<u8>> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    let line = maps.lines().find(|l| l.ends_with("[vdso]"))?;
    let (s, e) = line.split_whitespace().next()?.split_once('-')?;
    let (s, e) = (u64::from_str_radix(s, 16).ok()?, u64::from_str_radix(e, 16).ok()?);
    // SAFETY: [vdso] is a readable mapping of this process for its whole life.
    Some(unsafe { std::slice::from_raw_parts(s as *const u8, (e - s) as usize) }.to_vec())
}

/// A file's table in the rows array, and its load segments (to turn mapping offsets into the
/// file's virtual addresses).
#[derive(Clone, Debug)]
struct Placed {
    rows_start: u32,
    rows_len: u32,
    /// (file offset, virtual address, size in file) of every PT_LOAD segment.
    segments: Vec<(u64, u64, u64)>,
}

/// What the tables cost and how many files have one.
#[derive(Clone, Copy, Debug, Default)]
pub struct StoreStats {
    pub files: u64,
    pub rows: u64,
    /// Files without a usable table (no CFI, malformed, not x86_64): frame pointers there.
    pub failed: u64,
    /// Files left without a table because the rows array was full.
    pub full: u64,
}

impl StoreStats {
    pub fn bytes(&self) -> u64 {
        self.rows * size_of::<profiler_common::UnwindRow>() as u64
    }
}

pub struct TableStore {
    tables: HashMap<FileKey, Option<Placed>>,
    /// The kernel's vDSO (the same in every process), compiled from otelprof's own copy.
    vdso: Option<Option<Placed>>,
    next: u32,
    capacity: u32,
    pub stats: StoreStats,
}

impl TableStore {
    pub fn new(capacity: u32) -> Self {
        Self { tables: HashMap::new(), vdso: None, next: 0, capacity, stats: StoreStats::default() }
    }

    /// The file's table, compiling and uploading it on first sight. Errors are logged once per
    /// file; the file then has no table.
    fn ensure(&mut self, key: &FileKey, path: &std::path::Path, name: &str, tracer: &mut Tracer) -> Option<&Placed> {
        if !self.tables.contains_key(key) {
            let placed = self.place(path, name, tracer);
            self.tables.insert(key.clone(), placed);
        }
        self.tables.get(key)?.as_ref()
    }

    fn place(&mut self, path: &std::path::Path, name: &str, tracer: &mut Tracer) -> Option<Placed> {
        // Mapped, not read: compiling touches only the headers and the CFI sections, and binaries
        // with debug info can be hundreds of megabytes.
        let map = std::fs::File::open(path).and_then(|f| {
            // SAFETY: read-only private mapping; a file truncated underneath would fault, which
            // is the same risk every symbolizer that maps binaries takes.
            unsafe { memmap2::Mmap::map(&f) }
        });
        let data = match map {
            Ok(d) => d,
            Err(e) => {
                tracing::debug!("{name}: {e}; frame pointers there");
                self.stats.failed += 1;
                return None;
            }
        };
        self.place_bytes(&data, name, tracer)
    }

    fn place_bytes(&mut self, data: &[u8], name: &str, tracer: &mut Tracer) -> Option<Placed> {
        let table = match compile(data) {
            Ok(t) => t,
            Err(e) => {
                tracing::info!("{name}: no unwind table ({e}); frame pointers there");
                self.stats.failed += 1;
                return None;
            }
        };
        let len = u32::try_from(table.rows.len()).ok()?;
        if self.next.saturating_add(len) > self.capacity {
            tracing::warn!("unwind table space full: {name} ({len} rows) falls back to frame pointers");
            self.stats.full += 1;
            return None;
        }
        if let Err(e) = tracer.write_unwind_rows(self.next, &table.rows) {
            tracing::warn!("{name}: uploading its unwind table failed: {e}");
            self.stats.failed += 1;
            return None;
        }
        let segments = object::File::parse(data)
            .map(|f| {
                f.segments()
                    .filter(|s| s.file_range().1 > 0)
                    .map(|s| (s.file_range().0, s.address(), s.file_range().1))
                    .collect()
            })
            .unwrap_or_default();
        let placed = Placed { rows_start: self.next, rows_len: len, segments };
        self.next += len;
        self.stats.files += 1;
        self.stats.rows += len as u64;
        Some(placed)
    }

    /// Compiles and uploads the table of a file ahead of need (e.g. the command `record` is
    /// about to start), so its first samples already unwind with it.
    pub fn preload(&mut self, path: &std::path::Path, tracer: &mut Tracer) {
        if let Ok(key) = FileKey::from_path(path) {
            let name = path.display().to_string();
            self.ensure(&key, path, &name, tracer);
        }
    }

    /// The vDSO's table: compiled once from this process's own `[vdso]` (the kernel maps the same
    /// image into every process).
    fn vdso(&mut self, tracer: &mut Tracer) -> Option<Placed> {
        if self.vdso.is_none() {
            let placed = own_vdso().and_then(|bytes| self.place_bytes(&bytes, "[vdso]", tracer));
            self.vdso = Some(placed);
        }
        self.vdso.clone().flatten()
    }

    /// The `PROC_UNWIND` value for a process's executable mappings, uploading tables of files
    /// seen for the first time. `None` when none of its files has a table.
    pub fn process(&mut self, refreshed: &Refreshed, tracer: &mut Tracer) -> Option<ProcUnwind> {
        let mut value = ProcUnwind { count: 0, _pad: 0, mappings: [UnwindMapping::default(); MAX_UNWIND_MAPPINGS] };
        let mut all: Vec<(Mapping, Option<&Arc<MappedFile>>)> =
            refreshed.mappings.iter().map(|(m, f)| (*m, Some(f))).collect();
        if let Some((start, end)) = refreshed.vdso {
            all.push((Mapping { start, end, offset: 0, file: 0 }, None));
            all.sort_by_key(|(m, _)| m.start);
        }
        for (m, file) in &all {
            if value.count as usize >= MAX_UNWIND_MAPPINGS {
                break;
            }
            let placed = match file {
                Some(file) => self.ensure(&file.key, &file.open_path, &file.path, tracer).cloned(),
                None => self.vdso(tracer),
            };
            let Some(placed) = placed else { continue };
            // The segment this mapping maps gives the file's virtual address at its start. The
            // kernel maps from the page-aligned file offset, which can lie inside the previous
            // segment's bytes (lld lays out `R` at 0..0x16954 and `R E` at file 0x16960 / vaddr
            // 0x17960, mapped from 0x16000): take the last segment whose page-aligned start is
            // at or below the mapping's offset.
            let Some(&(p_offset, p_vaddr, _)) = placed
                .segments
                .iter()
                .filter(|(off, _, size)| off & !0xfff <= m.offset && m.offset < off + size)
                .max_by_key(|(off, _, _)| *off)
            else {
                continue;
            };
            // p_vaddr + (m.offset - p_offset), where m.offset may be below p_offset (see above).
            let vaddr_at_start = p_vaddr.wrapping_add(m.offset).wrapping_sub(p_offset);
            value.mappings[value.count as usize] = UnwindMapping {
                start: m.start,
                end: m.end,
                bias: m.start.wrapping_sub(vaddr_at_start),
                rows_start: placed.rows_start,
                rows_len: placed.rows_len,
            };
            value.count += 1;
        }
        (value.count > 0).then_some(value)
    }
}

/// Uploads tables for processes whose mappings were (re-)read and points BPF at them.
pub fn push_tables(store: &mut TableStore, tracker: &mut crate::process::ProcessTracker, tracer: &mut Tracer) {
    for refreshed in tracker.take_refreshed() {
        if let Some(value) = store.process(&refreshed, tracer) {
            if let Err(e) = tracer.set_proc_unwind(refreshed.pid, &value) {
                tracing::warn!("PID {}: unwind tables not installed: {e}", refreshed.pid);
            }
        }
    }
}

/// Shared libraries mapped into otelprof itself (the system's libc, ld.so, ...).
pub fn own_shared_libraries() -> Vec<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let mut libs: Vec<PathBuf> = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .filter(|p| p.starts_with('/') && p.contains(".so"))
        .map(PathBuf::from)
        .collect();
    libs.sort();
    libs.dedup();
    libs
}
