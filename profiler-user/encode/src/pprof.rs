//! pprof: gzipped `perftools.profiles.Profile`.
//!
//! CPU profiles: sample types `samples/count` and `cpu/nanoseconds` (count × period), period
//! `cpu/nanoseconds`. Off-CPU profiles: `switches/count` (recorded switch-outs) and
//! `off_cpu/nanoseconds` (time off CPU, weighted by 1/threshold), the default type being the last
//! one as for Go's block profile (`contentions/count`, `delay/nanoseconds`).
//! One mapping per (process, file mapping) with the file's build ID, one for the kernel; one
//! location per distinct frame whose lines are the frame's functions, inlined ones first, as
//! pprof wants ("the last entry represents the caller into which the preceding entries were
//! inlined"). Labels: `pid`, `tid` (numeric) and `thread_name`; for samples taken inside a span
//! (OTEP 4947 thread context) `trace_id` and `span_id` as lowercase hex, and the context's
//! attributes under their names.

use std::{collections::HashMap, io::Write};

use flate2::{write::GzEncoder, Compression};
use otelprof_proto::pprof as pb;
use prost::Message;

use super::{hex, Encoder, Report};
use otelprof_sampler::{
    aggregate::{Frame, Interner, ProfileType},
    symbolize::{JIT_MODULE, KERNEL_MODULE, VDSO_MODULE},
};

/// The pprof exporter.
pub struct Pprof;

/// The file name of a mapping whose file the report's snapshot does not hold.
pub(crate) const UNKNOWN_FILE: &str = "[unknown]";

/// The string table: index 0 is "" as pprof requires.
struct Strings(Interner<String>);

impl Strings {
    fn new() -> Self {
        let mut t = Interner::default();
        t.intern(String::new());
        Self(t)
    }

    fn id(&mut self, s: &str) -> i64 {
        self.0.intern(s.to_string()) as i64
    }

    fn into_vec(self) -> Vec<String> {
        self.0.iter().map(|(_, s)| s.clone()).collect()
    }
}

/// Index in `report.agg.mappings` of the executable's mapping of the process with the most
/// samples.
fn main_binary(report: &Report<'_>) -> Option<usize> {
    let mut per_pid: HashMap<u32, u64> = HashMap::new();
    for (k, v) in report.samples() {
        *per_pid.entry(k.pid).or_default() += v.count;
    }
    let (&pid, _) = per_pid.iter().max_by_key(|(&pid, &n)| (n, std::cmp::Reverse(pid)))?;
    let exe = report.processes.info(pid)?.exe.as_deref()?;
    report
        .agg
        .mappings
        .iter()
        .position(|(_, pm)| pm.pid == pid && report.processes.file(pm.mapping.file).is_some_and(|f| f.path == exe))
}

/// Builds the (uncompressed) pprof message.
pub fn build(report: &Report<'_>) -> pb::Profile {
    let mut strings = Strings::new();
    let agg = report.agg;
    let files = report.processes;

    // Mappings: 1..=n for process mappings, n+1 for the kernel.
    let mut mappings: Vec<pb::Mapping> = agg
        .mappings
        .iter()
        .map(|(id, pm)| {
            // A file the snapshot lacks (counted by symbolization) keeps its mapping, unnamed.
            let file = files.file(pm.mapping.file);
            pb::Mapping {
                id: id as u64 + 1,
                memory_start: pm.mapping.start,
                memory_limit: pm.mapping.end,
                file_offset: pm.mapping.offset,
                filename: strings.id(file.map_or(UNKNOWN_FILE, |f| &f.path)),
                build_id: strings.id(&file.and_then(|f| f.build_id()).map(hex).unwrap_or_default()),
                ..Default::default()
            }
        })
        .collect();
    // pprof readers take the first mapping for the main binary (`go tool pprof`'s "File:", where
    // it looks for symbols): the executable of the process with the most samples, not whichever
    // file the first sample happened to hit (often ld.so for a command profiled from its start).
    if let Some(i) = main_binary(report) {
        let m = mappings.remove(i);
        mappings.insert(0, m);
    }
    let kernel_mapping = mappings.len() as u64 + 1;
    mappings.push(pb::Mapping {
        id: kernel_mapping,
        memory_start: 0xffff_8000_0000_0000,
        memory_limit: u64::MAX,
        filename: strings.id(KERNEL_MODULE),
        ..Default::default()
    });
    // vDSO locations carry their offset into the image (the same in every process).
    let vdso_mapping = mappings.len() as u64 + 1;
    if agg.frames.iter().any(|(_, f)| matches!(f, Frame::Vdso { .. })) {
        mappings.push(pb::Mapping { id: vdso_mapping, filename: strings.id(VDSO_MODULE), ..Default::default() });
    }
    // JIT code has no file: one `[jit]` mapping holds its locations (absolute addresses), named
    // from perf maps.
    let jit_mapping = mappings.len() as u64 + 1;
    if agg.frames.iter().any(|(_, f)| matches!(f, Frame::Jit { .. })) {
        mappings.push(pb::Mapping { id: jit_mapping, filename: strings.id(JIT_MODULE), ..Default::default() });
    }

    let mut functions: Interner<(i64, i64)> = Interner::default();
    let mut mapping_flags: HashMap<u64, (bool, bool)> = HashMap::new();
    let locations: Vec<pb::Location> = agg
        .frames
        .iter()
        .map(|(id, frame)| {
            let (mapping_id, address) = match *frame {
                Frame::Kernel { addr } => (kernel_mapping, addr),
                Frame::User { mapping, addr, .. } => (mapping as u64 + 1, addr),
                Frame::Vdso { offset } => (vdso_mapping, offset),
                Frame::Jit { addr, .. } => (jit_mapping, addr),
                Frame::Unmapped { addr } => (0, addr),
            };
            let known = report.symbols.is_symbolized(id);
            let line = report
                .functions(id)
                .iter()
                .map(|f| {
                    let name = strings.id(&f.function);
                    let file = strings.id(f.file.as_deref().unwrap_or(""));
                    pb::Line {
                        function_id: functions.intern((name, file)) as u64 + 1,
                        line: f.line.unwrap_or(0) as i64,
                    }
                })
                .collect::<Vec<_>>();
            if known && mapping_id != 0 {
                let flags = mapping_flags.entry(mapping_id).or_default();
                flags.0 = true;
                flags.1 |= line.iter().any(|l| l.line != 0);
            }
            pb::Location { id: id as u64 + 1, mapping_id, address, line, ..Default::default() }
        })
        .collect();
    for m in &mut mappings {
        if let Some(&(funcs, lines)) = mapping_flags.get(&m.id) {
            m.has_functions = funcs;
            m.has_filenames = lines;
            m.has_line_numbers = lines;
            m.has_inline_frames = lines;
        }
    }
    let function: Vec<pb::Function> = functions
        .iter()
        .map(|(id, &(name, filename))| pb::Function {
            id: id as u64 + 1,
            name,
            system_name: name,
            filename,
            ..Default::default()
        })
        .collect();

    let period = match report.profile {
        ProfileType::Cpu => report.meta.period_ns() as i64,
        ProfileType::OffCpu => 1,
    };
    let (k_pid, k_tid, k_thread) = (strings.id("pid"), strings.id("tid"), strings.id("thread_name"));
    let (k_trace, k_span) = (strings.id("trace_id"), strings.id("span_id"));
    // pprof has no per-CPU dimension here: samples that differ only by CPU are merged.
    // (pid, tid, stack, link) -> (count, weight)
    type Merged = std::collections::BTreeMap<(u32, u32, u32, Option<u32>), (i64, i64)>;
    let mut merged = Merged::new();
    for (key, value) in report.samples() {
        let m = merged.entry((key.pid, key.tid, key.stack, key.link)).or_default();
        m.0 += value.count as i64;
        m.1 += match report.profile {
            ProfileType::Cpu => value.count as i64 * period,
            ProfileType::OffCpu => value.total() as i64,
        };
    }
    let sample = merged
        .into_iter()
        .map(|((pid, tid, stack, link), (count, weight))| {
            let mut label = vec![
                pb::Label { key: k_pid, num: pid as i64, ..Default::default() },
                pb::Label { key: k_tid, num: tid as i64, ..Default::default() },
                pb::Label { key: k_thread, str: strings.id(report.thread_name(tid)), ..Default::default() },
            ];
            // Span profiles as Pyroscope reads them: lowercase hex IDs, and the context's
            // attributes as labels named by the process's key map.
            if let Some((link, attrs)) = report.link(pid, link) {
                if link.has_span() {
                    label.push(pb::Label { key: k_trace, str: strings.id(&hex(&link.trace_id)), ..Default::default() });
                    label.push(pb::Label { key: k_span, str: strings.id(&hex(&link.span_id)), ..Default::default() });
                }
                for (name, v) in attrs {
                    label.push(pb::Label { key: strings.id(name), str: strings.id(v), ..Default::default() });
                }
            }
            pb::Sample {
                location_id: agg.stacks.get(stack).iter().map(|&f| f as u64 + 1).collect(),
                value: vec![count, weight],
                label,
            }
        })
        .collect();

    let (count_type, value_type, what) = match report.profile {
        ProfileType::Cpu => ("samples", "cpu", format!("at {} Hz", report.meta.frequency_hz)),
        ProfileType::OffCpu => ("switches", "off_cpu", "off-CPU".to_string()),
    };
    let sample_type = vec![
        pb::ValueType { ty: strings.id(count_type), unit: strings.id("count") },
        pb::ValueType { ty: strings.id(value_type), unit: strings.id("nanoseconds") },
    ];
    let period_type = Some(match report.profile {
        ProfileType::Cpu => pb::ValueType { ty: strings.id("cpu"), unit: strings.id("nanoseconds") },
        ProfileType::OffCpu => pb::ValueType { ty: strings.id("switches"), unit: strings.id("count") },
    });
    let comment = vec![strings.id(&format!("otelprof {} {what}", env!("CARGO_PKG_VERSION")))];
    pb::Profile {
        sample_type,
        sample,
        mapping: mappings,
        location: locations,
        function,
        time_nanos: report.meta.start_unix_ns as i64,
        duration_nanos: report.meta.duration_ns as i64,
        period_type,
        period,
        comment,
        string_table: strings.into_vec(),
        ..Default::default()
    }
}

impl Encoder for Pprof {
    fn write(&self, report: &Report<'_>, out: &mut dyn Write) -> anyhow::Result<()> {
        let bytes = build(report).encode_to_vec();
        let mut gz = GzEncoder::new(out, Compression::default());
        gz.write_all(&bytes)?;
        gz.finish()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Meta;
    use otelprof_sampler::{
        aggregate::{Aggregator, Clock},
        process::ProcessTracker,
        reader::Sample,
        symbolize,
    };

    /// The executable's mapping comes first even when another file's was seen first.
    #[test]
    fn main_binary_is_the_first_mapping() {
        let me = std::process::id();
        let mut tracker = ProcessTracker::default();
        let mut agg = Aggregator::new(Clock::new());
        let in_libc = libc::getpid as *const () as u64;
        let own = main_binary_is_the_first_mapping as *const () as u64;
        for addr in [in_libc, own, own] {
            agg.add(&Sample::with_stacks(me, me, vec![], vec![addr]), &mut tracker);
        }
        assert_eq!(agg.mappings.len(), 2, "libc and the test binary");
        let snap = tracker.snapshot(agg.pids(), agg.file_ids());
        let mut sym = symbolizer::Symbolizer::new(symbolizer::Config { code_info: false, ..Default::default() });
        let symbols = symbolize::symbolize(&agg, &snap, &mut sym);
        let meta = Meta { frequency_hz: 99, start_unix_ns: 0, duration_ns: 1 };
        let p = build(&Report { agg: &agg, processes: &snap, symbols: &symbols, meta, profile: Default::default() });
        let name = |m: &pb::Mapping| p.string_table[m.filename as usize].clone();
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        assert_eq!(name(&p.mapping[0]), exe.to_string_lossy());
        assert!(name(&p.mapping[1]).contains("libc"), "{:?}", p.mapping.iter().map(name).collect::<Vec<_>>());
    }
}
