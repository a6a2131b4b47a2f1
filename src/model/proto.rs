//! Protobuf messages generated from `proto/` (prost, compiled by protox in
//! build.rs), and conversions between them and the canonical model.

#![allow(missing_docs, unreachable_pub, clippy::all)]

/// `passerelle.referral.v1`.
pub mod referral_v1 {
    include!(concat!(env!("OUT_DIR"), "/passerelle.referral.v1.rs"));
}

/// `passerelle.referral.v2`.
pub mod referral_v2 {
    include!(concat!(env!("OUT_DIR"), "/passerelle.referral.v2.rs"));
}

/// `passerelle.status.v1`.
pub mod status_v1 {
    include!(concat!(env!("OUT_DIR"), "/passerelle.status.v1.rs"));
}

/// `passerelle.consent.v1`.
pub mod consent_v1 {
    include!(concat!(env!("OUT_DIR"), "/passerelle.consent.v1.rs"));
}

/// The encoded `FileDescriptorSet` of every Passerelle proto (for reflection and the parity test).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/passerelle_descriptor.bin"));
