//! The personal-data canary: a scenario run with recognisable fake personal
//! data through every kind of request (accepted, invalid, refused, status
//! events with free text, reads, a CSV batch), with verbose logs and OTLP
//! export to a collector. Not one of the canary values may appear in a log
//! line, a span, a metric, an error body or the audit log.

mod common;

use std::time::Duration;

use common::gateway::{Options, TestGateway, bearer, organisation, sample};
use common::otlp::FakeCollector;
use serde_json::{Value, json};

/// Values that belong to the fake person and must never leave the store.
const CANARIES: &[&str] = &[
    "Zéphyrine",
    "Canarienne",
    "Canariello",
    "1987-06-05",
    "zephyrine.canarienne",
    "0611223344",
    "06 11 22 33 44",
    "2870675123456",
    "CANARI-93-777",
    "CANARI-MOTIF",
    "CANARI-COMMENTAIRE",
    "CANARI-SITUATION",
    "Rue des Canaris",
    "05/06/1987",
];

fn canary_referral(referral_id: &str, record_id: &str) -> Value {
    let mut referral = sample("referral-v2.json");
    referral["referral_id"] = json!(referral_id);
    referral["consent_reference"] = json!(record_id);
    let person = &mut referral["person"];
    person["first_name"] = json!("Zéphyrine");
    person["last_name"] = json!("Canarienne");
    person["birth_name"] = json!("Canariello");
    person["birth_date"] = json!("1987-06-05");
    person["contact"]["email"] = json!("zephyrine.canarienne@example.org");
    person["contact"]["phone"] = json!("0611223344");
    person["contact"]["other_method"] = json!("Rue des Canaris, le mardi");
    referral["identifiers"][2]["value"] = json!("CANARI-93-777");
    referral["situation"]["other"] = json!("CANARI-SITUATION hébergée chez sa sœur");
    referral["reason"] = json!("CANARI-MOTIF souhaite une formation");
    referral
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_personal_data_reaches_logs_spans_metrics_errors_or_the_audit_log() {
    let collector = FakeCollector::start().await;
    let gateway = TestGateway::start_with(Options {
        otlp_endpoint: Some(collector.endpoint.clone()),
        log_level: "trace".to_owned(),
        ..Options::default()
    });
    let http = gateway.client();
    let mut bodies = String::new();
    let konexio = "konexio-saint-denis";
    let france_travail = "france-travail-saint-denis";

    let record_id = uuid::Uuid::new_v4().to_string();
    let mut record = sample("consent-record.json");
    record["record_id"] = json!(record_id);
    let response = http
        .post(gateway.url("/v1/consents"))
        .header("authorization", bearer(konexio))
        .json(&record)
        .send()
        .await
        .unwrap_or_else(|error| panic!("consent: {error}\n{}", gateway.logs()));
    assert_eq!(response.status(), 201);

    // Accepted, then replayed.
    let referral_id = uuid::Uuid::new_v4().to_string();
    let referral = canary_referral(&referral_id, &record_id);
    for _ in 0..2 {
        let response = http
            .post(gateway.url("/v1/referrals"))
            .header("authorization", bearer(konexio))
            .header(
                "content-type",
                "application/vnd.passerelle.referral.v2+json",
            )
            .json(&referral)
            .send()
            .await
            .expect("referral");
        assert_eq!(response.status(), 202);
        bodies.push_str(&response.text().await.expect("body"));
    }
    // Invalid in several ways that carry the values: unknown field, bad email, bad date.
    let mut invalid = canary_referral(&uuid::Uuid::new_v4().to_string(), &record_id);
    invalid["surnom"] = json!("Zéphyrine Canarienne");
    invalid["person"]["contact"]["email"] = json!("zephyrine.canarienne-at-example");
    invalid["person"]["birth_date"] = json!("05/06/1987");
    invalid["person"]["contact"]["phone"] = json!("06 11 22 33 44 ext CANARI-MOTIF");
    // Refused for consent, sent as another organisation, and reused id with other content.
    let refused = canary_referral(
        &uuid::Uuid::new_v4().to_string(),
        &uuid::Uuid::new_v4().to_string(),
    );
    let mut reused = referral.clone();
    reused["person"]["first_name"] = json!("Zéphyrine-Canarienne");
    for (authorization, document) in [
        (bearer(konexio), invalid),
        (bearer(konexio), refused.clone()),
        (bearer("mission-locale-plaine-commune"), refused),
        (bearer(konexio), reused),
    ] {
        let response = http
            .post(gateway.url("/v1/referrals"))
            .header("authorization", authorization)
            .header(
                "content-type",
                "application/vnd.passerelle.referral.v2+json",
            )
            .json(&document)
            .send()
            .await
            .expect("referral");
        assert!(response.status().is_client_error());
        bodies.push_str(&response.text().await.expect("body"));
    }
    // Malformed JSON holding the values.
    let response = http
        .post(gateway.url("/v1/referrals"))
        .header("authorization", bearer(konexio))
        .header(
            "content-type",
            "application/vnd.passerelle.referral.v2+json",
        )
        .body("{\"person\": {\"first_name\": \"Zéphyrine\", \"last_name\": Canarienne}}")
        .send()
        .await
        .expect("malformed");
    assert_eq!(response.status(), 400);
    bodies.push_str(&response.text().await.expect("body"));
    // A CSV batch with the values in good and bad cells.
    let csv = "\u{feff}Identifiant dans le SI*;Prénom*;Nom*;Date de naissance*;NIR;Téléphone;Courriel;Code postal;Commune;Numéro allocataire CAF/MSA;Identifiant Pôle emploi;Droits RSA;RQTH;Freins;Motif;Structure;Accompagnateurs\n\
        CAN-1;Zéphyrine;Canarienne;05/06/1987;2870675123456;0611223344;zephyrine.canarienne@example.org;93200;Saint-Denis;;;Oui;Non;numerique;CANARI-MOTIF;Konexio Saint-Denis;claire.martin@konexio.example\n\
        CAN-2;Zéphyrine;Canarienne;31/02/1987;;06 11 22 33 44;zephyrine.canarienne;93200;Saint-Denis;;;Peut-être;Non;numerique;CANARI-MOTIF;Konexio Saint-Denis;claire.martin@konexio.example\n";
    let response = http
        .post(gateway.url(&format!(
            "/v1/referrals?format=csv&mapping=carnet-de-bord&recipient={}",
            organisation(france_travail).siret
        )))
        .header("authorization", bearer(konexio))
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await
        .expect("batch");
    assert_eq!(response.status(), 200);
    bodies.push_str(&response.text().await.expect("body"));
    // The recipient reads the minimised copy (its body holds data on purpose:
    // it is the one place it may appear) and posts a status with free text.
    let read = http
        .get(gateway.url(&format!("/v1/referrals/{referral_id}")))
        .header("authorization", bearer(france_travail))
        .send()
        .await
        .expect("read");
    assert_eq!(read.status(), 200);
    let event = json!({
        "event_id": uuid::Uuid::new_v4().to_string(),
        "schema_version": "passerelle.status.v1",
        "referral_id": referral_id,
        "status": "STATUS_REJECTED",
        "occurred_at": "2026-12-02T10:00:00Z",
        "author_siret": organisation(france_travail).siret,
        "rejection_reason": "REJECTION_REASON_UNREACHABLE",
        "comment": "CANARI-COMMENTAIRE Zéphyrine injoignable au 0611223344",
    });
    let response = http
        .post(gateway.url(&format!("/v1/referrals/{referral_id}/events")))
        .header("authorization", bearer(france_travail))
        .json(&event)
        .send()
        .await
        .expect("event");
    assert_eq!(response.status(), 201);
    bodies.push_str(&response.text().await.expect("body"));

    // Spans are exported in batches: wait until the request spans arrived.
    let exported = collector
        .wait_for(
            |collector| {
                !collector.spans_named("submit_referral").is_empty()
                    && !collector.spans_named("minimise").is_empty()
                    && collector
                        .metric_names()
                        .iter()
                        .any(|name| name == "passerelle.referrals.accepted")
            },
            Duration::from_secs(30),
        )
        .await;
    let mut gateway = gateway;
    let store = gateway.store_location.clone();
    gateway.terminate();
    assert!(
        exported,
        "the gateway exported no pipeline spans or metrics: {:?}",
        collector.metric_names()
    );
    let logs = gateway.logs();
    assert!(logs.lines().count() > 20, "verbose logs were written");
    assert!(logs.contains("submit_referral"), "spans are in the logs");
    let telemetry = collector.all_text();
    let audit = std::process::Command::new(env!("CARGO_BIN_EXE_passerelle"))
        .arg("--store")
        .arg(&store)
        .args(["audit", "export"])
        .output()
        .expect("audit export");
    assert!(audit.status.success());
    let audit = String::from_utf8(audit.stdout).expect("UTF-8");
    assert!(audit.lines().count() >= 5);
    for (place, text) in [
        ("logs", &logs),
        ("telemetry", &telemetry),
        ("error and answer bodies", &bodies),
        ("audit log", &audit),
    ] {
        for canary in CANARIES {
            if let Some(at) = text.find(canary) {
                let start = text[..at]
                    .char_indices()
                    .rev()
                    .nth(200)
                    .map_or(0, |(index, _)| index);
                panic!(
                    "{canary:?} found in the {place}: …{}…",
                    &text[start..(at + canary.len()).min(text.len())]
                );
            }
        }
    }
}
