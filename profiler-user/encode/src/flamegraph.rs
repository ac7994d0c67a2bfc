//! Flame graph SVG, rendered by inferno from the folded lines.

use std::io::Write;

use anyhow::Context;
use inferno::flamegraph::{self, Options};

use super::{folded, Encoder, Report};
use otelprof_sampler::aggregate::ProfileType;

/// The flame-graph exporter.
pub struct FlameGraph;

impl Encoder for FlameGraph {
    fn write(&self, report: &Report<'_>, out: &mut dyn Write) -> anyhow::Result<()> {
        let lines = folded::lines(report);
        let mut opts = Options::default();
        match report.profile {
            ProfileType::Cpu => {
                opts.title = "otelprof".to_string();
                opts.count_name = "samples".to_string();
                opts.subtitle = Some(format!("{} Hz, {} samples", report.meta.frequency_hz, report.agg.total));
            }
            ProfileType::OffCpu => {
                opts.title = "otelprof off-CPU".to_string();
                opts.count_name = "us".to_string();
                opts.subtitle = Some(format!(
                    "{} waits, {:.3} s off CPU",
                    report.agg.off_cpu_waits,
                    report.agg.off_cpu_ns as f64 / 1e9
                ));
            }
        }
        if lines.is_empty() {
            // inferno refuses empty input; an empty profile is still a valid (blank) graph.
            write!(
                out,
                r#"<?xml version="1.0" standalone="no"?><svg xmlns="http://www.w3.org/2000/svg" width="1200" height="60"><text x="10" y="30">otelprof: no samples</text></svg>"#
            )?;
            return Ok(());
        }
        flamegraph::from_lines(&mut opts, lines.iter().map(String::as_str), out).context("rendering flame graph")?;
        Ok(())
    }
}
