//! Unit tests of the CSV adapter: mapping checks, date layouts, cell readers,
//! streaming and bounds. End-to-end files are in tests/golden_csv.rs.

use std::io::{self, Read};

use chrono::{NaiveDate, TimeZone, Utc};

use super::mapping::DateFormat;
use super::*;
use crate::model::common::{OrganisationKind, Pathway};
use crate::model::ids::Siret;
use crate::model::v2::{EducationLevel, ObstacleDomain, Referral};
use crate::validate::Limits;

const MINIMAL: &str = r#"
name = "test-source"
[fields]
referral_id = { column = "Id" }
"person.first_name" = { column = "Prénom" }
"person.last_name" = { column = "Nom" }
"#;

fn context() -> Context {
    let organisation = |siret: &str, kind| Organisation {
        siret: Siret::parse(siret).expect("valid SIRET"),
        kind,
        name: None,
    };
    Context {
        now: Utc
            .with_ymd_and_hms(2026, 12, 1, 9, 0, 0)
            .single()
            .expect("valid time"),
        sender: Some(organisation(
            "81234567800013",
            OrganisationKind::Association,
        )),
        recipient: Some(organisation(
            "13000548100002",
            OrganisationKind::FranceTravail,
        )),
        referral_id: None,
        limits: Limits::default(),
    }
}

fn mapping(extra: &str) -> Mapping {
    Mapping::from_toml(&format!("{MINIMAL}{extra}"), "test.toml")
        .unwrap_or_else(|error| panic!("{error}"))
}

fn config_error(toml: &str) -> (String, String) {
    match Mapping::from_toml(toml, "bad.toml") {
        Err(Error::Config { file, key, detail }) => {
            assert_eq!(file, "bad.toml");
            (key, detail)
        }
        other => panic!("expected a configuration error, got {other:?}"),
    }
}

fn records(mapping: Mapping, input: &str, context: &Context) -> Vec<Record> {
    let format = CsvFormat::new(mapping);
    format
        .decode(Box::new(input.as_bytes()), context)
        .unwrap_or_else(|error| panic!("{error}"))
        .collect()
}

fn referral(record: &Record) -> Referral {
    match &record.result {
        Ok(Translated {
            value: Message::Referral(referral),
            ..
        }) => (**referral).clone(),
        other => panic!("line {:?}: {other:?}", record.line),
    }
}

#[test]
fn every_shipped_mapping_loads() {
    let folder = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/mappings");
    let mut loaded = 0;
    for entry in std::fs::read_dir(&folder).expect("config/mappings exists") {
        let path = entry.expect("readable folder").path();
        if path
            .extension()
            .is_some_and(|extension| extension == "toml")
        {
            Mapping::load(&path).unwrap_or_else(|error| panic!("{error}"));
            loaded += 1;
        }
    }
    assert!(loaded >= 2, "carnet-de-bord and departement-iodas at least");
}

#[test]
fn the_mapping_documentation_lists_every_canonical_field() {
    let source = include_str!("mapping.rs");
    let documentation: String = source
        .lines()
        .filter(|line| line.trim_start().starts_with("///"))
        .collect();
    for key in Mapping::canonical_fields() {
        assert!(
            documentation.contains(&format!("`{key}`")),
            "the doc comment on Mapping does not name {key}"
        );
    }
}

#[test]
fn a_mapping_naming_an_unknown_canonical_field_is_refused_at_load() {
    let (key, detail) = config_error(&format!(
        "{MINIMAL}\"person.frist_name\" = {{ column = \"X\" }}\n"
    ));
    assert_eq!(key, "fields.person.frist_name");
    assert!(detail.contains("person.first_name"), "{detail}");
}

#[test]
fn mapping_mistakes_name_their_key() {
    let cases: &[(&str, &str)] = &[
        ("colour = \"blue\"\n", "fields.colour"),
        (
            "\"person.birth_date\" = { column = \"D\", separator = \";\" }\n",
            "fields.person.birth_date.separator",
        ),
        (
            "\"reason\" = { column = \"M\", date_format = \"dd/mm/yyyy\" }\n",
            "fields.reason.date_format",
        ),
        (
            "\"person.birth_date\" = { column = \"D\", date_format = \"dd/mm\" }\n",
            "fields.person.birth_date.date_format",
        ),
        (
            "\"situation.rsa_beneficiary\" = { column = \"R\", values = { Oui = \"yes\" } }\n",
            "fields.situation.rsa_beneficiary.values.Oui",
        ),
        (
            "obstacles = { column = \"F\", values = { velo = \"OBSTACLE_DOMAIN_BICYCLE\" } }\n",
            "fields.obstacles.values.velo",
        ),
        (
            "obstacles = { column = \"F\", values = { \"Vélo\" = \"OBSTACLE_DOMAIN_MOBILITY\", velo = \"OBSTACLE_DOMAIN_MOBILITY\" } }\n",
            "fields.obstacles.values.velo",
        ),
        (
            "reason = { column = \"M\", values = { a = true } }\n",
            "fields.reason.values",
        ),
        ("reason = { column = \"  \" }\n", "fields.reason.column"),
        ("reason = { colum = \"M\" }\n", "fields.reason.colum"),
        (
            "\"sender.organisation\" = { column = \"S\" }\n",
            "structures",
        ),
        (
            "\"person.address.city\" = { column = \"V\" }\n\"person.address.postal_code_and_city\" = { column = \"CP Ville\" }\n",
            "fields.person.address.postal_code_and_city",
        ),
    ];
    for (extra, expected_key) in cases {
        let (key, detail) = config_error(&format!("{MINIMAL}{extra}"));
        assert_eq!(key, *expected_key, "{extra}: {detail}");
        assert!(!detail.is_empty());
    }
}

#[test]
fn top_level_mistakes_name_their_key() {
    let fields = MINIMAL.replace("name = \"test-source\"\n", "");
    let cases: &[(&str, &str)] = &[
        ("name = \"s\"\ndelimiter = \";;\"\n", "delimiter"),
        ("name = \"s\"\ndelimiter = '\"'\n", "delimiter"),
        ("name = \"s\"\nencoding = \"klingon\"\n", "encoding"),
        ("name = \"s\"\ndate_format = \"dd/mm/yy\"\n", "date_format"),
        ("name = \" \"\n", "name"),
        ("name = \"s\"\ncolour = \"blue\"\n", "colour"),
        ("name = \"s\"\nignore = [\"Prénom\"]\n", "ignore[0]"),
        ("name = \"s\"\nignore = [\"A\", \"A\"]\n", "ignore[1]"),
        (
            "name = \"s\"\n[sender]\nsiret = \"81234567800012\"\n",
            "sender.siret",
        ),
        (
            "name = \"s\"\n[sender]\nkind = \"ministry\"\n",
            "sender.kind",
        ),
        (
            "name = \"s\"\n[structures.\"Konexio\"]\nsiret = \"8123\"\n",
            "structures.Konexio.siret",
        ),
    ];
    for (top, expected_key) in cases {
        let (key, detail) = config_error(&format!("{top}{fields}"));
        assert_eq!(key, *expected_key, "{top}: {detail}");
        // A SIRET in the mapping is configuration, but errors still describe shapes.
        assert!(!detail.contains("81234567800012"), "{detail}");
    }
}

#[test]
fn fields_every_referral_needs_must_be_mapped_and_required() {
    let (key, _) = config_error(
        "name = \"s\"\n[fields]\n\"person.first_name\" = { column = \"P\" }\n\"person.last_name\" = { column = \"N\" }\n",
    );
    assert_eq!(key, "fields.referral_id");
    let (key, _) = config_error(&MINIMAL.replace(
        "{ column = \"Prénom\" }",
        "{ column = \"Prénom\", required = false }",
    ));
    assert_eq!(key, "fields.person.first_name.required");
}

#[test]
fn toml_syntax_errors_give_their_line() {
    let (key, detail) = config_error("name = \"s\"\n[fields\n");
    assert_eq!(key, "");
    assert!(detail.contains("line 2"), "{detail}");
}

#[test]
fn date_layouts() {
    let date = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).expect("valid date");
    let french = DateFormat::parse("dd/mm/yyyy").expect("layout");
    assert_eq!(french.read("03/02/1998"), Ok(date(1998, 2, 3)));
    assert_eq!(french.read("3/2/1998"), Ok(date(1998, 2, 3)));
    for wrong in [
        "1998-02-03",
        "03/02/98",
        "03/02/1998 00:00",
        "03-02-1998",
        "",
        "aa/bb/cccc",
    ] {
        let error = french.read(wrong).expect_err(wrong);
        assert!(error.starts_with("a date dd/mm/yyyy, found "), "{error}");
    }
    let error = french.read("29/02/2023").expect_err("not a leap year");
    assert!(!error.contains("29"), "{error}");
    let iso = DateFormat::parse("yyyy-mm-dd").expect("layout");
    assert_eq!(iso.read("1998-02-03"), Ok(date(1998, 2, 3)));
    let compact = DateFormat::parse("yyyymmdd").expect("layout");
    assert_eq!(compact.read("19980203"), Ok(date(1998, 2, 3)));
    assert!(compact.read("1998023").is_err());
    for wrong in ["dd/mm", "dd/mm/yyyy/yyyy", "dd/mm/yy", "dd.mm.yyyy hh:mm"] {
        assert!(DateFormat::parse(wrong).is_err(), "{wrong}");
    }
}

#[test]
fn cells_are_trimmed_and_empty_cells_are_absent() {
    let mapping = mapping(
        "\"person.birth_name\" = { column = \"JF\" }\n\"person.contact.phone\" = { column = \"Tel\" }\n",
    );
    let records = records(
        mapping,
        "Id;Prénom;Nom;JF;Tel\nA-1;  Zébulon ;Fakeperson;  ;\u{a0}\n",
        &context(),
    );
    let referral = referral(&records[0]);
    assert_eq!(referral.person.first_name, "Zébulon");
    assert_eq!(referral.person.birth_name, None);
    assert_eq!(referral.person.contact, None);
}

#[test]
fn coded_cells_without_a_value_map_take_wire_names_or_their_end() {
    let mapping = mapping(
        "pathway = { column = \"Parcours\" }\n\"situation.education_level\" = { column = \"Niveau\" }\nobstacles = { column = \"Freins\", separator = \",\" }\n",
    );
    let records = records(
        mapping,
        "Id;Prénom;Nom;Parcours;Niveau;Freins\n\
         A-1;Zébulon;Fakeperson;socio-professional;nv4;Mobilité, 27 ,aller à la pêche\n\
         A-2;Zébulon;Fakeperson;PATHWAY_SOCIAL;EDUCATION_LEVEL_CFG;\n\
         A-3;Zébulon;Fakeperson;Professionnel;;\n",
        &context(),
    );
    let first = referral(&records[0]);
    assert_eq!(first.pathway, Some(Pathway::SocioProfessional));
    let situation = first.situation.expect("situation");
    assert_eq!(situation.education_level, Some(EducationLevel::Nv4));
    let domains: Vec<_> = first.obstacles.iter().map(|o| o.domain).collect();
    assert_eq!(
        domains,
        [
            ObstacleDomain::Mobility,
            ObstacleDomain::Housing,
            ObstacleDomain::Unclassified
        ]
    );
    assert_eq!(
        first.obstacles[2].source_label.as_deref(),
        Some("aller à la pêche")
    );
    assert_eq!(referral(&records[1]).pathway, Some(Pathway::Social));
    let error = records[2].result.as_ref().expect_err("not a wire name");
    assert_eq!(error.violations()[0].rule, "enum");
    assert!(!error.to_string().contains("Professionnel"), "{error}");
}

#[test]
fn postal_code_and_city_in_one_cell() {
    let mapping = mapping("\"person.address.postal_code_and_city\" = { column = \"CP Ville\" }\n");
    let records = records(
        mapping,
        "Id;Prénom;Nom;CP Ville\nA-1;Z;F;93200 Saint-Denis\nA-2;Z;F;93200\nA-3;Z;F;93200 - La Courneuve\nA-4;Z;F;Saint-Denis\n",
        &context(),
    );
    let address = |index: usize| referral(&records[index]).person.address.expect("address");
    assert_eq!(address(0).city.as_deref(), Some("Saint-Denis"));
    assert_eq!(address(1).city, None);
    assert_eq!(
        address(1).postal_code.map(String::from).as_deref(),
        Some("93200")
    );
    assert_eq!(address(2).city.as_deref(), Some("La Courneuve"));
    let error = records[3].result.as_ref().expect_err("no postal code");
    assert_eq!(error.violations()[0].pointer, "/person/address");
    assert_eq!(error.violations()[0].rule, "postal-code-format");
}

#[test]
fn the_file_level_checks() {
    let format = CsvFormat::new(mapping(""));
    let decode = |input: &'static str, context: &Context| {
        format
            .decode(Box::new(input.as_bytes()), context)
            .map(|records| records.count())
    };
    assert!(matches!(
        decode("", &context()),
        Err(Error::Malformed { line: Some(1), .. })
    ));
    assert_eq!(decode("Id;Prénom;Nom\r\n", &context()).ok(), Some(0));
    let error = decode("Id;Prénom;Nom;;Notes\n", &context()).expect_err("unnamed and unknown");
    let columns: Vec<_> = error
        .violations()
        .iter()
        .map(|violation| violation.column.as_deref())
        .collect();
    assert_eq!(columns, [None, Some("Notes")]);
    let error = decode("Id;Prénom;Nom;Nom\n", &context()).expect_err("duplicate");
    assert_eq!(error.violations()[0].rule, "duplicate-column");
    let error = decode("Id\tPrénom\tNom\n", &context()).expect_err("tabs");
    assert!(
        error.to_string().contains("the header contains tab"),
        "{error}"
    );

    let mut no_sender = context();
    no_sender.sender = None;
    let error = decode("Id;Prénom;Nom\n", &no_sender).expect_err("no sender anywhere");
    assert_eq!(error.violations()[0].pointer, "/sender/organisation");
}

#[test]
fn ignored_columns_are_reported_lost_when_they_hold_something() {
    let mapping = Mapping::from_toml(
        &MINIMAL.replace("[fields]", "ignore = [\"Adresse\", \"\"]\n[fields]"),
        "folder/test.toml",
    )
    .expect("valid mapping");
    let records = records(
        mapping,
        "Id;Adresse;Prénom;Nom;\nA-1;1 rue de la Paix;Z;F;\nA-2;;Z;F;\n",
        &context(),
    );
    let losses = &records[0].result.as_ref().expect("decoded").losses;
    assert_eq!(losses.losses.len(), 1);
    assert_eq!(losses.losses[0].path, "/Adresse");
    assert_eq!(
        losses.losses[0].reason,
        "column ignored by mapping test.toml"
    );
    assert!(
        records[1]
            .result
            .as_ref()
            .expect("decoded")
            .losses
            .is_empty()
    );
}

#[test]
fn rows_of_the_wrong_width_and_rows_of_empty_cells() {
    let records = records(
        mapping(""),
        "Id;Prénom;Nom\n;;\nA-1;Z\n\nA-2;Z;F;extra\nA-3;Z;F\n ; ; \n",
        &context(),
    );
    let lines: Vec<_> = records.iter().map(|record| record.line).collect();
    assert_eq!(lines, [Some(3), Some(5), Some(6)]);
    assert!(matches!(
        records[0].result,
        Err(Error::Malformed { line: Some(3), .. })
    ));
    assert!(records[1].result.is_err());
    assert!(records[2].result.is_ok());
}

#[test]
fn a_bom_wins_over_a_windows_1252_mapping() {
    let mapping = Mapping::from_toml(
        &MINIMAL.replace("[fields]", "encoding = \"windows-1252\"\n[fields]"),
        "test.toml",
    )
    .expect("valid mapping");
    let records = records(mapping, "\u{feff}Id;Prénom;Nom\nA-1;Zoé;F\n", &context());
    assert_eq!(referral(&records[0]).person.first_name, "Zoé");
}

/// Hands out its input one byte per read, as a slow pipe would.
struct Trickle<'a>(&'a [u8]);

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match (self.0.split_first(), buf.first_mut()) {
            (Some((byte, rest)), Some(slot)) => {
                *slot = *byte;
                self.0 = rest;
                Ok(1)
            }
            _ => Ok(0),
        }
    }
}

#[test]
fn crlf_becomes_lf_across_read_boundaries() {
    let input = b"a;b\r\nc;\"x\ry\r\nz\"\r\n\r";
    for trickle in [false, true] {
        let reader: Box<dyn Read> = if trickle {
            Box::new(Trickle(input))
        } else {
            Box::new(&input[..])
        };
        let mut output = Vec::new();
        RowInput::new(reader, u64::MAX)
            .read_to_end(&mut output)
            .expect("readable");
        assert_eq!(output, b"a;b\nc;\"x\ry\nz\"\n\r");
    }
}

#[test]
fn rows_longer_than_the_bound_stop_the_file_with_their_line() {
    let mut context = context();
    context.limits.max_bytes = 1024;
    let long = "x".repeat(20_000);
    let input = format!("Id;Prénom;Nom\nA-1;Z;F\nA-2;Z;\"{long}\nA-3;Z;F\nA-4;Z;F\n");
    let records = records(mapping(""), &input, &context);
    assert_eq!(records.len(), 2, "the row before, then the refusal");
    assert!(records[0].result.is_ok());
    let error = records[1].result.as_ref().expect_err("too long");
    assert!(
        matches!(error, Error::Malformed { line: Some(3), .. }),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("longer than 1024 bytes"),
        "{error}"
    );

    // A row just under the bound passes.
    let cell = "y".repeat(900);
    let input = format!("Id;Prénom;Nom;Notes\nA-1;Z;F;{cell}\n");
    let mapping = Mapping::from_toml(
        &MINIMAL.replace("[fields]", "ignore = [\"Notes\"]\n[fields]"),
        "test.toml",
    )
    .expect("valid mapping");
    assert!(records_ok(mapping, &input, &context));
}

fn records_ok(mapping: Mapping, input: &str, context: &Context) -> bool {
    records(mapping, input, context)
        .iter()
        .all(|record| record.result.is_ok())
}

#[test]
fn cells_beyond_the_adapter_bound_are_refused() {
    let mapping = mapping("\"situation.other\" = { column = \"Autre\" }\n");
    let input = format!("Id;Prénom;Nom;Autre\nA-1;Z;F;{}\n", "é".repeat(1001));
    let records = records(mapping, &input, &context());
    let error = records[0].result.as_ref().expect_err("too long");
    assert_eq!(error.violations()[0].rule, "cell-size");
    assert_eq!(error.violations()[0].pointer, "/situation/other");
}

/// An endless CSV file that counts what has been read from it.
struct Endless {
    served: std::rc::Rc<std::cell::Cell<u64>>,
    row: u64,
    pending: Vec<u8>,
}

impl Read for Endless {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pending.is_empty() {
            self.pending = if self.row == 0 {
                b"Id;Pr\xC3\xA9nom;Nom\r\n".to_vec()
            } else {
                format!("R-{};Z\u{e9}bulon;Fakeperson\r\n", self.row).into_bytes()
            };
            self.row += 1;
        }
        let count = buf.len().min(self.pending.len());
        buf[..count].copy_from_slice(&self.pending[..count]);
        self.pending.drain(..count);
        self.served.set(self.served.get() + count as u64);
        Ok(count)
    }
}

#[test]
fn decoding_reads_the_input_lazily() {
    let served = std::rc::Rc::new(std::cell::Cell::new(0));
    let input = Endless {
        served: served.clone(),
        row: 0,
        pending: Vec::new(),
    };
    let format = CsvFormat::new(mapping(""));
    let context = context();
    let mut records = format
        .decode(Box::new(input), &context)
        .expect("the header is right");
    for expected_line in 2..1002 {
        let record = records.next().expect("endless");
        assert_eq!(record.line, Some(expected_line));
        assert!(record.result.is_ok());
    }
    // A thousand rows of about 30 bytes, plus the read-ahead of the buffers: a
    // reader that collected the file first would never have returned.
    assert!(
        served.get() < 30_000 + 4 * 8192,
        "read {} bytes",
        served.get()
    );
}

#[test]
fn line_numbers_survive_blank_lines_multiline_cells_and_a_missing_last_break() {
    let mapping = mapping("reason = { column = \"Motif\" }\n");
    let input = "\nId;Prénom;Nom;Motif\n\nA-1;Z;F;\r\n\r\nA-2;Z;F;\"two\r\nlines\"\n\n\nA-3;Z;F;x";
    let records = records(mapping, input, &context());
    let lines: Vec<_> = records.iter().map(|record| record.line).collect();
    assert_eq!(lines, [Some(4), Some(6), Some(10)]);
    assert_eq!(referral(&records[1]).reason.as_deref(), Some("two\nlines"));
    assert_eq!(referral(&records[2]).reason.as_deref(), Some("x"));
}
