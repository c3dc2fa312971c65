//! The one way a domain actor changes a record: take the record's lock, decide from the
//! in-memory copy with a pure rule, persist the decision through the storage pool, then apply
//! it to memory and answer. A decision of `Unchanged` writes nothing (a rep re-asserting what
//! is already true costs no database write).
//!
//! A write whose outcome is unknown (the store failed or went silent after the write may have
//! been sent, so it may have committed) leaves its key *unsettled*: memory may not hold what the
//! store does. The key's next write, and a sweep soon after, read the record back from the
//! store first and put what it holds in memory, so memory and store never stay apart.

use std::collections::HashSet;
use std::hash::Hash;
use std::time::Duration;

use actix::fut::{ready, LocalBoxActorFuture};
use actix::{Actor, ActorFutureExt, AsyncContext, Context, ResponseActFuture, WrapFuture};
use futures::future::BoxFuture;

use crate::error::{BbsError, BbsResult};
use crate::keyed_lock::{KeyGuard, KeyedLocks};

/// How soon an unsettled key is read back after its write failed, and again after each
/// failed read while the store stays away.
const SETTLE_RETRY: Duration = Duration::from_secs(1);

/// The keys whose last write's outcome is unknown, whether a sweep is due, and the keys a
/// sweep is reading back now (a later sweep skips them, so waiters never pile up on a key
/// while the store stays away).
pub struct Unsettled<K> {
    keys: HashSet<K>,
    sweep_due: bool,
    sweeping: HashSet<K>,
}

impl<K> Default for Unsettled<K> {
    fn default() -> Self {
        Unsettled {
            keys: HashSet::new(),
            sweep_due: false,
            sweeping: HashSet::new(),
        }
    }
}

impl<K: Eq + Hash> Unsettled<K> {
    pub fn contains(&self, key: &K) -> bool {
        self.keys.contains(key)
    }
}

/// Whether a failed write may still have committed. The store refused the ones listed
/// outright (a rolled-back transaction, a key that exists or is gone, a value too long); any
/// other failure (the connection dropped, no answer in time) leaves the outcome unknown.
pub fn outcome_unknown(error: &BbsError) -> bool {
    !matches!(
        error,
        BbsError::Exists | BbsError::NotFound | BbsError::InvalidRequest(_) | BbsError::Deadlock
    )
}

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

    /// What the store holds for one key, read back to settle it.
    type Stored: Send + 'static;
    fn unsettled(&mut self) -> &mut Unsettled<Self::Key>;
    /// Reads what the store holds for `key`.
    fn reload(&self, key: &Self::Key) -> BoxFuture<'static, BbsResult<Self::Stored>>;
    /// Puts what the store holds for `key` in memory, with no write and no event, as a
    /// standby's catch-up does: the write it settles was never acknowledged.
    fn settle(&mut self, key: &Self::Key, stored: Self::Stored);
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
                    // The usual case, a settled key, goes straight to its decision.
                    if !actor.unsettled().contains(&key) {
                        return decide_and_persist(actor, key, guard, decide);
                    }
                    Box::pin(
                        settle_first(actor, key.clone()).then(
                            move |settled, actor, _| match settled {
                                Ok(()) => decide_and_persist(actor, key, guard, decide),
                                Err(e) => Box::pin(ready(Err(e))),
                            },
                        ),
                    )
                },
            ),
    )
}

/// Decides with `decide` on what memory holds for `key` (its lock held by `guard`), writes
/// the decision through and applies it; a write with an unknown outcome unsettles the key.
fn decide_and_persist<A, R, F>(
    actor: &mut A,
    key: A::Key,
    guard: KeyGuard<A::Key>,
    decide: F,
) -> LocalBoxActorFuture<A, BbsResult<R>>
where
    A: OwnsRecords,
    R: Unpin + 'static,
    F: FnOnce(Option<&A::Record>) -> BbsResult<(Change<A::Record>, A::Report, R)> + Unpin + 'static,
{
    let (change, report, outcome) = match decide(actor.record(&key).as_deref()) {
        Ok(decision) => decision,
        Err(e) => return Box::pin(ready(Err(e))),
    };
    if matches!(change, Change::Unchanged) {
        return Box::pin(ready(Ok(outcome)));
    }
    let persisting = actor.persist(&key, actor.record(&key).as_deref(), &change);
    Box::pin(persisting.into_actor(actor).map(move |result, actor, ctx| {
        match &result {
            Ok(()) => actor.apply(key, change, report),
            Err(e) if outcome_unknown(e) => {
                metrics::counter!("bbs_write_outcomes_unknown_total").increment(1);
                actor.unsettled().keys.insert(key);
                sweep_soon(actor, ctx);
            }
            Err(_) => {}
        }
        drop(guard);
        result.map(|()| outcome)
    }))
}

/// Reads an unsettled key back before a decision is made on it; a key that is settled costs
/// nothing. Fails (and the write with it) while the store stays away.
fn settle_first<A: OwnsRecords>(
    actor: &mut A,
    key: A::Key,
) -> LocalBoxActorFuture<A, BbsResult<()>> {
    if !actor.unsettled().contains(&key) {
        return Box::pin(ready(Ok(())));
    }
    Box::pin(
        actor
            .reload(&key)
            .into_actor(actor)
            .map(move |stored, actor, _| {
                actor.settle(&key, stored?);
                actor.unsettled().keys.remove(&key);
                metrics::counter!("bbs_write_outcomes_settled_total").increment(1);
                Ok(())
            }),
    )
}

/// Makes sure a sweep will come round.
fn sweep_soon<A: OwnsRecords>(actor: &mut A, ctx: &mut Context<A>) {
    let unsettled = actor.unsettled();
    if !unsettled.sweep_due {
        unsettled.sweep_due = true;
        ctx.run_later(SETTLE_RETRY, sweep);
    }
}

/// Reads every unsettled key back, each under its lock; a key whose read fails stays
/// unsettled and the sweep comes round again.
fn sweep<A: OwnsRecords>(actor: &mut A, ctx: &mut Context<A>) {
    let unsettled = actor.unsettled();
    unsettled.sweep_due = false;
    let keys: Vec<A::Key> = unsettled
        .keys
        .iter()
        .filter(|k| !unsettled.sweeping.contains(*k))
        .cloned()
        .collect();
    for key in keys {
        actor.unsettled().sweeping.insert(key.clone());
        let locks = actor.locks().clone();
        let lock_key = key.clone();
        ctx.spawn(
            async move { locks.lock(lock_key).await }
                .into_actor(actor)
                .then(move |guard, actor, _| {
                    settle_first(actor, key.clone()).map(move |settled, actor, ctx| {
                        actor.unsettled().sweeping.remove(&key);
                        if settled.is_err() {
                            sweep_soon(actor, ctx);
                        }
                        drop(guard);
                    })
                }),
        );
    }
}
