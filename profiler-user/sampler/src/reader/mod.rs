//! Ring-buffer reader: turns the raw records the BPF programs write into [`Event`]s.
//!
//! [`Reader`] wraps the `EVENTS` ring buffer in tokio's `AsyncFd`, so a task sleeps until the
//! kernel signals data and then drains everything available in one go. Decoding is separate
//! ([`decode`]) and pure, so it is unit-tested without a kernel.

use std::os::fd::AsRawFd;

use aya::maps::{MapData, RingBuf};
use profiler_common::{
    ctx_status, OffCpuRecord, RecordHeader, RecordKind, SampleHead, SampleRecord, StackCopyRecord, TaskRecord,
    ThreadCtx, UnknownPcRecord, MAX_STACK_DEPTH, SAMPLE_FIXED_BYTES, STACK_COPY_BYTES, TASK_COMM_LEN, THREAD_CTX_BYTES,
};
use tokio::io::{unix::AsyncFd, Interest};

use crate::{context::ThreadLink, ratelimit::RateLimit};

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
    /// Registers and a copy of the user stack, when BPF could not unwind it with tables
    /// (`RecordKind::SampleWithStack`): user space unwinds it (`unwind::deferred`).
    pub stack_copy: Option<Box<StackCopy>>,
}

/// The user registers of a sample and a copy of its stack from the page of `rsp` upwards.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StackCopy {
    pub rip: u64,
    pub rsp: u64,
    pub rbp: u64,
    /// User address of `bytes[0]`.
    pub base: u64,
    pub bytes: Vec<u8>,
}

impl StackCopy {
    /// The u64 at user address `addr`, if the copy holds it.
    pub fn read_u64(&self, addr: u64) -> Option<u64> {
        let at = usize::try_from(addr.checked_sub(self.base)?).ok()?;
        let b = self.bytes.get(at..at.checked_add(8)?)?;
        Some(u64::from_le_bytes(b.try_into().ok()?))
    }
}

#[cfg(any(test, feature = "testing"))]
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
            stack_copy: None,
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

/// An off-CPU wait's fields (two fixed-size stacks, no context).
fn stacks_sample(
    h: &RecordHeader,
    (kernel, kernel_len): (&[u64; MAX_STACK_DEPTH], u32),
    (user, user_len): (&[u64; MAX_STACK_DEPTH], u32),
    user_err: i32,
    user_unwind: u32,
) -> Sample {
    Sample {
        tgid: h.tgid,
        tid: h.tid,
        cpu: h.cpu,
        ktime_ns: h.ktime_ns,
        comm: comm_string(&h.comm),
        kernel: frames(kernel, kernel_len),
        user: frames(user, user_len),
        user_err,
        user_unwind,
        ctx_status: ctx_status::NONE,
        link: None,
        stack_copy: None,
    }
}

/// A [`SampleRecord`]: its fixed fields, then `data` (kernel frames, user frames, the thread
/// context when valid) as far as `bytes` holds it. `bytes` is the whole record, or the start of
/// a [`StackCopyRecord`] (which holds the whole struct).
fn sample(bytes: &[u8]) -> Result<Sample, DecodeError> {
    // The fixed part, then the rest as it was sent (a sample is only as long as it needs).
    let r: SampleHead = read(bytes)?;
    let klen = (r.kernel_len as usize).min(MAX_STACK_DEPTH);
    let ulen = (r.user_len as usize).min(MAX_STACK_DEPTH);
    let valid = r.ctx_status == ctx_status::VALID;
    let need = SampleRecord::bytes(klen + ulen, valid);
    if bytes.len() < need {
        return Err(DecodeError::Short(bytes.len()));
    }
    let word = |i: usize| {
        let at = SAMPLE_FIXED_BYTES + i * 8;
        u64::from_ne_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
    };
    let frames = |from: usize, n: usize| (from..from + n).map(word).take_while(|&a| a != 0).collect();
    let link = valid.then(|| {
        let at = SAMPLE_FIXED_BYTES + (klen + ulen) * 8;
        let ctx: ThreadCtx = read(&bytes[at..at + THREAD_CTX_BYTES]).expect("length checked");
        ThreadLink::from_record(&ctx)
    });
    Ok(Sample {
        tgid: r.header.tgid,
        tid: r.header.tid,
        cpu: r.header.cpu,
        ktime_ns: r.header.ktime_ns,
        comm: comm_string(&r.header.comm),
        kernel: frames(0, klen),
        user: frames(klen, ulen),
        user_err: r.user_err,
        user_unwind: r.user_unwind,
        ctx_status: r.ctx_status,
        link,
        stack_copy: None,
    })
}

/// Decodes one ring-buffer record.
pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
    let header: RecordHeader = read(bytes)?;
    match RecordKind::from_u32(header.kind) {
        Some(RecordKind::Sample) => Ok(Event::Sample(sample(bytes)?)),
        Some(RecordKind::SampleWithStack) => {
            let r: StackCopyRecord = read(bytes)?;
            let len = (r.stack_len as usize).min(STACK_COPY_BYTES);
            let mut s = sample(bytes)?;
            s.stack_copy = Some(Box::new(StackCopy {
                rip: r.rip,
                rsp: r.rsp,
                rbp: r.rbp,
                base: r.stack_base,
                bytes: r.stack[..len].to_vec(),
            }));
            Ok(Event::Sample(s))
        }
        Some(RecordKind::OffCpu) => {
            let r: OffCpuRecord = read(bytes)?;
            Ok(Event::OffCpu {
                sample: stacks_sample(
                    &r.header,
                    (&r.kernel_stack, r.kernel_len),
                    (&r.user_stack, r.user_len),
                    r.user_err,
                    r.user_unwind,
                ),
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

/// Records that failed to decode: every one counted (never silently dropped), logged at most
/// once per [`BAD_RECORD_LOG_INTERVAL`], since a broken producer would write one per sample.
#[derive(Debug)]
pub struct BadRecords {
    pub count: u64,
    log: RateLimit,
}

/// How often a malformed record is logged at most.
pub const BAD_RECORD_LOG_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

impl Default for BadRecords {
    fn default() -> Self {
        Self { count: 0, log: RateLimit::new(BAD_RECORD_LOG_INTERVAL) }
    }
}

impl BadRecords {
    /// Decodes one record for `f`; a malformed one is counted and skipped.
    pub fn deliver(&mut self, bytes: &[u8], f: &mut impl FnMut(Event)) {
        match decode(bytes) {
            Ok(ev) => f(ev),
            Err(e) => {
                self.count += 1;
                if let Some(held_back) = self.log.allow() {
                    tracing::warn!(
                        "skipping a malformed ring-buffer record: {e} ({held_back} more skipped since the last \
                         report, {} in all)",
                        self.count
                    );
                }
            }
        }
    }
}

/// Async reader over the `EVENTS` ring buffer.
pub struct Reader {
    fd: AsyncFd<RingBuf<MapData>>,
    bad: BadRecords,
}

impl Reader {
    pub fn new(ring: RingBuf<MapData>) -> std::io::Result<Self> {
        tracing::debug!(fd = ring.as_raw_fd(), "ring buffer reader ready");
        // SAFETY: the ring buffer owns its map fd, which stays open and unchanged for as long as
        // the AsyncFd (which owns the ring buffer) lives.
        let fd = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(Self { fd, bad: BadRecords::default() })
    }

    /// Records skipped because they could not be decoded, so far.
    pub fn bad_records(&self) -> u64 {
        self.bad.count
    }

    /// Waits until records are available, then hands every available record to `f`.
    pub async fn read_batch(&mut self, mut f: impl FnMut(Event)) -> std::io::Result<usize> {
        let mut guard = self.fd.readable_mut().await?;
        let n = drain(guard.get_inner_mut(), &mut self.bad, &mut f);
        guard.clear_ready();
        Ok(n)
    }

    /// Hands every record available right now to `f` without waiting (used at shutdown).
    pub fn drain_now(&mut self, mut f: impl FnMut(Event)) -> usize {
        drain(self.fd.get_mut(), &mut self.bad, &mut f)
    }
}

fn drain(ring: &mut RingBuf<MapData>, bad: &mut BadRecords, f: &mut impl FnMut(Event)) -> usize {
    let mut n = 0;
    while let Some(item) = ring.next() {
        n += 1;
        bad.deliver(&item, f);
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
    fn decodes_samples_sized_to_what_they_carry() {
        let mut r = SampleRecord {
            header: header(RecordKind::Sample),
            kernel_len: 2,
            user_len: 3,
            kernel_err: 0,
            user_err: 0,
            user_unwind: 0,
            ctx_status: 0,
            data: [0; profiler_common::SAMPLE_DATA_WORDS],
        };
        r.data[..5].copy_from_slice(&[0xffff_ffff_8100_0010, 0xffff_ffff_8100_0020, 0x401000, 0x401100, 0x401200]);
        // Only what the sample carries is sent: 64 bytes and its five frames.
        let sent = &bytes_of(&r)[..SampleRecord::bytes(5, false)];
        assert_eq!(sent.len(), 64 + 5 * 8);
        let Event::Sample(s) = decode(sent).unwrap() else { panic!("not a sample") };
        assert_eq!((s.tgid, s.tid, s.cpu, s.ktime_ns), (10, 11, 1, 99));
        assert_eq!(s.comm, "work");
        assert_eq!(s.kernel, vec![0xffff_ffff_8100_0010, 0xffff_ffff_8100_0020]);
        assert_eq!(s.user, vec![0x401000, 0x401100, 0x401200]);
        assert_eq!(s.link, None, "no context read");
        assert!(matches!(decode(&sent[..sent.len() - 1]), Err(DecodeError::Short(_))), "a frame cut off");
        // A user-mode sample: no kernel frames, the user frames start the data.
        r.kernel_len = 0;
        r.data[..3].copy_from_slice(&[0x401000, 0x401100, 0x401200]);
        let Event::Sample(s) = decode(&bytes_of(&r)[..SampleRecord::bytes(3, false)]).unwrap() else { panic!() };
        assert_eq!((s.kernel.len(), s.user), (0, vec![0x401000, 0x401100, 0x401200]));
        // A valid context follows the frames.
        r.ctx_status = ctx_status::VALID;
        let ctx = &mut bytes_of(&r)[..SampleRecord::bytes(3, true)];
        ctx[64 + 24..64 + 24 + 16].copy_from_slice(&[1; 16]);
        ctx[64 + 24 + 24] = 1;
        let Event::Sample(s) = decode(ctx).unwrap() else { panic!("not a sample") };
        assert_eq!(s.link.map(|l| l.trace_id), Some([1; 16]));
        assert!(matches!(decode(&ctx[..ctx.len() - 1]), Err(DecodeError::Short(_))), "the context cut off");
    }

    #[test]
    fn decodes_a_sample_with_its_stack_copy() {
        let mut r: Box<StackCopyRecord> = Box::new(unsafe {
            // SAFETY: plain integers and arrays; all-zero is a valid value.
            std::mem::zeroed()
        });
        r.sample.header = header(RecordKind::SampleWithStack);
        r.sample.user_len = 1;
        r.sample.data[0] = 0x401000;
        (r.rip, r.rsp, r.rbp, r.stack_base, r.stack_len) = (0x401000, 0x7ffd_1010, 0, 0x7ffd_1000, 4096);
        r.stack[16..24].copy_from_slice(&0x402000u64.to_le_bytes());
        let Event::Sample(s) = decode(&bytes_of(&*r)).unwrap() else { panic!("not a sample") };
        assert_eq!((s.tgid, s.user.as_slice()), (10, &[0x401000][..]));
        let copy = s.stack_copy.expect("the copy comes along");
        assert_eq!((copy.rip, copy.rsp, copy.base, copy.bytes.len()), (0x401000, 0x7ffd_1010, 0x7ffd_1000, 4096));
        assert_eq!(copy.read_u64(0x7ffd_1010), Some(0x402000));
        assert_eq!(copy.read_u64(0x7ffd_1000 + 4090), None, "past the copy");
        assert_eq!(copy.read_u64(0x7ffd_0ff8), None, "below the copy");
        // A stack length beyond the array is clamped, a short record is an error.
        r.stack_len = u32::MAX;
        let Event::Sample(s) = decode(&bytes_of(&*r)).unwrap() else { panic!("not a sample") };
        assert_eq!(s.stack_copy.map(|c| c.bytes.len()), Some(STACK_COPY_BYTES));
        assert!(matches!(decode(&bytes_of(&*r)[..4000]), Err(DecodeError::Short(_))));
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

    /// Writes what `tracing` logs while the test body runs into a buffer.
    #[derive(Clone, Default)]
    struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn malformed_records_are_all_counted_and_logged_boundedly() {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt().with_writer(move || writer.clone()).with_ansi(false).finish();
        let mut bad = BadRecords::default();
        let mut events = Vec::new();
        let started = std::time::Instant::now();
        tracing::subscriber::with_default(subscriber, || {
            let mut unknown = header(RecordKind::Exit);
            unknown.kind = 77;
            let unknown = bytes_of(&TaskRecord { header: unknown });
            for i in 0..10_000 {
                let record: &[u8] = if i % 2 == 0 { &[1, 2, 3] } else { &unknown };
                bad.deliver(record, &mut |e| events.push(e));
            }
            bad.deliver(&bytes_of(&TaskRecord { header: header(RecordKind::Exit) }), &mut |e| events.push(e));
        });
        assert_eq!(bad.count, 10_000, "every malformed record counted");
        assert_eq!(events, [Event::Exit { tgid: 10 }], "good records still delivered");
        let log = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let lines = log.lines().filter(|l| l.contains("malformed ring-buffer record")).count();
        // One line per interval: the first, plus one per interval the loop may have taken.
        let bound = 1 + (started.elapsed().as_secs() / BAD_RECORD_LOG_INTERVAL.as_secs()) as usize;
        assert!((1..=bound).contains(&lines), "{lines} log lines for 10000 bad records:\n{log}");
    }
}
