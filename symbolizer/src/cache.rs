//! The symbol cache: explicit, bounded, least-recently-used eviction.

use std::{collections::HashMap, num::NonZeroUsize, sync::Arc};

use lru::LruCache;

use crate::{FileKey, Symbol};

/// Cached answers keyed by (file identity, address). Holds at most `capacity` addresses; the
/// least recently used go first. File keys (build IDs can be 20+ bytes) are interned to small ids
/// so a lookup hashes two integers.
pub struct SymbolCache {
    files: HashMap<FileKey, u32>,
    entries: LruCache<(u32, u64), Arc<Symbol>>,
}

impl SymbolCache {
    pub fn new(capacity: usize) -> Self {
        let cap = NonZeroUsize::new(capacity.max(1)).expect("max(1) is non-zero");
        Self { files: HashMap::new(), entries: LruCache::new(cap) }
    }

    fn file_id(&mut self, key: &FileKey) -> u32 {
        if let Some(&id) = self.files.get(key) {
            return id;
        }
        let id = self.files.len() as u32;
        self.files.insert(key.clone(), id);
        id
    }

    /// The cached symbol of `addr` in `key`, refreshing its recency.
    pub fn get(&mut self, key: &FileKey, addr: u64) -> Option<Arc<Symbol>> {
        let id = *self.files.get(key)?;
        self.entries.get(&(id, addr)).cloned()
    }

    pub fn insert(&mut self, key: &FileKey, addr: u64, symbol: Arc<Symbol>) {
        let id = self.file_id(key);
        self.entries.put((id, addr), symbol);
    }

    /// Drops every entry of one file (e.g. when no process maps it any more).
    pub fn evict_file(&mut self, key: &FileKey) {
        let Some(id) = self.files.remove(key) else { return };
        let stale: Vec<_> = self.entries.iter().filter(|((f, _), _)| *f == id).map(|(k, _)| *k).collect();
        for k in stale {
            self.entries.pop(&k);
        }
    }

    /// Cached addresses.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_lru_and_per_file_eviction() {
        let a = FileKey::BuildId(vec![1; 20]);
        let b = FileKey::BuildId(vec![2; 20]);
        let mut c = SymbolCache::new(3);
        let sym = Arc::new(Symbol::unknown());
        c.insert(&a, 1, sym.clone());
        c.insert(&a, 2, sym.clone());
        c.insert(&b, 1, sym.clone());
        assert!(c.get(&a, 1).is_some()); // a:1 is now most recent
        c.insert(&b, 2, sym.clone()); // evicts a:2, the least recently used
        assert_eq!(c.len(), 3);
        assert!(c.get(&a, 2).is_none());
        assert!(c.get(&a, 1).is_some() && c.get(&b, 1).is_some());
        c.evict_file(&b);
        assert_eq!(c.len(), 1);
        assert!(c.get(&b, 1).is_none() && c.get(&a, 1).is_some());
    }
}
