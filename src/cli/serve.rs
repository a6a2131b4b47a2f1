//! `passerelle serve` (the gateway) and `passerelle api-key new`.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

use super::{write_failed, write_json};
use crate::config::{GatewayConfig, hash_api_key};
use crate::delivery::worker::Worker;
use crate::error::Error;
use crate::gateway::Gateway;
use crate::server::{self, AppState};
use crate::store::Store;
use crate::telemetry;

/// Runs the gateway until SIGINT or SIGTERM. Prints one line to `out` once
/// listening: `listening on ADDRESS (https|http)`, for scripts and tests.
pub(crate) fn run(config_file: &Path, out: &mut dyn Write) -> Result<ExitCode, Error> {
    let config = GatewayConfig::load(config_file)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|source| Error::Io {
            context: "starting the runtime".to_owned(),
            source,
        })?;
    runtime.block_on(serve(config, out))
}

async fn serve(config: GatewayConfig, out: &mut dyn Write) -> Result<ExitCode, Error> {
    let telemetry = telemetry::init(&config.telemetry)?;
    for reference in &config.ephemeral_keys {
        tracing::warn!(
            key = %reference,
            "development: a random pseudonymisation key stands for this reference; pseudonyms change at every start"
        );
    }
    let store = Arc::new(Store::open(&config.store).await?);
    let listener = TcpListener::bind(config.server.listen)
        .await
        .map_err(|source| Error::Io {
            context: format!("listening on {}", config.server.listen),
            source,
        })?;
    let address = listener.local_addr().map_err(|source| Error::Io {
        context: "reading the listening address".to_owned(),
        source,
    })?;
    let scheme = if config.server.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let organisations = config.organisations.iter().count();
    let policies = config.policies.len();
    let gateway = Arc::new(Gateway::new(
        config,
        Arc::clone(&store),
        telemetry.metrics(),
    ));
    tracing::info!(%address, scheme, organisations, policies, "passerelle is listening");
    writeln!(out, "listening on {address} ({scheme})").map_err(write_failed)?;
    out.flush().map_err(write_failed)?;
    let worker = Worker::new(Arc::clone(&gateway)).await?;
    let (stop, stopped) = watch::channel(false);
    let worker = tokio::spawn(worker.run(stopped.clone()));
    let expiry = tokio::spawn(expire_periodically(Arc::clone(&gateway), stopped));
    let state = AppState::new(Arc::clone(&gateway));
    server::serve(state, listener, shutdown_signal()).await?;
    // The worker finishes the attempts in flight and records their outcomes.
    let _ = stop.send(true);
    let grace = gateway.config().server.shutdown_grace;
    let _ = expiry.await;
    if tokio::time::timeout(grace, worker).await.is_err() {
        tracing::warn!(
            "delivery attempts did not finish within the grace period; their leases will expire and they will be attempted again"
        );
    }
    drop(gateway);
    match Arc::try_unwrap(store) {
        Ok(store) => store.close().await?,
        Err(_) => {
            tracing::warn!("the store is still in use at exit; its writer stops with the process")
        }
    }
    tracing::info!("stopped");
    telemetry.shutdown();
    Ok(ExitCode::SUCCESS)
}

/// Expires stale referrals (no status for the configured delay) now and
/// then, until shutdown.
async fn expire_periodically(gateway: Arc<Gateway>, mut stopped: watch::Receiver<bool>) {
    let settings = gateway.config().delivery.clone();
    let after = chrono::Duration::from_std(settings.expiry).unwrap_or(chrono::Duration::days(30));
    loop {
        if let Err(error) = gateway.expire_stale(chrono::Utc::now(), after).await {
            tracing::error!(error = %error, "stale referrals could not be expired");
        }
        tokio::select! {
            () = tokio::time::sleep(settings.expiry_check) => {}
            _ = stopped.changed() => return,
        }
    }
}

async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
    tracing::info!("shutdown requested");
}

/// Prints a new random API key and the line to put in the configuration.
pub(crate) fn new_api_key(out: &mut dyn Write) -> Result<ExitCode, Error> {
    // Two version-4 UUIDs: 244 bits from the operating system's generator.
    let key = format!(
        "pk_{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let hash = format!("sha256:{}", hex::encode(hash_api_key(&key)));
    write_json(
        out,
        &serde_json::json!({
            "api_key": key,
            "config": format!("api_keys = [\"{hash}\"]"),
            "note": "give api_key to the organisation once, over a safe channel; only the hash goes in the configuration",
        }),
        true,
    )?;
    Ok(ExitCode::SUCCESS)
}
