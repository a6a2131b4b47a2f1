//! DORA-style orientation JSON → canonical referral (version 2). Decode only.
//!
//! The shape is the orientation form of DORA (the GIP Plateforme de
//! l'inclusion's service directory): flat `beneficiary_*` and `referent_*`
//! members, `situation[]`, `requirements[]`, `orientation_reasons`,
//! `prescriber_structure` (here a SIRET) and `di_service_id`. Length limits
//! follow DORA's own model (names 140, other contact method 280, situation and
//! requirement items 480); `orientation_reasons` is capped at 600 characters.
//!
//! Choices this adapter makes, because DORA does not say:
//! - **Keys are strict**: a member outside the list below is an error, and every
//!   unknown member is listed, so nothing the sender meant to send is dropped.
//! - **Empty strings and `null` mean absent**, as in DORA's `blank=True` fields.
//! - **`data_protection_commitment` must be `true`**: it is the advisor's
//!   commitment to inform the person (engagement RGPD accompagnateur); without
//!   it the referral is refused. It is recorded as the consent reference
//!   `urn:passerelle:dora-commitment:<referral_id>`, a lawful-basis reference the
//!   consent stage resolves, not a consent record by itself.
//! - **Recipient**: DORA names a service, not an organisation, so the recipient
//!   comes from the context; `di_service_id` becomes `recipient.service_id`.
//! - **Sender kind**: DORA does not say what kind of structure the prescriber
//!   is. When the context's sender has the same SIRET, its kind and name are
//!   used; otherwise the kind is `ORGANISATION_KIND_OTHER`, never a guess.
//! - **Referral id**: DORA carries none, so it is derived (UUID v5) from the
//!   recipient's SIRET and a canonical text of the document (keys sorted, null
//!   and empty members dropped): the same submission to the same recipient
//!   always gets the same id, which makes re-posting idempotent.
//! - **`created_at`** is the context's clock: DORA documents carry no date.
//! - `requirements[]` (the service's criteria the prescriber ticked) and the
//!   service duration (`duration_weekly_hours`, `duration_weeks`) have no
//!   canonical field: they are named in the loss report, never dropped silently.
//!   Situation labels stay labels: "Bénéficiaire du RSA" is not turned into
//!   `rsa_beneficiary`, because the wording is the sender's, not a code.

use std::fmt::Write as _;
use std::io::Read;

use serde_json::Value;

use crate::error::{Error, Violation};
use crate::model::common::{
    ContactPreference, Organisation, OrganisationKind, Recipient, Referent, Sender,
};
use crate::model::ids::{Email, FranceTravailNumber, Phone, ReferralId, Siret};
use crate::model::v2::{self, Identifier, IdentifierKind};
use crate::model::{LossReport, Message, Translated};
use crate::validate;

use super::json_fields::{Fields, Reader, is_absent, json_type};
use super::{Context, Format, Records, read_limited, single};

/// DORA-style orientation JSON (decode only).
#[derive(Debug)]
pub struct Dora;

/// Every member a DORA orientation may have.
const KNOWN_KEYS: &[&str] = &[
    "beneficiary_first_name",
    "beneficiary_last_name",
    "beneficiary_france_travail_number",
    "beneficiary_phone",
    "beneficiary_email",
    "beneficiary_other_contact_method",
    "beneficiary_availability",
    "beneficiary_contact_preferences",
    "situation",
    "requirements",
    "situation_other",
    "orientation_reasons",
    "referent_first_name",
    "referent_last_name",
    "referent_phone",
    "referent_email",
    "prescriber_structure",
    "di_service_id",
    "data_protection_commitment",
    "duration_weekly_hours",
    "duration_weeks",
];

/// Longest name DORA stores (its `max_length=140`).
const NAME_MAX: usize = 140;
/// Longest "other contact method" DORA stores.
const OTHER_CONTACT_MAX: usize = 280;
/// Longest situation or requirement item, and `situation_other`, DORA stores.
const ITEM_MAX: usize = 480;
/// Longest motif accepted; DORA's form asks for a short text with nothing sensitive.
const REASONS_MAX: usize = 600;
/// Longest data·inclusion service id accepted (ids are short slugs).
const SERVICE_ID_MAX: usize = 255;

/// The source name under which DORA referral ids are derived.
const ID_SOURCE: &str = "dora";

/// The consent reference recorded for a DORA advisor's commitment.
pub fn commitment_reference(referral_id: ReferralId) -> String {
    format!("urn:passerelle:dora-commitment:{referral_id}")
}

/// Decodes one DORA orientation into a canonical referral, with what it lost.
pub fn decode_orientation(
    bytes: &[u8],
    context: &Context,
) -> Result<Translated<v2::Referral>, Error> {
    let document = validate::parse_json(bytes, &context.limits)?;
    let mut reader = Reader::default();
    let Some(fields) = reader.object(&document, "", KNOWN_KEYS) else {
        return Err(reader.into_error());
    };

    let first_name = reader.required_text(&fields, "beneficiary_first_name", NAME_MAX);
    let last_name = reader.required_text(&fields, "beneficiary_last_name", NAME_MAX);
    let france_travail_number = reader.parsed(
        &fields,
        "beneficiary_france_travail_number",
        FranceTravailNumber::parse,
    );
    let phone = reader.parsed(&fields, "beneficiary_phone", Phone::parse);
    let email = reader.parsed(&fields, "beneficiary_email", Email::parse);
    let other_method = reader.text(
        &fields,
        "beneficiary_other_contact_method",
        OTHER_CONTACT_MAX,
    );
    let availability = reader.date(&fields, "beneficiary_availability");
    let preferences = contact_preferences(&mut reader, &fields);
    let situation_labels = reader.texts(&fields, "situation", ITEM_MAX);
    let requirements = reader.texts(&fields, "requirements", ITEM_MAX);
    let situation_other = reader.text(&fields, "situation_other", ITEM_MAX);
    let reason = reader.text(&fields, "orientation_reasons", REASONS_MAX);
    let referent = Referent {
        first_name: reader.text(&fields, "referent_first_name", NAME_MAX),
        last_name: reader.text(&fields, "referent_last_name", NAME_MAX),
        email: reader.parsed(&fields, "referent_email", Email::parse),
        phone: reader.parsed(&fields, "referent_phone", Phone::parse),
    };
    let prescriber = reader.parsed(&fields, "prescriber_structure", Siret::parse);
    if prescriber.is_none() && !fields.is_set("prescriber_structure") {
        reader.required("prescriber_structure", "the prescriber's SIRET");
    }
    let service_id = reader.text(&fields, "di_service_id", SERVICE_ID_MAX);
    check_commitment(&mut reader, &fields);
    let weekly_hours = reader.count(&fields, "duration_weekly_hours");
    let weeks = reader.count(&fields, "duration_weeks");

    reader.finish()?;
    let (Some(first_name), Some(last_name), Some(prescriber)) = (first_name, last_name, prescriber)
    else {
        return Err(Error::Internal(
            "a required DORA member was missing without a violation".to_owned(),
        ));
    };
    let recipient = context.recipient.clone().ok_or_else(|| {
        Error::UnsupportedFormat(
            "dora needs the recipient organisation, which DORA orientations do not name: give it with the document (--recipient on the command line)".to_owned(),
        )
    })?;

    let mut losses = LossReport::default();
    if !requirements.is_empty() {
        losses.lose(
            "/requirements",
            "the service criteria the prescriber ticked have no canonical field",
        );
    }
    if weekly_hours.is_some() {
        losses.lose(
            "/duration_weekly_hours",
            "the service's hours per week have no canonical field",
        );
    }
    if weeks.is_some() {
        losses.lose(
            "/duration_weeks",
            "the service's length in weeks has no canonical field",
        );
    }

    let referral_id = ReferralId::derived(
        ID_SOURCE,
        &format!("{}\u{1f}{}", recipient.siret, canonical_text(&document)),
    );
    let sender_organisation = match &context.sender {
        Some(sender) if sender.siret == prescriber => sender.clone(),
        _ => Organisation {
            siret: prescriber,
            kind: OrganisationKind::Other,
            name: None,
        },
    };
    let contact = v2::Contact {
        phone,
        email,
        other_method,
        preferences,
    };
    let situation = v2::Situation {
        labels: situation_labels,
        other: situation_other,
        ..v2::Situation::default()
    };
    let referral = v2::Referral {
        referral_id,
        schema_version: v2::ReferralV2Tag,
        created_at: context.now,
        sender: Sender {
            organisation: sender_organisation,
            referent: (referent != Referent::default()).then_some(referent),
        },
        recipient: Recipient {
            organisation: recipient,
            service_id,
        },
        person: v2::Person {
            first_name,
            last_name,
            birth_name: None,
            birth_date: None,
            contact: (!contact.is_empty()).then_some(contact),
            address: None,
            availability,
        },
        identifiers: france_travail_number
            .map(|number| Identifier {
                kind: IdentifierKind::FranceTravail,
                value: number.into(),
            })
            .into_iter()
            .collect(),
        situation: (situation != v2::Situation::default()).then_some(situation),
        obstacles: Vec::new(),
        pathway: None,
        axis: None,
        reason,
        consent_reference: Some(commitment_reference(referral_id)),
    };
    Ok(Translated {
        value: referral,
        losses,
    })
}

fn contact_preferences(reader: &mut Reader, fields: &Fields<'_>) -> Vec<ContactPreference> {
    const CODES: &[(&str, ContactPreference)] = &[
        ("TELEPHONE", ContactPreference::Phone),
        ("EMAIL", ContactPreference::Email),
        ("REFERENT", ContactPreference::Referent),
        ("AUTRE", ContactPreference::Other),
    ];
    let mut preferences = Vec::new();
    for preference in reader.codes(fields, "beneficiary_contact_preferences", CODES) {
        // A repeated preference says nothing more; the canonical list holds each once.
        if !preferences.contains(&preference) {
            preferences.push(preference);
        }
    }
    preferences
}

fn check_commitment(reader: &mut Reader, fields: &Fields<'_>) {
    const RULE: &str = "data-protection-commitment";
    const EXPECTED: &str = "true: the advisor's commitment to inform the person of this referral and of the data sent (engagement RGPD accompagnateur)";
    let found = match fields.get("data_protection_commitment") {
        Some(Value::Bool(true)) => return,
        Some(Value::Bool(false)) => "false",
        None => "none",
        Some(other) => {
            reader.push(Violation::new(
                "/data_protection_commitment",
                "type",
                format!("a boolean, found {}", json_type(other)),
            ));
            return;
        }
    };
    reader.push(Violation::new(
        "/data_protection_commitment",
        RULE,
        format!("{EXPECTED}, found {found}: the referral cannot be forwarded without it"),
    ));
}

/// A canonical text of a document: object keys sorted, members that are
/// `null` or `""` dropped (they mean absent), so that two spellings of the
/// same submission give the same text.
fn canonical_text(value: &Value) -> String {
    let mut text = String::new();
    write_canonical(value, &mut text);
    text
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut members: Vec<(&String, &Value)> = map
                .iter()
                .filter(|(_, member)| !is_absent(member))
                .collect();
            members.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (position, (key, member)) in members.into_iter().enumerate() {
                if position > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(member, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (position, item) in items.iter().enumerate() {
                if position > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => {
            let _ = write!(out, "{scalar}");
        }
    }
}

impl Format for Dora {
    fn name(&self) -> &'static str {
        "dora"
    }

    fn description(&self) -> &'static str {
        "DORA-style orientation JSON (beneficiary_*, referent_*, situation[], orientation_reasons, data_protection_commitment), read into a canonical v2 referral"
    }

    fn limits(&self) -> &'static str {
        "Decode only; one orientation per input, at most the configured size and depth. Unknown members are refused, all listed. The recipient comes from the context (DORA names a service, not an organisation); the referral id is derived from the recipient and the document, created_at is the time of reading, the consent reference stands for the advisor's data-protection commitment, which must be true. The prescriber's kind is taken from the context sender when the SIRETs match, else ORGANISATION_KIND_OTHER. Not carried, and named in the loss report: requirements[], duration_weekly_hours, duration_weeks. DORA has no birth date, address, obstacles, pathway or axis, so the referral has none."
    }

    fn can_decode(&self) -> bool {
        true
    }

    fn can_encode(&self) -> bool {
        false
    }

    fn decode<'a>(
        &'a self,
        input: Box<dyn Read + 'a>,
        context: &'a Context,
    ) -> Result<Records<'a>, Error> {
        let bytes = read_limited(input, &context.limits)?;
        Ok(single(decode_orientation(&bytes, context).map(
            |translated| Translated {
                value: Message::Referral(Box::new(translated.value)),
                losses: translated.losses,
            },
        )))
    }

    fn encode(&self, _message: &Message, _context: &Context) -> Result<Translated<Vec<u8>>, Error> {
        Err(Error::UnsupportedFormat(
            "dora is read only: Passerelle receives DORA orientations but does not write them; encode to passerelle-v2 or the recipient's format".to_owned(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_text_ignores_key_order_and_absent_members() {
        let a: Value =
            serde_json::from_str(r#"{"b":1,"a":["x",""],"c":"","d":null}"#).expect("JSON");
        let b: Value = serde_json::from_str(r#"{"a":["x",""],"b":1}"#).expect("JSON");
        assert_eq!(canonical_text(&a), canonical_text(&b));
        assert_eq!(canonical_text(&b), r#"{"a":["x",""],"b":1}"#);
    }
}
