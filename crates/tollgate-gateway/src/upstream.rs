//! The innermost service: send the request to the upstream route that serves its model.
//!
//! One pooled hyper-util client (rustls for `https`, plain TCP for loopback `http`) is
//! shared by every route. Per request it picks the route, rewrites the URI, removes the
//! client's credentials and headers that identify the client to the upstream account,
//! injects the route's key (marked sensitive so it is never logged), and returns the
//! upstream's response with its body streaming straight through.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use http::header::{AUTHORIZATION, HOST};
use http::uri::PathAndQuery;
use http::{HeaderName, HeaderValue, Request, Response, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tollgate_core::headers::{X_API_KEY, strip_hop_by_hop};
use tollgate_core::{
    Dialect, ErrorKind, GatewayError, RenderOptions, RequestMeta, Served, TargetRoute,
    TransportError, TransportErrorKind,
};
use tower::Service;

use crate::config::{UpstreamAuth, UpstreamConfig};
use crate::metrics::Metrics;

/// Request headers that must not reach the upstream: the client's credentials, and
/// identifiers of the client's own Anthropic workspace that mean nothing to the
/// gateway's upstream account.
const CLIENT_ONLY: [HeaderName; 5] = [
    X_API_KEY,
    AUTHORIZATION,
    HeaderName::from_static("anthropic-workspace-id"),
    HeaderName::from_static("anthropic-user-profile-id"),
    http::header::COOKIE,
];

/// One resolved route.
#[derive(Debug)]
pub(crate) struct Route {
    pub(crate) name: Arc<str>,
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    base_path: String,
    auth: (HeaderName, HeaderValue),
    models: Vec<String>,
    response_timeout: Duration,
    /// Each route has its own pooled client, so that its connect timeout is its own.
    client: HttpClient,
}

impl Route {
    fn from_config(cfg: &UpstreamConfig) -> Result<Route, String> {
        let uri: Uri = cfg
            .base_url
            .parse()
            .map_err(|e| format!("upstream {}: base_url: {e}", cfg.name))?;
        let parts = uri.into_parts();
        let key = cfg
            .resolve_key()
            .ok_or_else(|| format!("upstream {}: no key", cfg.name))?;
        let mut value = match cfg.auth {
            UpstreamAuth::XApiKey => HeaderValue::from_str(&key),
            UpstreamAuth::Bearer => HeaderValue::from_str(&format!("Bearer {key}")),
        }
        .map_err(|_| format!("upstream {}: the key is not a valid header value", cfg.name))?;
        value.set_sensitive(true);
        let name = match cfg.auth {
            UpstreamAuth::XApiKey => X_API_KEY,
            UpstreamAuth::Bearer => AUTHORIZATION,
        };
        Ok(Route {
            name: Arc::from(cfg.name.as_str()),
            scheme: parts.scheme.unwrap_or(http::uri::Scheme::HTTPS),
            authority: parts
                .authority
                .ok_or_else(|| format!("upstream {}: base_url has no host", cfg.name))?,
            base_path: parts
                .path_and_query
                .map(|p| p.path().trim_end_matches('/').to_string())
                .unwrap_or_default(),
            auth: (name, value),
            models: cfg.models.clone(),
            response_timeout: Duration::from_millis(cfg.response_timeout_ms),
            client: http_client(Duration::from_millis(cfg.connect_timeout_ms))?,
        })
    }

    fn serves(&self, model: &str) -> bool {
        self.models.iter().any(|m| m == "*" || m == model)
    }

    fn uri(&self, path_and_query: Option<&PathAndQuery>) -> Result<Uri, http::Error> {
        let pq = path_and_query.map_or("/", PathAndQuery::as_str);
        let full = if self.base_path.is_empty() {
            pq.to_string()
        } else {
            format!("{}{pq}", self.base_path)
        };
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(full)
            .build()
    }
}

type HttpClient = Client<HttpsConnector<HttpConnector>, Body>;

/// A pooled client: rustls (ring, webpki roots) for https, plain TCP for http, HTTP/2 by ALPN.
fn http_client(connect_timeout: Duration) -> Result<HttpClient, String> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        // Without a timer the idle timeout is only checked when a connection is reused:
        // after a burst, up to 256 idle connections (and their buffers) stayed forever.
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(256)
        // hyper grows a connection's read buffer while reads fill it (up to ~400 KiB) and
        // keeps it while the connection lives: after a burst of streams, every pooled
        // connection held ~170 KiB. A fixed 16 KiB read is plenty for a relay.
        .http1_read_buf_exact_size(16 * 1024)
        .build(https))
}

/// The relay to the configured upstreams.
#[derive(Clone)]
pub struct Upstreams {
    routes: Arc<[Route]>,
    metrics: Metrics,
}

impl std::fmt::Debug for Upstreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstreams")
            .field(
                "routes",
                &self.routes.iter().map(|r| &r.name).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Upstreams {
    /// Build the routes and the shared client.
    ///
    /// # Errors
    ///
    /// A description of the route that cannot be built (run [`crate::Config::validate`]
    /// first for file/key/reason errors).
    pub fn new(configs: &[UpstreamConfig], metrics: Metrics) -> Result<Upstreams, String> {
        let routes = configs
            .iter()
            .map(Route::from_config)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Upstreams {
            routes: routes.into(),
            metrics,
        })
    }

    fn route_for(&self, model: Option<&str>) -> Option<&Route> {
        match model {
            Some(model) => self.routes.iter().find(|r| r.serves(model)),
            // Requests without a model (GET /v1/models) go to the first catch-all route,
            // else the first route.
            None => self
                .routes
                .iter()
                .find(|r| r.serves("*"))
                .or_else(|| self.routes.first()),
        }
    }

    fn no_route(&self, model: &str, dialect: Dialect) -> Response<Body> {
        let served: Vec<&str> = self
            .routes
            .iter()
            .flat_map(|r| r.models.iter().map(String::as_str))
            .collect();
        GatewayError::new(
            ErrorKind::NotFound,
            format!(
                "model {model:?} is not served by this gateway; use one of: {}",
                served.join(", ")
            ),
        )
        .with_openai_code("model_not_found")
        .to_response(dialect, &RenderOptions::default())
    }
}

/// The upstream call: a boxed future (hyper-util's own future is boxed already).
pub type UpstreamFuture =
    Pin<Box<dyn Future<Output = Result<Response<Body>, TransportError>> + Send>>;

impl Service<Request<Body>> for Upstreams {
    type Response = Response<Body>;
    type Error = TransportError;
    type Future = UpstreamFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // The pooled client is always ready; it queues internally per host.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let (mut parts, body) = req.into_parts();
        let meta = parts.extensions.remove::<RequestMeta>();
        let model = meta.as_ref().map(|m| m.model.as_str());
        let dialect = meta
            .as_ref()
            .map_or_else(|| Dialect::from_path(parts.uri.path()), |m| m.dialect);
        let target = parts.extensions.remove::<TargetRoute>();
        let route = match &target {
            Some(TargetRoute(name)) => self.routes.iter().find(|r| r.name == *name),
            None => self.route_for(model),
        };
        let Some(route) = route else {
            let res = self.no_route(model.unwrap_or_default(), dialect);
            return Box::pin(async move { Ok(res) });
        };
        let uri = match route.uri(parts.uri.path_and_query()) {
            Ok(uri) => uri,
            Err(e) => {
                let res = GatewayError::new(
                    ErrorKind::InvalidRequest,
                    format!("the request path cannot be relayed: {e}"),
                )
                .to_response(dialect, &RenderOptions::default());
                return Box::pin(async move { Ok(res) });
            }
        };
        // Replay the bytes RequestMetaLayer kept; stream anything else through.
        let body = match &meta {
            Some(m) => Body::from(m.body.clone()),
            None => body,
        };
        parts.uri = uri;
        strip_hop_by_hop(&mut parts.headers);
        parts.headers.remove(HOST);
        for name in CLIENT_ONLY {
            parts.headers.remove(name);
        }
        if meta.is_some() {
            parts.headers.remove(http::header::CONTENT_LENGTH);
        }
        parts
            .headers
            .insert(route.auth.0.clone(), route.auth.1.clone());
        parts.version = http::Version::HTTP_11;

        let served = Served {
            route: route.name.clone(),
            model: Arc::from(model.unwrap_or_default()),
            attempts: 1,
        };
        let timeout = route.response_timeout;
        let fut = route.client.request(Request::from_parts(parts, body));
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let started = Instant::now();
            let result = tokio::time::timeout(timeout, fut).await;
            metrics.observe_upstream(&served.route, started.elapsed());
            match result {
                Ok(Ok(res)) => {
                    let mut res = res.map(Body::new);
                    res.extensions_mut().insert(served);
                    Ok(res)
                }
                Ok(Err(e)) => {
                    let kind = if e.is_connect() {
                        TransportErrorKind::Connect
                    } else {
                        TransportErrorKind::of(&e)
                    };
                    Err(TransportError::new(kind, e))
                }
                Err(_) => Err(TransportError::new(
                    TransportErrorKind::Timeout,
                    format!(
                        "no response head within {} ms from upstream {} (its response_timeout_ms)",
                        timeout.as_millis(),
                        served.route
                    ),
                )),
            }
        })
    }
}
