//! A suite folder (`conformance/v1`) loaded and checked: its manifest, its
//! requirements, its organisations and its case files.
//!
//! A case file is JSON, checked against the suite's `schema/case.schema.json`
//! and then read into [`Case`]. Strings anywhere in a case may hold
//! placeholders, replaced when the case runs (see [`Placeholders`]):
//! - `{{id:NAME}}`: a fresh UUID per case run and per name, so that a suite
//!   runs again and again against the same gateway without reusing ids;
//! - `{{now}}`, `{{now-30d}}`, `{{now+2h}}`, `{{now-10m}}`, `{{now+5s}}`: the
//!   time of the case's start, shifted, in RFC 3339 (UTC, seconds).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use super::{Level, Requirement};

/// The topics a case folder may be named after.
pub const TOPICS: &[&str] = &[
    "schema",
    "formats",
    "consent",
    "minimisation",
    "special-categories",
    "idempotency",
    "tenancy",
    "delivery",
    "signatures",
    "status-lifecycle",
    "withdrawal",
];

/// `suite.json`: what the suite is and how a target takes part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The suite's name (`passerelle-conformance`).
    pub name: String,
    /// Its major version, also its folder name (`v1`).
    pub suite: String,
    /// Its release (semantic versioning; see the CHANGELOG).
    pub version: String,
    /// The address the runner's receiver listens on by default: the target
    /// pushes every organisation's messages to
    /// `http://{receiver_listen}/receiver/{organisation id}`.
    pub receiver_listen: String,
    /// The minimisation policies (id and version) the cases' expectations assume.
    pub policies: BTreeMap<String, String>,
}

/// One organisation the target must know (`fixtures/organisations.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Organisation {
    /// Its id, as the target's configuration names it.
    pub id: String,
    /// Its display name.
    pub name: String,
    /// Its SIRET.
    pub siret: String,
    /// Its kind (`association`, `france_travail`, `mission_locale`, ...).
    pub kind: String,
    /// The API key the runner authenticates with, published for the suite's
    /// use only (never a production key).
    pub api_key: String,
    /// The format its messages are pushed in (`passerelle-v2`, `france-travail`, ...).
    pub format: String,
}

/// A request of a case: a setup step (`given`) or the request under test (`when`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// The organisation whose API key authenticates the request; none sends no credentials.
    #[serde(rename = "as", default)]
    pub organisation: Option<String>,
    /// Replaces the organisation's key by this one (a wrong or revoked key).
    #[serde(default)]
    pub api_key: Option<String>,
    /// The HTTP method.
    pub method: String,
    /// The path and query, from the target's base URL (`/v1/referrals`).
    pub path: String,
    /// Extra headers (`content-type`, ...).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The body, if any.
    #[serde(default)]
    pub body: Option<Body>,
}

/// A request body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Body {
    /// A fixture file, relative to the suite's `fixtures/` folder: JSON,
    /// modified by `set` and `remove`; any other file is sent as text.
    #[serde(default)]
    pub fixture: Option<String>,
    /// A JSON value given inline.
    #[serde(default)]
    pub json: Option<serde_json::Value>,
    /// A text body given inline (CSV, malformed JSON ...).
    #[serde(default)]
    pub text: Option<String>,
    /// JSON pointer → value, set (created if missing) in a JSON body.
    #[serde(default)]
    pub set: BTreeMap<String, serde_json::Value>,
    /// JSON pointers removed from a JSON body.
    #[serde(default)]
    pub remove: Vec<String>,
}

/// What the runner's receiver does with the deliveries of a case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiverBehaviour {
    /// Answers `status` to this many first attempts of each message of the case.
    pub fail_first: u32,
    /// The status answered to those attempts (500, 503, 429 ...).
    pub status: u16,
    /// `when` is sent only once the receiver has refused an attempt of each
    /// of the case's referrals, so that it happens while they wait for a
    /// retry whatever the gateway's delivery pace.
    #[serde(default)]
    pub await_refusal: bool,
}

/// What the answer must be.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Then {
    /// The expected status.
    pub status: u16,
    /// For a problem answer: the last segment of the problem `type` URI
    /// (`consent-withdrawn`).
    #[serde(default)]
    pub problem_type: Option<String>,
    /// Headers the answer must carry, with these values (names in lower case).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Checks on the answer's JSON body.
    #[serde(default)]
    pub body: Option<JsonChecks>,
    /// What the runner's receiver must have received for the case.
    #[serde(default)]
    pub delivered: Vec<Delivery>,
}

/// Checks on a JSON document, by JSON pointer.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonChecks {
    /// Pointers that must resolve.
    #[serde(default)]
    pub present: Vec<String>,
    /// Pointers that must not resolve.
    #[serde(default)]
    pub absent: Vec<String>,
    /// Pointer → the value it must hold.
    #[serde(default)]
    pub equals: BTreeMap<String, serde_json::Value>,
}

impl JsonChecks {
    /// Whether there is nothing to check.
    pub fn is_empty(&self) -> bool {
        self.present.is_empty() && self.absent.is_empty() && self.equals.is_empty()
    }
}

/// What an organisation must have received for a case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Delivery {
    /// The organisation it was pushed to.
    pub to: String,
    /// The kind of message (`referral`, `status_event`), as the
    /// `passerelle-message-kind` header says.
    pub kind: String,
    /// The referral it belongs to, as the `passerelle-referral-id` header says.
    pub referral: String,
    /// How many distinct messages (distinct `webhook-id`s); 0 means nothing
    /// may arrive (checked after the run's settle time).
    pub count: usize,
    /// Checks on the last message received, by JSON pointer into its body.
    #[serde(default, flatten)]
    pub checks: JsonChecks,
    /// Pointers that must be present with a value other than the one at the
    /// same pointer in the `when` request's body.
    #[serde(default)]
    pub pseudonymised: Vec<String>,
}

/// A case file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// The JSON Schema the file follows (ignored by the runner).
    #[serde(rename = "$schema", default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// Its stable id, unique in the suite (also its file name).
    pub id: String,
    /// One line saying what it proves.
    pub title: String,
    /// The requirements it checks.
    pub requirements: Vec<String>,
    /// How binding it is (also the first folder of its path).
    pub level: Level,
    /// The suite release that introduced it.
    pub since: String,
    /// Set when the case is not run, with the reason.
    #[serde(default)]
    pub skip: Option<String>,
    /// Setup requests, in order; each must succeed (2xx).
    #[serde(default)]
    pub given: Vec<Request>,
    /// How the receiver answers the case's deliveries.
    #[serde(default)]
    pub receiver: Option<ReceiverBehaviour>,
    /// The request under test.
    pub when: Request,
    /// What must follow.
    pub then: Then,
    /// The topic: the folder under the level (set when loaded).
    #[serde(skip)]
    pub topic: String,
    /// The file it was read from (set when loaded).
    #[serde(skip)]
    pub file: PathBuf,
}

/// A loaded suite.
#[derive(Debug, Clone)]
pub struct Suite {
    /// Its folder.
    pub root: PathBuf,
    /// `suite.json`.
    pub manifest: Manifest,
    /// `requirements.json`.
    pub requirements: Vec<Requirement>,
    /// `fixtures/organisations.json`.
    pub organisations: Vec<Organisation>,
    /// Every case, ordered by level, topic and id.
    pub cases: Vec<Case>,
}

impl Suite {
    /// Loads and checks the suite in `root`: every file parses, every case
    /// follows the case schema, sits in `{level}/{topic}/{id}.json`, names
    /// known requirements and organisations, and every id is unique. Each
    /// problem names its file.
    pub fn load(root: &Path) -> Result<Self, String> {
        let manifest: Manifest = read_json(&root.join("suite.json"))?;
        let requirements: Vec<Requirement> = read_json(&root.join("requirements.json"))?;
        let organisations: Vec<Organisation> =
            read_json(&root.join("fixtures/organisations.json"))?;
        let schema_path = root.join("schema/case.schema.json");
        let schema: serde_json::Value = read_json(&schema_path)?;
        let validator = jsonschema::validator_for(&schema).map_err(|error| {
            format!(
                "{}: not a valid JSON Schema: {error}",
                schema_path.display()
            )
        })?;

        let mut problems = Vec::new();
        let mut requirement_ids = std::collections::HashSet::new();
        for requirement in &requirements {
            if !requirement_ids.insert(requirement.id.as_str()) {
                problems.push(format!(
                    "requirements.json: {} is listed twice",
                    requirement.id
                ));
            }
        }
        let organisation_ids: std::collections::HashSet<&str> = organisations
            .iter()
            .map(|organisation| organisation.id.as_str())
            .collect();

        let mut cases = Vec::new();
        let mut case_ids = HashMap::new();
        for level in [Level::Must, Level::Should, Level::May] {
            let level_dir = root.join("cases").join(level.as_str());
            for topic_dir in sorted_entries(&level_dir)? {
                let topic = file_name(&topic_dir);
                if !TOPICS.contains(&topic.as_str()) {
                    problems.push(format!("{}: not a topic of the suite", topic_dir.display()));
                    continue;
                }
                for file in sorted_entries(&topic_dir)? {
                    let shown = file
                        .strip_prefix(root)
                        .unwrap_or(&file)
                        .display()
                        .to_string();
                    if file.extension().is_none_or(|extension| extension != "json") {
                        problems.push(format!("{shown}: a case file ends in .json"));
                        continue;
                    }
                    let document: serde_json::Value = read_json(&file)?;
                    let errors: Vec<String> = validator
                        .iter_errors(&document)
                        .map(|error| format!("{shown}: at {}: {error}", error.instance_path()))
                        .collect();
                    if !errors.is_empty() {
                        problems.extend(errors);
                        continue;
                    }
                    let mut case: Case = match serde_json::from_value(document) {
                        Ok(case) => case,
                        Err(error) => {
                            problems.push(format!("{shown}: {error}"));
                            continue;
                        }
                    };
                    case.topic = topic.clone();
                    case.file = file.clone();
                    if case.level != level {
                        problems.push(format!(
                            "{shown}: level {} but filed under {}",
                            case.level.as_str(),
                            level.as_str()
                        ));
                    }
                    if file.file_stem().and_then(|stem| stem.to_str()) != Some(case.id.as_str()) {
                        problems.push(format!(
                            "{shown}: the file is not named after its id {}",
                            case.id
                        ));
                    }
                    if let Some(other) = case_ids.insert(case.id.clone(), shown.clone()) {
                        problems.push(format!("{shown}: id {} already used by {other}", case.id));
                    }
                    for requirement in &case.requirements {
                        if !requirement_ids.contains(requirement.as_str()) {
                            problems.push(format!("{shown}: unknown requirement {requirement}"));
                        }
                    }
                    for organisation in case
                        .given
                        .iter()
                        .chain(std::iter::once(&case.when))
                        .filter_map(|request| request.organisation.as_deref())
                        .chain(
                            case.then
                                .delivered
                                .iter()
                                .map(|delivery| delivery.to.as_str()),
                        )
                    {
                        if !organisation_ids.contains(organisation) {
                            problems.push(format!("{shown}: unknown organisation {organisation}"));
                        }
                    }
                    for fixture in case
                        .given
                        .iter()
                        .chain(std::iter::once(&case.when))
                        .filter_map(|request| request.body.as_ref()?.fixture.as_deref())
                    {
                        if !root.join("fixtures").join(fixture).is_file() {
                            problems.push(format!("{shown}: no fixture {fixture}"));
                        }
                    }
                    cases.push(case);
                }
            }
        }
        if problems.is_empty() {
            Ok(Self {
                root: root.to_owned(),
                manifest,
                requirements,
                organisations,
                cases,
            })
        } else {
            Err(problems.join("\n"))
        }
    }

    /// The organisation with this id.
    pub fn organisation(&self, id: &str) -> Option<&Organisation> {
        self.organisations
            .iter()
            .find(|organisation| organisation.id == id)
    }
}

/// The placeholders of one case run.
#[derive(Debug)]
pub struct Placeholders {
    now: DateTime<Utc>,
    ids: HashMap<String, String>,
}

impl Placeholders {
    /// Fresh ids, and `now` as the case's start.
    pub fn new(now: DateTime<Utc>) -> Self {
        Self {
            now,
            ids: HashMap::new(),
        }
    }

    /// `text` with every placeholder replaced; an unknown placeholder is an
    /// error naming it.
    pub fn fill(&mut self, text: &str) -> Result<String, String> {
        let mut filled = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            filled.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after
                .find("}}")
                .ok_or_else(|| format!("an unclosed placeholder in {text:?}"))?;
            filled.push_str(&self.value(&after[..end])?);
            rest = &after[end + 2..];
        }
        filled.push_str(rest);
        Ok(filled)
    }

    /// Every string of `value` filled.
    pub fn fill_json(&mut self, value: &serde_json::Value) -> Result<serde_json::Value, String> {
        Ok(match value {
            serde_json::Value::String(text) => serde_json::Value::String(self.fill(text)?),
            serde_json::Value::Array(items) => serde_json::Value::Array(
                items
                    .iter()
                    .map(|item| self.fill_json(item))
                    .collect::<Result<_, _>>()?,
            ),
            serde_json::Value::Object(fields) => serde_json::Value::Object(
                fields
                    .iter()
                    .map(|(key, item)| Ok((key.clone(), self.fill_json(item)?)))
                    .collect::<Result<_, String>>()?,
            ),
            other => other.clone(),
        })
    }

    fn value(&mut self, placeholder: &str) -> Result<String, String> {
        if let Some(name) = placeholder.strip_prefix("id:") {
            return Ok(self
                .ids
                .entry(name.to_owned())
                .or_insert_with(|| uuid::Uuid::new_v4().to_string())
                .clone());
        }
        let Some(shift) = placeholder.strip_prefix("now") else {
            return Err(format!("unknown placeholder {{{{{placeholder}}}}}"));
        };
        let at = if shift.is_empty() {
            self.now
        } else {
            self.now
                + parse_shift(shift)
                    .ok_or_else(|| format!("unknown placeholder {{{{{placeholder}}}}}"))?
        };
        Ok(at.to_rfc3339_opts(SecondsFormat::Secs, true))
    }
}

/// `+30d`, `-2h`, `-10m`, `+5s`.
fn parse_shift(shift: &str) -> Option<chrono::Duration> {
    let (sign, rest) = match shift.as_bytes().first()? {
        b'+' => (1, &shift[1..]),
        b'-' => (-1, &shift[1..]),
        _ => return None,
    };
    let unit = rest.chars().last()?;
    let amount: i64 = rest[..rest.len() - 1].parse().ok()?;
    let duration = match unit {
        'd' => chrono::Duration::days(amount),
        'h' => chrono::Duration::hours(amount),
        'm' => chrono::Duration::minutes(amount),
        's' => chrono::Duration::seconds(amount),
        _ => return None,
    };
    Some(duration * sign)
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| format!("{}: cannot be read: {error}", path.display()))?;
    serde_json::from_str(&text).map_err(|error| format!("{}: {error}", path.display()))
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, String> {
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut entries = std::fs::read_dir(dir)
        .map_err(|error| format!("{}: cannot be listed: {error}", dir.display()))?
        .map(|entry| entry.map(|entry| entry.path()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| format!("{}: cannot be listed: {error}", dir.display()))?;
    entries.sort();
    Ok(entries)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_give_one_id_per_name_and_shifted_times() {
        let now = DateTime::parse_from_rfc3339("2026-11-28T10:00:00Z")
            .expect("a time")
            .with_timezone(&Utc);
        let mut placeholders = Placeholders::new(now);
        let first = placeholders.fill("{{id:referral}}").expect("filled");
        assert_eq!(
            placeholders
                .fill("/v1/referrals/{{id:referral}}")
                .expect("filled"),
            format!("/v1/referrals/{first}")
        );
        assert_ne!(placeholders.fill("{{id:other}}").expect("filled"), first);
        assert_eq!(
            placeholders.fill("{{now-1d}}").expect("filled"),
            "2026-11-27T10:00:00Z"
        );
        assert_eq!(
            placeholders.fill("at {{now+2h}}.").expect("filled"),
            "at 2026-11-28T12:00:00Z."
        );
        assert!(placeholders.fill("{{nope}}").is_err());
        assert!(placeholders.fill("{{now*2}}").is_err());
        assert!(placeholders.fill("{{id:open").is_err());
    }
}
