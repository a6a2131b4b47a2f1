//! Reading a policy file: TOML into raw values, then every rule of the module
//! documentation checked, each failure naming the file and the path.

use std::collections::BTreeSet;
use std::path::Path;

use serde::Deserialize;

use super::paths::{self, LeafSet, Shape, bit};
use super::{
    KeyReference, MessageKind, Policy, RecipientSelector, Replacement, Requirement, Treatment,
};
use crate::error::Error;
use crate::model::categories::{DataCategory, is_known_path};
use crate::model::common::OrganisationKind;
use crate::model::ids::Siret;
use crate::validate::SchemaName;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    id: String,
    version: String,
    message: String,
    recipient: RawRecipient,
    purpose: String,
    #[serde(default)]
    deny: Vec<String>,
    allow: Vec<String>,
    #[serde(default)]
    pseudonymise: Vec<RawPseudonym>,
    #[serde(default)]
    required: Vec<String>,
    #[serde(default)]
    free_text: Vec<String>,
    #[serde(default)]
    special: Vec<RawSpecial>,
    #[serde(default)]
    replace: Vec<RawReplace>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRecipient {
    siret: Option<String>,
    kind: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPseudonym {
    path: String,
    key: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpecial {
    path: String,
    rule: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReplace {
    sender_name_words: Vec<String>,
    kind: Option<String>,
    name: Option<String>,
    #[serde(default)]
    remove: Vec<String>,
}

/// Parses and checks a policy; see the module documentation of `policy`.
pub(super) fn parse(text: &str, file: &str) -> Result<Policy, Error> {
    let raw: RawPolicy = toml::Deserializer::parse(text)
        .map_err(|error| Error::toml(file, text, "", &error))
        .and_then(|deserializer| {
            serde_path_to_error::deserialize(deserializer).map_err(|error| {
                let key = error.path().to_string();
                Error::toml(file, text, &key, error.inner())
            })
        })?;
    Checker::new(file, &raw)?.check(raw)
}

/// The name policies and consent records give a kind of organisation.
pub(super) fn kind_name(kind: OrganisationKind) -> String {
    kind.wire_name()
        .trim_start_matches("ORGANISATION_KIND_")
        .to_ascii_lowercase()
}

fn organisation_kind(file: &str, key: &str, name: &str) -> Result<OrganisationKind, Error> {
    OrganisationKind::ALL
        .iter()
        .copied()
        .find(|kind| kind_name(*kind) == name)
        .ok_or_else(|| {
            let names: Vec<String> = OrganisationKind::ALL
                .iter()
                .map(|k| kind_name(*k))
                .collect();
            Error::config(
                file,
                key,
                format!(
                    "\"{name}\" is not a kind of organisation; one of {}",
                    names.join(", ")
                ),
            )
        })
}

/// The purpose rule of consent records: `prefix:Term`.
fn is_purpose_term(text: &str) -> bool {
    text.split_once(':').is_some_and(|(prefix, term)| {
        let mut prefix_chars = prefix.chars();
        let mut term_chars = term.chars();
        prefix_chars.next().is_some_and(|c| c.is_ascii_alphabetic())
            && prefix_chars.all(|c| c.is_ascii_alphanumeric() || c == '-')
            && term_chars.next().is_some_and(|c| c.is_ascii_alphabetic())
            && term_chars.all(|c| c.is_ascii_alphanumeric())
    })
}

struct Checker<'a> {
    file: &'a str,
    message: MessageKind,
    schema: SchemaName,
    leaves: &'static [paths::Leaf],
}

impl<'a> Checker<'a> {
    fn new(file: &'a str, raw: &RawPolicy) -> Result<Self, Error> {
        let message = match raw.message.as_str() {
            "referral" => MessageKind::Referral,
            "status" => MessageKind::Status,
            other => {
                return Err(Error::config(
                    file,
                    "message",
                    format!("\"{other}\" is not a message; one of referral, status"),
                ));
            }
        };
        let schema = message.schema();
        Ok(Self {
            file,
            message,
            schema,
            leaves: paths::leaves(schema),
        })
    }

    fn error(&self, path: &str, detail: impl Into<String>) -> Error {
        Error::config(self.file, path, detail)
    }

    fn path(&self, index: usize) -> &'static str {
        &self.leaves[index].path
    }

    /// The leaves a path covers; an error when it names no field of the message
    /// or lies inside a leaf.
    fn resolve(&self, list: &str, path: &str) -> Result<LeafSet, Error> {
        let covered = paths::covered(self.schema, path).fold(0, |set, leaf| set | bit(leaf));
        if covered != 0 {
            return Ok(covered);
        }
        if let Some(leaf) = paths::enclosing(self.schema, path) {
            return Err(self.error(
                path,
                format!(
                    "in {list}: this is part of {}, which is kept or dropped whole; name {}",
                    leaf.path, leaf.path
                ),
            ));
        }
        let known = is_known_path(self.schema, path);
        Err(self.error(
            path,
            format!(
                "in {list}: {} field path of {} (see `passerelle schema show {} --categories`)",
                if known { "not a forwarded" } else { "unknown" },
                self.schema.as_str(),
                self.schema.as_str()
            ),
        ))
    }

    fn indices(set: LeafSet) -> impl Iterator<Item = usize> {
        paths::members(set)
    }

    fn check(&self, raw: RawPolicy) -> Result<Policy, Error> {
        let file = self.file;
        let id_ok = !raw.id.is_empty()
            && raw
                .id
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !id_ok {
            return Err(Error::config(
                file,
                "id",
                "lower-case letters, digits and hyphens, not empty",
            ));
        }
        if raw.version.is_empty() || raw.version.chars().any(char::is_whitespace) {
            return Err(Error::config(
                file,
                "version",
                "a version without spaces, not empty",
            ));
        }
        let recipient = match (&raw.recipient.siret, &raw.recipient.kind) {
            (Some(siret), None) => RecipientSelector::Siret(
                Siret::parse(siret)
                    .map_err(|error| Error::config(file, "recipient.siret", error.to_string()))?,
            ),
            (None, Some(kind)) => {
                RecipientSelector::Kind(organisation_kind(file, "recipient.kind", kind)?)
            }
            _ => {
                return Err(Error::config(
                    file,
                    "recipient",
                    "exactly one of siret or kind: { kind = \"france_travail\" } or { siret = \"...\" }",
                ));
            }
        };
        if !is_purpose_term(&raw.purpose) {
            return Err(Error::config(
                file,
                "purpose",
                "a purpose term prefix:Term such as dpv:ServiceProvision",
            ));
        }

        let mut denied = BTreeSet::new();
        for name in &raw.deny {
            let category = DataCategory::parse(name).ok_or_else(|| {
                let names: Vec<&str> = DataCategory::ALL.iter().map(|c| c.as_str()).collect();
                Error::config(
                    file,
                    "deny",
                    format!(
                        "\"{name}\" is not a data category; one of {}",
                        names.join(", ")
                    ),
                )
            })?;
            denied.insert(category);
        }
        let is_denied = |leaf: usize| denied.contains(&self.leaves[leaf].category);

        // Allowed leaves, and which allow entry covers each (for messages).
        let mut allowed: LeafSet = 0;
        let mut allowed_by = vec![None::<&str>; self.leaves.len()];
        for path in &raw.allow {
            let covered = self.resolve("allow", path)?;
            if Self::indices(covered).all(is_denied) {
                let category =
                    self.leaves[Self::indices(covered).next().unwrap_or_default()].category;
                return Err(self.error(
                    path,
                    format!(
                        "in allow, but deny lists its category {}",
                        category.as_str()
                    ),
                ));
            }
            for leaf in Self::indices(covered) {
                allowed_by[leaf].get_or_insert(path);
            }
            allowed |= covered;
        }

        // Special-category rules.
        let mut derived_paths = Vec::new();
        let mut special_rule = vec![None::<bool>; self.leaves.len()]; // Some(true) = derive
        for (index, special) in raw.special.iter().enumerate() {
            let path = special.path.as_str();
            let covered = self.resolve("special", path)?;
            let element = Self::indices(covered).next().unwrap_or_default();
            let is_rule_path = self.leaves[element].category.is_special()
                && self.leaves[element].element.is_none()
                && self.path(element) == path;
            if !is_rule_path {
                let rule_paths: Vec<&str> = self
                    .leaves
                    .iter()
                    .filter(|l| l.category.is_special() && l.element.is_none())
                    .map(|l| l.path.as_str())
                    .collect();
                return Err(self.error(
                    path,
                    format!(
                        "in special[{index}]: special rules name a special-category field of {}: {}",
                        self.schema.as_str(),
                        if rule_paths.is_empty() {
                            "this message has none".to_owned()
                        } else {
                            rule_paths.join(", ")
                        }
                    ),
                ));
            }
            let derive = match special.rule.as_str() {
                "derive" => true,
                "drop" => false,
                other => {
                    return Err(self.error(
                        path,
                        format!("in special[{index}]: rule \"{other}\" is not one of derive, drop"),
                    ));
                }
            };
            if is_denied(element) {
                return Err(self.error(
                    path,
                    format!(
                        "in special[{index}], but deny lists its category {}",
                        self.leaves[element].category.as_str()
                    ),
                ));
            }
            for leaf in Self::indices(covered) {
                if special_rule[leaf].replace(derive).is_some() {
                    return Err(self.error(path, "has two special rules"));
                }
            }
            if derive {
                derived_paths.push(path.to_owned());
            }
        }
        // A special-category path named in allow needs its rule.
        for path in &raw.allow {
            let covered = self.resolve("allow", path)?;
            let all_special = Self::indices(covered).all(|l| self.leaves[l].category.is_special());
            if all_special && Self::indices(covered).any(|l| special_rule[l].is_none()) {
                let leaf = Self::indices(covered).next().unwrap_or_default();
                let rule_path = self.leaves[leaf]
                    .element
                    .map_or(self.path(leaf), |e| self.path(e));
                return Err(self.error(
                    path,
                    format!(
                        "in allow: special-category data ({}, GDPR Art. 9) needs a [[special]] rule for {rule_path} (derive or drop)",
                        self.leaves[leaf].category.as_str()
                    ),
                ));
            }
        }

        // Free text.
        let mut free_text: LeafSet = 0;
        for path in &raw.free_text {
            let covered = self.resolve("free_text", path)?;
            if let Some(leaf) =
                Self::indices(covered).find(|l| self.leaves[*l].category != DataCategory::FreeText)
            {
                return Err(self.error(
                    path,
                    format!(
                        "in free_text, but {} is not free text (category {}): list it in allow",
                        self.path(leaf),
                        self.leaves[leaf].category.as_str()
                    ),
                ));
            }
            if covered & !allowed != 0 {
                return Err(self.error(
                    path,
                    "in free_text but not in allow: free text leaves only when both list it",
                ));
            }
            free_text |= covered;
        }

        // Pseudonyms.
        let folder = Path::new(file).parent().unwrap_or(Path::new(""));
        let mut keys: Vec<KeyReference> = Vec::new();
        let mut pseudonymised = Vec::new();
        let mut pseudonym_slot = vec![None::<usize>; self.leaves.len()];
        for (index, entry) in raw.pseudonymise.iter().enumerate() {
            let path = entry.path.as_str();
            let covered = self.resolve("pseudonymise", path)?;
            let leaf = Self::indices(covered).next().unwrap_or_default();
            let details = &self.leaves[leaf];
            let problem = if covered.count_ones() != 1 || details.shape != Shape::Text {
                Some("only a free-form string field takes a pseudonym (a name, a city, a CAF, MSA, i-milo or département identifier); checked values such as a France Travail number, a NIR, an email or a SIRET would no longer be valid, and groups are not pseudonymised as a whole".to_owned())
            } else if details.category.is_special() {
                Some(format!(
                    "special-category data ({}) is never pseudonymised: use a [[special]] rule",
                    details.category.as_str()
                ))
            } else if details.category == DataCategory::FreeText {
                Some("free text is never pseudonymised (a keyed hash of prose links nothing): list it in free_text or leave it out".to_owned())
            } else if let Some(by) = allowed_by[leaf] {
                Some(format!(
                    "both allowed (through allow entry {by}) and pseudonymised: choose one"
                ))
            } else if is_denied(leaf) {
                Some(format!(
                    "deny lists its category {}",
                    details.category.as_str()
                ))
            } else if pseudonym_slot[leaf].is_some() {
                Some("pseudonymised twice".to_owned())
            } else {
                None
            };
            if let Some(problem) = problem {
                return Err(self.error(path, format!("in pseudonymise[{index}]: {problem}")));
            }
            let reference = KeyReference::parse(&entry.key, folder).map_err(|detail| {
                self.error(path, format!("in pseudonymise[{index}].key: {detail}"))
            })?;
            let slot = match keys.iter().position(|k| *k == reference) {
                Some(slot) => slot,
                None => {
                    keys.push(reference);
                    keys.len() - 1
                }
            };
            pseudonym_slot[leaf] = Some(slot);
            pseudonymised.push((path.to_owned(), slot));
        }

        // The plan: one treatment per leaf.
        let plan: Vec<Treatment> = (0..self.leaves.len())
            .map(|leaf| {
                let details = &self.leaves[leaf];
                if is_denied(leaf) {
                    Treatment::Drop
                } else if let Some(slot) = pseudonym_slot[leaf] {
                    Treatment::Pseudonymise(slot)
                } else if details.category.is_special() {
                    // Derive keeps an obstacle's domain only: its details drop.
                    match (special_rule[leaf], details.element) {
                        (Some(true), None) => Treatment::Derive,
                        _ => Treatment::Drop,
                    }
                } else if allowed & bit(leaf) == 0
                    || (details.category == DataCategory::FreeText && free_text & bit(leaf) == 0)
                {
                    Treatment::Drop
                } else {
                    Treatment::Keep
                }
            })
            .collect();
        // Obstacle details only leave with their element.
        for leaf in 0..self.leaves.len() {
            if let Some(element) = self.leaves[leaf].element
                && plan[leaf] != Treatment::Drop
                && plan[element] == Treatment::Drop
            {
                return Err(self.error(
                    self.path(leaf),
                    format!(
                        "forwarded without its obstacle: allow {} (or {}.domain) too",
                        self.path(element),
                        self.path(element)
                    ),
                ));
            }
        }

        // What the schema requires, every policy forwards.
        let conditional = match self.message {
            MessageKind::Status => vec![
                (paths::S::RejectionReason.leaf(), "rejected"),
                (paths::S::Outcome.leaf(), "completed"),
            ],
            MessageKind::Referral => Vec::new(),
        };
        for (leaf, details) in self.leaves.iter().enumerate() {
            if details.schema_required
                && !matches!(plan[leaf], Treatment::Keep | Treatment::Pseudonymise(_))
            {
                return Err(self.error(
                    &details.path,
                    format!(
                        "required by the {} schema: every policy must allow it, or its output would not be a valid message",
                        self.schema.as_str()
                    ),
                ));
            }
        }
        for (leaf, status) in &conditional {
            if plan[*leaf] != Treatment::Keep {
                return Err(self.error(
                    self.path(*leaf),
                    format!(
                        "required by the {} schema for {status} events: every status policy must allow it",
                        self.schema.as_str()
                    ),
                ));
            }
        }

        // Replacements.
        let mut replacements = Vec::new();
        if !raw.replace.is_empty() && self.message != MessageKind::Referral {
            return Err(Error::config(
                file,
                "replace",
                "[[replace]] rules apply to referrals only",
            ));
        }
        let mut replace_removes: LeafSet = 0;
        for (index, rule) in raw.replace.iter().enumerate() {
            let key = format!("replace[{index}]");
            let words: Vec<Vec<String>> = rule
                .sender_name_words
                .iter()
                .map(|phrase| {
                    super::apply::words(&phrase.to_lowercase())
                        .map(str::to_owned)
                        .collect()
                })
                .collect();
            if words.is_empty() || words.iter().any(Vec::is_empty) {
                return Err(Error::config(
                    file,
                    &format!("{key}.sender_name_words"),
                    "at least one word, each with letters or digits",
                ));
            }
            let kind = match &rule.kind {
                Some(name) => Some(organisation_kind(file, &format!("{key}.kind"), name)?),
                None => None,
            };
            if rule.name.as_deref().is_some_and(|n| n.trim().is_empty()) {
                return Err(Error::config(
                    file,
                    &format!("{key}.name"),
                    "a name, not empty (leave it out to send no name)",
                ));
            }
            let mut remove: LeafSet = 0;
            for path in &rule.remove {
                if !path.starts_with("sender.") {
                    return Err(self.error(
                        path,
                        format!("in {key}.remove: a replace rule removes sender fields only"),
                    ));
                }
                remove |= self.resolve(&format!("{key}.remove"), path)?;
            }
            if let Some(leaf) = Self::indices(remove).find(|l| self.leaves[*l].schema_required) {
                return Err(self.error(
                    self.path(leaf),
                    format!(
                        "in {key}.remove, but required by the {} schema",
                        self.schema.as_str()
                    ),
                ));
            }
            replace_removes |= remove;
            for (leaf, set) in [
                (paths::R::SenderKind.leaf(), kind.is_some()),
                (paths::R::SenderName.leaf(), true),
            ] {
                if set
                    && plan[leaf] != Treatment::Drop
                    && !derived_paths.iter().any(|p| p == self.path(leaf))
                {
                    derived_paths.push(self.path(leaf).to_owned());
                }
            }
            replacements.push(Replacement {
                words,
                kind,
                name: rule.name.clone(),
                remove,
            });
        }
        // Requirements: the schema's, then the policy's.
        let mut required: Vec<Requirement> = self
            .leaves
            .iter()
            .enumerate()
            .filter(|(_, details)| details.schema_required)
            .map(|(leaf, details)| Requirement {
                path: details.path.clone(),
                leaves: bit(leaf),
                category: details.category,
                by_schema: true,
            })
            .collect();
        for path in &raw.required {
            let covered = self.resolve("required", path)?;
            let forwarded = Self::indices(covered)
                .filter(|l| plan[*l] != Treatment::Drop)
                .fold(0, |set, l| set | bit(l));
            if forwarded == 0 {
                return Err(self.error(
                    path,
                    "in required, but the policy forwards none of it: allow, pseudonymise or derive it (free text must also be in free_text; special data needs a derive rule)",
                ));
            }
            let mut categories = Self::indices(forwarded).map(|l| self.leaves[l].category);
            let category = categories.next().unwrap_or(DataCategory::FreeText);
            if let Some(other) = categories.find(|c| *c != category) {
                return Err(self.error(
                    path,
                    format!(
                        "in required, but it spans categories {} and {}: name a narrower path",
                        category.as_str(),
                        other.as_str()
                    ),
                ));
            }
            if let Some(leaf) = Self::indices(forwarded & replace_removes).next() {
                return Err(self.error(
                    path,
                    format!(
                        "in required, but a [[replace]] rule removes {}",
                        self.path(leaf)
                    ),
                ));
            }
            if required.iter().any(|r| r.leaves == forwarded) {
                continue;
            }
            required.push(Requirement {
                path: path.clone(),
                leaves: forwarded,
                category,
                by_schema: false,
            });
        }

        Ok(Policy {
            id: raw.id,
            version: raw.version,
            file: file.to_owned(),
            message: self.message,
            recipient,
            purpose: raw.purpose,
            denied,
            allowed: raw.allow,
            pseudonymised,
            keys,
            derived: derived_paths,
            free_text: raw.free_text,
            plan,
            required,
            replacements,
        })
    }
}
