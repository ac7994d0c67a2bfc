//! The detector of the edge anomaly loop (issue #16): an exponentially weighted moving average
//! with an exponentially weighted variance, a Z-score threshold, a warm-up, a floor, an
//! absolute ceiling and k-of-n confirmation.
//!
//! Defaults and why:
//! - `alpha = 0.2`: the EWMA's weight of the newest point; a 1 s series then remembers about
//!   the last 9 s (the centre of mass is (1 − α)/α = 4 points), short enough to follow a
//!   workload's slow drift, long enough that one spike does not become the baseline. The
//!   variance is weighted the same way (Finch, "Incremental calculation of weighted mean and
//!   variance", 2009), so the Z-score is `(x − mean) / stddev` of the same window.
//! - `z = 3`: the usual three-sigma rule (a Gaussian's one-sided tail beyond 3σ is 0.13 %).
//! - `warmup = 10` points before any Z-score trigger: the variance of fewer points says little.
//! - `floor = 0.10` (10 % CPU): changes below it are not worth a profile, however many sigmas.
//! - `ceiling = 0.80`: at or above it a point is anomalous whatever the baseline (the rule the
//!   trigger-based profilers we learned from — mosn/holmes' absolute CPU threshold,
//!   CockroachDB's CPU-profile trigger — also have), even during the warm-up.
//! - confirmation `3 of the last 10`: one noisy point is not an incident; three within ten
//!   seconds are.
//!
//! - `min_stddev = 0.01` (one percentage point of CPU): the deviation a Z-score divides by is at
//!   least this, so a perfectly flat series does not call a 0.5 % wobble infinitely anomalous.
//!
//! The Z-score is taken against the baseline *before* the point updates it. An anomalous point
//! updates the baseline clamped to `mean + z_threshold · stddev` (a winsorized EWMA): a plain
//! EWMA would absorb a step within one or two points — its variance jumps with the first
//! outlier — so the second and third points of a real step would no longer look anomalous and
//! k-of-n confirmation could never hold. Clamped, a step stays anomalous for several points
//! (long enough to confirm) and still becomes the new normal within about ten, as the
//! deviation widens by ~1.5× per clamped point.

use std::collections::VecDeque;

/// A detector's settings (see the module docs for the defaults).
#[derive(Clone, Debug, PartialEq)]
pub struct DetectorConfig {
    pub alpha: f64,
    pub z_threshold: f64,
    pub warmup: usize,
    pub floor: f64,
    pub ceiling: Option<f64>,
    /// k of …
    pub confirm_k: usize,
    /// … the last n points anomalous.
    pub confirm_n: usize,
    /// The smallest deviation a Z-score divides by.
    pub min_stddev: f64,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        Self {
            alpha: 0.2,
            z_threshold: 3.0,
            warmup: 10,
            floor: 0.10,
            ceiling: Some(0.80),
            confirm_k: 3,
            confirm_n: 10,
            min_stddev: 0.01,
        }
    }
}

impl DetectorConfig {
    /// The settings' own consistency; the message names the setting.
    pub fn check(&self) -> Result<(), String> {
        if !(self.alpha > 0.0 && self.alpha <= 1.0) {
            return Err(format!("alpha: {} is not in (0, 1]", self.alpha));
        }
        if self.z_threshold.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
            return Err(format!("z_threshold: {} must be more than 0", self.z_threshold));
        }
        if self.confirm_k == 0 || self.confirm_k > self.confirm_n {
            return Err(format!("confirm: {} of {} is not 1 ≤ k ≤ n", self.confirm_k, self.confirm_n));
        }
        if let Some(c) = self.ceiling {
            if c < self.floor {
                return Err(format!("ceiling {c} is below the floor {}", self.floor));
            }
        }
        Ok(())
    }
}

/// Why a point was anomalous.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// At or above the ceiling.
    Ceiling,
    /// Its Z-score reached the threshold.
    ZScore,
}

/// What one point looked like to the detector.
#[derive(Clone, Debug, PartialEq)]
pub struct Observation {
    pub value: f64,
    /// The baseline before this point: mean and standard deviation.
    pub ewma: f64,
    pub stddev: f64,
    /// `(value − ewma) / max(stddev, min_stddev)` (0 for the first point).
    pub z: f64,
    /// This point alone is anomalous, and why.
    pub anomalous: Option<Reason>,
    /// The confirmation rule holds now: act (the caller's limits permitting).
    pub trigger: bool,
}

/// One series' detector.
#[derive(Clone, Debug)]
pub struct Detector {
    cfg: DetectorConfig,
    seen: usize,
    mean: f64,
    var: f64,
    recent: VecDeque<bool>,
}

impl Detector {
    pub fn new(cfg: DetectorConfig) -> Self {
        Self { recent: VecDeque::with_capacity(cfg.confirm_n), cfg, seen: 0, mean: 0.0, var: 0.0 }
    }

    /// Points seen so far.
    pub fn seen(&self) -> usize {
        self.seen
    }

    /// Takes the next point (non-finite points are ignored: a broken reading is no signal).
    pub fn observe(&mut self, x: f64) -> Option<Observation> {
        if !x.is_finite() {
            return None;
        }
        let (ewma, stddev) = (self.mean, self.var.max(0.0).sqrt());
        let scale = stddev.max(self.cfg.min_stddev).max(f64::MIN_POSITIVE);
        let z = if self.seen == 0 { 0.0 } else { (x - ewma) / scale };
        let anomalous = if x < self.cfg.floor {
            None
        } else if self.cfg.ceiling.is_some_and(|c| x >= c) {
            Some(Reason::Ceiling)
        } else if self.seen >= self.cfg.warmup && z >= self.cfg.z_threshold {
            Some(Reason::ZScore)
        } else {
            None
        };
        if self.recent.len() == self.cfg.confirm_n {
            self.recent.pop_front();
        }
        self.recent.push_back(anomalous.is_some());
        let confirmed = self.recent.iter().filter(|a| **a).count() >= self.cfg.confirm_k;
        let trigger = anomalous == Some(Reason::Ceiling) || (anomalous.is_some() && confirmed);
        // The baseline moves after the point was judged; an anomalous point counts only up to
        // the threshold (module docs).
        if self.seen == 0 {
            self.mean = x;
        } else {
            let x = if anomalous.is_some() { x.min(ewma + self.cfg.z_threshold * scale) } else { x };
            let diff = x - self.mean;
            let incr = self.cfg.alpha * diff;
            self.mean += incr;
            self.var = (1.0 - self.cfg.alpha) * (self.var + diff * incr);
        }
        self.seen += 1;
        Some(Observation { value: x, ewma, stddev, z, anomalous, trigger })
    }
}

#[cfg(test)]
mod tests;
