//! Building the BPF object and keeping the committed copy honest.
//!
//! The object is committed (`profiler-ebpf/prebuilt/profiler.bpf.o`) so that user-space builds
//! need no BPF toolchain. Next to it, `profiler.bpf.o.sha256` records a SHA-256 over every source
//! that goes into it; `check` recomputes that hash and fails when they differ.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::setup;

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}

const OBJECT: &str = "profiler-ebpf/prebuilt/profiler.bpf.o";
const HASH: &str = "profiler-ebpf/prebuilt/profiler.bpf.o.sha256";
/// Everything the BPF object is built from, relative to the workspace root.
const SOURCES: &[&str] = &["profiler-ebpf/programs", "profiler-ebpf/common"];

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name == "target" || name.starts_with('.') {
            continue;
        }
        if path.is_dir() {
            collect(&path, out)?;
        } else if name.ends_with(".rs") || name.ends_with(".toml") || name == "Cargo.lock" {
            out.push(path);
        }
    }
    Ok(())
}

/// SHA-256 over (relative path, NUL, contents, NUL) of every source file, in sorted order.
pub fn source_hash() -> Result<String> {
    let root = root();
    let mut files = Vec::new();
    for s in SOURCES {
        collect(&root.join(s), &mut files)?;
    }
    files.sort();
    let mut h = Sha256::new();
    for f in &files {
        let rel = f.strip_prefix(&root).unwrap_or(f);
        h.update(rel.to_string_lossy().as_bytes());
        h.update([0]);
        h.update(fs::read(f).with_context(|| format!("reading {}", f.display()))?);
        h.update([0]);
    }
    Ok(format!("{:x}", h.finalize()))
}

pub fn build() -> Result<()> {
    let missing = setup::missing();
    if !missing.is_empty() {
        bail!("BPF toolchain missing ({}); run `cargo xtask setup`", missing.join(", "));
    }
    let root = root();
    let dir = root.join("profiler-ebpf/programs");
    let status = Command::new("cargo")
        .current_dir(&dir)
        // The workspace's stable settings must not leak into the nightly BPF build.
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("RUSTC")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .args(["+nightly", "build", "--release", "--locked", "-Z", "build-std=core", "--target", "bpfel-unknown-none"])
        // BTF for the verifier (func_info of bpf_loop callbacks), made from the debug info. BTF
        // line info names source files: the checkout's path is remapped so the object is the same
        // bytes wherever the repository is cloned.
        .args([
            "--config".to_string(),
            format!(
                r#"target.bpfel-unknown-none.rustflags=["-C", "link-arg=--btf", "--remap-path-prefix={}=/otelprof"]"#,
                root.display()
            ),
        ])
        .status()
        .context("starting cargo +nightly")?;
    if !status.success() {
        bail!("BPF build failed ({status})");
    }
    let built = dir.join("target/bpfel-unknown-none/release/profiler");
    let out = root.join(OBJECT);
    fs::create_dir_all(out.parent().expect("has parent"))?;
    let objcopy = Path::new(setup::LLVM_PREFIX).join("bin/llvm-objcopy");
    // Local functions (the bpf_loop callback) have mangled names that embed the crate's hash,
    // which cargo derives from the package's path: fix it so every checkout builds the same bytes.
    let renames = root.join("target/ebpf-symbol-renames.txt");
    fs::create_dir_all(renames.parent().expect("has parent"))?;
    fs::write(&renames, stable_symbol_renames(&fs::read(&built)?)?)?;
    let status = Command::new(&objcopy)
        .arg(format!("--redefine-syms={}", renames.display()))
        .arg("--strip-debug")
        .arg(&built)
        .arg(&out)
        .status()
        .with_context(|| format!("starting {}", objcopy.display()))?;
    if !status.success() {
        bail!("llvm-objcopy --strip-debug failed ({status})");
    }
    let hash = source_hash()?;
    fs::write(root.join(HASH), format!("{hash}\n"))?;
    let size = fs::metadata(&out)?.len();
    eprintln!("xtask build-ebpf: wrote {OBJECT} ({size} bytes), sources {hash}");
    Ok(())
}

/// `old new` lines for every symbol whose mangled name carries this crate's hash
/// (`…Cs<hash>_8profiler…`), with the hash replaced by `0`.
fn stable_symbol_renames(object: &[u8]) -> Result<String> {
    use object::{Object, ObjectSymbol};
    let file = object::File::parse(object).context("parsing the built BPF object")?;
    let mut out = String::new();
    for sym in file.symbols() {
        let Ok(name) = sym.name() else { continue };
        let Some(i) = name.find("_8profiler") else { continue };
        let Some(start) = name[..i].rfind("Cs") else { continue };
        let stable = format!("{}Cs0{}", &name[..start], &name[i..]);
        if stable != name {
            out.push_str(&format!("{name} {stable}\n"));
        }
    }
    Ok(out)
}

pub fn check() -> Result<()> {
    let root = root();
    let recorded =
        fs::read_to_string(root.join(HASH)).with_context(|| format!("reading {HASH}: run `cargo xtask build-ebpf`"))?;
    let current = source_hash()?;
    if recorded.trim() != current {
        bail!(
            "the committed BPF object is stale: {HASH} records {} but the sources hash to {current}; \
             run `cargo xtask build-ebpf` and commit profiler-ebpf/prebuilt/",
            recorded.trim()
        );
    }
    if !root.join(OBJECT).exists() {
        bail!("{OBJECT} is missing; run `cargo xtask build-ebpf`");
    }
    println!("committed BPF object matches its sources ({current})");
    Ok(())
}
