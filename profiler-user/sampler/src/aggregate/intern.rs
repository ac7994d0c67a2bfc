//! A table that stores each distinct value once and hands out dense ids.
//!
//! Used for frames, stacks and mappings here, and by exporters for their own dictionaries.

use std::{collections::HashMap, hash::Hash};

/// Distinct values in insertion order; ids are indexes.
#[derive(Debug)]
pub struct Interner<T> {
    items: Vec<T>,
    index: HashMap<T, u32>,
}

impl<T> Default for Interner<T> {
    fn default() -> Self {
        Self { items: Vec::new(), index: HashMap::new() }
    }
}

impl<T: Hash + Eq + Clone> Interner<T> {
    /// The id of `value`, adding it on first sight.
    pub fn intern(&mut self, value: T) -> u32 {
        if let Some(&id) = self.index.get(&value) {
            return id;
        }
        let id = u32::try_from(self.items.len()).expect("fewer than 2^32 distinct values");
        self.items.push(value.clone());
        self.index.insert(value, id);
        id
    }

    /// Like [`Self::intern`], cloning `value` only on first sight.
    pub fn intern_ref(&mut self, value: &T) -> u32 {
        match self.index.get(value) {
            Some(&id) => id,
            None => self.intern(value.clone()),
        }
    }

    pub fn get(&self, id: u32) -> &T {
        &self.items[id as usize]
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = (u32, &T)> {
        self.items.iter().enumerate().map(|(i, v)| (i as u32, v))
    }
}

#[cfg(test)]
mod tests {
    use super::Interner;

    #[test]
    fn dedups_and_keeps_order() {
        let mut t = Interner::default();
        assert_eq!(t.intern("a"), 0);
        assert_eq!(t.intern("b"), 1);
        assert_eq!(t.intern("a"), 0);
        assert_eq!(t.len(), 2);
        assert_eq!(*t.get(1), "b");
        assert_eq!(t.iter().map(|(_, v)| *v).collect::<Vec<_>>(), ["a", "b"]);
    }
}
