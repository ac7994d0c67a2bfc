//! Folded stacks: `process;root;...;leaf count`, one line per distinct stack.
//!
//! The count is samples for CPU profiles and microseconds off CPU for off-CPU profiles (the unit
//! of `offcputime -f` from bcc, which flame graph tools expect).
//!
//! The first element is the process name, as `stackcollapse-perf.pl` writes it. Inlined
//! functions become frames of their own; kernel frames carry the `_[k]` suffix that flame graph
//! tools colour differently.

use std::{collections::BTreeMap, io::Write};

use super::{Encoder, Report};
use otelprof_sampler::aggregate::ProfileType;

/// The folded-stacks exporter.
pub struct Folded;

/// Builds the folded lines (sorted, counts summed), shared by the SVG exporter.
pub fn lines(report: &Report<'_>) -> Vec<String> {
    let mut out: BTreeMap<String, u64> = BTreeMap::new();
    for (key, value) in report.samples() {
        let mut parts = vec![report.process_name(key.pid).replace(';', ":")];
        for &frame in report.agg.stacks.get(key.stack).iter().rev() {
            let kernel = report.is_kernel(frame);
            for f in report.functions(frame).iter().rev() {
                let name = f.function.replace(';', ":");
                parts.push(if kernel { format!("{name}_[k]") } else { name });
            }
        }
        *out.entry(parts.join(";")).or_default() += value.total();
    }
    let scale = |n: u64| match report.profile {
        ProfileType::Cpu => n,
        // Summed in nanoseconds, rounded once per line.
        ProfileType::OffCpu => (n + 500) / 1000,
    };
    out.into_iter().map(|(stack, n)| format!("{stack} {}", scale(n))).filter(|l| !l.ends_with(" 0")).collect()
}

impl Encoder for Folded {
    fn write(&self, report: &Report<'_>, out: &mut dyn Write) -> anyhow::Result<()> {
        for line in lines(report) {
            writeln!(out, "{line}")?;
        }
        Ok(())
    }
}
