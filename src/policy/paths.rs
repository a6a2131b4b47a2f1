//! The leaves a policy decides on, for each message it applies to.
//!
//! A *leaf* is the smallest unit minimisation keeps, drops, pseudonymises or
//! derives: a scalar field (`person.first_name`), a list of scalars
//! (`situation.labels`), one kind of identifier (`identifiers.caf`, kind and
//! value together, since neither means anything alone), or one obstacle domain
//! (`obstacles.housing`, the element itself) with its two optional details
//! (`obstacles.housing.impact`, `obstacles.housing.source_label`).
//!
//! Leaves are numbered so that the plan of a policy is an array and the sets of
//! leaves met during one minimisation are bit sets: no lookup by name and no
//! allocation on the hot path.

use std::sync::OnceLock;

use crate::model::categories::{DataCategory, category_of, element_name};
use crate::model::v2::{IdentifierKind, ObstacleDomain};
use crate::validate::SchemaName;

/// What a leaf's value looks like, which decides whether a pseudonym fits it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// A string with no format rule: a 64-digit hexadecimal pseudonym is still valid there.
    Text,
    /// Anything else: checked strings (SIRET, email, France Travail number, NIR),
    /// dates, enumerations, booleans, lists.
    Other,
}

/// One leaf.
#[derive(Debug, Clone)]
pub(crate) struct Leaf {
    /// Its field path.
    pub(crate) path: String,
    /// Its data category, read from the declared table (`model::categories`).
    pub(crate) category: DataCategory,
    /// Whether a pseudonym fits it.
    pub(crate) shape: Shape,
    /// Whether the message schema requires it, so that every policy must forward it.
    pub(crate) schema_required: bool,
    /// For an obstacle detail, the leaf of its obstacle element: a detail only
    /// leaves with its element.
    pub(crate) element: Option<usize>,
}

/// A bit set over the leaves of one message (there are fewer than 128).
pub(crate) type LeafSet = u128;

/// The bit of a leaf.
pub(crate) const fn bit(leaf: usize) -> LeafSet {
    1 << leaf
}

macro_rules! fixed_leaves {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $path:literal, $shape:ident, $required:literal;)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub(crate) enum $name {
            $(#[doc = $path] $variant,)+
        }

        impl $name {
            /// Every fixed leaf with its path, shape and whether the schema requires it.
            const TABLE: &'static [(&'static str, Shape, bool)] = &[$(($path, Shape::$shape, $required),)+];

            /// Its leaf number.
            pub(crate) const fn leaf(self) -> usize {
                self as usize
            }
        }
    };
}

fixed_leaves! {
    /// The fixed leaves of a version 2 referral, in message order.
    R {
        ReferralId = "referral_id", Other, true;
        SchemaVersion = "schema_version", Other, true;
        CreatedAt = "created_at", Other, true;
        SenderSiret = "sender.organisation.siret", Other, true;
        SenderKind = "sender.organisation.kind", Other, true;
        SenderName = "sender.organisation.name", Text, false;
        ReferentFirstName = "sender.referent.first_name", Text, false;
        ReferentLastName = "sender.referent.last_name", Text, false;
        ReferentEmail = "sender.referent.email", Other, false;
        ReferentPhone = "sender.referent.phone", Other, false;
        RecipientSiret = "recipient.organisation.siret", Other, true;
        RecipientKind = "recipient.organisation.kind", Other, true;
        RecipientName = "recipient.organisation.name", Text, false;
        ServiceId = "recipient.service_id", Text, false;
        FirstName = "person.first_name", Text, true;
        LastName = "person.last_name", Text, true;
        BirthName = "person.birth_name", Text, false;
        BirthDate = "person.birth_date", Other, false;
        Phone = "person.contact.phone", Other, false;
        Email = "person.contact.email", Other, false;
        OtherMethod = "person.contact.other_method", Text, false;
        Preferences = "person.contact.preferences", Other, false;
        PostalCode = "person.address.postal_code", Other, false;
        InseeCode = "person.address.insee_code", Other, false;
        City = "person.address.city", Text, false;
        Availability = "person.availability", Other, false;
        Labels = "situation.labels", Other, false;
        RsaBeneficiary = "situation.rsa_beneficiary", Other, false;
        RecognisedDisability = "situation.recognised_disability", Other, false;
        SituationOther = "situation.other", Text, false;
        EducationLevel = "situation.education_level", Other, false;
        Pathway = "pathway", Other, false;
        Axis = "axis", Other, false;
        Reason = "reason", Text, false;
        ConsentReference = "consent_reference", Text, false;
    }
}

fixed_leaves! {
    /// The leaves of a status event, in message order.
    S {
        EventId = "event_id", Other, true;
        SchemaVersion = "schema_version", Other, true;
        ReferralId = "referral_id", Other, true;
        Status = "status", Other, true;
        OccurredAt = "occurred_at", Other, true;
        AuthorSiret = "author_siret", Other, true;
        RejectionReason = "rejection_reason", Other, false;
        Outcome = "outcome", Other, false;
        AppointmentAt = "appointment_at", Other, false;
        Comment = "comment", Text, false;
    }
}

/// The obstacle details, after the element leaf of each domain.
const OBSTACLE_DETAILS: [&str; 2] = ["impact", "source_label"];

/// The leaf of the identifiers of a kind.
pub(crate) fn identifier_leaf(kind: IdentifierKind) -> usize {
    R::TABLE.len() + kind_index(kind.number())
}

/// The element leaf of the obstacles of a domain.
pub(crate) fn obstacle_leaf(domain: ObstacleDomain) -> usize {
    R::TABLE.len() + IdentifierKind::ALL.len() + kind_index(domain.number()) * 3
}

/// The impact leaf of the obstacles of a domain.
pub(crate) fn obstacle_impact_leaf(domain: ObstacleDomain) -> usize {
    obstacle_leaf(domain) + 1
}

/// The source label leaf of the obstacles of a domain.
pub(crate) fn obstacle_label_leaf(domain: ObstacleDomain) -> usize {
    obstacle_leaf(domain) + 2
}

/// Proto enum numbers run from 1 without gaps (checked by a unit test), so
/// the number gives the position.
fn kind_index(number: i32) -> usize {
    usize::try_from(number - 1).unwrap_or_default()
}

/// The leaves of a message: `referral/v2` or `status/v1`.
pub(crate) fn leaves(schema: SchemaName) -> &'static [Leaf] {
    static REFERRAL: OnceLock<Vec<Leaf>> = OnceLock::new();
    static STATUS: OnceLock<Vec<Leaf>> = OnceLock::new();
    match schema {
        SchemaName::StatusV1 => STATUS.get_or_init(|| fixed(schema, S::TABLE)),
        _ => REFERRAL.get_or_init(referral_leaves),
    }
}

/// The leaves of a message in the order of their paths, for reports that
/// list paths sorted without sorting on every message.
pub(crate) fn by_path(schema: SchemaName) -> &'static [usize] {
    static REFERRAL: OnceLock<Vec<usize>> = OnceLock::new();
    static STATUS: OnceLock<Vec<usize>> = OnceLock::new();
    let order = |schema| {
        let leaves = leaves(schema);
        let mut order: Vec<usize> = (0..leaves.len()).collect();
        order.sort_by(|a, b| leaves[*a].path.cmp(&leaves[*b].path));
        order
    };
    match schema {
        SchemaName::StatusV1 => STATUS.get_or_init(|| order(schema)),
        _ => REFERRAL.get_or_init(|| order(SchemaName::ReferralV2)),
    }
}

fn fixed(schema: SchemaName, table: &[(&str, Shape, bool)]) -> Vec<Leaf> {
    table
        .iter()
        .map(|(path, shape, required)| Leaf {
            path: (*path).to_owned(),
            category: category(schema, path),
            shape: *shape,
            schema_required: *required,
            element: None,
        })
        .collect()
}

fn category(schema: SchemaName, path: &str) -> DataCategory {
    // Every leaf path is declared in `model::categories`; a unit test checks
    // it, and the most protected category is the safe fallback.
    category_of(schema, path).unwrap_or(DataCategory::FreeText)
}

fn referral_leaves() -> Vec<Leaf> {
    let schema = SchemaName::ReferralV2;
    let mut leaves = fixed(schema, R::TABLE);
    for kind in IdentifierKind::ALL {
        let path = format!("identifiers.{}", element_name(kind.wire_name()));
        // France Travail numbers and NIRs have checked formats; the other
        // identifiers are opaque strings that a pseudonym can stand for.
        let shape = match kind {
            IdentifierKind::FranceTravail | IdentifierKind::Nir => Shape::Other,
            _ => Shape::Text,
        };
        leaves.push(Leaf {
            category: category(schema, &path),
            path,
            shape,
            schema_required: false,
            element: None,
        });
    }
    for domain in ObstacleDomain::ALL {
        let path = format!("obstacles.{}", element_name(domain.wire_name()));
        let element = leaves.len();
        let category = category(schema, &path);
        leaves.push(Leaf {
            path: path.clone(),
            category,
            shape: Shape::Other,
            schema_required: false,
            element: None,
        });
        for detail in OBSTACLE_DETAILS {
            leaves.push(Leaf {
                path: format!("{path}.{detail}"),
                category,
                shape: if detail == "source_label" {
                    Shape::Text
                } else {
                    Shape::Other
                },
                schema_required: false,
                element: Some(element),
            });
        }
    }
    leaves
}

/// The leaves of a set, in leaf order.
pub(crate) fn members(mut set: LeafSet) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        if set == 0 {
            return None;
        }
        let leaf = set.trailing_zeros() as usize;
        set &= set - 1;
        Some(leaf)
    })
}

/// Whether a policy path covers a leaf: it names the leaf, a parent of it, or
/// (for an obstacle element) the element's `domain` field, which is what keeps
/// the element.
pub(crate) fn covers(path: &str, leaf: &Leaf) -> bool {
    let own = leaf.path.as_str();
    own == path
        || own
            .strip_prefix(path)
            .is_some_and(|rest| rest.starts_with('.'))
        || (leaf.element.is_none()
            && own.starts_with("obstacles.")
            && path.strip_prefix(own) == Some(".domain"))
}

/// The leaves a policy path covers.
pub(crate) fn covered(schema: SchemaName, path: &str) -> impl Iterator<Item = usize> + '_ {
    leaves(schema)
        .iter()
        .enumerate()
        .filter(move |(_, leaf)| covers(path, leaf))
        .map(|(index, _)| index)
}

/// The leaf a path lies strictly inside of (`identifiers.caf.value` lies
/// inside `identifiers.caf`), if any.
pub(crate) fn enclosing(schema: SchemaName, path: &str) -> Option<&'static Leaf> {
    leaves(schema).iter().find(|leaf| {
        path.strip_prefix(leaf.path.as_str())
            .is_some_and(|rest| rest.starts_with('.'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::categories::{fields, is_known_path};

    #[test]
    fn enum_numbers_give_positions() {
        for (index, kind) in IdentifierKind::ALL.iter().enumerate() {
            assert_eq!(kind_index(kind.number()), index);
        }
        for (index, domain) in ObstacleDomain::ALL.iter().enumerate() {
            assert_eq!(kind_index(domain.number()), index);
        }
    }

    #[test]
    fn every_leaf_is_a_declared_path_and_fits_the_bit_set() {
        for schema in [SchemaName::ReferralV2, SchemaName::StatusV1] {
            let leaves = leaves(schema);
            assert!(leaves.len() <= LeafSet::BITS as usize);
            for leaf in leaves {
                assert!(is_known_path(schema, &leaf.path), "{}", leaf.path);
                assert_eq!(category_of(schema, &leaf.path), Some(leaf.category));
            }
        }
    }

    #[test]
    fn every_declared_referral_path_is_covered_by_some_leaf_or_inside_one() {
        for field in fields(SchemaName::ReferralV2) {
            let covered = covered(SchemaName::ReferralV2, &field.path)
                .next()
                .is_some();
            let inside = enclosing(SchemaName::ReferralV2, &field.path).is_some();
            assert!(covered || inside, "{} has no leaf", field.path);
        }
    }

    #[test]
    fn leaf_numbers_match_their_paths() {
        let leaves = leaves(SchemaName::ReferralV2);
        assert_eq!(leaves[R::Reason.leaf()].path, "reason");
        assert_eq!(
            leaves[identifier_leaf(IdentifierKind::Nir)].path,
            "identifiers.nir"
        );
        assert_eq!(
            leaves[obstacle_label_leaf(ObstacleDomain::Unclassified)].path,
            "obstacles.unclassified.source_label"
        );
        assert_eq!(
            leaves[obstacle_impact_leaf(ObstacleDomain::Health)].element,
            Some(obstacle_leaf(ObstacleDomain::Health))
        );
        let status = super::leaves(SchemaName::StatusV1);
        assert_eq!(status[S::Comment.leaf()].path, "comment");
        assert_eq!(status[S::Comment.leaf()].category, DataCategory::FreeText);
    }

    #[test]
    fn obstacle_domain_field_keeps_the_element_only() {
        let paths: Vec<&str> = covered(SchemaName::ReferralV2, "obstacles.housing.domain")
            .map(|leaf| leaves(SchemaName::ReferralV2)[leaf].path.as_str())
            .collect();
        assert_eq!(paths, ["obstacles.housing"]);
        let paths: Vec<&str> = covered(SchemaName::ReferralV2, "obstacles.housing")
            .map(|leaf| leaves(SchemaName::ReferralV2)[leaf].path.as_str())
            .collect();
        assert_eq!(
            paths,
            [
                "obstacles.housing",
                "obstacles.housing.impact",
                "obstacles.housing.source_label"
            ]
        );
    }
}
