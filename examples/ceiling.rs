//! The benchmark's ceiling: a bare hyper HTTP/1.1 server answering 202 to every
//! request without reading it, so `bench/run` can measure what the machine and the
//! load generator allow before any gateway work.
//!
//! Usage: `ceiling [ADDRESS]` (default `127.0.0.1:0`). The first line on standard
//! output is the bound address; the server runs until it is killed.

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;

use http_body_util::Empty;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let address: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".to_owned())
        .parse()
        .map_err(|error| std::io::Error::new(std::io::ErrorKind::InvalidInput, error))?;
    let listener = TcpListener::bind(address).await?;
    let mut out = std::io::stdout();
    writeln!(out, "{}", listener.local_addr()?)?;
    out.flush()?;
    loop {
        let (stream, _) = listener.accept().await?;
        // wrk measures latency per request: Nagle's delay would only add noise.
        stream.set_nodelay(true)?;
        tokio::spawn(async move {
            let answer = service_fn(|_request: Request<Incoming>| async {
                let mut response = Response::new(Empty::<Bytes>::new());
                *response.status_mut() = StatusCode::ACCEPTED;
                Ok::<_, Infallible>(response)
            });
            // A client closing its connection mid-request is not the ceiling's concern.
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), answer)
                .await;
        });
    }
}
