//! Ring-buffer reader: turns the raw records the BPF programs write into [`Event`]s.
//!
//! [`Reader`] wraps the `EVENTS` ring buffer in tokio's `AsyncFd`, so a task sleeps until the
//! kernel signals data and then drains everything available in one go. Decoding is separate
//! ([`decode`]) and pure, so it is unit-tested without a kernel.

use std::os::fd::AsRawFd;

use aya::maps::{MapData, RingBuf};
use profiler_common::{
    ctx_status, OffCpuRecord, RecordHeader, RecordKind, SampleRecord, TaskRecord, UnknownPcRecord, MAX_STACK_DEPTH,
    TASK_COMM_LEN,
};
use tokio::io::{unix::AsyncFd, Interest};

use crate::context::ThreadLink;

/// One sample, copied out of the ring buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    pub tgid: u32,
    pub tid: u32,
    pub cpu: u32,
    /// CLOCK_MONOTONIC nanoseconds (`bpf_ktime_get_ns`).
    pub ktime_ns: u64,
    /// Thread name (`comm` of the sampled task).
    pub comm: String,
    /// Kernel frames, leaf first.
    pub kernel: Vec<u64>,
    /// User frames, leaf first.
    pub user: Vec<u64>,
    /// errno from `bpf_get_stack` for the user stack (0: fine).
    pub user_err: i32,
    /// How the user stack was unwound (`profiler_common::unwind_status`).
    pub user_unwind: u32,
    /// What the thread-context read found (`profiler_common::ctx_status`).
    pub ctx_status: u32,
    /// The thread's OTEP 4947 context, when BPF found a valid record.
    pub link: Option<ThreadLink>,
}

#[cfg(test)]
impl Sample {
    /// A sample of thread `tid` of `tgid` with these stacks and nothing else, for unit tests.
    pub fn with_stacks(tgid: u32, tid: u32, kernel: Vec<u64>, user: Vec<u64>) -> Self {
        Self {
            tgid,
            tid,
            cpu: 0,
            ktime_ns: 1,
            comm: "t".into(),
            kernel,
            user,
            user_err: 0,
            user_unwind: 0,
            ctx_status: 0,
            link: None,
        }
    }
}

/// What the kernel side reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Sample(Sample),
    /// The process called execve: its mappings changed.
    Exec {
        tgid: u32,
        comm: String,
    },
    /// The process exited.
    Exit {
        tgid: u32,
    },
    /// The unwinder met `pc`, outside every mapping user space described for the process.
    UnknownPc {
        tgid: u32,
        pc: u64,
    },
    /// A thread was off CPU for `off_cpu_ns`; `sample` holds its stacks, CPU and time at the
    /// switch-out (no thread context).
    OffCpu {
        sample: Sample,
        off_cpu_ns: u64,
    },
}

/// Errors decoding a record; the record is skipped and counted, the reader goes on.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {0} bytes is shorter than its header")]
    Short(usize),
    #[error("unknown record kind {0}")]
    UnknownKind(u32),
}

fn comm_string(raw: &[u8; TASK_COMM_LEN]) -> String {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

/// Frames of a `bpf_get_stack`-style array: the first `len` (at most the array), up to a zero.
fn frames(stack: &[u64; MAX_STACK_DEPTH], len: u32) -> Vec<u64> {
    stack[..(len as usize).min(MAX_STACK_DEPTH)].iter().copied().take_while(|&a| a != 0).collect()
}

fn read<T: Copy>(bytes: &[u8]) -> Result<T, DecodeError> {
    if bytes.len() < size_of::<T>() {
        return Err(DecodeError::Short(bytes.len()));
    }
    // SAFETY: length checked; T is a repr(C) plain-old-data record, read unaligned.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// Decodes one ring-buffer record.
pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
    let header: RecordHeader = read(bytes)?;
    match RecordKind::from_u32(header.kind) {
        Some(RecordKind::Sample) => {
            let r: SampleRecord = read(bytes)?;
            Ok(Event::Sample(Sample {
                tgid: r.header.tgid,
                tid: r.header.tid,
                cpu: r.header.cpu,
                ktime_ns: r.header.ktime_ns,
                comm: comm_string(&r.header.comm),
                kernel: frames(&r.kernel_stack, r.kernel_len),
                user: frames(&r.user_stack, r.user_len),
                user_err: r.user_err,
                user_unwind: r.user_unwind,
                ctx_status: r.ctx_status,
                link: (r.ctx_status == ctx_status::VALID).then(|| ThreadLink::from_record(&r.ctx)),
            }))
        }
        Some(RecordKind::OffCpu) => {
            let r: OffCpuRecord = read(bytes)?;
            Ok(Event::OffCpu {
                sample: Sample {
                    tgid: r.header.tgid,
                    tid: r.header.tid,
                    cpu: r.header.cpu,
                    ktime_ns: r.header.ktime_ns,
                    comm: comm_string(&r.header.comm),
                    kernel: frames(&r.kernel_stack, r.kernel_len),
                    user: frames(&r.user_stack, r.user_len),
                    user_err: r.user_err,
                    user_unwind: r.user_unwind,
                    ctx_status: ctx_status::NONE,
                    link: None,
                },
                off_cpu_ns: r.off_cpu_ns,
            })
        }
        Some(RecordKind::Exec) => {
            let r: TaskRecord = read(bytes)?;
            Ok(Event::Exec { tgid: r.header.tgid, comm: comm_string(&r.header.comm) })
        }
        Some(RecordKind::Exit) => {
            let r: TaskRecord = read(bytes)?;
            Ok(Event::Exit { tgid: r.header.tgid })
        }
        Some(RecordKind::UnknownPc) => {
            let r: UnknownPcRecord = read(bytes)?;
            Ok(Event::UnknownPc { tgid: r.header.tgid, pc: r.pc })
        }
        None => Err(DecodeError::UnknownKind(header.kind)),
    }
}

/// Async reader over the `EVENTS` ring buffer.
pub struct Reader {
    fd: AsyncFd<RingBuf<MapData>>,
    /// Records that failed to decode (never silently dropped).
    pub decode_errors: u64,
}

impl Reader {
    pub fn new(ring: RingBuf<MapData>) -> std::io::Result<Self> {
        tracing::debug!(fd = ring.as_raw_fd(), "ring buffer reader ready");
        // SAFETY: the ring buffer owns its map fd, which stays open and unchanged for as long as
        // the AsyncFd (which owns the ring buffer) lives.
        let fd = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(Self { fd, decode_errors: 0 })
    }

    /// Waits until records are available, then hands every available record to `f`.
    pub async fn read_batch(&mut self, mut f: impl FnMut(Event)) -> std::io::Result<usize> {
        let mut guard = self.fd.readable_mut().await?;
        let n = drain(guard.get_inner_mut(), &mut self.decode_errors, &mut f);
        guard.clear_ready();
        Ok(n)
    }

    /// Hands every record available right now to `f` without waiting (used at shutdown).
    pub fn drain_now(&mut self, mut f: impl FnMut(Event)) -> usize {
        drain(self.fd.get_mut(), &mut self.decode_errors, &mut f)
    }
}

fn drain(ring: &mut RingBuf<MapData>, errors: &mut u64, f: &mut impl FnMut(Event)) -> usize {
    let mut n = 0;
    while let Some(item) = ring.next() {
        n += 1;
        match decode(&item) {
            Ok(ev) => f(ev),
            Err(e) => {
                *errors += 1;
                tracing::warn!("skipping ring-buffer record: {e}");
            }
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes_of<T>(v: &T) -> Vec<u8> {
        // SAFETY: reading the bytes of a plain repr(C) value.
        unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
    }

    fn header(kind: RecordKind) -> RecordHeader {
        let mut comm = [0u8; TASK_COMM_LEN];
        comm[..4].copy_from_slice(b"work");
        RecordHeader { kind: kind as u32, tgid: 10, tid: 11, cpu: 1, ktime_ns: 99, comm }
    }

    #[test]
    fn decodes_sample_with_both_stacks() {
        let mut r = SampleRecord {
            header: header(RecordKind::Sample),
            kernel_len: 2,
            user_len: 3,
            kernel_err: 0,
            user_err: 0,
            user_unwind: 0,
            ctx_status: 0,
            kernel_stack: [0; MAX_STACK_DEPTH],
            user_stack: [0; MAX_STACK_DEPTH],
            ctx: profiler_common::ThreadCtx { header: [0; 28], attrs: [0; profiler_common::THREAD_CTX_MAX_ATTRS] },
        };
        r.kernel_stack[..2].copy_from_slice(&[0xffff_ffff_8100_0010, 0xffff_ffff_8100_0020]);
        r.user_stack[..3].copy_from_slice(&[0x401000, 0x401100, 0x401200]);
        let Event::Sample(s) = decode(&bytes_of(&r)).unwrap() else { panic!("not a sample") };
        assert_eq!((s.tgid, s.tid, s.cpu, s.ktime_ns), (10, 11, 1, 99));
        assert_eq!(s.comm, "work");
        assert_eq!(s.kernel, vec![0xffff_ffff_8100_0010, 0xffff_ffff_8100_0020]);
        assert_eq!(s.user, vec![0x401000, 0x401100, 0x401200]);
        assert_eq!(s.link, None, "no context read");
        r.ctx_status = ctx_status::VALID;
        r.ctx.header[..16].copy_from_slice(&[1; 16]);
        r.ctx.header[24] = 1;
        let Event::Sample(s) = decode(&bytes_of(&r)).unwrap() else { panic!("not a sample") };
        assert_eq!(s.link.map(|l| l.trace_id), Some([1; 16]));
    }

    #[test]
    fn decodes_task_events_and_rejects_garbage() {
        let exit = TaskRecord { header: header(RecordKind::Exit) };
        assert_eq!(decode(&bytes_of(&exit)), Ok(Event::Exit { tgid: 10 }));
        let exec = TaskRecord { header: header(RecordKind::Exec) };
        assert_eq!(decode(&bytes_of(&exec)), Ok(Event::Exec { tgid: 10, comm: "work".into() }));
        let unknown = UnknownPcRecord { header: header(RecordKind::UnknownPc), pc: 0x7f00_1234 };
        assert_eq!(decode(&bytes_of(&unknown)), Ok(Event::UnknownPc { tgid: 10, pc: 0x7f00_1234 }));
        assert_eq!(decode(&[1, 2, 3]), Err(DecodeError::Short(3)));
        // An off-CPU wait: the header and stacks of the switch-out, the time off CPU.
        let mut off = OffCpuRecord {
            header: header(RecordKind::OffCpu),
            off_cpu_ns: 7_000_000,
            kernel_len: 1,
            user_len: 2,
            kernel_err: 0,
            user_err: 0,
            user_unwind: profiler_common::unwind_status::COMPLETE,
            _pad: 0,
            kernel_stack: [0; MAX_STACK_DEPTH],
            user_stack: [0; MAX_STACK_DEPTH],
        };
        off.kernel_stack[0] = 0xffff_ffff_8100_0010;
        off.user_stack[..2].copy_from_slice(&[0x401000, 0x401100]);
        let Event::OffCpu { sample, off_cpu_ns } = decode(&bytes_of(&off)).unwrap() else { panic!("not off-CPU") };
        assert_eq!(off_cpu_ns, 7_000_000);
        assert_eq!((sample.tgid, sample.tid, sample.comm.as_str()), (10, 11, "work"));
        assert_eq!((sample.kernel.len(), sample.user), (1, vec![0x401000, 0x401100]));
        let short = TaskRecord { header: header(RecordKind::OffCpu) };
        assert!(matches!(decode(&bytes_of(&short)), Err(DecodeError::Short(_))));
        let mut bad = header(RecordKind::Exit);
        bad.kind = 77;
        assert_eq!(decode(&bytes_of(&TaskRecord { header: bad })), Err(DecodeError::UnknownKind(77)));
        // A sample header on a record too short for the stacks.
        let short = TaskRecord { header: header(RecordKind::Sample) };
        assert!(matches!(decode(&bytes_of(&short)), Err(DecodeError::Short(_))));
    }
}
