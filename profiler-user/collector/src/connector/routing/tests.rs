//! The routing connector built through its factory, with recording sinks as the pipelines it
//! feeds; requests are OTLP/JSON decoded by the otlp receiver's decoder.

use std::{collections::BTreeMap, sync::atomic::Ordering, time::Duration};

use serde_json::json;

use super::*;
use crate::{consumer::testing::Sink, receiver::otlp::json};

/// Logs of three resources (tenants A, B and none), each with records of two severities.
fn logs() -> Data {
    let resource = |tenant: Option<&str>| {
        let attrs: Vec<_> = tenant.iter().map(|t| json!({"key": "tenant", "value": {"stringValue": t}})).collect();
        json!({"resource": {"attributes": attrs}, "scopeLogs": [{"scope": {"name": "lib"}, "logRecords": [
            {"severityNumber": 9, "body": {"stringValue": format!("info {tenant:?}")}},
            {"severityNumber": 17, "body": {"stringValue": format!("error {tenant:?}")}}
        ]}]})
    };
    let text = json!({"resourceLogs": [resource(Some("A")), resource(Some("B")), resource(None)]}).to_string();
    json::decode(Signal::Logs, text.as_bytes()).unwrap()
}

/// The bodies of every log record, by resource tenant: `["A:info", …]`.
fn bodies(data: &[Data]) -> Vec<String> {
    let mut out = Vec::new();
    for d in data {
        let Data::Logs(r) = d else { panic!("not logs") };
        for rl in &r.resource_logs {
            let tenant = rl
                .resource
                .as_ref()
                .and_then(|r| r.attributes.iter().find(|a| a.key == "tenant"))
                .map(|a| format!("{:?}", a.value))
                .map(|v| if v.contains("\"A\"") { "A" } else { "B" })
                .unwrap_or("-");
            for sl in &rl.scope_logs {
                assert_eq!(sl.scope.as_ref().map(|s| s.name.as_str()), Some("lib"), "the scope goes along");
                for lr in &sl.log_records {
                    let body = format!("{:?}", lr.body);
                    let sev = if body.contains("info") { "info" } else { "error" };
                    out.push(format!("{tenant}:{sev}"));
                }
            }
        }
    }
    out
}

struct Setup {
    connector: Arc<dyn Connector>,
    sinks: BTreeMap<String, Arc<Sink>>,
    host: Host,
}

impl Setup {
    fn got(&self, pipeline: &str) -> Vec<String> {
        bodies(&self.sinks[pipeline].got.lock().unwrap())
    }

    fn metrics(&self) -> String {
        let mut out = String::new();
        self.host.telemetry.render(&mut out);
        out
    }
}

/// Builds `routing` from `yaml` for logs, feeding a sink per pipeline of `pipelines`.
fn setup(yaml: &str, pipelines: &[&str]) -> Result<Setup, ConfigError> {
    setup_for(Signal::Logs, yaml, pipelines)
}

fn setup_for(signal: Signal, yaml: &str, pipelines: &[&str]) -> Result<Setup, ConfigError> {
    let id = ComponentId::parse("routing").unwrap();
    let build = RoutingFactory.create(&id, serde_yaml::from_str(yaml).unwrap(), "connectors.routing")?;
    let ids: Vec<PipelineId> = pipelines.iter().map(|p| PipelineId::parse(p).unwrap()).collect();
    build.check(signal, signal, &ids, "connectors.routing")?;
    let host = Host::new(Duration::from_secs(1));
    let mut sinks = BTreeMap::new();
    let mut routes = Routes::new();
    for p in &ids {
        let sink = Arc::new(Sink::default());
        routes.insert(p.clone(), sink.clone() as Arc<dyn Consumer>);
        sinks.insert(p.to_string(), sink);
    }
    let connector = build.build(signal, signal, routes, &host).unwrap();
    Ok(Setup { connector, sinks, host })
}

#[test]
fn resources_go_to_the_first_route_that_matches_and_the_rest_to_the_default() {
    let s = setup(
        r#"
default_pipelines: [logs/other]
table:
  - statement: route() where resource.attributes["tenant"] == "A"
    pipelines: [logs/a]
  - condition: attributes["tenant"] == "B"
    pipelines: [logs/b, logs/audit]
  - condition: attributes["tenant"] != nil
    pipelines: [logs/audit]
"#,
        &["logs/a", "logs/b", "logs/audit", "logs/other"],
    )
    .unwrap();
    s.connector.consume(logs()).unwrap();
    assert_eq!(s.got("logs/a"), ["A:info", "A:error"]);
    assert_eq!(s.got("logs/b"), ["B:info", "B:error"]);
    assert_eq!(s.got("logs/audit"), ["B:info", "B:error"], "B matched route 2 first, not route 3 as well");
    assert_eq!(s.got("logs/other"), ["-:info", "-:error"]);
    let m = s.metrics();
    assert!(
        m.contains("otelprof_connector_routing_routed_items_total{connector=\"routing\",pipeline=\"logs/a\"} 2\n"),
        "{m}"
    );
}

#[test]
fn a_log_context_route_moves_single_records_with_their_resource_and_scope() {
    let s = setup(
        r#"
default_pipelines: [logs/other]
table:
  - context: log
    condition: severity_number >= SEVERITY_NUMBER_ERROR
    pipelines: [logs/errors]
  - condition: attributes["tenant"] == "A"
    pipelines: [logs/a]
"#,
        &["logs/errors", "logs/a", "logs/other"],
    )
    .unwrap();
    s.connector.consume(logs()).unwrap();
    assert_eq!(s.got("logs/errors"), ["A:error", "B:error", "-:error"]);
    assert_eq!(s.got("logs/a"), ["A:info"], "what the first route took is not seen by the second");
    assert_eq!(s.got("logs/other"), ["B:info", "-:info"]);
}

#[test]
fn without_a_default_what_no_route_takes_is_dropped_and_counted() {
    let s = setup("table: [{condition: 'attributes[\"tenant\"] == \"A\"', pipelines: [logs/a]}]", &["logs/a"]).unwrap();
    s.connector.consume(logs()).unwrap();
    assert_eq!(s.got("logs/a"), ["A:info", "A:error"]);
    let m = s.metrics();
    assert!(
        m.contains("otelprof_connector_routing_unrouted_items_total{connector=\"routing\",pipeline=\"\"} 4\n"),
        "{m}"
    );
}

#[test]
fn a_bare_route_takes_everything() {
    let s = setup("table: [{statement: route(), pipelines: [logs/all]}]", &["logs/all"]).unwrap();
    s.connector.consume(logs()).unwrap();
    assert_eq!(s.got("logs/all").len(), 6);
}

#[test]
fn a_failing_condition_rejects_under_propagate_and_falls_to_the_default_under_ignore() {
    // Substring of an int fails at run time.
    let table = r#"
default_pipelines: [logs/other]
table:
  - context: log
    condition: Substring(severity_number, 0, 1) == "1"
    pipelines: [logs/a]
"#;
    let s = setup(table, &["logs/a", "logs/other"]).unwrap();
    let e = s.connector.consume(logs()).unwrap_err();
    assert!(matches!(e, ConsumeError::Rejected(_)), "{e}");
    assert!(s.got("logs/a").is_empty() && s.got("logs/other").is_empty(), "nothing is sent when rejected");
    let s = setup(&format!("error_mode: ignore\n{table}"), &["logs/a", "logs/other"]).unwrap();
    s.connector.consume(logs()).unwrap();
    assert_eq!(s.got("logs/other").len(), 6);
}

#[test]
fn a_refusing_pipeline_loses_only_its_part_and_all_refusing_refuses() {
    let s = setup(
        "default_pipelines: [logs/other]\ntable: [{condition: 'attributes[\"tenant\"] == \"A\"', pipelines: [logs/a]}]",
        &["logs/a", "logs/other"],
    )
    .unwrap();
    s.sinks["logs/a"].refuse.store(true, Ordering::Relaxed);
    s.connector.consume(logs()).unwrap();
    assert_eq!(s.got("logs/other").len(), 4, "the default kept its part");
    assert!(s
        .metrics()
        .contains("otelprof_connector_routing_refused_items_total{connector=\"routing\",pipeline=\"logs/a\"} 2\n"));
    s.sinks["logs/other"].refuse.store(true, Ordering::Relaxed);
    let e = s.connector.consume(logs()).unwrap_err();
    assert!(e.is_retryable(), "every part refused: the sender may retry without duplicates");
}

#[test]
fn config_mistakes_are_named_by_key() {
    let err = |yaml: &str| setup(yaml, &["logs/a"]).err().unwrap_or_else(|| panic!("accepted: {yaml}"));
    let e = err("table: [{condition: 'true', pipelines: [logs/a]}]\nmatch_once: true");
    assert_eq!(e.path, "connectors.routing.match_once");
    let e = err("table: [{condition: 'true', statement: route(), pipelines: [logs/a]}]");
    assert_eq!(e.path, "connectors.routing.table[0]");
    let e = err("table: [{context: request, condition: 'request[\"X\"] == \"a\"', pipelines: [logs/a]}]");
    assert_eq!(e.path, "connectors.routing.table[0].context");
    assert!(e.message.contains("not supported yet"), "{e}");
    let e = err("table: [{context: span, condition: 'true', pipelines: [logs/a]}]");
    assert_eq!(e.path, "connectors.routing.table[0].context");
    let e = err("table: [{condition: 'true', pipelines: [logs/b]}]");
    assert_eq!(e.path, "connectors.routing.table[0].pipelines[0]");
    assert!(e.message.contains("does not list this connector"), "{e}");
    let e = err("table: [{condition: 'true', pipelines: [log/a]}]");
    assert_eq!(e.path, "connectors.routing.table[0].pipelines[0]");
    let e = err("table: []");
    assert_eq!(e.path, "connectors.routing.table");
    let e = err("table: [{statement: 'set(attributes[\"x\"], 1)', pipelines: [logs/a]}]");
    assert!(e.message.contains("route() where"), "{e}");
    // Positions inside a statement are those of the statement as written.
    let e = err("table: [{statement: 'route() where attributes[\"x\"] == Sha256(\"a\")', pipelines: [logs/a]}]");
    assert_eq!(e.path, "connectors.routing.table[0].statement");
    assert!(e.message.starts_with("1:34: "), "{e}");
}

#[test]
fn split_profiles_each_keep_the_whole_dictionary() {
    let s = setup_for(
        Signal::Profiles,
        "default_pipelines: [profiles/early]\ntable: [{context: profile, condition: 'profile.time_unix_nano > 1500', pipelines: [profiles/late]}]",
        &["profiles/early", "profiles/late"],
    )
    .unwrap();
    let text = r#"{"resourceProfiles": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "api"}}]},
        "scopeProfiles": [{"scope": {"name": "lib"}, "profiles": [
            {"profileId": "0102030405060708090a0b0c0d0e0f10", "timeUnixNano": "1000", "attributeIndices": [1]},
            {"profileId": "1112131415161718191a1b1c1d1e1f20", "timeUnixNano": "2000", "attributeIndices": [1]}]}]}],
        "dictionary": {"stringTable": ["", "host"], "attributeTable": [{}, {"keyStrindex": 1, "value": {"stringValue": "h1"}}]}}"#;
    s.connector.consume(json::decode(Signal::Profiles, text.as_bytes()).unwrap()).unwrap();
    for (pipeline, time) in [("profiles/early", 1000), ("profiles/late", 2000)] {
        let got = s.sinks[pipeline].got.lock().unwrap();
        assert_eq!(got.len(), 1, "{pipeline}");
        let Data::Profiles(r) = &got[0] else { panic!("not profiles") };
        let profiles: Vec<_> =
            r.resource_profiles.iter().flat_map(|r| &r.scope_profiles).flat_map(|s| &s.profiles).collect();
        assert_eq!(profiles.iter().map(|p| p.time_unix_nano).collect::<Vec<_>>(), [time], "{pipeline}");
        let dict = r.dictionary.as_ref().expect("each part carries the dictionary");
        assert_eq!(dict.string_table, ["", "host"], "{pipeline}");
        assert_eq!(dict.attribute_table.len(), 2, "{pipeline}");
        let resource = r.resource_profiles[0].resource.as_ref().unwrap();
        assert_eq!(resource.attributes[0].key, "service.name", "{pipeline}: the resource goes along");
    }
}
