//! Canonical Passerelle JSON: referrals in schema version 1 or 2 and status
//! events, in the proto3 JSON mapping with snake_case names. The document's
//! `schema_version` must agree with the format named by the caller.

use std::io::Read;

use crate::error::Error;
use crate::model::convert::{v1_to_v2, v2_to_v1};
use crate::model::{Message, Translated, v1, v2};
use crate::validate::{self, SchemaName};

use super::{Context, Format, Records, read_limited, single};

/// Canonical JSON of one referral schema version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CanonicalJson {
    /// `passerelle.referral.v1` (and status events).
    V1,
    /// `passerelle.referral.v2` (and status events).
    V2,
}

impl CanonicalJson {
    fn referral_schema(self) -> SchemaName {
        match self {
            Self::V1 => SchemaName::ReferralV1,
            Self::V2 => SchemaName::ReferralV2,
        }
    }
}

/// Decodes one canonical JSON document of the given referral version (or a status event).
pub fn decode_json(
    bytes: &[u8],
    version: CanonicalJson,
    context: &Context,
) -> Result<Message, Error> {
    let document = validate::parse_json(bytes, &context.limits)?;
    let schema = SchemaName::detect(&document)?;
    let limits = &context.limits;
    match schema {
        SchemaName::StatusV1 => Ok(Message::Status(Box::new(validate::decode_parsed(
            document, bytes, schema, limits,
        )?))),
        _ if schema == version.referral_schema() => {
            Ok(Message::Referral(Box::new(match version {
                CanonicalJson::V1 => v1_to_v2(&validate::decode_parsed::<v1::Referral>(
                    document, bytes, schema, limits,
                )?),
                CanonicalJson::V2 => {
                    validate::decode_parsed::<v2::Referral>(document, bytes, schema, limits)?
                }
            })))
        }
        _ => Err(Error::invalid(
            "/schema_version",
            "schema-version",
            format!(
                "{} or {}, found {}: name the matching format",
                version.referral_schema().schema_version(),
                SchemaName::StatusV1.schema_version(),
                schema.schema_version()
            ),
        )),
    }
}

/// Encodes a message as canonical JSON of the given referral version.
pub fn encode_json(
    message: &Message,
    version: CanonicalJson,
) -> Result<Translated<Vec<u8>>, Error> {
    let internal = |error: serde_json::Error| Error::Internal(format!("encoding JSON: {error}"));
    match (message, version) {
        (Message::Referral(referral), CanonicalJson::V2) => Ok(Translated::lossless(
            serde_json::to_vec(referral).map_err(internal)?,
        )),
        (Message::Referral(referral), CanonicalJson::V1) => {
            let translated = v2_to_v1(referral);
            Ok(Translated {
                value: serde_json::to_vec(&translated.value).map_err(internal)?,
                losses: translated.losses,
            })
        }
        (Message::Status(event), _) => Ok(Translated::lossless(
            serde_json::to_vec(event).map_err(internal)?,
        )),
    }
}

impl Format for CanonicalJson {
    fn name(&self) -> &'static str {
        match self {
            Self::V1 => "passerelle-v1",
            Self::V2 => "passerelle-v2",
        }
    }

    fn description(&self) -> &'static str {
        match self {
            Self::V1 => {
                "Canonical Passerelle JSON, referral schema v1 (flat identifiers, free-text obstacles), and status events"
            }
            Self::V2 => {
                "Canonical Passerelle JSON, referral schema v2 (typed identifiers, obstacles in France Travail's eight domains), and status events"
            }
        }
    }

    fn limits(&self) -> &'static str {
        match self {
            Self::V1 => {
                "One document per input, at most the configured size and depth (1 MiB, 32 levels by default). Writing v1 from v2 loses obstacle impacts, education levels, identifier order, MSA as a kind, and a second identifier of one kind: each is listed in the loss report."
            }
            Self::V2 => {
                "One document per input, at most the configured size and depth (1 MiB, 32 levels by default). Reading v1 loses nothing."
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
        Ok(single(
            decode_json(&bytes, *self, context).map(Translated::lossless),
        ))
    }

    fn encode(&self, message: &Message, _context: &Context) -> Result<Translated<Vec<u8>>, Error> {
        encode_json(message, *self)
    }
}
