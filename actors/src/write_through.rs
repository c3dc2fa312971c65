//! The one way a domain actor changes a record: take the record's lock, decide from the
//! in-memory copy with a pure rule, persist the decision through the storage pool, then apply
//! it to memory and answer. A decision of `Unchanged` writes nothing (a rep re-asserting what
//! is already true costs no database write).

use std::hash::Hash;

use actix::fut::{ready, LocalBoxActorFuture};
use actix::{Actor, ActorFutureExt, Context, ResponseActFuture, WrapFuture};
use futures::future::BoxFuture;

use crate::error::BbsResult;
use crate::keyed_lock::KeyedLocks;

/// What a rule decided for one record.
#[derive(Clone, Debug, PartialEq)]
pub enum Change<R> {
    Unchanged,
    Insert(R),
    Update(R),
    Delete,
}

/// An actor that owns keyed records in memory and persists them.
pub trait OwnsRecords: Actor<Context = Context<Self>> {
    type Key: Eq + Hash + Clone + Send + Unpin + 'static;
    type Record: Clone + Unpin + 'static;
    /// What a decision hands to `apply` beside the record: how to report the change to
    /// subscribers (which upstream emitter, which request caused it). `()` where the record's
    /// events follow from the record alone.
    type Report: Default + Unpin + 'static;

    /// How `record` hands a record out: a plain borrow, or a shared pointer where readers on
    /// other threads share the table behind a lock.
    type Held<'a>: std::ops::Deref<Target = Self::Record>
    where
        Self: 'a;

    fn locks(&self) -> &KeyedLocks<Self::Key>;
    fn record(&self, key: &Self::Key) -> Option<Self::Held<'_>>;
    /// Writes a change to the store; called only for changes other than `Unchanged`.
    /// `before` is the record as memory has it now.
    fn persist(
        &self,
        key: &Self::Key,
        before: Option<&Self::Record>,
        change: &Change<Self::Record>,
    ) -> BoxFuture<'static, BbsResult<()>>;
    /// Applies a persisted change to memory and publishes its events.
    fn apply(&mut self, key: Self::Key, change: Change<Self::Record>, report: Self::Report);
}

/// Runs `decide` on the record under `key` and writes its decision through, reported the
/// default way.
pub fn mutate<A, R, F>(actor: &mut A, key: A::Key, decide: F) -> ResponseActFuture<A, BbsResult<R>>
where
    A: OwnsRecords,
    R: Unpin + 'static,
    F: FnOnce(Option<&A::Record>) -> BbsResult<(Change<A::Record>, R)> + Unpin + 'static,
{
    mutate_reported(actor, key, move |current| {
        decide(current).map(|(change, outcome)| (change, A::Report::default(), outcome))
    })
}

/// Runs `decide` on the record under `key` and writes its decision through; the decision's
/// report reaches `apply` with it.
pub fn mutate_reported<A, R, F>(
    actor: &mut A,
    key: A::Key,
    decide: F,
) -> ResponseActFuture<A, BbsResult<R>>
where
    A: OwnsRecords,
    R: Unpin + 'static,
    F: FnOnce(Option<&A::Record>) -> BbsResult<(Change<A::Record>, A::Report, R)> + Unpin + 'static,
{
    let locks = actor.locks().clone();
    let lock_key = key.clone();
    Box::pin(
        async move { locks.lock(lock_key).await }
            .into_actor(actor)
            .then(
                move |guard, actor, _| -> LocalBoxActorFuture<A, BbsResult<R>> {
                    let (change, report, outcome) = match decide(actor.record(&key).as_deref()) {
                        Ok(decision) => decision,
                        Err(e) => return Box::pin(ready(Err(e))),
                    };
                    if matches!(change, Change::Unchanged) {
                        return Box::pin(ready(Ok(outcome)));
                    }
                    let persisting = actor.persist(&key, actor.record(&key).as_deref(), &change);
                    Box::pin(persisting.into_actor(actor).map(move |result, actor, _| {
                        if result.is_ok() {
                            actor.apply(key, change, report);
                        }
                        drop(guard);
                        result.map(|()| outcome)
                    }))
                },
            ),
    )
}
