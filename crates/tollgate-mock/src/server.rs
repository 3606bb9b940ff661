//! The accept loop: HTTP/1.1 keep-alive or h2c per connection, graceful shutdown.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::handler;
use crate::state::Shared;

/// How long a graceful shutdown waits for in-flight requests before cutting them off.
const GRACE: Duration = Duration::from_secs(5);

/// Pause after an accept error caused by resource exhaustion (e.g. too many open files).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(20);

/// Serves `listener` until `shutdown` resolves, then drains connections for up to [`GRACE`].
///
/// Connection tasks live in a `JoinSet`, so dropping this future (as `MockServer`'s drop
/// does by aborting its task) closes every connection at once.
pub(crate) async fn run(
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let builder = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);

    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    // Best effort: without it SSE events wait for Nagle.
                    let _ = stream.set_nodelay(true);
                    let shared = Arc::clone(&shared);
                    let service = service_fn(move |req| handler::handle(Arc::clone(&shared), req));
                    let connection = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .into_owned();
                    let connection = graceful.watch(connection);
                    connections.spawn(async move {
                        // A connection error (client reset, bad HTTP) only ends that connection.
                        let _ = connection.await;
                    });
                }
                Err(e) if is_transient(&e) => {}
                Err(e) if is_exhaustion(&e) => tokio::time::sleep(ACCEPT_BACKOFF).await,
                Err(e) => return Err(e),
            },
        }
    }

    drop(listener);
    let _ = tokio::time::timeout(GRACE, graceful.shutdown()).await;
    connections.shutdown().await;
    Ok(())
}

/// Errors about one incoming connection, not the listener.
fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
            | io::ErrorKind::TimedOut
    )
}

/// Out of file descriptors or memory: wait and try again rather than die.
fn is_exhaustion(e: &io::Error) -> bool {
    // EMFILE, ENFILE, ENOBUFS, ENOMEM on Linux.
    matches!(e.raw_os_error(), Some(24 | 23 | 105 | 12)) || e.kind() == io::ErrorKind::OutOfMemory
}
