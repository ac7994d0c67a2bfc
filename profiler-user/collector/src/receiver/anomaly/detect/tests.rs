//! The detector on synthetic series with known trigger points.

use super::*;

/// A deterministic noise in [-amp, amp] (a linear congruential generator).
fn noise(seed: &mut u64, amp: f64) -> f64 {
    *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    ((*seed >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) * amp
}

/// The indexes at which the detector triggers on `series`.
fn triggers(cfg: DetectorConfig, series: &[f64]) -> Vec<usize> {
    let mut d = Detector::new(cfg);
    series.iter().enumerate().filter_map(|(i, x)| d.observe(*x).filter(|o| o.trigger).map(|_| i)).collect()
}

fn baseline(n: usize, level: f64, amp: f64, seed: u64) -> Vec<f64> {
    let mut s = seed;
    (0..n).map(|_| level + noise(&mut s, amp)).collect()
}

#[test]
fn the_defaults_are_consistent_and_bad_settings_are_named() {
    DetectorConfig::default().check().unwrap();
    let bad = DetectorConfig { alpha: 0.0, ..Default::default() };
    assert!(bad.check().unwrap_err().starts_with("alpha"));
    let bad = DetectorConfig { confirm_k: 4, confirm_n: 3, ..Default::default() };
    assert!(bad.check().unwrap_err().starts_with("confirm"));
    let bad = DetectorConfig { ceiling: Some(0.05), ..Default::default() };
    assert!(bad.check().unwrap_err().starts_with("ceiling"));
}

#[test]
fn a_step_triggers_on_its_third_point_and_becomes_the_new_normal() {
    let mut series = baseline(30, 0.20, 0.02, 1);
    series.extend(baseline(40, 0.60, 0.02, 2));
    let t = triggers(DetectorConfig::default(), &series);
    assert_eq!(t.first(), Some(&32), "k = 3 anomalous points: the step's first three: {t:?}");
    assert!(t.iter().all(|&i| i < 45), "the new level is normal within about ten points: {t:?}");
}

#[test]
fn a_single_spike_is_not_confirmed_but_three_close_ones_are() {
    let mut one = baseline(30, 0.20, 0.02, 3);
    one[20] = 0.70;
    assert_eq!(triggers(DetectorConfig::default(), &one), Vec::<usize>::new());
    let mut three = baseline(30, 0.20, 0.02, 3);
    for i in [20, 23, 26] {
        three[i] = 0.70;
    }
    assert_eq!(triggers(DetectorConfig::default(), &three), vec![26], "the third within ten points");
    let mut apart = baseline(60, 0.20, 0.02, 3);
    for i in [15, 30, 45] {
        apart[i] = 0.70;
    }
    assert_eq!(triggers(DetectorConfig::default(), &apart), Vec::<usize>::new(), "never 3 within 10");
}

#[test]
fn a_slow_ramp_is_followed_and_a_fast_one_triggers() {
    let slow: Vec<f64> = (0..200).map(|i| 0.15 + 0.0015 * i as f64).collect();
    assert_eq!(triggers(DetectorConfig::default(), &slow), Vec::<usize>::new());
    let mut fast = baseline(20, 0.15, 0.01, 4);
    fast.extend((1..=10).map(|i| 0.15 + 0.06 * i as f64));
    let t = triggers(DetectorConfig::default(), &fast);
    assert!(!t.is_empty() && t[0] >= 22, "{t:?}");
}

#[test]
fn two_minutes_of_steady_noise_never_trigger() {
    for seed in 1..20 {
        let series = baseline(120, 0.40, 0.06, seed);
        assert_eq!(triggers(DetectorConfig::default(), &series), Vec::<usize>::new(), "seed {seed}");
    }
}

#[test]
fn warm_up_floor_and_ceiling() {
    // During the warm-up a Z-score never triggers …
    let mut early = vec![0.20; 5];
    early.extend([0.60, 0.60, 0.60]);
    assert_eq!(triggers(DetectorConfig::default(), &early), Vec::<usize>::new());
    // … but the ceiling always does, at once.
    let mut hot = vec![0.20; 3];
    hot.push(0.85);
    assert_eq!(triggers(DetectorConfig::default(), &hot), vec![3]);
    // Under the floor nothing is anomalous, however many sigmas.
    let mut low = baseline(30, 0.01, 0.001, 5);
    low.extend([0.08; 10]);
    assert_eq!(triggers(DetectorConfig::default(), &low), Vec::<usize>::new());
    let mut d = Detector::new(DetectorConfig::default());
    assert_eq!(d.observe(f64::NAN), None, "a broken reading is ignored");
    assert_eq!(d.seen(), 0);
}

#[test]
fn observations_carry_the_baseline_they_were_judged_against() {
    let mut d = Detector::new(DetectorConfig::default());
    for x in baseline(20, 0.30, 0.02, 6) {
        d.observe(x);
    }
    let o = d.observe(0.70).unwrap();
    assert!((o.ewma - 0.30).abs() < 0.02, "{o:?}");
    assert!(o.stddev < 0.03 && o.z > 10.0, "{o:?}");
    assert_eq!(o.anomalous, Some(Reason::ZScore));
    assert!(!o.trigger, "one point is not yet confirmed");
}
