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

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use prost_reflect::{
    DescriptorPool, DynamicMessage, EnumDescriptor, ExtensionDescriptor, FieldDescriptor, Kind,
    MessageDescriptor,
};
use serde::{Deserialize, Serialize};

use crate::error::Error;

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

    /// Whether the category holds personal data. The referral's own facts (ids,
    /// dates, organisations) and statuses do not: a consent record need not
    /// list them for them to travel with the data it covers.
    pub fn is_personal(self) -> bool {
        !matches!(self, Self::Referral | Self::Status)
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
/// sub-fields under them (`identifiers.nir.value`). Consent records have no
/// field paths: they never leave the controller's store (see
/// [`UNCATEGORISED_PACKAGES`]).
pub fn fields(schema: crate::validate::SchemaName) -> &'static [FieldCategory] {
    &table(schema).fields
}

/// The category of a field path of a message: the category of the path itself
/// or of its nearest declared parent.
pub fn category_of(schema: crate::validate::SchemaName, path: &str) -> Option<DataCategory> {
    let table = table(schema);
    let mut candidate = path;
    loop {
        if let Some(category) = table.categories.get(candidate) {
            return Some(*category);
        }
        candidate = &candidate[..candidate.rfind('.')?];
    }
}

/// Whether a path names a field (or subtree) of the message.
pub fn is_known_path(schema: crate::validate::SchemaName, path: &str) -> bool {
    table(schema).known.contains(path)
}

/// The category of an obstacle of a domain, as the `element_category` option
/// of its `ObstacleDomain` value declares it.
pub fn obstacle_category(domain: crate::model::v2::ObstacleDomain) -> DataCategory {
    use crate::model::v2::ObstacleDomain;
    static CATEGORIES: OnceLock<Vec<Option<DataCategory>>> = OnceLock::new();
    let categories = CATEGORIES.get_or_init(|| {
        ObstacleDomain::ALL
            .iter()
            .map(|domain| {
                let path = format!("obstacles.{}", element_name(domain.wire_name()));
                category_of(crate::validate::SchemaName::ReferralV2, &path)
            })
            .collect()
    });
    let index = ObstacleDomain::ALL.iter().position(|d| *d == domain);
    // Unreachable with the shipped protos (the parity test requires an
    // element_category on every domain). Should it happen, the most protected
    // obstacle category keeps the value from leaving without an Art. 9 basis.
    index
        .and_then(|index| categories[index])
        .unwrap_or(DataCategory::ObstacleHealth)
}

/// The field paths of one message, indexed for the lookups minimisation does
/// for every field of every referral.
struct Table {
    fields: Vec<FieldCategory>,
    categories: HashMap<String, DataCategory>,
    /// Every path and every parent of one (`person`, `person.contact`, ...).
    known: HashSet<String>,
}

impl Table {
    fn new(fields: Vec<FieldCategory>) -> Self {
        let categories = fields
            .iter()
            .map(|field| (field.path.clone(), field.category))
            .collect();
        let mut known = HashSet::new();
        for field in &fields {
            let mut path = field.path.as_str();
            known.insert(path.to_owned());
            while let Some(dot) = path.rfind('.') {
                path = &path[..dot];
                known.insert(path.to_owned());
            }
        }
        Self {
            fields,
            categories,
            known,
        }
    }
}

fn table(schema: crate::validate::SchemaName) -> &'static Table {
    use crate::validate::SchemaName;
    static TABLES: OnceLock<Vec<Table>> = OnceLock::new();
    let tables = TABLES.get_or_init(|| {
        // The descriptor set is compiled into the binary and checked by the
        // parity test; should it ever fail to decode, every table is empty, so
        // that every path is unknown and no policy can let data through.
        let declarations = Declarations::decode(crate::model::proto::FILE_DESCRIPTOR_SET).ok();
        SchemaName::ALL
            .iter()
            .map(|schema| {
                Table::new(
                    declarations
                        .as_ref()
                        .map(|d| d.fields(schema.proto_message()))
                        .unwrap_or_default(),
                )
            })
            .collect()
    });
    let index = SchemaName::ALL
        .iter()
        .position(|s| *s == schema)
        .unwrap_or_default();
    &tables[index]
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

/// The field option naming the category of a leaf field.
pub const CATEGORY_OPTION: &str = "passerelle.options.v1.category";
/// The enum value option naming the category of the typed-list elements of a kind.
pub const ELEMENT_CATEGORY_OPTION: &str = "passerelle.options.v1.element_category";
/// The enum value option marking a `DataCategory` value as a special category (GDPR Art. 9).
pub const SPECIAL_CATEGORY_OPTION: &str = "passerelle.options.v1.special_category";
/// The proto enum the Rust [`DataCategory`] mirrors.
pub const DATA_CATEGORY_ENUM: &str = "passerelle.options.v1.DataCategory";
/// The prefix of the proto `DataCategory` values (`DATA_CATEGORY_NIR` is `nir`).
const DATA_CATEGORY_PREFIX: &str = "DATA_CATEGORY_";

/// Passerelle packages whose fields carry no category: the options themselves,
/// and consent records, which stay in the controller's store and never go
/// through minimisation (their `data_categories` field names the categories of
/// the referral fields they cover).
pub const UNCATEGORISED_PACKAGES: &[&str] = &["passerelle.options.v1", "passerelle.consent.v1"];

/// The category declarations of a compiled descriptor set: the `category` and
/// `element_category` options of `passerelle.options.v1`, read with
/// prost-reflect (prost-types' option messages drop extensions).
#[derive(Debug, Clone)]
pub struct Declarations {
    pool: DescriptorPool,
    category: ExtensionDescriptor,
    element_category: ExtensionDescriptor,
    special_category: ExtensionDescriptor,
    data_category: EnumDescriptor,
}

/// A value of the proto `DataCategory` enum, as declared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtoCategory {
    /// The value's name (`DATA_CATEGORY_NIR`).
    pub name: String,
    /// Its number.
    pub number: i32,
    /// Whether it carries `special_category = true`.
    pub special: bool,
}

impl Declarations {
    /// Reads the declarations of an encoded `FileDescriptorSet` that includes
    /// `passerelle/options/v1/options.proto`.
    pub fn decode(descriptor_set: &[u8]) -> Result<Self, Error> {
        let pool = DescriptorPool::decode(descriptor_set)
            .map_err(|e| Error::Internal(format!("decoding the descriptor set: {e}")))?;
        let extension = |name: &str| {
            pool.get_extension_by_name(name)
                .ok_or_else(|| Error::Internal(format!("the descriptor set lacks {name}")))
        };
        Ok(Self {
            category: extension(CATEGORY_OPTION)?,
            element_category: extension(ELEMENT_CATEGORY_OPTION)?,
            special_category: extension(SPECIAL_CATEGORY_OPTION)?,
            data_category: pool.get_enum_by_name(DATA_CATEGORY_ENUM).ok_or_else(|| {
                Error::Internal(format!("the descriptor set lacks {DATA_CATEGORY_ENUM}"))
            })?,
            pool,
        })
    }

    /// The descriptor pool read.
    pub fn pool(&self) -> &DescriptorPool {
        &self.pool
    }

    /// Every field path of a message (fully qualified, no leading dot) with
    /// its category, in declaration order; empty for an unknown message or
    /// one of an [`UNCATEGORISED_PACKAGES`] package. A field whose declaration
    /// is missing or wrong is left out ([`Self::problems`] names it).
    pub fn fields(&self, message: &str) -> Vec<FieldCategory> {
        let mut table = Vec::new();
        if let Some(message) = self.pool.get_message_by_name(message)
            && is_categorised(message.package_name())
        {
            self.walk(
                &message,
                "",
                &mut vec![message.full_name().to_owned()],
                &mut table,
            );
        }
        table
    }

    fn walk(
        &self,
        message: &MessageDescriptor,
        prefix: &str,
        stack: &mut Vec<String>,
        table: &mut Vec<FieldCategory>,
    ) {
        for field in message.fields() {
            let path = format!("{prefix}{}", field.name());
            let Some(nested) = nested_message(&field) else {
                if let Some(Ok(category)) = self.option(&field.options(), &self.category) {
                    table.push(FieldCategory { path, category });
                }
                continue;
            };
            // A recursive message would have no end of paths; none exists, and
            // problems() reports one should it appear.
            if stack.iter().any(|name| name == nested.full_name()) {
                continue;
            }
            if field.is_list() {
                let Some(kinds) = self.discriminator(&nested) else {
                    continue;
                };
                for kind in kinds.values().filter(|value| value.number() != 0) {
                    let Some(Ok(category)) = self.option(&kind.options(), &self.element_category)
                    else {
                        continue;
                    };
                    let element = format!("{path}.{}", element_name(kind.name()));
                    table.push(FieldCategory {
                        path: element.clone(),
                        category,
                    });
                    for sub in nested.fields() {
                        table.push(FieldCategory {
                            path: format!("{element}.{}", sub.name()),
                            category,
                        });
                    }
                }
            } else {
                stack.push(nested.full_name().to_owned());
                self.walk(&nested, &format!("{path}."), stack, table);
                stack.pop();
            }
        }
    }

    /// The kind enum of a typed-list element: its enum field whose values
    /// carry `element_category`.
    fn discriminator(&self, element: &MessageDescriptor) -> Option<EnumDescriptor> {
        element.fields().find_map(|field| match field.kind() {
            Kind::Enum(kinds) if self.is_kind_enum(&kinds) => Some(kinds),
            _ => None,
        })
    }

    fn is_kind_enum(&self, kinds: &EnumDescriptor) -> bool {
        kinds
            .values()
            .any(|value| value.options().has_extension(&self.element_category))
    }

    /// The category an option names: `None` when the option is not set, an
    /// error when it names no Rust category (UNSPECIFIED, an unknown number).
    fn option(
        &self,
        options: &DynamicMessage,
        extension: &ExtensionDescriptor,
    ) -> Option<Result<DataCategory, String>> {
        if !options.has_extension(extension) {
            return None;
        }
        let number = options.get_extension(extension).as_enum_number();
        Some(
            number
                .and_then(|number| self.data_category.get_value(number))
                .and_then(|value| category_of_value(value.name()))
                .ok_or_else(|| match number {
                    Some(0) => format!("{} is DATA_CATEGORY_UNSPECIFIED", extension.name()),
                    Some(number) => format!(
                        "{} is {number}, which names no Passerelle category",
                        extension.name()
                    ),
                    None => format!("{} is not a DataCategory", extension.name()),
                }),
        )
    }

    /// The values of the proto `DataCategory` enum, less `DATA_CATEGORY_UNSPECIFIED`.
    pub fn proto_categories(&self) -> Vec<ProtoCategory> {
        self.data_category
            .values()
            .filter(|value| value.number() != 0)
            .map(|value| ProtoCategory {
                name: value.name().to_owned(),
                number: value.number(),
                special: value
                    .options()
                    .get_extension(&self.special_category)
                    .as_bool()
                    .unwrap_or(false),
            })
            .collect()
    }

    /// Every defect of the declarations, one line each naming the field, enum
    /// value or category at fault; empty when every field path has exactly one
    /// category. Checked for every message and enum of every Passerelle
    /// package but [`UNCATEGORISED_PACKAGES`]:
    /// - every leaf field (scalar, enum, Timestamp, or a list of them) has a
    ///   `category`, naming a real category;
    /// - message-typed fields have none (their leaves do);
    /// - every repeated message field is a typed list: exactly one enum field
    ///   of its element carries `element_category` on every value but the
    ///   zero one, and the element's own fields carry no `category`;
    /// - the proto `DataCategory` values are the Rust [`DataCategory`] values,
    ///   in the same order, with the same special-category flags.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = self.mirror_problems();
        let messages: Vec<MessageDescriptor> = self
            .pool
            .all_messages()
            .filter(|message| is_passerelle(message.package_name()))
            .filter(|message| is_categorised(message.package_name()))
            .collect();
        let mut elements: Vec<(MessageDescriptor, String)> = Vec::new();
        for message in &messages {
            for field in message.fields() {
                if let Some(nested) = nested_message(&field)
                    && field.is_list()
                    && !elements.iter().any(|(m, _)| *m == nested)
                {
                    elements.push((nested, field.full_name().to_owned()));
                }
            }
        }
        for message in &messages {
            let element = elements.iter().find(|(m, _)| m == message);
            for field in message.fields() {
                let option = self.option(&field.options(), &self.category);
                let name = field.full_name();
                match (element.is_some(), nested_message(&field)) {
                    (true, nested) => {
                        if option.is_some() {
                            problems.push(format!(
                                "{name}: a field of a typed-list element carries a category; \
                                 the element_category of its kind decides"
                            ));
                        }
                        if nested.is_some() {
                            problems.push(format!(
                                "{name}: a message inside a typed-list element; its paths \
                                 would not be addressable"
                            ));
                        }
                    }
                    (false, Some(nested)) => {
                        if option.is_some() {
                            problems.push(format!(
                                "{name}: a message-typed field carries a category; categories \
                                 live on its leaf fields"
                            ));
                        }
                        if !field.is_list() && elements.iter().any(|(m, _)| *m == nested) {
                            problems.push(format!(
                                "{name}: {} is a typed-list element and cannot also be a \
                                 single field",
                                nested.full_name()
                            ));
                        }
                    }
                    (false, None) => match option {
                        None => {
                            problems.push(format!("{name}: leaf field without a category option"));
                        }
                        Some(Err(wrong)) => problems.push(format!("{name}: {wrong}")),
                        Some(Ok(_)) => {}
                    },
                }
            }
            if let Some((_, list)) = element {
                problems.extend(self.element_problems(message, list));
            }
        }
        // Kinds can also be declared on enums no list uses yet: they must be complete too.
        for kinds in self
            .pool
            .all_enums()
            .filter(|kinds| is_passerelle(kinds.package_name()))
            .filter(|kinds| is_categorised(kinds.package_name()))
            .filter(|kinds| self.is_kind_enum(kinds))
        {
            let used = elements
                .iter()
                .any(|(element, _)| self.discriminator(element).as_ref() == Some(&kinds));
            if !used {
                problems.extend(self.kind_problems(&kinds));
            }
        }
        if messages
            .iter()
            .any(|message| self.is_recursive(message, &mut Vec::new()))
        {
            problems.push("a message contains itself: its field paths would never end".to_owned());
        }
        problems
    }

    /// The defects of a typed-list element (`list` is the repeated field using it).
    fn element_problems(&self, element: &MessageDescriptor, list: &str) -> Vec<String> {
        let annotated: Vec<EnumDescriptor> = element
            .fields()
            .filter_map(|field| match field.kind() {
                Kind::Enum(kinds) if self.is_kind_enum(&kinds) => Some(kinds),
                _ => None,
            })
            .collect();
        match annotated.as_slice() {
            [kinds] => self.kind_problems(kinds),
            [] => {
                // Name the values of the element's first enum field: the kind
                // whose element_category options were forgotten.
                let kinds = element.fields().find_map(|field| match field.kind() {
                    Kind::Enum(kinds) => Some(kinds),
                    _ => None,
                });
                let mut problems = vec![format!(
                    "{list}: a repeated message field is a typed list (paths never hold \
                     indices), but no enum field of {} carries element_category",
                    element.full_name()
                )];
                problems.extend(kinds.iter().flat_map(|kinds| self.kind_problems(kinds)));
                problems
            }
            _ => vec![format!(
                "{list}: more than one enum field of {} carries element_category; a typed \
                 list has one kind",
                element.full_name()
            )],
        }
    }

    /// Every value but the zero one of a kind enum needs an element_category.
    fn kind_problems(&self, kinds: &EnumDescriptor) -> Vec<String> {
        kinds
            .values()
            .filter(|value| value.number() != 0)
            .filter_map(
                |value| match self.option(&value.options(), &self.element_category) {
                    Some(Ok(_)) => None,
                    Some(Err(wrong)) => {
                        Some(format!("{}: {wrong}", kind_value_name(kinds, &value)))
                    }
                    None => Some(format!(
                        "{}: typed-list kind without an element_category option",
                        kind_value_name(kinds, &value)
                    )),
                },
            )
            .collect()
    }

    /// The proto enum and the Rust enum must list the same categories.
    fn mirror_problems(&self) -> Vec<String> {
        let proto: Vec<(String, bool)> = self
            .proto_categories()
            .into_iter()
            .map(|category| (category.name, category.special))
            .collect();
        let rust: Vec<(String, bool)> = DataCategory::ALL
            .iter()
            .map(|category| (proto_name(*category), category.is_special()))
            .collect();
        if proto == rust {
            Vec::new()
        } else {
            vec![format!(
                "{DATA_CATEGORY_ENUM} (name, special) {proto:?} differs from the Rust \
                 DataCategory {rust:?}"
            )]
        }
    }

    fn is_recursive(&self, message: &MessageDescriptor, stack: &mut Vec<String>) -> bool {
        if stack.iter().any(|name| name == message.full_name()) {
            return true;
        }
        stack.push(message.full_name().to_owned());
        let found = message
            .fields()
            .filter_map(|field| nested_message(&field))
            .any(|nested| self.is_recursive(&nested, stack));
        stack.pop();
        found
    }
}

/// The proto value name of a category (`nir` → `DATA_CATEGORY_NIR`).
pub fn proto_name(category: DataCategory) -> String {
    format!(
        "{DATA_CATEGORY_PREFIX}{}",
        category.as_str().to_ascii_uppercase()
    )
}

fn category_of_value(name: &str) -> Option<DataCategory> {
    DataCategory::parse(
        &name
            .strip_prefix(DATA_CATEGORY_PREFIX)?
            .to_ascii_lowercase(),
    )
}

/// `passerelle.referral.v2.ObstacleDomain.OBSTACLE_DOMAIN_HEALTH`: protobuf
/// scopes enum values beside their enum, which would hide which enum it is.
fn kind_value_name(kinds: &EnumDescriptor, value: &prost_reflect::EnumValueDescriptor) -> String {
    format!("{}.{}", kinds.full_name(), value.name())
}

fn is_passerelle(package: &str) -> bool {
    package == "passerelle" || package.starts_with("passerelle.")
}

fn is_categorised(package: &str) -> bool {
    !UNCATEGORISED_PACKAGES.contains(&package)
}

/// The message type of a field that has sub-fields of its own; well-known
/// types (Timestamp) are leaves.
fn nested_message(field: &FieldDescriptor) -> Option<MessageDescriptor> {
    match field.kind() {
        Kind::Message(message) if message.package_name() != "google.protobuf" => Some(message),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::v2::ObstacleDomain;
    use crate::validate::SchemaName;

    /// Key decisions of the category table (the hand-written table the proto
    /// options replaced gave the same lists for both referral versions).
    #[test]
    fn the_proto_options_give_the_decided_categories() {
        use DataCategory as C;
        let expected: &[(SchemaName, &str, DataCategory)] = &[
            (SchemaName::ReferralV1, "referral_id", C::Referral),
            (
                SchemaName::ReferralV1,
                "sender.organisation.siret",
                C::Referral,
            ),
            (SchemaName::ReferralV1, "sender.referent.email", C::Referent),
            (SchemaName::ReferralV1, "person.birth_name", C::Identity),
            (SchemaName::ReferralV1, "person.birth_date", C::BirthDate),
            (
                SchemaName::ReferralV1,
                "person.other_contact_method",
                C::FreeText,
            ),
            (SchemaName::ReferralV1, "person.insee_code", C::Location),
            (
                SchemaName::ReferralV1,
                "identifiers.caf_number",
                C::Identifier,
            ),
            (SchemaName::ReferralV1, "identifiers.nir", C::Nir),
            (SchemaName::ReferralV1, "situation.labels", C::FreeText),
            (SchemaName::ReferralV1, "obstacles", C::ObstacleUnclassified),
            (SchemaName::ReferralV2, "created_at", C::Referral),
            (SchemaName::ReferralV2, "recipient.service_id", C::Referral),
            (
                SchemaName::ReferralV2,
                "person.contact.other_method",
                C::FreeText,
            ),
            (
                SchemaName::ReferralV2,
                "person.contact.preferences",
                C::Contact,
            ),
            (SchemaName::ReferralV2, "person.address.city", C::Location),
            (
                SchemaName::ReferralV2,
                "person.availability",
                C::Availability,
            ),
            (
                SchemaName::ReferralV2,
                "identifiers.france_travail.value",
                C::Identifier,
            ),
            (SchemaName::ReferralV2, "identifiers.nir", C::Nir),
            (SchemaName::ReferralV2, "identifiers.nir.kind", C::Nir),
            (
                SchemaName::ReferralV2,
                "situation.rsa_beneficiary",
                C::SocialBenefits,
            ),
            (
                SchemaName::ReferralV2,
                "situation.recognised_disability",
                C::Disability,
            ),
            (SchemaName::ReferralV2, "situation.other", C::FreeText),
            (
                SchemaName::ReferralV2,
                "situation.education_level",
                C::Situation,
            ),
            (
                SchemaName::ReferralV2,
                "obstacles.health.source_label",
                C::ObstacleHealth,
            ),
            (
                SchemaName::ReferralV2,
                "obstacles.administrative_legal",
                C::ObstacleAdministrativeLegal,
            ),
            (SchemaName::ReferralV2, "reason", C::FreeText),
            (SchemaName::ReferralV2, "consent_reference", C::Referral),
            (SchemaName::StatusV1, "event_id", C::Status),
            (SchemaName::StatusV1, "referral_id", C::Referral),
            (SchemaName::StatusV1, "rejection_reason", C::Status),
            (SchemaName::StatusV1, "comment", C::FreeText),
        ];
        for (schema, path, category) in expected {
            let declared = fields(*schema).iter().find(|f| f.path == *path);
            assert_eq!(
                declared.map(|f| f.category),
                Some(*category),
                "{} {path}",
                schema.as_str()
            );
        }
    }

    #[test]
    fn the_tables_list_each_path_once_in_declaration_order() {
        let paths = |schema| {
            fields(schema)
                .iter()
                .map(|f| f.path.as_str())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            paths(SchemaName::StatusV1),
            [
                "event_id",
                "schema_version",
                "referral_id",
                "status",
                "occurred_at",
                "author_siret",
                "rejection_reason",
                "outcome",
                "appointment_at",
                "comment",
            ]
        );
        let v2 = paths(SchemaName::ReferralV2);
        assert_eq!(v2.len(), 35 + 6 * 3 + 9 * 4, "{v2:#?}");
        assert_eq!(
            v2[..4],
            [
                "referral_id",
                "schema_version",
                "created_at",
                "sender.organisation.siret"
            ]
        );
        assert_eq!(
            v2[v2.len() - 4..],
            ["pathway", "axis", "reason", "consent_reference"]
        );
        for schema in SchemaName::ALL {
            let mut seen = std::collections::BTreeSet::new();
            for path in paths(*schema) {
                assert!(seen.insert(path), "{} lists {path} twice", schema.as_str());
            }
        }
        // Consent records never leave the store: no paths, so no policy can name one.
        assert!(fields(SchemaName::ConsentV1).is_empty());
    }

    #[test]
    fn the_shipped_declarations_are_complete() {
        let declarations =
            Declarations::decode(crate::model::proto::FILE_DESCRIPTOR_SET).expect("decodes");
        assert_eq!(declarations.problems(), Vec::<String>::new());
    }

    #[test]
    fn obstacle_categories_come_from_the_domain_options() {
        let found: Vec<DataCategory> = ObstacleDomain::ALL
            .iter()
            .map(|domain| obstacle_category(*domain))
            .collect();
        assert_eq!(
            found,
            [
                DataCategory::ObstacleHealth,
                DataCategory::ObstacleHousing,
                DataCategory::ObstacleMobility,
                DataCategory::ObstacleFamily,
                DataCategory::ObstacleFinances,
                DataCategory::ObstacleDigital,
                DataCategory::ObstacleAdministrativeLegal,
                DataCategory::ObstacleFrenchMaths,
                DataCategory::ObstacleUnclassified,
            ]
        );
        assert!(obstacle_category(ObstacleDomain::Health).is_special());
    }

    #[test]
    fn proto_names_round_trip() {
        for category in DataCategory::ALL {
            assert_eq!(category_of_value(&proto_name(*category)), Some(*category));
        }
        assert_eq!(
            proto_name(DataCategory::ObstacleFrenchMaths),
            "DATA_CATEGORY_OBSTACLE_FRENCH_MATHS"
        );
        assert_eq!(category_of_value("DATA_CATEGORY_UNSPECIFIED"), None);
    }

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
