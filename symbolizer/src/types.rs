//! Plain types shared by every symbol source.

use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

/// Errors from opening or parsing a symbol source.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot symbolize {path}: {source}")]
    Elf {
        path: PathBuf,
        #[source]
        source: blazesym::Error,
    },
    #[error("cannot symbolize kernel addresses: {0}")]
    Kernel(#[source] blazesym::Error),
    #[error("cannot symbolize vDSO addresses: {0}")]
    Vdso(#[source] blazesym::Error),
    #[error("cannot symbolize vDSO addresses: this kernel maps no vDSO")]
    NoVdso,
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Identity of a symbol source, for caching.
///
/// Two mappings of the same file (also across processes and mount namespaces) share a key, so they
/// share cached symbols.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FileKey {
    /// The ELF's GNU build ID (`.note.gnu.build-id`).
    BuildId(Vec<u8>),
    /// A file without build ID: device, inode, size and mtime identify its content.
    Inode { dev: u64, ino: u64, size: u64, mtime: i64 },
    /// The running kernel.
    Kernel,
    /// The running kernel's vDSO (one image for every process).
    Vdso,
}

impl FileKey {
    /// Key of the file at `path`: its build ID when it has one, else its inode identity.
    pub fn from_path(path: &Path) -> Result<Self, Error> {
        if let Ok(Some(id)) = crate::read_build_id(path) {
            return Ok(Self::BuildId(id));
        }
        let meta = std::fs::metadata(path).map_err(|source| Error::Io { path: path.into(), source })?;
        Ok(Self::Inode { dev: meta.dev(), ino: meta.ino(), size: meta.size(), mtime: meta.mtime() })
    }

    /// The build ID, if this key is one.
    pub fn build_id(&self) -> Option<&[u8]> {
        match self {
            Self::BuildId(b) => Some(b),
            _ => None,
        }
    }
}

/// Where addresses come from.
#[derive(Clone, Copy, Debug)]
pub enum Source<'a> {
    /// An ELF file; addresses are **file offsets** into it. `path` is what to open (it may be a
    /// `/proc/self/fd/N` or `/proc/PID/root/...` path for files of other mount namespaces).
    Elf { key: &'a FileKey, path: &'a Path },
    /// The running kernel; addresses are absolute kernel addresses.
    Kernel,
    /// The kernel's vDSO; addresses are offsets from the start of a process's `[vdso]` mapping.
    Vdso,
}

impl Source<'_> {
    pub(crate) fn key(&self) -> &FileKey {
        static KERNEL: FileKey = FileKey::Kernel;
        static VDSO: FileKey = FileKey::Vdso;
        match self {
            Source::Elf { key, .. } => key,
            Source::Kernel => &KERNEL,
            Source::Vdso => &VDSO,
        }
    }
}

/// One frame of a symbolized address: a function, and where in it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Frame {
    /// Demangled function name.
    pub function: String,
    /// Source file (with directory when DWARF has it).
    pub file: Option<String>,
    pub line: Option<u32>,
    /// True for frames of functions inlined into their caller (every frame but the outermost).
    pub inlined: bool,
}

/// The answer for one address: its frames, **innermost first** (inlined callees before the
/// function that contains them). No frames: the address could not be symbolized.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Symbol {
    frames: Vec<Frame>,
}

impl Symbol {
    pub fn new(frames: Vec<Frame>) -> Self {
        Self { frames }
    }

    pub fn unknown() -> Self {
        Self::default()
    }

    pub fn frames(&self) -> &[Frame] {
        &self.frames
    }

    pub fn is_known(&self) -> bool {
        !self.frames.is_empty()
    }
}
