//! Minimisation of a ~2 KB referral by the France Travail policy, and the
//! whole decision (consent evaluation, then minimisation), against jsonschema
//! validation of the same referral (on an already parsed value) and a plain
//! clone of the typed referral, measured in the same run.
//!
//! The floor is 100,000 decide + minimise per second on one core:
//! minimisation must stay a small fraction of that 10 µs budget.

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use passerelle::consent::{ConsentRecord, Purpose, RecordId};
use passerelle::decision::{Decision, Grant, LegalBasis, SpecialCategoryBasis, decide};
use passerelle::model::categories::DataCategory;
use passerelle::model::v2;
use passerelle::policy::{KeyRing, Policy};
use passerelle::validate::{self, SchemaName};

const FIXTURE: &[u8] = include_bytes!("fixtures/referral-v2.json");

/// The shipped France Travail policy, its key read from the committed
/// test-only key file rather than the environment.
fn france_travail_policy() -> Policy {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text =
        std::fs::read_to_string(root.join("config/policies/france-travail-orientation.toml"))
            .expect("shipped policy");
    let text = text.replace(
        "env:PASSERELLE_PSEUDONYM_KEY",
        "file:test-only-pseudonym.key",
    );
    let file = root.join("tests/golden/policy/france-travail-orientation.toml");
    Policy::parse(&text, &file.display().to_string()).expect("valid policy")
}

fn grant(special: Option<SpecialCategoryBasis>) -> Grant {
    Grant {
        record_id: "9d2f7c1a-8e3b-4a6d-b5c4-1f0e2d3c4b5a".to_owned(),
        basis: LegalBasis::Consent,
        special_category_basis: special,
        categories: DataCategory::ALL.iter().copied().collect(),
    }
}

fn minimise(c: &mut Criterion) {
    let policy = france_travail_policy();
    let keys = KeyRing::load([&policy]).expect("test key loads");
    let schema = validate::schemas::schema(SchemaName::ReferralV2);
    let parsed: serde_json::Value = serde_json::from_slice(FIXTURE).expect("fixture is JSON");
    let referral: v2::Referral =
        validate::decode_document(FIXTURE, SchemaName::ReferralV2, &Default::default())
            .expect("fixture is a valid referral");
    let full = grant(Some(SpecialCategoryBasis::ExplicitConsent));
    let without_art_9 = grant(None);
    assert!(policy.minimise_referral(&referral, &full, &keys).is_ok());

    let mut group = c.benchmark_group("minimise_referral_2kb");
    group.throughput(Throughput::Elements(1));
    group.bench_function("baseline/jsonschema_is_valid_on_parsed_value", |b| {
        b.iter(|| black_box(schema.is_valid(black_box(&parsed))))
    });
    group.bench_function("baseline/clone_typed_referral", |b| {
        b.iter(|| black_box(black_box(&referral).clone()))
    });
    group.bench_function("france_travail/full_grant", |b| {
        b.iter(|| black_box(policy.minimise_referral(black_box(&referral), &full, &keys)))
    });
    group.bench_function("france_travail/without_art_9_basis", |b| {
        b.iter(|| black_box(policy.minimise_referral(black_box(&referral), &without_art_9, &keys)))
    });
    let mut record = ConsentRecord::parse(
        include_bytes!("../samples/consent-record.json"),
        &Default::default(),
    )
    .expect("sample consent record");
    record.record_id = RecordId::for_reference(
        referral
            .consent_reference
            .as_deref()
            .expect("fixture references its consent"),
    )
    .expect("usable reference");
    let purpose = Purpose::parse(policy.purpose()).expect("policy purpose");
    let now = chrono::DateTime::parse_from_rfc3339("2026-12-02T10:00:00Z")
        .expect("valid time")
        .to_utc();
    let decide_once = || {
        decide(
            black_box(&referral),
            &referral.sender.organisation,
            &referral.recipient.organisation,
            &purpose,
            Some(&record),
            &policy,
            &keys,
            now,
        )
    };
    assert!(matches!(decide_once(), Decision::Forward(_)));
    group.bench_function("decide/consent_then_france_travail_policy", |b| {
        b.iter(|| black_box(decide_once()))
    });
    group.finish();
}

criterion_group!(benches, minimise);
criterion_main!(benches);
