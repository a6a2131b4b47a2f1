//! Protobuf binary referrals (`passerelle.referral.v1` / `.v2` messages).
//!
//! Decoding goes: size limit → prost decode (a malformed encoding is
//! [`Error::Malformed`]) → unknown fields → conversion to the canonical types
//! ([`crate::model::proto`]) → the same JSON Schema as JSON input, applied to
//! the converted document. Version 1 is then converted to version 2.
//!
//! prost skips unknown fields silently, and re-encoding to compare bytes is
//! not sound (field order, packed or unpacked repeated fields, fields sent
//! twice and zero values sent explicitly all change the bytes of a message
//! without changing its meaning). So [`unknown_fields`] walks the wire format
//! against the compiled descriptors instead: every field number a message does
//! not define is refused with rule `unknown-field`, at any depth.

use std::collections::HashMap;
use std::io::Read;
use std::sync::OnceLock;

use prost::Message as _;
use prost::encoding::{DecodeContext, WireType, decode_key, decode_varint, skip_field};

use crate::error::{Error, Violation};
use crate::model::convert::{v1_to_v2, v2_to_v1};
use crate::model::proto::{FILE_DESCRIPTOR_SET, referral_v1, referral_v2};
use crate::model::{Message, Translated, v1, v2};
use crate::validate::{SchemaName, schemas};

use super::{Context, Format, Records, read_limited, single};

/// Protobuf binary of one referral schema version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protobuf {
    /// `passerelle.referral.v1.Referral`.
    V1,
    /// `passerelle.referral.v2.Referral`.
    V2,
}

impl Protobuf {
    /// The fully qualified proto message of this version.
    pub fn message_name(self) -> &'static str {
        self.schema().proto_message()
    }

    fn schema(self) -> SchemaName {
        match self {
            Self::V1 => SchemaName::ReferralV1,
            Self::V2 => SchemaName::ReferralV2,
        }
    }
}

/// Decodes one binary referral of the given version into the canonical form.
/// The caller enforces the size limit (the [`Format`] implementation does).
pub fn decode_referral(bytes: &[u8], version: Protobuf) -> Result<v2::Referral, Error> {
    let malformed = |error: prost::DecodeError| Error::Malformed {
        detail: format!(
            "not a protobuf encoding of {}: {error}",
            version.message_name()
        ),
        line: None,
        column: None,
    };
    match version {
        Protobuf::V1 => {
            let message = referral_v1::Referral::decode(bytes).map_err(malformed)?;
            let unknown = unknown_fields(bytes, version.message_name())?;
            let referral = converted::<_, v1::Referral>(message, unknown)?;
            validate(&referral, version.schema())?;
            Ok(v1_to_v2(&referral))
        }
        Protobuf::V2 => {
            let message = referral_v2::Referral::decode(bytes).map_err(malformed)?;
            let unknown = unknown_fields(bytes, version.message_name())?;
            let referral = converted::<_, v2::Referral>(message, unknown)?;
            validate(&referral, version.schema())?;
            Ok(referral)
        }
    }
}

/// Converts a decoded message, reporting unknown fields and conversion
/// failures together.
fn converted<P, T>(message: P, mut unknown: Vec<Violation>) -> Result<T, Error>
where
    T: TryFrom<P, Error = Error>,
{
    match T::try_from(message) {
        Ok(value) if unknown.is_empty() => Ok(value),
        Ok(_) => Err(Error::Invalid(unknown)),
        Err(Error::Invalid(violations)) => {
            unknown.extend(violations);
            Err(Error::Invalid(unknown))
        }
        Err(other) => Err(other),
    }
}

/// Applies the JSON Schema of the version to the converted document, so that
/// binary input obeys the rules only the schema states (lengths, uniqueness).
fn validate<T: serde::Serialize>(value: &T, schema: SchemaName) -> Result<(), Error> {
    let document = serde_json::to_value(value)
        .map_err(|error| Error::Internal(format!("re-encoding a referral as JSON: {error}")))?;
    schemas::schema(schema).validate(&document)
}

/// Encodes a canonical referral in the given version, reporting what version 1 cannot carry.
pub fn encode_referral(referral: &v2::Referral, version: Protobuf) -> Translated<Vec<u8>> {
    match version {
        Protobuf::V2 => Translated::lossless(referral_v2::Referral::from(referral).encode_to_vec()),
        Protobuf::V1 => {
            let translated = v2_to_v1(referral);
            Translated {
                value: referral_v1::Referral::from(&translated.value).encode_to_vec(),
                losses: translated.losses,
            }
        }
    }
}

/// What the wire walk needs to know of one field.
struct FieldShape {
    name: String,
    /// The fully qualified message type (with its leading dot), for message fields.
    message: Option<String>,
    repeated: bool,
}

/// Field numbers of every message in [`FILE_DESCRIPTOR_SET`], by fully
/// qualified name with a leading dot (`.passerelle.referral.v2.Referral`).
type Shapes = HashMap<String, HashMap<u32, FieldShape>>;

fn shapes() -> Result<&'static Shapes, Error> {
    static SHAPES: OnceLock<Result<Shapes, String>> = OnceLock::new();
    SHAPES
        .get_or_init(|| {
            let set = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET)
                .map_err(|error| format!("the embedded descriptor set does not decode: {error}"))?;
            let mut shapes = Shapes::new();
            for file in &set.file {
                let prefix = match file.package() {
                    "" => String::new(),
                    package => format!(".{package}"),
                };
                for message in &file.message_type {
                    add_shapes(&mut shapes, &prefix, message);
                }
            }
            Ok(shapes)
        })
        .as_ref()
        .map_err(|detail| Error::Internal(detail.clone()))
}

fn add_shapes(shapes: &mut Shapes, prefix: &str, message: &prost_types::DescriptorProto) {
    use prost_types::field_descriptor_proto::{Label, Type};
    let name = format!("{prefix}.{}", message.name());
    let fields = message
        .field
        .iter()
        .filter_map(|field| {
            let number = u32::try_from(field.number()).ok()?;
            let shape = FieldShape {
                name: field.name().to_owned(),
                message: matches!(field.r#type(), Type::Message | Type::Group)
                    .then(|| field.type_name().to_owned()),
                repeated: field.label() == Label::Repeated,
            };
            Some((number, shape))
        })
        .collect();
    for nested in &message.nested_type {
        add_shapes(shapes, &name, nested);
    }
    shapes.insert(name, fields);
}

/// Lists every field of an encoded message (at any depth) whose number its
/// message type does not define, at the JSON pointer of the enclosing message
/// followed by the field number (`/sender/organisation/9`). The bytes must
/// already have decoded as that message.
pub fn unknown_fields(bytes: &[u8], message: &str) -> Result<Vec<Violation>, Error> {
    let shapes = shapes()?;
    let mut found = Vec::new();
    walk(shapes, &format!(".{message}"), bytes, "", &mut found).map_err(|error| {
        Error::Malformed {
            detail: format!("not a protobuf encoding of {message}: {error}"),
            line: None,
            column: None,
        }
    })?;
    Ok(found)
}

fn walk(
    shapes: &Shapes,
    message: &str,
    mut buffer: &[u8],
    pointer: &str,
    found: &mut Vec<Violation>,
) -> Result<(), String> {
    let Some(fields) = shapes.get(message) else {
        // Only types outside the compiled files (none today) have no shape:
        // their content cannot be checked, so it is not walked.
        return Ok(());
    };
    let mut counts: HashMap<u32, usize> = HashMap::new();
    while !buffer.is_empty() {
        let (number, wire_type) = decode_key(&mut buffer).map_err(|error| error.to_string())?;
        match fields.get(&number) {
            Some(FieldShape {
                name,
                message: Some(inner),
                repeated,
            }) if wire_type == WireType::LengthDelimited => {
                let length = decode_varint(&mut buffer).map_err(|error| error.to_string())?;
                let length = usize::try_from(length)
                    .ok()
                    .filter(|length| *length <= buffer.len())
                    .ok_or_else(|| "a length beyond the end of its message".to_owned())?;
                let (content, rest) = buffer.split_at(length);
                buffer = rest;
                let field_pointer = if *repeated {
                    let index = counts.entry(number).or_default();
                    let field_pointer = format!("{pointer}/{name}/{index}");
                    *index += 1;
                    field_pointer
                } else {
                    format!("{pointer}/{name}")
                };
                walk(shapes, inner, content, &field_pointer, found)?;
            }
            Some(_) => skip_field(wire_type, number, &mut buffer, DecodeContext::default())
                .map_err(|error| error.to_string())?,
            None => {
                let unknown_pointer = format!("{pointer}/{number}");
                if !found.iter().any(|v| v.pointer == unknown_pointer) {
                    found.push(Violation::new(
                        unknown_pointer,
                        "unknown-field",
                        format!(
                            "no field number {number} in {} of this schema version, found one ({})",
                            message.trim_start_matches('.'),
                            wire_type_name(wire_type)
                        ),
                    ));
                }
                skip_field(wire_type, number, &mut buffer, DecodeContext::default())
                    .map_err(|error| error.to_string())?;
            }
        }
    }
    Ok(())
}

fn wire_type_name(wire_type: WireType) -> &'static str {
    match wire_type {
        WireType::Varint => "varint",
        WireType::SixtyFourBit => "64-bit",
        WireType::LengthDelimited => "length-delimited",
        WireType::StartGroup | WireType::EndGroup => "group",
        WireType::ThirtyTwoBit => "32-bit",
    }
}

impl Format for Protobuf {
    fn name(&self) -> &'static str {
        match self {
            Self::V1 => "passerelle-proto-v1",
            Self::V2 => "passerelle-proto-v2",
        }
    }

    fn description(&self) -> &'static str {
        match self {
            Self::V1 => {
                "Protobuf binary referral, passerelle.referral.v1.Referral (flat identifiers, free-text obstacles)"
            }
            Self::V2 => {
                "Protobuf binary referral, passerelle.referral.v2.Referral (typed identifiers, obstacles in France Travail's eight domains)"
            }
        }
    }

    fn limits(&self) -> &'static str {
        match self {
            Self::V1 => {
                "One referral message per input, at most the configured size (1 MiB by default); status events have no binary form here. Unknown field numbers are refused at any depth (rule unknown-field, pointer of the enclosing message followed by the number): the wire format is walked against the compiled descriptors, since prost drops them silently. Proto3 cannot tell an empty string or a zero enum from an absent field: both mean \"not set\". SIRETs, phones and INSEE codes are normalised as their parsers do (spaces removed, letters upper-cased) before the referral/v1 JSON Schema applies. Writing v1 from v2 loses obstacle impacts, education levels, identifier order, MSA as a kind, and a second identifier of one kind: each is listed in the loss report."
            }
            Self::V2 => {
                "One referral message per input, at most the configured size (1 MiB by default); status events have no binary form here. Unknown field numbers are refused at any depth (rule unknown-field, pointer of the enclosing message followed by the number): the wire format is walked against the compiled descriptors, since prost drops them silently. Proto3 cannot tell an empty string or a zero enum from an absent field: both mean \"not set\". SIRETs, phones and INSEE codes are normalised as their parsers do (spaces removed, letters upper-cased) before the referral/v2 JSON Schema applies. Reading v1 loses nothing."
            }
        }
    }

    fn can_decode(&self) -> bool {
        true
    }

    fn can_encode(&self) -> bool {
        true
    }

    fn decode<'a>(
        &'a self,
        input: Box<dyn Read + 'a>,
        context: &'a Context,
    ) -> Result<Records<'a>, Error> {
        let bytes = read_limited(input, &context.limits)?;
        Ok(single(decode_referral(&bytes, *self).map(|referral| {
            Translated::lossless(Message::Referral(Box::new(referral)))
        })))
    }

    fn encode(&self, message: &Message, _context: &Context) -> Result<Translated<Vec<u8>>, Error> {
        match message {
            Message::Referral(referral) => Ok(encode_referral(referral, *self)),
            Message::Status(_) => Err(Error::UnsupportedFormat(format!(
                "{} carries referrals only: status events have no protobuf binary form here; use passerelle-v1 or passerelle-v2 (JSON)",
                self.name()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use prost::encoding::encode_key;

    use super::*;

    #[test]
    fn the_descriptors_know_every_referral_field() {
        let shapes = shapes().expect("descriptor set decodes");
        let referral = &shapes[".passerelle.referral.v2.Referral"];
        assert_eq!(referral[&4].name, "sender");
        assert_eq!(
            referral[&4].message.as_deref(),
            Some(".passerelle.referral.v2.Sender")
        );
        assert!(referral[&7].repeated);
        assert!(shapes.contains_key(".google.protobuf.Timestamp"));
    }

    #[test]
    fn unknown_fields_are_found_at_any_depth_and_once_each() {
        // Organisation { siret: "x", 9: varint 1 } inside Sender.organisation,
        // twice field 99 at the top level.
        let mut organisation = Vec::new();
        encode_key(1, WireType::LengthDelimited, &mut organisation);
        organisation.extend([1, b'x']);
        encode_key(9, WireType::Varint, &mut organisation);
        organisation.push(1);
        let mut sender = Vec::new();
        encode_key(1, WireType::LengthDelimited, &mut sender);
        sender.push(u8::try_from(organisation.len()).expect("short"));
        sender.extend(&organisation);
        let mut referral = Vec::new();
        encode_key(4, WireType::LengthDelimited, &mut referral);
        referral.push(u8::try_from(sender.len()).expect("short"));
        referral.extend(&sender);
        for _ in 0..2 {
            encode_key(99, WireType::ThirtyTwoBit, &mut referral);
            referral.extend([0, 0, 0, 0]);
        }
        let found = unknown_fields(&referral, "passerelle.referral.v2.Referral").expect("walks");
        let pointers: Vec<&str> = found.iter().map(|v| v.pointer.as_str()).collect();
        assert_eq!(pointers, ["/sender/organisation/9", "/99"]);
        assert!(found.iter().all(|v| v.rule == "unknown-field"));
    }
}
