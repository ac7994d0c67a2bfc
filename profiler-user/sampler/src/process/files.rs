//! The table of mapped files, shared by every process that maps them.
//!
//! Each executable file is opened once while its process is alive (through
//! `/proc/PID/map_files/`, which reaches files in other mount namespaces and deleted files) and the
//! handle is kept, so its symbols can still be read after the process exited.

use std::{
    collections::{HashMap, HashSet},
    fs::File,
    os::{fd::AsRawFd, unix::fs::MetadataExt},
    path::{Path, PathBuf},
    sync::Arc,
};

use symbolizer::FileKey;

use super::maps::MapEntry;

/// Index into [`FileTable`].
pub type FileId = u32;

/// A mapped file, opened.
#[derive(Debug)]
pub struct MappedFile {
    /// The path the process sees (from its maps).
    pub path: String,
    /// What to hand to the symbolizer: `path` when it names the same file in our mount namespace
    /// (so debug links resolve next to it), else `/proc/self/fd/N` of the kept handle.
    pub open_path: PathBuf,
    /// Identity for caches and for exporters (build ID when present).
    pub key: FileKey,
    /// `process.executable.build_id.htlhash`, when the file could be read.
    pub htlhash: Option<[u8; 16]>,
    /// Keeps the file reachable after the process is gone.
    _handle: Option<File>,
}

impl MappedFile {
    pub fn build_id(&self) -> Option<&[u8]> {
        self.key.build_id()
    }

    /// File name without directories, for display (`libc.so.6`).
    pub fn basename(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or(&self.path)
    }
}

/// Every file mapped by a tracked process, deduplicated by (device, inode).
///
/// Ids are slots that stay valid while the file is in the table; [`FileTable::retain`] frees the
/// slots (and the open handles) of files no process maps any more.
#[derive(Default)]
pub struct FileTable {
    files: Vec<Option<Arc<MappedFile>>>,
    free: Vec<FileId>,
    by_inode: HashMap<(u64, u64), FileId>,
}

impl FileTable {
    /// The file in slot `id`; `None` for a slot that was freed or never used (ids come from
    /// live mappings, but a caller holding one across an eviction must not bring the thread
    /// down).
    pub fn get(&self, id: FileId) -> Option<&Arc<MappedFile>> {
        self.files.get(id as usize)?.as_ref()
    }

    /// Files in the table.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.files.len() - self.free.len()
    }

    /// The id of the file behind `entry` of process `pid`, opening it on first sight.
    pub fn intern(&mut self, pid: u32, entry: &MapEntry) -> FileId {
        if let Some(&id) = self.by_inode.get(&(entry.dev, entry.inode)) {
            return id;
        }
        let file = Some(Arc::new(open(pid, entry)));
        let id = match self.free.pop() {
            Some(id) => {
                self.files[id as usize] = file;
                id
            }
            None => {
                self.files.push(file);
                (self.files.len() - 1) as FileId
            }
        };
        self.by_inode.insert((entry.dev, entry.inode), id);
        id
    }

    /// Keeps only the files in `live`; returns the identities of those dropped (for caches).
    pub fn retain(&mut self, live: &HashSet<FileId>) -> Vec<FileKey> {
        let mut dropped = Vec::new();
        self.by_inode.retain(|_, id| live.contains(id));
        for (i, slot) in self.files.iter_mut().enumerate() {
            if slot.is_some() && !live.contains(&(i as FileId)) {
                if let Some(f) = slot.take() {
                    dropped.push(f.key.clone());
                }
                self.free.push(i as FileId);
            }
        }
        dropped
    }
}

fn same_file(meta: &std::fs::Metadata, entry: &MapEntry) -> bool {
    meta.ino() == entry.inode && meta.dev() == entry.dev
}

fn open(pid: u32, entry: &MapEntry) -> MappedFile {
    let candidates = [
        PathBuf::from(format!("/proc/{pid}/map_files/{:x}-{:x}", entry.start, entry.end)),
        Path::new(&format!("/proc/{pid}/root")).join(entry.path.trim_start_matches('/')),
    ];
    let handle = candidates.iter().find_map(|p| {
        let f = File::open(p).ok()?;
        // /proc/PID/root/PATH may name another file when the original was replaced.
        let ok = f.metadata().map(|m| m.ino() == entry.inode).unwrap_or(false);
        ok.then_some(f)
    });
    let local_same = std::fs::metadata(&entry.path).map(|m| same_file(&m, entry)).unwrap_or(false);
    let open_path = match (&handle, local_same) {
        (_, true) => PathBuf::from(&entry.path),
        (Some(f), false) => PathBuf::from(format!("/proc/self/fd/{}", f.as_raw_fd())),
        (None, false) => PathBuf::from(&entry.path),
    };
    let key = match FileKey::from_path(&open_path) {
        Ok(k) => k,
        Err(e) => {
            tracing::debug!("{}: {e}", entry.path);
            FileKey::Inode { dev: entry.dev, ino: entry.inode, size: 0, mtime: 0 }
        }
    };
    if handle.is_none() {
        tracing::debug!(pid, path = %entry.path, "could not open mapped file; symbols need it to stay on disk");
    }
    let htlhash = File::open(&open_path).and_then(|mut f| super::metadata::htlhash(&mut f)).ok();
    MappedFile { path: entry.path.clone(), open_path, key, htlhash, _handle: handle }
}

/// Maps a file read-only. Compilers and inspectors of binaries read only headers and a few
/// sections, and binaries with debug info can be hundreds of megabytes: mapping beats reading.
pub fn map_readonly(path: &std::path::Path) -> std::io::Result<memmap2::Mmap> {
    let f = std::fs::File::open(path)?;
    // SAFETY: read-only private mapping; a file truncated underneath would fault, which is the
    // same risk every symbolizer that maps binaries takes.
    unsafe { memmap2::Mmap::map(&f) }
}
