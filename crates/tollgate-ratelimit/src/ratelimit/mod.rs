//! The server-side middleware: [`RateLimitLayer`] → [`RateLimit`] → [`ResponseFuture`],
//! with [`RateLimitBody`] as the response body.

mod body;
mod future;
mod layer;
mod service;

pub use self::body::RateLimitBody;
pub use self::future::ResponseFuture;
pub use self::layer::RateLimitLayer;
pub use self::service::RateLimit;

#[cfg(test)]
mod tests;
