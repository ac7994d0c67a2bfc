//! The symbol cache: explicit, bounded, least-recently-used eviction.

use std::{collections::HashMap, num::NonZeroUsize, sync::Arc};

use lru::LruCache;

use crate::{FileKey, Symbol};

/// Cached answers keyed by (file identity, address). Holds at most `capacity` addresses; the
/// least recently used go first. File keys (build IDs can be 20+ bytes) are interned to small ids
/// so a lookup hashes two integers.
///
/// Ids are never reused: an evicted file's entries may still sit in the LRU (eviction of a
/// file only removes what it finds), and a new file given the same id would be answered with
/// the old file's symbols. 64 bits do not wrap in practice.
pub struct SymbolCache {
    files: HashMap<FileKey, u64>,
    /// The id the next new file gets.
    next_id: u64,
    entries: LruCache<(u64, u64), Arc<Symbol>>,
}

impl SymbolCache {
    pub fn new(capacity: usize) -> Self {
        let cap = NonZeroUsize::new(capacity.max(1)).unwrap_or(NonZeroUsize::MIN);
        Self { files: HashMap::new(), next_id: 0, entries: LruCache::new(cap) }
    }

    fn file_id(&mut self, key: &FileKey) -> u64 {
        if let Some(&id) = self.files.get(key) {
            return id;
        }
        let id = self.next_id;
        self.next_id += 1;
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

    /// A file cached after another was evicted gets its own answers, not the evicted file's
    /// or a surviving file's (ids were `files.len()`, so after an eviction the next new file
    /// shared its id with one still cached).
    #[test]
    fn file_ids_are_not_reused_after_eviction() {
        let named = |n: &str| {
            Arc::new(Symbol::new(vec![crate::Frame { function: n.into(), file: None, line: None, inlined: false }]))
        };
        let (a, b, c) = (FileKey::BuildId(vec![1; 20]), FileKey::BuildId(vec![2; 20]), FileKey::BuildId(vec![3; 20]));
        let mut cache = SymbolCache::new(16);
        cache.insert(&a, 0x10, named("in_a"));
        cache.insert(&b, 0x10, named("in_b"));
        cache.evict_file(&a);
        assert!(cache.get(&c, 0x10).is_none(), "nothing cached for a new file");
        cache.insert(&c, 0x20, named("in_c"));
        assert!(cache.get(&c, 0x10).is_none(), "c has no entry at 0x10 (b has)");
        assert_eq!(cache.get(&c, 0x20).map(|s| s.frames()[0].function.clone()).as_deref(), Some("in_c"));
        assert_eq!(cache.get(&b, 0x10).map(|s| s.frames()[0].function.clone()).as_deref(), Some("in_b"));
        assert!(cache.get(&b, 0x20).is_none(), "b has no entry at 0x20 (c has)");
    }
}
