//! The benchmark's webhook receiver: accepts every POST with 204 after reading its
//! body, and records when each referral arrived, so `bench/run` can measure the
//! delay from the gateway's 202 to the arrival at the recipient.
//!
//! Usage: `bench_receiver ADDRESS OUTPUT`. The first line on standard output is the
//! bound address. Each referral message appends `REFERRAL_ID UNIX_NANOSECONDS` to
//! OUTPUT (flushed every 20 ms and on SIGTERM or SIGINT, which stop the receiver).
//! Signatures are not checked: the receiver stands for the recipient's cost of
//! taking a message, not for its security.

use std::convert::Infallible;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http_body_util::{BodyExt, Empty};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

/// Where arrivals are written, shared by every connection.
type Arrivals = Arc<Mutex<BufWriter<File>>>;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut arguments = std::env::args().skip(1);
    let usage = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "usage: bench_receiver ADDRESS OUTPUT",
        )
    };
    let address: SocketAddr = arguments
        .next()
        .ok_or_else(usage)?
        .parse()
        .map_err(|error| std::io::Error::new(std::io::ErrorKind::InvalidInput, error))?;
    let output = arguments.next().ok_or_else(usage)?;
    let arrivals: Arrivals = Arc::new(Mutex::new(BufWriter::new(File::create(output)?)));
    let listener = TcpListener::bind(address).await?;
    let mut out = std::io::stdout();
    writeln!(out, "{}", listener.local_addr()?)?;
    out.flush()?;

    let flusher = Arc::clone(&arrivals);
    tokio::spawn(async move {
        // bench/run counts the lines while the gateway delivers: keep the file fresh.
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        loop {
            tick.tick().await;
            flush(&flusher);
        }
    });
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = accepted?;
                stream.set_nodelay(true)?;
                let arrivals = Arc::clone(&arrivals);
                tokio::spawn(async move {
                    let service = service_fn(move |request| receive(request, Arc::clone(&arrivals)));
                    // A gateway closing its connection is not the receiver's concern.
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
    }
    flush(&arrivals);
    Ok(())
}

/// Reads the whole message, then records its referral id with the arrival time.
async fn receive(
    request: Request<Incoming>,
    arrivals: Arrivals,
) -> Result<Response<Empty<Bytes>>, Infallible> {
    let is_referral = request
        .headers()
        .get("passerelle-message-kind")
        .is_some_and(|kind| kind.as_bytes() == b"referral");
    let referral_id = request
        .headers()
        .get("passerelle-referral-id")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let complete = request.into_body().collect().await.is_ok();
    // The arrival is the moment the whole message is in, as a recipient would see it.
    let nanoseconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos());
    if complete
        && is_referral
        && let Some(referral_id) = referral_id
        && let Ok(mut file) = arrivals.lock()
    {
        // A failed write shows up as a missing arrival in bench/run's count.
        let _ = writeln!(file, "{referral_id} {nanoseconds}");
    }
    let mut response = Response::new(Empty::new());
    *response.status_mut() = if complete {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::BAD_REQUEST
    };
    Ok(response)
}

/// Writes out what is buffered; a poisoned lock or a failed flush loses only timings.
fn flush(arrivals: &Arrivals) {
    if let Ok(mut file) = arrivals.lock() {
        let _ = file.flush();
    }
}
