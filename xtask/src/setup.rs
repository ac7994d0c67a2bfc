//! Installs the BPF toolchain, each step only when it is missing.

use std::process::Command;

use anyhow::{bail, Context, Result};

/// The LLVM that bpf-linker 0.13.0 is built against; the nightly toolchain uses LLVM 22 too.
pub const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
const BPF_LINKER_VERSION: &str = "0.13.0";

fn ok(cmd: &mut Command) -> bool {
    cmd.output().map(|o| o.status.success()).unwrap_or(false)
}

/// A nightly toolchain is installed (BPF builds and `cargo xtask fuzz` need it).
pub fn has_nightly() -> bool {
    ok(Command::new("rustc").args(["+nightly", "--version"]))
}

fn has_rust_src() -> bool {
    Command::new("rustup")
        .args(["component", "list", "--installed", "--toolchain", "nightly"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("rust-src"))
        .unwrap_or(false)
}

fn has_bpf_linker() -> bool {
    Command::new("bpf-linker")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION))
        .unwrap_or(false)
}

fn has_llvm() -> bool {
    std::path::Path::new(LLVM_PREFIX).join("bin/llvm-objcopy").exists()
}

/// The parts of the BPF toolchain that are not installed.
pub fn missing() -> Vec<&'static str> {
    let mut out = Vec::new();
    if !has_nightly() {
        out.push("nightly toolchain");
    } else if !has_rust_src() {
        out.push("rust-src (nightly)");
    }
    if !has_llvm() {
        out.push("llvm-22-dev");
    }
    if !has_bpf_linker() {
        out.push("bpf-linker 0.13.0");
    }
    out
}

fn exec(cmd: &mut Command) -> Result<()> {
    eprintln!("xtask setup: running {cmd:?}");
    let status = cmd.status().with_context(|| format!("could not start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

/// Installs every missing part of the BPF toolchain.
pub fn run() -> Result<()> {
    if !has_nightly() {
        bail!("no nightly toolchain: this machine's image ships one; `rustup toolchain install nightly` where the network allows");
    }
    if !has_rust_src() {
        exec(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))?;
    }
    if !has_llvm() {
        exec(Command::new("apt-get").args(["update", "-qq"]))?;
        exec(Command::new("apt-get").args(["install", "-y", "-qq", "llvm-22-dev"]))?;
    }
    if !has_bpf_linker() {
        exec(Command::new("cargo").env("LLVM_PREFIX", LLVM_PREFIX).args([
            "install",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
            "--locked",
            "--no-default-features",
            "--features",
            "llvm-22",
        ]))?;
    }
    let still = missing();
    if !still.is_empty() {
        bail!("still missing after setup: {}", still.join(", "));
    }
    eprintln!("xtask setup: BPF toolchain ready");
    Ok(())
}
