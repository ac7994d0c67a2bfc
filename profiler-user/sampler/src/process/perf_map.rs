//! Perf maps: the names JIT compilers give the code they generate.
//!
//! A runtime started with perf-map support (`node --perf-basic-prof`, the JVM with
//! perf-map-agent, .NET with `DOTNET_PerfMapEnabled`, Python 3.12 `-X perf`) appends one line per
//! code object to `/tmp/perf-PID.map`: `START SIZE name`, START and SIZE in hex without `0x`.
//! This is the only place the names of JIT code exist outside the runtime, and `perf report`
//! reads the same file.
//!
//! The file only grows while the process runs, so it is read incrementally from the offset where
//! the last read stopped. Code is moved and freed by the runtime's garbage collector and the
//! address range reused: a later entry for a range replaces what earlier entries said about the
//! overlap (as perf does), so a lookup answers with the code that was there most recently.
//!
//! The file is written by the profiled program and therefore untrusted: malformed lines are
//! skipped and counted, and every map is bounded in entries and name bytes (entries past the bound
//! are dropped and counted), so a runaway or hostile writer costs bounded memory.

use std::{
    collections::BTreeMap,
    io::{Read, Seek, SeekFrom},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::Arc,
};

/// Reading a perf map failed (other than the file not existing yet, which is not an error).
#[derive(Debug, thiserror::Error)]
#[error("perf map {path}: {source}")]
pub struct PerfMapError {
    path: PathBuf,
    #[source]
    source: std::io::Error,
}

/// How much of a perf map is kept.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Entries kept at most; new entries past it are dropped and counted.
    pub max_entries: usize,
    /// Bytes of names kept at most (same treatment).
    pub max_name_bytes: usize,
    /// Bytes read from the file at most per [`PerfMap::poll`]; the rest is read by later polls.
    pub max_read: usize,
    /// Longer lines are skipped as malformed (a name is a function and its source location).
    pub max_line: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_entries: 262_144, max_name_bytes: 32 << 20, max_read: 8 << 20, max_line: 4096 }
    }
}

/// What reading one perf map found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PerfMapStats {
    /// Well-formed entries read.
    pub entries: u64,
    /// Lines skipped because they do not have the `START SIZE name` shape (or are too long).
    pub malformed: u64,
    /// Entries dropped because the map reached its [`Limits`].
    pub dropped: u64,
}

/// One code range and its name.
#[derive(Clone, Debug)]
struct Entry {
    end: u64,
    name: Arc<str>,
}

/// The perf map of one process, read incrementally.
#[derive(Debug)]
pub struct PerfMap {
    path: PathBuf,
    limits: Limits,
    /// Bytes of the file consumed so far (complete lines plus `partial`).
    offset: u64,
    /// The file's identity when it was first read: a different inode (a new process with the same
    /// PID, in a new container) starts over.
    identity: Option<(u64, u64)>,
    /// A line whose end has not been written yet.
    partial: Vec<u8>,
    /// Skipping the rest of an over-long line.
    skipping: bool,
    /// Non-overlapping ranges by start address.
    entries: BTreeMap<u64, Entry>,
    name_bytes: usize,
    pub stats: PerfMapStats,
}

/// Parses one line: `START SIZE name` (hex, an optional `0x` accepted as perf does not mind it).
/// `None` for anything else, including a zero size or an empty name.
pub fn parse_line(line: &str) -> Option<(u64, u64, &str)> {
    let hex = |s: &str| u64::from_str_radix(s.strip_prefix("0x").unwrap_or(s), 16).ok();
    let (start, rest) = line.split_once(' ')?;
    let (size, name) = rest.split_once(' ')?;
    let (start, size) = (hex(start)?, hex(size)?);
    let name = name.trim_end_matches('\r');
    (size > 0 && !name.trim().is_empty() && start.checked_add(size).is_some()).then_some((start, size, name))
}

impl PerfMap {
    pub fn new(path: PathBuf, limits: Limits) -> Self {
        Self {
            path,
            limits,
            offset: 0,
            identity: None,
            partial: Vec::new(),
            skipping: false,
            entries: BTreeMap::new(),
            name_bytes: 0,
            stats: PerfMapStats::default(),
        }
    }

    /// Where process `pid` (as this host sees it) writes its perf map: `/tmp/perf-NSPID.map` under
    /// the process's root, NSPID being its PID in its own namespace (the last `NSpid` of
    /// `/proc/PID/status`), so a runtime in a container is found too.
    pub fn path_for(pid: u32) -> PathBuf {
        let ns_pid =
            std::fs::read_to_string(format!("/proc/{pid}/status")).ok().and_then(|s| ns_pid(&s)).unwrap_or(pid);
        PathBuf::from(format!("/proc/{pid}/root/tmp/perf-{ns_pid}.map"))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the file was found at some poll.
    pub fn found(&self) -> bool {
        self.identity.is_some()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The name of the code at `addr`, from the latest entry covering it.
    pub fn lookup(&self, addr: u64) -> Option<&Arc<str>> {
        let (_, e) = self.entries.range(..=addr).next_back()?;
        (addr < e.end).then_some(&e.name)
    }

    /// Reads what was appended since the last poll (at most [`Limits::max_read`] bytes). A file
    /// that does not exist (yet) is not an error: the runtime may create it later. Returns the
    /// bytes read.
    pub fn poll(&mut self) -> Result<usize, PerfMapError> {
        let path = self.path.clone();
        let err = |source| PerfMapError { path: path.clone(), source };
        let mut file = match std::fs::File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(err(e)),
        };
        let meta = file.metadata().map_err(err)?;
        let identity = (meta.dev(), meta.ino());
        if self.identity.is_some_and(|id| id != identity) || meta.len() < self.offset {
            // Replaced or truncated: another program's map now.
            self.reset();
        }
        self.identity = Some(identity);
        if meta.len() == self.offset {
            return Ok(0);
        }
        file.seek(SeekFrom::Start(self.offset)).map_err(err)?;
        let mut buf = Vec::new();
        file.take(self.limits.max_read as u64).read_to_end(&mut buf).map_err(err)?;
        self.offset += buf.len() as u64;
        self.ingest(&buf);
        Ok(buf.len())
    }

    fn reset(&mut self) {
        let stats = self.stats;
        *self = Self::new(std::mem::take(&mut self.path), self.limits);
        self.stats = stats;
    }

    /// Consumes bytes that follow what was consumed before: complete lines become entries, an
    /// unfinished last line waits for the rest.
    pub fn ingest(&mut self, mut bytes: &[u8]) {
        while let Some(nl) = bytes.iter().position(|&b| b == b'\n') {
            let (line, rest) = (&bytes[..nl], &bytes[nl + 1..]);
            bytes = rest;
            if std::mem::take(&mut self.skipping) {
                self.partial.clear();
                continue;
            }
            if self.partial.is_empty() {
                self.line(line);
            } else {
                let mut whole = std::mem::take(&mut self.partial);
                whole.extend_from_slice(line);
                self.line(&whole);
            }
        }
        if self.skipping {
            return;
        }
        if self.partial.len() + bytes.len() > self.limits.max_line {
            // Counted once, when its end arrives and is skipped.
            self.stats.malformed += 1;
            self.partial.clear();
            self.skipping = true;
        } else {
            self.partial.extend_from_slice(bytes);
        }
    }

    fn line(&mut self, line: &[u8]) {
        if line.is_empty() {
            return;
        }
        let parsed =
            (line.len() <= self.limits.max_line).then(|| std::str::from_utf8(line).ok()).flatten().and_then(parse_line);
        match parsed {
            Some((start, size, name)) => {
                self.stats.entries += 1;
                self.insert(start, start + size, name);
            }
            None => self.stats.malformed += 1,
        }
    }

    /// Adds `[start, end)`, replacing whatever earlier entries said about that range (parts of
    /// an earlier entry outside it keep their name).
    fn insert(&mut self, start: u64, end: u64, name: &str) {
        let mut overlapping = Vec::new();
        for (&s, e) in self.entries.range(..end).rev() {
            if e.end <= start {
                break;
            }
            overlapping.push(s);
        }
        let mut keep = Vec::new();
        for s in overlapping {
            if let Some(old) = self.entries.remove(&s) {
                self.name_bytes -= old.name.len();
                if s < start {
                    keep.push((s, Entry { end: start, name: old.name.clone() }));
                }
                if old.end > end {
                    keep.push((end, Entry { end: old.end, name: old.name }));
                }
            }
        }
        for (s, e) in keep {
            self.name_bytes += e.name.len();
            self.entries.insert(s, e);
        }
        if self.entries.len() >= self.limits.max_entries || self.name_bytes + name.len() > self.limits.max_name_bytes {
            if self.stats.dropped == 0 {
                tracing::warn!(
                    "{}: more than {} entries or {} bytes of names; further entries are dropped (counted)",
                    self.path.display(),
                    self.limits.max_entries,
                    self.limits.max_name_bytes
                );
            }
            self.stats.dropped += 1;
            return;
        }
        self.name_bytes += name.len();
        self.entries.insert(start, Entry { end, name: name.into() });
    }
}

/// The PID a process has in its own PID namespace: the last `NSpid` field of `/proc/PID/status`.
fn ns_pid(status: &str) -> Option<u32> {
    let line = status.lines().find_map(|l| l.strip_prefix("NSpid:"))?;
    line.split_whitespace().last()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(limits: Limits) -> PerfMap {
        PerfMap::new(PathBuf::from("/nonexistent/perf-1.map"), limits)
    }

    fn name(m: &PerfMap, addr: u64) -> Option<&str> {
        m.lookup(addr).map(|n| &**n)
    }

    #[test]
    fn parses_lines_and_skips_malformed_ones() {
        assert_eq!(
            parse_line("7f3494005b80 1e0 JS:*hotLeaf /tmp/x.js:1:17"),
            Some((0x7f3494005b80, 0x1e0, "JS:*hotLeaf /tmp/x.js:1:17"))
        );
        assert_eq!(parse_line("0x1000 0x10 stub"), Some((0x1000, 0x10, "stub")));
        let mut m = map(Limits::default());
        m.ingest(
            b"1000 10 first\n\
              zzzz 10 not hex\n\
              2000 0 empty range\n\
              3000 10\n\
              ffffffffffffffff 10 wraps\n\
              \n\
              \xff\xfe 10 not utf8\n\
              4000 20 second name with spaces\r\n",
        );
        assert_eq!(m.stats, PerfMapStats { entries: 2, malformed: 5, dropped: 0 });
        assert_eq!(name(&m, 0x1000), Some("first"));
        assert_eq!(name(&m, 0x100f), Some("first"));
        assert_eq!(name(&m, 0x1010), None);
        assert_eq!(name(&m, 0x4010), Some("second name with spaces"));
        assert_eq!(name(&m, 0xfff), None);
    }

    #[test]
    fn later_entries_replace_overlapping_ones() {
        let mut m = map(Limits::default());
        m.ingest(b"1000 100 old\n1040 20 new\n");
        assert_eq!(name(&m, 0x1000), Some("old"), "the part before the new range keeps its name");
        assert_eq!(name(&m, 0x1040), Some("new"));
        assert_eq!(name(&m, 0x105f), Some("new"));
        assert_eq!(name(&m, 0x1060), Some("old"), "and the part after it");
        m.ingest(b"f00 200 covers all\n");
        assert_eq!(m.len(), 1);
        for a in [0xf00, 0x1000, 0x1040, 0x1060, 0x10ff] {
            assert_eq!(name(&m, a), Some("covers all"));
        }
        m.ingest(b"1000 100 exact\n");
        assert_eq!(name(&m, 0x1000), Some("exact"));
        assert_eq!(name(&m, 0x10ff), Some("exact"));
        assert_eq!(name(&m, 0xfff), Some("covers all"));
        assert_eq!(name(&m, 0x1100), None);
        assert_eq!(m.name_bytes, m.entries.values().map(|e| e.name.len()).sum::<usize>());
    }

    #[test]
    fn bounded_in_entries_names_and_line_length() {
        let mut m = map(Limits { max_entries: 2, max_name_bytes: 1 << 20, max_read: 1 << 20, max_line: 64 });
        m.ingest(b"1000 10 a\n2000 10 b\n3000 10 c\n");
        assert_eq!(m.len(), 2);
        assert_eq!(m.stats.dropped, 1);
        assert_eq!(name(&m, 0x3000), None);
        // Replacing an entry frees its slot.
        m.ingest(b"1000 10 a2\n");
        assert_eq!(name(&m, 0x1000), Some("a2"));
        assert_eq!(m.stats.dropped, 1);

        let mut m = map(Limits { max_entries: 100, max_name_bytes: 8, max_read: 1 << 20, max_line: 64 });
        m.ingest(b"1000 10 12345\n2000 10 67890\n3000 10 ab\n");
        assert_eq!((m.len(), m.stats.dropped), (2, 1), "the name over the byte bound is dropped");

        let mut m = map(Limits { max_entries: 100, max_name_bytes: 1 << 20, max_read: 1 << 20, max_line: 16 });
        let long = format!("1000 10 {}\n2000 10 ok\n", "x".repeat(100));
        // Fed in pieces, as a growing file is read.
        for chunk in long.as_bytes().chunks(7) {
            m.ingest(chunk);
        }
        assert_eq!(m.stats.malformed, 1, "the over-long line is skipped once");
        assert!(m.partial.len() <= 16);
        assert_eq!(name(&m, 0x2000), Some("ok"));
        assert_eq!(name(&m, 0x1000), None);
    }

    #[test]
    fn reads_a_growing_file_incrementally() {
        let dir = std::env::temp_dir().join(format!("otelprof-perfmap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("perf-1.map");
        let _ = std::fs::remove_file(&path);
        let mut m = PerfMap::new(path.clone(), Limits { max_read: 16, ..Limits::default() });
        assert_eq!(m.poll().unwrap(), 0, "no file yet is not an error");
        use std::io::Write;
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(b"1000 10 first\n2000 10 sec").unwrap();
        f.flush().unwrap();
        while m.poll().unwrap() > 0 {}
        assert_eq!(name(&m, 0x1000), Some("first"));
        assert_eq!(name(&m, 0x2000), None, "an unfinished line waits");
        f.write_all(b"ond\n1000 10 replaced\n").unwrap();
        f.flush().unwrap();
        let mut read = 0;
        loop {
            let n = m.poll().unwrap();
            assert!(n <= 16, "bounded per poll");
            if n == 0 {
                break;
            }
            read += n;
        }
        assert_eq!(read, 21, "only the appended bytes are read");
        assert_eq!(name(&m, 0x2000), Some("second"));
        assert_eq!(name(&m, 0x1000), Some("replaced"));
        assert_eq!(m.stats.entries, 3);
        // A new file under the same name (PID reused) starts over.
        drop(f);
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, b"5000 10 other\n").unwrap();
        while m.poll().unwrap() > 0 {}
        assert_eq!(name(&m, 0x1000), None);
        assert_eq!(name(&m, 0x5000), Some("other"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn finds_the_pid_inside_the_namespace() {
        assert_eq!(ns_pid("Name:\tnode\nNSpid:\t4242\t17\nNSpgid:\t1\n"), Some(17));
        assert_eq!(ns_pid("NSpid:\t99\n"), Some(99));
        assert_eq!(ns_pid("Name:\tx\n"), None);
        let me = std::process::id();
        assert_eq!(PerfMap::path_for(me), PathBuf::from(format!("/proc/{me}/root/tmp/perf-{me}.map")));
    }
}
