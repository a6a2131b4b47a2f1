//! DORA's `data_protection_commitment` as a consent record.
//!
//! In DORA's orientation form the advisor ticks a box committing to inform the
//! person of the referral and of the data sent (engagement RGPD
//! accompagnateur); DORA records no consent of the person. This is how the
//! field works today, so Passerelle imports it for what it is: a public-task
//! basis (GDPR Art. 6(1)(e)) with the person informed orally by the advisor
//! and free to object. The DORA adapter records it in the referral as
//! `consent_reference = dora::commitment_reference(referral_id)`; the record
//! built here has the id that reference names ([`RecordId::for_reference`]).

use std::collections::BTreeSet;

use chrono::{DateTime, Months, TimeDelta, Utc};
use serde_json::Value;

use crate::decision::LegalBasis;
use crate::formats::dora::commitment_reference;
use crate::model::categories::{DataCategory, category_of, element_name};
use crate::model::v2;
use crate::validate::SchemaName;

use super::record::{
    Collection, CollectionMethod, ConsentEvent, ConsentEventKind, ConsentRecord, ConsentV1Tag,
    Purpose, RecipientScope, RecordId, SubjectId,
};

/// How long an imported commitment stays valid: one year, the time an
/// orientation and its follow-up take; past it the sender must refer again.
pub const DORA_COMMITMENT_VALIDITY_MONTHS: u32 = 12;

/// What the person is told about withdrawing or objecting.
pub const DORA_WITHDRAWAL_METHOD: &str = "The person tells the référent of the sending structure, orally or in writing, that they object (GDPR Art. 21); the structure records the objection and Passerelle stops forwarding.";

/// Builds the public-task record standing for a DORA referral's
/// data-protection commitment: controller the sender, recipient the receiving
/// organisation, purpose orientation, the non-special data categories present
/// in the referral, collected orally by the référent, one `given` event at
/// `now`, valid one year. The subject id is derived from the referral id,
/// never from the person's names.
pub fn from_dora_commitment(referral: &v2::Referral, now: DateTime<Utc>) -> ConsentRecord {
    let sender = referral.sender.organisation.siret.clone();
    ConsentRecord {
        record_id: RecordId::derived(&commitment_reference(referral.referral_id)),
        schema_version: ConsentV1Tag,
        subject_id: subject_id(referral),
        legal_basis: LegalBasis::PublicTask,
        // DORA's form asks for no sensitive information: no Art. 9 basis.
        special_category_basis: None,
        controllers: vec![sender.clone()],
        recipients: vec![RecipientScope::Organisation(
            referral.recipient.organisation.siret.clone(),
        )],
        purposes: vec![Purpose::orientation()],
        data_categories: present_categories(referral)
            .into_iter()
            .filter(|category| !category.is_special() && *category != DataCategory::Nir)
            .collect(),
        notice: None,
        collection: Some(Collection {
            method: CollectionMethod::Oral,
            collected_by: sender.clone(),
            on_behalf_of_guardian: false,
        }),
        valid_from: Some(now),
        valid_until: Some(
            now.checked_add_months(Months::new(DORA_COMMITMENT_VALIDITY_MONTHS))
                .unwrap_or(now + TimeDelta::days(365)),
        ),
        withdrawal_method: Some(DORA_WITHDRAWAL_METHOD.to_owned()),
        evidence_sha256: None,
        events: vec![ConsentEvent {
            kind: ConsentEventKind::Given,
            at: now,
            recorded_by: sender,
        }],
    }
}

/// `dora-subject-` and a UUID v5 of the referral id: stable for a referral,
/// saying nothing of the person.
fn subject_id(referral: &v2::Referral) -> SubjectId {
    let namespace = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, b"urn:passerelle:dora-subject");
    SubjectId::pseudonym(
        "dora-subject",
        uuid::Uuid::new_v5(&namespace, referral.referral_id.uuid().as_bytes()),
    )
}

/// The data categories of the fields a referral has, read through the
/// declared field-path table (`model::categories`).
pub fn present_categories(referral: &v2::Referral) -> BTreeSet<DataCategory> {
    let mut categories = BTreeSet::new();
    if let Ok(document) = serde_json::to_value(referral) {
        collect(&document, "", &mut categories);
    }
    categories
}

fn collect(value: &Value, path: &str, categories: &mut BTreeSet<DataCategory>) {
    match value {
        Value::Object(members) => {
            for (key, member) in members {
                let child = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                collect(member, &child, categories);
            }
        }
        // Typed lists: each element is addressed by its kind or domain.
        Value::Array(items) if matches!(path, "identifiers" | "obstacles") => {
            for item in items {
                let element = item
                    .get("kind")
                    .or_else(|| item.get("domain"))
                    .and_then(Value::as_str)
                    .map(element_name);
                if let Some(element) = element {
                    collect(item, &format!("{path}.{element}"), categories);
                }
            }
        }
        Value::Null => {}
        _ => {
            if let Some(category) = category_of(SchemaName::ReferralV2, path) {
                categories.insert(category);
            }
        }
    }
}
