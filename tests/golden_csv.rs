//! Golden tests of the CSV adapter: spreadsheet exports read through the
//! shipped mapping files → canonical v2 referrals, one per row, and the
//! refusals (per row and per file), each pinned in tests/golden/csv.

mod common;

use std::path::Path;

use common::{ASSOCIATION_SIRET, assert_golden_json, fixed_context, golden_bytes, golden_dir};
use passerelle::Error;
use passerelle::formats::csv_mapping::{CsvFormat, Mapping};
use passerelle::formats::{Context, Format, Record};
use passerelle::model::Message;
use passerelle::model::ids::ReferralId;
use passerelle::model::v2::Referral;
use passerelle::validate::SchemaName;
use passerelle::validate::schemas::schema;
use serde_json::{Value, json};

/// Fake personal values of the fixtures; none may appear in an error.
const PERSONAL_VALUES: &[&str] = &[
    "Zébulon",
    "Fakeperson",
    "zebulon.fakeperson",
    "06 10 20 30 40",
    "06 12",
    "17/05/1990",
    "1990-05-17",
    "Tartempion",
    "Philomène",
    "Gaspard",
    "Fauxnom",
    "01/02/1979",
    "2 98 02 75 056 123 3",
    "Ursule",
    "12/12/1988",
    "Barnabé",
    "Imaginaire",
    "transport_en_commun",
    "Clothilde",
    "Inventée",
    "Peut-être",
    "Zéphyrine",
    "Pseudonyme",
    "Hortense",
    "Chimère",
    "Konexio Lyon",
    "Eustache",
    "Manquant",
    "Léocadie",
    "Bissextile",
    "31/02/1990",
    "Séraphin",
    "Dixchiffres",
    "0123456789",
    "81234567800012",
    "8123456780001",
    "BR-00",
];

fn mapping(name: &str) -> Mapping {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("config/mappings")
        .join(name);
    Mapping::load(&path).unwrap_or_else(|error| panic!("{name}: {error}"))
}

fn test_mapping(name: &str) -> Mapping {
    let path = golden_dir().join("csv").join(name);
    Mapping::load(&path).unwrap_or_else(|error| panic!("{name}: {error}"))
}

fn decode_bytes(format: &CsvFormat, bytes: &[u8], context: &Context) -> Result<Vec<Record>, Error> {
    Ok(format.decode(Box::new(bytes), context)?.collect())
}

fn decode(mapping_name: &str, path: &str) -> Vec<Record> {
    let format = CsvFormat::new(mapping(mapping_name));
    decode_bytes(&format, &golden_bytes(path), &fixed_context())
        .unwrap_or_else(|error| panic!("{path}: {error}"))
}

/// The referral of a record that must decode; checked against the published schema.
fn referral(record: &Record) -> Referral {
    let translated = record
        .result
        .as_ref()
        .unwrap_or_else(|error| panic!("line {:?}: {error}", record.line));
    let Message::Referral(referral) = &translated.value else {
        panic!("a CSV row decodes to a referral");
    };
    let value = serde_json::to_value(referral).expect("serialisable");
    schema(SchemaName::ReferralV2)
        .validate(&value)
        .unwrap_or_else(|error| panic!("line {:?} breaks referral/v2: {error}", record.line));
    (**referral).clone()
}

fn referrals_json(records: &[Record]) -> Value {
    Value::Array(
        records
            .iter()
            .map(|record| serde_json::to_value(referral(record)).expect("serialisable"))
            .collect(),
    )
}

/// Each record as the golden outcome files pin it: the referral and its losses,
/// or the violations, or the error message.
fn outcomes_json(records: &[Record]) -> Value {
    Value::Array(
        records
            .iter()
            .map(|record| match &record.result {
                Ok(translated) => {
                    let mut outcome = json!({
                        "line": record.line,
                        "referral": serde_json::to_value(referral(record)).expect("serialisable"),
                    });
                    if !translated.losses.is_empty() {
                        outcome["losses"] =
                            serde_json::to_value(&translated.losses).expect("serialisable");
                    }
                    outcome
                }
                Err(Error::Invalid(violations)) => json!({
                    "line": record.line,
                    "violations": violations,
                }),
                Err(error) => json!({ "line": record.line, "error": error.to_string() }),
            })
            .collect(),
    )
}

fn assert_no_personal_value(text: &str) {
    for value in PERSONAL_VALUES {
        assert!(
            !text.contains(value),
            "an error repeats the personal value {value:?}: {text}"
        );
    }
}

#[test]
fn sample_export_decodes_to_one_referral_per_row() {
    let records = decode("carnet-de-bord.toml", "csv/association-export-cdb.csv");
    assert_eq!(
        records.iter().map(|r| r.line).collect::<Vec<_>>(),
        [Some(2), Some(3), Some(4), Some(5)]
    );
    assert_golden_json(
        "csv/association-export-cdb.expected.json",
        &referrals_json(&records),
    );
    for record in &records {
        let losses = &record.result.as_ref().expect("decoded").losses;
        assert!(
            losses.is_empty(),
            "the sample has no ignored column: {losses:?}"
        );
    }
}

#[test]
fn referral_ids_are_derived_from_the_source_and_row_id_so_reimports_are_idempotent() {
    let first = decode("carnet-de-bord.toml", "csv/association-export-cdb.csv");
    let second = decode("carnet-de-bord.toml", "csv/association-export-cdb.csv");
    let ids = |records: &[Record]| {
        records
            .iter()
            .map(|record| referral(record).referral_id)
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&first), ids(&second));
    assert_eq!(
        ids(&first)[0],
        ReferralId::derived("carnet-de-bord", "KX-0001")
    );
}

#[test]
fn structures_name_each_row_sender_and_the_caller_is_the_fallback() {
    let records = decode("carnet-de-bord.toml", "csv/association-export-cdb.csv");
    let paris = referral(&records[1]);
    assert_eq!(paris.sender.organisation.siret.as_str(), "81234567800021");
    assert_eq!(
        paris.sender.organisation.name.as_deref(),
        Some("Konexio Paris 19")
    );
    let mut context = fixed_context();
    context.sender = None;
    let format = CsvFormat::new(mapping("carnet-de-bord.toml"));
    let records = decode_bytes(&format, &golden_bytes("csv/bad-rows.csv"), &context)
        .expect("the header is right");
    // Line 8 has no Structure: without a sender from the caller, the row is refused.
    let line_8 = records
        .iter()
        .find(|record| record.line == Some(8))
        .expect("line 8");
    let error = line_8.result.as_ref().expect_err("no sender");
    assert_eq!(error.violations()[0].pointer, "/sender/organisation");
    assert_eq!(error.violations()[0].rule, "required");
    assert_eq!(error.violations()[0].column.as_deref(), Some("Structure"));
}

#[test]
fn departement_export_in_windows_1252_decodes_with_its_accents() {
    let records = decode("departement-iodas.toml", "csv/departement-iodas.csv");
    assert_golden_json(
        "csv/departement-iodas.expected.json",
        &outcomes_json(&records),
    );
    let first = referral(&records[0]);
    assert_eq!(first.person.first_name, "Hélène");
    assert_eq!(first.person.last_name, "Œuvrard");
    assert_eq!(first.person.birth_name.as_deref(), Some("Lefèvre"));
    let reason = first.reason.expect("a reason");
    assert!(reason.contains("d’un accompagnement"), "{reason}");
    let referent = first.sender.referent.expect("a référent");
    assert_eq!(referent.first_name.as_deref(), Some("François"));
    assert_eq!(referent.last_name.as_deref(), Some("Garçon"));
    // The ignored Civilité column is reported lost on every row, by column.
    for record in &records {
        let losses = &record.result.as_ref().expect("decoded").losses;
        assert_eq!(losses.losses.len(), 1);
        assert_eq!(losses.losses[0].path, "/Civilité");
    }
}

#[test]
fn bad_rows_are_refused_one_by_one_and_the_good_rows_still_decode() {
    let records = decode("carnet-de-bord.toml", "csv/bad-rows.csv");
    assert_golden_json("csv/bad-rows.outcomes.json", &outcomes_json(&records));
    let good: Vec<_> = records
        .iter()
        .filter(|record| record.result.is_ok())
        .map(|record| record.line)
        .collect();
    assert_eq!(good, [Some(2), Some(8), Some(13)]);
    // The reason spans lines 13 and 14: the next row is on line 15.
    assert_eq!(records.last().and_then(|record| record.line), Some(15));
    let rules: Vec<(Option<u64>, String, Option<String>)> = records
        .iter()
        .filter_map(|record| record.result.as_ref().err())
        .flat_map(|error| error.violations().to_vec())
        .map(|violation| (violation.line, violation.rule, violation.column))
        .collect();
    for expected in [
        (Some(3), "date-format", "Date de naissance*"),
        (Some(4), "nir-checksum", "NIR"),
        (Some(5), "required", "Nom*"),
        (Some(6), "value-map", "Freins"),
        (Some(7), "value-map", "Droits RSA"),
        (Some(9), "maxLength", "Prénom*"),
        (Some(9), "phone-format", "Téléphone"),
        (Some(9), "email-format", "Courriel"),
        (Some(10), "value-map", "Structure"),
        (Some(12), "date-format", "Date de naissance*"),
        (
            Some(15),
            "france-travail-number-format",
            "Identifiant Pôle emploi",
        ),
    ] {
        let (line, rule, column) = expected;
        assert!(
            rules.contains(&(line, rule.to_owned(), Some(column.to_owned()))),
            "{expected:?} missing from {rules:?}"
        );
    }
    for record in &records {
        if let Err(error) = &record.result {
            assert_no_personal_value(&error.to_string());
            assert_no_personal_value(&serde_json::to_string(error.violations()).expect("json"));
        }
    }
}

#[test]
fn sender_siret_cells_are_checked_row_by_row() {
    let format = CsvFormat::new(test_mapping("sender-siret.toml"));
    let records = decode_bytes(
        &format,
        &golden_bytes("csv/sender-siret.csv"),
        &fixed_context(),
    )
    .expect("the header is right");
    assert_golden_json("csv/sender-siret.outcomes.json", &outcomes_json(&records));
    let rules: Vec<_> = records
        .iter()
        .map(|record| match &record.result {
            Ok(_) => "ok".to_owned(),
            Err(error) => error.violations()[0].rule.clone(),
        })
        .collect();
    assert_eq!(rules, ["ok", "siret-checksum", "siret-format", "ok", "ok"]);
    // An empty cell falls back on the mapping's [sender]; its own SIRET keeps its name.
    for line in [5, 6] {
        let record = records
            .iter()
            .find(|record| record.line == Some(line))
            .expect("row");
        let organisation = referral(record).sender.organisation;
        assert_eq!(organisation.siret.as_str(), ASSOCIATION_SIRET);
        assert_eq!(organisation.name.as_deref(), Some("Konexio Saint-Denis"));
    }
    for record in &records {
        if let Err(error) = &record.result {
            assert_no_personal_value(&error.to_string());
        }
    }
}

/// The shared sample with one column removed or added, as text.
fn sample_with_columns(edit: impl Fn(&mut Vec<String>)) -> Vec<u8> {
    let bytes = golden_bytes("csv/association-export-cdb.csv");
    let text = String::from_utf8(bytes).expect("UTF-8 sample");
    let mut out = String::new();
    for line in text.split_inclusive("\r\n") {
        let mut cells: Vec<String> = line
            .trim_end_matches("\r\n")
            .split(';')
            .map(str::to_owned)
            .collect();
        edit(&mut cells);
        out.push_str(&cells.join(";"));
        out.push_str("\r\n");
    }
    out.into_bytes()
}

#[test]
fn a_missing_required_header_names_the_column_and_the_mapping_file() {
    // Drop "Prénom*" (second column) from every line; the obstacle cells hold
    // quoted semicolons, but the second column comes before them.
    let bytes = sample_with_columns(|cells| {
        cells.remove(1);
    });
    let format = CsvFormat::new(mapping("carnet-de-bord.toml"));
    let error = decode_bytes(&format, &bytes, &fixed_context()).expect_err("file-level error");
    let violations = error.violations();
    assert_eq!(violations.len(), 1, "{error}");
    assert_eq!(violations[0].rule, "required-column");
    assert_eq!(violations[0].column.as_deref(), Some("Prénom*"));
    assert_eq!(violations[0].pointer, "/person/first_name");
    assert_eq!(violations[0].line, Some(1));
    assert!(
        violations[0].detail.contains("carnet-de-bord.toml"),
        "{error}"
    );
}

#[test]
fn unknown_columns_are_an_error_listing_them_all() {
    let bytes = sample_with_columns(|cells| {
        let header = cells[0].starts_with('\u{feff}');
        cells.push(if header {
            "Commentaire".to_owned()
        } else {
            "libre".to_owned()
        });
        cells.push(if header {
            "Numéro de sécurité sociale".to_owned()
        } else {
            String::new()
        });
    });
    let format = CsvFormat::new(mapping("carnet-de-bord.toml"));
    let error = decode_bytes(&format, &bytes, &fixed_context()).expect_err("file-level error");
    let columns: Vec<_> = error
        .violations()
        .iter()
        .map(|violation| (violation.rule.as_str(), violation.column.as_deref()))
        .collect();
    assert_eq!(
        columns,
        [
            ("unknown-column", Some("Commentaire")),
            ("unknown-column", Some("Numéro de sécurité sociale")),
        ]
    );
}

#[test]
fn a_comma_separated_file_read_with_semicolons_says_so() {
    let text = "Identifiant dans le SI*,Prénom*,Nom*,Date de naissance*\r\nKX-1,Zébulon,Fakeperson,17/05/1990\r\n";
    let format = CsvFormat::new(mapping("carnet-de-bord.toml"));
    let error =
        decode_bytes(&format, text.as_bytes(), &fixed_context()).expect_err("file-level error");
    let message = error.to_string();
    assert!(
        message.contains("the header has 1 column; the mapping expects delimiter ';'"),
        "{message}"
    );
    assert!(message.contains("','"), "{message}");
    assert!(
        matches!(error, Error::Malformed { line: Some(1), .. }),
        "{error:?}"
    );
}

#[test]
fn bom_or_no_bom_and_crlf_or_lf_give_the_same_referrals() {
    let with_bom = golden_bytes("csv/association-export-cdb.csv");
    assert!(
        with_bom.starts_with(b"\xEF\xBB\xBF"),
        "the sample has a BOM"
    );
    let without_bom = with_bom[3..].to_vec();
    let lf = String::from_utf8(without_bom.clone())
        .expect("UTF-8")
        .replace("\r\n", "\n")
        .into_bytes();
    let format = CsvFormat::new(mapping("carnet-de-bord.toml"));
    let decoded = |bytes: &[u8]| {
        referrals_json(&decode_bytes(&format, bytes, &fixed_context()).expect("decodes"))
    };
    let expected = decoded(&with_bom);
    assert_eq!(decoded(&without_bom), expected);
    assert_eq!(decoded(&lf), expected);
}

#[test]
fn a_windows_1252_export_read_as_utf_8_is_refused_with_its_line() {
    // The whole file in Windows-1252: the header itself is not UTF-8.
    let text = String::from_utf8(golden_bytes("csv/association-export-cdb.csv")[3..].to_vec())
        .expect("UTF-8");
    let (cp1252, _, unmappable) = encoding_rs::WINDOWS_1252.encode(&text);
    assert!(!unmappable);
    let format = CsvFormat::new(mapping("carnet-de-bord.toml"));
    let error = decode_bytes(&format, &cp1252, &fixed_context()).expect_err("file-level error");
    assert!(
        matches!(
            error,
            Error::Malformed {
                line: Some(1),
                column: Some(2),
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains("windows-1252"), "{error}");

    // A UTF-8 file with one Windows-1252 cell: that row only is refused.
    let mut bytes = golden_bytes("csv/association-export-cdb.csv");
    let zoe = bytes
        .windows(4)
        .position(|window| window == "Zoé".as_bytes())
        .expect("Zoé in the sample");
    bytes.splice(zoe..zoe + 4, [b'Z', b'o', 0xE9]);
    let records = decode_bytes(&format, &bytes, &fixed_context()).expect("the header is right");
    assert_eq!(records.len(), 4);
    assert!(records[..3].iter().all(|record| record.result.is_ok()));
    let error = records[3].result.as_ref().expect_err("bad UTF-8 cell");
    assert!(
        matches!(
            error,
            Error::Malformed {
                line: Some(5),
                column: Some(2),
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains("Prénom*"), "{error}");
    assert!(!error.to_string().contains("Zo"), "{error}");
}

#[test]
fn without_a_recipient_nothing_is_read() {
    let mut context = fixed_context();
    context.recipient = None;
    let format = CsvFormat::new(mapping("carnet-de-bord.toml"));
    let error = decode_bytes(
        &format,
        &golden_bytes("csv/association-export-cdb.csv"),
        &context,
    )
    .expect_err("file-level error");
    assert_eq!(error.violations()[0].pointer, "/recipient/organisation");
    assert_eq!(error.violations()[0].rule, "required");
}

#[test]
fn names_are_bounded_as_the_schema_bounds_them() {
    let row = |first_name: &str| {
        format!(
            "Identifiant dans le SI*;Prénom*;Nom*;Date de naissance*\nX-1;{first_name};Fakeperson;01/01/2000\n"
        )
    };
    let format = CsvFormat::new(mapping("carnet-de-bord.toml"));
    let at_limit =
        decode_bytes(&format, row(&"é".repeat(140)).as_bytes(), &fixed_context()).expect("header");
    // `referral` validates against the schema: the CSV and the schema agree on 140.
    referral(&at_limit[0]);
    let over =
        decode_bytes(&format, row(&"é".repeat(141)).as_bytes(), &fixed_context()).expect("header");
    let error = over[0].result.as_ref().expect_err("141 characters");
    assert_eq!(error.violations()[0].rule, "maxLength");
    assert_eq!(error.violations()[0].pointer, "/person/first_name");
    let mut value = serde_json::to_value(referral(&at_limit[0])).expect("serialisable");
    value["person"]["first_name"] = Value::String("é".repeat(141));
    let schema_error = schema(SchemaName::ReferralV2)
        .validate(&value)
        .expect_err("the schema refuses 141 characters too");
    assert_eq!(schema_error.violations()[0].rule, "maxLength");
}
