//! A bare hyper reverse proxy, the baseline of `bench/e2e.sh`: no layers, no parsing, no
//! auth — it forwards every request to one upstream over a pooled keep-alive client and
//! streams both bodies through. What it costs is the cost of a proxy hop.
//!
//! ```sh
//! tollgate-bench-proxy LISTEN_ADDR UPSTREAM_ADDR      # e.g. 127.0.0.1:9101 127.0.0.1:9100
//! ```

use std::net::SocketAddr;

use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONNECTION, HOST, HeaderName};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

type Body = BoxBody<Bytes, hyper::Error>;

/// Hop-by-hop headers (RFC 9110 §7.6.1) a proxy must not forward.
const HOP_BY_HOP: [&str; 7] = [
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
];

fn strip_hop_by_hop(headers: &mut hyper::HeaderMap) {
    headers.remove(CONNECTION);
    for name in HOP_BY_HOP {
        headers.remove(HeaderName::from_static(name));
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: {} LISTEN_ADDR UPSTREAM_ADDR", args[0]);
        std::process::exit(2);
    }
    let listen: SocketAddr = args[1].parse()?;
    let upstream: SocketAddr = args[2].parse()?;
    let authority = upstream.to_string();

    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Incoming> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1024)
        .build(connector);

    let listener = TcpListener::bind(listen).await?;
    eprintln!("bench proxy on http://{listen} -> http://{upstream}");
    let server = auto::Builder::new(TokioExecutor::new());
    let shutdown = tokio::signal::ctrl_c();
    tokio::pin!(shutdown);
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(s) => s,
                Err(e) => { eprintln!("accept: {e}"); continue; }
            },
            _ = &mut shutdown => return Ok(()),
            _ = sigterm.recv() => return Ok(()),
        };
        let _ = stream.set_nodelay(true);
        let client = client.clone();
        let authority = authority.clone();
        let server = server.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let client = client.clone();
                let authority = authority.clone();
                async move { Ok::<_, hyper::Error>(forward(&client, &authority, req).await) }
            });
            let _ = server
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn forward(
    client: &Client<HttpConnector, Incoming>,
    authority: &str,
    req: Request<Incoming>,
) -> Response<Body> {
    let (mut parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_string();
    parts.uri = match Uri::builder()
        .scheme("http")
        .authority(authority)
        .path_and_query(path)
        .build()
    {
        Ok(uri) => uri,
        Err(_) => return error(StatusCode::BAD_REQUEST, "bad request target"),
    };
    parts.version = hyper::Version::HTTP_11;
    parts.headers.remove(HOST);
    strip_hop_by_hop(&mut parts.headers);
    match client.request(Request::from_parts(parts, body)).await {
        Ok(resp) => {
            let (mut parts, body) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Response::from_parts(parts, body.boxed())
        }
        Err(e) => error(StatusCode::BAD_GATEWAY, &format!("upstream: {e}")),
    }
}

fn error(status: StatusCode, message: &str) -> Response<Body> {
    let mut resp = Response::new(
        Full::new(Bytes::from(message.to_string()))
            .map_err(|never| match never {})
            .boxed(),
    );
    *resp.status_mut() = status;
    resp
}
