//! The `system` detector: what the host says about itself.
//!
//! | attribute        | from                                                      | default |
//! |------------------|-----------------------------------------------------------|---------|
//! | `host.name`      | `NODE_NAME` when set; else `hostname_sources` in order:   | on      |
//! |                  | `dns` (the canonical name of the hostname, via the        |         |
//! |                  | resolver), `os` (the kernel's)                            |         |
//! | `k8s.node.name`  | `NODE_NAME`, when set                                     | on      |
//! | `os.type`        | `linux`                                                   | on      |
//! | `host.id`        | `/etc/machine-id` (else `/var/lib/dbus/machine-id`)       | off     |
//! | `host.arch`      | `uname` machine, as the semantic conventions spell it     | off     |
//! | `os.description` | `uname`: system, release and version                      | off     |
//!
//! Defaults are the Collector's: `hostname_sources: [dns, os]`, and attributes switched with
//! `resource_attributes: {host.id: {enabled: true}}`. The Collector's other sources (`cname`,
//! `lookup`) and attributes (`host.ip`, `host.cpu.*`, `os.version`, …) are not here: naming
//! one is a config error, switching one off is accepted.
//!
//! `NODE_NAME` is what a Kubernetes DaemonSet sets from the downward API (`spec.nodeName`,
//! as `deploy/kubernetes/base/daemonset.yaml` does). A pod shares the node's PID namespace
//! there (`hostPID`) but not its UTS namespace, so the kernel's hostname is the pod's name: with
//! `NODE_NAME` set, `host.name` is the node's name instead, whatever `hostname_sources` says,
//! and `k8s.node.name` is the same name.
//!
//! Everything is read once, when the processor is first built, never per request.

use std::{
    collections::BTreeMap,
    ffi::{CStr, CString},
    io,
    path::{Path, PathBuf},
    time::Instant,
};

use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use serde::Deserialize;

use super::{DetectError, Detector};
use crate::config::ConfigError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_sources")]
    hostname_sources: Vec<String>,
    #[serde(default)]
    resource_attributes: BTreeMap<String, Toggle>,
}

impl Default for Config {
    fn default() -> Self {
        Self { hostname_sources: default_sources(), resource_attributes: BTreeMap::new() }
    }
}

fn default_sources() -> Vec<String> {
    vec!["dns".into(), "os".into()]
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Toggle {
    enabled: bool,
}

/// Attributes this detector has, and whether each is on by default.
const ATTRIBUTES: [(&str, bool); 6] = [
    ("host.name", true),
    ("k8s.node.name", true),
    ("os.type", true),
    ("host.id", false),
    ("host.arch", false),
    ("os.description", false),
];

/// The Collector's system-detector attributes otelprof does not have.
const NOT_HERE: [&str; 12] = [
    "host.ip",
    "host.mac",
    "host.interface",
    "host.cpu.vendor.id",
    "host.cpu.family",
    "host.cpu.model.id",
    "host.cpu.model.name",
    "host.cpu.stepping",
    "host.cpu.cache.l2.size",
    "os.name",
    "os.version",
    "os.build.id",
];

#[derive(Clone, Copy, Debug, PartialEq)]
enum Source {
    Dns,
    Os,
}

/// The detector with its config checked.
#[derive(Clone, Debug)]
pub struct SystemDetector {
    sources: Vec<Source>,
    enabled: Vec<&'static str>,
    /// Where `/proc` and `/etc` are (`/`; a directory in tests).
    root: PathBuf,
}

impl SystemDetector {
    /// Checks `config` (at `path`, `processors.resourcedetection.system`).
    pub fn new(config: &Config, path: &str) -> Result<Self, ConfigError> {
        let mut sources = Vec::new();
        for (i, s) in config.hostname_sources.iter().enumerate() {
            let at = format!("{path}.hostname_sources[{i}]");
            sources.push(match s.as_str() {
                "dns" => Source::Dns,
                "os" => Source::Os,
                "cname" | "lookup" => {
                    return Err(ConfigError::new(at, format!("`{s}` is not supported by otelprof; use dns or os")))
                }
                _ => {
                    return Err(ConfigError::new(at, format!("`{s}` is not a hostname source: dns, os, cname, lookup")))
                }
            });
        }
        let mut enabled: Vec<&'static str> = ATTRIBUTES.iter().filter(|(_, on)| *on).map(|(k, _)| *k).collect();
        for (key, toggle) in &config.resource_attributes {
            let at = format!("{path}.resource_attributes.{key}");
            if let Some((name, _)) = ATTRIBUTES.iter().find(|(k, _)| k == key) {
                enabled.retain(|k| k != name);
                if toggle.enabled {
                    enabled.push(name);
                }
            } else if NOT_HERE.contains(&key.as_str()) {
                if toggle.enabled {
                    return Err(ConfigError::new(at, "not supported by otelprof's system detector"));
                }
            } else {
                return Err(ConfigError::new(at, "not an attribute of the system detector"));
            }
        }
        Ok(Self { sources, enabled, root: PathBuf::from("/") })
    }

    /// The host attributes otelprof's profiles have always carried — `host.name` as the OS
    /// says (no DNS) or `NODE_NAME`, `host.arch`, `os.type`, and `k8s.node.name` with
    /// `NODE_NAME` — for `otelprof record`, which has no pipeline.
    pub fn profile_defaults() -> Self {
        Self {
            sources: vec![Source::Os],
            enabled: vec!["host.name", "k8s.node.name", "os.type", "host.arch"],
            root: PathBuf::from("/"),
        }
    }

    fn on(&self, attribute: &str) -> bool {
        self.enabled.contains(&attribute)
    }

    /// The attributes from `facts`; `resolve` gives the canonical name of a hostname.
    fn attributes(
        &self,
        facts: &HostFacts,
        resolve: impl Fn(&str) -> io::Result<String>,
    ) -> Result<Vec<KeyValue>, DetectError> {
        let mut out = Vec::new();
        let mut put =
            |k: &str, v: String| out.push(KeyValue { key: k.into(), value: Some(string(v)), ..Default::default() });
        if self.on("host.name") {
            let name = facts.node_name.clone().or_else(|| {
                self.sources.iter().find_map(|s| match s {
                    Source::Os => facts.hostname.clone(),
                    Source::Dns => {
                        let host = facts.hostname.as_deref()?;
                        resolve(host).map_err(|e| tracing::debug!("hostname source dns: {e}")).ok()
                    }
                })
            });
            match name {
                Some(n) => put("host.name", n),
                None => tracing::warn!("system detector: no hostname source gave a name; host.name is left out"),
            }
        }
        if let Some(node) = facts.node_name.clone().filter(|_| self.on("k8s.node.name")) {
            put("k8s.node.name", node);
        }
        if self.on("os.type") {
            put("os.type", os_type().into());
        }
        if self.on("host.id") {
            match &facts.machine_id {
                Some(id) => put("host.id", id.clone()),
                None => tracing::warn!("system detector: no machine id (/etc/machine-id); host.id is left out"),
            }
        }
        if let Some(u) = &facts.uname {
            if self.on("host.arch") {
                put("host.arch", host_arch(&u.machine));
            }
            if self.on("os.description") {
                put("os.description", format!("{} {} {}", u.sysname, u.release, u.version));
            }
        }
        if out.is_empty() && !self.enabled.is_empty() {
            return Err(DetectError { detector: "system", message: "found none of its attributes".into() });
        }
        Ok(out)
    }
}

impl Detector for SystemDetector {
    fn name(&self) -> &'static str {
        "system"
    }

    fn detect(&self, deadline: Instant) -> Result<Vec<KeyValue>, DetectError> {
        let facts = HostFacts::read(&self.root);
        self.attributes(&facts, |host| canonical_name_by(host, deadline))
    }
}

fn string(s: String) -> AnyValue {
    AnyValue { value: Some(Value::StringValue(s)) }
}

/// What the host says about itself.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HostFacts {
    pub hostname: Option<String>,
    /// `NODE_NAME` (a Kubernetes DaemonSet's node, from the downward API), when set.
    pub node_name: Option<String>,
    pub machine_id: Option<String>,
    pub uname: Option<Uname>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Uname {
    pub sysname: String,
    pub nodename: String,
    pub release: String,
    pub version: String,
    pub machine: String,
}

impl HostFacts {
    /// Reads the facts, with `/proc` and `/etc` under `root`, and `NODE_NAME` from the
    /// environment.
    pub fn read(root: &Path) -> Self {
        Self { node_name: node_name(std::env::var_os("NODE_NAME")), ..Self::read_files(root) }
    }

    /// The facts in files and `uname`, without the environment.
    fn read_files(root: &Path) -> Self {
        let first_line = |p: &str| {
            std::fs::read_to_string(root.join(p)).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
        };
        let uname = uname();
        Self {
            hostname: first_line("proc/sys/kernel/hostname")
                .or_else(|| uname.as_ref().map(|u| u.nodename.clone()).filter(|n| !n.is_empty())),
            node_name: None,
            machine_id: first_line("etc/machine-id").or_else(|| first_line("var/lib/dbus/machine-id")),
            uname,
        }
    }
}

/// `NODE_NAME`'s value, trimmed; none when unset or blank.
fn node_name(value: Option<std::ffi::OsString>) -> Option<String> {
    value.and_then(|v| v.into_string().ok()).map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
}

fn uname() -> Option<Uname> {
    // SAFETY: utsname is plain bytes; uname fills it with NUL-terminated strings.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is a valid, writable utsname.
    if unsafe { libc::uname(&mut u) } != 0 {
        return None;
    }
    let field = |f: &[libc::c_char]| {
        let bytes: Vec<u8> = f.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    Some(Uname {
        sysname: field(&u.sysname),
        nodename: field(&u.nodename),
        release: field(&u.release),
        version: field(&u.version),
        machine: field(&u.machine),
    })
}

/// `os.type` as the semantic conventions spell it.
fn os_type() -> &'static str {
    match std::env::consts::OS {
        "macos" => "darwin",
        other => other,
    }
}

/// `host.arch` as the semantic conventions spell it, from a `uname` machine.
pub fn host_arch(machine: &str) -> String {
    match machine {
        "x86_64" | "amd64" => "amd64",
        "aarch64" | "arm64" => "arm64",
        "i386" | "i486" | "i586" | "i686" | "x86" => "x86",
        "ppc64" | "ppc64le" => "ppc64",
        "ppc" => "ppc32",
        "s390x" => "s390x",
        "ia64" => "ia64",
        m if m.starts_with("arm") => "arm32",
        other => other,
    }
    .to_string()
}

/// The canonical name of `host` from the system's resolver (`/etc/hosts`, DNS, as
/// `nsswitch.conf` says), given up at `deadline`: the resolver cannot be interrupted, so it
/// runs on a thread of its own that is left behind when it takes too long.
fn canonical_name_by(host: &str, deadline: Instant) -> io::Result<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let host = host.to_string();
    std::thread::Builder::new().name("resolve-hostname".into()).spawn(move || {
        let _ = tx.send(canonical_name(&host));
    })?;
    let wait = deadline.saturating_duration_since(Instant::now());
    rx.recv_timeout(wait).map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "resolving the hostname timed out"))?
}

/// `getaddrinfo(host, AI_CANONNAME)`'s canonical name.
fn canonical_name(host: &str) -> io::Result<String> {
    let c_host = CString::new(host).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: addrinfo is plain data; all-zero is the documented "no hints" value.
    let mut hints: libc::addrinfo = unsafe { std::mem::zeroed() };
    hints.ai_flags = libc::AI_CANONNAME;
    hints.ai_family = libc::AF_UNSPEC;
    hints.ai_socktype = libc::SOCK_STREAM;
    let mut res: *mut libc::addrinfo = std::ptr::null_mut();
    // SAFETY: valid NUL-terminated host, valid hints, `res` receives a list we free below.
    let rc = unsafe { libc::getaddrinfo(c_host.as_ptr(), std::ptr::null(), &hints, &mut res) };
    if rc != 0 {
        // SAFETY: gai_strerror returns a static NUL-terminated message.
        let msg = unsafe { CStr::from_ptr(libc::gai_strerror(rc)) }.to_string_lossy().into_owned();
        return Err(io::Error::other(format!("resolving {host}: {msg}")));
    }
    // SAFETY: getaddrinfo succeeded, so `res` points to at least one entry; the canonical
    // name, when set, is a NUL-terminated string owned by the list until it is freed.
    let name = unsafe {
        let canon = (*res).ai_canonname;
        let name = (!canon.is_null()).then(|| CStr::from_ptr(canon).to_string_lossy().into_owned());
        libc::freeaddrinfo(res);
        name
    };
    name.filter(|n| !n.is_empty()).ok_or_else(|| io::Error::other(format!("{host} has no canonical name")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detector(yaml: &str) -> Result<SystemDetector, ConfigError> {
        let c: Config = crate::config::deserialize_at("s", serde_yaml::from_str(yaml).unwrap()).unwrap();
        SystemDetector::new(&c, "s")
    }

    fn facts() -> HostFacts {
        HostFacts {
            hostname: Some("web-1".into()),
            node_name: None,
            machine_id: Some("3d1219c7c4c5404aaa1f6d2a48adfda4".into()),
            uname: Some(Uname {
                sysname: "Linux".into(),
                nodename: "web-1".into(),
                release: "6.8.0".into(),
                version: "#1 SMP".into(),
                machine: "aarch64".into(),
            }),
        }
    }

    fn pairs(kvs: Vec<KeyValue>) -> Vec<(String, String)> {
        kvs.into_iter()
            .map(|kv| match kv.value.and_then(|v| v.value) {
                Some(Value::StringValue(s)) => (kv.key, s),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    fn s(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn defaults_are_the_collectors_and_dns_falls_back_to_os() {
        let d = detector("").unwrap();
        let fails = |_: &str| Err(io::Error::other("no resolver"));
        assert_eq!(pairs(d.attributes(&facts(), fails).unwrap()), s(&[("host.name", "web-1"), ("os.type", "linux")]));
        let resolves = |h: &str| Ok(format!("{h}.example.com"));
        assert_eq!(
            pairs(d.attributes(&facts(), resolves).unwrap())[0],
            ("host.name".into(), "web-1.example.com".into())
        );
        let os_first = detector("{hostname_sources: [os, dns]}").unwrap();
        assert_eq!(pairs(os_first.attributes(&facts(), resolves).unwrap())[0].1, "web-1");
    }

    #[test]
    fn attributes_are_switched_by_resource_attributes() {
        let d = detector(
            "{resource_attributes: {host.id: {enabled: true}, host.arch: {enabled: true}, \
             os.description: {enabled: true}, os.type: {enabled: false}, host.ip: {enabled: false}}}",
        )
        .unwrap();
        let fails = |_: &str| Err(io::Error::other("no resolver"));
        assert_eq!(
            pairs(d.attributes(&facts(), fails).unwrap()),
            s(&[
                ("host.name", "web-1"),
                ("host.id", "3d1219c7c4c5404aaa1f6d2a48adfda4"),
                ("host.arch", "arm64"),
                ("os.description", "Linux 6.8.0 #1 SMP"),
            ])
        );
        assert_eq!(
            detector("{resource_attributes: {host.ip: {enabled: true}}}").unwrap_err().path,
            "s.resource_attributes.host.ip"
        );
        assert_eq!(
            detector("{resource_attributes: {host.nam: {enabled: true}}}").unwrap_err().path,
            "s.resource_attributes.host.nam"
        );
        assert_eq!(detector("{hostname_sources: [os, lookup]}").unwrap_err().path, "s.hostname_sources[1]");
        assert_eq!(host_arch("x86_64"), "amd64");
        assert_eq!(host_arch("armv7l"), "arm32");
    }

    /// Under a DaemonSet (`NODE_NAME` from `spec.nodeName`) the kernel's hostname is the pod's
    /// name: the node's name is `host.name`, whatever the sources say, and `k8s.node.name`.
    #[test]
    fn node_name_is_the_host_name_and_the_k8s_node_name() {
        let in_pod =
            HostFacts { hostname: Some("otelprof-agent-x7k2q".into()), node_name: Some("node-a".into()), ..facts() };
        let resolves = |h: &str| Ok(format!("{h}.example.com"));
        let fails = |_: &str| Err(io::Error::other("no resolver"));
        let want = s(&[("host.name", "node-a"), ("k8s.node.name", "node-a"), ("os.type", "linux")]);
        for sources in ["", "{hostname_sources: [dns, os]}", "{hostname_sources: [os]}"] {
            assert_eq!(pairs(detector(sources).unwrap().attributes(&in_pod, resolves).unwrap()), want, "{sources}");
        }
        let no_k8s = detector("{resource_attributes: {k8s.node.name: {enabled: false}}}").unwrap();
        assert_eq!(
            pairs(no_k8s.attributes(&in_pod, fails).unwrap()),
            s(&[("host.name", "node-a"), ("os.type", "linux")])
        );
        // Only k8s.node.name when host.name is switched off.
        let no_host =
            detector("{resource_attributes: {host.name: {enabled: false}, os.type: {enabled: false}}}").unwrap();
        assert_eq!(pairs(no_host.attributes(&in_pod, fails).unwrap()), s(&[("k8s.node.name", "node-a")]));
        // `otelprof record` in a pod says the same.
        assert_eq!(
            pairs(SystemDetector::profile_defaults().attributes(&in_pod, fails).unwrap()),
            s(&[("host.name", "node-a"), ("k8s.node.name", "node-a"), ("os.type", "linux"), ("host.arch", "arm64")])
        );
        // Without NODE_NAME, no k8s.node.name.
        assert_eq!(
            pairs(detector("").unwrap().attributes(&facts(), fails).unwrap()),
            s(&[("host.name", "web-1"), ("os.type", "linux")])
        );
        // The variable: trimmed, and unset when blank.
        assert_eq!(node_name(Some(" node-a\n".into())).as_deref(), Some("node-a"));
        assert_eq!(node_name(Some("".into())), None);
        assert_eq!(node_name(Some("  ".into())), None);
        assert_eq!(node_name(None), None);
    }

    #[test]
    fn reads_facts_from_files_under_a_root() {
        let root = std::env::temp_dir().join(format!("otelprof-system-{}", std::process::id()));
        std::fs::create_dir_all(root.join("proc/sys/kernel")).unwrap();
        std::fs::create_dir_all(root.join("var/lib/dbus")).unwrap();
        std::fs::write(root.join("proc/sys/kernel/hostname"), "node-7\n").unwrap();
        std::fs::write(root.join("var/lib/dbus/machine-id"), "abc\n").unwrap();
        let f = HostFacts::read(&root);
        assert_eq!((f.hostname.as_deref(), f.machine_id.as_deref()), (Some("node-7"), Some("abc")));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn detects_this_host() {
        let d = SystemDetector::new(
            &serde_yaml::from_str("{hostname_sources: [os], resource_attributes: {host.arch: {enabled: true}}}")
                .unwrap(),
            "s",
        )
        .unwrap();
        let got = pairs(d.detect(Instant::now()).unwrap());
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        let node = node_name(std::env::var_os("NODE_NAME"));
        assert_eq!(got[0], ("host.name".to_string(), node.clone().unwrap_or_else(|| hostname.trim().to_string())));
        let got: Vec<_> = got.into_iter().filter(|(k, _)| k != "k8s.node.name").collect();
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        };
        assert_eq!(got[2], ("host.arch".to_string(), arch.to_string()));
        // The resolver knows localhost (from /etc/hosts).
        assert_eq!(
            canonical_name_by("localhost", Instant::now() + std::time::Duration::from_secs(5)).unwrap(),
            "localhost"
        );
    }
}
