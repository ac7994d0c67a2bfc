//! The caps on the anomaly loop's actions (issue #16): a cooldown per target, at most N
//! actions per window per target, at most M per window node-wide. A remote config may tighten
//! them, never loosen them ([`Limits::within`]).
//!
//! The bookkeeping ([`History`]) belongs to the agent, not to one loop: the host keeps it
//! across config reloads, so a remote config that restarts the loop (any change of its
//! section, and every reload for the connector form) cannot reset a cooldown or a window, and
//! the node-wide cap counts the actions of every anomaly component of the node.
//!
//! Defaults: 60 s cooldown, 1 burst per 20 min per target, 10 per hour node-wide — a burst
//! profiles at 5× the normal rate for 30 s, so the node-wide cap keeps the worst case at
//! 10 × 30 s × 5 = 25 min-equivalents of normal profiling per hour.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

/// The caps.
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    pub cooldown: Duration,
    pub per_target: usize,
    pub per_target_window: Duration,
    pub global: usize,
    pub global_window: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            cooldown: Duration::from_secs(60),
            per_target: 1,
            per_target_window: Duration::from_secs(20 * 60),
            global: 10,
            global_window: Duration::from_secs(3600),
        }
    }
}

impl Limits {
    /// `self` (say, from a remote config) held to `local`: each cap the stricter of the two.
    pub fn within(&self, local: &Limits) -> Limits {
        Limits {
            cooldown: self.cooldown.max(local.cooldown),
            per_target: self.per_target.min(local.per_target),
            per_target_window: self.per_target_window.max(local.per_target_window),
            global: self.global.min(local.global),
            global_window: self.global_window.max(local.global_window),
        }
    }
}

/// Why an action was not taken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Denied {
    /// The target acted less than `cooldown` ago; this much is left.
    Cooldown(Duration),
    /// The target's actions in its window reached `per_target`.
    TargetCap,
    /// The node's actions in the global window reached `global`.
    GlobalCap,
}

/// The actions taken, by target and node-wide: shared by every anomaly component of the
/// agent and kept across reloads (the [`Host`](crate::component::Host) holds one).
#[derive(Clone, Debug, Default)]
pub struct History(Arc<Mutex<Taken>>);

#[derive(Debug, Default)]
struct Taken {
    /// By `<component>\0<target>` (a component's id cannot hold a NUL).
    by_target: HashMap<String, VecDeque<Instant>>,
    all: VecDeque<Instant>,
    /// The longest global window of any limiter: `all` is kept that long.
    longest: Duration,
}

/// The caps of one component, over the agent's [`History`].
#[derive(Debug)]
pub struct Limiter {
    limits: Limits,
    history: History,
    /// The component's id: its targets' keys in the history.
    owner: String,
}

impl Limiter {
    /// With a history of its own (tests, tools).
    pub fn new(limits: Limits) -> Self {
        Self::shared(limits, History::default(), "")
    }

    /// Over the agent's `history`, as component `owner`.
    pub fn shared(limits: Limits, history: History, owner: &str) -> Self {
        Self { limits, history, owner: owner.to_string() }
    }

    /// Takes an action for `target` at `now` if every cap allows it, and records it.
    pub fn try_acquire(&mut self, target: &str, now: Instant) -> Result<(), Denied> {
        let l = &self.limits;
        let mut taken = self.history.0.lock().unwrap_or_else(|p| p.into_inner());
        let taken = &mut *taken;
        let forget = |q: &mut VecDeque<Instant>, window: Duration| {
            while q.front().is_some_and(|t| now.saturating_duration_since(*t) >= window) {
                q.pop_front();
            }
        };
        let key = format!("{}\0{target}", self.owner);
        let mine = taken.by_target.entry(key).or_default();
        if let Some(last) = mine.back() {
            let since = now.saturating_duration_since(*last);
            if since < l.cooldown {
                return Err(Denied::Cooldown(l.cooldown - since));
            }
        }
        forget(mine, l.per_target_window.max(l.cooldown));
        if mine.len() >= l.per_target {
            return Err(Denied::TargetCap);
        }
        taken.longest = taken.longest.max(l.global_window);
        forget(&mut taken.all, taken.longest);
        let in_window = taken.all.iter().filter(|t| now.saturating_duration_since(**t) < l.global_window).count();
        if in_window >= l.global {
            return Err(Denied::GlobalCap);
        }
        mine.push_back(now);
        taken.all.push_back(now);
        // Bounded memory: this component's targets that have not acted for a whole window are
        // forgotten (each component forgets its own).
        let keep = l.per_target_window.max(l.cooldown);
        let prefix = format!("{}\0", self.owner);
        taken.by_target.retain(|k, q| {
            !k.starts_with(&prefix) || q.back().is_some_and(|t| now.saturating_duration_since(*t) < keep)
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn cooldown_per_target_cap_and_global_cap() {
        let t0 = Instant::now();
        let mut l = Limiter::new(Limits {
            cooldown: 60 * S,
            per_target: 2,
            per_target_window: 600 * S,
            global: 3,
            global_window: 3600 * S,
        });
        assert_eq!(l.try_acquire("a", t0), Ok(()));
        assert_eq!(l.try_acquire("a", t0 + 10 * S), Err(Denied::Cooldown(50 * S)));
        assert_eq!(l.try_acquire("b", t0 + 10 * S), Ok(()), "another target is not cooled down");
        assert_eq!(l.try_acquire("a", t0 + 61 * S), Ok(()));
        assert_eq!(l.try_acquire("a", t0 + 200 * S), Err(Denied::TargetCap), "2 per 10 min");
        assert_eq!(l.try_acquire("c", t0 + 200 * S), Err(Denied::GlobalCap), "3 per hour node-wide");
        assert_eq!(l.try_acquire("a", t0 + 601 * S), Err(Denied::GlobalCap), "a's window moved on, the node's not");
        assert_eq!(l.try_acquire("a", t0 + 3601 * S), Ok(()), "the hour moved on");
    }

    /// A loop restarted by a reload gets a new limiter over the same history: its cooldown
    /// and windows go on; another component's actions count against the node-wide cap.
    #[test]
    fn the_history_outlives_a_restart_and_the_node_cap_counts_every_component() {
        let t0 = Instant::now();
        let limits = Limits { global: 2, ..Limits::default() };
        let history = History::default();
        let mut first = Limiter::shared(limits.clone(), history.clone(), "anomaly");
        assert_eq!(first.try_acquire("node", t0), Ok(()));
        drop(first);
        let mut again = Limiter::shared(limits.clone(), history.clone(), "anomaly");
        assert_eq!(again.try_acquire("node", t0 + 10 * S), Err(Denied::Cooldown(50 * S)), "a restart resets nothing");
        let mut other = Limiter::shared(limits.clone(), history.clone(), "anomaly/apps");
        assert_eq!(other.try_acquire("node", t0 + 10 * S), Ok(()), "its own targets");
        assert_eq!(again.try_acquire("x", t0 + 20 * S), Err(Denied::GlobalCap), "2 on the node already");
    }

    #[test]
    fn a_remote_config_can_tighten_the_caps_never_loosen_them() {
        let local = Limits::default();
        let looser = Limits { cooldown: S, per_target: 100, global: 1000, ..Limits::default() };
        assert_eq!(looser.within(&local), local);
        let tighter = Limits { cooldown: 600 * S, per_target: 1, global: 2, ..Limits::default() };
        assert_eq!(tighter.within(&local), tighter);
    }
}
