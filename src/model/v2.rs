//! Referral schema version 2 (`passerelle.referral.v2`), the canonical model
//! inside the gateway: typed identifiers, obstacles in France Travail's eight
//! domains, contact and address grouped, education level.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use super::common::{Axis, ContactPreference, Pathway, Recipient, Sender, schema_tag, wire_enum};
use super::ids::{Email, InseeCode, Phone, PostalCode, ReferralId};

schema_tag!(
    /// The `schema_version` of a version 2 referral.
    ReferralV2Tag = "passerelle.referral.v2"
);

/// A referral (orientation), version 2: the gateway's canonical form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Referral {
    /// UUID chosen by the sender; the idempotency key.
    pub referral_id: ReferralId,
    /// Always `passerelle.referral.v2`.
    pub schema_version: ReferralV2Tag,
    /// When the sender created the referral.
    pub created_at: DateTime<Utc>,
    /// The sending organisation and its référent.
    pub sender: Sender,
    /// The organisation the person is referred to.
    pub recipient: Recipient,
    /// The person referred (bénéficiaire).
    pub person: Person,
    /// Identifiers in the public systems, typed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identifiers: Vec<Identifier>,
    /// The person's situation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub situation: Option<Situation>,
    /// Obstacles to employment (freins périphériques).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub obstacles: Vec<Obstacle>,
    /// The pathway requested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pathway: Option<Pathway>,
    /// The axis of the offer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub axis: Option<Axis>,
    /// Why the person is referred (motif), free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Reference of the consent record or other lawful basis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consent_reference: Option<String>,
}

/// The person referred, version 2.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Person {
    /// First name.
    pub first_name: String,
    /// Last name (nom d'usage).
    pub last_name: String,
    /// Birth name, when it differs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub birth_name: Option<String>,
    /// Birth date.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub birth_date: Option<NaiveDate>,
    /// How to reach the person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<Contact>,
    /// Where the person lives, at commune level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Address>,
    /// Date from which the person is available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub availability: Option<NaiveDate>,
}

/// How to reach the person.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contact {
    /// Phone number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<Phone>,
    /// Email address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<Email>,
    /// Another way to reach the person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub other_method: Option<String>,
    /// How the person prefers to be contacted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preferences: Vec<ContactPreference>,
}

impl Contact {
    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Where the person lives, at commune level (never a street address).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Address {
    /// Postal code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postal_code: Option<PostalCode>,
    /// INSEE code of the commune.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insee_code: Option<InseeCode>,
    /// Commune name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
}

impl Address {
    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

wire_enum! {
    /// The systems whose identifiers Passerelle carries.
    IdentifierKind {
        /// France Travail number (11 digits).
        FranceTravail = 1 => "IDENTIFIER_KIND_FRANCE_TRAVAIL",
        /// CAF allocataire number.
        Caf = 2 => "IDENTIFIER_KIND_CAF",
        /// MSA allocataire number.
        Msa = 3 => "IDENTIFIER_KIND_MSA",
        /// Mission Locale i-milo dossier id.
        Imilo = 4 => "IDENTIFIER_KIND_IMILO",
        /// The département's internal id.
        Departement = 5 => "IDENTIFIER_KIND_DEPARTEMENT",
        /// NIR; restricted.
        Nir = 6 => "IDENTIFIER_KIND_NIR",
    }
}

/// One identifier of the person; its value is checked according to its kind
/// (see [`Identifier::new`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Identifier {
    /// Which system issued it.
    pub kind: IdentifierKind,
    /// The identifier.
    pub value: String,
}

impl Identifier {
    /// Builds an identifier, checking France Travail numbers and NIRs.
    pub fn new(kind: IdentifierKind, value: &str) -> Result<Self, super::ids::ValueError> {
        let value = match kind {
            IdentifierKind::FranceTravail => super::ids::FranceTravailNumber::parse(value)?.into(),
            IdentifierKind::Nir => super::ids::Nir::parse(value)?.into(),
            _ => value.to_owned(),
        };
        Ok(Self { kind, value })
    }
}

impl<'de> Deserialize<'de> for Identifier {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            kind: IdentifierKind,
            value: String,
        }
        let raw = Raw::deserialize(deserializer)?;
        Self::new(raw.kind, &raw.value).map_err(serde::de::Error::custom)
    }
}

wire_enum! {
    /// France Travail's eight contrainte domains, plus one for what fits none of them.
    ObstacleDomain {
        /// Health (contrainte_sante); special category of data.
        Health = 1 => "OBSTACLE_DOMAIN_HEALTH",
        /// Housing (contrainte_logement).
        Housing = 2 => "OBSTACLE_DOMAIN_HOUSING",
        /// Mobility (contrainte_mobilite).
        Mobility = 3 => "OBSTACLE_DOMAIN_MOBILITY",
        /// Family (contrainte_familiale).
        Family = 4 => "OBSTACLE_DOMAIN_FAMILY",
        /// Finances (contrainte_financiere).
        Finances = 5 => "OBSTACLE_DOMAIN_FINANCES",
        /// Digital (contrainte_numerique).
        Digital = 6 => "OBSTACLE_DOMAIN_DIGITAL",
        /// Administrative or legal (contrainte_administrative_juridique).
        AdministrativeLegal = 7 => "OBSTACLE_DOMAIN_ADMINISTRATIVE_LEGAL",
        /// French language or maths (contrainte_francais_calcul).
        FrenchMaths = 8 => "OBSTACLE_DOMAIN_FRENCH_MATHS",
        /// Fits none of the eight domains; the source label holds the wording.
        Unclassified = 9 => "OBSTACLE_DOMAIN_UNCLASSIFIED",
    }
}

wire_enum! {
    /// How strongly an obstacle weighs on the search for work.
    ObstacleImpact {
        /// Low impact.
        Low = 1 => "OBSTACLE_IMPACT_LOW",
        /// Medium impact.
        Medium = 2 => "OBSTACLE_IMPACT_MEDIUM",
        /// High impact (IMPACT_FORT_RECHERCHE_EMPLOI).
        High = 3 => "OBSTACLE_IMPACT_HIGH",
    }
}

/// An obstacle to employment (frein périphérique).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Obstacle {
    /// France Travail's domain it belongs to.
    pub domain: ObstacleDomain,
    /// How strongly it weighs, when assessed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub impact: Option<ObstacleImpact>,
    /// The sender's own code or wording for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_label: Option<String>,
}

wire_enum! {
    /// Education levels as France Travail codes them (niveau_etude).
    EducationLevel {
        /// AFS: no schooling.
        Afs = 1 => "EDUCATION_LEVEL_AFS",
        /// C12: primary or first years of collège.
        C12 = 2 => "EDUCATION_LEVEL_C12",
        /// C3A: up to the end of collège.
        C3a = 3 => "EDUCATION_LEVEL_C3A",
        /// CFG: certificat de formation générale.
        Cfg = 4 => "EDUCATION_LEVEL_CFG",
        /// CP4: second cycle without a diploma.
        Cp4 = 5 => "EDUCATION_LEVEL_CP4",
        /// NV5: CAP, BEP.
        Nv5 = 6 => "EDUCATION_LEVEL_NV5",
        /// NV4: baccalauréat.
        Nv4 = 7 => "EDUCATION_LEVEL_NV4",
        /// NV3: bac + 2.
        Nv3 = 8 => "EDUCATION_LEVEL_NV3",
        /// NV2: bac + 3 or 4.
        Nv2 = 9 => "EDUCATION_LEVEL_NV2",
        /// NV1: bac + 5 and above.
        Nv1 = 10 => "EDUCATION_LEVEL_NV1",
    }
}

/// The person's situation, version 2.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Situation {
    /// Situation labels in the sender's words.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    /// Whether the person receives the RSA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rsa_beneficiary: Option<bool>,
    /// Whether the person has a recognised disability (RQTH, BOE); health data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recognised_disability: Option<bool>,
    /// Anything else, free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub other: Option<String>,
    /// Highest education level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub education_level: Option<EducationLevel>,
}
