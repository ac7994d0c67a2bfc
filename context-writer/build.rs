//! Compiles the C definition of the `otel_thread_ctx_v1` thread-local: stable Rust cannot name a
//! TLS symbol (`#[thread_local]` is unstable), and the OTEP reader finds it by that name.

fn main() {
    println!("cargo:rerun-if-changed=src/tls.c");
    let mut build = cc::Build::new();
    build.file("src/tls.c").flag_if_supported("-ftls-model=global-dynamic");
    // TLSDESC, the dialect OTEP 4947 recommends; x86_64 spells it gnu2.
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("x86_64") {
        build.flag_if_supported("-mtls-dialect=gnu2");
    }
    build.compile("otel_thread_ctx");
    // This package's own examples are executables: keep the symbol in their `.dynsym`.
    // Applications do the same in their own build script (see the crate docs).
    println!("cargo:rustc-link-arg-examples=-Wl,--export-dynamic-symbol=otel_thread_ctx_v1");
}
