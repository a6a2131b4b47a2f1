//! The forwarding decision: may this referral leave for this recipient and
//! purpose, and in what minimised form? Pure: no I/O, no clock but `now`.
//!
//! The consent module turns a consent record into a [`Grant`] (or a
//! [`Refusal`]); the policy module applies a minimisation policy within that
//! grant. The data forwarded is the intersection of what the policy allows and
//! what the record covers.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::consent::{ConsentRecord, Purpose, RecordId};
use crate::model::categories::DataCategory;
use crate::model::common::Organisation;
use crate::model::v2;
use crate::policy::{KeyRing, Policy};

/// The GDPR basis under which data leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LegalBasis {
    /// Art. 6(1)(a): consent.
    Consent,
    /// Art. 6(1)(e): public task, the person informed and free to object.
    PublicTask,
}

/// The GDPR Art. 9(2) basis under which special categories may leave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SpecialCategoryBasis {
    /// Art. 9(2)(a): explicit consent.
    ExplicitConsent,
    /// Art. 9(2)(b): employment and social protection law.
    SocialProtection,
}

/// What a valid consent record allows for one recipient and purpose.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Grant {
    /// The consent record it comes from.
    pub record_id: String,
    /// The Art. 6 basis.
    pub basis: LegalBasis,
    /// The Art. 9 basis, when special categories are covered.
    pub special_category_basis: Option<SpecialCategoryBasis>,
    /// The data categories the record covers.
    pub categories: BTreeSet<DataCategory>,
}

impl Grant {
    /// Whether data of this category may leave under the grant: covered by the
    /// record and, for a special category, backed by an Art. 9 basis.
    pub fn allows(&self, category: DataCategory) -> bool {
        self.categories.contains(&category)
            && (!category.is_special() || self.special_category_basis.is_some())
    }
}

/// Why a referral may not leave. The codes are stable: clients, the audit log
/// and the conformance suite match on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum RefusalReason {
    /// No consent record (or other basis) is referenced or found.
    #[serde(rename = "consent-missing")]
    ConsentMissing,
    /// The person refused.
    #[serde(rename = "consent-refused")]
    ConsentRefused,
    /// The person withdrew consent.
    #[serde(rename = "consent-withdrawn")]
    ConsentWithdrawn,
    /// The person objected to a public-task processing (Art. 21).
    #[serde(rename = "objection-recorded")]
    ObjectionRecorded,
    /// The record's validity period is over, or it was marked expired.
    #[serde(rename = "consent-expired")]
    ConsentExpired,
    /// The record's validity has not started.
    #[serde(rename = "consent-not-yet-valid")]
    ConsentNotYetValid,
    /// The record was found invalid.
    #[serde(rename = "consent-invalidated")]
    ConsentInvalidated,
    /// The record does not cover this recipient.
    #[serde(rename = "consent-out-of-scope-recipient")]
    OutOfScopeRecipient,
    /// The record does not cover this purpose.
    #[serde(rename = "consent-out-of-scope-purpose")]
    OutOfScopePurpose,
    /// The record does not cover a data category the policy requires.
    #[serde(rename = "consent-out-of-scope-category")]
    OutOfScopeCategory,
    /// A special category would leave without an Art. 9 basis.
    #[serde(rename = "special-category-without-basis")]
    SpecialCategoryWithoutBasis,
    /// Minimisation or consent removed a field the recipient requires.
    #[serde(rename = "required-field-removed")]
    RequiredFieldRemoved,
    /// The policy is not the one for this recipient and purpose.
    #[serde(rename = "policy-not-applicable")]
    PolicyNotApplicable,
    /// The referral names another sender than the organisation sending it.
    #[serde(rename = "sender-mismatch")]
    SenderMismatch,
    /// The referral is addressed to another organisation than the recipient decided for.
    #[serde(rename = "recipient-mismatch")]
    RecipientMismatch,
}

impl RefusalReason {
    /// The stable code.
    pub fn code(self) -> &'static str {
        match self {
            Self::ConsentMissing => "consent-missing",
            Self::ConsentRefused => "consent-refused",
            Self::ConsentWithdrawn => "consent-withdrawn",
            Self::ObjectionRecorded => "objection-recorded",
            Self::ConsentExpired => "consent-expired",
            Self::ConsentNotYetValid => "consent-not-yet-valid",
            Self::ConsentInvalidated => "consent-invalidated",
            Self::OutOfScopeRecipient => "consent-out-of-scope-recipient",
            Self::OutOfScopePurpose => "consent-out-of-scope-purpose",
            Self::OutOfScopeCategory => "consent-out-of-scope-category",
            Self::SpecialCategoryWithoutBasis => "special-category-without-basis",
            Self::RequiredFieldRemoved => "required-field-removed",
            Self::PolicyNotApplicable => "policy-not-applicable",
            Self::SenderMismatch => "sender-mismatch",
            Self::RecipientMismatch => "recipient-mismatch",
        }
    }
}

/// A refusal: the reason code and an explanation naming field paths and
/// categories, never values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refusal {
    /// The stable reason code.
    pub reason: RefusalReason,
    /// For people: what is missing or out of scope (paths, categories, ids).
    pub explanation: String,
}

impl Refusal {
    /// A refusal with its explanation.
    pub fn new(reason: RefusalReason, explanation: impl Into<String>) -> Self {
        Self {
            reason,
            explanation: explanation.into(),
        }
    }
}

/// What minimisation did, by field path (see `model::categories`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MinimisationReport {
    /// Field paths present in the input and removed.
    pub removed: Vec<String>,
    /// Field paths whose values were replaced by keyed pseudonyms.
    pub pseudonymised: Vec<String>,
    /// Field paths whose values were replaced by a coarser derived value.
    pub derived: Vec<String>,
    /// The policy applied.
    pub policy_id: String,
    /// Its version.
    pub policy_version: String,
}

/// A referral that may leave, in the form it leaves in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Forward {
    /// The minimised referral.
    pub referral: v2::Referral,
    /// What minimisation removed, pseudonymised and derived.
    pub report: MinimisationReport,
    /// The consent record and bases the data leaves under.
    pub grant: Grant,
}

/// The outcome of [`decide`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    /// The referral may leave, minimised.
    Forward(Box<Forward>),
    /// The referral may not leave.
    Refuse(Refusal),
}

/// Decides whether a referral may leave `sender` for `recipient` for `purpose`,
/// and in what form: the intersection of what `policy` allows and what the
/// consent record covers. Pure and deterministic: the same inputs give the
/// same decision.
///
/// Checks, in order: the referral names `sender` and `recipient`; the policy is
/// the one for this recipient and purpose; the consent record is the one the
/// referral references (`consent_reference`); it is in force and
/// covers the recipient, the purpose and every category the policy requires;
/// minimisation keeps every field the policy requires.
#[allow(clippy::too_many_arguments)]
pub fn decide(
    referral: &v2::Referral,
    sender: &Organisation,
    recipient: &Organisation,
    purpose: &Purpose,
    consent: Option<&ConsentRecord>,
    policy: &Policy,
    keys: &KeyRing,
    now: DateTime<Utc>,
) -> Decision {
    match try_decide(
        referral, sender, recipient, purpose, consent, policy, keys, now,
    ) {
        Ok(forward) => Decision::Forward(Box::new(forward)),
        Err(refusal) => Decision::Refuse(refusal),
    }
}

#[allow(clippy::too_many_arguments)]
fn try_decide(
    referral: &v2::Referral,
    sender: &Organisation,
    recipient: &Organisation,
    purpose: &Purpose,
    consent: Option<&ConsentRecord>,
    policy: &Policy,
    keys: &KeyRing,
    now: DateTime<Utc>,
) -> Result<Forward, Refusal> {
    if referral.sender.organisation.siret != sender.siret {
        return Err(Refusal::new(
            RefusalReason::SenderMismatch,
            format!(
                "the referral names sender {} but is sent by {}",
                referral.sender.organisation.siret, sender.siret
            ),
        ));
    }
    if referral.recipient.organisation.siret != recipient.siret {
        return Err(Refusal::new(
            RefusalReason::RecipientMismatch,
            format!(
                "the referral is addressed to {}, not to {}",
                referral.recipient.organisation.siret, recipient.siret
            ),
        ));
    }
    if !policy.applies_to(recipient, purpose.as_str()) {
        return Err(Refusal::new(
            RefusalReason::PolicyNotApplicable,
            format!(
                "policy {} (version {}) is not the policy for recipient {} and purpose {}",
                policy.id(),
                policy.version(),
                recipient.siret,
                purpose.as_str()
            ),
        ));
    }
    let consent = match (consent, referral.consent_reference.as_deref()) {
        (None, _) => None,
        (Some(_), None) => {
            return Err(Refusal::new(
                RefusalReason::ConsentMissing,
                "the referral references no consent record",
            ));
        }
        (Some(record), Some(reference)) => {
            // The record must be the one the referral names, never another record of the person's.
            let referenced = RecordId::for_reference(reference).map_err(|error| {
                Refusal::new(
                    RefusalReason::ConsentMissing,
                    format!("the referral's consent reference is not usable: {error}"),
                )
            })?;
            if referenced != record.record_id {
                return Err(Refusal::new(
                    RefusalReason::ConsentMissing,
                    format!(
                        "the referral references consent record {referenced}, not record {}",
                        record.record_id
                    ),
                ));
            }
            Some(record)
        }
    };
    let grant = crate::consent::evaluate(
        consent,
        recipient,
        purpose,
        &policy.required_categories(),
        now,
    )?;
    let (referral, report) = policy.minimise_referral(referral, &grant, keys)?;
    Ok(Forward {
        referral,
        report,
        grant,
    })
}
