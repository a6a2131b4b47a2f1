//! The JSON Schema registry: every schema under `schemas/`, embedded in the
//! binary and compiled once (draft 2020-12, formats checked).

use std::sync::OnceLock;

use serde_json::Value;

use crate::error::{Error, Violation};

/// The schemas Passerelle publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SchemaName {
    /// `referral/v1`.
    ReferralV1,
    /// `referral/v2`.
    ReferralV2,
    /// `status/v1`.
    StatusV1,
    /// `consent/v1`.
    ConsentV1,
}

impl SchemaName {
    /// Every schema, in the order `passerelle schema list` shows them.
    pub const ALL: &'static [Self] = &[
        Self::ReferralV1,
        Self::ReferralV2,
        Self::StatusV1,
        Self::ConsentV1,
    ];

    /// The name used on the command line (`referral/v2`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ReferralV1 => "referral/v1",
            Self::ReferralV2 => "referral/v2",
            Self::StatusV1 => "status/v1",
            Self::ConsentV1 => "consent/v1",
        }
    }

    /// The `schema_version` value documents of this schema carry.
    pub fn schema_version(self) -> &'static str {
        match self {
            Self::ReferralV1 => "passerelle.referral.v1",
            Self::ReferralV2 => "passerelle.referral.v2",
            Self::StatusV1 => "passerelle.status.v1",
            Self::ConsentV1 => "passerelle.consent.v1",
        }
    }

    /// The fully qualified proto message this schema describes.
    pub fn proto_message(self) -> &'static str {
        match self {
            Self::ReferralV1 => "passerelle.referral.v1.Referral",
            Self::ReferralV2 => "passerelle.referral.v2.Referral",
            Self::StatusV1 => "passerelle.status.v1.StatusEvent",
            Self::ConsentV1 => "passerelle.consent.v1.ConsentRecord",
        }
    }

    /// Looks a schema up by its command-line name.
    pub fn parse(name: &str) -> Result<Self, Error> {
        Self::ALL
            .iter()
            .copied()
            .find(|schema| schema.as_str() == name)
            .ok_or_else(|| {
                Error::UnsupportedFormat(format!(
                    "no schema named \"{name}\"; known schemas: {}",
                    Self::ALL
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })
    }

    /// The schema a document declares in its `schema_version` field.
    pub fn detect(document: &Value) -> Result<Self, Error> {
        let declared = document.get("schema_version").and_then(Value::as_str);
        Self::ALL
            .iter()
            .copied()
            .find(|schema| Some(schema.schema_version()) == declared)
            .ok_or_else(|| {
                Error::invalid(
                    "/schema_version",
                    "schema-version",
                    format!(
                        "one of {}, found {}",
                        Self::ALL
                            .iter()
                            .map(|s| s.schema_version())
                            .collect::<Vec<_>>()
                            .join(", "),
                        if declared.is_some() {
                            "another value"
                        } else {
                            "no schema_version"
                        }
                    ),
                )
            })
    }

    fn source(self) -> &'static str {
        match self {
            Self::ReferralV1 => include_str!("../../schemas/referral/v1.json"),
            Self::ReferralV2 => include_str!("../../schemas/referral/v2.json"),
            Self::StatusV1 => include_str!("../../schemas/status/v1.json"),
            Self::ConsentV1 => include_str!("../../schemas/consent/v1.json"),
        }
    }
}

/// A compiled schema.
pub struct Schema {
    /// Which schema it is.
    pub name: SchemaName,
    /// The schema document as published.
    pub document: Value,
    validator: jsonschema::Validator,
}

impl Schema {
    fn compile(name: SchemaName) -> Self {
        // The schemas are part of the binary and checked by tests: failing here is a build defect.
        #[allow(clippy::expect_used)]
        let document: Value =
            serde_json::from_str(name.source()).expect("embedded schema is valid JSON");
        #[allow(clippy::expect_used)]
        let validator = jsonschema::draft202012::options()
            .should_validate_formats(true)
            // The schemas' patterns need no look-around: the linear-time engine is enough.
            .with_pattern_options(jsonschema::PatternOptions::regex())
            .build(&document)
            .expect("embedded schema compiles");
        Self {
            name,
            document,
            validator,
        }
    }

    /// Whether a document is valid (fast path, no error collection).
    pub fn is_valid(&self, document: &Value) -> bool {
        self.validator.is_valid(document)
    }

    /// Validates a document, listing every violation with its JSON pointer.
    pub fn validate(&self, document: &Value) -> Result<(), Error> {
        if self.validator.is_valid(document) {
            return Ok(());
        }
        let violations = self
            .validator
            .iter_errors(document)
            .flat_map(|error| violations_of(&error))
            .collect();
        Err(Error::Invalid(violations))
    }
}

/// Turns a jsonschema error into violations; unknown properties become one
/// `unknown-field` violation each, at their own pointer.
fn violations_of(error: &jsonschema::ValidationError<'_>) -> Vec<Violation> {
    use jsonschema::error::ValidationErrorKind as Kind;
    let pointer = error.instance_path().as_str().to_owned();
    let single = |rule: &str, detail: String| vec![Violation::new(pointer.clone(), rule, detail)];
    match error.kind() {
        Kind::AdditionalProperties { unexpected } | Kind::UnevaluatedProperties { unexpected } => {
            unexpected
                .iter()
                .map(|name| {
                    Violation::new(
                        format!("{pointer}/{}", name.replace('~', "~0").replace('/', "~1")),
                        "unknown-field",
                        "no such field in this schema version",
                    )
                })
                .collect()
        }
        Kind::Required { property } => {
            let name = property.as_str().unwrap_or("?");
            vec![Violation::new(
                format!("{pointer}/{name}"),
                "required",
                "a value, found none",
            )]
        }
        Kind::Type { kind } => single("type", format!("{kind:?}").to_lowercase()),
        Kind::Constant { expected_value } => single("const", format!("exactly {expected_value}")),
        Kind::Enum { options } => single("enum", format!("one of {options}")),
        Kind::MaxLength { limit } => single("maxLength", format!("at most {limit} characters")),
        Kind::MinLength { limit } => single("minLength", format!("at least {limit} characters")),
        Kind::MaxItems { limit } => single("maxItems", format!("at most {limit} items")),
        Kind::MinItems { limit } => single("minItems", format!("at least {limit} items")),
        Kind::Pattern { pattern } => single("pattern", format!("text matching {pattern}")),
        Kind::Format { format } => single("format", format!("a valid {format}")),
        Kind::UniqueItems => single("uniqueItems", "no repeated items".to_owned()),
        // A `false` subschema forbids a member that another field rules out
        // (a rejection reason on a status other than rejected, for example).
        Kind::FalseSchema => single(
            "forbidden",
            "no value allowed here (it depends on another field), found one".to_owned(),
        ),
        _ => single("schema", error.masked().to_string()),
    }
}

/// The compiled schema of that name.
pub fn schema(name: SchemaName) -> &'static Schema {
    static SCHEMAS: OnceLock<Vec<Schema>> = OnceLock::new();
    let schemas = SCHEMAS.get_or_init(|| {
        SchemaName::ALL
            .iter()
            .map(|n| Schema::compile(*n))
            .collect()
    });
    // ALL lists every variant, so the position always exists.
    let index = SchemaName::ALL
        .iter()
        .position(|n| *n == name)
        .unwrap_or_default();
    &schemas[index]
}
