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

/// `secs` since the Unix epoch as RFC 3339 in UTC to the second (`2026-11-23T17:30:07Z`),
/// written into `buf` without allocating; `None` for years beyond 9999. For headers and
/// log lines written on every request, where a general formatter costs more than the
/// request's other work. Days to civil date by Hinnant's algorithm (eras of 400 years
/// from 0000-03-01).
pub fn rfc3339_seconds(secs: u64, buf: &mut [u8; 20]) -> Option<&[u8]> {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    if year > 9999 {
        return None;
    }
    let mut put = |at: usize, n: u64, width: usize| {
        let mut n = n;
        for i in (0..width).rev() {
            buf[at + i] = b'0' + (n % 10) as u8;
            n /= 10;
        }
    };
    put(0, year, 4);
    put(5, month, 2);
    put(8, day, 2);
    put(11, rem / 3600, 2);
    put(14, rem / 60 % 60, 2);
    put(17, rem % 60, 2);
    for (i, c) in [
        (4, b'-'),
        (7, b'-'),
        (10, b'T'),
        (13, b':'),
        (16, b':'),
        (19, b'Z'),
    ] {
        buf[i] = c;
    }
    Some(&buf[..])
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
