//! The BPF <-> user-space ABI of otelprof, in one place.
//!
//! Both the kernel-side programs (`profiler-ebpf/programs`, built for `bpfel-unknown-none`) and the
//! user-space binary (`profiler-user`) use these `#[repr(C)]` types, so a layout change is always a
//! change to both sides in one commit. Every record written to the ring buffer starts with a
//! [`RecordHeader`] whose `kind` says which struct follows.
//!
//! The committed BPF object in `profiler-ebpf/prebuilt/` is built from this crate too; its source
//! hash covers this file, so CI notices when the ABI moved but the object did not.
#![no_std]

/// Deepest kernel or user stack one sample carries, in frames.
///
/// 127 is the kernel's default `kernel.perf_event_max_stack`, so `bpf_get_stack` never has more.
pub const MAX_STACK_DEPTH: usize = 127;

/// Length of `task_struct::comm`.
pub const TASK_COMM_LEN: usize = 16;

/// Default size of the sample ring buffer in bytes (must be a power of two and a page multiple).
pub const DEFAULT_RINGBUF_BYTES: u32 = 8 * 1024 * 1024;

/// Upper bound of the target map; also bounds processes followed through fork.
pub const MAX_TARGETS: u32 = 16384;

/// Threads that can be off CPU at the same time with a pending [`OffCpuRecord`] (the
/// `OFFCPU_WAITS` map, allocated on demand: about 2 KiB per waiting thread). A switch-out that
/// finds the map full is counted in [`Counter::OffCpuMapFull`].
pub const MAX_OFFCPU_WAITS: u32 = 16384;

/// Kind of the record that follows a [`RecordHeader`] in the ring buffer.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    /// A [`SampleRecord`]: one CPU-clock sample.
    Sample = 1,
    /// A [`TaskRecord`]: a process called `execve`; its mappings changed.
    Exec = 2,
    /// A [`TaskRecord`]: a process (thread-group leader) exited.
    Exit = 3,
    /// An [`UnknownPcRecord`]: the unwinder met a pc outside every mapping user space described
    /// for the process (a `dlopen`ed library, new JIT code): its mappings should be re-read.
    UnknownPc = 4,
    /// An [`OffCpuRecord`]: a target thread was off CPU (blocked, sleeping or preempted) for
    /// `off_cpu_ns`, with its stacks as it was switched out.
    OffCpu = 5,
    /// A [`StackCopyRecord`]: a sample whose user stack BPF could not unwind with tables (the
    /// process's tables are not installed yet, or the walk met code user space has not
    /// described), with the user registers and a copy of the top of the user stack, so user
    /// space unwinds it once it knows the process's code.
    SampleWithStack = 6,
}

impl RecordKind {
    /// Decodes the `kind` field of a [`RecordHeader`]; `None` for unknown kinds.
    pub fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::Sample),
            2 => Some(Self::Exec),
            3 => Some(Self::Exit),
            4 => Some(Self::UnknownPc),
            5 => Some(Self::OffCpu),
            6 => Some(Self::SampleWithStack),
            _ => None,
        }
    }
}

/// First field of every ring-buffer record.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RecordHeader {
    /// A [`RecordKind`] as `u32`.
    pub kind: u32,
    /// Process ID (thread-group ID) the record belongs to.
    pub tgid: u32,
    /// Thread ID.
    pub tid: u32,
    /// CPU the record was written on.
    pub cpu: u32,
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) when the record was written.
    pub ktime_ns: u64,
    /// `comm` of the current task, NUL-padded.
    pub comm: [u8; TASK_COMM_LEN],
}

/// One CPU sample: who was running, both of its stacks and its thread context, sized to what it
/// carries.
///
/// `data` holds, back to back: `kernel_len` kernel frames, then `user_len` user frames (both leaf
/// first, as `bpf_get_stack` writes them), then, only when `ctx_status` is `ctx_status::VALID`,
/// the [`ThreadCtx`] (its bytes, [`THREAD_CTX_BYTES`]). A [`RecordKind::Sample`] record ends there
/// ([`SampleRecord::bytes`]): BPF builds it in a per-CPU buffer and sends only that much, so a
/// shallow sample without a context is 64 bytes plus 8 per frame instead of the whole struct.
/// Inside a [`StackCopyRecord`] the struct is whole, with the same layout of `data`.
///
/// A negative `*_err` is the errno `bpf_get_stack` returned (the stack is then empty). A sample
/// that interrupted user code has no kernel frames and does not ask for them (`kernel_len` 0).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SampleRecord {
    pub header: RecordHeader,
    /// Number of kernel frames at the start of `data`.
    pub kernel_len: u32,
    /// Number of user frames in `data`, after the kernel frames.
    pub user_len: u32,
    /// Error from `bpf_get_stack` for the kernel stack, 0 when fine.
    pub kernel_err: i32,
    /// Error from `bpf_get_stack` for the user stack, 0 when fine.
    pub user_err: i32,
    /// How the user stack was unwound and how that ended: an `unwind_status::*` value.
    pub user_unwind: u32,
    /// What the thread-context read found: a `ctx_status::*` value. The context follows the
    /// frames only for `ctx_status::VALID`.
    pub ctx_status: u32,
    /// Kernel frames, user frames, then the thread context (see above).
    pub data: [u64; SAMPLE_DATA_WORDS],
}

/// Bytes of a [`ThreadCtx`] (the OTEP recommends records of at most 640 bytes).
pub const THREAD_CTX_BYTES: usize = THREAD_CTX_HEADER + THREAD_CTX_MAX_ATTRS;

/// Words of [`SampleRecord::data`]: two full stacks and a thread context.
pub const SAMPLE_DATA_WORDS: usize = 2 * MAX_STACK_DEPTH + THREAD_CTX_BYTES / 8;

/// Bytes of a [`SampleRecord`] before `data`.
pub const SAMPLE_FIXED_BYTES: usize = size_of::<SampleRecord>() - SAMPLE_DATA_WORDS * 8;

const _: () = assert!(THREAD_CTX_BYTES.is_multiple_of(8) && size_of::<ThreadCtx>() == THREAD_CTX_BYTES);
const _: () = assert!(SAMPLE_FIXED_BYTES == 64);

/// A [`SampleRecord`] without `data`: what user space reads first, since a sample is only as
/// long as what it carries (the whole struct may not be there to read).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SampleHead {
    pub header: RecordHeader,
    pub kernel_len: u32,
    pub user_len: u32,
    pub kernel_err: i32,
    pub user_err: i32,
    pub user_unwind: u32,
    pub ctx_status: u32,
}

// Field for field where `SampleRecord` has them.
const _: () = {
    use core::mem::offset_of;
    assert!(size_of::<SampleHead>() == SAMPLE_FIXED_BYTES);
    assert!(offset_of!(SampleHead, header) == offset_of!(SampleRecord, header));
    assert!(offset_of!(SampleHead, kernel_len) == offset_of!(SampleRecord, kernel_len));
    assert!(offset_of!(SampleHead, user_len) == offset_of!(SampleRecord, user_len));
    assert!(offset_of!(SampleHead, kernel_err) == offset_of!(SampleRecord, kernel_err));
    assert!(offset_of!(SampleHead, user_err) == offset_of!(SampleRecord, user_err));
    assert!(offset_of!(SampleHead, user_unwind) == offset_of!(SampleRecord, user_unwind));
    assert!(offset_of!(SampleHead, ctx_status) == offset_of!(SampleRecord, ctx_status));
};

impl SampleRecord {
    /// Bytes of a [`RecordKind::Sample`] record with `frames` frames (kernel and user together)
    /// and, when `ctx`, a thread context.
    #[inline(always)]
    pub const fn bytes(frames: usize, ctx: bool) -> usize {
        SAMPLE_FIXED_BYTES + frames * 8 + if ctx { THREAD_CTX_BYTES } else { 0 }
    }
}

/// Bytes of user stack a [`StackCopyRecord`] holds: five pages starting at the page of the
/// sampled stack pointer, so at least 16 KiB above it (`perf --call-graph dwarf` copies 8 KiB).
pub const STACK_COPY_BYTES: usize = 5 * 4096;

/// A sample (with its frame-pointer user stack as a fallback) plus what user space needs to
/// unwind the user stack itself: the interrupted user registers and a copy of the stack.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct StackCopyRecord {
    /// `sample.header.kind` is [`RecordKind::SampleWithStack`].
    pub sample: SampleRecord,
    /// User `rip`, `rsp`, `rbp` at the sample.
    pub rip: u64,
    pub rsp: u64,
    pub rbp: u64,
    /// User address of `stack[0]` (the start of `rsp`'s page).
    pub stack_base: u64,
    /// Bytes of `stack` that were read (whole pages; reading stops at the first page that
    /// cannot be read, e.g. above the top of the stack).
    pub stack_len: u32,
    pub _pad: u32,
    pub stack: [u8; STACK_COPY_BYTES],
}

/// Bytes of an OTEP 4947 thread-context record before its attributes: trace_id[16], span_id[8],
/// valid u8, trace_flags u8, attrs_size u16.
pub const THREAD_CTX_HEADER: usize = 28;

/// Attribute bytes a sample carries at most ([`THREAD_CTX_BYTES`] with the header).
pub const THREAD_CTX_MAX_ATTRS: usize = 612;

/// A thread-context record as BPF copied it: the header verbatim, then the first
/// `min(attrs_size, THREAD_CTX_MAX_ATTRS)` attribute bytes (the rest of `attrs` is undefined).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ThreadCtx {
    pub header: [u8; THREAD_CTX_HEADER],
    pub attrs: [u8; THREAD_CTX_MAX_ATTRS],
}

/// What reading a sample's thread context found ([`SampleRecord::ctx_status`]).
pub mod ctx_status {
    /// The process has no thread-context reader installed.
    pub const NONE: u32 = 0;
    /// The thread's context pointer is null, or its TLS block is not allocated: no active span.
    pub const EMPTY: u32 = 1;
    /// A record with `valid == 1` was copied.
    pub const VALID: u32 = 2;
    /// A record was found but its `valid` byte was not 1 (being written): ignored.
    pub const INVALID: u32 = 3;
    /// Reading the thread pointer, the TLS slot or the record failed.
    pub const FAULT: u32 = 4;
}

/// Where a process keeps its `otel_thread_ctx_v1` TLS pointer, relative to a thread's thread
/// pointer (`fsbase` on x86_64): value of the `THREAD_CTX` map (key: tgid), computed by user space
/// from the ELF symbol and the process's relocated GOT.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TlsLocation {
    /// A `tls_kind::*` value.
    pub kind: u32,
    pub _pad: u32,
    /// `STATIC`: added to the thread pointer. `DTV`: added to the module's TLS block.
    pub offset: i64,
    /// `DTV`: the module ID (index into the dynamic thread vector).
    pub module: u64,
}

/// How a [`TlsLocation`] is resolved.
pub mod tls_kind {
    /// Static TLS (the executable, initial-exec libraries, TLSDESC resolved statically): the
    /// pointer is at `tp + offset`.
    pub const STATIC: u32 = 1;
    /// Dynamic TLS (`dlopen`ed libraries): the pointer is at `dtv[module] + offset`, where the
    /// DTV is at `tp + 8` and its entries are 16 bytes (glibc's `dtv_t`).
    pub const DTV: u32 = 2;
}

/// A process lifecycle event (exec or exit).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TaskRecord {
    pub header: RecordHeader,
}

/// The unwinder met `pc`, which no mapping in the process's [`ProcUnwind`] covers. Sent at most
/// once per installed `ProcUnwind` value (BPF clears [`ProcUnwind::armed`] when it sends one; user
/// space re-arms it with the refreshed value).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct UnknownPcRecord {
    pub header: RecordHeader,
    pub pc: u64,
}

/// One off-CPU period of a thread (`sched_switch`, see docs/design/0004-off-cpu.md).
///
/// Filled when the thread is switched out (its header, CPU and `ktime_ns` are those of the
/// switch-out; its stacks are where it stopped running) and kept in the `OFFCPU_WAITS` map (key:
/// the thread's `task_struct` address) until the thread is switched back in; only then is it
/// copied to the ring buffer with `off_cpu_ns` set. Stacks are leaf first; the fields mean what
/// they mean in [`SampleRecord`].
#[repr(C)]
#[derive(Clone, Copy)]
pub struct OffCpuRecord {
    pub header: RecordHeader,
    /// Nanoseconds between the switch-out and the switch-in (`bpf_ktime_get_ns`).
    pub off_cpu_ns: u64,
    pub kernel_len: u32,
    pub user_len: u32,
    pub kernel_err: i32,
    pub user_err: i32,
    /// An `unwind_status::*` value.
    pub user_unwind: u32,
    pub _pad: u32,
    pub kernel_stack: [u64; MAX_STACK_DEPTH],
    pub user_stack: [u64; MAX_STACK_DEPTH],
}

/// One row of a compiled unwind table (x86_64): how to find the caller's frame for every pc from
/// `pc` up to the next row's `pc`. Built in user space from `.eh_frame` / `.debug_frame`
/// (`profiler-user/src/unwind`), read by the BPF unwinder. `pc` is a file-relative virtual
/// address (the ELF's own addresses, before the load bias).
///
/// The return address is always at CFA - 8 on x86_64, so it needs no column.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct UnwindRow {
    pub pc: u64,
    /// Added to the register `cfa` names (for `cfa::PLT`: the pc threshold, 10 or 11).
    pub cfa_offset: i32,
    /// Where the caller's rbp was saved, relative to the CFA (for `rbp::AT_CFA`).
    pub rbp_offset: i16,
    /// A `cfa::*` kind.
    pub cfa: u8,
    /// A `rbp::*` kind.
    pub rbp: u8,
}

/// How the CFA (the caller's stack pointer) is computed in an [`UnwindRow`].
pub mod cfa {
    /// No unwind information here (between FDEs): fall back to frame pointers.
    pub const NONE: u8 = 0;
    /// CFA = rsp + offset.
    pub const RSP: u8 = 1;
    /// CFA = rbp + offset.
    pub const RBP: u8 = 2;
    /// A PLT stub: CFA = rsp + 8, plus 8 more when (rip & 15) >= offset.
    pub const PLT: u8 = 3;
    /// A signal trampoline (`__restore_rt`): the interrupted registers are in the ucontext at rsp.
    pub const SIGNAL: u8 = 4;
    /// The outermost frame (return address undefined, e.g. `_start`): the stack ends here.
    pub const END: u8 = 5;
    /// A rule the unwinder cannot evaluate (a general DWARF expression): fall back.
    pub const UNSUPPORTED: u8 = 6;
}

/// Where the caller's rbp is in an [`UnwindRow`].
pub mod rbp {
    /// rbp still holds the caller's value.
    pub const UNCHANGED: u8 = 0;
    /// Saved at CFA + rbp_offset.
    pub const AT_CFA: u8 = 1;
}

/// Executable mappings with unwind tables per process, at most.
pub const MAX_UNWIND_MAPPINGS: usize = 128;

/// Rows of all unwind tables together (the `UNWIND_ROWS` array), by default.
pub const DEFAULT_UNWIND_ROWS: u32 = 1 << 21;

/// One executable mapping of a process. `rows_len == 0`: known, but without a table (anonymous
/// or JIT memory, a file whose CFI could not be compiled): frame pointers there, no report.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnwindMapping {
    pub start: u64,
    pub end: u64,
    /// Subtracted from a pc in this mapping to get the file's own virtual address.
    pub bias: u64,
    /// The table: `UNWIND_ROWS[rows_start .. rows_start + rows_len]`, sorted by pc.
    pub rows_start: u32,
    pub rows_len: u32,
}

/// Value of the `PROC_UNWIND` map (key: tgid): the process's executable mappings, sorted by
/// start, so the unwinder can binary-search a pc.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ProcUnwind {
    pub count: u32,
    /// 1: the unwinder may report one pc outside every mapping ([`UnknownPcRecord`]) and then
    /// sets this to 0. User space writes 1 with every fresh value, 0 when the list is known to be
    /// incomplete (more than [`MAX_UNWIND_MAPPINGS`] mappings), so a report never repeats in a loop.
    pub armed: u32,
    /// 1: the list holds every executable mapping of the process, so a pc outside all of them
    /// is code user space has not seen yet and a stack copy of the sample is worth sending
    /// (docs/design/0005); 0: mappings were left out (more than [`MAX_UNWIND_MAPPINGS`]).
    pub complete: u32,
    pub _pad: u32,
    pub mappings: [UnwindMapping; MAX_UNWIND_MAPPINGS],
}

/// How a sample's user stack was unwound ([`SampleRecord::user_unwind`]).
pub mod unwind_status {
    /// Frame pointers (`bpf_get_stack`), as configured.
    pub const FRAME_POINTERS: u32 = 0;
    /// Unwound with tables down to the outermost frame.
    pub const COMPLETE: u32 = 1;
    /// Stopped at the maximum depth.
    pub const TRUNCATED: u32 = 2;
    /// Some frame had no table (JIT, anonymous memory, unknown mapping): continued by frame
    /// pointers from there.
    pub const FP_FALLBACK: u32 = 3;
    /// A stack read failed (paged out, corrupt stack).
    pub const READ_FAULT: u32 = 4;
    /// No user registers (a kernel thread).
    pub const NO_USER_REGS: u32 = 5;
    /// The process has no unwind tables (yet): frame pointers were used.
    pub const NO_TABLES: u32 = 6;
    /// User space only: unwound by user space with the process's tables from a
    /// [`StackCopyRecord`] down to the outermost frame.
    pub const COPY_COMPLETE: u32 = 7;
}

/// Value flags of the `TARGETS` map (key: tgid).
pub mod target {
    /// Samples of this process are recorded.
    pub const SAMPLE: u8 = 1;
    /// Children forked by this process become targets (`SAMPLE`), this process itself is not
    /// sampled unless `SAMPLE` is also set. `otelprof record -- CMD` marks itself this way so the
    /// command is a target before its first instruction.
    pub const SPAWNER: u8 = 2;
    /// Children of this process inherit `SAMPLE` (follow forks, as `perf record -- CMD` does).
    pub const FOLLOW: u8 = 4;
}

/// Indexes into the per-CPU `COUNTERS` array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Samples of a selected process that the program saw.
    Samples = 0,
    /// Samples dropped because the ring buffer was full.
    LostSamples = 1,
    /// Exec/exit events dropped because the ring buffer was full.
    LostEvents = 2,
    /// Processes that could not be added to `TARGETS` on fork (map full).
    TargetsFull = 3,
    /// Unknown-pc reports sent ([`UnknownPcRecord`]); lost ones count in `LostEvents`.
    UnknownPcs = 4,
    /// Switch-outs of target threads whose stacks were stored (after the threshold draw): each
    /// becomes an [`OffCpuRecord`] at the thread's switch-in, or is lost (the next two), or is
    /// still pending when profiling stops.
    OffCpuWaits = 5,
    /// Off-CPU records dropped at switch-in because the ring buffer was half full (off-CPU records
    /// leave the other half to CPU samples and process events).
    OffCpuLost = 6,
    /// Switch-outs not recorded because `OFFCPU_WAITS` was full.
    OffCpuMapFull = 7,
    /// Samples sent with a copy of their user stack ([`StackCopyRecord`]).
    StackCopies = 8,
    /// Samples that needed a stack copy but were sent without one: the ring buffer was half
    /// full (copies never crowd out plain samples), or had no room for the copy.
    CopiesSkipped = 9,
}

impl Counter {
    /// Every counter, in index order.
    pub const ALL: [Counter; 10] = [
        Counter::Samples,
        Counter::LostSamples,
        Counter::LostEvents,
        Counter::TargetsFull,
        Counter::UnknownPcs,
        Counter::OffCpuWaits,
        Counter::OffCpuLost,
        Counter::OffCpuMapFull,
        Counter::StackCopies,
        Counter::CopiesSkipped,
    ];
}

/// Number of entries of the `COUNTERS` array.
pub const COUNTER_COUNT: u32 = Counter::ALL.len() as u32;

/// Load-time configuration, written into the object's `.rodata` by the loader.
///
/// The programs read it through `read_volatile` so the compiler keeps the load.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Config {
    /// 1: only processes in `TARGETS` are sampled; 0: every process.
    pub filter_targets: u32,
    /// 1: samples of the idle task (pid 0) are kept.
    pub sample_idle: u32,
    /// Byte offset of `child_pid` in the `sched/sched_process_fork` tracepoint record, read by
    /// user space from the event's `format` file so no kernel layout is assumed.
    pub fork_child_pid_offset: u32,
    /// 1: every exec is reported, not only those of targets, so user space can select new
    /// processes by executable name or container (the agent's target patterns).
    pub report_all_execs: u32,
    /// 1: unwind user stacks with the tables in `PROC_UNWIND`/`UNWIND_ROWS` where a process has
    /// them; 0: frame pointers only.
    pub dwarf_unwind: u32,
    /// Byte offset of `thread.fsbase` in the kernel's `task_struct` (from its BTF); 0: unknown,
    /// thread contexts are not read.
    pub fsbase_offset: u32,
    /// Off-CPU profiling: a switch-out of a target thread is recorded when
    /// `bpf_get_prandom_u32() <= off_cpu_threshold` (`u32::MAX`: every one; the probability is
    /// `threshold / u32::MAX`). 0: off (the `sched_switch` program is not attached either).
    pub off_cpu_threshold: u32,
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain-old-data `repr(C)` types without padding holes that matter for reading.
    unsafe impl aya::Pod for super::Config {}
    // SAFETY: as above; 8 + 4 + 2 + 1 + 1 bytes, no padding.
    unsafe impl aya::Pod for super::UnwindRow {}
    // SAFETY: u64s and u32s, no padding.
    unsafe impl aya::Pod for super::ProcUnwind {}
    // SAFETY: u32, u32, i64, u64: no padding.
    unsafe impl aya::Pod for super::TlsLocation {}
}
