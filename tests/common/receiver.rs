//! A webhook receiver for tests: an axum server on 127.0.0.1 port 0 that
//! records every request and answers as scripted.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    /// `webhook-id`.
    pub id: String,
    /// `webhook-timestamp`.
    pub timestamp: String,
    /// `webhook-signature`.
    pub signature: String,
    /// `passerelle-message-kind`.
    pub kind: String,
    /// The body.
    pub body: Vec<u8>,
    /// The status it was answered.
    pub status: u16,
}

#[derive(Default)]
struct Script {
    /// Statuses to answer, in order; then `otherwise`.
    next: VecDeque<u16>,
    otherwise: u16,
    /// How long to wait before answering.
    delay: Duration,
    received: Vec<Received>,
}

/// A running receiver.
#[derive(Clone)]
pub struct Receiver {
    /// `http://127.0.0.1:PORT/hook`.
    pub url: String,
    script: Arc<Mutex<Script>>,
}

impl Receiver {
    /// Starts a receiver answering 200 unless scripted otherwise.
    pub async fn start() -> Self {
        let script = Arc::new(Mutex::new(Script {
            otherwise: 200,
            ..Script::default()
        }));
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(Arc::clone(&script));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the receiver");
        let address: SocketAddr = listener.local_addr().expect("address");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            url: format!("http://{address}/hook"),
            script,
        }
    }

    /// Answers these statuses to the next requests, then `otherwise`.
    pub fn answer(&self, next: &[u16], otherwise: u16) {
        let mut script = self.script.lock().expect("script");
        script.next = next.iter().copied().collect();
        script.otherwise = otherwise;
    }

    /// Every request so far.
    pub fn received(&self) -> Vec<Received> {
        self.script.lock().expect("script").received.clone()
    }

    /// Waits this long before answering each request (a slow receiver).
    pub fn delay(&self, delay: Duration) {
        self.script.lock().expect("script").delay = delay;
    }

    /// The requests answered 2xx.
    pub fn accepted(&self) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|request| (200..300).contains(&request.status))
            .collect()
    }

    /// Waits until `predicate` holds over the requests, or the timeout.
    pub async fn wait_for(
        &self,
        predicate: impl Fn(&[Received]) -> bool,
        timeout: Duration,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if predicate(&self.received()) {
                return true;
            }
            if tokio::time::Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn receive(
    State(script): State<Arc<Mutex<Script>>>,
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
    let delay = script.lock().expect("script").delay;
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let mut script = script.lock().expect("script");
    let status = script.next.pop_front().unwrap_or(script.otherwise);
    script.received.push(Received {
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp"),
        signature: header("webhook-signature"),
        kind: header("passerelle-message-kind"),
        body: body.to_vec(),
        status,
    });
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}
