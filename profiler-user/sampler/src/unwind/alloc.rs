//! Space in the `UNWIND_ROWS` array: first-fit ranges with coalescing frees, so the rows of
//! tables no process uses any more can hold the next file's table.

use std::collections::BTreeMap;

/// Free ranges of a fixed-capacity array of rows.
#[derive(Debug)]
pub struct RowAllocator {
    /// start → length of every free range; neighbours are always merged.
    free: BTreeMap<u32, u32>,
    capacity: u32,
    used: u32,
}

impl RowAllocator {
    pub fn new(capacity: u32) -> Self {
        let mut free = BTreeMap::new();
        if capacity > 0 {
            free.insert(0, capacity);
        }
        Self { free, capacity, used: 0 }
    }

    /// Rows handed out and not freed.
    #[cfg(test)]
    pub fn used(&self) -> u32 {
        self.used
    }

    /// The start of `len` contiguous free rows (the lowest range that fits), or `None`.
    pub fn alloc(&mut self, len: u32) -> Option<u32> {
        if len == 0 {
            return None;
        }
        let (&start, &have) = self.free.iter().find(|(_, &l)| l >= len)?;
        self.free.remove(&start);
        if have > len {
            self.free.insert(start + len, have - len);
        }
        self.used += len;
        Some(start)
    }

    /// Returns `start..start + len`, which [`Self::alloc`] handed out, merging it with free
    /// neighbours.
    pub fn free(&mut self, start: u32, len: u32) {
        if len == 0 {
            return;
        }
        debug_assert!(start.checked_add(len).is_some_and(|e| e <= self.capacity));
        self.used -= len;
        let (mut start, mut len) = (start, len);
        if let Some((&prev, &plen)) = self.free.range(..start).next_back() {
            debug_assert!(prev + plen <= start, "double free of rows {start}..");
            if prev + plen == start {
                self.free.remove(&prev);
                start = prev;
                len += plen;
            }
        }
        if let Some(&nlen) = self.free.get(&(start + len)) {
            self.free.remove(&(start + len));
            len += nlen;
        }
        self.free.insert(start, len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frees_merge_and_space_is_reused() {
        let mut a = RowAllocator::new(100);
        let x = a.alloc(30).unwrap();
        let y = a.alloc(30).unwrap();
        let z = a.alloc(30).unwrap();
        assert_eq!((x, y, z), (0, 30, 60));
        assert_eq!(a.alloc(11), None, "only 10 rows left");
        a.free(y, 30);
        assert_eq!(a.used(), 60);
        assert_eq!(a.alloc(40), None, "30 + 10 free, not contiguous");
        a.free(x, 30);
        // 0..60 is one range now.
        assert_eq!(a.alloc(55), Some(0));
        a.free(0, 55);
        a.free(z, 30);
        assert_eq!(a.used(), 0);
        assert_eq!(a.alloc(100), Some(0), "everything merged back into one range");
        assert_eq!(a.alloc(1), None);
        assert_eq!(a.alloc(0), None);
    }
}
