//! OTLP Profiles (proto 1.10, `opentelemetry.proto.profiles.v1development`).
//!
//! [`build`] turns a [`Report`] into one `ExportProfilesServiceRequest`: a shared
//! [`ProfilesDictionary`](pb::ProfilesDictionary) and one `ResourceProfiles` per process, whose
//! resource says which process, host and container it is and which service (from the process's
//! own `OTEL_SERVICE_NAME` / `OTEL_RESOURCE_ATTRIBUTES`, else `unknown_service:<executable>`). Samples are keyed by stack and
//! attributes (`thread.id`, `thread.name`, `cpu.logical_number`) and carry every sample's
//! timestamp with a value of 1 each. With off-CPU profiling a process has a second `Profile`
//! (sample and period type `off_cpu/nanoseconds`) whose values are each wait's nanoseconds off
//! CPU (weighted by 1/threshold), timestamped when the wait began; both share the dictionary.
//! [`validate`] checks the invariants consumers rely on.

mod dictionary;
mod validate;

use std::collections::{BTreeMap, HashMap};

use opentelemetry_proto::tonic::{
    collector::profiles::v1development::ExportProfilesServiceRequest,
    common::v1::{InstrumentationScope, KeyValue},
    profiles::v1development::{self as pb, ProfilesData},
    resource::v1::Resource,
};
pub use validate::validate;

use self::dictionary::{Dictionary, LocationKey, MappingKey, Value};
use super::{hex, Encoder, Report};
use otelprof_sampler::{
    aggregate::{Frame, FrameId, MappingId, ProfileType, SampleKey, SampleValue},
    process::metadata,
    symbolize::{JIT_MODULE, KERNEL_MODULE, VDSO_MODULE},
};

/// Where symbols come from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SymbolizeMode {
    /// Functions, files and lines resolved on this host.
    #[default]
    Host,
    /// No functions: locations keep their mapping and file-relative address (the file offset of
    /// the instruction) for the backend to symbolize by build ID.
    None,
}

impl SymbolizeMode {
    /// Each mode with its name, as the command line and the config spell them.
    pub const NAMES: &[(&str, SymbolizeMode)] = &[("host", Self::Host), ("none", Self::None)];
}

/// Choices that shape the OTLP output.
#[derive(Clone, Debug)]
pub struct OtlpOptions {
    pub symbolize: SymbolizeMode,
    /// Include `process.command_line` (it may hold secrets; configurable off).
    pub command_line: bool,
    /// Attributes every process's resource gets, over what the process said of itself: the
    /// host's, from resource detection. Empty in the agent, whose `resourcedetection` processor
    /// sets them on every signal (docs/design/0007); `record` passes the system detector's.
    pub resource: Vec<KeyValue>,
    /// A burst of the agent's anomaly receiver during the report: which processes were sampled
    /// at its rate, and what their profiles carry. Usually `None`.
    pub burst: Option<BurstMark>,
}

/// The processes a burst sampled at its rate (all of them, or some while the others were
/// thinned to the report's rate), that rate, and the attributes saying why (`profile.trigger:
/// anomaly`, `profile.trigger.rule`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BurstMark {
    /// `None`: every process.
    pub pids: Option<std::collections::HashSet<u32>>,
    pub frequency_hz: u64,
    pub attributes: Vec<(String, String)>,
}

impl BurstMark {
    /// Whether `pid`'s samples were taken at the burst's rate.
    pub fn covers(&self, pid: u32) -> bool {
        self.pids.as_ref().is_none_or(|p| p.contains(&pid))
    }
}

impl Default for OtlpOptions {
    fn default() -> Self {
        Self { symbolize: SymbolizeMode::Host, command_line: true, resource: Vec::new(), burst: None }
    }
}

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue { key: key.to_string(), value: Some(value.any()), key_strindex: 0 }
}

/// 16 random bytes for `profile_id` (never all zero).
fn random_id() -> Vec<u8> {
    let mut id = [0u8; 16];
    // SAFETY: writes at most 16 bytes into `id`.
    let n = unsafe { libc::getrandom(id.as_mut_ptr().cast(), id.len(), 0) };
    if n != 16 || id.iter().all(|&b| b == 0) {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(1);
        id = (t ^ (std::process::id() as u128) << 64).max(1).to_le_bytes();
    }
    id.to_vec()
}

/// The resource of one process.
fn resource(report: &Report<'_>, pid: u32, opts: &OtlpOptions, host: &[KeyValue]) -> Resource {
    let info = report.processes.info(pid);
    let mut attrs: Vec<KeyValue> = Vec::new();
    // The process's own OTEL_RESOURCE_ATTRIBUTES first; what we observe below overrides them.
    let env = info.map(|i| i.otel_attributes.as_slice()).unwrap_or_default();
    let set = |attrs: &mut Vec<KeyValue>, k: KeyValue| {
        attrs.retain(|a| a.key != k.key);
        attrs.push(k);
    };
    for (k, v) in env {
        set(&mut attrs, kv(k, Value::Str(v.clone())));
    }
    // What the process published itself (OTEP 4719) describes it better than its environment.
    for a in info.and_then(|i| i.context.as_ref()).map(|c| c.attributes.as_slice()).unwrap_or_default() {
        set(&mut attrs, a.clone());
    }
    for h in host {
        set(&mut attrs, h.clone());
    }
    set(&mut attrs, kv("process.pid", Value::Int(pid as i64)));
    let exe = info.and_then(|i| i.exe.clone());
    let exe_name = exe
        .as_deref()
        .map(|e| e.rsplit('/').next().unwrap_or(e).to_string())
        .unwrap_or_else(|| report.process_name(pid));
    set(&mut attrs, kv("process.executable.name", Value::Str(exe_name.clone())));
    if let Some(path) = exe {
        set(&mut attrs, kv("process.executable.path", Value::Str(path)));
    }
    if let Some(i) = info {
        if opts.command_line && !i.cmdline.is_empty() {
            set(&mut attrs, kv("process.command_line", Value::Str(i.cmdline.clone())));
        }
        if let Some(id) = &i.container_id {
            set(&mut attrs, kv("container.id", Value::Str(id.clone())));
        }
    }
    // What an SDK says when the application names no service (the resource SDK spec's
    // fallback, `unknown_service:` + the executable): backends group it as unnamed, and the
    // k8sattributes processor may replace it with the pod's workload.
    if !attrs.iter().any(|a| a.key == "service.name") {
        attrs.push(kv("service.name", Value::Str(format!("unknown_service:{exe_name}"))));
    }
    Resource { attributes: attrs, dropped_attributes_count: 0, entity_refs: Vec::new() }
}

/// Builds the dictionary entries of a report incrementally (shared by all processes).
struct Builder<'r, 'a> {
    report: &'r Report<'a>,
    opts: &'r OtlpOptions,
    dict: Dictionary,
    mappings: HashMap<MappingId, i32>,
    kernel_mapping: Option<i32>,
    locations: HashMap<FrameId, i32>,
    stacks: HashMap<u32, i32>,
}

impl Builder<'_, '_> {
    fn build_id_attrs(&mut self, gnu: Option<&[u8]>, htl: Option<&[u8; 16]>) -> Vec<i32> {
        let mut attrs = Vec::new();
        if let Some(b) = gnu {
            attrs.push(self.dict.attribute("process.executable.build_id.gnu", Value::Str(hex(b))));
        }
        if let Some(h) = htl {
            attrs.push(self.dict.attribute("process.executable.build_id.htlhash", Value::Str(hex(h))));
        }
        attrs
    }

    fn mapping(&mut self, id: MappingId) -> i32 {
        if let Some(&m) = self.mappings.get(&id) {
            return m;
        }
        let pm = *self.report.agg.mappings.get(id);
        // A file the snapshot lacks (counted by symbolization) keeps its mapping, unnamed.
        let file = self.report.processes.file(pm.mapping.file);
        let attributes = self.build_id_attrs(file.and_then(|f| f.build_id()), file.and_then(|f| f.htlhash.as_ref()));
        let filename = self.dict.string(file.map_or(crate::pprof::UNKNOWN_FILE, |f| &f.path));
        let m = self.dict.mapping(MappingKey {
            memory_start: pm.mapping.start,
            memory_limit: pm.mapping.end,
            file_offset: pm.mapping.offset,
            filename,
            attributes,
        });
        self.mappings.insert(id, m);
        m
    }

    fn kernel_mapping(&mut self) -> i32 {
        if let Some(m) = self.kernel_mapping {
            return m;
        }
        let attributes = self.build_id_attrs(metadata::kernel_build_id().as_deref(), None);
        let filename = self.dict.string(KERNEL_MODULE);
        let m = self.dict.mapping(MappingKey { filename, attributes, ..Default::default() });
        self.kernel_mapping = Some(m);
        m
    }

    /// A mapping with a name and nothing else (`[vdso]`, `[jit]`); the dictionary keeps one.
    fn named_mapping(&mut self, name: &str) -> i32 {
        let filename = self.dict.string(name);
        self.dict.mapping(MappingKey { filename, ..Default::default() })
    }

    fn location(&mut self, id: FrameId) -> i32 {
        if let Some(&l) = self.locations.get(&id) {
            return l;
        }
        let frame = *self.report.agg.frames.get(id);
        let (mapping, address, kind) = match frame {
            Frame::Kernel { addr } => (self.kernel_mapping(), addr, "kernel"),
            Frame::User { mapping, addr, file_offset } => {
                let address = if self.opts.symbolize == SymbolizeMode::None { file_offset } else { addr };
                (self.mapping(mapping), address, "native")
            }
            Frame::Vdso { offset } => (self.named_mapping(VDSO_MODULE), offset, "native"),
            // A perf map does not say which runtime wrote it, so no runtime-specific type
            // (`v8js`, `jvm`) can be claimed; `jit` is a custom value, as semantic conventions
            // allow when no well-known one is known to apply.
            Frame::Jit { addr, .. } => (self.named_mapping(JIT_MODULE), addr, "jit"),
            Frame::Unmapped { addr } => (0, addr, "native"),
        };
        // JIT names exist only here (no backend can look them up by build ID): always sent.
        let jit = matches!(frame, Frame::Jit { .. });
        let lines = match self.opts.symbolize {
            SymbolizeMode::None if !jit => Vec::new(),
            _ => self
                .report
                .functions(id)
                .iter()
                .map(|f| (self.dict.function(&f.function, f.file.as_deref().unwrap_or("")), f.line.unwrap_or(0) as i64))
                .collect(),
        };
        let attributes = vec![self.dict.attribute("profile.frame.type", Value::Str(kind.into()))];
        let l = self.dict.location(LocationKey { mapping, address, lines, attributes });
        self.locations.insert(id, l);
        l
    }

    fn stack(&mut self, id: u32) -> i32 {
        if let Some(&s) = self.stacks.get(&id) {
            return s;
        }
        let frames: Vec<FrameId> = self.report.agg.stacks.get(id).to_vec();
        let locations = frames.into_iter().map(|f| self.location(f)).collect();
        let s = self.dict.stack(locations);
        self.stacks.insert(id, s);
        s
    }

    fn sample(&mut self, key: &SampleKey, value: &SampleValue) -> pb::Sample {
        let mut attribute_indices = vec![
            self.dict.attribute("thread.id", Value::Int(key.tid as i64)),
            self.dict.attribute("thread.name", Value::Str(self.report.thread_name(key.tid).to_string())),
            self.dict.attribute("cpu.logical_number", Value::Int(key.cpu as i64)),
        ];
        let mut link_index = 0;
        if let Some((link, attrs)) = self.report.link(key.pid, key.link) {
            if link.has_span() {
                link_index = self.dict.link(link.trace_id, link.span_id);
            }
            for (name, v) in attrs {
                attribute_indices.push(self.dict.attribute(name, Value::Str(v.to_string())));
            }
        }
        pb::Sample {
            stack_index: self.stack(key.stack),
            attribute_indices,
            link_index,
            values: if value.values.is_empty() {
                vec![1; value.timestamps_ns.len()]
            } else {
                value.values.iter().map(|&v| i64::try_from(v).unwrap_or(i64::MAX)).collect()
            },
            timestamps_unix_nano: value.timestamps_ns.clone(),
        }
    }
}

/// Builds one export request for the whole report.
pub fn build(report: &Report<'_>, opts: &OtlpOptions) -> ExportProfilesServiceRequest {
    let mut b = Builder {
        report,
        opts,
        dict: Dictionary::default(),
        mappings: HashMap::new(),
        kernel_mapping: None,
        locations: HashMap::new(),
        stacks: HashMap::new(),
    };
    let host = opts.resource.as_slice();
    type Samples<'s> = Vec<(&'s SampleKey, &'s SampleValue)>;
    let mut by_pid: BTreeMap<u32, [Samples<'_>; 2]> = BTreeMap::new();
    for (i, profile) in [ProfileType::Cpu, ProfileType::OffCpu].into_iter().enumerate() {
        for (k, v) in report.agg.profile(profile) {
            by_pid.entry(k.pid).or_default()[i].push((k, v));
        }
    }
    let cpu_sample = pb::ValueType { type_strindex: b.dict.string("samples"), unit_strindex: b.dict.string("count") };
    let cpu_period = pb::ValueType { type_strindex: b.dict.string("cpu"), unit_strindex: b.dict.string("nanoseconds") };
    // Every value is a measured duration: the period type is the sample type, period 1 ns.
    let off_cpu =
        pb::ValueType { type_strindex: b.dict.string("off_cpu"), unit_strindex: b.dict.string("nanoseconds") };
    let off_cpu_types = (off_cpu, off_cpu, 1);
    let scope = InstrumentationScope {
        name: "otelprof".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        attributes: Vec::new(),
        dropped_attributes_count: 0,
    };
    let mut resource_profiles = Vec::new();
    for (pid, kinds) in by_pid {
        let mut profiles = Vec::new();
        // A process a burst covered: its CPU samples were taken at the burst's rate, and all its
        // profiles say why.
        let burst = opts.burst.as_ref().filter(|m| m.covers(pid));
        let cpu_period_ns = match burst {
            Some(m) => 1_000_000_000 / m.frequency_hz.max(1),
            None => report.meta.period_ns(),
        };
        let cpu_types = (cpu_sample, cpu_period, cpu_period_ns as i64);
        for (mut samples, (sample_type, period_type, period)) in kinds.into_iter().zip([cpu_types, off_cpu_types]) {
            if samples.is_empty() {
                continue;
            }
            samples.sort_by_key(|(k, _)| **k);
            let samples = samples.into_iter().map(|(k, v)| b.sample(k, v)).collect();
            let attribute_indices = burst
                .iter()
                .flat_map(|m| &m.attributes)
                .map(|(k, v)| b.dict.attribute(k, Value::Str(v.clone())))
                .collect();
            profiles.push(pb::Profile {
                attribute_indices,
                sample_type: Some(sample_type),
                samples,
                time_unix_nano: report.meta.start_unix_ns,
                duration_nano: report.meta.duration_ns,
                period_type: Some(period_type),
                period,
                profile_id: random_id(),
                ..Default::default()
            });
        }
        resource_profiles.push(pb::ResourceProfiles {
            resource: Some(resource(report, pid, opts, host)),
            scope_profiles: vec![pb::ScopeProfiles { scope: Some(scope.clone()), profiles, schema_url: String::new() }],
            schema_url: String::new(),
        });
    }
    ExportProfilesServiceRequest { resource_profiles, dictionary: Some(b.dict.build()) }
}

/// `ProfilesData` has the same fields (and field numbers) as the export request.
pub fn to_profiles_data(req: ExportProfilesServiceRequest) -> ProfilesData {
    ProfilesData { resource_profiles: req.resource_profiles, dictionary: req.dictionary }
}

/// Binary `ProfilesData` (`.otlp.pb`).
pub struct OtlpProto(pub OtlpOptions);

/// OTLP/JSON `ProfilesData` (`.otlp.json`).
pub struct OtlpJson(pub OtlpOptions);

/// Builds and validates: an invalid request is a bug in otelprof, never something to send.
pub fn build_valid(report: &Report<'_>, opts: &OtlpOptions) -> anyhow::Result<ExportProfilesServiceRequest> {
    let req = build(report, opts);
    let errors = validate(&req);
    if !errors.is_empty() {
        anyhow::bail!("internal error, invalid OTLP profiles ({} problems): {}", errors.len(), errors.join("; "));
    }
    Ok(req)
}

impl Encoder for OtlpProto {
    fn write(&self, report: &Report<'_>, out: &mut dyn std::io::Write) -> anyhow::Result<()> {
        use prost::Message;
        out.write_all(&to_profiles_data(build_valid(report, &self.0)?).encode_to_vec())?;
        Ok(())
    }
}

impl Encoder for OtlpJson {
    fn write(&self, report: &Report<'_>, out: &mut dyn std::io::Write) -> anyhow::Result<()> {
        serde_json::to_writer(&mut *out, &to_profiles_data(build_valid(report, &self.0)?))?;
        writeln!(out)?;
        Ok(())
    }
}
