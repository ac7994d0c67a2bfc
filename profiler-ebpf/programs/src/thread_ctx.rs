//! OTEP 4947 thread context: the sampled thread's `otel_thread_ctx_v1` record, copied into its
//! sample.
//!
//! User space finds where each process keeps the TLS pointer (`THREAD_CTX`); here, per sample:
//! thread pointer from `task_struct->thread.fsbase` (offset from the kernel's BTF, in
//! [`Config::fsbase_offset`]), then the pointer, then the 28-byte header and, when `valid == 1`,
//! the attribute bytes.

use crate::unwind::read_user;
use aya_ebpf::{
    helpers::generated::{bpf_get_current_task, bpf_probe_read_kernel, bpf_probe_read_user},
    macros::map,
    maps::HashMap,
};
use profiler_common::{ctx_status, tls_kind, Config, ThreadCtx, TlsLocation, THREAD_CTX_HEADER, THREAD_CTX_MAX_ATTRS};

/// Where each process keeps its thread-context pointer (key: tgid).
#[map]
static THREAD_CTX: HashMap<u32, TlsLocation> = HashMap::with_max_entries(8192, 1);

/// The address of the thread's `otel_thread_ctx_v1` variable; `Err(status)` when it cannot be
/// found (`EMPTY` for an unallocated dynamic TLS block).
#[inline(always)]
fn tls_slot(loc: &TlsLocation, config: &Config) -> Result<u64, u32> {
    // SAFETY: helper without preconditions.
    let task = unsafe { bpf_get_current_task() };
    let mut tp: u64 = 0;
    // SAFETY: reads 8 bytes of the current task_struct at an offset taken from the kernel's BTF.
    let r = unsafe {
        bpf_probe_read_kernel((&mut tp as *mut u64).cast(), 8, (task + config.fsbase_offset as u64) as *const _)
    };
    if r != 0 || tp == 0 {
        return Err(ctx_status::FAULT);
    }
    match loc.kind {
        tls_kind::STATIC => Ok(tp.wrapping_add(loc.offset as u64)),
        tls_kind::DTV => {
            let dtv = read_user(tp + 8).ok_or(ctx_status::FAULT)?;
            let block = read_user(dtv.wrapping_add(loc.module.wrapping_mul(16))).ok_or(ctx_status::FAULT)?;
            // glibc marks a block not yet allocated for this thread with -1.
            if block == 0 || block == u64::MAX {
                return Err(ctx_status::EMPTY);
            }
            Ok(block.wrapping_add(loc.offset as u64))
        }
        _ => Err(ctx_status::FAULT),
    }
}

/// Copies the current thread's context record into `out`; returns a `ctx_status::*` value.
#[inline(always)]
pub fn read(tgid: u32, config: &Config, out: *mut ThreadCtx) -> u32 {
    if config.fsbase_offset == 0 {
        return ctx_status::NONE;
    }
    // SAFETY: the value is copied out before use.
    let Some(loc) = (unsafe { THREAD_CTX.get(&tgid) }).copied() else {
        return ctx_status::NONE;
    };
    let slot = match tls_slot(&loc, config) {
        Ok(s) => s,
        Err(status) => return status,
    };
    let Some(record) = read_user(slot) else { return ctx_status::FAULT };
    if record == 0 {
        return ctx_status::EMPTY;
    }
    // SAFETY: `out` points at a reserved ring-buffer record; the header array is 28 bytes.
    unsafe {
        let header = (*out).header.as_mut_ptr();
        if bpf_probe_read_user(header.cast(), THREAD_CTX_HEADER as u32, record as *const _) != 0 {
            return ctx_status::FAULT;
        }
        if (*out).header[24] != 1 {
            return ctx_status::INVALID;
        }
        let size = u16::from_ne_bytes([(*out).header[26], (*out).header[27]]) as u32;
        let n = if size > THREAD_CTX_MAX_ATTRS as u32 { THREAD_CTX_MAX_ATTRS as u32 } else { size };
        if n > 0 {
            let attrs = (*out).attrs.as_mut_ptr();
            if bpf_probe_read_user(attrs.cast(), n, (record + THREAD_CTX_HEADER as u64) as *const _) != 0 {
                return ctx_status::FAULT;
            }
        }
    }
    ctx_status::VALID
}
