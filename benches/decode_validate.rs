//! Decode + validate of a ~2 KB canonical referral, against jsonschema's
//! validation alone (on an already parsed value) and serde_json parsing alone,
//! measured in the same run.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use passerelle::formats::Context;
use passerelle::formats::canonical::{CanonicalJson, decode_json};
use passerelle::model::v2;
use passerelle::validate::{self, Limits, SchemaName};

const FIXTURE: &[u8] = include_bytes!("fixtures/referral-v2.json");

fn decode_validate(c: &mut Criterion) {
    let limits = Limits::default();
    let context = Context::now();
    let schema = validate::schemas::schema(SchemaName::ReferralV2);
    let parsed: serde_json::Value = serde_json::from_slice(FIXTURE).expect("fixture is JSON");
    // Compact, as a client would send it: about 2.1 KB.
    let compact = serde_json::to_vec(&parsed).expect("serialisable");
    let referral = compact.as_slice();
    assert!(schema.is_valid(&parsed), "fixture is a valid referral");

    let mut group = c.benchmark_group("referral_v2_2kb");
    group.throughput(Throughput::Elements(1));
    group.bench_function("baseline/jsonschema_is_valid_on_parsed_value", |b| {
        b.iter(|| black_box(schema.is_valid(black_box(&parsed))))
    });
    group.bench_function("baseline/serde_json_parse_value", |b| {
        b.iter(|| {
            black_box(serde_json::from_slice::<serde_json::Value>(black_box(
                referral,
            )))
        })
    });
    group.bench_function("strict_parse", |b| {
        b.iter(|| black_box(validate::parse_json(black_box(referral), &limits)))
    });
    group.bench_function("decode_validate_typed", |b| {
        b.iter(|| {
            black_box(validate::decode_document::<v2::Referral>(
                black_box(referral),
                SchemaName::ReferralV2,
                &limits,
            ))
        })
    });
    group.bench_function("canonical_adapter_decode", |b| {
        b.iter(|| {
            black_box(decode_json(
                black_box(referral),
                CanonicalJson::V2,
                &context,
            ))
        })
    });
    group.finish();
}

criterion_group!(benches, decode_validate);
criterion_main!(benches);
