//! Personal data masked out of what a conformance report shows.
//!
//! A report travels: it is attached to a CI run, mailed to an integrator,
//! pasted in an issue. The bodies it shows are the suite's fixtures, but also
//! whatever the target answered or pushed, so masking is **by default**: every
//! value is hidden unless it is known to be structural. A list of personal
//! fields would miss the one a target invents; a list of structural keys can
//! only fail by showing too little.
//!
//! # JSON bodies
//! Every string, number and boolean leaf becomes `"***"` (a boolean such as
//! `recognised_disability` is health data), `null` stays `null` (it shows a
//! field's absence, never a value), keys stay, and the document is shown
//! pretty-printed (members in key order: the value is re-serialised, not the
//! bytes received). A leaf is kept when one of these holds:
//! - its key is in [`KEPT_KEYS`]: ids of the documents exchanged, schema
//!   versions and formats, the gateway's answers (states, roles, counts,
//!   cursors), decision reports (policy, and the field *paths* removed,
//!   pseudonymised or derived), the scope of a consent record (legal basis,
//!   purposes, data categories, validity), organisation SIRETs, and the
//!   structure of problem documents (type, status, pointers, rules, lines).
//!   A kept key keeps the scalars of an array under it (`removed` lists
//!   paths); objects under it are masked key by key like any other.
//! - it is inside an RFC 9457 problem document (an object with a string
//!   `type` and a `title`) and its key is `title`, `detail` or `reason`
//!   ([`PROBLEM_KEYS`]): the gateway's problem texts name fields and rules,
//!   never input values, and a refusal `reason` is a code. Outside a problem,
//!   `reason` is the referral's free-text reason and is masked.
//! - it belongs to a canonical referral or status event (an object whose
//!   `schema_version` names one) and its field path is declared in a data
//!   category that is not personal
//!   ([`DataCategory::is_personal`](crate::model::categories::DataCategory::is_personal)): the
//!   referral's own facts (`created_at`, `sender.organisation.name`,
//!   `recipient.service_id`, `pathway`) and a status event's status fields.
//!   The protos declare these categories once; this module only reads them.
//!
//! A body that does not parse as JSON but says it is JSON (a malformed body a
//! case sends on purpose) is masked token by token: keys stay, every string,
//! number and bare word but `null` becomes `***`.
//!
//! # Other bodies
//! - CSV (`text/csv`): the first line (the header, column names) stays; every
//!   non-empty cell of the other lines becomes `***`, empty cells stay empty.
//! - Other text: every non-blank line becomes `***`; unlike CSV, its first
//!   line is as likely to be data as a title.
//! - Protobuf and other binary bodies: `<N bytes, binary, not shown>`.
//! - A body of no declared type is read as JSON if it parses, as text if it is
//!   UTF-8 text, as binary otherwise.
//!
//! What is shown is cut at [`MAX_SHOWN_BYTES`], with a note giving the size.
//!
//! # Headers
//! Credentials (`authorization`, `proxy-authorization`, `cookie`,
//! `set-cookie`, `x-api-key`) and `webhook-signature` become `***`; other
//! headers (content type, ids, `webhook-id`, `location`) are structural and
//! stay.
//!
//! Keys themselves are always shown: they are field names in every format the
//! gateway takes, never values.

use serde_json::Value;

use crate::model::categories::{category_of, is_known_path};
use crate::validate::SchemaName;

/// What replaces a masked value.
pub const MASK: &str = "***";

/// How much of a masked body a report shows (64 KiB).
pub const MAX_SHOWN_BYTES: usize = 64 * 1024;

/// Keys whose scalar values are structural and shown wherever they appear.
pub const KEPT_KEYS: &[&str] = &[
    // Ids and versions of the documents exchanged (UUIDs chosen by the
    // sender or the gateway, never derived from the person).
    "schema_version",
    "referral_id",
    "record_id",
    "consent_record_id",
    "consent_reference",
    "event_id",
    "delivery_id",
    "format",
    "format_version",
    // The gateway's answers: states, roles, counts, replays, inbox leases.
    "state",
    "status",
    "role",
    "kind",
    "replayed",
    "forwarded",
    "accepted",
    "refused",
    "accepted_at",
    "attempt",
    "cursor",
    "lease_until",
    // Decision reports: the policy applied and the field paths it touched.
    "policy_id",
    "policy_version",
    "removed",
    "pseudonymised",
    "derived",
    "legal_basis",
    // The scope of a consent record.
    "purposes",
    "data_categories",
    "valid_from",
    "valid_until",
    // Organisations (associations and public bodies), by SIRET.
    "siret",
    "author_siret",
    "controllers",
    "recorded_by",
    "collected_by",
    // The structure of problem documents and their violations.
    "type",
    "instance",
    "errors",
    "pointer",
    "rule",
    "code",
    "line",
    "column",
    "retry_after",
];

/// Keys shown only inside a problem document.
pub const PROBLEM_KEYS: &[&str] = &["title", "detail", "reason"];

/// Credential and signature headers, whose values are never shown.
const SECRET_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
    "webhook-signature",
];

/// A body as a report may show it: masked (see the module documentation),
/// cut at [`MAX_SHOWN_BYTES`]. An empty body gives an empty string.
pub fn mask_body(content_type: Option<&str>, body: &[u8]) -> String {
    if body.is_empty() {
        return String::new();
    }
    let shown = match BodyKind::of(content_type, body) {
        BodyKind::Json => mask_json(body),
        BodyKind::Csv => mask_csv(body),
        BodyKind::Text => mask_text(body),
        BodyKind::Binary => return format!("<{} bytes, binary, not shown>", body.len()),
    };
    cut(shown, body.len())
}

/// Headers as a report may show them: credentials and signatures replaced by
/// `***`, names as given.
pub fn mask_headers(headers: &[(String, String)]) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(name, value)| {
            let secret = SECRET_HEADERS
                .iter()
                .any(|secret| name.eq_ignore_ascii_case(secret));
            let value = if secret { MASK } else { value.as_str() };
            (name.clone(), value.to_owned())
        })
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyKind {
    Json,
    Csv,
    Text,
    Binary,
}

impl BodyKind {
    fn of(content_type: Option<&str>, body: &[u8]) -> Self {
        let media_type = content_type
            .and_then(|value| value.split(';').next())
            .map(|value| value.trim().to_ascii_lowercase())
            .unwrap_or_default();
        let media_type = media_type.as_str();
        if media_type == "application/json" || media_type.ends_with("+json") {
            Self::Json
        } else if media_type == "text/csv" {
            Self::Csv
        } else if media_type.ends_with("protobuf")
            || media_type.starts_with("application/grpc")
            || media_type == "application/octet-stream"
        {
            Self::Binary
        } else if media_type.starts_with("text/") {
            Self::Text
        } else if serde_json::from_slice::<Value>(body).is_ok() {
            Self::Json
        } else if is_text(body) {
            Self::Text
        } else {
            Self::Binary
        }
    }
}

/// UTF-8 without control characters other than tabs and line ends.
fn is_text(body: &[u8]) -> bool {
    std::str::from_utf8(body).is_ok_and(|text| {
        text.chars()
            .all(|c| !c.is_control() || matches!(c, '\t' | '\r' | '\n'))
    })
}

/// What a masked body becomes past [`MAX_SHOWN_BYTES`].
fn cut(shown: String, original_len: usize) -> String {
    if shown.len() <= MAX_SHOWN_BYTES {
        return shown;
    }
    let mut end = MAX_SHOWN_BYTES;
    while !shown.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}\n[... cut: the body is {original_len} bytes; only the first {} KiB of its masked \
         form are shown]",
        &shown[..end],
        MAX_SHOWN_BYTES / 1024
    )
}

fn mask_json(body: &[u8]) -> String {
    match serde_json::from_slice::<Value>(body) {
        Ok(mut value) => {
            mask_value(&mut value, false, &Context::default());
            serde_json::to_string_pretty(&value)
                .unwrap_or_else(|_| mask_json_tokens(&String::from_utf8_lossy(body)))
        }
        Err(_) => mask_json_tokens(&String::from_utf8_lossy(body)),
    }
}

/// Where a JSON value sits.
#[derive(Debug, Clone, Default)]
struct Context {
    /// The canonical document it belongs to, with its field path there.
    document: Option<(SchemaName, String)>,
    /// Whether it is inside a problem document.
    in_problem: bool,
}

/// Masks a value in place; `kept` says its key keeps its scalars.
fn mask_value(value: &mut Value, kept: bool, context: &Context) {
    match value {
        Value::Null => {}
        Value::Bool(_) | Value::Number(_) | Value::String(_) => {
            if !kept {
                *value = Value::String(MASK.to_owned());
            }
        }
        Value::Array(items) => {
            for item in items {
                mask_value(item, kept, context);
            }
        }
        Value::Object(members) => {
            let mut inner = context.clone();
            if let Some(schema) = members
                .get("schema_version")
                .and_then(Value::as_str)
                .and_then(schema_of_version)
            {
                inner.document = Some((schema, String::new()));
            }
            if members.get("type").is_some_and(Value::is_string) && members.contains_key("title") {
                inner.in_problem = true;
            }
            for (key, member) in members.iter_mut() {
                let mut context = inner.clone();
                if let Some((_, path)) = &mut context.document {
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(key);
                }
                let kept = is_kept(key, &context);
                mask_value(member, kept, &context);
            }
        }
    }
}

fn is_kept(key: &str, context: &Context) -> bool {
    KEPT_KEYS.contains(&key)
        || (context.in_problem && PROBLEM_KEYS.contains(&key))
        || context.document.as_ref().is_some_and(|(schema, path)| {
            is_known_path(*schema, path)
                && category_of(*schema, path).is_some_and(|category| !category.is_personal())
        })
}

/// The canonical schema a `schema_version` names; consent records have no
/// field categories and are masked by key only.
fn schema_of_version(version: &str) -> Option<SchemaName> {
    SchemaName::ALL
        .iter()
        .copied()
        .find(|schema| schema.schema_version() == version)
}

/// Masks a body that claims to be JSON but does not parse: keys (strings
/// followed by `:`) stay, other strings, numbers and bare words but `null`
/// become `***`, punctuation and white space stay.
fn mask_json_tokens(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut shown = String::with_capacity(text.len());
    let mut at = 0;
    while at < chars.len() {
        let c = chars[at];
        if c == '"' {
            let mut end = at + 1;
            let mut closed = false;
            while end < chars.len() {
                match chars[end] {
                    '\\' => end += 2,
                    '"' => {
                        closed = true;
                        break;
                    }
                    _ => end += 1,
                }
            }
            if !closed {
                shown.push('"');
                shown.push_str(MASK);
                break;
            }
            let next = chars[end + 1..].iter().find(|c| !c.is_whitespace());
            if next == Some(&':') {
                shown.extend(&chars[at..=end]);
            } else {
                shown.push('"');
                shown.push_str(MASK);
                shown.push('"');
            }
            at = end + 1;
        } else if c.is_alphanumeric() || c == '-' || c == '_' || c == '+' || c == '.' {
            let mut end = at;
            while end < chars.len()
                && (chars[end].is_alphanumeric() || matches!(chars[end], '-' | '_' | '+' | '.'))
            {
                end += 1;
            }
            let word: String = chars[at..end].iter().collect();
            shown.push_str(if word == "null" { "null" } else { MASK });
            at = end;
        } else {
            shown.push(c);
            at += 1;
        }
    }
    shown
}

/// The header line as sent; every non-empty cell of the other records masked.
fn mask_csv(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let (header, rest) = text.split_once('\n').unwrap_or((&text, ""));
    let header = header.strip_suffix('\r').unwrap_or(header);
    let delimiter = [b';', b',', b'\t', b'|']
        .into_iter()
        .max_by_key(|delimiter| header.bytes().filter(|b| b == delimiter).count())
        .filter(|delimiter| header.as_bytes().contains(delimiter))
        .unwrap_or(b',');
    let mut shown = header.to_owned();
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(delimiter)
        .from_reader(rest.as_bytes());
    for record in reader.byte_records() {
        shown.push('\n');
        match record {
            Ok(record) => {
                let cells: Vec<&str> = record
                    .iter()
                    .map(|cell| if cell.is_empty() { "" } else { MASK })
                    .collect();
                shown.push_str(&cells.join(&char::from(delimiter).to_string()));
            }
            Err(_) => {
                shown.push_str("*** (the rest is not readable as CSV and is not shown)");
                break;
            }
        }
    }
    shown
}

/// Every non-blank line masked.
fn mask_text(body: &[u8]) -> String {
    String::from_utf8_lossy(body)
        .lines()
        .map(|line| if line.trim().is_empty() { "" } else { MASK })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Recognisable fake personal values: none may survive masking.
    const PERSONAL: &[&str] = &[
        "Camille",
        "Exemple",
        "camille.exemple@example.org",
        "0612345678",
        "06 12 34 56 78",
        "2840575123456",
        "1984-05-07",
        "07/05/1984",
        "Souhaite reprendre une formation",
        "IODAS-93-000001",
        "93200",
        "Saint-Denis",
        "Claire",
        "claire.referente@example.org",
    ];

    fn assert_no_personal_value(shown: &str) {
        for value in PERSONAL {
            assert!(!shown.contains(value), "{value} survived masking:\n{shown}");
        }
    }

    fn referral() -> Value {
        serde_json::json!({
            "referral_id": "0b6f1c2e-7d4a-4e59-9c1b-3a2d5e8f9a10",
            "schema_version": "passerelle.referral.v2",
            "created_at": "2026-12-01T09:15:00Z",
            "sender": {
                "organisation": {
                    "siret": "81234567800013",
                    "kind": "ORGANISATION_KIND_ASSOCIATION",
                    "name": "Association du Quartier"
                },
                "referent": {
                    "first_name": "Claire",
                    "last_name": "Exemple",
                    "email": "claire.referente@example.org",
                    "phone": "0102030405"
                }
            },
            "recipient": {
                "organisation": {"siret": "13000548100002", "kind": "ORGANISATION_KIND_FRANCE_TRAVAIL"},
                "service_id": "dora--immersion-numerique"
            },
            "person": {
                "first_name": "Camille",
                "last_name": "Exemple",
                "birth_date": "1984-05-07",
                "contact": {
                    "phone": "0612345678",
                    "email": "camille.exemple@example.org",
                    "preferences": ["CONTACT_PREFERENCE_PHONE"]
                },
                "address": {"postal_code": "93200", "city": "Saint-Denis"}
            },
            "identifiers": [
                {"kind": "IDENTIFIER_KIND_NIR", "value": "2840575123456"},
                {"kind": "IDENTIFIER_KIND_DEPARTEMENT", "value": "IODAS-93-000001"}
            ],
            "situation": {
                "rsa_beneficiary": true,
                "recognised_disability": true,
                "other": "Souhaite reprendre une formation"
            },
            "obstacles": [{"domain": "OBSTACLE_DOMAIN_HEALTH", "source_label": "Souhaite reprendre une formation"}],
            "pathway": "PATHWAY_SOCIO_PROFESSIONAL",
            "reason": "Souhaite reprendre une formation, contact Camille Exemple",
            "consent_reference": "7f3c9a2b-1d4e-4f60-8a9b-0c1d2e3f4a5b"
        })
    }

    fn masked(value: &Value) -> Value {
        let shown = mask_body(
            Some("application/vnd.passerelle.referral.v2+json"),
            value.to_string().as_bytes(),
        );
        assert_no_personal_value(&shown);
        serde_json::from_str(&shown).expect("masked JSON stays JSON")
    }

    #[test]
    fn a_referral_keeps_its_structure_and_loses_every_personal_value() {
        let shown = masked(&referral());
        let at = |pointer: &str| shown.pointer(pointer).cloned().unwrap_or(Value::Null);
        // Structural: ids, versions, organisations, kinds, the referral's facts.
        assert_eq!(at("/referral_id"), "0b6f1c2e-7d4a-4e59-9c1b-3a2d5e8f9a10");
        assert_eq!(at("/schema_version"), "passerelle.referral.v2");
        assert_eq!(at("/created_at"), "2026-12-01T09:15:00Z");
        assert_eq!(at("/sender/organisation/siret"), "81234567800013");
        assert_eq!(at("/sender/organisation/name"), "Association du Quartier");
        assert_eq!(at("/recipient/service_id"), "dora--immersion-numerique");
        assert_eq!(at("/identifiers/0/kind"), "IDENTIFIER_KIND_NIR");
        assert_eq!(at("/pathway"), "PATHWAY_SOCIO_PROFESSIONAL");
        assert_eq!(
            at("/consent_reference"),
            "7f3c9a2b-1d4e-4f60-8a9b-0c1d2e3f4a5b"
        );
        // Personal, including booleans and enum values of special categories.
        for pointer in [
            "/person/first_name",
            "/person/birth_date",
            "/person/contact/preferences/0",
            "/sender/referent/phone",
            "/identifiers/0/value",
            "/situation/rsa_beneficiary",
            "/situation/recognised_disability",
            "/obstacles/0/domain",
            "/reason",
        ] {
            assert_eq!(at(pointer), MASK, "{pointer}");
        }
    }

    #[test]
    fn gateway_answers_keep_decisions_problems_and_states() {
        let decision = serde_json::json!({
            "referral_id": "0b6f1c2e-7d4a-4e59-9c1b-3a2d5e8f9a10",
            "state": "queued",
            "decision": {
                "policy_id": "france-travail-orientation",
                "policy_version": "2026-11-1",
                "removed": ["person.birth_name", "identifiers.nir"],
                "pseudonymised": ["identifiers.departement"],
                "derived": [],
                "consent_record_id": "7f3c9a2b-1d4e-4f60-8a9b-0c1d2e3f4a5b",
                "legal_basis": "consent"
            }
        });
        assert_eq!(masked(&decision), decision);

        let problem = serde_json::json!({
            "type": "https://passerelle.eu/problems/refused",
            "title": "Consent or policy refuses the referral",
            "status": 422,
            "detail": "the consent record was withdrawn",
            "reason": "consent-withdrawn",
            "violations": [{"pointer": "/person/birth_date", "rule": "format", "detail": "not a date", "line": 3, "column": 4}]
        });
        assert_eq!(masked(&problem), problem);

        let batch = serde_json::json!({
            "accepted": 1, "refused": 1,
            "rows": [
                {"line": 2, "status": 202, "referral_id": "0b6f1c2e-7d4a-4e59-9c1b-3a2d5e8f9a10", "state": "queued"},
                {"line": 3, "status": 403, "problem": {"type": "https://passerelle.eu/problems/forbidden", "title": "Forbidden", "status": 403}}
            ]
        });
        assert_eq!(masked(&batch), batch);
    }

    #[test]
    fn problem_texts_are_kept_only_inside_problems() {
        let shown = masked(&serde_json::json!({
            "title": "Camille Exemple",
            "detail": "Camille Exemple",
            "problem": {"type": "https://passerelle.eu/problems/validation", "title": "Invalid", "detail": "2 violation(s)"}
        }));
        assert_eq!(shown["title"], MASK);
        assert_eq!(shown["detail"], MASK);
        assert_eq!(shown["problem"]["detail"], "2 violation(s)");
    }

    #[test]
    fn a_status_event_keeps_its_status_fields_and_loses_its_comment() {
        let shown = masked(&serde_json::json!({
            "event_id": "5d8e2f70-3b1a-4c9e-8f6d-2a7b9c0e1f34",
            "schema_version": "passerelle.status.v1",
            "referral_id": "0b6f1c2e-7d4a-4e59-9c1b-3a2d5e8f9a10",
            "status": "STATUS_REJECTED",
            "occurred_at": "2026-12-02T10:00:00Z",
            "author_siret": "13000548100002",
            "rejection_reason": "REJECTION_REASON_OTHER",
            "comment": "Camille Exemple souhaite reprendre une formation"
        }));
        assert_eq!(shown["status"], "STATUS_REJECTED");
        assert_eq!(shown["occurred_at"], "2026-12-02T10:00:00Z");
        assert_eq!(shown["rejection_reason"], "REJECTION_REASON_OTHER");
        assert_eq!(shown["comment"], MASK);
    }

    #[test]
    fn a_consent_record_shows_its_scope_not_its_subject() {
        let shown = masked(&serde_json::json!({
            "record_id": "7f3c9a2b-1d4e-4f60-8a9b-0c1d2e3f4a5b",
            "schema_version": "passerelle.consent.v1",
            "subject_id": "Camille Exemple 1984-05-07",
            "legal_basis": "LEGAL_BASIS_CONSENT",
            "controllers": ["81234567800013"],
            "purposes": ["dpv:ServiceProvision"],
            "data_categories": ["identity", "nir"],
            "valid_until": "2027-11-20T10:00:00Z",
            "withdrawal_method": "Appeler Camille au 0612345678"
        }));
        assert_eq!(shown["subject_id"], MASK);
        assert_eq!(shown["withdrawal_method"], MASK);
        assert_eq!(shown["data_categories"][1], "nir");
        assert_eq!(shown["controllers"][0], "81234567800013");
    }

    #[test]
    fn unknown_formats_and_top_level_scalars_are_masked() {
        let dora = serde_json::json!({
            "beneficiary_first_name": "Camille",
            "beneficiary_phone": 612345678,
            "data_protection_commitment": true,
            "duration_weeks": null,
            "situation": ["Souhaite reprendre une formation"]
        });
        let shown = masked(&dora);
        assert_eq!(shown["beneficiary_phone"], MASK);
        assert_eq!(shown["data_protection_commitment"], MASK);
        assert_eq!(shown["duration_weeks"], Value::Null);
        assert_eq!(
            mask_body(Some("application/json"), b"\"Camille Exemple\""),
            "\"***\""
        );
        // A document claiming a schema it does not follow gets no category help.
        let shown = masked(&serde_json::json!({
            "schema_version": "passerelle.referral.v2",
            "person": {"name": "Camille Exemple"},
            "sender": {"organisation": {"nickname": "Camille"}}
        }));
        assert_eq!(shown["sender"]["organisation"]["nickname"], MASK);
    }

    #[test]
    fn malformed_json_keeps_its_keys_only() {
        let body = br#"{"person": {"first_name": "Camille", "birth_date": 1984-05-07, "email": camille.exemple@example.org, "note": "Souhaite reprendre une formation"#;
        let shown = mask_body(Some("application/json; charset=utf-8"), body);
        assert_no_personal_value(&shown);
        assert!(
            shown.starts_with(r#"{"person": {"first_name": "***", "birth_date": ***"#),
            "{shown}"
        );
        assert!(shown.contains(r#""note": "***"#), "{shown}");
        let shown = mask_body(
            Some("application/problem+json"),
            br#"{"a": null, "b": "x\"Camille\"",}"#,
        );
        assert_eq!(shown, r#"{"a": null, "b": "***",}"#);
    }

    #[test]
    fn csv_keeps_its_header_and_masks_every_cell() {
        let body = "Prénom;Nom;Date de naissance;NIR;Téléphone;Freins;Motif\r\n\
                    Camille;Exemple;07/05/1984;2840575123456;06 12 34 56 78;\"numerique;mobilite\";Souhaite reprendre une formation\r\n\
                    Claire;Exemple;;;;;\r\n";
        let shown = mask_body(Some("text/csv; charset=utf-8"), body.as_bytes());
        assert_no_personal_value(&shown);
        assert_eq!(
            shown,
            "Prénom;Nom;Date de naissance;NIR;Téléphone;Freins;Motif\n\
             ***;***;***;***;***;***;***\n\
             ***;***;;;;;"
        );
    }

    #[test]
    fn text_and_binary_bodies_show_nothing_of_their_content() {
        let shown = mask_body(Some("text/plain"), b"Camille Exemple\n\n0612345678");
        assert_eq!(shown, "***\n\n***");
        let protobuf = [0x0a, 0x07, b'C', b'a', b'm', b'i', b'l', b'l', b'e', 0xff];
        assert_eq!(
            mask_body(
                Some("application/vnd.passerelle.referral.v2+protobuf"),
                &protobuf
            ),
            "<10 bytes, binary, not shown>"
        );
        assert_eq!(mask_body(None, &protobuf), "<10 bytes, binary, not shown>");
        assert_eq!(mask_body(None, b""), "");
    }

    #[test]
    fn large_bodies_are_cut_with_a_note() {
        let rows: String = (0..20_000)
            .map(|n| format!("{n};Camille;Exemple\n"))
            .collect();
        let body = format!("id;first_name;last_name\n{rows}");
        let shown = mask_body(Some("text/csv"), body.as_bytes());
        assert_no_personal_value(&shown);
        assert!(shown.len() < MAX_SHOWN_BYTES + 200, "{}", shown.len());
        assert!(shown.ends_with(&format!(
            "[... cut: the body is {} bytes; only the first 64 KiB of its masked form are shown]",
            body.len()
        )));
        let small = mask_body(Some("text/csv"), b"a,b\n1,2");
        assert_eq!(small, "a,b\n***,***");
    }

    #[test]
    fn credentials_and_signatures_are_masked_in_headers() {
        let headers = [
            ("Authorization", "Bearer dev-key-example"),
            ("webhook-signature", "v1,c2lnbmF0dXJl"),
            ("cookie", "session=abc"),
            ("webhook-id", "msg_0b6f1c2e"),
            ("content-type", "application/json"),
        ]
        .map(|(name, value)| (name.to_owned(), value.to_owned()));
        let shown = mask_headers(&headers);
        let value = |name: &str| {
            shown
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(value("Authorization"), Some(MASK));
        assert_eq!(value("webhook-signature"), Some(MASK));
        assert_eq!(value("cookie"), Some(MASK));
        assert_eq!(value("webhook-id"), Some("msg_0b6f1c2e"));
        assert_eq!(value("content-type"), Some("application/json"));
    }
}
