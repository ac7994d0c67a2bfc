//! Whole-language tests: statements compiled and run on real OTLP structs in each context.

use opentelemetry_proto::tonic::{
    common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue},
    logs::v1::LogRecord,
    metrics::v1::{metric::Data, number_data_point, HistogramDataPoint, Metric, NumberDataPoint, Sum},
    profiles::v1development::{KeyValueAndUnit, Profile, ProfilesDictionary},
    resource::v1::Resource,
    trace::v1::{span::Event, Span, Status},
};

use crate::{
    context::{
        Context, DataPoint, DataPointContext, LogContext, MetricContext, ProfileContext, ResourceContext, ScopeContext,
        SpanContext, SpanEventContext,
    },
    Compiler, ErrorMode, Registry, Statements, Value,
};

fn kv(k: &str, v: any_value::Value) -> KeyValue {
    KeyValue { key: k.into(), value: Some(AnyValue { value: Some(v) }), ..Default::default() }
}
fn s(v: &str) -> any_value::Value {
    any_value::Value::StringValue(v.into())
}
fn i(v: i64) -> any_value::Value {
    any_value::Value::IntValue(v)
}

fn resource() -> Resource {
    Resource { attributes: vec![kv("env", s("prod")), kv("service.name", s("api"))], ..Default::default() }
}
fn scope() -> InstrumentationScope {
    InstrumentationScope { name: "lib".into(), version: "1.0".into(), ..Default::default() }
}

fn span_ctx() -> SpanContext {
    SpanContext {
        resource: resource(),
        scope: scope(),
        span: Span {
            name: "GET /users".into(),
            kind: 2,
            trace_id: (1..=16).collect(),
            span_id: (1..=8).collect(),
            start_time_unix_nano: 1_000,
            end_time_unix_nano: 3_500,
            attributes: vec![
                kv("http.method", s("GET")),
                kv("http.status_code", i(200)),
                kv("card", s("4111-1111-1111-1111")),
                kv("user.email", s("a@b.c")),
            ],
            status: Some(Status { code: 0, message: String::new() }),
            ..Default::default()
        },
        cache: Default::default(),
    }
}

/// Reads a value expression (a path, or a literal for the expected side) on `ctx`.
fn read<C: Context>(ctx: &C, expr: &str) -> Value {
    let r = Registry::standard();
    Compiler::new(&r).value::<C>(expr).unwrap_or_else(|e| panic!("{expr}: {e}")).eval(ctx).unwrap()
}

fn run<C: Context>(ctx: &mut C, stmts: &[&str]) -> Result<(), crate::RunError> {
    let r = Registry::standard();
    let c = Compiler::new(&r);
    let list = stmts.iter().map(|s| c.statement::<C>(s).unwrap_or_else(|e| panic!("{s}: {e}"))).collect();
    Statements::new(list, ErrorMode::Propagate).execute(ctx)
}

/// (statements, path to read afterwards, expected value as an OTTL literal)
#[test]
fn span_statement_table() {
    let cases: &[(&[&str], &str, &str)] = &[
        (&[r#"set(span.name, "renamed")"#], "span.name", r#""renamed""#),
        (&[r#"set(name, "no prefix")"#], "span.name", r#""no prefix""#),
        (
            &[r#"set(span.attributes["x"], 1) where resource.attributes["env"] == "prod""#],
            r#"span.attributes["x"]"#,
            "1",
        ),
        (
            &[r#"set(span.attributes["x"], 1) where resource.attributes["env"] == "dev""#],
            r#"span.attributes["x"]"#,
            "nil",
        ),
        (&[r#"set(span.attributes["x"], nil)"#], r#"span.attributes["x"]"#, "nil"),
        (&[r#"set(span.attributes["n"]["a"], "deep")"#], r#"span.attributes["n"]"#, r#"{"a": "deep"}"#),
        (&[r#"delete_key(span.attributes, "card")"#], r#"span.attributes["card"]"#, "nil"),
        (&[r#"delete_matching_keys(span.attributes, "^http\\.")"#], "Len(span.attributes)", "2"),
        (&[r#"keep_keys(span.attributes, ["http.method", "nope"])"#], "span.attributes", r#"{"http.method": "GET"}"#),
        (&[r#"keep_matching_keys(span.attributes, "^user")"#], "span.attributes", r#"{"user.email": "a@b.c"}"#),
        (
            &[r#"limit(span.attributes, 2, ["user.email"])"#],
            "span.attributes",
            r#"{"http.method": "GET", "user.email": "a@b.c"}"#,
        ),
        (&[r#"truncate_all(span.attributes, 3)"#], r#"span.attributes["card"]"#, r#""411""#),
        (
            &[r#"replace_pattern(span.attributes["card"], "\\d{4}-", "****-")"#],
            r#"span.attributes["card"]"#,
            r#""****-****-****-1111""#,
        ),
        (&[r#"replace_pattern(span.name, "^(GET) (.*)$", "$2 via $1")"#], "span.name", r#""/users via GET""#),
        (
            &[r#"replace_all_patterns(span.attributes, "value", "@.*", "@x")"#],
            r#"span.attributes["user.email"]"#,
            r#""a@x""#,
        ),
        (
            &[r#"replace_all_patterns(span.attributes, "key", "^http\\.", "h.")"#],
            r#"span.attributes["h.method"]"#,
            r#""GET""#,
        ),
        (&[r#"replace_match(span.name, "GET /*", "GET /{path}")"#], "span.name", r#""GET /{path}""#),
        (&[r#"replace_match(span.name, "POST *", "x")"#], "span.name", r#""GET /users""#),
        (
            &[r#"replace_all_matches(span.attributes, "*@*", "redacted")"#],
            r#"span.attributes["user.email"]"#,
            r#""redacted""#,
        ),
        (
            &[r#"merge_maps(span.attributes, {"http.method": "PUT", "new": 1}, "insert")"#],
            r#"[span.attributes["http.method"], span.attributes["new"]]"#,
            r#"["GET", 1]"#,
        ),
        (
            &[r#"merge_maps(span.attributes, {"http.method": "PUT", "new": 1}, "update")"#],
            r#"[span.attributes["http.method"], span.attributes["new"]]"#,
            r#"["PUT", nil]"#,
        ),
        (
            &[r#"merge_maps(span.attributes, {"http.method": "PUT", "new": 1}, "upsert")"#],
            r#"[span.attributes["http.method"], span.attributes["new"]]"#,
            r#"["PUT", 1]"#,
        ),
        (
            &[r#"set(cache["m"], {"a": {"b": 1, "c": [2, 3]}})"#, r#"flatten(cache["m"])"#],
            r#"cache["m"]"#,
            r#"{"a.b": 1, "a.c.0": 2, "a.c.1": 3}"#,
        ),
        (
            &[r#"set(cache["m"], {"a": {"b": {"c": 1}}})"#, r#"flatten(cache["m"], "p", depth = 1)"#],
            r#"cache["m"]"#,
            r#"{"p.a.b": {"c": 1}}"#,
        ),
        (
            &[r#"append(span.attributes["l"], "a")"#, r#"append(span.attributes["l"], values = [1, 2])"#],
            r#"span.attributes["l"]"#,
            r#"["a", 1, 2]"#,
        ),
        (&[r#"append(span.attributes["http.method"], "x")"#], r#"span.attributes["http.method"]"#, r#"["GET", "x"]"#),
        (&[r#"set(span.kind, SPAN_KIND_CLIENT) where span.kind == SPAN_KIND_SERVER"#], "span.kind", "3"),
        (&[r#"set(span.status.code, STATUS_CODE_ERROR)"#], "span.status.code", "2"),
        (&[r#"set(span.attributes["d"], span.end_time - span.start_time)"#], r#"span.attributes["d"]"#, "2500"),
        (&[r#"set(span.attributes["d"], span.end_time_unix_nano / 1000 * 2 + 1)"#], r#"span.attributes["d"]"#, "7"),
        (
            &[r#"set(span.attributes["t"], span.trace_id.string)"#],
            r#"span.attributes["t"]"#,
            r#""0102030405060708090a0b0c0d0e0f10""#,
        ),
        (&[r#"set(span.span_id, SpanID(0x0000000000000009))"#], "span.span_id.string", r#""0000000000000009""#),
        (
            &[r#"set(cache["k"], "card")"#, r#"set(span.attributes[cache["k"]], "dyn")"#],
            r#"span.attributes["card"]"#,
            r#""dyn""#,
        ),
        (
            &[r#"set(span.attributes["u"], ToUpperCase(Split(span.name, " ")[1]))"#],
            r#"span.attributes["u"]"#,
            r#""/USERS""#,
        ),
        (
            &[r#"set(span.attributes["c"], Concat([span.name, 1, 1.5, true, nil], "|"))"#],
            r#"span.attributes["c"]"#,
            r#""GET /users|1|1.5|true|<nil>""#,
        ),
        (&[r#"set(resource.attributes["touched"], true)"#], r#"resource.attributes["touched"]"#, "true"),
        (&[r#"set(instrumentation_scope.name, "other")"#], "scope.name", r#""other""#),
        (
            &[r#"set(span.attributes["i"], Int("42"))"#, r#"set(span.attributes["s"], String(42))"#],
            r#"[span.attributes["i"], span.attributes["s"]]"#,
            r#"[42, "42"]"#,
        ),
        (
            &[r#"set(span.name, "m") where IsMatch(span.attributes["http.method"], "^G") and not IsString(span.kind)"#],
            "span.name",
            r#""m""#,
        ),
    ];
    for (stmts, path, want) in cases {
        let mut ctx = span_ctx();
        run(&mut ctx, stmts).unwrap_or_else(|e| panic!("{stmts:?}: {e}"));
        let got = read(&ctx, path);
        let want = read(&ctx, want);
        assert!(got.ottl_eq(&want), "{stmts:?}: {path} = {got:?}, want {want:?}");
    }
}

#[test]
fn sha256_and_replace_with_function() {
    let mut ctx = span_ctx();
    run(&mut ctx, &[r#"set(span.attributes["card"], SHA256(span.attributes["card"]))"#]).unwrap();
    let card = crate::value::hex(&<sha2::Sha256 as sha2::Digest>::digest(b"4111-1111-1111-1111"));
    assert_eq!(read(&ctx, r#"span.attributes["card"]"#), Value::String(card));
    run(&mut ctx, &[r#"replace_pattern(span.name, "/(users)", "$1", SHA256, "/h:%s")"#]).unwrap();
    let digest = crate::value::hex(&<sha2::Sha256 as sha2::Digest>::digest(b"users"));
    assert_eq!(ctx.span.name, format!("GET /h:{digest}"));
}

/// (condition, expected) on `span_ctx()`: the comparison rules and boolean logic.
#[test]
fn condition_table() {
    let cases = [
        (r#"span.name == "GET /users""#, true),
        (r#"name != "GET /users""#, false),
        (r#"span.attributes["http.status_code"] == 200.0"#, true),
        (r#"span.attributes["http.status_code"] >= 200 and span.attributes["http.status_code"] < 300"#, true),
        (r#"span.attributes["http.status_code"] == "200""#, false),
        (r#"span.attributes["http.status_code"] != "200""#, true),
        (r#"span.attributes["http.status_code"] > "100""#, false),
        (r#"span.attributes["missing"] == nil"#, true),
        (r#"span.attributes["missing"] != nil"#, false),
        (r#"span.attributes["missing"] < 1"#, false),
        (r#""a" < "b""#, true),
        (r#"false < true"#, true),
        (r#"1 == 1 or span.attributes["x"]["y"] == 1"#, true),
        (r#"not (1 == 1 and 2 == 3)"#, true),
        (r#"(1 + 2) * 3 == 9"#, true),
        (r#"span.kind == SPAN_KIND_SERVER"#, true),
        (r#"span.trace_id == TraceID(0x0102030405060708090a0b0c0d0e0f10)"#, true),
        (r#"span.end_time - span.start_time > span.end_time - span.end_time"#, true),
        (r#"IsMatch(resource.attributes["service.name"], "^ap")"#, true),
        (r#"Len(span.attributes) == 4"#, true),
        (r#"true"#, true),
        (r#"{"a": 1} == {"a": 1}"#, true),
        (r#"[1, 2] == [1, 2.0]"#, true),
        (r#"0x01 == 0x01"#, true),
    ];
    let r = Registry::standard();
    let c = Compiler::new(&r);
    let ctx = span_ctx();
    for (src, want) in cases {
        let cond = c.condition::<SpanContext>(src).unwrap_or_else(|e| panic!("{src}: {e}"));
        assert_eq!(cond.eval(&ctx).unwrap(), want, "{src}");
    }
}

/// Short-circuit: the failing right side is never evaluated.
#[test]
fn conditions_short_circuit() {
    let r = Registry::standard();
    let c = Compiler::new(&r);
    let ctx = span_ctx();
    let boom = r#"Substring(span.name, 0, 999) == "x""#;
    assert!(c.condition::<SpanContext>(boom).unwrap().eval(&ctx).is_err());
    assert!(c.condition::<SpanContext>(&format!("true or {boom}")).unwrap().eval(&ctx).unwrap());
    assert!(!c.condition::<SpanContext>(&format!("false and {boom}")).unwrap().eval(&ctx).unwrap());
}

/// Compile errors carry line:col.
#[test]
fn compile_error_table() {
    let cases = [
        (r#"set(span.attributes["a"], Sha256("x"))"#, r#"1:27: unknown function "Sha256""#),
        (r#"sett(span.name, "x")"#, r#"1:1: unknown function "sett""#),
        (r#"set(span.nope, "x")"#, r#"1:5: unknown path "span.nope" in context span"#),
        (r#"set(span.name, "x") where span.kind == SPAN_KIND_NOPE"#, r#"1:40: unknown enum symbol "SPAN_KIND_NOPE""#),
        (r#"set("x", "y")"#, r#"1:5: argument "target" of "set" must be a path"#),
        (r#"set(metric.type, 1)"#, r#"1:5: unknown path "metric.type" in context span"#),
        (r#"set(span.name)"#, r#"1:1: "set" is missing required argument "value""#),
        (r#"set(span.name, "a", "b")"#, r#"1:21: "set" takes at most 2 arguments, got 3"#),
        (r#"set(span.name, valu = "a")"#, r#"1:16: "set" has no parameter named "valu""#),
        (r#"set(span.name, "a", target = span.name)"#, r#"1:21: argument "target" of "set" given twice"#),
        (r#"delete_key(span.attributes, 1)"#, r#"1:29: argument "key" of "delete_key" must be a string"#),
        (r#"replace_pattern(span.name, "(", "x")"#, "1:28: invalid regex"),
        (r#"replace_pattern(span.name, "a", "x", Nope)"#, r#"1:38: unknown function "Nope""#),
        (
            r#"set(span.name, IsMatch(span.name, span.name))"#,
            r#"1:35: argument "pattern" of "IsMatch" must be a string literal"#,
        ),
        (r#"set(span.name, Concat(["a"]))"#, r#"1:16: "Concat" is missing required argument "delimiter""#),
        ("set(span.name, \"x\") where\n  span.name = 1", "2:3: a condition must be a comparison"),
    ];
    let r = Registry::standard();
    let c = Compiler::new(&r);
    for (src, want) in cases {
        let err = c.statement::<SpanContext>(src).err().unwrap_or_else(|| panic!("{src} compiled"));
        assert!(err.to_string().starts_with(want), "{src}: got {err}, want {want}");
    }
}

#[test]
fn error_modes() {
    let r = Registry::standard();
    let c = Compiler::new(&r);
    let stmts = || {
        vec![
            c.statement::<SpanContext>(r#"set(span.name, Substring(span.name, 0, 999))"#).unwrap(),
            c.statement::<SpanContext>(r#"set(span.attributes["after"], true)"#).unwrap(),
        ]
    };
    for (mode, want_err, want_after, want_reports) in [
        (ErrorMode::Propagate, true, Value::Nil, 0),
        (ErrorMode::Ignore, false, Value::Bool(true), 1),
        (ErrorMode::Silent, false, Value::Bool(true), 0),
    ] {
        let mut ctx = span_ctx();
        let mut reports = 0;
        let res = Statements::new(stmts(), mode).execute_reporting(&mut ctx, &mut |_| reports += 1);
        assert_eq!(res.is_err(), want_err, "{mode:?}");
        assert_eq!(read(&ctx, r#"span.attributes["after"]"#), want_after, "{mode:?}");
        assert_eq!(reports, want_reports, "{mode:?}");
    }
    let mut ctx = span_ctx();
    let err = Statements::new(stmts(), ErrorMode::Propagate).execute(&mut ctx).unwrap_err();
    assert!(err.to_string().starts_with("failed to execute statement: set(span.name"), "{err}");
}

#[test]
fn group_conditions_gate_statements() {
    let r = Registry::standard();
    let c = Compiler::new(&r);
    for (cond, want) in [(r#"resource.attributes["env"] == "prod""#, "x"), (r#"span.kind == 1"#, "GET /users")] {
        let mut g = Statements::new(vec![c.statement(r#"set(span.name, "x")"#).unwrap()], ErrorMode::Propagate);
        g.conditions.push(c.condition(cond).unwrap());
        let mut ctx = span_ctx();
        g.execute(&mut ctx).unwrap();
        assert_eq!(ctx.span.name, want, "{cond}");
    }
}

/// Run-time errors of editors and converters.
#[test]
fn eval_error_table() {
    let cases = [
        r#"limit(span.attributes, -1, [])"#,
        r#"limit(span.attributes, 1, ["a", "b"])"#,
        r#"truncate_all(span.attributes, -1)"#,
        r#"set(span.name, 1)"#,
        r#"set(span.kind, "x")"#,
        r#"set(span.trace_id, 0x01)"#,
        r#"set(span.attributes["x"], 1 / 0)"#,
        r#"set(span.attributes["x"], 1 + 1.0)"#,
        r#"merge_maps(span.attributes, {}, "nope")"#,
        r#"replace_all_patterns(span.attributes, "both", "a", "b")"#,
        r#"set(span.attributes["x"], Len(1))"#,
        r#"set(span.attributes["x"], Split(span.name, " ")[5])"#,
        r#"set(span.attributes["http.method"]["x"], 1)"#,
        r#"append(span.attributes["l"])"#,
    ];
    for src in cases {
        let mut ctx = span_ctx();
        assert!(run(&mut ctx, &[src]).is_err(), "{src} should fail at run time");
    }
}

/// (context, statement, path, expected literal) for every context's paths.
#[test]
fn context_paths() {
    // resource, scope
    let mut r = ResourceContext { resource: resource(), cache: Default::default() };
    run(&mut r, &[r#"set(attributes["a"], "b")"#, r#"set(resource.dropped_attributes_count, 3)"#]).unwrap();
    assert_eq!(read(&r, r#"resource.attributes["a"]"#), Value::from("b"));
    assert_eq!(r.resource.dropped_attributes_count, 3);
    let mut sc = ScopeContext { resource: resource(), scope: scope(), cache: Default::default() };
    run(&mut sc, &[r#"set(instrumentation_scope.version, Concat([version, "x"], "-"))"#]).unwrap();
    assert_eq!(sc.scope.version, "1.0-x");

    // spanevent, with its span reachable
    let mut ev = SpanEventContext {
        resource: resource(),
        scope: scope(),
        span: span_ctx().span,
        event: Event { name: "exception".into(), time_unix_nano: 5, ..Default::default() },
        cache: Default::default(),
    };
    run(
        &mut ev,
        &[r#"set(spanevent.attributes["span"], span.name) where spanevent.name == "exception" and spanevent.time_unix_nano == 5"#],
    )
    .unwrap();
    assert_eq!(read(&ev, r#"spanevent.attributes["span"]"#), Value::from("GET /users"));

    // log
    let mut log = LogContext {
        resource: resource(),
        scope: scope(),
        log: LogRecord {
            severity_number: 17,
            severity_text: "ERROR".into(),
            body: Some(AnyValue { value: Some(s("user=bob password=hunter2")) }),
            ..Default::default()
        },
        cache: Default::default(),
    };
    run(
        &mut log,
        &[
            r#"replace_pattern(log.body, "password=\\S+", "password=***")"#,
            r#"set(log.severity_number, SEVERITY_NUMBER_WARN) where log.severity_number >= SEVERITY_NUMBER_ERROR"#,
            r#"set(log.attributes["len"], Len(log.body.string))"#,
            r#"set(log.time, log.observed_time)"#,
        ],
    )
    .unwrap();
    assert_eq!(read(&log, "log.body"), Value::from("user=bob password=***"));
    assert_eq!(log.log.severity_number, 13);
    assert_eq!(read(&log, r#"log.attributes["len"]"#), Value::Int(21));

    // metric
    let sum = Metric {
        name: "requests".into(),
        data: Some(Data::Sum(Sum { aggregation_temporality: 2, is_monotonic: true, data_points: vec![] })),
        ..Default::default()
    };
    let mut m = MetricContext { resource: resource(), scope: scope(), metric: sum.clone(), ..Default::default() };
    run(
        &mut m,
        &[
            r#"set(metric.name, Concat([metric.name, "total"], "_")) where metric.type == METRIC_DATA_TYPE_SUM"#,
            r#"set(metric.aggregation_temporality, AGGREGATION_TEMPORALITY_DELTA) where metric.is_monotonic == true"#,
        ],
    )
    .unwrap();
    assert_eq!(m.metric.name, "requests_total");
    assert_eq!(read(&m, "metric.aggregation_temporality"), Value::Int(1));

    // datapoint: number and histogram
    let mut dp = DataPointContext {
        resource: resource(),
        scope: scope(),
        metric: sum,
        datapoint: DataPoint::Number(NumberDataPoint {
            attributes: vec![kv("host", s("h1")), kv("pod", s("p1"))],
            value: Some(number_data_point::Value::AsInt(7)),
            ..Default::default()
        }),
        ..Default::default()
    };
    run(
        &mut dp,
        &[
            r#"keep_keys(datapoint.attributes, ["host"]) where metric.name == "requests""#,
            r#"set(datapoint.value_double, 1.5) where datapoint.value_int == 7"#,
        ],
    )
    .unwrap();
    assert_eq!(read(&dp, "datapoint.attributes"), read(&dp, r#"{"host": "h1"}"#));
    assert_eq!(read(&dp, "datapoint.value_double"), Value::Double(1.5));
    dp.datapoint = DataPoint::Histogram(HistogramDataPoint {
        count: 3,
        sum: Some(6.0),
        bucket_counts: vec![1, 2],
        explicit_bounds: vec![1.0],
        ..Default::default()
    });
    run(&mut dp, &[r#"set(datapoint.explicit_bounds, [2.0]) where datapoint.count == 3 and datapoint.sum > 5"#])
        .unwrap();
    assert_eq!(read(&dp, "datapoint.explicit_bounds"), read(&dp, "[2.0]"));
    assert_eq!(read(&dp, "datapoint.bucket_counts"), read(&dp, "[1, 2]"));
    assert!(run(&mut dp, &[r#"set(datapoint.value_int, 1)"#]).is_err());
}

/// Profiles: a changed attribute appends dictionary entries, never edits shared ones.
#[test]
fn profile_attributes_append_to_the_dictionary() {
    let dictionary = ProfilesDictionary {
        string_table: vec![String::new(), "process.pid".into(), "thread.name".into()],
        attribute_table: vec![
            KeyValueAndUnit::default(),
            KeyValueAndUnit { key_strindex: 1, value: Some(AnyValue { value: Some(i(42)) }), unit_strindex: 0 },
            KeyValueAndUnit { key_strindex: 2, value: Some(AnyValue { value: Some(s("main")) }), unit_strindex: 0 },
        ],
        ..Default::default()
    };
    let mut p = ProfileContext {
        dictionary,
        resource: resource(),
        scope: scope(),
        profile: Profile { attribute_indices: vec![1, 2], time_unix_nano: 10, duration_nano: 5, ..Default::default() },
        cache: Default::default(),
    };
    let shared_before = p.dictionary.attribute_table.clone();
    run(
        &mut p,
        &[
            r#"set(profile.attributes["thread.name"], "worker") where profile.attributes["process.pid"] == 42"#,
            r#"set(profile.attributes["new.key"], "v")"#,
            r#"set(resource.attributes["service.name"], "renamed")"#,
        ],
    )
    .unwrap();
    // The entries other profiles may share are untouched.
    assert_eq!(&p.dictionary.attribute_table[..3], &shared_before[..]);
    assert_eq!(p.profile.attribute_indices, vec![1, 3, 4]);
    assert_eq!(
        read(&p, "profile.attributes"),
        read(&p, r#"{"process.pid": 42, "thread.name": "worker", "new.key": "v"}"#)
    );
    assert_eq!(p.dictionary.string_table.last().map(String::as_str), Some("new.key"));
    // Writing back an identical attribute re-uses its entry.
    run(&mut p, &[r#"set(profile.attributes["process.pid"], 42)"#]).unwrap();
    assert_eq!(p.dictionary.attribute_table.len(), 5);
    assert_eq!(read(&p, "profile.time + profile.duration"), Value::Time(15));
}

#[test]
fn cache_is_per_context_value() {
    let mut ctx = span_ctx();
    run(&mut ctx, &[r#"set(cache["a"], span.name)"#, r#"set(span.attributes["from_cache"], span.cache["a"])"#])
        .unwrap();
    assert_eq!(read(&ctx, r#"span.attributes["from_cache"]"#), Value::from("GET /users"));
}

/// Map editors on an attribute list change it in place; on any other map (the cache) they go
/// through `Value`. Both ways give the same keys, in the same order.
#[test]
fn map_editors_agree_in_place_and_through_values() {
    for editor in [
        r#"delete_key({t}, "http.status_code")"#,
        r#"delete_matching_keys({t}, "^http\\.")"#,
        r#"keep_keys({t}, ["user", "http.method"])"#,
        r#"keep_matching_keys({t}, "^http\\.")"#,
    ] {
        let mut ctx = span_ctx();
        let copy = r#"set(cache["m"], span.attributes)"#.to_string();
        run(
            &mut ctx,
            &[copy.as_str(), &editor.replace("{t}", "span.attributes"), &editor.replace("{t}", r#"cache["m"]"#)],
        )
        .unwrap();
        let in_place: Vec<String> = ctx.span.attributes.iter().map(|kv| kv.key.clone()).collect();
        let Value::Map(m) = read(&ctx, r#"cache["m"]"#) else { panic!("{editor}: the cache holds a map") };
        let through_values: Vec<String> = m.iter().map(|(k, _)| k.to_string()).collect();
        assert_eq!(in_place, through_values, "{editor}");
        assert!(in_place.len() < span_ctx().span.attributes.len(), "{editor} removed something: {in_place:?}");
    }
}

#[test]
fn attribute_equality_is_the_general_comparison() {
    let ctx = span_ctx();
    for (cond, want) in [
        (r#"span.attributes["http.method"] == "GET""#, true),
        (r#""GET" == span.attributes["http.method"]"#, true),
        (r#"span.attributes["http.method"] != "GET""#, false),
        (r#"span.attributes["http.status_code"] == "200""#, false),
        (r#"span.attributes["http.status_code"] != "200""#, true),
        (r#"span.attributes["missing"] == "x""#, false),
        (r#"span.attributes["missing"] != "x""#, true),
        (r#"resource.attributes["env"] == "prod""#, true),
    ] {
        let registry = Registry::standard();
        let c = Compiler::new(&registry).condition::<SpanContext>(cond).unwrap();
        assert_eq!(c.eval(&ctx).unwrap(), want, "{cond}");
    }
}
