//! Off-CPU profiling: where target threads wait, and for how long (`tp_btf/sched_switch`).
//!
//! At every context switch the kernel calls this program on the CPU that switches, still in the
//! context of the thread that stops running (`prev`):
//!
//! - switch-out of `prev`: when it is a target and wins the threshold draw, its header, kernel
//!   stack and user stack (compiled tables where the process has them, else frame pointers) go
//!   into an [`OffCpuRecord`] in `OFFCPU_WAITS`, keyed by its `task_struct` address;
//! - switch-in of `next`: when `OFFCPU_WAITS` holds a record for it, the record is copied to the
//!   ring buffer with the time off CPU, and removed.
//!
//! So one record per completed wait reaches user space, at its end. Why this shape (and not
//! a record at both ends, or stack IDs), see docs/design/0004-off-cpu.md.

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP, BPF_RB_RING_SIZE},
    helpers::generated::{bpf_get_prandom_u32, bpf_ktime_get_ns, bpf_probe_read_kernel},
    macros::{btf_tracepoint, map},
    maps::{HashMap, PerCpuArray},
    programs::BtfTracePointContext,
};
use profiler_common::{target, Counter, OffCpuRecord, RecordKind, MAX_OFFCPU_WAITS};

use crate::{count, fill_header, read_stack, report_unknown_pc, target_flags, unwind, user_stack, CONFIG};

/// `TASK_DEAD` in `task_struct::__state`: the thread's last switch-out; it never comes back.
const TASK_DEAD: u64 = 0x80;

/// Kernel frames `bpf_get_stack` reports above `__schedule` here: this program and
/// `bpf_trace_run4`, the tracepoint's BPF dispatcher (`BPF_F_SKIP_FIELD_MASK`).
const SKIP_KERNEL_FRAMES: u64 = 2;

/// Pending waits (key: the waiting thread's `task_struct` address). Allocated on demand
/// (BPF_F_NO_PREALLOC) and not LRU: a full map refuses the new wait and counts it
/// (`OffCpuMapFull`) instead of silently evicting the longest one.
#[map]
static OFFCPU_WAITS: HashMap<u64, OffCpuRecord> = HashMap::with_max_entries(MAX_OFFCPU_WAITS, 1);

/// Where a switch-out's record is built before it is copied into `OFFCPU_WAITS` (too large for
/// the BPF stack).
#[map]
static OFFCPU_SCRATCH: PerCpuArray<OffCpuRecord> = PerCpuArray::with_max_entries(1, 0);

/// `sched_switch(bool preempt, struct task_struct *prev, struct task_struct *next,
/// unsigned int prev_state)` (the `prev_state` argument exists since Linux 5.18).
#[btf_tracepoint(function = "sched_switch")]
pub fn on_switch(ctx: BtfTracePointContext) -> u32 {
    let next: u64 = ctx.arg(2);
    switch_in(next);
    let prev: u64 = ctx.arg(1);
    let prev_state: u64 = ctx.arg(3);
    switch_out(&ctx, prev, prev_state);
    0
}

/// `next` runs again: emit its pending record, if it has one.
///
/// Off-CPU records use at most half of the ring buffer: beyond that they are counted as lost,
/// so that a burst of context switches never takes the room of CPU samples and process events.
#[inline(always)]
fn switch_in(next: u64) {
    let Some(pending) = OFFCPU_WAITS.get_ptr_mut(&next) else { return };
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let used = crate::EVENTS.query(BPF_RB_AVAIL_DATA as u64);
    let size = crate::EVENTS.query(BPF_RB_RING_SIZE as u64);
    let reserved = if used < size / 2 { crate::EVENTS.reserve::<OffCpuRecord>(0) } else { None };
    match reserved {
        Some(mut entry) => {
            let record = entry.as_mut_ptr();
            // SAFETY: `record` is an exclusively owned reserved slot of exactly this size, and
            // `pending` a live map value of the same type; the copy fills every field.
            let ok =
                unsafe { bpf_probe_read_kernel(record.cast(), size_of::<OffCpuRecord>() as u32, pending as *const _) }
                    == 0;
            if ok {
                // SAFETY: as above; the slot is fully written.
                unsafe { (*record).off_cpu_ns = now.saturating_sub((*record).header.ktime_ns) };
                // No wakeup per record: waking the reader makes it run, which switches a thread
                // out, whose record would wake the reader again. The reader wakes with process
                // events, on its own timer, or here once an eighth of the ring is in use.
                let flags = if used >= size / 8 { BPF_RB_FORCE_WAKEUP } else { BPF_RB_NO_WAKEUP };
                entry.submit(flags as u64);
            } else {
                entry.discard(0);
                count(Counter::OffCpuLost);
            }
        }
        None => count(Counter::OffCpuLost),
    }
    let _ = OFFCPU_WAITS.remove(&next);
}

/// The current thread (`prev`) stops running: store its stacks when it is a target.
#[inline(always)]
fn switch_out(ctx: &BtfTracePointContext, prev: u64, prev_state: u64) {
    let pid_tgid = aya_ebpf::helpers::bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    // The idle tasks (one per CPU, all pid 0) are "off CPU" exactly while the CPU is busy: not a
    // wait. A dying thread's last switch never has a switch-in.
    if pid_tgid as u32 == 0 || prev_state & TASK_DEAD != 0 {
        return;
    }
    let config = CONFIG.load();
    if config.off_cpu_threshold == 0 {
        return;
    }
    if config.filter_targets != 0 && target_flags(tgid) & target::SAMPLE == 0 {
        return;
    }
    // SAFETY: helper without preconditions.
    if config.off_cpu_threshold != u32::MAX && unsafe { bpf_get_prandom_u32() } > config.off_cpu_threshold {
        return;
    }
    let Some(record) = OFFCPU_SCRATCH.get_ptr_mut(0) else { return };
    let unwound = if config.dwarf_unwind != 0 { unwind::unwind_saved(tgid) } else { core::ptr::null() };
    // SAFETY: this CPU's scratch record (sched_switch runs with interrupts off, nothing else
    // uses it meanwhile); every field is written below.
    unsafe {
        fill_header(&mut (*record).header, RecordKind::OffCpu, pid_tgid);
        (*record).off_cpu_ns = 0;
        (*record)._pad = 0;
        let (klen, kerr) = read_stack(ctx, &mut (*record).kernel_stack, SKIP_KERNEL_FRAMES);
        (*record).kernel_len = klen;
        (*record).kernel_err = kerr;
        ((*record).user_len, (*record).user_err, (*record).user_unwind) =
            user_stack(ctx, &mut (*record).user_stack, unwound, &config);
        report_unknown_pc(unwound, pid_tgid);
        if OFFCPU_WAITS.insert(&prev, &*record, 0).is_err() {
            count(Counter::OffCpuMapFull);
            return;
        }
    }
    count(Counter::OffCpuWaits);
}
