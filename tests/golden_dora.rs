//! Golden tests of the DORA adapter: DORA orientation JSON → canonical v2
//! referral and loss report, and the refusals, each pinned in tests/golden/dora.

mod common;

use common::{ASSOCIATION_SIRET, assert_golden_json, fixed_context, golden_bytes};
use passerelle::Error;
use passerelle::formats::dora::{Dora, commitment_reference};
use passerelle::formats::{Context, Format};
use passerelle::model::common::OrganisationKind;
use passerelle::model::v2::Referral;
use passerelle::model::{LossReport, Message, Translated};
use passerelle::validate::SchemaName;
use passerelle::validate::schemas::schema;
use serde_json::Value;

/// Fake personal values of the fixtures; none may appear in an error.
const PERSONAL_VALUES: &[&str] = &[
    "Aïcha",
    "Ben Saïd",
    "01234567891",
    "0123456789",
    "0612345678",
    "aicha.bensaid",
    "Claire",
    "Martin",
    "claire.martin",
    "0102030405",
    "81234567800012",
    "8123456780001",
    "immersion",
    "Zébulon",
    "ZEBULON",
    "zebulon.fakeperson",
    "07/12/2026",
    "PIGEON_VOYAGEUR",
    "Demandeur",
    "1990-04-12",
    "2900475123456",
    "cv-aicha",
    "Konexio",
];

fn decode_with(path: &str, context: &Context) -> Result<Translated<Message>, Error> {
    let bytes = golden_bytes(path);
    let mut records = Dora
        .decode(Box::new(bytes.as_slice()), context)
        .expect("the input is readable");
    let record = records.next().expect("one record");
    assert!(records.next().is_none(), "one orientation, one record");
    record.result
}

fn decode(path: &str) -> Result<Translated<Message>, Error> {
    decode_with(path, &fixed_context())
}

/// Decodes a fixture that must succeed; checks the referral against the
/// published schema and that the loss report only names DORA members.
fn referral(path: &str) -> (Referral, LossReport) {
    let translated = decode(path).unwrap_or_else(|error| panic!("{path}: {error}"));
    let Message::Referral(referral) = translated.value else {
        panic!("{path}: a DORA orientation decodes to a referral");
    };
    let value = serde_json::to_value(&referral).expect("serialisable");
    schema(SchemaName::ReferralV2)
        .validate(&value)
        .unwrap_or_else(|error| panic!("{path}: the referral breaks referral/v2: {error}"));
    (*referral, translated.losses)
}

/// Decodes a fixture that must be refused, and checks no personal value leaks.
fn refusal(path: &str) -> Error {
    let Err(error) = decode(path) else {
        panic!("{path} must be refused")
    };
    assert_no_personal_value(&error);
    error
}

fn assert_no_personal_value(error: &Error) {
    let text = format!("{error} {error:?}");
    for value in PERSONAL_VALUES {
        assert!(
            !text.contains(value),
            "the error repeats an input value: {text}"
        );
    }
}

fn violations(error: &Error) -> Value {
    assert!(
        matches!(error, Error::Invalid(_)),
        "expected violations, got {error}"
    );
    serde_json::to_value(error.violations()).expect("serialisable")
}

#[test]
fn the_shared_sample_is_refused_for_its_siret_luhn_key() {
    let error = refusal("dora/sample-orientation.json");
    let found = error.violations();
    assert_eq!(found.len(), 1, "{error}");
    assert_eq!(found[0].pointer, "/prescriber_structure");
    assert_eq!(found[0].rule, "siret-checksum");
    assert_golden_json("dora/sample-orientation.errors.json", &violations(&error));
}

#[test]
fn a_valid_orientation_decodes_to_the_golden_referral_and_loss_report() {
    let (referral, losses) = referral("dora/valid-orientation.json");
    assert_golden_json(
        "dora/valid-orientation.expected.json",
        &serde_json::to_value(&referral).expect("serialisable"),
    );
    assert_golden_json(
        "dora/valid-orientation.losses.json",
        &serde_json::to_value(&losses).expect("serialisable"),
    );
    assert!(losses.covers("/requirements/0"));
    assert_eq!(
        referral.consent_reference.as_deref(),
        Some(commitment_reference(referral.referral_id).as_str())
    );
    // The context's sender has the prescriber's SIRET: its kind and name are used.
    assert_eq!(
        referral.sender.organisation.kind,
        OrganisationKind::Association
    );
    assert_eq!(referral.created_at, fixed_context().now);
}

#[test]
fn requirements_and_service_duration_are_reported_never_dropped() {
    let (referral, losses) = referral("dora/service-duration.json");
    assert_golden_json(
        "dora/service-duration.losses.json",
        &serde_json::to_value(&losses).expect("serialisable"),
    );
    for path in ["/requirements", "/duration_weekly_hours", "/duration_weeks"] {
        assert!(losses.covers(path), "{path} is not in the loss report");
    }
    let contact = referral.person.contact.expect("contact");
    assert_eq!(
        serde_json::to_value(&contact.preferences).expect("serialisable"),
        serde_json::json!(["CONTACT_PREFERENCE_EMAIL", "CONTACT_PREFERENCE_OTHER"]),
        "repeated preferences are kept once, in order"
    );
    assert!(contact.other_method.is_some());
    assert!(
        referral.recipient.service_id.is_none(),
        "an empty string is absent"
    );
}

#[test]
fn a_minimal_orientation_has_nothing_to_lose() {
    let (referral, losses) = referral("dora/minimal-orientation.json");
    assert!(losses.is_empty(), "{losses:?}");
    assert_golden_json(
        "dora/minimal-orientation.expected.json",
        &serde_json::to_value(&referral).expect("serialisable"),
    );
}

#[test]
fn every_unknown_member_is_listed() {
    let error = refusal("dora/unknown-members.json");
    let found = error.violations();
    assert!(found.iter().all(|v| v.rule == "unknown-field"), "{error}");
    let pointers: Vec<&str> = found.iter().map(|v| v.pointer.as_str()).collect();
    assert_eq!(
        pointers,
        [
            "/attachments",
            "/beneficiary_birth_date",
            "/beneficiary_nir",
            "/di~1structure"
        ]
    );
    assert_golden_json("dora/unknown-members.errors.json", &violations(&error));
}

#[test]
fn a_commitment_that_is_false_or_missing_is_refused() {
    for name in ["commitment-false", "commitment-missing"] {
        let error = refusal(&format!("dora/{name}.json"));
        let found = error.violations();
        assert_eq!(found.len(), 1, "{error}");
        assert_eq!(found[0].pointer, "/data_protection_commitment");
        assert_eq!(found[0].rule, "data-protection-commitment");
        assert_golden_json(&format!("dora/{name}.errors.json"), &violations(&error));
    }
}

#[test]
fn every_value_rule_is_reported_at_its_pointer_in_one_error() {
    let error = refusal("dora/bad-values.json");
    let found: Vec<(&str, &str)> = error
        .violations()
        .iter()
        .map(|v| (v.pointer.as_str(), v.rule.as_str()))
        .collect();
    assert_eq!(
        found,
        [
            ("/beneficiary_first_name", "maxLength"),
            ("/beneficiary_last_name", "required"),
            (
                "/beneficiary_france_travail_number",
                "france-travail-number-format"
            ),
            ("/beneficiary_phone", "phone-format"),
            ("/beneficiary_email", "email-format"),
            ("/beneficiary_availability", "date-format"),
            ("/beneficiary_contact_preferences/1", "enum"),
            ("/beneficiary_contact_preferences/2", "type"),
            ("/situation", "type"),
            ("/orientation_reasons", "maxLength"),
            ("/referent_email", "email-format"),
            ("/referent_phone", "phone-format"),
            ("/prescriber_structure", "siret-format"),
            ("/duration_weeks", "type"),
        ]
    );
    assert_golden_json("dora/bad-values.errors.json", &violations(&error));
}

#[test]
fn the_same_submission_gets_the_same_referral_id() {
    let (first, _) = referral("dora/valid-orientation.json");
    let (again, _) = referral("dora/valid-orientation.json");
    assert_eq!(first.referral_id, again.referral_id);

    // Reordered members, and empty members left out, are the same submission.
    let mut document: serde_json::Map<String, Value> =
        serde_json::from_slice(&golden_bytes("dora/valid-orientation.json")).expect("JSON");
    document.retain(|_, value| !matches!(value, Value::Null) && value.as_str() != Some(""));
    let reordered: serde_json::Map<String, Value> = document.into_iter().rev().collect();
    let bytes = serde_json::to_vec(&reordered).expect("serialisable");
    let context = fixed_context();
    let mut records = Dora
        .decode(Box::new(bytes.as_slice()), &context)
        .expect("readable");
    let Message::Referral(reread) = records
        .next()
        .expect("one record")
        .result
        .expect("valid")
        .value
    else {
        panic!("a referral");
    };
    assert_eq!(reread.referral_id, first.referral_id);

    // Another submission, or the same one to another recipient, is another referral.
    let (minimal, _) = referral("dora/minimal-orientation.json");
    assert_ne!(minimal.referral_id, first.referral_id);
    let mut context = fixed_context();
    let recipient = context.recipient.as_mut().expect("fixture recipient");
    recipient.siret =
        passerelle::model::ids::Siret::parse(common::MISSION_LOCALE_SIRET).expect("valid");
    recipient.kind = OrganisationKind::MissionLocale;
    let Message::Referral(elsewhere) = decode_with("dora/valid-orientation.json", &context)
        .expect("valid")
        .value
    else {
        panic!("a referral");
    };
    assert_ne!(elsewhere.referral_id, first.referral_id);
}

#[test]
fn a_prescriber_other_than_the_context_sender_is_of_kind_other() {
    let mut context = fixed_context();
    let sender = context.sender.as_mut().expect("fixture sender");
    sender.siret =
        passerelle::model::ids::Siret::parse(common::MISSION_LOCALE_SIRET).expect("valid");
    let Message::Referral(referral) = decode_with("dora/valid-orientation.json", &context)
        .expect("valid")
        .value
    else {
        panic!("a referral");
    };
    assert_eq!(referral.sender.organisation.kind, OrganisationKind::Other);
    assert_eq!(
        referral.sender.organisation.siret.as_str(),
        ASSOCIATION_SIRET
    );
    assert!(
        referral.sender.organisation.name.is_none(),
        "no name is borrowed from another organisation"
    );
}

#[test]
fn without_a_recipient_the_orientation_cannot_be_addressed() {
    let mut context = fixed_context();
    context.recipient = None;
    let Err(error) = decode_with("dora/valid-orientation.json", &context) else {
        panic!("no recipient, no referral")
    };
    assert!(matches!(error, Error::UnsupportedFormat(_)), "{error}");
    assert!(error.to_string().contains("recipient"), "{error}");
    assert_no_personal_value(&error);
}

#[test]
fn malformed_and_non_object_documents_are_refused_cleanly() {
    let context = fixed_context();
    for (input, expected) in [
        (&b"[\"Aicha\"]"[..], "type"),
        (
            &br#"{"beneficiary_first_name": "A", "beneficiary_first_name": "B"}"#[..],
            "duplicate-key",
        ),
    ] {
        let mut records = Dora.decode(Box::new(input), &context).expect("readable");
        let error = records
            .next()
            .expect("one record")
            .result
            .expect_err("refused");
        assert_eq!(error.violations()[0].rule, expected, "{error}");
    }
    let mut records = Dora
        .decode(Box::new(&b"{\"beneficiary_first_name\": "[..]), &context)
        .expect("readable");
    let error = records
        .next()
        .expect("one record")
        .result
        .expect_err("refused");
    assert!(matches!(error, Error::Malformed { .. }), "{error}");
}

#[test]
fn dora_cannot_be_written() {
    let (referral, _) = referral("dora/valid-orientation.json");
    let error = Dora
        .encode(&Message::Referral(Box::new(referral)), &fixed_context())
        .expect_err("decode only");
    assert!(matches!(error, Error::UnsupportedFormat(_)), "{error}");
    assert!(Dora.can_decode() && !Dora.can_encode());
    assert!(!Dora.limits().is_empty() && !Dora.description().is_empty());
}
