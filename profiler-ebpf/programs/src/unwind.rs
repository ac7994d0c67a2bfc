//! User-stack unwinding with compiled CFI tables (`.eh_frame`), frame pointers where a frame has
//! no table.
//!
//! The walk runs under `bpf_loop`, one frame per iteration, so the verifier checks one frame's
//! code once however deep the stack is. Its state lives in a per-CPU scratch value (the loop's
//! context must be stack memory, and the frames are too large for the stack); the sample
//! program copies the frames into its ring-buffer record afterwards.

use aya_ebpf::{
    bindings::{pt_regs, BPF_F_MMAPABLE},
    helpers::generated::{
        bpf_get_current_task_btf, bpf_loop, bpf_probe_read_kernel, bpf_probe_read_user, bpf_task_pt_regs,
    },
    macros::map,
    maps::{Array, HashMap, PerCpuArray},
    programs::PerfEventContext,
};
use profiler_common::{
    cfa, rbp, unwind_status, ProcUnwind, UnwindMapping, UnwindRow, DEFAULT_UNWIND_ROWS, MAX_STACK_DEPTH,
    MAX_UNWIND_MAPPINGS,
};

/// Every compiled table, back to back; `PROC_UNWIND` says which slice belongs to which mapping.
/// Mappable (`BPF_F_MMAPABLE`): user space writes tables into it in place, no system call per
/// row, and walks stack copies with the same memory (docs/design/0006-agent-cost.md).
#[map]
static UNWIND_ROWS: Array<UnwindRow> = Array::with_max_entries(DEFAULT_UNWIND_ROWS, BPF_F_MMAPABLE);

/// Per-process mappings with tables (key: tgid). Allocated on demand (BPF_F_NO_PREALLOC).
#[map]
static PROC_UNWIND: HashMap<u32, ProcUnwind> = HashMap::with_max_entries(8192, 1);

/// The walk's state, one per CPU.
#[repr(C)]
pub struct Scratch {
    pub frames: [u64; MAX_STACK_DEPTH],
    rip: u64,
    rsp: u64,
    rbp: u64,
    pub len: u32,
    /// How the walk ended (`unwind_status::*`).
    pub status: u32,
    /// 1 when some frame had to use frame pointers.
    pub fell_back: u32,
    /// The first pc outside every known mapping (0: none), for an `UnknownPcRecord`.
    pub unknown_pc: u64,
    /// The process's `ProcUnwind::complete`.
    pub list_complete: u32,
    /// 1 when the current pc came from a signal frame: the interrupted pc itself, not a return
    /// address, so it is looked up as it is.
    after_signal: u32,
}

#[map]
static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

const PT_REGS_SIZE: u32 = core::mem::size_of::<pt_regs>() as u32;

/// Reads a u64 from user memory.
#[inline(always)]
pub fn read_user(addr: u64) -> Option<u64> {
    let mut v: u64 = 0;
    // SAFETY: the helper checks the user address; `v` is a valid 8-byte destination.
    let r = unsafe { bpf_probe_read_user((&mut v as *mut u64).cast(), 8, addr as *const _) };
    (r == 0).then_some(v)
}

/// The user registers of the sampled task: from the sample when it interrupted user code, else
/// from the task's saved user state (`bpf_task_pt_regs`, the sample hit kernel code).
#[inline(always)]
pub fn user_regs(ctx: &PerfEventContext) -> Option<(u64, u64, u64)> {
    // SAFETY: the perf_event context starts with the interrupted registers.
    let regs = unsafe { &(*ctx.ctx).regs };
    if regs.cs & 3 == 3 {
        return Some((regs.rip, regs.rsp, regs.rbp));
    }
    saved_user_regs()
}

/// The current task's user registers as saved when it entered the kernel; `None` for a kernel
/// thread. The only source in `sched_switch`, where the task is always in the kernel.
#[inline(always)]
fn saved_user_regs() -> Option<(u64, u64, u64)> {
    // SAFETY: helpers without preconditions beyond a valid task pointer, which they return.
    let saved = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) } as *const pt_regs;
    // SAFETY: pt_regs is plain integers; all-zero is a valid value.
    let mut user: pt_regs = unsafe { core::mem::zeroed() };
    // SAFETY: reads one pt_regs from kernel memory into a stack copy.
    if unsafe { bpf_probe_read_kernel((&mut user as *mut pt_regs).cast(), PT_REGS_SIZE, saved.cast()) } != 0 {
        return None;
    }
    // A kernel thread has no user state.
    (user.cs & 3 == 3).then_some((user.rip, user.rsp, user.rbp))
}

/// The mapping of `proc` that contains `pc`; `None` when no mapping does (user space does not
/// know this code yet).
#[inline(always)]
fn find_mapping(proc: &ProcUnwind, pc: u64) -> Option<UnwindMapping> {
    // The last mapping starting at or below pc.
    let count = (proc.count as usize).min(MAX_UNWIND_MAPPINGS);
    let (mut lo, mut hi) = (0usize, count);
    for _ in 0..8 {
        if lo >= hi {
            break;
        }
        let mid = (lo + hi) / 2;
        if mid >= MAX_UNWIND_MAPPINGS {
            return None;
        }
        if proc.mappings[mid].start <= pc {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    let i = lo.checked_sub(1)?;
    if i >= MAX_UNWIND_MAPPINGS {
        return None;
    }
    let m = proc.mappings[i];
    (pc < m.end).then_some(m)
}

/// The table row for `pc` in mapping `m`; `None` when the mapping has no table or no row covers
/// pc.
#[inline(always)]
fn find_row(m: &UnwindMapping, pc: u64) -> Option<UnwindRow> {
    if m.rows_len == 0 {
        return None;
    }
    let file_pc = pc.wrapping_sub(m.bias);
    // Row: the last one at or below file_pc.
    let (mut lo, mut hi) = (m.rows_start, m.rows_start.saturating_add(m.rows_len));
    for _ in 0..24 {
        if lo >= hi {
            break;
        }
        let mid = lo + (hi - lo) / 2;
        let row = UNWIND_ROWS.get(mid)?;
        if row.pc <= file_pc {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    if lo <= m.rows_start {
        return None;
    }
    UNWIND_ROWS.get(lo - 1).copied()
}

/// One frame: record the pc, then find the caller's registers.
///
/// Must stay a local (mangled) function: the verifier accepts only static `bpf_loop` callbacks.
/// `cargo xtask build-ebpf` replaces the path-derived crate hash in its symbol name.
extern "C" fn step(_index: u64, ctx: *mut core::ffi::c_void) -> i64 {
    // SAFETY: `walk` passes a `Walk` on its stack; both pointers were checked there.
    let (s, proc) = unsafe {
        let w = &*ctx.cast::<Walk>();
        (&mut *w.scratch, &*w.proc)
    };
    let n = s.len as usize;
    if n >= MAX_STACK_DEPTH {
        s.status = unwind_status::TRUNCATED;
        return 1;
    }
    if s.rip == 0 {
        s.status = unwind_status::COMPLETE;
        return 1;
    }
    s.frames[n] = s.rip;
    s.len += 1;
    // Callers' pcs are return addresses: look up the call instruction. The leaf's pc, and a pc
    // a signal interrupted, are looked up as they are.
    let lookup = if n == 0 || s.after_signal != 0 { s.rip } else { s.rip - 1 };
    s.after_signal = 0;
    let mapping = find_mapping(proc, lookup);
    // A pc no mapping covers is new code (dlopen, JIT); report the first one, unless it came
    // from a frame-pointer step, whose return addresses may be garbage.
    if mapping.is_none() && s.unknown_pc == 0 && s.fell_back == 0 {
        s.unknown_pc = s.rip;
    }
    let row = mapping.and_then(|m| find_row(&m, lookup));
    let (cfa_addr, saved_rbp) = match row {
        Some(r) if r.cfa == cfa::END => {
            s.status = unwind_status::COMPLETE;
            return 1;
        }
        Some(r) if r.cfa == cfa::SIGNAL => {
            // __restore_rt: rsp points at the ucontext; its mcontext holds the interrupted
            // registers (gregs REG_RBP = 10, REG_RSP = 15, REG_RIP = 16, from offset 40).
            let (Some(rip), Some(rsp), Some(rbp)) =
                (read_user(s.rsp + 168), read_user(s.rsp + 160), read_user(s.rsp + 120))
            else {
                s.status = unwind_status::READ_FAULT;
                return 1;
            };
            s.rip = rip;
            s.rsp = rsp;
            s.rbp = rbp;
            s.after_signal = 1;
            return 0;
        }
        Some(r) if r.cfa == cfa::RSP || r.cfa == cfa::RBP || r.cfa == cfa::PLT => {
            let cfa_addr = match r.cfa {
                cfa::RSP => s.rsp.wrapping_add(r.cfa_offset as i64 as u64),
                cfa::RBP => s.rbp.wrapping_add(r.cfa_offset as i64 as u64),
                _ => s.rsp + 8 + if (s.rip & 15) >= r.cfa_offset as u64 { 8 } else { 0 },
            };
            let saved_rbp =
                if r.rbp == rbp::AT_CFA { Some(cfa_addr.wrapping_add(r.rbp_offset as i64 as u64)) } else { None };
            (cfa_addr, saved_rbp)
        }
        // No table, or a rule we cannot evaluate: frame pointers for this frame.
        _ => {
            if s.rbp == 0 {
                s.status = unwind_status::COMPLETE;
                return 1;
            }
            s.fell_back = 1;
            (s.rbp + 16, Some(s.rbp))
        }
    };
    let Some(ra) = read_user(cfa_addr - 8) else {
        s.status = unwind_status::READ_FAULT;
        return 1;
    };
    if let Some(at) = saved_rbp {
        match read_user(at) {
            Some(v) => s.rbp = v,
            None => {
                s.status = unwind_status::READ_FAULT;
                return 1;
            }
        }
    }
    s.rsp = cfa_addr;
    s.rip = ra;
    0
}

/// Unwinds the current task's user stack with tables. Null when the process has none (the caller
/// then uses frame pointers); otherwise the scratch with the frames and the status.
///
/// A raw pointer rather than an `Option`: LLVM leaves the payload register of a `None`
/// undefined and may still spill it, which the verifier rejects as reading an uninitialized
/// register.
#[inline(always)]
pub fn unwind(ctx: &PerfEventContext, tgid: u32) -> *const Scratch {
    let Some(proc) = PROC_UNWIND.get_ptr(&tgid) else { return core::ptr::null() };
    walk(user_regs(ctx), proc)
}

/// [`unwind`] for a task that is in the kernel (`sched_switch`): from its saved user registers.
///
/// Shares the per-CPU scratch with [`unwind`]: `sched_switch` runs with interrupts off, so the
/// perf_event sampler (a timer interrupt) never runs in the middle of it on the same CPU.
#[inline(always)]
pub fn unwind_saved(tgid: u32) -> *const Scratch {
    let Some(proc) = PROC_UNWIND.get_ptr(&tgid) else { return core::ptr::null() };
    walk(saved_user_regs(), proc)
}

/// What every `step` of one walk needs, looked up once per walk: `bpf_loop`'s context (stack
/// memory, whose pointers the verifier follows into the callback).
#[repr(C)]
struct Walk {
    scratch: *mut Scratch,
    /// The process's mappings (`PROC_UNWIND`), one hash lookup per sample rather than per frame.
    proc: *const ProcUnwind,
}

#[inline(always)]
fn walk(regs: Option<(u64, u64, u64)>, proc: *const ProcUnwind) -> *const Scratch {
    let Some(s) = SCRATCH.get_ptr_mut(0) else { return core::ptr::null() };
    // SAFETY: this CPU's scratch value.
    let sr = unsafe { &mut *s };
    sr.len = 0;
    sr.fell_back = 0;
    sr.unknown_pc = 0;
    sr.after_signal = 0;
    // SAFETY: a live map value; an update from user space replaces the element, and the old one
    // stays valid until this program returns (RCU), so the whole walk sees one list.
    sr.list_complete = unsafe { (*proc).complete };
    match regs {
        Some((rip, rsp, rbp)) => {
            sr.rip = rip;
            sr.rsp = rsp;
            sr.rbp = rbp;
            sr.status = unwind_status::COMPLETE;
        }
        None => {
            sr.status = unwind_status::NO_USER_REGS;
            return s;
        }
    }
    let mut w = Walk { scratch: s, proc };
    // SAFETY: `step` is a valid callback; `w` outlives the loop.
    unsafe {
        bpf_loop(MAX_STACK_DEPTH as u32 + 1, step as *mut _, (&mut w as *mut Walk).cast(), 0);
    }
    if sr.status == unwind_status::COMPLETE && sr.fell_back != 0 {
        sr.status = unwind_status::FP_FALLBACK;
    }
    s
}

/// Whether an unknown pc of `tgid` may be reported now: true once per value user space installs
/// (it clears the value's `armed` flag).
#[inline(always)]
pub fn disarm(tgid: u32) -> bool {
    let Some(p) = PROC_UNWIND.get_ptr_mut(&tgid) else { return false };
    // SAFETY: a live map value; a concurrent disarm on another CPU at worst sends a second report.
    unsafe {
        if (*p).armed == 0 {
            return false;
        }
        (*p).armed = 0;
    }
    true
}
