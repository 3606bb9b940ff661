//! Injected time, so layer logic is tested with a fake clock instead of sleeps.
//!
//! ```
//! use std::time::Duration;
//! use tollgate_core::clock::{Clock, ManualClock};
//!
//! let clock = ManualClock::new();
//! let t0 = clock.now();
//! clock.advance(Duration::from_secs(90));
//! assert_eq!(clock.now() - t0, Duration::from_secs(90));
//! ```

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

/// A source of monotonic and wall-clock time.
///
/// Monotonic time is a [`tokio::time::Instant`], so [`SystemClock`] follows
/// `tokio::time::pause()` in tests as well.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// Monotonic now, for durations and deadlines.
    fn now(&self) -> Instant;
    /// Wall-clock now, for timestamps in headers (`*-reset`) and ledgers.
    fn wall(&self) -> SystemTime;
}

/// The real clock (tokio's, so paused tokio time applies).
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn wall(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that only moves when told to. Clones share the same time.
#[derive(Clone, Debug)]
pub struct ManualClock {
    inner: Arc<ManualInner>,
}

#[derive(Debug)]
struct ManualInner {
    start: Instant,
    wall_start: SystemTime,
    offset_ns: AtomicU64,
}

impl ManualClock {
    /// A clock frozen at the moment of creation (wall time: now).
    pub fn new() -> Self {
        Self::at(SystemTime::now())
    }

    /// A clock frozen with wall time `wall`.
    pub fn at(wall: SystemTime) -> Self {
        ManualClock {
            inner: Arc::new(ManualInner {
                start: Instant::now(),
                wall_start: wall,
                offset_ns: AtomicU64::new(0),
            }),
        }
    }

    /// Move time forward by `by`.
    pub fn advance(&self, by: Duration) {
        let ns = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.inner.offset_ns.fetch_add(ns, Ordering::SeqCst);
    }

    fn offset(&self) -> Duration {
        Duration::from_nanos(self.inner.offset_ns.load(Ordering::SeqCst))
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.inner.start + self.offset()
    }

    fn wall(&self) -> SystemTime {
        self.inner.wall_start + self.offset()
    }
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now(&self) -> Instant {
        (**self).now()
    }

    fn wall(&self) -> SystemTime {
        (**self).wall()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_advanced_and_clones_share_time() {
        let clock = ManualClock::at(SystemTime::UNIX_EPOCH);
        let other = clock.clone();
        let t0 = clock.now();
        assert_eq!(clock.now(), t0);
        other.advance(Duration::from_millis(1500));
        assert_eq!(clock.now() - t0, Duration::from_millis(1500));
        assert_eq!(
            clock.wall(),
            SystemTime::UNIX_EPOCH + Duration::from_millis(1500)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn system_clock_follows_paused_tokio_time() {
        let t0 = SystemClock.now();
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(SystemClock.now() - t0, Duration::from_secs(5));
    }
}
