use tollgate_core::usage::{MeteredBody, OnUsage as CoreOnUsage};

/// What the body calls once it is over: charge the output it reported.
pub(crate) type OnUsage = CoreOnUsage;

/// The response body of [`RateLimit`](super::RateLimit): the inner body untouched, the
/// inner body observed for its output tokens (successful messages responses when output
/// is limited), or a rejection's envelope. Frames pass through as they come; nothing is
/// buffered. The same body type as the other metering layers use.
pub type RateLimitBody<B> = MeteredBody<B>;
