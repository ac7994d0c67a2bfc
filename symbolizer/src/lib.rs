//! Address symbolization for otelprof.
//!
//! One [`Symbolizer`] answers "which function, file and line (with inlined frames) is this address"
//! for three kinds of [`Source`]: an ELF file on disk (user code: addresses are file offsets, as
//! the process tracker normalizes them), the running kernel (kallsyms, plus vmlinux DWARF when the
//! distribution ships it) and the kernel's vDSO (offsets into it). All go through blazesym; results
//! are kept in an explicit, bounded [`SymbolCache`] keyed by the file's identity ([`FileKey`]:
//! build ID when the ELF has one), so a library mapped by a thousand processes is symbolized once.
//!
//! ```no_run
//! use std::path::Path;
//! use symbolizer::{FileKey, Source, Symbolizer};
//!
//! let mut sym = Symbolizer::new(Default::default());
//! let key = FileKey::from_path(Path::new("/usr/bin/true")).unwrap();
//! let source = Source::Elf { key: &key, path: Path::new("/usr/bin/true") };
//! for symbol in sym.symbolize(&source, &[0x1234]).unwrap() {
//!     // Innermost (inlined) frame first; empty when the address is unknown.
//!     for frame in symbol.frames() {
//!         println!("{} {:?}:{:?}", frame.function, frame.file, frame.line);
//!     }
//! }
//! ```

mod cache;
mod elf;
mod kernel;
mod types;
pub mod vdso;

pub use cache::SymbolCache;
pub use elf::read_build_id;
pub use types::{Error, FileKey, Frame, Source, Symbol};

use std::sync::Arc;

/// Knobs of a [`Symbolizer`].
#[derive(Clone, Debug)]
pub struct Config {
    /// Cached symbols at most (addresses, over all files).
    pub cache_entries: usize,
    /// Resolve file/line and inlined frames from DWARF (slower, much more useful).
    pub code_info: bool,
    /// Directories searched for separate debug files (debuglink, `.build-id/xx/yyyy.debug`).
    pub debug_dirs: Vec<std::path::PathBuf>,
    /// Files whose parsed symbols and DWARF blazesym keeps at most. blazesym holds every file it
    /// opened for as long as it lives, so after this many distinct files it is rebuilt (the
    /// result cache above survives). This is what bounds a long-running agent's memory.
    pub max_parsed_files: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            cache_entries: 1 << 20,
            code_info: true,
            debug_dirs: vec!["/usr/lib/debug".into()],
            max_parsed_files: 64,
        }
    }
}

/// Counters that say how well symbolization went.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Addresses answered from the cache.
    pub cache_hits: u64,
    /// Addresses resolved through blazesym.
    pub resolved: u64,
    /// Addresses blazesym could not name.
    pub unknown: u64,
    /// Files that failed to open or parse (their addresses stay unknown).
    pub file_errors: u64,
    /// Times the parsed-file state was dropped to stay within `max_parsed_files`.
    pub parsed_file_evictions: u64,
}

/// Symbolizes batches of addresses for ELF files and the kernel, with a bounded cache.
///
/// Not `Sync`: blazesym keeps per-file parsers behind interior mutability. Use one per thread.
pub struct Symbolizer {
    blaze: blazesym::symbolize::Symbolizer,
    config: Config,
    /// Files blazesym has parsed since it was (re)built.
    parsed: std::collections::HashSet<FileKey>,
    cache: SymbolCache,
    stats: Stats,
}

impl Symbolizer {
    pub fn new(config: Config) -> Self {
        Self {
            blaze: Self::blaze(&config),
            cache: SymbolCache::new(config.cache_entries),
            parsed: Default::default(),
            config,
            stats: Stats::default(),
        }
    }

    fn blaze(config: &Config) -> blazesym::symbolize::Symbolizer {
        blazesym::symbolize::Symbolizer::builder()
            .enable_code_info(config.code_info)
            .enable_inlined_fns(config.code_info)
            // Demangled here instead (`elf::demangle`): blazesym hands every name to the C++
            // demangler, which reads plain C names like `a` or `b` as type codes.
            .enable_demangling(false)
            .set_debug_dirs(Some(&config.debug_dirs))
            .build()
    }

    /// Symbolizes `addrs` (file offsets for [`Source::Elf`], kernel addresses for
    /// [`Source::Kernel`], offsets into the vDSO for [`Source::Vdso`]). The answer has one [`Symbol`] per input, in input order; a symbol with
    /// no frames means "unknown" and callers keep module + offset for it.
    ///
    /// Addresses are looked up once each, sorted, in one blazesym call per batch.
    pub fn symbolize(&mut self, source: &Source<'_>, addrs: &[u64]) -> Result<Vec<Arc<Symbol>>, Error> {
        let key = source.key();
        let out: Vec<Option<Arc<Symbol>>> = addrs.iter().map(|&a| self.cache.get(key, a)).collect();
        let mut missing: Vec<u64> = addrs.iter().zip(&out).filter(|(_, s)| s.is_none()).map(|(&a, _)| a).collect();
        self.stats.cache_hits += (addrs.len() - missing.len()) as u64;
        if missing.is_empty() {
            return Ok(out.into_iter().flatten().collect());
        }
        missing.sort_unstable();
        missing.dedup();
        if !self.parsed.contains(key) && self.parsed.len() >= self.config.max_parsed_files {
            self.blaze = Self::blaze(&self.config);
            self.parsed.clear();
            self.stats.parsed_file_evictions += 1;
        }
        self.parsed.insert(key.clone());
        let resolved = match source {
            Source::Elf { path, key } => elf::resolve(&self.blaze, path, key, &self.config.debug_dirs, &missing),
            Source::Kernel => kernel::resolve(&self.blaze, &missing),
            Source::Vdso => vdso::resolve(&self.blaze, &missing),
        };
        let resolved: Vec<Arc<Symbol>> = match resolved {
            Ok(r) => r.into_iter().map(Arc::new).collect(),
            Err(e) => {
                self.stats.file_errors += 1;
                // Remember the failure so the file is not parsed again for every batch.
                let unknown = Arc::new(Symbol::unknown());
                for &a in &missing {
                    self.cache.insert(key, a, unknown.clone());
                }
                return Err(e);
            }
        };
        for (&a, sym) in missing.iter().zip(&resolved) {
            if sym.is_known() {
                self.stats.resolved += 1;
            } else {
                self.stats.unknown += 1;
            }
            self.cache.insert(key, a, sym.clone());
        }
        // Answers come from the resolved batch, not the cache: a batch larger than the cache
        // would otherwise lose its first entries to eviction before they are read. blazesym
        // answers every input; should it not, the address is unknown rather than a panic.
        let unknown = Arc::new(Symbol::unknown());
        Ok(out
            .into_iter()
            .zip(addrs)
            .map(|(slot, a)| {
                slot.or_else(|| missing.binary_search(a).ok().and_then(|i| resolved.get(i).cloned()))
                    .unwrap_or_else(|| unknown.clone())
            })
            .collect())
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Forgets the cached symbols of a file no process maps any more.
    pub fn evict_file(&mut self, key: &FileKey) {
        self.cache.evict_file(key);
    }

    pub fn cache(&self) -> &SymbolCache {
        &self.cache
    }
}
