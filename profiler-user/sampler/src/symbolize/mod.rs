//! Symbolization stage: names every distinct frame of a recording.
//!
//! Frames are grouped by file (and the kernel) so each file is opened once and its addresses are
//! resolved in one sorted batch. Every frame ends up with a [`ResolvedFrame`] list: the symbolizer's
//! frames when it knew the address, else one frame named `module+0xoffset`, never a blank.

use std::{collections::HashMap, sync::Arc};

use symbolizer::{Source, Symbol, Symbolizer};

use crate::{
    aggregate::{Aggregator, Frame, FrameId},
    process::ProcessSnapshot,
};

/// Module name used for kernel frames (perf's name for it).
pub const KERNEL_MODULE: &str = "[kernel.kallsyms]";

/// Module name used for vDSO frames (the name `/proc/PID/maps` and perf give it).
pub const VDSO_MODULE: &str = "[vdso]";

/// Module name used for JIT code (frames named from perf maps, or in anonymous executable memory
/// without a name).
pub const JIT_MODULE: &str = "[jit]";

/// One function level of a frame (the symbolizer's frame, as exporters read it).
pub use symbolizer::Frame as ResolvedFrame;

/// How much got named.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SymbolStats {
    /// Distinct frames.
    pub frames: u64,
    /// Distinct frames with a function name from symbols.
    pub symbolized: u64,
    /// Files that could not be read.
    pub file_errors: u64,
    /// Files the report's mappings name but its process snapshot does not hold (their frames
    /// stay `[unknown]+0x…`): a bookkeeping slip, counted instead of a panic.
    pub missing_files: u64,
}

impl SymbolStats {
    /// Percentage of distinct frames symbolized.
    pub fn percent(&self) -> f64 {
        if self.frames == 0 {
            100.0
        } else {
            100.0 * self.symbolized as f64 / self.frames as f64
        }
    }
}

/// Names of every frame of an [`Aggregator`], indexed by [`FrameId`].
pub struct Symbols {
    frames: Vec<Arc<[ResolvedFrame]>>,
    /// Per frame: named by symbols (true) or by the `module+0xoffset` fallback.
    known: Vec<bool>,
    pub stats: SymbolStats,
}

impl Symbols {
    /// The frame's functions, innermost (inlined) first.
    pub fn get(&self, id: FrameId) -> &[ResolvedFrame] {
        &self.frames[id as usize]
    }

    /// True when symbols named the frame (not a `module+0xoffset` fallback).
    pub fn is_symbolized(&self, id: FrameId) -> bool {
        self.known[id as usize]
    }
}

fn fallback(module: &str, offset: u64) -> Arc<[ResolvedFrame]> {
    Arc::new([ResolvedFrame { function: format!("{module}+0x{offset:x}"), file: None, line: None, inlined: false }])
}

fn convert(sym: &Symbol) -> Arc<[ResolvedFrame]> {
    sym.frames().into()
}

/// Symbolizes every frame of `agg`.
pub fn symbolize(agg: &Aggregator, processes: &ProcessSnapshot, symbolizer: &mut Symbolizer) -> Symbols {
    let n = agg.frames.len();
    let mut out: Vec<Option<Arc<[ResolvedFrame]>>> = vec![None; n];
    let mut known = vec![false; n];
    let mut kernel: Vec<(FrameId, u64)> = Vec::new();
    let mut vdso: Vec<(FrameId, u64)> = Vec::new();
    let mut by_file: HashMap<u32, Vec<(FrameId, u64)>> = HashMap::new();
    let mut stats = SymbolStats { frames: n as u64, ..Default::default() };
    for (id, frame) in agg.frames.iter() {
        match *frame {
            Frame::Kernel { addr } => kernel.push((id, addr)),
            Frame::User { mapping, file_offset, .. } => {
                by_file.entry(agg.mappings.get(mapping).mapping.file).or_default().push((id, file_offset))
            }
            Frame::Vdso { offset } => vdso.push((id, offset)),
            Frame::Jit { addr, name } => {
                out[id as usize] = Some(match name {
                    Some(n) => {
                        stats.symbolized += 1;
                        known[id as usize] = true;
                        Arc::new([ResolvedFrame {
                            function: agg.jit_names.get(n).to_string(),
                            file: None,
                            line: None,
                            inlined: false,
                        }])
                    }
                    // Known to be JIT code, though nothing named it: say so rather than unknown.
                    None => fallback(JIT_MODULE, addr),
                })
            }
            Frame::Unmapped { addr } => out[id as usize] = Some(fallback("[unknown]", addr)),
        }
    }
    for (file_id, batch) in &by_file {
        if processes.file(*file_id).is_none() {
            stats.missing_files += 1;
            for (id, off) in batch {
                out[*id as usize] = Some(fallback("[unknown]", *off));
            }
        }
    }
    let mut apply =
        |batch: &[(FrameId, u64)], result: Result<Vec<Arc<Symbol>>, symbolizer::Error>, module: &str| match result {
            Ok(syms) => {
                for ((id, off), sym) in batch.iter().zip(syms) {
                    out[*id as usize] = Some(if sym.is_known() {
                        stats.symbolized += 1;
                        known[*id as usize] = true;
                        convert(&sym)
                    } else {
                        fallback(module, *off)
                    });
                }
            }
            Err(e) => {
                stats.file_errors += 1;
                tracing::warn!("{e}");
                for (id, off) in batch {
                    out[*id as usize] = Some(fallback(module, *off));
                }
            }
        };
    for (source, batch, module) in [(Source::Kernel, &kernel, KERNEL_MODULE), (Source::Vdso, &vdso, VDSO_MODULE)] {
        if !batch.is_empty() {
            let addrs: Vec<u64> = batch.iter().map(|(_, a)| *a).collect();
            let r = symbolizer.symbolize(&source, &addrs);
            apply(batch, r, module);
        }
    }
    let mut files_sorted: Vec<_> = by_file.into_iter().collect();
    files_sorted.sort_by_key(|(f, _)| *f);
    for (file_id, batch) in files_sorted {
        let Some(file) = processes.file(file_id) else { continue };
        let offsets: Vec<u64> = batch.iter().map(|(_, o)| *o).collect();
        let r = symbolizer.symbolize(&Source::Elf { key: &file.key, path: &file.open_path }, &offsets);
        apply(&batch, r, file.basename());
    }
    if stats.missing_files > 0 {
        // At most once per report.
        tracing::warn!(
            "{} files of this report were no longer tracked; their frames stay unnamed",
            stats.missing_files
        );
    }
    let frames = out.into_iter().map(|f| f.unwrap_or_else(|| fallback("[unknown]", 0))).collect();
    Symbols { frames, known, stats }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        aggregate::{Aggregator, Clock},
        process::ProcessTracker,
        reader::Sample,
    };

    /// Anonymous executable memory without a perf-map entry is JIT code all the same: `[jit]+0x…`,
    /// while an address in no mapping at all stays `[unknown]+0x…`.
    #[test]
    fn unnamed_jit_code_and_unknown_addresses_keep_their_kind() {
        let me = std::process::id();
        let code = crate::process::AnonCode::new(0x1000);
        let jit = code.start + 0x10;
        let heap = Box::new(0u64);
        let data = &*heap as *const u64 as u64;
        let mut tracker = ProcessTracker::default();
        let mut agg = Aggregator::new(Clock::new());
        agg.add(&Sample::with_stacks(me, me, vec![], vec![jit, data]), &mut tracker);
        let snap = tracker.snapshot(agg.pids(), agg.file_ids());
        let mut sym = Symbolizer::new(symbolizer::Config { code_info: false, ..Default::default() });
        let symbols = symbolize(&agg, &snap, &mut sym);
        let names: Vec<(String, bool)> =
            agg.frames.iter().map(|(id, _)| (symbols.get(id)[0].function.clone(), symbols.is_symbolized(id))).collect();
        // The caller's address is moved back into its call instruction.
        assert_eq!(names, [(format!("[jit]+0x{jit:x}"), false), (format!("[unknown]+0x{:x}", data - 1), false)]);
    }
}
