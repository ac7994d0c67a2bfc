//! Trace links: the OTEP 4719 process context and the OTEP 4947 thread context.
//!
//! - `process`: reads the resource a process publishes (`OTEL_CTX` mapping); its attributes
//!   become the process's resource, its `threadlocal.*` entries switch the thread reader on.
//! - `tls`: finds `otel_thread_ctx_v1` in the process's files and where each thread keeps it.
//! - `record`: decodes the record BPF copied into a sample ([`ThreadLink`]).
//!
//! [`ThreadContexts`] ties them together: for every process whose mappings or context were
//! (re-)read, it installs (or removes) the BPF `THREAD_CTX` entry that tells the sampler where
//! to read.

pub mod process;
pub mod record;
pub mod tls;

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use profiler_common::TlsLocation;
pub use record::ThreadLink;
use symbolizer::FileKey;

use crate::{
    process::{files, layout, Refreshed},
    tracer::Tracer,
};

/// Files inspected for the symbol are remembered up to this many.
const MAX_FILES_REMEMBERED: usize = 4096;

/// What [`tls::inspect`] found in one file (`None`: no symbol, or not an ELF file we read).
type Inspected = Option<Arc<(tls::TlsSymbol, layout::Segments)>>;

/// The thread-context readers installed in BPF.
#[derive(Default)]
pub struct ThreadContexts {
    files: HashMap<FileKey, Inspected>,
    installed: HashMap<u32, TlsLocation>,
    /// Processes that publish thread contexts but whose variable could not be located yet (the
    /// dynamic linker had not relocated it when we looked): tried again with a back-off.
    pending: HashMap<u32, (Refreshed, Instant, Duration)>,
}

/// First and longest wait before locating the variable again.
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

impl ThreadContexts {
    /// Processes whose thread contexts BPF reads.
    pub fn processes(&self) -> usize {
        self.installed.len()
    }

    fn inspect(&mut self, key: &FileKey, path: &std::path::Path, name: &str) -> Inspected {
        if let Some(i) = self.files.get(key) {
            return i.clone();
        }
        if self.files.len() >= MAX_FILES_REMEMBERED {
            self.files.clear();
        }
        let found = files::map_readonly(path).ok().and_then(|data| match tls::inspect(&data) {
            Ok(Some(sym)) => {
                let segments = object::File::parse(&*data).map(|f| layout::segments(&f)).unwrap_or_default();
                Some(Arc::new((sym, segments)))
            }
            Ok(None) => None,
            Err(e) => {
                tracing::debug!("{name}: not inspected for {}: {e}", tls::SYMBOL);
                None
            }
        });
        self.files.insert(key.clone(), found.clone());
        found
    }

    /// Where `refreshed`'s threads keep their context, if it publishes one this reader supports.
    fn locate(&mut self, refreshed: &Refreshed) -> Option<TlsLocation> {
        if !refreshed.context.as_ref().is_some_and(|c| c.has_thread_context()) {
            return None;
        }
        let mem = crate::context::process::open_memory(refreshed.pid).ok()?;
        let mut seen: Vec<&FileKey> = Vec::new();
        for (m, file) in &refreshed.mappings {
            if seen.contains(&&file.key) {
                continue;
            }
            seen.push(&file.key);
            let Some(found) = self.inspect(&file.key, &file.open_path, &file.path) else { continue };
            let (sym, segments) = &*found;
            let Some(bias) = layout::bias(segments, m) else { continue };
            match tls::locate(sym, bias, &mem) {
                Some(loc) => return Some(loc),
                None => tracing::debug!(pid = refreshed.pid, "{}: {} not resolved yet", file.path, tls::SYMBOL),
            }
        }
        None
    }

    /// Installs or removes the reader of a process whose mappings or context changed.
    pub fn update(&mut self, refreshed: &Refreshed, tracer: &mut Tracer) {
        self.pending.remove(&refreshed.pid);
        self.apply(refreshed, tracer, RETRY_MIN);
    }

    /// Tries again to locate the variable in processes where it was not resolved yet.
    pub fn retry_pending(&mut self, tracer: &mut Tracer) {
        let due: Vec<u32> =
            self.pending.iter().filter(|(_, (_, at, _))| *at <= Instant::now()).map(|(p, _)| *p).collect();
        for pid in due {
            if let Some((refreshed, _, wait)) = self.pending.remove(&pid) {
                self.apply(&refreshed, tracer, (wait * 2).min(RETRY_MAX));
            }
        }
    }

    fn apply(&mut self, refreshed: &Refreshed, tracer: &mut Tracer, wait: Duration) {
        let loc = self.locate(refreshed);
        if loc.is_none() && refreshed.context.as_ref().is_some_and(|c| c.has_thread_context()) {
            self.pending.insert(refreshed.pid, (refreshed.clone(), Instant::now() + wait, wait));
        }
        if self.installed.get(&refreshed.pid) == loc.as_ref() {
            return;
        }
        if let Err(e) = tracer.set_thread_ctx(refreshed.pid, loc.as_ref()) {
            tracing::warn!(pid = refreshed.pid, "thread context reader not installed: {e}");
            return;
        }
        match loc {
            Some(l) => {
                tracing::debug!(pid = refreshed.pid, "reading thread contexts at {l:?}");
                self.installed.insert(refreshed.pid, l);
            }
            None => {
                self.installed.remove(&refreshed.pid);
            }
        }
    }

    /// Forgets a process that exited.
    pub fn release(&mut self, pid: u32, tracer: &mut Tracer) {
        self.pending.remove(&pid);
        if self.installed.remove(&pid).is_some() {
            let _ = tracer.set_thread_ctx(pid, None);
        }
    }
}
