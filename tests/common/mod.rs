//! Helpers shared by the integration tests.
#![allow(dead_code, unreachable_pub, missing_docs)]

pub mod gateway;
pub mod generators;
pub mod otlp;
pub mod receiver;

use std::path::{Path, PathBuf};

use chrono::{TimeZone, Utc};
use passerelle::formats::Context;
use passerelle::model::common::{Organisation, OrganisationKind};
use passerelle::model::ids::Siret;
use passerelle::validate::Limits;

/// SIRET of the synthetic association used in fixtures (Konexio-like, Saint-Denis).
pub const ASSOCIATION_SIRET: &str = "81234567800013";
/// SIRET of the synthetic France Travail agency used in fixtures.
pub const FRANCE_TRAVAIL_SIRET: &str = "13000548100002";
/// SIRET of a synthetic Mission Locale.
pub const MISSION_LOCALE_SIRET: &str = "34312345600000";

/// The folder of golden files.
pub fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// A context with a fixed clock and the fixture organisations, so outputs are reproducible.
pub fn fixed_context() -> Context {
    Context {
        now: Utc
            .with_ymd_and_hms(2026, 12, 1, 9, 0, 0)
            .single()
            .expect("valid time"),
        sender: Some(Organisation {
            siret: Siret::parse(ASSOCIATION_SIRET).expect("valid SIRET"),
            kind: OrganisationKind::Association,
            name: Some("Konexio Saint-Denis".to_owned()),
        }),
        recipient: Some(Organisation {
            siret: Siret::parse(FRANCE_TRAVAIL_SIRET).expect("valid SIRET"),
            kind: OrganisationKind::FranceTravail,
            name: Some("France Travail Saint-Denis".to_owned()),
        }),
        referral_id: None,
        limits: Limits::default(),
    }
}

/// Compares `actual` with the golden file at `path` (relative to tests/golden),
/// both as JSON values. With `UPDATE_GOLDEN=1` the file is (re)written instead.
pub fn assert_golden_json(path: &str, actual: &serde_json::Value) {
    let file = golden_dir().join(path);
    let pretty = serde_json::to_string_pretty(actual).expect("serialisable") + "\n";
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(file.parent().expect("has a parent")).expect("create dir");
        std::fs::write(&file, pretty).expect("write golden file");
        return;
    }
    let expected = std::fs::read_to_string(&file).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with UPDATE_GOLDEN=1 to create it)",
            file.display()
        )
    });
    let expected: serde_json::Value = serde_json::from_str(&expected).expect("golden file is JSON");
    assert_eq!(
        &expected,
        actual,
        "{} differs; actual:\n{pretty}",
        file.display()
    );
}

/// Reads a file under tests/golden.
pub fn golden_bytes(path: &str) -> Vec<u8> {
    let file = golden_dir().join(path);
    std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}
