//! `passerelle audit verify` and `passerelle audit export`, run as a data
//! protection officer would, on a store file populated through the library
//! (`audit::append_entry`) and then tampered with directly in SQLite.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use passerelle::audit::{self, AuditEntry, AuditKind};
use passerelle::store::SqliteStore;
use rusqlite::Connection;
use sha2::{Digest, Sha256};

const REFERRAL: &str = "7d1f6a52-3f0e-4c4b-9a55-1c2e3f4a5b6c";

fn passerelle(store: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_passerelle"))
        .arg("--store")
        .arg(store)
        .args(args)
        .output()
        .expect("the binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A store file holding an accepted referral, its read, a failed then a
/// successful delivery and a consent withdrawal; the store is closed.
async fn populated() -> (tempfile::TempDir, PathBuf) {
    let directory = tempfile::tempdir().expect("temporary directory");
    let path = directory.path().join("passerelle.db");
    let store = SqliteStore::open(&path).expect("open");
    let entries = [
        AuditEntry::new(AuditKind::ReferralAccepted)
            .actor("asso-konexio")
            .referral(REFERRAL)
            .consent_record("0b7a2c1e-5d4f-4a3b-8c9d-0e1f2a3b4c5d")
            .policy("france-travail-orientation", "2026-11-1")
            .paths(["person.birth_date", "identifiers.nir"]),
        AuditEntry::new(AuditKind::DeliveryFailed)
            .referral(REFERRAL)
            .recipient("france-travail")
            .attempt(1)
            .reason("http-503"),
        AuditEntry::new(AuditKind::Delivered)
            .referral(REFERRAL)
            .recipient("france-travail")
            .attempt(2),
        AuditEntry::new(AuditKind::ReferralRead)
            .actor("france-travail")
            .referral(REFERRAL),
        AuditEntry::new(AuditKind::ConsentEventRecorded)
            .actor("asso-konexio")
            .consent_record("0b7a2c1e-5d4f-4a3b-8c9d-0e1f2a3b4c5d")
            .event_kind("withdrawn"),
    ];
    for (expected, entry) in (1_u64..).zip(entries) {
        let seq = audit::append_entry(&store, entry).await.expect("append");
        assert_eq!(seq, expected);
    }
    store.close().expect("close");
    (directory, path)
}

/// The attacker with write access to the file drops the triggers first.
fn tamper(path: &Path, sql: &str) {
    Connection::open(path)
        .and_then(|connection| {
            connection.execute_batch(&format!(
                "DROP TRIGGER audit_log_no_update; DROP TRIGGER audit_log_no_delete; {sql}"
            ))
        })
        .expect("tampering");
}

fn verify_json(path: &Path, extra: &[&str]) -> (Output, serde_json::Value) {
    let mut args = vec!["audit", "verify", "--output", "json"];
    args.extend_from_slice(extra);
    let output = passerelle(path, &args);
    let report = serde_json::from_slice(&output.stdout).expect("a JSON report");
    (output, report)
}

#[tokio::test]
async fn verify_reports_an_intact_chain_and_its_head() {
    let (_directory, path) = populated().await;
    let output = passerelle(&path, &["audit", "verify"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let printed = text(&output.stdout);
    assert!(
        printed.starts_with("audit log intact: 5 entries, head 5:"),
        "{printed}"
    );

    let (output, report) = verify_json(&path, &[]);
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(report["intact"], true);
    assert_eq!(report["entries"], 5);
    assert_eq!(report["head"]["seq"], 5);
    assert_eq!(report["first_broken"], serde_json::Value::Null);
}

#[tokio::test]
async fn verify_names_the_altered_entry_and_exits_1() {
    let (_directory, path) = populated().await;
    tamper(
        &path,
        "UPDATE audit_log SET entry = replace(entry, 'http-503', 'http-200') WHERE seq = 2",
    );
    let output = passerelle(&path, &["audit", "verify"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output.stdout).starts_with("audit log broken at entry 2 (altered):"),
        "{}",
        text(&output.stdout)
    );
    let (output, report) = verify_json(&path, &[]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(report["intact"], false);
    assert_eq!(report["first_broken"]["seq"], 2);
    assert_eq!(report["first_broken"]["problem"], "altered");
    assert_eq!(report["entries"], 5);
}

#[tokio::test]
async fn verify_names_a_removed_entry() {
    let (_directory, path) = populated().await;
    tamper(&path, "DELETE FROM audit_log WHERE seq = 3");
    let (output, report) = verify_json(&path, &[]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(report["first_broken"]["seq"], 3);
    assert_eq!(report["first_broken"]["problem"], "removed");
}

/// The documented limit, and the way around it: keep the head.
#[tokio::test]
async fn a_removed_tail_is_caught_only_with_the_expected_head() {
    let (_directory, path) = populated().await;
    let (_, report) = verify_json(&path, &[]);
    let head = format!(
        "{}:{}",
        report["head"]["seq"],
        report["head"]["hash"].as_str().expect("a hash")
    );
    let output = passerelle(&path, &["audit", "verify", "--expect-head", &head]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));

    tamper(&path, "DELETE FROM audit_log WHERE seq = 5");
    let output = passerelle(&path, &["audit", "verify"]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "undetectable without an anchor"
    );
    let (output, report) = verify_json(&path, &["--expect-head", &head]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(report["first_broken"]["seq"], 5);
    assert_eq!(report["first_broken"]["problem"], "truncated");
}

#[tokio::test]
async fn a_malformed_expected_head_is_a_usage_error() {
    let (_directory, path) = populated().await;
    let output = passerelle(&path, &["audit", "verify", "--expect-head", "5"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output.stderr).contains("SEQ:HASH"),
        "{}",
        text(&output.stderr)
    );
}

/// One JSON line per entry, in order; dropping `previous_hash` and `hash`
/// and writing the rest with sorted keys gives back the hashed text.
#[tokio::test]
async fn export_writes_one_verifiable_json_line_per_entry() {
    let (_directory, path) = populated().await;
    let output = passerelle(&path, &["audit", "export"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let lines: Vec<serde_json::Value> = text(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect();
    let kinds: Vec<&str> = lines
        .iter()
        .map(|line| line["kind"].as_str().expect("a kind"))
        .collect();
    assert_eq!(
        kinds,
        [
            "referral_accepted",
            "delivery_failed",
            "delivered",
            "referral_read",
            "consent_event_recorded"
        ]
    );
    assert_eq!(lines[0]["paths"][1], "identifiers.nir");
    assert_eq!(lines[1]["attempt"], 1);
    let mut previous = "0".repeat(64);
    for (seq, line) in (1_u64..).zip(lines) {
        let serde_json::Value::Object(mut fields) = line else {
            panic!("an object per line");
        };
        assert_eq!(fields["seq"], seq);
        let link = fields.remove("previous_hash").expect("previous_hash");
        let hash = fields.remove("hash").expect("hash");
        assert_eq!(link, previous.as_str());
        let canonical = serde_json::to_string(&fields).expect("JSON");
        previous = hex::encode(Sha256::digest(format!("{previous}{canonical}").as_bytes()));
        assert_eq!(hash, previous.as_str(), "entry {seq}");
    }
}

#[tokio::test]
async fn export_to_a_file_says_how_many_entries_it_wrote() {
    let (directory, path) = populated().await;
    let file = directory.path().join("audit.jsonl");
    let output = passerelle(
        &path,
        &[
            "audit",
            "export",
            "--output",
            file.to_str().expect("UTF-8 path"),
        ],
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert!(text(&output.stdout).starts_with("5 audit entries written to "));
    let written = std::fs::read_to_string(&file).expect("the export");
    assert_eq!(written.lines().count(), 5);
    assert!(written.lines().all(|line| line.ends_with('}')));
}

#[test]
fn verify_on_a_missing_store_fails_without_creating_it() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let path = directory.path().join("absent.db");
    let output = passerelle(&path, &["audit", "verify"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output.stderr).contains("not found"),
        "{}",
        text(&output.stderr)
    );
    assert!(!path.exists());
}

/// verify opens the file read-only: the file's bytes do not change.
#[tokio::test]
async fn verify_leaves_the_store_file_unchanged() {
    let (_directory, path) = populated().await;
    let before = std::fs::read(&path).expect("the store file");
    let output = passerelle(&path, &["audit", "verify"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert_eq!(std::fs::read(&path).expect("the store file"), before);
}
