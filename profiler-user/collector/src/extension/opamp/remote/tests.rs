use std::collections::BTreeMap;

use ed25519_dalek::{Signer, SigningKey};

use super::*;

fn policy(allowed: &[&str]) -> Policy {
    Policy {
        allowed_paths: allowed.iter().map(|s| s.to_string()).collect(),
        files_dir: PathBuf::from("/var/lib/otelprof/remote-files"),
        public_key: None,
    }
}

fn files(yaml: &str) -> BTreeMap<String, Vec<u8>> {
    BTreeMap::from([(CONFIG_FILE.to_string(), yaml.as_bytes().to_vec())])
}

#[test]
fn allow_list_patterns() {
    let yes = [
        ("receivers.profiling", "receivers.profiling.samples_per_second"),
        ("receivers.profiling", "receivers.profiling"),
        ("processors.transform/*", "processors.transform/redact.trace_statements"),
        ("processors.transform/*", "processors.transform.trace_statements"),
        ("exporters.*.endpoint", "exporters.otlp/a.endpoint"),
        ("exporters.otlp.endpoint", "exporters.otlp.endpoint"),
    ];
    for (p, k) in yes {
        assert!(covers(p, k), "{p} covers {k}");
    }
    let no = [
        ("receivers.profiling", "receivers.profilingx.a"),
        ("receivers.profiling.samples_per_second", "receivers.profiling"),
        ("processors.transform/*", "processors.transformer/x.a"),
        ("exporters.otlp.endpoint", "exporters.otlp.headers.x"),
        ("exporters.*.endpoint", "exporters.otlp.tls.ca_file"),
    ];
    for (p, k) in no {
        assert!(!covers(p, k), "{p} does not cover {k}");
    }
}

#[test]
fn a_key_outside_the_allow_list_refuses_the_whole_config() {
    let p = policy(&["receivers.profiling", "processors.transform/*"]);
    let ok = p.check(&files("receivers:\n  profiling:\n    samples_per_second: 99\n")).unwrap();
    assert_eq!(ok["receivers"]["profiling"]["samples_per_second"].as_u64(), Some(99));
    let e = p
        .check(&files("receivers:\n  profiling: {samples_per_second: 99}\nexporters:\n  otlp: {endpoint: evil:4317}\n"))
        .unwrap_err();
    assert_eq!(
        e.0,
        "exporters.otlp.endpoint: not in remote_config.allowed_paths (receivers.profiling, processors.transform/*)"
    );
}

#[test]
fn the_opamp_block_and_own_telemetry_are_never_remote() {
    let p = policy(&["*"]);
    for (yaml, key) in [
        ("extensions: {opamp: {server: {ws: {endpoint: ws://evil}}}}", "extensions.opamp.server.ws.endpoint"),
        ("service: {telemetry: {metrics: {address: 0.0.0.0:1}}}", "service.telemetry.metrics.address"),
        ("service: {extensions: []}", "service.extensions"),
    ] {
        let e = p.check(&files(yaml)).unwrap_err();
        assert!(e.0.starts_with(&format!("{key}: `")), "{yaml}: {e}");
        assert!(e.0.ends_with("is never changed remotely"), "{e}");
    }
    p.check(&files("service: {pipelines: {traces: {receivers: [otlp], exporters: [debug]}}}")).unwrap();
}

#[test]
fn file_paths_must_lie_under_files_dir_and_env_is_refused() {
    let p = policy(&["exporters"]);
    p.check(&files("exporters: {otlp: {tls: {ca_file: /var/lib/otelprof/remote-files/ca.pem}}}")).unwrap();
    for (yaml, want) in [
        ("exporters: {otlp: {tls: {ca_file: /etc/shadow}}}", "exporters.otlp.tls.ca_file: `/etc/shadow` is not under"),
        (
            "exporters: {otlp: {tls: {ca_file: /var/lib/otelprof/remote-files/../../../etc/shadow}}}",
            "exporters.otlp.tls.ca_file: `/var/lib/otelprof/remote-files/../../../etc/shadow` is not under",
        ),
        ("exporters: {file: {path: relative.jsonl}}", "exporters.file.path: `relative.jsonl` is not under"),
        (
            "exporters: {otlp: {headers: {a: '${env:AWS_SECRET_ACCESS_KEY}'}}}",
            "exporters.otlp.headers.a: environment references",
        ),
    ] {
        let e = p.check(&files(yaml)).unwrap_err();
        assert!(e.0.starts_with(want), "{yaml}: {e}");
    }
}

#[test]
fn malformed_config_maps_are_refused_with_the_reason() {
    let p = policy(&["*"]);
    let e = p.check(&BTreeMap::from([("other.yaml".to_string(), b"a: 1".to_vec())])).unwrap_err();
    assert_eq!(e.0, "the config map has no `otelprof.yaml` (it has: other.yaml)");
    let e = p.check(&files("receivers: [unclosed")).unwrap_err();
    assert!(e.0.starts_with("otelprof.yaml: "), "{e}");
    let e = p.check(&files("- a list")).unwrap_err();
    assert!(e.0.contains("a config is a mapping"), "{e}");
    let e = p.check(&BTreeMap::from([(CONFIG_FILE.to_string(), vec![0xff, 0xfe])])).unwrap_err();
    assert!(e.0.contains("not UTF-8"), "{e}");
}

#[test]
fn signatures_required_missing_wrong_and_right() {
    let signer = SigningKey::from_bytes(&[7u8; 32]);
    let mut p = policy(&["receivers"]);
    p.public_key = Some(signer.verifying_key());
    let body = "receivers: {profiling: {samples_per_second: 49}}\n";
    let e = p.check(&files(body)).unwrap_err();
    assert_eq!(e.0, "signature required: the config map has no `otelprof.yaml.sig`");

    let mut with = files(body);
    let other = SigningKey::from_bytes(&[8u8; 32]).sign(body.as_bytes());
    with.insert(SIGNATURE_FILE.into(), other.to_bytes().to_vec());
    assert_eq!(p.check(&with).unwrap_err().0, "signature does not verify over `otelprof.yaml`");

    let tampered = "receivers: {profiling: {samples_per_second: 999}}\n";
    let good = signer.sign(body.as_bytes());
    let mut t = files(tampered);
    t.insert(SIGNATURE_FILE.into(), good.to_bytes().to_vec());
    assert_eq!(p.check(&t).unwrap_err().0, "signature does not verify over `otelprof.yaml`");

    with.insert(SIGNATURE_FILE.into(), b"garbage".to_vec());
    assert!(p.check(&with).unwrap_err().0.starts_with("signature does not verify: "));

    let b64 = base64::engine::general_purpose::STANDARD.encode(good.to_bytes());
    with.insert(SIGNATURE_FILE.into(), format!("{b64}\n").into_bytes());
    p.check(&with).unwrap();
    with.insert(SIGNATURE_FILE.into(), good.to_bytes().to_vec());
    p.check(&with).unwrap();
}

#[test]
fn public_keys_in_pem_and_raw() {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::from_bytes(&[3u8; 32]).verifying_key();
    let raw = dir.path().join("raw.pub");
    std::fs::write(&raw, key.to_bytes()).unwrap();
    assert_eq!(read_public_key(&raw).unwrap(), key);
    let mut der = vec![0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];
    der.extend_from_slice(&key.to_bytes());
    let pem = format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        base64::engine::general_purpose::STANDARD.encode(der)
    );
    let pem_path = dir.path().join("key.pem");
    std::fs::write(&pem_path, pem).unwrap();
    assert_eq!(read_public_key(&pem_path).unwrap(), key);
    std::fs::write(&pem_path, "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n").unwrap();
    assert!(read_public_key(&pem_path).unwrap_err().contains("not an Ed25519 public key"));
}

#[test]
fn merge_maps_key_by_key_and_replaces_lists_and_scalars() {
    let local = "receivers:\n  profiling: {samples_per_second: 19, reporter_interval: 10s}\n  otlp: {}\nprocessors:\n  transform: {trace_statements: [a, b]}\n";
    let remote: Value = serde_yaml::from_str(
        "receivers: {profiling: {samples_per_second: 99}}\nprocessors: {transform: {trace_statements: [c]}}",
    )
    .unwrap();
    let merged: Value = serde_yaml::from_str(&merged_text(local, remote).unwrap()).unwrap();
    assert_eq!(merged["receivers"]["profiling"]["samples_per_second"].as_u64(), Some(99));
    assert_eq!(merged["receivers"]["profiling"]["reporter_interval"].as_str(), Some("10s"));
    assert!(merged["receivers"]["otlp"].is_mapping());
    assert_eq!(merged["processors"]["transform"]["trace_statements"], serde_yaml::from_str::<Value>("[c]").unwrap());
}

#[test]
fn secrets_are_redacted_in_the_effective_config() {
    let text = "exporters:\n  otlp:\n    endpoint: backend:4317\n    headers: {authorization: Bearer abc, x-tenant: t1}\n    tls: {key_file: /k.pem, key_pem: PRIVATE, ca_file: /ca.pem}\n    auth_token: s3cr3t\n";
    let r = redacted(text);
    for secret in ["Bearer abc", "t1", "PRIVATE", "s3cr3t"] {
        assert!(!r.contains(secret), "{secret} leaked: {r}");
    }
    for kept in ["backend:4317", "/k.pem", "/ca.pem", "authorization", "x-tenant"] {
        assert!(r.contains(kept), "{kept} missing: {r}");
    }
}

#[test]
fn a_remote_config_may_tune_anomaly_rules_and_tighten_their_caps_never_loosen_them() {
    let local =
        "receivers:\n  anomaly:\n    limits: {cooldown: 60s}\n    burst: {samples_per_second: 99, duration: 30s}\n";
    let remote = |yaml: &str| serde_yaml::from_str::<Value>(yaml).unwrap();
    let tuned = merged_text(
        local,
        remote("receivers: {anomaly: {rules: [{name: r, signal: node_cpu, z_threshold: 4}], limits: {cooldown: 5m}}}"),
    );
    assert!(tuned.is_ok(), "{tuned:?}");
    let e = merged_text(local, remote("receivers: {anomaly: {limits: {cooldown: 1s}}}")).unwrap_err();
    assert!(e.0.starts_with("receivers.anomaly.limits: a remote config may tighten"), "{}", e.0);
    let e = merged_text(local, remote("receivers: {anomaly: {burst: {duration: 10m}}}")).unwrap_err();
    assert!(e.0.starts_with("receivers.anomaly.burst.duration"), "{}", e.0);
    // A receiver the local file does not have is held to the defaults.
    let e = merged_text(local, remote("receivers: {anomaly/new: {limits: {global: 1000}}}")).unwrap_err();
    assert!(e.0.starts_with("receivers.anomaly/new.limits"), "{}", e.0);
    // The connector form (metric rules) is held the same way.
    let local = "connectors:\n  anomaly:\n    burst: {samples_per_second: 49}\n";
    let tuned = merged_text(
        local,
        remote("connectors: {anomaly: {rules: [{name: q, signal: metric, condition: 'true', floor: 5}]}}"),
    );
    assert!(tuned.is_ok(), "{tuned:?}");
    let e = merged_text(local, remote("connectors: {anomaly: {burst: {samples_per_second: 99}}}")).unwrap_err();
    assert!(e.0.starts_with("connectors.anomaly.burst.samples_per_second"), "{}", e.0);
}
