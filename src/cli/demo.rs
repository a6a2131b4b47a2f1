//! `passerelle demo`: the closed loop on one machine. Starts the gateway on
//! the embedded store with the example organisations, and a local receiver
//! playing France Travail (signed webhooks in France Travail's format); sends
//! the shared samples as the association would (a consent record, the CSV
//! export, the DORA orientation, a canonical referral); shows what reached the
//! receiver; posts France Travail's decision back; and shows the
//! association's view. Everything it writes stays in one folder, printed at
//! the end with the commands that inspect it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::Engine;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::write_failed;
use crate::config::{Delivery, DeliveryMode, GatewayConfig, PushTarget};
use crate::delivery::webhook::{parse_secret, signature};
use crate::delivery::worker::Worker;
use crate::error::Error;
use crate::gateway::Gateway;
use crate::policy::KeyReference;
use crate::server::{self, AppState};
use crate::store::{Store, StoreLocation};
use crate::telemetry::Metrics;

const ASSOCIATION_KEY: &str = "dev-key-konexio-saint-denis";
const FRANCE_TRAVAIL_KEY: &str = "dev-key-france-travail-saint-denis";
const FRANCE_TRAVAIL: &str = "france-travail-saint-denis";

/// What the receiver playing France Travail got.
#[derive(Default)]
struct Inbox {
    secret: Vec<u8>,
    folder: PathBuf,
    received: Vec<(String, bool, Value)>,
}

/// Runs the demo; its files go to `folder` (emptied first).
pub(crate) fn run(
    config_file: &Path,
    samples: &Path,
    folder: &Path,
    out: &mut dyn Write,
) -> Result<ExitCode, Error> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|source| Error::Io {
            context: "starting the runtime".to_owned(),
            source,
        })?;
    runtime.block_on(demo(config_file, samples, folder, out))
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Io { context, source }
}

async fn demo(
    config_file: &Path,
    samples: &Path,
    folder: &Path,
    out: &mut dyn Write,
) -> Result<ExitCode, Error> {
    if folder.exists() {
        std::fs::remove_dir_all(folder).map_err(io(format!("emptying {}", folder.display())))?;
    }
    let received_folder = folder.join("received-by-france-travail");
    std::fs::create_dir_all(&received_folder)
        .map_err(io(format!("creating {}", received_folder.display())))?;
    let secret_file = folder.join("webhook-secret");
    let key: Vec<u8> = (0..32).map(|_| rand::random::<u8>()).collect();
    let secret = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(&key)
    );
    std::fs::write(&secret_file, &secret)
        .map_err(io(format!("writing {}", secret_file.display())))?;

    // The receiver playing France Travail.
    let inbox = Arc::new(Mutex::new(Inbox {
        secret: parse_secret(secret.as_bytes()).map_err(Error::Internal)?,
        folder: received_folder.clone(),
        received: Vec::new(),
    }));
    let receiver = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(io("starting the receiver".to_owned()))?;
    let receiver_address = receiver
        .local_addr()
        .map_err(io("starting the receiver".to_owned()))?;
    let app = Router::new()
        .route("/orientations", post(receive))
        .with_state(Arc::clone(&inbox));
    tokio::spawn(async move {
        let _ = axum::serve(receiver, app).await;
    });

    // The gateway, on the example configuration, in the demo's folder.
    let mut config = GatewayConfig::load(config_file)?;
    let store_path = folder.join("passerelle.db");
    config.store = StoreLocation::Sqlite(store_path.clone());
    config.server.listen = "127.0.0.1:0"
        .parse()
        .map_err(|_| Error::Internal("a loopback address".to_owned()))?;
    config.delivery.poll_interval = Duration::from_millis(50);
    config.organisations.set_delivery(
        FRANCE_TRAVAIL,
        Delivery {
            mode: DeliveryMode::Webhook(PushTarget {
                url: format!("http://{receiver_address}/orientations"),
                secret: Some(
                    KeyReference::parse("file:webhook-secret", folder).map_err(Error::Internal)?,
                ),
                ca: None,
                client_identity: None,
            }),
            format: "france-travail".to_owned(),
            ..Delivery::default()
        },
    )?;
    let store = Arc::new(Store::open(&config.store).await?);
    let listener = TcpListener::bind(config.server.listen)
        .await
        .map_err(io("starting the gateway".to_owned()))?;
    let address = listener
        .local_addr()
        .map_err(io("starting the gateway".to_owned()))?;
    let gateway = Arc::new(Gateway::new(config, Arc::clone(&store), Metrics::new()));
    let worker = Worker::new(Arc::clone(&gateway)).await?;
    let (stop, stopped) = watch::channel(false);
    let worker = tokio::spawn(worker.run(stopped.clone()));
    let mut server_stopped = stopped;
    let server = tokio::spawn(server::serve(
        AppState::new(Arc::clone(&gateway)),
        listener,
        async move {
            let _ = server_stopped.changed().await;
        },
    ));
    let base = format!("http://{address}");
    writeln!(
        out,
        "Passerelle demo: the gateway listens on {base} (example organisations, store {}),\n\
         a receiver playing France Travail on http://{receiver_address}/orientations (signed webhooks, France Travail's format).",
        store_path.display()
    )
    .map_err(write_failed)?;

    let outcome = scenario(&base, samples, &inbox, out).await;
    let _ = stop.send(true);
    let _ = server.await;
    let _ = worker.await;
    drop(gateway);
    if let Ok(store) = Arc::try_unwrap(store) {
        store.close().await?;
    }
    outcome?;
    writeln!(
        out,
        "\nInspect what happened:\n\
         - what France Travail received: {}\n\
         - the store: {}\n\
         - passerelle --store {} outbox list          (every message, its state and attempts)\n\
         - passerelle --store {} audit verify         (the hash-chained audit log)\n\
         - passerelle --store {} audit export         (its entries: ids, codes and field paths, never values)",
        received_folder.display(),
        store_path.display(),
        store_path.display(),
        store_path.display(),
        store_path.display()
    )
    .map_err(write_failed)?;
    Ok(ExitCode::SUCCESS)
}

async fn receive(
    State(inbox): State<Arc<Mutex<Inbox>>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let id = header("webhook-id");
    let Ok(mut inbox) = inbox.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR;
    };
    let timestamp: i64 = header("webhook-timestamp").parse().unwrap_or_default();
    let expected = signature(&inbox.secret, &id, timestamp, &body);
    let valid = header("webhook-signature")
        .split(' ')
        .any(|candidate| candidate == expected);
    let document: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let file = inbox.folder.join(format!("{id}.json"));
    let _ = std::fs::write(
        &file,
        serde_json::to_vec_pretty(&document).unwrap_or_default(),
    );
    inbox.received.push((id, valid, document));
    if valid {
        StatusCode::OK
    } else {
        StatusCode::UNAUTHORIZED
    }
}

/// One request of the demo, printed as the curl line that repeats it.
struct Request<'a> {
    /// What the step shows.
    title: &'a str,
    /// The caller's API key.
    key: &'a str,
    /// `GET` or `POST`.
    method: &'a str,
    /// Path and query.
    path: String,
    /// The body's media type and its sample file.
    body: Option<(&'a str, &'a str)>,
}

struct Demo<'a> {
    http: reqwest::Client,
    base: &'a str,
    samples: &'a Path,
    step: usize,
}

impl Demo<'_> {
    fn title(&mut self, out: &mut dyn Write, title: &str) -> Result<(), Error> {
        self.step += 1;
        writeln!(out, "\n== {}. {title}", self.step).map_err(write_failed)
    }

    /// Prints the request as curl, sends it, prints the answer (JSON pretty).
    async fn perform(
        &mut self,
        out: &mut dyn Write,
        request: Request<'_>,
    ) -> Result<(u16, String), Error> {
        if !request.title.is_empty() {
            self.title(out, request.title)?;
        }
        let url = format!("{}{}", self.base, request.path);
        let mut curl = format!(
            "$ curl -X {} '{url}' -H 'Authorization: Bearer {}'",
            request.method, request.key
        );
        let mut builder = match request.method {
            "POST" => self.http.post(&url),
            _ => self.http.get(&url),
        }
        .bearer_auth(request.key);
        if let Some((media, sample)) = request.body {
            curl.push_str(&format!(
                " -H 'Content-Type: {media}' --data-binary @samples/{sample}"
            ));
            let path = self.samples.join(sample);
            let bytes = std::fs::read(&path).map_err(io(format!("reading {}", path.display())))?;
            builder = builder.header("content-type", media).body(bytes);
        }
        writeln!(out, "{curl}").map_err(write_failed)?;
        let unanswered = |_| Error::Unavailable("the demo gateway did not answer".to_owned());
        let response = builder.send().await.map_err(unanswered)?;
        let status = response.status().as_u16();
        let body = response.text().await.map_err(unanswered)?;
        let pretty = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|value| serde_json::to_string_pretty(&value).ok())
            .unwrap_or_else(|| body.clone());
        writeln!(out, "{status}\n{pretty}").map_err(write_failed)?;
        Ok((status, body))
    }
}

async fn scenario(
    base: &str,
    samples: &Path,
    inbox: &Arc<Mutex<Inbox>>,
    out: &mut dyn Write,
) -> Result<(), Error> {
    const JSON: &str = "application/json";
    let mut demo = Demo {
        http: reqwest::Client::new(),
        base,
        samples,
        step: 0,
    };
    let referral_path = samples.join("referral-v2.json");
    let referral_id = std::fs::read(&referral_path)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
        .and_then(|value| value["referral_id"].as_str().map(str::to_owned))
        .ok_or_else(|| {
            Error::invalid("/referral_id", "required", "the sample referral has no id")
        })?;

    demo.perform(
        out,
        Request {
            title: "The association records the person's consent (samples/consent-record.json)",
            key: ASSOCIATION_KEY,
            method: "POST",
            path: "/v1/consents".to_owned(),
            body: Some((JSON, "consent-record.json")),
        },
    )
    .await?;
    demo.perform(out, Request {
        title: "The association uploads its spreadsheet export: each row is answered on its own, at its line",
        key: ASSOCIATION_KEY,
        method: "POST",
        path: "/v1/referrals?format=csv&mapping=carnet-de-bord&recipient=13000548100002".to_owned(),
        body: Some(("text/csv", "association-export-cdb.csv")),
    })
    .await?;
    writeln!(
        out,
        "(The export carries no consent reference: no row may leave until a consent record covers it. \
         Line 3 is sent in the name of another structure: only that structure may send it.)"
    )
    .map_err(write_failed)?;
    demo.perform(out, Request {
        title: "The association sends a DORA orientation (its data-protection commitment stands for a public-task basis)",
        key: ASSOCIATION_KEY,
        method: "POST",
        path: "/v1/referrals?format=dora&recipient=13000548100002".to_owned(),
        body: Some((JSON, "dora-orientation.json")),
    })
    .await?;
    demo.perform(out, Request {
        title: "The association sends a canonical referral under the consent record: 202, with what minimisation removed",
        key: ASSOCIATION_KEY,
        method: "POST",
        path: "/v1/referrals".to_owned(),
        body: Some(("application/vnd.passerelle.referral.v2+json", "referral-v2.json")),
    })
    .await?;

    demo.title(
        out,
        "What reached France Travail: signed webhooks, in France Travail's orientationusager/v1 shape, minimised",
    )?;
    let mut delivered = Vec::new();
    for _ in 0..200 {
        delivered = inbox
            .lock()
            .map(|inbox| inbox.received.clone())
            .unwrap_or_default();
        if delivered.iter().any(|(id, _, _)| *id == referral_id) && delivered.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (id, valid, document) in &delivered {
        let validity = if *valid { "valid" } else { "INVALID" };
        writeln!(out, "webhook-id {id}, signature {validity}").map_err(write_failed)?;
        if *id == referral_id {
            let pretty = serde_json::to_string_pretty(document).unwrap_or_default();
            writeln!(out, "{pretty}").map_err(write_failed)?;
        }
    }

    demo.perform(out, Request {
        title: "France Travail posts its decision back, in its own format (samples/france-travail-decision.json)",
        key: FRANCE_TRAVAIL_KEY,
        method: "POST",
        path: format!("/v1/referrals/{referral_id}/events?format=france-travail"),
        body: Some((JSON, "france-travail-decision.json")),
    })
    .await?;
    let (_, page) = demo
        .perform(out, Request {
            title: "The association (in pull mode) fetches its inbox: the status event, minimised by its policy",
            key: ASSOCIATION_KEY,
            method: "GET",
            path: "/v1/inbox".to_owned(),
            body: None,
        })
        .await?;
    let delivery_ids: Vec<String> = serde_json::from_str::<Value>(&page)
        .ok()
        .and_then(|page| {
            page["items"].as_array().map(|items| {
                items
                    .iter()
                    .filter_map(|item| item["delivery_id"].as_str().map(str::to_owned))
                    .collect()
            })
        })
        .unwrap_or_default();
    for delivery_id in &delivery_ids {
        demo.perform(
            out,
            Request {
                title: "",
                key: ASSOCIATION_KEY,
                method: "POST",
                path: format!("/v1/inbox/{delivery_id}/ack"),
                body: None,
            },
        )
        .await?;
    }
    demo.perform(
        out,
        Request {
            title: "The association's view of its referral: delivered, and what became of it",
            key: ASSOCIATION_KEY,
            method: "GET",
            path: format!("/v1/referrals/{referral_id}"),
            body: None,
        },
    )
    .await?;
    Ok(())
}
