//! The consent record (`passerelle.consent.v1`): a profile of ISO/IEC TS 27560
//! written with W3C DPV purpose terms. Mirrors
//! `proto/passerelle/consent/v1/consent.proto` and `schemas/consent/v1.json`.
//!
//! Every value is parsed into a type that cannot be wrong (SIRETs, purpose
//! terms, hashes, the pseudonymous subject id); the rules that span several
//! fields (events in time order, a validity period that ends after it starts)
//! are checked by [`ConsentRecord::check`], which [`ConsentRecord::parse`] runs.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::decision::{LegalBasis, SpecialCategoryBasis};
use crate::error::{Error, Violation};
use crate::model::categories::DataCategory;
use crate::model::common::{OrganisationKind, schema_tag, wire_enum};
use crate::model::ids::{Email, Nir, Phone, Siret, ValueError, shape_of, string_newtype};
use crate::validate::{self, Limits, SchemaName};

schema_tag!(
    /// The `schema_version` of a consent record.
    ConsentV1Tag = "passerelle.consent.v1"
);

/// The record of a lawful basis for forwarding a person's data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsentRecord {
    /// UUID of the record.
    pub record_id: RecordId,
    /// Always `passerelle.consent.v1`.
    pub schema_version: ConsentV1Tag,
    /// Pseudonymous subject id (never an email, a phone number or a NIR).
    pub subject_id: SubjectId,
    /// GDPR Art. 6 basis.
    #[serde(with = "legal_basis_wire")]
    pub legal_basis: LegalBasis,
    /// GDPR Art. 9(2) basis, when special categories are covered.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "special_category_basis_wire"
    )]
    pub special_category_basis: Option<SpecialCategoryBasis>,
    /// SIRETs of the controllers.
    pub controllers: Vec<Siret>,
    /// Who may receive the data: organisations or kinds of organisation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recipients: Vec<RecipientScope>,
    /// DPV purpose terms (see `docs/consent.md`).
    pub purposes: Vec<Purpose>,
    /// Data categories covered.
    #[serde(deserialize_with = "category_names")]
    pub data_categories: Vec<DataCategory>,
    /// The notice the person was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notice: Option<Notice>,
    /// How the consent or information was collected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collection: Option<Collection>,
    /// Start of validity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_from: Option<DateTime<Utc>>,
    /// End of validity (exclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_until: Option<DateTime<Utc>>,
    /// How the person can withdraw or object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub withdrawal_method: Option<String>,
    /// SHA-256 of the evidence the controller keeps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence_sha256: Option<Sha256Hex>,
    /// Append-only history, in time order; the state derives from it.
    pub events: Vec<ConsentEvent>,
}

impl ConsentRecord {
    /// Parses a consent record document: strict JSON, the JSON Schema, typed
    /// values, then the rules across fields ([`ConsentRecord::check`]).
    pub fn parse(bytes: &[u8], limits: &Limits) -> Result<Self, Error> {
        let record: Self = validate::decode_document(bytes, SchemaName::ConsentV1, limits)?;
        record.check()?;
        Ok(record)
    }

    /// The same as [`ConsentRecord::parse`], for an already parsed document.
    pub fn from_value(document: &Value) -> Result<Self, Error> {
        let record: Self = validate::decode_value(document, SchemaName::ConsentV1)?;
        record.check()?;
        Ok(record)
    }

    /// Checks the rules that span fields: at least one event, events in time
    /// order (an event may share its predecessor's time, never precede it),
    /// a validity period that ends after it starts. Lists every violation.
    pub fn check(&self) -> Result<(), Error> {
        let mut violations = Vec::new();
        if self.events.is_empty() {
            violations.push(Violation::new(
                "/events",
                "minItems",
                "at least 1 event, found none",
            ));
        }
        for (index, pair) in self.events.windows(2).enumerate() {
            if pair[1].at < pair[0].at {
                violations.push(out_of_order(format!("/events/{}/at", index + 1)));
            }
        }
        if let (Some(from), Some(until)) = (self.valid_from, self.valid_until)
            && until <= from
        {
            violations.push(Violation::new(
                "/valid_until",
                "validity-period",
                "a time after valid_from, found one at or before it",
            ));
        }
        if violations.is_empty() {
            Ok(())
        } else {
            Err(Error::Invalid(violations))
        }
    }

    /// Appends an event, refusing one dated before the last event
    /// (rule `event-out-of-order`): history is appended, never rewritten.
    pub fn append(&mut self, event: ConsentEvent) -> Result<(), Error> {
        check_next_event(self.events.last().map(|last| last.at), &event)?;
        self.events.push(event);
        Ok(())
    }

    /// Whether the record covers an organisation, by its SIRET or its kind.
    pub fn covers_recipient(&self, siret: &Siret, kind: OrganisationKind) -> bool {
        self.recipients.iter().any(|scope| match scope {
            RecipientScope::Organisation(covered) => covered == siret,
            RecipientScope::Kind(covered) => *covered == kind,
        })
    }

    /// Whether the record lists this purpose (exact term; see `docs/consent.md`).
    pub fn covers_purpose(&self, purpose: &Purpose) -> bool {
        self.purposes.contains(purpose)
    }
}

/// Refuses an event dated before the last one (rule `event-out-of-order`).
pub fn check_next_event(last: Option<DateTime<Utc>>, event: &ConsentEvent) -> Result<(), Error> {
    match last {
        Some(last) if event.at < last => Err(Error::Invalid(vec![out_of_order("/at".to_owned())])),
        _ => Ok(()),
    }
}

fn out_of_order(pointer: String) -> Violation {
    Violation::new(
        pointer,
        "event-out-of-order",
        "a time at or after the previous event's (events are appended, never back-dated), found an earlier one",
    )
}

wire_enum! {
    /// Ways a consent or information can be collected.
    CollectionMethod {
        /// On paper.
        Paper = 1 => "COLLECTION_METHOD_PAPER",
        /// Orally, recorded by the advisor.
        Oral = 2 => "COLLECTION_METHOD_ORAL",
        /// Through a web form.
        Web = 3 => "COLLECTION_METHOD_WEB",
    }
}

wire_enum! {
    /// The events a consent record can go through.
    ConsentEventKind {
        /// Consent given (or information delivered, for a public task).
        Given = 1 => "CONSENT_EVENT_KIND_GIVEN",
        /// Consent renewed.
        Renewed = 2 => "CONSENT_EVENT_KIND_RENEWED",
        /// Consent refused.
        Refused = 3 => "CONSENT_EVENT_KIND_REFUSED",
        /// Consent withdrawn.
        Withdrawn = 4 => "CONSENT_EVENT_KIND_WITHDRAWN",
        /// The person objected (Art. 21) to a public-task processing.
        Objected = 5 => "CONSENT_EVENT_KIND_OBJECTED",
        /// The record expired.
        Expired = 6 => "CONSENT_EVENT_KIND_EXPIRED",
        /// The record was found invalid (for example the wrong person).
        Invalidated = 7 => "CONSENT_EVENT_KIND_INVALIDATED",
    }
}

/// One event in the life of a consent record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsentEvent {
    /// What happened.
    pub kind: ConsentEventKind,
    /// When.
    pub at: DateTime<Utc>,
    /// SIRET of the organisation that recorded it.
    pub recorded_by: Siret,
}

/// The information notice shown to the person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Notice {
    /// Where the notice is published.
    pub uri: String,
    /// Its version.
    pub version: String,
    /// SHA-256 of its text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<Sha256Hex>,
    /// BCP 47 language tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
}

/// How the record was collected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Collection {
    /// The method used.
    pub method: CollectionMethod,
    /// SIRET of the organisation that collected it.
    pub collected_by: Siret,
    /// Whether a guardian gave it on the person's behalf.
    #[serde(default)]
    pub on_behalf_of_guardian: bool,
}

/// A recipient covered by a record: one organisation, or every organisation of a kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawScope", into = "RawScope")]
pub enum RecipientScope {
    /// One organisation, by SIRET.
    Organisation(Siret),
    /// Every organisation of this kind.
    Kind(OrganisationKind),
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScope {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    siret: Option<Siret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kind: Option<ScopeKind>,
}

impl TryFrom<RawScope> for RecipientScope {
    type Error = ValueError;
    fn try_from(raw: RawScope) -> Result<Self, ValueError> {
        let refusal = |found: &str| ValueError {
            rule: "recipient-scope",
            expected: "exactly one of siret or kind",
            found: found.to_owned(),
        };
        match (raw.siret, raw.kind) {
            (Some(siret), None) => Ok(Self::Organisation(siret)),
            (None, Some(kind)) => Ok(Self::Kind(kind.0)),
            (Some(_), Some(_)) => Err(refusal("both")),
            (None, None) => Err(refusal("neither")),
        }
    }
}

impl From<RecipientScope> for RawScope {
    fn from(scope: RecipientScope) -> Self {
        match scope {
            RecipientScope::Organisation(siret) => Self {
                siret: Some(siret),
                kind: None,
            },
            RecipientScope::Kind(kind) => Self {
                siret: None,
                kind: Some(ScopeKind(kind)),
            },
        }
    }
}

/// A kind of organisation as consent records name it (`france_travail`, ...).
#[derive(Clone, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
struct ScopeKind(OrganisationKind);

impl TryFrom<String> for ScopeKind {
    type Error = ValueError;
    fn try_from(name: String) -> Result<Self, ValueError> {
        OrganisationKind::ALL
            .iter()
            .copied()
            .find(|kind| kind_name(*kind) == name)
            .map(ScopeKind)
            .ok_or_else(|| ValueError {
                rule: "recipient-kind",
                expected: "association, france_travail, mission_locale, cap_emploi, departement or other",
                found: "another name".to_owned(),
            })
    }
}

impl From<ScopeKind> for String {
    fn from(kind: ScopeKind) -> Self {
        kind_name(kind.0).to_owned()
    }
}

/// The name consent records give a kind of organisation: its wire name
/// without the `ORGANISATION_KIND_` prefix, in lower case.
pub fn kind_name(kind: OrganisationKind) -> &'static str {
    match kind {
        OrganisationKind::Association => "association",
        OrganisationKind::FranceTravail => "france_travail",
        OrganisationKind::MissionLocale => "mission_locale",
        OrganisationKind::CapEmploi => "cap_emploi",
        OrganisationKind::Departement => "departement",
        OrganisationKind::Other => "other",
    }
}

/// Reads category names with [`DataCategory::parse`]; an unknown name is an
/// error at its own pointer (`/data_categories/2`).
fn category_names<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<DataCategory>, D::Error> {
    let names = Vec::<CategoryName>::deserialize(deserializer)?;
    Ok(names.into_iter().map(|name| name.0).collect())
}

#[derive(Deserialize)]
#[serde(try_from = "String")]
struct CategoryName(DataCategory);

impl TryFrom<String> for CategoryName {
    type Error = ValueError;
    fn try_from(name: String) -> Result<Self, ValueError> {
        DataCategory::parse(&name)
            .map(CategoryName)
            .ok_or_else(|| ValueError {
                rule: "data-category",
                expected: "a Passerelle data category (identity, contact, obstacle_housing, ...: see docs/consent.md)",
                found: format!("an unknown name ({})", shape_of(&name)),
            })
    }
}

/// GDPR bases on the wire: the proto enum value names.
mod legal_basis_wire {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::decision::LegalBasis;

    const CONSENT: &str = "LEGAL_BASIS_CONSENT";
    const PUBLIC_TASK: &str = "LEGAL_BASIS_PUBLIC_TASK";

    pub(super) fn serialize<S: Serializer>(
        basis: &LegalBasis,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(match basis {
            LegalBasis::Consent => CONSENT,
            LegalBasis::PublicTask => PUBLIC_TASK,
        })
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<LegalBasis, D::Error> {
        let name = std::borrow::Cow::<str>::deserialize(deserializer)?;
        match name.as_ref() {
            CONSENT => Ok(LegalBasis::Consent),
            PUBLIC_TASK => Ok(LegalBasis::PublicTask),
            _ => Err(serde::de::Error::custom(
                "legal-basis: expected LEGAL_BASIS_CONSENT or LEGAL_BASIS_PUBLIC_TASK, found another name",
            )),
        }
    }
}

mod special_category_basis_wire {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::decision::SpecialCategoryBasis;

    const EXPLICIT_CONSENT: &str = "SPECIAL_CATEGORY_BASIS_EXPLICIT_CONSENT";
    const SOCIAL_PROTECTION: &str = "SPECIAL_CATEGORY_BASIS_SOCIAL_PROTECTION";

    pub(super) fn serialize<S: Serializer>(
        basis: &Option<SpecialCategoryBasis>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match basis {
            Some(SpecialCategoryBasis::ExplicitConsent) => {
                serializer.serialize_str(EXPLICIT_CONSENT)
            }
            Some(SpecialCategoryBasis::SocialProtection) => {
                serializer.serialize_str(SOCIAL_PROTECTION)
            }
            None => serializer.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<SpecialCategoryBasis>, D::Error> {
        let name = Option::<std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        match name.as_deref() {
            None => Ok(None),
            Some(EXPLICIT_CONSENT) => Ok(Some(SpecialCategoryBasis::ExplicitConsent)),
            Some(SOCIAL_PROTECTION) => Ok(Some(SpecialCategoryBasis::SocialProtection)),
            Some(_) => Err(serde::de::Error::custom(
                "special-category-basis: expected SPECIAL_CATEGORY_BASIS_EXPLICIT_CONSENT or SPECIAL_CATEGORY_BASIS_SOCIAL_PROTECTION, found another name",
            )),
        }
    }
}

string_newtype!(
    /// A pseudonymous subject id: it names the person for the record without
    /// saying who they are, so it can be neither an email, a phone number, a
    /// NIR, nor text with spaces or accents (a name).
    SubjectId
);

impl SubjectId {
    /// Longest subject id accepted.
    pub const MAX_LENGTH: usize = 128;

    /// Parses a subject id, refusing what is not pseudonymous
    /// (rule `subject-id-not-pseudonymous`).
    pub fn parse(text: &str) -> Result<Self, ValueError> {
        const RULE: &str = "subject-id-not-pseudonymous";
        const EXPECTED: &str = "a pseudonymous id of 1 to 128 ASCII letters, digits and - _ . : + / = (never an email, a phone number or a NIR)";
        let refusal = |found: &str| ValueError {
            rule: RULE,
            expected: EXPECTED,
            found: found.to_owned(),
        };
        if text.is_empty() || text.chars().count() > Self::MAX_LENGTH {
            return Err(ValueError {
                rule: "subject-id-format",
                expected: EXPECTED,
                found: shape_of(text),
            });
        }
        if text.contains('@') || Email::parse(text).is_ok() {
            return Err(refusal("an email address"));
        }
        // A NIR with a wrong key is still a NIR typed by someone: refuse it too.
        match Nir::parse(text) {
            Ok(_) => return Err(refusal("a NIR")),
            Err(error) if error.rule == "nir-checksum" => return Err(refusal("a NIR")),
            Err(_) => {}
        }
        if Phone::parse(text).is_ok() {
            return Err(refusal(
                "a phone number (6 to 15 digits with separators cannot be told from one)",
            ));
        }
        let allowed = |c: char| {
            c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '+' | '/' | '=')
        };
        if !text.chars().all(allowed) {
            return Err(refusal(
                "spaces, accents or other characters outside the allowed set (as in a name)",
            ));
        }
        Ok(Self(text.to_owned()))
    }

    /// A subject id made of a fixed prefix and a UUID in hexadecimal (for
    /// example a hash of a referral id): pseudonymous by construction.
    pub fn pseudonym(prefix: &'static str, uuid: uuid::Uuid) -> Self {
        let prefix: String = prefix
            .chars()
            .filter(|c| c.is_ascii_alphabetic() || *c == '-')
            .take(Self::MAX_LENGTH - 33)
            .collect();
        Self(format!("{prefix}-{}", uuid.simple()))
    }
}

string_newtype!(
    /// A purpose term, `prefix:Term` (for example `dpv:ServiceProvision`); the
    /// terms Passerelle uses are listed in `docs/consent.md`.
    Purpose
);

impl Purpose {
    /// Parses a purpose term: a prefix (a letter, then letters, digits or
    /// hyphens), a colon, a term (a letter, then letters or digits).
    pub fn parse(text: &str) -> Result<Self, ValueError> {
        let valid = text.split_once(':').is_some_and(|(prefix, term)| {
            let mut prefix_chars = prefix.chars();
            let mut term_chars = term.chars();
            prefix_chars.next().is_some_and(|c| c.is_ascii_alphabetic())
                && prefix_chars.all(|c| c.is_ascii_alphanumeric() || c == '-')
                && term_chars.next().is_some_and(|c| c.is_ascii_alphabetic())
                && term_chars.all(|c| c.is_ascii_alphanumeric())
        });
        if valid {
            Ok(Self(text.to_owned()))
        } else {
            Err(ValueError {
                rule: "purpose-format",
                expected: "a term prefix:Term such as dpv:ServiceProvision",
                found: shape_of(text),
            })
        }
    }

    /// The vocabulary prefix (`dpv`).
    pub fn prefix(&self) -> &str {
        self.0.split_once(':').map_or("", |(prefix, _)| prefix)
    }

    /// The term (`ServiceProvision`).
    pub fn term(&self) -> &str {
        self.0.split_once(':').map_or("", |(_, term)| term)
    }

    /// Orientation: sending a referral so that the recipient provides its
    /// accompaniment to the person (`dpv:ServiceProvision`).
    pub fn orientation() -> Self {
        Self(ORIENTATION_PURPOSE.to_owned())
    }

    /// Status events going back to the sender (`dpv:CommunicationManagement`).
    pub fn status_follow_up() -> Self {
        Self(STATUS_FOLLOW_UP_PURPOSE.to_owned())
    }
}

/// The DPV term for orientation (see [`Purpose::orientation`]).
pub const ORIENTATION_PURPOSE: &str = "dpv:ServiceProvision";
/// The DPV term for status follow-up (see [`Purpose::status_follow_up`]).
pub const STATUS_FOLLOW_UP_PURPOSE: &str = "dpv:CommunicationManagement";

string_newtype!(
    /// A SHA-256 digest: 64 lower-case hexadecimal digits.
    Sha256Hex
);

impl Sha256Hex {
    /// Parses 64 lower-case hexadecimal digits.
    pub fn parse(text: &str) -> Result<Self, ValueError> {
        if text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Ok(Self(text.to_owned()))
        } else {
            Err(ValueError {
                rule: "sha256-format",
                expected: "64 lower-case hexadecimal digits",
                found: shape_of(text),
            })
        }
    }
}

/// A consent record id: a UUID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RecordId(uuid::Uuid);

impl RecordId {
    /// Parses a hyphenated UUID.
    pub fn parse(text: &str) -> Result<Self, ValueError> {
        let refusal = || ValueError {
            rule: "uuid-format",
            expected: "a hyphenated UUID (36 characters)",
            found: shape_of(text),
        };
        if text.len() != 36 {
            return Err(refusal());
        }
        uuid::Uuid::parse_str(text).map(Self).map_err(|_| refusal())
    }

    /// The record a referral's `consent_reference` names: the reference itself
    /// when it is a UUID; for a URN (a lawful basis recorded elsewhere, such as
    /// DORA's `urn:passerelle:dora-commitment:<referral id>`), the UUID v5 of
    /// the URN in Passerelle's consent namespace, so that the same reference
    /// always names the same record.
    pub fn for_reference(reference: &str) -> Result<Self, ValueError> {
        if let Ok(id) = Self::parse(reference) {
            return Ok(id);
        }
        // Checked so that a typo in a UUID is reported, not silently turned into another record id.
        let is_urn = reference.len() <= 255
            && reference
                .get(..4)
                .is_some_and(|scheme| scheme.eq_ignore_ascii_case("urn:"))
            && reference.len() > 4
            && reference.bytes().all(|b| b.is_ascii_graphic());
        if !is_urn {
            return Err(ValueError {
                rule: "consent-reference",
                expected: "a consent record UUID, or a URN of at most 255 printable ASCII characters",
                found: shape_of(reference),
            });
        }
        Ok(Self::derived(reference))
    }

    /// The record id a URN reference names: UUID v5 of the URN in
    /// Passerelle's consent namespace.
    pub fn derived(reference: &str) -> Self {
        let namespace =
            uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, b"urn:passerelle:consent-record");
        Self(uuid::Uuid::new_v5(&namespace, reference.as_bytes()))
    }

    /// The UUID.
    pub fn uuid(&self) -> uuid::Uuid {
        self.0
    }
}

impl TryFrom<String> for RecordId {
    type Error = ValueError;
    fn try_from(value: String) -> Result<Self, ValueError> {
        Self::parse(&value)
    }
}

impl From<RecordId> for String {
    fn from(value: RecordId) -> String {
        value.0.hyphenated().to_string()
    }
}

impl fmt::Display for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_ids_that_say_who_the_person_is_are_refused() {
        for (text, found) in [
            ("aicha.bensaid@example.org", "an email address"),
            ("aicha@localhost", "an email address"),
            ("1 84 12 76 451 089 46", "a NIR"),
            ("184127645108947", "a NIR"),
            ("06 12 34 56 78", "a phone number"),
            ("+33612345678", "a phone number"),
            ("Aïcha Ben Saïd", "spaces, accents"),
        ] {
            let error = SubjectId::parse(text).expect_err(text);
            assert_eq!(error.rule, "subject-id-not-pseudonymous", "{text}");
            assert!(error.found.starts_with(found), "{text}: {}", error.found);
            assert!(!error.to_string().contains(text), "{text} leaked");
        }
        assert!(SubjectId::parse("subj-5c1e9a7f20b4").is_ok());
        assert!(SubjectId::parse("c2Vjb25kLWlk+/=").is_ok());
        assert_eq!(
            SubjectId::parse("").expect_err("empty").rule,
            "subject-id-format"
        );
    }

    #[test]
    fn purposes_are_prefixed_terms() {
        let purpose = Purpose::parse("dpv:ServiceProvision").expect("valid");
        assert_eq!(
            (purpose.prefix(), purpose.term()),
            ("dpv", "ServiceProvision")
        );
        for bad in [
            "ServiceProvision",
            "dpv:",
            ":Term",
            "dpv:Service Provision",
            "1dpv:X",
            "dpv:Service-Provision",
        ] {
            assert_eq!(
                Purpose::parse(bad).expect_err(bad).rule,
                "purpose-format",
                "{bad}"
            );
        }
    }

    #[test]
    fn references_name_records_deterministically() {
        let uuid = "9d2f7c1a-8e3b-4a6d-b5c4-1f0e2d3c4b5a";
        assert_eq!(
            RecordId::for_reference(uuid).map(String::from),
            Ok(uuid.to_owned())
        );
        let urn = "urn:passerelle:dora-commitment:0b6f1c2e-7d4a-4e59-9c1b-3a2d5e8f9a10";
        let id = RecordId::for_reference(urn).expect("a URN");
        assert_eq!(RecordId::for_reference(urn), Ok(id));
        assert_ne!(
            RecordId::for_reference("urn:passerelle:dora-commitment:other"),
            Ok(id)
        );
        assert_eq!(
            RecordId::for_reference("not a reference")
                .expect_err("spaces")
                .rule,
            "consent-reference"
        );
    }

    #[test]
    fn hashes_are_lower_case_hex() {
        assert!(Sha256Hex::parse(&"ab".repeat(32)).is_ok());
        assert!(Sha256Hex::parse(&"AB".repeat(32)).is_err());
        assert!(Sha256Hex::parse("abc").is_err());
    }
}
