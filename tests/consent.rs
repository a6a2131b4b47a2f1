//! Consent records: parsing (golden files in tests/golden/consent), the state
//! derived from events, evaluation into a grant or a refusal (one row per
//! refusal code), DORA's commitment as a public-task record, property tests,
//! and the `consent` command line against a real store file.

mod common;

use std::collections::BTreeSet;
use std::process::ExitCode;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use clap::Parser;
use common::{
    ASSOCIATION_SIRET, FRANCE_TRAVAIL_SIRET, MISSION_LOCALE_SIRET, assert_golden_json,
    fixed_context, golden_bytes,
};
use passerelle::Error;
use passerelle::cli::consent::{ConsentAction, run};
use passerelle::consent::{
    ConsentEvent, ConsentEventKind, ConsentRecord, ConsentState, Purpose, RecipientScope, RecordId,
    SubjectId, evaluate, from_dora_commitment,
};
use passerelle::decision::{LegalBasis, RefusalReason, SpecialCategoryBasis};
use passerelle::formats::dora::decode_orientation;
use passerelle::model::categories::DataCategory;
use passerelle::model::common::{Organisation, OrganisationKind};
use passerelle::model::ids::Siret;
use passerelle::validate::{Limits, SchemaName, schemas::schema};
use proptest::prelude::*;
use serde_json::Value;

/// A valid SIRET for the Cap Emploi of the fixtures.
const CAP_EMPLOI_SIRET: &str = "73282932000074";

/// Fake personal values of the fixtures; none may appear in an error or a refusal.
const PERSONAL_VALUES: &[&str] = &[
    "aicha.bensaid",
    "bensaid",
    "84 12 76",
    "184127645108947",
    "06 12 34 56 78",
    "0612345678",
    "Aïcha",
    "Ben Saïd",
    "81234567800012",
    "13000548100003",
    "subj-5c1e9a7f20b4",
];

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .expect("RFC 3339")
        .with_timezone(&Utc)
}

fn siret(text: &str) -> Siret {
    Siret::parse(text).expect("valid SIRET")
}

fn organisation(text: &str, kind: OrganisationKind) -> Organisation {
    Organisation {
        siret: siret(text),
        kind,
        name: None,
    }
}

fn france_travail() -> Organisation {
    organisation(FRANCE_TRAVAIL_SIRET, OrganisationKind::FranceTravail)
}

fn parse(path: &str) -> Result<ConsentRecord, Error> {
    ConsentRecord::parse(&golden_bytes(path), &Limits::default())
}

fn record(path: &str) -> ConsentRecord {
    parse(path).unwrap_or_else(|error| panic!("{path}: {error}"))
}

fn assert_no_personal_value(text: &str) {
    for value in PERSONAL_VALUES {
        assert!(!text.contains(value), "a personal value leaked: {text}");
    }
}

fn categories(names: &[DataCategory]) -> BTreeSet<DataCategory> {
    names.iter().copied().collect()
}

// ---------------------------------------------------------------- parsing

#[test]
fn a_valid_record_parses_and_serialises_in_canonical_form() {
    let record = record("consent/consent-given.json");
    assert_eq!(record.legal_basis, LegalBasis::Consent);
    assert_eq!(
        record.special_category_basis,
        Some(SpecialCategoryBasis::ExplicitConsent)
    );
    assert_eq!(
        record.recipients,
        [
            RecipientScope::Organisation(siret(FRANCE_TRAVAIL_SIRET)),
            RecipientScope::Kind(OrganisationKind::MissionLocale)
        ]
    );
    assert!(record.data_categories.contains(&DataCategory::Disability));
    // The renewal was written with a +01:00 offset: it is kept as UTC.
    assert_eq!(record.events[1].at, at("2026-12-15T09:30:00Z"));
    let canonical = serde_json::to_value(&record).expect("serialisable");
    assert_golden_json("consent/consent-given.expected.json", &canonical);
    schema(SchemaName::ConsentV1)
        .validate(&canonical)
        .expect("the canonical form obeys its schema");
    assert_eq!(
        ConsentRecord::from_value(&canonical).expect("reads back"),
        record
    );
}

#[test]
fn a_public_task_record_without_end_or_art9_basis_parses() {
    let record = record("consent/public-task-objected.json");
    assert_eq!(record.legal_basis, LegalBasis::PublicTask);
    assert_eq!(record.special_category_basis, None);
    assert_eq!(record.valid_until, None);
    let collection = record.collection.as_ref().expect("collection");
    assert!(!collection.on_behalf_of_guardian, "absent means false");
}

#[test]
fn bad_records_are_refused_with_every_violation_and_no_personal_value() {
    for (name, expected) in [
        (
            "bad-subject-email",
            vec![("/subject_id", "subject-id-not-pseudonymous")],
        ),
        (
            "bad-subject-nir",
            vec![("/subject_id", "subject-id-not-pseudonymous")],
        ),
        (
            "bad-subject-phone",
            vec![("/subject_id", "subject-id-not-pseudonymous")],
        ),
        (
            "bad-subject-name",
            vec![("/subject_id", "subject-id-not-pseudonymous")],
        ),
        (
            "bad-unknown-category",
            vec![("/data_categories/1", "data-category")],
        ),
        ("bad-siret-key", vec![("/controllers/0", "siret-checksum")]),
        (
            "bad-event-out-of-order",
            vec![
                ("/events/2/at", "event-out-of-order"),
                ("/valid_until", "validity-period"),
            ],
        ),
    ] {
        let error = parse(&format!("consent/{name}.json")).expect_err(name);
        let found: Vec<(&str, &str)> = error
            .violations()
            .iter()
            .map(|v| (v.pointer.as_str(), v.rule.as_str()))
            .collect();
        assert_eq!(found, expected, "{name}: {error}");
        assert_no_personal_value(&format!("{error} {error:?}"));
        assert_golden_json(
            &format!("consent/{name}.errors.json"),
            &serde_json::to_value(error.violations()).expect("serialisable"),
        );
    }
}

#[test]
fn schema_violations_come_first_and_are_all_listed() {
    let error = parse("consent/bad-schema.json").expect_err("invalid");
    let rules: BTreeSet<(&str, &str)> = error
        .violations()
        .iter()
        .map(|v| (v.pointer.as_str(), v.rule.as_str()))
        .collect();
    for expected in [
        ("/extra_field", "unknown-field"),
        ("/purposes/0", "pattern"),
        ("/legal_basis", "enum"),
    ] {
        assert!(rules.contains(&expected), "{expected:?} missing: {error}");
    }
    assert!(
        rules.iter().any(|(pointer, _)| *pointer == "/recipients/0"),
        "a recipient with both siret and kind is refused: {error}"
    );
    assert_golden_json(
        "consent/bad-schema.errors.json",
        &serde_json::to_value(error.violations()).expect("serialisable"),
    );
}

#[test]
fn appending_refuses_a_back_dated_event() {
    let mut record = record("consent/consent-given.json");
    let last = record.events.last().expect("events").at;
    let event = |at| ConsentEvent {
        kind: ConsentEventKind::Withdrawn,
        at,
        recorded_by: siret(ASSOCIATION_SIRET),
    };
    let error = record
        .append(event(last - TimeDelta::seconds(1)))
        .expect_err("back-dated");
    assert_eq!(error.violations()[0].rule, "event-out-of-order");
    assert_eq!(record.events.len(), 2, "nothing appended");
    record.append(event(last)).expect("same time is in order");
    assert_eq!(record.state_at(last), ConsentState::Withdrawn);
}

// ---------------------------------------------------------------- state

/// A record with the given events (kind, day of December 2026 at noon) and
/// validity (days of December 2026).
fn with_events(
    events: &[(ConsentEventKind, i64)],
    valid_from: Option<i64>,
    valid_until: Option<i64>,
) -> ConsentRecord {
    let day = |day: i64| {
        Utc.with_ymd_and_hms(2026, 12, 1, 12, 0, 0)
            .single()
            .expect("valid time")
            + TimeDelta::days(day - 1)
    };
    let mut record = record("consent/consent-given.json");
    record.valid_from = valid_from.map(day);
    record.valid_until = valid_until.map(day);
    record.events = events
        .iter()
        .map(|(kind, at)| ConsentEvent {
            kind: *kind,
            at: day(*at),
            recorded_by: siret(ASSOCIATION_SIRET),
        })
        .collect();
    record
}

fn december(day: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, day, 12, 0, 0)
        .single()
        .expect("valid time")
}

/// Name, events (kind, day of December 2026), validity (days), now (day), expected state.
type StateRow = (
    &'static str,
    &'static [(ConsentEventKind, i64)],
    Option<i64>,
    Option<i64>,
    u32,
    ConsentState,
);

#[test]
#[rustfmt::skip]
fn state_derivation_table() {
    use ConsentEventKind::{Expired, Given, Invalidated, Objected, Refused, Renewed, Withdrawn};
    use ConsentState as S;
    let rows: &[StateRow] = &[
        ("given", &[(Given, 1)], None, None, 2, S::Active),
        ("given at this very time", &[(Given, 2)], None, None, 2, S::Active),
        ("given later than now", &[(Given, 5)], None, None, 2, S::NeverGiven),
        ("a renewal alone", &[(Renewed, 1)], None, None, 2, S::NeverGiven),
        ("given then renewed", &[(Given, 1), (Renewed, 3)], None, None, 4, S::Active),
        ("refused", &[(Refused, 1)], None, None, 2, S::Refused),
        ("withdrawn", &[(Given, 1), (Withdrawn, 3)], None, None, 4, S::Withdrawn),
        ("before the withdrawal", &[(Given, 1), (Withdrawn, 3)], None, None, 2, S::Active),
        ("objected", &[(Given, 1), (Objected, 3)], None, None, 4, S::Objected),
        ("expired event", &[(Given, 1), (Expired, 3)], None, None, 4, S::Expired),
        ("renewed after expiry", &[(Given, 1), (Expired, 3), (Renewed, 4)], None, None, 5, S::Active),
        ("renewal cannot lift a withdrawal", &[(Given, 1), (Withdrawn, 2), (Renewed, 3)], None, None, 4, S::Withdrawn),
        ("renewal cannot lift an objection", &[(Given, 1), (Objected, 2), (Renewed, 3)], None, None, 4, S::Objected),
        ("renewal cannot lift a refusal", &[(Refused, 1), (Renewed, 3)], None, None, 4, S::Refused),
        ("given again after a withdrawal", &[(Given, 1), (Withdrawn, 2), (Given, 3)], None, None, 4, S::Active),
        ("given after a refusal", &[(Refused, 1), (Given, 3)], None, None, 4, S::Active),
        ("invalidated", &[(Given, 1), (Invalidated, 2)], None, None, 3, S::Invalidated),
        ("nothing revives an invalidated record", &[(Given, 1), (Invalidated, 2), (Given, 3)], None, None, 4, S::Invalidated),
        ("before the validity period", &[(Given, 1)], Some(5), Some(20), 3, S::NotYetValid),
        ("within the validity period", &[(Given, 1)], Some(5), Some(20), 10, S::Active),
        ("the end is exclusive", &[(Given, 1)], Some(5), Some(20), 20, S::Expired),
        ("after the validity period", &[(Given, 1)], Some(5), Some(20), 25, S::Expired),
        ("withdrawn beats the validity period", &[(Given, 1), (Withdrawn, 2)], Some(5), Some(20), 3, S::Withdrawn),
        ("withdrawn stays withdrawn after the end", &[(Given, 1), (Withdrawn, 2)], None, Some(20), 25, S::Withdrawn),
    ];
    for (name, events, from, until, now, expected) in rows {
        let record = with_events(events, *from, *until);
        assert_eq!(record.state_at(december(*now)), *expected, "{name}");
    }
}

// ---------------------------------------------------------------- evaluation

/// Record, recipient, purpose, required categories, expected reason and code.
type RefusalCase = (
    ConsentRecord,
    Organisation,
    Purpose,
    BTreeSet<DataCategory>,
    RefusalReason,
    &'static str,
);

/// One row per refusal code evaluation can give, with the exact code.
#[test]
#[rustfmt::skip]
fn every_refusal_reason_has_its_exact_code() {
    use ConsentEventKind::{Expired, Given, Invalidated, Objected, Refused, Withdrawn};
    use RefusalReason as R;
    let active = || with_events(&[(Given, 1)], None, None);
    let without_art9 = || {
        let mut record = active();
        record.special_category_basis = None;
        record
    };
    let ft = france_travail;
    let orientation = Purpose::orientation;
    let identity = || categories(&[DataCategory::Identity]);
    let cap_emploi = organisation(CAP_EMPLOI_SIRET, OrganisationKind::CapEmploi);
    let registration = Purpose::parse("dpv:ServiceRegistration").expect("term");
    let beyond = categories(&[DataCategory::Identity, DataCategory::Nir, DataCategory::BirthDate]);
    let disability = categories(&[DataCategory::Identity, DataCategory::Disability]);
    let cases: Vec<RefusalCase> = vec![
        (with_events(&[(Given, 5)], None, None), ft(), orientation(), identity(), R::ConsentMissing, "consent-missing"),
        (with_events(&[(Refused, 1)], None, None), ft(), orientation(), identity(), R::ConsentRefused, "consent-refused"),
        (with_events(&[(Given, 1), (Withdrawn, 2)], None, None), ft(), orientation(), identity(), R::ConsentWithdrawn, "consent-withdrawn"),
        (with_events(&[(Given, 1), (Objected, 2)], None, None), ft(), orientation(), identity(), R::ObjectionRecorded, "objection-recorded"),
        (with_events(&[(Given, 1), (Expired, 2)], None, None), ft(), orientation(), identity(), R::ConsentExpired, "consent-expired"),
        (with_events(&[(Given, 1)], None, Some(2)), ft(), orientation(), identity(), R::ConsentExpired, "consent-expired"),
        (with_events(&[(Given, 1)], Some(10), None), ft(), orientation(), identity(), R::ConsentNotYetValid, "consent-not-yet-valid"),
        (with_events(&[(Given, 1), (Invalidated, 2)], None, None), ft(), orientation(), identity(), R::ConsentInvalidated, "consent-invalidated"),
        (active(), cap_emploi, orientation(), identity(), R::OutOfScopeRecipient, "consent-out-of-scope-recipient"),
        (active(), ft(), registration, identity(), R::OutOfScopePurpose, "consent-out-of-scope-purpose"),
        (active(), ft(), orientation(), beyond, R::OutOfScopeCategory, "consent-out-of-scope-category"),
        (without_art9(), ft(), orientation(), disability, R::SpecialCategoryWithoutBasis, "special-category-without-basis"),
    ];
    for (record, recipient, purpose, needed, reason, code) in cases {
        let refusal = evaluate(Some(&record), &recipient, &purpose, &needed, december(3))
            .expect_err(code);
        assert_eq!(refusal.reason, reason, "{code}: {}", refusal.explanation);
        assert_eq!(refusal.reason.code(), code);
        assert_eq!(serde_json::to_value(refusal.reason).expect("serialisable"), Value::from(code));
        assert_no_personal_value(&refusal.explanation);
    }
    let refusal = evaluate(None, &ft(), &orientation(), &identity(), december(3))
        .expect_err("no record");
    assert_eq!(refusal.reason.code(), "consent-missing");
}

#[test]
fn a_refusal_names_what_is_missing_and_nothing_else() {
    let record = with_events(&[(ConsentEventKind::Given, 1)], None, None);
    let refusal = evaluate(
        Some(&record),
        &france_travail(),
        &Purpose::orientation(),
        &categories(&[
            DataCategory::Nir,
            DataCategory::BirthDate,
            DataCategory::Identity,
        ]),
        december(3),
    )
    .expect_err("out of scope");
    assert!(refusal.explanation.contains(&record.record_id.to_string()));
    assert!(
        refusal.explanation.contains("birth_date, nir"),
        "{}",
        refusal.explanation
    );
    assert!(
        !refusal.explanation.contains("identity"),
        "{}",
        refusal.explanation
    );
    assert!(!refusal.explanation.contains(record.subject_id.as_str()));
}

#[test]
fn an_active_record_grants_its_categories_and_bases() {
    let record = record("consent/consent-given.json");
    let now = at("2026-12-20T10:00:00Z");
    for recipient in [
        france_travail(),
        // Covered by kind, whatever its SIRET.
        organisation(MISSION_LOCALE_SIRET, OrganisationKind::MissionLocale),
    ] {
        let grant = evaluate(
            Some(&record),
            &recipient,
            &Purpose::orientation(),
            &categories(&[DataCategory::Identity, DataCategory::Disability]),
            now,
        )
        .expect("granted");
        assert_eq!(grant.record_id, "9d2f7c1a-8e3b-4a6d-b5c4-1f0e2d3c4b5a");
        assert_eq!(grant.basis, LegalBasis::Consent);
        assert_eq!(
            grant.special_category_basis,
            Some(SpecialCategoryBasis::ExplicitConsent)
        );
        // The record's categories, plus the non-personal ones that need no coverage.
        let expected: BTreeSet<DataCategory> = record
            .data_categories
            .iter()
            .copied()
            .chain([DataCategory::Referral, DataCategory::Status])
            .collect();
        assert_eq!(grant.categories, expected);
        assert!(grant.allows(DataCategory::Disability));
        assert!(!grant.allows(DataCategory::Nir));
    }
}

#[test]
fn the_objection_on_the_public_task_record_blocks_it() {
    let record = record("consent/public-task-objected.json");
    let recipient = france_travail();
    let needed = categories(&[DataCategory::Identity]);
    let before = evaluate(
        Some(&record),
        &recipient,
        &Purpose::orientation(),
        &needed,
        at("2026-11-01T00:00:00Z"),
    )
    .expect("active before the objection");
    assert_eq!(before.basis, LegalBasis::PublicTask);
    assert_eq!(before.special_category_basis, None);
    let after = evaluate(
        Some(&record),
        &recipient,
        &Purpose::orientation(),
        &needed,
        at("2026-11-21T00:00:00Z"),
    )
    .expect_err("objected");
    assert_eq!(after.reason, RefusalReason::ObjectionRecorded);
}

// ---------------------------------------------------------------- DORA

#[test]
fn a_dora_commitment_becomes_a_public_task_record() {
    let context = fixed_context();
    let referral = decode_orientation(&golden_bytes("dora/valid-orientation.json"), &context)
        .expect("the DORA fixture decodes")
        .value;
    let now = context.now;
    let record = from_dora_commitment(&referral, now);
    let document = serde_json::to_value(&record).expect("serialisable");
    assert_golden_json("consent/dora-commitment.expected.json", &document);
    assert_eq!(
        ConsentRecord::from_value(&document).expect("obeys the schema and the rules"),
        record
    );

    let reference = referral.consent_reference.as_deref().expect("a reference");
    assert_eq!(RecordId::for_reference(reference), Ok(record.record_id));
    assert_eq!(record.legal_basis, LegalBasis::PublicTask);
    assert_eq!(record.special_category_basis, None);
    assert_eq!(record.controllers, [siret(ASSOCIATION_SIRET)]);
    assert_eq!(
        record.recipients,
        [RecipientScope::Organisation(siret(FRANCE_TRAVAIL_SIRET))]
    );
    assert_eq!(record.purposes, [Purpose::orientation()]);
    assert_eq!(
        record.data_categories,
        [
            DataCategory::Referral,
            DataCategory::Referent,
            DataCategory::Identity,
            DataCategory::Contact,
            DataCategory::Availability,
            DataCategory::Identifier,
            DataCategory::FreeText,
        ],
        "the categories present in the referral, none special"
    );
    let text = document.to_string();
    for name in ["Aïcha", "Ben Saïd", "aicha", "0612345678", "01234567891"] {
        assert!(!text.contains(name), "the record repeats {name}");
    }
    assert!(SubjectId::parse(record.subject_id.as_str()).is_ok());
    assert_eq!(
        from_dora_commitment(&referral, now).subject_id,
        record.subject_id,
        "stable for a referral"
    );

    assert_eq!(record.state_at(now), ConsentState::Active);
    assert_eq!(
        record.state_at(at("2027-12-01T09:00:00Z")),
        ConsentState::Expired,
        "valid one year"
    );
    let grant = evaluate(
        Some(&record),
        &france_travail(),
        &Purpose::orientation(),
        &categories(&[DataCategory::Identity, DataCategory::Contact]),
        now,
    )
    .expect("the commitment covers the orientation it came with");
    assert_eq!(grant.basis, LegalBasis::PublicTask);
    let refusal = evaluate(
        Some(&record),
        &france_travail(),
        &Purpose::orientation(),
        &categories(&[DataCategory::ObstacleHealth]),
        now,
    )
    .expect_err("no health data under a DORA commitment");
    assert_eq!(refusal.reason, RefusalReason::OutOfScopeCategory);
}

// ---------------------------------------------------------------- properties

fn recipients_pool() -> Vec<RecipientScope> {
    vec![
        RecipientScope::Organisation(siret(FRANCE_TRAVAIL_SIRET)),
        RecipientScope::Organisation(siret(MISSION_LOCALE_SIRET)),
        RecipientScope::Kind(OrganisationKind::FranceTravail),
        RecipientScope::Kind(OrganisationKind::MissionLocale),
        RecipientScope::Kind(OrganisationKind::CapEmploi),
    ]
}

fn organisations_pool() -> Vec<Organisation> {
    vec![
        france_travail(),
        organisation(MISSION_LOCALE_SIRET, OrganisationKind::MissionLocale),
        organisation(CAP_EMPLOI_SIRET, OrganisationKind::CapEmploi),
        organisation(ASSOCIATION_SIRET, OrganisationKind::Association),
    ]
}

fn purposes_pool() -> Vec<Purpose> {
    [
        "dpv:ServiceProvision",
        "dpv:CommunicationManagement",
        "dpv:ServiceRegistration",
    ]
    .iter()
    .map(|term| Purpose::parse(term).expect("term"))
    .collect()
}

fn base_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
        .single()
        .expect("valid time")
}

fn arbitrary_record() -> impl Strategy<Value = ConsentRecord> {
    let kinds = prop::sample::select(ConsentEventKind::ALL.to_vec());
    (
        any::<bool>(),
        prop::option::of(prop::sample::select(vec![
            SpecialCategoryBasis::ExplicitConsent,
            SpecialCategoryBasis::SocialProtection,
        ])),
        prop::sample::subsequence(recipients_pool(), 0..=5),
        prop::sample::subsequence(purposes_pool(), 1..=3),
        prop::sample::subsequence(DataCategory::ALL.to_vec(), 1..=DataCategory::ALL.len()),
        prop::option::of(0_i64..200),
        prop::option::of(100_i64..400),
        prop::collection::vec((kinds, 0_i64..30), 1..8),
    )
        .prop_map(
            |(consent, special, recipients, purposes, data_categories, from, until, steps)| {
                let day = |offset: i64| base_time() + TimeDelta::days(offset);
                let mut elapsed = 0;
                let events = steps
                    .into_iter()
                    .map(|(kind, gap)| {
                        elapsed += gap;
                        ConsentEvent {
                            kind,
                            at: day(elapsed),
                            recorded_by: siret(ASSOCIATION_SIRET),
                        }
                    })
                    .collect();
                ConsentRecord {
                    record_id: RecordId::parse("9d2f7c1a-8e3b-4a6d-b5c4-1f0e2d3c4b5a")
                        .expect("UUID"),
                    schema_version: Default::default(),
                    subject_id: SubjectId::parse("subj-5c1e9a7f20b4").expect("pseudonymous"),
                    legal_basis: if consent {
                        LegalBasis::Consent
                    } else {
                        LegalBasis::PublicTask
                    },
                    special_category_basis: special,
                    controllers: vec![siret(ASSOCIATION_SIRET)],
                    recipients,
                    purposes,
                    data_categories,
                    notice: None,
                    collection: None,
                    valid_from: from.map(day),
                    valid_until: until.map(day),
                    withdrawal_method: None,
                    evidence_sha256: None,
                    events,
                }
            },
        )
}

fn arbitrary_query()
-> impl Strategy<Value = (Organisation, Purpose, BTreeSet<DataCategory>, DateTime<Utc>)> {
    (
        prop::sample::select(organisations_pool()),
        prop::sample::select(purposes_pool()),
        prop::collection::btree_set(prop::sample::select(DataCategory::ALL.to_vec()), 0..5),
        (0_i64..500).prop_map(|offset| base_time() + TimeDelta::days(offset)),
    )
}

fn blocking_reason(state: ConsentState) -> Option<RefusalReason> {
    match state {
        ConsentState::Active => None,
        ConsentState::NeverGiven => Some(RefusalReason::ConsentMissing),
        ConsentState::NotYetValid => Some(RefusalReason::ConsentNotYetValid),
        ConsentState::Expired => Some(RefusalReason::ConsentExpired),
        ConsentState::Refused => Some(RefusalReason::ConsentRefused),
        ConsentState::Withdrawn => Some(RefusalReason::ConsentWithdrawn),
        ConsentState::Objected => Some(RefusalReason::ObjectionRecorded),
        ConsentState::Invalidated => Some(RefusalReason::ConsentInvalidated),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Withdrawn, objected, expired, out of scope: always a refusal, with the
    /// state's own code first; a grant only when every check holds; the same
    /// inputs always give the same answer.
    #[test]
    fn evaluation_refuses_whatever_is_not_covered(
        record in arbitrary_record(),
        (recipient, purpose, needed, now) in arbitrary_query(),
    ) {
        let first = evaluate(Some(&record), &recipient, &purpose, &needed, now);
        let second = evaluate(Some(&record), &recipient, &purpose, &needed, now);
        prop_assert_eq!(&first, &second);

        let state = record.state_at(now);
        let recipient_covered = record.covers_recipient(&recipient.siret, recipient.kind);
        let purpose_covered = record.covers_purpose(&purpose);
        let covered: BTreeSet<DataCategory> = record
            .data_categories
            .iter()
            .copied()
            .chain(DataCategory::ALL.iter().copied().filter(|c| !c.is_personal()))
            .collect();
        let categories_covered = needed.is_subset(&covered);
        match &first {
            Err(refusal) => {
                prop_assert!(!refusal.explanation.contains(record.subject_id.as_str()));
                if let Some(reason) = blocking_reason(state) {
                    prop_assert_eq!(refusal.reason, reason);
                } else if !recipient_covered {
                    prop_assert_eq!(refusal.reason, RefusalReason::OutOfScopeRecipient);
                } else if !purpose_covered {
                    prop_assert_eq!(refusal.reason, RefusalReason::OutOfScopePurpose);
                } else if !categories_covered {
                    prop_assert_eq!(refusal.reason, RefusalReason::OutOfScopeCategory);
                } else {
                    prop_assert_eq!(refusal.reason, RefusalReason::SpecialCategoryWithoutBasis);
                    prop_assert!(record.special_category_basis.is_none());
                }
            }
            Ok(grant) => {
                prop_assert_eq!(state, ConsentState::Active);
                prop_assert!(recipient_covered && purpose_covered && categories_covered);
                prop_assert!(needed.iter().all(|category| grant.allows(*category)));
                prop_assert_eq!(&grant.categories, &covered);
                prop_assert_eq!(grant.basis, record.legal_basis);
            }
        }
        if matches!(state, ConsentState::Withdrawn | ConsentState::Objected | ConsentState::Expired)
            || !recipient_covered
            || !purpose_covered
            || !categories_covered
        {
            prop_assert!(first.is_err());
        }
    }

    /// A withdrawal or objection appended now blocks from now on, whatever came before.
    #[test]
    fn a_withdrawal_or_objection_appended_always_blocks(
        mut record in arbitrary_record(),
        objection in any::<bool>(),
        (recipient, purpose, needed, _) in arbitrary_query(),
    ) {
        let last = record.events.last().map(|event| event.at).unwrap_or_else(base_time);
        let invalidated = record.events.iter().any(|event| event.kind == ConsentEventKind::Invalidated);
        let kind = if objection { ConsentEventKind::Objected } else { ConsentEventKind::Withdrawn };
        record
            .append(ConsentEvent { kind, at: last, recorded_by: siret(ASSOCIATION_SIRET) })
            .expect("in order");
        for later in [0, 1, 400] {
            let now = last + TimeDelta::days(later);
            let refusal = evaluate(Some(&record), &recipient, &purpose, &needed, now)
                .expect_err("blocked");
            // Invalidation is final and keeps its own code; anything else gives way.
            let expected = if invalidated {
                RefusalReason::ConsentInvalidated
            } else if objection {
                RefusalReason::ObjectionRecorded
            } else {
                RefusalReason::ConsentWithdrawn
            };
            prop_assert_eq!(refusal.reason, expected);
        }
    }
}

// ---------------------------------------------------------------- CLI

#[derive(Debug, Parser)]
struct Command {
    #[command(subcommand)]
    action: ConsentAction,
}

fn consent_command(store: &std::path::Path, line: &[&str]) -> (Result<ExitCode, Error>, String) {
    let parsed = Command::try_parse_from(std::iter::once("consent").chain(line.iter().copied()))
        .unwrap_or_else(|error| panic!("{line:?}: {error}"));
    let mut out = Vec::new();
    let result = run(parsed.action, store, &mut out);
    (result, String::from_utf8(out).expect("UTF-8 output"))
}

#[test]
fn the_consent_commands_record_append_and_show_against_a_store_file() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let store = directory.path().join("passerelle.db");
    let file = common::golden_dir().join("consent/consent-given.json");
    let file = file.to_str().expect("UTF-8 path");
    let id = "9d2f7c1a-8e3b-4a6d-b5c4-1f0e2d3c4b5a";

    let (result, out) = consent_command(&store, &["record", file, "--at", "2026-12-20T10:00:00Z"]);
    assert_eq!(result.expect("stored"), ExitCode::SUCCESS);
    assert_eq!(
        out,
        format!("consent record {id}: stored; state at 2026-12-20T10:00:00Z: active\n")
    );
    let (result, out) = consent_command(&store, &["record", file, "--at", "2026-12-20T10:00:00Z"]);
    assert_eq!(result.expect("idempotent"), ExitCode::SUCCESS);
    assert!(out.contains("already stored, unchanged"), "{out}");

    let (result, out) = consent_command(
        &store,
        &[
            "event",
            id,
            "--kind",
            "withdrawn",
            "--at",
            "2027-01-05T08:00:00Z",
            "--by",
            ASSOCIATION_SIRET,
        ],
    );
    assert_eq!(result.expect("appended"), ExitCode::SUCCESS);
    assert!(
        out.contains("CONSENT_EVENT_KIND_WITHDRAWN appended"),
        "{out}"
    );
    assert!(out.ends_with("withdrawn\n"), "{out}");

    let (result, out) = consent_command(&store, &["show", id, "--at", "2027-01-01T00:00:00Z"]);
    assert_eq!(result.expect("shown"), ExitCode::SUCCESS);
    let shown: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(shown["state"], "active", "before the withdrawal");
    assert_eq!(shown["record"]["events"].as_array().map(Vec::len), Some(3));
    let (_, out) = consent_command(&store, &["show", id, "--at", "2027-02-01T00:00:00Z"]);
    let shown: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(shown["state"], "withdrawn");
    ConsentRecord::from_value(&shown["record"]).expect("the record shown is a valid record");
}

#[test]
fn the_consent_commands_refuse_clearly() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let store = directory.path().join("passerelle.db");
    let golden = |name: &str| {
        common::golden_dir()
            .join(name)
            .to_str()
            .expect("UTF-8 path")
            .to_owned()
    };
    let id = "9d2f7c1a-8e3b-4a6d-b5c4-1f0e2d3c4b5a";

    let (result, _) = consent_command(
        &store,
        &["record", &golden("consent/bad-subject-email.json")],
    );
    let error = result.expect_err("invalid record");
    assert!(matches!(error, Error::Invalid(_)), "{error}");
    assert_no_personal_value(&error.to_string());

    let (result, _) = consent_command(&store, &["show", id]);
    assert!(matches!(result, Err(Error::NotFound(_))));
    let (result, _) = consent_command(
        &store,
        &["event", id, "--kind", "objected", "--by", ASSOCIATION_SIRET],
    );
    assert!(matches!(result, Err(Error::NotFound(_))));

    let (result, _) = consent_command(&store, &["record", &golden("consent/consent-given.json")]);
    result.expect("stored");
    let (result, _) = consent_command(
        &store,
        &[
            "event",
            id,
            "--kind",
            "withdrawn",
            "--at",
            "2026-01-01T00:00:00Z",
            "--by",
            ASSOCIATION_SIRET,
        ],
    );
    let error = result.expect_err("back-dated");
    assert_eq!(error.violations()[0].rule, "event-out-of-order");

    let (result, _) = consent_command(
        &store,
        &["event", id, "--kind", "withdrawn", "--by", "81234567800012"],
    );
    let error = result.expect_err("bad SIRET");
    assert!(
        matches!(error, Error::Config { .. }),
        "usage error: {error}"
    );
    assert_no_personal_value(&error.to_string());
    let (result, _) = consent_command(&store, &["show", "not-an-id"]);
    assert!(matches!(result, Err(Error::Config { .. })));

    // The same id with other content is a conflict, not an overwrite.
    let mut changed: Value =
        serde_json::from_slice(&golden_bytes("consent/consent-given.json")).expect("JSON");
    changed["purposes"] = serde_json::json!(["dpv:ServiceProvision"]);
    let changed_file = directory.path().join("changed.json");
    std::fs::write(&changed_file, changed.to_string()).expect("write");
    let (result, _) = consent_command(&store, &["record", changed_file.to_str().expect("UTF-8")]);
    assert!(matches!(result, Err(Error::Conflict(_))));
}

#[test]
fn a_dora_reference_names_its_record_on_the_command_line() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let store = directory.path().join("passerelle.db");
    let context = fixed_context();
    let referral = decode_orientation(&golden_bytes("dora/valid-orientation.json"), &context)
        .expect("decodes")
        .value;
    let record = from_dora_commitment(&referral, context.now);
    let file = directory.path().join("dora-commitment.json");
    std::fs::write(&file, serde_json::to_vec(&record).expect("JSON")).expect("write");
    let (result, _) = consent_command(&store, &["record", file.to_str().expect("UTF-8")]);
    result.expect("stored");
    let reference = referral.consent_reference.expect("reference");
    let (result, out) = consent_command(
        &store,
        &["show", &reference, "--at", "2026-12-02T00:00:00Z"],
    );
    result.expect("found by its reference");
    let shown: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(shown["state"], "active");
    assert_eq!(shown["record"]["record_id"], record.record_id.to_string());
}
