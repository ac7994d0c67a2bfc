//! The symbol cache: explicit, bounded, least-recently-used eviction.

use std::{num::NonZeroUsize, sync::Arc};

use lru::LruCache;

use crate::{FileKey, Symbol};

/// Cached answers keyed by (file identity, address). Holds at most `capacity` addresses; the
/// least recently used go first.
pub struct SymbolCache {
    entries: LruCache<(FileKey, u64), Arc<Symbol>>,
}

impl SymbolCache {
    pub fn new(capacity: usize) -> Self {
        let cap = NonZeroUsize::new(capacity.max(1)).expect("max(1) is non-zero");
        Self { entries: LruCache::new(cap) }
    }

    pub fn contains(&self, key: &FileKey, addr: u64) -> bool {
        // `contains` on a tuple key needs an owned tuple; peek through a clone-free probe.
        self.entries.contains(&(key.clone(), addr))
    }

    pub fn get(&mut self, key: &FileKey, addr: u64) -> Option<Arc<Symbol>> {
        self.entries.get(&(key.clone(), addr)).cloned()
    }

    pub fn insert(&mut self, key: FileKey, addr: u64, symbol: Arc<Symbol>) {
        self.entries.put((key, addr), symbol);
    }

    /// Drops every entry of one file (e.g. when no process maps it any more).
    pub fn evict_file(&mut self, key: &FileKey) {
        let stale: Vec<_> = self.entries.iter().filter(|((k, _), _)| k == key).map(|(k, _)| k.clone()).collect();
        for k in stale {
            self.entries.pop(&k);
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}
