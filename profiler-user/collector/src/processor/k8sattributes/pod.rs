//! A pod as the store keeps it: its keys (uid, IP, container ids, namespace/name) and the
//! attributes the config asks for, computed once when the pod arrives, so `consume` only
//! copies strings.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};

use super::config::Checked;

/// The Deployment that owns a pod's ReplicaSet, as found by the watch.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Deployment {
    pub name: String,
    /// Known only from the ReplicaSet's owner reference (not from its name).
    pub uid: Option<String>,
}

/// One container of a pod.
#[derive(Clone, Debug, PartialEq)]
pub struct ContainerMeta {
    pub name: String,
    /// The running instance's id first, then the previous instance's (so profiles of a
    /// container that just restarted still join); bare ids, without `containerd://`.
    pub ids: Vec<String>,
    /// Container-level attributes the config asks for (`k8s.container.name`, image name, tag).
    pub attributes: Vec<(&'static str, String)>,
}

/// A pod with what the config extracts from it.
#[derive(Clone, Debug, PartialEq)]
pub struct PodMeta {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    /// Every pod IP (`status.podIPs`: both families on a dual-stack cluster); empty for
    /// host-network pods (their IP is the node's, shared by many pods) and for pods that
    /// have finished (their IP may already be another pod's).
    pub ips: Vec<String>,
    /// Pod-level attributes, in the config's order, then labels and annotations.
    pub attributes: Vec<(String, String)>,
    pub containers: Vec<ContainerMeta>,
}

/// `containerd://abc` → `abc` (also `docker://`, `cri-o://`); the bare id the profiler reads
/// from the cgroup path.
pub fn bare_container_id(id: &str) -> Option<String> {
    let bare = id.split_once("://").map_or(id, |(_, rest)| rest).trim();
    (!bare.is_empty()).then(|| bare.to_string())
}

/// `registry:5000/team/app:1.2@sha256:…` → (`registry:5000/team/app`, `1.2`). A reference
/// without a tag or digest has the implied tag `latest`; one with only a digest has no tag.
pub fn split_image(image: &str) -> (String, Option<String>) {
    let (without_digest, digest) = match image.split_once('@') {
        Some((a, _)) => (a, true),
        None => (image, false),
    };
    let last_slash = without_digest.rfind('/').map_or(0, |i| i + 1);
    match without_digest[last_slash..].rfind(':') {
        Some(colon) => {
            let at = last_slash + colon;
            (without_digest[..at].to_string(), Some(without_digest[at + 1..].to_string()))
        }
        None => (without_digest.to_string(), (!digest).then(|| "latest".to_string())),
    }
}

/// The name of the CronJob that created a Job, from the Job's name: the CronJob controller
/// names its Jobs `<cronjob>-<scheduled time in minutes>`. A Job created by hand with such a
/// name is taken for a CronJob's too (the Collector does the same; a Job GET would need RBAC
/// on jobs).
pub fn cronjob_of_job(job: &str) -> Option<&str> {
    let (prefix, suffix) = job.rsplit_once('-')?;
    (!prefix.is_empty() && !suffix.is_empty() && suffix.bytes().all(|b| b.is_ascii_digit())).then_some(prefix)
}

/// The Deployment name from a ReplicaSet's name: `<deployment>-<pod-template-hash>`. The
/// hash is the pod's `pod-template-hash` label when it has one, else the last `-` segment.
/// Used with `deployment_name_from_replicaset: true`, and when the ReplicaSet GET fails.
pub fn deployment_from_replicaset_name(rs: &str, pod_template_hash: Option<&str>) -> Option<String> {
    if let Some(hash) = pod_template_hash.filter(|h| !h.is_empty()) {
        return rs.strip_suffix(hash).and_then(|p| p.strip_suffix('-')).filter(|p| !p.is_empty()).map(str::to_string);
    }
    let (prefix, suffix) = rs.rsplit_once('-')?;
    (!prefix.is_empty() && !suffix.is_empty() && suffix.bytes().all(|b| b.is_ascii_alphanumeric()))
        .then(|| prefix.to_string())
}

/// The prefix of the annotations that name resource attributes (semantic conventions,
/// "Specify resource attributes using Kubernetes annotations").
pub const OTEL_ANNOTATION_PREFIX: &str = "resource.opentelemetry.io/";

/// The attributes `service.name` is taken from, the first found, after the
/// `resource.opentelemetry.io/service.name` annotation and (opt-in) the well-known labels:
/// the semantic conventions' order, from the ancestor to the descendant. The last one,
/// `k8s.container.name`, is the container's and only counts where a pod has no name.
pub const SERVICE_NAME_FROM: &[&str] = &[
    "k8s.deployment.name",
    "k8s.replicaset.name",
    "k8s.statefulset.name",
    "k8s.daemonset.name",
    "k8s.cronjob.name",
    "k8s.job.name",
    "k8s.pod.name",
];

/// `service.version` from a container's image, as the semantic conventions compute it:
/// `<tag>@<digest>`, else `<digest>`, else `<tag>`. The digest is the image reference's, else
/// the one the runtime resolved (`imageID`, `…@sha256:…`); no tag is implied.
pub fn version_of_image(image: &str, image_id: &str) -> Option<String> {
    let digest_of = |r: &str| r.split_once('@').map(|(_, d)| d.to_string()).filter(|d| !d.is_empty());
    let without_digest = image.split_once('@').map_or(image, |(a, _)| a);
    let last_slash = without_digest.rfind('/').map_or(0, |i| i + 1);
    let tag = without_digest[last_slash..].rsplit_once(':').map(|(_, t)| t.to_string()).filter(|t| !t.is_empty());
    match (tag, digest_of(image).or_else(|| digest_of(image_id))) {
        (Some(t), Some(d)) => Some(format!("{t}@{d}")),
        (None, Some(d)) => Some(d),
        (t, None) => t,
    }
}

/// The controller owner of the pod of `kind`: (name, uid).
pub fn controller_owner<'a>(pod: &'a Pod, kind: &str) -> Option<(&'a str, &'a str)> {
    pod.metadata
        .owner_references
        .as_deref()?
        .iter()
        .find(|o| o.controller == Some(true) && o.kind == kind)
        .map(|o| (o.name.as_str(), o.uid.as_str()))
}

/// The pod's keys and attributes; `None` for a pod without a uid (not a real API object).
/// `deployment` is what the watch found for the pod's ReplicaSet owner.
pub fn pod_meta(pod: &Pod, config: &Checked, deployment: Option<&Deployment>) -> Option<PodMeta> {
    let md = &pod.metadata;
    let uid = md.uid.clone().filter(|u| !u.is_empty())?;
    let namespace = md.namespace.clone().unwrap_or_default();
    let name = md.name.clone().unwrap_or_default();
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
    let finished = matches!(status.and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"));
    let pod_ip = status.and_then(|s| s.pod_ip.clone()).filter(|ip| !ip.is_empty());
    let mut ips: Vec<String> = Vec::new();
    if !host_network && !finished {
        let listed = status.and_then(|s| s.pod_ips.as_ref()).into_iter().flatten().map(|p| p.ip.clone());
        for ip in pod_ip.clone().into_iter().chain(listed) {
            if !ip.is_empty() && !ips.contains(&ip) {
                ips.push(ip);
            }
        }
    }

    let mut found: BTreeMap<&'static str, String> = BTreeMap::new();
    found.insert("k8s.namespace.name", namespace.clone());
    found.insert("k8s.pod.name", name.clone());
    found.insert("k8s.pod.uid", uid.clone());
    if let Some(ip) = pod_ip {
        found.insert("k8s.pod.ip", ip);
    }
    if let Some(h) = spec.and_then(|s| s.hostname.clone()).filter(|h| !h.is_empty()) {
        found.insert("k8s.pod.hostname", h);
    }
    if let Some(t) = status.and_then(|s| s.start_time.as_ref()).or(md.creation_timestamp.as_ref()) {
        found.insert("k8s.pod.start_time", t.0.to_string());
    }
    if let Some(n) = spec.and_then(|s| s.node_name.clone()).filter(|n| !n.is_empty()) {
        found.insert("k8s.node.name", n);
    }
    if let Some((rs, rs_uid)) = controller_owner(pod, "ReplicaSet") {
        found.insert("k8s.replicaset.name", rs.to_string());
        found.insert("k8s.replicaset.uid", rs_uid.to_string());
        if let Some(d) = deployment {
            found.insert("k8s.deployment.name", d.name.clone());
            if let Some(u) = &d.uid {
                found.insert("k8s.deployment.uid", u.clone());
            }
        }
    }
    for (kind, name_key, uid_key) in [
        ("StatefulSet", "k8s.statefulset.name", "k8s.statefulset.uid"),
        ("DaemonSet", "k8s.daemonset.name", "k8s.daemonset.uid"),
        ("Job", "k8s.job.name", "k8s.job.uid"),
    ] {
        if let Some((n, u)) = controller_owner(pod, kind) {
            found.insert(name_key, n.to_string());
            found.insert(uid_key, u.to_string());
        }
    }
    if let Some(cj) = controller_owner(pod, "Job").and_then(|(job, _)| cronjob_of_job(job)) {
        found.insert("k8s.cronjob.name", cj.to_string());
    }

    let empty = BTreeMap::new();
    let labels = md.labels.as_ref().unwrap_or(&empty);
    let annotations = md.annotations.as_ref().unwrap_or(&empty);
    service_attributes(&mut found, config, labels, annotations);

    // The pod's own `resource.opentelemetry.io/` annotations first: they say what the
    // application's owner wants, so they win over what is derived (attributes are added,
    // never overwritten, in this order).
    let mut attributes: Vec<(String, String)> = Vec::new();
    if config.otel_annotations {
        for (k, v) in annotations {
            if let Some(attr) = k.strip_prefix(OTEL_ANNOTATION_PREFIX).filter(|a| !a.is_empty()) {
                attributes.push((attr.to_string(), v.clone()));
            }
        }
    }
    attributes.extend(config.metadata.iter().filter_map(|m| found.get(m.as_str()).map(|v| (m.clone(), v.clone()))));
    for (rules, map) in [(&config.labels, labels), (&config.annotations, annotations)] {
        for r in rules {
            if let Some(v) = map.get(&r.key) {
                attributes.push((r.tag_name.clone(), v.clone()));
            }
        }
    }

    let mut containers = Vec::new();
    if let Some(s) = status {
        let all = s
            .init_container_statuses
            .iter()
            .flatten()
            .chain(s.container_statuses.iter().flatten())
            .chain(s.ephemeral_container_statuses.iter().flatten());
        for c in all {
            containers.push(container_meta(c, config, &namespace, &name));
        }
    }
    Some(PodMeta { uid, namespace, name, ips, attributes, containers })
}

/// The pod-level `service.*` attributes the config asks for, by the semantic conventions'
/// rules ("Service attributes" for Kubernetes): the `resource.opentelemetry.io/` annotation,
/// then the well-known labels when opted in, then a function of the pod's attributes.
/// `service.version` and `service.instance.id` otherwise come from the container
/// ([`container_meta`]).
fn service_attributes(
    found: &mut BTreeMap<&'static str, String>,
    config: &Checked,
    labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
) {
    let annotation =
        |attr: &str| annotations.get(&format!("{OTEL_ANNOTATION_PREFIX}{attr}")).filter(|v| !v.is_empty()).cloned();
    let label =
        |key: &str| config.well_known_labels.then(|| labels.get(key).filter(|v| !v.is_empty()).cloned()).flatten();
    if config.wants("service.name") {
        let derived = || SERVICE_NAME_FROM.iter().find_map(|k| found.get(k).filter(|v| !v.is_empty()).cloned());
        let name = annotation("service.name")
            .or_else(|| label("app.kubernetes.io/instance"))
            .or_else(|| label("app.kubernetes.io/name"))
            .or_else(derived);
        if let Some(n) = name {
            found.insert("service.name", n);
        }
    }
    if config.wants("service.namespace") {
        let ns = annotation("service.namespace").or_else(|| found.get("k8s.namespace.name").cloned());
        if let Some(ns) = ns.filter(|n| !n.is_empty()) {
            found.insert("service.namespace", ns);
        }
    }
    if config.wants("service.version") {
        if let Some(v) = annotation("service.version").or_else(|| label("app.kubernetes.io/version")) {
            found.insert("service.version", v);
        }
    }
    if config.wants("service.instance.id") {
        if let Some(v) = annotation("service.instance.id") {
            found.insert("service.instance.id", v);
        }
    }
}

fn container_meta(c: &ContainerStatus, config: &Checked, namespace: &str, pod: &str) -> ContainerMeta {
    let mut ids: Vec<String> = c.container_id.as_deref().and_then(bare_container_id).into_iter().collect();
    if let Some(prev) = c
        .last_state
        .as_ref()
        .and_then(|l| l.terminated.as_ref())
        .and_then(|t| t.container_id.as_deref())
        .and_then(bare_container_id)
    {
        if !ids.contains(&prev) {
            ids.push(prev);
        }
    }
    let mut attributes = Vec::new();
    if config.wants("k8s.container.name") {
        attributes.push(("k8s.container.name", c.name.clone()));
    }
    // The image the container runs, as the status reports it.
    let (image_name, image_tag) = split_image(&c.image);
    if config.wants("container.image.name") && !image_name.is_empty() {
        attributes.push(("container.image.name", image_name));
    }
    if let Some(tag) = image_tag.filter(|_| config.wants("container.image.tag")) {
        attributes.push(("container.image.tag", tag));
    }
    // After the pod's own (an annotation's) `service.*`, which win: see [`service_attributes`].
    if config.wants("service.version") {
        if let Some(v) = version_of_image(&c.image, &c.image_id) {
            attributes.push(("service.version", v));
        }
    }
    if config.wants("service.instance.id") {
        attributes.push(("service.instance.id", format!("{namespace}.{pod}.{}", c.name)));
    }
    if config.wants("service.name") {
        attributes.push(("service.name", c.name.clone()));
    }
    ContainerMeta { name: c.name.clone(), ids, attributes }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids_images_and_owner_names() {
        assert_eq!(bare_container_id("containerd://0123abc").as_deref(), Some("0123abc"));
        assert_eq!(bare_container_id("cri-o://ff").as_deref(), Some("ff"));
        assert_eq!(bare_container_id("containerd://"), None);
        assert_eq!(split_image("nginx"), ("nginx".into(), Some("latest".into())));
        assert_eq!(split_image("registry:5000/team/app:1.2"), ("registry:5000/team/app".into(), Some("1.2".into())));
        assert_eq!(split_image("ghcr.io/a/b:0.1@sha256:ff"), ("ghcr.io/a/b".into(), Some("0.1".into())));
        assert_eq!(split_image("ghcr.io/a/b@sha256:ff"), ("ghcr.io/a/b".into(), None));
        assert_eq!(cronjob_of_job("backup-29412345"), Some("backup"));
        assert_eq!(cronjob_of_job("migrate"), None);
        assert_eq!(cronjob_of_job("db-migrate-v2"), None);
        assert_eq!(deployment_from_replicaset_name("web-7d9f8c6b5", Some("7d9f8c6b5")).as_deref(), Some("web"));
        assert_eq!(deployment_from_replicaset_name("web-7d9f8c6b5", Some("other")), None);
        assert_eq!(deployment_from_replicaset_name("my-web-7d9f8c6b5", None).as_deref(), Some("my-web"));
    }

    #[test]
    fn service_version_from_the_image() {
        let d = "sha256:4f2a";
        assert_eq!(version_of_image("registry:5000/app:1.2", "").as_deref(), Some("1.2"));
        assert_eq!(version_of_image("app:1.2@sha256:4f2a", "").as_deref(), Some("1.2@sha256:4f2a"));
        assert_eq!(
            version_of_image("app:1.2", &format!("docker.io/library/app@{d}")).as_deref(),
            Some("1.2@sha256:4f2a")
        );
        assert_eq!(version_of_image("app@sha256:4f2a", "").as_deref(), Some(d));
        assert_eq!(version_of_image("registry:5000/app", ""), None, "no tag is implied, a port is not one");
    }
}
