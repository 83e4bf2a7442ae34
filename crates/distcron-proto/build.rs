//! Compiles `proto/` (at the workspace root) with the protoc shipped in `protoc-bin-vendored`,
//! so no system protoc is needed for our own protos.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let protos = [
        root.join("distcron/jobs/v1/jobs.proto"),
        root.join("distcron/logs/v1/logs.proto"),
    ];
    // `.cargo/config.toml` points PROTOC at tools/protoc; fall back to the vendored binary when
    // the crate is built some other way.
    let protoc_runs = std::env::var_os("PROTOC")
        .map(PathBuf::from)
        .is_some_and(|p| p.is_absolute() && p.exists());
    if !protoc_runs {
        std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    }
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("distcron_descriptor.bin"))
        .compile_protos(&protos, std::slice::from_ref(&root))?;
    for p in &protos {
        println!("cargo:rerun-if-changed={}", p.display());
    }
    Ok(())
}
