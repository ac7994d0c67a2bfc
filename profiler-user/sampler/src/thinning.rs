//! Thinning: during a burst for some processes only (issue #16), the perf events sample every
//! CPU at the burst's rate, and the samples of every other process are thinned back to the
//! configured rate here, before they are unwound or aggregated, so their profiles keep their
//! usual rate and cost downstream. Deterministic per process: of every `burst_hz` samples,
//! `base_hz` are kept, evenly (an accumulator, not a coin). The kernel side (BPF runs) still
//! pays the burst rate for every process; what is dropped here is counted.

use std::collections::{HashMap, HashSet};

/// Which samples a burst for some processes keeps.
#[derive(Debug, Clone)]
pub struct Thinning {
    /// Processes sampled at the burst rate, every sample kept.
    keep: HashSet<u32>,
    base_hz: u64,
    burst_hz: u64,
    acc: HashMap<u32, u64>,
    /// Samples of other processes dropped.
    pub dropped: u64,
}

impl Thinning {
    /// Keeps every sample of `keep`; of the others `base_hz` in `burst_hz`.
    pub fn new(keep: impl IntoIterator<Item = u32>, base_hz: u64, burst_hz: u64) -> Self {
        Self { keep: keep.into_iter().collect(), base_hz, burst_hz: burst_hz.max(1), acc: HashMap::new(), dropped: 0 }
    }

    /// Whether a sample of `pid` is kept.
    pub fn admit(&mut self, pid: u32) -> bool {
        if self.keep.contains(&pid) || self.base_hz >= self.burst_hz {
            return true;
        }
        let a = self.acc.entry(pid).or_insert(0);
        *a += self.base_hz;
        if *a >= self.burst_hz {
            *a -= self.burst_hz;
            true
        } else {
            self.dropped += 1;
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn others_keep_the_base_rate_the_burst_targets_everything() {
        let mut t = Thinning::new([7], 19, 99);
        let kept_other = (0..990).filter(|_| t.admit(8)).count();
        let kept_target = (0..990).filter(|_| t.admit(7)).count();
        assert_eq!(kept_other, 190, "19 of every 99");
        assert_eq!(kept_target, 990);
        assert_eq!(t.dropped, 800);
        let mut none = Thinning::new([], 99, 99);
        assert!((0..10).all(|_| none.admit(1)), "a burst no faster than the base keeps all");
    }
}
