//! otelprof's encoders: every output format implements [`Encoder`] over the same [`Report`]
//! (one closed interval of symbolized samples, with its processes).
//!
//! - [`pprof::Pprof`]: gzipped `perftools.profiles.Profile` (`go tool pprof`, Pyroscope, Parca).
//! - [`folded::Folded`]: Brendan Gregg's folded stacks (`flamegraph.pl`, speedscope).
//! - [`flamegraph::FlameGraph`]: an SVG flame graph rendered by inferno.

pub mod flamegraph;
pub mod folded;
pub mod otlp;
pub mod pprof;

use std::{io::Write, path::Path};

use otelprof_sampler::{
    aggregate::{Aggregator, Frame, FrameId, LinkId, ProfileType, SampleKey, SampleValue},
    context::ThreadLink,
    process::ProcessSnapshot,
    symbolize::{ResolvedFrame, Symbols},
};

/// Lowercase hex: build IDs, and trace and span IDs as W3C trace context and Pyroscope's span
/// labels spell them.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Facts about the recording that are not samples.
#[derive(Clone, Copy, Debug)]
pub struct Meta {
    pub frequency_hz: u64,
    /// Unix nanoseconds when sampling started.
    pub start_unix_ns: u64,
    pub duration_ns: u64,
}

impl Meta {
    /// Nanoseconds of CPU time one sample stands for.
    pub fn period_ns(&self) -> u64 {
        1_000_000_000 / self.frequency_hz.max(1)
    }
}

/// Everything an exporter reads: the aggregated samples, process state and symbols.
pub struct Report<'a> {
    pub agg: &'a Aggregator,
    pub processes: &'a ProcessSnapshot,
    pub symbols: &'a Symbols,
    pub meta: Meta,
    /// The profile type written by formats that hold one (pprof, folded, SVG); OTLP writes
    /// every type the aggregator has.
    pub profile: ProfileType,
}

impl<'a> Report<'a> {
    /// The same report, for another profile type.
    pub fn with_profile(&self, profile: ProfileType) -> Report<'a> {
        Report { agg: self.agg, processes: self.processes, symbols: self.symbols, meta: self.meta, profile }
    }

    /// The samples of [`Report::profile`].
    pub fn samples(&self) -> &'a std::collections::HashMap<SampleKey, SampleValue> {
        self.agg.profile(self.profile)
    }

    /// The functions of a frame, innermost first (see [`Symbols::get`]).
    pub fn functions(&self, frame: FrameId) -> &[ResolvedFrame] {
        self.symbols.get(frame)
    }

    pub fn is_kernel(&self, frame: FrameId) -> bool {
        matches!(self.agg.frames.get(frame), Frame::Kernel { .. })
    }

    /// Process name for display: its comm, else the exe's basename, else `pid N`.
    pub fn process_name(&self, pid: u32) -> String {
        let info = self.processes.info(pid);
        if let Some(i) = info.filter(|i| !i.comm.is_empty()) {
            return i.comm.clone();
        }
        if let Some(exe) = info.and_then(|i| i.exe.as_deref()) {
            return exe.rsplit('/').next().unwrap_or(exe).to_string();
        }
        self.agg.thread_names.get(&pid).cloned().unwrap_or_else(|| format!("pid {pid}"))
    }

    /// A sample's thread context: the link, and its attributes named by the process's
    /// `threadlocal.attribute_key_map` (entries whose index the map lacks are dropped).
    pub fn link(&self, pid: u32, id: Option<LinkId>) -> Option<(&ThreadLink, Vec<(&str, &str)>)> {
        let link = self.agg.links.get(id?);
        let names = self.processes.info(pid).and_then(|i| i.context.as_ref()).map(|c| c.key_map.as_slice());
        let attrs = link
            .attrs
            .iter()
            .filter_map(|(k, v)| Some((names?.get(*k as usize)?.as_str(), v.as_str())))
            .filter(|(name, _)| !name.is_empty())
            .collect();
        Some((link, attrs))
    }

    pub fn thread_name(&self, tid: u32) -> &str {
        self.agg.thread_names.get(&tid).map(String::as_str).unwrap_or("")
    }
}

/// An output format.
pub trait Encoder {
    /// Writes the whole report to `out`.
    fn write(&self, report: &Report<'_>, out: &mut dyn Write) -> anyhow::Result<()>;
}

/// Output formats `record` can write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// gzipped pprof protobuf
    Pprof,
    /// folded stacks, one line per unique stack
    Folded,
    /// flame graph SVG
    Svg,
    /// binary OTLP `ProfilesData` protobuf
    OtlpProto,
    /// OTLP/JSON `ProfilesData`
    OtlpJson,
}

impl Format {
    /// Picks the format from a file name: `.otlp.pb` → OTLP protobuf, `.otlp.json` → OTLP/JSON,
    /// `.pb.gz`/`.pprof`/`.pb` → pprof, `.folded`/`.txt` → folded, `.svg` → flame graph.
    pub fn from_path(path: &Path) -> Option<Self> {
        let name = path.file_name()?.to_str()?.to_ascii_lowercase();
        if name.ends_with(".otlp.pb") || name.ends_with(".otlp.binpb") {
            Some(Self::OtlpProto)
        } else if name.ends_with(".otlp.json") {
            Some(Self::OtlpJson)
        } else if name.ends_with(".pb.gz") || name.ends_with(".pprof") || name.ends_with(".pb") {
            Some(Self::Pprof)
        } else if name.ends_with(".folded") || name.ends_with(".txt") {
            Some(Self::Folded)
        } else if name.ends_with(".svg") {
            Some(Self::Svg)
        } else {
            None
        }
    }

    /// Each format with its name, as `--format` spells it.
    pub const NAMES: &[(&str, Format)] = &[
        ("pprof", Self::Pprof),
        ("folded", Self::Folded),
        ("svg", Self::Svg),
        ("otlp-proto", Self::OtlpProto),
        ("otlp-json", Self::OtlpJson),
    ];

    /// Lowercase name, as `--format` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Pprof => "pprof",
            Self::Folded => "folded",
            Self::Svg => "svg",
            Self::OtlpProto => "otlp-proto",
            Self::OtlpJson => "otlp-json",
        }
    }

    pub fn encoder(self, otlp: &otlp::OtlpOptions) -> Box<dyn Encoder> {
        match self {
            Self::Pprof => Box::new(pprof::Pprof),
            Self::Folded => Box::new(folded::Folded),
            Self::Svg => Box::new(flamegraph::FlameGraph),
            Self::OtlpProto => Box::new(otlp::OtlpProto(otlp.clone())),
            Self::OtlpJson => Box::new(otlp::OtlpJson(otlp.clone())),
        }
    }
}

/// Where the off-CPU profile goes when the CPU profile goes to `path`: `.offcpu` before the
/// format's extension (`x.pb.gz` → `x.offcpu.pb.gz`, `run.svg` → `run.offcpu.svg`), or after the
/// whole name when it has no known extension. pprof holds one profile per file, as Go's
/// `cpu.pprof` / `block.pprof` are separate, so the two types become two files.
pub fn off_cpu_path(path: &Path) -> std::path::PathBuf {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return path.with_extension("offcpu");
    };
    let lower = name.to_ascii_lowercase();
    let ext = [".otlp.binpb", ".otlp.json", ".otlp.pb", ".pb.gz", ".pprof", ".pb", ".folded", ".txt", ".svg"]
        .into_iter()
        .find(|e| lower.ends_with(e) && lower.len() > e.len());
    let new = match ext {
        Some(e) => format!("{}.offcpu{}", &name[..name.len() - e.len()], &name[name.len() - e.len()..]),
        None => format!("{name}.offcpu"),
    };
    path.with_file_name(new)
}

#[cfg(test)]
mod tests {
    use super::{off_cpu_path, otlp, pprof, Format, Meta, Report};

    /// Off-CPU waits aggregate as their own profile type, weighted by 1/threshold, and every
    /// format encodes them with their own sample types next to the CPU samples.
    #[test]
    fn off_cpu_waits_aggregate_and_encode_as_their_own_profile() {
        use otelprof_sampler::{
            aggregate::{Aggregator, Clock, ProfileType},
            process::ProcessTracker,
            reader::Sample,
            symbolize,
        };
        let me = std::process::id();
        let code = off_cpu_waits_aggregate_and_encode_as_their_own_profile as *const () as u64;
        let mut tracker = ProcessTracker::default();
        let mut agg = Aggregator::new(Clock::new());
        let cpu = Sample::with_stacks(me, me, vec![], vec![code]);
        agg.add(&cpu, &mut tracker);
        let wait = Sample::with_stacks(me, me, vec![], vec![code + 16, code + 32]);
        // Recorded with probability 0.5: each wait stands for twice its time.
        agg.add_off_cpu(&wait, 3_000, 0.5, &mut tracker);
        agg.add_off_cpu(&wait, 1_000, 0.5, &mut tracker);
        assert_eq!((agg.total, agg.off_cpu_waits, agg.off_cpu_ns), (1, 2, 8_000));
        assert_eq!(agg.samples.len(), 1);
        let (_, v) = agg.off_cpu.iter().next().expect("one off-CPU stack");
        assert_eq!((v.count, v.values.as_slice(), v.total()), (2, &[6_000, 2_000][..], 8_000));

        let snap = tracker.snapshot(agg.pids(), agg.file_ids());
        let mut sym = symbolizer::Symbolizer::new(symbolizer::Config { code_info: false, ..Default::default() });
        let symbols = symbolize::symbolize(&agg, &snap, &mut sym);
        let meta = Meta { frequency_hz: 100, start_unix_ns: 0, duration_ns: 1 };
        let (start, duration) = agg.window(agg.first_ns, agg.last_ns + 1);
        let meta = Meta { start_unix_ns: start, duration_ns: duration, ..meta };
        let cpu_report = Report { agg: &agg, processes: &snap, symbols: &symbols, meta, profile: ProfileType::Cpu };
        let off_report = cpu_report.with_profile(ProfileType::OffCpu);

        // pprof: one profile type per file.
        let names = |p: &otelprof_proto::pprof::Profile| -> Vec<(String, String)> {
            let s = |i: i64| p.string_table[i as usize].clone();
            p.sample_type.iter().map(|t| (s(t.ty), s(t.unit))).collect()
        };
        let p = super::pprof::build(&cpu_report);
        assert_eq!(names(&p), [("samples".into(), "count".into()), ("cpu".into(), "nanoseconds".into())]);
        assert_eq!(p.sample.iter().map(|s| s.value.clone()).collect::<Vec<_>>(), [vec![1, 10_000_000]]);
        let p = super::pprof::build(&off_report);
        assert_eq!(names(&p), [("switches".into(), "count".into()), ("off_cpu".into(), "nanoseconds".into())]);
        assert_eq!(p.sample.iter().map(|s| s.value.clone()).collect::<Vec<_>>(), [vec![2, 8_000]]);

        // Folded: samples, and microseconds off CPU.
        let line = super::folded::lines(&off_report);
        assert_eq!(line.len(), 1);
        assert!(line[0].ends_with(" 8"), "{line:?}");
        assert!(super::folded::lines(&cpu_report)[0].ends_with(" 1"));

        // OTLP: one resource, two profiles sharing the dictionary.
        let req = super::otlp::build_valid(&cpu_report, &Default::default()).expect("valid request");
        let dict = req.dictionary.as_ref().expect("dictionary");
        let st = |v: &Option<opentelemetry_proto::tonic::profiles::v1development::ValueType>| {
            let v = v.expect("set");
            (dict.string_table[v.type_strindex as usize].clone(), dict.string_table[v.unit_strindex as usize].clone())
        };
        assert_eq!(req.resource_profiles.len(), 1);
        let profiles = &req.resource_profiles[0].scope_profiles[0].profiles;
        let types: Vec<_> = profiles.iter().map(|p| st(&p.sample_type)).collect();
        assert_eq!(types, [("samples".into(), "count".into()), ("off_cpu".into(), "nanoseconds".into())]);
        assert_eq!(st(&profiles[1].period_type), ("off_cpu".into(), "nanoseconds".into()));
        assert_eq!(profiles[1].samples.len(), 1);
        assert_eq!(profiles[1].samples[0].values, [6_000, 2_000]);
        assert_eq!(profiles[1].samples[0].timestamps_unix_nano.len(), 2);
        assert_eq!(profiles[0].samples[0].values, [1]);
    }

    #[test]
    fn off_cpu_file_names() {
        let p = |s: &str| off_cpu_path(Path::new(s)).to_string_lossy().into_owned();
        assert_eq!(p("dir/x.pb.gz"), "dir/x.offcpu.pb.gz");
        assert_eq!(p("run.SVG"), "run.offcpu.SVG");
        assert_eq!(p("a.folded"), "a.offcpu.folded");
        assert_eq!(p("profile"), "profile.offcpu");
        assert_eq!(p(".pb.gz"), ".pb.gz.offcpu");
    }

    use std::path::Path;

    #[test]
    fn format_from_extension() {
        assert_eq!(Format::from_path(Path::new("a/otelprof.pb.gz")), Some(Format::Pprof));
        assert_eq!(Format::from_path(Path::new("x.pprof")), Some(Format::Pprof));
        assert_eq!(Format::from_path(Path::new("x.folded")), Some(Format::Folded));
        assert_eq!(Format::from_path(Path::new("X.SVG")), Some(Format::Svg));
        assert_eq!(Format::from_path(Path::new("x.json")), None);
        assert_eq!(Format::from_path(Path::new("p.otlp.pb")), Some(Format::OtlpProto));
        assert_eq!(Format::from_path(Path::new("p.otlp.json")), Some(Format::OtlpJson));
    }

    /// A report whose mappings name a file its snapshot does not hold (an id out of range of
    /// the tracker's file table): frames stay unnamed and counted, every exporter still writes
    /// (this panicked on the reporting thread, killing it).
    #[test]
    fn a_file_missing_from_the_snapshot_is_counted_not_a_panic() {
        let me = std::process::id();
        let code = a_file_missing_from_the_snapshot_is_counted_not_a_panic as *const () as u64;
        use otelprof_sampler::{aggregate::Aggregator, process::ProcessTracker, reader::Sample, symbolize};
        let mut tracker = ProcessTracker::default();
        let mut agg = Aggregator::default();
        agg.add(&Sample::with_stacks(me, me, vec![], vec![code]), &mut tracker);
        assert_eq!(agg.file_ids().len(), 1, "own code is in a file mapping");
        let out_of_range = 1_000_000;
        let processes = tracker.snapshot(agg.pids(), [out_of_range]);
        assert!(processes.file(out_of_range).is_none());
        let symbols = symbolize::symbolize(&agg, &processes, &mut symbolizer::Symbolizer::new(Default::default()));
        assert_eq!(symbols.stats.missing_files, 1);
        let names: Vec<&str> = agg.frames.iter().map(|(id, _)| symbols.get(id)[0].function.as_str()).collect();
        assert!(names.iter().all(|n| n.starts_with("[unknown]+0x")), "{names:?}");
        let (start_unix_ns, duration_ns) = agg.window(agg.first_ns, agg.last_ns);
        let meta = Meta { frequency_hz: 99, start_unix_ns, duration_ns };
        let report = Report { agg: &agg, processes: &processes, symbols: &symbols, meta, profile: Default::default() };
        let profile = pprof::build(&report);
        assert!(profile.string_table.iter().any(|s| s == pprof::UNKNOWN_FILE), "the mapping stays, unnamed");
        let req = otlp::build_valid(&report, &otlp::OtlpOptions::default()).expect("a valid request");
        assert_eq!(req.resource_profiles.len(), 1);
        let profile = &req.resource_profiles[0].scope_profiles[0].profiles[0];
        assert!(profile.attribute_indices.is_empty(), "no trigger, no profile attributes");

        // A burst's report: every profile says why it was taken.
        let labels =
            vec![("profile.trigger".to_string(), "anomaly".to_string()), ("profile.trigger.rule".into(), "cpu".into())];
        let mark = otlp::BurstMark { pids: None, frequency_hz: 99, attributes: labels.clone() };
        let opts = otlp::OtlpOptions { burst: Some(mark), ..Default::default() };
        let req = otlp::build_valid(&report, &opts).expect("a valid request");
        let d = req.dictionary.as_ref().expect("a dictionary");
        let profile = &req.resource_profiles[0].scope_profiles[0].profiles[0];
        let got: Vec<(String, String)> = profile
            .attribute_indices
            .iter()
            .map(|&i| {
                let a = &d.attribute_table[i as usize];
                let v = match a.value.as_ref().and_then(|v| v.value.as_ref()) {
                    Some(opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(s)) => s.clone(),
                    other => panic!("{other:?}"),
                };
                (d.string_table[a.key_strindex as usize].clone(), v)
            })
            .collect();
        assert_eq!(got, labels);
    }
}
