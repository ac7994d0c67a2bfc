//! Unwind tables in the kernel: compiled once per file (keyed by build ID or inode identity),
//! uploaded into the `UNWIND_ROWS` array, and described per process in `PROC_UNWIND`.
//!
//! Tables are reference-counted by the processes whose mapping lists point at them. A table no
//! process uses stays for a grace period, then its rows go back to the free list; when the array
//! is full, idle tables are released first, and a file that still does not fit gets no table
//! (its frames fall back to frame pointers) and the count says so.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use profiler_common::{ProcUnwind, UnwindMapping, UnwindRow, MAX_UNWIND_MAPPINGS};
use symbolizer::FileKey;

use super::{alloc::RowAllocator, compile};
use crate::{
    process::{files, layout, Mapping, Refreshed},
    tracer::{Tracer, TracerError},
};

/// A file's table in the rows array, and its load segments (to turn mapping offsets into the
/// file's virtual addresses).
#[derive(Clone, Debug)]
struct Placed {
    rows_start: u32,
    rows_len: u32,
    segments: layout::Segments,
}

/// What the tables cost and how many files have one.
#[derive(Clone, Copy, Debug, Default)]
pub struct StoreStats {
    /// Files whose table is in the rows array now (in use or idle).
    pub files: u64,
    /// Rows in the array now.
    pub rows: u64,
    /// Most rows in the array at any time.
    pub peak_rows: u64,
    /// Files without a usable table (no CFI, malformed, not x86_64): frame pointers there.
    pub failed: u64,
    /// Uploads refused because the rows array was full (the file's frames use frame pointers
    /// until a later use finds room).
    pub full: u64,
    /// Tables released because no process used them any more.
    pub released: u64,
    /// Processes with tables installed.
    pub processes: u64,
}

impl StoreStats {
    pub fn bytes(&self) -> u64 {
        self.rows * size_of::<UnwindRow>() as u64
    }

    pub fn peak_bytes(&self) -> u64 {
        self.peak_rows * size_of::<UnwindRow>() as u64
    }
}

/// Where tables and per-process mapping lists go: the BPF maps (the [`Tracer`]), or memory in
/// unit tests of the bookkeeping.
pub trait UnwindMaps {
    fn write_rows(&mut self, start: u32, rows: &[UnwindRow]) -> Result<(), TracerError>;
    fn set_proc(&mut self, tgid: u32, value: &ProcUnwind) -> Result<(), TracerError>;
    fn remove_proc(&mut self, tgid: u32);
}

impl UnwindMaps for Tracer {
    fn write_rows(&mut self, start: u32, rows: &[UnwindRow]) -> Result<(), TracerError> {
        self.write_unwind_rows(start, rows)
    }

    fn set_proc(&mut self, tgid: u32, value: &ProcUnwind) -> Result<(), TracerError> {
        self.set_proc_unwind(tgid, value)
    }

    fn remove_proc(&mut self, tgid: u32) {
        self.remove_proc_unwind(tgid)
    }
}

/// A table's identity: the file's, or the kernel's vDSO (the same image in every process).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum TableKey {
    File(FileKey),
    Vdso,
}

struct Table {
    /// `None`: the file has no usable table (logged once, remembered so it is not retried).
    placed: Option<Placed>,
    /// Processes whose installed mapping list points at this table (plus one for a preload).
    users: u32,
    /// Since when no process uses it; it is released `idle_grace` later, or earlier when the
    /// rows are needed.
    idle_since: Option<Instant>,
    /// No table because the rows array was full (tried again on the next use).
    refused_full: bool,
}

/// How long a table no process uses stays before its rows are released (sooner when the rows
/// array is full).
pub const IDLE_GRACE: Duration = Duration::from_secs(5);

/// Files without a table are remembered (not retried, not logged again) up to this many.
const MAX_FAILED_REMEMBERED: usize = 16384;

/// Unwind tables in the BPF maps, shared by every process that maps the same file and released
/// when none does.
pub struct TableStore {
    tables: HashMap<TableKey, Table>,
    /// The tables each process's installed mapping list uses.
    procs: HashMap<u32, Vec<TableKey>>,
    rows: RowAllocator,
    /// What BPF has, mirrored for walking stack copies here (`deferred`): each table's rows by
    /// their start in the rows array, and each process's installed mapping list. (Twice the
    /// rows' memory until the rows array is mapped into user space.)
    rows_mirror: HashMap<u32, Arc<[UnwindRow]>>,
    lists: HashMap<u32, Vec<UnwindMapping>>,
    /// How long a table no process uses stays (a short-lived program started again soon, as
    /// a shell loop or cron does, then needs no recompiling).
    idle_grace: Duration,
    failed_remembered: usize,
    pub stats: StoreStats,
}

impl TableStore {
    pub fn new(capacity: u32, idle_grace: Duration) -> Self {
        Self {
            tables: HashMap::new(),
            procs: HashMap::new(),
            rows: RowAllocator::new(capacity),
            rows_mirror: HashMap::new(),
            lists: HashMap::new(),
            idle_grace,
            failed_remembered: 0,
            stats: StoreStats::default(),
        }
    }

    /// Takes a reference on the table of `key`, compiling and uploading it on first sight.
    /// Errors are logged once per file; the file then has no table.
    fn acquire(
        &mut self,
        key: &TableKey,
        path: Option<&Path>,
        name: &str,
        maps: &mut dyn UnwindMaps,
    ) -> Option<Placed> {
        // A file refused for lack of room is tried again: idle tables may have gone since.
        let known = self.tables.get(key).map(|t| t.placed.is_some() || !t.refused_full);
        if known != Some(true) {
            let full_before = self.stats.full;
            let placed = match path {
                Some(path) => self.place(path, name, maps),
                None => symbolizer::vdso::own_image().and_then(|bytes| self.place_bytes(bytes, name, maps)),
            };
            let refused_full = self.stats.full > full_before;
            if placed.is_none() && known.is_none() {
                self.failed_remembered += 1;
            }
            let users = self.tables.get(key).map_or(0, |t| t.users);
            self.tables.insert(key.clone(), Table { placed, users, idle_since: None, refused_full });
        }
        let t = self.tables.get_mut(key)?;
        t.users += 1;
        t.idle_since = None;
        t.placed.clone()
    }

    /// Drops a reference; a table nobody uses becomes idle.
    fn release_key(&mut self, key: &TableKey) {
        if let Some(t) = self.tables.get_mut(key) {
            t.users = t.users.saturating_sub(1);
            if t.users == 0 {
                t.idle_since = Some(Instant::now());
            }
        }
    }

    /// Frees one table's rows and forgets it.
    fn free(&mut self, key: &TableKey) {
        if let Some(Table { placed: Some(p), .. }) = self.tables.remove(key) {
            self.rows.free(p.rows_start, p.rows_len);
            self.rows_mirror.remove(&p.rows_start);
            self.stats.files -= 1;
            self.stats.rows -= p.rows_len as u64;
            self.stats.released += 1;
        }
    }

    /// Releases tables idle for longer than the grace period (all idle ones with `force`).
    fn collect(&mut self, force: bool) {
        let grace = self.idle_grace;
        let expired: Vec<TableKey> = self
            .tables
            .iter()
            .filter(|(_, t)| t.placed.is_some() && t.idle_since.is_some_and(|s| force || s.elapsed() >= grace))
            .map(|(k, _)| k.clone())
            .collect();
        for key in &expired {
            self.free(key);
        }
        if self.failed_remembered > MAX_FAILED_REMEMBERED {
            self.tables.retain(|_, t| t.placed.is_some() || t.users > 0);
            self.failed_remembered = self.tables.values().filter(|t| t.placed.is_none()).count();
        }
    }

    /// `len` free rows, releasing idle tables (oldest first) when the array is full.
    fn alloc(&mut self, len: u32) -> Option<u32> {
        if let Some(start) = self.rows.alloc(len) {
            return Some(start);
        }
        let mut idle: Vec<(Instant, TableKey)> = self
            .tables
            .iter()
            .filter(|(_, t)| t.placed.is_some())
            .filter_map(|(k, t)| Some((t.idle_since?, k.clone())))
            .collect();
        idle.sort_by_key(|(since, _)| *since);
        for (_, key) in idle {
            self.free(&key);
            if let Some(start) = self.rows.alloc(len) {
                return Some(start);
            }
        }
        None
    }

    fn place(&mut self, path: &Path, name: &str, maps: &mut dyn UnwindMaps) -> Option<Placed> {
        let data = match files::map_readonly(path) {
            Ok(d) => d,
            Err(e) => {
                tracing::debug!("{name}: {e}; frame pointers there");
                self.stats.failed += 1;
                return None;
            }
        };
        self.place_bytes(&data, name, maps)
    }

    fn place_bytes(&mut self, data: &[u8], name: &str, maps: &mut dyn UnwindMaps) -> Option<Placed> {
        let table = match compile(data) {
            Ok(t) => t,
            Err(e) => {
                tracing::info!("{name}: no unwind table ({e}); frame pointers there");
                self.stats.failed += 1;
                return None;
            }
        };
        let len = u32::try_from(table.rows.len()).ok()?;
        let Some(start) = self.alloc(len) else {
            if self.stats.full == 0 {
                tracing::warn!("unwind table space full: {name} ({len} rows) falls back to frame pointers (further refusals are counted)");
            } else {
                tracing::debug!("unwind table space full: {name} ({len} rows) falls back to frame pointers");
            }
            self.stats.full += 1;
            return None;
        };
        if let Err(e) = maps.write_rows(start, &table.rows) {
            tracing::warn!("{name}: uploading its unwind table failed: {e}");
            self.rows.free(start, len);
            self.stats.failed += 1;
            return None;
        }
        let segments = object::File::parse(data).map(|f| layout::segments(&f)).unwrap_or_default();
        self.rows_mirror.insert(start, table.rows.into());
        self.stats.files += 1;
        self.stats.rows += len as u64;
        self.stats.peak_rows = self.stats.peak_rows.max(self.stats.rows);
        Some(Placed { rows_start: start, rows_len: len, segments })
    }

    /// Compiles and uploads the table of a file ahead of need (e.g. the command `record` is
    /// about to start), so its first samples already unwind with it. The table stays for the
    /// store's life.
    pub fn preload(&mut self, path: &Path, maps: &mut dyn UnwindMaps) {
        if let Ok(key) = FileKey::from_path(path) {
            let name = path.display().to_string();
            self.acquire(&TableKey::File(key), Some(path), &name, maps);
        }
    }

    /// Installs the mapping list of a process whose mappings were (re-)read, uploading tables of
    /// files seen for the first time and releasing those it no longer maps.
    pub fn install(&mut self, refreshed: &Refreshed, maps: &mut dyn UnwindMaps) {
        let mut keys: Vec<TableKey> = Vec::new();
        // (mapping, table): `None` tables are known code without one (frame pointers there).
        let mut entries: Vec<(u64, u64, Option<UnwindMapping>)> = Vec::new();
        let files = refreshed.mappings.iter().map(|(m, f)| (*m, Some(f)));
        let vdso = refreshed.vdso.map(|(start, end)| (Mapping { start, end, offset: 0, file: 0 }, None));
        for (m, file) in files.chain(vdso) {
            let key = match file {
                Some(f) => TableKey::File(f.key.clone()),
                None => TableKey::Vdso,
            };
            let placed = match self.tables.get(&key) {
                Some(t) if keys.contains(&key) => t.placed.clone(),
                _ => {
                    let (path, name) = match file {
                        Some(f) => (Some(f.open_path.as_path()), f.path.as_str()),
                        None => (None, "[vdso]"),
                    };
                    let placed = self.acquire(&key, path, name, maps);
                    keys.push(key);
                    placed
                }
            };
            let table = placed.as_ref().and_then(|p| table_mapping(p, &m));
            entries.push((m.start, m.end, table));
        }
        entries.extend(refreshed.anon_exec.iter().map(|&(start, end)| (start, end, None)));
        entries.sort_by_key(|e| e.0);
        let has_tables = entries.iter().any(|e| e.2.is_some());
        let old = self.procs.insert(refreshed.pid, keys).unwrap_or_default();
        if has_tables {
            let value = proc_value(&entries);
            match maps.set_proc(refreshed.pid, &value) {
                Ok(()) => {
                    let n = (value.count as usize).min(MAX_UNWIND_MAPPINGS);
                    self.lists.insert(refreshed.pid, value.mappings[..n].to_vec());
                }
                Err(e) => {
                    tracing::warn!("PID {}: unwind tables not installed: {e}", refreshed.pid);
                    self.lists.remove(&refreshed.pid);
                }
            }
        } else {
            maps.remove_proc(refreshed.pid);
            self.lists.remove(&refreshed.pid);
        }
        for key in &old {
            self.release_key(key);
        }
        self.stats.processes = self.procs.len() as u64;
    }

    /// Forgets a process that exited: its mapping list goes, its tables lose a user.
    pub fn release_process(&mut self, pid: u32, maps: &mut dyn UnwindMaps) {
        maps.remove_proc(pid);
        self.lists.remove(&pid);
        if let Some(keys) = self.procs.remove(&pid) {
            for key in &keys {
                self.release_key(key);
            }
        }
        self.stats.processes = self.procs.len() as u64;
    }

    /// Releases processes that are gone without an exit event (lost in a full ring buffer);
    /// returns them.
    pub fn reap(&mut self, maps: &mut dyn UnwindMaps) -> Vec<u32> {
        let gone: Vec<u32> =
            self.procs.keys().copied().filter(|pid| !Path::new(&format!("/proc/{pid}")).exists()).collect();
        for &pid in &gone {
            self.release_process(pid, maps);
        }
        gone
    }

    /// Releases tables idle for longer than the grace period.
    pub fn collect_idle(&mut self) {
        self.collect(false);
    }

    /// Releases every idle table now.
    pub fn release_idle(&mut self) {
        self.collect(true);
    }
}

impl super::deferred::Tables for TableStore {
    fn mappings(&self, pid: u32) -> Option<&[UnwindMapping]> {
        self.lists.get(&pid).map(Vec::as_slice)
    }

    fn rows(&self, mapping: &UnwindMapping) -> Option<&[UnwindRow]> {
        let rows = self.rows_mirror.get(&mapping.rows_start)?;
        (rows.len() == mapping.rows_len as usize).then_some(&rows[..])
    }
}

/// The BPF view of mapping `m` of a file with table `placed`: its load bias.
fn table_mapping(placed: &Placed, m: &Mapping) -> Option<UnwindMapping> {
    Some(UnwindMapping {
        start: m.start,
        end: m.end,
        bias: layout::bias(&placed.segments, m)?,
        rows_start: placed.rows_start,
        rows_len: placed.rows_len,
    })
}

/// The `PROC_UNWIND` value for sorted (start, end, table) entries. Every executable mapping is
/// listed, those without a table with no rows, so the unwinder reports only pcs user space has
/// not seen. When they do not all fit, mappings without tables go first and reports are off.
fn proc_value(entries: &[(u64, u64, Option<UnwindMapping>)]) -> ProcUnwind {
    let mut value = ProcUnwind {
        count: 0,
        armed: 1,
        complete: 1,
        _pad: 0,
        mappings: [UnwindMapping::default(); MAX_UNWIND_MAPPINGS],
    };
    let complete = entries.len() <= MAX_UNWIND_MAPPINGS;
    let kept = entries.iter().filter(|e| complete || e.2.is_some()).take(MAX_UNWIND_MAPPINGS);
    for (i, &(start, end, table)) in kept.enumerate() {
        value.mappings[i] = table.unwrap_or(UnwindMapping { start, end, bias: 0, rows_start: 0, rows_len: 0 });
        value.count = i as u32 + 1;
    }
    if !complete {
        value.armed = 0;
        value.complete = 0;
    }
    value
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::ProcessTracker;

    /// The BPF maps as memory: what the store wrote, to check its bookkeeping.
    #[derive(Default)]
    struct Maps {
        rows_written: Vec<(u32, usize)>,
        procs: HashMap<u32, ProcUnwind>,
    }

    impl UnwindMaps for Maps {
        fn write_rows(&mut self, start: u32, rows: &[UnwindRow]) -> Result<(), TracerError> {
            self.rows_written.push((start, rows.len()));
            Ok(())
        }
        fn set_proc(&mut self, tgid: u32, value: &ProcUnwind) -> Result<(), TracerError> {
            self.procs.insert(tgid, *value);
            Ok(())
        }
        fn remove_proc(&mut self, tgid: u32) {
            self.procs.remove(&tgid);
        }
    }

    fn refreshed(tracker: &mut ProcessTracker, pid: u32) -> Refreshed {
        tracker.refresh(pid);
        tracker.take_refreshed().pop().expect("process was read")
    }

    #[test]
    fn tables_are_shared_and_released_when_unused() {
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id();
        let start = Instant::now();
        while !std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|p| p.ends_with("sleep"))
            || !std::fs::read_to_string(format!("/proc/{pid}/maps")).is_ok_and(|m| m.contains("libc"))
        {
            assert!(start.elapsed() < Duration::from_secs(5), "sleep did not start");
            std::thread::sleep(Duration::from_millis(5));
        }
        let mut tracker = ProcessTracker::default();
        let mut maps = Maps::default();
        let mut store = TableStore::new(1 << 22, Duration::from_secs(3600));
        let me = refreshed(&mut tracker, std::process::id());
        store.install(&me, &mut maps);
        let mine = store.stats;
        assert!(mine.files >= 3, "test binary, libc, ld.so: {mine:?}");
        assert_eq!(maps.rows_written.len() as u64, mine.files, "one upload per file");
        let value = maps.procs[&std::process::id()];
        assert_eq!(value.armed, 1);
        let listed = &value.mappings[..value.count as usize];
        assert!(listed.windows(2).all(|w| w[0].end <= w[1].start), "sorted, disjoint");
        let own = tables_are_shared_and_released_when_unused as *const () as u64;
        assert!(listed.iter().any(|m| m.start <= own && own < m.end && m.rows_len > 0), "own code has a table");

        // sleep shares libc and ld.so: only its own executable is new.
        let other = refreshed(&mut tracker, pid);
        store.install(&other, &mut maps);
        assert_eq!(store.stats.files, mine.files + 1, "{:?}", store.stats);
        assert_eq!(maps.rows_written.len() as u64, mine.files + 1, "libc not compiled twice");
        let sleep_rows = store.stats.rows - mine.rows;

        // Re-reading a process (exec, dlopen) keeps its tables: nothing idle, nothing recompiled.
        store.install(&refreshed(&mut tracker, pid), &mut maps);
        store.release_idle();
        assert_eq!((store.stats.released, maps.rows_written.len() as u64), (0, mine.files + 1));

        // Gone: its mapping list goes at once; its own table after the grace period (forced
        // here), the shared ones stay.
        child.kill().unwrap();
        child.wait().unwrap();
        store.release_process(pid, &mut maps);
        assert!(!maps.procs.contains_key(&pid));
        assert_eq!(store.stats.files, mine.files + 1, "idle, not yet released");
        store.release_idle();
        assert_eq!(store.stats.released, 1);
        assert_eq!((store.stats.files, store.stats.rows), (mine.files, mine.rows));
        assert_eq!(store.rows.used() as u64, mine.rows);
        assert_eq!(store.stats.peak_rows, mine.rows + sleep_rows);

        // The freed rows are used again.
        store.preload(Path::new("/usr/bin/sleep"), &mut maps);
        let &(again, len) = maps.rows_written.last().unwrap();
        assert_eq!(len as u64, sleep_rows);
        assert!(u64::from(again) + len as u64 <= mine.rows + sleep_rows, "reused the freed range");
    }

    #[test]
    fn a_full_array_releases_idle_tables_first() {
        let mut tracker = ProcessTracker::default();
        let mut maps = Maps::default();
        let me = refreshed(&mut tracker, std::process::id());
        // Room for this process's tables and little more.
        let mut sizing = TableStore::new(1 << 22, Duration::ZERO);
        sizing.install(&me, &mut Maps::default());
        let mut store = TableStore::new(sizing.stats.rows as u32 + 16, Duration::from_secs(3600));
        store.install(&me, &mut maps);
        assert_eq!(store.stats.full, 0);
        store.preload(Path::new("/usr/bin/sleep"), &mut maps);
        assert_eq!(store.stats.full, 1, "no room for sleep's table");
        // This process goes away: its tables are idle and give way to the next file.
        store.release_process(std::process::id(), &mut maps);
        store.preload(Path::new("/usr/bin/sleep"), &mut maps);
        assert_eq!(store.stats.full, 1, "{:?}", store.stats);
        assert!(store.stats.released >= 1, "{:?}", store.stats);
        let value = store.tables.values().filter(|t| t.placed.is_some()).count() as u64;
        assert_eq!(value, store.stats.files);
    }

    #[test]
    fn mapping_lists_that_do_not_fit_keep_tables_and_stop_reports() {
        let table = |i: u64| {
            (
                i * 0x1000,
                i * 0x1000 + 0x800,
                Some(UnwindMapping { start: i * 0x1000, end: i * 0x1000 + 0x800, bias: 0, rows_start: 0, rows_len: 1 }),
            )
        };
        let bare = |i: u64| (i * 0x1000 + 0x800, i * 0x1000 + 0xc00, None);
        let small: Vec<_> = (0..10).flat_map(|i| [table(i), bare(i)]).collect();
        let v = proc_value(&small);
        assert_eq!((v.count, v.armed), (20, 1));
        assert_eq!(v.mappings[1].rows_len, 0, "known code without a table is listed");
        let big: Vec<_> = (0..100).flat_map(|i| [table(i), bare(i)]).collect();
        let v = proc_value(&big);
        assert_eq!((v.count, v.armed), (100, 0));
        assert!(v.mappings[..100].iter().all(|m| m.rows_len == 1));
    }
}
