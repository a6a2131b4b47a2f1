//! The conformance suite v1 against real gateways: the binary started with
//! the suite's own configuration (`conformance/v1/passerelle.toml`), and
//! `passerelle conformance run` run as an integrator runs it, its receiver
//! playing every organisation. A correct gateway passes; a gateway broken on
//! purpose (minimisation skipped, a debug build's fault) fails exactly the
//! cases that look at what was removed or pseudonymised.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use common::gateway::{Options, TestGateway, on_postgres, scratch_database};
use passerelle::conformance::suite::Suite;
use passerelle::conformance::{Outcome, RunReport};
use passerelle::store::postgres::ScratchDatabase;

fn suite_folder() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("conformance/v1")
}

fn secret() -> String {
    let key: [u8; 32] = rand::random();
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(key)
    )
}

fn free_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("address").to_string()
}

/// The suite's configuration, as an integrator would use it, with the ports,
/// the store and the folders this test needs.
fn configuration(dir: &Path, receiver: &str, database: Option<&ScratchDatabase>) -> PathBuf {
    let folder = suite_folder();
    let text = std::fs::read_to_string(folder.join("passerelle.toml"))
        .expect("conformance/v1/passerelle.toml");
    let repository = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = text
        .replace("127.0.0.1:8089", "127.0.0.1:0")
        .replace("127.0.0.1:9797", receiver)
        .replace(
            "sqlite = \"conformance.db\"",
            &match database {
                Some(database) => format!("postgres = {:?}", database.url),
                None => format!("sqlite = {:?}", dir.join("store.db")),
            },
        )
        .replace(
            "\"../../config/",
            &format!("\"{}/config/", repository.display()),
        );
    assert!(
        text.contains(receiver) && !text.contains("conformance.db"),
        "the suite's configuration no longer has the receiver URLs or the store this test rewrites"
    );
    let path = dir.join("passerelle.toml");
    std::fs::write(&path, text).expect("write the configuration");
    path
}

/// Starts a gateway on the suite's configuration and runs the suite against
/// it; returns the runner's exit code and its JSON report, and writes what
/// it printed beside the reports (`output.txt`).
fn run_suite(fault: Option<&str>, reports: &Path) -> (i32, RunReport) {
    let dir = tempfile::tempdir().expect("temporary folder");
    let receiver = free_address();
    let secret = secret();
    let mut environment = vec![("PASSERELLE_CONFORMANCE_SECRET".to_owned(), secret.clone())];
    if let Some(fault) = fault {
        environment.push(("PASSERELLE_FAULT".to_owned(), fault.to_owned()));
    }
    // On PostgreSQL when the tests run there (`PASSERELLE_TEST_STORE=postgres`).
    let database = on_postgres().then(scratch_database);
    let config = configuration(dir.path(), &receiver, database.as_deref());
    let gateway = TestGateway::start_in(
        dir,
        std::sync::Arc::new(common::gateway::Pki::generate()),
        Options {
            tls: false,
            config: Some(config),
            database,
            environment,
            ..Options::default()
        },
    );
    let json = reports.join("report.json");
    let output = Command::new(env!("CARGO_BIN_EXE_passerelle"))
        .args(["conformance", "run", "--target"])
        .arg(gateway.url(""))
        .arg("--suite")
        .arg(suite_folder())
        .args(["--receiver-listen", &receiver])
        .arg("--report")
        .arg(format!(
            "json={},junit={},html={}",
            json.display(),
            reports.join("report.xml").display(),
            reports.join("report.html").display()
        ))
        .env("PASSERELLE_CONFORMANCE_SECRET", &secret)
        .output()
        .expect("run passerelle conformance run");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report: RunReport = serde_json::from_slice(&std::fs::read(&json).unwrap_or_else(|_| {
        panic!(
            "no JSON report; the runner said:\n{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    }))
    .expect("the JSON report parses");
    println!("{stdout}");
    std::fs::write(reports.join("output.txt"), &output.stdout).expect("write the output");
    (output.status.code().unwrap_or(-1), report)
}

fn ids(report: &RunReport, keep: impl Fn(&Outcome) -> bool) -> BTreeSet<String> {
    report
        .cases
        .iter()
        .filter(|case| keep(&case.outcome))
        .map(|case| case.id.clone())
        .collect()
}

/// Recognisable personal values of the fixtures' people: contact details,
/// birth dates and names, identifiers, free text.
fn personal_values() -> Vec<String> {
    let mut values = Vec::new();
    let folder = suite_folder().join("fixtures/referrals");
    for entry in std::fs::read_dir(folder).expect("fixtures") {
        let path = entry.expect("fixture").path();
        if path.extension().is_none_or(|extension| extension != "json") {
            continue;
        }
        let Ok(document) =
            serde_json::from_slice::<serde_json::Value>(&std::fs::read(&path).expect("fixture"))
        else {
            continue;
        };
        for pointer in [
            "/person/contact/email",
            "/person/contact/phone",
            "/person/birth_date",
            "/person/birth_name",
            "/reason",
        ] {
            if let Some(value) = document.pointer(pointer).and_then(|value| value.as_str()) {
                values.push(value.to_owned());
            }
        }
        for identifier in document["identifiers"].as_array().into_iter().flatten() {
            if let Some(value) = identifier["value"].as_str() {
                values.push(value.to_owned());
            }
        }
    }
    // Short numbers (a CAF number of 7 digits) also occur inside SIRETs.
    values.retain(|value| value.len() >= 8);
    values
}

#[test]
fn the_suite_is_well_formed_and_large_enough() {
    let suite = Suite::load(&suite_folder()).unwrap_or_else(|problems| panic!("{problems}"));
    assert!(suite.cases.len() >= 60, "{} cases", suite.cases.len());
    let accepted = suite
        .cases
        .iter()
        .filter(|case| case.then.status == 202)
        .count();
    assert!(accepted >= 15, "only {accepted} cases expect an acceptance");
    for topic in passerelle::conformance::suite::TOPICS {
        assert!(
            suite.cases.iter().any(|case| case.topic == *topic),
            "no case about {topic}"
        );
    }
    for case in &suite.cases {
        if let Some(reason) = &case.skip {
            assert!(
                !reason.trim().is_empty(),
                "{} is skipped without a reason",
                case.id
            );
        }
    }
    for requirement in &suite.requirements {
        let checked = suite
            .cases
            .iter()
            .any(|case| case.requirements.contains(&requirement.id));
        let other_mode =
            requirement.id.starts_with("RECEIVER-") || requirement.id.starts_with("SENDER-");
        assert!(checked || other_mode, "no case checks {}", requirement.id);
    }
}

#[test]
fn a_correct_gateway_passes_the_whole_suite() {
    let reports = tempfile::tempdir().expect("temporary folder");
    let (code, report) = run_suite(None, reports.path());
    let failed = ids(&report, Outcome::is_failure);
    assert!(failed.is_empty(), "failed: {failed:?}");
    assert_eq!(code, 0);
    let (passed, _, skipped) = report.counts();
    assert!(passed >= 60, "{passed} passed, {skipped} skipped");
    let junit = std::fs::read_to_string(reports.path().join("report.xml")).expect("JUnit report");
    assert_eq!(junit.matches("<testcase").count(), report.cases.len());
    let html = std::fs::read_to_string(reports.path().join("report.html")).expect("HTML report");
    assert!(html.contains("<html"));
}

#[test]
fn a_gateway_that_skips_minimisation_fails_the_cases_that_look_at_what_leaves() {
    let suite = Suite::load(&suite_folder()).unwrap_or_else(|problems| panic!("{problems}"));
    // The cases that look at what was removed or pseudonymised in a referral
    // delivered: the only ones a gateway forwarding referrals as sent may fail.
    let watching: BTreeSet<String> = suite
        .cases
        .iter()
        .filter(|case| case.skip.is_none())
        .filter(|case| {
            case.then.delivered.iter().any(|delivery| {
                delivery.kind == "referral"
                    && (!delivery.checks.absent.is_empty() || !delivery.pseudonymised.is_empty())
            })
        })
        .map(|case| case.id.clone())
        .collect();
    assert!(watching.len() >= 5, "{watching:?}");

    let reports = tempfile::tempdir().expect("temporary folder");
    let (code, report) = run_suite(Some("skip-minimisation"), reports.path());
    assert_eq!(code, 1, "the runner must say the gateway does not conform");
    let failed = ids(&report, Outcome::is_failure);
    let unexpected: Vec<&String> = failed.difference(&watching).collect();
    assert!(
        unexpected.is_empty(),
        "failed but do not look at minimisation: {unexpected:?}"
    );
    assert!(
        failed.contains("minimisation-nir-never-reaches-france-travail"),
        "a gateway forwarding the NIR passed the NIR case"
    );
    assert!(
        failed.len() * 2 >= watching.len(),
        "only {failed:?} of {watching:?} failed"
    );
    // The reports show the failing requests and deliveries, masked: none of
    // the fixtures' personal values appears in them, nor in what the runner printed.
    let values = personal_values();
    assert!(values.len() >= 10, "{values:?}");
    for file in ["report.json", "report.xml", "report.html", "output.txt"] {
        let text = std::fs::read_to_string(reports.path().join(file)).expect("report");
        for value in &values {
            if let Some(at) = text.find(value.as_str()) {
                panic!(
                    "{file} shows a personal value {value:?}: {}",
                    &text[at.saturating_sub(300)..(at + 100).min(text.len())]
                );
            }
        }
    }
    for case in &report.cases {
        if let Outcome::Failed { failures } = &case.outcome {
            assert!(
                failures
                    .iter()
                    .any(|failure| failure.contains("must not be there")
                        || failure.contains("not pseudonymised")),
                "{}: {failures:?}",
                case.id
            );
        }
    }
}

/// Runs `passerelle conformance sender` on files; returns its exit code and output.
fn check_sender(arguments: &[&str]) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_passerelle"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["conformance", "sender"])
        .args(arguments)
        .output()
        .expect("run passerelle conformance sender");
    (
        output.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

#[test]
fn the_sender_check_passes_good_messages_and_names_the_requirement_each_bad_one_breaks() {
    let (code, output) = check_sender(&[
        "samples/referral-v2.json",
        "conformance/v1/fixtures/referrals/v1-france-travail.json",
    ]);
    assert_eq!(code, 0, "{output}");
    assert!(output.contains("conforms: 2 passed"), "{output}");

    let dir = tempfile::tempdir().expect("temporary folder");
    let sample: serde_json::Value = serde_json::from_slice(
        &std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/referral-v2.json"))
            .expect("sample"),
    )
    .expect("JSON");
    let write = |name: &str, change: &dyn Fn(&mut serde_json::Value)| {
        let mut document = sample.clone();
        change(&mut document);
        let path = dir.path().join(name);
        std::fs::write(&path, serde_json::to_vec(&document).expect("JSON")).expect("write");
        path.display().to_string()
    };
    let unknown = write("unknown-field.json", &|document| {
        document["person"]["shoe_size"] = serde_json::json!(42);
    });
    let siret = write("bad-siret.json", &|document| {
        document["sender"]["organisation"]["siret"] = serde_json::json!("81234567800014");
    });
    let no_consent = write("no-consent.json", &|document| {
        document
            .as_object_mut()
            .expect("object")
            .remove("consent_reference");
    });
    let no_version = write("no-version.json", &|document| {
        document
            .as_object_mut()
            .expect("object")
            .remove("schema_version");
    });
    let (code, output) = check_sender(&[&unknown, &siret, &no_consent, &no_version]);
    assert_eq!(code, 1, "{output}");
    for (file, requirement) in [
        ("unknown-field.json", "SENDER-04"),
        ("bad-siret.json", "SENDER-05"),
        ("no-consent.json", "SENDER-02"),
        ("no-version.json", "SENDER-03"),
    ] {
        let block = output
            .split("\nFAIL")
            .find(|block| block.contains(file))
            .unwrap_or_else(|| panic!("{file} not reported as failing:\n{output}"));
        assert!(
            block.contains(&format!("breaks {requirement}")),
            "{file}:\n{block}"
        );
    }
    assert!(
        output.contains("DOES NOT CONFORM: 0 passed, 4 failed"),
        "{output}"
    );

    // A CSV export: every row checked on its own, named by its line. The
    // sample export's columns hold no consent reference, so no row may leave.
    let (code, output) = check_sender(&[
        "--mapping",
        "config/mappings/carnet-de-bord.toml",
        "--recipient",
        "13000548100002",
        "samples/association-export-cdb.csv",
    ]);
    assert_eq!(code, 1, "{output}");
    for line in 2..=5 {
        let block = output
            .split("\nFAIL")
            .find(|block| block.contains(&format!("association-export-cdb.csv:{line}\n")))
            .unwrap_or_else(|| panic!("row {line} not reported:\n{output}"));
        assert!(block.contains("breaks SENDER-02"), "{block}");
    }
}
