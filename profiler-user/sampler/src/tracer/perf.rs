//! The sampler's per-CPU `cpu-clock` perf events, opened here rather than by aya so that their
//! rate can change while they run (issue #14: the agent's remote config changes the frequency
//! without reloading BPF and without a gap in sampling).
//!
//! Why not aya's `PerfEvent::attach`: aya 0.14 opens the perf event, links the program to it
//! with `BPF_LINK_CREATE` and closes the perf event's fd, so nothing is left to change its
//! period with, and it has no public call that attaches to a perf fd someone else opened. So
//! each CPU's event is opened here with `perf_event_open`, the already-loaded `sample`
//! program attached with `PERF_EVENT_IOC_SET_BPF`, and the fd kept: closing it (dropping the
//! [`PerfEvents`]) detaches the program.
//!
//! How the rate changes: `PERF_EVENT_IOC_PERIOD`. For `cpu-clock` (an hrtimer event) the kernel
//! turns a frequency into a fixed period of `NSEC_PER_SEC / freq` ns when the event is created
//! and clears `attr.freq` (`perf_swevent_init_hrtimer`), so the ioctl's value would be read as a
//! period in ns, not as Hz. The events are therefore opened in period mode with exactly that
//! period, and a new frequency is written as its period. The kernel stops the event's timer and
//! restarts it with the new period at once (`__perf_event_period`): sampling does not pause,
//! the next sample comes one new period later.
//!
//! Should the ioctl fail on some CPU (it has not been seen to), [`PerfEvents::set_frequency`]
//! falls back to opening a new set at the new rate, attaching it, and only then closing the old
//! set: for a moment both sample (a few samples more), never neither.

use std::{
    io,
    os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
};

use thiserror::Error;

const NSEC_PER_SEC: u64 = 1_000_000_000;
/// `PERF_TYPE_SOFTWARE` and `PERF_COUNT_SW_CPU_CLOCK`.
const PERF_TYPE_SOFTWARE: u32 = 1;
const PERF_COUNT_SW_CPU_CLOCK: u64 = 0;
/// `PERF_SAMPLE_RAW`, as aya asks for.
const PERF_SAMPLE_RAW: u64 = 1 << 10;
/// `attr.disabled` (bit 0 of the flags bitfield): enabled once the program is attached.
const ATTR_DISABLED: u64 = 1;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;

/// `_IO('$', nr)` and `_IOW('$', nr, size)` (the generic encoding: x86, arm64, riscv).
const fn io(nr: u64) -> u64 {
    (b'$' as u64) << 8 | nr
}
const fn iow(nr: u64, size: u64) -> u64 {
    1 << 30 | size << 16 | io(nr)
}
const PERF_EVENT_IOC_ENABLE: u64 = io(0);
const PERF_EVENT_IOC_PERIOD: u64 = iow(4, 8);
const PERF_EVENT_IOC_SET_BPF: u64 = iow(8, 4);

/// `struct perf_event_attr` up to `PERF_ATTR_SIZE_VER0` (64 bytes), which every kernel takes.
#[repr(C)]
#[derive(Default)]
struct PerfEventAttr {
    type_: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    config1: u64,
}

/// A perf-event syscall that failed, on which CPU.
#[derive(Debug, Error)]
#[error("{call} on CPU {cpu}: {source}")]
pub struct PerfError {
    pub call: &'static str,
    pub cpu: u32,
    #[source]
    pub source: io::Error,
}

/// The `cpu-clock` period for `hz`, as the kernel computes it for a frequency event.
pub fn period_ns(hz: u64) -> u64 {
    (NSEC_PER_SEC / hz.max(1)).max(1)
}

/// One sampling event per CPU with the program attached; dropping it detaches the program.
pub struct PerfEvents {
    events: Vec<(u32, OwnedFd)>,
    frequency_hz: u64,
}

impl PerfEvents {
    /// Opens a `cpu-clock` event on each of `cpus` at `frequency_hz`, attaches `prog` and enables
    /// it. On an error the events opened so far are closed again.
    pub fn attach(prog: BorrowedFd<'_>, cpus: &[u32], frequency_hz: u64) -> Result<Self, PerfError> {
        let period = period_ns(frequency_hz);
        let mut events = Vec::with_capacity(cpus.len());
        for &cpu in cpus {
            let fd = open_cpu_clock(cpu, period)?;
            ioctl(fd.as_fd(), PERF_EVENT_IOC_SET_BPF, prog.as_raw_fd() as u64).map_err(|source| PerfError {
                call: "PERF_EVENT_IOC_SET_BPF",
                cpu,
                source,
            })?;
            ioctl(fd.as_fd(), PERF_EVENT_IOC_ENABLE, 0).map_err(|source| PerfError {
                call: "PERF_EVENT_IOC_ENABLE",
                cpu,
                source,
            })?;
            events.push((cpu, fd));
        }
        Ok(Self { events, frequency_hz })
    }

    pub fn frequency_hz(&self) -> u64 {
        self.frequency_hz
    }

    /// Changes every CPU's rate in place (see the module docs); falls back to a new set of
    /// events attached before the old set is closed. On an error nothing changed.
    pub fn set_frequency(&mut self, prog: BorrowedFd<'_>, frequency_hz: u64) -> Result<(), PerfError> {
        let period = period_ns(frequency_hz);
        let mut failed = None;
        for (cpu, fd) in &self.events {
            // The ioctl reads the new period through a pointer.
            let value: u64 = period;
            if let Err(source) = ioctl(fd.as_fd(), PERF_EVENT_IOC_PERIOD, &value as *const u64 as u64) {
                failed = Some(PerfError { call: "PERF_EVENT_IOC_PERIOD", cpu: *cpu, source });
                break;
            }
        }
        if let Some(e) = failed {
            tracing::warn!("changing the sampling period in place failed ({e}); attaching new events first");
            let cpus: Vec<u32> = self.events.iter().map(|(cpu, _)| *cpu).collect();
            let old_hz = self.frequency_hz;
            match Self::attach(prog, &cpus, frequency_hz) {
                // The old set closes as it is replaced: for a moment both sample, never neither.
                Ok(new) => *self = new,
                Err(e) => {
                    // Those changed in place go back, so every CPU samples at one rate.
                    let value = period_ns(old_hz);
                    for (_, fd) in &self.events {
                        let _ = ioctl(fd.as_fd(), PERF_EVENT_IOC_PERIOD, &value as *const u64 as u64);
                    }
                    return Err(e);
                }
            }
        }
        self.frequency_hz = frequency_hz;
        Ok(())
    }
}

fn open_cpu_clock(cpu: u32, period: u64) -> Result<OwnedFd, PerfError> {
    let attr = PerfEventAttr {
        type_: PERF_TYPE_SOFTWARE,
        size: std::mem::size_of::<PerfEventAttr>() as u32,
        config: PERF_COUNT_SW_CPU_CLOCK,
        sample_period: period,
        sample_type: PERF_SAMPLE_RAW,
        flags: ATTR_DISABLED,
        wakeup_events: 1,
        ..Default::default()
    };
    // SAFETY: `attr` is a valid perf_event_attr of the size it states; pid -1 with a CPU is
    // "every process on that CPU"; no group.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            &attr as *const PerfEventAttr,
            -1 as libc::pid_t,
            cpu as libc::c_int,
            -1 as libc::c_int,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(PerfError { call: "perf_event_open", cpu, source: io::Error::last_os_error() });
    }
    // SAFETY: a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

fn ioctl(fd: BorrowedFd<'_>, request: u64, arg: u64) -> io::Result<()> {
    // SAFETY: perf-event ioctls on a perf-event fd; `arg` is a value or a pointer to a live
    // u64 as the request wants.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), request as _, arg) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_are_the_kernels() {
        // linux/perf_event.h on x86_64 and arm64.
        assert_eq!(PERF_EVENT_IOC_ENABLE, 0x2400);
        assert_eq!(PERF_EVENT_IOC_PERIOD, 0x4008_2404);
        assert_eq!(PERF_EVENT_IOC_SET_BPF, 0x4004_2408);
        assert_eq!(std::mem::size_of::<PerfEventAttr>(), 64);
    }

    #[test]
    fn periods_as_the_kernel_computes_them() {
        assert_eq!(period_ns(19), 52_631_578);
        assert_eq!(period_ns(99), 10_101_010);
        assert_eq!(period_ns(0), NSEC_PER_SEC);
    }
}
