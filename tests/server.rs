//! The gateway over HTTPS: the real binary on port 0 with certificates made
//! for the run, API keys and client certificates, every problem type, tenancy
//! on every endpoint, idempotency, and the audit trail it leaves.

mod common;

use common::gateway::{
    Options, Pki, TestGateway, accepted_referral, bearer, client, consent, consent_event, new_id,
    on_postgres, organisation, referral, store_consent,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

const REFERRALS: &str = "/v1/referrals";
const V2: &str = "application/vnd.passerelle.referral.v2+json";
const KONEXIO: &str = "konexio-saint-denis";
const FRANCE_TRAVAIL: &str = "france-travail-saint-denis";
const MISSION_LOCALE: &str = "mission-locale-plaine-commune";
const OTHER_ASSOCIATION: &str = "autre-association";

/// Sends a CSV batch as Konexio to France Travail, with the Carnet de bord mapping.
async fn post_csv(gateway: &TestGateway, csv: impl Into<reqwest::Body>) -> reqwest::Response {
    gateway
        .client()
        .post(gateway.url(&format!(
            "{REFERRALS}?format=csv&mapping=carnet-de-bord&recipient={}",
            organisation(FRANCE_TRAVAIL).siret
        )))
        .header("authorization", bearer(KONEXIO))
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await
        .expect("batch")
}

async fn problem(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let media = response
        .headers()
        .get("content-type")
        .map(|value| value.to_str().expect("ASCII").to_owned());
    assert_eq!(
        media.as_deref(),
        Some("application/problem+json"),
        "status {status}"
    );
    (status, response.json().await.expect("problem JSON"))
}

#[tokio::test]
async fn an_accepted_referral_answers_202_with_its_decision_and_reads_per_role() {
    let gateway = TestGateway::start();
    let (referral_id, record_id, answer) = accepted_referral(&gateway).await;
    assert_eq!(answer["referral_id"], json!(referral_id));
    assert_eq!(answer["state"], json!("queued"));
    assert_eq!(
        answer["decision"]["policy_id"],
        json!("france-travail-orientation")
    );
    assert_eq!(answer["decision"]["consent_record_id"], json!(record_id));
    let removed = answer["decision"]["removed"].as_array().expect("removed");
    assert!(removed.contains(&json!("person.birth_name")), "{answer}");
    assert!(
        removed.contains(&json!("sender.referent.email")),
        "{answer}"
    );

    let http = gateway.client();
    let url = gateway.url(&format!("{REFERRALS}/{referral_id}"));
    let sender: Value = http
        .get(&url)
        .header("authorization", bearer(KONEXIO))
        .send()
        .await
        .expect("read")
        .json()
        .await
        .expect("JSON");
    assert_eq!(sender["role"], json!("sender"));
    assert_eq!(
        sender["referral"]["person"]["birth_name"],
        json!("Ben Saïd")
    );
    assert!(sender["decision"].is_object());

    let recipient = http
        .get(&url)
        .header("authorization", bearer(FRANCE_TRAVAIL))
        .send()
        .await
        .expect("read");
    assert_eq!(recipient.status(), StatusCode::OK);
    let recipient: Value = recipient.json().await.expect("JSON");
    assert_eq!(recipient["role"], json!("recipient"));
    let person = &recipient["referral"]["person"];
    assert_eq!(person["first_name"], json!("Aïcha"));
    assert!(person.get("birth_name").is_none(), "{recipient}");
    assert!(person["address"].get("city").is_none(), "{recipient}");
    assert!(recipient.get("decision").is_none(), "{recipient}");
    let departement = recipient["referral"]["identifiers"]
        .as_array()
        .expect("identifiers")
        .iter()
        .find(|identifier| identifier["kind"] == json!("IDENTIFIER_KIND_DEPARTEMENT"))
        .expect("pseudonymised identifier kept");
    assert_ne!(departement["value"], json!("IODAS-93-004512"));
}

#[tokio::test]
async fn the_same_referral_again_is_answered_the_same_and_creates_nothing() {
    let gateway = TestGateway::start();
    let http = gateway.client();
    let record_id = new_id();
    http.post(gateway.url("/v1/consents"))
        .header("authorization", bearer(KONEXIO))
        .json(&consent(&record_id))
        .send()
        .await
        .expect("consent");
    let referral_id = new_id();
    let document = referral(&referral_id, &record_id);
    let send = |document: Value| {
        http.post(gateway.url(REFERRALS))
            .header("authorization", bearer(KONEXIO))
            .header("content-type", V2)
            .json(&document)
            .send()
    };
    let first = send(document.clone()).await.expect("first");
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first_body = first.text().await.expect("body");
    let second = send(document.clone()).await.expect("second");
    assert_eq!(second.status(), StatusCode::ACCEPTED);
    assert_eq!(
        second
            .headers()
            .get("idempotent-replayed")
            .map(|value| value.to_str().expect("ASCII")),
        Some("true")
    );
    assert_eq!(second.text().await.expect("body"), first_body);

    let mut changed = document;
    changed["person"]["first_name"] = json!("Autre");
    let (status, body) = problem(send(changed).await.expect("third")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        body["type"],
        json!("https://passerelle.eu/problems/idempotency-key-reused")
    );
    // The stored referral is still the first one.
    let stored: Value = http
        .get(gateway.url(&format!("{REFERRALS}/{referral_id}")))
        .header("authorization", bearer(KONEXIO))
        .send()
        .await
        .expect("read")
        .json()
        .await
        .expect("JSON");
    assert_eq!(stored["referral"]["person"]["first_name"], json!("Aïcha"));
    // Another organisation reusing the id is refused the same way, learning nothing more.
    let mut stolen = referral(&referral_id, &record_id);
    stolen["sender"]["organisation"]["siret"] = json!(organisation(OTHER_ASSOCIATION).siret);
    let response = http
        .post(gateway.url(REFERRALS))
        .header("authorization", bearer(OTHER_ASSOCIATION))
        .header("content-type", V2)
        .json(&stolen)
        .send()
        .await
        .expect("other");
    let (status, _) = problem(response).await;
    assert!(
        status == StatusCode::UNPROCESSABLE_ENTITY,
        "another tenant reusing an id: {status}"
    );
}

#[tokio::test]
async fn client_certificates_authenticate_organisations() {
    let gateway = TestGateway::start();
    let record_id = new_id();
    // Konexio is registered by certificate subject; no API key needed.
    let konexio = gateway.client_with_certificate(KONEXIO);
    let stored = konexio
        .post(gateway.url("/v1/consents"))
        .json(&consent(&record_id))
        .send()
        .await
        .expect("consent");
    assert_eq!(stored.status(), StatusCode::CREATED);
    let referral_id = new_id();
    let sent = konexio
        .post(gateway.url(REFERRALS))
        .header("content-type", V2)
        .json(&referral(&referral_id, &record_id))
        .send()
        .await
        .expect("referral");
    assert_eq!(sent.status(), StatusCode::ACCEPTED);
    // France Travail is registered by SPKI fingerprint.
    let france_travail = gateway.client_with_certificate(FRANCE_TRAVAIL);
    let read = france_travail
        .get(gateway.url(&format!("{REFERRALS}/{referral_id}")))
        .send()
        .await
        .expect("read");
    assert_eq!(read.status(), StatusCode::OK);
    // A certificate of the right CA but registered to nobody.
    let (certificate, private_key) = gateway.pki.stranger();
    let stranger = client(&gateway.pki.ca_pem, Some((&certificate, &private_key)));
    let (status, body) = problem(
        stranger
            .get(gateway.url(&format!("{REFERRALS}/{referral_id}")))
            .send()
            .await
            .expect("stranger"),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        body["type"],
        json!("https://passerelle.eu/problems/unauthenticated")
    );
    // A certificate and a key of two different organisations.
    let (status, _) = problem(
        konexio
            .get(gateway.url(&format!("{REFERRALS}/{referral_id}")))
            .header("authorization", bearer(FRANCE_TRAVAIL))
            .send()
            .await
            .expect("mixed"),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // A certificate from another CA does not even complete the handshake.
    let (certificate, private_key) = Pki::foreign(KONEXIO);
    let foreign = client(&gateway.pki.ca_pem, Some((&certificate, &private_key)));
    assert!(
        foreign
            .get(gateway.url(&format!("{REFERRALS}/{referral_id}")))
            .send()
            .await
            .is_err()
    );
}

#[tokio::test]
async fn missing_or_wrong_credentials_answer_401() {
    let gateway = TestGateway::start();
    let http = gateway.client();
    for authorization in [None, Some("Bearer not-a-key"), Some("Basic a2V5")] {
        let mut request = http.get(gateway.url(&format!("{REFERRALS}/{}", new_id())));
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        let response = request.send().await.expect("request");
        assert_eq!(
            response
                .headers()
                .get("www-authenticate")
                .map(|value| value.to_str().expect("ASCII")),
            Some("Bearer realm=\"passerelle\"")
        );
        let (status, body) = problem(response).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{authorization:?}");
        assert_eq!(
            body["type"],
            json!("https://passerelle.eu/problems/unauthenticated")
        );
    }
}

#[tokio::test]
async fn sending_as_another_organisation_is_forbidden() {
    let gateway = TestGateway::start();
    let http = gateway.client();
    let response = http
        .post(gateway.url(REFERRALS))
        .header("authorization", bearer(MISSION_LOCALE))
        .header("content-type", V2)
        .json(&referral(&new_id(), &new_id()))
        .send()
        .await
        .expect("request");
    let (status, body) = problem(response).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        body["type"],
        json!("https://passerelle.eu/problems/forbidden")
    );
}

/// Every endpoint that names a resource answers 404 to another tenant, the
/// same as for an id that does not exist.
#[tokio::test]
async fn other_tenants_get_404_on_every_endpoint() {
    let gateway = TestGateway::start();
    let (referral_id, record_id, _) = accepted_referral(&gateway).await;
    let http = gateway.client();
    let event = json!({
        "event_id": new_id(),
        "schema_version": "passerelle.status.v1",
        "referral_id": referral_id,
        "status": "STATUS_ACCEPTED",
        "occurred_at": "2026-12-02T10:00:00Z",
        "author_siret": organisation(MISSION_LOCALE).siret,
    });
    let consent_event = json!({
        "kind": "CONSENT_EVENT_KIND_WITHDRAWN",
        "at": "2026-12-03T10:00:00Z",
        "recorded_by": organisation(MISSION_LOCALE).siret,
    });
    for intruder in [MISSION_LOCALE, OTHER_ASSOCIATION] {
        let requests = [
            http.get(gateway.url(&format!("{REFERRALS}/{referral_id}"))),
            http.post(gateway.url(&format!("{REFERRALS}/{referral_id}/events")))
                .json(&event),
            http.get(gateway.url(&format!("/v1/consents/{record_id}"))),
            http.post(gateway.url(&format!("/v1/consents/{record_id}/events")))
                .json(&consent_event),
        ];
        let mut answers = Vec::new();
        for request in requests {
            let (status, body) = problem(
                request
                    .header("authorization", bearer(intruder))
                    .send()
                    .await
                    .expect("request"),
            )
            .await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{intruder}: {body}");
            answers.push(body["type"].clone());
        }
        // And exactly what a missing id answers.
        let (status, missing) = problem(
            http.get(gateway.url(&format!("{REFERRALS}/{}", new_id())))
                .header("authorization", bearer(intruder))
                .send()
                .await
                .expect("request"),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(answers[0], missing["type"]);
    }
}

#[tokio::test]
async fn each_problem_type_is_answered_as_problem_json() {
    let gateway = TestGateway::start_with(Options {
        max_body_bytes: 64 * 1024,
        ..Options::default()
    });
    let http = gateway.client();
    let post = |content_type: &str, body: Vec<u8>| {
        http.post(gateway.url(REFERRALS))
            .header("authorization", bearer(KONEXIO))
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    // 400: not JSON.
    let (status, body) = problem(
        post(V2, b"{\"referral_id\": ".to_vec())
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["type"],
        json!("https://passerelle.eu/problems/malformed")
    );
    // 422: schema violations with JSON pointers; the values are not echoed.
    let mut unknown_field = referral(&new_id(), &new_id());
    unknown_field["nickname"] = json!("Zouzou");
    let mut bad_siret = referral(&new_id(), &new_id());
    bad_siret["sender"]["organisation"]["siret"] = json!("81234567800014");
    for (document, pointer, secret) in [
        (unknown_field, "/nickname", "Zouzou"),
        (bad_siret, "/sender/organisation/siret", "81234567800014"),
    ] {
        let (status, body) = problem(
            post(V2, serde_json::to_vec(&document).expect("JSON"))
                .await
                .expect("request"),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            body["type"],
            json!("https://passerelle.eu/problems/validation")
        );
        let pointers: Vec<&str> = body["violations"]
            .as_array()
            .expect("violations")
            .iter()
            .map(|violation| violation["pointer"].as_str().expect("pointer"))
            .collect();
        assert!(pointers.contains(&pointer), "{body}");
        assert!(!body.to_string().contains(secret), "{body}");
    }
    // 400: too deep.
    let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
    let (status, body) = problem(post(V2, deep.into_bytes()).await.expect("request")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["type"],
        json!("https://passerelle.eu/problems/too-deep")
    );
    // 413: too large, refused before it is read in full.
    let (status, body) = problem(post(V2, vec![b' '; 65 * 1024]).await.expect("request")).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        body["type"],
        json!("https://passerelle.eu/problems/too-large")
    );
    // 415: no declared version, or a media type the format does not take.
    for content_type in ["application/json", "text/plain"] {
        let (status, body) =
            problem(post(content_type, b"{}".to_vec()).await.expect("request")).await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{content_type}");
        assert_eq!(
            body["type"],
            json!("https://passerelle.eu/problems/unsupported-format")
        );
    }
    // 422 refused: no consent record, with the decision's reason code.
    let (status, body) = problem(
        post(
            V2,
            serde_json::to_vec(&referral(&new_id(), &new_id())).expect("JSON"),
        )
        .await
        .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        body["type"],
        json!("https://passerelle.eu/problems/refused")
    );
    assert_eq!(body["reason"], json!("consent-missing"));
    // 400: a query parameter the endpoint does not take.
    let (status, body) = problem(
        http.post(gateway.url(&format!("{REFERRALS}?nickname=Zouzou")))
            .header("authorization", bearer(KONEXIO))
            .header("content-type", V2)
            .body(b"{}".to_vec())
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["type"],
        json!("https://passerelle.eu/problems/malformed")
    );
    assert!(!body.to_string().contains("Zouzou"), "{body}");
    // 409: a consent record id stored with other content (records are immutable).
    let record_id = new_id();
    let put = |record: Value| {
        http.post(gateway.url("/v1/consents"))
            .header("authorization", bearer(KONEXIO))
            .json(&record)
            .send()
    };
    assert_eq!(
        put(consent(&record_id)).await.expect("request").status(),
        StatusCode::CREATED
    );
    assert_eq!(
        put(consent(&record_id)).await.expect("request").status(),
        StatusCode::OK
    );
    let mut changed = consent(&record_id);
    changed["valid_until"] = json!("2028-01-01T00:00:00Z");
    let (status, body) = problem(put(changed).await.expect("request")).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(
        body["type"],
        json!("https://passerelle.eu/problems/conflict")
    );
    // 404: no such endpoint.
    let (status, _) = problem(
        http.get(gateway.url("/v1/nothing"))
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_withdrawn_consent_refuses_the_next_referral_with_its_reason() {
    let gateway = TestGateway::start();
    let (_, record_id, _) = accepted_referral(&gateway).await;
    let http = gateway.client();
    // France Travail, a recipient the record covers, records the withdrawal it received.
    let withdrawn = consent_event(
        &gateway,
        &record_id,
        "CONSENT_EVENT_KIND_WITHDRAWN",
        FRANCE_TRAVAIL,
    )
    .await;
    assert_eq!(withdrawn.status(), StatusCode::CREATED);
    let answer: Value = withdrawn.json().await.expect("JSON");
    assert_eq!(answer["state"], json!("withdrawn"));
    let (status, body) = problem(
        http.post(gateway.url(REFERRALS))
            .header("authorization", bearer(KONEXIO))
            .header("content-type", V2)
            .json(&referral(&new_id(), &record_id))
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["reason"], json!("consent-withdrawn"));
    // The recipient may not give consent in the person's name.
    let (status, _) = problem(
        consent_event(
            &gateway,
            &record_id,
            "CONSENT_EVENT_KIND_RENEWED",
            FRANCE_TRAVAIL,
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn the_rate_limit_answers_429_with_retry_after() {
    let gateway = TestGateway::start_with(Options {
        rate: (1, 3),
        ..Options::default()
    });
    let http = gateway.client();
    let mut limited = None;
    for _ in 0..10 {
        let response = http
            .get(gateway.url(&format!("{REFERRALS}/{}", new_id())))
            .header("authorization", bearer(KONEXIO))
            .send()
            .await
            .expect("request");
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(response);
            break;
        }
    }
    let response = limited.expect("the rate limit applies");
    let retry_after: u64 = response
        .headers()
        .get("retry-after")
        .expect("Retry-After")
        .to_str()
        .expect("ASCII")
        .parse()
        .expect("seconds");
    assert!(retry_after >= 1);
    let (_, body) = problem(response).await;
    assert_eq!(
        body["type"],
        json!("https://passerelle.eu/problems/rate-limited")
    );
    // Another organisation has its own budget.
    let other = http
        .get(gateway.url(&format!("{REFERRALS}/{}", new_id())))
        .header("authorization", bearer(FRANCE_TRAVAIL))
        .send()
        .await
        .expect("request");
    assert_eq!(other.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn status_events_come_back_to_the_sender_and_are_idempotent() {
    let gateway = TestGateway::start();
    let (referral_id, _, _) = accepted_referral(&gateway).await;
    let http = gateway.client();
    let event = json!({
        "event_id": new_id(),
        "schema_version": "passerelle.status.v1",
        "referral_id": referral_id,
        "status": "STATUS_REJECTED",
        "occurred_at": "2026-12-02T10:00:00Z",
        "author_siret": organisation(FRANCE_TRAVAIL).siret,
        "rejection_reason": "REJECTION_REASON_UNREACHABLE",
        "comment": "Injoignable au 0612345678",
    });
    let url = gateway.url(&format!("{REFERRALS}/{referral_id}/events"));
    let first = http
        .post(&url)
        .header("authorization", bearer(FRANCE_TRAVAIL))
        .json(&event)
        .send()
        .await
        .expect("event");
    assert_eq!(first.status(), StatusCode::CREATED);
    let answer: Value = first.json().await.expect("JSON");
    assert_eq!(answer["forwarded"], json!(true));
    let again = http
        .post(&url)
        .header("authorization", bearer(FRANCE_TRAVAIL))
        .json(&event)
        .send()
        .await
        .expect("event");
    assert_eq!(again.status(), StatusCode::OK);
    // The sender may not post the recipient's statuses.
    let mut forged = event.clone();
    forged["event_id"] = json!(new_id());
    forged["author_siret"] = json!(organisation(KONEXIO).siret);
    let (status, _) = problem(
        http.post(&url)
            .header("authorization", bearer(KONEXIO))
            .json(&forged)
            .send()
            .await
            .expect("event"),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let view: Value = http
        .get(gateway.url(&format!("{REFERRALS}/{referral_id}")))
        .header("authorization", bearer(KONEXIO))
        .send()
        .await
        .expect("read")
        .json()
        .await
        .expect("JSON");
    let events = view["events"].as_array().expect("events");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["status"], json!("STATUS_REJECTED"));
}

#[tokio::test]
async fn a_csv_batch_answers_per_row_with_lines() {
    let gateway = TestGateway::start();
    let csv = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/association-export-cdb.csv"),
    )
    .expect("sample CSV");
    let response = post_csv(&gateway, csv).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("JSON");
    let rows = body["rows"].as_array().expect("rows");
    // Each row is answered on its own, at its line: the second is sent in the
    // name of another structure (Konexio Paris 19); no consent record is
    // stored for the others.
    let statuses: Vec<(u64, u64)> = rows
        .iter()
        .map(|row| {
            assert!(row["problem"]["type"].is_string(), "{row}");
            (
                row["line"].as_u64().expect("line"),
                row["status"].as_u64().expect("status"),
            )
        })
        .collect();
    assert_eq!(
        statuses,
        vec![(2, 422), (3, 403), (4, 422), (5, 422)],
        "{body}"
    );
    assert_eq!(rows[0]["problem"]["reason"], json!("consent-missing"));
    assert_eq!(body["accepted"], json!(0));
    assert_eq!(body["refused"], json!(4));
}

#[tokio::test]
async fn health_readiness_and_openapi_are_served() {
    let gateway = TestGateway::start();
    let http = gateway.client();
    for path in ["/healthz", "/readyz"] {
        let response = http.get(gateway.url(path)).send().await.expect("request");
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
    let document: Value = http
        .get(gateway.url("/v1/openapi.json"))
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("JSON");
    assert_eq!(document["openapi"], json!("3.1.0"));
}

#[tokio::test]
async fn http2_is_negotiated_over_tls() {
    let gateway = TestGateway::start();
    let response = gateway
        .client()
        .get(gateway.url("/healthz"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
}

#[tokio::test]
async fn the_audit_chain_verifies_and_names_a_tampered_entry() {
    let mut gateway = TestGateway::start();
    let (referral_id, _, _) = accepted_referral(&gateway).await;
    gateway
        .client()
        .get(gateway.url(&format!("{REFERRALS}/{referral_id}")))
        .header("authorization", bearer(FRANCE_TRAVAIL))
        .send()
        .await
        .expect("read");
    gateway.terminate();
    let store = gateway.store_location.clone();
    let audit = |arguments: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_passerelle"))
            .arg("--store")
            .arg(&store)
            .args(arguments)
            .output()
            .expect("passerelle audit")
    };
    let exported = audit(&["audit", "export"]);
    assert!(exported.status.success());
    let lines = String::from_utf8(exported.stdout).expect("UTF-8");
    let kinds: Vec<String> = lines
        .lines()
        .map(|line| {
            let entry: Value = serde_json::from_str(line).expect("JSON line");
            entry["kind"].as_str().expect("kind").to_owned()
        })
        .collect();
    assert!(kinds.contains(&"consent_recorded".to_owned()), "{kinds:?}");
    assert!(kinds.contains(&"referral_accepted".to_owned()), "{kinds:?}");
    assert!(kinds.contains(&"referral_read".to_owned()), "{kinds:?}");
    assert!(
        !lines.contains("Aïcha") && !lines.contains("1998-02-03"),
        "{lines}"
    );
    assert!(audit(&["audit", "verify"]).status.success());
    // An attacker with the database: drop the trigger and rewrite the second entry.
    const REWRITE: &str = "UPDATE audit_log SET entry = replace(entry, 'referral_accepted', 'referral_refused') WHERE seq = 2";
    if on_postgres() {
        use sqlx::Connection as _;
        let mut connection = sqlx::PgConnection::connect(&store).await.expect("connect");
        for statement in [
            "ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only",
            REWRITE,
        ] {
            sqlx::query(statement)
                .execute(&mut connection)
                .await
                .expect("tamper");
        }
    } else {
        let connection = rusqlite::Connection::open(&store).expect("open");
        connection
            .execute_batch(&format!("DROP TRIGGER audit_log_no_update; {REWRITE};"))
            .expect("tamper");
    }
    let verified = audit(&["audit", "verify"]);
    assert!(!verified.status.success());
    let report = String::from_utf8_lossy(&verified.stdout).to_string()
        + &String::from_utf8_lossy(&verified.stderr);
    assert!(report.contains('2'), "{report}");
}

/// SIGTERM while referrals are being sent: the gateway stops accepting,
/// finishes what it answered, and every referral it answered 202 is there
/// after a restart on the same store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_shutdown_loses_no_accepted_referral() {
    let mut gateway = TestGateway::start();
    let http = gateway.client();
    let record_id = store_consent(&gateway).await;
    let url = gateway.url(REFERRALS);
    let (answered, mut answers) = tokio::sync::mpsc::unbounded_channel();
    let mut senders = Vec::new();
    for _ in 0..8 {
        let http = http.clone();
        let url = url.clone();
        let record_id = record_id.clone();
        let answered = answered.clone();
        senders.push(tokio::spawn(async move {
            for _ in 0..100 {
                let referral_id = new_id();
                let response = http
                    .post(&url)
                    .header("authorization", bearer(KONEXIO))
                    .header("content-type", V2)
                    .json(&referral(&referral_id, &record_id))
                    .send()
                    .await;
                match response {
                    Ok(response) if response.status() == StatusCode::ACCEPTED => {
                        let _ = answered.send(referral_id);
                    }
                    // Refused connections once the listener is closed.
                    _ => break,
                }
            }
        }));
    }
    drop(answered);
    let mut accepted = Vec::new();
    while accepted.len() < 40 {
        accepted.push(answers.recv().await.expect("referrals are accepted"));
    }
    let status = tokio::task::spawn_blocking(move || {
        let status = gateway.terminate();
        (status, gateway)
    });
    for sender in senders {
        sender.await.expect("sender");
    }
    while let Some(referral_id) = answers.recv().await {
        accepted.push(referral_id);
    }
    let (status, gateway) = status.await.expect("terminate");
    assert!(status.success(), "exit status {status}");
    let logs = gateway.logs();
    assert!(logs.contains("shutting down"), "{logs}");
    let (dir, pki, store) = gateway.stop_owned();
    let restarted = TestGateway::start_in(
        dir,
        pki,
        Options {
            store: Some(store),
            ..Options::default()
        },
    );
    let http = restarted.client();
    for referral_id in &accepted {
        let read = http
            .get(restarted.url(&format!("{REFERRALS}/{referral_id}")))
            .header("authorization", bearer(KONEXIO))
            .send()
            .await
            .expect("read");
        assert_eq!(
            read.status(),
            StatusCode::OK,
            "referral {referral_id} was lost"
        );
    }
}

/// A connection that never starts its TLS handshake is closed after the idle
/// timeout: it cannot hold a connection slot for ever.
#[tokio::test]
async fn a_silent_connection_is_closed_after_the_idle_timeout() {
    use tokio::io::AsyncReadExt;
    let gateway = TestGateway::start_with(Options {
        idle_timeout_seconds: 1,
        ..Options::default()
    });
    let mut silent = tokio::net::TcpStream::connect(gateway.address)
        .await
        .expect("connect");
    let started = std::time::Instant::now();
    let mut buffer = [0_u8; 16];
    let read = tokio::time::timeout(std::time::Duration::from_secs(10), silent.read(&mut buffer))
        .await
        .expect("closed before 10 s");
    assert!(matches!(read, Ok(0) | Err(_)), "closed, not answered");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

/// Beyond `max_connections`, new connections wait to be served until one
/// ends.
#[tokio::test]
async fn connections_beyond_the_bound_wait_for_a_slot() {
    let gateway = TestGateway::start_with(Options {
        max_connections: 1,
        idle_timeout_seconds: 30,
        ..Options::default()
    });
    let holder = tokio::net::TcpStream::connect(gateway.address)
        .await
        .expect("connect");
    // Give the gateway the time to accept the holder.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let http = gateway.client();
    let waiting = tokio::time::timeout(
        std::time::Duration::from_secs(1),
        http.get(gateway.url("/healthz")).send(),
    )
    .await;
    assert!(waiting.is_err(), "served while the only slot was taken");
    drop(holder);
    let served = http
        .get(gateway.url("/healthz"))
        .send()
        .await
        .expect("served once the slot is free");
    assert_eq!(served.status(), StatusCode::OK);
}

/// Beyond `max_requests_in_flight`, requests wait (their bodies unread) until
/// one in flight is answered; health checks never wait.
#[tokio::test]
async fn requests_beyond_the_in_flight_bound_wait_for_one_to_finish() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let gateway = TestGateway::start_with(Options {
        tls: false,
        max_requests_in_flight: 1,
        ..Options::default()
    });
    let record_id = store_consent(&gateway).await;
    let body = referral(&new_id(), &record_id).to_string();
    let (first_half, second_half) = body.as_bytes().split_at(body.len() / 2);
    // The one request in flight: its head and half its body, then nothing.
    let mut holder = tokio::net::TcpStream::connect(gateway.address)
        .await
        .expect("connect");
    let head = format!(
        "POST {REFERRALS} HTTP/1.1\r\nhost: localhost\r\nauthorization: {}\r\ncontent-type: {V2}\r\ncontent-length: {}\r\n\r\n",
        bearer(KONEXIO),
        body.len()
    );
    holder.write_all(head.as_bytes()).await.expect("head");
    holder.write_all(first_half).await.expect("first half");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    let http = gateway.client();
    let health = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        http.get(gateway.url("/healthz")).send(),
    )
    .await
    .expect("health checks do not wait")
    .expect("health");
    assert_eq!(health.status(), StatusCode::OK);
    let read_consent = http
        .get(gateway.url(&format!("/v1/consents/{record_id}")))
        .header("authorization", bearer(KONEXIO))
        .send();
    tokio::pin!(read_consent);
    assert!(
        tokio::time::timeout(std::time::Duration::from_secs(1), &mut read_consent)
            .await
            .is_err(),
        "answered while the only request slot was taken"
    );

    holder.write_all(second_half).await.expect("second half");
    let mut answer = vec![0_u8; 4096];
    let read = holder.read(&mut answer).await.expect("answer");
    let answer = String::from_utf8_lossy(&answer[..read]);
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
    let served = read_consent.await.expect("served once the slot is free");
    assert_eq!(served.status(), StatusCode::OK);
}

/// A CSV file whose header does not match its mapping is refused as a whole,
/// with a problem naming the column, and nothing is stored.
#[tokio::test]
async fn a_csv_batch_with_a_wrong_header_is_refused_whole() {
    let gateway = TestGateway::start();
    let csv = "\u{feff}Identifiant dans le SI*;Prénom*;Surnom\nKX-9;Zoé;Zouzou\n";
    let response = post_csv(&gateway, csv).await;
    let (status, body) = problem(response).await;
    assert!(status.is_client_error(), "{status}");
    assert!(
        body.to_string().contains("Surnom"),
        "the column is named: {body}"
    );
    assert!(!body.to_string().contains("Zouzou"), "{body}");
}

/// The sample export's header line and a copy of its first row under each of
/// `ids` (row identifiers of the sender's information system).
fn csv_rows(ids: std::ops::Range<u32>) -> (String, String) {
    let sample = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/association-export-cdb.csv"),
    )
    .expect("sample CSV");
    let mut lines = sample.split_inclusive('\n');
    let header = lines.next().expect("header").to_owned();
    let row = lines.next().expect("a row");
    let rows = ids
        .map(|id| row.replacen("KX-0001", &format!("KX-{id:06}"), 1))
        .collect();
    (header, rows)
}

/// A CSV batch sent the way a client streaming its file sends it: plain
/// HTTP/1.1, the file in chunks, no declared length.
async fn start_chunked_csv(gateway: &TestGateway) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    // Small socket buffers, as over a real network: neither side's kernel
    // can hold megabytes of what the other has not read yet.
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    socket
        .set_recv_buffer_size(64 * 1024)
        .expect("receive buffer");
    socket.set_send_buffer_size(64 * 1024).expect("send buffer");
    let mut stream = socket.connect(gateway.address).await.expect("connect");
    let head = format!(
        "POST {REFERRALS}?format=csv&mapping=carnet-de-bord&recipient={} HTTP/1.1\r\nhost: localhost\r\nauthorization: {}\r\ncontent-type: text/csv\r\ntransfer-encoding: chunked\r\n\r\n",
        organisation(FRANCE_TRAVAIL).siret,
        bearer(KONEXIO)
    );
    stream.write_all(head.as_bytes()).await.expect("head");
    stream
}

async fn send_chunk(stream: &mut (impl tokio::io::AsyncWrite + Unpin), bytes: &[u8]) {
    use tokio::io::AsyncWriteExt;
    let mut chunk = format!("{:x}\r\n", bytes.len()).into_bytes();
    chunk.extend_from_slice(bytes);
    chunk.extend_from_slice(b"\r\n");
    stream.write_all(&chunk).await.expect("a chunk");
}

const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Reads the answer into `received` until it holds `needle`, for at most
/// `seconds`.
async fn read_until(
    stream: &mut (impl tokio::io::AsyncRead + Unpin),
    received: &mut Vec<u8>,
    needle: &[u8],
    seconds: u64,
) -> Result<(), String> {
    use tokio::io::AsyncReadExt;
    let wait = async {
        // Only what arrived since the last look is searched (with the end of
        // what came before, where the needle may start).
        let mut searched = 0;
        let mut buffer = vec![0_u8; 64 * 1024];
        while !received[searched..]
            .windows(needle.len())
            .any(|window| window == needle)
        {
            searched = received.len().saturating_sub(needle.len() - 1);
            let read = stream
                .read(&mut buffer)
                .await
                .map_err(|error| error.to_string())?;
            if read == 0 {
                return Err("the connection closed".to_owned());
            }
            received.extend_from_slice(&buffer[..read]);
        }
        Ok(())
    };
    tokio::time::timeout(std::time::Duration::from_secs(seconds), wait)
        .await
        .map_err(|_| format!("not received within {seconds} s"))?
}

/// The status and JSON body of a whole chunked HTTP/1.1 answer.
fn chunked_answer(raw: &[u8]) -> (u16, Value) {
    let text = String::from_utf8(raw.to_vec()).expect("UTF-8 answer");
    let (head, mut rest) = text.split_once("\r\n\r\n").expect("a head");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|status| status.parse().ok())
        .expect("a status line");
    assert!(
        head.to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{head}"
    );
    let mut body = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n").expect("a chunk size");
        let size = usize::from_str_radix(size, 16).expect("a hexadecimal size");
        if size == 0 {
            break;
        }
        body.push_str(&after[..size]);
        rest = &after[size + 2..];
    }
    (status, serde_json::from_str(&body).expect("a JSON body"))
}

/// Reads a batch's answer to its end (after what `received` already holds)
/// and checks that it is a 200; gives its size in bytes and its JSON body.
async fn batch_answer(
    stream: &mut (impl tokio::io::AsyncRead + Unpin),
    mut received: Vec<u8>,
    seconds: u64,
) -> (usize, Value) {
    read_until(stream, &mut received, LAST_CHUNK, seconds)
        .await
        .expect("the whole answer");
    let (status, body) = chunked_answer(&received);
    assert_eq!(status, 200, "{body}");
    (received.len(), body)
}

/// The file is read as its rows are decided: the first row is answered while
/// the rest of the file has not been sent yet (a file read whole before its
/// first row would leave this test waiting), and the batch ends once the rest
/// arrives.
#[tokio::test]
async fn a_csv_batch_is_answered_while_its_file_is_still_being_sent() {
    let gateway = TestGateway::start_with(Options {
        tls: false,
        ..Options::default()
    });
    let sample = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/association-export-cdb.csv"),
    )
    .expect("sample CSV");
    let lines: Vec<&str> = sample.split_inclusive('\n').collect();
    let mut stream = start_chunked_csv(&gateway).await;
    send_chunk(&mut stream, lines[..2].concat().as_bytes()).await;
    let mut received = Vec::new();
    read_until(&mut stream, &mut received, b"\"line\":2,", 30)
        .await
        .expect("the first row answered before the file ends");
    assert!(received.starts_with(b"HTTP/1.1 200"), "{received:?}");

    send_chunk(&mut stream, lines[2..].concat().as_bytes()).await;
    tokio::io::AsyncWriteExt::write_all(&mut stream, LAST_CHUNK)
        .await
        .expect("the last chunk");
    let (_, body) = batch_answer(&mut stream, received, 30).await;
    let lines: Vec<u64> = body["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|row| row["line"].as_u64().expect("line"))
        .collect();
    assert_eq!(lines, vec![2, 3, 4, 5], "{body}");
    assert_eq!(body["refused"], json!(4), "{body}");
    assert!(body.get("error").is_none(), "{body}");
}

/// A client that reads the answer only once it has sent its whole file (many
/// HTTP/1.1 clients do) gets every row's answer: answers that do not fit in
/// the connection's buffers wait in the gateway instead of stopping the
/// reading of the file, which would leave both sides waiting for ever (this
/// test then fails on its first timeout). The rows are refused as soon as
/// they are read (one cell where the header has 17), so that megabytes of
/// file and of answers pass quickly.
#[tokio::test]
async fn a_client_that_reads_only_after_sending_its_file_gets_every_answer() {
    use tokio::io::AsyncWriteExt;
    const ROWS: usize = 40_000;
    let gateway = TestGateway::start_with(Options {
        tls: false,
        max_body_bytes: 64 * 1024 * 1024,
        request_timeout_seconds: 300,
        ..Options::default()
    });
    let (header, _) = csv_rows(0..0);
    let rows = format!("{}\r\n", "x".repeat(300)).repeat(ROWS);
    let stream = start_chunked_csv(&gateway).await;
    let (mut reading, mut writing) = stream.into_split();
    let sent = async {
        send_chunk(&mut writing, header.as_bytes()).await;
        for block in rows.as_bytes().chunks(64 * 1024) {
            send_chunk(&mut writing, block).await;
        }
        writing.write_all(LAST_CHUNK).await.expect("the last chunk");
    };
    tokio::time::timeout(std::time::Duration::from_secs(120), sent)
        .await
        .expect("the whole file sent while its answer is not read");
    let (size, body) = batch_answer(&mut reading, Vec::new(), 120).await;
    // More than the connection's buffers hold: without a reader, the
    // gateway had to keep answers itself.
    assert!(size > 8 * 1024 * 1024, "{size} bytes");
    let rows = body["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), ROWS, "every row answered");
    assert!(rows.iter().all(|row| row["status"] == json!(400)));
    assert_eq!(body["refused"], json!(ROWS));
}

/// A file that outgrows the body limit while it is read ends its batch with
/// a 413 problem after the rows read before the limit; the rows answered
/// stand. The client sends a little more than the limit and then waits, as
/// one that sent more would only have the rest refused.
#[tokio::test]
async fn a_streamed_csv_file_over_the_body_limit_ends_its_batch_with_413() {
    const LIMIT: usize = 64 * 1024;
    let gateway = TestGateway::start_with(Options {
        tls: false,
        max_body_bytes: LIMIT as u64,
        ..Options::default()
    });
    let (header, rows) = csv_rows(0..1_000);
    let mut stream = start_chunked_csv(&gateway).await;
    send_chunk(&mut stream, header.as_bytes()).await;
    for block in rows.as_bytes()[..LIMIT + 1024].chunks(16 * 1024) {
        send_chunk(&mut stream, block).await;
    }
    let (_, body) = batch_answer(&mut stream, Vec::new(), 60).await;
    let answered_rows = body["rows"].as_array().expect("rows").len();
    assert!(
        answered_rows > 0 && answered_rows < 1_000,
        "{answered_rows} rows answered"
    );
    assert_eq!(body["error"]["status"], json!(413), "{body}");
    assert_eq!(
        body["refused"].as_u64(),
        Some(answered_rows as u64),
        "{body}"
    );
}

/// A file that stops arriving ends its batch with a timeout problem once the
/// request timeout has passed, after the rows already read.
#[tokio::test]
async fn a_csv_file_that_stops_arriving_ends_its_batch_with_a_timeout() {
    let gateway = TestGateway::start_with(Options {
        tls: false,
        request_timeout_seconds: 2,
        ..Options::default()
    });
    let (header, rows) = csv_rows(0..1);
    let mut stream = start_chunked_csv(&gateway).await;
    send_chunk(&mut stream, format!("{header}{rows}").as_bytes()).await;
    // The answer ends without the rest of the file.
    let (_, body) = batch_answer(&mut stream, Vec::new(), 30).await;
    assert_eq!(body["rows"].as_array().expect("rows").len(), 1, "{body}");
    assert_eq!(body["error"]["status"], json!(408), "{body}");
    assert!(
        body["error"]["detail"]
            .as_str()
            .is_some_and(|detail| detail.contains("not received")),
        "{body}"
    );
}
