//! One data row → one canonical referral. Every cell is checked; all the
//! row's violations are reported together, each at its line and column.

use chrono::NaiveDate;
use csv::ByteRecord;

use crate::error::{Error, Violation};
use crate::model::common::{Axis, Organisation, Pathway, Recipient, Referent, Sender};
use crate::model::convert::{classify, fold};
use crate::model::ids::{
    Email, InseeCode, Phone, PostalCode, ReferralId, Siret, ValueError, shape_of,
};
use crate::model::v2::{
    self, Address, Contact, Identifier, Obstacle, ObstacleDomain, Person, Situation,
};
use crate::model::{LossReport, Message, Translated};

use super::mapping::{Choice, FieldSpec, Mapping, Target};
use super::{Context, Plan};

/// A broken rule, before it is located.
struct Fail {
    rule: &'static str,
    detail: String,
}

impl Fail {
    fn new(rule: &'static str, detail: impl Into<String>) -> Self {
        Self {
            rule,
            detail: detail.into(),
        }
    }
}

impl From<ValueError> for Fail {
    fn from(error: ValueError) -> Self {
        Self::new(
            error.rule,
            format!("{}, found {}", error.expected, error.found),
        )
    }
}

/// The parts of a referral gathered from the cells of one row.
#[derive(Default)]
struct Draft {
    row_id: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
    birth_name: Option<String>,
    birth_date: Option<NaiveDate>,
    availability: Option<NaiveDate>,
    contact: Contact,
    address: Address,
    identifiers: Vec<Identifier>,
    situation: Situation,
    obstacles: Vec<Obstacle>,
    pathway: Option<Pathway>,
    axis: Option<Axis>,
    reason: Option<String>,
    consent_reference: Option<String>,
    organisation: Option<Organisation>,
    referent: Referent,
    service_id: Option<String>,
}

/// Decodes one row whose width matches the header.
pub(super) fn decode(
    record: &ByteRecord,
    line: u64,
    mapping: &Mapping,
    plan: &Plan,
    context: &Context,
    recipient: &Organisation,
) -> Result<Translated<Message>, Error> {
    let mut draft = Draft::default();
    let mut violations = Vec::new();
    let locate = |spec: &FieldSpec, fail: Fail| {
        Violation::new(spec.canonical.pointer, fail.rule, fail.detail)
            .at_cell(line, Some(spec.column.clone()))
    };
    for &(field, column) in &plan.cells {
        let spec = &mapping.fields[field];
        let raw = record.get(column).unwrap_or_default();
        let text = std::str::from_utf8(raw).map_err(|_| Error::Malformed {
            detail: format!(
                "column \"{}\" is not valid {}, the encoding mapping {} names (is the file in \
                 another encoding, such as windows-1252?)",
                spec.column,
                mapping.encoding.name(),
                mapping.label
            ),
            line: Some(line),
            column: Some(column as u64 + 1),
        })?;
        let text = text.trim();
        if text.is_empty() {
            if spec.required {
                violations.push(locate(
                    spec,
                    Fail::new("required", "a value, found an empty cell"),
                ));
            }
            continue;
        }
        let (max, rule) = spec.canonical.target.max_chars();
        // Bytes bound characters from above: count them only when it may matter.
        if text.len() > max {
            let count = text.chars().count();
            if count > max {
                violations.push(locate(
                    spec,
                    Fail::new(rule, format!("at most {max} characters, found {count}")),
                ));
                continue;
            }
        }
        if let Err(fail) = draft.fill(spec, text, mapping) {
            violations.push(locate(spec, fail));
        }
    }

    let organisation = draft
        .organisation
        .take()
        .or_else(|| mapping.sender.clone())
        .or_else(|| context.sender.clone());
    let sender_reported = violations
        .iter()
        .any(|violation| violation.pointer.starts_with("/sender/organisation"));
    if organisation.is_none() && !sender_reported {
        let column = mapping
            .fields
            .iter()
            .find(|spec| {
                matches!(
                    spec.canonical.target,
                    Target::SenderStructure | Target::SenderSiret
                )
            })
            .map(|spec| spec.column.clone());
        violations.push(
            Violation::new(
                "/sender/organisation",
                "required",
                "a sender organisation: the row names none, and neither the mapping's [sender] \
                 nor the caller gives one",
            )
            .at_cell(line, column),
        );
    }
    if !violations.is_empty() {
        return Err(Error::Invalid(violations));
    }
    let (Some(organisation), Some(row_id), Some(first_name), Some(last_name)) = (
        organisation,
        draft.row_id,
        draft.first_name,
        draft.last_name,
    ) else {
        // The header check makes these columns present and the loop above their cells non-empty.
        return Err(Error::Internal(
            "a required CSV field was neither set nor reported".to_owned(),
        ));
    };

    let mut losses = LossReport::default();
    for (column, path) in &plan.ignored {
        let cell = record.get(*column).unwrap_or_default();
        if !cell.trim_ascii().is_empty() {
            losses.lose(path.clone(), plan.ignored_reason.clone());
        }
    }

    let referral = v2::Referral {
        referral_id: ReferralId::derived(&mapping.name, &row_id),
        schema_version: v2::ReferralV2Tag,
        created_at: context.now,
        sender: Sender {
            organisation,
            referent: (draft.referent != Referent::default()).then_some(draft.referent),
        },
        recipient: Recipient {
            organisation: recipient.clone(),
            service_id: draft.service_id,
        },
        person: Person {
            first_name,
            last_name,
            birth_name: draft.birth_name,
            birth_date: draft.birth_date,
            contact: (!draft.contact.is_empty()).then_some(draft.contact),
            address: (!draft.address.is_empty()).then_some(draft.address),
            availability: draft.availability,
        },
        identifiers: draft.identifiers,
        situation: (draft.situation != Situation::default()).then_some(draft.situation),
        obstacles: draft.obstacles,
        pathway: draft.pathway,
        axis: draft.axis,
        reason: draft.reason,
        consent_reference: draft.consent_reference,
    };
    Ok(Translated {
        value: Message::Referral(Box::new(referral)),
        losses,
    })
}

impl Draft {
    /// Reads one non-empty cell into its place.
    fn fill(&mut self, spec: &FieldSpec, text: &str, mapping: &Mapping) -> Result<(), Fail> {
        let owned = || Some(text.to_owned());
        match spec.canonical.target {
            Target::RowId => self.row_id = owned(),
            Target::FirstName => self.first_name = owned(),
            Target::LastName => self.last_name = owned(),
            Target::BirthName => self.birth_name = owned(),
            Target::BirthDate => self.birth_date = Some(date(spec, text)?),
            Target::Availability => self.availability = Some(date(spec, text)?),
            Target::Phone => self.contact.phone = Some(Phone::parse(text)?),
            Target::Email => self.contact.email = Some(Email::parse(text)?),
            Target::OtherContactMethod => self.contact.other_method = owned(),
            Target::ContactPreferences => {
                for item in items(spec, text) {
                    let preference = choose(spec, item)?;
                    if !self.contact.preferences.contains(&preference) {
                        self.contact.preferences.push(preference);
                    }
                }
            }
            Target::PostalCode => self.address.postal_code = Some(PostalCode::parse(text)?),
            Target::InseeCode => self.address.insee_code = Some(InseeCode::parse(text)?),
            Target::City => self.address.city = owned(),
            Target::PostalCodeAndCity => {
                let (code, city) = text
                    .split_once(char::is_whitespace)
                    .map_or((text, ""), |(code, city)| {
                        (code, city.trim_start_matches([' ', '-']).trim())
                    });
                self.address.postal_code = Some(PostalCode::parse(code)?);
                self.address.city = (!city.is_empty()).then(|| city.to_owned());
            }
            Target::Identifier(kind) => self.identifiers.push(Identifier::new(kind, text)?),
            Target::SituationLabels => {
                self.situation
                    .labels
                    .extend(items(spec, text).map(str::to_owned));
            }
            Target::RsaBeneficiary => self.situation.rsa_beneficiary = Some(yes_no(spec, text)?),
            Target::RecognisedDisability => {
                self.situation.recognised_disability = Some(yes_no(spec, text)?);
            }
            Target::SituationOther => self.situation.other = owned(),
            Target::EducationLevel => self.situation.education_level = Some(choose(spec, text)?),
            Target::Obstacles => {
                for item in items(spec, text) {
                    let obstacle = if spec.choices.is_empty() {
                        classify(item)
                    } else {
                        Obstacle {
                            domain: choose::<ObstacleDomain>(spec, item)?,
                            impact: None,
                            source_label: Some(item.to_owned()),
                        }
                    };
                    self.obstacles.push(obstacle);
                }
            }
            Target::Pathway => self.pathway = Some(choose(spec, text)?),
            Target::Axis => self.axis = Some(choose(spec, text)?),
            Target::Reason => self.reason = owned(),
            Target::ConsentReference => self.consent_reference = owned(),
            Target::SenderStructure => {
                let organisation = mapping.structures.get(&fold(text)).ok_or_else(|| {
                    Fail::new(
                        "value-map",
                        format!(
                            "a structure listed in the [structures] of mapping {}, found another \
                             name",
                            mapping.label
                        ),
                    )
                })?;
                self.organisation = Some(organisation.clone());
            }
            Target::SenderSiret => {
                let siret = Siret::parse(text)?;
                self.organisation = Some(match &mapping.sender {
                    Some(sender) if sender.siret == siret => sender.clone(),
                    _ => Organisation {
                        siret,
                        kind: mapping.sender_kind,
                        name: None,
                    },
                });
            }
            Target::ReferentFirstName => self.referent.first_name = owned(),
            Target::ReferentLastName => self.referent.last_name = owned(),
            Target::ReferentEmail => self.referent.email = Some(Email::parse(text)?),
            Target::ReferentPhone => self.referent.phone = Some(Phone::parse(text)?),
            Target::ServiceId => self.service_id = owned(),
        }
        Ok(())
    }
}

fn date(spec: &FieldSpec, text: &str) -> Result<NaiveDate, Fail> {
    let format = spec.date_format.as_ref().ok_or_else(|| {
        Fail::new(
            "date-format",
            "a date layout in the mapping, found none".to_owned(),
        )
    })?;
    format
        .read(text)
        .map_err(|detail| Fail::new("date-format", detail))
}

/// The non-empty items of a list cell (the whole cell without a separator).
fn items<'t>(spec: &FieldSpec, text: &'t str) -> impl Iterator<Item = &'t str> {
    let separator = spec.separator.as_deref();
    let mut whole = Some(text);
    let mut split = separator.map(|separator| text.split(separator));
    std::iter::from_fn(move || match &mut split {
        Some(split) => split.next(),
        None => whole.take(),
    })
    .map(str::trim)
    .filter(|item| !item.is_empty())
}

fn yes_no(spec: &FieldSpec, text: &str) -> Result<bool, Fail> {
    spec.booleans.get(&fold(text)).copied().ok_or_else(|| {
        let mut words: Vec<&str> = spec.booleans.keys().map(String::as_str).collect();
        words.sort_unstable();
        Fail::new(
            "value-map",
            format!(
                "one of the words the mapping lists ({}), found another",
                words.join(", ")
            ),
        )
    })
}

fn choose<E: Choice>(spec: &FieldSpec, text: &str) -> Result<E, Fail> {
    if spec.choices.is_empty() {
        return E::named(text).ok_or_else(|| {
            let names: Vec<&str> = E::VALUES.iter().map(|value| value.wire()).collect();
            Fail::new(
                "enum",
                format!("one of {}, found {}", names.join(", "), shape_of(text)),
            )
        });
    }
    spec.choices
        .get(&fold(text))
        .and_then(|index| E::VALUES.get(*index).copied())
        .ok_or_else(|| {
            let mut words: Vec<&str> = spec.choices.keys().map(String::as_str).collect();
            words.sort_unstable();
            Fail::new(
                "value-map",
                format!(
                    "one of the codes the mapping lists ({}), found another",
                    words.join(", ")
                ),
            )
        })
}
