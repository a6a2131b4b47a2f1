//! Format adapters: each turns one field format into the canonical model
//! ([`Message`]) and/or back. One trait, one file per format.
//!
//! | name | in | out |
//! |---|---|---|
//! | `passerelle-v1`, `passerelle-v2` | canonical JSON (referral or status event) | same |
//! | `passerelle-proto-v1`, `passerelle-proto-v2` | protobuf binary referral | same |
//! | `csv` | spreadsheet export, with a mapping file | — |
//! | `dora` | DORA-style orientation JSON | — |
//! | `france-travail` | `decision` of an orientation → status event | referral → `orientationusager/v1` orientation |

use std::io::Read;
use std::path::PathBuf;

use chrono::{DateTime, Utc};

use crate::error::Error;
use crate::model::common::Organisation;
use crate::model::ids::ReferralId;
use crate::model::{Message, Translated};
use crate::validate::Limits;

pub mod canonical;
pub mod csv_mapping;
pub mod dora;
pub mod france_travail;
mod json_fields;
pub mod protobuf;

/// What an adapter may need besides the input: facts a format does not carry.
#[derive(Debug, Clone)]
pub struct Context {
    /// The time to stamp on messages whose format has none.
    pub now: DateTime<Utc>,
    /// The sending organisation, for formats that do not name it fully.
    pub sender: Option<Organisation>,
    /// The recipient organisation, for formats that do not name it (DORA, CSV).
    pub recipient: Option<Organisation>,
    /// The referral a status event is about, for formats that do not carry our id (France Travail).
    pub referral_id: Option<ReferralId>,
    /// Size and nesting limits.
    pub limits: Limits,
}

impl Context {
    /// A context stamped with the current time and default limits.
    pub fn now() -> Self {
        Self {
            now: Utc::now(),
            sender: None,
            recipient: None,
            referral_id: None,
            limits: Limits::default(),
        }
    }
}

/// One decoded record: a single document yields one, a CSV file one per row.
#[derive(Debug)]
pub struct Record {
    /// The 1-based line the record starts on, for line-oriented inputs.
    pub line: Option<u64>,
    /// The message and what decoding lost, or why the record was refused.
    pub result: Result<Translated<Message>, Error>,
}

/// The records of one input, decoded lazily so large files stream.
pub type Records<'a> = Box<dyn Iterator<Item = Record> + 'a>;

/// A field format Passerelle reads and/or writes.
pub trait Format {
    /// The name used on the command line and in configuration.
    fn name(&self) -> &'static str;
    /// One line saying what the format is.
    fn description(&self) -> &'static str;
    /// The documented limits of the adapter (what it cannot carry, sizes).
    fn limits(&self) -> &'static str;
    /// Whether [`Format::decode`] is supported.
    fn can_decode(&self) -> bool;
    /// Whether [`Format::encode`] is supported.
    fn can_encode(&self) -> bool;
    /// Decodes an input into records.
    fn decode<'a>(
        &'a self,
        input: Box<dyn Read + 'a>,
        context: &'a Context,
    ) -> Result<Records<'a>, Error>;
    /// Encodes one message, reporting what the format cannot carry.
    fn encode(&self, message: &Message, context: &Context) -> Result<Translated<Vec<u8>>, Error>;
}

/// Options that some formats need to be built.
#[derive(Debug, Clone, Default)]
pub struct FormatOptions {
    /// The CSV mapping file.
    pub mapping: Option<PathBuf>,
}

/// Every format name, in the order `passerelle formats` lists them.
pub const NAMES: &[&str] = &[
    "passerelle-v1",
    "passerelle-v2",
    "passerelle-proto-v1",
    "passerelle-proto-v2",
    "csv",
    "dora",
    "france-travail",
];

/// What the `csv` format is (listed even when no mapping file is given).
pub const CSV_DESCRIPTION: &str = "Spreadsheet export (semicolon CSV, French headers), read through a per-source mapping file (--mapping)";

/// The documented limits of the `csv` format.
pub const CSV_LIMITS: &str = "Read only. Rows stream in bounded memory; each row is its own record and a bad row is refused alone, with its line, column and rule. Columns neither mapped nor ignored by the mapping are an error; a non-empty cell of an ignored column is reported as a loss. Rows of at most 64 KiB; names at most 140 characters, reasons 600, other cells 1,000. Rows whose cells are all empty are skipped. Referral ids are derived from the mapping name and the row id (re-importing a file is idempotent). Encodings: UTF-8 with or without BOM, Windows-1252.";

/// Builds the format of that name.
pub fn by_name(
    name: &str,
    options: &FormatOptions,
) -> Result<Box<dyn Format + Send + Sync>, Error> {
    Ok(match name {
        "passerelle-v1" => Box::new(canonical::CanonicalJson::V1),
        "passerelle-v2" => Box::new(canonical::CanonicalJson::V2),
        "passerelle-proto-v1" => Box::new(protobuf::Protobuf::V1),
        "passerelle-proto-v2" => Box::new(protobuf::Protobuf::V2),
        "csv" => {
            let path = options.mapping.as_ref().ok_or_else(|| {
                Error::UnsupportedFormat("csv needs a mapping file (--mapping FILE)".to_owned())
            })?;
            Box::new(csv_mapping::CsvFormat::new(csv_mapping::Mapping::load(
                path,
            )?))
        }
        "dora" => Box::new(dora::Dora),
        "france-travail" => Box::new(france_travail::FranceTravail),
        other => {
            return Err(Error::UnsupportedFormat(format!(
                "no format named \"{other}\"; known formats: {}",
                NAMES.join(", ")
            )));
        }
    })
}

/// Reads a whole single-document input, refusing more than the size limit.
pub fn read_limited(mut input: Box<dyn Read + '_>, limits: &Limits) -> Result<Vec<u8>, Error> {
    let mut bytes = Vec::new();
    (&mut input)
        .take(limits.max_bytes + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| Error::Io {
            context: "reading the input".to_owned(),
            source,
        })?;
    if bytes.len() as u64 > limits.max_bytes {
        return Err(Error::TooLarge {
            limit: limits.max_bytes,
        });
    }
    Ok(bytes)
}

/// The records of a single-document input.
pub fn single<'a>(result: Result<Translated<Message>, Error>) -> Records<'a> {
    Box::new(std::iter::once(Record { line: None, result }))
}
