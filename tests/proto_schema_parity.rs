//! The JSON Schemas under `schemas/` describe exactly the proto messages of
//! `proto/`, in the proto3 JSON mapping with the original field names: same
//! fields, compatible types, the same enum values (less `*_UNSPECIFIED`), the
//! proto comments as descriptions. And every schema file is a valid draft
//! 2020-12 JSON Schema.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use passerelle::model::proto::FILE_DESCRIPTOR_SET;
use passerelle::validate::{SchemaName, schemas};
use prost::Message as _;
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
}

fn normalise(comment: &str) -> String {
    comment.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl Protos {
    fn load() -> Self {
        let set = FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).expect("descriptor set decodes");
        let mut protos = Protos {
            messages: HashMap::new(),
            enums: HashMap::new(),
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
