//! Compiles the protos with protox (no protoc binary) and prost, and keeps the
//! encoded descriptor sets for the proto/JSON-Schema parity test and reflection.
//!
//! Two descriptor sets: the data packages (referral, status, consent,
//! options), whose every message the data-category checks walk; and the
//! gateway API (`passerelle.gateway.v1` with everything it imports), for gRPC
//! reflection and request checks. The API's envelope messages carry ids and
//! codes, not personal data, so they declare no data categories.
//!
//! A third run generates the receiver service (`passerelle.receiver.v1`), the
//! one push destinations implement: a client for the gateway, a server for
//! the tests and the demo. It keeps no descriptor set: its payload is opaque
//! bytes already written in the destination's format, so there are no data
//! categories to check and nothing to reflect.

use std::path::PathBuf;

/// The data packages, in dependency order.
const DATA_PROTOS: [&str; 5] = [
    "proto/passerelle/options/v1/options.proto",
    "proto/passerelle/referral/v1/referral.proto",
    "proto/passerelle/referral/v2/referral.proto",
    "proto/passerelle/status/v1/status.proto",
    "proto/passerelle/consent/v1/consent.proto",
];

/// The gRPC API.
const GATEWAY_PROTO: &str = "proto/passerelle/gateway/v1/gateway.proto";

/// The service push destinations implement.
const RECEIVER_PROTO: &str = "proto/passerelle/receiver/v1/receiver.proto";

/// Where the gateway's generated code finds the data packages' types: they
/// are generated once, by the first run, and included by `src/model/proto.rs`.
const DATA_PACKAGES: [(&str, &str); 5] = [
    (".passerelle.options.v1", "crate::model::proto::options_v1"),
    (
        ".passerelle.referral.v1",
        "crate::model::proto::referral_v1",
    ),
    (
        ".passerelle.referral.v2",
        "crate::model::proto::referral_v2",
    ),
    (".passerelle.status.v1", "crate::model::proto::status_v1"),
    (".passerelle.consent.v1", "crate::model::proto::consent_v1"),
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in DATA_PROTOS.iter().chain([&GATEWAY_PROTO, &RECEIVER_PROTO]) {
        println!("cargo:rerun-if-changed={proto}");
    }
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);

    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler
        .include_source_info(true)
        .include_imports(true)
        .open_files(DATA_PROTOS)?;
    // Encoded by protox itself: prost-types' option messages drop extensions,
    // and the data categories are extension options (passerelle.options.v1).
    std::fs::write(
        out_dir.join("passerelle_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;
    prost_build::Config::new().compile_fds(compiler.file_descriptor_set())?;

    let mut gateway = protox::Compiler::new(["proto"])?;
    gateway
        .include_source_info(true)
        .include_imports(true)
        .open_files([GATEWAY_PROTO])?;
    std::fs::write(
        out_dir.join("passerelle_gateway_descriptor.bin"),
        gateway.encode_file_descriptor_set(),
    )?;
    // Type names let the request codec find each message's descriptor.
    let mut config = prost_build::Config::new();
    config.enable_type_names();
    let mut builder = tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .codec_path("crate::server::grpc::StrictCodec");
    for (package, path) in DATA_PACKAGES {
        // The options package is imported by the data packages only; listing
        // it keeps this run from writing a second copy of its code.
        builder = builder.extern_path(package, path);
    }
    builder.compile_fds_with_config(gateway.file_descriptor_set(), config)?;

    let mut receiver = protox::Compiler::new(["proto"])?;
    receiver.open_files([RECEIVER_PROTO])?;
    // The default codec: the gateway's strict one refuses unknown fields in
    // requests it serves, while this client must accept answers that gain fields.
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(receiver.file_descriptor_set())?;
    Ok(())
}
