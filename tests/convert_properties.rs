//! Properties of the v1 ⇄ v2 conversions, over generated referrals:
//! v1 → v2 → v1 loses nothing; v2 → v1 → v2 loses exactly what the report says;
//! every generated referral survives JSON and the schema unchanged.

mod common;

use common::generators::{date, email, instant, nir, phone, siret, text};
use std::collections::BTreeMap;

use chrono::{TimeZone, Utc};
use passerelle::model::common::{
    Axis, ContactPreference, Organisation, OrganisationKind, Pathway, Recipient, Referent, Sender,
};
use passerelle::model::convert::{v1_to_v2, v2_to_v1};
use passerelle::model::ids::{FranceTravailNumber, InseeCode, PostalCode, ReferralId, Siret};
use passerelle::model::v2::{
    Address, Contact, EducationLevel, Identifier, IdentifierKind, Obstacle, ObstacleDomain,
    ObstacleImpact,
};
use passerelle::model::{v1, v2};
use passerelle::validate::{self, SchemaName};
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::Value;

fn organisation() -> impl Strategy<Value = Organisation> {
    (
        siret(),
        select(OrganisationKind::ALL),
        proptest::option::of(text(40)),
    )
        .prop_map(|(siret, kind, name)| Organisation { siret, kind, name })
}

fn sides() -> impl Strategy<Value = (Sender, Recipient)> {
    (
        organisation(),
        proptest::option::of((
            proptest::option::of(text(30)),
            proptest::option::of(text(30)),
            proptest::option::of(email()),
            proptest::option::of(phone()),
        )),
        organisation(),
        proptest::option::of("dora--[a-z0-9-]{4,20}"),
    )
        .prop_map(|(sender, referent, recipient, service_id)| {
            (
                Sender {
                    organisation: sender,
                    referent: referent.map(|(first_name, last_name, email, phone)| Referent {
                        first_name,
                        last_name,
                        email,
                        phone,
                    }),
                },
                Recipient {
                    organisation: recipient,
                    service_id,
                },
            )
        })
}

/// Obstacle wordings: exact domain labels, known codes in any case, free text.
fn obstacle_text() -> impl Strategy<Value = String> {
    let labels: Vec<String> = ObstacleDomain::ALL
        .iter()
        .map(|d| d.label_fr().to_owned())
        .collect();
    prop_oneof![
        select(labels),
        select(vec![
            "mobilite",
            "Mobilité",
            "27",
            "SANS_LOGEMENT",
            "numerique",
            "contraintes_familiales",
            "difficulte_financiere",
            "maitrise_langue",
            "Santé",
            "justice",
        ])
        .prop_map(str::to_owned),
        text(30),
    ]
}

fn contact_preferences() -> impl Strategy<Value = Vec<ContactPreference>> {
    proptest::sample::subsequence(
        ContactPreference::ALL.to_vec(),
        0..=ContactPreference::ALL.len(),
    )
}

fn situation_parts()
-> impl Strategy<Value = (Vec<String>, Option<bool>, Option<bool>, Option<String>)> {
    (
        proptest::collection::vec(text(30), 0..3),
        proptest::option::of(any::<bool>()),
        proptest::option::of(any::<bool>()),
        proptest::option::of(text(50)),
    )
}

prop_compose! {
    fn referral_v1()(
        id in any::<u128>(),
        created_at in instant(),
        (sender, recipient) in sides(),
        names in (text(40), text(40), proptest::option::of(text(40))),
        birth_date in proptest::option::of(date()),
        contact in (proptest::option::of(phone()), proptest::option::of(email()), proptest::option::of(text(30)), contact_preferences()),
        address in (proptest::option::of("[0-9]{5}"), proptest::option::of("(2A|2B|[0-9]{2})[0-9]{3}"), proptest::option::of(text(30))),
        availability in proptest::option::of(date()),
        identifiers in proptest::option::of((
            proptest::option::of("[0-9]{11}"), proptest::option::of("[0-9]{7}"),
            proptest::option::of("[0-9]{6,8}"), proptest::option::of("[A-Z0-9]{4,10}"), proptest::option::of(nir()),
        )),
        situation in proptest::option::of(situation_parts()),
        obstacles in proptest::collection::vec(obstacle_text(), 0..5),
        pathway in proptest::option::of(select(Pathway::ALL)),
        axis in proptest::option::of(select(Axis::ALL)),
        reason in proptest::option::of(text(100)),
        consent_reference in proptest::option::of("urn:passerelle:consent:[a-z0-9]{8}"),
    ) -> v1::Referral {
        let (first_name, last_name, birth_name) = names;
        let (phone, email, other_contact_method, contact_preferences) = contact;
        let (postal_code, insee_code, city) = address;
        v1::Referral {
            referral_id: ReferralId::from(uuid::Uuid::from_u128(id)),
            schema_version: v1::ReferralV1Tag,
            created_at,
            sender,
            recipient,
            person: v1::Person {
                first_name, last_name, birth_name, birth_date, phone, email, other_contact_method,
                postal_code: postal_code.map(|p| PostalCode::parse(&p).expect("valid")),
                insee_code: insee_code.map(|c| InseeCode::parse(&c).expect("valid")),
                city, availability, contact_preferences,
            },
            identifiers: identifiers.map(|(ft, caf, imilo, departement, nir)| v1::Identifiers {
                france_travail_number: ft.map(|n| FranceTravailNumber::parse(&n).expect("valid")),
                caf_number: caf,
                imilo_dossier_id: imilo,
                departement_id: departement,
                nir,
            }).filter(|identifiers| !identifiers.is_empty()),
            situation: situation.map(|(labels, rsa_beneficiary, recognised_disability, other)| v1::Situation {
                labels, rsa_beneficiary, recognised_disability, other,
            }),
            obstacles, pathway, axis, reason, consent_reference,
        }
    }
}

fn identifier() -> impl Strategy<Value = Identifier> {
    select(IdentifierKind::ALL).prop_flat_map(|kind| {
        let value: BoxedStrategy<String> = match kind {
            IdentifierKind::FranceTravail => "[0-9]{11}".boxed(),
            IdentifierKind::Nir => nir().prop_map(String::from).boxed(),
            _ => "[A-Z0-9]{4,10}".boxed(),
        };
        value.prop_map(move |value| Identifier::new(kind, &value).expect("valid identifier"))
    })
}

fn obstacle() -> impl Strategy<Value = Obstacle> {
    (
        select(ObstacleDomain::ALL),
        proptest::option::of(select(ObstacleImpact::ALL)),
        proptest::option::of(obstacle_text()),
    )
        .prop_map(|(domain, impact, source_label)| Obstacle {
            domain,
            impact,
            source_label,
        })
}

prop_compose! {
    fn referral_v2()(
        base in referral_v1(),
        identifiers in proptest::collection::vec(identifier(), 0..5),
        obstacles in proptest::collection::vec(obstacle(), 0..5),
        education_level in proptest::option::of(select(EducationLevel::ALL)),
    ) -> v2::Referral {
        let mut referral = v1_to_v2(&base);
        referral.identifiers = identifiers;
        referral.obstacles = obstacles;
        if let Some(situation) = referral.situation.as_mut() {
            situation.education_level = education_level;
        }
        referral
    }
}

/// Flattens a JSON value into leaf paths (JSON pointers) and values.
fn leaves(value: &Value, path: String, into: &mut BTreeMap<String, Value>) {
    match value {
        Value::Object(map) => map
            .iter()
            .for_each(|(k, v)| leaves(v, format!("{path}/{k}"), into)),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .for_each(|(i, v)| leaves(v, format!("{path}/{i}"), into)),
        leaf => {
            into.insert(path, leaf.clone());
        }
    }
}

fn pointer_value(value: &Value, pointer: &str) -> Option<Value> {
    value.pointer(pointer).cloned()
}

/// Version 1 holds identifiers in fixed fields, so they come back in another
/// order and without the dropped ones. Key each returning identifier by the
/// index it had in the original (same value, same kind or MSA carried as CAF),
/// so that leaf paths compare like with like and match the report's paths.
fn align_identifiers(original: &mut Value, round_trip: &mut Value) {
    let before: Vec<Value> = original["identifiers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let after: Vec<Value> = round_trip["identifiers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut used = vec![false; before.len()];
    let mut keyed = serde_json::Map::new();
    for (k, identifier) in after.into_iter().enumerate() {
        let matching = before.iter().enumerate().position(|(j, candidate)| {
            !used[j]
                && candidate["value"] == identifier["value"]
                && (candidate["kind"] == identifier["kind"]
                    || (candidate["kind"] == "IDENTIFIER_KIND_MSA"
                        && identifier["kind"] == "IDENTIFIER_KIND_CAF"))
        });
        match matching {
            Some(j) => {
                used[j] = true;
                keyed.insert(j.to_string(), identifier);
            }
            None => {
                keyed.insert(format!("unmatched-{k}"), identifier);
            }
        }
    }
    let original_keyed: serde_json::Map<String, Value> = before
        .into_iter()
        .enumerate()
        .map(|(j, v)| (j.to_string(), v))
        .collect();
    if let Some(object) = original.as_object_mut() {
        object.insert("identifiers".to_owned(), Value::Object(original_keyed));
    }
    if let Some(object) = round_trip.as_object_mut() {
        object.insert("identifiers".to_owned(), Value::Object(keyed));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn v1_to_v2_to_v1_loses_nothing(referral in referral_v1()) {
        let back = v2_to_v1(&v1_to_v2(&referral));
        prop_assert!(back.losses.is_empty(), "unexpected losses: {:?}", back.losses);
        prop_assert_eq!(back.value, referral);
    }

    #[test]
    fn v2_to_v1_to_v2_loses_exactly_what_the_report_says(referral in referral_v2()) {
        let down = v2_to_v1(&referral);
        let up = v1_to_v2(&down.value);
        let original_arrays = serde_json::to_value(&referral).expect("serialisable");
        let round_trip_arrays = serde_json::to_value(&up).expect("serialisable");
        let (mut original, mut round_trip) = (original_arrays.clone(), round_trip_arrays.clone());
        align_identifiers(&mut original, &mut round_trip);
        let (mut before, mut after) = (BTreeMap::new(), BTreeMap::new());
        leaves(&original, String::new(), &mut before);
        leaves(&round_trip, String::new(), &mut after);
        // Everything that changed is reported.
        for path in before.keys().chain(after.keys()) {
            if before.get(path) != after.get(path) {
                prop_assert!(down.losses.covers(path), "{path} changed but the report does not say so: {:?}", down.losses);
            }
        }
        // Everything reported really changed.
        for loss in &down.losses.losses {
            let (before, after) = if loss.path == "/identifiers" {
                (&original_arrays, &round_trip_arrays)
            } else {
                (&original, &round_trip)
            };
            prop_assert_ne!(
                pointer_value(before, &loss.path), pointer_value(after, &loss.path),
                "{} is reported lost but came back unchanged", loss.path
            );
        }
    }

    #[test]
    fn generated_referrals_match_their_schema_and_survive_json(referral in referral_v2()) {
        let json = serde_json::to_vec(&referral).expect("serialisable");
        let decoded: v2::Referral = validate::decode_document(&json, SchemaName::ReferralV2, &Default::default())
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&decoded, &referral);
        let older = v2_to_v1(&referral).value;
        let json = serde_json::to_vec(&older).expect("serialisable");
        let decoded: v1::Referral = validate::decode_document(&json, SchemaName::ReferralV1, &Default::default())
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(decoded, older);
    }
}

#[test]
fn a_known_lossy_referral_reports_each_loss() {
    let mut referral = v1_to_v2(&sample_v1());
    referral.identifiers = vec![
        Identifier::new(IdentifierKind::Caf, "1234567").expect("valid"),
        Identifier::new(IdentifierKind::FranceTravail, "01234567891").expect("valid"),
        Identifier::new(IdentifierKind::Msa, "7654321").expect("valid"),
    ];
    referral.obstacles = vec![Obstacle {
        domain: ObstacleDomain::Housing,
        impact: Some(ObstacleImpact::High),
        source_label: None,
    }];
    let down = v2_to_v1(&referral);
    let paths: Vec<&str> = down.losses.losses.iter().map(|l| l.path.as_str()).collect();
    assert_eq!(
        paths,
        ["/identifiers", "/identifiers/2", "/obstacles/0/impact"]
    );
}

fn sample_v1() -> v1::Referral {
    v1::Referral {
        referral_id: ReferralId::parse("5f0c6a8e-3a59-4c1e-9a63-2f7c1d2b9e01").expect("valid"),
        schema_version: v1::ReferralV1Tag,
        created_at: Utc
            .with_ymd_and_hms(2026, 12, 1, 9, 0, 0)
            .single()
            .expect("valid"),
        sender: Sender {
            organisation: Organisation {
                siret: Siret::parse("81234567800013").expect("valid"),
                kind: OrganisationKind::Association,
                name: None,
            },
            referent: None,
        },
        recipient: Recipient {
            organisation: Organisation {
                siret: Siret::parse("13000548100002").expect("valid"),
                kind: OrganisationKind::FranceTravail,
                name: None,
            },
            service_id: None,
        },
        person: v1::Person {
            first_name: "Aïcha".to_owned(),
            last_name: "Ben Saïd".to_owned(),
            birth_name: None,
            birth_date: None,
            phone: None,
            email: None,
            other_contact_method: None,
            postal_code: None,
            insee_code: None,
            city: None,
            availability: None,
            contact_preferences: vec![],
        },
        identifiers: None,
        situation: None,
        obstacles: vec![],
        pathway: None,
        axis: None,
        reason: None,
        consent_reference: None,
    }
}

#[test]
fn contact_and_address_group_and_ungroup() {
    let mut referral = sample_v1();
    referral.person.postal_code = Some(PostalCode::parse("93200").expect("valid"));
    let upgraded = v1_to_v2(&referral);
    assert_eq!(upgraded.person.contact, None::<Contact>);
    assert_eq!(
        upgraded.person.address,
        Some(Address {
            postal_code: Some(PostalCode::parse("93200").expect("valid")),
            insee_code: None,
            city: None
        })
    );
}
