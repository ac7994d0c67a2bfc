//! The processor's config in the Collector's k8sattributes shape, and its check.
//!
//! Every key of the Collector's config is either implemented, or refused with a message that
//! says so: a user moving from the Collector never has a key silently ignored.

use std::time::Duration;

use serde::Deserialize;

use crate::config::{deserialize_at, ConfigError};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Config {
    #[serde(default)]
    auth_type: Option<String>,
    /// `auth_type: kubeConfig`: the kubeconfig file (default: `$KUBECONFIG`, else `~/.kube/config`).
    #[serde(default)]
    kube_config_path: Option<String>,
    /// `auth_type: kubeConfig`: the kubeconfig context (default: its current context).
    #[serde(default)]
    context: Option<String>,
    /// otelprof's own: a plain `http://` API server URL without credentials, for tests and
    /// `kubectl proxy`. Only with `auth_type: kubeConfig`.
    #[serde(default)]
    endpoint: Option<String>,
    #[serde(default)]
    passthrough: bool,
    #[serde(default)]
    wait_for_metadata: bool,
    #[serde(default, with = "humantime_serde")]
    wait_for_metadata_timeout: Option<Duration>,
    #[serde(default)]
    filter: Filter,
    #[serde(default)]
    extract: Extract,
    #[serde(default)]
    pod_association: Option<Vec<Association>>,
    #[serde(default)]
    exclude: Option<Exclude>,
    /// otelprof's own: the most pods kept (one node's pods; the kubelet's default limit is
    /// 110). Past it the oldest pod is evicted and counted.
    #[serde(default = "default_max_pods")]
    max_pods: usize,
}

fn default_max_pods() -> usize {
    1024
}

/// `exclude`: pods whose records get no metadata, by name.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Exclude {
    #[serde(default)]
    pods: Vec<ExcludePod>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExcludePod {
    /// A regular expression found anywhere in the pod's name (unanchored, as the Collector's).
    name: String,
}

/// The Collector's default `wait_for_metadata_timeout`.
const DEFAULT_WAIT_FOR_METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// The Collector's default `exclude.pods`, also when the list is given empty.
const DEFAULT_EXCLUDED_PODS: [&str; 2] = ["jaeger-agent", "jaeger-collector"];

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Filter {
    #[serde(default)]
    node: Option<String>,
    #[serde(default)]
    node_from_env_var: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    fields: Vec<SelectorConfig>,
    #[serde(default)]
    labels: Vec<SelectorConfig>,
}

/// One `filter.fields` / `filter.labels` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SelectorConfig {
    key: String,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    op: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Extract {
    #[serde(default)]
    metadata: Option<Vec<String>>,
    #[serde(default)]
    labels: Vec<FieldExtract>,
    #[serde(default)]
    annotations: Vec<FieldExtract>,
    #[serde(default)]
    otel_annotations: bool,
    #[serde(default)]
    deployment_name_from_replicaset: bool,
    /// otelprof's own: the semantic conventions' opt-in for well-known labels
    /// (`app.kubernetes.io/instance`, `…/name`, `…/version`) in `service.*`.
    #[serde(default)]
    well_known_labels: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FieldExtract {
    #[serde(default)]
    tag_name: Option<String>,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    key_regex: Option<String>,
    #[serde(default)]
    from: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Association {
    sources: Vec<SourceConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceConfig {
    from: String,
    #[serde(default)]
    name: Option<String>,
}

/// How the processor reaches the API server.
#[derive(Clone, Debug, PartialEq)]
pub enum Auth {
    /// In-cluster: `KUBERNETES_SERVICE_HOST/PORT` and the service account's token and CA.
    ServiceAccount,
    /// A kubeconfig file (`None`: `$KUBECONFIG` or `~/.kube/config`) and context.
    KubeConfig { path: Option<String>, context: Option<String> },
    /// A plain URL without credentials (tests, `kubectl proxy`).
    Endpoint(String),
}

/// The resource attributes an association source can name, each a key into the pod store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceKey {
    PodUid,
    PodIp,
    ContainerId,
    PodName,
    Namespace,
}

impl SourceKey {
    pub const ALL: [(&'static str, SourceKey); 5] = [
        ("k8s.pod.uid", SourceKey::PodUid),
        ("k8s.pod.ip", SourceKey::PodIp),
        ("container.id", SourceKey::ContainerId),
        ("k8s.pod.name", SourceKey::PodName),
        ("k8s.namespace.name", SourceKey::Namespace),
    ];

    pub fn attribute(self) -> &'static str {
        Self::ALL.iter().find(|(_, k)| *k == self).map_or("", |(n, _)| n)
    }
}

/// Where an association rule's source takes its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// `from: resource_attribute`: the resource's attribute, looked up by that key.
    Attribute(SourceKey),
    /// `from: connection`: the sender's IP (the current [`crate::client`]), looked up as a
    /// pod IP.
    Connection,
}

impl Source {
    /// The store key the source's value is looked up by.
    pub fn key(self) -> SourceKey {
        match self {
            Source::Attribute(k) => k,
            Source::Connection => SourceKey::PodIp,
        }
    }
}

/// `filter.node` or `filter.node_from_env_var`. The variable is read when the watch starts,
/// not when the config is checked, so `otelprof validate` of a DaemonSet's config passes
/// where the variable is not set.
#[derive(Clone, Debug, PartialEq)]
pub enum NodeFilter {
    Name(String),
    EnvVar(String),
}

impl NodeFilter {
    /// The node name; `env` reads an environment variable (tests pass their own).
    pub fn resolve(&self, env: impl Fn(&str) -> Option<String>) -> Result<String, String> {
        match self {
            NodeFilter::Name(n) => Ok(n.clone()),
            NodeFilter::EnvVar(var) => env(var).map(|v| v.trim().to_string()).filter(|v| !v.is_empty()).ok_or_else(|| {
                format!(
                    "filter.node_from_env_var: the environment variable `{var}` is not set or empty (set it from `spec.nodeName` with the downward API)"
                )
            }),
        }
    }
}

/// A label or annotation of the pod copied to an attribute.
#[derive(Clone, Debug, PartialEq)]
pub struct TagRule {
    pub tag_name: String,
    pub key: String,
}

/// The metadata attributes this processor can add, in the Collector's names.
pub const METADATA: &[&str] = &[
    "k8s.namespace.name",
    "k8s.pod.name",
    "k8s.pod.uid",
    "k8s.pod.ip",
    "k8s.pod.hostname",
    "k8s.pod.start_time",
    "k8s.node.name",
    "k8s.replicaset.name",
    "k8s.replicaset.uid",
    "k8s.deployment.name",
    "k8s.deployment.uid",
    "k8s.statefulset.name",
    "k8s.statefulset.uid",
    "k8s.daemonset.name",
    "k8s.daemonset.uid",
    "k8s.job.name",
    "k8s.job.uid",
    "k8s.cronjob.name",
    "k8s.container.name",
    "container.id",
    "container.image.name",
    "container.image.tag",
    "service.name",
    "service.namespace",
    "service.version",
    "service.instance.id",
];

/// Metadata of the Collector's list that otelprof does not extract, and why.
const NOT_SUPPORTED: &[(&str, &str)] = &[
    ("k8s.cronjob.uid", "needs a Job GET (RBAC on jobs); only k8s.cronjob.name, from the Job's name, is supported"),
    ("k8s.cluster.uid", "needs a namespace GET of kube-system; not supported yet"),
    ("k8s.node.uid", "needs a node GET; not supported yet"),
    ("container.image.repo_digests", "not supported yet"),
];

/// The Collector's default `extract.metadata`.
const DEFAULT_METADATA: &[&str] = &[
    "k8s.namespace.name",
    "k8s.pod.name",
    "k8s.pod.uid",
    "k8s.pod.start_time",
    "k8s.deployment.name",
    "k8s.node.name",
];

/// The config, checked.
#[derive(Clone, Debug)]
pub struct Checked {
    pub auth: Auth,
    /// The node whose pods are watched (`spec.nodeName=`), when filtered.
    pub node: Option<NodeFilter>,
    pub namespace: Option<String>,
    /// `filter.fields` as a field selector (`a=b,c!=d`), joined to the node's by the watch.
    pub field_selector: Option<String>,
    /// `filter.labels` as a label selector (`a=b,c!=d,e,!f`).
    pub label_selector: Option<String>,
    pub metadata: Vec<String>,
    pub labels: Vec<TagRule>,
    pub annotations: Vec<TagRule>,
    /// Derive `k8s.deployment.name` from the ReplicaSet's name, without a ReplicaSet GET.
    pub deployment_name_from_replicaset: bool,
    /// Every `resource.opentelemetry.io/<attribute>` annotation becomes `<attribute>`.
    pub otel_annotations: bool,
    /// Well-known labels count in `service.*` (opt-in, as the semantic conventions ask).
    pub well_known_labels: bool,
    /// Rules in order; each a list of sources that must all match.
    pub associations: Vec<Vec<Source>>,
    /// Only `k8s.pod.ip` from the connection; no pod is watched (an agent in front of a
    /// gateway that adds the rest, as in the Collector).
    pub passthrough: bool,
    pub max_pods: usize,
    /// `exclude.pods[].name`: pods whose name one of these finds are not kept (not listed
    /// in the store, so nothing is associated with them).
    pub exclude: Vec<regex::Regex>,
    /// `wait_for_metadata`: the processor's start waits this long for the first pod list and
    /// fails the start without it.
    pub wait_for_metadata: Option<Duration>,
}

impl Checked {
    /// Whether a pod of this name is excluded.
    pub fn excludes(&self, pod_name: &str) -> bool {
        self.exclude.iter().any(|r| r.is_match(pod_name))
    }

    pub fn wants(&self, attribute: &str) -> bool {
        self.metadata.iter().any(|m| m == attribute)
    }
}

fn refuse(path: String, message: impl Into<String>) -> ConfigError {
    ConfigError::new(path, message.into())
}

/// Parses and checks the config at `path`.
pub(super) fn check(value: serde_yaml::Value, path: &str) -> Result<Checked, ConfigError> {
    let c: Config = deserialize_at(path, value)?;
    let auth = match c.auth_type.as_deref().unwrap_or("serviceAccount") {
        "serviceAccount" => {
            for (key, v) in [("kube_config_path", &c.kube_config_path), ("context", &c.context), ("endpoint", &c.endpoint)] {
                if v.is_some() {
                    return Err(refuse(format!("{path}.{key}"), "only with `auth_type: kubeConfig`"));
                }
            }
            Auth::ServiceAccount
        }
        "kubeConfig" => match c.endpoint {
            Some(e) => {
                if c.kube_config_path.is_some() || c.context.is_some() {
                    return Err(refuse(
                        format!("{path}.endpoint"),
                        "`endpoint` replaces the kubeconfig: not with `kube_config_path` or `context`",
                    ));
                }
                if !e.starts_with("http://") && !e.starts_with("https://") {
                    return Err(refuse(format!("{path}.endpoint"), format!("`{e}` is not an http:// or https:// URL")));
                }
                Auth::Endpoint(e)
            }
            None => Auth::KubeConfig { path: c.kube_config_path, context: c.context },
        },
        "none" => {
            return Err(refuse(
                format!("{path}.auth_type"),
                "`none` is not supported; use `serviceAccount`, or `kubeConfig` (with `endpoint` for an API server without authentication)",
            ))
        }
        other => {
            return Err(refuse(
                format!("{path}.auth_type"),
                format!("`{other}` is not an auth type; use `serviceAccount` or `kubeConfig`"),
            ))
        }
    };
    let wait_for_metadata = match (c.wait_for_metadata, c.wait_for_metadata_timeout) {
        (true, Some(t)) if t.is_zero() => {
            return Err(refuse(format!("{path}.wait_for_metadata_timeout"), "must be more than 0"))
        }
        (true, t) => Some(t.unwrap_or(DEFAULT_WAIT_FOR_METADATA_TIMEOUT)),
        (false, _) => None,
    };
    let given = c.exclude.as_ref().map(|e| e.pods.as_slice()).unwrap_or_default();
    let names: Vec<(String, &str)> = if given.is_empty() {
        DEFAULT_EXCLUDED_PODS.iter().map(|n| (format!("{path}.exclude"), *n)).collect()
    } else {
        given.iter().enumerate().map(|(i, p)| (format!("{path}.exclude.pods[{i}].name"), p.name.as_str())).collect()
    };
    let mut exclude = Vec::with_capacity(names.len());
    for (at, name) in names {
        exclude.push(regex::Regex::new(name).map_err(|e| refuse(at, format!("not a regular expression: {e}")))?);
    }
    if c.max_pods == 0 {
        return Err(refuse(format!("{path}.max_pods"), "must be at least 1"));
    }

    let f = &c.filter;
    let field_selector = selector(&f.fields, &format!("{path}.filter.fields"), false)?;
    let label_selector = selector(&f.labels, &format!("{path}.filter.labels"), true)?;
    let node = match (&f.node, &f.node_from_env_var) {
        (Some(_), Some(_)) => {
            return Err(refuse(format!("{path}.filter.node"), "give `node` or `node_from_env_var`, not both"))
        }
        (Some(n), None) => Some(NodeFilter::Name(n.clone())),
        (None, Some(var)) if var.is_empty() => {
            return Err(refuse(format!("{path}.filter.node_from_env_var"), "empty: name the environment variable"))
        }
        (None, Some(var)) => Some(NodeFilter::EnvVar(var.clone())),
        (None, None) => None,
    };

    let e = &c.extract;
    let metadata: Vec<String> = match &e.metadata {
        None => DEFAULT_METADATA.iter().map(|s| s.to_string()).collect(),
        Some(list) => {
            for (i, m) in list.iter().enumerate() {
                if let Some((_, why)) = NOT_SUPPORTED.iter().find(|(n, _)| n == m) {
                    return Err(refuse(format!("{path}.extract.metadata[{i}]"), format!("`{m}`: {why}")));
                }
                if !METADATA.contains(&m.as_str()) {
                    return Err(refuse(
                        format!("{path}.extract.metadata[{i}]"),
                        format!("`{m}` is not a metadata attribute; known: {}", METADATA.join(", ")),
                    ));
                }
            }
            list.clone()
        }
    };
    let labels = tag_rules(&e.labels, &format!("{path}.extract.labels"), "k8s.pod.labels")?;
    let annotations = tag_rules(&e.annotations, &format!("{path}.extract.annotations"), "k8s.pod.annotations")?;

    let associations = match &c.pod_association {
        // The Collector's default is the sender's IP alone; the resource's own keys come
        // first here, for the profiler's data (`container.id`, no connection) and SDKs with
        // the k8s resource detector. In passthrough only the connection is of use.
        None if c.passthrough => vec![vec![Source::Connection]],
        None => vec![
            vec![Source::Attribute(SourceKey::PodUid)],
            vec![Source::Attribute(SourceKey::PodIp)],
            vec![Source::Attribute(SourceKey::ContainerId)],
            vec![Source::Connection],
        ],
        Some(rules) => {
            let mut out = Vec::new();
            for (i, rule) in rules.iter().enumerate() {
                let at = format!("{path}.pod_association[{i}].sources");
                if rule.sources.is_empty() || rule.sources.len() > 4 {
                    return Err(refuse(at, "between 1 and 4 sources"));
                }
                let mut keys = Vec::new();
                for (j, s) in rule.sources.iter().enumerate() {
                    let at = format!("{at}[{j}]");
                    match s.from.as_str() {
                        "resource_attribute" => {}
                        "connection" => {
                            if s.name.is_some() {
                                return Err(refuse(format!("{at}.name"), "not with `from: connection`"));
                            }
                            keys.push(Source::Connection);
                            continue;
                        }
                        other => {
                            return Err(refuse(
                                format!("{at}.from"),
                                format!("`{other}` is not a source; use `resource_attribute` or `connection`"),
                            ))
                        }
                    }
                    let Some(name) = &s.name else {
                        return Err(refuse(format!("{at}.name"), "required with `from: resource_attribute`"));
                    };
                    let Some((_, key)) = SourceKey::ALL.iter().find(|(n, _)| n == name) else {
                        return Err(refuse(
                            format!("{at}.name"),
                            format!(
                                "association by `{name}` is not supported; by {}",
                                SourceKey::ALL.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
                            ),
                        ));
                    };
                    keys.push(Source::Attribute(*key));
                }
                let has = |k: SourceKey| keys.iter().any(|s| s.key() == k);
                let indexed = has(SourceKey::PodUid)
                    || has(SourceKey::PodIp)
                    || has(SourceKey::ContainerId)
                    || (has(SourceKey::PodName) && has(SourceKey::Namespace));
                if !indexed {
                    return Err(refuse(
                        at,
                        "a rule needs k8s.pod.uid, k8s.pod.ip or container.id, or both k8s.pod.name and k8s.namespace.name",
                    ));
                }
                out.push(keys);
            }
            out
        }
    };

    Ok(Checked {
        auth,
        node,
        namespace: f.namespace.clone(),
        field_selector,
        label_selector,
        metadata,
        labels,
        annotations,
        deployment_name_from_replicaset: e.deployment_name_from_replicaset,
        otel_annotations: e.otel_annotations,
        well_known_labels: e.well_known_labels,
        associations,
        passthrough: c.passthrough,
        max_pods: c.max_pods,
        exclude,
        wait_for_metadata,
    })
}

/// `filter.fields` / `filter.labels` as the API's selector text, the Collector's operators:
/// `equals` (the default) and `not-equals` for both, `exists` and `does-not-exist` for labels.
/// The API server applies it, so pods that do not match are never sent.
fn selector(entries: &[SelectorConfig], path: &str, labels: bool) -> Result<Option<String>, ConfigError> {
    let mut parts = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let at = format!("{path}[{i}]");
        // Keys and values go into a query parameter the server parses: no separators in them.
        let clean = |v: &str| !v.is_empty() && !v.contains([',', '=', '!', ' ']);
        if !clean(&e.key) {
            return Err(refuse(format!("{at}.key"), format!("`{}` is not a selector key", e.key)));
        }
        let value = |op: &str| match &e.value {
            Some(v) if clean(v) => Ok(v.clone()),
            Some(v) => Err(refuse(format!("{at}.value"), format!("`{v}` cannot be matched by a selector"))),
            None => Err(refuse(format!("{at}.value"), format!("required with `op: {op}`"))),
        };
        let part = match e.op.as_deref().unwrap_or("equals") {
            "equals" => format!("{}={}", e.key, value("equals")?),
            "not-equals" => format!("{}!={}", e.key, value("not-equals")?),
            op @ ("exists" | "does-not-exist") if labels => {
                if e.value.is_some() {
                    return Err(refuse(format!("{at}.value"), format!("not with `op: {op}`")));
                }
                if op == "exists" {
                    e.key.clone()
                } else {
                    format!("!{}", e.key)
                }
            }
            other => {
                let ops = if labels { "equals, not-equals, exists, does-not-exist" } else { "equals, not-equals" };
                return Err(refuse(format!("{at}.op"), format!("`{other}` is not an operator here; use {ops}")));
            }
        };
        parts.push(part);
    }
    Ok((!parts.is_empty()).then(|| parts.join(",")))
}

/// `labels` / `annotations`: `key` from the pod, `tag_name` defaulting to
/// `<default_prefix>.<key>` as in the Collector.
fn tag_rules(rules: &[FieldExtract], path: &str, default_prefix: &str) -> Result<Vec<TagRule>, ConfigError> {
    let mut out = Vec::new();
    for (i, r) in rules.iter().enumerate() {
        let at = format!("{path}[{i}]");
        match r.from.as_deref().unwrap_or("pod") {
            "pod" => {}
            other => {
                return Err(refuse(
                    format!("{at}.from"),
                    format!("`{other}` is not supported yet: only `pod` (the watch lists pods only)"),
                ))
            }
        }
        if r.key_regex.is_some() {
            return Err(refuse(format!("{at}.key_regex"), "not supported yet; name the `key`"));
        }
        let Some(key) = r.key.clone().filter(|k| !k.is_empty()) else {
            return Err(refuse(format!("{at}.key"), "required"));
        };
        let tag_name =
            r.tag_name.clone().filter(|t| !t.is_empty()).unwrap_or_else(|| format!("{default_prefix}.{key}"));
        out.push(TagRule { tag_name, key });
    }
    Ok(out)
}
