//! What a process says about itself, for resource attributes: its container, its command line
//! and the OpenTelemetry settings in its environment.

use std::{fs::File, io::Read};

use sha2::{Digest, Sha256};

/// Container ID from the contents of `/proc/PID/cgroup` (cgroup v1 and v2).
///
/// Recognizes the path shapes of docker (`/docker/<id>`, `docker-<id>.scope`), containerd
/// (`cri-containerd-<id>.scope`, `/kubepods/.../<id>`), cri-o (`crio-<id>.scope`) and podman
/// (`libpod-<id>.scope`): the innermost 64-hex-digit path segment once those wrappers are removed.
pub fn container_id(cgroup: &str) -> Option<String> {
    const PREFIXES: [&str; 5] = ["docker-", "cri-containerd-", "crio-", "libpod-", "containerd-"];
    for line in cgroup.lines() {
        let Some(path) = line.splitn(3, ':').nth(2) else { continue };
        for segment in path.rsplit('/') {
            let mut s = segment.strip_suffix(".scope").unwrap_or(segment);
            for p in PREFIXES {
                if let Some(rest) = s.strip_prefix(p) {
                    s = rest;
                    break;
                }
            }
            if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Some(s.to_ascii_lowercase());
            }
        }
    }
    None
}

/// Decodes `%XX` escapes (W3C Baggage octets, as `OTEL_RESOURCE_ATTRIBUTES` uses them).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Some(v) = std::str::from_utf8(&b[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// OpenTelemetry resource attributes a process set for itself: `OTEL_RESOURCE_ATTRIBUTES`
/// (`k=v,k2=v2`, percent-encoded values), with `OTEL_SERVICE_NAME` taking precedence for
/// `service.name`, as the SDKs do. `environ` is the NUL-separated `/proc/PID/environ`.
pub fn otel_env_attributes(environ: &[u8]) -> Vec<(String, String)> {
    let mut attrs: Vec<(String, String)> = Vec::new();
    let mut service_name = None;
    for var in environ.split(|&b| b == 0) {
        let var = String::from_utf8_lossy(var);
        if let Some(v) = var.strip_prefix("OTEL_RESOURCE_ATTRIBUTES=") {
            for pair in v.split(',') {
                if let Some((k, v)) = pair.split_once('=') {
                    let (k, v) = (k.trim(), percent_decode(v.trim()));
                    if !k.is_empty() {
                        attrs.retain(|(ek, _)| ek != k);
                        attrs.push((k.to_string(), v));
                    }
                }
            }
        } else if let Some(v) = var.strip_prefix("OTEL_SERVICE_NAME=") {
            if !v.trim().is_empty() {
                service_name = Some(v.trim().to_string());
            }
        }
    }
    if let Some(name) = service_name {
        attrs.retain(|(k, _)| k != "service.name");
        attrs.push(("service.name".into(), name));
    }
    attrs
}

/// `process.executable.build_id.htlhash`: SHA-256 of the first and last 4096 bytes of the file
/// (overlapping for small files, not padded) and its length as a big-endian u64, truncated to
/// 16 bytes (OpenTelemetry Profiles "Mappings" specification).
pub fn htlhash(file: &mut File) -> std::io::Result<[u8; 16]> {
    use std::io::{Seek, SeekFrom};
    let len = file.metadata()?.len();
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 4096.min(len as usize)];
    file.seek(SeekFrom::Start(0))?;
    file.read_exact(&mut buf)?;
    h.update(&buf);
    file.seek(SeekFrom::Start(len - buf.len() as u64))?;
    file.read_exact(&mut buf)?;
    h.update(&buf);
    h.update(len.to_be_bytes());
    let digest = h.finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&digest[..16]);
    Ok(out)
}

/// GNU build ID of the running kernel, from the ELF notes in `/sys/kernel/notes`.
pub fn kernel_build_id() -> Option<Vec<u8>> {
    parse_gnu_build_id_note(&std::fs::read("/sys/kernel/notes").ok()?)
}

/// Finds the `NT_GNU_BUILD_ID` note (owner "GNU") in a sequence of ELF notes.
pub fn parse_gnu_build_id_note(mut notes: &[u8]) -> Option<Vec<u8>> {
    const NT_GNU_BUILD_ID: u32 = 3;
    let word = |b: &[u8], i: usize| -> Option<u32> { Some(u32::from_ne_bytes(b.get(i..i + 4)?.try_into().ok()?)) };
    let align = |n: usize| n.div_ceil(4) * 4;
    while notes.len() >= 12 {
        let (namesz, descsz, ty) = (word(notes, 0)? as usize, word(notes, 4)? as usize, word(notes, 8)?);
        let name = notes.get(12..12 + namesz)?;
        let desc_start = 12 + align(namesz);
        let desc = notes.get(desc_start..desc_start + descsz)?;
        if ty == NT_GNU_BUILD_ID && name.strip_suffix(&[0]).unwrap_or(name) == b"GNU" {
            return Some(desc.to_vec());
        }
        notes = notes.get(desc_start + align(descsz)..)?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f9b5c0e4a2d7e8f1b6c9d0a2e4f6a8b0c2d4e6f8a0b2c4d6e8f0a2b4c6d8e0f";

    #[test]
    fn container_ids_of_every_runtime() {
        assert_eq!(container_id(&format!("12:pids:/docker/{ID}\n0::/")), Some(ID.into()));
        assert_eq!(container_id(&format!("0::/system.slice/docker-{ID}.scope")), Some(ID.into()));
        assert_eq!(
            container_id(&format!("0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234.slice/cri-containerd-{ID}.scope")),
            Some(ID.into())
        );
        assert_eq!(container_id(&format!("0::/kubepods/besteffort/pod5678/{ID}")), Some(ID.into()));
        assert_eq!(container_id(&format!("0::/machine.slice/libpod-{ID}.scope/container")), Some(ID.into()));
        assert_eq!(container_id(&format!("0::/kubepods.slice/crio-{}.scope", ID.to_uppercase())), Some(ID.into()));
        assert_eq!(container_id("0::/user.slice/user-0.slice/session-1.scope"), None);
        assert_eq!(container_id("garbage"), None);
    }

    #[test]
    fn otel_environment() {
        let env = b"PATH=/bin\0OTEL_RESOURCE_ATTRIBUTES=service.name=from-attrs,deployment.environment.name=prod%2Ceu, team = a%3Db \0OTEL_SERVICE_NAME=checkout\0";
        let attrs = otel_env_attributes(env);
        assert_eq!(
            attrs,
            vec![
                ("deployment.environment.name".into(), "prod,eu".into()),
                ("team".into(), "a=b".into()),
                ("service.name".into(), "checkout".into()),
            ]
        );
        let only_attrs = otel_env_attributes(b"OTEL_RESOURCE_ATTRIBUTES=service.name=svc\0");
        assert_eq!(only_attrs, vec![("service.name".into(), "svc".into())]);
        assert!(otel_env_attributes(b"HOME=/root\0").is_empty());
        assert_eq!(percent_decode("%zz%4"), "%zz%4", "bad escapes stay as they are");
    }

    #[test]
    fn gnu_build_id_note() {
        let mut notes = Vec::new();
        let mut note = |name: &[u8], ty: u32, desc: &[u8]| {
            notes.extend((name.len() as u32).to_ne_bytes());
            notes.extend((desc.len() as u32).to_ne_bytes());
            notes.extend(ty.to_ne_bytes());
            notes.extend(name);
            notes.resize(notes.len().div_ceil(4) * 4, 0);
            notes.extend(desc);
            notes.resize(notes.len().div_ceil(4) * 4, 0);
        };
        note(b"Xen\0", 3, &[9; 6]);
        note(b"GNU\0", 3, &[0xab; 20]);
        assert_eq!(parse_gnu_build_id_note(&notes), Some(vec![0xab; 20]));
        assert_eq!(parse_gnu_build_id_note(&notes[..30]), None, "truncated notes are not read past their end");
        if let Ok(raw) = std::fs::read("/sys/kernel/notes") {
            assert_eq!(kernel_build_id().map(|b| b.len()), parse_gnu_build_id_note(&raw).map(|b| b.len()));
        }
    }

    #[test]
    fn htlhash_follows_the_spec() {
        let dir = std::env::temp_dir().join(format!("htlhash-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let check = |content: &[u8]| {
            let p = dir.join("f");
            std::fs::write(&p, content).unwrap();
            let mut expected = Sha256::new();
            let n = content.len().min(4096);
            expected.update(&content[..n]);
            expected.update(&content[content.len() - n..]);
            expected.update((content.len() as u64).to_be_bytes());
            let got = htlhash(&mut File::open(&p).unwrap()).unwrap();
            assert_eq!(got[..], expected.finalize()[..16]);
        };
        check(b"small file overlaps itself");
        check(&(0..10_000u32).map(|i| (i * 7) as u8).collect::<Vec<_>>());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
