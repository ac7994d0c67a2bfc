//! Flame graph SVG, rendered by inferno from the folded lines.

use std::io::Write;

use anyhow::Context;
use inferno::flamegraph::{self, Options};

use super::{folded, Exporter, Report};

/// The flame-graph exporter.
pub struct FlameGraph;

impl Exporter for FlameGraph {
    fn write(&self, report: &Report<'_>, out: &mut dyn Write) -> anyhow::Result<()> {
        let lines = folded::lines(report);
        let mut opts = Options::default();
        opts.title = "otelprof".to_string();
        opts.count_name = "samples".to_string();
        opts.subtitle = Some(format!("{} Hz, {} samples", report.meta.frequency_hz, report.agg.total));
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
