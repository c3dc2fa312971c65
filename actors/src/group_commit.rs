//! Group commit: record writes from independent requests that arrive together are committed in
//! one transaction (one etcd txn), so a desire storm or a cell's worth of instance changes
//! costs a handful of commits instead of one each.
//!
//! No timer holds a write back. A batch is whatever has queued by the time a commit slot is
//! free: under light load every write commits alone at once; under a storm the queue fills
//! while the slots are busy and the next commit takes it all. Each request is answered only
//! when its batch is durable. A batch that fails on a record (a duplicate insert, a missing
//! row) is retried write by write, so the failure reaches only the request it belongs to; a
//! batch that fails because the store is away fails every request in it, as each alone would.

use std::sync::Arc;

use actix::ArbiterHandle;
use futures::future::join_all;
use metrics::{gauge, histogram, Gauge};
use tokio::sync::{mpsc, oneshot, Semaphore};

use bbs_store::{Backend, RecordWrite, StoreError, StoreResult};

use crate::error::{BbsError, BbsResult};
use crate::storage::Runner;

/// One request's writes: committed together, all or none.
struct Pending {
    writes: Vec<RecordWrite>,
    ops: usize,
    bytes: usize,
    answer: oneshot::Sender<StoreResult<()>>,
    /// Counted in the depth gauge until its batch is cut, or until it is dropped unsent
    /// (a caller that went away while waiting for room).
    waiting: Option<Waiting>,
}

/// One request waiting for a commit: the depth gauge counts it while this lives.
struct Waiting(Gauge);

impl Waiting {
    fn new(depth: &Gauge) -> Self {
        depth.increment(1.0);
        Waiting(depth.clone())
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// How batches are cut and how many commit at once, per backend.
#[derive(Clone, Copy, Debug)]
struct Limits {
    /// Store operations in one batch: etcd refuses a txn of more than 128 by default
    /// (`--max-txn-ops`); the SQL stores take that many rows in well under a round of the
    /// re-assert loop.
    max_ops: usize,
    /// Bytes of record content in one batch, below etcd's default request limit (1.5 MiB)
    /// and MariaDB's default packet (16 MiB), so large desired LRPs do not make a batch the
    /// store refuses. One request larger than this still goes, alone.
    max_bytes: usize,
    /// Batches committing at once. SQLite has one writer, so a second would only wait for
    /// the first; the other stores commit concurrent transactions in parallel and share the
    /// log flush between them.
    in_flight: usize,
}

impl Limits {
    fn of(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => Limits {
                max_ops: 256,
                max_bytes: 8 << 20,
                in_flight: 1,
            },
            Backend::Etcd => Limits {
                max_ops: 128,
                max_bytes: 1 << 20,
                in_flight: 4,
            },
            Backend::Mysql | Backend::Postgres => Limits {
                max_ops: 256,
                max_bytes: 8 << 20,
                in_flight: 4,
            },
        }
    }
}

/// The writers' side of the group commit.
#[derive(Clone)]
pub(crate) struct GroupCommit {
    queue: mpsc::Sender<Pending>,
    depth: Gauge,
}

const NAME: &str = "group-commit";

impl GroupCommit {
    /// Starts the batching loop on `arbiter` (or the current runtime) with a queue of
    /// `capacity` requests.
    pub(crate) fn start(
        runner: Runner,
        backend: Backend,
        capacity: usize,
        arbiter: Option<&ArbiterHandle>,
    ) -> Self {
        let (queue, requests) = mpsc::channel(capacity.max(1));
        gauge!("bbs_actor_mailbox_capacity", "actor" => NAME).set(capacity as f64);
        let depth = gauge!("bbs_actor_mailbox_depth", "actor" => NAME);
        depth.set(0.0);
        let batching = batch_loop(runner, Limits::of(backend), requests);
        match arbiter {
            Some(arbiter) => {
                arbiter.spawn(batching);
            }
            None => {
                tokio::spawn(batching);
            }
        }
        GroupCommit { queue, depth }
    }

    /// Commits `writes` (all or none) with whatever else is waiting, and returns once they
    /// are durable. Waits for room when the queue is full.
    pub(crate) async fn write(&self, writes: Vec<RecordWrite>) -> BbsResult<()> {
        if writes.is_empty() {
            return Ok(());
        }
        let (answer, answered) = oneshot::channel();
        let ops = writes.iter().map(RecordWrite::store_ops).sum();
        let bytes = writes.iter().map(RecordWrite::approximate_bytes).sum();
        let pending = Pending {
            writes,
            ops,
            bytes,
            answer,
            waiting: Some(Waiting::new(&self.depth)),
        };
        if self.queue.send(pending).await.is_err() {
            return Err(stopped());
        }
        Ok(answered.await.map_err(|_| stopped())??)
    }
}

fn stopped() -> BbsError {
    BbsError::Unavailable("the group commit has stopped".into())
}

async fn batch_loop(runner: Runner, limits: Limits, mut requests: mpsc::Receiver<Pending>) {
    let slots = Arc::new(Semaphore::new(limits.in_flight));
    let mut carried: Option<Pending> = None;
    loop {
        let first = match carried.take() {
            Some(pending) => pending,
            None => match requests.recv().await {
                Some(pending) => pending,
                None => return,
            },
        };
        // Wait for a slot before cutting the batch: what queues meanwhile joins it.
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let (mut ops, mut bytes) = (first.ops, first.bytes);
        let mut batch = vec![first];
        while let Ok(next) = requests.try_recv() {
            if ops + next.ops > limits.max_ops || bytes + next.bytes > limits.max_bytes {
                carried = Some(next);
                break;
            }
            ops += next.ops;
            bytes += next.bytes;
            batch.push(next);
        }
        for pending in &mut batch {
            pending.waiting = None;
        }
        let runner = runner.clone();
        tokio::spawn(async move {
            commit(&runner, batch).await;
            drop(slot);
        });
    }
}

/// Commits one batch and answers each of its requests.
async fn commit(runner: &Runner, batch: Vec<Pending>) {
    histogram!("bbs_db_write_batch_requests").record(batch.len() as f64);
    if batch.len() == 1 {
        for pending in batch {
            let result = write_records(runner, pending.writes).await.1;
            let _ = pending.answer.send(result);
        }
        return;
    }
    let sizes: Vec<usize> = batch.iter().map(|p| p.writes.len()).collect();
    let mut answers = Vec::with_capacity(batch.len());
    let mut writes = Vec::with_capacity(sizes.iter().sum());
    for pending in batch {
        writes.extend(pending.writes);
        answers.push(pending.answer);
    }
    let (mut writes, result) = write_records(runner, writes).await;
    match result {
        Ok(()) => {
            for answer in answers {
                let _ = answer.send(Ok(()));
            }
        }
        Err(e) if !refused(&e) || writes.len() != sizes.iter().sum::<usize>() => {
            for answer in answers {
                let _ = answer.send(Err(e.clone()));
            }
        }
        Err(_) => {
            // One request's record failed the batch: commit each request alone, so only
            // that one fails.
            let mut alone = Vec::with_capacity(sizes.len());
            for size in sizes.iter().rev() {
                alone.push(writes.split_off(writes.len() - size));
            }
            alone.reverse();
            let retries = alone.into_iter().map(|w| write_records(runner, w));
            for ((_, result), answer) in join_all(retries).await.into_iter().zip(answers) {
                let _ = answer.send(result);
            }
        }
    }
}

/// Whether the store refused the batch outright, so it committed nothing and one request's
/// record may be the cause: only then are the requests committed one by one. Any other
/// failure (the store away, a dropped connection) may have come after the batch committed;
/// committing again would answer "exists" or "not found" for writes that are stored, so each
/// request gets the failure, and its record is read back (write_through::Unsettled).
fn refused(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::Exists
            | StoreError::NotFound
            | StoreError::ValueTooLong(_)
            | StoreError::Deadlock
            | StoreError::Contention
            | StoreError::Rejected(_)
    )
}

/// Runs one `write_records` on the storage pool, handing the writes back with the outcome.
async fn write_records(
    runner: &Runner,
    writes: Vec<RecordWrite>,
) -> (Vec<RecordWrite>, StoreResult<()>) {
    let outcome = runner
        .run_write(move |store| async move {
            let result = store.write_records(&writes).await;
            Ok((writes, result))
        })
        .await;
    // The storage actor saw only that the work ran; the write's own outcome says whether
    // the store answered.
    let (writes, result) = match outcome {
        Ok((writes, result)) => (writes, result),
        Err(e) => (Vec::new(), Err(e)),
    };
    crate::storage::note_availability(&result);
    (writes, result)
}
