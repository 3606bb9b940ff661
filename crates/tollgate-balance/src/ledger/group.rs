//! Group commit for the SQL ledgers: reserves, settles and releases queue, and one task
//! at a time (spawned when the queue starts filling, gone when it is empty) takes
//! everything queued and hands it to the backend's [`Engine`], which runs it in one write
//! transaction, each operation still its own conditional statements. Every caller is
//! answered only after the transaction ends: with its own outcome after a `COMMIT`, with
//! an error (nothing of it written) if the transaction failed. A commit is the expensive
//! part of a write (a log flush, and with sqlx several thread hand-offs), so under load
//! one commit carries many requests.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::Mutex;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

use super::sql::to_millis;
use super::{Charge, LedgerEntry, LedgerError, Reservation, ReserveError};
use crate::amount::Amount;

/// Most operations one write transaction carries.
const MAX_BATCH: usize = 256;

/// Runs a batch of operations in one write transaction.
pub(super) trait Engine: Send + Sync + 'static {
    /// Begin a write transaction, apply `ops` in order, pushing each outcome to `done`,
    /// and commit. `Err` when the transaction failed as a whole: nothing was written, and
    /// `ops` may still hold operations not yet applied.
    fn run<'a>(
        &'a self,
        ops: &'a mut std::vec::IntoIter<Op>,
        done: &'a mut Vec<Done>,
    ) -> Pin<Box<dyn Future<Output = Result<(), sqlx::Error>> + Send + 'a>>;
}

/// One queued operation and where its answer goes.
pub(super) enum Op {
    Reserve {
        account: String,
        request_id: String,
        amount: i64,
        created_at: i64,
        expires_at: i64,
        reply: oneshot::Sender<Result<bool, ReserveError>>,
    },
    Close {
        /// The account the caller's `Reservation` names: only to order row locks.
        account: String,
        request_id: String,
        charge: Option<Charge>,
        reason: String,
        reply: oneshot::Sender<Result<LedgerEntry, LedgerError>>,
    },
}

/// An operation done inside the batch, answered once the batch commits.
pub(super) enum Done {
    Reserve(
        oneshot::Sender<Result<bool, ReserveError>>,
        Result<bool, ReserveError>,
    ),
    Close(
        oneshot::Sender<Result<LedgerEntry, LedgerError>>,
        Result<LedgerEntry, LedgerError>,
    ),
}

impl Op {
    /// The account whose balance row the operation locks.
    pub(super) fn account(&self) -> &str {
        match self {
            Op::Reserve { account, .. } | Op::Close { account, .. } => account,
        }
    }

    /// A reserve nobody waits for any more.
    fn abandoned(&self) -> bool {
        matches!(self, Op::Reserve { reply, .. } if reply.is_closed())
    }

    pub(super) fn fail(self, why: &str) {
        match self {
            Op::Reserve { reply, .. } => drop(reply.send(Err(batch_failed(why).into()))),
            Op::Close { reply, .. } => drop(reply.send(Err(batch_failed(why)))),
        }
    }
}

impl Done {
    fn send(self) {
        match self {
            Done::Reserve(reply, result) => drop(reply.send(result)),
            Done::Close(reply, result) => drop(reply.send(result)),
        }
    }

    /// The batch did not commit: nothing of this operation was written.
    fn fail(self, why: &str) {
        match self {
            Done::Reserve(reply, _) => drop(reply.send(Err(batch_failed(why).into()))),
            Done::Close(reply, _) => drop(reply.send(Err(batch_failed(why)))),
        }
    }
}

fn batch_failed(why: &str) -> LedgerError {
    LedgerError::Storage(why.to_string().into())
}

fn writer_stopped() -> LedgerError {
    LedgerError::Storage("the ledger's group commit stopped (runtime shutting down?)".into())
}

/// The queue and its draining task; see the [module docs](self).
pub(super) struct Writer {
    engine: Box<dyn Engine>,
    queue: Mutex<Queue>,
}

#[derive(Default)]
struct Queue {
    ops: Vec<Op>,
    /// Whether a task is draining `ops`.
    running: bool,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("queued", &self.queue.lock().ops.len())
            .finish_non_exhaustive()
    }
}

/// Stops the draining task's claim on the queue if it ends early (panic, runtime shut
/// down): the queued callers are answered with an error by dropping their operations, and
/// the next submit starts a new task.
struct Claim {
    writer: Arc<Writer>,
    armed: bool,
}

impl Drop for Claim {
    fn drop(&mut self) {
        if self.armed {
            let orphans = {
                let mut q = self.writer.queue.lock();
                q.running = false;
                std::mem::take(&mut q.ops)
            };
            drop(orphans);
        }
    }
}

impl Writer {
    pub(super) fn new(engine: impl Engine) -> Writer {
        Writer {
            engine: Box::new(engine),
            queue: Mutex::new(Queue::default()),
        }
    }

    /// Reserve through the group commit: `Ok(false)` when the account is unknown or
    /// cannot afford `amount`.
    pub(super) async fn reserve(
        self: &Arc<Self>,
        account: &str,
        request_id: &str,
        amount: Amount,
        now: SystemTime,
        expires_at: SystemTime,
    ) -> Result<bool, ReserveError> {
        let (reply, rx) = oneshot::channel();
        self.submit(Op::Reserve {
            account: account.to_string(),
            request_id: request_id.to_string(),
            amount: amount.micros(),
            created_at: to_millis(now),
            expires_at: to_millis(expires_at),
            reply,
        })?;
        rx.await.map_err(|_| writer_stopped())?
    }

    /// Settle (`Some(charge)`) or release `reservation` through the group commit.
    pub(super) async fn close(
        self: &Arc<Self>,
        reservation: &Reservation,
        charge: Option<Charge>,
        reason: &str,
    ) -> Result<LedgerEntry, LedgerError> {
        let (reply, rx) = oneshot::channel();
        self.submit(Op::Close {
            account: reservation.account.clone(),
            request_id: reservation.request_id.clone(),
            charge,
            reason: reason.to_string(),
            reply,
        })?;
        rx.await.map_err(|_| writer_stopped())?
    }

    /// Queue `op`, starting the draining task if none runs.
    fn submit(self: &Arc<Self>, op: Op) -> Result<(), LedgerError> {
        let Ok(handle) = Handle::try_current() else {
            return Err(LedgerError::Storage(
                "the SQL ledgers must be used inside a tokio runtime".into(),
            ));
        };
        let start = {
            let mut q = self.queue.lock();
            q.ops.push(op);
            !std::mem::replace(&mut q.running, true)
        };
        if start {
            handle.spawn(self.clone().drain());
        }
        Ok(())
    }

    /// Run batches until the queue is empty.
    async fn drain(self: Arc<Self>) {
        let mut claim = Claim {
            writer: self.clone(),
            armed: true,
        };
        loop {
            let batch: Vec<Op> = {
                let mut q = self.queue.lock();
                if q.ops.is_empty() {
                    q.running = false;
                    claim.armed = false;
                    return;
                }
                let n = q.ops.len().min(MAX_BATCH);
                // A reserve whose caller is gone holds nothing for nobody.
                q.ops.drain(..n).filter(|op| !op.abandoned()).collect()
            };
            self.run_batch(batch).await;
        }
    }

    /// One write transaction for `batch`; every caller is answered after it ends.
    async fn run_batch(&self, batch: Vec<Op>) {
        let mut done = Vec::with_capacity(batch.len());
        let mut ops = batch.into_iter();
        let committed = self.engine.run(&mut ops, &mut done).await;
        match committed {
            Ok(()) => done.into_iter().for_each(Done::send),
            Err(e) => {
                let why = format!("ledger write transaction failed, nothing written: {e}");
                tracing::warn!(error = %e, ops = done.len() + ops.len(), "ledger group commit failed");
                done.into_iter().for_each(|d| d.fail(&why));
                ops.for_each(|op| op.fail(&why));
            }
        }
    }
}
