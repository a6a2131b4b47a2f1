//! Golden tests of the France Travail adapter: a canonical v2 referral →
//! Passerelle's envelope around an `orientationusager/v1` orientation (with its
//! loss report), and France Travail decisions → status events. Fixtures and
//! expected outputs live in tests/golden/france_travail.

mod common;

use common::{FRANCE_TRAVAIL_SIRET, assert_golden_json, fixed_context, golden_bytes};
use passerelle::Error;
use passerelle::formats::canonical::{CanonicalJson, decode_json};
use passerelle::formats::france_travail::FranceTravail;
use passerelle::formats::{Context, Format};
use passerelle::model::common::{Organisation, OrganisationKind, Pathway};
use passerelle::model::ids::{ReferralId, Siret};
use passerelle::model::status::{RejectionReason, Status, StatusEvent};
use passerelle::model::v2::Referral;
use passerelle::model::{LossReport, Message, Translated};
use passerelle::validate::SchemaName;
use passerelle::validate::schemas::schema;
use serde_json::Value;

/// The referral id of the fixtures' envelope and of `full-referral.v2.json`.
const REFERRAL_ID: &str = "6f1c2d3e-4a5b-4c6d-8e7f-901234567890";

/// Fake personal values of the fixtures; none may appear in an error.
const PERSONAL_VALUES: &[&str] = &[
    "AGT0042",
    "Dupont",
    "DOS-0001",
    "93200",
    "01234567891",
    "Parcours social plus adapté",
];

/// A context in which France Travail's agency posts decisions back to the association.
fn france_travail_context() -> Context {
    let mut context = fixed_context();
    let association = context.sender.take();
    context.sender = Some(Organisation {
        siret: Siret::parse(FRANCE_TRAVAIL_SIRET).expect("valid SIRET"),
        kind: OrganisationKind::FranceTravail,
        name: Some("France Travail Saint-Denis".to_owned()),
    });
    context.recipient = association;
    context
}

fn decode_with(path: &str, context: &Context) -> Result<Translated<Message>, Error> {
    let bytes = golden_bytes(path);
    let mut records = FranceTravail
        .decode(Box::new(bytes.as_slice()), context)
        .expect("the input is readable");
    let record = records.next().expect("one record");
    assert!(records.next().is_none(), "one orientation, one record");
    record.result
}

/// Decodes a decision that must succeed, and checks the event against the published schema.
fn status(path: &str, context: &Context) -> (StatusEvent, LossReport) {
    let translated = decode_with(path, context).unwrap_or_else(|error| panic!("{path}: {error}"));
    let Message::Status(event) = translated.value else {
        panic!("{path}: a decision decodes to a status event");
    };
    let value = serde_json::to_value(&event).expect("serialisable");
    schema(SchemaName::StatusV1)
        .validate(&value)
        .unwrap_or_else(|error| panic!("{path}: the event breaks status/v1: {error}"));
    (*event, translated.losses)
}

fn refusal(path: &str, context: &Context) -> Error {
    let Err(error) = decode_with(path, context) else {
        panic!("{path} must be refused")
    };
    let text = format!("{error} {error:?}");
    for value in PERSONAL_VALUES {
        assert!(
            !text.contains(value),
            "the error repeats an input value: {text}"
        );
    }
    error
}

fn full_referral() -> Referral {
    let bytes = golden_bytes("france_travail/full-referral.v2.json");
    let Message::Referral(referral) = decode_json(&bytes, CanonicalJson::V2, &fixed_context())
        .expect("the fixture is a valid v2 referral")
    else {
        panic!("a referral");
    };
    *referral
}

fn encode(referral: Referral) -> (Value, LossReport) {
    let translated = FranceTravail
        .encode(&Message::Referral(Box::new(referral)), &fixed_context())
        .expect("a referral is encodable");
    let value = serde_json::from_slice(&translated.value).expect("the output is JSON");
    (value, translated.losses)
}

/// Every leaf (scalar or array item) of a JSON value, as JSON pointers.
fn leaves(value: &Value, pointer: String, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, member) in map {
                leaves(member, format!("{pointer}/{key}"), out);
            }
        }
        Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                leaves(item, format!("{pointer}/{index}"), out);
            }
        }
        _ => out.push(pointer),
    }
}

#[test]
fn a_full_referral_encodes_to_the_golden_orientation_and_loss_report() {
    let (orientation, losses) = encode(full_referral());
    assert_golden_json("france_travail/full-referral.expected.json", &orientation);
    assert_golden_json(
        "france_travail/full-referral.losses.json",
        &serde_json::to_value(&losses).expect("serialisable"),
    );
    let criteria = &orientation["orientation"]["criteres_orientation"];
    assert_eq!(criteria["contrainte_logement"], "SANS_LOGEMENT");
    assert_eq!(
        criteria["contrainte_sante"], "INCAPACITE_RECHERCHE_ACTIVITE_PRO",
        "a French wording of a France Travail value is that value"
    );
    assert_eq!(
        criteria["contrainte_mobilite"],
        "IMPACT_MOYEN_RECHERCHE_EMPLOI"
    );
    assert_eq!(
        criteria["contrainte_numerique"],
        "IMPACT_FAIBLE_RECHERCHE_EMPLOI"
    );
    assert_eq!(
        criteria["contrainte_financiere"],
        "IMPACT_FORT_RECHERCHE_EMPLOI"
    );
    assert_eq!(
        criteria["contrainte_familiale"],
        Value::Null,
        "no value is invented"
    );
    assert_eq!(
        criteria["contrainte_francais_calcul"],
        Value::Null,
        "no obstacle is not AUCUNE"
    );
    assert_eq!(criteria["niveau_etude"], "NV4");
    assert_eq!(criteria["brsa"], true);
    assert_eq!(orientation["reference_partenaire"], REFERRAL_ID);
    assert_eq!(orientation["numeroFranceTravail"], "01234567891");
}

#[test]
fn every_field_of_the_referral_is_carried_or_reported() {
    let referral = full_referral();
    let input = serde_json::to_value(&referral).expect("serialisable");
    let (_, losses) = encode(referral);
    // What the orientation carries (addressing included: the recipient's SIRET
    // and kind choose where the call goes).
    let carried = [
        "/referral_id",
        "/schema_version",
        "/recipient/organisation/siret",
        "/recipient/organisation/kind",
        "/recipient/organisation/name",
        "/identifiers/0/kind",
        "/identifiers/0/value",
        "/situation/rsa_beneficiary",
        "/situation/recognised_disability",
        "/situation/education_level",
        "/obstacles/0/domain",
        "/obstacles/0/source_label",
        "/obstacles/1/domain",
        "/obstacles/1/impact",
        "/obstacles/2/domain",
        "/obstacles/2/impact",
        "/obstacles/3/domain",
        "/obstacles/3/source_label",
        "/obstacles/7/domain",
        "/obstacles/7/impact",
        "/pathway",
    ];
    let mut all = Vec::new();
    leaves(&input, String::new(), &mut all);
    for pointer in &all {
        let is_carried = carried.contains(&pointer.as_str());
        assert!(
            is_carried != losses.covers(pointer),
            "{pointer} must be either carried or in the loss report, not {}",
            if is_carried { "both" } else { "neither" }
        );
    }
}

#[test]
fn pathways_choose_parcours_and_organisme() {
    let cases = [
        (Some(Pathway::Professional), Value::from("PED"), "FT", false),
        (
            Some(Pathway::SocioProfessional),
            Value::from("PSO"),
            "FT",
            false,
        ),
        (Some(Pathway::Social), Value::from("PSO"), "CD", true),
        (None, Value::Null, "FT", false),
    ];
    for (pathway, parcours, organisme, reported) in cases {
        let mut referral = full_referral();
        referral.pathway = pathway;
        let (orientation, losses) = encode(referral);
        assert_eq!(
            orientation["orientation"]["parcours"], parcours,
            "{pathway:?}"
        );
        assert_eq!(
            orientation["orientation"]["organisme"], organisme,
            "{pathway:?}"
        );
        assert_eq!(losses.covers("/pathway"), reported, "{pathway:?}");
    }
}

#[test]
fn a_referral_without_a_france_travail_number_has_a_null_number() {
    let mut referral = full_referral();
    referral.identifiers.remove(0);
    let (orientation, losses) = encode(referral);
    assert_eq!(orientation["numeroFranceTravail"], Value::Null);
    assert!(losses.covers("/identifiers/0") && losses.covers("/identifiers/1"));
}

#[test]
fn status_events_cannot_be_written() {
    let (event, _) = status(
        "france_travail/sample-decision-accepted.json",
        &with_referral_id(france_travail_context()),
    );
    let error = FranceTravail
        .encode(&Message::Status(Box::new(event)), &fixed_context())
        .expect_err("not encodable");
    assert!(matches!(error, Error::UnsupportedFormat(_)), "{error}");
    assert!(error.to_string().contains("status events"), "{error}");
}

fn with_referral_id(mut context: Context) -> Context {
    context.referral_id = Some(ReferralId::parse(REFERRAL_ID).expect("valid UUID"));
    context
}

#[test]
fn an_accepted_decision_becomes_an_accepted_status_event() {
    let context = with_referral_id(france_travail_context());
    let (event, losses) = status("france_travail/sample-decision-accepted.json", &context);
    assert_golden_json(
        "france_travail/decision-accepted.expected.json",
        &serde_json::to_value(&event).expect("serialisable"),
    );
    assert_golden_json(
        "france_travail/decision-accepted.losses.json",
        &serde_json::to_value(&losses).expect("serialisable"),
    );
    assert_eq!(event.status, Status::Accepted);
    assert_eq!(event.rejection_reason, None);
    assert_eq!(event.author_siret.as_str(), FRANCE_TRAVAIL_SIRET);
    assert_eq!(event.occurred_at.to_rfc3339(), "2026-12-01T00:00:00+00:00");
    assert!(losses.covers("/decision/agent_decision"));

    // Re-posting the same decision is the same event.
    let (again, _) = status("france_travail/sample-decision-accepted.json", &context);
    assert_eq!(again.event_id, event.event_id);
}

#[test]
fn a_refused_decision_in_the_envelope_becomes_a_rejection_with_its_reason() {
    // No referral id in the context: the envelope's reference_partenaire names it.
    let (event, losses) = status(
        "france_travail/decision-refused.envelope.json",
        &france_travail_context(),
    );
    assert_golden_json(
        "france_travail/decision-refused.expected.json",
        &serde_json::to_value(&event).expect("serialisable"),
    );
    assert_golden_json(
        "france_travail/decision-refused.losses.json",
        &serde_json::to_value(&losses).expect("serialisable"),
    );
    assert_eq!(event.status, Status::Rejected);
    assert_eq!(
        event.rejection_reason,
        Some(RejectionReason::DifferentAssessment)
    );
    assert_eq!(event.referral_id.to_string(), REFERRAL_ID);
    assert!(event.comment.is_some());
    assert!(losses.covers("/orientation/decision/agent_decision"));
    assert!(losses.covers("/numeroFranceTravail"));

    // A different decision about the same referral is a different event.
    let (accepted, _) = status(
        "france_travail/sample-decision-accepted.json",
        &with_referral_id(france_travail_context()),
    );
    assert_ne!(accepted.event_id, event.event_id);
}

#[test]
fn an_unknown_refusal_code_is_other_and_reported() {
    let context = with_referral_id(france_travail_context());
    let (event, losses) = status("france_travail/decision-unknown-motif.json", &context);
    assert_eq!(event.rejection_reason, Some(RejectionReason::Other));
    assert!(losses.covers("/decision/motif_refus"), "{losses:?}");
    assert_eq!(
        event.occurred_at, context.now,
        "no date: the context's clock"
    );
    assert_golden_json(
        "france_travail/decision-unknown-motif.losses.json",
        &serde_json::to_value(&losses).expect("serialisable"),
    );
}

#[test]
fn every_unknown_member_is_listed_at_every_level() {
    let error = refusal(
        "france_travail/unknown-members.json",
        &with_referral_id(france_travail_context()),
    );
    let pointers: Vec<(&str, &str)> = error
        .violations()
        .iter()
        .map(|v| (v.pointer.as_str(), v.rule.as_str()))
        .collect();
    assert_eq!(
        pointers,
        [
            ("/numero_dossier", "unknown-field"),
            ("/structure/code_postal", "unknown-field"),
            (
                "/criteres_orientation/contrainte_addiction",
                "unknown-field"
            ),
            ("/decision/nom_agent", "unknown-field"),
        ]
    );
    assert_golden_json(
        "france_travail/unknown-members.errors.json",
        &serde_json::to_value(error.violations()).expect("serialisable"),
    );
}

#[test]
fn an_orientation_without_a_decision_is_refused() {
    let error = refusal(
        "france_travail/no-decision.json",
        &with_referral_id(france_travail_context()),
    );
    let found = error.violations();
    assert_eq!(found.len(), 1, "{error}");
    assert_eq!(found[0].pointer, "/decision");
    assert_eq!(found[0].rule, "required");
    assert!(
        found[0]
            .detail
            .contains("nothing to turn into a status event")
    );
}

#[test]
fn a_decision_without_a_referral_id_is_refused() {
    let error = refusal(
        "france_travail/sample-decision-accepted.json",
        &france_travail_context(),
    );
    assert_eq!(error.violations()[0].pointer, "/reference_partenaire");
    assert!(error.to_string().contains("--referral-id"), "{error}");
}

#[test]
fn a_referral_id_conflicting_with_the_envelope_is_refused() {
    let mut context = france_travail_context();
    context.referral_id = Some(ReferralId::derived("test", "another referral"));
    let error = refusal("france_travail/decision-refused.envelope.json", &context);
    assert_eq!(error.violations()[0].rule, "referral-id-conflict");
}

#[test]
fn a_decision_without_an_author_is_refused() {
    let mut context = with_referral_id(france_travail_context());
    context.sender = None;
    let error = refusal("france_travail/sample-decision-accepted.json", &context);
    assert!(matches!(error, Error::UnsupportedFormat(_)), "{error}");
    assert!(error.to_string().contains("sender"), "{error}");
}

#[test]
fn bad_decision_values_are_reported_without_their_values() {
    let mut document: Value = serde_json::from_slice(&golden_bytes(
        "france_travail/sample-decision-accepted.json",
    ))
    .expect("JSON");
    document["decision"]["etat_decision"] = Value::from("PEUT-ETRE");
    document["decision"]["date_decision"] = Value::from("01/12/2026");
    document["criteres_orientation"]["brsa"] = Value::from("OUI");
    // A status event's comment holds at most 600 characters.
    document["decision"]["commentaire_refus"] = Value::from("Commentaire trop long. ".repeat(30));
    let bytes = serde_json::to_vec(&document).expect("serialisable");
    let context = with_referral_id(france_travail_context());
    let mut records = FranceTravail
        .decode(Box::new(bytes.as_slice()), &context)
        .expect("readable");
    let error = records
        .next()
        .expect("one record")
        .result
        .expect_err("refused");
    let found: Vec<(&str, &str)> = error
        .violations()
        .iter()
        .map(|v| (v.pointer.as_str(), v.rule.as_str()))
        .collect();
    assert_eq!(
        found,
        [
            ("/criteres_orientation/brsa", "type"),
            ("/decision/etat_decision", "enum"),
            ("/decision/date_decision", "date-format"),
            ("/decision/commentaire_refus", "maxLength"),
        ]
    );
    let text = error.to_string();
    assert!(
        !text.contains("PEUT-ETRE") && !text.contains("01/12/2026") && !text.contains("trop long"),
        "{text}"
    );
}
