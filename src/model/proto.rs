//! Protobuf messages generated from `proto/` (prost, compiled by protox in
//! build.rs), and conversions between them and the canonical model.
//!
//! Canonical → proto is infallible ([`From`]). Proto → canonical
//! ([`TryFrom`]) checks what the canonical types require and lists every
//! failure as an [`Error::Invalid`] violation at the JSON pointer the field
//! has in the JSON form (proto field names are the JSON names), so a binary
//! and a JSON document with the same fault get the same answer:
//! - a missing required field or message (proto3's empty string, zero enum,
//!   absent message) → rule `required`;
//! - an enum number the schema version does not define → rule `enum`;
//! - a value refused by its parser → that parser's rule (`siret-checksum`, ...);
//! - a malformed date or out-of-range timestamp → rule `format`.
//!
//! Proto3 cannot tell an empty string from an absent one: both are "not set".
//! Rules that only the JSON Schema states (lengths, uniqueness, patterns of
//! free-form identifiers) are applied by the protobuf adapter, which validates
//! the converted document against the same schema as JSON input.

use chrono::{DateTime, NaiveDate, Utc};

use crate::error::{Error, Violation};
use crate::model::common::{
    Axis, ContactPreference, Organisation, OrganisationKind, Pathway, Recipient, Referent, Sender,
};
use crate::model::ids::{
    Email, FranceTravailNumber, InseeCode, Nir, Phone, PostalCode, ReferralId, Siret, ValueError,
    shape_of,
};
use crate::model::status::{Outcome, RejectionReason, Status, StatusEvent, StatusV1Tag};
use crate::model::{v1, v2};

/// `passerelle.referral.v1`.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod referral_v1 {
    include!(concat!(env!("OUT_DIR"), "/passerelle.referral.v1.rs"));
}

/// `passerelle.referral.v2`.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod referral_v2 {
    include!(concat!(env!("OUT_DIR"), "/passerelle.referral.v2.rs"));
}

/// `passerelle.status.v1`.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod status_v1 {
    include!(concat!(env!("OUT_DIR"), "/passerelle.status.v1.rs"));
}

/// `passerelle.consent.v1`.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod consent_v1 {
    include!(concat!(env!("OUT_DIR"), "/passerelle.consent.v1.rs"));
}

/// The encoded `FileDescriptorSet` of every Passerelle proto (for reflection and the parity test).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/passerelle_descriptor.bin"));

/// Earliest and latest instants of the proto3 JSON mapping of `Timestamp`
/// (0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z), in Unix seconds.
const TIMESTAMP_SECONDS: std::ops::RangeInclusive<i64> = -62_135_596_800..=253_402_300_799;

/// Collects the violations of one conversion, so that all are reported at once.
#[derive(Default)]
struct Check {
    violations: Vec<Violation>,
}

impl Check {
    fn push(&mut self, pointer: &str, rule: &str, detail: impl Into<String>) {
        self.violations
            .push(Violation::new(pointer.to_owned(), rule, detail));
    }

    fn missing(&mut self, pointer: &str) {
        self.push(pointer, "required", "a value, found none");
    }

    /// The error for a conversion that found violations.
    fn into_error(self) -> Error {
        if self.violations.is_empty() {
            Error::Internal("a protobuf conversion failed without naming a violation".to_owned())
        } else {
            Error::Invalid(self.violations)
        }
    }

    fn parsed<T>(&mut self, pointer: &str, result: Result<T, ValueError>) -> Option<T> {
        result
            .map_err(|error| {
                self.push(
                    pointer,
                    error.rule,
                    format!("expected {}, found {}", error.expected, error.found),
                );
            })
            .ok()
    }

    /// A required string: proto3's empty string means "not set".
    fn text(&mut self, pointer: &str, text: String) -> Option<String> {
        if text.is_empty() {
            self.missing(pointer);
            None
        } else {
            Some(text)
        }
    }

    /// A required value checked by its parser.
    fn value<T>(
        &mut self,
        pointer: &str,
        text: &str,
        parse: impl FnOnce(&str) -> Result<T, ValueError>,
    ) -> Option<T> {
        if text.is_empty() {
            self.missing(pointer);
            None
        } else {
            self.parsed(pointer, parse(text))
        }
    }

    /// An optional value checked by its parser. The outer `Option` is `None`
    /// when the value was refused (a violation is recorded).
    fn optional_value<T>(
        &mut self,
        pointer: &str,
        text: &str,
        parse: impl FnOnce(&str) -> Result<T, ValueError>,
    ) -> Option<Option<T>> {
        if text.is_empty() {
            Some(None)
        } else {
            self.parsed(pointer, parse(text)).map(Some)
        }
    }

    /// A required message.
    fn message<M>(&mut self, pointer: &str, message: Option<M>) -> Option<M> {
        if message.is_none() {
            self.missing(pointer);
        }
        message
    }

    /// A required enum: 0 is the proto's `*_UNSPECIFIED`, i.e. not set.
    fn required_enum<E>(
        &mut self,
        pointer: &str,
        number: i32,
        from_number: fn(i32) -> Option<E>,
    ) -> Option<E> {
        if number == 0 {
            self.missing(pointer);
            return None;
        }
        self.known_enum(pointer, number, from_number)
    }

    /// An optional enum: 0 is "not set". The outer `Option` is `None` when
    /// the number is unknown (a violation is recorded).
    fn optional_enum<E>(
        &mut self,
        pointer: &str,
        number: i32,
        from_number: fn(i32) -> Option<E>,
    ) -> Option<Option<E>> {
        if number == 0 {
            Some(None)
        } else {
            self.known_enum(pointer, number, from_number).map(Some)
        }
    }

    fn known_enum<E>(
        &mut self,
        pointer: &str,
        number: i32,
        from_number: fn(i32) -> Option<E>,
    ) -> Option<E> {
        let value = from_number(number);
        if value.is_none() {
            let found = if number == 0 {
                "0 (unspecified)".to_owned()
            } else {
                format!("the number {number}")
            };
            self.push(
                pointer,
                "enum",
                format!("a value this schema version defines, found {found}"),
            );
        }
        value
    }

    /// A repeated enum: every element must be a defined, specified value.
    fn enum_list<E>(
        &mut self,
        pointer: &str,
        numbers: &[i32],
        from_number: fn(i32) -> Option<E>,
    ) -> Option<Vec<E>> {
        let mut values = Vec::with_capacity(numbers.len());
        let mut complete = true;
        for (index, number) in numbers.iter().enumerate() {
            match self.known_enum(&format!("{pointer}/{index}"), *number, from_number) {
                Some(value) => values.push(value),
                None => complete = false,
            }
        }
        complete.then_some(values)
    }

    /// An optional ISO 8601 calendar date (`YYYY-MM-DD`).
    fn date(&mut self, pointer: &str, text: &str) -> Option<Option<NaiveDate>> {
        if text.is_empty() {
            return Some(None);
        }
        let shaped = text.len() == 10
            && text.bytes().enumerate().all(|(index, byte)| match index {
                4 | 7 => byte == b'-',
                _ => byte.is_ascii_digit(),
            });
        match NaiveDate::parse_from_str(text, "%Y-%m-%d") {
            Ok(date) if shaped => Some(Some(date)),
            _ => {
                self.push(
                    pointer,
                    "format",
                    format!(
                        "a calendar date YYYY-MM-DD, found {}",
                        if shaped {
                            "a day that does not exist".to_owned()
                        } else {
                            shape_of(text)
                        }
                    ),
                );
                None
            }
        }
    }

    /// A required timestamp.
    fn timestamp(
        &mut self,
        pointer: &str,
        timestamp: Option<prost_types::Timestamp>,
    ) -> Option<DateTime<Utc>> {
        let timestamp = self.message(pointer, timestamp)?;
        self.instant(pointer, timestamp)
    }

    /// An optional timestamp.
    fn optional_timestamp(
        &mut self,
        pointer: &str,
        timestamp: Option<prost_types::Timestamp>,
    ) -> Option<Option<DateTime<Utc>>> {
        match timestamp {
            None => Some(None),
            Some(timestamp) => self.instant(pointer, timestamp).map(Some),
        }
    }

    fn instant(
        &mut self,
        pointer: &str,
        timestamp: prost_types::Timestamp,
    ) -> Option<DateTime<Utc>> {
        let instant = u32::try_from(timestamp.nanos)
            .ok()
            .filter(|nanos| {
                *nanos < 1_000_000_000 && TIMESTAMP_SECONDS.contains(&timestamp.seconds)
            })
            .and_then(|nanos| DateTime::from_timestamp(timestamp.seconds, nanos));
        if instant.is_none() {
            self.push(
                pointer,
                "format",
                "a Timestamp between 0001-01-01 and 9999-12-31 with nanos in 0..=999999999, found one out of range",
            );
        }
        instant
    }
}

/// An optional proto3 string: empty means "not set".
fn optional_text(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

fn timestamp_of(instant: &DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: instant.timestamp(),
        // chrono stores a leap second as nanos ≥ 10⁹, which a Timestamp cannot
        // hold: it becomes the last nanosecond of the second before.
        nanos: i32::try_from(instant.timestamp_subsec_nanos().min(999_999_999)).unwrap_or(0),
    }
}

fn date_text(date: Option<NaiveDate>) -> String {
    date.map(|date| date.format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

/// The text of an optional checked value; empty ("not set") when absent.
fn text_of<T: Clone + Into<String>>(value: Option<&T>) -> String {
    value.cloned().map(Into::into).unwrap_or_default()
}

fn number_of<E>(value: Option<E>, number: fn(E) -> i32) -> i32 {
    value.map_or(0, number)
}

/// The organisation, sender, recipient and référent messages have the same
/// shape in both referral packages: one set of conversions per package.
macro_rules! shared_conversions {
    ($module:ident, $package:ident) => {
        mod $module {
            use super::*;

            type ProtoOrganisation = super::$package::Organisation;
            type ProtoReferent = super::$package::Referent;
            type ProtoSender = super::$package::Sender;
            type ProtoRecipient = super::$package::Recipient;

            fn organisation(
                check: &mut Check,
                pointer: &str,
                message: ProtoOrganisation,
            ) -> Option<Organisation> {
                let siret = check.value(&format!("{pointer}/siret"), &message.siret, Siret::parse);
                let kind = check.required_enum(
                    &format!("{pointer}/kind"),
                    message.kind,
                    OrganisationKind::from_number,
                );
                Some(Organisation {
                    siret: siret?,
                    kind: kind?,
                    name: optional_text(message.name),
                })
            }

            fn referent(
                check: &mut Check,
                pointer: &str,
                message: ProtoReferent,
            ) -> Option<Referent> {
                let email =
                    check.optional_value(&format!("{pointer}/email"), &message.email, Email::parse);
                let phone =
                    check.optional_value(&format!("{pointer}/phone"), &message.phone, Phone::parse);
                Some(Referent {
                    first_name: optional_text(message.first_name),
                    last_name: optional_text(message.last_name),
                    email: email?,
                    phone: phone?,
                })
            }

            pub(super) fn sender(
                check: &mut Check,
                pointer: &str,
                message: ProtoSender,
            ) -> Option<Sender> {
                let organisation_pointer = format!("{pointer}/organisation");
                let organisation = check
                    .message(&organisation_pointer, message.organisation)
                    .and_then(|message| organisation(check, &organisation_pointer, message));
                let referent = match message.referent {
                    Some(message) => {
                        referent(check, &format!("{pointer}/referent"), message).map(Some)
                    }
                    None => Some(None),
                };
                Some(Sender {
                    organisation: organisation?,
                    referent: referent?,
                })
            }

            pub(super) fn recipient(
                check: &mut Check,
                pointer: &str,
                message: ProtoRecipient,
            ) -> Option<Recipient> {
                let organisation_pointer = format!("{pointer}/organisation");
                let organisation = check
                    .message(&organisation_pointer, message.organisation)
                    .and_then(|message| organisation(check, &organisation_pointer, message));
                Some(Recipient {
                    organisation: organisation?,
                    service_id: optional_text(message.service_id),
                })
            }

            impl From<&Organisation> for ProtoOrganisation {
                fn from(organisation: &Organisation) -> Self {
                    Self {
                        siret: organisation.siret.as_str().to_owned(),
                        kind: organisation.kind.number(),
                        name: organisation.name.clone().unwrap_or_default(),
                    }
                }
            }

            impl From<&Referent> for ProtoReferent {
                fn from(referent: &Referent) -> Self {
                    Self {
                        first_name: referent.first_name.clone().unwrap_or_default(),
                        last_name: referent.last_name.clone().unwrap_or_default(),
                        email: text_of(referent.email.as_ref()),
                        phone: text_of(referent.phone.as_ref()),
                    }
                }
            }

            impl From<&Sender> for ProtoSender {
                fn from(sender: &Sender) -> Self {
                    Self {
                        organisation: Some((&sender.organisation).into()),
                        referent: sender.referent.as_ref().map(Into::into),
                    }
                }
            }

            impl From<&Recipient> for ProtoRecipient {
                fn from(recipient: &Recipient) -> Self {
                    Self {
                        organisation: Some((&recipient.organisation).into()),
                        service_id: recipient.service_id.clone().unwrap_or_default(),
                    }
                }
            }
        }
    };
}

shared_conversions!(shared_v1, referral_v1);
shared_conversions!(shared_v2, referral_v2);

/// The checks every referral version shares at its top level.
struct Envelope {
    referral_id: Option<ReferralId>,
    created_at: Option<DateTime<Utc>>,
}

fn envelope(
    check: &mut Check,
    referral_id: &str,
    schema_version: &str,
    expected_version: &str,
    created_at: Option<prost_types::Timestamp>,
) -> Envelope {
    let referral_id = check.value("/referral_id", referral_id, ReferralId::parse);
    if schema_version.is_empty() {
        check.missing("/schema_version");
    } else if schema_version != expected_version {
        check.push(
            "/schema_version",
            "const",
            format!("exactly \"{expected_version}\""),
        );
    }
    let created_at = check.timestamp("/created_at", created_at);
    Envelope {
        referral_id,
        created_at,
    }
}

// ---------------------------------------------------------------- version 2

impl From<&v2::Referral> for referral_v2::Referral {
    fn from(referral: &v2::Referral) -> Self {
        let person = &referral.person;
        Self {
            referral_id: referral.referral_id.to_string(),
            schema_version: v2::ReferralV2Tag::VALUE.to_owned(),
            created_at: Some(timestamp_of(&referral.created_at)),
            sender: Some((&referral.sender).into()),
            recipient: Some((&referral.recipient).into()),
            person: Some(referral_v2::Person {
                first_name: person.first_name.clone(),
                last_name: person.last_name.clone(),
                birth_name: person.birth_name.clone().unwrap_or_default(),
                birth_date: date_text(person.birth_date),
                contact: person.contact.as_ref().map(|contact| referral_v2::Contact {
                    phone: text_of(contact.phone.as_ref()),
                    email: text_of(contact.email.as_ref()),
                    other_method: contact.other_method.clone().unwrap_or_default(),
                    preferences: contact
                        .preferences
                        .iter()
                        .map(|preference| preference.number())
                        .collect(),
                }),
                address: person.address.as_ref().map(|address| referral_v2::Address {
                    postal_code: text_of(address.postal_code.as_ref()),
                    insee_code: text_of(address.insee_code.as_ref()),
                    city: address.city.clone().unwrap_or_default(),
                }),
                availability: date_text(person.availability),
            }),
            identifiers: referral
                .identifiers
                .iter()
                .map(|identifier| referral_v2::Identifier {
                    kind: identifier.kind.number(),
                    value: identifier.value.clone(),
                })
                .collect(),
            situation: referral
                .situation
                .as_ref()
                .map(|situation| referral_v2::Situation {
                    labels: situation.labels.clone(),
                    rsa_beneficiary: situation.rsa_beneficiary,
                    recognised_disability: situation.recognised_disability,
                    other: situation.other.clone().unwrap_or_default(),
                    education_level: number_of(
                        situation.education_level,
                        v2::EducationLevel::number,
                    ),
                }),
            obstacles: referral
                .obstacles
                .iter()
                .map(|obstacle| referral_v2::Obstacle {
                    domain: obstacle.domain.number(),
                    impact: number_of(obstacle.impact, v2::ObstacleImpact::number),
                    source_label: obstacle.source_label.clone().unwrap_or_default(),
                })
                .collect(),
            pathway: number_of(referral.pathway, Pathway::number),
            axis: number_of(referral.axis, Axis::number),
            reason: referral.reason.clone().unwrap_or_default(),
            consent_reference: referral.consent_reference.clone().unwrap_or_default(),
        }
    }
}

impl From<v2::Referral> for referral_v2::Referral {
    fn from(referral: v2::Referral) -> Self {
        Self::from(&referral)
    }
}

impl TryFrom<referral_v2::Referral> for v2::Referral {
    type Error = Error;

    fn try_from(message: referral_v2::Referral) -> Result<Self, Error> {
        let mut check = Check::default();
        let envelope = envelope(
            &mut check,
            &message.referral_id,
            &message.schema_version,
            v2::ReferralV2Tag::VALUE,
            message.created_at,
        );
        let sender = check
            .message("/sender", message.sender)
            .and_then(|sender| shared_v2::sender(&mut check, "/sender", sender));
        let recipient = check
            .message("/recipient", message.recipient)
            .and_then(|recipient| shared_v2::recipient(&mut check, "/recipient", recipient));
        let person = check
            .message("/person", message.person)
            .and_then(|person| person_v2(&mut check, person));
        let identifiers = identifiers_v2(&mut check, message.identifiers);
        let situation = match message.situation {
            None => Some(None),
            Some(situation) => situation_v2(&mut check, situation).map(Some),
        };
        let mut obstacles = Some(Vec::with_capacity(message.obstacles.len()));
        for (index, obstacle) in message.obstacles.into_iter().enumerate() {
            let pointer = format!("/obstacles/{index}");
            let domain = check.required_enum(
                &format!("{pointer}/domain"),
                obstacle.domain,
                v2::ObstacleDomain::from_number,
            );
            let impact = check.optional_enum(
                &format!("{pointer}/impact"),
                obstacle.impact,
                v2::ObstacleImpact::from_number,
            );
            match (domain, impact, obstacles.as_mut()) {
                (Some(domain), Some(impact), Some(list)) => list.push(v2::Obstacle {
                    domain,
                    impact,
                    source_label: optional_text(obstacle.source_label),
                }),
                _ => obstacles = None,
            }
        }
        let pathway = check.optional_enum("/pathway", message.pathway, Pathway::from_number);
        let axis = check.optional_enum("/axis", message.axis, Axis::from_number);

        let (
            Some(referral_id),
            Some(created_at),
            Some(sender),
            Some(recipient),
            Some(person),
            Some(identifiers),
            Some(situation),
            Some(obstacles),
            Some(pathway),
            Some(axis),
        ) = (
            envelope.referral_id,
            envelope.created_at,
            sender,
            recipient,
            person,
            identifiers,
            situation,
            obstacles,
            pathway,
            axis,
        )
        else {
            return Err(check.into_error());
        };
        if !check.violations.is_empty() {
            return Err(check.into_error());
        }
        Ok(v2::Referral {
            referral_id,
            schema_version: v2::ReferralV2Tag,
            created_at,
            sender,
            recipient,
            person,
            identifiers,
            situation,
            obstacles,
            pathway,
            axis,
            reason: optional_text(message.reason),
            consent_reference: optional_text(message.consent_reference),
        })
    }
}

fn person_v2(check: &mut Check, message: referral_v2::Person) -> Option<v2::Person> {
    let first_name = check.text("/person/first_name", message.first_name);
    let last_name = check.text("/person/last_name", message.last_name);
    let birth_date = check.date("/person/birth_date", &message.birth_date);
    let availability = check.date("/person/availability", &message.availability);
    let contact = match message.contact {
        None => Some(None),
        Some(contact) => {
            let phone = check.optional_value("/person/contact/phone", &contact.phone, Phone::parse);
            let email = check.optional_value("/person/contact/email", &contact.email, Email::parse);
            let preferences = check.enum_list(
                "/person/contact/preferences",
                &contact.preferences,
                ContactPreference::from_number,
            );
            Some(Some(v2::Contact {
                phone: phone?,
                email: email?,
                other_method: optional_text(contact.other_method),
                preferences: preferences?,
            }))
        }
    };
    let address = match message.address {
        None => Some(None),
        Some(address) => {
            let postal_code = check.optional_value(
                "/person/address/postal_code",
                &address.postal_code,
                PostalCode::parse,
            );
            let insee_code = check.optional_value(
                "/person/address/insee_code",
                &address.insee_code,
                InseeCode::parse,
            );
            Some(Some(v2::Address {
                postal_code: postal_code?,
                insee_code: insee_code?,
                city: optional_text(address.city),
            }))
        }
    };
    Some(v2::Person {
        first_name: first_name?,
        last_name: last_name?,
        birth_name: optional_text(message.birth_name),
        birth_date: birth_date?,
        contact: contact?,
        address: address?,
        availability: availability?,
    })
}

fn identifiers_v2(
    check: &mut Check,
    messages: Vec<referral_v2::Identifier>,
) -> Option<Vec<v2::Identifier>> {
    let mut identifiers = Some(Vec::with_capacity(messages.len()));
    for (index, message) in messages.into_iter().enumerate() {
        let pointer = format!("/identifiers/{index}");
        let kind = check.required_enum(
            &format!("{pointer}/kind"),
            message.kind,
            v2::IdentifierKind::from_number,
        );
        let value_pointer = format!("{pointer}/value");
        let value = check.text(&value_pointer, message.value);
        let identifier = match (kind, value) {
            (Some(kind), Some(value)) => {
                check.parsed(&value_pointer, v2::Identifier::new(kind, &value))
            }
            _ => None,
        };
        match (identifier, identifiers.as_mut()) {
            (Some(identifier), Some(list)) => list.push(identifier),
            _ => identifiers = None,
        }
    }
    identifiers
}

fn situation_v2(check: &mut Check, message: referral_v2::Situation) -> Option<v2::Situation> {
    let education_level = check.optional_enum(
        "/situation/education_level",
        message.education_level,
        v2::EducationLevel::from_number,
    );
    Some(v2::Situation {
        labels: message.labels,
        rsa_beneficiary: message.rsa_beneficiary,
        recognised_disability: message.recognised_disability,
        other: optional_text(message.other),
        education_level: education_level?,
    })
}

// ---------------------------------------------------------------- version 1

impl From<&v1::Referral> for referral_v1::Referral {
    fn from(referral: &v1::Referral) -> Self {
        let person = &referral.person;
        Self {
            referral_id: referral.referral_id.to_string(),
            schema_version: v1::ReferralV1Tag::VALUE.to_owned(),
            created_at: Some(timestamp_of(&referral.created_at)),
            sender: Some((&referral.sender).into()),
            recipient: Some((&referral.recipient).into()),
            person: Some(referral_v1::Person {
                first_name: person.first_name.clone(),
                last_name: person.last_name.clone(),
                birth_name: person.birth_name.clone().unwrap_or_default(),
                birth_date: date_text(person.birth_date),
                phone: text_of(person.phone.as_ref()),
                email: text_of(person.email.as_ref()),
                other_contact_method: person.other_contact_method.clone().unwrap_or_default(),
                postal_code: text_of(person.postal_code.as_ref()),
                insee_code: text_of(person.insee_code.as_ref()),
                city: person.city.clone().unwrap_or_default(),
                availability: date_text(person.availability),
                contact_preferences: person
                    .contact_preferences
                    .iter()
                    .map(|preference| preference.number())
                    .collect(),
            }),
            identifiers: referral.identifiers.as_ref().map(|identifiers| {
                referral_v1::Identifiers {
                    france_travail_number: text_of(identifiers.france_travail_number.as_ref()),
                    caf_number: identifiers.caf_number.clone().unwrap_or_default(),
                    imilo_dossier_id: identifiers.imilo_dossier_id.clone().unwrap_or_default(),
                    departement_id: identifiers.departement_id.clone().unwrap_or_default(),
                    nir: text_of(identifiers.nir.as_ref()),
                }
            }),
            situation: referral
                .situation
                .as_ref()
                .map(|situation| referral_v1::Situation {
                    labels: situation.labels.clone(),
                    rsa_beneficiary: situation.rsa_beneficiary,
                    recognised_disability: situation.recognised_disability,
                    other: situation.other.clone().unwrap_or_default(),
                }),
            obstacles: referral.obstacles.clone(),
            pathway: number_of(referral.pathway, Pathway::number),
            axis: number_of(referral.axis, Axis::number),
            reason: referral.reason.clone().unwrap_or_default(),
            consent_reference: referral.consent_reference.clone().unwrap_or_default(),
        }
    }
}

impl From<v1::Referral> for referral_v1::Referral {
    fn from(referral: v1::Referral) -> Self {
        Self::from(&referral)
    }
}

impl TryFrom<referral_v1::Referral> for v1::Referral {
    type Error = Error;

    fn try_from(message: referral_v1::Referral) -> Result<Self, Error> {
        let mut check = Check::default();
        let envelope = envelope(
            &mut check,
            &message.referral_id,
            &message.schema_version,
            v1::ReferralV1Tag::VALUE,
            message.created_at,
        );
        let sender = check
            .message("/sender", message.sender)
            .and_then(|sender| shared_v1::sender(&mut check, "/sender", sender));
        let recipient = check
            .message("/recipient", message.recipient)
            .and_then(|recipient| shared_v1::recipient(&mut check, "/recipient", recipient));
        let person = check
            .message("/person", message.person)
            .and_then(|person| person_v1(&mut check, person));
        let identifiers = match message.identifiers {
            None => Some(None),
            Some(identifiers) => identifiers_v1(&mut check, identifiers).map(Some),
        };
        let pathway = check.optional_enum("/pathway", message.pathway, Pathway::from_number);
        let axis = check.optional_enum("/axis", message.axis, Axis::from_number);

        let (
            Some(referral_id),
            Some(created_at),
            Some(sender),
            Some(recipient),
            Some(person),
            Some(identifiers),
            Some(pathway),
            Some(axis),
        ) = (
            envelope.referral_id,
            envelope.created_at,
            sender,
            recipient,
            person,
            identifiers,
            pathway,
            axis,
        )
        else {
            return Err(check.into_error());
        };
        if !check.violations.is_empty() {
            return Err(check.into_error());
        }
        Ok(v1::Referral {
            referral_id,
            schema_version: v1::ReferralV1Tag,
            created_at,
            sender,
            recipient,
            person,
            identifiers,
            situation: message.situation.map(|situation| v1::Situation {
                labels: situation.labels,
                rsa_beneficiary: situation.rsa_beneficiary,
                recognised_disability: situation.recognised_disability,
                other: optional_text(situation.other),
            }),
            obstacles: message.obstacles,
            pathway,
            axis,
            reason: optional_text(message.reason),
            consent_reference: optional_text(message.consent_reference),
        })
    }
}

fn person_v1(check: &mut Check, message: referral_v1::Person) -> Option<v1::Person> {
    let first_name = check.text("/person/first_name", message.first_name);
    let last_name = check.text("/person/last_name", message.last_name);
    let birth_date = check.date("/person/birth_date", &message.birth_date);
    let phone = check.optional_value("/person/phone", &message.phone, Phone::parse);
    let email = check.optional_value("/person/email", &message.email, Email::parse);
    let postal_code = check.optional_value(
        "/person/postal_code",
        &message.postal_code,
        PostalCode::parse,
    );
    let insee_code =
        check.optional_value("/person/insee_code", &message.insee_code, InseeCode::parse);
    let availability = check.date("/person/availability", &message.availability);
    let contact_preferences = check.enum_list(
        "/person/contact_preferences",
        &message.contact_preferences,
        ContactPreference::from_number,
    );
    Some(v1::Person {
        first_name: first_name?,
        last_name: last_name?,
        birth_name: optional_text(message.birth_name),
        birth_date: birth_date?,
        phone: phone?,
        email: email?,
        other_contact_method: optional_text(message.other_contact_method),
        postal_code: postal_code?,
        insee_code: insee_code?,
        city: optional_text(message.city),
        availability: availability?,
        contact_preferences: contact_preferences?,
    })
}

fn identifiers_v1(check: &mut Check, message: referral_v1::Identifiers) -> Option<v1::Identifiers> {
    let france_travail_number = check.optional_value(
        "/identifiers/france_travail_number",
        &message.france_travail_number,
        FranceTravailNumber::parse,
    );
    let nir = check.optional_value("/identifiers/nir", &message.nir, Nir::parse);
    Some(v1::Identifiers {
        france_travail_number: france_travail_number?,
        caf_number: optional_text(message.caf_number),
        imilo_dossier_id: optional_text(message.imilo_dossier_id),
        departement_id: optional_text(message.departement_id),
        nir: nir?,
    })
}

// ---------------------------------------------------------------- status events

impl From<&StatusEvent> for status_v1::StatusEvent {
    fn from(event: &StatusEvent) -> Self {
        Self {
            event_id: event.event_id.to_string(),
            schema_version: StatusV1Tag::VALUE.to_owned(),
            referral_id: event.referral_id.to_string(),
            status: event.status.number(),
            occurred_at: Some(timestamp_of(&event.occurred_at)),
            author_siret: event.author_siret.as_str().to_owned(),
            rejection_reason: number_of(event.rejection_reason, RejectionReason::number),
            outcome: number_of(event.outcome, Outcome::number),
            appointment_at: event.appointment_at.as_ref().map(timestamp_of),
            comment: event.comment.clone().unwrap_or_default(),
        }
    }
}

impl From<StatusEvent> for status_v1::StatusEvent {
    fn from(event: StatusEvent) -> Self {
        Self::from(&event)
    }
}

impl TryFrom<status_v1::StatusEvent> for StatusEvent {
    type Error = Error;

    /// Also applies the schema's conditional rules: a rejection reason exactly
    /// when the status is rejected, an outcome exactly when it is completed.
    fn try_from(message: status_v1::StatusEvent) -> Result<Self, Error> {
        let mut check = Check::default();
        let event_id = check.value("/event_id", &message.event_id, ReferralId::parse);
        if message.schema_version.is_empty() {
            check.missing("/schema_version");
        } else if message.schema_version != StatusV1Tag::VALUE {
            check.push(
                "/schema_version",
                "const",
                format!("exactly \"{}\"", StatusV1Tag::VALUE),
            );
        }
        let referral_id = check.value("/referral_id", &message.referral_id, ReferralId::parse);
        let status = check.required_enum("/status", message.status, Status::from_number);
        let occurred_at = check.timestamp("/occurred_at", message.occurred_at);
        let author_siret = check.value("/author_siret", &message.author_siret, Siret::parse);
        let rejection_reason = check.optional_enum(
            "/rejection_reason",
            message.rejection_reason,
            RejectionReason::from_number,
        );
        let outcome = check.optional_enum("/outcome", message.outcome, Outcome::from_number);
        let appointment_at = check.optional_timestamp("/appointment_at", message.appointment_at);
        if let Some(status) = status {
            let rejected = status == Status::Rejected;
            let completed = status == Status::Completed;
            conditional(
                &mut check,
                "/rejection_reason",
                rejected,
                message.rejection_reason != 0,
            );
            conditional(&mut check, "/outcome", completed, message.outcome != 0);
        }

        let (
            Some(event_id),
            Some(referral_id),
            Some(status),
            Some(occurred_at),
            Some(author_siret),
            Some(rejection_reason),
            Some(outcome),
            Some(appointment_at),
        ) = (
            event_id,
            referral_id,
            status,
            occurred_at,
            author_siret,
            rejection_reason,
            outcome,
            appointment_at,
        )
        else {
            return Err(check.into_error());
        };
        if !check.violations.is_empty() {
            return Err(check.into_error());
        }
        Ok(StatusEvent {
            event_id,
            schema_version: StatusV1Tag,
            referral_id,
            status,
            occurred_at,
            author_siret,
            rejection_reason,
            outcome,
            appointment_at,
            comment: optional_text(message.comment),
        })
    }
}

/// A field present exactly when its condition holds (same rules and details
/// as the status schema's `if`/`then`/`else`).
fn conditional(check: &mut Check, pointer: &str, wanted: bool, present: bool) {
    if wanted && !present {
        check.missing(pointer);
    } else if !wanted && present {
        check.push(
            pointer,
            "forbidden",
            "no value allowed here (it depends on another field), found one",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn organisation(siret: &str, kind: OrganisationKind) -> referral_v2::Organisation {
        referral_v2::Organisation {
            siret: siret.to_owned(),
            kind: kind.number(),
            name: String::new(),
        }
    }

    fn minimal_v2() -> referral_v2::Referral {
        referral_v2::Referral {
            referral_id: "0b6c8e8e-6a49-4d0b-9a57-6c1f1e2b7d10".to_owned(),
            schema_version: "passerelle.referral.v2".to_owned(),
            created_at: Some(prost_types::Timestamp {
                seconds: 1_796_115_600,
                nanos: 0,
            }),
            sender: Some(referral_v2::Sender {
                organisation: Some(organisation(
                    "81234567800013",
                    OrganisationKind::Association,
                )),
                referent: None,
            }),
            recipient: Some(referral_v2::Recipient {
                organisation: Some(organisation(
                    "13000548100002",
                    OrganisationKind::FranceTravail,
                )),
                service_id: String::new(),
            }),
            person: Some(referral_v2::Person {
                first_name: "Prénomtest".to_owned(),
                last_name: "Nomtest".to_owned(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_minimal_message_converts_both_ways() {
        let referral = v2::Referral::try_from(minimal_v2()).expect("valid");
        assert_eq!(referral.person.first_name, "Prénomtest");
        assert_eq!(referral_v2::Referral::from(&referral), minimal_v2());
    }

    #[test]
    fn every_fault_is_listed_at_its_pointer() {
        let mut message = minimal_v2();
        message.schema_version = "passerelle.referral.v1".to_owned();
        message.created_at = None;
        if let Some(sender) = message.sender.as_mut() {
            sender.organisation = Some(organisation(
                "81234567800012",
                OrganisationKind::Association,
            ));
        }
        if let Some(recipient) = message.recipient.as_mut()
            && let Some(organisation) = recipient.organisation.as_mut()
        {
            organisation.kind = 42;
        }
        message.person = Some(referral_v2::Person {
            last_name: "Nomtest".to_owned(),
            birth_date: "1998-02-30".to_owned(),
            contact: Some(referral_v2::Contact {
                preferences: vec![1, 0, 9],
                ..Default::default()
            }),
            ..Default::default()
        });
        message.identifiers = vec![referral_v2::Identifier {
            kind: v2::IdentifierKind::FranceTravail.number(),
            value: "0123456789X".to_owned(),
        }];
        message.obstacles = vec![referral_v2::Obstacle::default()];
        message.pathway = 7;
        let error = v2::Referral::try_from(message).expect_err("invalid");
        let found: Vec<(&str, &str)> = error
            .violations()
            .iter()
            .map(|v| (v.pointer.as_str(), v.rule.as_str()))
            .collect();
        assert_eq!(
            found,
            [
                ("/schema_version", "const"),
                ("/created_at", "required"),
                ("/sender/organisation/siret", "siret-checksum"),
                ("/recipient/organisation/kind", "enum"),
                ("/person/first_name", "required"),
                ("/person/birth_date", "format"),
                ("/person/contact/preferences/1", "enum"),
                ("/person/contact/preferences/2", "enum"),
                ("/identifiers/0/value", "france-travail-number-format"),
                ("/obstacles/0/domain", "required"),
                ("/pathway", "enum"),
            ]
        );
        let text = error.to_string();
        assert!(
            !text.contains("0123456789X") && !text.contains("Nomtest"),
            "{text}"
        );
    }

    #[test]
    fn status_events_need_a_reason_exactly_when_rejected() {
        let event = status_v1::StatusEvent {
            event_id: "5f0c1d2e-3b4a-4c5d-8e9f-0a1b2c3d4e5f".to_owned(),
            schema_version: "passerelle.status.v1".to_owned(),
            referral_id: "0b6c8e8e-6a49-4d0b-9a57-6c1f1e2b7d10".to_owned(),
            status: Status::Rejected.number(),
            occurred_at: Some(prost_types::Timestamp {
                seconds: 1_796_115_600,
                nanos: 0,
            }),
            author_siret: "13000548100002".to_owned(),
            rejection_reason: RejectionReason::Unreachable.number(),
            ..Default::default()
        };
        let domain = StatusEvent::try_from(event.clone()).expect("valid");
        assert_eq!(status_v1::StatusEvent::from(&domain), event);

        let missing = status_v1::StatusEvent {
            rejection_reason: 0,
            outcome: Outcome::Employment.number(),
            ..event
        };
        let error = StatusEvent::try_from(missing).expect_err("invalid");
        let found: Vec<(&str, &str)> = error
            .violations()
            .iter()
            .map(|v| (v.pointer.as_str(), v.rule.as_str()))
            .collect();
        assert_eq!(
            found,
            [("/rejection_reason", "required"), ("/outcome", "forbidden")]
        );
    }

    #[test]
    fn timestamps_out_of_the_proto_range_are_refused() {
        let mut message = minimal_v2();
        message.created_at = Some(prost_types::Timestamp {
            seconds: 0,
            nanos: -1,
        });
        let error = v2::Referral::try_from(message).expect_err("invalid");
        assert_eq!(error.violations()[0].pointer, "/created_at");
        assert_eq!(error.violations()[0].rule, "format");
    }
}
