//! Where the `tollgate` binary's logs go: stderr, with the access log batched.
//!
//! One `write` system call per request for its access line cost about as much CPU as
//! formatting it (a `perf`/CPU-time comparison with `RUST_LOG=warn`, docs/BENCHMARKS.md).
//! [`LogWriter`] appends access lines ([`ACCESS_TARGET`] at `info`) to a shared buffer
//! that a background thread writes out every [`FLUSH_EVERY`] (and the logging thread
//! itself once it holds [`FLUSH_BYTES`]); every other event (start, warnings, errors, a
//! 5xx access line) is written at once, as before. An access line may therefore appear
//! up to [`FLUSH_EVERY`] after a warning that happened later; timestamps tell the real
//! order. [`LogGuard`] writes what is left when dropped (at exit).

use std::io::{self, Write};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::writer::EitherWriter;

use crate::access_log::ACCESS_TARGET;

/// How often buffered access lines are written out.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// Buffered access lines are written out by the logging thread once they reach this size.
pub const FLUSH_BYTES: usize = 64 * 1024;

/// A [`MakeWriter`] for the fmt subscriber: access lines batched, the rest direct.
#[derive(Clone, Debug)]
pub struct LogWriter {
    buffer: Arc<Mutex<Vec<u8>>>,
}

/// Flushes the buffered access lines when dropped; keep it alive while logging.
#[derive(Debug)]
pub struct LogGuard {
    buffer: Arc<Mutex<Vec<u8>>>,
}

impl LogWriter {
    /// A writer to stderr and the background thread that flushes its buffer.
    pub fn stderr() -> (LogWriter, LogGuard) {
        let buffer = Arc::new(Mutex::new(Vec::with_capacity(FLUSH_BYTES)));
        let weak = Arc::downgrade(&buffer);
        // Ends by itself once the writer and the guard are gone.
        let _ = std::thread::Builder::new()
            .name("tollgate-log".into())
            .spawn(move || {
                while let Some(buffer) = weak.upgrade() {
                    flush(&buffer);
                    drop(buffer);
                    std::thread::sleep(FLUSH_EVERY);
                }
            });
        (
            LogWriter {
                buffer: buffer.clone(),
            },
            LogGuard { buffer },
        )
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        flush(&self.buffer);
    }
}

fn lock(buffer: &Mutex<Vec<u8>>) -> MutexGuard<'_, Vec<u8>> {
    // A panic while holding the lock leaves at worst a partial line: keep logging.
    buffer.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Write out and empty the buffer (the lock is not held during the write).
fn flush(buffer: &Mutex<Vec<u8>>) {
    let pending = {
        let mut buf = lock(buffer);
        if buf.is_empty() {
            return;
        }
        std::mem::replace(&mut *buf, Vec::with_capacity(FLUSH_BYTES))
    };
    let _ = io::stderr().lock().write_all(&pending);
}

/// One access line being written into the shared buffer.
#[derive(Debug)]
pub struct Buffered<'a> {
    buffer: &'a Mutex<Vec<u8>>,
}

impl Write for Buffered<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let full = {
            let mut buf = lock(self.buffer);
            buf.extend_from_slice(bytes);
            buf.len() >= FLUSH_BYTES
        };
        if full {
            flush(self.buffer);
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Access lines at `info` are batched; everything else is written at once.
fn batched(target: &str, level: &Level) -> bool {
    target == ACCESS_TARGET && *level == Level::INFO
}

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = EitherWriter<Buffered<'a>, io::Stderr>;

    fn make_writer(&'a self) -> Self::Writer {
        EitherWriter::B(io::stderr())
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        if batched(meta.target(), meta.level()) {
            EitherWriter::A(Buffered {
                buffer: &self.buffer,
            })
        } else {
            EitherWriter::B(io::stderr())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_info_access_lines_are_batched() {
        assert!(batched(ACCESS_TARGET, &Level::INFO));
        assert!(
            !batched(ACCESS_TARGET, &Level::WARN),
            "5xx lines go out at once"
        );
        assert!(!batched("tollgate_gateway::cli", &Level::INFO));
        assert!(!batched("tollgate_balance::settle", &Level::ERROR));
    }

    #[test]
    fn buffered_lines_are_written_out_when_the_guard_drops() {
        let (writer, guard) = LogWriter::stderr();
        Buffered {
            buffer: &writer.buffer,
        }
        .write_all(b"tollgate log_writer test line\n")
        .expect("write");
        drop(guard);
        assert!(lock(&writer.buffer).is_empty());
    }
}
