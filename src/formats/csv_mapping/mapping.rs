//! The mapping file of one CSV source, loaded and checked once, before any row
//! is read: every mistake in it is an [`Error::Config`] naming the file and the key.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use chrono::NaiveDate;
use encoding_rs::Encoding;
use serde::Deserialize;

use crate::error::Error;
use crate::model::common::{Axis, ContactPreference, Organisation, OrganisationKind, Pathway};
use crate::model::convert::fold;
use crate::model::ids::{Siret, shape_of};
use crate::model::v2::{EducationLevel, IdentifierKind, ObstacleDomain};

/// The largest mapping file read, in bytes: a mapping is a page of configuration.
const MAX_MAPPING_BYTES: u64 = 1024 * 1024;

/// The column mapping of one CSV source: which column feeds which canonical
/// field, how cells are read, and which columns are deliberately ignored.
///
/// A mapping is a TOML file; `config/mappings/*.toml` are commented examples.
///
/// ```toml
/// name = "carnet-de-bord"    # source name; referral ids are derived from it and the row id
/// encoding = "utf-8"         # "utf-8" (with or without BOM, the default), "windows-1252",
///                            # or another WHATWG label ("iso-8859-15", ...)
/// delimiter = ";"            # one ASCII character, ";" by default ("\t" for tabs)
/// date_format = "dd/mm/yyyy" # default of every date field: dd, mm, yyyy and separators
/// ignore = ["Adresse"]       # columns read and deliberately not carried
///
/// [sender]                   # optional: the sender organisation of every row
/// siret = "81234567800013"
/// kind = "association"       # association (default), france_travail, mission_locale,
///                            # cap_emploi, departement, other
/// name = "Konexio Saint-Denis"
///
/// [structures."Konexio Paris 19"]  # values of the `sender.organisation` column
/// siret = "81234567800021"
/// name = "Konexio Paris 19"        # kind defaults to [sender].kind, else association
///
/// [fields]
/// referral_id = { column = "Identifiant dans le SI*" }
/// "person.first_name" = { column = "Prénom*" }
/// "person.birth_date" = { column = "Date de naissance*", required = true }
/// "situation.rsa_beneficiary" = { column = "Droits RSA", values = { Oui = true, Non = false } }
/// obstacles = { column = "Freins", separator = ";", values = { numerique = "OBSTACLE_DOMAIN_DIGITAL" } }
/// ```
///
/// # Fields
/// Each entry of `[fields]` is a canonical field of the version 2 referral with:
/// - `column`: the header of the source column (exact, spaces around it ignored);
///   one column may feed several fields;
/// - `required`: the header must be present and no cell may be empty. Without it,
///   the column may be missing from a file and an empty cell means "absent".
///   `referral_id`, `person.first_name` and `person.last_name` are always required;
/// - `date_format` (date fields): overrides the file-wide `date_format`;
/// - `separator` (list fields): splits a cell into items; empty items are skipped;
/// - `values` (yes/no and coded fields): maps the source's words to values,
///   compared folded (case, accents and punctuation do not matter).
///
/// The canonical fields:
/// - `referral_id`: the row id. Referral ids are never read from the file: each is
///   the UUID v5 of the source `name` and this cell, so importing a file twice
///   gives the same ids.
/// - `person.first_name`, `person.last_name`, `person.birth_name` (nom de
///   naissance, "Nom JF"): at most 140 characters, as the schema says.
/// - `person.birth_date`, `person.availability`: dates.
/// - `person.contact.phone`, `person.contact.email`, `person.contact.other_method`,
///   `person.contact.preferences` (list; values → `CONTACT_PREFERENCE_*`).
/// - `person.address.postal_code`, `person.address.insee_code`, `person.address.city`,
///   `person.address.postal_code_and_city` (one cell "93200 Saint-Denis", as in
///   "CP Ville" columns).
/// - `identifiers.france_travail` (11 digits), `identifiers.caf`, `identifiers.msa`,
///   `identifiers.imilo`, `identifiers.departement`, `identifiers.nir` (checked key).
/// - `situation.labels` (list of text), `situation.rsa_beneficiary` and
///   `situation.recognised_disability` (yes/no; without `values`, "Oui"/"Non"),
///   `situation.other`, `situation.education_level` (values → `EDUCATION_LEVEL_*`).
/// - `obstacles` (list): with `values`, each item must be a listed code and maps
///   to an `OBSTACLE_DOMAIN_*`, the code kept as `source_label`; without `values`,
///   items are classified from their wording (French labels, France Travail codes)
///   and unknown wording is kept as `OBSTACLE_DOMAIN_UNCLASSIFIED`.
/// - `pathway` (→ `PATHWAY_*`), `axis` (→ `AXIS_*`), `reason` (motif, at most 600
///   characters), `consent_reference`.
/// - `sender.organisation`: a structure name looked up in `[structures]`;
///   `sender.organisation.siret`: a SIRET cell (kind from `[sender].kind`). Map one
///   of the two at most. A row whose cell is empty falls back on `[sender]`, then on
///   the sender the caller gives.
/// - `sender.referent.first_name`, `sender.referent.last_name`,
///   `sender.referent.email` ("Accompagnateurs"), `sender.referent.phone`.
/// - `recipient.service_id`: the data·inclusion service. The recipient organisation
///   itself is never in the file: the caller gives it.
///
/// Coded fields without `values` accept the wire name (`PATHWAY_SOCIAL`) or its
/// end (`social`, `NV4`).
///
/// # Columns
/// Every column of the file must be mapped or listed in `ignore`: a column
/// neither mapped nor ignored is an error naming all such columns, so that no
/// data is ever dropped without someone having decided it. Cells of ignored
/// columns are listed, by column, in each row's loss report when not empty.
#[derive(Debug, Clone)]
pub struct Mapping {
    pub(super) file: String,
    /// The file's name without its folders, to name it in row errors and loss
    /// reports, which must read the same wherever the mapping is installed.
    pub(super) label: String,
    pub(super) name: String,
    pub(super) encoding: &'static Encoding,
    pub(super) delimiter: u8,
    pub(super) ignore: HashSet<String>,
    pub(super) sender: Option<Organisation>,
    /// The kind of organisation a SIRET cell names (`[sender].kind`).
    pub(super) sender_kind: OrganisationKind,
    pub(super) structures: HashMap<String, Organisation>,
    /// In catalogue order, so identifiers and errors come out in a stable order.
    pub(super) fields: Vec<FieldSpec>,
}

/// One canonical field fed by one column.
#[derive(Debug, Clone)]
pub(super) struct FieldSpec {
    pub(super) canonical: &'static Canonical,
    pub(super) column: String,
    pub(super) required: bool,
    pub(super) date_format: Option<DateFormat>,
    pub(super) separator: Option<String>,
    /// Folded source word → yes/no.
    pub(super) booleans: HashMap<String, bool>,
    /// Folded source word → index into the target enumeration's values.
    pub(super) choices: HashMap<String, usize>,
}

/// A canonical field the mapping can name.
#[derive(Debug)]
pub(super) struct Canonical {
    /// The name in the mapping file.
    pub(super) key: &'static str,
    /// Its JSON pointer in the version 2 referral.
    pub(super) pointer: &'static str,
    pub(super) target: Target,
}

/// What a canonical field is, which decides how its cells are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Target {
    RowId,
    FirstName,
    LastName,
    BirthName,
    BirthDate,
    Availability,
    Phone,
    Email,
    OtherContactMethod,
    ContactPreferences,
    PostalCode,
    InseeCode,
    City,
    PostalCodeAndCity,
    Identifier(IdentifierKind),
    SituationLabels,
    RsaBeneficiary,
    RecognisedDisability,
    SituationOther,
    EducationLevel,
    Obstacles,
    Pathway,
    Axis,
    Reason,
    ConsentReference,
    SenderStructure,
    SenderSiret,
    ReferentFirstName,
    ReferentLastName,
    ReferentEmail,
    ReferentPhone,
    ServiceId,
}

/// How a cell is read, by kind of target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Shape {
    /// Free text.
    Text,
    /// A date.
    Date,
    /// Yes or no.
    Boolean,
    /// One value of an enumeration.
    Choice(Choices),
    /// Several values of an enumeration.
    ChoiceList(Choices),
    /// Several free texts.
    TextList,
    /// A value checked by its own parser (phone, SIRET, ...).
    Checked,
    /// A structure name looked up in `[structures]`.
    Structure,
}

/// The enumerations a coded field maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Choices {
    ContactPreference,
    EducationLevel,
    ObstacleDomain,
    Pathway,
    Axis,
}

impl Choices {
    fn wire_names(self) -> Vec<&'static str> {
        fn names<E: Choice>() -> Vec<&'static str> {
            E::VALUES.iter().map(|value| value.wire()).collect()
        }
        match self {
            Self::ContactPreference => names::<ContactPreference>(),
            Self::EducationLevel => names::<EducationLevel>(),
            Self::ObstacleDomain => names::<ObstacleDomain>(),
            Self::Pathway => names::<Pathway>(),
            Self::Axis => names::<Axis>(),
        }
    }
}

/// An enumeration a cell can name, by wire name or by its end.
pub(super) trait Choice: Copy + 'static {
    /// Every value.
    const VALUES: &'static [Self];
    /// The prefix shared by the wire names, which cells may leave out.
    const PREFIX: &'static str;
    /// The wire name.
    fn wire(self) -> &'static str;

    /// The value a text names: the wire name or its end after the prefix, any case.
    fn named(text: &str) -> Option<Self> {
        let upper = text.trim().to_ascii_uppercase().replace([' ', '-'], "_");
        Self::VALUES.iter().copied().find(|value| {
            let wire = value.wire();
            wire == upper || wire.strip_prefix(Self::PREFIX) == Some(upper.as_str())
        })
    }
}

macro_rules! choice {
    ($($type:ty => $prefix:literal),+ $(,)?) => {$(
        impl Choice for $type {
            const VALUES: &'static [Self] = <$type>::ALL;
            const PREFIX: &'static str = $prefix;
            fn wire(self) -> &'static str {
                self.wire_name()
            }
        }
    )+};
}

choice! {
    ContactPreference => "CONTACT_PREFERENCE_",
    EducationLevel => "EDUCATION_LEVEL_",
    ObstacleDomain => "OBSTACLE_DOMAIN_",
    Pathway => "PATHWAY_",
    Axis => "AXIS_",
    OrganisationKind => "ORGANISATION_KIND_",
}

/// The schema's `maxLength` for names (person and référent).
pub(super) const NAME_MAX_CHARS: usize = 140;
/// The schema's `maxLength` for the reason (motif).
pub(super) const REASON_MAX_CHARS: usize = 600;
/// The adapter's own bound on any other cell it reads, so that one cell cannot
/// carry a document's worth of text; the schema sets none for these fields.
pub(super) const CELL_MAX_CHARS: usize = 1000;

impl Target {
    pub(super) fn shape(self) -> Shape {
        match self {
            Self::BirthDate | Self::Availability => Shape::Date,
            Self::RsaBeneficiary | Self::RecognisedDisability => Shape::Boolean,
            Self::ContactPreferences => Shape::ChoiceList(Choices::ContactPreference),
            Self::Obstacles => Shape::ChoiceList(Choices::ObstacleDomain),
            Self::EducationLevel => Shape::Choice(Choices::EducationLevel),
            Self::Pathway => Shape::Choice(Choices::Pathway),
            Self::Axis => Shape::Choice(Choices::Axis),
            Self::SituationLabels => Shape::TextList,
            Self::Phone
            | Self::Email
            | Self::PostalCode
            | Self::InseeCode
            | Self::PostalCodeAndCity
            | Self::Identifier(_)
            | Self::SenderSiret
            | Self::ReferentEmail
            | Self::ReferentPhone => Shape::Checked,
            Self::SenderStructure => Shape::Structure,
            Self::RowId
            | Self::FirstName
            | Self::LastName
            | Self::BirthName
            | Self::OtherContactMethod
            | Self::City
            | Self::SituationOther
            | Self::Reason
            | Self::ConsentReference
            | Self::ReferentFirstName
            | Self::ReferentLastName
            | Self::ServiceId => Shape::Text,
        }
    }

    /// The most characters a cell (or, for lists, an item) may hold, and
    /// whether the bound is the schema's (`maxLength`) or the adapter's own.
    pub(super) fn max_chars(self) -> (usize, &'static str) {
        match self {
            Self::FirstName
            | Self::LastName
            | Self::BirthName
            | Self::ReferentFirstName
            | Self::ReferentLastName => (NAME_MAX_CHARS, "maxLength"),
            Self::Reason => (REASON_MAX_CHARS, "maxLength"),
            _ => (CELL_MAX_CHARS, "cell-size"),
        }
    }

    /// Fields without which no referral can be built.
    fn always_required(self) -> bool {
        matches!(self, Self::RowId | Self::FirstName | Self::LastName)
    }
}

/// Every canonical field a mapping can name, in output order.
pub(super) static CATALOGUE: &[Canonical] = &[
    field("referral_id", "/referral_id", Target::RowId),
    field("person.first_name", "/person/first_name", Target::FirstName),
    field("person.last_name", "/person/last_name", Target::LastName),
    field("person.birth_name", "/person/birth_name", Target::BirthName),
    field("person.birth_date", "/person/birth_date", Target::BirthDate),
    field(
        "person.availability",
        "/person/availability",
        Target::Availability,
    ),
    field(
        "person.contact.phone",
        "/person/contact/phone",
        Target::Phone,
    ),
    field(
        "person.contact.email",
        "/person/contact/email",
        Target::Email,
    ),
    field(
        "person.contact.other_method",
        "/person/contact/other_method",
        Target::OtherContactMethod,
    ),
    field(
        "person.contact.preferences",
        "/person/contact/preferences",
        Target::ContactPreferences,
    ),
    field(
        "person.address.postal_code",
        "/person/address/postal_code",
        Target::PostalCode,
    ),
    field(
        "person.address.insee_code",
        "/person/address/insee_code",
        Target::InseeCode,
    ),
    field("person.address.city", "/person/address/city", Target::City),
    field(
        "person.address.postal_code_and_city",
        "/person/address",
        Target::PostalCodeAndCity,
    ),
    field(
        "identifiers.france_travail",
        "/identifiers",
        Target::Identifier(IdentifierKind::FranceTravail),
    ),
    field(
        "identifiers.caf",
        "/identifiers",
        Target::Identifier(IdentifierKind::Caf),
    ),
    field(
        "identifiers.msa",
        "/identifiers",
        Target::Identifier(IdentifierKind::Msa),
    ),
    field(
        "identifiers.imilo",
        "/identifiers",
        Target::Identifier(IdentifierKind::Imilo),
    ),
    field(
        "identifiers.departement",
        "/identifiers",
        Target::Identifier(IdentifierKind::Departement),
    ),
    field(
        "identifiers.nir",
        "/identifiers",
        Target::Identifier(IdentifierKind::Nir),
    ),
    field(
        "situation.labels",
        "/situation/labels",
        Target::SituationLabels,
    ),
    field(
        "situation.rsa_beneficiary",
        "/situation/rsa_beneficiary",
        Target::RsaBeneficiary,
    ),
    field(
        "situation.recognised_disability",
        "/situation/recognised_disability",
        Target::RecognisedDisability,
    ),
    field(
        "situation.other",
        "/situation/other",
        Target::SituationOther,
    ),
    field(
        "situation.education_level",
        "/situation/education_level",
        Target::EducationLevel,
    ),
    field("obstacles", "/obstacles", Target::Obstacles),
    field("pathway", "/pathway", Target::Pathway),
    field("axis", "/axis", Target::Axis),
    field("reason", "/reason", Target::Reason),
    field(
        "consent_reference",
        "/consent_reference",
        Target::ConsentReference,
    ),
    field(
        "sender.organisation",
        "/sender/organisation",
        Target::SenderStructure,
    ),
    field(
        "sender.organisation.siret",
        "/sender/organisation/siret",
        Target::SenderSiret,
    ),
    field(
        "sender.referent.first_name",
        "/sender/referent/first_name",
        Target::ReferentFirstName,
    ),
    field(
        "sender.referent.last_name",
        "/sender/referent/last_name",
        Target::ReferentLastName,
    ),
    field(
        "sender.referent.email",
        "/sender/referent/email",
        Target::ReferentEmail,
    ),
    field(
        "sender.referent.phone",
        "/sender/referent/phone",
        Target::ReferentPhone,
    ),
    field(
        "recipient.service_id",
        "/recipient/service_id",
        Target::ServiceId,
    ),
];

const fn field(key: &'static str, pointer: &'static str, target: Target) -> Canonical {
    Canonical {
        key,
        pointer,
        target,
    }
}

/// Pairs of fields that would write the same place; a mapping names one of each.
const EXCLUSIVE: &[(&str, &str)] = &[
    ("sender.organisation", "sender.organisation.siret"),
    (
        "person.address.postal_code",
        "person.address.postal_code_and_city",
    ),
    ("person.address.city", "person.address.postal_code_and_city"),
];

/// A date layout made of `dd`, `mm`, `yyyy` and separators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct DateFormat {
    pattern: String,
    parts: Vec<DatePart>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DatePart {
    Day,
    Month,
    Year,
    Separator(char),
}

impl DateFormat {
    /// Parses a layout such as `dd/mm/yyyy`; the error says what is wrong.
    pub(super) fn parse(pattern: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = pattern;
        while !rest.is_empty() {
            let (part, length) = if rest.starts_with("yyyy") {
                (DatePart::Year, 4)
            } else if rest.starts_with("dd") {
                (DatePart::Day, 2)
            } else if rest.starts_with("mm") {
                (DatePart::Month, 2)
            } else {
                let Some(c) = rest.chars().next() else { break };
                if c.is_alphanumeric() {
                    return Err(format!(
                        "a layout made of dd, mm, yyyy and separators, found the letter or digit '{c}' \
                         outside them"
                    ));
                }
                (DatePart::Separator(c), c.len_utf8())
            };
            parts.push(part);
            rest = &rest[length..];
        }
        for (part, name) in [
            (DatePart::Day, "dd"),
            (DatePart::Month, "mm"),
            (DatePart::Year, "yyyy"),
        ] {
            if parts.iter().filter(|p| **p == part).count() != 1 {
                return Err(format!(
                    "a layout with exactly one {name} (for example dd/mm/yyyy)"
                ));
            }
        }
        Ok(Self {
            pattern: pattern.to_owned(),
            parts,
        })
    }

    /// Reads a date; the error describes the text's shape, never the text.
    pub(super) fn read(&self, text: &str) -> Result<NaiveDate, String> {
        let shape_error = || format!("a date {}, found {}", self.pattern, shape_of(text));
        let (mut day, mut month, mut year) = (0, 0, 0);
        let mut rest = text;
        for (index, part) in self.parts.iter().enumerate() {
            match part {
                DatePart::Separator(c) => {
                    rest = rest.strip_prefix(*c).ok_or_else(shape_error)?;
                }
                DatePart::Day | DatePart::Month | DatePart::Year => {
                    let longest = if *part == DatePart::Year { 4 } else { 2 };
                    // Days and months may drop their leading zero only where
                    // separators (or the ends) mark where they start and stop.
                    let is_number = |part: Option<&DatePart>| {
                        matches!(part, Some(DatePart::Day | DatePart::Month | DatePart::Year))
                    };
                    let delimited = !is_number(self.parts.get(index + 1))
                        && !is_number(index.checked_sub(1).and_then(|i| self.parts.get(i)));
                    let shortest = if delimited && *part != DatePart::Year {
                        1
                    } else {
                        longest
                    };
                    let digits = rest
                        .bytes()
                        .take(longest)
                        .take_while(u8::is_ascii_digit)
                        .count();
                    if digits < shortest {
                        return Err(shape_error());
                    }
                    let number: u32 = rest[..digits].parse().map_err(|_| shape_error())?;
                    rest = &rest[digits..];
                    match part {
                        DatePart::Day => day = number,
                        DatePart::Month => month = number,
                        _ => year = number,
                    }
                }
            }
        }
        if !rest.is_empty() {
            return Err(shape_error());
        }
        let year = i32::try_from(year).map_err(|_| shape_error())?;
        NaiveDate::from_ymd_opt(year, month, day).ok_or_else(|| {
            format!(
                "a calendar date {}, found a day or month that does not exist",
                self.pattern
            )
        })
    }
}

// The file as written; checked and turned into a `Mapping` by `Mapping::from_toml`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMapping {
    name: String,
    #[serde(default)]
    encoding: Option<String>,
    #[serde(default)]
    delimiter: Option<String>,
    #[serde(default)]
    date_format: Option<String>,
    #[serde(default)]
    ignore: Vec<String>,
    #[serde(default)]
    sender: Option<RawOrganisation>,
    #[serde(default)]
    structures: BTreeMap<String, RawOrganisation>,
    fields: BTreeMap<String, RawField>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table with siret, kind and name")]
struct RawOrganisation {
    #[serde(default)]
    siret: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table such as { column = \"Nom*\" }"
)]
struct RawField {
    column: String,
    #[serde(default)]
    required: Option<bool>,
    #[serde(default)]
    date_format: Option<String>,
    #[serde(default)]
    separator: Option<String>,
    #[serde(default)]
    values: Option<BTreeMap<String, toml::Value>>,
}

impl Mapping {
    /// Reads and checks a mapping file.
    pub fn load(path: &Path) -> Result<Self, Error> {
        use std::io::Read as _;
        let file = path.display().to_string();
        let io_error = |source| Error::Io {
            context: format!("reading the mapping file {file}"),
            source,
        };
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .map_err(io_error)?
            .take(MAX_MAPPING_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(io_error)?;
        if bytes.len() as u64 > MAX_MAPPING_BYTES {
            return Err(Error::config(
                &file,
                "",
                format!("a mapping file of at most {MAX_MAPPING_BYTES} bytes"),
            ));
        }
        let text = String::from_utf8(bytes).map_err(|_| {
            Error::config(
                &file,
                "",
                "a UTF-8 text file, found invalid UTF-8".to_owned(),
            )
        })?;
        Self::from_toml(&text, &file)
    }

    /// Checks a mapping given as TOML text; `file` names it in errors.
    pub fn from_toml(text: &str, file: &str) -> Result<Self, Error> {
        let raw: RawMapping = toml::Deserializer::parse(text)
            .map_err(|error| Error::toml(file, text, "", &error))
            .and_then(|deserializer| {
                serde_path_to_error::deserialize(deserializer).map_err(|error| {
                    let key = error.path().to_string();
                    Error::toml(file, text, &key, error.inner())
                })
            })?;
        raw.check(file)
    }

    /// The source name, from which referral ids are derived.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The mapping file, as given to [`Mapping::load`].
    pub fn file(&self) -> &str {
        &self.file
    }

    /// The canonical field keys a mapping file can name, in output order.
    pub fn canonical_fields() -> impl Iterator<Item = &'static str> {
        CATALOGUE.iter().map(|canonical| canonical.key)
    }

    /// The distinct columns the mapping reads.
    pub(super) fn mapped_columns(&self) -> HashSet<&str> {
        self.fields
            .iter()
            .map(|spec| spec.column.as_str())
            .collect()
    }

    /// Whether some field can name a sender organisation row by row.
    pub(super) fn has_sender_column(&self) -> bool {
        self.fields.iter().any(|spec| {
            matches!(
                spec.canonical.target,
                Target::SenderStructure | Target::SenderSiret
            )
        })
    }
}

impl RawMapping {
    fn check(self, file: &str) -> Result<Mapping, Error> {
        let name = self.name.trim();
        if name.is_empty() {
            return Err(Error::config(
                file,
                "name",
                "a source name (referral ids are derived from it), found an empty string"
                    .to_owned(),
            ));
        }
        let encoding = check_encoding(file, self.encoding.as_deref())?;
        let delimiter = check_delimiter(file, self.delimiter.as_deref())?;
        let date_format = DateFormat::parse(self.date_format.as_deref().unwrap_or("dd/mm/yyyy"))
            .map_err(|detail| Error::config(file, "date_format", detail))?;

        let sender_kind = match &self.sender {
            Some(RawOrganisation {
                kind: Some(kind), ..
            }) => organisation_kind(file, "sender.kind", kind)?,
            _ => OrganisationKind::Association,
        };
        let sender = match self.sender {
            Some(raw) => match raw.siret {
                Some(_) => Some(raw.organisation(file, "sender", sender_kind)?),
                None if raw.name.is_some() => {
                    return Err(Error::config(
                        file,
                        "sender.siret",
                        "a SIRET next to the sender's name, found none".to_owned(),
                    ));
                }
                None => None,
            },
            None => None,
        };
        let mut structures = HashMap::new();
        for (label, raw) in self.structures {
            let key = format!("structures.{label}");
            let folded = fold(&label);
            if folded.is_empty() {
                return Err(Error::config(
                    file,
                    &key,
                    "a structure name with letters or digits".to_owned(),
                ));
            }
            let organisation = raw.organisation(file, &key, sender_kind)?;
            if structures.insert(folded, organisation).is_some() {
                return Err(Error::config(
                    file,
                    &key,
                    "structure names that differ by more than case, accents and punctuation"
                        .to_owned(),
                ));
            }
        }

        let mut fields = Vec::new();
        for (key, raw) in self.fields {
            let canonical = CATALOGUE
                .iter()
                .find(|canonical| canonical.key == key)
                .ok_or_else(|| {
                    Error::config(
                        file,
                        &format!("fields.{key}"),
                        format!(
                            "no canonical field of that name; known fields: {}",
                            Mapping::canonical_fields().collect::<Vec<_>>().join(", ")
                        ),
                    )
                })?;
            fields.push(raw.check(file, canonical, &date_format)?);
        }
        fields.sort_by_key(|spec| {
            CATALOGUE
                .iter()
                .position(|canonical| canonical.key == spec.canonical.key)
        });

        for canonical in CATALOGUE
            .iter()
            .filter(|canonical| canonical.target.always_required())
        {
            if !fields
                .iter()
                .any(|spec| spec.canonical.key == canonical.key)
            {
                return Err(Error::config(
                    file,
                    &format!("fields.{}", canonical.key),
                    "a column for this field, which every referral needs; found none".to_owned(),
                ));
            }
        }
        for (first, second) in EXCLUSIVE {
            let mapped = |key: &str| fields.iter().any(|spec| spec.canonical.key == key);
            if mapped(first) && mapped(second) {
                return Err(Error::config(
                    file,
                    &format!("fields.{second}"),
                    format!("at most one of {first} and {second}, found both"),
                ));
            }
        }
        if fields
            .iter()
            .any(|spec| spec.canonical.target == Target::SenderStructure)
            && structures.is_empty()
        {
            return Err(Error::config(
                file,
                "structures",
                "a [structures] table to look the sender.organisation column up in, found none"
                    .to_owned(),
            ));
        }

        let mut ignore = HashSet::new();
        for (index, column) in self.ignore.iter().enumerate() {
            let column = column.trim();
            let key = format!("ignore[{index}]");
            if fields.iter().any(|spec| spec.column == column) {
                return Err(Error::config(
                    file,
                    &key,
                    format!("a column that no field maps, found \"{column}\" mapped too"),
                ));
            }
            if !ignore.insert(column.to_owned()) {
                return Err(Error::config(
                    file,
                    &key,
                    format!("each column listed once, found \"{column}\" twice"),
                ));
            }
        }

        let label = Path::new(file).file_name().map_or_else(
            || file.to_owned(),
            |name| name.to_string_lossy().into_owned(),
        );
        Ok(Mapping {
            file: file.to_owned(),
            label,
            name: name.to_owned(),
            encoding,
            delimiter,
            ignore,
            sender,
            sender_kind,
            structures,
            fields,
        })
    }
}

impl RawOrganisation {
    fn organisation(
        self,
        file: &str,
        key: &str,
        default_kind: OrganisationKind,
    ) -> Result<Organisation, Error> {
        let siret = self.siret.as_deref().unwrap_or_default();
        let siret = Siret::parse(siret).map_err(|error| {
            Error::config(
                file,
                &format!("{key}.siret"),
                format!("expected {}, found {}", error.expected, error.found),
            )
        })?;
        let kind = match &self.kind {
            Some(kind) => organisation_kind(file, &format!("{key}.kind"), kind)?,
            None => default_kind,
        };
        let name = self
            .name
            .map(|name| name.trim().to_owned())
            .filter(|name| !name.is_empty());
        Ok(Organisation { siret, kind, name })
    }
}

fn organisation_kind(file: &str, key: &str, text: &str) -> Result<OrganisationKind, Error> {
    OrganisationKind::named(text).ok_or_else(|| {
        Error::config(
            file,
            key,
            "one of association, france_travail, mission_locale, cap_emploi, departement, other"
                .to_owned(),
        )
    })
}

fn check_encoding(file: &str, label: Option<&str>) -> Result<&'static Encoding, Error> {
    let label = label.unwrap_or("utf-8");
    Encoding::for_label(label.trim().as_bytes()).ok_or_else(|| {
        Error::config(
            file,
            "encoding",
            format!(
                "an encoding label such as utf-8 or windows-1252, found \"{label}\", which no \
                 encoding goes by"
            ),
        )
    })
}

fn check_delimiter(file: &str, delimiter: Option<&str>) -> Result<u8, Error> {
    let delimiter = delimiter.unwrap_or(";");
    match delimiter.as_bytes() {
        [byte] if byte.is_ascii() && !matches!(byte, b'"' | b'\n' | b'\r') => Ok(*byte),
        _ => Err(Error::config(
            file,
            "delimiter",
            format!(
                "one ASCII character other than a quote or a line break, found {} characters",
                delimiter.chars().count()
            ),
        )),
    }
}

impl RawField {
    fn check(
        self,
        file: &str,
        canonical: &'static Canonical,
        default_date_format: &DateFormat,
    ) -> Result<FieldSpec, Error> {
        let key = |sub: &str| format!("fields.{}.{sub}", canonical.key);
        let shape = canonical.target.shape();
        let column = self.column.trim().to_owned();
        if column.is_empty() {
            return Err(Error::config(
                file,
                &key("column"),
                "the header of a column, found an empty string".to_owned(),
            ));
        }
        let required = match self.required {
            Some(false) if canonical.target.always_required() => {
                return Err(Error::config(
                    file,
                    &key("required"),
                    "true (every referral needs this field), found false".to_owned(),
                ));
            }
            Some(required) => required,
            None => canonical.target.always_required(),
        };
        let date_format = match (shape, self.date_format) {
            (Shape::Date, Some(pattern)) => Some(
                DateFormat::parse(&pattern)
                    .map_err(|detail| Error::config(file, &key("date_format"), detail))?,
            ),
            (Shape::Date, None) => Some(default_date_format.clone()),
            (_, Some(_)) => {
                return Err(Error::config(
                    file,
                    &key("date_format"),
                    "date_format only on a date field".to_owned(),
                ));
            }
            (_, None) => None,
        };
        let separator = match (shape, self.separator) {
            (Shape::ChoiceList(_) | Shape::TextList, Some(separator)) if separator.is_empty() => {
                return Err(Error::config(
                    file,
                    &key("separator"),
                    "a non-empty separator".to_owned(),
                ));
            }
            (Shape::ChoiceList(_) | Shape::TextList, separator) => separator,
            (_, Some(_)) => {
                return Err(Error::config(
                    file,
                    &key("separator"),
                    "separator only on a list field (obstacles, situation.labels, \
                     person.contact.preferences)"
                        .to_owned(),
                ));
            }
            (_, None) => None,
        };

        let mut booleans = HashMap::new();
        let mut choices = HashMap::new();
        match (shape, self.values) {
            (Shape::Boolean, None) => {
                booleans.insert("oui".to_owned(), true);
                booleans.insert("non".to_owned(), false);
            }
            (Shape::Boolean, Some(values)) => {
                for (word, value) in values {
                    let value_key = key(&format!("values.{word}"));
                    let toml::Value::Boolean(value) = value else {
                        return Err(Error::config(
                            file,
                            &value_key,
                            format!("true or false, found a {}", value.type_str()),
                        ));
                    };
                    insert_word(file, &value_key, &mut booleans, &word, value)?;
                }
            }
            (Shape::Choice(enumeration) | Shape::ChoiceList(enumeration), Some(values)) => {
                let names = enumeration.wire_names();
                for (word, value) in values {
                    let value_key = key(&format!("values.{word}"));
                    let index = value
                        .as_str()
                        .and_then(|name| names.iter().position(|known| *known == name))
                        .ok_or_else(|| {
                            Error::config(file, &value_key, format!("one of {}", names.join(", ")))
                        })?;
                    insert_word(file, &value_key, &mut choices, &word, index)?;
                }
            }
            (_, Some(_)) => {
                return Err(Error::config(
                    file,
                    &key("values"),
                    "values only on a yes/no or coded field".to_owned(),
                ));
            }
            (_, None) => {}
        }

        Ok(FieldSpec {
            canonical,
            column,
            required,
            date_format,
            separator,
            booleans,
            choices,
        })
    }
}

fn insert_word<T>(
    file: &str,
    key: &str,
    map: &mut HashMap<String, T>,
    word: &str,
    value: T,
) -> Result<(), Error> {
    let folded = fold(word);
    if folded.is_empty() {
        return Err(Error::config(
            file,
            key,
            "a source word with letters or digits".to_owned(),
        ));
    }
    if map.insert(folded, value).is_some() {
        return Err(Error::config(
            file,
            key,
            "source words that differ by more than case, accents and punctuation".to_owned(),
        ));
    }
    Ok(())
}
