//! Referral schema version 1 (`passerelle.referral.v1`): flat identifiers and
//! obstacles in the sender's own words.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use super::common::{Axis, ContactPreference, Pathway, Recipient, Sender, schema_tag};
use super::ids::{Email, FranceTravailNumber, InseeCode, Nir, Phone, PostalCode, ReferralId};

schema_tag!(
    /// The `schema_version` of a version 1 referral.
    ReferralV1Tag = "passerelle.referral.v1"
);

/// A referral (orientation), version 1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Referral {
    /// UUID chosen by the sender; the idempotency key.
    pub referral_id: ReferralId,
    /// Always `passerelle.referral.v1`.
    pub schema_version: ReferralV1Tag,
    /// When the sender created the referral.
    pub created_at: DateTime<Utc>,
    /// The sending organisation and its référent.
    pub sender: Sender,
    /// The organisation the person is referred to.
    pub recipient: Recipient,
    /// The person referred (bénéficiaire).
    pub person: Person,
    /// Identifiers in the public systems, one field each.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identifiers: Option<Identifiers>,
    /// The person's situation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub situation: Option<Situation>,
    /// Obstacles to employment (freins périphériques), in the sender's words.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub obstacles: Vec<String>,
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

/// The person referred, version 1 (contact and address fields flat).
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
    /// Phone number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<Phone>,
    /// Email address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<Email>,
    /// Another way to reach the person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub other_contact_method: Option<String>,
    /// Postal code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postal_code: Option<PostalCode>,
    /// INSEE code of the commune.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insee_code: Option<InseeCode>,
    /// Commune name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
    /// Date from which the person is available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub availability: Option<NaiveDate>,
    /// How the person prefers to be contacted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub contact_preferences: Vec<ContactPreference>,
}

/// Identifiers, flat in version 1.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identifiers {
    /// France Travail number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub france_travail_number: Option<FranceTravailNumber>,
    /// CAF or MSA allocataire number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caf_number: Option<String>,
    /// Mission Locale i-milo dossier id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imilo_dossier_id: Option<String>,
    /// The département's internal id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub departement_id: Option<String>,
    /// NIR; restricted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nir: Option<Nir>,
}

impl Identifiers {
    /// Whether no identifier is set.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// The person's situation, version 1.
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
}
