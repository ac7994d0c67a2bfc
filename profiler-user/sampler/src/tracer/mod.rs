//! Kernel side, seen from user space: loads the committed BPF object, attaches the
//! process-lifecycle tracepoints and then (once known targets are prepared) the sampler to every
//! online CPU, and owns the maps that steer them.
//!
//! Live changes (the agent's remote config, issue #14) never reload: the sampling rate changes
//! in place on the per-CPU perf events ([`Tracer::set_frequency`], see [`perf`] for why those
//! events are opened here and not by aya), and targets come and go in the `TARGETS` map
//! ([`Tracer::add_target`], [`Tracer::remove_target`]). What the loader wrote into the
//! `CONFIG` global cannot change: it is in `.rodata`, frozen at load, and the verifier has
//! already pruned the branches it decides. So whether samples are filtered by `TARGETS`
//! (`filter_targets`) and whether every exec is reported (`report_all_execs`) are fixed for a
//! tracer's life.
//!
//! The object is `profiler-ebpf/prebuilt/profiler.bpf.o`, built by `cargo xtask build-ebpf` and
//! embedded at compile time, so building otelprof needs no BPF toolchain.

pub mod btf;
mod mapped_rows;
pub mod perf;
pub mod privileges;
mod tracefs;

pub use mapped_rows::MappedRows;

use aya::{
    maps::{Array, HashMap, IterableMap, MapData, PerCpuArray, RingBuf},
    programs::{BtfTracePoint, PerfEvent, TracePoint},
    Ebpf, EbpfLoader,
};
use std::os::fd::AsFd;

use profiler_common::{Config, Counter, ProcUnwind, TlsLocation, UnwindRow};
use thiserror::Error;

/// The committed, debug-stripped BPF object.
///
/// Copied into an 8-byte-aligned buffer at load time: `include_bytes!` gives no alignment and the
/// ELF parser wants aligned section data.
static OBJECT: &[u8] = include_bytes!("../../../../profiler-ebpf/prebuilt/profiler.bpf.o");

/// Why loading or attaching failed, phrased for the person at the terminal.
#[derive(Debug, Error)]
pub enum TracerError {
    #[error(
        "not permitted to load BPF programs: run as root or grant CAP_BPF and CAP_PERFMON \
         (`otelprof check` lists what is missing)"
    )]
    Permission,
    /// The capabilities are there, yet `bpf(2)` was refused: something above them said no.
    #[error(
        "the kernel refused bpf(2) although this process has CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN): {}",
        if *seccomp_filter {
            "a seccomp filter is active (`Seccomp: 2` in /proc/self/status); container runtimes' default \
             profiles allow bpf(2) and perf_event_open(2) only with CAP_SYS_ADMIN, so run with seccomp \
             unconfined (Kubernetes: `seccompProfile: { type: Unconfined }`, as deploy/kubernetes does; \
             podman or docker: `--security-opt seccomp=unconfined`) or a profile that allows both calls"
        } else {
            "no seccomp filter is active, so an LSM (AppArmor, SELinux) or kernel lockdown refused it; `dmesg` says which"
        }
    )]
    RefusedDespiteCapabilities { seccomp_filter: bool },
    #[error("loading the BPF object failed: {0}")]
    Load(#[source] aya::EbpfError),
    #[error("BPF program `{name}` failed to load or attach: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("BPF map `{name}` is unusable: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("cannot map the unwind-rows array into memory (BPF_F_MMAPABLE needs Linux 5.5): {0}")]
    MapRows(#[source] std::io::Error),
    #[error("cannot list online CPUs: {0}")]
    Cpus(String),
    #[error("tracefs: {0}")]
    Tracefs(String),
    #[error("cannot enable BPF run-time statistics: {0}")]
    Stats(String),
    #[error("off-CPU profiling needs the kernel's BTF (/sys/kernel/btf/vmlinux): {0}")]
    OffCpuBtf(#[source] aya::BtfError),
    #[error("sampling frequency {hz} Hz is above the kernel's limit (kernel.perf_event_max_sample_rate = {max})")]
    FrequencyTooHigh { hz: u64, max: u64 },
    #[error("attaching the sampler to the CPUs' perf events: {0}")]
    PerfEvent(#[source] perf::PerfError),
}

/// What to load and how to sample.
#[derive(Clone, Debug)]
pub struct TracerConfig {
    /// Sampling frequency per CPU, in Hz.
    pub frequency_hz: u64,
    /// Only processes in the target map are sampled (false: whole system).
    pub filter_targets: bool,
    /// Keep samples of the idle task.
    pub sample_idle: bool,
    /// Ring buffer size in bytes (power of two, at least one page).
    pub ringbuf_bytes: u32,
    /// Forward aya-log messages from BPF to `tracing` (off by default).
    pub bpf_log: bool,
    /// Report every exec, not only targets' (for selecting processes by name or container).
    pub report_all_execs: bool,
    /// Unwind user stacks with compiled tables where processes have them.
    pub dwarf_unwind: bool,
    /// Off-CPU profiling: the probability (0 < p <= 1) that a target thread's switch-out is
    /// recorded; `None` leaves the `sched_switch` program unattached.
    pub off_cpu_threshold: Option<f64>,
}

/// The BPF side's threshold for a probability `p`: a switch is recorded when
/// `bpf_get_prandom_u32() <= threshold`, as the OpenTelemetry eBPF profiler's `off_cpu_threshold`
/// does. Never 0 (which means off): the smallest probability records 1 in 2^32 switches.
pub fn off_cpu_threshold_u32(p: f64) -> u32 {
    if p >= 1.0 {
        u32::MAX
    } else {
        ((p.max(0.0) * u32::MAX as f64).round() as u32).max(1)
    }
}

/// Loaded and attached programs plus the maps user space uses.
///
/// Dropping it detaches everything.
pub struct Tracer {
    ebpf: Ebpf,
    targets: HashMap<MapData, u32, u8>,
    counters: PerCpuArray<MapData, u64>,
    unwind_rows: Array<MapData, UnwindRow>,
    proc_unwind: HashMap<MapData, u32, ProcUnwind>,
    thread_ctx: HashMap<MapData, u32, TlsLocation>,
    /// Online CPUs, each gets one sampling perf event.
    cpus: Vec<u32>,
    frequency_hz: u64,
    /// The sampler's perf events, once [`Tracer::start_sampling`] attached it.
    sampling: Option<perf::PerfEvents>,
    /// Whether samples are filtered by `TARGETS`, and every exec reported (fixed at load).
    filter_targets: bool,
    report_all_execs: bool,
    _logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
    /// Keeps the kernel's BPF run-time statistics on while held (`BPF_ENABLE_STATS`).
    stats: Option<std::os::fd::OwnedFd>,
}

/// Run-time statistics of one program (kernel.bpf_stats).
#[derive(Clone, Debug)]
pub struct ProgramStats {
    pub name: String,
    pub runs: u64,
    pub run_time: std::time::Duration,
}

impl ProgramStats {
    /// Mean nanoseconds per run.
    pub fn ns_per_run(&self) -> f64 {
        if self.runs == 0 {
            0.0
        } else {
            self.run_time.as_nanos() as f64 / self.runs as f64
        }
    }
}

/// `EPERM` from `bpf(2)` after the capability check passed: the kernel said no for another
/// reason, and the message names the likely one.
fn refused() -> TracerError {
    if privileges::Caps::current().can_profile() {
        TracerError::RefusedDespiteCapabilities { seccomp_filter: privileges::seccomp_mode() == Some(2) }
    } else {
        TracerError::Permission
    }
}

fn is_permission(e: &aya::EbpfError) -> bool {
    let text = format!("{e:?}");
    text.contains("EPERM") || text.contains("Operation not permitted") || text.contains("PermissionDenied")
}

/// A rate the kernel allows (`kernel.perf_event_max_sample_rate`, when readable).
fn check_frequency(hz: u64) -> Result<(), TracerError> {
    match max_sample_rate() {
        Some(max) if hz > max => Err(TracerError::FrequencyTooHigh { hz, max }),
        _ => Ok(()),
    }
}

/// `kernel.perf_event_max_sample_rate`, if readable.
pub fn max_sample_rate() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/kernel/perf_event_max_sample_rate").ok()?.trim().parse().ok()
}

impl Tracer {
    /// Loads the object and the sampler, and attaches the sched tracepoints (process events flow
    /// from here on). The sampler starts with [`Self::start_sampling`].
    pub fn load(cfg: &TracerConfig) -> Result<Self, TracerError> {
        check_frequency(cfg.frequency_hz)?;
        // Checked first: without privileges every later step fails with a less useful message.
        if !privileges::Caps::current().can_profile() {
            return Err(TracerError::Permission);
        }
        tracefs::ensure_mounted().map_err(TracerError::Tracefs)?;
        let fork_offset =
            tracefs::field_offset("sched", "sched_process_fork", "child_pid").map_err(TracerError::Tracefs)?;
        let config = Config {
            filter_targets: cfg.filter_targets as u32,
            sample_idle: cfg.sample_idle as u32,
            fork_child_pid_offset: fork_offset,
            report_all_execs: cfg.report_all_execs as u32,
            dwarf_unwind: cfg.dwarf_unwind as u32,
            // Without it samples carry no thread context; profiling goes on.
            fsbase_offset: btf::fsbase_offset().unwrap_or_else(|e| {
                tracing::warn!("thread contexts (trace links) off: {e}");
                0
            }),
            off_cpu_threshold: cfg.off_cpu_threshold.map(off_cpu_threshold_u32).unwrap_or(0),
        };
        // aya-log's level global: 0 silences every log statement in BPF (no ring-buffer traffic).
        let log_level: u8 = if cfg.bpf_log { 0xff } else { 0 };
        let mut aligned = vec![0u64; OBJECT.len().div_ceil(8)];
        // SAFETY: u64 buffer viewed as bytes, same length rounded up.
        let bytes = unsafe { std::slice::from_raw_parts_mut(aligned.as_mut_ptr().cast::<u8>(), aligned.len() * 8) };
        bytes[..OBJECT.len()].copy_from_slice(OBJECT);
        let mut ebpf = EbpfLoader::new()
            .override_global("CONFIG", &config, true)
            .override_global("AYA_LOG_LEVEL", &log_level, false)
            .map_max_entries("EVENTS", cfg.ringbuf_bytes)
            .load(&bytes[..OBJECT.len()])
            .map_err(|e| if is_permission(&e) { refused() } else { TracerError::Load(e) })?;

        let logger = if cfg.bpf_log {
            match aya_log::EbpfLogger::init(&mut ebpf) {
                Ok(l) => Some(l),
                Err(e) => {
                    tracing::warn!("BPF logging unavailable: {e}");
                    None
                }
            }
        } else {
            None
        };

        let cpus = aya::util::online_cpus().map_err(|(what, e)| TracerError::Cpus(format!("{what}: {e}")))?;
        {
            // Loaded (verified) now, attached by `start_sampling`.
            let prog: &mut PerfEvent = program(&mut ebpf, "sample")?;
            prog.load().map_err(|source| prog_err("sample", source))?;
        }
        for (name, event) in
            [("on_fork", "sched_process_fork"), ("on_exec", "sched_process_exec"), ("on_exit", "sched_process_exit")]
        {
            let prog: &mut TracePoint = program(&mut ebpf, name)?;
            prog.load().map_err(|source| prog_err(name, source))?;
            prog.attach("sched", event).map_err(|source| prog_err(name, source))?;
        }
        if cfg.off_cpu_threshold.is_some() {
            // tp_btf: the tracepoint's typed arguments (prev, next, prev_state) without a raw
            // tracepoint's format parsing.
            let btf = aya::Btf::from_sys_fs().map_err(TracerError::OffCpuBtf)?;
            let prog: &mut BtfTracePoint = program(&mut ebpf, "on_switch")?;
            prog.load("sched_switch", &btf).map_err(|source| prog_err("on_switch", source))?;
            prog.attach().map_err(|source| prog_err("on_switch", source))?;
        }

        let targets = HashMap::try_from(take(&mut ebpf, "TARGETS")?)
            .map_err(|source| TracerError::Map { name: "TARGETS", source })?;
        let counters = PerCpuArray::try_from(take(&mut ebpf, "COUNTERS")?)
            .map_err(|source| TracerError::Map { name: "COUNTERS", source })?;
        let unwind_rows = Array::try_from(take(&mut ebpf, "UNWIND_ROWS")?)
            .map_err(|source| TracerError::Map { name: "UNWIND_ROWS", source })?;
        let proc_unwind = HashMap::try_from(take(&mut ebpf, "PROC_UNWIND")?)
            .map_err(|source| TracerError::Map { name: "PROC_UNWIND", source })?;
        let thread_ctx = HashMap::try_from(take(&mut ebpf, "THREAD_CTX")?)
            .map_err(|source| TracerError::Map { name: "THREAD_CTX", source })?;
        Ok(Self {
            ebpf,
            targets,
            counters,
            unwind_rows,
            proc_unwind,
            thread_ctx,
            cpus,
            frequency_hz: cfg.frequency_hz,
            sampling: None,
            filter_targets: cfg.filter_targets,
            report_all_execs: cfg.report_all_execs,
            _logger: logger,
            stats: None,
        })
    }

    /// Attaches the sampler to every online CPU: samples flow from here on.
    ///
    /// Separate from [`Self::load`] so that callers first install what the samples of known
    /// targets need (their unwind tables and thread-context readers, which take the maps loaded
    /// above): a target sampled before that has stacks ending at the leaf and no trace links.
    /// Calling it again does nothing.
    pub fn start_sampling(&mut self) -> Result<(), TracerError> {
        if self.sampling.is_some() {
            return Ok(());
        }
        let prog: &mut PerfEvent = program(&mut self.ebpf, "sample")?;
        let fd = prog.fd().map_err(|source| prog_err("sample", source))?;
        let events =
            perf::PerfEvents::attach(fd.as_fd(), &self.cpus, self.frequency_hz).map_err(TracerError::PerfEvent)?;
        self.sampling = Some(events);
        Ok(())
    }

    /// Samples at `frequency_hz` per CPU from now on, without reloading or detaching (see
    /// [`perf`]); before sampling started, only sets the rate it starts with. On an error
    /// the rate is unchanged.
    pub fn set_frequency(&mut self, frequency_hz: u64) -> Result<(), TracerError> {
        check_frequency(frequency_hz)?;
        if let Some(events) = self.sampling.as_mut() {
            let prog: &mut PerfEvent = program(&mut self.ebpf, "sample")?;
            let fd = prog.fd().map_err(|source| prog_err("sample", source))?;
            events.set_frequency(fd.as_fd(), frequency_hz).map_err(TracerError::PerfEvent)?;
        }
        self.frequency_hz = frequency_hz;
        Ok(())
    }

    /// Samples per second per CPU.
    pub fn frequency_hz(&self) -> u64 {
        self.frequency_hz
    }

    /// Whether only processes in `TARGETS` are sampled (fixed at load).
    pub fn filters_targets(&self) -> bool {
        self.filter_targets
    }

    /// Whether every exec is reported, not only targets' (fixed at load).
    pub fn reports_all_execs(&self) -> bool {
        self.report_all_execs || !self.filter_targets
    }

    /// Hands out the sample ring buffer (once).
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>, TracerError> {
        RingBuf::try_from(take(&mut self.ebpf, "EVENTS")?).map_err(|source| TracerError::Map { name: "EVENTS", source })
    }

    /// Adds `tgid` to the target map with `profiler_common::target` flags.
    pub fn add_target(&mut self, tgid: u32, flags: u8) -> Result<(), TracerError> {
        self.targets.insert(tgid, flags, 0).map_err(|source| TracerError::Map { name: "TARGETS", source })
    }

    /// Takes `id` (a process, or a thread `on_fork` added) out of the target map.
    pub fn remove_target(&mut self, id: u32) {
        let _ = self.targets.remove(&id);
    }

    /// The ids in the target map now: processes, and threads of followed processes.
    pub fn target_ids(&self) -> Vec<u32> {
        self.targets.keys().filter_map(Result::ok).collect()
    }

    /// The unwind-rows array, mapped into this process for writing tables in place.
    pub fn map_unwind_rows(&self) -> Result<MappedRows, TracerError> {
        let fd = self.unwind_rows.map().fd().as_fd();
        MappedRows::map(fd, self.unwind_rows.len()).map_err(TracerError::MapRows)
    }

    /// Sets (or replaces) a process's mappings with tables.
    pub fn set_proc_unwind(&mut self, tgid: u32, value: &ProcUnwind) -> Result<(), TracerError> {
        self.proc_unwind.insert(tgid, value, 0).map_err(|source| TracerError::Map { name: "PROC_UNWIND", source })
    }

    /// Forgets an exited process's mappings.
    pub fn remove_proc_unwind(&mut self, tgid: u32) {
        let _ = self.proc_unwind.remove(&tgid);
    }

    /// Tells BPF where a process keeps its thread-context pointer (`None`: it has none).
    pub fn set_thread_ctx(&mut self, tgid: u32, loc: Option<&TlsLocation>) -> Result<(), TracerError> {
        match loc {
            Some(l) => {
                self.thread_ctx.insert(tgid, l, 0).map_err(|source| TracerError::Map { name: "THREAD_CTX", source })
            }
            None => {
                let _ = self.thread_ctx.remove(&tgid);
                Ok(())
            }
        }
    }

    /// Sums one counter over all CPUs.
    pub fn counter(&self, which: Counter) -> u64 {
        self.counters.get(&(which as u32), 0).map(|v| v.iter().sum()).unwrap_or(0)
    }

    /// Turns on the kernel's per-program run-time statistics for as long as this tracer lives.
    pub fn enable_stats(&mut self) -> Result<(), TracerError> {
        let fd = aya::sys::enable_stats(aya::sys::Stats::RunTime).map_err(|e| TracerError::Stats(e.to_string()))?;
        self.stats = Some(fd);
        Ok(())
    }

    /// Runs and run time of every program so far (all zero unless stats are enabled).
    pub fn program_stats(&self) -> Vec<ProgramStats> {
        let mut out: Vec<ProgramStats> = self
            .ebpf
            .programs()
            .filter_map(|(name, p)| {
                let info = p.info().ok()?;
                Some(ProgramStats { name: name.to_string(), runs: info.run_count(), run_time: info.run_time() })
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Number of CPUs the sampler is (or will be) attached to.
    pub fn cpus(&self) -> usize {
        self.cpus.len()
    }
}

fn prog_err(name: &'static str, source: aya::programs::ProgramError) -> TracerError {
    TracerError::Program { name, source }
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, TracerError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let prog = ebpf
        .program_mut(name)
        .ok_or(TracerError::Program { name, source: aya::programs::ProgramError::UnexpectedProgramType })?;
    prog.try_into().map_err(|source| prog_err(name, source))
}

fn take(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, TracerError> {
    ebpf.take_map(name)
        .ok_or(TracerError::Map { name, source: aya::maps::MapError::InvalidName { name: name.to_string() } })
}
