//! Minimisation policies: the shipped policies load and say why each field is
//! there; load errors name the file and the path; the France Travail policy
//! gives the golden minimised referral; and, over generated referrals, grants
//! and policies, nothing outside the policy and the grant ever leaves.

mod common;

use common::generators::{date, email, instant, nir, phone, siret, text};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use hmac::{Hmac, KeyInit, Mac};
use passerelle::decision::{
    Grant, LegalBasis, MinimisationReport, Refusal, RefusalReason, SpecialCategoryBasis,
};
use passerelle::model::categories::{DataCategory, category_of};
use passerelle::model::common::{
    Axis, ContactPreference, Organisation, OrganisationKind, Pathway, Recipient, Referent, Sender,
};
use passerelle::model::ids::{InseeCode, PostalCode, ReferralId, Siret};
use passerelle::model::status::StatusEvent;
use passerelle::model::v2::{
    self, Address, Contact, EducationLevel, Identifier, IdentifierKind, Obstacle, ObstacleDomain,
    ObstacleImpact, Situation,
};
use passerelle::policy::{KeyRing, MessageKind, Policy, RecipientSelector};
use passerelle::validate::{self, SchemaName};
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{Value, json};
use sha2::Sha256;

const FIXTURE: &[u8] = include_bytes!("../benches/fixtures/referral-v2.json");
const KEY_A: &str = "test-only-pseudonym.key";
const KEY_B: &str = "test-only-pseudonym-b.key";

fn policies_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config/policies")
}

fn key_dir() -> PathBuf {
    common::golden_dir().join("policy")
}

/// A shipped policy, its pseudonymisation key read from a committed test-only
/// key file instead of the environment.
fn shipped(name: &str) -> Policy {
    let text = std::fs::read_to_string(policies_dir().join(format!("{name}.toml")))
        .expect("shipped policy");
    let text = text.replace("env:PASSERELLE_PSEUDONYM_KEY", &format!("file:{KEY_A}"));
    let file = key_dir().join(format!("{name}.toml"));
    Policy::parse(&text, &file.display().to_string()).expect("shipped policy is valid")
}

fn ring(policy: &Policy) -> KeyRing {
    KeyRing::load([policy]).expect("test keys load")
}

fn fixture() -> v2::Referral {
    validate::decode_document(FIXTURE, SchemaName::ReferralV2, &Default::default())
        .expect("fixture is a valid referral")
}

fn grant(categories: &[DataCategory], special: Option<SpecialCategoryBasis>) -> Grant {
    Grant {
        record_id: "9d2f7c1a-8e3b-4a6d-b5c4-1f0e2d3c4b5a".to_owned(),
        basis: LegalBasis::Consent,
        special_category_basis: special,
        categories: categories.iter().copied().collect(),
    }
}

fn full_grant() -> Grant {
    grant(
        DataCategory::ALL,
        Some(SpecialCategoryBasis::ExplicitConsent),
    )
}

fn without(categories: &[DataCategory]) -> Vec<DataCategory> {
    DataCategory::ALL
        .iter()
        .copied()
        .filter(|c| !categories.contains(c))
        .collect()
}

fn hmac_hex(key_file: &str, value: &str) -> String {
    let mut key = std::fs::read(key_dir().join(key_file)).expect("test key");
    if key.last() == Some(&b'\n') {
        key.pop();
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("any key length");
    mac.update(value.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

fn report_json(report: &MinimisationReport) -> Value {
    serde_json::to_value(report).expect("serialisable")
}

// ---------------------------------------------------------------------------
// Shipped policies

#[test]
fn every_shipped_policy_loads_and_comments_each_allowed_entry() {
    let mut ids = BTreeSet::new();
    for entry in std::fs::read_dir(policies_dir()).expect("policies folder") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let policy = Policy::load(&path).expect("shipped policy loads");
        assert_eq!(
            Some(policy.id()),
            path.file_stem().and_then(|s| s.to_str()),
            "the id is the file stem"
        );
        ids.insert(policy.id().to_owned());
        // Every entry of allow and required says why it is there, on its line.
        let text = std::fs::read_to_string(&path).expect("readable");
        let mut list = None;
        for line in text.lines() {
            if let Some(name) = line.strip_suffix(" = [") {
                list = Some(name.to_owned());
            } else if line.starts_with(']') {
                list = None;
            } else if matches!(list.as_deref(), Some("allow" | "required"))
                && line.trim_start().starts_with('"')
            {
                assert!(
                    line.contains('#'),
                    "{}: entry without a comment: {line}",
                    path.display()
                );
            }
        }
    }
    assert_eq!(
        ids,
        BTreeSet::from(
            [
                "association-status",
                "cap-emploi-status",
                "departement-status",
                "france-travail-status",
                "mission-locale-status",
                "cap-emploi-orientation",
                "france-travail-orientation",
                "mission-locale-orientation"
            ]
            .map(str::to_owned)
        )
    );
}

#[test]
fn shipped_policies_select_their_recipient_and_purpose() {
    let cases = [
        (
            "france-travail-orientation",
            OrganisationKind::FranceTravail,
            "dpv:ServiceProvision",
        ),
        (
            "mission-locale-orientation",
            OrganisationKind::MissionLocale,
            "dpv:ServiceProvision",
        ),
        (
            "cap-emploi-orientation",
            OrganisationKind::CapEmploi,
            "dpv:ServiceProvision",
        ),
        (
            "association-status",
            OrganisationKind::Association,
            "dpv:CommunicationManagement",
        ),
    ];
    for (name, kind, purpose) in cases {
        let policy = shipped(name);
        assert_eq!(policy.recipient(), &RecipientSelector::Kind(kind), "{name}");
        let organisation = Organisation {
            siret: Siret::parse(common::FRANCE_TRAVAIL_SIRET).expect("valid"),
            kind,
            name: None,
        };
        assert!(policy.applies_to(&organisation, purpose), "{name}");
        assert!(
            !policy.applies_to(&organisation, "dpv:ResearchAndDevelopment"),
            "{name}"
        );
    }
    assert_eq!(shipped("association-status").message(), MessageKind::Status);
    // What consent evaluation must check before minimisation.
    assert_eq!(
        shipped("france-travail-orientation").required_categories(),
        BTreeSet::from([
            DataCategory::Referral,
            DataCategory::Identity,
            DataCategory::Identifier
        ])
    );
    assert_eq!(
        shipped("cap-emploi-orientation").required_categories(),
        BTreeSet::from([
            DataCategory::Referral,
            DataCategory::Identity,
            DataCategory::Disability
        ])
    );
    assert_eq!(
        shipped("mission-locale-orientation").required_categories(),
        BTreeSet::from([
            DataCategory::Referral,
            DataCategory::Identity,
            DataCategory::BirthDate
        ])
    );
}

#[test]
fn no_shipped_policy_lets_the_nir_leave() {
    let mut referral = fixture();
    referral
        .identifiers
        .push(Identifier::new(IdentifierKind::Nir, &valid_nir()).expect("valid NIR"));
    for name in [
        "france-travail-orientation",
        "mission-locale-orientation",
        "cap-emploi-orientation",
    ] {
        let policy = shipped(name);
        let (out, report) = policy
            .minimise_referral(&referral, &full_grant(), &ring(&policy))
            .expect("forwarded");
        assert!(
            out.identifiers
                .iter()
                .all(|i| i.kind != IdentifierKind::Nir),
            "{name}"
        );
        assert!(
            report.removed.contains(&"identifiers.nir".to_owned()),
            "{name}"
        );
        let text = serde_json::to_string(&(&out, &report)).expect("json");
        assert!(!text.contains(&valid_nir()), "{name}");
    }
}

fn valid_nir() -> String {
    let body = "1980293123456";
    let key = 97 - body.parse::<u64>().expect("digits") % 97;
    format!("{body}{key:02}")
}

// ---------------------------------------------------------------------------
// Load-time errors name the file and the path (or key reference)

fn refused(text: &str) -> String {
    Policy::parse(text, "config/policies/broken.toml")
        .expect_err("refused")
        .to_string()
}

fn france_travail_text() -> String {
    std::fs::read_to_string(policies_dir().join("france-travail-orientation.toml"))
        .expect("shipped policy")
}

#[test]
fn load_errors_name_the_file_and_the_path() {
    let ft = france_travail_text();
    let cases: Vec<(String, &str, &str)> = vec![
        (
            ft.replace("\"person.birth_date\",", "\"person.birth_place\","),
            "person.birth_place",
            "unknown field path of referral/v2",
        ),
        (
            ft.replace("deny = [\"nir\"]", "deny = [\"nir\", \"shoe_size\"]"),
            "deny",
            "\"shoe_size\" is not a data category",
        ),
        (
            ft.replace("\"pathway\",", "\"pathway\", \"identifiers.departement\","),
            "identifiers.departement",
            "both allowed (through allow entry identifiers.departement) and pseudonymised",
        ),
        (
            ft.replace("\"person.birth_date\",", "").replace(
                "path = \"identifiers.departement\"",
                "path = \"person.birth_date\"",
            ),
            "person.birth_date",
            "only a free-form string field takes a pseudonym",
        ),
        (
            ft.replace("\"pathway\",", "\"pathway\", \"obstacles.health.domain\",")
                .replace(
                    "path = \"obstacles.health\"",
                    "path = \"situation.recognised_disability\"\n#",
                )
                .replace(
                    "[[special]]\n# criteres_orientation.boe",
                    "# criteres_orientation.boe",
                )
                .replace(
                    "path = \"situation.recognised_disability\"\nrule = \"derive\"\n\n",
                    "",
                ),
            "obstacles.health.domain",
            "needs a [[special]] rule for obstacles.health",
        ),
        (
            ft.replace(
                "\"identifiers.france_travail\",     # refused",
                "\"identifiers.caf\",     # refused",
            ),
            "identifiers.caf",
            "in required, but the policy forwards none of it",
        ),
        (
            ft.replace(
                "env:PASSERELLE_PSEUDONYM_KEY",
                "vault:pseudonyms/departement",
            ),
            "identifiers.departement",
            "is not a key reference: use env:NAME or file:PATH",
        ),
        (
            ft.replace(
                "free_text = [\"reason\"]",
                "free_text = [\"situation.other\"]",
            ),
            "situation.other",
            "in free_text but not in allow",
        ),
        (
            ft.replace("\"person.last_name\",", ""),
            "person.last_name",
            "required by the referral/v2 schema",
        ),
        (
            ft.replace("\"pathway\",", "\"pathway\", \"identifiers.caf.value\","),
            "identifiers.caf.value",
            "part of identifiers.caf",
        ),
        (
            ft.replace("rule = \"derive\"", "rule = \"keep\""),
            "situation.recognised_disability",
            "rule \"keep\" is not one of derive, drop",
        ),
        (
            ft.replace("\"nir\"", "\"referral\""),
            "referral_id",
            "deny lists its category referral",
        ),
    ];
    for (text, path, detail) in cases {
        let error = refused(&text);
        assert!(
            error.starts_with("config/policies/broken.toml: "),
            "names the file: {error}"
        );
        assert!(
            error.contains(path) && error.contains(detail),
            "expected {path} and \"{detail}\" in: {error}"
        );
    }
}

#[test]
fn malformed_toml_and_unknown_keys_name_the_file_and_the_key() {
    let error = refused(&format!(
        "{}\nshare_with = [\"everyone\"]",
        france_travail_text()
    ));
    assert!(
        error.starts_with("config/policies/broken.toml: ") && error.contains("share_with"),
        "{error}"
    );
    let error = refused("id = \"x\"\nallow = [");
    assert!(
        error.starts_with("config/policies/broken.toml: ") && error.contains("line"),
        "{error}"
    );
}

#[test]
fn missing_keys_are_load_errors_naming_the_policy_and_the_reference() {
    let text = france_travail_text().replace(
        "env:PASSERELLE_PSEUDONYM_KEY",
        "env:PASSERELLE_TEST_KEY_THAT_IS_NEVER_SET",
    );
    let policy = Policy::parse(&text, "config/policies/france-travail-orientation.toml")
        .expect("the policy itself is valid");
    let error = KeyRing::load([&policy])
        .expect_err("no such variable")
        .to_string();
    assert_eq!(
        error,
        "config/policies/france-travail-orientation.toml: env:PASSERELLE_TEST_KEY_THAT_IS_NEVER_SET: \
         key for pseudonymised path identifiers.departement: the environment variable is not set"
    );

    let text = france_travail_text().replace("env:PASSERELLE_PSEUDONYM_KEY", "file:missing.key");
    let file = key_dir().join("france-travail-orientation.toml");
    let policy = Policy::parse(&text, &file.display().to_string()).expect("valid policy");
    let error = KeyRing::load([&policy])
        .expect_err("no such file")
        .to_string();
    assert!(
        error.starts_with(&file.display().to_string())
            && error.contains("file:missing.key")
            && error.contains("identifiers.departement"),
        "{error}"
    );
}

#[test]
fn a_key_is_never_shown_in_errors_or_debug_output() {
    let policy = shipped("france-travail-orientation");
    let keys = ring(&policy);
    let key = std::fs::read_to_string(key_dir().join(KEY_A)).expect("test key");
    let debug = format!("{keys:?}");
    assert!(debug.contains("file:test-only-pseudonym.key"), "{debug}");
    assert!(!debug.contains(key.trim()), "{debug}");
    assert!(keys.covers(&policy));
    assert!(!KeyRing::new().covers(&policy));
}

// ---------------------------------------------------------------------------
// Golden: the fixture minimised for France Travail under a full grant

#[test]
fn fixture_minimised_for_france_travail_under_a_full_grant() {
    let policy = shipped("france-travail-orientation");
    let referral = fixture();
    let (out, report) = policy
        .minimise_referral(&referral, &full_grant(), &ring(&policy))
        .expect("forwarded");
    let out_json = serde_json::to_value(&out).expect("serialisable");
    common::assert_golden_json(
        "policy/france-travail-full-grant.expected.json",
        &json!({ "referral": out_json, "report": report_json(&report) }),
    );
    assert!(validate::schemas::schema(SchemaName::ReferralV2).is_valid(&out_json));
    // The département number leaves only as HMAC-SHA256 under the test key.
    let departement = out
        .identifiers
        .iter()
        .find(|i| i.kind == IdentifierKind::Departement)
        .expect("pseudonymised identifier");
    assert_eq!(departement.value, hmac_hex(KEY_A, "IODAS-93-004512"));
    let text = serde_json::to_string(&json!([out_json, report_json(&report)])).expect("json");
    for value in [
        "IODAS-93-004512",
        "\"1234567\"",
        "Passer par l'accueil",
        "Arrivée en France",
        "garde d'enfant",
        "Demandeur d'emploi",
    ] {
        assert!(!text.contains(value), "{value} leaked");
    }
}

#[test]
fn sensitive_senders_leave_as_autre_without_the_referent_email() {
    let policy = shipped("france-travail-orientation");
    let mut referral = fixture();
    referral.sender.organisation.name = Some("CSAPA Le Trait d'Union".to_owned());
    let (out, report) = policy
        .minimise_referral(&referral, &full_grant(), &ring(&policy))
        .expect("forwarded");
    assert_eq!(out.sender.organisation.kind, OrganisationKind::Other);
    assert_eq!(out.sender.organisation.name.as_deref(), Some("Autre"));
    let referent = out.sender.referent.clone().expect("referent kept");
    assert_eq!(referent.email, None);
    assert!(referent.phone.is_some());
    assert_eq!(
        report.derived,
        [
            "sender.organisation.kind",
            "sender.organisation.name",
            "situation.recognised_disability"
        ]
    );
    assert!(report.removed.contains(&"sender.referent.email".to_owned()));
    let text = serde_json::to_string(&out).expect("json");
    assert!(!text.contains("CSAPA") && !text.contains("Trait d'Union"));
    // A word inside another word does not trigger the rule.
    referral.sender.organisation.name = Some("Association Aspirations".to_owned());
    let (out, _) = policy
        .minimise_referral(&referral, &full_grant(), &ring(&policy))
        .expect("forwarded");
    assert_eq!(out.sender.organisation.kind, OrganisationKind::Association);
}

#[test]
fn health_obstacles_become_one_bare_domain_under_an_art_9_basis_only() {
    let policy = shipped("france-travail-orientation");
    let mut referral = fixture();
    for label in ["suivi en addictologie", "dépression"] {
        referral.obstacles.push(Obstacle {
            domain: ObstacleDomain::Health,
            impact: Some(ObstacleImpact::High),
            source_label: Some(label.to_owned()),
        });
    }
    let keys = ring(&policy);
    let (out, report) = policy
        .minimise_referral(&referral, &full_grant(), &keys)
        .expect("forwarded");
    let health: Vec<&Obstacle> = out
        .obstacles
        .iter()
        .filter(|o| o.domain == ObstacleDomain::Health)
        .collect();
    assert_eq!(
        health,
        [&Obstacle {
            domain: ObstacleDomain::Health,
            impact: None,
            source_label: None
        }]
    );
    assert!(report.derived.contains(&"obstacles.health".to_owned()));
    assert!(
        report
            .removed
            .contains(&"obstacles.health.impact".to_owned())
    );
    assert!(
        report
            .removed
            .contains(&"obstacles.health.source_label".to_owned())
    );

    let no_basis = grant(DataCategory::ALL, None);
    let (out, report) = policy
        .minimise_referral(&referral, &no_basis, &keys)
        .expect("forwarded without the special data");
    assert!(
        out.obstacles
            .iter()
            .all(|o| o.domain != ObstacleDomain::Health)
    );
    assert_eq!(
        out.situation.as_ref().and_then(|s| s.recognised_disability),
        None
    );
    assert!(report.removed.contains(&"obstacles.health".to_owned()));
    assert!(
        !report
            .removed
            .contains(&"obstacles.health.impact".to_owned()),
        "an obstacle's details are named by the removed element"
    );
    assert!(
        report
            .removed
            .contains(&"situation.recognised_disability".to_owned())
    );
}

#[test]
fn without_its_key_a_pseudonymised_value_is_dropped_never_sent_in_clear() {
    let policy = shipped("france-travail-orientation");
    let (out, report) = policy
        .minimise_referral(&fixture(), &full_grant(), &KeyRing::new())
        .expect("forwarded: the identifier is not required");
    assert!(
        out.identifiers
            .iter()
            .all(|i| i.kind != IdentifierKind::Departement)
    );
    assert!(
        report
            .removed
            .contains(&"identifiers.departement".to_owned())
    );
    assert!(report.pseudonymised.is_empty());
}

// ---------------------------------------------------------------------------
// Refusals: the exact reason code and an explanation naming path and cause

fn refusal(policy: &str, referral: &v2::Referral, grant: &Grant) -> Refusal {
    let policy = shipped(policy);
    policy
        .minimise_referral(referral, grant, &ring(&policy))
        .expect_err("refused")
}

#[test]
fn refusals_name_the_path_and_what_caused_the_removal() {
    let mut no_number = fixture();
    no_number
        .identifiers
        .retain(|i| i.kind != IdentifierKind::FranceTravail);
    let cases = [
        (
            "france-travail-orientation",
            no_number,
            full_grant(),
            RefusalReason::RequiredFieldRemoved,
            "identifiers.france_travail is required by policy france-travail-orientation 2026-11-1 \
             but it is absent from the input",
        ),
        (
            "france-travail-orientation",
            fixture(),
            grant(
                &without(&[DataCategory::Identifier]),
                Some(SpecialCategoryBasis::ExplicitConsent),
            ),
            RefusalReason::RequiredFieldRemoved,
            "identifiers.france_travail is required by policy france-travail-orientation 2026-11-1 \
             but consent record 9d2f7c1a-8e3b-4a6d-b5c4-1f0e2d3c4b5a does not cover its category identifier",
        ),
        (
            "cap-emploi-orientation",
            fixture(),
            grant(DataCategory::ALL, None),
            RefusalReason::SpecialCategoryWithoutBasis,
            "situation.recognised_disability is required by policy cap-emploi-orientation 2026-11-1 \
             but its category disability is special (GDPR Art. 9) and consent record \
             9d2f7c1a-8e3b-4a6d-b5c4-1f0e2d3c4b5a has no Art. 9 basis",
        ),
        (
            "cap-emploi-orientation",
            fixture(),
            grant(
                &without(&[DataCategory::Disability]),
                Some(SpecialCategoryBasis::SocialProtection),
            ),
            RefusalReason::RequiredFieldRemoved,
            "situation.recognised_disability is required by policy cap-emploi-orientation 2026-11-1 \
             but consent record 9d2f7c1a-8e3b-4a6d-b5c4-1f0e2d3c4b5a does not cover its category disability",
        ),
        (
            "mission-locale-orientation",
            fixture(),
            grant(&without(&[DataCategory::Identity]), None),
            RefusalReason::RequiredFieldRemoved,
            "person.first_name is required by the referral/v2 schema but consent record \
             9d2f7c1a-8e3b-4a6d-b5c4-1f0e2d3c4b5a does not cover its category identity; \
             person.last_name is required by the referral/v2 schema but consent record \
             9d2f7c1a-8e3b-4a6d-b5c4-1f0e2d3c4b5a does not cover its category identity",
        ),
    ];
    for (policy, referral, grant, reason, explanation) in cases {
        let refused = refusal(policy, &referral, &grant);
        assert_eq!(refused.reason, reason, "{policy}: {}", refused.explanation);
        assert_eq!(refused.explanation, explanation, "{policy}");
        assert!(
            !refused.explanation.contains("Aïcha") && !refused.explanation.contains("01234567891")
        );
    }
}

#[test]
fn a_status_policy_is_not_applicable_to_referrals() {
    let refused = refusal("association-status", &fixture(), &full_grant());
    assert_eq!(refused.reason, RefusalReason::PolicyNotApplicable);
    assert_eq!(refused.reason.code(), "policy-not-applicable");
}

// ---------------------------------------------------------------------------
// Status events back to the association

fn rejected_event() -> StatusEvent {
    serde_json::from_value(json!({
        "event_id": "5d1e8c2a-0f3b-4c7d-9e6a-1b2c3d4e5f60",
        "schema_version": "passerelle.status.v1",
        "referral_id": "0b6f1c2e-7d4a-4e59-9c1b-3a2d5e8f9a10",
        "status": "STATUS_REJECTED",
        "occurred_at": "2026-12-03T14:20:00Z",
        "author_siret": common::FRANCE_TRAVAIL_SIRET,
        "rejection_reason": "REJECTION_REASON_DIFFERENT_ASSESSMENT",
        "comment": "Mme Ben Saïd a évoqué un suivi psychiatrique, à revoir dans six mois"
    }))
    .expect("valid event")
}

#[test]
fn status_events_reach_the_association_without_the_comment() {
    let policy = shipped("association-status");
    let (out, report) = policy
        .minimise_status(&rejected_event(), &full_grant(), &ring(&policy))
        .expect("forwarded");
    let out_json = serde_json::to_value(&out).expect("serialisable");
    assert!(validate::schemas::schema(SchemaName::StatusV1).is_valid(&out_json));
    common::assert_golden_json(
        "policy/association-status-rejected.expected.json",
        &json!({ "event": out_json, "report": report_json(&report) }),
    );
    assert!(!out_json.to_string().contains("psychiatrique"));
}

#[test]
fn a_status_event_whose_rejection_reason_cannot_leave_is_refused() {
    let policy = shipped("association-status");
    let refused = policy
        .minimise_status(
            &rejected_event(),
            &grant(&[DataCategory::Referral], None),
            &ring(&policy),
        )
        .expect_err("the schema fields cannot leave");
    assert_eq!(refused.reason, RefusalReason::RequiredFieldRemoved);
    assert!(
        refused.explanation.starts_with(
            "event_id is required by the status/v1 schema but consent record \
             9d2f7c1a-8e3b-4a6d-b5c4-1f0e2d3c4b5a does not cover its category status"
        ),
        "{}",
        refused.explanation
    );
    assert!(
        refused
            .explanation
            .contains("rejection_reason is required by the status/v1 schema for this status"),
        "{}",
        refused.explanation
    );
}

// ---------------------------------------------------------------------------
// Properties over generated referrals, grants and policies

fn organisation_name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => text(40),
        1 => text(20).prop_map(|name| format!("CSAPA {name}")),
    ]
}

fn organisation() -> impl Strategy<Value = Organisation> {
    (
        siret(),
        select(OrganisationKind::ALL),
        proptest::option::of(organisation_name()),
    )
        .prop_map(|(siret, kind, name)| Organisation { siret, kind, name })
}

fn referent() -> impl Strategy<Value = Referent> {
    (
        proptest::option::of(text(30)),
        proptest::option::of(text(30)),
        proptest::option::of(email()),
        proptest::option::of(phone()),
    )
        .prop_map(|(first_name, last_name, email, phone)| Referent {
            first_name,
            last_name,
            email,
            phone,
        })
}

fn identifier() -> impl Strategy<Value = Identifier> {
    select(IdentifierKind::ALL).prop_flat_map(|kind| {
        let value: BoxedStrategy<String> = match kind {
            IdentifierKind::FranceTravail => "[0-9]{11}".boxed(),
            IdentifierKind::Nir => nir().prop_map(String::from).boxed(),
            _ => "[A-Z0-9]{4,10}".boxed(),
        };
        value.prop_map(move |value| Identifier::new(kind, &value).expect("valid identifier"))
    })
}

fn obstacle() -> impl Strategy<Value = Obstacle> {
    (
        select(ObstacleDomain::ALL),
        proptest::option::of(select(ObstacleImpact::ALL)),
        proptest::option::of(text(30)),
    )
        .prop_map(|(domain, impact, source_label)| Obstacle {
            domain,
            impact,
            source_label,
        })
}

fn contact() -> impl Strategy<Value = Contact> {
    (
        proptest::option::of(phone()),
        proptest::option::of(email()),
        proptest::option::of(text(30)),
        proptest::sample::subsequence(ContactPreference::ALL.to_vec(), 0..=2),
    )
        .prop_map(|(phone, email, other_method, preferences)| Contact {
            phone,
            email,
            other_method,
            preferences,
        })
}

fn address() -> impl Strategy<Value = Address> {
    (
        proptest::option::of("[0-9]{5}"),
        proptest::option::of("(2A|2B|[0-9]{2})[0-9]{3}"),
        proptest::option::of(text(30)),
    )
        .prop_map(|(postal_code, insee_code, city)| Address {
            postal_code: postal_code.map(|p| PostalCode::parse(&p).expect("valid")),
            insee_code: insee_code.map(|c| InseeCode::parse(&c).expect("valid")),
            city,
        })
}

fn situation() -> impl Strategy<Value = Situation> {
    (
        proptest::collection::vec(text(30), 0..3),
        proptest::option::of(any::<bool>()),
        proptest::option::of(any::<bool>()),
        proptest::option::of(text(50)),
        proptest::option::of(select(EducationLevel::ALL)),
    )
        .prop_map(
            |(labels, rsa_beneficiary, recognised_disability, other, education_level)| Situation {
                labels,
                rsa_beneficiary,
                recognised_disability,
                other,
                education_level,
            },
        )
}

prop_compose! {
    fn person()(
        names in (text(40), text(40), proptest::option::of(text(40))),
        birth_date in proptest::option::of(date()),
        contact in proptest::option::of(contact()),
        address in proptest::option::of(address()),
        availability in proptest::option::of(date()),
    ) -> v2::Person {
        let (first_name, last_name, birth_name) = names;
        v2::Person {
            first_name,
            last_name,
            birth_name,
            birth_date,
            contact: contact.filter(|c| !c.is_empty()),
            address: address.filter(|a| !a.is_empty()),
            availability,
        }
    }
}

prop_compose! {
    fn referral()(
        id in any::<u128>(),
        created_at in instant(),
        sender in (organisation(), proptest::option::of(referent())),
        recipient in (organisation(), proptest::option::of("dora--[a-z0-9-]{4,20}")),
        person in person(),
        identifiers in proptest::collection::vec(identifier(), 0..5),
        situation in proptest::option::of(situation()),
        obstacles in proptest::collection::vec(obstacle(), 0..6),
        pathway in proptest::option::of(select(Pathway::ALL)),
        axis in proptest::option::of(select(Axis::ALL)),
        reason in proptest::option::of(text(100)),
        consent_reference in proptest::option::of("urn:passerelle:consent:[a-z0-9]{8}"),
    ) -> v2::Referral {
        v2::Referral {
            referral_id: ReferralId::from(uuid::Uuid::from_u128(id)),
            schema_version: v2::ReferralV2Tag,
            created_at,
            sender: Sender {
                organisation: sender.0,
                referent: sender.1.filter(|r| *r != Referent::default()),
            },
            recipient: Recipient { organisation: recipient.0, service_id: recipient.1 },
            person,
            identifiers,
            situation: situation.filter(|s| *s != Situation::default()),
            obstacles,
            pathway,
            axis,
            reason,
            consent_reference,
        }
    }
}

fn any_grant() -> impl Strategy<Value = Grant> {
    (
        proptest::collection::vec(proptest::bool::weighted(0.93), DataCategory::ALL.len()),
        proptest::option::of(select(vec![
            SpecialCategoryBasis::ExplicitConsent,
            SpecialCategoryBasis::SocialProtection,
        ])),
    )
        .prop_map(|(covered, special)| {
            let categories: Vec<DataCategory> = DataCategory::ALL
                .iter()
                .zip(covered)
                .filter(|(_, covered)| *covered)
                .map(|(category, _)| *category)
                .collect();
            grant(&categories, special)
        })
}

/// How a generated policy treats one leaf.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Choice {
    Drop,
    Allow,
    /// Pseudonymise under key A or B.
    Pseudonymise(bool),
}

/// A leaf a generated policy decides on: its path and what may be done with it.
struct LeafSpec {
    path: String,
    schema_required: bool,
    pseudonymisable: bool,
    free_text: bool,
    /// The obstacle element whose details this is.
    element: Option<String>,
}

fn leaf_specs() -> Vec<LeafSpec> {
    let fixed = [
        ("referral_id", true, false),
        ("schema_version", true, false),
        ("created_at", true, false),
        ("sender.organisation.siret", true, false),
        ("sender.organisation.kind", true, false),
        ("sender.organisation.name", false, true),
        ("sender.referent.first_name", false, true),
        ("sender.referent.last_name", false, true),
        ("sender.referent.email", false, false),
        ("sender.referent.phone", false, false),
        ("recipient.organisation.siret", true, false),
        ("recipient.organisation.kind", true, false),
        ("recipient.organisation.name", false, true),
        ("recipient.service_id", false, true),
        ("person.first_name", true, true),
        ("person.last_name", true, true),
        ("person.birth_name", false, true),
        ("person.birth_date", false, false),
        ("person.contact.phone", false, false),
        ("person.contact.email", false, false),
        ("person.contact.other_method", false, false),
        ("person.contact.preferences", false, false),
        ("person.address.postal_code", false, false),
        ("person.address.insee_code", false, false),
        ("person.address.city", false, true),
        ("person.availability", false, false),
        ("situation.labels", false, false),
        ("situation.rsa_beneficiary", false, false),
        ("situation.other", false, false),
        ("situation.education_level", false, false),
        ("pathway", false, false),
        ("axis", false, false),
        ("reason", false, false),
        ("consent_reference", false, true),
    ];
    let mut specs: Vec<LeafSpec> = fixed
        .iter()
        .map(|(path, schema_required, pseudonymisable)| LeafSpec {
            path: (*path).to_owned(),
            schema_required: *schema_required,
            pseudonymisable: *pseudonymisable,
            free_text: category_of(SchemaName::ReferralV2, path) == Some(DataCategory::FreeText),
            element: None,
        })
        .collect();
    for kind in [
        "france_travail",
        "caf",
        "msa",
        "imilo",
        "departement",
        "nir",
    ] {
        specs.push(LeafSpec {
            path: format!("identifiers.{kind}"),
            schema_required: false,
            pseudonymisable: !matches!(kind, "france_travail" | "nir"),
            free_text: false,
            element: None,
        });
    }
    for domain in [
        "housing",
        "mobility",
        "family",
        "finances",
        "digital",
        "administrative_legal",
        "french_maths",
        "unclassified",
    ] {
        let element = format!("obstacles.{domain}");
        specs.push(LeafSpec {
            path: format!("{element}.domain"),
            schema_required: false,
            pseudonymisable: false,
            free_text: false,
            element: None,
        });
        for detail in ["impact", "source_label"] {
            specs.push(LeafSpec {
                path: format!("{element}.{detail}"),
                schema_required: false,
                pseudonymisable: detail == "source_label",
                free_text: false,
                element: Some(format!("{element}.domain")),
            });
        }
    }
    specs
}

/// A policy generated in code, with the sets the properties check against.
#[derive(Debug, Clone)]
struct Generated {
    text: String,
    /// Paths allowed (free text only when also listed in free_text).
    forwarded: Vec<String>,
    pseudonymised: BTreeMap<String, bool>,
    derived: Vec<String>,
    free_text_dropped: Vec<String>,
}

/// Special rules: none (dropped), drop, or derive.
fn special_rule() -> impl Strategy<Value = Option<&'static str>> {
    prop_oneof![Just(None), Just(Some("drop")), Just(Some("derive"))]
}

fn generated_policy() -> impl Strategy<Value = Generated> {
    let specs = leaf_specs();
    let count = specs.len();
    (
        proptest::collection::vec(0..10_u8, count),
        proptest::collection::vec(any::<bool>(), count),
        (special_rule(), special_rule()),
        proptest::collection::vec(any::<prop::sample::Index>(), 0..3),
        proptest::option::of(select(vec!["nir", "contact", "location", "free_text"])),
    )
        .prop_map(move |(rolls, flags, specials, required, deny)| {
            let specs = leaf_specs();
            let mut choices: Vec<Choice> = specs
                .iter()
                .zip(rolls.iter().zip(&flags))
                .map(|(spec, (roll, flag))| match roll {
                    _ if spec.schema_required && spec.pseudonymisable && *roll < 3 => {
                        Choice::Pseudonymise(*flag)
                    }
                    _ if spec.schema_required => Choice::Allow,
                    0..=2 if spec.pseudonymisable => Choice::Pseudonymise(*flag),
                    0..=5 => Choice::Allow,
                    _ => Choice::Drop,
                })
                .collect();
            // Denied categories are simply not chosen.
            for (spec, choice) in specs.iter().zip(choices.iter_mut()) {
                let category = category_of(SchemaName::ReferralV2, &spec.path).map(|c| c.as_str());
                if deny.is_some() && category == deny && !spec.schema_required {
                    *choice = Choice::Drop;
                }
            }
            // Obstacle details leave only with their element.
            for index in 0..specs.len() {
                if let Some(element) = &specs[index].element {
                    let element_index = specs
                        .iter()
                        .position(|s| &s.path == element)
                        .expect("element listed");
                    if choices[element_index] == Choice::Drop {
                        choices[index] = Choice::Drop;
                    }
                }
            }
            let mut allow = Vec::new();
            let mut pseudonymise = Vec::new();
            let mut free_text = Vec::new();
            let mut generated = Generated {
                text: String::new(),
                forwarded: Vec::new(),
                pseudonymised: BTreeMap::new(),
                derived: Vec::new(),
                free_text_dropped: Vec::new(),
            };
            for ((spec, choice), flag) in specs.iter().zip(&choices).zip(&flags) {
                match choice {
                    Choice::Drop => {}
                    Choice::Allow => {
                        allow.push(format!("\"{}\"", spec.path));
                        if spec.free_text && !*flag {
                            generated.free_text_dropped.push(spec.path.clone());
                        } else {
                            if spec.free_text {
                                free_text.push(format!("\"{}\"", spec.path));
                            }
                            generated.forwarded.push(spec.path.clone());
                        }
                    }
                    Choice::Pseudonymise(b) => {
                        let key = if *b { KEY_B } else { KEY_A };
                        pseudonymise.push(format!(
                            "{{ path = \"{}\", key = \"file:{key}\" }}",
                            spec.path
                        ));
                        generated.pseudonymised.insert(spec.path.clone(), *b);
                    }
                }
            }
            let mut specials_text = String::new();
            for (path, rule) in [
                ("situation.recognised_disability", specials.0),
                ("obstacles.health", specials.1),
            ] {
                if let Some(rule) = rule {
                    specials_text
                        .push_str(&format!("\n[[special]]\npath = \"{path}\"\nrule = \"{rule}\"\n"));
                    if rule == "derive" {
                        generated.derived.push(path.to_owned());
                    }
                }
            }
            // Required: a few of the forwarded, pseudonymised or derived paths.
            let candidates: Vec<String> = generated
                .forwarded
                .iter()
                .chain(generated.pseudonymised.keys())
                .chain(&generated.derived)
                .filter(|p| !p.ends_with(".impact") && !p.ends_with(".source_label"))
                .cloned()
                .collect();
            let required: BTreeSet<String> = required
                .iter()
                .map(|index| candidates[index.index(candidates.len())].clone())
                .collect();
            generated.text = format!(
                "id = \"generated\"\nversion = \"1\"\nmessage = \"referral\"\n\
                 recipient = {{ kind = \"france_travail\" }}\npurpose = \"dpv:ServiceProvision\"\n\
                 deny = [{}]\nallow = [{}]\npseudonymise = [{}]\nrequired = [{}]\nfree_text = [{}]\n{specials_text}",
                deny.map(|d| format!("\"{d}\"")).unwrap_or_default(),
                allow.join(", "),
                pseudonymise.join(", "),
                required
                    .iter()
                    .map(|p| format!("\"{p}\""))
                    .collect::<Vec<_>>()
                    .join(", "),
                free_text.join(", "),
            );
            generated
        })
}

/// The policies the properties run: generated ones and the shipped ones.
#[derive(Debug, Clone)]
enum Under {
    Generated(Generated),
    Shipped(&'static str),
}

fn any_policy() -> impl Strategy<Value = Under> {
    prop_oneof![
        3 => generated_policy().prop_map(Under::Generated),
        1 => select(vec![
            "france-travail-orientation",
            "mission-locale-orientation",
            "cap-emploi-orientation",
        ])
        .prop_map(Under::Shipped),
    ]
}

impl Under {
    fn policy(&self, swap_keys: bool) -> Policy {
        let text = match self {
            Self::Generated(generated) => generated.text.clone(),
            Self::Shipped(name) => {
                std::fs::read_to_string(policies_dir().join(format!("{name}.toml")))
                    .expect("shipped")
                    .replace("env:PASSERELLE_PSEUDONYM_KEY", &format!("file:{KEY_A}"))
            }
        };
        let text = if swap_keys {
            text.replace(KEY_A, "@KEY@")
                .replace(KEY_B, KEY_A)
                .replace("@KEY@", KEY_B)
        } else {
            text
        };
        let file = key_dir().join("generated.toml");
        Policy::parse(&text, &file.display().to_string())
            .unwrap_or_else(|error| panic!("generated policy is valid: {error}\n{text}"))
    }

    /// allow ∪ pseudonymised ∪ derived, as the policy text states them.
    fn outside_paths(&self, policy: &Policy) -> Vec<String> {
        match self {
            Self::Generated(generated) => generated
                .forwarded
                .iter()
                .chain(generated.pseudonymised.keys())
                .chain(&generated.derived)
                .cloned()
                .collect(),
            Self::Shipped(_) => policy
                .allowed()
                .iter()
                .cloned()
                .chain(policy.pseudonymised().map(|(p, _)| p.to_owned()))
                .chain(policy.derived().iter().cloned())
                .collect(),
        }
    }

    fn key_of(&self, path: &str) -> Option<&'static str> {
        match self {
            Self::Generated(generated) => generated
                .pseudonymised
                .get(path)
                .map(|b| if *b { KEY_B } else { KEY_A }),
            Self::Shipped(_) => (path == "identifiers.departement").then_some(KEY_A),
        }
    }
}

/// Field paths of the leaves of a message, with their string values: typed
/// list elements are addressed by kind or domain.
fn leaf_values(value: &Value, path: &str, into: &mut Vec<(String, Value)>) {
    match value {
        Value::Object(members) => {
            for (key, member) in members {
                let child = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                leaf_values(member, &child, into);
            }
        }
        Value::Array(items) if matches!(path, "identifiers" | "obstacles") => {
            for item in items {
                let element = item
                    .get("kind")
                    .or_else(|| item.get("domain"))
                    .and_then(Value::as_str)
                    .map(passerelle::model::categories::element_name)
                    .expect("typed element");
                leaf_values(item, &format!("{path}.{element}"), into);
            }
        }
        Value::Array(items) => {
            for item in items {
                into.push((path.to_owned(), item.clone()));
            }
        }
        leaf => into.push((path.to_owned(), leaf.clone())),
    }
}

fn covered_by(path: &str, by: &str) -> bool {
    path == by
        || path
            .strip_prefix(by)
            .is_some_and(|rest| rest.starts_with('.'))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn nothing_leaves_outside_the_policy_and_the_grant(
        input in referral(),
        grant in any_grant(),
        under in any_policy(),
    ) {
        let policy = under.policy(false);
        let keys = ring(&policy);
        let first = policy.minimise_referral(&input, &grant, &keys);
        // Deterministic.
        prop_assert_eq!(&first, &policy.minimise_referral(&input, &grant, &keys));
        let input_json = serde_json::to_value(&input).expect("serialisable");
        let mut input_leaves = Vec::new();
        leaf_values(&input_json, "", &mut input_leaves);
        let personal_strings: Vec<&str> = input_leaves
            .iter()
            .filter(|(path, _)| !matches!(path.as_str(), "schema_version" | "referral_id" | "created_at"))
            .filter_map(|(_, value)| value.as_str())
            .filter(|text| text.chars().count() >= 5)
            .collect();
        let (output, report) = match first {
            Err(refusal) => {
                prop_assert!(matches!(
                    refusal.reason,
                    RefusalReason::RequiredFieldRemoved | RefusalReason::SpecialCategoryWithoutBasis
                ), "{:?}", refusal);
                if refusal.reason == RefusalReason::SpecialCategoryWithoutBasis {
                    prop_assert!(grant.special_category_basis.is_none());
                }
                for text in &personal_strings {
                    prop_assert!(!refusal.explanation.contains(text), "a value in {}", refusal.explanation);
                }
                return Ok(());
            }
            Ok(result) => result,
        };
        let output_json = serde_json::to_value(&output).expect("serialisable");
        // The output is a valid referral.
        prop_assert!(
            validate::schemas::schema(SchemaName::ReferralV2).is_valid(&output_json),
            "invalid output: {}", output_json
        );
        let decoded: v2::Referral = validate::decode_document(
            &serde_json::to_vec(&output_json).expect("json"),
            SchemaName::ReferralV2,
            &Default::default(),
        ).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&decoded, &output);

        let mut output_leaves = Vec::new();
        leaf_values(&output_json, "", &mut output_leaves);
        let permitted = under.outside_paths(&policy);
        for (path, value) in &output_leaves {
            // Nothing outside allow ∪ pseudonymised ∪ derived...
            prop_assert!(
                permitted.iter().any(|p| covered_by(path, p)),
                "{} left but the policy does not name it", path
            );
            // ...nor outside what the grant covers, special categories only under Art. 9.
            let category = category_of(SchemaName::ReferralV2, path).expect("known path");
            prop_assert!(grant.allows(category), "{} ({}) left outside the grant", path, category.as_str());
            prop_assert!(
                !category.is_special() || grant.special_category_basis.is_some(),
                "special {} left without an Art. 9 basis", path
            );
            if let Under::Generated(generated) = &under {
                prop_assert!(
                    !generated.free_text_dropped.iter().any(|p| covered_by(path, p)),
                    "free text {} left without free_text", path
                );
            }
            // Pseudonyms are HMAC-SHA256 under the path's key.
            if let Some(key) = report.pseudonymised.iter().find(|p| covered_by(path, p)).and_then(|p| under.key_of(p)) {
                let text = value.as_str().expect("pseudonym");
                let matches = input_leaves.iter().any(|(input_path, input)| {
                    input_path == path && input.as_str().is_some_and(|i| hmac_hex(key, i) == text)
                });
                let kind_field = path.ends_with(".kind");
                prop_assert!(matches || kind_field, "{} is not the HMAC of an input value", path);
            }
        }
        // The report: sorted, no duplicates, removed paths really gone.
        for list in [&report.removed, &report.pseudonymised, &report.derived] {
            let mut sorted = list.clone();
            sorted.sort();
            sorted.dedup();
            prop_assert_eq!(&sorted, list);
        }
        for removed in &report.removed {
            prop_assert!(input_leaves.iter().any(|(p, _)| covered_by(p, removed)), "{} reported removed but absent", removed);
            prop_assert!(!output_leaves.iter().any(|(p, _)| covered_by(p, removed)), "{} reported removed but present", removed);
        }
        // Values of dropped fields appear nowhere, unless a kept field has the same value.
        let kept: BTreeSet<&str> = output_leaves.iter().filter_map(|(_, v)| v.as_str()).collect();
        let report_text = report_json(&report).to_string();
        let output_text = output_json.to_string();
        for (path, value) in &input_leaves {
            let Some(text) = value.as_str() else { continue };
            if !report.removed.iter().any(|r| covered_by(path, r)) || text.chars().count() < 5 {
                continue;
            }
            let same_value_kept = input_leaves.iter().any(|(other, v)| {
                other != path && v.as_str() == Some(text)
                    && output_leaves.iter().any(|(p, _)| p == other)
            });
            if same_value_kept {
                continue;
            }
            prop_assert!(!kept.contains(text), "a value of removed {} left", path);
            prop_assert!(!report_text.contains(text), "a value of removed {} is in the report", path);
            if text.chars().count() >= 12 {
                prop_assert!(!output_text.contains(text), "a value of removed {} is in the output", path);
            }
        }
    }

    #[test]
    fn pseudonyms_are_stable_per_key_and_differ_across_keys(
        input in referral(),
        under in generated_policy().prop_map(Under::Generated),
    ) {
        let grant = full_grant();
        let policy = under.policy(false);
        let swapped = under.policy(true);
        let keys = KeyRing::load([&policy, &swapped]).expect("test keys");
        let once = policy.minimise_referral(&input, &grant, &keys);
        let again = policy.minimise_referral(&input, &grant, &keys);
        prop_assert_eq!(&once, &again);
        let other = swapped.minimise_referral(&input, &grant, &keys);
        let (Ok((once, report)), Ok((other, _))) = (once, other) else {
            return Ok(());
        };
        let (mut a, mut b) = (Vec::new(), Vec::new());
        leaf_values(&serde_json::to_value(&once).expect("json"), "", &mut a);
        leaf_values(&serde_json::to_value(&other).expect("json"), "", &mut b);
        prop_assert_eq!(a.len(), b.len());
        for ((path, x), (_, y)) in a.iter().zip(&b) {
            let pseudonymised = report.pseudonymised.iter().any(|p| covered_by(path, p)) && !path.ends_with(".kind");
            if pseudonymised {
                prop_assert_ne!(x, y, "{} has the same pseudonym under two keys", path);
            } else {
                prop_assert_eq!(x, y);
            }
        }
    }
}
