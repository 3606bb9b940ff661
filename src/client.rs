//! Client side: the layers around an HTTP client that calls the API directly.
//!
//! The stack, outermost first:
//!
//! ```text
//! ClassifyLayer   error responses → ClientError::Api(ApiError), transport failures → ClientError::Transport
//! FallbackLayer   routes per model, in order; each attempt carries a TargetRoute
//! RetryLayer      429/5xx/529/connection failures: backoff, retry-after, budget
//! PaceLayer       wait for rate-limit capacity (configured or learned from headers)
//! BaseUrlLayer    TargetRoute → that route's base URL (this module)
//! SetApiKeyLayer  the API key, marked sensitive (here one key serves every route)
//! client          hyper-util's legacy Client, or reqwest behind Reqwest (feature `reqwest`)
//! ```
//!
//! [`stack`] (features `passthrough`, `fallback`, `ratelimit`; all on by default) builds
//! that whole stack from one [`ClientConfig`], with a key per route; the layers also
//! stack one by one with [`ServiceBuilderExt`](crate::ServiceBuilderExt), as below.
//!
//! Retry and fallback replay a request from its
//! [`RequestMeta`](tollgate_core::RequestMeta); on the server
//! `RequestMetaLayer` attaches it, on the client [`replayable`] does.
//!
//! # Example
//!
//! A hyper-util client, two routes, typed errors:
//!
//! ```
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use hyper_util::client::legacy::Client;
//! use hyper_util::rt::TokioExecutor;
//! use tollgate::client::{BaseUrlLayer, replayable};
//! use tollgate::fallback::{FallbackConfig, ModelRoutes};
//! use tollgate::mock::{MockOptions, MockServer};
//! use tollgate::prelude::*;
//! use tollgate::retry::RetryConfig;
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let down = MockServer::start(MockOptions::new().default_header("x-mock-status", "529")).await?;
//! let up = MockServer::start(MockOptions::new()).await?;
//!
//! let mut routes = FallbackConfig::default();
//! routes.models.insert("*".into(), ModelRoutes { routes: vec!["a".into(), "b".into()], ..Default::default() });
//! let client = ServiceBuilder::new()
//!     .classify()
//!     .fallback(routes)
//!     .api_retry(RetryConfig::client())
//!     .layer(BaseUrlLayer::new([("a", down.url()), ("b", up.url())])?)
//!     .service(Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>());
//!
//! let body = r#"{"model":"claude-sonnet-4-6","max_tokens":64,"messages":[{"role":"user","content":"Hi"}]}"#;
//! let request = replayable(http::Request::post("/v1/messages").body(Bytes::from(body))?)?;
//! let res = client.oneshot(request).await?;
//! assert_eq!(res.headers()["x-tollgate-route"], "b");
//! # Ok(()) }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderName, HeaderValue, Request, Uri};
use tollgate_core::request_meta::parse_body;
use tollgate_core::{BoxError, Endpoint, GatewayError, TargetRoute};
use tower::{Layer, Service};

#[cfg(all(feature = "passthrough", feature = "fallback", feature = "ratelimit"))]
mod stack;
#[cfg(all(feature = "passthrough", feature = "fallback", feature = "ratelimit"))]
pub use self::stack::{ClientConfig, ClientRoute, ClientStack, ConfigError, KeyHeader, stack};

// ===== replayable =====

/// Describe an API request the way `RequestMetaLayer` does on a server: parse its body
/// once and attach the [`RequestMeta`](tollgate_core::RequestMeta), so that retry and
/// fallback can send it again and route it by model. The body becomes `B` (e.g.
/// `Full<Bytes>`).
///
/// Requests to paths without a messages body (`GET /v1/models`) are returned unchanged:
/// they are sent once.
///
/// # Errors
///
/// The [`GatewayError`] a gateway would answer with (400) when the body is not a valid
/// request for its endpoint: not JSON, `model` or `max_tokens` missing, …
pub fn replayable<B: From<Bytes>>(request: Request<Bytes>) -> Result<Request<B>, GatewayError> {
    let (mut parts, body) = request.into_parts();
    if let Some(endpoint) = Endpoint::from_path(parts.uri.path()) {
        let meta = parse_body(endpoint, body.clone())?;
        parts.extensions.insert(meta);
    }
    Ok(Request::from_parts(parts, B::from(body)))
}

// ===== BaseUrlLayer =====

/// Sends each request to the base URL of the route its
/// [`TargetRoute`] names (set by `FallbackLayer` per
/// attempt); a request without one goes to the first route. The request's path and query
/// are kept and appended to the base URL's path.
///
/// This is the client side's counterpart of the gateway's upstream client, without the
/// key injection: put a `SetApiKeyLayer` below it, or one client per route.
///
/// ```
/// use tollgate::client::BaseUrlLayer;
///
/// let urls = BaseUrlLayer::new([("primary", "https://api.anthropic.com"), ("eu", "https://proxy.example/anthropic")])?;
/// assert_eq!(urls.routes().collect::<Vec<_>>(), ["primary", "eu"]);
/// # Ok::<_, String>(())
/// ```
#[derive(Clone)]
pub struct BaseUrlLayer {
    routes: Arc<[BaseUrl]>,
}

#[derive(Debug)]
struct BaseUrl {
    name: Arc<str>,
    scheme: Scheme,
    authority: Authority,
    /// Without a trailing slash; empty for a bare host.
    path: String,
    /// The route's own credential header (marked sensitive), if it has one.
    credential: Option<(HeaderName, HeaderValue)>,
}

impl BaseUrlLayer {
    /// Routes by name and base URL (`http://127.0.0.1:9000`, `https://host/prefix`), in
    /// order; the first is the default.
    ///
    /// # Errors
    ///
    /// No route, a URL without scheme or host, a query in a base URL, or a name used
    /// twice; the message names the route.
    pub fn new<I, N, U>(routes: I) -> Result<BaseUrlLayer, String>
    where
        I: IntoIterator<Item = (N, U)>,
        N: AsRef<str>,
        U: AsRef<str>,
    {
        BaseUrlLayer::with_credentials(routes.into_iter().map(|(name, url)| (name, url, None)))
    }

    /// Like [`new`](BaseUrlLayer::new), with a credential header per route (set in place
    /// of any `x-api-key` / `Authorization` on the request), for routes that take
    /// different keys.
    pub(crate) fn with_credentials<I, N, U>(routes: I) -> Result<BaseUrlLayer, String>
    where
        I: IntoIterator<Item = (N, U, Option<(HeaderName, HeaderValue)>)>,
        N: AsRef<str>,
        U: AsRef<str>,
    {
        let mut parsed: Vec<BaseUrl> = Vec::new();
        for (name, url, credential) in routes {
            let (name, url) = (name.as_ref(), url.as_ref());
            if parsed.iter().any(|r| &*r.name == name) {
                return Err(format!(
                    "route {name:?} is listed twice; give each route one base URL"
                ));
            }
            let uri: Uri = url
                .parse()
                .map_err(|e| format!("route {name:?}: base URL {url:?}: {e}"))?;
            let parts = uri.into_parts();
            let (Some(scheme), Some(authority)) = (parts.scheme, parts.authority) else {
                return Err(format!(
                    "route {name:?}: base URL {url:?} needs a scheme and a host, e.g. https://api.anthropic.com"
                ));
            };
            if parts
                .path_and_query
                .as_ref()
                .is_some_and(|p| p.query().is_some())
            {
                return Err(format!(
                    "route {name:?}: base URL {url:?} must not have a query"
                ));
            }
            let path = parts
                .path_and_query
                .map(|p| p.path().trim_end_matches('/').to_owned())
                .unwrap_or_default();
            parsed.push(BaseUrl {
                name: Arc::from(name),
                scheme,
                authority,
                path,
                credential,
            });
        }
        if parsed.is_empty() {
            return Err("no routes: give at least one (name, base URL)".into());
        }
        Ok(BaseUrlLayer {
            routes: parsed.into(),
        })
    }

    /// The route names, in order.
    pub fn routes(&self) -> impl Iterator<Item = &str> {
        self.routes.iter().map(|r| &*r.name)
    }
}

impl fmt::Debug for BaseUrlLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BaseUrlLayer")
            .field("routes", &self.routes().collect::<Vec<_>>())
            .finish()
    }
}

impl<S> Layer<S> for BaseUrlLayer {
    type Service = BaseUrlService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BaseUrlService {
            inner,
            routes: self.routes.clone(),
        }
    }
}

// ===== BaseUrlService =====

/// The service made by [`BaseUrlLayer`].
///
/// # Errors
///
/// A request whose `TargetRoute` names no configured route fails without being sent
/// (the message lists the routes); otherwise the inner service's error, boxed.
#[derive(Clone)]
pub struct BaseUrlService<S> {
    inner: S,
    routes: Arc<[BaseUrl]>,
}

impl<S: fmt::Debug> fmt::Debug for BaseUrlService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BaseUrlService")
            .field("inner", &self.inner)
            .field(
                "routes",
                &self.routes.iter().map(|r| &r.name).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl<S> BaseUrlService<S> {
    fn route(&self, target: Option<&TargetRoute>) -> Result<&BaseUrl, BoxError> {
        let route = match target {
            Some(TargetRoute(name)) => self.routes.iter().find(|r| r.name == *name).ok_or_else(|| {
                let known: Vec<&str> = self.routes.iter().map(|r| &*r.name).collect();
                format!(
                    "no base URL for route {name:?}; BaseUrlLayer knows: {}. Give the fallback config the same route names",
                    known.join(", ")
                )
            })?,
            None => &self.routes[0],
        };
        Ok(route)
    }

    fn uri(route: &BaseUrl, original: &Uri) -> Result<Uri, BoxError> {
        let pq = original.path_and_query().map_or("/", PathAndQuery::as_str);
        Ok(Uri::builder()
            .scheme(route.scheme.clone())
            .authority(route.authority.clone())
            .path_and_query(format!("{}{pq}", route.path))
            .build()?)
    }
}

impl<S, B> Service<Request<B>> for BaseUrlService<S>
where
    S: Service<Request<B>> + Clone,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BaseUrlFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let target = self.route(req.extensions().get::<TargetRoute>());
        match target.and_then(|route| Ok((Self::uri(route, req.uri())?, route.credential.clone())))
        {
            Ok((uri, credential)) => {
                *req.uri_mut() = uri;
                if let Some((name, value)) = credential {
                    req.headers_mut().remove(http::header::AUTHORIZATION);
                    req.headers_mut().remove(tollgate_core::headers::X_API_KEY);
                    req.headers_mut().insert(name, value);
                }
                // Use the service that was made ready; leave a fresh clone in its place.
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                BaseUrlFuture::call(inner.call(req))
            }
            Err(err) => BaseUrlFuture::refused(err),
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`BaseUrlService`].
    pub struct BaseUrlFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State<F> {
        Call { #[pin] fut: F },
        Refused { err: Option<BoxError> },
    }
}

impl<F> BaseUrlFuture<F> {
    fn call(fut: F) -> Self {
        BaseUrlFuture {
            state: State::Call { fut },
        }
    }

    fn refused(err: BoxError) -> Self {
        BaseUrlFuture {
            state: State::Refused { err: Some(err) },
        }
    }
}

impl<F, T, E> Future for BaseUrlFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Call { fut } => fut.poll(cx).map_err(Into::into),
            StateProj::Refused { err } => Poll::Ready(Err(err
                .take()
                .unwrap_or_else(|| "BaseUrlFuture polled after completion".into()))),
        }
    }
}

// ===== Reqwest =====

#[cfg(feature = "reqwest")]
pub use self::reqwest_adapter::{Reqwest, ReqwestFuture};

#[cfg(feature = "reqwest")]
mod reqwest_adapter {
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use http::{Request, Response};
    use tower::Service;

    /// A reqwest [`Client`](reqwest::Client) as a `tower::Service` over `http` types, so
    /// the Tollgate layers stack on it (feature `reqwest`).
    ///
    /// Requests are `http::Request<B>` with any body reqwest takes (`reqwest::Body`,
    /// `Bytes`, `String`, `Vec<u8>`); with the retry or fallback layer above, use
    /// `reqwest::Body` (they rebuild each attempt's body from `Bytes`). Responses are
    /// `http::Response<reqwest::Body>`, an `http_body::Body` that streams frame by frame.
    ///
    /// The facade builds reqwest without TLS; to call `https` upstreams, depend on
    /// reqwest yourself with `features = ["rustls"]` (or `native-tls`).
    ///
    /// ```
    /// use tollgate::client::Reqwest;
    /// use tower::ServiceBuilder;
    /// use tollgate::prelude::*;
    ///
    /// let client = ServiceBuilder::new()
    ///     .classify()
    ///     .service(Reqwest::new(reqwest::Client::new()));
    /// # let _ = client;
    /// ```
    ///
    /// # Errors
    ///
    /// [`reqwest::Error`] when the request cannot be built (a relative URI: put a
    /// [`BaseUrlLayer`](super::BaseUrlLayer) above it) or no response came.
    #[derive(Clone, Debug, Default)]
    pub struct Reqwest {
        client: reqwest::Client,
    }

    impl Reqwest {
        /// Wrap `client`; its settings (timeouts, pool, proxy, TLS) apply to every request.
        pub fn new(client: reqwest::Client) -> Reqwest {
            Reqwest { client }
        }

        /// The wrapped client.
        pub fn get_ref(&self) -> &reqwest::Client {
            &self.client
        }
    }

    impl From<reqwest::Client> for Reqwest {
        fn from(client: reqwest::Client) -> Reqwest {
            Reqwest::new(client)
        }
    }

    /// The response future of [`Reqwest`] (reqwest's own future is boxed already).
    pub type ReqwestFuture =
        Pin<Box<dyn Future<Output = Result<Response<reqwest::Body>, reqwest::Error>> + Send>>;

    impl<B> Service<Request<B>> for Reqwest
    where
        B: Into<reqwest::Body>,
    {
        type Response = Response<reqwest::Body>;
        type Error = reqwest::Error;
        type Future = ReqwestFuture;

        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), reqwest::Error>> {
            // reqwest's client is always ready; it queues per host internally.
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, req: Request<B>) -> ReqwestFuture {
            let req = reqwest::Request::try_from(req);
            let client = self.client.clone();
            Box::pin(async move {
                let res = client.execute(req?).await?;
                Ok(Response::from(res))
            })
        }
    }
}
