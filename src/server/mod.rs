//! `passerelle serve`: the HTTP/JSON API and the gRPC services on one port,
//! over TLS (rustls, ALPN h2 and http/1.1) or, for development only, plain
//! HTTP on a loopback address.
//!
//! # Layout
//! - [`tls`]: the rustls configuration and client certificate identities.
//! - [`auth`]: API keys, client certificates, the per-organisation rate limit.
//! - [`http`]: the `/v1` routes, health, OpenAPI.
//! - [`grpc`]: `passerelle.gateway.v1`, health and reflection.
//! - [`problem`]: the one mapping from errors to problem+json and gRPC statuses.
//!
//! # Protection
//! Bodies over the configured size are refused (413) before they are read in
//! full; JSON nesting is bounded; each request has a timeout; connections wait
//! to be accepted beyond `max_connections`, and requests to be handled beyond
//! `max_requests_in_flight` (bounding memory); TLS handshakes and silent
//! connections time out; each organisation has a request rate (429 with
//! `Retry-After`). On SIGINT or SIGTERM the gateway stops accepting, lets
//! in-flight requests finish (up to `shutdown_grace_seconds`) and closes the
//! store after its last commit: a referral answered 202 is on disk.

pub mod auth;
pub mod grpc;
pub mod http;
pub mod problem;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::error::Error;
use crate::gateway::Gateway;

use self::auth::{Authenticator, PeerIdentity};

/// What every request handler shares. Cloned for each request by the router,
/// its middleware and its handler: one reference count, not one per part.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Shared>);

/// The parts of [`AppState`].
#[derive(Debug)]
pub struct Shared {
    /// The pipeline.
    pub gateway: Arc<Gateway>,
    /// Authentication and rate limits.
    pub auth: Arc<Authenticator>,
    /// Permits for requests in flight (`server.max_requests_in_flight`).
    in_flight: Semaphore,
    shutting_down: AtomicBool,
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    /// State over a gateway.
    pub fn new(gateway: Arc<Gateway>) -> Self {
        let auth = Arc::new(Authenticator::new(&gateway.config().server));
        let in_flight = Semaphore::new(gateway.config().server.max_requests_in_flight);
        Self(Arc::new(Shared {
            gateway,
            auth,
            in_flight,
            shutting_down: AtomicBool::new(false),
        }))
    }

    /// Whether shutdown has begun (`/readyz` then answers 503).
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Relaxed)
    }
}

/// The whole application: HTTP routes and gRPC services in one router, with
/// the limit on requests in flight and the request timeout (which counts the
/// wait for the limit).
pub fn app(state: AppState) -> Router {
    http::router(state.clone())
        .merge(grpc::routes(state.clone()).into_axum_router())
        .fallback(http::not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            limit_in_flight,
        ))
        .layer(axum::middleware::from_fn_with_state(state, request_timeout))
}

/// Lets at most `server.max_requests_in_flight` requests run at once, until
/// their answer's head. The others wait here before their body is read, so a
/// thousand connections sending at once cost a thousand connection buffers,
/// not a thousand decoded referrals. Health checks never wait.
async fn limit_in_flight(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let path = request.uri().path();
    if path == "/healthz" || path == "/readyz" || path.starts_with("/grpc.health.v1.") {
        return next.run(request).await;
    }
    // The semaphore is never closed, so the permit always comes.
    let _permit = state.in_flight.acquire().await;
    next.run(request).await
}

/// Answers a request that takes longer than the configured timeout (until
/// its answer's head; a stream's later messages are not bounded) with a
/// problem, or `DEADLINE_EXCEEDED` for gRPC.
async fn request_timeout(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let grpc = request
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|media| media.starts_with("application/grpc"));
    let limit = state.gateway.config().server.request_timeout;
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            let error = Error::TimedOut(format!(
                "the request took longer than {} s; retry (submissions are idempotent)",
                limit.as_secs()
            ));
            if grpc {
                problem::grpc_status(&error)
                    .into_http::<axum::body::Body>()
                    .into_response()
            } else {
                problem::problem_response(&error)
            }
        }
    }
}

/// Serves on `listener` until `shutdown` completes, then drains in-flight
/// requests for at most the configured grace period.
pub async fn serve(
    state: AppState,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let server = &state.gateway.config().server;
    let acceptor = match &server.tls {
        Some(tls) => Some(TlsAcceptor::from(tls::server_config(tls)?)),
        None => None,
    };
    let idle = server.idle_timeout;
    let grace = server.shutdown_grace;
    let connections = Arc::new(Semaphore::new(server.max_connections));
    let app = app(state.clone());
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(idle)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(idle / 2)
        .keep_alive_timeout(idle / 2);
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&connections).acquire_owned() => permit.map_err(|_| Error::Internal("connection limit closed".to_owned()))?,
            () = &mut shutdown => break,
        };
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: wait, do not spin.
                    tracing::warn!(error = %error, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let acceptor = acceptor.clone();
        let builder = Arc::clone(&builder);
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _permit = permit;
            serve_connection(stream, remote, acceptor, idle, app, &builder, watcher).await;
        });
    }
    drop(listener);
    state.shutting_down.store(true, Ordering::Relaxed);
    tracing::info!("shutting down: draining in-flight requests");
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_seconds = grace.as_secs(),
            "in-flight requests did not finish within the grace period"
        );
    }
    Ok(())
}

async fn serve_connection(
    stream: TcpStream,
    remote: SocketAddr,
    acceptor: Option<TlsAcceptor>,
    idle: std::time::Duration,
    app: Router,
    builder: &auto::Builder<TokioExecutor>,
    watcher: hyper_util::server::graceful::Watcher,
) {
    let _ = remote;
    match acceptor {
        None => {
            let service = hyper_util::service::TowerToHyperService::new(app);
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            if let Err(error) = watcher.watch(connection.into_owned()).await {
                tracing::debug!(error = %error, "connection ended with an error");
            }
        }
        Some(acceptor) => {
            let tls = match tokio::time::timeout(idle, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => {
                    tracing::debug!(error = %error, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!("TLS handshake timed out");
                    return;
                }
            };
            let peer: Option<PeerIdentity> = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(tls::peer_identity);
            let app = app.map_request(move |mut request: hyper::Request<hyper::body::Incoming>| {
                if let Some(peer) = &peer {
                    request.extensions_mut().insert(peer.clone());
                }
                request
            });
            let service = hyper_util::service::TowerToHyperService::new(app);
            let connection = builder.serve_connection(TokioIo::new(tls), service);
            if let Err(error) = watcher.watch(connection.into_owned()).await {
                tracing::debug!(error = %error, "connection ended with an error");
            }
        }
    }
}
