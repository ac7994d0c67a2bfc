//! The pod store: the node's pods by uid, IP, container id and namespace/name, written by the
//! watch task and read by `consume`.
//!
//! `consume` takes a read lock for one lookup per resource and clones an `Arc`; the watch
//! holds the write lock only to swap entries (pods are converted, and ReplicaSets fetched,
//! before it is taken), so a reader never waits on the network.
//!
//! Memory is bounded by `max_pods`: a new pod past it evicts the pod that has been in the
//! store longest, counted in `otelprof_k8s_pods_evicted_total`.
//!
//! A DELETED pod stays for [`DELETE_GRACE`] (2 minutes, as in the Collector): its last data
//! arrives after it is gone (the profiler reports every `reporter_interval`, SDKs flush on
//! exit, `batch` holds data). It is found by uid, container id and name meanwhile, but no longer
//! by IP: a pod IP is handed to the next pod at once, and data from that pod must not be taken
//! for the dead one's.

use std::{
    collections::{HashMap, VecDeque},
    sync::{atomic::Ordering, Arc, RwLock},
    time::{Duration, Instant},
};

use super::pod::PodMeta;
use crate::telemetry::{add, Value};

/// The store's own metrics.
#[derive(Clone, Default)]
pub struct StoreMetrics {
    /// `otelprof_k8s_pods`: pods held now.
    pub pods: Value,
    /// `otelprof_k8s_pods_evicted_total`: pods dropped because the store was full.
    pub evicted: Value,
}

#[derive(Default)]
struct Index {
    pods: HashMap<String, (u64, Arc<PodMeta>)>,
    by_ip: HashMap<String, String>,
    /// Container id → (pod uid, index into the pod's containers).
    by_container: HashMap<String, (String, usize)>,
    by_name: HashMap<(String, String), String>,
    next_seq: u64,
    /// Deleted pods, oldest first: (when, uid, its sequence number then).
    deleted: VecDeque<(Instant, String, u64)>,
}

/// How long a deleted pod is still found (see the module docs).
pub const DELETE_GRACE: Duration = Duration::from_secs(120);

impl Index {
    fn unindex(&mut self, uid: &str) -> Option<Arc<PodMeta>> {
        let (_, old) = self.pods.remove(uid)?;
        for ip in &old.ips {
            if self.by_ip.get(ip).is_some_and(|u| u == uid) {
                self.by_ip.remove(ip);
            }
        }
        for c in &old.containers {
            for id in &c.ids {
                if self.by_container.get(id).is_some_and(|(u, _)| u == uid) {
                    self.by_container.remove(id);
                }
            }
        }
        let key = (old.namespace.clone(), old.name.clone());
        if self.by_name.get(&key).is_some_and(|u| u == uid) {
            self.by_name.remove(&key);
        }
        Some(old)
    }

    /// Removes the deleted pods whose grace ended by `now`; a pod added again since (same uid,
    /// a newer sequence number) stays.
    fn sweep(&mut self, now: Instant) {
        while let Some((at, _, _)) = self.deleted.front() {
            if now.saturating_duration_since(*at) < DELETE_GRACE {
                break;
            }
            let Some((_, uid, seq)) = self.deleted.pop_front() else { break };
            if self.pods.get(&uid).is_some_and(|(s, _)| *s == seq) {
                self.unindex(&uid);
            }
        }
    }

    /// A deleted pod: no longer found by IP at once, removed after the grace.
    fn delete(&mut self, uid: &str, now: Instant) {
        let Some((seq, pod)) = self.pods.get(uid).map(|(s, p)| (*s, p.clone())) else { return };
        for ip in &pod.ips {
            if self.by_ip.get(ip).is_some_and(|u| u == uid) {
                self.by_ip.remove(ip);
            }
        }
        self.deleted.push_back((now, uid.to_string(), seq));
    }

    /// Inserts `pod`; returns whether another pod was evicted to make room.
    fn insert(&mut self, pod: PodMeta, max: usize) -> bool {
        let replaced = self.unindex(&pod.uid);
        let mut evicted = false;
        if replaced.is_none() && self.pods.len() >= max {
            if let Some(oldest) = self.pods.iter().min_by_key(|(_, (seq, _))| *seq).map(|(u, _)| u.clone()) {
                self.unindex(&oldest);
                evicted = true;
            }
        }
        let pod = Arc::new(pod);
        let uid = pod.uid.clone();
        for ip in &pod.ips {
            self.by_ip.insert(ip.clone(), uid.clone());
        }
        for (i, c) in pod.containers.iter().enumerate() {
            for id in &c.ids {
                self.by_container.insert(id.clone(), (uid.clone(), i));
            }
        }
        self.by_name.insert((pod.namespace.clone(), pod.name.clone()), uid.clone());
        self.next_seq += 1;
        self.pods.insert(uid, (self.next_seq, pod));
        evicted
    }
}

/// What a lookup found: the pod, and the container when the key named one.
pub struct Found {
    pub pod: Arc<PodMeta>,
    pub container: Option<usize>,
}

pub struct Store {
    index: RwLock<Index>,
    max_pods: usize,
    metrics: StoreMetrics,
    /// Becomes true at the first complete list (`wait_for_metadata` waits for it).
    synced: tokio::sync::watch::Sender<bool>,
}

impl Store {
    pub fn new(max_pods: usize, metrics: StoreMetrics) -> Self {
        Self { index: RwLock::new(Index::default()), max_pods, metrics, synced: tokio::sync::watch::Sender::new(false) }
    }

    /// Waits until the first list is in, at most `timeout`; false when it was not.
    pub async fn wait_synced(&self, timeout: Duration) -> bool {
        let mut rx = self.synced.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|s| *s)).await.is_ok_and(|r| r.is_ok())
    }

    fn write(&self, f: impl FnOnce(&mut Index, usize) -> u64) {
        // A poisoned lock means a writer panicked mid-update: the index may be inconsistent,
        // so start over empty (the next re-list refills it).
        let mut guard = match self.index.write() {
            Ok(g) => g,
            Err(poisoned) => {
                let mut g = poisoned.into_inner();
                *g = Index::default();
                g
            }
        };
        let evicted = f(&mut guard, self.max_pods);
        add(&self.metrics.evicted, evicted);
        self.metrics.pods.store(guard.pods.len() as u64, Ordering::Relaxed);
    }

    /// An ADDED or MODIFIED pod.
    pub fn upsert(&self, pod: PodMeta) {
        self.write(|ix, max| {
            ix.sweep(Instant::now());
            u64::from(ix.insert(pod, max))
        });
    }

    /// A DELETED pod, at `now`: see [`DELETE_GRACE`].
    pub fn remove(&self, uid: &str, now: Instant) {
        self.write(|ix, _| {
            ix.delete(uid, now);
            ix.sweep(now);
            0
        });
    }

    /// Ends the grace of deleted pods (the watch calls it now and then, and every change does).
    pub fn sweep(&self, now: Instant) {
        self.write(|ix, _| {
            ix.sweep(now);
            0
        });
    }

    /// A (re-)list: the store becomes exactly `pods` (pods deleted while the watch was broken
    /// are gone at once: their deletion was not seen).
    pub fn replace_all(&self, pods: Vec<PodMeta>) {
        self.write(|ix, max| {
            *ix = Index::default();
            pods.into_iter().map(|p| u64::from(ix.insert(p, max))).sum()
        });
        self.synced.send_replace(true);
    }

    /// Whether the pod with `uid` was deleted and is held for its grace.
    pub fn is_deleted(&self, uid: &str) -> bool {
        self.index.read().is_ok_and(|ix| {
            let seq = ix.pods.get(uid).map(|(s, _)| *s);
            ix.deleted.iter().any(|(_, u, s)| u == uid && Some(*s) == seq)
        })
    }

    pub fn len(&self) -> usize {
        self.index.read().map_or(0, |ix| ix.pods.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The pod with `uid`, when held.
    pub fn get(&self, uid: &str) -> Option<Arc<PodMeta>> {
        self.index.read().ok()?.pods.get(uid).map(|(_, p)| p.clone())
    }

    pub fn by_uid(&self, uid: &str) -> Option<Found> {
        self.get(uid).map(|pod| Found { pod, container: None })
    }

    pub fn by_ip(&self, ip: &str) -> Option<Found> {
        let ix = self.index.read().ok()?;
        let uid = ix.by_ip.get(ip)?;
        ix.pods.get(uid).map(|(_, p)| Found { pod: p.clone(), container: None })
    }

    pub fn by_container_id(&self, id: &str) -> Option<Found> {
        let ix = self.index.read().ok()?;
        let (uid, i) = ix.by_container.get(id)?;
        ix.pods.get(uid).map(|(_, p)| Found { pod: p.clone(), container: Some(*i) })
    }

    pub fn by_name(&self, namespace: &str, name: &str) -> Option<Found> {
        let ix = self.index.read().ok()?;
        let uid = ix.by_name.get(&(namespace.to_string(), name.to_string()))?;
        ix.pods.get(uid).map(|(_, p)| Found { pod: p.clone(), container: None })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(uid: &str, ip: &str, cid: &str) -> PodMeta {
        PodMeta {
            uid: uid.into(),
            namespace: "ns".into(),
            name: format!("p-{uid}"),
            ips: vec![ip.into()],
            attributes: vec![],
            containers: vec![super::super::pod::ContainerMeta {
                name: "c".into(),
                ids: vec![cid.into()],
                attributes: vec![],
            }],
        }
    }

    #[test]
    fn bounded_with_evictions_counted_and_indexes_follow() {
        let m = StoreMetrics::default();
        let s = Store::new(2, m.clone());
        s.upsert(pod("a", "10.0.0.1", "ca"));
        s.upsert(pod("b", "10.0.0.2", "cb"));
        s.upsert(pod("a", "10.0.0.9", "ca2")); // a change, not a new pod
        assert!(s.by_ip("10.0.0.1").is_none() && s.by_container_id("ca").is_none());
        s.upsert(pod("c", "10.0.0.3", "cc")); // evicts b, now the oldest
        assert_eq!((s.len(), m.evicted.load(Ordering::Relaxed), m.pods.load(Ordering::Relaxed)), (2, 1, 2));
        assert!(s.by_uid("b").is_none() && s.by_ip("10.0.0.2").is_none());
        assert_eq!(s.by_container_id("ca2").map(|f| (f.pod.uid.clone(), f.container)), Some(("a".into(), Some(0))));
        assert_eq!(s.by_name("ns", "p-c").map(|f| f.pod.uid.clone()).as_deref(), Some("c"));
        // An IP reused by a newer pod stays with it when the older one is deleted.
        s.upsert(pod("d", "10.0.0.3", "cd"));
        s.remove("c", Instant::now());
        assert_eq!(s.by_ip("10.0.0.3").map(|f| f.pod.uid.clone()).as_deref(), Some("d"));
    }

    #[test]
    fn a_deleted_pod_is_found_for_its_grace_but_not_by_ip() {
        let s = Store::new(8, StoreMetrics::default());
        let t0 = Instant::now();
        s.upsert(pod("a", "10.0.0.1", "ca"));
        s.upsert(pod("b", "10.0.0.2", "cb"));
        s.remove("a", t0);
        assert!(s.is_deleted("a") && !s.is_deleted("b"));
        assert!(s.by_ip("10.0.0.1").is_none(), "its IP may be the next pod's already");
        assert_eq!(s.by_container_id("ca").map(|f| f.pod.uid.clone()).as_deref(), Some("a"));
        assert!(s.by_uid("a").is_some() && s.by_name("ns", "p-a").is_some());
        s.sweep(t0 + DELETE_GRACE - Duration::from_secs(1));
        assert!(s.by_uid("a").is_some(), "still in its grace");
        s.remove("b", t0 + Duration::from_secs(60));
        s.sweep(t0 + DELETE_GRACE);
        assert!(s.by_uid("a").is_none() && s.by_container_id("ca").is_none() && s.by_name("ns", "p-a").is_none());
        assert!(s.by_uid("b").is_some(), "deleted later, still in its grace");
        assert_eq!(s.len(), 1);
        // Deleted, then added again (a MODIFIED after a missed DELETED): the new one stays.
        s.remove("b", t0 + Duration::from_secs(60));
        s.upsert(pod("b", "10.0.0.2", "cb"));
        s.sweep(t0 + Duration::from_secs(600));
        assert!(!s.is_deleted("b") && s.by_ip("10.0.0.2").is_some());
    }
}
