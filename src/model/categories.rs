//! Data categories: every canonical field path carries one, declared once in
//! the protos (field and enum-value options of `passerelle.options.v1`) and
//! read here from the compiled descriptors.
//!
//! # Field paths
//! Policies, consent records, decision reports and the audit log name fields by
//! *field path*: the proto field names from the message root joined by dots
//! (`person.contact.phone`, `situation.recognised_disability`). Elements of the
//! two typed lists are addressed by their kind, lower case without prefix:
//! `identifiers.france_travail`, `identifiers.nir`, `obstacles.health`,
//! `obstacles.unclassified`. A path names a whole subtree (`person.contact`
//! covers `person.contact.phone`). Paths never contain values or indices.

use serde::{Deserialize, Serialize};

/// What kind of personal (or non-personal) data a field holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataCategory {
    /// Facts about the referral itself (ids, dates, organisations, pathway); not about the person.
    Referral,
    /// The référent's professional contact details.
    Referent,
    /// Names of the person.
    Identity,
    /// Birth date.
    BirthDate,
    /// Phone, email, other contact method, preferences.
    Contact,
    /// Commune-level location (postal code, INSEE code, city).
    Location,
    /// When the person is available.
    Availability,
    /// Identifiers in public systems (France Travail, CAF, MSA, i-milo, département).
    Identifier,
    /// NIR (social security number): restricted in every tool.
    Nir,
    /// Situation in the sender's words, education level.
    Situation,
    /// Social benefits such as the RSA.
    SocialBenefits,
    /// Recognised disability (RQTH, BOE, AAH, ESAT): health data under GDPR Art. 9.
    Disability,
    /// Health obstacles: health data under GDPR Art. 9.
    ObstacleHealth,
    /// Housing obstacles.
    ObstacleHousing,
    /// Mobility obstacles.
    ObstacleMobility,
    /// Family obstacles.
    ObstacleFamily,
    /// Financial obstacles.
    ObstacleFinances,
    /// Digital obstacles.
    ObstacleDigital,
    /// Administrative or legal obstacles (may reveal justice matters).
    ObstacleAdministrativeLegal,
    /// French language or maths obstacles.
    ObstacleFrenchMaths,
    /// Obstacles fitting no domain, in the sender's words.
    ObstacleUnclassified,
    /// Free text: reasons, comments, other remarks. Dropped unless a policy allows it.
    FreeText,
    /// Status of a referral (status events).
    Status,
}

impl DataCategory {
    /// Every category.
    pub const ALL: &'static [Self] = &[
        Self::Referral,
        Self::Referent,
        Self::Identity,
        Self::BirthDate,
        Self::Contact,
        Self::Location,
        Self::Availability,
        Self::Identifier,
        Self::Nir,
        Self::Situation,
        Self::SocialBenefits,
        Self::Disability,
        Self::ObstacleHealth,
        Self::ObstacleHousing,
        Self::ObstacleMobility,
        Self::ObstacleFamily,
        Self::ObstacleFinances,
        Self::ObstacleDigital,
        Self::ObstacleAdministrativeLegal,
        Self::ObstacleFrenchMaths,
        Self::ObstacleUnclassified,
        Self::FreeText,
        Self::Status,
    ];

    /// Whether the category is a special category of data (GDPR Art. 9): it may
    /// only leave under an Art. 9(2) basis.
    pub fn is_special(self) -> bool {
        matches!(self, Self::Disability | Self::ObstacleHealth)
    }

    /// The snake_case name used in policies, consent records and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Referral => "referral",
            Self::Referent => "referent",
            Self::Identity => "identity",
            Self::BirthDate => "birth_date",
            Self::Contact => "contact",
            Self::Location => "location",
            Self::Availability => "availability",
            Self::Identifier => "identifier",
            Self::Nir => "nir",
            Self::Situation => "situation",
            Self::SocialBenefits => "social_benefits",
            Self::Disability => "disability",
            Self::ObstacleHealth => "obstacle_health",
            Self::ObstacleHousing => "obstacle_housing",
            Self::ObstacleMobility => "obstacle_mobility",
            Self::ObstacleFamily => "obstacle_family",
            Self::ObstacleFinances => "obstacle_finances",
            Self::ObstacleDigital => "obstacle_digital",
            Self::ObstacleAdministrativeLegal => "obstacle_administrative_legal",
            Self::ObstacleFrenchMaths => "obstacle_french_maths",
            Self::ObstacleUnclassified => "obstacle_unclassified",
            Self::FreeText => "free_text",
            Self::Status => "status",
        }
    }

    /// The category of that name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|c| c.as_str() == name)
    }
}

/// One field path of a message and its category.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldCategory {
    /// The field path (see the module documentation).
    pub path: String,
    /// Its category.
    pub category: DataCategory,
}

/// Every field path of a message, with its category, in declaration order.
/// Typed-list elements appear once per kind (`identifiers.nir`), with their
/// sub-fields under them (`identifiers.nir.value`).
pub fn fields(schema: crate::validate::SchemaName) -> &'static [FieldCategory] {
    use std::sync::OnceLock;
    static TABLES: OnceLock<Vec<Vec<FieldCategory>>> = OnceLock::new();
    let tables = TABLES.get_or_init(|| {
        crate::validate::SchemaName::ALL
            .iter()
            .map(|schema| declared(*schema))
            .collect()
    });
    let index = crate::validate::SchemaName::ALL
        .iter()
        .position(|s| *s == schema)
        .unwrap_or_default();
    &tables[index]
}

/// The category of a field path of a message: the category of the path itself
/// or of its nearest declared parent.
pub fn category_of(schema: crate::validate::SchemaName, path: &str) -> Option<DataCategory> {
    let fields = fields(schema);
    let mut candidate = path;
    loop {
        if let Some(field) = fields.iter().find(|f| f.path == candidate) {
            return Some(field.category);
        }
        candidate = &candidate[..candidate.rfind('.')?];
    }
}

/// Whether a path names a field (or subtree) of the message.
pub fn is_known_path(schema: crate::validate::SchemaName, path: &str) -> bool {
    fields(schema)
        .iter()
        .any(|f| f.path == path || f.path.starts_with(&format!("{path}.")))
}

fn declared(schema: crate::validate::SchemaName) -> Vec<FieldCategory> {
    use crate::validate::SchemaName;
    use DataCategory as C;
    let organisation = |prefix: &str| {
        ["siret", "kind", "name"]
            .iter()
            .map(|f| (format!("{prefix}.{f}"), C::Referral))
            .collect::<Vec<_>>()
    };
    let referent = ["first_name", "last_name", "email", "phone"]
        .iter()
        .map(|f| (format!("sender.referent.{f}"), C::Referent));
    let mut table: Vec<(String, DataCategory)> = vec![
        ("referral_id".into(), C::Referral),
        ("schema_version".into(), C::Referral),
        ("created_at".into(), C::Referral),
    ];
    match schema {
        SchemaName::ReferralV1 | SchemaName::ReferralV2 => {
            table.extend(organisation("sender.organisation"));
            table.extend(referent);
            table.extend(organisation("recipient.organisation"));
            table.push(("recipient.service_id".into(), C::Referral));
            for name in ["first_name", "last_name", "birth_name"] {
                table.push((format!("person.{name}"), C::Identity));
            }
            table.push(("person.birth_date".into(), C::BirthDate));
        }
        SchemaName::StatusV1 | SchemaName::ConsentV1 => {}
    }
    match schema {
        SchemaName::ReferralV1 => {
            table.extend([
                ("person.phone".into(), C::Contact),
                ("person.email".into(), C::Contact),
                ("person.other_contact_method".into(), C::FreeText),
                ("person.postal_code".into(), C::Location),
                ("person.insee_code".into(), C::Location),
                ("person.city".into(), C::Location),
                ("person.availability".into(), C::Availability),
                ("person.contact_preferences".into(), C::Contact),
                ("identifiers.france_travail_number".into(), C::Identifier),
                ("identifiers.caf_number".into(), C::Identifier),
                ("identifiers.imilo_dossier_id".into(), C::Identifier),
                ("identifiers.departement_id".into(), C::Identifier),
                ("identifiers.nir".into(), C::Nir),
            ]);
        }
        SchemaName::ReferralV2 => {
            table.extend([
                ("person.contact.phone".into(), C::Contact),
                ("person.contact.email".into(), C::Contact),
                ("person.contact.other_method".into(), C::FreeText),
                ("person.contact.preferences".into(), C::Contact),
                ("person.address.postal_code".into(), C::Location),
                ("person.address.insee_code".into(), C::Location),
                ("person.address.city".into(), C::Location),
                ("person.availability".into(), C::Availability),
            ]);
            for kind in crate::model::v2::IdentifierKind::ALL {
                let category = if *kind == crate::model::v2::IdentifierKind::Nir {
                    C::Nir
                } else {
                    C::Identifier
                };
                let path = format!("identifiers.{}", element_name(kind.wire_name()));
                table.push((path.clone(), category));
                table.push((format!("{path}.kind"), category));
                table.push((format!("{path}.value"), category));
            }
        }
        SchemaName::StatusV1 => {
            for name in [
                "event_id",
                "referral_id",
                "status",
                "occurred_at",
                "author_siret",
                "rejection_reason",
                "outcome",
                "appointment_at",
            ] {
                table.push((name.into(), C::Status));
            }
            table.push(("comment".into(), C::FreeText));
        }
        SchemaName::ConsentV1 => {}
    }
    if matches!(schema, SchemaName::ReferralV1 | SchemaName::ReferralV2) {
        table.extend([
            ("situation.labels".into(), C::FreeText),
            ("situation.rsa_beneficiary".into(), C::SocialBenefits),
            ("situation.recognised_disability".into(), C::Disability),
            ("situation.other".into(), C::FreeText),
        ]);
        if schema == SchemaName::ReferralV2 {
            table.push(("situation.education_level".into(), C::Situation));
            for domain in crate::model::v2::ObstacleDomain::ALL {
                let path = format!("obstacles.{}", element_name(domain.wire_name()));
                let category = obstacle_category(*domain);
                table.push((path.clone(), category));
                for sub in ["domain", "impact", "source_label"] {
                    table.push((format!("{path}.{sub}"), category));
                }
            }
        } else {
            // Version 1 obstacles are text whose domain is known only after classification.
            table.push(("obstacles".into(), C::ObstacleUnclassified));
        }
        table.extend([
            ("pathway".into(), C::Referral),
            ("axis".into(), C::Referral),
            ("reason".into(), C::FreeText),
            ("consent_reference".into(), C::Referral),
        ]);
    }
    table
        .into_iter()
        .map(|(path, category)| FieldCategory { path, category })
        .collect()
}

/// The category of an obstacle of a domain.
pub fn obstacle_category(domain: crate::model::v2::ObstacleDomain) -> DataCategory {
    use crate::model::v2::ObstacleDomain as D;
    match domain {
        D::Health => DataCategory::ObstacleHealth,
        D::Housing => DataCategory::ObstacleHousing,
        D::Mobility => DataCategory::ObstacleMobility,
        D::Family => DataCategory::ObstacleFamily,
        D::Finances => DataCategory::ObstacleFinances,
        D::Digital => DataCategory::ObstacleDigital,
        D::AdministrativeLegal => DataCategory::ObstacleAdministrativeLegal,
        D::FrenchMaths => DataCategory::ObstacleFrenchMaths,
        D::Unclassified => DataCategory::ObstacleUnclassified,
    }
}

/// The element name of a typed-list kind: its wire name without the enum
/// prefix, in lower case (`IDENTIFIER_KIND_FRANCE_TRAVAIL` → `france_travail`).
pub fn element_name(wire_name: &str) -> String {
    let stripped = ["IDENTIFIER_KIND_", "OBSTACLE_DOMAIN_"]
        .iter()
        .find_map(|prefix| wire_name.strip_prefix(prefix))
        .unwrap_or(wire_name);
    stripped.to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::SchemaName;

    #[test]
    fn paths_resolve_to_their_nearest_declared_category() {
        assert_eq!(
            category_of(SchemaName::ReferralV2, "identifiers.nir.value"),
            Some(DataCategory::Nir)
        );
        assert_eq!(
            category_of(SchemaName::ReferralV2, "obstacles.health"),
            Some(DataCategory::ObstacleHealth)
        );
        assert_eq!(
            category_of(SchemaName::ReferralV2, "person.shoe_size"),
            None
        );
        assert!(is_known_path(SchemaName::ReferralV2, "person.contact"));
        assert!(!is_known_path(SchemaName::ReferralV2, "person.cont"));
    }
}
