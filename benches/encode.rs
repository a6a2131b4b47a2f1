//! Encoding a ~2 KB canonical referral into each format the gateway writes
//! for operators (the last pipeline stage before delivery), against a plain
//! `serde_json` serialisation of the same typed referral, measured in the
//! same run.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use passerelle::formats::{self, Context, FormatOptions};
use passerelle::model::{Message, v2};
use passerelle::validate::{self, SchemaName};

const FIXTURE: &[u8] = include_bytes!("fixtures/referral-v2.json");

fn encode(c: &mut Criterion) {
    let referral: v2::Referral =
        validate::decode_document(FIXTURE, SchemaName::ReferralV2, &Default::default())
            .expect("fixture is a valid referral");
    let message = Message::Referral(Box::new(referral.clone()));
    let context = Context::now();
    let mut group = c.benchmark_group("encode_referral_2kb");
    group.throughput(Throughput::Elements(1));
    group.bench_function("baseline/serde_json_to_vec", |b| {
        b.iter(|| serde_json::to_vec(black_box(&referral)).expect("serialisable"))
    });
    for name in [
        "passerelle-v2",
        "passerelle-v1",
        "passerelle-proto-v2",
        "france-travail",
    ] {
        let adapter = formats::by_name(name, &FormatOptions::default()).expect("a format");
        assert!(adapter.encode(&message, &context).is_ok(), "{name} encodes");
        group.bench_function(name, |b| {
            b.iter(|| {
                adapter
                    .encode(black_box(&message), &context)
                    .expect("encodes")
            })
        });
    }
    group.finish();
}

criterion_group!(benches, encode);
criterion_main!(benches);
