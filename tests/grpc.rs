//! The gRPC API `passerelle.gateway.v1` against the real binary on port 0,
//! over TLS with certificates made for the run, on the same port as the HTTP
//! API: typed referrals, status events and consent records through the same
//! pipeline, each error cause with its gRPC code and google.rpc details, the
//! inbox stream with leases and acknowledgements, and the standard health and
//! reflection services.

mod common;

use chrono::{DateTime, Duration, Utc};
use common::gateway::{Options, TestGateway, new_id, organisation};
use passerelle::model::proto::{consent_v1, referral_v2, status_v1};
use passerelle::model::v2;
use passerelle::server::grpc::gateway_v1::consent_service_client::ConsentServiceClient;
use passerelle::server::grpc::gateway_v1::inbox_service_client::InboxServiceClient;
use passerelle::server::grpc::gateway_v1::referral_service_client::ReferralServiceClient;
use passerelle::server::grpc::gateway_v1::submit_referral_request::Referral as Submitted;
use passerelle::server::grpc::gateway_v1::{
    self, AcknowledgeRequest, AppendConsentEventRequest, ConsentState, DeliveryState,
    GetConsentRequest, GetReferralRequest, InboxItem, InboxItemKind, PostStatusEventRequest,
    PullRequest, PullResponse, PutConsentRequest, Role, SubmitReferralRequest,
};
use serde_json::{Value, json};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Request, Status, Streaming};
use tonic_types::StatusExt;

const KONEXIO: &str = "konexio-saint-denis";
const FRANCE_TRAVAIL: &str = "france-travail-saint-denis";
const MISSION_LOCALE: &str = "mission-locale-plaine-commune";
const REFERRAL_SERVICE: &str = "passerelle.gateway.v1.ReferralService";
const CONSENT_SERVICE: &str = "passerelle.gateway.v1.ConsentService";
const INBOX_SERVICE: &str = "passerelle.gateway.v1.InboxService";

/// A channel to the gateway trusting the test CA, presenting the
/// organisation's client certificate when one is named.
async fn channel(gateway: &TestGateway, certificate_of: Option<&str>) -> Channel {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&gateway.pki.ca_pem))
        .domain_name("localhost");
    if let Some(id) = certificate_of {
        let (certificate, key) = &gateway.pki.clients[id];
        tls = tls.identity(Identity::from_pem(certificate, key));
    }
    Endpoint::from_shared(format!("https://{}", gateway.address))
        .expect("endpoint")
        .tls_config(tls)
        .expect("TLS configuration")
        .connect()
        .await
        .expect("connect over TLS")
}

/// A request carrying the organisation's API key.
fn signed<T>(message: T, id: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", organisation(id).api_key)
            .parse()
            .expect("ASCII key"),
    );
    request
}

fn timestamp(instant: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: instant.timestamp(),
        nanos: 0,
    }
}

/// A consent record given yesterday by Konexio, covering France Travail, as
/// a gRPC client builds it.
fn consent_record(record_id: &str) -> consent_v1::ConsentRecord {
    let now = Utc::now();
    let konexio = organisation(KONEXIO).siret.to_owned();
    consent_v1::ConsentRecord {
        record_id: record_id.to_owned(),
        schema_version: "passerelle.consent.v1".to_owned(),
        subject_id: "subj-0b6f1c2e7d4a".to_owned(),
        legal_basis: consent_v1::LegalBasis::Consent.into(),
        special_category_basis: 0,
        controllers: vec![konexio.clone()],
        recipients: vec![consent_v1::RecipientScope {
            siret: organisation(FRANCE_TRAVAIL).siret.to_owned(),
            kind: String::new(),
        }],
        purposes: vec![
            "dpv:ServiceProvision".to_owned(),
            "dpv:CommunicationManagement".to_owned(),
        ],
        data_categories: [
            "identity",
            "birth_date",
            "contact",
            "location",
            "availability",
            "identifier",
            "situation",
            "social_benefits",
            "obstacle_mobility",
            "obstacle_digital",
            "obstacle_french_maths",
            "obstacle_family",
            "free_text",
        ]
        .map(str::to_owned)
        .to_vec(),
        notice: Some(consent_v1::Notice {
            uri: "https://konexio.example/confidentialite/orientation".to_owned(),
            version: "2026-03".to_owned(),
            sha256: "6f1ed002ab5595859014ebf0951522d9a4b8a1e3f2c6e7d8b9a0c1d2e3f4a5b6".to_owned(),
            language: "fr-FR".to_owned(),
        }),
        collection: Some(consent_v1::Collection {
            method: consent_v1::CollectionMethod::Paper.into(),
            collected_by: konexio.clone(),
            on_behalf_of_guardian: false,
        }),
        valid_from: Some(timestamp(now - Duration::days(1))),
        valid_until: Some(timestamp(now + Duration::days(365))),
        withdrawal_method: "By email to the association's data-protection contact".to_owned(),
        evidence_sha256: "0b4c3f2e1d0a9f8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a39281706"
            .to_owned(),
        events: vec![consent_v1::ConsentEvent {
            kind: consent_v1::ConsentEventKind::Given.into(),
            at: Some(timestamp(now - Duration::days(1))),
            recorded_by: konexio,
        }],
    }
}

/// The sample referral (samples/referral-v2.json) under a new id, referencing
/// `record_id`, as a typed v2 message.
fn referral(referral_id: &str, record_id: &str) -> referral_v2::Referral {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/referral-v2.json");
    let mut document: Value =
        serde_json::from_slice(&std::fs::read(path).expect("sample")).expect("sample JSON");
    document["referral_id"] = json!(referral_id);
    document["consent_reference"] = json!(record_id);
    let canonical: v2::Referral = serde_json::from_value(document).expect("canonical referral");
    referral_v2::Referral::from(&canonical)
}

fn submission(referral: referral_v2::Referral) -> SubmitReferralRequest {
    SubmitReferralRequest {
        referral: Some(Submitted::ReferralV2(referral)),
    }
}

fn status_event(referral_id: &str, status: status_v1::Status) -> status_v1::StatusEvent {
    status_v1::StatusEvent {
        event_id: new_id(),
        schema_version: "passerelle.status.v1".to_owned(),
        referral_id: referral_id.to_owned(),
        status: status.into(),
        occurred_at: Some(timestamp(Utc::now())),
        author_siret: organisation(FRANCE_TRAVAIL).siret.to_owned(),
        ..Default::default()
    }
}

/// The `ErrorInfo` reason (the problem slug) and its `reason` metadata (the refusal code).
fn error_info(status: &Status) -> (String, Option<String>) {
    let details = status.get_error_details();
    let info = details.error_info().expect("ErrorInfo detail");
    assert_eq!(info.domain, "passerelle.eu");
    (info.reason.clone(), info.metadata.get("reason").cloned())
}

/// The `BadRequest` field violations: (field, description).
fn field_violations(status: &Status) -> Vec<(String, String)> {
    status
        .get_error_details()
        .bad_request()
        .expect("BadRequest detail")
        .field_violations
        .iter()
        .map(|violation| (violation.field.clone(), violation.description.clone()))
        .collect()
}

/// Stores a consent record and sends a referral under it, both as Konexio.
async fn accepted_referral(channel: &Channel) -> (String, String) {
    let record_id = new_id();
    ConsentServiceClient::new(channel.clone())
        .put_consent(signed(
            PutConsentRequest {
                record: Some(consent_record(&record_id)),
            },
            KONEXIO,
        ))
        .await
        .expect("consent stored");
    let referral_id = new_id();
    ReferralServiceClient::new(channel.clone())
        .submit_referral(signed(
            submission(referral(&referral_id, &record_id)),
            KONEXIO,
        ))
        .await
        .expect("referral accepted");
    (referral_id, record_id)
}

#[tokio::test]
async fn a_referral_goes_through_grpc_and_each_party_reads_its_copy() {
    let gateway = TestGateway::start();
    let channel = channel(&gateway, None).await;
    let mut consents = ConsentServiceClient::new(channel.clone());
    let mut referrals = ReferralServiceClient::new(channel.clone());

    let record_id = new_id();
    let put = |record| {
        signed(
            PutConsentRequest {
                record: Some(record),
            },
            KONEXIO,
        )
    };
    let record = consent_record(&record_id);
    let stored = consents
        .put_consent(put(record.clone()))
        .await
        .expect("consent stored")
        .into_inner();
    assert_eq!(stored.record_id, record_id);
    assert!(!stored.replayed);
    assert_eq!(stored.state(), ConsentState::Active);
    let read = consents
        .get_consent(signed(
            GetConsentRequest {
                record_id: record_id.clone(),
            },
            FRANCE_TRAVAIL,
        ))
        .await
        .expect("a covered recipient reads the record")
        .into_inner();
    assert_eq!(read.state(), ConsentState::Active);
    assert_eq!(read.record, Some(record));

    let referral_id = new_id();
    let sent = referral(&referral_id, &record_id);
    let answer = referrals
        .submit_referral(signed(submission(sent.clone()), KONEXIO))
        .await
        .expect("accepted")
        .into_inner();
    assert_eq!(answer.referral_id, referral_id);
    assert_eq!(answer.state(), DeliveryState::Queued);
    assert!(!answer.replayed);
    let decision = answer.decision.clone().expect("decision report");
    assert_eq!(decision.policy_id, "france-travail-orientation");
    assert_eq!(decision.consent_record_id, record_id);
    assert_eq!(decision.legal_basis(), consent_v1::LegalBasis::Consent);
    assert!(
        decision.removed.contains(&"person.birth_name".to_owned()),
        "{decision:?}"
    );
    let replay = referrals
        .submit_referral(signed(submission(sent.clone()), KONEXIO))
        .await
        .expect("replayed")
        .into_inner();
    assert!(replay.replayed);
    assert_eq!(replay.decision, answer.decision);

    // The sender sees what it sent, with the decision.
    let get = |id: &str| GetReferralRequest {
        referral_id: id.to_owned(),
    };
    let own = referrals
        .get_referral(signed(get(&referral_id), KONEXIO))
        .await
        .expect("sender reads")
        .into_inner();
    assert_eq!(own.role(), Role::Sender);
    assert_eq!(own.referral, Some(sent));
    assert_eq!(own.decision, answer.decision);
    assert!(own.accepted_at.is_some());

    // France Travail, by client certificate alone, sees the minimised copy.
    let mut france_travail =
        ReferralServiceClient::new(self::channel(&gateway, Some(FRANCE_TRAVAIL)).await);
    let minimised = france_travail
        .get_referral(Request::new(get(&referral_id)))
        .await
        .expect("recipient reads")
        .into_inner();
    assert_eq!(minimised.role(), Role::Recipient);
    assert!(minimised.decision.is_none());
    let copy = minimised.referral.expect("minimised referral");
    let person = copy.person.expect("person");
    assert_eq!(person.first_name, "Aïcha");
    assert_eq!(person.birth_name, "", "removed by the policy");
    assert_eq!(person.address.expect("address").city, "");
    let departement = copy
        .identifiers
        .iter()
        .find(|identifier| identifier.kind() == referral_v2::IdentifierKind::Departement)
        .expect("pseudonymised identifier kept");
    assert_ne!(departement.value, "IODAS-93-004512");

    // The same referral over HTTP: one pipeline, one store.
    let over_http: Value = gateway
        .client()
        .get(gateway.url(&format!("/v1/referrals/{referral_id}")))
        .header(
            "authorization",
            format!("Bearer {}", organisation(KONEXIO).api_key),
        )
        .send()
        .await
        .expect("HTTP read")
        .json()
        .await
        .expect("JSON");
    assert_eq!(over_http["role"], json!("sender"));
    assert_eq!(
        over_http["referral"]["person"]["birth_name"],
        json!("Ben Saïd")
    );

    // A status event comes back to the sender, once.
    let mut event = status_event(&referral_id, status_v1::Status::Rejected);
    event.rejection_reason = status_v1::RejectionReason::Unreachable.into();
    event.comment = "Injoignable".to_owned();
    let post = |event: &status_v1::StatusEvent| {
        signed(
            PostStatusEventRequest {
                event: Some(event.clone()),
            },
            FRANCE_TRAVAIL,
        )
    };
    let posted = referrals
        .post_status_event(post(&event))
        .await
        .expect("event recorded")
        .into_inner();
    assert_eq!(posted.event_id, event.event_id);
    assert_eq!(posted.referral_id, referral_id);
    assert!(posted.forwarded && !posted.replayed);
    let again = referrals
        .post_status_event(post(&event))
        .await
        .expect("event replayed")
        .into_inner();
    assert!(again.replayed);
    let history = referrals
        .get_referral(signed(get(&referral_id), KONEXIO))
        .await
        .expect("sender reads")
        .into_inner()
        .events;
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].status(), status_v1::Status::Rejected);
    assert_eq!(
        history[0].rejection_reason(),
        status_v1::RejectionReason::Unreachable
    );
}

#[tokio::test]
async fn each_error_carries_its_code_and_details() {
    let gateway = TestGateway::start();
    let channel = channel(&gateway, None).await;
    let mut referrals = ReferralServiceClient::new(channel.clone());
    let mut consents = ConsentServiceClient::new(channel.clone());
    let (referral_id, record_id) = accepted_referral(&channel).await;

    // UNAUTHENTICATED without credentials, or with a wrong key.
    let status = referrals
        .get_referral(Request::new(GetReferralRequest {
            referral_id: referral_id.clone(),
        }))
        .await
        .expect_err("no credentials");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(error_info(&status).0, "unauthenticated");
    let mut wrong = Request::new(GetReferralRequest {
        referral_id: referral_id.clone(),
    });
    wrong
        .metadata_mut()
        .insert("authorization", "Bearer not-a-key".parse().expect("ASCII"));
    let status = referrals.get_referral(wrong).await.expect_err("wrong key");
    assert_eq!(status.code(), Code::Unauthenticated);

    // INVALID_ARGUMENT with a field violation per fault, located in the
    // request; the values are not echoed.
    let mut invalid = referral(&new_id(), &record_id);
    if let Some(person) = invalid.person.as_mut() {
        person.first_name.clear();
        person.birth_date = "1998-02-30".to_owned();
    }
    let status = referrals
        .submit_referral(signed(submission(invalid), KONEXIO))
        .await
        .expect_err("invalid referral");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(error_info(&status).0, "validation");
    let violations = field_violations(&status);
    let fields: Vec<&str> = violations.iter().map(|(field, _)| field.as_str()).collect();
    assert!(
        fields.contains(&"/referral_v2/person/first_name"),
        "{violations:?}"
    );
    assert!(
        fields.contains(&"/referral_v2/person/birth_date"),
        "{violations:?}"
    );
    assert!(!format!("{status:?}").contains("1998-02-30"));

    // A status event breaking a schema rule, located under `event`.
    let status = referrals
        .post_status_event(signed(
            PostStatusEventRequest {
                event: Some(status_event(&referral_id, status_v1::Status::Rejected)),
            },
            FRANCE_TRAVAIL,
        ))
        .await
        .expect_err("rejected without a reason");
    assert_eq!(status.code(), Code::InvalidArgument);
    let fields: Vec<String> = field_violations(&status)
        .into_iter()
        .map(|(field, _)| field)
        .collect();
    assert_eq!(fields, ["/event/rejection_reason"]);

    // PERMISSION_DENIED sending as another organisation.
    let status = referrals
        .submit_referral(signed(
            submission(referral(&new_id(), &record_id)),
            MISSION_LOCALE,
        ))
        .await
        .expect_err("not its referral");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(error_info(&status).0, "forbidden");

    // NOT_FOUND for another tenant's referral and record, exactly as for an id
    // that does not exist.
    let missing = referrals
        .get_referral(signed(
            GetReferralRequest {
                referral_id: new_id(),
            },
            MISSION_LOCALE,
        ))
        .await
        .expect_err("no such referral");
    assert_eq!(missing.code(), Code::NotFound);
    let other_tenant = [
        referrals
            .get_referral(signed(
                GetReferralRequest {
                    referral_id: referral_id.clone(),
                },
                MISSION_LOCALE,
            ))
            .await
            .map(|_| ()),
        referrals
            .post_status_event(signed(
                PostStatusEventRequest {
                    event: Some(status_event(&referral_id, status_v1::Status::Accepted)),
                },
                MISSION_LOCALE,
            ))
            .await
            .map(|_| ()),
        consents
            .get_consent(signed(
                GetConsentRequest {
                    record_id: record_id.clone(),
                },
                MISSION_LOCALE,
            ))
            .await
            .map(|_| ()),
        consents
            .append_consent_event(signed(
                AppendConsentEventRequest {
                    record_id: record_id.clone(),
                    event: Some(consent_v1::ConsentEvent {
                        kind: consent_v1::ConsentEventKind::Withdrawn.into(),
                        at: Some(timestamp(Utc::now())),
                        recorded_by: organisation(MISSION_LOCALE).siret.to_owned(),
                    }),
                },
                MISSION_LOCALE,
            ))
            .await
            .map(|_| ()),
    ];
    for (index, answer) in other_tenant.into_iter().enumerate() {
        let status = answer.expect_err("another tenant's resource");
        assert_eq!(status.code(), Code::NotFound, "call {index}: {status:?}");
        assert_eq!(error_info(&status), error_info(&missing), "call {index}");
    }

    // ALREADY_EXISTS for the same referral id with other content.
    let mut changed = referral(&referral_id, &record_id);
    if let Some(person) = changed.person.as_mut() {
        person.first_name = "Autre".to_owned();
    }
    let status = referrals
        .submit_referral(signed(submission(changed), KONEXIO))
        .await
        .expect_err("id reused");
    assert_eq!(status.code(), Code::AlreadyExists);

    // FAILED_PRECONDITION with the refusal's reason code: no consent record...
    let status = referrals
        .submit_referral(signed(submission(referral(&new_id(), &new_id())), KONEXIO))
        .await
        .expect_err("no consent record");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(
        error_info(&status),
        ("refused".to_owned(), Some("consent-missing".to_owned()))
    );
    // ... or a withdrawn one (the withdrawal recorded by the recipient it reached).
    let withdrawn = consents
        .append_consent_event(signed(
            AppendConsentEventRequest {
                record_id: record_id.clone(),
                event: Some(consent_v1::ConsentEvent {
                    kind: consent_v1::ConsentEventKind::Withdrawn.into(),
                    at: Some(timestamp(Utc::now())),
                    recorded_by: organisation(FRANCE_TRAVAIL).siret.to_owned(),
                }),
            },
            FRANCE_TRAVAIL,
        ))
        .await
        .expect("withdrawal recorded")
        .into_inner();
    assert_eq!(withdrawn.state(), ConsentState::Withdrawn);
    let status = referrals
        .submit_referral(signed(submission(referral(&new_id(), &record_id)), KONEXIO))
        .await
        .expect_err("consent withdrawn");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(
        error_info(&status),
        ("refused".to_owned(), Some("consent-withdrawn".to_owned()))
    );
}

/// `SubmitReferralRequest` as a newer client might send it, with a field this
/// gateway does not define.
#[derive(Clone, PartialEq, prost::Message)]
struct NewerSubmitReferralRequest {
    #[prost(message, optional, tag = "2")]
    referral_v2: Option<referral_v2::Referral>,
    #[prost(string, tag = "15")]
    priority: String,
}

#[tokio::test]
async fn fields_the_api_does_not_define_are_refused() {
    let gateway = TestGateway::start();
    let channel = channel(&gateway, None).await;
    let (_, record_id) = accepted_referral(&channel).await;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let request = NewerSubmitReferralRequest {
        referral_v2: Some(referral(&new_id(), &record_id)),
        priority: "high".to_owned(),
    };
    let answer: Result<tonic::Response<gateway_v1::SubmitReferralResponse>, Status> = grpc
        .unary(
            signed(request, KONEXIO),
            tonic::codegen::http::uri::PathAndQuery::from_static(
                "/passerelle.gateway.v1.ReferralService/SubmitReferral",
            ),
            tonic_prost::ProstCodec::default(),
        )
        .await;
    let status = answer.expect_err("unknown field");
    assert_eq!(status.code(), Code::InvalidArgument);
    let violations = field_violations(&status);
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert_eq!(violations[0].0, "/15");
    assert!(
        violations[0].1.starts_with("unknown-field"),
        "{violations:?}"
    );
}

#[tokio::test]
async fn a_request_over_the_body_limit_is_refused_unread() {
    let gateway = TestGateway::start_with(Options {
        max_body_bytes: 64 * 1024,
        ..Options::default()
    });
    let channel = channel(&gateway, None).await;
    let (_, record_id) = accepted_referral(&channel).await;
    let referral_id = new_id();
    let mut large = referral(&referral_id, &record_id);
    large.reason = "x".repeat(65 * 1024);
    let mut referrals = ReferralServiceClient::new(channel);
    let status = referrals
        .submit_referral(signed(submission(large), KONEXIO))
        .await
        .expect_err("too large");
    // tonic applies the limit before decoding, with its own code.
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    let status = referrals
        .get_referral(signed(GetReferralRequest { referral_id }, KONEXIO))
        .await
        .expect_err("nothing stored");
    assert_eq!(status.code(), Code::NotFound);
}

#[tokio::test]
async fn health_and_reflection_are_served_beside_the_http_api() {
    use tonic::codegen::tokio_stream::{self, StreamExt};
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let gateway = TestGateway::start();
    let channel = channel(&gateway, None).await;
    let mut health = HealthClient::new(channel.clone());
    for service in ["", REFERRAL_SERVICE, CONSENT_SERVICE, INBOX_SERVICE] {
        let answer = health
            .check(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await
            .expect("health check")
            .into_inner();
        assert_eq!(answer.status(), ServingStatus::Serving, "{service:?}");
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "passerelle.gateway.v1.NoSuchService".to_owned(),
        })
        .await
        .expect_err("unknown service");
    assert_eq!(unknown.code(), Code::NotFound);

    let mut reflection = ServerReflectionClient::new(channel);
    let ask = |request: MessageRequest| ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let mut answers = reflection
        .server_reflection_info(tokio_stream::iter([
            ask(MessageRequest::ListServices(String::new())),
            ask(MessageRequest::FileContainingSymbol(
                "passerelle.gateway.v1.SubmitReferralRequest".to_owned(),
            )),
        ]))
        .await
        .expect("reflection")
        .into_inner();
    let listed = answers
        .next()
        .await
        .expect("an answer")
        .expect("services listed")
        .message_response;
    let Some(MessageResponse::ListServicesResponse(listed)) = listed else {
        panic!("not a service list: {listed:?}");
    };
    let mut names: Vec<String> = listed
        .service
        .into_iter()
        .map(|service| service.name)
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            CONSENT_SERVICE,
            INBOX_SERVICE,
            REFERRAL_SERVICE,
        ]
    );
    let files = answers
        .next()
        .await
        .expect("an answer")
        .expect("file found")
        .message_response;
    let Some(MessageResponse::FileDescriptorResponse(files)) = files else {
        panic!("not a file descriptor: {files:?}");
    };
    assert!(!files.file_descriptor_proto.is_empty());

    // HTTP is served on the same port.
    let healthz = gateway
        .client()
        .get(gateway.url("/healthz"))
        .send()
        .await
        .expect("HTTP");
    assert_eq!(healthz.status(), reqwest::StatusCode::OK);
}

/// A gateway whose leases last two seconds (room for a loaded machine between
/// an offer and its acknowledgement) and whose inbox streams look at
/// the store every 50 ms; every test organisation pulls.
fn gateway_with_short_leases() -> TestGateway {
    TestGateway::start_with(Options {
        extra_toml: "\n[delivery]\nlease_seconds = 2\npoll_interval_milliseconds = 50\n".into(),
        ..Options::default()
    })
}

/// Opens the organisation's inbox stream from the start, 20 messages a lease.
async fn open_inbox(channel: &Channel, id: &str) -> Streaming<PullResponse> {
    InboxServiceClient::new(channel.clone())
        .pull(signed(PullRequest { after: 0, limit: 0 }, id))
        .await
        .expect("stream opened")
        .into_inner()
}

/// The next item of a stream, within `seconds`.
async fn next_item(stream: &mut Streaming<PullResponse>, seconds: u64) -> InboxItem {
    tokio::time::timeout(std::time::Duration::from_secs(seconds), stream.message())
        .await
        .expect("an item in time")
        .expect("the stream is healthy")
        .expect("the stream is open")
        .item
        .expect("an item")
}

/// Whether the stream stays silent for `milliseconds`.
async fn silent_for(stream: &mut Streaming<PullResponse>, milliseconds: u64) -> bool {
    tokio::time::timeout(
        std::time::Duration::from_millis(milliseconds),
        stream.message(),
    )
    .await
    .is_err()
}

fn acknowledgement(item: &InboxItem) -> AcknowledgeRequest {
    AcknowledgeRequest {
        delivery_id: item.delivery_id.clone(),
    }
}

#[tokio::test]
async fn the_inbox_stream_offers_a_referral_until_it_is_acknowledged() {
    let gateway = gateway_with_short_leases();
    let channel = channel(&gateway, None).await;
    // Opened on an empty inbox: the referral arrives while the stream waits.
    let mut stream = open_inbox(&channel, FRANCE_TRAVAIL).await;
    assert!(silent_for(&mut stream, 300).await, "the inbox starts empty");
    let (referral_id, _) = accepted_referral(&channel).await;

    let first = next_item(&mut stream, 10).await;
    assert_eq!(first.kind(), InboxItemKind::Referral);
    assert_eq!(first.referral_id, referral_id);
    assert_eq!(first.format, "passerelle-v2");
    assert_eq!(first.attempt, 1);
    assert!(first.cursor > 0);
    let lease_until = first.lease_until.expect("a lease end");
    let now = Utc::now().timestamp();
    assert!(
        (now - 1..=now + 2).contains(&lease_until.seconds),
        "a one-second lease: {lease_until:?}"
    );
    // The payload is France Travail's minimised copy, in its format (v2 JSON):
    // what France Travail reads of the referral, and no birth name.
    let document: Value = serde_json::from_slice(&first.payload).expect("JSON payload");
    assert_eq!(document["referral_id"], json!(referral_id));
    assert_eq!(document["schema_version"], json!("passerelle.referral.v2"));
    assert!(
        document["person"].get("birth_name").is_none(),
        "removed by the policy: {document}"
    );
    let delivered: v2::Referral = serde_json::from_value(document).expect("a v2 referral");
    let read = ReferralServiceClient::new(channel.clone())
        .get_referral(signed(
            GetReferralRequest {
                referral_id: referral_id.clone(),
            },
            FRANCE_TRAVAIL,
        ))
        .await
        .expect("the recipient reads its copy")
        .into_inner();
    assert_eq!(
        read.referral,
        Some(referral_v2::Referral::from(&delivered)),
        "the streamed payload is the recipient's copy"
    );

    // Not acknowledged: offered again once the lease is over, under the same id.
    let again = next_item(&mut stream, 5).await;
    assert_eq!(again.delivery_id, first.delivery_id);
    assert_eq!(again.referral_id, referral_id);
    assert_eq!(again.attempt, 2);

    // Only France Travail may acknowledge it.
    let mut inbox = InboxServiceClient::new(channel.clone());
    let foreign = inbox
        .acknowledge(signed(acknowledgement(&again), KONEXIO))
        .await
        .expect_err("not Konexio's delivery");
    assert_eq!(foreign.code(), Code::NotFound, "{foreign:?}");
    assert_eq!(error_info(&foreign).0, "not-found");
    inbox
        .acknowledge(signed(acknowledgement(&again), FRANCE_TRAVAIL))
        .await
        .expect("acknowledged");
    inbox
        .acknowledge(signed(acknowledgement(&again), FRANCE_TRAVAIL))
        .await
        .expect("acknowledging twice is a success");
    // Acknowledged: never offered again, on this stream or a new one.
    assert!(
        silent_for(&mut stream, 2000).await,
        "an acknowledged delivery came back"
    );
    let mut reopened = open_inbox(&channel, FRANCE_TRAVAIL).await;
    assert!(silent_for(&mut reopened, 500).await);
    let view = ReferralServiceClient::new(channel.clone())
        .get_referral(signed(GetReferralRequest { referral_id }, KONEXIO))
        .await
        .expect("the sender reads")
        .into_inner();
    assert_eq!(view.state(), DeliveryState::Delivered);
}

#[tokio::test]
async fn a_delivery_left_by_a_closed_stream_comes_back_on_the_next_one() {
    let gateway = gateway_with_short_leases();
    let (referral_id, _) = accepted_referral(&channel(&gateway, None).await).await;
    // France Travail, by client certificate alone, takes the referral and
    // goes away without acknowledging it.
    let mut inbox = InboxServiceClient::new(channel(&gateway, Some(FRANCE_TRAVAIL)).await);
    let pull = |after| Request::new(PullRequest { after, limit: 5 });
    let mut stream = inbox
        .pull(pull(0))
        .await
        .expect("stream opened")
        .into_inner();
    let taken = next_item(&mut stream, 10).await;
    assert_eq!(taken.referral_id, referral_id);
    drop(stream);
    // The next stream starts after what was received; the lease ends and the
    // delivery comes back whatever the cursor, under the same id.
    let mut stream = inbox
        .pull(pull(taken.cursor))
        .await
        .expect("stream opened")
        .into_inner();
    let again = next_item(&mut stream, 5).await;
    assert_eq!(again.delivery_id, taken.delivery_id);
    assert_eq!(again.attempt, 2);
}

#[tokio::test]
async fn the_inbox_refuses_callers_without_credentials_and_limits_over_100() {
    let gateway = gateway_with_short_leases();
    let channel = channel(&gateway, None).await;
    let mut inbox = InboxServiceClient::new(channel);
    let anonymous = inbox
        .pull(Request::new(PullRequest { after: 0, limit: 0 }))
        .await
        .expect_err("no credentials");
    assert_eq!(anonymous.code(), Code::Unauthenticated, "{anonymous:?}");
    let anonymous = inbox
        .acknowledge(Request::new(AcknowledgeRequest {
            delivery_id: new_id(),
        }))
        .await
        .expect_err("no credentials");
    assert_eq!(anonymous.code(), Code::Unauthenticated, "{anonymous:?}");
    let too_many = inbox
        .pull(signed(
            PullRequest {
                after: 0,
                limit: 101,
            },
            FRANCE_TRAVAIL,
        ))
        .await
        .expect_err("over the limit");
    assert_eq!(too_many.code(), Code::InvalidArgument, "{too_many:?}");
    assert_eq!(
        field_violations(&too_many),
        [(
            "/limit".to_owned(),
            "maximum: at most 100, found 101".to_owned()
        )]
    );
    let unknown = inbox
        .acknowledge(signed(
            AcknowledgeRequest {
                delivery_id: new_id(),
            },
            FRANCE_TRAVAIL,
        ))
        .await
        .expect_err("no such delivery");
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_inbox_stream_ends_unavailable_when_the_gateway_stops() {
    let mut gateway = gateway_with_short_leases();
    let channel = channel(&gateway, None).await;
    let mut stream = open_inbox(&channel, FRANCE_TRAVAIL).await;
    assert!(silent_for(&mut stream, 300).await, "the inbox starts empty");
    let started = std::time::Instant::now();
    let (status, gateway) = tokio::task::spawn_blocking(move || (gateway.terminate(), gateway))
        .await
        .expect("terminate");
    assert!(status.success(), "exit status {status}");
    // Well within the 30 s shutdown grace: the stream does not hold the gateway.
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "stopped after {:?}; log:\n{}",
        started.elapsed(),
        gateway.logs()
    );
    let ended = stream
        .message()
        .await
        .expect_err("the stream ends with a status");
    assert_eq!(ended.code(), Code::Unavailable, "{ended:?}");
}
