//! Golden tests of the canonical forms: JSON referrals (v1 and v2), status
//! events and consent records against their schemas and the domain types;
//! v1 ⇄ v2 with its loss report; the protobuf binary adapter; and the error
//! lists of bad documents. No error text may repeat a value of its input.

mod common;

use std::io::Read;

use passerelle::Error;
use passerelle::formats::{self, Context, FormatOptions};
use passerelle::model::status::StatusEvent;
use passerelle::model::{Message, v1, v2};
use passerelle::validate::{self, SchemaName, schemas};
use serde_json::{Value, json};

use common::{assert_golden_json, fixed_context, golden_bytes, golden_dir};

fn document(path: &str) -> Value {
    serde_json::from_slice(&golden_bytes(path)).expect("golden input is JSON")
}

/// Decodes one input through the named format, as the CLI would.
fn decode_with(format: &str, bytes: Vec<u8>, context: &Context) -> Result<Message, Error> {
    let format = formats::by_name(format, &FormatOptions::default()).expect("known format");
    let input: Box<dyn Read> = Box::new(std::io::Cursor::new(bytes));
    let mut records = format.decode(input, context)?;
    let record = records.next().expect("one record");
    assert!(
        records.next().is_none(),
        "a single document gives one record"
    );
    record.result.map(|translated| {
        assert!(translated.losses.is_empty(), "decoding loses nothing");
        translated.value
    })
}

fn referral(message: Message) -> v2::Referral {
    match message {
        Message::Referral(referral) => *referral,
        Message::Status(_) => panic!("expected a referral"),
    }
}

/// The golden form of an error: the violations, or the error's kind and fields.
fn error_json(error: &Error) -> Value {
    match error {
        Error::Invalid(violations) => json!({ "violations": violations }),
        Error::TooDeep { limit, pointer } => {
            json!({ "too_deep": { "limit": limit, "pointer": pointer } })
        }
        Error::Malformed {
            detail,
            line,
            column,
        } => json!({ "malformed": { "detail": detail, "line": line, "column": column } }),
        other => json!({ "error": other.to_string() }),
    }
}

/// String values of a document that could be personal data: everything but
/// enum names and schema versions, and nothing too short to be telling.
fn personal_values(value: &Value, found: &mut Vec<String>) {
    match value {
        Value::String(text) => {
            let enum_like = text
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
                && text.starts_with(|c: char| c.is_ascii_uppercase());
            if text.chars().count() >= 5 && !enum_like && !text.starts_with("passerelle.") {
                found.push(text.clone());
            }
        }
        Value::Array(items) => items.iter().for_each(|item| personal_values(item, found)),
        Value::Object(members) => members
            .values()
            .for_each(|member| personal_values(member, found)),
        _ => {}
    }
}

fn assert_no_input_value_in(error: &Error, input: &Value) {
    let mut values = Vec::new();
    personal_values(input, &mut values);
    assert!(
        values.len() >= 3,
        "the input should carry recognisable values"
    );
    let text = format!("{error}\n{}", error_json(error));
    for value in values {
        assert!(
            !text.contains(&value),
            "error text repeats an input value {value:?}:\n{text}"
        );
    }
}

fn encoded_json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).expect("the encoder writes JSON")
}

// ------------------------------------------------------------------ valid documents

#[test]
fn the_full_v2_referral_validates_decodes_and_encodes_back_identically() {
    let input = document("canonical/referral-v2-full.json");
    assert!(schemas::schema(SchemaName::ReferralV2).is_valid(&input));
    let decoded = referral(
        decode_with(
            "passerelle-v2",
            golden_bytes("canonical/referral-v2-full.json"),
            &fixed_context(),
        )
        .expect("valid"),
    );
    assert_eq!(
        serde_json::to_value(&decoded).expect("serialisable"),
        input,
        "the golden input is already in canonical form"
    );
    let encoded = formats::by_name("passerelle-v2", &FormatOptions::default())
        .expect("known")
        .encode(&Message::Referral(Box::new(decoded)), &fixed_context())
        .expect("encodes");
    assert!(encoded.losses.is_empty());
    assert_eq!(encoded_json(&encoded.value), input);
}

#[test]
fn a_full_v1_referral_becomes_the_golden_canonical_v2() {
    let input = document("canonical/referral-v1-full.json");
    assert!(schemas::schema(SchemaName::ReferralV1).is_valid(&input));
    validate::typed::<v1::Referral>(&input).expect("the v1 domain type accepts it");
    let decoded = referral(
        decode_with(
            "passerelle-v1",
            golden_bytes("canonical/referral-v1-full.json"),
            &fixed_context(),
        )
        .expect("valid"),
    );
    let output = serde_json::to_value(&decoded).expect("serialisable");
    assert_golden_json("canonical/referral-v1-full.expected-v2.json", &output);
    schemas::schema(SchemaName::ReferralV2)
        .validate(&output)
        .expect("the canonical output obeys the v2 schema");
}

#[test]
fn writing_v1_from_v2_gives_the_golden_document_and_loss_report() {
    let original = referral(
        decode_with(
            "passerelle-v2",
            golden_bytes("canonical/referral-v2-full.json"),
            &fixed_context(),
        )
        .expect("valid"),
    );
    let encoded = formats::by_name("passerelle-v1", &FormatOptions::default())
        .expect("known")
        .encode(
            &Message::Referral(Box::new(original.clone())),
            &fixed_context(),
        )
        .expect("encodes");
    let output = encoded_json(&encoded.value);
    assert_golden_json("canonical/referral-v2-full.expected-v1.json", &output);
    assert_golden_json(
        "canonical/referral-v2-full.v1-losses.json",
        &serde_json::to_value(&encoded.losses).expect("serialisable"),
    );
    schemas::schema(SchemaName::ReferralV1)
        .validate(&output)
        .expect("the v1 output obeys the v1 schema");

    // Back to v2: whatever differs from the original is covered by the report.
    let back = referral(
        decode_with("passerelle-v1", encoded.value, &fixed_context()).expect("reads back"),
    );
    let mut differences = Vec::new();
    diff(
        &serde_json::to_value(&original).expect("serialisable"),
        &serde_json::to_value(&back).expect("serialisable"),
        String::new(),
        &mut differences,
    );
    assert!(
        !differences.is_empty(),
        "the full referral uses what v1 lacks"
    );
    let uncovered: Vec<&String> = differences
        .iter()
        .filter(|pointer| !encoded.losses.covers(pointer))
        .collect();
    assert!(uncovered.is_empty(), "lost without a report: {uncovered:?}");
}

/// The JSON pointers where two documents differ (leaves, or a whole side missing).
fn diff(left: &Value, right: &Value, pointer: String, found: &mut Vec<String>) {
    match (left, right) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for key in keys {
                let child = format!("{pointer}/{key}");
                match (a.get(key), b.get(key)) {
                    (Some(x), Some(y)) => diff(x, y, child, found),
                    _ => found.push(child),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for index in 0..a.len().max(b.len()) {
                let child = format!("{pointer}/{index}");
                match (a.get(index), b.get(index)) {
                    (Some(x), Some(y)) => diff(x, y, child, found),
                    _ => found.push(child),
                }
            }
        }
        _ if left != right => found.push(pointer),
        _ => {}
    }
}

#[test]
fn a_rejected_status_event_validates_decodes_and_encodes_back() {
    let input = document("canonical/status-rejected.json");
    assert!(schemas::schema(SchemaName::StatusV1).is_valid(&input));
    let message = decode_with(
        "passerelle-v2",
        golden_bytes("canonical/status-rejected.json"),
        &fixed_context(),
    )
    .expect("valid");
    let Message::Status(event) = &message else {
        panic!("expected a status event");
    };
    assert_eq!(serde_json::to_value(event).expect("serialisable"), input);
    let encoded = formats::by_name("passerelle-v1", &FormatOptions::default())
        .expect("known")
        .encode(&message, &fixed_context())
        .expect("encodes");
    assert_eq!(encoded_json(&encoded.value), input);
}

#[test]
fn the_consent_record_obeys_its_schema_and_its_rules_bite() {
    // No canonical consent type exists yet in src/model: the schema and the
    // proto parity test are what define the record for now.
    let schema = schemas::schema(SchemaName::ConsentV1);
    let input = document("canonical/consent-record.json");
    schema.validate(&input).expect("valid consent record");

    let refused = |edit: &dyn Fn(&mut Value), pointer: &str, rule: &str| {
        let mut changed = input.clone();
        edit(&mut changed);
        let error = schema.validate(&changed).expect_err("must be refused");
        assert!(
            error
                .violations()
                .iter()
                .any(|v| v.pointer == pointer && v.rule == rule),
            "expected {rule} at {pointer}: {error}"
        );
    };
    refused(&|doc| doc["events"] = json!([]), "/events", "minItems");
    refused(
        &|doc| doc["recipients"][1]["siret"] = json!("34312345600000"),
        "/recipients/1",
        "schema",
    );
    refused(
        &|doc| doc["purposes"] = json!(["ServiceProvision"]),
        "/purposes/0",
        "pattern",
    );
    refused(
        &|doc| doc["legal_basis"] = json!("LEGAL_BASIS_UNSPECIFIED"),
        "/legal_basis",
        "enum",
    );
    refused(
        &|doc| doc["notice"]["summary"] = json!("..."),
        "/notice/summary",
        "unknown-field",
    );
}

/// Every member of a valid document, with whether its schema requires it.
fn members(
    root: &Value,
    schema: &Value,
    document: &Value,
    pointer: &str,
    found: &mut Vec<(String, bool)>,
) {
    let mut schema = schema;
    while let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        schema = root
            .pointer(reference.trim_start_matches('#'))
            .expect("$ref resolves");
    }
    match document {
        Value::Object(object) => {
            let required: Vec<&str> = schema["required"]
                .as_array()
                .map(|names| names.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            for (key, value) in object {
                let child = format!("{pointer}/{key}");
                found.push((child.clone(), required.contains(&key.as_str())));
                if let Some(property) = schema["properties"].get(key) {
                    members(root, property, value, &child, found);
                }
            }
        }
        Value::Array(items) => {
            if let Some(first) = items.first() {
                members(
                    root,
                    &schema["items"],
                    first,
                    &format!("{pointer}/0"),
                    found,
                );
            }
        }
        _ => {}
    }
}

fn without(document: &Value, pointer: &str) -> Value {
    let mut changed = document.clone();
    let (parent, key) = pointer.rsplit_once('/').expect("a member pointer");
    changed
        .pointer_mut(parent)
        .and_then(Value::as_object_mut)
        .expect("parent object")
        .remove(key);
    changed
}

#[test]
fn the_schemas_require_exactly_what_the_domain_types_require() {
    type Decoder = fn(&Value) -> bool;
    let cases: [(SchemaName, &str, Option<Decoder>, &[&str]); 4] = [
        (
            SchemaName::ReferralV1,
            "canonical/referral-v1-full.json",
            Some(|doc| validate::typed::<v1::Referral>(doc).is_ok()),
            &[],
        ),
        (
            SchemaName::ReferralV2,
            "canonical/referral-v2-full.json",
            Some(|doc| validate::typed::<v2::Referral>(doc).is_ok()),
            &[],
        ),
        (
            SchemaName::StatusV1,
            "canonical/status-rejected.json",
            Some(|doc| validate::typed::<StatusEvent>(doc).is_ok()),
            // Required only when the status is rejected: a rule of the schema
            // (and of the protobuf conversion), not of the Rust type.
            &["/rejection_reason"],
        ),
        (
            SchemaName::ConsentV1,
            "canonical/consent-record.json",
            None,
            // A recipient scope names a SIRET or a kind: one of the two (oneOf).
            &["/recipients/0/siret"],
        ),
    ];
    let mut failures = Vec::new();
    for (name, path, decodes, conditional) in cases {
        let schema = schemas::schema(name);
        let input = document(path);
        assert!(schema.is_valid(&input), "{path}");
        assert!(decodes.is_none_or(|decodes| decodes(&input)), "{path}");
        let mut found = Vec::new();
        members(&schema.document, &schema.document, &input, "", &mut found);
        assert!(found.len() > 5, "{path} exercises its members");
        for (pointer, required) in found {
            let changed = without(&input, &pointer);
            let schema_accepts = schema.is_valid(&changed);
            let type_accepts = decodes.map(|decodes| decodes(&changed));
            let expected_schema = !required && !conditional.contains(&pointer.as_str());
            let expected_type = !required;
            if schema_accepts != expected_schema || type_accepts.is_some_and(|t| t != expected_type)
            {
                failures.push(format!(
                    "{}: without {pointer}: schema {} and type {} (required in the schema: {required})",
                    name.as_str(),
                    if schema_accepts { "accepts" } else { "refuses" },
                    match type_accepts {
                        Some(true) => "accepts",
                        Some(false) => "refuses",
                        None => "absent",
                    }
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ------------------------------------------------------------------ bad documents

/// Decodes a bad document and compares its error with the golden error file.
fn assert_refused(format: &str, input: &str, golden: &str) -> Error {
    let bytes = golden_bytes(input);
    let error = decode_with(format, bytes.clone(), &fixed_context()).expect_err("must be refused");
    assert_golden_json(golden, &error_json(&error));
    let text = String::from_utf8_lossy(&bytes);
    let as_value: Value = serde_json::from_str(&text).unwrap_or_else(|_| {
        // Not parseable as a whole (duplicate keys are fine for serde_json, but
        // keep the check for inputs that are not): check the raw text's words.
        Value::String(text.into_owned())
    });
    assert_no_input_value_in(&error, &as_value);
    error
}

#[test]
fn unknown_fields_are_all_listed_at_their_pointers() {
    let error = assert_refused(
        "passerelle-v2",
        "canonical/bad-unknown-fields.json",
        "canonical/bad-unknown-fields.errors.json",
    );
    let pointers: Vec<&str> = error
        .violations()
        .iter()
        .filter(|v| v.rule == "unknown-field")
        .map(|v| v.pointer.as_str())
        .collect();
    assert_eq!(pointers.len(), 6, "{error}");
    assert!(pointers.contains(&"/identifiers/1/issued_by"));
}

#[test]
fn a_wrong_siret_key_is_named_at_its_pointer() {
    let error = assert_refused(
        "passerelle-v2",
        "canonical/bad-siret-key.json",
        "canonical/bad-siret-key.errors.json",
    );
    assert_eq!(error.violations().len(), 1);
    assert_eq!(error.violations()[0].pointer, "/sender/organisation/siret");
    assert_eq!(error.violations()[0].rule, "siret-checksum");
}

#[test]
fn missing_required_fields_are_all_listed() {
    let error = assert_refused(
        "passerelle-v2",
        "canonical/bad-missing-required.json",
        "canonical/bad-missing-required.errors.json",
    );
    assert!(error.violations().iter().all(|v| v.rule == "required"));
    assert_eq!(error.violations().len(), 5, "{error}");
}

#[test]
fn wrong_values_are_listed_without_their_values() {
    let error = assert_refused(
        "passerelle-v2",
        "canonical/bad-values.json",
        "canonical/bad-values.errors.json",
    );
    assert!(error.violations().len() >= 8, "{error}");
}

#[test]
fn a_duplicate_key_is_refused() {
    let error = assert_refused(
        "passerelle-v2",
        "canonical/bad-duplicate-key.json",
        "canonical/bad-duplicate-key.errors.json",
    );
    assert_eq!(error.violations()[0].pointer, "/person/last_name");
    assert_eq!(error.violations()[0].rule, "duplicate-key");
}

#[test]
fn a_document_nesting_too_deep_is_refused() {
    let error = assert_refused(
        "passerelle-v2",
        "canonical/bad-too-deep.json",
        "canonical/bad-too-deep.errors.json",
    );
    assert!(matches!(error, Error::TooDeep { limit: 32, .. }), "{error}");
}

#[test]
fn status_events_carry_a_reason_exactly_when_rejected_and_an_outcome_exactly_when_completed() {
    let error = assert_refused(
        "passerelle-v2",
        "canonical/bad-status-rejected-without-reason.json",
        "canonical/bad-status-rejected-without-reason.errors.json",
    );
    let found: Vec<(&str, &str)> = error
        .violations()
        .iter()
        .map(|v| (v.pointer.as_str(), v.rule.as_str()))
        .collect();
    assert!(
        found.contains(&("/rejection_reason", "required")),
        "{error}"
    );
    assert!(found.contains(&("/outcome", "forbidden")), "{error}");

    let error = assert_refused(
        "passerelle-v2",
        "canonical/bad-status-completed-without-outcome.json",
        "canonical/bad-status-completed-without-outcome.errors.json",
    );
    let found: Vec<(&str, &str)> = error
        .violations()
        .iter()
        .map(|v| (v.pointer.as_str(), v.rule.as_str()))
        .collect();
    assert!(found.contains(&("/outcome", "required")), "{error}");
    assert!(
        found.contains(&("/rejection_reason", "forbidden")),
        "{error}"
    );
}

// ------------------------------------------------------------------ protobuf binary

mod protobuf {
    use passerelle::formats::protobuf::{Protobuf, decode_referral, encode_referral};
    use passerelle::model::proto::{referral_v1, referral_v2};
    use prost::Message as _;
    use prost::encoding::{WireType, encode_key, encode_varint};

    use super::*;

    fn full_v2() -> v2::Referral {
        validate::typed(&document("canonical/referral-v2-full.json")).expect("valid")
    }

    /// Compares bytes with a golden binary file; `UPDATE_GOLDEN=1` writes it.
    fn assert_golden_bytes(path: &str, actual: &[u8]) {
        let file = golden_dir().join(path);
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::create_dir_all(file.parent().expect("parent")).expect("create dir");
            std::fs::write(&file, actual).expect("write golden file");
            return;
        }
        assert_eq!(
            golden_bytes(path),
            actual,
            "{} differs (UPDATE_GOLDEN=1 rewrites it)",
            file.display()
        );
    }

    fn field(number: u32, content: &[u8]) -> Vec<u8> {
        let mut bytes = Vec::new();
        encode_key(number, WireType::LengthDelimited, &mut bytes);
        encode_varint(content.len() as u64, &mut bytes);
        bytes.extend_from_slice(content);
        bytes
    }

    fn varint_field(number: u32, value: u64) -> Vec<u8> {
        let mut bytes = Vec::new();
        encode_key(number, WireType::Varint, &mut bytes);
        encode_varint(value, &mut bytes);
        bytes
    }

    #[test]
    fn v2_goes_to_bytes_and_back_unchanged() {
        let referral = full_v2();
        let encoded = formats::by_name("passerelle-proto-v2", &FormatOptions::default())
            .expect("known")
            .encode(
                &Message::Referral(Box::new(referral.clone())),
                &fixed_context(),
            )
            .expect("encodes");
        assert!(encoded.losses.is_empty());
        // The wire form is pinned: a renumbered field changes these bytes.
        assert_golden_bytes("protobuf/referral-v2-full.binpb", &encoded.value);
        let back = referral_of(
            decode_with("passerelle-proto-v2", encoded.value, &fixed_context()).expect("decodes"),
        );
        assert_eq!(back, referral);
    }

    fn referral_of(message: Message) -> v2::Referral {
        referral(message)
    }

    #[test]
    fn v1_bytes_carry_what_v1_json_carries_and_report_the_same_losses() {
        let referral = full_v2();
        let binary = encode_referral(&referral, Protobuf::V1);
        let json = encode_with("passerelle-v1", &referral);
        assert_eq!(binary.losses, json.losses);
        assert_golden_bytes("protobuf/referral-v2-full.as-v1.binpb", &binary.value);
        let from_binary = decode_referral(&binary.value, Protobuf::V1).expect("decodes");
        let from_json = referral_of(
            decode_with("passerelle-v1", json.value, &fixed_context()).expect("decodes"),
        );
        assert_eq!(from_binary, from_json);
    }

    fn encode_with(
        format: &str,
        referral: &v2::Referral,
    ) -> passerelle::model::Translated<Vec<u8>> {
        formats::by_name(format, &FormatOptions::default())
            .expect("known")
            .encode(
                &Message::Referral(Box::new(referral.clone())),
                &fixed_context(),
            )
            .expect("encodes")
    }

    #[test]
    fn the_v1_referral_reads_the_same_from_bytes_and_from_json() {
        let v1_referral: v1::Referral =
            validate::typed(&document("canonical/referral-v1-full.json")).expect("valid");
        let bytes = referral_v1::Referral::from(&v1_referral).encode_to_vec();
        let from_binary = referral_of(
            decode_with("passerelle-proto-v1", bytes, &fixed_context()).expect("decodes"),
        );
        assert_golden_json(
            "canonical/referral-v1-full.expected-v2.json",
            &serde_json::to_value(&from_binary).expect("serialisable"),
        );
    }

    /// The full referral with unknown fields at the top, in a nested message
    /// and in a repeated element; one of them holds the person's name.
    fn with_unknown_fields() -> (Vec<u8>, Value) {
        let referral = full_v2();
        let mut message = referral_v2::Referral::from(&referral);
        let sender = message.sender.take().expect("sender");
        let mut identifiers = std::mem::take(&mut message.identifiers);
        let second = identifiers.remove(1);
        message.identifiers = identifiers;
        let mut bytes = message.encode_to_vec();

        let mut organisation = sender.organisation.expect("organisation").encode_to_vec();
        organisation.extend(varint_field(9, 1));
        let mut sender_bytes = field(1, &organisation);
        sender_bytes.extend(field(
            2,
            &sender.referent.expect("referent").encode_to_vec(),
        ));
        bytes.extend(field(4, &sender_bytes));

        let mut identifier = second.encode_to_vec();
        identifier.extend(field(3, b"Yasmina Testaoui"));
        // Appended after the others, it is the last element: index 5.
        bytes.extend(field(7, &identifier));
        bytes.extend(field(42, "Testaoui Yasmina, née Fictivelli".as_bytes()));
        bytes.extend(varint_field(43, 7));

        let mut values = serde_json::to_value(&referral).expect("serialisable");
        values["extra"] = json!(["Yasmina Testaoui", "Testaoui Yasmina, née Fictivelli"]);
        (bytes, values)
    }

    #[test]
    fn unknown_fields_are_refused_at_any_depth() {
        let (bytes, values) = with_unknown_fields();
        let error =
            decode_with("passerelle-proto-v2", bytes, &fixed_context()).expect_err("refused");
        assert_golden_json("protobuf/unknown-fields.errors.json", &error_json(&error));
        let pointers: Vec<&str> = error
            .violations()
            .iter()
            .map(|v| v.pointer.as_str())
            .collect();
        assert_eq!(
            pointers,
            // In wire order: the sender and the last identifier were appended first.
            ["/sender/organisation/9", "/identifiers/5/3", "/42", "/43"]
        );
        assert!(error.violations().iter().all(|v| v.rule == "unknown-field"));
        assert_no_input_value_in(&error, &values);
    }

    #[test]
    fn bad_values_in_bytes_get_the_pointers_of_the_json_form() {
        let referral = full_v2();
        let mut message = referral_v2::Referral::from(&referral);
        let values = serde_json::to_value(&referral).expect("serialisable");
        let sender = message.sender.as_mut().expect("sender");
        sender.organisation.as_mut().expect("organisation").siret = "81234567800012".to_owned();
        let person = message.person.as_mut().expect("person");
        person.first_name.clear();
        person.birth_date = "17/05/1994".to_owned();
        person.contact.as_mut().expect("contact").email = "yasmina.testaoui@example".to_owned();
        message.identifiers[0].value = "0987654321".to_owned();
        message.obstacles[1].domain = 99;
        message.axis = 12;
        let error = decode_with(
            "passerelle-proto-v2",
            message.encode_to_vec(),
            &fixed_context(),
        )
        .expect_err("refused");
        assert_golden_json("protobuf/bad-values.errors.json", &error_json(&error));
        assert_no_input_value_in(&error, &values);

        // A rule only the JSON Schema states applies to binary input too.
        let mut message = referral_v2::Referral::from(&referral);
        message.reason = "Souhaite une immersion. ".repeat(30);
        let error = decode_with(
            "passerelle-proto-v2",
            message.encode_to_vec(),
            &fixed_context(),
        )
        .expect_err("refused");
        assert_eq!(error.violations()[0].pointer, "/reason");
        assert_eq!(error.violations()[0].rule, "maxLength");
    }

    #[test]
    fn a_v2_message_is_not_taken_for_v1() {
        let bytes = referral_v2::Referral::from(&full_v2()).encode_to_vec();
        let error =
            decode_with("passerelle-proto-v1", bytes, &fixed_context()).expect_err("wrong version");
        assert!(
            matches!(error, Error::Malformed { .. } | Error::Invalid(_)),
            "{error}"
        );
    }

    #[test]
    fn truncated_or_corrupted_input_is_an_error_never_a_panic() {
        let bytes = golden_bytes("protobuf/referral-v2-full.binpb");
        let full = full_v2();
        let mut refused = 0;
        for end in 0..bytes.len() {
            // Protobuf has no end marker: a message cut between two fields is
            // a valid, shorter message (framing is the transport's job). It
            // must then decode to less than the whole, never panic.
            match decode_referral(&bytes[..end], Protobuf::V2) {
                Err(Error::Malformed { .. } | Error::Invalid(_)) => refused += 1,
                Ok(shorter) => assert_ne!(shorter, full, "prefix of {end} bytes"),
                Err(other) => panic!("prefix of {end} bytes: {other:?}"),
            }
        }
        assert!(
            refused > bytes.len() * 9 / 10,
            "{refused} of {} prefixes refused",
            bytes.len()
        );
        for position in 0..bytes.len() {
            let mut corrupted = bytes.clone();
            corrupted[position] ^= 0xA5;
            match decode_referral(&corrupted, Protobuf::V2) {
                Ok(_) | Err(Error::Malformed { .. } | Error::Invalid(_)) => {}
                Err(other) => panic!("byte {position} flipped: {other:?}"),
            }
        }
        let error = decode_referral(&[0xFF; 12], Protobuf::V2).expect_err("garbage");
        assert!(matches!(error, Error::Malformed { .. }), "{error}");
    }

    #[test]
    fn the_size_limit_applies_before_decoding() {
        let mut context = fixed_context();
        context.limits.max_bytes = 64;
        let bytes = golden_bytes("protobuf/referral-v2-full.binpb");
        let error = decode_with("passerelle-proto-v2", bytes, &context).expect_err("too large");
        assert!(matches!(error, Error::TooLarge { limit: 64 }), "{error}");
    }

    #[test]
    fn status_events_have_no_binary_form_and_say_so() {
        let event: StatusEvent =
            validate::typed(&document("canonical/status-rejected.json")).expect("valid");
        let format =
            formats::by_name("passerelle-proto-v2", &FormatOptions::default()).expect("known");
        assert!(format.can_decode() && format.can_encode());
        assert!(format.limits().contains("unknown-field"));
        let error = format
            .encode(&Message::Status(Box::new(event)), &fixed_context())
            .expect_err("unsupported");
        assert!(
            matches!(&error, Error::UnsupportedFormat(text) if text.contains("status events")),
            "{error}"
        );
    }
}

/// The reading rules docs/json-mapping.md states, each refused with its rule.
#[test]
fn the_json_form_is_read_strictly_as_documented() {
    let input = document("canonical/referral-v2-full.json");
    let schema = schemas::schema(SchemaName::ReferralV2);
    /// What is refused, how the document is changed, where and by which rule.
    type Case = (&'static str, fn(&mut Value), &'static str, &'static str);
    let cases: [Case; 8] = [
        (
            "camelCase names are unknown fields",
            |doc| {
                let id = doc
                    .as_object_mut()
                    .expect("object")
                    .remove("referral_id")
                    .expect("present");
                doc["referralId"] = id;
            },
            "/referralId",
            "unknown-field",
        ),
        (
            "null is not a value",
            |doc| doc["person"]["birth_name"] = Value::Null,
            "/person/birth_name",
            "type",
        ),
        (
            "enums are names, not numbers",
            |doc| doc["sender"]["organisation"]["kind"] = json!(1),
            "/sender/organisation/kind",
            "type",
        ),
        (
            "the unspecified value is never written",
            |doc| doc["axis"] = json!("AXIS_UNSPECIFIED"),
            "/axis",
            "enum",
        ),
        (
            "empty strings are refused",
            |doc| doc["consent_reference"] = json!(""),
            "/consent_reference",
            "minLength",
        ),
        (
            "dates have two-digit months and days",
            |doc| doc["person"]["birth_date"] = json!("1994-5-17"),
            "/person/birth_date",
            "format",
        ),
        (
            "dates exist",
            |doc| doc["person"]["availability"] = json!("2026-02-30"),
            "/person/availability",
            "format",
        ),
        (
            "timestamps carry a time zone",
            |doc| doc["created_at"] = json!("2026-11-30T14:25:00"),
            "/created_at",
            "format",
        ),
    ];
    for (what, edit, pointer, rule) in cases {
        let mut changed = input.clone();
        edit(&mut changed);
        let error = schema.validate(&changed).expect_err(what);
        assert!(
            error
                .violations()
                .iter()
                .any(|v| v.pointer == pointer && v.rule == rule),
            "{what}: expected {rule} at {pointer}, got {error}"
        );
    }

    // Accepted: empty arrays mean absent, offsets are normalised to UTC.
    let mut changed = input;
    changed["obstacles"] = json!([]);
    changed["created_at"] = json!("2026-11-30T15:25:00+01:00");
    let decoded: v2::Referral =
        validate::decode_value(&changed, SchemaName::ReferralV2).expect("valid");
    let output = serde_json::to_value(&decoded).expect("serialisable");
    assert!(output.get("obstacles").is_none());
    assert_eq!(output["created_at"], json!("2026-11-30T14:25:00Z"));
}
