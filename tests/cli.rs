//! The `passerelle` binary, run as an integrator would: exit codes, one line
//! per error, JSON output, and clear errors (never a panic) on bad input.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const FAKE_NAME: &str = "Zénobie";

fn passerelle(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_passerelle"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    {
        let mut input = child.stdin.take().expect("stdin is piped");
        if let Some(bytes) = stdin {
            input.write_all(bytes).expect("write stdin");
        }
    }
    child.wait_with_output().expect("the binary ends")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn sample(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("samples")
        .join(name)
        .display()
        .to_string()
}

/// A valid v2 referral with a recognisable fake name, as a JSON value.
fn referral() -> serde_json::Value {
    let mut value: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(sample("referral-v2.json")).expect("sample"))
            .expect("sample is JSON");
    value["person"]["first_name"] = FAKE_NAME.into();
    value
}

fn write_temp(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).expect("write temp file");
    path
}

#[test]
fn validate_accepts_a_valid_referral_and_detects_its_schema() {
    let output = passerelle(&["validate", &sample("referral-v2.json")], None);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(text(&output.stdout).contains("valid (referral/v2)"));
}

#[test]
fn validate_prints_one_line_per_error_and_exits_1() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut bad = referral();
    bad["sender"]["organisation"]["siret"] = "81234567800012".into();
    bad["nickname"] = FAKE_NAME.into();
    bad["person"]["favourite_colour"] = "vert".into();
    let path = write_temp(&dir, "bad.json", &serde_json::to_vec(&bad).expect("json"));
    let output = passerelle(&["validate", path.to_str().expect("utf-8 path")], None);
    assert_eq!(output.status.code(), Some(1));
    let stdout = text(&output.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "one line per unknown field: {stdout}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("/nickname") && l.contains("unknown-field"))
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("/person/favourite_colour") && l.contains("unknown-field"))
    );
    assert!(
        lines
            .iter()
            .all(|l| l.starts_with(path.to_str().expect("utf-8")))
    );
    assert!(!stdout.contains(FAKE_NAME) && !stdout.contains("vert"));

    // Once the shape is right, the value rules run: the SIRET's Luhn key.
    let mut bad = referral();
    bad["sender"]["organisation"]["siret"] = "81234567800012".into();
    let path = write_temp(
        &dir,
        "bad-siret.json",
        &serde_json::to_vec(&bad).expect("json"),
    );
    let output = passerelle(&["validate", path.to_str().expect("utf-8 path")], None);
    assert_eq!(output.status.code(), Some(1));
    let stdout = text(&output.stdout);
    assert!(
        stdout.contains("/sender/organisation/siret") && stdout.contains("siret-checksum"),
        "{stdout}"
    );
    assert!(!stdout.contains("81234567800012"));
}

#[test]
fn validate_json_output_is_machine_readable() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut bad = referral();
    bad["person"]
        .as_object_mut()
        .expect("object")
        .remove("last_name");
    let path = write_temp(
        &dir,
        "missing.json",
        &serde_json::to_vec(&bad).expect("json"),
    );
    let output = passerelle(
        &[
            "validate",
            "--output",
            "json",
            &sample("referral-v2.json"),
            path.to_str().expect("utf-8"),
        ],
        None,
    );
    assert_eq!(output.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON report");
    assert_eq!(report[0]["valid"], true);
    assert_eq!(report[1]["valid"], false);
    assert_eq!(report[1]["errors"][0]["pointer"], "/person/last_name");
    assert_eq!(report[1]["errors"][0]["rule"], "required");
}

#[test]
fn validate_with_an_explicit_schema_refuses_another_version() {
    let output = passerelle(
        &[
            "validate",
            "--schema",
            "referral/v1",
            &sample("referral-v2.json"),
        ],
        None,
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output.stdout).contains("/schema_version"),
        "{}",
        text(&output.stdout)
    );
}

#[test]
fn bad_input_gets_a_clear_error_never_a_panic() {
    let dir = tempfile::tempdir().expect("temp dir");
    let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("invalid-utf8.json", b"{\"schema_version\": \"\xC3\x28\"}".to_vec(), "malformed"),
        (
            "duplicate.json",
            br#"{"schema_version": "passerelle.referral.v2", "schema_version": "passerelle.referral.v2"}"#.to_vec(),
            "duplicate-key",
        ),
        ("deep.json", deep.into_bytes(), "max-depth"),
        ("truncated.json", br#"{"referral_id": "#.to_vec(), "ends too early"),
        ("not-json.csv", "Prénom;Nom\nA;B\n".as_bytes().to_vec(), "invalid JSON"),
    ];
    for (name, bytes, expected) in cases {
        let path = write_temp(&dir, name, &bytes);
        let output = passerelle(&["validate", path.to_str().expect("utf-8")], None);
        assert_eq!(output.status.code(), Some(1), "{name}");
        let all = text(&output.stdout) + &text(&output.stderr);
        assert!(all.contains(expected), "{name}: {all}");
        assert!(!all.contains("panicked"), "{name}: {all}");
    }
    let big = write_temp(&dir, "big.json", &vec![b' '; 2048]);
    let output = passerelle(
        &[
            "validate",
            "--max-bytes",
            "1024",
            big.to_str().expect("utf-8"),
        ],
        None,
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output.stderr).contains("too large"),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn translate_reads_stdin_and_reports_losses_on_stderr() {
    let input = serde_json::to_vec(&referral()).expect("json");
    let output = passerelle(
        &[
            "translate",
            "--from",
            "passerelle-v2",
            "--to",
            "passerelle-v1",
            "-",
        ],
        Some(&input),
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    let v1: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON on stdout");
    assert_eq!(v1["schema_version"], "passerelle.referral.v1");
    assert_eq!(v1["person"]["first_name"], FAKE_NAME);
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("loss: /situation/education_level"),
        "{stderr}"
    );
    assert!(stderr.contains("loss: /obstacles/0/impact"), "{stderr}");
}

#[test]
fn translate_fails_clearly_on_unknown_formats_and_bad_documents() {
    let output = passerelle(
        &["translate", "--from", "excel", "--to", "passerelle-v2", "-"],
        Some(b""),
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("no format named \"excel\""));

    let mut bad = referral();
    bad["person"]["birth_date"] = "03/02/1998".into();
    let input = serde_json::to_vec(&bad).expect("json");
    let output = passerelle(
        &[
            "translate",
            "--from",
            "passerelle-v2",
            "--to",
            "passerelle-v1",
        ],
        Some(&input),
    );
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("/person/birth_date"), "{stderr}");
    assert!(output.stdout.is_empty());
    assert!(
        !stderr.contains(FAKE_NAME) && !stderr.contains("03/02/1998"),
        "{stderr}"
    );
}

#[test]
fn formats_and_schemas_are_listed() {
    let output = passerelle(&["formats"], None);
    assert!(output.status.success());
    let listing = text(&output.stdout);
    for name in [
        "passerelle-v1",
        "passerelle-v2",
        "passerelle-proto-v2",
        "csv",
        "dora",
        "france-travail",
    ] {
        assert!(listing.contains(name), "{name} missing from {listing}");
    }
    let output = passerelle(&["schema", "list"], None);
    assert!(text(&output.stdout).contains("passerelle.referral.v2.Referral"));
    let output = passerelle(&["schema", "show", "referral/v2"], None);
    let schema: serde_json::Value = serde_json::from_slice(&output.stdout).expect("schema is JSON");
    assert_eq!(
        schema["properties"]["schema_version"]["const"],
        "passerelle.referral.v2"
    );
    let output = passerelle(&["schema", "show", "referral/v9"], None);
    assert_eq!(output.status.code(), Some(2));
}

/// `passerelle demo` runs the whole loop and exits cleanly: the referral is
/// pushed to the local France Travail, signed; its decision comes back; the
/// association sees it delivered, with the status.
#[test]
fn the_demo_runs_the_closed_loop() {
    let folder = tempfile::tempdir().expect("temporary folder");
    let demo_folder = folder.path().join("demo");
    let output = passerelle(
        &["demo", "--folder", demo_folder.to_str().expect("UTF-8")],
        None,
    );
    let stdout = text(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        text(&output.stderr)
    );
    assert!(stdout.contains("signature valid"), "{stdout}");
    assert!(!stdout.contains("signature INVALID"), "{stdout}");
    assert!(stdout.contains("\"reference_partenaire\""), "{stdout}");
    assert!(
        stdout.contains("\"status\": \"STATUS_ACCEPTED\""),
        "{stdout}"
    );
    assert!(stdout.contains("\"state\": \"delivered\""), "{stdout}");
    assert!(demo_folder.join("passerelle.db").exists());
    let received = std::fs::read_dir(demo_folder.join("received-by-france-travail"))
        .expect("received folder")
        .count();
    assert_eq!(
        received, 2,
        "the DORA orientation and the canonical referral"
    );
    let verified = passerelle(
        &[
            "--store",
            demo_folder.join("passerelle.db").to_str().expect("UTF-8"),
            "audit",
            "verify",
        ],
        None,
    );
    assert!(verified.status.success(), "{}", text(&verified.stdout));
}
