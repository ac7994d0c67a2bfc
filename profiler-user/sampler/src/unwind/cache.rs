//! On-disk cache of compiled unwind tables, keyed by file identity, so a node compiles each
//! file's CFI once and not once per agent start.
//!
//! Tables are already shared by every process that maps a file; this cache also shares them
//! across restarts of the agent (issue #11), so a node pays for a compiler's 200 MB `libLLVM`
//! once. Each table is one file in the agent's state directory; a hit is a read-only memory map
//! plus one checked pass over the rows, never a recompile, and the rows stay in the page cache
//! (shared, reclaimable) rather than on the agent's heap. Measured on a 2-CPU VM (release build,
//! best of 3, page cache warm / cold after `drop_caches`):
//!
//! | file | rows | compile | cache hit |
//! |---|---|---|---|
//! | libc.so.6 (2 MB) | 28 k | 1.4 ms / 6.6 ms | 0.09 ms / 1.5 ms |
//! | libLLVM.so.22.1-rust-1.95.0 (199 MB) | 1.44 M (23 MB) | 97 ms / 111 ms | 2.6 ms / 22 ms |
//! | librustc_driver (153 MB) | 1.15 M (18 MB) | 50 ms / 82 ms | 2.1 ms / 17 ms |
//!
//! ```no_run
//! use otelprof_sampler::unwind::{cache::{Cached, TableCache}, compile};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let cache = TableCache::open("/var/lib/otelprof/unwind".as_ref(), 512 << 20)?;
//! let path = std::path::Path::new("/usr/lib/x86_64-linux-gnu/libc.so.6");
//! let key = symbolizer::FileKey::from_path(path)?;
//! match cache.get(&key) {
//!     Some(Cached::Table(table)) => println!("{} rows, no compile", table.rows().len()),
//!     Some(Cached::Failed(why)) => println!("no table last time either ({why}): frame pointers"),
//!     None => match compile(&std::fs::read(path)?) {
//!         Ok(table) => _ = cache.put(&key, &table)?,
//!         Err(e) => _ = cache.put_failed(&key, &e.to_string())?,
//!     },
//! }
//! # Ok(()) }
//! ```
//!
//! # Keys
//! Only [`FileKey::BuildId`] (content identity, valid anywhere) and [`FileKey::Inode`] (device,
//! inode, size and mtime: valid on this machine across restarts, which is all a node-local cache
//! needs) are cached; the kernel and the vDSO are not files. An entry's name is the hex SHA-256 of
//! ([`FORMAT_VERSION`], [`COMPILER_VERSION`], key), so no part of a path comes from a file's
//! contents, and an entry of another compiler version is never even looked at (it is deleted when
//! the cache opens).
//!
//! # Format (one file per entry, `unw-<format>-<compiler>-<32 hex>.tab`)
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `OTPUNWT\0` |
//! | 8 | 4 | [`FORMAT_VERSION`] (u32 little-endian, as every field) |
//! | 12 | 4 | [`COMPILER_VERSION`] |
//! | 16 | 4 | kind: 1 = table, 2 = failed (no usable table; the payload is the reason, UTF-8) |
//! | 20 | 4 | row size (16) |
//! | 24 | 8 | count: rows (table) or reason bytes (failed) |
//! | 32 | 8 | FDEs evaluated |
//! | 40 | 8 | unsupported rows |
//! | 48 | 4 | CRC-32 of the whole file with this field zeroed (header and payload) |
//! | 52 | 12 | zero (reserved) |
//! | 64 | 32 | SHA-256 of the key (the full hash the name is cut from) |
//! | 96 | … | payload: the rows as [`UnwindRow`]s (native layout, 16-byte aligned) or the reason |
//!
//! A load checks all of it — magic, versions, row size, length equal to the header's count,
//! checksum, the key hash (a file renamed or swapped under another key's name), rows strictly
//! sorted by pc — and an entry that fails any check is deleted and counted as corrupt; the caller
//! sees a miss, never garbage rows.
//!
//! # Writes, concurrency, size
//! An entry is written to a temporary file in the same directory and renamed into place, so a
//! crash mid-write or two agents writing the same entry never leave a torn one (there is no fsync:
//! an entry torn by a power loss fails its checks and is discarded). The directory is bounded by
//! `max_bytes`: after each write, least recently used entries go first (a hit sets the entry's
//! mtime). Files that do not carry an entry's name are never touched.

use std::{
    fs::{self, DirBuilder, File, OpenOptions},
    io::{self, Write},
    os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt},
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering::Relaxed},
    time::{Duration, SystemTime},
};

use memmap2::{Mmap, MmapOptions};
use profiler_common::UnwindRow;
use sha2::{Digest, Sha256};
use symbolizer::FileKey;

use super::UnwindTable;

/// Version of the file layout above. Bump it when the header or payload layout changes.
pub const FORMAT_VERSION: u32 = 1;

/// Version of what `compile.rs` emits. **Bump it whenever `compile` would produce different rows
/// (or counts) for the same file** — a new rule kind, a fixed bug, a changed merge — or agents keep
/// serving the old tables from their caches. It is part of every entry's name and header.
pub const COMPILER_VERSION: u32 = 1;

const MAGIC: [u8; 8] = *b"OTPUNWT\0";
const HEADER_LEN: usize = 96;
const ROW_SIZE: usize = size_of::<UnwindRow>();
const KIND_TABLE: u32 = 1;
const KIND_FAILED: u32 = 2;
/// Longest failure reason kept (bytes); longer ones are cut at a character boundary.
const MAX_REASON: usize = 1024;
/// Shortest build ID taken as a file identity (lld's `--build-id=fast` is 8 bytes; GNU's 20).
const MIN_BUILD_ID: usize = 8;
/// A temporary file this old is left over from a crash, not a write in progress: removed at open.
const TEMP_GRACE: Duration = Duration::from_secs(600);
const ENTRY_PREFIX: &str = "unw-";
const ENTRY_SUFFIX: &str = ".tab";
const TEMP_PREFIX: &str = ".unw-tmp-";

// The rows are stored and mapped as raw bytes: UnwindRow must have no padding (every byte
// initialized when written) and an alignment the 96-byte header keeps.
// (pc u64, cfa_offset i32, rbp_offset i16, cfa u8, rbp u8)
const _: () = assert!(ROW_SIZE == 16 && ROW_SIZE == size_of::<u64>() + size_of::<i32>() + size_of::<i16>() + 2);
const _: () = assert!(align_of::<UnwindRow>() <= 16 && HEADER_LEN.is_multiple_of(16));

/// Why the cache could not be opened or written. Every variant names the path involved.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("unwind table cache {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "unwind table cache {path}: the directory is writable by other users (mode {mode:o}), who could plant tables the unwinder trusts"
    )]
    Insecure { path: PathBuf, mode: u32 },
    #[error("unwind table cache {path}: table rows are not strictly sorted by pc (row {index}); not stored")]
    Unsorted { path: PathBuf, index: usize },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> CacheError + '_ {
    move |source| CacheError::Io { path: path.to_path_buf(), source }
}

/// What the cache knows about a file.
#[derive(Debug)]
pub enum Cached {
    /// Its compiled table.
    Table(CachedTable),
    /// It has no usable table (no CFI, not ELF, …): the reason recorded when that was found, so
    /// it is not compiled again after a restart.
    Failed(String),
}

/// A table served from the cache: the rows stay in a read-only memory map of the entry.
#[derive(Debug)]
pub struct CachedTable {
    map: Mmap,
    rows: usize,
    fdes: usize,
    unsupported: usize,
}

impl CachedTable {
    /// The rows, sorted strictly by pc (checked when the entry was loaded).
    pub fn rows(&self) -> &[UnwindRow] {
        let payload = &self.map[HEADER_LEN..];
        // SAFETY: `load` checked that the payload holds exactly `rows` rows and is aligned for
        // UnwindRow; UnwindRow is repr(C), integers only, without padding, so every bit pattern
        // is a valid row. The map is private and read-only, and entries are never written in
        // place (writers rename a new file over them, eviction unlinks), so the bytes do not
        // change under the slice.
        unsafe { std::slice::from_raw_parts(payload.as_ptr().cast::<UnwindRow>(), self.rows) }
    }

    /// FDEs the compiler evaluated (as [`UnwindTable::fdes`]).
    pub fn fdes(&self) -> usize {
        self.fdes
    }

    /// Rows whose CFA rule the unwinder cannot evaluate (as [`UnwindTable::unsupported`]).
    pub fn unsupported(&self) -> usize {
        self.unsupported
    }

    /// An owned copy, for callers that keep an [`UnwindTable`].
    pub fn to_table(&self) -> UnwindTable {
        UnwindTable { rows: self.rows().to_vec(), fdes: self.fdes, unsupported: self.unsupported }
    }
}

/// The cache's counters since it was opened (`bytes`: at the last write or open).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups answered from disk (tables and failures).
    pub hits: u64,
    /// Lookups without a usable entry (corrupt ones included).
    pub misses: u64,
    /// Entries written.
    pub writes: u64,
    /// Entries removed to keep the directory under its bound.
    pub evictions: u64,
    /// Entries that failed their checks on load and were deleted.
    pub corrupt: u64,
    /// Entries of another format or compiler version deleted at open.
    pub stale: u64,
    /// Tables not stored because one alone is larger than the whole bound.
    pub too_large: u64,
    /// Bytes of all entries in the directory.
    pub bytes: u64,
}

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    writes: AtomicU64,
    evictions: AtomicU64,
    corrupt: AtomicU64,
    stale: AtomicU64,
    too_large: AtomicU64,
    bytes: AtomicU64,
    temp_seq: AtomicU64,
}

/// The on-disk cache of one directory. Methods take `&self`; several caches (also in several
/// processes) may share a directory.
pub struct TableCache {
    dir: PathBuf,
    max_bytes: u64,
    counters: Counters,
}

impl TableCache {
    /// Opens (creating it, mode 0700) the cache directory `dir`, bounded to `max_bytes` of
    /// entries. Deletes entries of other format or compiler versions and temporary files left by
    /// crashed writers, and checks the directory can be written, so a broken state directory is
    /// reported at start rather than at the first table.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Self, CacheError> {
        DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io_error(dir))?;
        let meta = fs::metadata(dir).map_err(io_error(dir))?;
        if meta.mode() & 0o022 != 0 {
            return Err(CacheError::Insecure { path: dir.to_path_buf(), mode: meta.mode() & 0o7777 });
        }
        let cache = Self { dir: dir.to_path_buf(), max_bytes, counters: Counters::default() };
        // Is it writable? (A read-only mount or a directory of another user fails here.)
        let (probe, file) = cache.create_temp()?;
        drop(file);
        let _ = fs::remove_file(&probe);
        cache.clean_up()?;
        cache.enforce_bound();
        Ok(cache)
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The entry of `key`, if there is a valid one. An entry that fails its checks is deleted
    /// (counted in [`CacheStats::corrupt`]) and reported as a miss. A hit marks the entry as
    /// recently used.
    pub fn get(&self, key: &FileKey) -> Option<Cached> {
        let digest = key_digest(key)?;
        let path = self.entry_path(&digest);
        let file = match OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(&path) {
            Ok(file) => file,
            Err(e) => {
                if e.kind() != io::ErrorKind::NotFound {
                    tracing::debug!("unwind table cache {}: {e}", path.display());
                }
                self.counters.misses.fetch_add(1, Relaxed);
                return None;
            }
        };
        match load(&file, &digest) {
            Ok(entry) => {
                self.counters.hits.fetch_add(1, Relaxed);
                // LRU by mtime. Failing (another owner's entry, a read-only remount) only makes
                // this entry look older.
                let _ = file.set_modified(SystemTime::now());
                Some(entry)
            }
            Err(Bad::Io(e)) => {
                tracing::debug!("unwind table cache {}: {e}", path.display());
                self.counters.misses.fetch_add(1, Relaxed);
                None
            }
            Err(Bad::Corrupt(why)) => {
                self.discard(&path, &file, why);
                self.counters.misses.fetch_add(1, Relaxed);
                None
            }
        }
    }

    /// Stores `table` as the entry of `key` (replacing any), then evicts least recently used
    /// entries while the directory holds more than `max_bytes`. `Ok(false)`: not stored, because
    /// the key is not cached (kernel, vDSO, too short a build ID) or the entry alone is larger
    /// than `max_bytes`.
    pub fn put(&self, key: &FileKey, table: &UnwindTable) -> Result<bool, CacheError> {
        let Some(digest) = key_digest(key) else { return Ok(false) };
        if let Some(i) = table.rows.windows(2).position(|w| w[0].pc >= w[1].pc) {
            return Err(CacheError::Unsorted { path: self.entry_path(&digest), index: i + 1 });
        }
        let counts =
            Counts { count: table.rows.len() as u64, fdes: table.fdes as u64, unsupported: table.unsupported as u64 };
        self.write(&digest, KIND_TABLE, counts, rows_as_bytes(&table.rows))
    }

    /// Records that `key`'s file has no usable table, and why (cut to 1 KiB), so a restarted
    /// agent does not compile it again. Returns as [`put`](Self::put).
    pub fn put_failed(&self, key: &FileKey, reason: &str) -> Result<bool, CacheError> {
        let Some(digest) = key_digest(key) else { return Ok(false) };
        let mut end = reason.len().min(MAX_REASON);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        let reason = &reason.as_bytes()[..end];
        self.write(&digest, KIND_FAILED, Counts { count: reason.len() as u64, fdes: 0, unsupported: 0 }, reason)
    }

    /// The counters.
    pub fn stats(&self) -> CacheStats {
        let c = &self.counters;
        CacheStats {
            hits: c.hits.load(Relaxed),
            misses: c.misses.load(Relaxed),
            writes: c.writes.load(Relaxed),
            evictions: c.evictions.load(Relaxed),
            corrupt: c.corrupt.load(Relaxed),
            stale: c.stale.load(Relaxed),
            too_large: c.too_large.load(Relaxed),
            bytes: c.bytes.load(Relaxed),
        }
    }

    fn entry_path(&self, digest: &[u8; 32]) -> PathBuf {
        let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        self.dir.join(format!("{ENTRY_PREFIX}{FORMAT_VERSION}-{COMPILER_VERSION}-{hex}{ENTRY_SUFFIX}"))
    }

    fn write(&self, digest: &[u8; 32], kind: u32, counts: Counts, payload: &[u8]) -> Result<bool, CacheError> {
        let path = self.entry_path(digest);
        if (HEADER_LEN + payload.len()) as u64 > self.max_bytes {
            self.counters.too_large.fetch_add(1, Relaxed);
            tracing::debug!(
                "unwind table cache: {} ({} bytes) is larger than the whole cache ({} bytes); not stored",
                path.display(),
                HEADER_LEN + payload.len(),
                self.max_bytes
            );
            return Ok(false);
        }
        let header = header(kind, counts, digest, payload);
        let (temp, mut file) = self.create_temp()?;
        let written = file
            .write_all(&header)
            .and_then(|()| file.write_all(payload))
            // A write is a use: the newest entry is the last one evicted.
            .and_then(|()| file.set_modified(SystemTime::now()))
            .and_then(|()| fs::rename(&temp, &path));
        if let Err(e) = written {
            let _ = fs::remove_file(&temp);
            return Err(CacheError::Io { path, source: e });
        }
        self.counters.writes.fetch_add(1, Relaxed);
        self.enforce_bound();
        Ok(true)
    }

    /// A new temporary file in the directory. Names carry pid, time and a sequence number; agents
    /// in different pid namespaces can still collide, hence the retries.
    fn create_temp(&self) -> Result<(PathBuf, File), CacheError> {
        let mut attempt = 0;
        loop {
            let seq = self.counters.temp_seq.fetch_add(1, Relaxed);
            let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().subsec_nanos();
            let path = self.dir.join(format!("{TEMP_PREFIX}{}-{nanos}-{seq}", std::process::id()));
            match OpenOptions::new().write(true).create_new(true).mode(0o600).custom_flags(libc::O_NOFOLLOW).open(&path)
            {
                Ok(file) => return Ok((path, file)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < 8 => attempt += 1,
                Err(e) => return Err(CacheError::Io { path, source: e }),
            }
        }
    }

    /// Deletes entries of other versions and stale temporary files.
    fn clean_up(&self) -> Result<(), CacheError> {
        let now = SystemTime::now();
        for dirent in fs::read_dir(&self.dir).map_err(io_error(&self.dir))? {
            let Ok(dirent) = dirent else { continue };
            let name = dirent.file_name();
            let Some(name) = name.to_str() else { continue };
            let stale = match parse_entry_name(name) {
                Some(versions) => versions != (FORMAT_VERSION, COMPILER_VERSION),
                None => {
                    name.starts_with(TEMP_PREFIX)
                        && dirent
                            .metadata()
                            .and_then(|m| m.modified())
                            .is_ok_and(|t| now.duration_since(t).is_ok_and(|age| age > TEMP_GRACE))
                }
            };
            if stale && fs::remove_file(dirent.path()).is_ok() && !name.starts_with(TEMP_PREFIX) {
                self.counters.stale.fetch_add(1, Relaxed);
            }
        }
        Ok(())
    }

    /// Evicts least recently used entries (oldest mtime first) while the entries in the directory
    /// (any version, any writer) take more than `max_bytes`. Failures are logged: the entry that
    /// was just written is fine either way.
    fn enforce_bound(&self) {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) => {
                tracing::warn!("unwind table cache {}: {e}", self.dir.display());
                return;
            }
        };
        let mut entries: Vec<(SystemTime, u64, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter(|d| d.file_name().to_str().is_some_and(|n| parse_entry_name(n).is_some()))
            .filter_map(|d| {
                let meta = d.metadata().ok()?;
                meta.is_file().then(|| (meta.modified().unwrap_or(SystemTime::UNIX_EPOCH), meta.len(), d.path()))
            })
            .collect();
        let mut total: u64 = entries.iter().map(|(_, len, _)| len).sum();
        if total > self.max_bytes {
            entries.sort();
            for (_, len, path) in &entries {
                if total <= self.max_bytes {
                    break;
                }
                match fs::remove_file(path) {
                    Ok(()) => {
                        total -= len;
                        self.counters.evictions.fetch_add(1, Relaxed);
                    }
                    // Another agent got there first.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => total -= len,
                    Err(e) => tracing::warn!("unwind table cache {}: evicting: {e}", path.display()),
                }
            }
        }
        self.counters.bytes.store(total, Relaxed);
    }

    /// Deletes the corrupt entry at `path` — if it is still the file that was read: another
    /// agent may have renamed a good entry over it meanwhile.
    fn discard(&self, path: &Path, file: &File, why: &str) {
        self.counters.corrupt.fetch_add(1, Relaxed);
        tracing::warn!("unwind table cache {}: discarding a corrupt entry: {why}", path.display());
        if let (Ok(read), Ok(now)) = (file.metadata(), fs::symlink_metadata(path)) {
            if (read.dev(), read.ino()) == (now.dev(), now.ino()) && fs::remove_file(path).is_ok() {
                let _ = self.counters.bytes.fetch_update(Relaxed, Relaxed, |b| Some(b.saturating_sub(read.len())));
            }
        }
    }
}

/// `unw-<format>-<compiler>-<32 lowercase hex>.tab` → (format, compiler).
fn parse_entry_name(name: &str) -> Option<(u32, u32)> {
    let rest = name.strip_prefix(ENTRY_PREFIX)?.strip_suffix(ENTRY_SUFFIX)?;
    let mut parts = rest.split('-');
    let (format, compiler, hex) = (parts.next()?, parts.next()?, parts.next()?);
    let hex_ok = hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if parts.next().is_some() || !hex_ok || !digits(format) || !digits(compiler) {
        return None;
    }
    Some((format.parse().ok()?, compiler.parse().ok()?))
}

/// SHA-256 of the versions and the key; `None` for keys that are not cached.
fn key_digest(key: &FileKey) -> Option<[u8; 32]> {
    let mut h = Sha256::new();
    h.update(b"otelprof unwind table cache\0");
    h.update(FORMAT_VERSION.to_le_bytes());
    h.update(COMPILER_VERSION.to_le_bytes());
    match key {
        FileKey::BuildId(id) if id.len() >= MIN_BUILD_ID => {
            h.update(b"B");
            h.update((id.len() as u64).to_le_bytes());
            h.update(id);
        }
        FileKey::Inode { dev, ino, size, mtime } => {
            h.update(b"I");
            for v in [*dev, *ino, *size, *mtime as u64] {
                h.update(v.to_le_bytes());
            }
        }
        FileKey::BuildId(_) | FileKey::Kernel | FileKey::Vdso => return None,
    }
    Some(h.finalize().into())
}

fn rows_as_bytes(rows: &[UnwindRow]) -> &[u8] {
    // SAFETY: UnwindRow is repr(C) without padding (asserted at the top), so all its bytes are
    // initialized; u8 has no alignment requirement.
    unsafe { std::slice::from_raw_parts(rows.as_ptr().cast::<u8>(), size_of_val(rows)) }
}

#[derive(Clone, Copy)]
struct Counts {
    count: u64,
    fdes: u64,
    unsupported: u64,
}

/// The header of an entry holding `payload`, checksum included.
fn header(kind: u32, counts: Counts, digest: &[u8; 32], payload: &[u8]) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&COMPILER_VERSION.to_le_bytes());
    h[16..20].copy_from_slice(&kind.to_le_bytes());
    h[20..24].copy_from_slice(&(ROW_SIZE as u32).to_le_bytes());
    h[24..32].copy_from_slice(&counts.count.to_le_bytes());
    h[32..40].copy_from_slice(&counts.fdes.to_le_bytes());
    h[40..48].copy_from_slice(&counts.unsupported.to_le_bytes());
    h[64..96].copy_from_slice(digest);
    let crc = checksum(&h, payload);
    h[48..52].copy_from_slice(&crc.to_le_bytes());
    h
}

/// CRC-32 (crc32fast, through flate2) of the header with its checksum field zeroed, then the
/// payload.
fn checksum(header: &[u8; HEADER_LEN], payload: &[u8]) -> u32 {
    let mut h = *header;
    h[48..52].fill(0);
    let mut crc = flate2::Crc::new();
    crc.update(&h);
    crc.update(payload);
    crc.sum()
}

fn u32_at(h: &[u8; HEADER_LEN], at: usize) -> u32 {
    let mut b = [0; 4];
    b.copy_from_slice(&h[at..at + 4]);
    u32::from_le_bytes(b)
}

fn u64_at(h: &[u8; HEADER_LEN], at: usize) -> u64 {
    let mut b = [0; 8];
    b.copy_from_slice(&h[at..at + 8]);
    u64::from_le_bytes(b)
}

enum Bad {
    /// Reading failed: a miss, the entry stays.
    Io(io::Error),
    /// The entry is wrong: deleted.
    Corrupt(&'static str),
}

impl From<io::Error> for Bad {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

/// Maps and checks the entry in `file`, which should hold the key hashed to `digest`.
fn load(file: &File, digest: &[u8; 32]) -> Result<Cached, Bad> {
    if !file.metadata()?.is_file() {
        return Err(Bad::Corrupt("not a regular file"));
    }
    // SAFETY: see `CachedTable::rows`: entries are never modified in place, only replaced by
    // rename and unlinked, which leave an existing map intact. (Only the owner of the 0700
    // directory could truncate one under the map.)
    let map = unsafe { MmapOptions::new().populate().map(file)? };
    let Some(raw) = map.get(..HEADER_LEN) else { return Err(Bad::Corrupt("shorter than the header")) };
    let mut h = [0u8; HEADER_LEN];
    h.copy_from_slice(raw);
    if h[0..8] != MAGIC {
        return Err(Bad::Corrupt("bad magic"));
    }
    if u32_at(&h, 8) != FORMAT_VERSION || u32_at(&h, 12) != COMPILER_VERSION {
        return Err(Bad::Corrupt("format or compiler version differs from its name"));
    }
    if u32_at(&h, 20) as usize != ROW_SIZE || h[52..64].iter().any(|&b| b != 0) {
        return Err(Bad::Corrupt("bad row size or reserved bytes"));
    }
    if h[64..96] != digest[..] {
        return Err(Bad::Corrupt("written for another key (key hash differs)"));
    }
    let (kind, count) = (u32_at(&h, 16), u64_at(&h, 24));
    let payload = &map[HEADER_LEN..];
    let expected = match kind {
        KIND_TABLE => count.checked_mul(ROW_SIZE as u64),
        KIND_FAILED if count <= MAX_REASON as u64 => Some(count),
        _ => return Err(Bad::Corrupt("unknown kind")),
    };
    if expected != Some(payload.len() as u64) {
        return Err(Bad::Corrupt("length does not match the header's count"));
    }
    if checksum(&h, payload) != u32_at(&h, 48) {
        return Err(Bad::Corrupt("checksum mismatch"));
    }
    if kind == KIND_FAILED {
        return match std::str::from_utf8(payload) {
            Ok(reason) => Ok(Cached::Failed(reason.to_string())),
            Err(_) => Err(Bad::Corrupt("failure reason is not UTF-8")),
        };
    }
    let (Ok(rows), Ok(fdes), Ok(unsupported)) =
        (usize::try_from(count), usize::try_from(u64_at(&h, 32)), usize::try_from(u64_at(&h, 40)))
    else {
        return Err(Bad::Corrupt("counts out of range"));
    };
    if payload.as_ptr().align_offset(align_of::<UnwindRow>()) != 0 {
        // Never with a page-aligned map; not the entry's fault.
        return Err(Bad::Io(io::Error::other("unaligned map")));
    }
    let table = CachedTable { map, rows, fdes, unsupported };
    if table.rows().windows(2).any(|w| w[0].pc >= w[1].pc) {
        return Err(Bad::Corrupt("rows not strictly sorted by pc"));
    }
    Ok(Cached::Table(table))
}

#[cfg(test)]
mod tests {
    use std::{process::Command, sync::OnceLock};

    use super::*;
    use crate::unwind::compile;

    /// A fresh directory per test (removed first, in case of an earlier run).
    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("otelprof-cache-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    /// This test binary's libc, compiled once for all tests.
    fn libc() -> &'static (FileKey, UnwindTable) {
        static LIBC: OnceLock<(FileKey, UnwindTable)> = OnceLock::new();
        LIBC.get_or_init(|| {
            let path = PathBuf::from(crate::unwind::compile::tests::libc_path());
            let key = FileKey::from_path(&path).unwrap();
            assert!(matches!(key, FileKey::BuildId(_)), "Debian's libc has a build ID");
            (key, compile(&fs::read(&path).unwrap()).unwrap())
        })
    }

    /// A small C program without build ID (so its key is its inode identity), compiled once.
    fn c_program() -> &'static (FileKey, UnwindTable) {
        static PROGRAM: OnceLock<(FileKey, UnwindTable)> = OnceLock::new();
        PROGRAM.get_or_init(|| {
            let dir = temp_dir("cprog");
            fs::create_dir_all(&dir).unwrap();
            let src = dir.join("p.c");
            fs::write(
                &src,
                "#include <stdlib.h>\nvolatile long sink;\n\
                 __attribute__((noinline)) long leaf(long n) { long a[64]; for (long i = 0; i < 64; i++) a[i] = i * n; return a[n & 63]; }\n\
                 __attribute__((noinline)) long with_alloca(long n) { volatile char *p = __builtin_alloca(n); for (long i = 0; i < n; i++) p[i] = (char)i; return leaf(p[n / 2]); }\n\
                 int main(int c, char **v) { (void)v; sink = with_alloca(c * 100); return 0; }\n",
            )
            .unwrap();
            let exe = dir.join("p");
            let out = Command::new("cc")
                .args(["-O2", "-fomit-frame-pointer", "-Wl,--build-id=none"])
                .arg(&src)
                .arg("-o")
                .arg(&exe)
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let key = FileKey::from_path(&exe).unwrap();
            assert!(matches!(key, FileKey::Inode { .. }), "built without build ID: {key:?}");
            let table = compile(&fs::read(&exe).unwrap()).unwrap();
            assert!(table.rows.len() > 5, "{table:?}");
            fs::remove_dir_all(&dir).unwrap();
            (key, table)
        })
    }

    fn table_of(cached: Option<Cached>) -> CachedTable {
        match cached {
            Some(Cached::Table(t)) => t,
            other => panic!("expected a cached table, got {other:?}"),
        }
    }

    fn assert_same(cached: &CachedTable, table: &UnwindTable) {
        assert_eq!(cached.rows(), &table.rows[..]);
        assert_eq!((cached.fdes(), cached.unsupported()), (table.fdes, table.unsupported));
        assert_eq!(&cached.to_table(), table);
    }

    /// `n` synthetic rows (strictly sorted), for tests about sizes rather than contents.
    fn synthetic(n: usize, seed: u64) -> UnwindTable {
        let rows = (0..n as u64)
            .map(|i| UnwindRow { pc: 0x1000 + i * 4, cfa_offset: (i ^ seed) as i32, rbp_offset: -16, cfa: 1, rbp: 1 })
            .collect();
        UnwindTable { rows, fdes: n / 2, unsupported: 0 }
    }

    fn key(n: u8) -> FileKey {
        FileKey::BuildId(vec![n; 20])
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> =
            fs::read_dir(dir).unwrap().map(|d| d.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    }

    #[test]
    fn libc_and_a_c_program_round_trip_and_survive_a_restart() {
        let dir = temp_dir("roundtrip");
        let (libc_key, libc_table) = libc();
        let (prog_key, prog_table) = c_program();
        {
            let cache = TableCache::open(&dir, 64 << 20).unwrap();
            assert!(cache.get(libc_key).is_none());
            assert!(cache.put(libc_key, libc_table).unwrap());
            assert!(cache.put(prog_key, prog_table).unwrap());
            assert_same(&table_of(cache.get(libc_key)), libc_table);
            assert_same(&table_of(cache.get(prog_key)), prog_table);
            let s = cache.stats();
            assert_eq!((s.hits, s.misses, s.writes, s.corrupt, s.evictions), (2, 1, 2, 0, 0), "{s:?}");
            let expected = 2 * HEADER_LEN + libc_table.bytes() + prog_table.bytes();
            assert_eq!(s.bytes, expected as u64);
        }
        // A restarted agent: no compile, the same rows.
        let cache = TableCache::open(&dir, 64 << 20).unwrap();
        assert_eq!(cache.stats().bytes, (2 * HEADER_LEN + libc_table.bytes() + prog_table.bytes()) as u64);
        let libc_rows = table_of(cache.get(libc_key));
        assert_same(&libc_rows, libc_table);
        assert_same(&table_of(cache.get(prog_key)), prog_table);
        assert_eq!((cache.stats().hits, cache.stats().misses, cache.stats().writes), (2, 0, 0));
        // Replacing an entry while its old version is mapped leaves the mapped rows intact.
        assert!(cache.put(libc_key, prog_table).unwrap());
        assert_same(&libc_rows, libc_table);
        assert_same(&table_of(cache.get(libc_key)), prog_table);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn directory_and_entries_are_private() {
        let dir = temp_dir("private").join("nested");
        let cache = TableCache::open(&dir, 1 << 20).unwrap();
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        cache.put(&key(1), &synthetic(4, 0)).unwrap();
        let name = files(&dir).pop().unwrap();
        assert!(parse_entry_name(&name).is_some(), "{name}");
        assert_eq!(fs::metadata(dir.join(&name)).unwrap().mode() & 0o777, 0o600);
        // A directory others can write to is refused: they could plant tables.
        let shared = temp_dir("shared");
        fs::create_dir_all(&shared).unwrap();
        fs::set_permissions(&shared, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
        let e = TableCache::open(&shared, 1 << 20).err().expect("refused");
        assert!(matches!(e, CacheError::Insecure { .. }) && e.to_string().contains(&*shared.to_string_lossy()), "{e}");
        fs::remove_dir_all(dir.parent().unwrap()).unwrap();
        fs::remove_dir_all(&shared).unwrap();
    }

    /// Damages the entry of `key` with `damage`, then checks that `get` misses, counts it as
    /// corrupt and deletes the file.
    fn assert_discarded(cache: &TableCache, key: &FileKey, what: &str, damage: impl FnOnce(&Path)) {
        let path = cache.entry_path(&key_digest(key).unwrap());
        assert!(path.exists(), "{what}: entry written");
        damage(&path);
        let corrupt = cache.stats().corrupt;
        assert!(cache.get(key).is_none(), "{what}: served a damaged entry");
        assert_eq!(cache.stats().corrupt, corrupt + 1, "{what}: counted");
        assert!(!path.exists(), "{what}: the damaged entry is deleted");
    }

    fn patch(path: &Path, at: usize, bytes: &[u8]) {
        let mut data = fs::read(path).unwrap();
        data[at..at + bytes.len()].copy_from_slice(bytes);
        fs::write(path, data).unwrap();
    }

    #[test]
    fn damaged_entries_are_deleted_and_never_served() {
        let dir = temp_dir("corrupt");
        let cache = TableCache::open(&dir, 64 << 20).unwrap();
        let (k, table) = c_program();
        let len = HEADER_LEN + table.bytes();
        type Damage = Box<dyn FnOnce(&Path)>;
        let cases: Vec<(&str, Damage)> = vec![
            ("a flipped bit in a row", Box::new(move |p| patch(p, len - 3, &[fs::read(p).unwrap()[len - 3] ^ 1]))),
            ("a changed fde count", Box::new(|p| patch(p, 32, &[0xff]))),
            ("a changed checksum", Box::new(|p| patch(p, 48, &[0, 0, 0, 0]))),
            ("bad magic", Box::new(|p| patch(p, 0, b"ELF"))),
            (
                "truncated rows",
                Box::new(move |p| File::options().write(true).open(p).unwrap().set_len(len as u64 - 8).unwrap()),
            ),
            ("truncated header", Box::new(|p| File::options().write(true).open(p).unwrap().set_len(40).unwrap())),
            ("empty", Box::new(|p| File::options().write(true).open(p).unwrap().set_len(0).unwrap())),
            (
                "bytes appended",
                Box::new(|p| File::options().append(true).open(p).unwrap().write_all(&[0; 16]).unwrap()),
            ),
            ("another format version", Box::new(|p| patch(p, 8, &(FORMAT_VERSION + 1).to_le_bytes()))),
            ("another compiler version", Box::new(|p| patch(p, 12, &(COMPILER_VERSION + 1).to_le_bytes()))),
            ("a huge row count", Box::new(|p| patch(p, 24, &u64::MAX.to_le_bytes()))),
            ("an unknown kind", Box::new(|p| patch(p, 16, &7u32.to_le_bytes()))),
        ];
        for (what, damage) in cases {
            cache.put(k, table).unwrap();
            assert_discarded(&cache, k, what, damage);
        }
        // Checks that the checksum alone would not catch: a consistent entry (valid checksum)
        // whose rows are out of order, or that claims to be for another key.
        let digest = key_digest(k).unwrap();
        let mut rows = table.rows.clone();
        rows.swap(1, 2);
        let counts = Counts { count: rows.len() as u64, fdes: 1, unsupported: 0 };
        let unsorted = [&header(KIND_TABLE, counts, &digest, rows_as_bytes(&rows))[..], rows_as_bytes(&rows)].concat();
        cache.put(k, table).unwrap();
        assert_discarded(&cache, k, "unsorted rows", |p| fs::write(p, &unsorted).unwrap());
        let other = key_digest(&key(9)).unwrap();
        let rows = rows_as_bytes(&table.rows);
        let foreign =
            [&header(KIND_TABLE, Counts { count: table.rows.len() as u64, ..counts }, &other, rows)[..], rows].concat();
        cache.put(k, table).unwrap();
        assert_discarded(&cache, k, "another key's hash", |p| fs::write(p, &foreign).unwrap());
        // After all that, a good entry still works.
        cache.put(k, table).unwrap();
        assert_same(&table_of(cache.get(k)), table);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn swapped_entries_are_discarded() {
        let dir = temp_dir("swap");
        let cache = TableCache::open(&dir, 64 << 20).unwrap();
        let (a, b) = (key(1), key(2));
        cache.put(&a, &synthetic(10, 1)).unwrap();
        cache.put(&b, &synthetic(20, 2)).unwrap();
        let (pa, pb) = (cache.entry_path(&key_digest(&a).unwrap()), cache.entry_path(&key_digest(&b).unwrap()));
        let tmp = dir.join("swap");
        fs::rename(&pa, &tmp).unwrap();
        fs::rename(&pb, &pa).unwrap();
        fs::rename(&tmp, &pb).unwrap();
        assert!(cache.get(&a).is_none() && cache.get(&b).is_none());
        assert_eq!(cache.stats().corrupt, 2);
        assert!(!pa.exists() && !pb.exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn eviction_keeps_the_bound_and_drops_the_least_recently_used() {
        let dir = temp_dir("evict");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("README"), "not ours").unwrap();
        let entry = (HEADER_LEN + 1000 * ROW_SIZE) as u64;
        let max = entry * 7 / 2; // room for three entries
        let cache = TableCache::open(&dir, max).unwrap();
        let tables: Vec<UnwindTable> = (0..5).map(|i| synthetic(1000, i)).collect();
        for i in 0..3 {
            assert!(cache.put(&key(i), &tables[i as usize]).unwrap());
        }
        assert_eq!((cache.stats().bytes, cache.stats().evictions), (3 * entry, 0));
        // Key 0 is used again; key 1 is now the least recently used.
        assert!(cache.get(&key(0)).is_some());
        assert!(cache.put(&key(3), &tables[3]).unwrap());
        let s = cache.stats();
        assert_eq!((s.evictions, s.bytes), (1, 3 * entry), "{s:?}");
        assert!(cache.get(&key(1)).is_none(), "the least recently used entry went");
        for i in [0, 2, 3] {
            assert_same(&table_of(cache.get(&key(i))), &tables[i as usize]);
        }
        // Those hits went to 0, 2, 3 in that order: 0 is now the least recently used.
        assert!(cache.put(&key(4), &tables[4]).unwrap());
        assert!(cache.get(&key(0)).is_none());
        assert!(cache.stats().bytes <= max);
        let on_disk: u64 = fs::read_dir(&dir)
            .unwrap()
            .map(|d| d.unwrap())
            .filter(|d| d.file_name() != "README")
            .map(|d| d.metadata().unwrap().len())
            .sum();
        assert_eq!(on_disk, 3 * entry);
        // A table larger than the whole bound is not stored (and evicts nothing).
        assert!(!cache.put(&key(5), &synthetic(4000, 5)).unwrap());
        assert!(cache.get(&key(5)).is_none());
        assert_eq!((cache.stats().too_large, cache.stats().evictions), (1, 2));
        // Others' files are left alone; a smaller bound at the next start evicts down to it.
        assert_eq!(fs::read_to_string(dir.join("README")).unwrap(), "not ours");
        drop(cache);
        let cache = TableCache::open(&dir, entry).unwrap();
        assert_eq!((cache.stats().bytes, cache.stats().evictions), (entry, 2));
        assert!(cache.get(&key(4)).is_some(), "the most recent entry stays");
        assert!(dir.join("README").exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn files_without_a_table_are_remembered() {
        let dir = temp_dir("negative");
        let why = compile(b"#!/bin/sh\necho not an ELF\n").unwrap_err().to_string();
        let k = key(7);
        {
            let cache = TableCache::open(&dir, 1 << 20).unwrap();
            assert!(cache.put_failed(&k, &why).unwrap());
            assert!(matches!(cache.get(&k), Some(Cached::Failed(r)) if r == why));
        }
        let cache = TableCache::open(&dir, 1 << 20).unwrap();
        assert!(matches!(cache.get(&k), Some(Cached::Failed(r)) if r == why), "after a restart too");
        // Long reasons are cut at a character boundary.
        let long = "é".repeat(MAX_REASON);
        cache.put_failed(&k, &long).unwrap();
        let Some(Cached::Failed(cut)) = cache.get(&k) else { panic!("a failure entry") };
        assert!(cut.len() <= MAX_REASON && long.starts_with(&cut) && cut.len() > MAX_REASON - 2);
        // A table replaces a failure (a newer compiler may do better).
        cache.put(&k, &synthetic(3, 0)).unwrap();
        assert_same(&table_of(cache.get(&k)), &synthetic(3, 0));
        // A damaged failure entry is discarded like a table.
        cache.put_failed(&k, &why).unwrap();
        assert_discarded(&cache, &k, "failure reason", |p| patch(p, HEADER_LEN, b"X"));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn only_file_keys_are_cached() {
        let dir = temp_dir("keys");
        let cache = TableCache::open(&dir, 1 << 20).unwrap();
        for k in [FileKey::Kernel, FileKey::Vdso, FileKey::BuildId(vec![1, 2, 3])] {
            assert!(!cache.put(&k, &synthetic(3, 0)).unwrap());
            assert!(!cache.put_failed(&k, "x").unwrap());
            assert!(cache.get(&k).is_none());
        }
        assert!(files(&dir).is_empty());
        // Inode keys that differ in any field are different entries.
        let inode = FileKey::Inode { dev: 1, ino: 2, size: 3, mtime: 4 };
        let newer = FileKey::Inode { dev: 1, ino: 2, size: 3, mtime: 5 };
        cache.put(&inode, &synthetic(3, 0)).unwrap();
        assert!(cache.get(&newer).is_none());
        assert!(cache.get(&inode).is_some());
        // Tables the BPF binary search could not use are refused, with the path.
        let mut bad = synthetic(3, 0);
        bad.rows[2].pc = bad.rows[1].pc;
        let e = cache.put(&inode, &bad).unwrap_err();
        assert!(matches!(e, CacheError::Unsorted { index: 2, .. }) && e.to_string().contains(".tab"), "{e}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn stale_versions_and_leftover_temporary_files_are_cleaned_at_open() {
        let dir = temp_dir("stale");
        fs::create_dir_all(&dir).unwrap();
        let hex = "0123456789abcdef0123456789abcdef";
        let old_compiler = format!("unw-{FORMAT_VERSION}-{}-{hex}.tab", COMPILER_VERSION + 1);
        let old_format = format!("unw-{}-{COMPILER_VERSION}-{hex}.tab", FORMAT_VERSION + 1);
        let old_temp = format!("{TEMP_PREFIX}1-2-3");
        let fresh_temp = format!("{TEMP_PREFIX}4-5-6");
        for name in [&old_compiler, &old_format, &old_temp, &fresh_temp, "unw-notes.tab", "keep.txt"] {
            fs::write(dir.join(name), "x").unwrap();
        }
        File::options()
            .write(true)
            .open(dir.join(&old_temp))
            .unwrap()
            .set_modified(SystemTime::now() - 2 * TEMP_GRACE)
            .unwrap();
        let cache = TableCache::open(&dir, 1 << 20).unwrap();
        assert_eq!(cache.stats().stale, 2);
        assert_eq!(files(&dir), [fresh_temp, "keep.txt".to_string(), "unw-notes.tab".to_string()]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unusable_directories_are_errors_not_panics() {
        let base = temp_dir("unusable");
        fs::create_dir_all(&base).unwrap();
        // Under a regular file.
        let file = base.join("file");
        fs::write(&file, "x").unwrap();
        let e = TableCache::open(&file.join("cache"), 1 << 20).err().expect("a file is in the way");
        assert!(e.to_string().contains(&*file.to_string_lossy()), "{e}");
        // On a file system nobody can write (procfs).
        assert!(TableCache::open(Path::new("/proc/otelprof-unwind-cache"), 1 << 20).is_err());
        // Read-only for its owner (root writes anyway: only checked without privileges).
        let ro = base.join("ro");
        fs::create_dir_all(&ro).unwrap();
        fs::set_permissions(&ro, std::os::unix::fs::PermissionsExt::from_mode(0o500)).unwrap();
        if unsafe { libc::geteuid() } != 0 {
            let e = TableCache::open(&ro, 1 << 20).err().expect("read-only directory");
            assert!(e.to_string().contains(&*ro.to_string_lossy()), "{e}");
        }
        // The directory disappears under a running cache (replaced by a file).
        let gone = base.join("gone");
        let cache = TableCache::open(&gone, 1 << 20).unwrap();
        cache.put(&key(1), &synthetic(3, 0)).unwrap();
        fs::remove_dir_all(&gone).unwrap();
        fs::write(&gone, "x").unwrap();
        let e = cache.put(&key(2), &synthetic(3, 0)).unwrap_err();
        assert!(e.to_string().contains(&*gone.to_string_lossy()), "{e}");
        assert!(cache.get(&key(1)).is_none());
        assert!(cache.put_failed(&key(3), "x").is_err());
        fs::set_permissions(&ro, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
        fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn concurrent_writers_and_readers_never_see_a_torn_entry() {
        let dir = temp_dir("concurrent");
        let caches = [TableCache::open(&dir, 64 << 20).unwrap(), TableCache::open(&dir, 64 << 20).unwrap()];
        let k = key(1);
        let (a, b) = (&synthetic(20_000, 1), &synthetic(20_000, 2));
        std::thread::scope(|s| {
            for (i, cache) in caches.iter().enumerate() {
                let (k, table) = (&k, if i == 0 { a } else { b });
                s.spawn(move || {
                    for _ in 0..20 {
                        cache.put(k, table).unwrap();
                    }
                });
                s.spawn(move || {
                    for _ in 0..50 {
                        if let Some(Cached::Table(t)) = cache.get(k) {
                            let t = t.to_table();
                            assert!(t == *a || t == *b, "a torn entry");
                        }
                    }
                });
            }
        });
        assert_eq!(caches.iter().map(|c| c.stats().corrupt).sum::<u64>(), 0);
        assert_eq!(files(&dir).len(), 1, "{:?}", files(&dir));
        fs::remove_dir_all(&dir).unwrap();
    }
}
