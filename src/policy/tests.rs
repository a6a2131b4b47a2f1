use std::collections::BTreeSet;

use super::*;
use crate::decision::{Grant, LegalBasis, RefusalReason, SpecialCategoryBasis};

const MINIMAL: &str = r#"
id = "minimal"
version = "1"
message = "referral"
recipient = { kind = "france_travail" }
purpose = "dpv:ServiceProvision"
allow = [
  "referral_id", "schema_version", "created_at",
  "sender.organisation", "recipient.organisation",
  "person.first_name", "person.last_name",
]
"#;

fn with(extra: &str) -> String {
    format!("{MINIMAL}{extra}")
}

fn error_of(text: &str) -> String {
    Policy::parse(text, "config/policies/test.toml")
        .expect_err("the policy is refused")
        .to_string()
}

fn grant(categories: &[DataCategory], special: bool) -> Grant {
    Grant {
        record_id: "rec-1".to_owned(),
        basis: LegalBasis::Consent,
        special_category_basis: special.then_some(SpecialCategoryBasis::ExplicitConsent),
        categories: categories.iter().copied().collect(),
    }
}

#[test]
fn a_minimal_policy_loads_and_requires_the_schema_fields() {
    let policy = Policy::parse(MINIMAL, "test.toml").expect("valid policy");
    assert_eq!(policy.id(), "minimal");
    assert_eq!(policy.message(), MessageKind::Referral);
    assert_eq!(
        policy.recipient(),
        &RecipientSelector::Kind(OrganisationKind::FranceTravail)
    );
    assert_eq!(
        policy.required_categories(),
        BTreeSet::from([DataCategory::Referral, DataCategory::Identity])
    );
    assert_eq!(
        policy.required().collect::<Vec<_>>(),
        [
            "referral_id",
            "schema_version",
            "created_at",
            "sender.organisation.siret",
            "sender.organisation.kind",
            "recipient.organisation.siret",
            "recipient.organisation.kind",
            "person.first_name",
            "person.last_name"
        ]
    );
}

#[test]
fn schema_required_fields_must_be_allowed() {
    let text = MINIMAL.replace("\"person.last_name\",", "");
    let error = error_of(&text);
    assert!(
        error.contains(
            "config/policies/test.toml: person.last_name: required by the referral/v2 schema"
        ),
        "{error}"
    );
}

#[test]
fn load_errors_name_the_file_and_the_path() {
    let cases = [
        (
            with("deny = [\"shoe_size\"]"),
            "deny",
            "not a data category",
        ),
        (
            with("required = [\"person.shoe_size\"]"),
            "person.shoe_size",
            "unknown field path",
        ),
        (
            with("required = [\"identifiers.caf.value\"]"),
            "identifiers.caf.value",
            "part of identifiers.caf",
        ),
        (
            MINIMAL.replace("\"person.first_name\",", "\"person\",")
                + "pseudonymise = [{ path = \"person.birth_name\", key = \"env:K\" }]",
            "person.birth_name",
            "both allowed (through allow entry person)",
        ),
        (
            with("pseudonymise = [{ path = \"identifiers.nir\", key = \"env:K\" }]"),
            "identifiers.nir",
            "free-form string",
        ),
        (
            with("pseudonymise = [{ path = \"identifiers.caf\", key = \"vault:K\" }]"),
            "identifiers.caf",
            "not a key reference",
        ),
        (
            MINIMAL.replace(
                "\"person.first_name\",",
                "\"person.first_name\", \"obstacles.health\",",
            ),
            "obstacles.health",
            "needs a [[special]] rule for obstacles.health",
        ),
        (
            with("required = [\"identifiers.france_travail\"]"),
            "identifiers.france_travail",
            "forwards none of it",
        ),
        (
            with("free_text = [\"reason\"]"),
            "reason",
            "in free_text but not in allow",
        ),
        (
            with("[[special]]\npath = \"situation.rsa_beneficiary\"\nrule = \"derive\""),
            "situation.rsa_beneficiary",
            "special rules name a special-category field",
        ),
        (
            MINIMAL.replace(
                "\"person.first_name\",",
                "\"person.first_name\", \"obstacles.housing.impact\",",
            ),
            "obstacles.housing.impact",
            "without its obstacle",
        ),
    ];
    for (text, path, detail) in cases {
        let error = error_of(&text);
        assert!(
            error.starts_with("config/policies/test.toml: ")
                && error.contains(path)
                && error.contains(detail),
            "{error}"
        );
    }
}

#[test]
fn unknown_keys_and_bad_values_are_refused_with_their_key() {
    let error = error_of(&with("colour = \"blue\""));
    assert!(
        error.contains("test.toml") && error.contains("colour"),
        "{error}"
    );
    let error = error_of(&MINIMAL.replace("france_travail", "prefecture"));
    assert!(
        error.contains("recipient.kind") && error.contains("prefecture"),
        "{error}"
    );
    let error = error_of(&MINIMAL.replace("dpv:ServiceProvision", "service provision"));
    assert!(error.contains(": purpose: "), "{error}");
    let error = error_of(&MINIMAL.replace("\"referral\"", "\"letter\""));
    assert!(error.contains(": message: "), "{error}");
}

#[test]
fn a_status_policy_refuses_referrals_and_replace_rules() {
    let status = r#"
id = "status"
version = "1"
message = "status"
recipient = { kind = "association" }
purpose = "dpv:CommunicationManagement"
allow = ["event_id", "schema_version", "referral_id", "status", "occurred_at", "author_siret",
         "rejection_reason", "outcome"]
"#;
    let policy = Policy::parse(status, "status.toml").expect("valid policy");
    assert_eq!(
        policy.required_categories(),
        BTreeSet::from([DataCategory::Referral, DataCategory::Status])
    );
    let error = error_of(&status.replace("\"outcome\"", "\"appointment_at\""));
    assert!(
        error.contains("outcome: required by the status/v1 schema for completed events"),
        "{error}"
    );
    let error = error_of(&format!(
        "{status}[[replace]]\nsender_name_words = [\"SPIP\"]\nkind = \"other\""
    ));
    assert!(error.contains("replace"), "{error}");
    let error = error_of(&status.replace("\"outcome\"", "\"outcome\", \"created_at\""));
    assert!(
        error.contains("created_at: in allow: unknown field path of status/v1"),
        "{error}"
    );
}

#[test]
fn applies_to_matches_recipient_and_purpose() {
    let policy = Policy::parse(MINIMAL, "test.toml").expect("valid policy");
    let france_travail = Organisation {
        siret: Siret::parse("13000548100002").expect("valid"),
        kind: OrganisationKind::FranceTravail,
        name: None,
    };
    assert!(policy.applies_to(&france_travail, "dpv:ServiceProvision"));
    assert!(!policy.applies_to(&france_travail, "dpv:CommunicationManagement"));
    let mission_locale = Organisation {
        kind: OrganisationKind::MissionLocale,
        ..france_travail
    };
    assert!(!policy.applies_to(&mission_locale, "dpv:ServiceProvision"));
}

#[test]
fn every_category_fits_the_grant_mask() {
    assert!(DataCategory::ALL.len() <= 32);
    let all = grant(DataCategory::ALL, true);
    assert!(DataCategory::ALL.iter().all(|c| all.allows(*c)));
}

#[test]
fn a_key_shorter_than_32_bytes_is_refused_without_showing_it() {
    let folder = tempfile::tempdir().expect("temp dir");
    std::fs::write(folder.path().join("short.key"), "Zorglub-secret\n").expect("write key");
    let file = folder.path().join("p.toml");
    let text = with("pseudonymise = [{ path = \"identifiers.caf\", key = \"file:short.key\" }]");
    let policy = Policy::parse(&text, &file.display().to_string()).expect("valid policy");
    let error = KeyRing::load([&policy]).expect_err("too short").to_string();
    assert!(
        error.contains("file:short.key") && error.contains("14 bytes") && error.contains("p.toml"),
        "{error}"
    );
    assert!(!error.contains("Zorglub"), "{error}");
}

#[test]
fn a_policy_for_referrals_refuses_status_events() {
    let policy = Policy::parse(MINIMAL, "test.toml").expect("valid policy");
    let event: crate::model::status::StatusEvent = serde_json::from_value(serde_json::json!({
        "event_id": "0b6f1c2e-7d4a-4e59-9c1b-3a2d5e8f9a11",
        "schema_version": "passerelle.status.v1",
        "referral_id": "0b6f1c2e-7d4a-4e59-9c1b-3a2d5e8f9a10",
        "status": "STATUS_ACCEPTED",
        "occurred_at": "2026-12-02T10:00:00Z",
        "author_siret": "13000548100002"
    }))
    .expect("valid event");
    let refusal = policy
        .minimise_status(&event, &grant(DataCategory::ALL, false), &KeyRing::new())
        .expect_err("wrong message");
    assert_eq!(refusal.reason, RefusalReason::PolicyNotApplicable);
}
