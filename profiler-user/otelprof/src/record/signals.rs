//! Signals during a recording.
//!
//! In `-p`/`-a` mode, SIGINT/SIGTERM/SIGHUP end the recording. In `-- CMD` mode they go to the
//! command instead, and the recording ends when the command exits (as with `perf record`). A
//! SIGINT from the terminal (Ctrl-C) already reached the command, which shares our process
//! group, so only signals sent by a process (`kill`) are forwarded: the command gets each signal
//! exactly once.

use signal_hook::{
    consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2},
    iterator::{exfiltrator::WithOrigin, SignalsInfo},
    low_level::siginfo::Cause,
};
use tokio::sync::mpsc;

/// A signal and whether it came from the kernel (terminal) rather than another process.
#[derive(Clone, Copy, Debug)]
pub struct Received {
    pub signal: i32,
    pub from_terminal: bool,
}

/// Installs handlers and streams received signals into a channel.
pub fn listen() -> std::io::Result<mpsc::UnboundedReceiver<Received>> {
    let mut signals = SignalsInfo::<WithOrigin>::new([SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2])?;
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::Builder::new().name("otelprof-signals".into()).spawn(move || {
        for origin in &mut signals {
            let from_terminal = matches!(origin.cause, Cause::Kernel);
            if tx.send(Received { signal: origin.signal, from_terminal }).is_err() {
                break;
            }
        }
    })?;
    Ok(rx)
}

/// Whether `sig` ends a `-p`/`-a` recording.
pub fn stops_recording(sig: i32) -> bool {
    matches!(sig, SIGINT | SIGTERM | SIGHUP | SIGQUIT)
}

/// Sends `sig` to `pid`.
pub fn forward(pid: u32, sig: i32) {
    // SAFETY: kill(2) with a valid pid and signal number.
    if unsafe { libc::kill(pid as libc::pid_t, sig) } != 0 {
        tracing::debug!("forwarding signal {sig} to {pid}: {}", std::io::Error::last_os_error());
    }
}
