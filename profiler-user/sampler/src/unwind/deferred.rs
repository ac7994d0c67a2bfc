//! Stacks BPF could not unwind with tables, unwound here from a copy of the stack.
//!
//! Between a process's exec (or a `dlopen`) and the moment its tables are in the BPF maps, the
//! BPF walker has nothing to walk with: 50–300 ms in which a Python interpreter already runs
//! hot code. For those samples BPF sends the user registers and 20 KiB of stack
//! ([`StackCopy`], `RecordKind::SampleWithStack`); here they wait until the process's tables are
//! installed and are then walked by the same rules as the BPF walker ([`walk`]). A sample that
//! cannot be completed that way keeps the frame-pointer stack BPF sent with it. See
//! docs/design/0005-stack-copies.md.

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

use profiler_common::{cfa, rbp, unwind_status, UnwindMapping, UnwindRow, MAX_STACK_DEPTH};

use crate::reader::{Sample, StackCopy};

/// One user stack walked from a copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Walk {
    /// Leaf first.
    pub frames: Vec<u64>,
    /// An `unwind_status` value (`COMPLETE`, `TRUNCATED`, `READ_FAULT`).
    pub status: u32,
    /// Some frame had no table and was stepped by frame pointers.
    pub fell_back: bool,
}

/// The mapping of a sorted list that contains `pc`.
fn find_mapping(mappings: &[UnwindMapping], pc: u64) -> Option<&UnwindMapping> {
    let i = mappings.partition_point(|m| m.start <= pc).checked_sub(1)?;
    mappings.get(i).filter(|m| pc < m.end)
}

/// The row of `rows` (a file's table, sorted by file pc) that applies at `file_pc`.
fn find_row(rows: &[UnwindRow], file_pc: u64) -> Option<UnwindRow> {
    let i = rows.partition_point(|r| r.pc <= file_pc).checked_sub(1)?;
    rows.get(i).copied()
}

/// Walks the stack in `copy` with the tables of `mappings` (a process's list as BPF has it;
/// `rows` gives a mapping's table). The rules are the BPF walker's
/// (`profiler-ebpf/programs/src/unwind.rs`), frame for frame: tables where a pc has a row,
/// frame pointers where it has none, `__restore_rt` through the signal frame's ucontext.
pub fn walk<'a>(
    copy: &StackCopy,
    mappings: &[UnwindMapping],
    rows: impl Fn(&UnwindMapping) -> Option<&'a [UnwindRow]>,
) -> Walk {
    let (mut rip, mut rsp, mut rbp_v) = (copy.rip, copy.rsp, copy.rbp);
    let mut frames = Vec::new();
    let mut fell_back = false;
    let mut after_signal = false;
    let status = loop {
        if frames.len() >= MAX_STACK_DEPTH {
            break unwind_status::TRUNCATED;
        }
        if rip == 0 {
            break unwind_status::COMPLETE;
        }
        let n = frames.len();
        frames.push(rip);
        // Callers' pcs are return addresses: look up the call instruction. The leaf's pc, and a
        // pc a signal interrupted, are looked up as they are.
        let lookup = if n == 0 || after_signal { rip } else { rip - 1 };
        after_signal = false;
        let row = find_mapping(mappings, lookup)
            .filter(|m| m.rows_len > 0)
            .and_then(|m| Some((m, rows(m)?)))
            .and_then(|(m, r)| find_row(r, lookup.wrapping_sub(m.bias)));
        let (cfa_addr, saved_rbp) = match row {
            Some(r) if r.cfa == cfa::END => break unwind_status::COMPLETE,
            Some(r) if r.cfa == cfa::SIGNAL => {
                // The ucontext's mcontext: REG_RBP, REG_RSP, REG_RIP.
                let (Some(ip), Some(sp), Some(bp)) = (
                    copy.read_u64(rsp.wrapping_add(168)),
                    copy.read_u64(rsp.wrapping_add(160)),
                    copy.read_u64(rsp.wrapping_add(120)),
                ) else {
                    break unwind_status::READ_FAULT;
                };
                (rip, rsp, rbp_v) = (ip, sp, bp);
                after_signal = true;
                continue;
            }
            Some(r) if r.cfa == cfa::RSP || r.cfa == cfa::RBP || r.cfa == cfa::PLT => {
                let cfa_addr = match r.cfa {
                    cfa::RSP => rsp.wrapping_add(r.cfa_offset as i64 as u64),
                    cfa::RBP => rbp_v.wrapping_add(r.cfa_offset as i64 as u64),
                    _ => rsp.wrapping_add(if (rip & 15) >= r.cfa_offset as u64 { 16 } else { 8 }),
                };
                let saved = (r.rbp == rbp::AT_CFA).then(|| cfa_addr.wrapping_add(r.rbp_offset as i64 as u64));
                (cfa_addr, saved)
            }
            // No table, or a rule we cannot evaluate: frame pointers for this frame. (Ending here
            // on rbp 0 is BPF's rule too, but it is not a walk the tables completed.)
            _ => {
                fell_back = true;
                if rbp_v == 0 {
                    break unwind_status::COMPLETE;
                }
                (rbp_v.wrapping_add(16), Some(rbp_v))
            }
        };
        let Some(ra) = copy.read_u64(cfa_addr.wrapping_sub(8)) else {
            break unwind_status::READ_FAULT;
        };
        if let Some(at) = saved_rbp {
            match copy.read_u64(at) {
                Some(v) => rbp_v = v,
                None => break unwind_status::READ_FAULT,
            }
        }
        rsp = cfa_addr;
        rip = ra;
    };
    Walk { frames, status, fell_back }
}

/// How the stack copies fared, for the summary and the agent's metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CopyStats {
    /// Samples that arrived with a stack copy.
    pub received: u64,
    /// Of those, unwound here down to the outermost frame.
    pub unwound: u64,
    /// Of those, left with the frame-pointer stack BPF sent (no tables in time, or the copy
    /// did not reach the outermost frame).
    pub kept_bpf: u64,
}

/// A sample waiting for its process's tables.
struct Pending {
    since: Instant,
    sample: Sample,
}

/// How long a sample waits for its process's tables before it keeps BPF's stack.
pub const MAX_WAIT: Duration = Duration::from_secs(2);

/// Bytes of stack copies kept waiting at most (about 800 samples); past it the oldest give up.
pub const MAX_PENDING_BYTES: usize = 16 << 20;

/// Samples with stack copies, waiting until their process's tables are installed.
#[derive(Default)]
pub struct Deferred {
    pending: VecDeque<Pending>,
    bytes: usize,
    pub stats: CopyStats,
}

/// What a process's installed tables look like to the walker: its mapping list and the rows of a
/// mapping's table.
pub trait Tables {
    fn mappings(&self, pid: u32) -> Option<&[UnwindMapping]>;
    fn rows(&self, mapping: &UnwindMapping) -> Option<&[UnwindRow]>;
}

impl Deferred {
    /// Takes a sample from the ring buffer; returns it when it is ready for aggregation (no copy,
    /// or unwound completely right away), else keeps it.
    pub fn admit(&mut self, mut sample: Sample, tables: &dyn Tables, ready: &mut Vec<Sample>) {
        if sample.stack_copy.is_none() {
            ready.push(sample);
            return;
        }
        self.stats.received += 1;
        if self.resolve(&mut sample, tables, false) {
            ready.push(sample);
            return;
        }
        self.bytes += copy_bytes(&sample);
        self.pending.push_back(Pending { since: Instant::now(), sample });
        while self.bytes > MAX_PENDING_BYTES {
            let Some(mut p) = self.pending.pop_front() else { break };
            self.bytes -= copy_bytes(&p.sample);
            self.resolve(&mut p.sample, tables, true);
            ready.push(p.sample);
        }
    }

    /// Retries waiting samples with the tables installed now. Those of `gone` processes, those
    /// that waited [`MAX_WAIT`], and with `all` every one, are settled with what there is.
    pub fn retry(&mut self, tables: &dyn Tables, gone: &[u32], all: bool, ready: &mut Vec<Sample>) {
        let mut keep = VecDeque::with_capacity(self.pending.len());
        while let Some(mut p) = self.pending.pop_front() {
            let last = all || gone.contains(&p.sample.tgid) || p.since.elapsed() >= MAX_WAIT;
            let bytes = copy_bytes(&p.sample);
            if self.resolve(&mut p.sample, tables, last) {
                self.bytes -= bytes;
                ready.push(p.sample);
            } else {
                keep.push_back(p);
            }
        }
        self.pending = keep;
    }

    /// Samples waiting.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Unwinds `sample` from its copy. True when it is settled: unwound completely, or `last`
    /// and left with the better of the walk and BPF's frame-pointer stack. The copy is dropped
    /// once settled.
    fn resolve(&mut self, sample: &mut Sample, tables: &dyn Tables, last: bool) -> bool {
        let Some(copy) = sample.stack_copy.as_deref() else { return true };
        let walked = tables.mappings(sample.tgid).map(|m| walk(copy, m, |m| tables.rows(m)));
        // A walk that ran out of copy (or depth) with tables all the way will not do better
        // with later tables: settle it now rather than walking it again at every retry.
        let last = last || walked.as_ref().is_some_and(|w| !w.fell_back && w.status != unwind_status::COMPLETE);
        match walked {
            Some(w) if w.status == unwind_status::COMPLETE && !w.fell_back => {
                sample.user = w.frames;
                sample.user_unwind = unwind_status::COPY_COMPLETE;
                self.stats.unwound += 1;
            }
            _ if !last => return false,
            // Frame pointers helped somewhere, but the walk still reached the end, and further
            // than BPF's frame pointers alone.
            Some(w) if w.status == unwind_status::COMPLETE && w.frames.len() >= sample.user.len() => {
                sample.user = w.frames;
                sample.user_unwind = unwind_status::FP_FALLBACK;
                self.stats.kept_bpf += 1;
            }
            _ => self.stats.kept_bpf += 1,
        }
        sample.stack_copy = None;
        true
    }
}

fn copy_bytes(s: &Sample) -> usize {
    s.stack_copy.as_ref().map_or(0, |c| c.bytes.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stack laid out by hand: a leaf with a 16-byte frame (CFA = rsp + 24), its caller with a
    /// 32-byte frame (CFA = rsp + 40), whose caller is the outermost frame.
    fn fixture() -> (StackCopy, Vec<UnwindMapping>, Vec<UnwindRow>) {
        let base = 0x7ffd_0000_0000u64;
        let rsp = base + 0x100;
        let mut bytes = vec![0u8; 4096];
        let mut put = |addr: u64, v: u64| {
            let at = (addr - base) as usize;
            bytes[at..at + 8].copy_from_slice(&v.to_le_bytes());
        };
        // leaf at 0x401010 (file 0x1010): return address at rsp + 16 → 0x402020
        put(rsp + 16, 0x402020);
        // caller at 0x40201f (file 0x201f): CFA = (rsp + 24) + 40, return address → 0x403001
        put(rsp + 24 + 32, 0x403001);
        let copy = StackCopy { rip: 0x401010, rsp, rbp: 0, base, bytes };
        let row =
            |pc, cfa_kind, off| UnwindRow { pc, cfa_offset: off, rbp_offset: 0, cfa: cfa_kind, rbp: rbp::UNCHANGED };
        let rows =
            vec![row(0x1000, cfa::RSP, 24), row(0x2000, cfa::RSP, 40), row(0x3000, cfa::END, 0), row(0x4000, 0, 0)];
        let m = UnwindMapping { start: 0x400000, end: 0x404000, bias: 0x400000, rows_start: 7, rows_len: 4 };
        (copy, vec![m], rows)
    }

    #[test]
    fn walks_a_copied_stack_to_the_outermost_frame() {
        let (copy, maps, rows) = fixture();
        let w = walk(&copy, &maps, |_| Some(&rows[..]));
        assert_eq!(
            w,
            Walk { frames: vec![0x401010, 0x402020, 0x403001], status: unwind_status::COMPLETE, fell_back: false }
        );
    }

    #[test]
    fn a_copy_that_ends_too_soon_is_a_read_fault_and_no_table_means_frame_pointers() {
        let (mut copy, maps, rows) = fixture();
        copy.bytes.truncate(0x100 + 24 + 32);
        let w = walk(&copy, &maps, |_| Some(&rows[..]));
        assert_eq!((w.frames.len(), w.status), (2, unwind_status::READ_FAULT));
        // No mapping for the leaf and rbp 0: frame pointers end the walk at once, not a walk
        // completed by tables.
        let w = walk(&copy, &[], |_| Some(&rows[..]));
        assert_eq!((w.frames, w.status, w.fell_back), (vec![0x401010], unwind_status::COMPLETE, true));
    }

    struct Fixed(Vec<UnwindMapping>, Vec<UnwindRow>, bool);
    impl Tables for Fixed {
        fn mappings(&self, _: u32) -> Option<&[UnwindMapping]> {
            self.2.then_some(&self.0[..])
        }
        fn rows(&self, _: &UnwindMapping) -> Option<&[UnwindRow]> {
            Some(&self.1)
        }
    }

    #[test]
    fn samples_wait_for_their_tables_and_give_up_keeping_bpfs_stack() {
        let (copy, maps, rows) = fixture();
        let mut s = Sample::with_stacks(5, 5, vec![], vec![0x401010]);
        s.user_unwind = unwind_status::NO_TABLES;
        s.stack_copy = Some(Box::new(copy));
        let mut d = Deferred::default();
        let mut ready = Vec::new();
        let none = Fixed(maps.clone(), rows.clone(), false);
        d.admit(s.clone(), &none, &mut ready);
        assert!(ready.is_empty() && d.len() == 1, "waits while the process has no tables");
        let installed = Fixed(maps, rows, true);
        d.retry(&installed, &[], false, &mut ready);
        assert_eq!(ready.len(), 1);
        assert_eq!(ready[0].user, vec![0x401010, 0x402020, 0x403001]);
        assert_eq!(ready[0].user_unwind, unwind_status::COPY_COMPLETE);
        assert!(ready[0].stack_copy.is_none() && d.is_empty());
        // Never installed: the process goes, the sample keeps BPF's frames.
        d.admit(s, &none, &mut ready);
        d.retry(&none, &[5], false, &mut ready);
        assert_eq!((ready.len(), &ready[1].user, ready[1].user_unwind), (2, &vec![0x401010], unwind_status::NO_TABLES));
        assert_eq!(d.stats, CopyStats { received: 2, unwound: 1, kept_bpf: 1 });
        assert_eq!(d.bytes, 0);
    }
}
