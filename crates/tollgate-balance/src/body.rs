use tollgate_core::usage::{MeteredBody, OnUsage};

/// The callback an observed body settles with.
pub(crate) type Reporter = OnUsage;

/// Response body of [`BalanceService`](crate::BalanceService): the inner body frame by
/// frame (never buffered), observed for usage when the request holds a reservation, or
/// the refusal's bytes. The same body type as the other metering layers use.
pub type BalanceBody<B> = MeteredBody<B>;
