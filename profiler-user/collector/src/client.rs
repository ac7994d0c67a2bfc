//! Who sent the request being consumed: the Collector's `client.Info`, for processors that
//! need the sender (the `k8sattributes` processor's `from: connection`).
//!
//! A receiver runs [`Consumer::consume`](crate::consumer::Consumer::consume) inside
//! [`scope`]; every component that runs synchronously inside that call (processors,
//! connectors, the fan-out to pipelines) reads it with [`current`]. Why a scoped thread-local
//! and not a parameter of `consume`: the seam stays one argument for every component, and the
//! scope is exactly the Collector's — its `client.Info` travels in the request's context and is
//! gone after the `batch` processor, which hands data on from its own timer. Here too data
//! flushed by `batch` has no client: a processor that needs the sender goes before `batch`, as
//! the Collector's documentation says for k8sattributes. See docs/design/0011.

use std::{
    cell::Cell,
    net::{IpAddr, SocketAddr},
};

/// What is known of a request's sender.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Info {
    /// The peer address of the connection the request came on.
    pub addr: Option<SocketAddr>,
}

impl Info {
    pub fn from_addr(addr: SocketAddr) -> Self {
        Self { addr: Some(addr) }
    }

    /// The peer's IP, an IPv4-mapped IPv6 address (a dual-stack listener's view of an IPv4
    /// client) as the IPv4 address a pod has.
    pub fn ip(&self) -> Option<IpAddr> {
        self.addr.map(|a| a.ip().to_canonical())
    }
}

thread_local! {
    static CURRENT: Cell<Option<Info>> = const { Cell::new(None) };
}

/// Runs `f` with `info` as the current client; the previous one is back afterwards, also when
/// `f` panics.
pub fn scope<R>(info: Info, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<Info>);
    impl Drop for Restore {
        fn drop(&mut self) {
            CURRENT.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(CURRENT.with(|c| c.replace(Some(info))));
    f()
}

/// The client of the request being consumed on this thread; `None` outside a receiver's
/// [`scope`] (the profiler's own data, data flushed by `batch`).
pub fn current() -> Option<Info> {
    CURRENT.with(Cell::get)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scope_nests_restores_and_survives_a_panic() {
        assert_eq!(current(), None);
        let a = Info::from_addr("10.0.0.1:4000".parse().unwrap());
        let b = Info::from_addr("[::ffff:10.0.0.2]:4000".parse().unwrap());
        scope(a, || {
            assert_eq!(current(), Some(a));
            scope(b, || assert_eq!(current().and_then(|i| i.ip()), Some("10.0.0.2".parse().unwrap())));
            assert_eq!(current(), Some(a));
            let panicked = std::panic::catch_unwind(|| scope(b, || panic!("inside")));
            assert!(panicked.is_err());
            assert_eq!(current(), Some(a), "restored after a panic");
        });
        assert_eq!(current(), None);
        assert_eq!(std::thread::spawn(current).join().unwrap(), None, "per thread");
    }
}
