//! Transport failures: the upstream could not be reached, reset the connection, or did
//! not answer in time. The only things layers return as `Err`.

use std::error::Error as StdError;
use std::fmt;
use std::io;

use crate::BoxError;
use crate::error::ErrorKind;

/// What went wrong on the way to the upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TransportErrorKind {
    /// No connection could be made (refused, DNS, TLS handshake).
    Connect,
    /// No response head arrived in time.
    Timeout,
    /// The connection broke before a response head arrived.
    Reset,
    /// Anything else.
    Other,
}

impl TransportErrorKind {
    /// The table row a client sees: 504 for a timeout, 502 otherwise.
    pub fn error_kind(self) -> ErrorKind {
        match self {
            TransportErrorKind::Timeout => ErrorKind::Timeout,
            _ => ErrorKind::BadGateway,
        }
    }

    /// Classify any error by walking its `source()` chain: a [`TransportError`] says
    /// what it is; timeouts from tower and tokio are `Timeout`; I/O errors by their kind.
    pub fn of(err: &(dyn StdError + 'static)) -> TransportErrorKind {
        let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
        while let Some(e) = cur {
            if let Some(t) = e.downcast_ref::<TransportError>() {
                return t.kind;
            }
            if e.is::<tower::timeout::error::Elapsed>() || e.is::<tokio::time::error::Elapsed>() {
                return TransportErrorKind::Timeout;
            }
            if let Some(io) = e.downcast_ref::<io::Error>() {
                return match io.kind() {
                    io::ErrorKind::TimedOut => TransportErrorKind::Timeout,
                    io::ErrorKind::ConnectionRefused
                    | io::ErrorKind::AddrNotAvailable
                    | io::ErrorKind::NotFound => TransportErrorKind::Connect,
                    io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::UnexpectedEof => TransportErrorKind::Reset,
                    _ => TransportErrorKind::Other,
                };
            }
            cur = e.source();
        }
        TransportErrorKind::Other
    }
}

/// A classified transport failure. Upstream clients return it so that the passthrough
/// layer can answer 502 or 504 with a message that says what happened.
#[derive(Debug)]
pub struct TransportError {
    kind: TransportErrorKind,
    source: BoxError,
}

impl TransportError {
    /// Wrap `source` as a failure of `kind`.
    pub fn new(kind: TransportErrorKind, source: impl Into<BoxError>) -> Self {
        TransportError {
            kind,
            source: source.into(),
        }
    }

    /// Wrap `source`, classifying it from its `source()` chain.
    pub fn classify(source: impl Into<BoxError>) -> Self {
        let source = source.into();
        let kind = TransportErrorKind::of(source.as_ref());
        TransportError { kind, source }
    }

    /// What went wrong.
    pub fn kind(&self) -> TransportErrorKind {
        self.kind
    }
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            TransportErrorKind::Connect => "could not connect to the upstream",
            TransportErrorKind::Timeout => "the upstream did not answer in time",
            TransportErrorKind::Reset => "the upstream connection broke before a response",
            TransportErrorKind::Other => "the upstream request failed",
        };
        write!(f, "{what}: {}", self.source)
    }
}

impl StdError for TransportError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(self.source.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_are_classified_through_the_source_chain() {
        #[derive(Debug)]
        struct Wrapper(io::Error);
        impl fmt::Display for Wrapper {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("client error")
            }
        }
        impl StdError for Wrapper {
            fn source(&self) -> Option<&(dyn StdError + 'static)> {
                Some(&self.0)
            }
        }
        let refused = Wrapper(io::Error::from(io::ErrorKind::ConnectionRefused));
        assert_eq!(
            TransportErrorKind::of(&refused),
            TransportErrorKind::Connect
        );
        let reset = Wrapper(io::Error::from(io::ErrorKind::ConnectionReset));
        assert_eq!(TransportErrorKind::of(&reset), TransportErrorKind::Reset);
    }

    #[test]
    fn explicit_kind_wins_and_maps_to_the_table() {
        let e = TransportError::new(TransportErrorKind::Timeout, "slow");
        assert_eq!(TransportErrorKind::of(&e), TransportErrorKind::Timeout);
        assert_eq!(e.kind().error_kind().class().status, 504);
        assert_eq!(TransportErrorKind::Connect.error_kind().class().status, 502);
    }

    #[test]
    fn tower_timeout_is_a_timeout() {
        let e = TransportError::classify(tower::timeout::error::Elapsed::new());
        assert_eq!(e.kind(), TransportErrorKind::Timeout);
    }
}
