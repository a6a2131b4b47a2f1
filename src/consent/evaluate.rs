//! Evaluation of a consent record for one recipient, purpose and set of
//! required data categories. Pure: no I/O, no clock but `now`.
//!
//! The checks run in a fixed order and the first failure is the refusal:
//! record present → state at `now` → recipient covered → purpose covered →
//! required categories covered → an Art. 9 basis for required special
//! categories. Explanations name record ids, SIRETs, purpose terms and
//! category names: never the subject id nor any value of the referral.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};

use crate::decision::{Grant, Refusal, RefusalReason};
use crate::model::categories::DataCategory;
use crate::model::common::Organisation;

use super::record::{ConsentRecord, Purpose, kind_name};
use super::state::ConsentState;

/// Whether `record` lets data of the `needed` categories (those the policy
/// requires) leave for `recipient` and `purpose` at `now`. The grant carries
/// every category the record covers; the policy keeps within it.
pub fn evaluate(
    record: Option<&ConsentRecord>,
    recipient: &Organisation,
    purpose: &Purpose,
    needed: &BTreeSet<DataCategory>,
    now: DateTime<Utc>,
) -> Result<Grant, Refusal> {
    let Some(record) = record else {
        return Err(Refusal::new(
            RefusalReason::ConsentMissing,
            "no consent record or other lawful basis was found for this referral",
        ));
    };
    let id = record.record_id;
    let blocked = |reason: RefusalReason, what: &str| {
        Err(Refusal::new(reason, format!("consent record {id} {what}")))
    };
    match record.state_at(now) {
        ConsentState::Active => {}
        ConsentState::NeverGiven => {
            return blocked(
                RefusalReason::ConsentMissing,
                "holds no consent given (or information delivered) at that time",
            );
        }
        ConsentState::NotYetValid => {
            return blocked(
                RefusalReason::ConsentNotYetValid,
                "is not valid yet: its validity period has not started",
            );
        }
        ConsentState::Expired => {
            return blocked(
                RefusalReason::ConsentExpired,
                "has expired (its validity period is over or it was marked expired)",
            );
        }
        ConsentState::Refused => {
            return blocked(RefusalReason::ConsentRefused, "records a refusal");
        }
        ConsentState::Withdrawn => {
            return blocked(RefusalReason::ConsentWithdrawn, "records a withdrawal");
        }
        ConsentState::Objected => {
            return blocked(
                RefusalReason::ObjectionRecorded,
                "records an objection (GDPR Art. 21)",
            );
        }
        ConsentState::Invalidated => {
            return blocked(RefusalReason::ConsentInvalidated, "was invalidated");
        }
    }
    if !record.covers_recipient(&recipient.siret, recipient.kind) {
        return blocked(
            RefusalReason::OutOfScopeRecipient,
            &format!(
                "covers neither the recipient {} nor its kind {}",
                recipient.siret,
                kind_name(recipient.kind)
            ),
        );
    }
    if !record.covers_purpose(purpose) {
        return blocked(
            RefusalReason::OutOfScopePurpose,
            &format!("does not cover the purpose {purpose}"),
        );
    }
    // Non-personal categories (the referral's own facts, statuses) need no coverage.
    let categories: BTreeSet<DataCategory> = record
        .data_categories
        .iter()
        .copied()
        .chain(
            DataCategory::ALL
                .iter()
                .copied()
                .filter(|c| !c.is_personal()),
        )
        .collect();
    let uncovered: Vec<&str> = needed
        .difference(&categories)
        .map(|category| category.as_str())
        .collect();
    if !uncovered.is_empty() {
        return blocked(
            RefusalReason::OutOfScopeCategory,
            &format!(
                "does not cover the required categories {}",
                uncovered.join(", ")
            ),
        );
    }
    if record.special_category_basis.is_none() {
        let special: Vec<&str> = needed
            .iter()
            .filter(|category| category.is_special())
            .map(|category| category.as_str())
            .collect();
        if !special.is_empty() {
            return blocked(
                RefusalReason::SpecialCategoryWithoutBasis,
                &format!(
                    "has no GDPR Art. 9(2) basis for the required special categories {}",
                    special.join(", ")
                ),
            );
        }
    }
    Ok(Grant {
        record_id: id.to_string(),
        basis: record.legal_basis,
        special_category_basis: record.special_category_basis,
        categories,
    })
}
