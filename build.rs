//! Compiles the protos with protox (no protoc binary) and prost, and keeps the
//! encoded descriptor set for the proto/JSON-Schema parity test and reflection.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/passerelle/referral/v1/referral.proto",
        "proto/passerelle/referral/v2/referral.proto",
        "proto/passerelle/status/v1/status.proto",
        "proto/passerelle/consent/v1/consent.proto",
    ];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["proto"])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("passerelle_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
