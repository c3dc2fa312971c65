//! The storage actor pool: the only path from domain actors to the store.
//!
//! Each `StoreActor` runs one store operation at a time (an `AtomicResponse`), so the pool
//! size bounds concurrent database work and a full pool pushes back through the bounded
//! mailboxes. Work goes to the least-loaded actor, so one slow write does not hold up requests
//! queued behind it while other actors are idle. The actors are spread over the given
//! arbiters, so the pool is not limited to one core.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use actix::{
    Actor, ActorFutureExt, ArbiterHandle, AtomicResponse, Context, Handler, Message, WrapFuture,
};
use futures::future::BoxFuture;
use futures::FutureExt;

use bbs_store::{Backend, Store, StoreError, StoreResult};

use crate::error::BbsResult;
use crate::mailbox::{Mailbox, Metered};

type StoreWork<R> = Box<dyn FnOnce(Arc<dyn Store>) -> BoxFuture<'static, StoreResult<R>> + Send>;

/// One store operation.
pub struct StoreOp<R> {
    work: StoreWork<R>,
}

impl<R: 'static> Message for StoreOp<R> {
    type Result = StoreResult<R>;
}

pub struct StoreActor {
    store: Arc<dyn Store>,
    capacity: usize,
}

impl Actor for StoreActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.capacity);
    }
}

impl<R: Send + 'static> Handler<Metered<StoreOp<R>>> for StoreActor {
    type Result = AtomicResponse<Self, StoreResult<R>>;

    fn handle(&mut self, message: Metered<StoreOp<R>>, _: &mut Self::Context) -> Self::Result {
        let op = message.open();
        // Spawned, so a write that has begun completes even if its caller goes away.
        let running = tokio::spawn((op.work)(Arc::clone(&self.store)));
        AtomicResponse::new(Box::pin(
            async move {
                running
                    .await
                    .unwrap_or_else(|e| Err(StoreError::Other(format!("store task failed: {e}"))))
            }
            .into_actor(self)
            .map(|result, _, _| result),
        ))
    }
}

/// Counts an operation against a shard until it is answered or abandoned.
struct LoadMark<'a>(&'a AtomicUsize);

impl<'a> LoadMark<'a> {
    fn new(load: &'a AtomicUsize) -> Self {
        load.fetch_add(1, Ordering::Relaxed);
        LoadMark(load)
    }
}

impl Drop for LoadMark<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

struct Shard {
    mailbox: Mailbox<StoreActor>,
    load: AtomicUsize,
}

/// A cloneable handle on the pool.
#[derive(Clone)]
pub struct StoragePool {
    shards: Arc<[Shard]>,
    backend: Backend,
}

impl StoragePool {
    /// Starts `size` store actors over `arbiters` (round-robin), each with a mailbox of
    /// `capacity`.
    pub fn start(
        store: Arc<dyn Store>,
        size: usize,
        capacity: usize,
        arbiters: &[ArbiterHandle],
    ) -> Self {
        let backend = store.backend();
        let shards: Vec<Shard> = (0..size.max(1))
            .map(|i| {
                let store = Arc::clone(&store);
                let actor = StoreActor { store, capacity };
                let addr = match arbiters.get(i % arbiters.len().max(1)) {
                    Some(arbiter) => StoreActor::start_in_arbiter(arbiter, move |_| actor),
                    None => actor.start(),
                };
                Shard {
                    mailbox: Mailbox::new(addr, "storage", capacity),
                    load: AtomicUsize::new(0),
                }
            })
            .collect();
        StoragePool {
            shards: shards.into(),
            backend,
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Runs one store operation on the least-loaded actor.
    pub async fn run<R, F, Fut>(&self, work: F) -> BbsResult<R>
    where
        R: Send + 'static,
        F: FnOnce(Arc<dyn Store>) -> Fut + Send + 'static,
        Fut: Future<Output = StoreResult<R>> + Send + 'static,
    {
        let shard = self
            .shards
            .iter()
            .min_by_key(|s| s.load.load(Ordering::Relaxed))
            .expect("StoragePool::start makes at least one actor");
        let _load = LoadMark::new(&shard.load);
        let op = StoreOp {
            work: Box::new(move |store| work(store).boxed()),
        };
        Ok(shard.mailbox.call(op).await??)
    }
}
