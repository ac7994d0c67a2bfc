//! The pod store: the node's pods by uid, IP, container id and namespace/name, written by the
//! watch task and read by `consume`.
//!
//! `consume` takes a read lock for one lookup per resource and clones an `Arc`; the watch
//! holds the write lock only to swap entries (pods are converted, and ReplicaSets fetched,
//! before it is taken), so a reader never waits on the network.
//!
//! Memory is bounded by `max_pods`: a new pod past it evicts the pod that has been in the
//! store longest, counted in `otelprof_k8s_pods_evicted_total`.

use std::{
    collections::HashMap,
    sync::{atomic::Ordering, Arc, RwLock},
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
}

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
}

impl Store {
    pub fn new(max_pods: usize, metrics: StoreMetrics) -> Self {
        Self { index: RwLock::new(Index::default()), max_pods, metrics }
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
        self.write(|ix, max| u64::from(ix.insert(pod, max)));
    }

    /// A DELETED pod.
    pub fn remove(&self, uid: &str) {
        self.write(|ix, _| {
            ix.unindex(uid);
            0
        });
    }

    /// A (re-)list: the store becomes exactly `pods`.
    pub fn replace_all(&self, pods: Vec<PodMeta>) {
        self.write(|ix, max| {
            *ix = Index::default();
            pods.into_iter().map(|p| u64::from(ix.insert(p, max))).sum()
        });
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
        s.remove("c");
        assert_eq!(s.by_ip("10.0.0.3").map(|f| f.pod.uid.clone()).as_deref(), Some("d"));
    }
}
