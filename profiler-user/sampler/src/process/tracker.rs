//! The per-process side of the tracker.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use symbolizer::FileKey;

use super::{
    files::{FileId, FileTable, MappedFile},
    maps, metadata,
    perf_map::{PerfMap, PerfMapStats},
};
use crate::context::{self, process::ProcessContext};

/// An executable, file-backed mapping of one process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    /// File offset of `start`.
    pub offset: u64,
    pub file: FileId,
}

/// Where a user address lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Normalized {
    /// In a file mapping, at `file_offset` in the file.
    File { mapping: Mapping, file_offset: u64 },
    /// In the process's `[vdso]`, `offset` bytes from its start: the kernel's image, the same in
    /// every process, so symbolized without the process.
    Vdso { offset: u64 },
    /// JIT code: in anonymous executable memory, or named by the process's perf map. `name` is
    /// the perf map's name for the code there at the time of the sample (the range may hold other
    /// code later).
    Jit { name: Option<Arc<str>> },
}

/// A process whose mappings were just (re-)read: what unwind tables are installed from.
#[derive(Clone)]
pub struct Refreshed {
    pub pid: u32,
    /// Executable file mappings, sorted by start.
    pub mappings: Vec<(Mapping, Arc<MappedFile>)>,
    pub vdso: Option<(u64, u64)>,
    /// Executable memory without a file (JIT code, `[vsyscall]`), sorted by start.
    pub anon_exec: Vec<(u64, u64)>,
    /// The OTEP 4719 context the process published, if any.
    pub context: Option<Arc<ProcessContext>>,
}

/// What is known about a process besides its mappings.
#[derive(Clone, Debug, Default)]
pub struct ProcessInfo {
    /// `/proc/PID/comm` (the main thread's name).
    pub comm: String,
    /// `/proc/PID/exe`, when readable.
    pub exe: Option<String>,
    /// `/proc/PID/cmdline`, arguments joined by spaces.
    pub cmdline: String,
    /// From `/proc/PID/cgroup`, when the process runs in a container.
    pub container_id: Option<String>,
    /// `OTEL_RESOURCE_ATTRIBUTES` / `OTEL_SERVICE_NAME` from `/proc/PID/environ`.
    pub otel_attributes: Vec<(String, String)>,
    /// The resource the process published itself (OTEP 4719), over the environment's.
    pub context: Option<Arc<ProcessContext>>,
    pub exited: bool,
}

struct Process {
    info: ProcessInfo,
    /// The `[vdso]` range, which has unwind information but no file.
    vdso: Option<(u64, u64)>,
    /// Other executable memory without a file.
    anon_exec: Vec<(u64, u64)>,
    /// When to look for (or at) the process context next, and the back-off while none is found.
    context_check: Instant,
    context_backoff: Duration,
    /// When a sample of it was last seen, to evict the least recently sampled first.
    last_seen: Instant,
    /// Executable mappings sorted by start.
    mappings: Vec<Mapping>,
    last_refresh: Option<Instant>,
    /// The process's perf map, from its first JIT frame on.
    perf_map: Option<JitNames>,
}

/// A perf map and when it was last read.
struct JitNames {
    map: PerfMap,
    /// `None` until the first read.
    polled: Option<Instant>,
    /// A read failed (logged once).
    failed: bool,
}

/// Where the kernel half of the x86_64 address space starts, with 4- or 5-level page tables
/// (`[vsyscall]` lies there).
const USER_SPACE_END: u64 = 0xffff_8000_0000_0000;

/// A perf map is read again at most this often while its names answer lookups…
const PERF_MAP_POLL: Duration = Duration::from_millis(20);
/// …and this often when a JIT address has no name yet (the runtime writes the line before the
/// code first runs, so a miss usually means unread lines)…
const PERF_MAP_POLL_ON_MISS: Duration = Duration::from_millis(1);
/// …and this often while the process has no perf map at all (most JIT runtimes write none unless
/// asked; a runtime that does creates it at start).
const PERF_MAP_POLL_ABSENT: Duration = Duration::from_millis(100);

/// What exporters read of the process state: infos and files of one report, shared through
/// `Arc`s so a report can be encoded on another thread while tracking goes on.
#[derive(Default)]
pub struct ProcessSnapshot {
    infos: HashMap<u32, ProcessInfo>,
    files: HashMap<FileId, Arc<MappedFile>>,
}

impl ProcessSnapshot {
    pub fn info(&self, pid: u32) -> Option<&ProcessInfo> {
        self.infos.get(&pid)
    }

    /// A file of the report; `None` for an id the snapshot does not hold (the tracker had
    /// already dropped it). Exporters then name the frames `[unknown]` and count them: the
    /// reporting thread must not die over one file.
    pub fn file(&self, id: FileId) -> Option<&MappedFile> {
        self.files.get(&id).map(|f| &**f)
    }

    /// A snapshot holding these files only, for tests of what readers do with missing ones.
    #[cfg(test)]
    pub fn with_files(files: impl IntoIterator<Item = (FileId, Arc<MappedFile>)>) -> Self {
        Self { infos: HashMap::new(), files: files.into_iter().collect() }
    }
}

/// How often a process without a context is looked at again, from first sight to at most.
const CONTEXT_BACKOFF_MIN: Duration = Duration::from_millis(200);
const CONTEXT_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// The process's OTEP 4719 context, if it published one; problems are logged, not fatal.
fn read_context(pid: u32, entries: &[maps::MapEntry]) -> Option<Arc<ProcessContext>> {
    let addr = context::process::find_mapping(entries)?;
    let read = context::process::open_memory(pid)
        .map_err(context::process::ContextError::from)
        .and_then(|mem| context::process::read(&mem, addr));
    match read {
        Ok(c) => Some(Arc::new(c)),
        Err(e) => {
            tracing::debug!(pid, "process context unreadable: {e}");
            None
        }
    }
}

/// Refreshes triggered by unknown addresses are rate-limited per process.
const MISS_REFRESH_INTERVAL: Duration = Duration::from_millis(100);

/// Snapshots of every process seen, and the shared [`FileTable`].
#[derive(Default)]
pub struct ProcessTracker {
    procs: HashMap<u32, Process>,
    files: FileTable,
    /// Snapshots that failed because the process was already gone.
    pub vanished: u64,
    /// What the perf maps read so far held (JIT code names), over all processes.
    pub perf_maps: PerfMapStats,
    /// Processes whose perf map named at least one frame.
    pub perf_map_processes: u64,
    /// Processes re-read since the last [`ProcessTracker::take_refreshed`].
    refreshed: Vec<u32>,
    /// Processes to re-read once their rate limit allows ([`ProcessTracker::request_refresh`]).
    pending: HashSet<u32>,
}

fn read_proc(pid: u32, what: &str) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/{what}")).ok()
}

impl ProcessTracker {
    #[cfg(test)]
    pub fn files(&self) -> &FileTable {
        &self.files
    }

    /// Info of a process seen so far.
    #[cfg(test)]
    pub fn info(&self, pid: u32) -> Option<&ProcessInfo> {
        self.procs.get(&pid).map(|p| &p.info)
    }

    pub fn len(&self) -> usize {
        self.procs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.procs.is_empty()
    }

    /// Makes sure `pid` has a snapshot (first sight) and marks it as recently sampled.
    pub fn observe(&mut self, pid: u32) {
        match self.procs.get_mut(&pid) {
            Some(p) => p.last_seen = Instant::now(),
            None => self.refresh(pid),
        }
    }

    /// Whether the process has a snapshot.
    pub fn knows(&self, pid: u32) -> bool {
        self.procs.contains_key(&pid)
    }

    /// The process called execve: a new program, read afresh, and one that may publish its
    /// context soon, so its context back-off starts again from the shortest.
    pub fn exec(&mut self, pid: u32) {
        if let Some(p) = self.procs.get_mut(&pid) {
            p.context_backoff = CONTEXT_BACKOFF_MIN;
            // A new program: the old one's JIT names do not apply.
            p.perf_map = None;
        }
        self.refresh(pid);
    }

    /// Re-reads the process's mappings and metadata (after exec, or first sight).
    pub fn refresh(&mut self, pid: u32) {
        let now = Instant::now();
        // A known process that is exiting has released its memory: its maps read empty (and
        // its memory not at all) while the exit event is still on its way. What was known
        // stays: a re-read then would drop its mappings and its OTEP 4719 context, and every
        // sample of it not yet encoded would lose its thread-context attributes' names. (A
        // kernel thread's maps are empty too; seen for the first time it is read as usual.)
        let known = self.procs.contains_key(&pid);
        let Some(text) = read_proc(pid, "maps").filter(|t| !known || !t.trim().is_empty()) else {
            self.vanished += 1;
            let p = self.procs.entry(pid).or_insert_with(|| Process {
                info: ProcessInfo::default(),
                vdso: None,
                anon_exec: Vec::new(),
                context_check: now + CONTEXT_BACKOFF_MAX,
                context_backoff: CONTEXT_BACKOFF_MAX,
                last_seen: now,
                mappings: Vec::new(),
                last_refresh: None,
                perf_map: None,
            });
            p.last_refresh = Some(now);
            return;
        };
        let entries = maps::parse(&text);
        // A header still mapped where it was but unreadable right now (a concurrent update, the
        // process exiting) keeps the context known from it.
        let context = read_context(pid, &entries).or_else(|| {
            let known = self.procs.get(&pid)?.info.context.clone()?;
            (context::process::find_mapping(&entries) == Some(known.header_addr)).then_some(known)
        });
        let vdso = entries.iter().find(|e| e.path == "[vdso]").map(|e| (e.start, e.end));
        let anon_exec: Vec<(u64, u64)> = entries
            .iter()
            .filter(|e| e.executable && !e.is_file() && e.path != "[vdso]")
            .map(|e| (e.start, e.end))
            .collect();
        let mut mappings: Vec<Mapping> = entries
            .into_iter()
            .filter(|e| e.executable && e.is_file())
            .map(|e| Mapping { start: e.start, end: e.end, offset: e.offset, file: self.files.intern(pid, &e) })
            .collect();
        mappings.sort_by_key(|m| m.start);
        let info = ProcessInfo {
            comm: read_proc(pid, "comm").map(|s| s.trim_end().to_string()).unwrap_or_default(),
            exe: std::fs::read_link(format!("/proc/{pid}/exe")).ok().map(|p| p.to_string_lossy().into_owned()),
            cmdline: read_proc(pid, "cmdline").map(|s| s.trim_end_matches('\0').replace('\0', " ")).unwrap_or_default(),
            container_id: read_proc(pid, "cgroup").as_deref().and_then(metadata::container_id),
            otel_attributes: std::fs::read(format!("/proc/{pid}/environ"))
                .map(|e| metadata::otel_env_attributes(&e))
                .unwrap_or_default(),
            context: context.clone(),
            exited: false,
        };
        // A process without a context yet may publish one soon after start: look again quickly,
        // then less and less often.
        let context_backoff = match &context {
            Some(_) => CONTEXT_BACKOFF_MIN,
            None => self.procs.get(&pid).map_or(CONTEXT_BACKOFF_MIN, |p| p.context_backoff),
        };
        // The perf map outlives a re-read of the maps (it describes the same process); an exec
        // starts a new program, whose runtime starts the file anew (checked by its identity).
        let perf_map = self.procs.get_mut(&pid).and_then(|p| p.perf_map.take());
        self.procs.insert(
            pid,
            Process {
                info,
                vdso,
                anon_exec,
                mappings,
                context_check: now + context_backoff,
                context_backoff,
                last_seen: now,
                last_refresh: Some(now),
                perf_map,
            },
        );
        self.refreshed.push(pid);
        self.pending.remove(&pid);
    }

    /// Re-reads a process whose code moved (the unwinder met a pc outside its known mappings),
    /// at most once per [`MISS_REFRESH_INTERVAL`]; a request inside the interval is kept and
    /// carried out by [`Self::refresh_pending`].
    pub fn request_refresh(&mut self, pid: u32) {
        match self.procs.get(&pid) {
            Some(p) if p.info.exited => {}
            Some(p) if p.last_refresh.is_some_and(|t| t.elapsed() < MISS_REFRESH_INTERVAL) => {
                self.pending.insert(pid);
            }
            _ => self.refresh(pid),
        }
    }

    /// Carries out the requests [`Self::request_refresh`] had to postpone, once their interval
    /// passed.
    pub fn refresh_pending(&mut self) {
        let due: Vec<u32> = self
            .pending
            .iter()
            .copied()
            .filter(|pid| {
                self.procs.get(pid).is_none_or(|p| p.last_refresh.is_none_or(|t| t.elapsed() >= MISS_REFRESH_INTERVAL))
            })
            .collect();
        for pid in due {
            self.pending.remove(&pid);
            if self.procs.get(&pid).is_some_and(|p| !p.info.exited) {
                self.refresh(pid);
            }
        }
    }

    /// Notices process contexts published or updated since the process was read: re-reads a
    /// process whose context's `published_at_ns` changed, or that now has an `OTEL_CTX` mapping.
    /// Each process is looked at on its own back-off schedule.
    pub fn poll_contexts(&mut self) {
        self.poll(false);
    }

    /// [`Self::poll_contexts`], and also, ahead of their schedule, the processes without a context
    /// whose back-off has not grown past its first steps (programs that started well under a
    /// second ago, which usually publish right at start): called before a report, so that a new
    /// program's first report does not go out under its environment's service name when its
    /// context was already there. Each such look still grows the back-off, so it stays bounded.
    pub fn poll_contexts_before_report(&mut self) {
        self.poll(true);
    }

    fn poll(&mut self, young_now: bool) {
        let now = Instant::now();
        let mut changed = Vec::new();
        let due = |p: &Process| {
            p.context_check <= now
                || (young_now && p.info.context.is_none() && p.context_backoff <= CONTEXT_BACKOFF_MIN * 2)
        };
        for (&pid, p) in self.procs.iter_mut().filter(|(_, p)| !p.info.exited && due(p)) {
            let moved = match &p.info.context {
                Some(c) => context::process::open_memory(pid)
                    .and_then(|m| context::process::published_at(&m, c.header_addr))
                    .map_or(true, |at| at != c.published_at_ns),
                None => {
                    read_proc(pid, "maps").is_some_and(|t| context::process::find_mapping(&maps::parse(&t)).is_some())
                }
            };
            if moved {
                changed.push(pid);
            } else if p.info.context.is_none() {
                p.context_backoff = (p.context_backoff * 2).min(CONTEXT_BACKOFF_MAX);
            }
            p.context_check = now + p.context_backoff;
        }
        for pid in changed {
            self.refresh(pid);
        }
    }

    /// Exporters' view of some processes and files, detached from the tracker.
    pub fn snapshot(
        &self,
        pids: impl IntoIterator<Item = u32>,
        files: impl IntoIterator<Item = FileId>,
    ) -> ProcessSnapshot {
        ProcessSnapshot {
            infos: pids.into_iter().filter_map(|p| Some((p, self.procs.get(&p)?.info.clone()))).collect(),
            files: files.into_iter().filter_map(|f| Some((f, self.files.get(f)?.clone()))).collect(),
        }
    }

    /// Forgets processes that exited (or vanished without an exit event) and the files only they
    /// mapped, so memory follows the live processes. Returns the dropped files' identities, for
    /// the symbol cache.
    #[cfg(test)]
    pub fn evict_exited(&mut self) -> Vec<FileKey> {
        self.evict(usize::MAX)
    }

    /// Like [`Self::evict_exited`], and then keeps at most `max` processes, dropping the least
    /// recently sampled: the bound on the tracker's memory.
    pub fn evict(&mut self, max: usize) -> Vec<FileKey> {
        self.procs.retain(|pid, p| !p.info.exited && std::path::Path::new(&format!("/proc/{pid}")).exists());
        if self.procs.len() > max {
            let mut by_age: Vec<(Instant, u32)> = self.procs.iter().map(|(pid, p)| (p.last_seen, *pid)).collect();
            by_age.sort_unstable();
            let excess = self.procs.len() - max;
            for (_, pid) in by_age.into_iter().take(excess) {
                self.procs.remove(&pid);
            }
        }
        let live: HashSet<FileId> = self.procs.values().flat_map(|p| p.mappings.iter().map(|m| m.file)).collect();
        self.files.retain(&live)
    }

    /// Processes whose mappings were (re-)read since the last call, with their executable file
    /// mappings (for pushing unwind tables).
    pub fn take_refreshed(&mut self) -> Vec<Refreshed> {
        let pids = std::mem::take(&mut self.refreshed);
        pids.into_iter()
            .filter_map(|pid| {
                let p = self.procs.get(&pid)?;
                Some(Refreshed {
                    pid,
                    mappings: p.mappings.iter().filter_map(|m| Some((*m, self.files.get(m.file)?.clone()))).collect(),
                    vdso: p.vdso,
                    anon_exec: p.anon_exec.clone(),
                    context: p.info.context.clone(),
                })
            })
            .collect()
    }

    /// Marks a process as exited; its snapshot stays for normalizing samples still queued.
    pub fn exited(&mut self, pid: u32) {
        if let Some(p) = self.procs.get_mut(&pid) {
            p.info.exited = true;
        }
    }

    fn lookup(&self, pid: u32, addr: u64) -> Option<Normalized> {
        let maps = &self.procs.get(&pid)?.mappings;
        let i = maps.partition_point(|m| m.start <= addr).checked_sub(1)?;
        let m = maps[i];
        (addr < m.end).then_some(Normalized::File { mapping: m, file_offset: addr - m.start + m.offset })
    }

    /// Finds the file and file offset of user address `addr` in process `pid`. An address no
    /// snapshot covers triggers one (rate-limited) refresh, which picks up `dlopen`ed libraries.
    pub fn normalize(&mut self, pid: u32, addr: u64) -> Option<Normalized> {
        if let Some(n) = self.lookup(pid, addr) {
            return Some(n);
        }
        let p = self.procs.get(&pid)?;
        let inside = |&(s, e): &(u64, u64)| s <= addr && addr < e;
        if let Some((start, _)) = p.vdso.filter(inside) {
            return Some(Normalized::Vdso { offset: addr - start });
        }
        let mut anon = p.anon_exec.iter().any(inside);
        // Known code without a file (JIT memory) needs no re-read; an exited process cannot be
        // re-read.
        if !anon && !p.info.exited && p.last_refresh.is_none_or(|t| t.elapsed() >= MISS_REFRESH_INTERVAL) {
            self.refresh(pid);
            if let Some(n) = self.lookup(pid, addr) {
                return Some(n);
            }
            anon = self.procs.get(&pid).is_some_and(|p| p.anon_exec.iter().any(inside));
        }
        // `[vsyscall]`, the one executable mapping above user space, is the kernel's, not JIT.
        if addr >= USER_SPACE_END {
            return None;
        }
        // JIT code: anonymous executable memory, or a range the perf map names (JIT memory
        // mapped since the maps were read).
        let name = self.jit_name(pid, addr);
        (anon || name.is_some()).then_some(Normalized::Jit { name })
    }

    /// The perf map's name for `addr` in process `pid`, reading what the runtime appended since
    /// the last look (at most every [`PERF_MAP_POLL`], [`PERF_MAP_POLL_ON_MISS`] when the
    /// address has no name yet, [`PERF_MAP_POLL_ABSENT`] while there is no file).
    fn jit_name(&mut self, pid: u32, addr: u64) -> Option<Arc<str>> {
        let p = self.procs.get_mut(&pid)?;
        let jit = p.perf_map.get_or_insert_with(|| JitNames {
            map: PerfMap::new(PerfMap::path_for(pid), Default::default()),
            polled: None,
            failed: false,
        });
        let found = jit.map.lookup(addr).is_some();
        let interval = match (found, jit.map.found()) {
            (true, _) => PERF_MAP_POLL,
            (false, true) => PERF_MAP_POLL_ON_MISS,
            (false, false) => PERF_MAP_POLL_ABSENT,
        };
        if jit.polled.is_none_or(|t| t.elapsed() >= interval) {
            jit.polled = Some(Instant::now());
            let before = jit.map.stats;
            let was_empty = jit.map.is_empty();
            if let Err(e) = jit.map.poll() {
                // Once per process: an unreadable map stays unreadable.
                if !std::mem::replace(&mut jit.failed, true) {
                    tracing::debug!(pid, "{e}");
                }
            }
            let after = jit.map.stats;
            self.perf_maps.entries += after.entries - before.entries;
            self.perf_maps.malformed += after.malformed - before.malformed;
            self.perf_maps.dropped += after.dropped - before.dropped;
            if was_empty && !jit.map.is_empty() {
                self.perf_map_processes += 1;
            }
        }
        jit.map.lookup(addr).cloned()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn exited_processes_and_their_files_are_evicted() {
        let mut child = std::process::Command::new("sleep").arg("5").spawn().unwrap();
        let pid = child.id();
        // Wait for the exec: before it the child is a copy of this test binary.
        let start = std::time::Instant::now();
        while !std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|p| p.ends_with("sleep")) {
            assert!(start.elapsed() < Duration::from_secs(5), "sleep did not start");
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(20));
        let mut t = ProcessTracker::default();
        t.observe(pid);
        assert!(t.files().len() >= 2, "sleep maps itself and libc");
        assert!(t.evict_exited().is_empty(), "a live process keeps its files");
        assert_eq!(t.len(), 1);
        let snap = t.snapshot([pid], []);
        assert!(snap.info(pid).is_some_and(|i| i.exe.as_deref().is_some_and(|e| e.ends_with("sleep"))));
        child.kill().unwrap();
        child.wait().unwrap();
        t.exited(pid);
        let dropped = t.evict_exited();
        assert_eq!(t.len(), 0);
        assert_eq!(t.files().len(), 0);
        assert!(dropped.len() >= 2, "file keys handed back for the symbol cache");
    }

    /// A process whose memory is gone (a zombie: its maps read empty) keeps what was known of
    /// it when it is refreshed before its exit is handled.
    #[test]
    fn an_exiting_process_keeps_its_mappings_when_refreshed() {
        let mut child = std::process::Command::new("sleep").arg("5").spawn().unwrap();
        let pid = child.id();
        let start = std::time::Instant::now();
        while !std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|p| p.ends_with("sleep")) {
            assert!(start.elapsed() < Duration::from_secs(5), "sleep did not start");
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(20));
        let mut t = ProcessTracker::default();
        t.observe(pid);
        let exe = t.snapshot([pid], []).info(pid).and_then(|i| i.exe.clone());
        assert!(exe.as_deref().is_some_and(|e| e.ends_with("sleep")));
        let code = maps::parse(&read_proc(pid, "maps").unwrap())
            .into_iter()
            .find(|e| e.executable && e.is_file())
            .map(|e| e.start)
            .unwrap();
        // Killed and not reaped: a zombie, whose maps read empty.
        child.kill().unwrap();
        let start = std::time::Instant::now();
        while !read_proc(pid, "stat").is_some_and(|s| s.contains(") Z ")) {
            assert!(start.elapsed() < Duration::from_secs(5), "no zombie");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(read_proc(pid, "maps").as_deref(), Some(""), "a zombie's maps are empty");
        t.refresh(pid);
        assert_eq!(t.snapshot([pid], []).info(pid).and_then(|i| i.exe.clone()), exe, "what was known stays");
        assert!(
            matches!(t.normalize(pid, code), Some(Normalized::File { .. })),
            "its code is still found in its mappings"
        );
        child.wait().unwrap();
    }

    /// JIT code as a runtime makes it: anonymous executable memory, named in
    /// `/tmp/perf-PID.map`, which grows after the first look.
    #[test]
    fn names_jit_code_from_the_perf_map() {
        let pid = std::process::id();
        let code = crate::process::AnonCode::new(0x2000);
        let start = code.start;
        let map = std::path::PathBuf::from(format!("/tmp/perf-{pid}.map"));
        std::fs::write(&map, format!("{start:x} 100 JS:*first /app.js:1:1\nnot a line\n")).unwrap();
        let mut t = ProcessTracker::default();
        t.observe(pid);
        let jit = |name: &str| Some(Normalized::Jit { name: Some(name.into()) });
        assert_eq!(t.normalize(pid, start + 0x10), jit("JS:*first /app.js:1:1"));
        assert_eq!(t.normalize(pid, start + 0x1000), Some(Normalized::Jit { name: None }), "JIT memory, no name");
        // The runtime appends: new code, and new code over the first range (moved by its GC).
        let more = format!("{:x} 80 JS:^second /app.js:2:1\n{start:x} 40 JS:*third /app.js:3:1\n", start + 0x1000);
        std::fs::OpenOptions::new().append(true).open(&map).unwrap().write_all(more.as_bytes()).unwrap();
        std::thread::sleep(PERF_MAP_POLL_ON_MISS);
        assert_eq!(t.normalize(pid, start + 0x1000), jit("JS:^second /app.js:2:1"));
        assert_eq!(t.normalize(pid, start + 0x10), jit("JS:*third /app.js:3:1"));
        assert_eq!(t.normalize(pid, start + 0x50), jit("JS:*first /app.js:1:1"), "the rest keeps its name");
        assert_eq!(t.perf_maps, PerfMapStats { entries: 3, malformed: 1, dropped: 0 });
        std::fs::remove_file(&map).unwrap();
    }

    #[test]
    fn normalizes_own_code_and_misses_anon_memory() {
        let pid = std::process::id();
        let mut t = ProcessTracker::default();
        t.observe(pid);
        let f = normalizes_own_code_and_misses_anon_memory as *const () as u64;
        let Some(Normalized::File { mapping, file_offset }) = t.normalize(pid, f) else {
            panic!("own code is in a file mapping")
        };
        let file = t.files().get(mapping.file).unwrap();
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        assert_eq!(file.path, exe.to_string_lossy());
        assert!(file_offset < std::fs::metadata(&exe).unwrap().len());
        let heap = Box::new(0u8);
        assert_eq!(t.normalize(pid, &*heap as *const u8 as u64), None);
        assert!(!t.info(pid).unwrap().comm.is_empty());
        let vdso = symbolizer::vdso::own_range().expect("this kernel maps a vDSO");
        assert_eq!(t.normalize(pid, vdso.start + 0x10), Some(Normalized::Vdso { offset: 0x10 }));
    }
}
