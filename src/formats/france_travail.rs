//! France Travail's `orientationusager/v1` orientation JSON.
//!
//! # Writing a referral (encode)
//! France Travail's partner API carries the person's France Travail number in
//! the URL path and the partner's own reference beside the orientation. So that
//! one document holds one call, Passerelle writes its **own envelope** (not a
//! France Travail format):
//! ```json
//! {"reference_partenaire": "<referral_id>", "numeroFranceTravail": "<11 digits or null>",
//!  "orientation": { ...France Travail's orientation shape... }}
//! ```
//! The delivery stage takes the number for the path and the reference for the
//! partner field. Inside `orientation`:
//! - `parcours`/`organisme`: `PATHWAY_PROFESSIONAL` → `PED`/`FT`,
//!   `PATHWAY_SOCIO_PROFESSIONAL` → `PSO`/`FT`, `PATHWAY_SOCIAL` → `PSO`/`CD`
//!   (the département follows social pathways). The social mapping is
//!   **Passerelle's assumption**: France Travail's published values are only
//!   `PED` and `PSO`. No pathway → `parcours` null, `organisme` `FT`.
//! - `structure`: `libelle_structure` is the recipient's name; `code_aurore` and
//!   `code_safir` (France Travail's agency codes) are null, since the canonical
//!   model does not hold them. The recipient's SIRET addresses the delivery
//!   and is not written.
//! - `statut`, the parcours dates and `decision` are null (France Travail
//!   decides them); `etat` is `OUVERT`, `origine` is `PARTENAIRE`.
//! - `criteres_orientation`: one `contrainte_*` per obstacle domain. When the
//!   obstacle's `source_label` is already a France Travail value of that domain
//!   it is written as is. Otherwise the impact gives the value:
//!   `OBSTACLE_IMPACT_HIGH` → `IMPACT_FORT_RECHERCHE_EMPLOI` (seen in France
//!   Travail's API), `MEDIUM` → `IMPACT_MOYEN_RECHERCHE_EMPLOI` and `LOW` →
//!   `IMPACT_FAIBLE_RECHERCHE_EMPLOI` (**Passerelle's assumption**, by analogy).
//!   An obstacle with neither has no value in France Travail's vocabulary and
//!   is reported lost rather than invented. A domain without an obstacle is
//!   `null`, never `AUCUNE`: the absence of a statement is not a statement of
//!   absence. `brsa` ← `rsa_beneficiary`, `boe` ← `recognised_disability`,
//!   `niveau_etude` ← `education_level` (`NV4`, ...); the other criteria are null.
//! - Everything else the canonical referral holds (names, contact, address,
//!   birth date, sender, référent, reason, other identifiers, unclassified or
//!   extra obstacles, ...) is named in the loss report by its v2 JSON pointer.
//!
//! # Reading a decision (decode)
//! An orientation whose `decision` is set becomes a status event: `ACCEPTEE` →
//! `STATUS_ACCEPTED`, `REFUSEE` → `STATUS_REJECTED` with `motif_refus` mapped
//! (`APPRECIATION_DIFFERENTE`, `DECLARATION_INEXACTE`; an unknown code or none
//! → `REJECTION_REASON_OTHER`, an unknown code also in the loss report). The
//! bare orientation and the envelope above are both read, with strict keys.
//! `date_decision` (a date) is taken at 00:00 UTC; without it the event is
//! stamped with the context's clock. The author is the context's sender (the
//! France Travail agency posting it). The referral is the envelope's
//! `reference_partenaire`, else the context's referral id. The event id is
//! derived from the referral, the decision and its date, so re-posting the same
//! decision is idempotent. `agent_decision` names an agent and is never carried.

use std::io::Read;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::error::{Error, Violation};
use crate::model::common::Pathway;
use crate::model::convert::fold;
use crate::model::ids::{FranceTravailNumber, ReferralId, ValueError, shape_of};
use crate::model::status::{RejectionReason, Status, StatusEvent, StatusV1Tag};
use crate::model::v2::{self, IdentifierKind, Obstacle, ObstacleDomain, ObstacleImpact};
use crate::model::{LossReport, Message, Translated};
use crate::validate;

use super::json_fields::{Fields, Reader, parse_date};
use super::{Context, Format, Records, read_limited, single};

/// France Travail `orientationusager/v1`: decisions in, referrals out.
#[derive(Debug)]
pub struct FranceTravail;

/// The source name under which decision event ids are derived.
const EVENT_ID_SOURCE: &str = "france-travail-decision";

/// Members of Passerelle's envelope.
const ENVELOPE_KEYS: &[&str] = &["reference_partenaire", "numeroFranceTravail", "orientation"];

/// Members of an orientation.
const ORIENTATION_KEYS: &[&str] = &[
    "parcours",
    "organisme",
    "structure",
    "statut",
    "etat",
    "origine",
    "date_entree_parcours",
    "date_sortie_parcours",
    "motif_sortie_parcours",
    "decision",
    "criteres_orientation",
];

/// Text members of an orientation that a status event does not carry.
const ORIENTATION_TEXT_KEYS: &[&str] = &[
    "parcours",
    "organisme",
    "statut",
    "etat",
    "origine",
    "motif_sortie_parcours",
];

/// Members of `structure`.
const STRUCTURE_KEYS: &[&str] = &["code_aurore", "code_safir", "libelle_structure"];

/// Members of `decision`.
const DECISION_KEYS: &[&str] = &[
    "etat_decision",
    "date_decision",
    "organisme_decision",
    "agent_decision",
    "motif_refus",
    "commentaire_refus",
];

/// Text members of `criteres_orientation`.
const CRITERIA_TEXT_KEYS: &[&str] = &[
    "situation_professionnelle",
    "niveau_etude",
    "capacite_a_travailler",
    "projet_pro",
    "contrainte_sante",
    "contrainte_logement",
    "contrainte_mobilite",
    "contrainte_familiale",
    "contrainte_financiere",
    "contrainte_numerique",
    "contrainte_administrative_juridique",
    "contrainte_francais_calcul",
];

/// Boolean members of `criteres_orientation`.
const CRITERIA_FLAG_KEYS: &[&str] = &[
    "brsa",
    "boe",
    "baeeh",
    "esat",
    "scolarite_etablissement_specialise",
    "boe_souhait_accompagnement",
];

/// Longest code or label accepted in members that are codes.
const CODE_MAX: usize = 255;
/// Longest refusal comment: a status event's comment holds at most 600 characters.
const COMMENT_MAX: usize = 600;

// ---------------------------------------------------------------- encode

/// Passerelle's envelope around one France Travail orientation.
#[derive(Debug, Serialize)]
struct Envelope {
    reference_partenaire: String,
    #[serde(rename = "numeroFranceTravail")]
    numero_france_travail: Option<String>,
    orientation: Orientation,
}

#[derive(Debug, Serialize)]
struct Orientation {
    parcours: Option<&'static str>,
    organisme: &'static str,
    structure: Structure,
    statut: Option<&'static str>,
    etat: &'static str,
    origine: &'static str,
    date_entree_parcours: Option<String>,
    date_sortie_parcours: Option<String>,
    motif_sortie_parcours: Option<String>,
    decision: Option<Value>,
    criteres_orientation: Criteria,
}

#[derive(Debug, Serialize)]
struct Structure {
    code_aurore: Option<String>,
    code_safir: Option<String>,
    libelle_structure: Option<String>,
}

#[derive(Debug, Default, Serialize)]
struct Criteria {
    situation_professionnelle: Option<String>,
    niveau_etude: Option<&'static str>,
    capacite_a_travailler: Option<String>,
    projet_pro: Option<String>,
    contrainte_sante: Option<String>,
    contrainte_logement: Option<String>,
    contrainte_mobilite: Option<String>,
    contrainte_familiale: Option<String>,
    contrainte_financiere: Option<String>,
    contrainte_numerique: Option<String>,
    contrainte_administrative_juridique: Option<String>,
    contrainte_francais_calcul: Option<String>,
    brsa: Option<bool>,
    boe: Option<bool>,
    baeeh: Option<bool>,
    esat: Option<bool>,
    scolarite_etablissement_specialise: Option<bool>,
    boe_souhait_accompagnement: Option<bool>,
}

impl Criteria {
    fn slot(&mut self, domain: ObstacleDomain) -> Option<&mut Option<String>> {
        Some(match domain {
            ObstacleDomain::Health => &mut self.contrainte_sante,
            ObstacleDomain::Housing => &mut self.contrainte_logement,
            ObstacleDomain::Mobility => &mut self.contrainte_mobilite,
            ObstacleDomain::Family => &mut self.contrainte_familiale,
            ObstacleDomain::Finances => &mut self.contrainte_financiere,
            ObstacleDomain::Digital => &mut self.contrainte_numerique,
            ObstacleDomain::AdministrativeLegal => &mut self.contrainte_administrative_juridique,
            ObstacleDomain::FrenchMaths => &mut self.contrainte_francais_calcul,
            ObstacleDomain::Unclassified => return None,
        })
    }
}

/// Values France Travail's API is seen to use for one domain, besides the
/// impact values every domain takes.
fn domain_codes(domain: ObstacleDomain) -> &'static [&'static str] {
    match domain {
        ObstacleDomain::Health => &["INCAPACITE_RECHERCHE_ACTIVITE_PRO"],
        ObstacleDomain::Housing => &["SANS_LOGEMENT"],
        ObstacleDomain::Mobility => &["AUCUN_MOYEN_DE_TRANSPORT"],
        ObstacleDomain::Family => &["AIDANT_FAMILIAL"],
        ObstacleDomain::Digital => &["NON_ACCES_INTERNET"],
        ObstacleDomain::Finances
        | ObstacleDomain::AdministrativeLegal
        | ObstacleDomain::FrenchMaths
        | ObstacleDomain::Unclassified => &[],
    }
}

/// The France Travail value for an impact. `IMPACT_FORT_RECHERCHE_EMPLOI` is
/// France Travail's; the medium and low values are Passerelle's assumption.
fn impact_code(impact: ObstacleImpact) -> &'static str {
    match impact {
        ObstacleImpact::High => "IMPACT_FORT_RECHERCHE_EMPLOI",
        ObstacleImpact::Medium => "IMPACT_MOYEN_RECHERCHE_EMPLOI",
        ObstacleImpact::Low => "IMPACT_FAIBLE_RECHERCHE_EMPLOI",
    }
}

/// The sender's label as a France Travail value of the domain, if it is one.
/// `AUCUNE` is not taken: an obstacle that says "none" contradicts itself.
fn label_code(obstacle: &Obstacle) -> Option<String> {
    let code = fold(obstacle.source_label.as_deref()?).to_ascii_uppercase();
    let is_impact = ObstacleImpact::ALL.iter().any(|i| impact_code(*i) == code);
    (is_impact || domain_codes(obstacle.domain).contains(&code.as_str())).then_some(code)
}

fn education_code(level: v2::EducationLevel) -> &'static str {
    let wire = level.wire_name();
    wire.strip_prefix("EDUCATION_LEVEL_").unwrap_or(wire)
}

fn fill_obstacles(obstacles: &[Obstacle], criteria: &mut Criteria, losses: &mut LossReport) {
    for (index, obstacle) in obstacles.iter().enumerate() {
        let pointer = format!("/obstacles/{index}");
        let Some(slot) = criteria.slot(obstacle.domain) else {
            losses.lose(
                pointer,
                "the obstacle fits none of France Travail's eight contrainte domains",
            );
            continue;
        };
        if slot.is_some() {
            losses.lose(
                pointer,
                "France Travail holds one value per contrainte domain: an earlier obstacle of this domain is carried",
            );
            continue;
        }
        if let Some(code) = label_code(obstacle) {
            *slot = Some(code);
            if obstacle.impact.is_some() {
                losses.lose(
                    format!("{pointer}/impact"),
                    "the France Travail value in source_label is carried, not the impact",
                );
            }
        } else if let Some(impact) = obstacle.impact {
            *slot = Some(impact_code(impact).to_owned());
            if obstacle.source_label.is_some() {
                losses.lose(
                    format!("{pointer}/source_label"),
                    "the wording is not a France Travail value: only the impact is carried",
                );
            }
        } else {
            losses.lose(
                pointer,
                "neither a France Travail value nor an impact: France Travail's vocabulary has no value for an obstacle only stated present",
            );
        }
    }
}

/// Writes a canonical referral as Passerelle's France Travail envelope (JSON),
/// reporting every field France Travail's orientation cannot carry.
pub fn encode_referral(referral: &v2::Referral) -> Result<Translated<Vec<u8>>, Error> {
    let translated = envelope_of(referral);
    let bytes = serde_json::to_vec(&translated.value)
        .map_err(|error| Error::Internal(format!("encoding JSON: {error}")))?;
    Ok(Translated {
        value: bytes,
        losses: translated.losses,
    })
}

fn envelope_of(referral: &v2::Referral) -> Translated<Envelope> {
    let mut losses = LossReport::default();
    losses.lose(
        "/created_at",
        "France Travail's orientation has no creation date (date_entree_parcours is France Travail's decision)",
    );
    losses.lose(
        "/sender/organisation",
        "France Travail's orientation does not name the partner: France Travail knows it from the API credentials",
    );
    if referral.sender.referent.is_some() {
        losses.lose(
            "/sender/referent",
            "France Travail's orientation has no partner référent (its agent headers name France Travail's own agents)",
        );
    }
    if referral.recipient.service_id.is_some() {
        losses.lose(
            "/recipient/service_id",
            "France Travail's orientation has no data·inclusion service",
        );
    }
    lose_person(&referral.person, &mut losses);

    let mut numero_france_travail = None;
    for (index, identifier) in referral.identifiers.iter().enumerate() {
        if identifier.kind == IdentifierKind::FranceTravail && numero_france_travail.is_none() {
            numero_france_travail = Some(identifier.value.clone());
        } else {
            losses.lose(
                format!("/identifiers/{index}"),
                "France Travail identifies the person by one France Travail number only",
            );
        }
    }

    let mut criteria = Criteria::default();
    if let Some(situation) = &referral.situation {
        if !situation.labels.is_empty() {
            losses.lose(
                "/situation/labels",
                "France Travail's criteria are codes: the sender's situation labels are not carried",
            );
        }
        if situation.other.is_some() {
            losses.lose(
                "/situation/other",
                "France Travail's orientation has no free-text situation",
            );
        }
        criteria.brsa = situation.rsa_beneficiary;
        criteria.boe = situation.recognised_disability;
        criteria.niveau_etude = situation.education_level.map(education_code);
    }
    fill_obstacles(&referral.obstacles, &mut criteria, &mut losses);

    let (parcours, organisme) = match referral.pathway {
        Some(Pathway::Professional) => (Some("PED"), "FT"),
        Some(Pathway::SocioProfessional) => (Some("PSO"), "FT"),
        Some(Pathway::Social) => {
            losses.lose(
                "/pathway",
                "France Travail's parcours has no social pathway: written as PSO with organisme CD (Passerelle's assumption)",
            );
            (Some("PSO"), "CD")
        }
        None => (None, "FT"),
    };
    if referral.axis.is_some() {
        losses.lose("/axis", "France Travail's orientation has no axis");
    }
    if referral.reason.is_some() {
        losses.lose(
            "/reason",
            "France Travail's orientation has no motif: the free text is not carried",
        );
    }
    if referral.consent_reference.is_some() {
        losses.lose(
            "/consent_reference",
            "France Travail's orientation has no consent reference",
        );
    }

    let envelope = Envelope {
        reference_partenaire: referral.referral_id.to_string(),
        numero_france_travail,
        orientation: Orientation {
            parcours,
            organisme,
            structure: Structure {
                code_aurore: None,
                code_safir: None,
                libelle_structure: referral.recipient.organisation.name.clone(),
            },
            statut: None,
            etat: "OUVERT",
            origine: "PARTENAIRE",
            date_entree_parcours: None,
            date_sortie_parcours: None,
            motif_sortie_parcours: None,
            decision: None,
            criteres_orientation: criteria,
        },
    };
    Translated {
        value: envelope,
        losses,
    }
}

fn lose_person(person: &v2::Person, losses: &mut LossReport) {
    const WHY: &str =
        "France Travail identifies the person by the France Travail number only: not carried";
    losses.lose("/person/first_name", WHY);
    losses.lose("/person/last_name", WHY);
    let optional = [
        ("/person/birth_name", person.birth_name.is_some()),
        ("/person/birth_date", person.birth_date.is_some()),
        ("/person/contact", person.contact.is_some()),
        ("/person/address", person.address.is_some()),
        ("/person/availability", person.availability.is_some()),
    ];
    for (pointer, present) in optional {
        if present {
            losses.lose(pointer, WHY);
        }
    }
}

// ---------------------------------------------------------------- decode

/// Reads a France Travail orientation's decision as a status event, with what
/// the event does not carry.
pub fn decode_decision(bytes: &[u8], context: &Context) -> Result<Translated<StatusEvent>, Error> {
    let document = validate::parse_json(bytes, &context.limits)?;
    let mut reader = Reader::default();
    let mut losses = LossReport::default();

    let mut partner_reference = None;
    let is_envelope = document
        .as_object()
        .is_some_and(|members| members.contains_key("orientation"));
    let (orientation, base) = if is_envelope {
        let Some(envelope) = reader.object(&document, "", ENVELOPE_KEYS) else {
            return Err(reader.into_error());
        };
        partner_reference = reader.parsed(&envelope, "reference_partenaire", ReferralId::parse);
        if reader
            .parsed(&envelope, "numeroFranceTravail", FranceTravailNumber::parse)
            .is_some()
        {
            losses.lose(
                "/numeroFranceTravail",
                "a status event names the referral, not the person: the France Travail number is not carried",
            );
        }
        let Some(orientation) = envelope.get("orientation") else {
            reader.required("/orientation", "France Travail's orientation");
            return Err(reader.into_error());
        };
        (orientation, "/orientation")
    } else {
        (&document, "")
    };
    let Some(orientation) = reader.object(orientation, base, ORIENTATION_KEYS) else {
        return Err(reader.into_error());
    };

    lose_orientation(&mut reader, &orientation, &mut losses);
    let decision = read_decision(&mut reader, &orientation, &mut losses);
    reader.finish()?;
    let Some(decision) = decision else {
        return Err(Error::Internal(
            "a decision was missing without a violation".to_owned(),
        ));
    };

    let author = context.sender.as_ref().ok_or_else(|| {
        Error::UnsupportedFormat(
            "france-travail needs the organisation posting the decision (the France Travail agency), which the orientation does not name: give it as the sender (--sender on the command line)".to_owned(),
        )
    })?;
    let referral_id = match (partner_reference, context.referral_id) {
        (Some(reference), Some(given)) if reference != given => {
            return Err(Error::invalid(
                "/reference_partenaire",
                "referral-id-conflict",
                "the same referral id as the one given with the document, found a different one",
            ));
        }
        (Some(reference), _) => reference,
        (None, Some(given)) => given,
        (None, None) => {
            return Err(Error::invalid(
                "/reference_partenaire",
                "required",
                "the Passerelle referral id this decision answers, found none: France Travail's orientation does not carry it; send the envelope with reference_partenaire, or pass --referral-id",
            ));
        }
    };

    let event_id = ReferralId::derived(
        EVENT_ID_SOURCE,
        &format!(
            "{referral_id}\u{1f}{}\u{1f}{}",
            decision.state,
            decision.date_text.as_deref().unwrap_or_default()
        ),
    );
    let (status, rejection_reason) = match decision.state {
        "ACCEPTEE" => (Status::Accepted, None),
        _ => (Status::Rejected, Some(decision.rejection_reason)),
    };
    let event = StatusEvent {
        event_id,
        schema_version: StatusV1Tag,
        referral_id,
        status,
        occurred_at: decision.occurred_at.unwrap_or(context.now),
        author_siret: author.siret.clone(),
        rejection_reason,
        outcome: None,
        appointment_at: None,
        comment: decision.comment,
    };
    Ok(Translated {
        value: event,
        losses,
    })
}

/// Checks the orientation members a status event does not carry, and names
/// each one set in the loss report.
fn lose_orientation(reader: &mut Reader, orientation: &Fields<'_>, losses: &mut LossReport) {
    const WHY: &str = "a status event carries the decision only";
    for key in ORIENTATION_TEXT_KEYS {
        if reader.text(orientation, key, CODE_MAX).is_some() {
            losses.lose(orientation.pointer_to(key), WHY);
        }
    }
    for key in ["date_entree_parcours", "date_sortie_parcours"] {
        if reader.date(orientation, key).is_some() {
            losses.lose(orientation.pointer_to(key), WHY);
        }
    }
    if let Some(value) = orientation.get("structure") {
        let pointer = orientation.pointer_to("structure");
        if let Some(structure) = reader.object(value, &pointer, STRUCTURE_KEYS) {
            let mut set = false;
            for key in STRUCTURE_KEYS {
                set |= reader.text(&structure, key, CODE_MAX).is_some();
            }
            if set {
                losses.lose(
                    pointer,
                    "a status event carries the decision only; its author is the organisation posting it",
                );
            }
        }
    }
    if let Some(value) = orientation.get("criteres_orientation") {
        let pointer = orientation.pointer_to("criteres_orientation");
        let known: Vec<&str> = CRITERIA_TEXT_KEYS
            .iter()
            .chain(CRITERIA_FLAG_KEYS)
            .copied()
            .collect();
        if let Some(criteria) = reader.object(value, &pointer, &known) {
            let mut set = false;
            for key in CRITERIA_TEXT_KEYS {
                set |= reader.text(&criteria, key, CODE_MAX).is_some();
            }
            for key in CRITERIA_FLAG_KEYS {
                set |= reader.boolean(&criteria, key).is_some();
            }
            if set {
                losses.lose(
                    pointer,
                    "a status event carries the decision only: France Travail's criteria are not carried",
                );
            }
        }
    }
}

/// What a status event takes from `decision`.
struct Decision {
    state: &'static str,
    rejection_reason: RejectionReason,
    date_text: Option<String>,
    occurred_at: Option<DateTime<Utc>>,
    comment: Option<String>,
}

fn read_decision(
    reader: &mut Reader,
    orientation: &Fields<'_>,
    losses: &mut LossReport,
) -> Option<Decision> {
    let pointer = orientation.pointer_to("decision");
    let Some(value) = orientation.get("decision") else {
        reader.required(
            &pointer,
            "a decision (etat_decision ACCEPTEE or REFUSEE): an orientation without one has nothing to turn into a status event",
        );
        return None;
    };
    let decision = reader.object(value, &pointer, DECISION_KEYS)?;

    let state = match reader
        .required_text(&decision, "etat_decision", CODE_MAX)
        .as_deref()
    {
        Some("ACCEPTEE") => Some("ACCEPTEE"),
        Some("REFUSEE") => Some("REFUSEE"),
        Some(_) => {
            reader.push(Violation::new(
                decision.pointer_to("etat_decision"),
                "enum",
                "one of ACCEPTEE, REFUSEE, found another value",
            ));
            None
        }
        None => None,
    };
    let occurred_at = reader.parsed(&decision, "date_decision", parse_instant);
    let date_text = occurred_at
        .and(decision.get("date_decision"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    if reader
        .text(&decision, "organisme_decision", CODE_MAX)
        .is_some()
    {
        losses.lose(
            decision.pointer_to("organisme_decision"),
            "the deciding organisme is not carried: the event's author is the organisation posting it",
        );
    }
    if reader.text(&decision, "agent_decision", CODE_MAX).is_some() {
        losses.lose(
            decision.pointer_to("agent_decision"),
            "an agent's identifier is personal data of France Travail's staff: never carried",
        );
    }
    let motif = reader.text(&decision, "motif_refus", CODE_MAX);
    let comment = reader.text(&decision, "commentaire_refus", COMMENT_MAX);

    let state = state?;
    let motif_pointer = decision.pointer_to("motif_refus");
    let rejection_reason = match (state, motif.as_deref()) {
        (_, None) => RejectionReason::Other,
        ("ACCEPTEE", Some(_)) => {
            losses.lose(
                motif_pointer,
                "an accepted decision carries no rejection reason",
            );
            RejectionReason::Other
        }
        (_, Some("APPRECIATION_DIFFERENTE")) => RejectionReason::DifferentAssessment,
        (_, Some("DECLARATION_INEXACTE")) => RejectionReason::InaccurateDeclaration,
        (_, Some(_)) => {
            losses.lose(
                motif_pointer,
                "a refusal code Passerelle does not know: carried as REJECTION_REASON_OTHER",
            );
            RejectionReason::Other
        }
    };
    Some(Decision {
        state,
        rejection_reason,
        date_text,
        occurred_at,
        comment,
    })
}

/// A decision date: a calendar date, taken at 00:00 UTC, or an RFC 3339 date-time.
fn parse_instant(text: &str) -> Result<DateTime<Utc>, ValueError> {
    if text.len() == 10 {
        return parse_date(text)
            .map(|date: NaiveDate| date.and_time(chrono::NaiveTime::MIN).and_utc());
    }
    DateTime::parse_from_rfc3339(text)
        .map(|instant| instant.with_timezone(&Utc))
        .map_err(|_| ValueError {
            rule: "date-format",
            expected: "an ISO 8601 date (YYYY-MM-DD) or an RFC 3339 date-time",
            found: shape_of(text),
        })
}

impl Format for FranceTravail {
    fn name(&self) -> &'static str {
        "france-travail"
    }

    fn description(&self) -> &'static str {
        "France Travail orientationusager/v1: reads an orientation's decision as a status event; writes a referral as an orientation in Passerelle's envelope (reference_partenaire, numeroFranceTravail, orientation)"
    }

    fn limits(&self) -> &'static str {
        "One orientation per input, at most the configured size and depth; unknown members are refused, all listed. Writing: the envelope is Passerelle's, France Travail's API takes the number in the path; the orientation carries the pathway (social → PSO with organisme CD, an assumption), the recipient's name, RSA, recognised disability, education level and one contrainte per domain (impact MEDIUM/LOW values are an assumption; a domain without an obstacle is null, never AUCUNE). Names, contact, address, birth date, sender, référent, reason, consent reference, other identifiers, situation labels and unclassified, duplicate or valueless obstacles are not carried and are named in the loss report. Status events cannot be written. Reading: only decisions (ACCEPTEE, REFUSEE) become status events; the author comes from the context sender; the referral id from reference_partenaire or the context; date_decision is taken at 00:00 UTC; agent_decision and the rest of the orientation are not carried (loss report)."
    }

    fn can_decode(&self) -> bool {
        true
    }

    fn can_encode(&self) -> bool {
        true
    }

    fn decode<'a>(
        &'a self,
        input: Box<dyn Read + 'a>,
        context: &'a Context,
    ) -> Result<Records<'a>, Error> {
        let bytes = read_limited(input, &context.limits)?;
        Ok(single(decode_decision(&bytes, context).map(|translated| {
            Translated {
                value: Message::Status(Box::new(translated.value)),
                losses: translated.losses,
            }
        })))
    }

    fn encode(&self, message: &Message, _context: &Context) -> Result<Translated<Vec<u8>>, Error> {
        match message {
            Message::Referral(referral) => encode_referral(referral),
            Message::Status(_) => Err(Error::UnsupportedFormat(
                "france-travail cannot write status events: France Travail's orientation API takes referrals; its decisions come back and are read as status events".to_owned(),
            )),
        }
    }
}
