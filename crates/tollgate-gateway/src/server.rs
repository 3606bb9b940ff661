//! Running the gateway: bind, serve, shut down gracefully.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::stack::router;
use crate::stores::Stores;

/// A gateway serving in the background. Dropping it stops it abruptly; prefer
/// [`Gateway::shutdown`].
#[derive(Debug)]
pub struct Gateway {
    addr: SocketAddr,
    metrics: Metrics,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<io::Result<()>>,
    /// Releases reservations left behind by a crash (see docs/balance.md).
    reconciler: Option<JoinHandle<()>>,
}

impl Gateway {
    /// Open the configured stores, bind `config.listen` and serve.
    ///
    /// # Errors
    ///
    /// The database cannot be opened, the address cannot be bound, or an upstream cannot
    /// be set up.
    pub async fn start(config: Config) -> io::Result<Gateway> {
        let stores = Stores::open(&config).await.map_err(io::Error::other)?;
        Gateway::start_with(config, stores).await
    }

    /// Bind `config.listen` and serve with stores opened by the caller (tests and
    /// embedders pass in-memory stores).
    ///
    /// # Errors
    ///
    /// The address cannot be bound, or an upstream cannot be set up.
    pub async fn start_with(config: Config, stores: Stores) -> io::Result<Gateway> {
        let listener = TcpListener::bind(config.listen).await.map_err(|e| {
            io::Error::new(e.kind(), format!("cannot listen on {}: {e}", config.listen))
        })?;
        Gateway::start_on(listener, config, stores).await
    }

    /// Wait for SIGINT/SIGTERM, then shut down gracefully (the `serve` command).
    ///
    /// # Errors
    ///
    /// The server failed while serving.
    pub async fn run_until_signal(self) -> io::Result<()> {
        shutdown_signal().await;
        self.shutdown().await
    }

    /// Serve on an already bound listener.
    ///
    /// # Errors
    ///
    /// An upstream cannot be set up.
    pub async fn start_on(
        listener: TcpListener,
        config: Config,
        stores: Stores,
    ) -> io::Result<Gateway> {
        let addr = listener.local_addr()?;
        let metrics = Metrics::new();
        let app = router(&config, metrics.clone(), &stores).map_err(io::Error::other)?;
        // Runs at once (a restart after kill -9 frees what the dead process reserved),
        // then every minute.
        let reconciler = stores.ledger.clone().map(|ledger| {
            tollgate_balance::spawn_reconciler(
                ledger,
                Arc::new(tollgate_core::SystemClock),
                Duration::from_secs(60),
            )
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let grace = Duration::from_millis(config.shutdown_grace_ms);
        let task = tokio::spawn(serve(listener, app, grace, async move {
            let _ = stopped.await;
        }));
        Ok(Gateway {
            addr,
            metrics,
            stop: Some(stop),
            task,
            reconciler,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The gateway's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Stop accepting, let in-flight requests finish (up to the grace period), stop.
    ///
    /// # Errors
    ///
    /// The server failed while serving.
    pub async fn shutdown(mut self) -> io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(reconciler) = self.reconciler.take() {
            reconciler.abort();
        }
        match (&mut self.task).await {
            Ok(result) => result,
            Err(e) => Err(io::Error::other(e)),
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if self.stop.is_some() {
            self.task.abort();
        }
        if let Some(reconciler) = self.reconciler.take() {
            reconciler.abort();
        }
    }
}

/// Serve `app` until `signal` resolves, then drain for at most `grace`.
pub(crate) async fn serve(
    listener: TcpListener,
    app: axum::Router,
    grace: Duration,
    signal: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let (draining_tx, draining_rx) = oneshot::channel::<()>();
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        signal.await;
        let _ = draining_tx.send(());
    });
    let server = server.into_future();
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => return result,
        Ok(()) = draining_rx => {}
    }
    match tokio::time::timeout(grace, server).await {
        Ok(result) => result,
        Err(_) => {
            tracing::warn!(
                grace_ms = grace.as_millis() as u64,
                "shutdown grace period over; closing remaining connections"
            );
            Ok(())
        }
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutting down: finishing in-flight requests");
}
