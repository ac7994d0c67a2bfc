//! A remote config from the OpAMP server, checked against the local policy and merged over
//! the local config file, before anything of it is built.
//!
//! - The remote config is the config map entry [`CONFIG_FILE`], in the local file's YAML
//!   schema. It is deep-merged over the local config: maps merge key by key, lists and
//!   scalars replace ([`merge`]).
//! - Every key it sets must be covered by `allowed_paths` (dotted paths, `*` matches one
//!   segment, an entry covers everything below it); one key outside refuses the whole config,
//!   naming the key. [`NEVER_REMOTE`] keys are refused even when an entry covers them.
//! - Nothing in a config runs a program; file paths it sets (keys named `path`, `dir`,
//!   `directory` or ending in `_file`, `_dir`, `_path`) must lie under `files_dir`; environment
//!   references (`${env:…}`) are refused, so a server cannot read the agent's environment.
//! - With `signature.public_key_file` set, [`SIGNATURE_FILE`] must hold a detached Ed25519
//!   signature over the config's bytes (64 raw bytes, or their base64) that the key verifies.

use std::{
    collections::BTreeMap,
    path::{Component, Path, PathBuf},
};

use base64::Engine;
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use serde_yaml::{Mapping, Value};

use crate::config::{key_text, merge};

/// The config map entry that holds the remote config.
pub const CONFIG_FILE: &str = "otelprof.yaml";
/// The config map entry that holds its detached signature.
pub const SIGNATURE_FILE: &str = "otelprof.yaml.sig";
/// Keys a remote config may never set: the OpAMP connection itself and the agent's own
/// telemetry (how it is observed and reached).
pub const NEVER_REMOTE: [&str; 3] = ["extensions", "service.extensions", "service.telemetry"];

/// Why a remote config was refused: the message reported in `RemoteConfigStatus.error_message`.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{0}")]
pub struct Refused(pub String);

/// The local side of remote configuration.
pub struct Policy {
    pub allowed_paths: Vec<String>,
    pub files_dir: PathBuf,
    pub public_key: Option<VerifyingKey>,
}

/// Reads an Ed25519 public key: PEM (`-----BEGIN PUBLIC KEY-----`, SubjectPublicKeyInfo) or
/// the raw 32 bytes.
pub fn read_public_key(path: &Path) -> Result<VerifyingKey, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let raw: Vec<u8> = if bytes.len() == 32 {
        bytes
    } else {
        let text = String::from_utf8_lossy(&bytes);
        let body: String = text.lines().filter(|l| !l.starts_with("-----")).flat_map(|l| l.trim().chars()).collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(body)
            .map_err(|e| format!("{}: neither 32 raw bytes nor a PEM public key ({e})", path.display()))?;
        // SubjectPublicKeyInfo for Ed25519 (RFC 8410): a fixed 12-byte prefix, then the key.
        const SPKI: [u8; 12] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];
        match der.strip_prefix(&SPKI[..]) {
            Some(k) if k.len() == 32 => k.to_vec(),
            _ => return Err(format!("{}: not an Ed25519 public key (RFC 8410)", path.display())),
        }
    };
    let key: [u8; 32] = raw.try_into().map_err(|_| format!("{}: not 32 bytes", path.display()))?;
    VerifyingKey::from_bytes(&key).map_err(|e| format!("{}: not an Ed25519 public key: {e}", path.display()))
}

impl Policy {
    /// Checks a config map (file name → body) and returns the remote config's YAML, ready to
    /// be merged.
    pub fn check(&self, files: &BTreeMap<String, Vec<u8>>) -> Result<Value, Refused> {
        let body = files.get(CONFIG_FILE).ok_or_else(|| {
            let names: Vec<&str> = files.keys().map(String::as_str).collect();
            Refused(format!("the config map has no `{CONFIG_FILE}` (it has: {})", names.join(", ")))
        })?;
        if let Some(key) = &self.public_key {
            let sig = files
                .get(SIGNATURE_FILE)
                .ok_or_else(|| Refused(format!("signature required: the config map has no `{SIGNATURE_FILE}`")))?;
            let sig = decode_signature(sig).ok_or_else(|| {
                Refused(format!("signature does not verify: `{SIGNATURE_FILE}` is not 64 bytes or their base64"))
            })?;
            key.verify(body, &sig).map_err(|_| Refused(format!("signature does not verify over `{CONFIG_FILE}`")))?;
        }
        let text = std::str::from_utf8(body).map_err(|e| Refused(format!("{CONFIG_FILE}: not UTF-8 ({e})")))?;
        let mut value: Value = serde_yaml::from_str(text).map_err(|e| Refused(format!("{CONFIG_FILE}: {e}")))?;
        value.apply_merge().map_err(|e| Refused(format!("{CONFIG_FILE}: merging `<<` keys: {e}")))?;
        if !matches!(value, Value::Mapping(_) | Value::Null) {
            return Err(Refused(format!("{CONFIG_FILE}: a config is a mapping (receivers, processors, …)")));
        }
        let mut leaves = Vec::new();
        leaf_paths(&value, String::new(), &mut leaves);
        for (path, leaf) in &leaves {
            if let Some(never) = NEVER_REMOTE.iter().find(|n| covers(n, path)) {
                return Err(Refused(format!("{path}: `{never}` is never changed remotely")));
            }
            if !self.allowed_paths.iter().any(|a| covers(a, path)) {
                return Err(Refused(format!(
                    "{path}: not in remote_config.allowed_paths ({})",
                    self.allowed_paths.join(", ")
                )));
            }
            self.check_leaf(path, leaf)?;
        }
        Ok(value)
    }

    fn check_leaf(&self, path: &str, leaf: &Value) -> Result<(), Refused> {
        let mut strings = Vec::new();
        strings_in(leaf, &mut strings);
        if strings.iter().any(|s| s.contains("${")) {
            return Err(Refused(format!(
                "{path}: environment references (`${{…}}`) are not allowed in a remote config"
            )));
        }
        let key = path.rsplit('.').next().unwrap_or(path);
        let is_path = matches!(key, "path" | "dir" | "directory")
            || key.ends_with("_file")
            || key.ends_with("_dir")
            || key.ends_with("_path");
        if is_path {
            for s in strings {
                if !lies_under(Path::new(s), &self.files_dir) {
                    return Err(Refused(format!(
                        "{path}: `{s}` is not under remote_config.files_dir ({})",
                        self.files_dir.display()
                    )));
                }
            }
        }
        Ok(())
    }
}

fn decode_signature(bytes: &[u8]) -> Option<Signature> {
    let raw = if bytes.len() == 64 {
        bytes.to_vec()
    } else {
        let text = std::str::from_utf8(bytes).ok()?;
        base64::engine::general_purpose::STANDARD.decode(text.trim()).ok()?
    };
    let raw: [u8; 64] = raw.try_into().ok()?;
    Some(Signature::from_bytes(&raw))
}

/// Whether the allow-list entry `pattern` covers the key `path` (segment by segment, `*`
/// matching one segment, the pattern a prefix of the path).
pub fn covers(pattern: &str, path: &str) -> bool {
    let mut p = pattern.split('.');
    let mut k = path.split('.');
    loop {
        match (p.next(), k.next()) {
            (None, _) => return true,
            (Some(_), None) => return false,
            (Some(a), Some(b)) => {
                if !segment_matches(a, b) {
                    return false;
                }
            }
        }
    }
}

/// A segment pattern: `*` alone matches any segment; `transform/*` any `transform/<name>`
/// (and `transform` itself).
fn segment_matches(pattern: &str, segment: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    match pattern.strip_suffix("/*") {
        Some(kind) => segment == kind || segment.strip_prefix(kind).is_some_and(|rest| rest.starts_with('/')),
        None => pattern == segment,
    }
}

/// The dotted paths of everything a config sets: map entries are walked into, anything else
/// (a list, a scalar, null, an empty map) is a leaf.
fn leaf_paths<'a>(value: &'a Value, prefix: String, out: &mut Vec<(String, &'a Value)>) {
    match value {
        Value::Mapping(m) if !m.is_empty() => {
            for (k, v) in m {
                let k = key_text(k);
                let path = if prefix.is_empty() { k } else { format!("{prefix}.{k}") };
                leaf_paths(v, path, out);
            }
        }
        Value::Null if prefix.is_empty() => {}
        _ => out.push((prefix, value)),
    }
}

fn strings_in<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::String(s) => out.push(s),
        Value::Sequence(s) => s.iter().for_each(|v| strings_in(v, out)),
        Value::Mapping(m) => m.values().for_each(|v| strings_in(v, out)),
        Value::Tagged(t) => strings_in(&t.value, out),
        _ => {}
    }
}

/// Whether `path` is absolute and, without `..` or `.`, starts with `dir`.
fn lies_under(path: &Path, dir: &Path) -> bool {
    path.is_absolute()
        && path.components().all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
        && path.starts_with(dir)
        && path != dir
}

/// The local config's text with the remote config merged over it, as YAML.
pub fn merged_text(local: &str, remote: Value) -> Result<String, Refused> {
    let mut base: Value = serde_yaml::from_str(local).map_err(|e| Refused(format!("the local config: {e}")))?;
    if base.is_null() {
        base = Value::Mapping(Mapping::new());
    }
    let local_value = base.clone();
    merge(&mut base, remote);
    anomaly_caps_held(&local_value, &base)?;
    serde_yaml::to_string(&base).map_err(|e| Refused(format!("writing the merged config: {e}")))
}

/// Every `anomaly` receiver and connector of the merged config keeps the local file's caps or
/// tighter ones (docs/design/0010); a section that does not parse is left to the full parse,
/// which names it.
fn anomaly_caps_held(local: &Value, merged: &Value) -> Result<(), Refused> {
    use crate::receiver::anomaly::config::AnomalyConfig;
    for kind in ["receivers", "connectors"] {
        let Some(sections) = merged.get(kind).and_then(Value::as_mapping) else { continue };
        for (id, section) in sections {
            let Some(id) = id.as_str() else { continue };
            if id.split('/').next() != Some("anomaly") {
                continue;
            }
            let path = format!("{kind}.{id}");
            let Ok(merged) = AnomalyConfig::parse(&path, section.clone()) else { continue };
            let local_section = local.get(kind).and_then(|r| r.get(id)).cloned().unwrap_or(Value::Null);
            let Ok(local) = AnomalyConfig::parse(&path, local_section) else { continue };
            if let Some((key, why)) = merged.loosens(&local) {
                return Err(Refused(format!(
                    "{path}.{key}: a remote config may tighten the anomaly caps, not loosen them: {why}"
                )));
            }
        }
    }
    Ok(())
}

/// Keys whose values are secrets: never sent in the effective config.
fn is_secret(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["token", "password", "secret", "authorization", "api_key", "apikey"].iter().any(|s| k.contains(s))
        || k.ends_with("_pem")
}

/// The config as reported to the server (`EffectiveConfig`): every value under a `headers`
/// map and every secret-named key replaced by `[REDACTED]`; key files' paths are kept, their
/// contents are never read into it.
pub fn redacted(text: &str) -> String {
    fn walk(v: &mut Value, under_headers: bool) {
        match v {
            Value::Mapping(m) => {
                for (k, v) in m.iter_mut() {
                    let key = key_text(k);
                    // A secret-named key's whole value; under `headers`, every value.
                    if is_secret(&key) || (under_headers && !matches!(v, Value::Mapping(_) | Value::Null)) {
                        *v = Value::String("[REDACTED]".into());
                        continue;
                    }
                    walk(v, key == "headers");
                }
            }
            Value::Sequence(s) => s.iter_mut().for_each(|v| walk(v, under_headers)),
            _ => {}
        }
    }
    match serde_yaml::from_str::<Value>(text) {
        Ok(mut v) => {
            walk(&mut v, false);
            serde_yaml::to_string(&v).unwrap_or_default()
        }
        Err(_) => String::new(),
    }
}

#[cfg(test)]
mod tests;
