//! Generates Rust types from the vendored .proto files with prost-build and a vendored protoc,
//! so no system protoc is needed and no generated code is committed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY (of intent): build scripts are single-threaded; prost-build reads PROTOC.
    unsafe { std::env::set_var("PROTOC", protoc) };
    println!("cargo:rerun-if-changed=profile.proto");
    println!("cargo:rerun-if-changed=opamp/v1/opamp.proto");
    println!("cargo:rerun-if-changed=opamp/v1/anyvalue.proto");
    prost_build::Config::new()
        .compile_protos(&["profile.proto", "opamp/v1/opamp.proto", "opamp/v1/anyvalue.proto"], &["."])?;
    Ok(())
}
