//! Unwind tables in the kernel: compiled once per file (keyed by build ID or inode identity) on
//! the compile thread (`compiler`), written into the mapped `UNWIND_ROWS` array, and described
//! per process in `PROC_UNWIND`.
//!
//! Tables are reference-counted by the processes whose mapping lists point at them. A table no
//! process uses stays for a grace period, then its rows go back to the free list; when the array
//! is full, idle tables are released first, and a file that still does not fit gets no table
//! (its frames fall back to frame pointers) and the count says so.
//!
//! A process is installed when the tracker reads it, which happens at its first sample (not at
//! its exec): a process that exits unsampled costs nothing here. Its list goes to BPF at once,
//! without the files whose tables are still compiling; samples in those send stack copies,
//! which wait for the tables (`deferred`). When a table arrives, the lists of the processes that
//! wait for it are written again.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use profiler_common::{ProcUnwind, UnwindMapping, UnwindRow, MAX_UNWIND_MAPPINGS};
use symbolizer::FileKey;

use super::{
    alloc::RowAllocator,
    cache::TableCache,
    compiler::{Built, Compiler, Job, Source},
};
use crate::{
    process::{layout, Mapping, Refreshed},
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
    /// Tables compiled from a file's CFI, and the time that took on the compile thread.
    pub compiled: u64,
    pub compile_ms: u64,
    /// Tables (or known failures) taken from the on-disk cache instead.
    pub cache_hits: u64,
    /// Tables on the compile thread now.
    pub compiling: u64,
}

impl StoreStats {
    pub fn bytes(&self) -> u64 {
        self.rows * size_of::<UnwindRow>() as u64
    }

    pub fn peak_bytes(&self) -> u64 {
        self.peak_rows * size_of::<UnwindRow>() as u64
    }
}

/// Where per-process mapping lists go: the BPF maps (the [`Tracer`]), or memory in unit tests of
/// the bookkeeping.
pub trait UnwindMaps {
    fn set_proc(&mut self, tgid: u32, value: &ProcUnwind) -> Result<(), TracerError>;
    fn remove_proc(&mut self, tgid: u32);
}

impl UnwindMaps for Tracer {
    fn set_proc(&mut self, tgid: u32, value: &ProcUnwind) -> Result<(), TracerError> {
        self.set_proc_unwind(tgid, value)
    }

    fn remove_proc(&mut self, tgid: u32) {
        self.remove_proc_unwind(tgid)
    }
}

/// The rows array as memory: the BPF map mapped into this process
/// ([`crate::tracer::MappedRows`]), or a plain vector in unit tests. Tables are written into it
/// in place and read back from it to walk stack copies.
pub trait RowSpace: Send {
    /// Every row of the array.
    fn rows(&self) -> &[UnwindRow];
    /// Writes `rows` at `start`; false when they do not fit.
    fn write(&mut self, start: u32, rows: &[UnwindRow]) -> bool;
}

impl RowSpace for Vec<UnwindRow> {
    fn rows(&self) -> &[UnwindRow] {
        self
    }

    fn write(&mut self, start: u32, rows: &[UnwindRow]) -> bool {
        let start = start as usize;
        match self.get_mut(start..start.saturating_add(rows.len())) {
            Some(dst) => {
                dst.copy_from_slice(rows);
                true
            }
            None => false,
        }
    }
}

/// A table's identity: the file's, or the kernel's vDSO (the same image in every process).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) enum TableKey {
    File(FileKey),
    Vdso,
}

/// Where a file's table is.
enum State {
    Placed(Placed),
    /// On the compile thread.
    Compiling,
    /// No usable table (logged once, remembered so it is not retried).
    Failed,
    /// No room in the rows array when it was compiled; tried again on a later use once rows
    /// were freed (the count of frees then, see [`TableStore::frees`]).
    Full(u64),
}

struct Table {
    state: State,
    /// Processes whose installed mapping list uses this table (plus one for a preload).
    users: u32,
    /// Since when no process uses it; it is released `idle_grace` later, or earlier when the
    /// rows are needed.
    idle_since: Option<Instant>,
}

/// A process with a mapping list: the tables it uses, and what it was installed from (to write
/// its list again when a table it waits for arrives).
struct Installed {
    keys: Vec<TableKey>,
    from: Refreshed,
    /// Some of its tables were still compiling when its list was written.
    waiting: bool,
}

/// How long a table no process uses stays before its rows are released (sooner when the rows
/// array is full).
pub const IDLE_GRACE: Duration = Duration::from_secs(5);

/// Files without a table are remembered (not retried, not logged again) up to this many.
const MAX_FAILED_REMEMBERED: usize = 16384;

/// How long [`TableStore::preload`] waits for its table.
const PRELOAD_WAIT: Duration = Duration::from_secs(60);

/// Unwind tables in the BPF maps, shared by every process that maps the same file and released
/// when none does.
pub struct TableStore {
    tables: HashMap<TableKey, Table>,
    procs: HashMap<u32, Installed>,
    rows: RowAllocator,
    /// The rows array itself, written in place.
    space: Box<dyn RowSpace>,
    /// Each process's installed mapping list as BPF has it, for walking stack copies here
    /// (`deferred`).
    lists: HashMap<u32, Vec<UnwindMapping>>,
    compiler: Compiler,
    /// How long a table no process uses stays (a short-lived program started again soon, as
    /// a shell loop or cron does, then needs no recompiling).
    idle_grace: Duration,
    failed_remembered: usize,
    /// Tables freed so far: a table refused for lack of room is retried once this moved.
    frees: u64,
    pub stats: StoreStats,
}

impl TableStore {
    /// A store over `space`; with `cache`, tables are looked up there before compiling and
    /// stored there after.
    pub fn new(space: Box<dyn RowSpace>, idle_grace: Duration, cache: Option<TableCache>) -> Self {
        let capacity = u32::try_from(space.rows().len()).unwrap_or(u32::MAX);
        Self {
            tables: HashMap::new(),
            procs: HashMap::new(),
            rows: RowAllocator::new(capacity),
            space,
            lists: HashMap::new(),
            compiler: Compiler::spawn(cache.map(Arc::new)),
            idle_grace,
            failed_remembered: 0,
            frees: 0,
            stats: StoreStats::default(),
        }
    }

    /// Takes a reference on the table of `key`, sending the file to the compile thread on first
    /// sight (and after the array was full).
    fn acquire(&mut self, key: &TableKey, source: impl FnOnce() -> Source, name: &str) {
        // A table refused for lack of room is tried again only once rows were freed since, or
        // idle tables could make room: else a retry would find the array as full as before.
        let submit = match self.tables.get(key).map(|t| &t.state) {
            None => true,
            Some(State::Full(at)) => {
                *at != self.frees || self.tables.values().any(|t| t.users == 0 && matches!(t.state, State::Placed(_)))
            }
            Some(_) => false,
        };
        if submit {
            let job = Job { key: key.clone(), source: source(), name: name.to_string() };
            let state = if self.compiler.submit(job) {
                State::Compiling
            } else {
                self.stats.failed += 1;
                State::Failed
            };
            let users = self.tables.get(key).map_or(0, |t| t.users);
            self.tables.insert(key.clone(), Table { state, users, idle_since: None });
        }
        if let Some(t) = self.tables.get_mut(key) {
            t.users += 1;
            t.idle_since = None;
        }
        self.stats.compiling = self.compiler.in_flight() as u64;
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
        if let Some(Table { state: State::Placed(p), .. }) = self.tables.remove(key) {
            self.rows.free(p.rows_start, p.rows_len);
            self.frees += 1;
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
            .filter(|(_, t)| matches!(t.state, State::Placed(_)))
            .filter(|(_, t)| t.idle_since.is_some_and(|s| force || s.elapsed() >= grace))
            .map(|(k, _)| k.clone())
            .collect();
        for key in &expired {
            self.free(key);
        }
        if self.failed_remembered > MAX_FAILED_REMEMBERED {
            self.tables.retain(|_, t| !matches!(t.state, State::Failed | State::Full(_)) || t.users > 0);
            self.failed_remembered = self.tables.values().filter(|t| matches!(t.state, State::Failed)).count();
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
            .filter(|(_, t)| matches!(t.state, State::Placed(_)))
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

    /// Puts a table from the compile thread into the rows array (or records why there is none).
    fn place(&mut self, built: Built) {
        let Built { key, name, outcome, compile_time, from_cache } = built;
        if from_cache {
            self.stats.cache_hits += 1;
        } else {
            self.stats.compiled += 1;
            self.stats.compile_ms += compile_time.as_millis() as u64;
        }
        let state = match outcome {
            Err(reason) => {
                tracing::info!("{name}: no unwind table ({reason}); frame pointers there");
                self.stats.failed += 1;
                self.failed_remembered += 1;
                State::Failed
            }
            Ok(compiled) => {
                let len = u32::try_from(compiled.rows.len()).unwrap_or(u32::MAX);
                match self.alloc(len) {
                    None => {
                        if self.stats.full == 0 {
                            tracing::warn!("unwind table space full: {name} ({len} rows) falls back to frame pointers (further refusals are counted)");
                        } else {
                            tracing::debug!(
                                "unwind table space full: {name} ({len} rows) falls back to frame pointers"
                            );
                        }
                        self.stats.full += 1;
                        State::Full(self.frees)
                    }
                    Some(start) if self.space.write(start, &compiled.rows) => {
                        self.stats.files += 1;
                        self.stats.rows += len as u64;
                        self.stats.peak_rows = self.stats.peak_rows.max(self.stats.rows);
                        State::Placed(Placed { rows_start: start, rows_len: len, segments: compiled.segments })
                    }
                    Some(start) => {
                        tracing::warn!("{name}: rows {start}+{len} outside the rows array");
                        self.rows.free(start, len);
                        self.stats.failed += 1;
                        State::Failed
                    }
                }
            }
        };
        match self.tables.get_mut(&key) {
            Some(t) => t.state = state,
            // (Forgotten meanwhile: only failures are, see `collect`.)
            None => {
                let idle_since = Some(Instant::now());
                self.tables.insert(key, Table { state, users: 0, idle_since });
            }
        }
    }

    /// Places the tables the compile thread finished (waiting up to `wait` for the first one)
    /// and writes again the lists of the processes that waited for them.
    fn take_built(&mut self, maps: &mut dyn UnwindMaps, wait: Option<Duration>) {
        let mut arrived = Vec::new();
        let mut wait = wait;
        while let Some(built) = self.compiler.next(wait.take()) {
            arrived.push(built.key.clone());
            self.place(built);
        }
        self.stats.compiling = self.compiler.in_flight() as u64;
        if arrived.is_empty() {
            return;
        }
        let waiting: Vec<u32> = self
            .procs
            .iter()
            .filter(|(_, p)| p.waiting && p.keys.iter().any(|k| arrived.contains(k)))
            .map(|(pid, _)| *pid)
            .collect();
        for pid in waiting {
            if let Some(from) = self.procs.get(&pid).map(|p| p.from.clone()) {
                self.install(&from, maps);
            }
        }
    }

    /// Places finished tables and updates the processes waiting for them. Called on every pass
    /// of the sampling loop; never blocks.
    pub fn poll(&mut self, maps: &mut dyn UnwindMaps) {
        self.take_built(maps, None);
    }

    /// Waits (up to `max`) until the compile thread finished everything it was given, placing
    /// the tables: at the end of a recording, so the last stack copies unwind with them.
    pub fn wait_compiled(&mut self, maps: &mut dyn UnwindMaps, max: Duration) {
        let deadline = Instant::now() + max;
        while self.compiler.in_flight() > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            self.take_built(maps, Some(left));
        }
    }

    /// Compiles and uploads the tables of files ahead of need (e.g. the command `record` is
    /// about to start), so its first samples already unwind with them; waits for them. The
    /// tables stay for the store's life.
    pub fn preload(&mut self, paths: &[PathBuf], maps: &mut dyn UnwindMaps) {
        let mut keys = Vec::new();
        for path in paths {
            let Ok(key) = FileKey::from_path(path) else { continue };
            let key = TableKey::File(key);
            self.acquire(&key, || Source::Path(path.clone()), &path.display().to_string());
            keys.push(key);
        }
        let deadline = Instant::now() + PRELOAD_WAIT;
        while keys.iter().any(|k| self.tables.get(k).is_some_and(|t| matches!(t.state, State::Compiling))) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            self.take_built(maps, Some(left));
        }
    }

    /// Installs the mapping list of a process whose mappings were (re-)read, sending files seen
    /// for the first time to the compile thread and releasing those it no longer maps.
    pub fn install(&mut self, refreshed: &Refreshed, maps: &mut dyn UnwindMaps) {
        let mut keys: Vec<TableKey> = Vec::new();
        // (mapping, table): `None` tables are known code without one (frame pointers there).
        let mut entries: Vec<(u64, u64, Option<UnwindMapping>)> = Vec::new();
        let mut waiting = false;
        let files = refreshed.mappings.iter().map(|(m, f)| (*m, Some(f)));
        let vdso = refreshed.vdso.map(|(start, end)| (Mapping { start, end, offset: 0, file: 0 }, None));
        for (m, file) in files.chain(vdso) {
            let key = match file {
                Some(f) => TableKey::File(f.key.clone()),
                None => TableKey::Vdso,
            };
            if !keys.contains(&key) {
                let (source, name) = match file {
                    Some(f) => (Source::File(Arc::clone(f)), f.path.as_str()),
                    None => (Source::Vdso, "[vdso]"),
                };
                self.acquire(&key, || source, name);
                keys.push(key.clone());
            }
            match self.tables.get(&key).map(|t| &t.state) {
                Some(State::Placed(p)) => entries.push((m.start, m.end, table_mapping(p, &m))),
                // Left out of the list: to BPF its pcs are code it has no table for yet, so
                // samples there come with stack copies that wait for the table.
                Some(State::Compiling) => waiting = true,
                _ => entries.push((m.start, m.end, None)),
            }
        }
        entries.extend(refreshed.anon_exec.iter().map(|&(start, end)| (start, end, None)));
        entries.sort_by_key(|e| e.0);
        let has_tables = entries.iter().any(|e| e.2.is_some());
        let old = self.procs.insert(refreshed.pid, Installed { keys, from: refreshed.clone(), waiting });
        if has_tables {
            let mut value = proc_value(&entries);
            if waiting {
                // Their pcs are known to be coming: no new-code reports (and re-reads) for them.
                value.armed = 0;
            }
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
        for key in old.map(|o| o.keys).unwrap_or_default() {
            self.release_key(&key);
        }
        self.stats.processes = self.procs.len() as u64;
    }

    /// Forgets a process that exited: its mapping list goes, its tables lose a user.
    pub fn release_process(&mut self, pid: u32, maps: &mut dyn UnwindMaps) {
        maps.remove_proc(pid);
        self.lists.remove(&pid);
        if let Some(installed) = self.procs.remove(&pid) {
            for key in &installed.keys {
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
        let start = mapping.rows_start as usize;
        self.space.rows().get(start..start.checked_add(mapping.rows_len as usize)?)
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
        procs: HashMap<u32, ProcUnwind>,
    }

    impl UnwindMaps for Maps {
        fn set_proc(&mut self, tgid: u32, value: &ProcUnwind) -> Result<(), TracerError> {
            self.procs.insert(tgid, *value);
            Ok(())
        }
        fn remove_proc(&mut self, tgid: u32) {
            self.procs.remove(&tgid);
        }
    }

    /// (start, rows) of every table written.
    type Written = Arc<std::sync::Mutex<Vec<(u32, usize)>>>;

    /// A rows array in memory that records where tables were written.
    struct Space {
        rows: Vec<UnwindRow>,
        written: Written,
    }

    impl RowSpace for Space {
        fn rows(&self) -> &[UnwindRow] {
            &self.rows
        }
        fn write(&mut self, start: u32, rows: &[UnwindRow]) -> bool {
            self.written.lock().unwrap().push((start, rows.len()));
            self.rows.write(start, rows)
        }
    }

    /// A store over `capacity` rows in memory, and the log of its writes.
    fn store(capacity: u32, grace: Duration) -> (TableStore, Written) {
        let written = Arc::default();
        let space = Space { rows: vec![UnwindRow::default(); capacity as usize], written: Arc::clone(&written) };
        (TableStore::new(Box::new(space), grace, None), written)
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
        let (mut store, written) = store(1 << 22, Duration::from_secs(3600));
        let me = refreshed(&mut tracker, std::process::id());
        store.install(&me, &mut maps);
        store.wait_compiled(&mut maps, Duration::from_secs(60));
        let mine = store.stats;
        assert!(mine.files >= 3, "test binary, libc, ld.so: {mine:?}");
        assert_eq!(written.lock().unwrap().len() as u64, mine.files, "one upload per file");
        let value = maps.procs[&std::process::id()];
        assert_eq!(value.armed, 1);
        let listed = &value.mappings[..value.count as usize];
        assert!(listed.windows(2).all(|w| w[0].end <= w[1].start), "sorted, disjoint");
        let own = tables_are_shared_and_released_when_unused as *const () as u64;
        assert!(listed.iter().any(|m| m.start <= own && own < m.end && m.rows_len > 0), "own code has a table");

        // sleep shares libc and ld.so: only its own executable is new.
        let other = refreshed(&mut tracker, pid);
        store.install(&other, &mut maps);
        store.wait_compiled(&mut maps, Duration::from_secs(60));
        assert_eq!(store.stats.files, mine.files + 1, "{:?}", store.stats);
        assert_eq!(written.lock().unwrap().len() as u64, mine.files + 1, "libc not compiled twice");
        let sleep_rows = store.stats.rows - mine.rows;

        // Re-reading a process (exec, dlopen) keeps its tables: nothing idle, nothing recompiled.
        store.install(&refreshed(&mut tracker, pid), &mut maps);
        store.wait_compiled(&mut maps, Duration::from_secs(60));
        store.release_idle();
        assert_eq!((store.stats.released, written.lock().unwrap().len() as u64), (0, mine.files + 1));

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
        store.preload(&[PathBuf::from("/usr/bin/sleep")], &mut maps);
        let &(again, len) = written.lock().unwrap().last().unwrap();
        assert_eq!(len as u64, sleep_rows);
        assert!(u64::from(again) + len as u64 <= mine.rows + sleep_rows, "reused the freed range");
    }

    #[test]
    fn lists_go_out_at_once_and_are_written_again_when_tables_arrive() {
        let mut tracker = ProcessTracker::default();
        let mut maps = Maps::default();
        let (mut store, _) = store(1 << 22, Duration::from_secs(3600));
        let pid = std::process::id();
        store.install(&refreshed(&mut tracker, pid), &mut maps);
        // Every table is on the compile thread: BPF gets no list yet (stack copies meanwhile).
        assert!(!maps.procs.contains_key(&pid));
        assert!(store.stats.compiling >= 3, "{:?}", store.stats);
        store.wait_compiled(&mut maps, Duration::from_secs(60));
        let value = maps.procs[&pid];
        assert_eq!((value.armed, value.complete), (1, 1), "reports back on once nothing is coming");
        let own = lists_go_out_at_once_and_are_written_again_when_tables_arrive as *const () as u64;
        let listed = &value.mappings[..value.count as usize];
        assert!(listed.iter().any(|m| m.start <= own && own < m.end && m.rows_len > 0), "own code has its table");
        assert_eq!(store.stats.compiling, 0);
        assert_eq!(store.stats.compiled, store.stats.files + store.stats.failed, "{:?}", store.stats);
        // What BPF walks with is what the deferred walker reads back.
        let m = listed.iter().find(|m| m.rows_len > 0).unwrap();
        let rows = super::super::deferred::Tables::rows(&store, m).unwrap();
        assert!(rows.windows(2).all(|w| w[0].pc < w[1].pc), "a sorted table in place");
    }

    #[test]
    fn a_full_array_releases_idle_tables_first() {
        let mut tracker = ProcessTracker::default();
        let mut maps = Maps::default();
        let me = refreshed(&mut tracker, std::process::id());
        // Room for this process's tables and little more.
        let (mut sizing, _) = store(1 << 22, Duration::ZERO);
        sizing.install(&me, &mut Maps::default());
        sizing.wait_compiled(&mut Maps::default(), Duration::from_secs(60));
        let (mut store, _) = store(sizing.stats.rows as u32 + 16, Duration::from_secs(3600));
        store.install(&me, &mut maps);
        store.wait_compiled(&mut maps, Duration::from_secs(60));
        assert_eq!(store.stats.full, 0);
        store.preload(&[PathBuf::from("/usr/bin/sleep")], &mut maps);
        assert_eq!(store.stats.full, 1, "no room for sleep's table");
        // Nothing freed and nothing idle since: asking again does not compile it again.
        let compiled = store.stats.compiled;
        store.preload(&[PathBuf::from("/usr/bin/sleep")], &mut maps);
        store.install(&me, &mut maps);
        assert_eq!((store.stats.full, store.stats.compiled), (1, compiled), "{:?}", store.stats);
        // This process goes away: its tables are idle and give way to the next file.
        store.release_process(std::process::id(), &mut maps);
        store.preload(&[PathBuf::from("/usr/bin/sleep")], &mut maps);
        assert_eq!(store.stats.full, 1, "{:?}", store.stats);
        assert!(store.stats.released >= 1, "{:?}", store.stats);
        let value = store.tables.values().filter(|t| matches!(t.state, State::Placed(_))).count() as u64;
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
