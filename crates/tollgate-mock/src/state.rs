//! State shared by every connection of one mock instance: counters, recording, scenarios.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderName, HeaderValue};
use tokio::sync::Notify;

use crate::script::{self, Script};
use crate::{MockOptions, RECORD_CAPACITY, RecordedRequest};

/// One mock instance's state, behind an `Arc`.
#[derive(Debug)]
pub(crate) struct Shared {
    /// `x-mock-*` headers applied when the request doesn't set them.
    pub(crate) defaults: Vec<(HeaderName, HeaderValue)>,
    /// Echoed in `x-mock-name` on every response.
    pub(crate) name: Option<HeaderValue>,
    record: bool,
    recorded: Mutex<VecDeque<RecordedRequest>>,
    requests: AtomicU64,
    cancelled: AtomicU64,
    cancelled_changed: Notify,
    scenarios: Mutex<HashMap<String, u64>>,
}

impl Shared {
    /// Checks `options` (header names, values, instance name) and builds the state.
    pub(crate) fn new(options: MockOptions) -> io::Result<Self> {
        let invalid = |msg: String| io::Error::new(io::ErrorKind::InvalidInput, msg);
        let mut defaults = Vec::with_capacity(options.defaults.len());
        for (name, value) in &options.defaults {
            let name = HeaderName::try_from(name.to_ascii_lowercase()).map_err(|_| {
                invalid(format!(
                    "default header name {name:?} is not a valid header name"
                ))
            })?;
            script::check_name(name.as_str()).map_err(invalid)?;
            let value = HeaderValue::try_from(value.as_str()).map_err(|_| {
                invalid(format!(
                    "default header {name}: {value:?} is not a valid header value"
                ))
            })?;
            defaults.push((name, value));
        }
        Script::parse(&http::HeaderMap::new(), &defaults)
            .map_err(|e| invalid(format!("invalid default header: {e}")))?;
        let name = options
            .name
            .map(|n| {
                HeaderValue::try_from(n.as_str())
                    .map_err(|_| invalid(format!("mock name {n:?} must be visible ASCII")))
            })
            .transpose()?;
        Ok(Shared {
            defaults,
            name,
            record: options.record,
            recorded: Mutex::new(VecDeque::new()),
            requests: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
            cancelled_changed: Notify::new(),
            scenarios: Mutex::new(HashMap::new()),
        })
    }

    pub(crate) fn count_request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn request_count(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Keeps a copy of the request if recording is on, dropping the oldest past capacity.
    pub(crate) fn record(&self, parts: &Parts, body: &Bytes) {
        if !self.record {
            return;
        }
        let request = RecordedRequest {
            method: parts.method.clone(),
            path_and_query: parts
                .uri
                .path_and_query()
                .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned()),
            headers: parts.headers.clone(),
            body: body.clone(),
        };
        let mut recorded = lock(&self.recorded);
        if recorded.len() >= RECORD_CAPACITY {
            recorded.pop_front();
        }
        recorded.push_back(request);
    }

    pub(crate) fn received(&self) -> Vec<RecordedRequest> {
        lock(&self.recorded).iter().cloned().collect()
    }

    pub(crate) fn clear(&self) {
        lock(&self.recorded).clear();
    }

    /// Counts one request of `scenario`; true while it is among the first `fail_times`.
    pub(crate) fn scenario_fails(&self, scenario: &str, fail_times: u64) -> bool {
        let mut scenarios = lock(&self.scenarios);
        let seen = scenarios.entry(scenario.to_owned()).or_insert(0);
        *seen = seen.saturating_add(1);
        *seen <= fail_times
    }

    pub(crate) fn reset_scenarios(&self) {
        lock(&self.scenarios).clear();
    }

    pub(crate) fn stream_cancelled(&self) {
        self.cancelled.fetch_add(1, Ordering::Relaxed);
        self.cancelled_changed.notify_waiters();
    }

    pub(crate) fn cancelled_streams(&self) -> u64 {
        self.cancelled.load(Ordering::Relaxed)
    }

    /// Resolves once at least `n` streams have been cancelled.
    pub(crate) async fn wait_cancelled_streams(&self, n: u64) {
        loop {
            let changed = self.cancelled_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.cancelled_streams() >= n {
                return;
            }
            changed.await;
        }
    }
}

/// Locks `m`, ignoring poisoning: every critical section leaves the data consistent.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
