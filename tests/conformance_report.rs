//! The conformance reports as their readers get them: the HTML page rendered
//! by a real browser (headless Chromium), the JUnit XML a CI server reads,
//! the JSON a tool reads back. The run is built by hand, with recognisable
//! fake personal data passed through the masking the runner applies, so that
//! the test can say that none of it reaches any report.
//!
//! Chromium is required: install it (`apt-get install chromium`) or point
//! the `CHROMIUM` environment variable at it. The test fails, never skips,
//! when it cannot be found. A screenshot of the page is left in
//! `target/tmp/conformance_report/report.png` for a person to look at.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use passerelle::conformance::mask::{mask_body, mask_headers};
use passerelle::conformance::report::{html, json, junit, write_reports};
use passerelle::conformance::{CaseResult, Exchange, Level, Outcome, Requirement, RunReport};

/// Fake personal values of the run: none may appear in any report.
const PERSONAL: &[&str] = &[
    "Camille",
    "Exemple",
    "camille.exemple@example.org",
    "0612345678",
    "06 12 34 56 78",
    "284057512345678",
    "1984-05-07",
    "07/05/1984",
    "Souhaite reprendre une formation de soudeuse",
    "soudeuse",
    "Saint-Denis",
    "dev-key-association-exemple",
    "c2lnbmF0dXJlIGZhdXNzZQ",
];

const REFERRAL_ID: &str = "0b6f1c2e-7d4a-4e59-9c1b-3a2d5e8f9a10";
const INJECTION: &str = "</pre><script>document.title='injected'</script>";

fn referral_body() -> Vec<u8> {
    serde_json::json!({
        "referral_id": REFERRAL_ID,
        "schema_version": "passerelle.referral.v2",
        "created_at": "2026-12-01T09:15:00Z",
        "sender": {"organisation": {"siret": "81234567800013", "kind": "ORGANISATION_KIND_ASSOCIATION"}},
        "recipient": {"organisation": {"siret": "13000548100002", "kind": "ORGANISATION_KIND_FRANCE_TRAVAIL"}},
        "person": {
            "first_name": "Camille",
            "last_name": "Exemple",
            "birth_date": "1984-05-07",
            "contact": {"phone": "0612345678", "email": "camille.exemple@example.org"},
            "address": {"postal_code": "93200", "city": "Saint-Denis"}
        },
        "identifiers": [{"kind": "IDENTIFIER_KIND_NIR", "value": "284057512345678"}],
        "situation": {"recognised_disability": true, "other": "Souhaite reprendre une formation de soudeuse"},
        "reason": "Souhaite reprendre une formation de soudeuse",
        "consent_reference": "7f3c9a2b-1d4e-4f60-8a9b-0c1d2e3f4a5b"
    })
    .to_string()
    .into_bytes()
}

fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    mask_headers(
        &pairs
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect::<Vec<_>>(),
    )
}

fn submit(label: &str, response_type: &str, response: &str, status: u16) -> Exchange {
    let request_body = mask_body(
        Some("application/vnd.passerelle.referral.v2+json"),
        &referral_body(),
    );
    Exchange {
        label: label.to_owned(),
        method: "POST".to_owned(),
        url: "http://127.0.0.1:8080/v1/referrals".to_owned(),
        request_headers: headers(&[
            ("authorization", "Bearer dev-key-association-exemple"),
            (
                "content-type",
                "application/vnd.passerelle.referral.v2+json",
            ),
        ]),
        curl: Some(format!(
            "curl -sS -X POST 'http://127.0.0.1:8080/v1/referrals' -H 'authorization: Bearer \
             $PASSERELLE_API_KEY' --data-binary '{request_body}'"
        )),
        request_body,
        status: Some(status),
        response_headers: headers(&[("content-type", response_type)]),
        response_body: mask_body(Some(response_type), response.as_bytes()),
    }
}

fn requirement(id: &str, text: &str, source: &str, level: Level) -> Requirement {
    Requirement {
        id: id.to_owned(),
        text: text.to_owned(),
        source: source.to_owned(),
        level,
    }
}

fn case(
    id: &str,
    title: &str,
    level: Level,
    topic: &str,
    requirements: &[&str],
    outcome: Outcome,
    exchanges: Vec<Exchange>,
) -> CaseResult {
    CaseResult {
        id: id.to_owned(),
        title: title.to_owned(),
        level,
        topic: topic.to_owned(),
        requirements: requirements.iter().map(|id| (*id).to_owned()).collect(),
        outcome,
        duration_ms: 1_340,
        exchanges,
    }
}

/// A run of six cases: two passed, two failed (one with markup in its
/// message), one in error, one skipped.
fn report() -> RunReport {
    let accepted = serde_json::json!({
        "referral_id": REFERRAL_ID,
        "state": "queued",
        "decision": {
            "policy_id": "france-travail-orientation",
            "policy_version": "2026-11-1",
            "removed": ["person.birth_name", "identifiers.nir"],
            "pseudonymised": [],
            "derived": [],
            "consent_record_id": "7f3c9a2b-1d4e-4f60-8a9b-0c1d2e3f4a5b",
            "legal_basis": "consent"
        }
    })
    .to_string();
    let refused = serde_json::json!({
        "type": "https://passerelle.eu/problems/refused",
        "title": "Consent or policy refuses the referral",
        "status": 422,
        "detail": "the consent record does not cover this recipient",
        "reason": "consent-out-of-scope-recipient"
    })
    .to_string();
    let delivered = Exchange {
        label: "delivered to france-travail-saint-denis (referral)".to_owned(),
        method: "POST".to_owned(),
        url: "http://127.0.0.1:9090/receiver/france-travail-saint-denis".to_owned(),
        request_headers: headers(&[
            (
                "content-type",
                "application/vnd.passerelle.referral.v2+json",
            ),
            ("webhook-id", "msg_0b6f1c2e"),
            ("webhook-signature", "v1,c2lnbmF0dXJlIGZhdXNzZQ"),
            ("passerelle-referral-id", REFERRAL_ID),
        ]),
        request_body: mask_body(
            Some("application/vnd.passerelle.referral.v2+json"),
            &referral_body(),
        ),
        status: Some(200),
        response_headers: Vec::new(),
        response_body: String::new(),
        curl: None,
    };
    let csv = "Prénom;Nom;Date de naissance;NIR;Téléphone;Motif\n\
               Camille;Exemple;07/05/1984;284057512345678;06 12 34 56 78;Souhaite reprendre une formation de soudeuse\n";
    let batch = Exchange {
        label: "when".to_owned(),
        method: "POST".to_owned(),
        url: "http://127.0.0.1:8080/v1/referrals?format=csv&mapping=carnet-de-bord&recipient=13000548100002"
            .to_owned(),
        request_headers: headers(&[("content-type", "text/csv")]),
        request_body: mask_body(Some("text/csv"), csv.as_bytes()),
        status: Some(200),
        response_headers: headers(&[("content-type", "application/json")]),
        response_body: mask_body(
            Some("application/json"),
            br#"{"accepted": 1, "refused": 0, "rows": [{"line": 2, "status": 202, "state": "queued"}]}"#,
        ),
        curl: None,
    };
    RunReport {
        mode: "gateway".to_owned(),
        suite: "passerelle-conformance v1 1.0.0".to_owned(),
        target: "http://127.0.0.1:8080".to_owned(),
        started_at: "2026-12-01T09:15:00Z".to_owned(),
        duration_ms: 8_420,
        requirements: vec![
            requirement(
                "CONSENT-01",
                "A referral whose consent record does not cover its recipient is refused.",
                "GDPR Art. 6(1)(a) and 7",
                Level::Must,
            ),
            requirement(
                "MIN-01",
                "No field outside the recipient's policy reaches the recipient.",
                "GDPR Art. 5(1)(c)",
                Level::Must,
            ),
            requirement(
                "FORMAT-03",
                "A CSV batch answers one result per row.",
                "docs/api.md, CSV batches",
                Level::Should,
            ),
            requirement(
                "DELIVERY-02",
                "A delivery refused with 503 is retried.",
                "docs/delivery.md",
                Level::Should,
            ),
        ],
        cases: vec![
            case(
                "consent-out-of-scope-recipient",
                "A consent that names another recipient is refused",
                Level::Must,
                "consent",
                &["CONSENT-01"],
                Outcome::Passed,
                vec![submit("when", "application/problem+json", &refused, 422)],
            ),
            case(
                "minimisation-nir-never-reaches-france-travail",
                "The NIR never reaches France Travail",
                Level::Must,
                "minimisation",
                &["MIN-01"],
                Outcome::Failed {
                    failures: vec![
                        "delivered to france-travail-saint-denis carries /identifiers/0, which must not be there"
                            .to_owned(),
                    ],
                },
                vec![
                    submit("when", "application/json", &accepted, 202),
                    delivered,
                ],
            ),
            case(
                "consent-problem-type",
                "A refusal names its problem type",
                Level::Must,
                "consent",
                &["CONSENT-01"],
                Outcome::Failed {
                    failures: vec![
                        format!("the answer's problem type is {INJECTION}, expected refused"),
                        "status is 400, expected 422".to_owned(),
                    ],
                },
                vec![submit(
                    "when",
                    "text/html",
                    &format!("<html><body>Camille Exemple {INJECTION}</body></html>"),
                    400,
                )],
            ),
            case(
                "formats-csv-batch-rows",
                "A CSV batch answers per row",
                Level::Should,
                "formats",
                &["FORMAT-03"],
                Outcome::Passed,
                vec![batch],
            ),
            case(
                "minimisation-policy-applies-to-v1",
                "A v1 referral is minimised like a v2 one",
                Level::Must,
                "minimisation",
                &["MIN-01"],
                Outcome::Error {
                    message: "given[0] POST /v1/consents: no answer from the target: connection refused"
                        .to_owned(),
                },
                Vec::new(),
            ),
            case(
                "delivery-retries-after-503",
                "A delivery answered 503 is retried",
                Level::Should,
                "delivery",
                &["DELIVERY-02"],
                Outcome::Skipped {
                    reason: "the target pulls its messages; push delivery is not configured".to_owned(),
                },
                Vec::new(),
            ),
        ],
    }
}

fn assert_no_personal_value(what: &str, text: &str) {
    for value in PERSONAL {
        assert!(
            !text.contains(value),
            "the {what} shows the personal value {value:?}"
        );
    }
}

/// Chromium: `CHROMIUM`, or `chromium` on the PATH. Fails the test, with the
/// way to fix it, when there is none.
fn chromium() -> PathBuf {
    if let Some(path) = std::env::var_os("CHROMIUM") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "CHROMIUM is set to {}, which is not a file",
            path.display()
        );
        return path;
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|folder| folder.join("chromium"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "Chromium is needed to render the HTML report and was not found: install it \
                 (`apt-get install chromium` on Debian) or set CHROMIUM to its path. This test \
                 does not skip."
            )
        })
}

/// Runs headless Chromium on a page with extra arguments; fails the test if it
/// does not finish within two minutes or exits with an error.
fn run_chromium(profile: &Path, extra: &[String], page: &Path) -> Output {
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(format!("file://{}", page.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start chromium");
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().expect("wait for chromium").is_none() {
        if Instant::now() > deadline {
            child.kill().expect("stop chromium");
            panic!("chromium did not finish within two minutes");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let output = child.wait_with_output().expect("chromium's output");
    assert!(
        output.status.success(),
        "chromium failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

#[test]
fn the_html_report_renders_with_its_verdict_tables_and_failures_and_no_personal_data() {
    let report = report();
    let dir = tempfile::tempdir().expect("temporary folder");
    let page = dir.path().join("report.html");
    write_reports(&report, &format!("html={}", page.display())).expect("write the HTML report");
    let source = std::fs::read_to_string(&page).expect("read the HTML report");
    assert_no_personal_value("HTML report", &source);

    let dom = run_chromium(
        &dir.path().join("profile"),
        &["--dump-dom".to_owned()],
        &page,
    );
    let dom = String::from_utf8(dom.stdout).expect("the DOM is UTF-8");
    assert!(dom.contains("<html lang=\"en\">"), "{dom}");

    // The summary: verdict and counts (failures include the error).
    assert!(
        dom.contains("DOES NOT CONFORM: 3 cases failed."),
        "no verdict in:\n{dom}"
    );
    for (count, value) in [("passed", 2), ("failed", 3), ("skipped", 1), ("total", 6)] {
        let cell = format!("<td id=\"count-{count}\">{value}</td>");
        assert!(dom.contains(&cell), "no {cell} in the summary");
    }
    for text in [
        "gateway",
        "passerelle-conformance v1 1.0.0",
        "http://127.0.0.1:8080",
        "2026-12-01T09:15:00Z",
    ] {
        assert!(dom.contains(text), "the summary lacks {text}");
    }

    // A table per requirement, with its text, source and cases.
    assert_eq!(
        dom.matches("<table class=\"requirement\"").count(),
        report.requirements.len(),
        "one table per requirement"
    );
    for requirement in &report.requirements {
        for text in [&requirement.id, &requirement.text, &requirement.source] {
            assert!(dom.contains(text.as_str()), "no {text} in the requirements");
        }
    }
    assert!(dom.contains("NOT MET"));
    assert!(dom.contains("NOT CHECKED"));

    // Every failure's messages, the error, the skip reason; markup escaped.
    for case in &report.cases {
        assert!(dom.contains(&case.id), "{} is not shown", case.id);
        let messages: Vec<&str> = match &case.outcome {
            Outcome::Failed { failures } => failures.iter().map(String::as_str).collect(),
            Outcome::Error { message } => vec![message.as_str()],
            Outcome::Skipped { reason } => vec![reason.as_str()],
            Outcome::Passed => Vec::new(),
        };
        for message in messages {
            let shown = message
                .replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;");
            assert!(dom.contains(&shown), "{}: {message} is not shown", case.id);
        }
    }
    assert!(!dom.contains("<script"), "markup from a message ran");
    assert!(!dom.contains("injected</title>"));
    // Failures are listed before the passed cases.
    let failure = dom
        .find("minimisation-nir-never-reaches-france-travail</code>:")
        .expect("the failure's heading");
    let pass = dom
        .find("consent-out-of-scope-recipient</code>:")
        .expect("the pass's heading");
    assert!(failure < pass, "failures come first");

    // Exchanges: structural values shown, credentials and personal data not.
    for text in [
        REFERRAL_ID,
        "france-travail-orientation",
        "person.birth_name",
        "IDENTIFIER_KIND_NIR",
        "https://passerelle.eu/problems/refused",
        "consent-out-of-scope-recipient",
        "Prénom;Nom;Date de naissance;NIR;Téléphone;Motif",
        "$PASSERELLE_API_KEY",
        "msg_0b6f1c2e",
    ] {
        assert!(dom.contains(text), "the exchanges lack {text}");
    }
    assert_no_personal_value("rendered HTML report", &dom);

    // A screenshot for a person to look at.
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("conformance_report");
    std::fs::create_dir_all(&shots).expect("screenshot folder");
    let png = shots.join("report.png");
    let _ = std::fs::remove_file(&png);
    std::fs::copy(&page, shots.join("report.html")).expect("keep the page beside its screenshot");
    run_chromium(
        &dir.path().join("profile"),
        &[
            format!("--screenshot={}", png.display()),
            "--window-size=1280,2400".to_owned(),
        ],
        &page,
    );
    let image = std::fs::read(&png).expect("chromium wrote the screenshot");
    assert!(
        image.starts_with(b"\x89PNG"),
        "{} is not a PNG",
        png.display()
    );
    println!("screenshot: {}", png.display());
}

#[test]
fn the_junit_report_has_a_testcase_per_case_and_counts_failures_errors_and_skips() {
    let report = report();
    let dir = tempfile::tempdir().expect("temporary folder");
    let path = dir.path().join("report.xml");
    write_reports(&report, &format!("junit={}", path.display())).expect("write the JUnit report");
    let xml = std::fs::read_to_string(&path).expect("read the JUnit report");
    assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>"));
    assert_no_personal_value("JUnit report", &xml);
    assert_eq!(xml.matches("<testcase ").count(), report.cases.len());
    assert_eq!(xml.matches("<testsuite ").count(), 4, "{xml}");
    assert_eq!(xml.matches("</testsuite>").count(), 4, "{xml}");
    let root = xml
        .lines()
        .find(|line| line.trim_start().starts_with("<testsuites "))
        .expect("a <testsuites> element");
    for attribute in [
        "tests=\"6\"",
        "failures=\"2\"",
        "errors=\"1\"",
        "skipped=\"1\"",
    ] {
        assert!(root.contains(attribute), "{root} lacks {attribute}");
    }
    let suite = |name: &str| {
        xml.lines()
            .find(|line| line.contains(&format!("<testsuite name=\"{name}\"")))
            .unwrap_or_else(|| panic!("no test suite {name} in\n{xml}"))
            .to_owned()
    };
    let minimisation = suite("must.minimisation");
    assert!(minimisation.contains("failures=\"1\""), "{minimisation}");
    assert!(minimisation.contains("errors=\"1\""), "{minimisation}");
    let consent = suite("must.consent");
    assert!(consent.contains("tests=\"2\""), "{consent}");
    assert!(consent.contains("failures=\"1\""), "{consent}");
    assert!(suite("should.delivery").contains("skipped=\"1\""));
    assert!(xml.contains(
        "<testcase name=\"minimisation-nir-never-reaches-france-travail\" classname=\"must.minimisation\""
    ));
    assert!(xml.contains("which must not be there"));
    assert!(xml.contains("push delivery is not configured"));
    assert!(xml.contains("connection refused"));
    // Markup in a message is escaped by the XML writer.
    assert!(!xml.contains(INJECTION));
    assert!(xml.contains("&lt;/pre&gt;&lt;script&gt;"));
}

#[test]
fn the_json_report_reads_back_and_every_report_is_written_at_once() {
    let report = report();
    let dir = tempfile::tempdir().expect("temporary folder");
    let file = |name: &str| dir.path().join(name);
    write_reports(
        &report,
        &format!(
            "json={},junit={},html={}",
            file("r.json").display(),
            file("r.xml").display(),
            file("r.html").display()
        ),
    )
    .expect("write the three reports");
    let text = std::fs::read_to_string(file("r.json")).expect("read the JSON report");
    assert_no_personal_value("JSON report", &text);
    let back: RunReport = serde_json::from_str(&text).expect("the JSON report parses");
    assert_eq!(back, report);
    assert_eq!(text, json(&report));
    assert_eq!(
        std::fs::read_to_string(file("r.xml")).expect("JUnit"),
        junit(&report).expect("JUnit")
    );
    assert_eq!(
        std::fs::read_to_string(file("r.html")).expect("HTML"),
        html(&report)
    );

    let error = write_reports(&report, &format!("csv={}", file("r.csv").display()))
        .expect_err("csv is no report kind");
    assert!(error.contains("unknown report kind `csv`"), "{error}");
    let error = write_reports(&report, "html=").expect_err("no file name");
    assert!(
        error.contains("the html report has no file name"),
        "{error}"
    );
}
