//! Minimisation policies: what one recipient (or kind of recipient) receives
//! for one purpose, and in what form. One TOML file per recipient and purpose
//! under `config/policies/`, versioned; `docs/policies.md` explains the
//! choices of the shipped ones.
//!
//! # File format
//! ```toml
//! id = "france-travail-orientation"      # lower case, digits and hyphens; by convention the file stem
//! version = "2026-11-1"                  # any text without spaces; reports and the audit log carry it
//! message = "referral"                   # or "status": the message the policy minimises
//! recipient = { kind = "france_travail" } # or { siret = "13000548100002" }
//! purpose = "dpv:ServiceProvision"       # the purpose term, as in consent records
//! deny = ["nir"]                         # optional: categories never forwarded, whatever allow covers
//! allow = ["referral_id", "person.first_name", "identifiers.france_travail"]
//! pseudonymise = [{ path = "identifiers.departement", key = "env:PASSERELLE_PSEUDONYM_KEY" }]
//! required = ["identifiers.france_travail"]
//! free_text = ["reason"]                 # free-text paths that may leave; must also be allowed
//!
//! [[special]]                            # GDPR Art. 9 data: drop, or derive a coarser value
//! path = "obstacles.health"
//! rule = "derive"
//!
//! [[replace]]                            # hide a sensitive sender behind a neutral one
//! sender_name_words = ["CSAPA", "SPIP"]  # whole words of sender.organisation.name, any case
//! kind = "other"                         # optional: the kind sent instead
//! name = "Autre"                         # optional: the name sent instead (omitted: no name)
//! remove = ["sender.referent.email"]     # optional: paths removed as well when the rule applies
//! ```
//! Paths are field paths (see [`crate::model::categories`]): a path covers its
//! subtree. Minimisation decides on *leaves*: scalar fields, lists of scalars,
//! one kind of identifier (`identifiers.caf`, kind and value together), one
//! obstacle domain (`obstacles.housing`, kept by naming it or its `domain`
//! field) and its details (`obstacles.housing.impact`, `.source_label`, which
//! only leave with their element). A path inside a leaf
//! (`identifiers.caf.value`) is an error.
//!
//! A field leaves when its path is allowed (or pseudonymised, or derived) *and*
//! the consent grant allows its category ([`Grant::allows`](crate::decision::Grant::allows)): the data
//! forwarded is the intersection of the policy and the record.
//! - `pseudonymise`: the value is replaced by HMAC-SHA256(key, value) in
//!   lower-case hexadecimal. Only free-form string leaves take a pseudonym
//!   (names, city, CAF/MSA/i-milo/département identifiers, ...): a checked
//!   value (France Travail number, NIR, email, SIRET) would stop being valid.
//!   Special categories and free text are never pseudonymised. The key is named
//!   by reference ([`KeyReference`]) and read by the [`KeyRing`].
//! - `free_text`: free-text leaves (category `free_text`) are dropped unless
//!   listed here and allowed.
//! - `[[special]]`: special-category leaves (Art. 9: `disability`,
//!   `obstacle_health`) leave only through a rule, and only under a grant with
//!   an Art. 9 basis. `drop` drops; `derive` sends the coarser value defined
//!   per path: `situation.recognised_disability` stays the boolean "has a
//!   recognised disability" (the canonical model already folds RQTH, BOE, AAH
//!   and ESAT into it, so no more detail exists to strip) and is reported as
//!   derived; `obstacles.health` becomes one obstacle `{domain: HEALTH}`
//!   whatever the number of health obstacles, without impact (severity) or
//!   source label (the sender's wording may name a diagnosis). A special leaf
//!   covered only through a parent (`allow = ["obstacles"]`) without a rule is
//!   dropped; one named in `allow` without a rule is a load error.
//! - `[[replace]]`: when the sender's name contains one of the words, its kind
//!   and name are replaced (reported as derived) and the `remove` paths are
//!   dropped. This is les-emplois' rule of sending France Travail "Autre"
//!   instead of CSAPA, CAARUD, SPIP, PJJ... prescriber kinds. The SIRET, which
//!   the schema requires, still identifies the sender.
//! - `required`: paths without which the referral is useless to the recipient;
//!   if minimisation or consent removes one (or the input lacks it),
//!   minimisation refuses with an explanation instead of forwarding. The
//!   fields the message schema requires are always required, and every policy
//!   must allow them, so that the output stays a valid message.
//!
//! Loading checks everything and names the file and the path in each error:
//! unknown paths and categories, malformed key references, a path both allowed
//! and pseudonymised, a pseudonym on a leaf it does not fit, special data
//! allowed without a rule, required paths the policy does not forward.

use std::collections::BTreeSet;
use std::path::Path;

use crate::error::Error;
use crate::model::categories::DataCategory;
use crate::model::common::{Organisation, OrganisationKind};
use crate::model::ids::Siret;
use crate::validate::SchemaName;

mod apply;
mod file;
mod paths;
mod pseudonym;

pub use pseudonym::{KeyReference, KeyRing, MIN_KEY_BYTES};

use paths::LeafSet;

/// The message a policy minimises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    /// Referrals (`referral/v2`).
    Referral,
    /// Status events (`status/v1`).
    Status,
}

impl MessageKind {
    /// The schema of the message.
    pub fn schema(self) -> SchemaName {
        match self {
            Self::Referral => SchemaName::ReferralV2,
            Self::Status => SchemaName::StatusV1,
        }
    }

    /// The name policies use (`referral`, `status`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Referral => "referral",
            Self::Status => "status",
        }
    }
}

/// Who a policy is for: one organisation or every organisation of a kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecipientSelector {
    /// One organisation, by SIRET.
    Siret(Siret),
    /// Every organisation of a kind.
    Kind(OrganisationKind),
}

impl RecipientSelector {
    /// Whether the organisation is selected.
    pub fn matches(&self, organisation: &Organisation) -> bool {
        match self {
            Self::Siret(siret) => *siret == organisation.siret,
            Self::Kind(kind) => *kind == organisation.kind,
        }
    }
}

/// What a policy does with one leaf, before the grant is considered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Treatment {
    /// Never forwarded.
    Drop,
    /// Forwarded as is.
    Keep,
    /// Replaced by a pseudonym under the key of that slot.
    Pseudonymise(usize),
    /// Replaced by its coarser value (special categories).
    Derive,
}

/// A path the recipient needs: minimisation refuses when none of its leaves
/// reaches the output.
#[derive(Debug, Clone)]
struct Requirement {
    path: String,
    /// The leaves of the path that the policy forwards.
    leaves: LeafSet,
    /// Their category (one per required path).
    category: DataCategory,
    /// Required by the message schema rather than by the policy.
    by_schema: bool,
}

/// A `[[replace]]` rule.
#[derive(Debug, Clone)]
struct Replacement {
    /// Lower-case words or phrases, each as its words.
    words: Vec<Vec<String>>,
    kind: Option<OrganisationKind>,
    name: Option<String>,
    remove: LeafSet,
}

/// A loaded, checked minimisation policy.
#[derive(Debug, Clone)]
pub struct Policy {
    id: String,
    version: String,
    file: String,
    message: MessageKind,
    recipient: RecipientSelector,
    purpose: String,
    denied: BTreeSet<DataCategory>,
    allowed: Vec<String>,
    pseudonymised: Vec<(String, usize)>,
    keys: Vec<KeyReference>,
    derived: Vec<String>,
    free_text: Vec<String>,
    plan: Vec<Treatment>,
    required: Vec<Requirement>,
    replacements: Vec<Replacement>,
}

impl Policy {
    /// Reads and checks a policy file.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            context: format!("reading policy {file}"),
            source,
        })?;
        Self::parse(&text, &file)
    }

    /// Checks a policy given as TOML text. `file_name` names it in errors and
    /// its folder is where relative key files are found. Reads nothing: keys
    /// are read by [`KeyRing::load`].
    pub fn parse(text: &str, file_name: &str) -> Result<Self, Error> {
        file::parse(text, file_name)
    }

    /// The policy id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Its version.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The file it was read from, as given.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// The message it minimises.
    pub fn message(&self) -> MessageKind {
        self.message
    }

    /// Who it is for.
    pub fn recipient(&self) -> &RecipientSelector {
        &self.recipient
    }

    /// The purpose term (`dpv:ServiceProvision`).
    pub fn purpose(&self) -> &str {
        &self.purpose
    }

    /// Whether this is the policy for that recipient and purpose.
    pub fn applies_to(&self, recipient: &Organisation, purpose: &str) -> bool {
        self.purpose == purpose && self.recipient.matches(recipient)
    }

    /// The categories of the required paths (those of the schema-required
    /// fields included), which the consent record must cover.
    pub fn required_categories(&self) -> BTreeSet<DataCategory> {
        self.required.iter().map(|r| r.category).collect()
    }

    /// The required paths: the schema's, then the policy's.
    pub fn required(&self) -> impl Iterator<Item = &str> {
        self.required.iter().map(|r| r.path.as_str())
    }

    /// The categories never forwarded.
    pub fn denied(&self) -> &BTreeSet<DataCategory> {
        &self.denied
    }

    /// The allowed paths, as written.
    pub fn allowed(&self) -> &[String] {
        &self.allowed
    }

    /// The pseudonymised paths and their key references.
    pub fn pseudonymised(&self) -> impl Iterator<Item = (&str, &KeyReference)> {
        self.pseudonymised
            .iter()
            .map(|(path, slot)| (path.as_str(), &self.keys[*slot]))
    }

    /// The paths whose values may be replaced by coarser ones: `derive`
    /// special rules and the fields `[[replace]]` rules set.
    pub fn derived(&self) -> &[String] {
        &self.derived
    }

    /// The free-text paths that may leave.
    pub fn free_text(&self) -> &[String] {
        &self.free_text
    }
}

#[cfg(test)]
mod tests;
