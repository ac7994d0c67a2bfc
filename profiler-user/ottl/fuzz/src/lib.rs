//! What the OTTL fuzz targets share: turning fuzz input into an OTLP request, and building the
//! real `transform` processor from a config, the way the collector does at config load.
//!
//! The targets go through the processor (not through `otelprof-ottl` alone) because that is
//! where statements meet hostile data: the processor walks each record into its context
//! (`walk.rs`), resolves profile dictionaries and removes what a statement emptied. A bug
//! anywhere on that path is what an agent receiving arbitrary OTLP would hit.

use std::sync::Arc;

use otelprof_collector::{
    component::{ComponentId, Host, Processor, ProcessorFactory},
    consumer::{ConsumeError, Consumer},
    processor::ottl::transform::TransformFactory,
    signal::{Data, Signal},
};

/// Makes a stack overflow a reported crash with a reproducer. Call it from the targets' `init`.
///
/// libFuzzer's SIGSEGV handler runs on the overflowing stack unless the signal was already
/// set to use an alternate one (AddressSanitizer does that; we build without sanitizers,
/// see DEVELOPERS.md). Without this, a stack overflow kills the process with a bare
/// "Segmentation fault" and no `crash-…` file. libFuzzer keeps `SA_ONSTACK` when it installs
/// its handler, so marking the default disposition is enough.
pub fn catch_stack_overflows() {
    const SIZE: usize = 256 << 10;
    // Leaked on purpose: the alternate stack must live as long as the process.
    let stack: &'static mut [u8] = Box::leak(vec![0u8; SIZE].into_boxed_slice());
    // SAFETY: `stack` is valid for `SIZE` bytes for the rest of the process; the sigaction
    // struct is fully initialised (zeroed, then the handler and flags set).
    unsafe {
        let ss = libc::stack_t { ss_sp: stack.as_mut_ptr().cast(), ss_flags: 0, ss_size: SIZE };
        if libc::sigaltstack(&ss, std::ptr::null_mut()) != 0 {
            eprintln!("catch_stack_overflows: sigaltstack failed: {}", std::io::Error::last_os_error());
            return;
        }
        for sig in [libc::SIGSEGV, libc::SIGBUS] {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = libc::SIG_DFL;
            sa.sa_flags = libc::SA_ONSTACK;
            if libc::sigaction(sig, &sa, std::ptr::null_mut()) != 0 {
                eprintln!("catch_stack_overflows: sigaction({sig}) failed: {}", std::io::Error::last_os_error());
            }
        }
    }
}

/// The signal a selector byte picks: its two low bits, so every byte value maps to one.
pub fn signal_of(selector: u8) -> Signal {
    Signal::ALL[usize::from(selector & 3)]
}

/// `selector byte ‖ protobuf request`: the selector picks which request type the rest decodes
/// as. `None` when the bytes are not that request (libFuzzer then moves on; the seeds in
/// `corpus/evaluate/` are valid requests, so mutations start from decodable ones).
pub fn decode(data: &[u8]) -> Option<Data> {
    let (&selector, rest) = data.split_first()?;
    Data::decode(signal_of(selector), rest).ok()
}

/// The end of the pipeline: encodes what it gets, as an exporter would, and drops it.
/// Encoding is part of the check: a processor that leaves a request prost cannot encode
/// (it always can today) or that takes unbounded time to encode shows up here.
pub struct Encode;

impl Consumer for Encode {
    fn consume(&self, data: Data) -> Result<(), ConsumeError> {
        std::hint::black_box(data.encode_to_vec());
        Ok(())
    }
}

/// A transform processor for each signal, built from `config` (the `processors.transform`
/// YAML value) through the factory, feeding [`Encode`].
pub struct Transform {
    by_signal: Vec<Arc<dyn Processor>>,
}

impl Transform {
    /// Builds the processor; `Err` is the config error (a statement that does not compile).
    pub fn new(config: serde_yaml::Value) -> Result<Self, String> {
        let id = ComponentId::parse("transform/fuzz")?;
        let build = TransformFactory.create(&id, config, "processors.transform/fuzz").map_err(|e| e.to_string())?;
        let host = Host::new(std::time::Duration::from_secs(1));
        let next: Arc<dyn Consumer> = Arc::new(Encode);
        let by_signal = Signal::ALL
            .iter()
            .map(|&s| build.build(s, next.clone(), &host).map_err(|e| e.to_string()))
            .collect::<Result<_, _>>()?;
        Ok(Transform { by_signal })
    }

    /// Runs the request through the processor of its signal. A refusal (`error_mode:
    /// propagate`) is a normal outcome; only a panic or a hang is a finding.
    pub fn consume(&self, data: Data) {
        let _ = self.by_signal[data.signal().index()].consume(data);
    }
}

/// The fixed statements of the `evaluate` target: every editor, most converters, and every
/// writable kind of path (attributes, bodies, names, IDs, times, data point values, the
/// profile dictionary), reading values from the record wherever a parameter takes one, so
/// the input decides the strings, ints, formats and indexes the functions get.
///
/// `error_mode: ignore`: a statement failing on a record must not stop the ones after it.
///
/// Statements commented out with a finding number crash on inputs the fuzzer finds within
/// seconds, in code outside the OTTL core (`funcs/`): they stay off so CI's fuzz step keeps
/// looking for new bugs, and come back with the fix (the findings file has the reproducers).
pub const STATEMENTS: &str = r##"
error_mode: ignore
trace_statements:
  - set(span.attributes["name"], span.name)
  - set(span.attributes["json"], ParseJSON(span.name)) where IsMatch(span.name, "^[\\[{]")
  - merge_maps(span.attributes, ParseJSON(span.attributes["payload"]), "upsert")
  - set(span.attributes["kv"], ParseKeyValue(span.name, "=", "&"))
  - set(span.attributes["csv"], ParseCSV(span.name, span.status.message, ","))
  - set(span.attributes["url"], URL(span.name))
  - set(span.attributes["parts"], Split(span.name, "/"))
  - set(span.attributes["sub"], Substring(span.name, span.kind, span.flags))
  - set(span.attributes["fmt"], Format(span.status.message, [span.name, span.kind, span.start_time, span.attributes]))
  - set(span.attributes["pat"], ExtractPatterns(span.name, "(?P<verb>[A-Z]+) (?P<path>\\S+)"))
  - set(span.attributes["int"], ParseInt(span.name, span.flags))
  - set(span.attributes["i"], Int(span.attributes["name"]))
  - set(span.attributes["d"], Double(span.status.message))
  - set(span.attributes["h"], Hex(span.attributes["int"]))
  - set(span.attributes["hash"], SHA256(span.name))
  - set(span.attributes["fnv"], FNV(span.name))
  - set(span.attributes["m3"], Murmur3Hash128(span.name))
  - set(span.attributes["xx"], XXH128(span.trace_id.string))
  - set(span.attributes["b64"], Base64Decode(span.name))
  - set(span.attributes["dec"], Decode(span.name, span.status.message))
  - set(span.attributes["case"], ConvertCase(span.name, "snake"))
  - set(span.attributes["camel"], ToCamelCase(span.name))
  - set(span.attributes["trim"], Trim(span.name, span.status.message))
  - set(span.attributes["luhn"], IsValidLuhn(span.name))
  - set(span.attributes["cidr"], IsInCIDR(span.name, ["10.0.0.0/8", span.status.message]))
  - set(span.attributes["dur"], span.end_time - span.start_time)
  - set(span.attributes["durs"], Seconds(span.end_time - span.start_time))
  - set(span.attributes["when"], FormatTime(span.start_time, span.status.message))
  - set(span.attributes["parsed"], Time(span.name, span.status.message))
  - set(span.attributes["trunc"], TruncateTime(span.start_time, Duration(span.status.message)))
  - set(span.attributes["unix"], Unix(span.start_time_unix_nano, span.end_time_unix_nano))
  - set(span.attributes["cal"], [Year(span.start_time), Month(span.end_time), Weekday(span.start_time), Hour(span.end_time)])
  - set(span.attributes["math"], span.attributes["int"] * span.kind / span.flags - span.dropped_events_count)
  - set(span.attributes["fmath"], span.attributes["d"] / Double(span.kind))
  - set(span.attributes["keys"], Keys(span.attributes))
  - set(span.attributes["sorted"], Sort(Values(span.attributes)))
  - set(span.attributes["index"], Index(span.name, span.status.message))
  - set(span.attributes["m"], SliceToMap(span.attributes["list"], ["k"]))
  - set(span.attributes["kvs"], ToKeyValueString(span.attributes["kv"], "=", " ", true))
  - set(span.attributes["len"], Len(span.attributes))
  - 'set(span.attributes["sev"], ParseSeverity(span.kind, {"error": [2, 3], "info": [{"min": 0, "max": 1}]}))'
  - set(span.attributes["all"], span.attributes)
  - append(span.attributes["list"], span.name)
  - append(span.attributes["list"], values = [span.kind, span.attributes["keys"]])
  - delete_index(span.attributes["list"], span.kind, span.flags)
  - flatten(span.attributes, span.status.message, span.kind)
  - stringify_all(span.attributes)
  - replace_pattern(span.name, "([0-9]+)", "{$1}")
  - replace_pattern(span.status.message, "(.)", "$1$1", SHA1, "%s")
  - replace_all_patterns(span.attributes, "key", "\\.", "_")
  - replace_all_patterns(span.attributes, "value", "^(.*)$", "$1-$1")
  - replace_match(span.name, "GET *", "GET {route}")
  - replace_all_matches(span.attributes, "*[0-9]*", "n")
  - truncate_all(span.attributes, span.kind)
  - limit(span.attributes, span.flags, ["name", span.name])
  - keep_matching_keys(span.attributes, "^[a-z]")
  - delete_matching_keys(span.attributes, "^_")
  - delete_key(span.attributes, span.name)
  - keep_keys(resource.attributes, ["service.name", span.name])
  - set(span.trace_id, TraceID(span.parent_span_id)) where Len(span.parent_span_id) == 16
  - set(span.span_id.string, Substring(span.trace_id.string, 0, 16))
  - set(span.parent_span_id, SpanID(Base64Decode(span.name)))
  - set(span.end_time, span.start_time + Duration(span.name))
  - set(span.start_time_unix_nano, span.end_time_unix_nano - span.dropped_attributes_count)
  - set(span.status.code, STATUS_CODE_ERROR) where span.kind == SPAN_KIND_SERVER and not IsMatch(span.name, "ok")
  - set(span.kind, span.status.code) where span.attributes["kind"] == nil or span.kind > 5
  - set(span.name, Concat([span.name, span.kind, span.trace_state], "/"))
  - set(span.trace_state, ToLowerCase(span.trace_state))
  - set(spanevent.attributes["n"], Len(spanevent.attributes))
  - set(spanevent.name, Concat([span.name, spanevent.name], ":"))
  - set(spanevent.time, spanevent.time + Duration(spanevent.name))
  - flatten(spanevent.attributes)
  - set(resource.attributes["spans"], span.name)
  - set(scope.name, ToUpperCase(scope.name))
  - set(cache["a"], span.attributes)
  - set(cache["a"]["b"][0], span.name)
  - set(span.attributes["cached"], cache["a"][span.name])
  - context: resource
    conditions: ['resource.attributes["tenant"] == nil', 'IsMap(resource.attributes["x"])']
    statements:
      - set(resource.attributes["tenant"], Coalesce([resource.attributes["team"], "default"]))
      - merge_maps(resource.attributes, resource.attributes["x"], "insert")
      - limit(resource.attributes, 8, [])
  - context: scope
    statements:
      - set(scope.version, Concat([scope.name, scope.version], "@"))
      - set(scope.attributes["dropped"], scope.dropped_attributes_count)
    error_mode: propagate
metric_statements:
  - set(metric.description, Format("%s in %s", [metric.name, metric.unit]))
  - set(metric.name, Concat(["app", metric.name], "."))
  - set(metric.unit, "%") where metric.type == METRIC_DATA_TYPE_GAUGE
  - set(metric.aggregation_temporality, AGGREGATION_TEMPORALITY_DELTA) where metric.type == METRIC_DATA_TYPE_SUM
  - set(metric.metadata["t"], metric.type)
  - set(datapoint.attributes["svc"], resource.attributes["service.name"])
  - set(datapoint.attributes["v"], datapoint.value_int * 2)
  - set(datapoint.value_int, datapoint.value_int / datapoint.attributes["div"])
  - set(datapoint.value_double, datapoint.value_double * datapoint.value_double)
  - set(datapoint.count, datapoint.count + 1)
  - set(datapoint.sum, datapoint.sum / Double(datapoint.count))
  - set(datapoint.bucket_counts, [1, 2, datapoint.count])
  - set(datapoint.explicit_bounds, [0.5, datapoint.sum])
  - set(datapoint.scale, datapoint.scale - 1)
  - set(datapoint.zero_count, datapoint.zero_count)
  - set(datapoint.positive.offset, datapoint.negative.offset + 1)
  - set(datapoint.positive.bucket_counts, datapoint.negative.bucket_counts)
  - set(datapoint.start_time, datapoint.time - Duration("1m"))
  - set(datapoint.attributes["t"], FormatTime(datapoint.time, "%Y-%m-%dT%H:%M:%S.%L"))
  - delete_key(datapoint.attributes, "cpu") where datapoint.value_double > 0.5
  - keep_keys(datapoint.attributes, Keys(metric.metadata))
log_statements:
  - set(log.attributes["body"], log.body)
  - set(log.body, ParseJSON(log.body)) where IsString(log.body) and HasPrefix(log.body, "{")
  - set(log.attributes["kv"], ParseKeyValue(log.body.string))
  - 'set(log.severity_number, ParseSeverity(log.severity_text, {"error": ["ERR", "E"], "warn": ["WARN"], "info": [{"min": 200, "max": 299}]}))'
  - set(log.severity_text, "WARN") where log.severity_number >= SEVERITY_NUMBER_WARN
  - set(log.attributes["first"], Split(log.body.string, " ")[0])
  - set(log.attributes["path"], log.body["a"]["b"][1])
  - set(log.body["x"], log.attributes) where IsMap(log.body)
  - set(log.time, Time(log.severity_text, log.event_name))
  - set(log.observed_time, Now()) where log.observed_time_unix_nano == 0
  - set(log.trace_id.string, log.attributes["trace"])
  - set(log.span_id, SpanID(log.attributes["span"]))
  - set(log.attributes["uuid"], Len(UUID()))
  - replace_pattern(log.body, "user=(\\w+)", "user=${1}x")
  - replace_all_patterns(log.attributes, "value", "\\d{4}", "XXXX")
  - flatten(log.body, "b", 3, true) where IsMap(log.body)
  - truncate_all(log.attributes, 3, true, "…")
  - append(log.attributes["tags"], log.event_name)
  - delete_key(log.attributes, log.severity_text)
  - set(log.body, Base64Encode(log.body.string, "base64-url"))
  - set(log.body, Concat(Split(log.body.string, "-"), log.event_name))
  - set(log.flags, log.flags + 1)
  - set(log.dropped_attributes_count, Len(log.attributes))
profile_statements:
  - set(profile.attributes["host"], "h2") where profile.attributes["pid"] == 42
  - set(profile.attributes["name"], profile.original_payload_format)
  - set(profile.attributes["n"], Len(profile.attribute_indices))
  - set(profile.attributes["copy"], profile.attributes)
  - 'merge_maps(profile.attributes, {"a": 1, "b": profile.period}, "update")'
  - delete_key(profile.attributes, "pid")
  - limit(profile.attributes, 4, [])
  - keep_matching_keys(profile.attributes, "^[a-z]")
  - set(profile.profile_id, ProfileID(profile.original_payload)) where Len(profile.original_payload) == 16
  - set(profile.profile_id.string, Hex(profile.original_payload))
  - set(profile.time, profile.time + profile.duration)
  - set(profile.duration, Duration(profile.original_payload_format))
  - set(profile.period, profile.period * 1000)
  - set(profile.original_payload, 0x0102)
  - set(resource.attributes["p"], profile.attributes["name"])
  - set(scope.name, profile.original_payload_format)
"##;
