//! The JSON Schemas under `schemas/` describe exactly the proto messages of
//! `proto/`, in the proto3 JSON mapping with the original field names: same
//! fields, compatible types, the same enum values (less `*_UNSPECIFIED`), the
//! proto comments as descriptions, the data categories of the proto options
//! as `x-passerelle-category` (leaf properties) and
//! `x-passerelle-element-categories` (kinds of the typed lists). And every
//! schema file is a valid draft 2020-12 JSON Schema.
//!
//! The category declarations themselves are checked here too: every leaf
//! field of every referral and status message declares one, every kind of a
//! typed list declares the category of its elements, the proto `DataCategory`
//! enum mirrors the Rust one, and docs/data-categories.md is generated from
//! them (`UPDATE_GOLDEN=1` rewrites it).

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use passerelle::model::categories::{
    self, CATEGORY_OPTION, DataCategory, Declarations, ELEMENT_CATEGORY_OPTION,
};
use passerelle::model::proto::FILE_DESCRIPTOR_SET;
use passerelle::validate::{SchemaName, schemas};
use prost::Message as _;
use prost_reflect::DescriptorPool;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, EnumDescriptorProto, FieldDescriptorProto, FileDescriptorSet};
use serde_json::{Value, json};

const TIMESTAMP: &str = ".google.protobuf.Timestamp";

/// A message of the descriptor set with its comments.
struct MessageInfo {
    descriptor: DescriptorProto,
    comment: String,
    /// Leading comment of each field, in field order.
    field_comments: Vec<String>,
}

/// An enum of the descriptor set with its comment.
struct EnumInfo {
    descriptor: EnumDescriptorProto,
    comment: String,
}

/// Every message and enum of the descriptor set, by fully qualified name with a leading dot.
struct Protos {
    messages: HashMap<String, MessageInfo>,
    enums: HashMap<String, EnumInfo>,
    /// The `category` option of each field (`.pkg.Message.field` → `free_text`).
    categories: HashMap<String, String>,
    /// The `element_category` options of each kind enum (`.pkg.Enum` → {value → category}).
    element_categories: HashMap<String, Value>,
}

/// The category name (`free_text`) an option value names, or a description of a wrong one.
fn option_name(pool: &DescriptorPool, value: &prost_reflect::Value) -> String {
    value
        .as_enum_number()
        .and_then(|number| {
            pool.get_enum_by_name(categories::DATA_CATEGORY_ENUM)?
                .get_value(number)
        })
        .and_then(|value| {
            value
                .name()
                .strip_prefix("DATA_CATEGORY_")
                .map(str::to_ascii_lowercase)
        })
        .unwrap_or_else(|| format!("{value:?}"))
}

/// The category options of the descriptor set, keyed as in [`Protos`].
fn category_options(set: &[u8]) -> (HashMap<String, String>, HashMap<String, Value>) {
    let pool = DescriptorPool::decode(set).expect("descriptor set decodes");
    let category = pool
        .get_extension_by_name(CATEGORY_OPTION)
        .expect("category option");
    let element = pool
        .get_extension_by_name(ELEMENT_CATEGORY_OPTION)
        .expect("element_category option");
    let mut fields = HashMap::new();
    for message in pool.all_messages() {
        for field in message.fields() {
            let options = field.options();
            if options.has_extension(&category) {
                fields.insert(
                    format!(".{}", field.full_name()),
                    option_name(&pool, &options.get_extension(&category)),
                );
            }
        }
    }
    let mut kinds = HashMap::new();
    for kind in pool.all_enums() {
        let values: serde_json::Map<String, Value> = kind
            .values()
            .filter(|value| value.options().has_extension(&element))
            .map(|value| {
                let name = option_name(&pool, &value.options().get_extension(&element));
                (value.name().to_owned(), Value::String(name))
            })
            .collect();
        if !values.is_empty() {
            kinds.insert(format!(".{}", kind.full_name()), Value::Object(values));
        }
    }
    (fields, kinds)
}

fn normalise(comment: &str) -> String {
    comment.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl Protos {
    fn load() -> Self {
        let set = FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).expect("descriptor set decodes");
        let (categories, element_categories) = category_options(FILE_DESCRIPTOR_SET);
        let mut protos = Protos {
            messages: HashMap::new(),
            enums: HashMap::new(),
            categories,
            element_categories,
        };
        for file in &set.file {
            let comments: HashMap<Vec<i32>, String> = file
                .source_code_info
                .iter()
                .flat_map(|info| &info.location)
                .map(|location| {
                    (
                        location.path.clone(),
                        normalise(location.leading_comments()),
                    )
                })
                .collect();
            let prefix = format!(".{}", file.package());
            for (index, message) in file.message_type.iter().enumerate() {
                protos.add_message(&prefix, message, vec![4, index as i32], &comments);
            }
            for (index, descriptor) in file.enum_type.iter().enumerate() {
                protos.add_enum(&prefix, descriptor, vec![5, index as i32], &comments);
            }
        }
        protos
    }

    fn add_message(
        &mut self,
        prefix: &str,
        message: &DescriptorProto,
        path: Vec<i32>,
        comments: &HashMap<Vec<i32>, String>,
    ) {
        let name = format!("{prefix}.{}", message.name());
        let comment_at = |suffix: &[i32]| {
            let mut full = path.clone();
            full.extend_from_slice(suffix);
            comments.get(&full).cloned().unwrap_or_default()
        };
        let field_comments = (0..message.field.len())
            .map(|index| comment_at(&[2, index as i32]))
            .collect();
        for (index, nested) in message.nested_type.iter().enumerate() {
            let mut nested_path = path.clone();
            nested_path.extend([3, index as i32]);
            self.add_message(&name, nested, nested_path, comments);
        }
        for (index, descriptor) in message.enum_type.iter().enumerate() {
            let mut nested_path = path.clone();
            nested_path.extend([4, index as i32]);
            self.add_enum(&name, descriptor, nested_path, comments);
        }
        self.messages.insert(
            name,
            MessageInfo {
                descriptor: message.clone(),
                comment: comment_at(&[]),
                field_comments,
            },
        );
    }

    fn add_enum(
        &mut self,
        prefix: &str,
        descriptor: &EnumDescriptorProto,
        path: Vec<i32>,
        comments: &HashMap<Vec<i32>, String>,
    ) {
        self.enums.insert(
            format!("{prefix}.{}", descriptor.name()),
            EnumInfo {
                descriptor: descriptor.clone(),
                comment: comments.get(&path).cloned().unwrap_or_default(),
            },
        );
    }
}

/// Walks a proto message and its JSON Schema side by side, collecting every
/// difference with the path where it was found.
struct Comparison<'a> {
    protos: &'a Protos,
    root: &'a Value,
    mismatches: Vec<String>,
    /// Messages already compared against a `$defs` entry, so that shared
    /// definitions are reported once and recursive messages terminate.
    seen: BTreeSet<(String, String)>,
}

/// Compares the message `message` (fully qualified, no leading dot) with the
/// JSON Schema `schema`; returns every mismatch, each prefixed by its path.
fn compare(protos: &Protos, message: &str, schema: &Value) -> Vec<String> {
    let mut comparison = Comparison {
        protos,
        root: schema,
        mismatches: Vec::new(),
        seen: BTreeSet::new(),
    };
    comparison.message(&format!(".{message}"), schema, "");
    comparison.mismatches
}

impl<'a> Comparison<'a> {
    fn mismatch(&mut self, path: &str, what: impl AsRef<str>) {
        let path = if path.is_empty() { "/" } else { path };
        self.mismatches.push(format!("{path}: {}", what.as_ref()));
    }

    /// The node a `$ref` points to (only local `#/...` references are used).
    fn target(&mut self, node: &'a Value, path: &str) -> Option<&'a Value> {
        let reference = node.get("$ref")?.as_str()?;
        let target = reference
            .strip_prefix('#')
            .and_then(|pointer| self.root.pointer(pointer));
        if target.is_none() {
            self.mismatch(path, format!("$ref {reference} does not resolve"));
        }
        target
    }

    /// A keyword of a node, looked up through its `$ref` chain (local keywords win).
    fn keyword(&self, node: &'a Value, key: &str) -> Option<&'a Value> {
        let mut current = node;
        for _ in 0..16 {
            if let Some(value) = current.get(key) {
                return Some(value);
            }
            let reference = current.get("$ref")?.as_str()?;
            current = self.root.pointer(reference.strip_prefix('#')?)?;
        }
        None
    }

    fn expect_type(&mut self, node: &'a Value, path: &str, expected: &str) -> bool {
        match self.keyword(node, "type") {
            Some(Value::String(found)) if found == expected => true,
            Some(found) => {
                self.mismatch(path, format!("type {found}, expected \"{expected}\""));
                false
            }
            None => {
                self.mismatch(path, format!("no type, expected \"{expected}\""));
                false
            }
        }
    }

    fn message(&mut self, name: &str, node: &'a Value, path: &str) {
        let Some(info) = self.protos.messages.get(name) else {
            self.mismatch(path, format!("proto message {name} not found"));
            return;
        };
        if !self.expect_type(node, path, "object") {
            return;
        }
        if self.keyword(node, "additionalProperties") != Some(&Value::Bool(false)) {
            self.mismatch(
                path,
                "additionalProperties is not false: unknown fields would pass",
            );
        }
        let description = self.keyword(node, "description").and_then(Value::as_str);
        if description.map(normalise).as_deref() != Some(info.comment.as_str()) {
            self.mismatch(
                path,
                format!(
                    "description {description:?} differs from the comment of {name}: {:?}",
                    info.comment
                ),
            );
        }
        let properties: Option<&'a serde_json::Map<String, Value>> =
            self.keyword(node, "properties").and_then(Value::as_object);
        let fields: HashMap<&str, (usize, &FieldDescriptorProto)> = info
            .descriptor
            .field
            .iter()
            .enumerate()
            .map(|(index, field)| (field.name(), (index, field)))
            .collect();
        for property in properties
            .into_iter()
            .flat_map(|properties| properties.keys())
        {
            if !fields.contains_key(property.as_str()) {
                self.mismatch(
                    &format!("{path}/{property}"),
                    format!("property has no field in {name}"),
                );
            }
        }
        if let Some(required) = self.keyword(node, "required").and_then(Value::as_array) {
            for name in required.iter().filter_map(Value::as_str) {
                if !properties.is_some_and(|properties| properties.contains_key(name)) {
                    self.mismatch(
                        &format!("{path}/{name}"),
                        "required but not among the properties",
                    );
                }
            }
        }
        for field in &info.descriptor.field {
            let field_path = format!("{path}/{}", field.name());
            let (index, _) = fields[field.name()];
            match properties.and_then(|properties| properties.get(field.name())) {
                None => self.mismatch(
                    &field_path,
                    format!(
                        "field {} (number {}) of {name} is missing from the schema",
                        field.name(),
                        field.number()
                    ),
                ),
                Some(property) => {
                    let comment = &info.field_comments[index];
                    let description = property.get("description").and_then(Value::as_str);
                    if description.map(normalise).as_deref() != Some(comment.as_str()) {
                        self.mismatch(
                            &field_path,
                            format!(
                                "description {description:?} differs from the field comment {comment:?}"
                            ),
                        );
                    }
                    let declared = self
                        .protos
                        .categories
                        .get(&format!("{name}.{}", field.name()));
                    let annotated = property
                        .get("x-passerelle-category")
                        .and_then(Value::as_str);
                    if declared.map(String::as_str) != annotated {
                        self.mismatch(
                            &field_path,
                            format!(
                                "x-passerelle-category {annotated:?}, but the proto option declares {declared:?}"
                            ),
                        );
                    }
                    self.field(field, property, &field_path);
                }
            }
        }
    }

    fn field(&mut self, field: &FieldDescriptorProto, node: &'a Value, path: &str) {
        if field.label() == Label::Repeated {
            if !self.expect_type(node, path, "array") {
                return;
            }
            let Some(items) = self.keyword(node, "items") else {
                self.mismatch(path, "array without items");
                return;
            };
            if field.r#type() == Type::Enum
                && self.keyword(node, "uniqueItems") != Some(&Value::Bool(true))
            {
                self.mismatch(path, "an array of enum values without uniqueItems: true");
            }
            self.element(field, items, &format!("{path}/*"));
        } else {
            self.element(field, node, path);
        }
    }

    fn element(&mut self, field: &FieldDescriptorProto, node: &'a Value, path: &str) {
        match field.r#type() {
            Type::String => {
                self.expect_type(node, path, "string");
            }
            Type::Bytes => {
                if self.expect_type(node, path, "string")
                    && self.keyword(node, "contentEncoding") != Some(&json!("base64"))
                {
                    self.mismatch(path, "bytes without contentEncoding base64");
                }
            }
            Type::Bool => {
                self.expect_type(node, path, "boolean");
            }
            Type::Int32
            | Type::Int64
            | Type::Uint32
            | Type::Uint64
            | Type::Sint32
            | Type::Sint64
            | Type::Fixed32
            | Type::Fixed64
            | Type::Sfixed32
            | Type::Sfixed64 => {
                self.expect_type(node, path, "integer");
            }
            Type::Double | Type::Float => {
                self.expect_type(node, path, "number");
            }
            Type::Enum => self.enumeration(field.type_name(), node, path),
            Type::Message | Type::Group if field.type_name() == TIMESTAMP => {
                if self.expect_type(node, path, "string")
                    && self.keyword(node, "format") != Some(&json!("date-time"))
                {
                    self.mismatch(path, "a Timestamp must be a string of format date-time");
                }
            }
            Type::Message | Type::Group if field.type_name().starts_with(".google.protobuf.") => {
                self.mismatch(
                    path,
                    format!(
                        "well-known type {} has no JSON mapping check",
                        field.type_name()
                    ),
                );
            }
            Type::Message | Type::Group => {
                // Nested messages are $defs entries, so that each is described once.
                let Some(target) = self.target(node, path) else {
                    self.mismatch(
                        path,
                        format!("message {} is not a $ref to $defs", field.type_name()),
                    );
                    return;
                };
                let reference = node["$ref"].as_str().unwrap_or_default().to_owned();
                if self
                    .seen
                    .insert((field.type_name().to_owned(), reference.clone()))
                {
                    self.message(field.type_name(), target, &format!("{path} ({reference})"));
                }
            }
        }
    }

    fn enumeration(&mut self, name: &str, node: &'a Value, path: &str) {
        let Some(info) = self.protos.enums.get(name) else {
            self.mismatch(path, format!("proto enum {name} not found"));
            return;
        };
        if !self.expect_type(node, path, "string") {
            return;
        }
        if let Some(target) = self.target(node, path) {
            let declared = self.protos.element_categories.get(name);
            let annotated = target.get("x-passerelle-element-categories");
            if declared != annotated {
                self.mismatch(
                    path,
                    format!(
                        "x-passerelle-element-categories of {name} is {annotated:?}, but the proto options declare {declared:?}"
                    ),
                );
            }
            let description = target.get("description").and_then(Value::as_str);
            if description.map(normalise).as_deref() != Some(info.comment.as_str()) {
                self.mismatch(
                    path,
                    format!(
                        "enum description {description:?} differs from the comment of {name}: {:?}",
                        info.comment
                    ),
                );
            }
        }
        let proto: BTreeSet<&str> = info
            .descriptor
            .value
            .iter()
            .filter(|value| !(value.number() == 0 && value.name().ends_with("_UNSPECIFIED")))
            .map(|value| value.name())
            .collect();
        let Some(listed) = self.keyword(node, "enum").and_then(Value::as_array) else {
            self.mismatch(path, format!("no enum list for {name}"));
            return;
        };
        let schema: BTreeSet<&str> = listed.iter().filter_map(Value::as_str).collect();
        if schema.len() != listed.len() {
            self.mismatch(path, "enum lists a non-string or repeated value");
        }
        for missing in proto.difference(&schema) {
            self.mismatch(path, format!("enum lacks {missing} of {name}"));
        }
        for extra in schema.difference(&proto) {
            self.mismatch(
                path,
                format!("enum lists {extra}, which {name} does not define"),
            );
        }
    }
}

fn schema_files() -> Vec<PathBuf> {
    fn collect(dir: &Path, files: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("readable schemas dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                collect(&path, files);
            } else {
                files.push(path);
            }
        }
    }
    let mut files = Vec::new();
    collect(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas"),
        &mut files,
    );
    files.sort();
    files
}

#[test]
fn every_schema_matches_its_proto_message() {
    let protos = Protos::load();
    let mut report = Vec::new();
    for name in SchemaName::ALL {
        let schema = &schemas::schema(*name).document;
        for mismatch in compare(&protos, name.proto_message(), schema) {
            report.push(format!("{}: {mismatch}", name.as_str()));
        }
        let version = &schema["properties"]["schema_version"];
        assert_eq!(
            version["const"],
            json!(name.schema_version()),
            "{}",
            name.as_str()
        );
        assert!(
            schema["required"]
                .as_array()
                .is_some_and(|required| required.contains(&json!("schema_version"))),
            "{}: schema_version must be required",
            name.as_str()
        );
    }
    assert!(
        report.is_empty(),
        "{} mismatch(es) between proto and JSON Schema:\n{}",
        report.len(),
        report.join("\n")
    );
}

#[test]
fn every_schema_file_is_a_valid_draft_2020_12_schema() {
    let files = schema_files();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
    let mut registered: Vec<String> = SchemaName::ALL
        .iter()
        .map(|name| format!("{}.json", name.as_str()))
        .collect();
    registered.sort();
    let mut found: Vec<String> = files
        .iter()
        .map(|file| {
            file.strip_prefix(&root)
                .expect("under schemas/")
                .to_string_lossy()
                .replace('\\', "/")
        })
        .collect();
    found.sort();
    assert_eq!(
        found, registered,
        "every file under schemas/ is a registered schema"
    );

    for file in &files {
        let relative = file.strip_prefix(&root).expect("under schemas/");
        let text = std::fs::read_to_string(file).expect("readable");
        let schema: Value = serde_json::from_str(&text)
            .unwrap_or_else(|error| panic!("{}: not JSON: {error}", file.display()));
        assert_eq!(
            schema["$schema"],
            json!("https://json-schema.org/draft/2020-12/schema"),
            "{}",
            file.display()
        );
        assert_eq!(
            schema["$id"],
            json!(format!(
                "https://passerelle.example/schemas/{}",
                relative.to_string_lossy().replace('\\', "/")
            )),
            "{}",
            file.display()
        );
        if let Err(error) = jsonschema::draft202012::meta::validate(&schema) {
            panic!(
                "{}: not a valid 2020-12 schema at {}: {error}",
                file.display(),
                error.instance_path().as_str()
            );
        }
        assert!(jsonschema::meta::is_valid(&schema));
        jsonschema::draft202012::options()
            .should_validate_formats(true)
            .build(&schema)
            .unwrap_or_else(|error| panic!("{}: does not compile: {error}", file.display()));
    }
}

#[test]
fn the_meta_schema_check_refuses_a_broken_schema() {
    let broken = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {"name": {"type": "text", "minLength": -1}}
    });
    assert!(!jsonschema::meta::is_valid(&broken));
    assert!(jsonschema::draft202012::meta::validate(&broken).is_err());
}

/// The comparison must see drift, or the parity test proves nothing.
mod drift {
    use super::*;

    fn referral_v2() -> Value {
        schemas::schema(SchemaName::ReferralV2).document.clone()
    }

    fn drifted(edit: impl FnOnce(&mut Value)) -> Vec<String> {
        let protos = Protos::load();
        let mut schema = referral_v2();
        edit(&mut schema);
        compare(&protos, "passerelle.referral.v2.Referral", &schema)
    }

    fn reports(mismatches: &[String], path: &str, words: &str) {
        assert!(
            mismatches
                .iter()
                .any(|m| m.starts_with(path) && m.contains(words)),
            "expected a mismatch at {path} mentioning {words:?}; got:\n{}",
            mismatches.join("\n")
        );
    }

    #[test]
    fn the_real_schema_has_no_drift() {
        let protos = Protos::load();
        assert_eq!(
            compare(&protos, "passerelle.referral.v2.Referral", &referral_v2()),
            Vec::<String>::new()
        );
    }

    #[test]
    fn an_extra_property_is_reported() {
        let mismatches = drifted(|schema| {
            schema["$defs"]["Person"]["properties"]["nickname"] =
                json!({"description": "Nickname.", "type": "string"});
        });
        reports(
            &mismatches,
            "/person (#/$defs/Person)/nickname",
            "no field in .passerelle.referral.v2.Person",
        );
    }

    #[test]
    fn a_missing_property_and_a_missing_enum_value_are_both_reported() {
        let mismatches = drifted(|schema| {
            schema["properties"]
                .as_object_mut()
                .expect("object")
                .remove("reason");
            let values = schema["$defs"]["ObstacleDomain"]["enum"]
                .as_array_mut()
                .expect("array");
            values.retain(|value| value != "OBSTACLE_DOMAIN_HEALTH");
            values.push(json!("OBSTACLE_DOMAIN_WEATHER"));
        });
        reports(&mismatches, "/reason", "missing from the schema");
        reports(
            &mismatches,
            "/obstacles/* (#/$defs/Obstacle)/domain",
            "lacks OBSTACLE_DOMAIN_HEALTH",
        );
        reports(
            &mismatches,
            "/obstacles/* (#/$defs/Obstacle)/domain",
            "lists OBSTACLE_DOMAIN_WEATHER",
        );
        assert_eq!(mismatches.len(), 3, "{mismatches:#?}");
    }

    #[test]
    fn wrong_types_and_open_objects_are_reported() {
        let mismatches = drifted(|schema| {
            schema["$defs"]["Situation"]["properties"]["rsa_beneficiary"]["type"] = json!("string");
            schema["$defs"]["Address"]["additionalProperties"] = json!(true);
            schema["properties"]["created_at"]["format"] = json!("date");
            schema["properties"]["identifiers"]["type"] = json!("object");
            schema["$defs"]["Contact"]["properties"]["preferences"]
                .as_object_mut()
                .expect("object")
                .remove("uniqueItems");
        });
        reports(
            &mismatches,
            "/situation (#/$defs/Situation)/rsa_beneficiary",
            "expected \"boolean\"",
        );
        reports(
            &mismatches,
            "/person (#/$defs/Person)/address (#/$defs/Address)",
            "additionalProperties",
        );
        reports(&mismatches, "/created_at", "date-time");
        reports(&mismatches, "/identifiers", "expected \"array\"");
        reports(
            &mismatches,
            "/person (#/$defs/Person)/contact (#/$defs/Contact)/preferences",
            "uniqueItems",
        );
    }

    #[test]
    fn a_description_that_drifts_from_the_proto_comment_is_reported() {
        let mismatches = drifted(|schema| {
            schema["$defs"]["Organisation"]["properties"]["siret"]["description"] = json!("SIRET.");
            schema["$defs"]["Pathway"]["description"] = json!("Pathways.");
        });
        reports(
            &mismatches,
            "/sender (#/$defs/Sender)/organisation",
            "SIRET",
        );
        reports(&mismatches, "/pathway", "enum description");
    }

    #[test]
    fn a_category_annotation_that_drifts_from_the_proto_options_is_reported() {
        let mismatches = drifted(|schema| {
            schema["$defs"]["Situation"]["properties"]["other"]["x-passerelle-category"] =
                json!("situation");
            schema["properties"]["reason"]
                .as_object_mut()
                .expect("object")
                .remove("x-passerelle-category");
            schema["$defs"]["ObstacleDomain"]["x-passerelle-element-categories"]["OBSTACLE_DOMAIN_HEALTH"] =
                json!("obstacle_unclassified");
        });
        reports(
            &mismatches,
            "/situation (#/$defs/Situation)/other",
            "x-passerelle-category Some(\"situation\"), but the proto option declares Some(\"free_text\")",
        );
        reports(&mismatches, "/reason", "x-passerelle-category None");
        reports(
            &mismatches,
            "/obstacles/* (#/$defs/Obstacle)/domain",
            "x-passerelle-element-categories",
        );
        assert_eq!(mismatches.len(), 3, "{mismatches:#?}");
    }

    #[test]
    fn a_required_name_that_is_no_property_is_reported() {
        let mismatches = drifted(|schema| {
            schema["required"]
                .as_array_mut()
                .expect("array")
                .push(json!("referral_uuid"));
        });
        reports(&mismatches, "/referral_uuid", "required but not among");
    }
}

#[test]
fn every_leaf_field_and_every_kind_declares_a_category() {
    let declarations = Declarations::decode(FILE_DESCRIPTOR_SET).expect("declarations decode");
    let problems = declarations.problems();
    assert!(
        problems.is_empty(),
        "{} category declaration problem(s) in proto/ (see passerelle/options/v1/options.proto):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn the_proto_category_enum_mirrors_the_rust_one() {
    let declarations = Declarations::decode(FILE_DESCRIPTOR_SET).expect("declarations decode");
    let proto: Vec<(String, i32, bool)> = declarations
        .proto_categories()
        .into_iter()
        .map(|category| (category.name, category.number, category.special))
        .collect();
    let rust: Vec<(String, i32, bool)> = DataCategory::ALL
        .iter()
        .zip(1..)
        .map(|(category, number)| {
            (
                categories::proto_name(*category),
                number,
                category.is_special(),
            )
        })
        .collect();
    assert_eq!(proto, rust);
}

#[test]
fn the_crate_reads_its_tables_from_the_compiled_declarations() {
    let declarations = Declarations::decode(FILE_DESCRIPTOR_SET).expect("declarations decode");
    for schema in SchemaName::ALL {
        assert_eq!(
            categories::fields(*schema),
            declarations.fields(schema.proto_message()).as_slice(),
            "{}",
            schema.as_str()
        );
    }
}

/// The declaration check must see drift, or "every field has a category"
/// proves nothing: each test edits a copy of the compiled descriptor set
/// (as a dynamic message, so that the extension options survive) and reads
/// the problems of the copy.
mod category_drift {
    use super::*;
    use prost_reflect::{DynamicMessage, ExtensionDescriptor, Value as Reflected};

    const REFERRAL_V2: &str = "passerelle/referral/v2/referral.proto";
    const STATUS_V1: &str = "passerelle/status/v1/status.proto";
    const OPTIONS: &str = "passerelle/options/v1/options.proto";

    struct Drift {
        pool: DescriptorPool,
        set: DynamicMessage,
    }

    /// The element of a repeated message field whose `name` is `name`.
    fn named<'a>(
        message: &'a mut DynamicMessage,
        list: &str,
        name: &str,
    ) -> &'a mut DynamicMessage {
        let Some(Reflected::List(items)) = message.get_field_by_name_mut(list) else {
            panic!("no list {list}");
        };
        items
            .iter_mut()
            .find_map(|item| match item {
                Reflected::Message(element)
                    if element
                        .get_field_by_name("name")
                        .is_some_and(|value| value.as_str() == Some(name)) =>
                {
                    Some(element)
                }
                _ => None,
            })
            .unwrap_or_else(|| panic!("no {name} in {list}"))
    }

    fn options(message: &mut DynamicMessage) -> &mut DynamicMessage {
        match message.get_field_by_name_mut("options") {
            Some(Reflected::Message(options)) => options,
            _ => panic!("no options"),
        }
    }

    impl Drift {
        fn new() -> Self {
            let pool = DescriptorPool::decode(FILE_DESCRIPTOR_SET).expect("descriptor set decodes");
            let descriptor = pool
                .get_message_by_name("google.protobuf.FileDescriptorSet")
                .expect("descriptor.proto is in the set");
            let set = DynamicMessage::decode(descriptor, FILE_DESCRIPTOR_SET).expect("decodes");
            Self { pool, set }
        }

        fn extension(&self, name: &str) -> ExtensionDescriptor {
            self.pool.get_extension_by_name(name).expect("extension")
        }

        fn category(&self, category: DataCategory) -> Reflected {
            let number = self
                .pool
                .get_enum_by_name(categories::DATA_CATEGORY_ENUM)
                .and_then(|kinds| kinds.get_value_by_name(&categories::proto_name(category)))
                .expect("declared category")
                .number();
            Reflected::EnumNumber(number)
        }

        fn field_options(&mut self, file: &str, message: &str, field: &str) -> &mut DynamicMessage {
            let file = named(&mut self.set, "file", file);
            let message = named(file, "message_type", message);
            options(named(message, "field", field))
        }

        fn value_options(&mut self, file: &str, kinds: &str, value: &str) -> &mut DynamicMessage {
            let file = named(&mut self.set, "file", file);
            let kinds = named(file, "enum_type", kinds);
            options(named(kinds, "value", value))
        }

        fn declarations(&self) -> Declarations {
            Declarations::decode(&self.set.encode_to_vec()).expect("the drifted copy decodes")
        }

        fn problems(&self) -> Vec<String> {
            let mut problems = self.declarations().problems();
            problems.sort();
            problems
        }
    }

    #[test]
    fn an_unedited_copy_has_no_problem() {
        assert_eq!(Drift::new().problems(), Vec::<String>::new());
    }

    #[test]
    fn every_leaf_field_and_kind_without_a_category_is_named() {
        let mut drift = Drift::new();
        let category = drift.extension(CATEGORY_OPTION);
        let element = drift.extension(ELEMENT_CATEGORY_OPTION);
        drift
            .field_options(REFERRAL_V2, "Contact", "email")
            .clear_extension(&category);
        drift
            .field_options(STATUS_V1, "StatusEvent", "comment")
            .clear_extension(&category);
        drift
            .value_options(REFERRAL_V2, "ObstacleDomain", "OBSTACLE_DOMAIN_HEALTH")
            .clear_extension(&element);
        assert_eq!(
            drift.problems(),
            [
                "passerelle.referral.v2.Contact.email: leaf field without a category option",
                "passerelle.referral.v2.ObstacleDomain.OBSTACLE_DOMAIN_HEALTH: typed-list kind without an element_category option",
                "passerelle.status.v1.StatusEvent.comment: leaf field without a category option",
            ]
        );
        // Undeclared paths are left out of the tables, so no policy can allow them.
        let paths: Vec<String> = drift
            .declarations()
            .fields("passerelle.referral.v2.Referral")
            .into_iter()
            .map(|field| field.path)
            .collect();
        assert!(!paths.iter().any(|path| path == "person.contact.email"));
        assert!(
            !paths
                .iter()
                .any(|path| path.starts_with("obstacles.health"))
        );
        assert!(paths.iter().any(|path| path == "obstacles.housing.impact"));
    }

    #[test]
    fn misplaced_and_empty_categories_are_named() {
        let mut drift = Drift::new();
        let category = drift.extension(CATEGORY_OPTION);
        let identity = drift.category(DataCategory::Identity);
        let nir = drift.category(DataCategory::Nir);
        drift
            .field_options(REFERRAL_V2, "Referral", "person")
            .set_extension(&category, identity);
        drift
            .field_options(REFERRAL_V2, "Address", "city")
            .set_extension(&category, Reflected::EnumNumber(0));
        drift
            .field_options(REFERRAL_V2, "Identifier", "value")
            .set_extension(&category, nir);
        assert_eq!(
            drift.problems(),
            [
                "passerelle.referral.v2.Address.city: category is DATA_CATEGORY_UNSPECIFIED",
                "passerelle.referral.v2.Identifier.value: a field of a typed-list element carries a category; the element_category of its kind decides",
                "passerelle.referral.v2.Referral.person: a message-typed field carries a category; categories live on its leaf fields",
            ]
        );
    }

    #[test]
    fn a_typed_list_whose_kinds_all_lost_their_category_names_each_kind() {
        let mut drift = Drift::new();
        let element = drift.extension(ELEMENT_CATEGORY_OPTION);
        for kind in [
            "FRANCE_TRAVAIL",
            "CAF",
            "MSA",
            "IMILO",
            "DEPARTEMENT",
            "NIR",
        ] {
            drift
                .value_options(
                    REFERRAL_V2,
                    "IdentifierKind",
                    &format!("IDENTIFIER_KIND_{kind}"),
                )
                .clear_extension(&element);
        }
        let problems = drift.problems();
        assert_eq!(problems.len(), 7, "{problems:#?}");
        assert!(problems.contains(&"passerelle.referral.v2.Referral.identifiers: a repeated message field is a typed list (paths never hold indices), but no enum field of passerelle.referral.v2.Identifier carries element_category".to_owned()));
        assert!(problems.contains(&"passerelle.referral.v2.IdentifierKind.IDENTIFIER_KIND_NIR: typed-list kind without an element_category option".to_owned()));
    }

    #[test]
    fn a_category_enum_that_drifts_from_the_rust_one_is_named() {
        let mut drift = Drift::new();
        let special = drift.extension(categories::SPECIAL_CATEGORY_OPTION);
        drift
            .value_options(OPTIONS, "DataCategory", "DATA_CATEGORY_NIR")
            .set_extension(&special, Reflected::Bool(true));
        let problems = drift.problems();
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert!(
            problems[0].starts_with("passerelle.options.v1.DataCategory (name, special)")
                && problems[0].contains("(\"DATA_CATEGORY_NIR\", true)"),
            "{problems:#?}"
        );
    }
}

/// docs/data-categories.md is rendered from the declarations; run with
/// `UPDATE_GOLDEN=1` after changing a category to rewrite it.
mod data_categories_document {
    use super::*;

    const INTRODUCTION: &str = "\
# Data categories

<!-- Generated from the protos by tests/proto_schema_parity.rs; do not edit.
     After changing a category, run: UPDATE_GOLDEN=1 cargo test --test proto_schema_parity -->

Every canonical field path carries one data category. The categories are
declared once, as custom options in the protos: the `category` field option
on every leaf field, and the `element_category` enum value option on the kinds
of the typed lists (`IdentifierKind`, `ObstacleDomain`), both defined in
[`proto/passerelle/options/v1/options.proto`](../proto/passerelle/options/v1/options.proto).
The gateway reads them from the compiled descriptors (`src/model/categories.rs`),
`passerelle schema show NAME --categories` prints them, the JSON Schemas repeat
them as `x-passerelle-category` and `x-passerelle-element-categories`, and the
parity test fails when a leaf field or a kind has none.

Field paths are the proto field names from the message root joined by dots
(`person.contact.phone`). Elements of the typed lists are addressed by their
kind, lower case without prefix (`identifiers.nir`, `obstacles.health`), and
their sub-fields take the category of their kind. A path names a whole subtree
(`person.contact` covers `person.contact.phone`). Paths never hold values or
indices.

Special categories (GDPR Art. 9) may only leave under an Art. 9(2) basis
(explicit consent, or employment and social protection law) recorded in the
consent record; minimisation policies drop them or derive a coarser value
otherwise.
";

    const CONSENT: &str = "\
Consent records carry no categories: they stay in the controller's store and
never go through minimisation. Their `data_categories` field names the
categories above, those of the referral fields a record covers.
";

    /// The comment of each `DataCategory` value, by value name.
    fn category_comments() -> HashMap<String, String> {
        let set = FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).expect("descriptor set decodes");
        let file = set
            .file
            .iter()
            .find(|file| file.name() == "passerelle/options/v1/options.proto")
            .expect("options.proto is compiled");
        let index = file
            .enum_type
            .iter()
            .position(|kinds| kinds.name() == "DataCategory")
            .expect("DataCategory is declared");
        let comments: HashMap<Vec<i32>, String> = file
            .source_code_info
            .iter()
            .flat_map(|info| &info.location)
            .map(|location| {
                (
                    location.path.clone(),
                    normalise(location.leading_comments()),
                )
            })
            .collect();
        file.enum_type[index]
            .value
            .iter()
            .enumerate()
            .map(|(value, descriptor)| {
                let path = vec![5, index as i32, 2, value as i32];
                (
                    descriptor.name().to_owned(),
                    comments.get(&path).cloned().unwrap_or_default(),
                )
            })
            .collect()
    }

    fn special(category: DataCategory) -> &'static str {
        if category.is_special() { "yes" } else { "no" }
    }

    fn render() -> String {
        let comments = category_comments();
        let mut text = String::from(INTRODUCTION);
        text.push_str("\n## Categories\n\n");
        text.push_str("| Category | Art. 9 | What it holds, and why |\n|---|---|---|\n");
        for category in DataCategory::ALL {
            let comment = &comments[&categories::proto_name(*category)];
            assert!(!comment.is_empty(), "{} has no comment", category.as_str());
            text.push_str(&format!(
                "| `{}` | {} | {comment} |\n",
                category.as_str(),
                special(*category)
            ));
        }
        for schema in SchemaName::ALL {
            text.push_str(&format!(
                "\n## {} (`{}`)\n\n",
                schema.as_str(),
                schema.proto_message()
            ));
            let fields = categories::fields(*schema);
            if fields.is_empty() {
                text.push_str(CONSENT);
                continue;
            }
            text.push_str("| Field path | Category | Art. 9 |\n|---|---|---|\n");
            for field in fields {
                text.push_str(&format!(
                    "| `{}` | `{}` | {} |\n",
                    field.path,
                    field.category.as_str(),
                    special(field.category)
                ));
            }
        }
        text
    }

    #[test]
    fn the_document_is_generated_from_the_declarations() {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/data-categories.md");
        let rendered = render();
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&file, &rendered).expect("write docs/data-categories.md");
            return;
        }
        let found = std::fs::read_to_string(&file).unwrap_or_default();
        assert!(
            found == rendered,
            "{} is out of date with the proto declarations; run UPDATE_GOLDEN=1 cargo test --test proto_schema_parity",
            file.display()
        );
    }
}

/// `passerelle schema show NAME --categories` prints the declarations.
mod schema_show_categories {
    use super::*;
    use std::process::Command;

    fn run(args: &[&str]) -> String {
        let output = Command::new(env!("CARGO_BIN_EXE_passerelle"))
            .args(args)
            .output()
            .expect("the binary runs");
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("UTF-8 output")
    }

    #[test]
    fn the_text_table_is_aligned_and_flags_special_categories() {
        let text = run(&["schema", "show", "referral/v2", "--categories"]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            ["PATH", "CATEGORY", "ART.9"]
        );
        assert_eq!(
            lines.len(),
            1 + categories::fields(SchemaName::ReferralV2).len()
        );
        let column = lines[0].find("CATEGORY").expect("header");
        for line in &lines[1..] {
            assert_eq!(line.as_bytes()[column - 1], b' ', "{line}");
            assert_ne!(line.as_bytes()[column], b' ', "{line}");
        }
        let row = |path: &str| {
            lines
                .iter()
                .find(|line| line.split_whitespace().next() == Some(path))
                .map(|line| line.split_whitespace().collect::<Vec<_>>())
                .unwrap_or_else(|| panic!("no row for {path}"))
        };
        assert_eq!(
            row("situation.recognised_disability"),
            ["situation.recognised_disability", "disability", "yes"]
        );
        assert_eq!(
            row("obstacles.health.source_label"),
            ["obstacles.health.source_label", "obstacle_health", "yes"]
        );
        assert_eq!(row("identifiers.nir"), ["identifiers.nir", "nir"]);
        assert_eq!(row("reason"), ["reason", "free_text"]);
    }

    #[test]
    fn the_json_form_lists_every_path() {
        let text = run(&[
            "schema",
            "show",
            "status/v1",
            "--categories",
            "--output",
            "json",
        ]);
        let document: Value = serde_json::from_str(&text).expect("JSON output");
        assert_eq!(document["schema"], "status/v1");
        assert_eq!(document["message"], "passerelle.status.v1.StatusEvent");
        let fields = document["fields"].as_array().expect("fields");
        assert_eq!(fields.len(), categories::fields(SchemaName::StatusV1).len());
        assert_eq!(
            fields.last(),
            Some(&json!({"path": "comment", "category": "free_text", "special": false}))
        );
        let consent = run(&[
            "schema",
            "show",
            "consent/v1",
            "--categories",
            "--output",
            "json",
        ]);
        let consent: Value = serde_json::from_str(&consent).expect("JSON output");
        assert_eq!(consent["fields"], json!([]));
    }
}
