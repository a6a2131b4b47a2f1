//! Compiles the protos with protox (no protoc binary) and prost, and keeps the
//! encoded descriptor set for the proto/JSON-Schema parity test and reflection.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/passerelle/options/v1/options.proto",
        "proto/passerelle/referral/v1/referral.proto",
        "proto/passerelle/referral/v2/referral.proto",
        "proto/passerelle/status/v1/status.proto",
        "proto/passerelle/consent/v1/consent.proto",
    ];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler
        .include_source_info(true)
        .include_imports(true)
        .open_files(protos)?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    // Encoded by protox itself: prost-types' option messages drop extensions,
    // and the data categories are extension options (passerelle.options.v1).
    std::fs::write(
        out_dir.join("passerelle_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;
    prost_build::Config::new().compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}
