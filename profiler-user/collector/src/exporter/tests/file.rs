//! `file`: what it writes, read back without its code (serde_json and prost, the `zstd`
//! command when installed), and rotation.

use std::{
    io::{BufRead, Read, Write},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use opentelemetry_proto::tonic::collector::{
    logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
    profiles::v1development::ExportProfilesServiceRequest, trace::v1::ExportTraceServiceRequest,
};

use super::support::*;
use crate::{
    component::ExporterFactory,
    exporter::{file::FileFactory, rotate},
    signal::{Data, Signal},
};

/// An empty directory of this test's own.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("otelprof-file-exporter-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// One OTLP/JSON line, its signal told by its top-level key, decoded by opentelemetry-proto's
/// serde types.
fn decode_line(line: &str) -> Data {
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    let key = v.as_object().unwrap().keys().find(|k| k.starts_with("resource")).unwrap().clone();
    match key.as_str() {
        "resourceSpans" => Data::Traces(serde_json::from_str::<ExportTraceServiceRequest>(line).unwrap()),
        "resourceMetrics" => Data::Metrics(serde_json::from_str::<ExportMetricsServiceRequest>(line).unwrap()),
        "resourceLogs" => Data::Logs(serde_json::from_str::<ExportLogsServiceRequest>(line).unwrap()),
        "resourceProfiles" => Data::Profiles(serde_json::from_str::<ExportProfilesServiceRequest>(line).unwrap()),
        other => panic!("not an OTLP/JSON request: {other}"),
    }
}

fn lines(path: &Path) -> Vec<Data> {
    let f = std::fs::File::open(path).unwrap();
    std::io::BufReader::new(f).lines().map(|l| decode_line(&l.unwrap())).collect()
}

fn factory() -> &'static dyn ExporterFactory {
    &FileFactory
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_decode_back_to_the_same_data() {
    let dir = scratch("json");
    let path = dir.join("sub/out.json");
    let host = host();
    let yaml = format!("path: {}\nsending_queue: {{num_consumers: 1}}", path.display());
    let file = create(factory(), "file", &yaml);
    let exporters: Vec<_> = Signal::ALL.into_iter().map(|s| file.build(s, &host).unwrap()).collect();
    for (e, s) in exporters.iter().zip(Signal::ALL) {
        e.consume(data(s, 2)).unwrap();
        e.consume(data(s, 1)).unwrap();
    }
    for e in &exporters {
        e.shutdown(in_secs(5)).await;
    }
    let mut got = lines(&path);
    let mut want: Vec<Data> = Signal::ALL.into_iter().flat_map(|s| [data(s, 2), data(s, 1)]).collect();
    let key = |d: &Data| (d.signal(), d.items());
    got.sort_by_key(key);
    want.sort_by_key(key);
    assert_eq!(got, want, "one file for every signal, a request per line");
    assert_eq!(metric(&host, "otelcol_exporter_sent_spans_total{exporter=\"file\"}"), Some(3));
}

/// Undoes zstd with the `zstd` command (an independent decoder) when there is one.
fn unzstd(frame: &[u8]) -> Vec<u8> {
    let Ok(mut child) =
        Command::new("zstd").args(["-d", "-c", "-q"]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn()
    else {
        let mut out = Vec::new();
        ruzstd::decoding::StreamingDecoder::new(frame).unwrap().read_to_end(&mut out).unwrap();
        return out;
    };
    child.stdin.take().unwrap().write_all(frame).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "zstd -d failed");
    out.stdout
}

/// Splits a file into its u32-big-endian length-prefixed records.
fn records(path: &Path) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(path).unwrap();
    let mut rest = bytes.as_slice();
    let mut out = vec![];
    while !rest.is_empty() {
        let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
        out.push(rest[4..4 + len].to_vec());
        rest = &rest[4 + len..];
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proto_and_compressed_records_are_length_prefixed() {
    let dir = scratch("proto");
    let host = host();
    let cases = [
        ("plain.pb", "format: proto"),
        ("packed.pb", "format: proto\ncompression: zstd"),
        ("packed.json", "format: json\ncompression: zstd"),
    ];
    for (name, keys) in cases {
        let path = dir.join(name);
        let yaml = format!("path: {}\n{keys}\nsending_queue: {{num_consumers: 1}}", path.display());
        let e = build(factory(), &format!("file/{name}"), &yaml, Signal::Metrics, &host);
        e.consume(data(Signal::Metrics, 3)).unwrap();
        e.consume(data(Signal::Metrics, 5)).unwrap();
        e.shutdown(in_secs(5)).await;
        let got: Vec<Data> = records(&path)
            .into_iter()
            .map(|r| match name {
                "plain.pb" => Data::decode(Signal::Metrics, &r).unwrap(),
                "packed.pb" => Data::decode(Signal::Metrics, &unzstd(&r)).unwrap(),
                _ => decode_line(std::str::from_utf8(&unzstd(&r)).unwrap()),
            })
            .collect();
        assert_eq!(got, [data(Signal::Metrics, 3), data(Signal::Metrics, 5)], "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_at_a_tiny_size_keeps_max_backups() {
    let dir = scratch("rotate");
    let path = dir.join("out.json");
    let host = host();
    let one = crate::exporter::json::encode(&data(Signal::Logs, 3)).unwrap().len();
    // A little more than one request: every later request starts a new file.
    let max_mb = (one as f64 * 1.5) / (1024.0 * 1024.0);
    let yaml = format!(
        "path: {}\nrotation: {{max_megabytes: {max_mb}, max_backups: 2}}\nsending_queue: {{num_consumers: 1}}",
        path.display()
    );
    let e = build(factory(), "file", &yaml, Signal::Logs, &host);
    for n in 3..8 {
        e.consume(data(Signal::Logs, n)).unwrap();
    }
    e.shutdown(in_secs(5)).await;
    let backups = rotate::backups(&path).unwrap();
    assert_eq!(backups.len(), 2, "{backups:?}");
    for b in &backups {
        let name = b.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.starts_with("out-20") && name.ends_with(".json") && name.len() == "out-.json".len() + 23,
            "{name}"
        );
    }
    assert_eq!(lines(&path), [data(Signal::Logs, 7)], "the newest request is in the file at `path`");
    assert_eq!(lines(&backups[0]), [data(Signal::Logs, 6)], "newest backup first");
    assert_eq!(lines(&backups[1]), [data(Signal::Logs, 5)], "older backups were removed");
    let files = std::fs::read_dir(&dir).unwrap().count();
    assert_eq!(files, 3);
}

#[test]
fn config_errors_name_the_key() {
    let id = crate::component::ComponentId::parse("file").unwrap();
    let create =
        |yaml: &str| factory().create(&id, serde_yaml::from_str(yaml).unwrap(), "exporters.file").err().unwrap();
    assert_eq!(create("format: json").path, "exporters.file.path");
    assert_eq!(create("{path: x, format: csv}").path, "exporters.file.format");
    assert_eq!(create("{path: x, compression: gzip}").path, "exporters.file.compression");
    assert_eq!(create("{path: x, rotation: {max_megabytes: 0}}").path, "exporters.file.rotation.max_megabytes");
    assert_eq!(create("{path: x, group_by: {}}").path, "exporters.file.group_by");
}
