//! The `tollgate` binary's log format: tracing-subscriber's default ("full") format, with
//! the access line written without the `fmt` machinery.
//!
//! The access line is the one event logged for every request. Through the default
//! formatter it cost ~13k instructions (the timestamp alone goes through `write!` seven
//! times, and every field through `Debug`), as much as the request's rate limiting and
//! billing together. [`LogFormat`] writes that line byte for byte as the default would —
//! the timestamp's second cached per thread, integers through `itoa` — and hands every
//! other event (and the access line itself inside a span, e.g. `RUST_LOG=debug`, or on
//! a colour terminal) to the default formatter.

use std::cell::Cell;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{Format, Full, Writer};
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::access_log::ACCESS_TARGET;

/// Formats events as tracing-subscriber's default format does, the access line faster.
#[derive(Debug)]
pub(crate) struct LogFormat {
    default: Format<Full, Timestamp>,
    ansi: bool,
    timestamp: Timestamp,
}

impl LogFormat {
    /// The format for a writer with (`ansi`) or without colours.
    pub(crate) fn new(ansi: bool) -> LogFormat {
        LogFormat::with_clock(ansi, SystemTime::now)
    }

    fn with_clock(ansi: bool, now: fn() -> SystemTime) -> LogFormat {
        let timestamp = Timestamp { now };
        LogFormat {
            default: Format::default().with_timer(timestamp).with_ansi(ansi),
            ansi,
            timestamp,
        }
    }
}

impl<S, N> FormatEvent<S, N> for LogFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        if self.ansi || meta.target() != ACCESS_TARGET || ctx.event_scope().is_some() {
            return self.default.format_event(ctx, writer, event);
        }
        self.timestamp.format_time(&mut writer)?;
        // As tracing-subscriber pads levels: ` INFO`, ` WARN`, `ERROR`.
        writer.write_str(match *meta.level() {
            Level::TRACE => " TRACE ",
            Level::DEBUG => " DEBUG ",
            Level::INFO => "  INFO ",
            Level::WARN => "  WARN ",
            Level::ERROR => " ERROR ",
        })?;
        writer.write_str(meta.target())?;
        writer.write_str(": ")?;
        let mut fields = Fields {
            writer: &mut writer,
            first: true,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        writer.write_char('\n')
    }
}

/// RFC 3339 UTC with microseconds (`2026-11-24T05:01:02.123456Z`), as tracing-subscriber's
/// `SystemTime` timer writes it; the date and time of day are formatted once per second
/// per thread.
#[derive(Clone, Copy, Debug)]
struct Timestamp {
    now: fn() -> SystemTime,
}

thread_local! {
    /// The last second formatted on this thread, and its `YYYY-MM-DDTHH:MM:SS`.
    static SECOND: Cell<(u64, [u8; 19])> = const { Cell::new((u64::MAX, [0; 19])) };
}

impl FormatTime for Timestamp {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        let since = (self.now)().duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = since.as_secs();
        let (cached, mut prefix) = SECOND.get();
        if cached != secs {
            let mut buf = [0u8; 20];
            let Some(date) = tollgate_core::clock::rfc3339_seconds(secs, &mut buf) else {
                return w.write_str("<unknown time>");
            };
            prefix.copy_from_slice(&date[..19]);
            SECOND.set((secs, prefix));
        }
        // Only ASCII digits and separators were written.
        w.write_str(std::str::from_utf8(&prefix).map_err(|_| fmt::Error)?)?;
        let micros = since.subsec_micros();
        let mut frac = *b".000000Z";
        let mut n = micros;
        for digit in frac[1..7].iter_mut().rev() {
            *digit = b'0' + (n % 10) as u8;
            n /= 10;
        }
        w.write_str(std::str::from_utf8(&frac).map_err(|_| fmt::Error)?)
    }
}

/// Writes fields as tracing-subscriber's `DefaultFields` does: the message bare, then
/// ` name=value` with the value's `Debug` (strings quoted).
struct Fields<'a, 'w> {
    writer: &'a mut Writer<'w>,
    first: bool,
    result: fmt::Result,
}

impl Fields<'_, '_> {
    fn separate(&mut self) -> fmt::Result {
        if self.first {
            self.first = false;
            Ok(())
        } else {
            self.writer.write_char(' ')
        }
    }

    fn named(&mut self, field: &Field, value: &str) {
        if self.result.is_ok() {
            self.result = self.separate().and_then(|()| {
                self.writer.write_str(field.name())?;
                self.writer.write_char('=')?;
                self.writer.write_str(value)
            });
        }
    }
}

impl Visit for Fields<'_, '_> {
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.named(field, itoa::Buffer::new().format(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.named(field, itoa::Buffer::new().format(value));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.record_debug(field, &format_args!("{value}"));
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.result.is_err() {
            return;
        }
        self.result = self.separate().and_then(|()| {
            if field.name() == "message" {
                write!(self.writer, "{value:?}")
            } else {
                write!(self.writer, "{}={value:?}", field.name())
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use tracing::field::display;
    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().expect("not poisoned").extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;

        fn make_writer(&'a self) -> Captured {
            self.clone()
        }
    }

    fn fixed() -> SystemTime {
        UNIX_EPOCH + Duration::from_micros(1_795_000_000_000_042)
    }

    /// Everything the access log emits, through `format` (or the default formatter).
    fn lines(fast: bool) -> String {
        let out = Captured::default();
        let builder = tracing_subscriber::fmt()
            .with_writer(out.clone())
            .with_max_level(Level::DEBUG);
        let format = LogFormat::with_clock(false, fixed);
        let emit = || {
            let model = Some(display("claude-sonnet-4-6"));
            let none: Option<tracing::field::DisplayValue<&str>> = None;
            tracing::info!(target: ACCESS_TARGET, method = %"POST", path = %"/v1/messages",
                status = 200u16, latency_us = 412u64, model, route = none, key_id = -7i64,
                request_id = %"req_01", "request");
            tracing::warn!(target: ACCESS_TARGET, method = %"GET", status = 502u16,
                note = "quoted \"str\"", "request");
            tracing::info!(target: "tollgate::other", port = 8080u64, "listening");
            let span = tracing::debug_span!("request", method = %"POST");
            let _in = span.enter();
            tracing::info!(target: ACCESS_TARGET, status = 200u16, "request");
        };
        if fast {
            tracing::subscriber::with_default(builder.event_format(format).finish(), emit);
        } else {
            let default = Format::default()
                .with_timer(format.timestamp)
                .with_ansi(false);
            tracing::subscriber::with_default(builder.event_format(default).finish(), emit);
        }
        let bytes = out.0.lock().expect("not poisoned").clone();
        String::from_utf8(bytes).expect("utf-8")
    }

    #[test]
    fn access_lines_are_byte_for_byte_the_default_format() {
        let fast = lines(true);
        assert_eq!(fast, lines(false));
        assert!(
            fast.starts_with(
                "2026-11-18T11:06:40.000042Z  INFO tollgate::access: request method=POST \
                 path=/v1/messages status=200 latency_us=412 model=claude-sonnet-4-6 \
                 key_id=-7 request_id=req_01\n"
            ),
            "{fast}"
        );
        assert!(fast.contains("  WARN tollgate::access: request method=GET status=502 note=\"quoted \\\"str\\\"\"\n"), "{fast}");
        assert_eq!(fast.lines().count(), 4, "{fast}");
    }

    #[test]
    fn timestamps_match_the_default_timer_shape() {
        let out = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(out.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || tracing::info!("x"));
        let theirs = String::from_utf8(out.0.lock().expect("not poisoned").clone()).expect("utf-8");
        let mut ours = String::new();
        Timestamp {
            now: SystemTime::now,
        }
        .format_time(&mut Writer::new(&mut ours))
        .expect("formats");
        let theirs = theirs.split(' ').next().unwrap_or_default();
        assert_eq!(ours.len(), theirs.len(), "{ours} vs {theirs}");
        // Same date and minute, unless the test ran across a minute boundary.
        assert!(ours[..10] == theirs[..10] || ours[..16] != theirs[..16]);
        assert!(ours.ends_with('Z') && ours.as_bytes()[19] == b'.');
    }
}
