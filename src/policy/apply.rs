//! Applying a policy within a consent grant: pure and deterministic.
//!
//! The typed message is read once and the output built field by field: a
//! field is cloned only when it leaves. What happened to each leaf is kept in
//! bit sets (present in the input, present in the output, pseudonymised,
//! derived), from which the report and any refusal are written.

use std::fmt::Write as _;

use super::paths::{
    self, Leaf, LeafSet, R, S, bit, identifier_leaf, members, obstacle_impact_leaf,
    obstacle_label_leaf, obstacle_leaf,
};
use super::{KeyReference, KeyRing, MessageKind, Policy, Replacement, Treatment};
use crate::decision::{Grant, MinimisationReport, Refusal, RefusalReason};
use crate::model::categories::DataCategory;
use crate::model::common::{Organisation, Recipient, Referent, Sender};
use crate::model::status::StatusEvent;
use crate::model::v2;

impl Policy {
    /// Minimises a referral within a grant: what leaves is what the policy
    /// allows, pseudonymises or derives *and* the grant allows. Refuses
    /// (`required-field-removed`, or `special-category-without-basis` for a
    /// required special field) when a required path does not reach the output,
    /// and (`policy-not-applicable`) when the policy is for status events.
    pub fn minimise_referral(
        &self,
        referral: &v2::Referral,
        grant: &Grant,
        keys: &KeyRing,
    ) -> Result<(v2::Referral, MinimisationReport), Refusal> {
        self.expect_message(MessageKind::Referral)?;
        let mut run = Run::new(self, grant, keys, 0);
        let replacement = referral
            .sender
            .organisation
            .name
            .as_deref()
            .and_then(|name| self.replacements.iter().find(|r| r.matches(name)));
        if let Some(rule) = replacement {
            run.suppressed = rule.remove;
        }

        let referral_id = run.value(R::ReferralId.leaf(), Some(&referral.referral_id));
        let schema_version = run.value(R::SchemaVersion.leaf(), Some(&referral.schema_version));
        let created_at = run.value(R::CreatedAt.leaf(), Some(&referral.created_at));
        let sender = &referral.sender;
        let sender_siret = run.value(R::SenderSiret.leaf(), Some(&sender.organisation.siret));
        let mut sender_kind = run.value(R::SenderKind.leaf(), Some(&sender.organisation.kind));
        let mut sender_name = run.text(R::SenderName.leaf(), sender.organisation.name.as_deref());
        if let Some(rule) = replacement {
            run.replace(rule, &mut sender_kind, &mut sender_name);
        }
        let referent = sender.referent.as_ref().and_then(|referent| {
            let kept = Referent {
                first_name: run.text(R::ReferentFirstName.leaf(), referent.first_name.as_deref()),
                last_name: run.text(R::ReferentLastName.leaf(), referent.last_name.as_deref()),
                email: run.value(R::ReferentEmail.leaf(), referent.email.as_ref()),
                phone: run.value(R::ReferentPhone.leaf(), referent.phone.as_ref()),
            };
            (kept != Referent::default()).then_some(kept)
        });
        let recipient = &referral.recipient;
        let recipient_siret = run.value(
            R::RecipientSiret.leaf(),
            Some(&recipient.organisation.siret),
        );
        let recipient_kind = run.value(R::RecipientKind.leaf(), Some(&recipient.organisation.kind));
        let recipient_name = run.text(
            R::RecipientName.leaf(),
            recipient.organisation.name.as_deref(),
        );
        let service_id = run.text(R::ServiceId.leaf(), recipient.service_id.as_deref());

        let person = &referral.person;
        let first_name = run.text(R::FirstName.leaf(), Some(&person.first_name));
        let last_name = run.text(R::LastName.leaf(), Some(&person.last_name));
        let birth_name = run.text(R::BirthName.leaf(), person.birth_name.as_deref());
        let birth_date = run.value(R::BirthDate.leaf(), person.birth_date.as_ref());
        let contact = person.contact.as_ref().and_then(|contact| {
            let kept = v2::Contact {
                phone: run.value(R::Phone.leaf(), contact.phone.as_ref()),
                email: run.value(R::Email.leaf(), contact.email.as_ref()),
                other_method: run.text(R::OtherMethod.leaf(), contact.other_method.as_deref()),
                preferences: run.list(R::Preferences.leaf(), &contact.preferences),
            };
            (!kept.is_empty()).then_some(kept)
        });
        let address = person.address.as_ref().and_then(|address| {
            let kept = v2::Address {
                postal_code: run.value(R::PostalCode.leaf(), address.postal_code.as_ref()),
                insee_code: run.value(R::InseeCode.leaf(), address.insee_code.as_ref()),
                city: run.text(R::City.leaf(), address.city.as_deref()),
            };
            (!kept.is_empty()).then_some(kept)
        });
        let availability = run.value(R::Availability.leaf(), person.availability.as_ref());

        let mut identifiers = Vec::new();
        for identifier in &referral.identifiers {
            if let Some(value) = run.text(identifier_leaf(identifier.kind), Some(&identifier.value))
            {
                identifiers.push(v2::Identifier {
                    kind: identifier.kind,
                    value,
                });
            }
        }
        let obstacles = run.obstacles(&referral.obstacles);
        let situation = referral.situation.as_ref().and_then(|situation| {
            let kept = v2::Situation {
                labels: run.list(R::Labels.leaf(), &situation.labels),
                rsa_beneficiary: run
                    .value(R::RsaBeneficiary.leaf(), situation.rsa_beneficiary.as_ref()),
                recognised_disability: run.value(
                    R::RecognisedDisability.leaf(),
                    situation.recognised_disability.as_ref(),
                ),
                other: run.text(R::SituationOther.leaf(), situation.other.as_deref()),
                education_level: run
                    .value(R::EducationLevel.leaf(), situation.education_level.as_ref()),
            };
            (kept != v2::Situation::default()).then_some(kept)
        });
        let pathway = run.value(R::Pathway.leaf(), referral.pathway.as_ref());
        let axis = run.value(R::Axis.leaf(), referral.axis.as_ref());
        let reason = run.text(R::Reason.leaf(), referral.reason.as_deref());
        let consent_reference = run.text(
            R::ConsentReference.leaf(),
            referral.consent_reference.as_deref(),
        );

        if let Some(refusal) = run.missing() {
            return Err(refusal);
        }
        // The schema-required fields are requirements, so they are all here.
        let (
            Some(referral_id),
            Some(schema_version),
            Some(created_at),
            Some(sender_siret),
            Some(sender_kind),
            Some(recipient_siret),
            Some(recipient_kind),
            Some(first_name),
            Some(last_name),
        ) = (
            referral_id,
            schema_version,
            created_at,
            sender_siret,
            sender_kind,
            recipient_siret,
            recipient_kind,
            first_name,
            last_name,
        )
        else {
            return Err(run.schema_field_lost());
        };
        let minimised = v2::Referral {
            referral_id,
            schema_version,
            created_at,
            sender: Sender {
                organisation: Organisation {
                    siret: sender_siret,
                    kind: sender_kind,
                    name: sender_name,
                },
                referent,
            },
            recipient: Recipient {
                organisation: Organisation {
                    siret: recipient_siret,
                    kind: recipient_kind,
                    name: recipient_name,
                },
                service_id,
            },
            person: v2::Person {
                first_name,
                last_name,
                birth_name,
                birth_date,
                contact,
                address,
                availability,
            },
            identifiers,
            situation,
            obstacles,
            pathway,
            axis,
            reason,
            consent_reference,
        };
        Ok((minimised, run.report()))
    }

    /// Minimises a status event within a grant, as
    /// [`minimise_referral`](Self::minimise_referral) does for referrals. The
    /// rejection reason and the outcome are required whenever the input has
    /// them, since the schema requires them for rejected and completed events.
    pub fn minimise_status(
        &self,
        event: &StatusEvent,
        grant: &Grant,
        keys: &KeyRing,
    ) -> Result<(StatusEvent, MinimisationReport), Refusal> {
        self.expect_message(MessageKind::Status)?;
        let conditional = bit(S::RejectionReason.leaf()) | bit(S::Outcome.leaf());
        let mut run = Run::new(self, grant, keys, conditional);
        let event_id = run.value(S::EventId.leaf(), Some(&event.event_id));
        let schema_version = run.value(S::SchemaVersion.leaf(), Some(&event.schema_version));
        let referral_id = run.value(S::ReferralId.leaf(), Some(&event.referral_id));
        let status = run.value(S::Status.leaf(), Some(&event.status));
        let occurred_at = run.value(S::OccurredAt.leaf(), Some(&event.occurred_at));
        let author_siret = run.value(S::AuthorSiret.leaf(), Some(&event.author_siret));
        let rejection_reason =
            run.value(S::RejectionReason.leaf(), event.rejection_reason.as_ref());
        let outcome = run.value(S::Outcome.leaf(), event.outcome.as_ref());
        let appointment_at = run.value(S::AppointmentAt.leaf(), event.appointment_at.as_ref());
        let comment = run.text(S::Comment.leaf(), event.comment.as_deref());
        if let Some(refusal) = run.missing() {
            return Err(refusal);
        }
        let (
            Some(event_id),
            Some(schema_version),
            Some(referral_id),
            Some(status),
            Some(occurred_at),
            Some(author_siret),
        ) = (
            event_id,
            schema_version,
            referral_id,
            status,
            occurred_at,
            author_siret,
        )
        else {
            return Err(run.schema_field_lost());
        };
        let minimised = StatusEvent {
            event_id,
            schema_version,
            referral_id,
            status,
            occurred_at,
            author_siret,
            rejection_reason,
            outcome,
            appointment_at,
            comment,
        };
        Ok((minimised, run.report()))
    }

    fn expect_message(&self, message: MessageKind) -> Result<(), Refusal> {
        if self.message == message {
            return Ok(());
        }
        Err(Refusal::new(
            RefusalReason::PolicyNotApplicable,
            format!(
                "policy {} {} minimises {} messages, not {} messages",
                self.id,
                self.version,
                self.message.as_str(),
                message.as_str()
            ),
        ))
    }
}

impl Replacement {
    /// Whether the sender's name contains one of the words or phrases, as
    /// whole words, in any case.
    fn matches(&self, name: &str) -> bool {
        let name = name.to_lowercase();
        let tokens: Vec<&str> = words(&name).collect();
        self.words.iter().any(|phrase| {
            !phrase.is_empty()
                && tokens
                    .windows(phrase.len())
                    .any(|window| window.iter().zip(phrase).all(|(a, b)| *a == b))
        })
    }
}

/// The words of a text: its runs of letters and digits.
pub(super) fn words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty())
}

/// The bit of a category in a grant mask (there are fewer than 32).
fn category_bit(category: DataCategory) -> u32 {
    1 << (category as u32)
}

/// The categories that need an Art. 9 basis, as a mask.
fn special_mask() -> u32 {
    DataCategory::ALL
        .iter()
        .filter(|category| category.is_special())
        .fold(0, |mask, category| mask | category_bit(*category))
}

/// What happens to one leaf under the policy and the grant.
enum Effect<'a> {
    Drop,
    Keep,
    Pseudonymise(&'a KeyReference),
    Derive,
}

/// One minimisation under way.
struct Run<'a> {
    policy: &'a Policy,
    grant: &'a Grant,
    keys: &'a KeyRing,
    leaves: &'static [Leaf],
    /// The categories the grant allows, as a mask.
    granted: u32,
    /// Leaves a `[[replace]]` rule removes for this message.
    suppressed: LeafSet,
    /// Leaves the schema requires whenever the input has them.
    conditional: LeafSet,
    input: LeafSet,
    output: LeafSet,
    pseudonymised: LeafSet,
    derived: LeafSet,
    key_missing: LeafSet,
}

impl<'a> Run<'a> {
    fn new(policy: &'a Policy, grant: &'a Grant, keys: &'a KeyRing, conditional: LeafSet) -> Self {
        // The same rule as `Grant::allows`, computed once for every category:
        // covered by the record and, if special, backed by an Art. 9 basis.
        let covered = grant
            .categories
            .iter()
            .fold(0, |mask, category| mask | category_bit(*category));
        let granted = if grant.special_category_basis.is_some() {
            covered
        } else {
            covered & !special_mask()
        };
        Self {
            policy,
            grant,
            keys,
            leaves: paths::leaves(policy.message.schema()),
            granted,
            suppressed: 0,
            conditional,
            input: 0,
            output: 0,
            pseudonymised: 0,
            derived: 0,
            key_missing: 0,
        }
    }

    fn effect(&self, leaf: usize) -> Effect<'a> {
        if self.suppressed & bit(leaf) != 0
            || self.granted & category_bit(self.leaves[leaf].category) == 0
        {
            return Effect::Drop;
        }
        match self.policy.plan[leaf] {
            Treatment::Drop => Effect::Drop,
            Treatment::Keep => Effect::Keep,
            Treatment::Pseudonymise(slot) => Effect::Pseudonymise(&self.policy.keys[slot]),
            Treatment::Derive => Effect::Derive,
        }
    }

    /// A non-text value: kept (or derived, for a value that is already its
    /// coarser form) or dropped. Pseudonyms only go on text leaves.
    fn value<T: Clone>(&mut self, leaf: usize, value: Option<&T>) -> Option<T> {
        let value = value?;
        self.input |= bit(leaf);
        match self.effect(leaf) {
            Effect::Keep => {
                self.output |= bit(leaf);
                Some(value.clone())
            }
            Effect::Derive => {
                self.output |= bit(leaf);
                self.derived |= bit(leaf);
                Some(value.clone())
            }
            Effect::Pseudonymise(_) | Effect::Drop => None,
        }
    }

    /// A list leaf: present when not empty.
    fn list<T: Clone>(&mut self, leaf: usize, values: &[T]) -> Vec<T> {
        if values.is_empty() {
            return Vec::new();
        }
        self.value(leaf, Some(&values))
            .map(<[T]>::to_vec)
            .unwrap_or_default()
    }

    /// A text leaf: kept, pseudonymised or dropped. Without its key, a
    /// pseudonymised value is dropped, never sent in clear.
    fn text(&mut self, leaf: usize, value: Option<&str>) -> Option<String> {
        let value = value?;
        self.input |= bit(leaf);
        match self.effect(leaf) {
            Effect::Keep | Effect::Derive => {
                self.output |= bit(leaf);
                Some(value.to_owned())
            }
            Effect::Pseudonymise(reference) => match self.keys.pseudonym(reference, value) {
                Some(pseudonym) => {
                    self.output |= bit(leaf);
                    self.pseudonymised |= bit(leaf);
                    Some(pseudonym)
                }
                None => {
                    self.key_missing |= bit(leaf);
                    None
                }
            },
            Effect::Drop => None,
        }
    }

    /// Applies a `[[replace]]` rule to the sender's kind and name that leave.
    fn replace(
        &mut self,
        rule: &Replacement,
        kind: &mut Option<crate::model::common::OrganisationKind>,
        name: &mut Option<String>,
    ) {
        if let (Some(replacement), Some(kind)) = (rule.kind, kind.as_mut()) {
            *kind = replacement;
            self.derived |= bit(R::SenderKind.leaf());
        }
        let name_leaf = bit(R::SenderName.leaf());
        if name.is_some() {
            self.pseudonymised &= !name_leaf;
            *name = rule.name.clone();
            if name.is_some() {
                self.derived |= name_leaf;
            } else {
                self.output &= !name_leaf;
            }
        }
    }

    /// Obstacles: an element leaves with its domain; its details each by
    /// their own leaf. A derived domain leaves once, as the bare domain.
    fn obstacles(&mut self, obstacles: &[v2::Obstacle]) -> Vec<v2::Obstacle> {
        let mut kept = Vec::with_capacity(obstacles.len());
        for obstacle in obstacles {
            let element = obstacle_leaf(obstacle.domain);
            self.input |= bit(element);
            match self.effect(element) {
                Effect::Keep => {
                    self.output |= bit(element);
                    kept.push(v2::Obstacle {
                        domain: obstacle.domain,
                        impact: self.value(
                            obstacle_impact_leaf(obstacle.domain),
                            obstacle.impact.as_ref(),
                        ),
                        source_label: self.text(
                            obstacle_label_leaf(obstacle.domain),
                            obstacle.source_label.as_deref(),
                        ),
                    });
                }
                Effect::Derive => {
                    if obstacle.impact.is_some() {
                        self.input |= bit(obstacle_impact_leaf(obstacle.domain));
                    }
                    if obstacle.source_label.is_some() {
                        self.input |= bit(obstacle_label_leaf(obstacle.domain));
                    }
                    if self.output & bit(element) == 0 {
                        self.output |= bit(element);
                        self.derived |= bit(element);
                        kept.push(v2::Obstacle {
                            domain: obstacle.domain,
                            impact: None,
                            source_label: None,
                        });
                    }
                }
                Effect::Pseudonymise(_) | Effect::Drop => {
                    // The details go with the element; the report names the element only.
                }
            }
        }
        kept
    }

    /// The refusal for required paths that did not reach the output, if any.
    fn missing(&self) -> Option<Refusal> {
        let mut explanation = String::new();
        let mut special_without_basis = false;
        let mut note = |path: &str, by: String, leaves: LeafSet, category: DataCategory| {
            let (cause, special) = self.cause(leaves, category);
            special_without_basis |= special;
            if !explanation.is_empty() {
                explanation.push_str("; ");
            }
            let _ = write!(explanation, "{path} is required by {by} but {cause}");
        };
        for requirement in &self.policy.required {
            if requirement.leaves & self.output == 0 {
                let by = if requirement.by_schema {
                    format!("the {} schema", self.policy.message.schema().as_str())
                } else {
                    format!("policy {} {}", self.policy.id, self.policy.version)
                };
                note(
                    &requirement.path,
                    by,
                    requirement.leaves,
                    requirement.category,
                );
            }
        }
        for leaf in members(self.conditional & self.input & !self.output) {
            let details = &self.leaves[leaf];
            let by = format!(
                "the {} schema for this status",
                self.policy.message.schema().as_str()
            );
            note(&details.path, by, bit(leaf), details.category);
        }
        if explanation.is_empty() {
            return None;
        }
        let reason = if special_without_basis {
            RefusalReason::SpecialCategoryWithoutBasis
        } else {
            RefusalReason::RequiredFieldRemoved
        };
        Some(Refusal::new(reason, explanation))
    }

    /// Why required leaves are not in the output, and whether the cause is a
    /// special category without an Art. 9 basis.
    fn cause(&self, leaves: LeafSet, category: DataCategory) -> (String, bool) {
        let record = &self.grant.record_id;
        if self.input & leaves == 0 {
            return ("it is absent from the input".to_owned(), false);
        }
        if self.suppressed & self.input & leaves != 0 {
            return (
                "the policy's [[replace]] rule removes it for this sender".to_owned(),
                false,
            );
        }
        if let Some(leaf) = members(self.key_missing & leaves).next() {
            let reference = match self.policy.plan[leaf] {
                Treatment::Pseudonymise(slot) => self.policy.keys[slot].to_string(),
                _ => "its key".to_owned(),
            };
            return (
                format!(
                    "the key ring holds no key for {reference}, and a pseudonymised value is never sent in clear"
                ),
                false,
            );
        }
        if !self.grant.allows(category) {
            if category.is_special() && self.grant.categories.contains(&category) {
                return (
                    format!(
                        "its category {} is special (GDPR Art. 9) and consent record {record} has no Art. 9 basis",
                        category.as_str()
                    ),
                    true,
                );
            }
            return (
                format!(
                    "consent record {record} does not cover its category {}",
                    category.as_str()
                ),
                false,
            );
        }
        ("the policy removed it".to_owned(), false)
    }

    /// Unreachable in practice: `missing` reports any lost schema field.
    fn schema_field_lost(&self) -> Refusal {
        self.missing().unwrap_or_else(|| {
            Refusal::new(
                RefusalReason::RequiredFieldRemoved,
                format!(
                    "a field the {} schema requires did not reach the output",
                    self.policy.message.schema().as_str()
                ),
            )
        })
    }

    fn report(&self) -> MinimisationReport {
        let removed_set = self.input & !self.output;
        // An obstacle's details are named by the element when it is removed.
        let removed = members(removed_set)
            .filter(|leaf| {
                self.leaves[*leaf]
                    .element
                    .is_some_and(|element| removed_set & bit(element) != 0)
            })
            .fold(removed_set, |set, leaf| set & !bit(leaf));
        MinimisationReport {
            removed: self.paths(removed),
            pseudonymised: self.paths(self.pseudonymised),
            derived: self.paths(self.derived),
            policy_id: self.policy.id.clone(),
            policy_version: self.policy.version.clone(),
        }
    }

    /// The paths of a set of leaves, sorted (each leaf has its own path).
    fn paths(&self, set: LeafSet) -> Vec<String> {
        if set == 0 {
            return Vec::new();
        }
        let mut paths = Vec::with_capacity(set.count_ones() as usize);
        for leaf in paths::by_path(self.policy.message.schema()) {
            if set & bit(*leaf) != 0 {
                paths.push(self.leaves[*leaf].path.clone());
            }
        }
        paths
    }
}
