//! The forwarding decision end to end (consent, then policy), one row per
//! refusal reason with its exact code, and the `minimise` dry run of the CLI.

use std::path::Path;
use std::process::Command;

use chrono::{DateTime, TimeZone, Utc};
use passerelle::consent::{ConsentEvent, ConsentEventKind, ConsentRecord, Purpose};
use passerelle::decision::{Decision, RefusalReason, decide};
use passerelle::model::common::{Organisation, OrganisationKind};
use passerelle::model::ids::Siret;
use passerelle::model::v2;
use passerelle::policy::{KeyRing, Policy};
use passerelle::validate::{self, Limits, SchemaName};

const FAKE_NAME: &str = "Aïcha";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A shipped policy, its pseudonym key read from the committed test-only key.
fn policy(name: &str) -> Policy {
    let text =
        std::fs::read_to_string(root().join("config/policies").join(name)).expect("shipped policy");
    let text = text.replace(
        "env:PASSERELLE_PSEUDONYM_KEY",
        "file:test-only-pseudonym.key",
    );
    let file = root().join("tests/golden/policy").join(name);
    Policy::parse(&text, &file.display().to_string()).expect("valid policy")
}

fn referral() -> v2::Referral {
    let bytes = std::fs::read(root().join("samples/referral-v2.json")).expect("sample");
    validate::decode_document(&bytes, SchemaName::ReferralV2, &Limits::default())
        .expect("valid sample")
}

fn record() -> ConsentRecord {
    let bytes = std::fs::read(root().join("samples/consent-record.json")).expect("sample");
    ConsentRecord::parse(&bytes, &Limits::default()).expect("valid sample")
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 2, 10, 0, 0)
        .single()
        .expect("valid")
}

fn organisation(siret: &str, kind: OrganisationKind) -> Organisation {
    Organisation {
        siret: Siret::parse(siret).expect("valid SIRET"),
        kind,
        name: None,
    }
}

fn event(kind: ConsentEventKind) -> ConsentEvent {
    ConsentEvent {
        kind,
        at: Utc
            .with_ymd_and_hms(2026, 12, 1, 8, 0, 0)
            .single()
            .expect("valid"),
        recorded_by: Siret::parse("81234567800013").expect("valid"),
    }
}

/// What each row changes before deciding.
struct Case {
    name: &'static str,
    expected: Option<RefusalReason>,
    policy: &'static str,
    change: fn(
        &mut v2::Referral,
        &mut Option<ConsentRecord>,
        &mut Organisation,
        &mut Organisation,
        &mut DateTime<Utc>,
    ),
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "forwarded",
            expected: None,
            policy: "france-travail-orientation.toml",
            change: |_, _, _, _, _| {},
        },
        Case {
            name: "no record",
            expected: Some(RefusalReason::ConsentMissing),
            policy: "france-travail-orientation.toml",
            change: |_, consent, _, _, _| *consent = None,
        },
        Case {
            name: "record is not the one referenced",
            expected: Some(RefusalReason::ConsentMissing),
            policy: "france-travail-orientation.toml",
            change: |referral, _, _, _, _| {
                referral.consent_reference = Some("5f0c6a8e-3a59-4c1e-9a63-2f7c1d2b9e01".to_owned())
            },
        },
        Case {
            name: "withdrawn",
            expected: Some(RefusalReason::ConsentWithdrawn),
            policy: "france-travail-orientation.toml",
            change: |_, consent, _, _, _| {
                consent
                    .as_mut()
                    .expect("record")
                    .events
                    .push(event(ConsentEventKind::Withdrawn))
            },
        },
        Case {
            name: "objected",
            expected: Some(RefusalReason::ObjectionRecorded),
            policy: "france-travail-orientation.toml",
            change: |_, consent, _, _, _| {
                consent
                    .as_mut()
                    .expect("record")
                    .events
                    .push(event(ConsentEventKind::Objected))
            },
        },
        Case {
            name: "expired",
            expected: Some(RefusalReason::ConsentExpired),
            policy: "france-travail-orientation.toml",
            change: |_, _, _, _, now| {
                *now = Utc
                    .with_ymd_and_hms(2028, 1, 1, 0, 0, 0)
                    .single()
                    .expect("valid")
            },
        },
        Case {
            name: "another recipient",
            expected: Some(RefusalReason::OutOfScopeRecipient),
            policy: "mission-locale-orientation.toml",
            change: |referral, _, _, recipient, _| {
                *recipient = organisation("34312345600000", OrganisationKind::MissionLocale);
                referral.recipient.organisation = recipient.clone();
            },
        },
        Case {
            name: "category not covered",
            expected: Some(RefusalReason::OutOfScopeCategory),
            policy: "france-travail-orientation.toml",
            change: |_, consent, _, _, _| {
                consent
                    .as_mut()
                    .expect("record")
                    .data_categories
                    .retain(|c| c.as_str() != "identifier")
            },
        },
        Case {
            name: "special category required without Art. 9 basis",
            expected: Some(RefusalReason::SpecialCategoryWithoutBasis),
            policy: "cap-emploi-orientation.toml",
            change: |referral, consent, _, recipient, _| {
                *recipient = organisation("20001234500001", OrganisationKind::CapEmploi);
                referral.recipient.organisation = recipient.clone();
                let record = consent.as_mut().expect("record");
                record.recipients.clear();
                record.recipients.push(
                    serde_json::from_value(serde_json::json!({"kind": "cap_emploi"}))
                        .expect("scope"),
                );
                record
                    .data_categories
                    .push(passerelle::model::categories::DataCategory::Disability);
            },
        },
        Case {
            name: "required field missing from the input",
            expected: Some(RefusalReason::RequiredFieldRemoved),
            policy: "france-travail-orientation.toml",
            change: |referral, _, _, _, _| {
                referral
                    .identifiers
                    .retain(|i| i.kind != v2::IdentifierKind::FranceTravail)
            },
        },
        Case {
            name: "policy for another recipient kind",
            expected: Some(RefusalReason::PolicyNotApplicable),
            policy: "mission-locale-orientation.toml",
            change: |_, _, _, _, _| {},
        },
        Case {
            name: "sent by another organisation",
            expected: Some(RefusalReason::SenderMismatch),
            policy: "france-travail-orientation.toml",
            change: |_, _, sender, _, _| {
                *sender = organisation("34312345600000", OrganisationKind::Association)
            },
        },
        Case {
            name: "decided for another recipient",
            expected: Some(RefusalReason::RecipientMismatch),
            policy: "france-travail-orientation.toml",
            change: |_, _, _, recipient, _| {
                *recipient = organisation("34312345600000", OrganisationKind::FranceTravail)
            },
        },
    ]
}

#[test]
fn each_refusal_reason_has_its_code() {
    for case in cases() {
        let policy = policy(case.policy);
        let keys = KeyRing::load([&policy]).expect("test key");
        let mut referral = referral();
        let mut consent = Some(record());
        let mut sender = referral.sender.organisation.clone();
        let mut recipient = referral.recipient.organisation.clone();
        let mut now = now();
        (case.change)(
            &mut referral,
            &mut consent,
            &mut sender,
            &mut recipient,
            &mut now,
        );
        let purpose = Purpose::parse(policy.purpose()).expect("policy purpose");
        let decision = decide(
            &referral,
            &sender,
            &recipient,
            &purpose,
            consent.as_ref(),
            &policy,
            &keys,
            now,
        );
        let again = decide(
            &referral,
            &sender,
            &recipient,
            &purpose,
            consent.as_ref(),
            &policy,
            &keys,
            now,
        );
        assert_eq!(
            decision, again,
            "{}: the decision is deterministic",
            case.name
        );
        match (&decision, case.expected) {
            (Decision::Forward(forward), None) => {
                assert_eq!(forward.report.policy_id, "france-travail-orientation");
                assert!(
                    forward
                        .report
                        .removed
                        .iter()
                        .any(|path| path == "identifiers.caf"),
                    "{}",
                    case.name
                );
                let json = serde_json::to_value(&forward.referral).expect("serialisable");
                validate::schemas::schema(SchemaName::ReferralV2)
                    .validate(&json)
                    .expect("valid output");
            }
            (Decision::Refuse(refusal), Some(expected)) => {
                assert_eq!(
                    refusal.reason, expected,
                    "{}: {}",
                    case.name, refusal.explanation
                );
                let text = serde_json::to_string(&decision).expect("serialisable");
                assert!(text.contains(expected.code()), "{}", case.name);
                assert!(
                    !text.contains(FAKE_NAME) && !text.contains("0612345678"),
                    "{}: {text}",
                    case.name
                );
            }
            (other, expected) => panic!("{}: expected {expected:?}, got {other:?}", case.name),
        }
    }
}

#[test]
fn minimise_dry_run_prints_the_decision() {
    let run = |consent: &str| {
        Command::new(env!("CARGO_BIN_EXE_passerelle"))
            .args([
                "minimise",
                "--policy",
                "config/policies/france-travail-orientation.toml",
                "--consent",
                consent,
                "--now",
                "2026-12-02T10:00:00Z",
                "samples/referral-v2.json",
            ])
            .env(
                "PASSERELLE_PSEUDONYM_KEY",
                "a test-only pseudonym key of at least 32 bytes",
            )
            .current_dir(root())
            .output()
            .expect("the binary runs")
    };
    let output = run("samples/consent-record.json");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let decision: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("JSON decision");
    assert_eq!(decision["decision"], "forward");
    assert!(
        decision["referral"]["identifiers"]
            .to_string()
            .contains("IDENTIFIER_KIND_FRANCE_TRAVAIL")
    );
    assert!(
        decision["report"]["removed"]
            .as_array()
            .expect("list")
            .iter()
            .any(|p| p == "identifiers.caf")
    );

    let dir = tempfile::tempdir().expect("temp dir");
    let mut withdrawn: serde_json::Value = serde_json::from_slice(
        &std::fs::read(root().join("samples/consent-record.json")).expect("sample"),
    )
    .expect("JSON");
    withdrawn["events"].as_array_mut().expect("events").push(serde_json::json!({
        "kind": "CONSENT_EVENT_KIND_WITHDRAWN", "at": "2026-12-01T08:00:00Z", "recorded_by": "81234567800013"
    }));
    let path = dir.path().join("withdrawn.json");
    std::fs::write(&path, serde_json::to_vec(&withdrawn).expect("JSON")).expect("write");
    let output = run(path.to_str().expect("utf-8"));
    assert_eq!(output.status.code(), Some(1));
    let decision: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("JSON decision");
    assert_eq!(decision["decision"], "refuse");
    assert_eq!(decision["reason"], "consent-withdrawn");
    assert!(!String::from_utf8_lossy(&output.stdout).contains(FAKE_NAME));
}

#[test]
fn shipped_policies_check_clean() {
    let output = Command::new(env!("CARGO_BIN_EXE_passerelle"))
        .args(["policy", "check"])
        .env(
            "PASSERELLE_PSEUDONYM_KEY",
            "a test-only pseudonym key of at least 32 bytes",
        )
        .current_dir(root())
        .output()
        .expect("the binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    let shipped = std::fs::read_dir(root().join("config/policies"))
        .expect("policies folder")
        .filter(|entry| {
            entry
                .as_ref()
                .is_ok_and(|entry| entry.path().extension().is_some_and(|e| e == "toml"))
        })
        .count();
    assert_eq!(
        shipped, 8,
        "four orientation policies, four status policies"
    );
    assert_eq!(
        stdout.lines().filter(|l| l.contains(": ok (")).count(),
        shipped,
        "{stdout}"
    );

    let output = Command::new(env!("CARGO_BIN_EXE_passerelle"))
        .args(["policy", "check"])
        .env_remove("PASSERELLE_PSEUDONYM_KEY")
        .current_dir(root())
        .output()
        .expect("the binary runs");
    assert_eq!(
        output.status.code(),
        Some(1),
        "a policy whose key is missing fails the check"
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("PASSERELLE_PSEUDONYM_KEY"));
}
