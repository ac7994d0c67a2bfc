//! otelprof kernel-side programs.
//!
//! - `sample` (perf_event, software `cpu-clock`, one per CPU): filters by process in BPF, then
//!   writes one [`SampleRecord`] (kernel and user stacks, leaf first, and the thread context),
//!   sized to what it carries, to the `EVENTS` ring buffer.
//! - `on_fork` / `on_exec` / `on_exit` (sched tracepoints): keep `TARGETS` in step with the
//!   processes being followed and tell user space when a target's mappings change or it exits.
//! - `on_switch` (`tp_btf/sched_switch`, attached only for off-CPU profiling): one
//!   [`profiler_common::OffCpuRecord`] per wait of a target thread, see [`off_cpu`].
//!
//! Every record type and map key lives in `profiler-common`, the one place for the BPF <-> user
//! ABI. Nothing here assumes a kernel struct layout: the only layout-dependent value (the
//! `child_pid` offset of `sched_process_fork`) comes from user space through [`CONFIG`].
#![no_std]
#![no_main]

mod off_cpu;
mod thread_ctx;
mod unwind;

use aya_ebpf::{
    bindings::{BPF_F_USER_STACK, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP, BPF_RB_RING_SIZE},
    helpers::generated::{bpf_get_stack, bpf_probe_read_kernel, bpf_probe_read_user},
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_smp_processor_id, bpf_ktime_get_ns},
    macros::{map, perf_event, tracepoint},
    maps::{HashMap, PerCpuArray, RingBuf},
    programs::{PerfEventContext, TracePointContext},
    EbpfContext, Global,
};
use aya_log_ebpf::warn;
use profiler_common::{
    ctx_status, target, unwind_status, Config, Counter, RecordHeader, RecordKind, SampleRecord, StackCopyRecord,
    TaskRecord, ThreadCtx, UnknownPcRecord, COUNTER_COUNT, DEFAULT_RINGBUF_BYTES, MAX_STACK_DEPTH, MAX_TARGETS,
    STACK_COPY_BYTES,
};

/// Load-time settings; the loader overrides the whole struct.
#[unsafe(no_mangle)]
pub(crate) static CONFIG: Global<Config> = Global::new(Config {
    filter_targets: 0,
    sample_idle: 0,
    fork_child_pid_offset: 0,
    report_all_execs: 0,
    dwarf_unwind: 0,
    fsbase_offset: 0,
    off_cpu_threshold: 0,
});

/// Selected processes (key: tgid, value: `target::*` flags).
#[map]
static TARGETS: HashMap<u32, u8> = HashMap::with_max_entries(MAX_TARGETS, 0);

/// Samples and process events for user space. The loader may resize it.
#[map]
pub(crate) static EVENTS: RingBuf = RingBuf::with_byte_size(DEFAULT_RINGBUF_BYTES, 0);

/// Per-CPU counters indexed by [`Counter`]; user space sums the CPUs.
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_COUNT, 0);

#[inline(always)]
pub(crate) fn count(counter: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU slot, programs do not preempt each other on one CPU for this map.
        unsafe { *slot += 1 };
    }
}

#[inline(always)]
pub(crate) fn target_flags(tgid: u32) -> u8 {
    // SAFETY: the value is a plain u8 copied out immediately.
    unsafe { TARGETS.get(&tgid) }.copied().unwrap_or(0)
}

#[inline(always)]
pub(crate) fn fill_header(header: &mut RecordHeader, kind: RecordKind, pid_tgid: u64) {
    header.kind = kind as u32;
    header.tgid = (pid_tgid >> 32) as u32;
    header.tid = pid_tgid as u32;
    // SAFETY: helper without preconditions.
    header.cpu = unsafe { bpf_get_smp_processor_id() };
    // SAFETY: helper without preconditions.
    header.ktime_ns = unsafe { bpf_ktime_get_ns() };
    header.comm = bpf_get_current_comm().unwrap_or([0; 16]);
}

/// Unread bytes in the ring buffer from which a sample wakes the reader.
const SAMPLE_WAKEUP_BYTES: u64 = 256 * 1024;

/// Submit flags of a plain sample: no wakeup (the kernel's wakeup is an interrupt, a costly
/// self-IPI in a VM, and a reader woken for every sample at that), unless a quarter MiB is
/// waiting. The reader collects the rest on its own timer (every 250 ms) or when another
/// record wakes it.
#[inline(always)]
fn sample_wakeup() -> u64 {
    if EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= SAMPLE_WAKEUP_BYTES {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

/// Submit flags of every other record (process events, unknown pcs, stack copies): they wake
/// the reader. Forced: the kernel's default wakes the reader only when it has read everything
/// before the record, which samples and off-CPU records (both submitted without a wakeup) may
/// leave unread.
#[inline(always)]
fn wakeup() -> u64 {
    BPF_RB_FORCE_WAKEUP as u64
}

/// Fills one stack array with `bpf_get_stack`; returns (frames, error).
#[inline(always)]
pub(crate) fn read_stack<C: EbpfContext>(ctx: &C, buf: &mut [u64; MAX_STACK_DEPTH], flags: u64) -> (u32, i32) {
    const BYTES: u32 = (MAX_STACK_DEPTH * 8) as u32;
    // SAFETY: `buf` is writable memory of exactly BYTES bytes inside the reserved record.
    let ret = unsafe { bpf_get_stack(ctx.as_ptr(), buf.as_mut_ptr().cast(), BYTES, flags) };
    if ret < 0 {
        (0, ret as i32)
    } else {
        ((ret as u32) / 8, 0)
    }
}

#[perf_event]
pub fn sample(ctx: PerfEventContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let config = CONFIG.load();
    if tgid == 0 && config.sample_idle == 0 {
        return 0;
    }
    if config.filter_targets != 0 && target_flags(tgid) & target::SAMPLE == 0 {
        return 0;
    }
    count(Counter::Samples);
    let unwound = if config.dwarf_unwind != 0 { unwind::unwind(&ctx, tgid) } else { core::ptr::null() };
    report_unknown_pc(unwound, pid_tgid);
    // Without tables for this stack (none installed yet, or code user space has not described),
    // send the registers and a copy of the stack along, so user space can unwind it with the
    // tables it is installing (docs/design/0005-stack-copies.md). Frame pointers still fill
    // the record's user stack, the fallback when user space cannot do better.
    if config.dwarf_unwind != 0 {
        // SAFETY: this CPU's scratch value, returned by `unwind`.
        // (New code only where the process's list is complete: elsewhere a pc outside it is
        // expected and tables will not come.)
        let incomplete = unwound.is_null() || unsafe { (*unwound).unknown_pc != 0 && (*unwound).list_complete != 0 };
        // Copies may fill half the ring buffer at most, so plain samples always find room
        // while user space is busy (compiling a large table, say). Asked only when a copy is
        // wanted: most samples walk with tables and need none.
        let room = incomplete
            && EVENTS.query(BPF_RB_AVAIL_DATA as u64) + (size_of::<StackCopyRecord>() as u64)
                <= EVENTS.query(BPF_RB_RING_SIZE as u64) / 2;
        if incomplete && !room {
            count(Counter::CopiesSkipped);
        }
        if incomplete && room {
            if let Some(regs) = unwind::user_regs(&ctx) {
                match EVENTS.reserve::<StackCopyRecord>(0) {
                    Some(mut entry) => {
                        let record = entry.as_mut_ptr();
                        // SAFETY: an exclusively owned reserved slot; every field is written
                        // before submit.
                        let copied = unsafe { copy_stack(&mut *record, regs) };
                        if copied {
                            // SAFETY: as above.
                            unsafe {
                                fill_sample(
                                    &ctx,
                                    &mut (*record).sample,
                                    RecordKind::SampleWithStack,
                                    pid_tgid,
                                    unwound,
                                    &config,
                                );
                            }
                            entry.submit(wakeup());
                            count(Counter::StackCopies);
                            return 0;
                        }
                        // Not even rsp's page could be read: a plain sample says as much.
                        entry.discard(0);
                    }
                    None => count(Counter::CopiesSkipped),
                }
            }
        }
    }
    // Built here, then only the used part goes to the ring buffer.
    let Some(record) = SAMPLE_SCRATCH.get_ptr_mut(0) else { return 0 };
    // SAFETY: this CPU's scratch record; a perf_event program does not nest with itself.
    let len = unsafe { fill_sample(&ctx, &mut *record, RecordKind::Sample, pid_tgid, unwound, &config) };
    let len = len.min(size_of::<SampleRecord>());
    // SAFETY: the first `len` bytes of the scratch record, all written by `fill_sample`.
    let bytes = unsafe { core::slice::from_raw_parts(record.cast::<u8>(), len) };
    if EVENTS.output::<[u8]>(bytes, sample_wakeup()).is_err() {
        count(Counter::LostSamples);
    }
    0
}

/// Where a sample is built before its used part is copied to the ring buffer.
#[map]
static SAMPLE_SCRATCH: PerCpuArray<SampleRecord> = PerCpuArray::with_max_entries(1, 0);

/// Writes one sample: header, kernel stack (only when the sample interrupted the kernel: a
/// sample in user code has no kernel frames), user stack (the table walk's frames when `unwound`
/// is not null, else frame pointers) and the thread context, packed (see [`SampleRecord`]).
/// Returns the bytes written.
#[inline(always)]
fn fill_sample(
    ctx: &PerfEventContext,
    record: &mut SampleRecord,
    kind: RecordKind,
    pid_tgid: u64,
    unwound: *const unwind::Scratch,
    config: &Config,
) -> usize {
    let tgid = (pid_tgid >> 32) as u32;
    fill_header(&mut record.header, kind, pid_tgid);
    // SAFETY: the perf_event context starts with the interrupted registers.
    let in_kernel = unsafe { (*ctx.ctx).regs.cs } & 3 != 3;
    let data = record.data.as_mut_ptr();
    let (klen, kerr) = if in_kernel {
        // SAFETY: the first MAX_STACK_DEPTH words of `data`.
        read_stack(ctx, unsafe { &mut *data.cast::<[u64; MAX_STACK_DEPTH]>() }, 0)
    } else {
        (0, 0)
    };
    let klen = (klen as usize).min(MAX_STACK_DEPTH);
    record.kernel_len = klen as u32;
    record.kernel_err = kerr;
    // SAFETY: klen <= MAX_STACK_DEPTH, so MAX_STACK_DEPTH words from `klen` lie inside `data`.
    let user = unsafe { &mut *data.add(klen).cast::<[u64; MAX_STACK_DEPTH]>() };
    let (ulen, uerr, status) = user_stack(ctx, user, unwound, config);
    let frames = klen + (ulen as usize).min(MAX_STACK_DEPTH);
    record.user_len = (frames - klen) as u32;
    record.user_err = uerr;
    record.user_unwind = status;
    // SAFETY: frames <= 2 * MAX_STACK_DEPTH, so a ThreadCtx after them lies inside `data`.
    let ctx_out = unsafe { data.add(frames).cast::<ThreadCtx>() };
    record.ctx_status = thread_ctx::read(tgid, config, ctx_out);
    SampleRecord::bytes(frames, record.ctx_status == ctx_status::VALID)
}

/// A record's user stack: the table walk's frames when `unwound` is not null (reporting the
/// first unknown pc it met, once per installed list), else frame pointers. Returns (frames,
/// `bpf_get_stack` error, `unwind_status`). CPU samples and off-CPU waits both use it.
#[inline(always)]
pub(crate) fn user_stack<C: EbpfContext>(
    ctx: &C,
    stack: &mut [u64; MAX_STACK_DEPTH],
    unwound: *const unwind::Scratch,
    config: &Config,
) -> (u32, i32, u32) {
    if unwound.is_null() {
        let (len, err) = read_stack(ctx, stack, BPF_F_USER_STACK as u64);
        let status = if config.dwarf_unwind != 0 { unwind_status::NO_TABLES } else { unwind_status::FRAME_POINTERS };
        return (len, err, status);
    }
    // SAFETY: this CPU's scratch value, returned by `unwind`; the copy goes from map memory into
    // the record.
    unsafe {
        let len = (*unwound).len.min(MAX_STACK_DEPTH as u32);
        let ok = bpf_probe_read_kernel(stack.as_mut_ptr().cast(), len * 8, (*unwound).frames.as_ptr().cast()) == 0;
        (if ok { len } else { 0 }, 0, (*unwound).status)
    }
}

/// Tells user space about the first pc outside every known mapping that the walk met, once per
/// installed list (`unwind::disarm`).
#[inline(always)]
pub(crate) fn report_unknown_pc(unwound: *const unwind::Scratch, pid_tgid: u64) {
    if unwound.is_null() {
        return;
    }
    // SAFETY: this CPU's scratch value, returned by `unwind`.
    let pc = unsafe { (*unwound).unknown_pc };
    if pc != 0 && unwind::disarm((pid_tgid >> 32) as u32) {
        emit_unknown_pc(pid_tgid, pc);
    }
}

/// Copies whole pages of the user stack from the page of `rsp` upwards into the record, stopping
/// at the first page that cannot be read (the top of the stack). False when none could be.
#[inline(always)]
fn copy_stack(record: &mut StackCopyRecord, (rip, rsp, rbp): (u64, u64, u64)) -> bool {
    const PAGE: usize = 4096;
    record.rip = rip;
    record.rsp = rsp;
    record.rbp = rbp;
    record._pad = 0;
    let base = rsp & !(PAGE as u64 - 1);
    record.stack_base = base;
    let mut len = 0u32;
    for i in 0..STACK_COPY_BYTES / PAGE {
        // SAFETY: i * PAGE + PAGE <= STACK_COPY_BYTES.
        let dst = unsafe { record.stack.as_mut_ptr().add(i * PAGE) };
        // SAFETY: `dst` has PAGE writable bytes inside the reserved record; the helper checks
        // the user address.
        let r = unsafe { bpf_probe_read_user(dst.cast(), PAGE as u32, (base + (i * PAGE) as u64) as *const _) };
        if r != 0 {
            break;
        }
        len += PAGE as u32;
    }
    record.stack_len = len;
    len != 0
}

#[inline(always)]
fn emit_task(kind: RecordKind, pid_tgid: u64) {
    let Some(mut entry) = EVENTS.reserve::<TaskRecord>(0) else {
        count(Counter::LostEvents);
        return;
    };
    let record = entry.as_mut_ptr();
    // SAFETY: exclusively owned reserved slot, fully written before submit.
    unsafe {
        fill_header(&mut (*record).header, kind, pid_tgid);
    }
    entry.submit(wakeup());
}

/// Tells user space that `pc` lies outside every mapping it described for the process.
#[inline(always)]
fn emit_unknown_pc(pid_tgid: u64, pc: u64) {
    let Some(mut entry) = EVENTS.reserve::<UnknownPcRecord>(0) else {
        count(Counter::LostEvents);
        return;
    };
    let record = entry.as_mut_ptr();
    // SAFETY: exclusively owned reserved slot, fully written before submit.
    unsafe {
        fill_header(&mut (*record).header, RecordKind::UnknownPc, pid_tgid);
        (*record).pc = pc;
    }
    entry.submit(wakeup());
    count(Counter::UnknownPcs);
}

/// `sched/sched_process_fork`: children of SPAWNER or FOLLOW processes become targets, so a
/// command started by `otelprof record -- CMD` is sampled from its first instruction.
#[tracepoint]
pub fn on_fork(ctx: TracePointContext) -> u32 {
    let config = CONFIG.load();
    if config.filter_targets == 0 {
        return 0;
    }
    let parent = (bpf_get_current_pid_tgid() >> 32) as u32;
    let flags = target_flags(parent);
    if flags & (target::SPAWNER | target::FOLLOW) == 0 {
        return 0;
    }
    // SAFETY: the offset comes from the tracepoint's own format file.
    let Ok(child) = (unsafe { ctx.read_at::<i32>(config.fork_child_pid_offset as usize) }) else {
        return 0;
    };
    // A new thread of the parent shows up here too; its tid never equals a tgid that samples
    // carry while the thread lives, and `on_exit` removes it again.
    let child_flags = target::SAMPLE | target::FOLLOW;
    if TARGETS.insert(&(child as u32), &child_flags, 0).is_err() {
        count(Counter::TargetsFull);
        warn!(&ctx, "otelprof: TARGETS full, pid {} not followed", child);
    }
    0
}

/// `sched/sched_process_exec`: a target's mappings changed; user space re-reads them. With
/// `report_all_execs`, every exec is reported so user space can decide whether it is a target.
#[tracepoint]
pub fn on_exec(_ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let config = CONFIG.load();
    if config.filter_targets != 0 && config.report_all_execs == 0 && target_flags(tgid) & target::SAMPLE == 0 {
        return 0;
    }
    emit_task(RecordKind::Exec, pid_tgid);
    0
}

/// `sched/sched_process_exit`: forget exited tasks and tell user space when a process ends.
#[tracepoint]
pub fn on_exit(_ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let tid = pid_tgid as u32;
    let config = CONFIG.load();
    if config.filter_targets != 0 {
        let flags = target_flags(tid);
        if tid != tgid {
            // A thread added as a "child" by on_fork: drop it so the map stays bounded.
            if flags != 0 {
                let _ = TARGETS.remove(&tid);
            }
            return 0;
        }
        if flags & target::SAMPLE == 0 {
            return 0;
        }
        let _ = TARGETS.remove(&tgid);
    } else if tid != tgid {
        return 0;
    }
    emit_task(RecordKind::Exit, pid_tgid);
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
