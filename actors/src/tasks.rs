//! The TaskActor owns every task: loaded at start-up, changed only through the pure rules in
//! `rules::tasks`, written through the storage pool before it answers, read from memory.
//! After a change commits it asks the auctioneer to place new tasks and hands finished tasks
//! with a completion callback to the callback pool.

use std::collections::HashMap;
use std::sync::Arc;

use actix::{Actor, AsyncContext, Context, Handler, Message, ResponseActFuture};
use futures::future::BoxFuture;
use futures::FutureExt;
use slog::{info, warn, Logger};

use bbs_models::task::State;
use bbs_models::{Task, TaskDefinition};
use bbs_store::{RecordWrite, TaskFilter, TaskRecord, Write};

use crate::auctioneer::{AuctioneerClient, TaskStartRequest};
use crate::callbacks::CallbackQueue;
use crate::clock::now_nanos;
use crate::codec::Codec;
use crate::error::{BbsError, BbsResult};
use crate::keyed_lock::KeyedLocks;
use crate::mailbox::Mailbox;
use crate::rules::tasks as rules;
use crate::shared_map::SharedMap;
use crate::storage::StoragePool;
use crate::write_through::{mutate, Change, OwnsRecords, Unsettled};

#[derive(Message)]
#[rtype(result = "BbsResult<()>")]
pub struct DesireTask {
    pub guid: String,
    pub domain: String,
    pub definition: TaskDefinition,
    pub trace_id: String,
}

/// Answers `should_start`.
#[derive(Message)]
#[rtype(result = "BbsResult<bool>")]
pub struct StartTask {
    pub guid: String,
    pub cell_id: String,
}

#[derive(Message)]
#[rtype(result = "BbsResult<()>")]
pub struct CancelTask {
    pub guid: String,
}

#[derive(Message)]
#[rtype(result = "BbsResult<()>")]
pub struct FailTask {
    pub guid: String,
    pub reason: String,
}

#[derive(Message)]
#[rtype(result = "BbsResult<()>")]
pub struct RejectTask {
    pub guid: String,
    pub reason: String,
}

#[derive(Message)]
#[rtype(result = "BbsResult<()>")]
pub struct CompleteTask {
    pub guid: String,
    pub cell_id: String,
    pub failed: bool,
    pub failure_reason: String,
    pub result: String,
}

/// Completed -> Resolving; the callback pool's claim on a task.
#[derive(Message)]
#[rtype(result = "BbsResult<Task>")]
pub struct ResolvingTask {
    pub guid: String,
}

#[derive(Message)]
#[rtype(result = "BbsResult<()>")]
pub struct DeleteTask {
    pub guid: String,
}

/// What the task actor needs from the rest of the system.
pub struct TaskActorDeps {
    pub storage: StoragePool,
    pub codec: Codec,
    pub auctioneer: AuctioneerClient,
    pub callbacks: CallbackQueue,
    pub max_task_retries: u32,
    /// How long an undelivered callback waits before the next attempt.
    pub redelivery_delay: std::time::Duration,
    pub mailbox_capacity: usize,
    pub log: Logger,
    pub events: crate::events::EventHub,
    pub cells: crate::cells::Directory,
    pub rep: crate::rep::RepClient,
    /// False while this server stands by without the lock: no callbacks are swept then.
    pub active: crate::Activation,
}

/// Every task by guid. Shared pointers: a list copies pointers under the read lock and the
/// tasks after releasing it.
pub type TaskTable = SharedMap<Arc<Task>>;

impl SharedMap<Arc<Task>> {
    /// The tasks matching `filter`, by guid, as they stood when the read lock was taken.
    pub fn list(&self, filter: &TaskFilter) -> Vec<Task> {
        let held: Vec<Arc<Task>> = self
            .read()
            .values()
            .filter(|t| {
                filter.domain.as_ref().is_none_or(|d| *d == t.domain)
                    && filter.cell_id.as_ref().is_none_or(|c| *c == t.cell_id)
            })
            .cloned()
            .collect();
        let mut tasks: Vec<Task> = held.iter().map(|t| (**t).clone()).collect();
        tasks.sort_by(|a, b| a.task_guid.cmp(&b.task_guid));
        tasks
    }

    /// A copy of the task under `guid`.
    pub fn task(&self, guid: &str) -> BbsResult<Task> {
        let held = self.get(guid).ok_or(BbsError::NotFound)?;
        Ok((*held).clone())
    }
}

pub struct TaskActor {
    /// Shared with readers outside the mailbox; only this actor writes.
    tasks: TaskTable,
    locks: KeyedLocks<String>,
    deps: Arc<TaskActorDeps>,
    unsettled: Unsettled<String>,
}

impl Actor for TaskActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.deps.mailbox_capacity);
        ctx.run_interval(self.deps.redelivery_delay, |actor, ctx| {
            if actor.deps.active.is_active() {
                ctx.notify(SweepCallbacks { startup: false });
            }
        });
    }
}

/// A task as the store keeps it, its definition sealed by `codec`.
pub fn to_record(codec: &Codec, task: &Task) -> TaskRecord {
    TaskRecord {
        guid: task.task_guid.clone(),
        domain: task.domain.clone(),
        created_at: task.created_at,
        updated_at: task.updated_at,
        first_completed_at: task.first_completed_at,
        state: task.state,
        cell_id: task.cell_id.clone(),
        result: task.result.clone(),
        failed: task.failed,
        failure_reason: task.failure_reason.clone(),
        task_definition: codec.encode_model(
            task.task_definition
                .as_ref()
                .unwrap_or(&TaskDefinition::default()),
        ),
        rejection_count: task.rejection_count,
        rejection_reason: task.rejection_reason.clone(),
    }
}

/// A stored task as the API serves it; an error when its definition cannot be opened.
pub fn from_record(codec: &Codec, record: TaskRecord) -> BbsResult<Task> {
    let definition: TaskDefinition = codec.decode_model(&record.task_definition)?;
    Ok(Task {
        task_definition: Some(definition),
        task_guid: record.guid,
        domain: record.domain,
        created_at: record.created_at,
        updated_at: record.updated_at,
        first_completed_at: record.first_completed_at,
        state: record.state,
        cell_id: record.cell_id,
        result: record.result,
        failed: record.failed,
        failure_reason: record.failure_reason,
        rejection_count: record.rejection_count,
        rejection_reason: record.rejection_reason,
    })
}

impl TaskActor {
    /// Loads every task and starts the actor. Undecodable rows are skipped and kept.
    pub async fn start(deps: TaskActorDeps) -> BbsResult<(Mailbox<TaskActor>, TaskTable)> {
        let reading = std::time::Instant::now();
        let records = deps
            .storage
            .load(|store| async move { store.tasks(&TaskFilter::default()).await })
            .await?;
        let (read, decoding) = (reading.elapsed(), std::time::Instant::now());
        let decoder = deps.codec.clone();
        let decoded = crate::load::decode_all(records, move |record| {
            let guid = record.guid.clone();
            (guid, from_record(&decoder, record))
        })
        .await?;
        let mut tasks = HashMap::with_capacity(decoded.len());
        for (guid, task) in decoded {
            match task {
                Ok(task) => {
                    tasks.insert(guid, Arc::new(task));
                }
                // A key this server lacks: stop start-up rather than serve without it.
                Err(BbsError::UnknownKeyLabel(label)) => {
                    return Err(BbsError::UnknownKeyLabel(label))
                }
                Err(e) => {
                    // Kept in the store (it may only need a key this server lacks), but not
                    // served: nothing is ever deleted because it could not be read.
                    metrics::counter!("bbs_records_undecodable_total", "kind" => "task")
                        .increment(1);
                    warn!(deps.log, "task-undecodable-skipped"; "task_guid" => &guid, "error" => %e);
                }
            }
        }
        info!(deps.log, "loaded"; "kind" => "tasks", "records" => tasks.len(),
            "read_ms" => read.as_millis() as u64, "decode_ms" => decoding.elapsed().as_millis() as u64);
        let capacity = deps.mailbox_capacity;
        let tasks = TaskTable::new(tasks);
        let actor = TaskActor {
            tasks: tasks.clone(),
            locks: KeyedLocks::default(),
            deps: Arc::new(deps),
            unsettled: Unsettled::default(),
        };
        let mailbox = Mailbox::new(actor.start(), "tasks", capacity);
        Ok((mailbox, tasks))
    }

    /// Queues the callbacks owed from before a restart.
    pub async fn deliver_owed_callbacks(mailbox: &Mailbox<TaskActor>) -> BbsResult<usize> {
        mailbox.call(SweepCallbacks { startup: true }).await?
    }

    /// Hands a finished task to the callback pool, if it has a callback.
    fn queue_callback(deps: &TaskActorDeps, task: &Task) {
        if rules::wants_callback(task) {
            deps.callbacks.submit(task.task_guid.clone(), &deps.log);
        }
    }
}

impl OwnsRecords for TaskActor {
    type Key = String;
    type Record = Task;
    type Held<'a> = parking_lot::MappedRwLockReadGuard<'a, Task>;
    type Report = ();

    fn locks(&self) -> &KeyedLocks<String> {
        &self.locks
    }

    fn record(&self, key: &String) -> Option<Self::Held<'_>> {
        self.tasks.entry(key, |task| &**task)
    }

    fn persist(
        &self,
        key: &String,
        _before: Option<&Task>,
        change: &Change<Task>,
    ) -> BoxFuture<'static, BbsResult<()>> {
        let write = match change {
            Change::Unchanged => return async { Ok(()) }.boxed(),
            Change::Insert(task) => Write::Insert(to_record(&self.deps.codec, task)),
            Change::Update(task) => Write::Update(to_record(&self.deps.codec, task)),
            Change::Delete => Write::Delete(key.clone()),
        };
        let storage = self.deps.storage.clone();
        async move { storage.write(vec![RecordWrite::Task(write)]).await }.boxed()
    }

    type Stored = Option<TaskRecord>;

    fn unsettled(&mut self) -> &mut Unsettled<String> {
        &mut self.unsettled
    }

    fn reload(&self, key: &String) -> BoxFuture<'static, BbsResult<Option<TaskRecord>>> {
        let (storage, guid) = (self.deps.storage.clone(), key.clone());
        async move {
            storage
                .run(move |s| async move { s.task(&guid).await })
                .await
        }
        .boxed()
    }

    fn settle(&mut self, key: &String, stored: Option<TaskRecord>) {
        self.refresh_one(key, stored);
    }

    fn apply(&mut self, key: String, change: Change<Task>, _: ()) {
        use crate::events::Event;
        let event = match change {
            Change::Unchanged => None,
            Change::Insert(task) => {
                self.tasks.write().insert(key, Arc::new(task.clone()));
                Some(Event::TaskCreated(Box::new(task)))
            }
            Change::Update(task) => {
                let before = self.tasks.write().insert(key, Arc::new(task.clone()));
                before.map(|before| {
                    Event::TaskChanged(Box::new(Arc::unwrap_or_clone(before)), Box::new(task))
                })
            }
            Change::Delete => {
                let removed = self.tasks.write().remove(&key);
                removed.map(|t| Event::TaskRemoved(Box::new(Arc::unwrap_or_clone(t))))
            }
        };
        self.deps.events.publish(event.into_iter().collect());
    }
}

/// Looks up a task for a rule; a missing one is upstream's ResourceNotFound.
fn existing(task: Option<&Task>) -> BbsResult<&Task> {
    task.ok_or(BbsError::NotFound)
}

/// Runs `after` on the actor's dependencies once a change has committed.
fn then_after<R: Unpin + 'static>(
    actor: &TaskActor,
    future: ResponseActFuture<TaskActor, BbsResult<R>>,
    after: impl FnOnce(&TaskActorDeps, &R) + Unpin + 'static,
) -> ResponseActFuture<TaskActor, BbsResult<R>> {
    use actix::ActorFutureExt;
    let deps = Arc::clone(&actor.deps);
    Box::pin(future.map(move |result, _, _| {
        if let Ok(outcome) = &result {
            after(&deps, outcome);
        }
        result
    }))
}

impl Handler<DesireTask> for TaskActor {
    type Result = ResponseActFuture<Self, BbsResult<()>>;

    fn handle(&mut self, msg: DesireTask, _: &mut Self::Context) -> Self::Result {
        let DesireTask {
            guid,
            domain,
            definition,
            trace_id,
        } = msg;
        let task = rules::desired(guid.clone(), domain, definition, now_nanos());
        let created = task.clone();
        let desired = mutate(self, guid, move |current| match current {
            Some(_) => Err(BbsError::Exists),
            None => Ok((Change::Insert(task), ())),
        });
        then_after(self, desired, move |deps, ()| {
            let auctioneer = deps.auctioneer.clone();
            let log = deps.log.clone();
            let request = TaskStartRequest::for_task(&created);
            actix::spawn(async move {
                if let Err(e) = auctioneer
                    .request_task_auctions(std::slice::from_ref(&request), &trace_id)
                    .await
                {
                    warn!(log, "task-auction-request-failed"; "task_guid" => &request.task_guid, "error" => %e);
                }
            });
        })
    }
}

impl Handler<StartTask> for TaskActor {
    type Result = ResponseActFuture<Self, BbsResult<bool>>;

    fn handle(&mut self, msg: StartTask, _: &mut Self::Context) -> Self::Result {
        let now = now_nanos();
        let cell_id = msg.cell_id.clone();
        let started = mutate(self, msg.guid, move |current| {
            match rules::start(existing(current)?, &msg.cell_id, now)? {
                rules::Start::AlreadyRunning => Ok((Change::Unchanged, false)),
                rules::Start::Started(next) => Ok((Change::Update(*next), true)),
            }
        });
        Box::pin(actix::ActorFutureExt::map(started, move |r, _, _| {
            if let Ok(true) = r {
                // Upstream's per-cell TasksStarted.
                metrics::counter!("bbs_tasks_started_total", "cell_id" => cell_id).increment(1);
            }
            r
        }))
    }
}

impl Handler<CancelTask> for TaskActor {
    type Result = ResponseActFuture<Self, BbsResult<()>>;

    fn handle(&mut self, msg: CancelTask, _: &mut Self::Context) -> Self::Result {
        let now = now_nanos();
        let cancelled = mutate(self, msg.guid, move |current| {
            let task = existing(current)?;
            let next = rules::cancel(task, now)?;
            let was_on = (rules::state(task) == State::Running).then(|| task.cell_id.clone());
            Ok((Change::Update(next.clone()), (next, was_on)))
        });
        let cancelled = then_after(self, cancelled, |deps, (task, was_on)| {
            TaskActor::queue_callback(deps, task);
            if let Some(cell_id) = was_on.clone() {
                let (cells, rep, log, guid) = (
                    deps.cells.clone(),
                    deps.rep.clone(),
                    deps.log.clone(),
                    task.task_guid.clone(),
                );
                actix::spawn(async move {
                    match cells.cell(&cell_id).await {
                        Ok(None) => {
                            info!(log, "task-cancel-cell-unknown"; "task_guid" => &guid, "cell_id" => &cell_id)
                        }
                        Err(e) => {
                            warn!(log, "task-cancel-cell-lookup-failed"; "task_guid" => &guid, "cell_id" => &cell_id, "error" => %e)
                        }
                        Ok(Some(cell)) => {
                            if let Err(e) = rep.cancel_task(&cell, &guid).await {
                                warn!(log, "task-cancel-rep-failed"; "task_guid" => &guid, "cell_id" => &cell_id, "error" => %e);
                            }
                        }
                    }
                });
            }
        });
        Box::pin(actix::ActorFutureExt::map(cancelled, |r, _, _| {
            r.map(|_| ())
        }))
    }
}

impl Handler<FailTask> for TaskActor {
    type Result = ResponseActFuture<Self, BbsResult<()>>;

    fn handle(&mut self, msg: FailTask, _: &mut Self::Context) -> Self::Result {
        let now = now_nanos();
        let failed = mutate(self, msg.guid, move |current| {
            let next = rules::fail(existing(current)?, &msg.reason, now)?;
            Ok((Change::Update(next.clone()), next))
        });
        let failed = then_after(self, failed, TaskActor::queue_callback);
        Box::pin(actix::ActorFutureExt::map(failed, |r, _, _| r.map(|_| ())))
    }
}

impl Handler<RejectTask> for TaskActor {
    type Result = ResponseActFuture<Self, BbsResult<()>>;

    fn handle(&mut self, msg: RejectTask, _: &mut Self::Context) -> Self::Result {
        let now = now_nanos();
        let max = self.deps.max_task_retries;
        let rejected = mutate(self, msg.guid, move |current| {
            let next = rules::reject(existing(current)?, &msg.reason, max, now)?;
            Ok((Change::Update(next.clone()), next))
        });
        let rejected = then_after(self, rejected, |deps, task| {
            if rules::state(task) == State::Completed {
                TaskActor::queue_callback(deps, task);
            }
        });
        Box::pin(actix::ActorFutureExt::map(rejected, |r, _, _| {
            r.map(|_| ())
        }))
    }
}

impl Handler<CompleteTask> for TaskActor {
    type Result = ResponseActFuture<Self, BbsResult<()>>;

    fn handle(&mut self, msg: CompleteTask, _: &mut Self::Context) -> Self::Result {
        let now = now_nanos();
        let cell_id = msg.cell_id.clone();
        let completed = mutate(self, msg.guid, move |current| {
            let next = rules::complete(
                existing(current)?,
                &msg.cell_id,
                msg.failed,
                &msg.failure_reason,
                &msg.result,
                now,
            )?;
            Ok((Change::Update(next.clone()), next))
        });
        let completed = then_after(self, completed, TaskActor::queue_callback);
        Box::pin(actix::ActorFutureExt::map(completed, move |r, _, _| {
            // Upstream's per-cell TasksSucceeded / TasksFailed.
            if let Ok(task) = &r {
                let name = if task.failed {
                    "bbs_tasks_failed_total"
                } else {
                    "bbs_tasks_succeeded_total"
                };
                metrics::counter!(name, "cell_id" => cell_id).increment(1);
            }
            r.map(|_| ())
        }))
    }
}

impl Handler<ResolvingTask> for TaskActor {
    type Result = ResponseActFuture<Self, BbsResult<Task>>;

    fn handle(&mut self, msg: ResolvingTask, _: &mut Self::Context) -> Self::Result {
        let now = now_nanos();
        mutate(self, msg.guid, move |current| {
            let next = rules::resolving(existing(current)?, now)?;
            Ok((Change::Update(next.clone()), next))
        })
    }
}

impl Handler<DeleteTask> for TaskActor {
    type Result = ResponseActFuture<Self, BbsResult<()>>;

    fn handle(&mut self, msg: DeleteTask, _: &mut Self::Context) -> Self::Result {
        mutate(self, msg.guid, move |current| {
            rules::check_delete(existing(current)?)?;
            Ok((Change::Delete, ()))
        })
    }
}

/// Hands owed callbacks to the pool: periodically those untouched for `kick_task_duration`,
/// and at start-up all of them (no delivery survives a restart).
#[derive(Message)]
#[rtype(result = "BbsResult<usize>")]
pub struct SweepCallbacks {
    pub startup: bool,
}

impl Handler<SweepCallbacks> for TaskActor {
    type Result = BbsResult<usize>;

    fn handle(&mut self, msg: SweepCallbacks, ctx: &mut Self::Context) -> Self::Result {
        let now = now_nanos();
        let kick = self.deps.redelivery_delay.as_nanos().min(i64::MAX as u128) as i64;
        let mut owed = 0;
        let due: Vec<(String, rules::SweepAction)> = self
            .tasks
            .read()
            .values()
            .map(|t| {
                (
                    t.task_guid.clone(),
                    rules::sweep_action(t, now, kick, msg.startup),
                )
            })
            .filter(|(_, action)| *action != rules::SweepAction::Nothing)
            .collect();
        for (guid, action) in due {
            owed += 1;
            match action {
                rules::SweepAction::Deliver => self.deps.callbacks.submit(guid, &self.deps.log),
                _ => {
                    let demoted = mutate(self, guid.clone(), |current| {
                        let demoted = current.and_then(rules::demote_resolving);
                        Ok((demoted.map_or(Change::Unchanged, Change::Update), ()))
                    });
                    ctx.spawn(demoted.map(move |result, actor, _| match result {
                        // As upstream: a demoted task with no callback stays Completed.
                        Ok(()) if !actor.record(&guid).is_some_and(|t| rules::wants_callback(&t)) => {}
                        Ok(()) => actor.deps.callbacks.submit(guid, &actor.deps.log),
                        Err(e) => {
                            warn!(actor.deps.log, "task-demote-failed"; "task_guid" => &guid, "error" => %e)
                        }
                    }));
                }
            }
        }
        Ok(owed)
    }
}

/// One task convergence pass (bbs-reference §4.2); answers the task counts by state.
#[derive(Message)]
#[rtype(result = "BbsResult<TaskCounts>")]
pub struct ConvergeTasks {
    pub cells: std::collections::HashSet<String>,
    pub timing: crate::rules::convergence::TaskTiming,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TaskCounts {
    pub pending: usize,
    pub running: usize,
    pub completed: usize,
    pub resolving: usize,
    pub kicked: usize,
    pub pruned: usize,
    /// The changes to apply, one ApplyTaskAction each.
    pub actions: Vec<(String, crate::rules::convergence::TaskAction)>,
}

/// Applies one task convergence action, re-checked against the task now.
#[derive(Message)]
#[rtype(result = "BbsResult<()>")]
pub struct ApplyTaskAction {
    pub guid: String,
    pub action: crate::rules::convergence::TaskAction,
    pub cells: std::sync::Arc<std::collections::HashSet<String>>,
    pub timing: crate::rules::convergence::TaskTiming,
}

impl Handler<ApplyTaskAction> for TaskActor {
    type Result = ResponseActFuture<Self, BbsResult<()>>;

    fn handle(&mut self, msg: ApplyTaskAction, _: &mut Self::Context) -> Self::Result {
        use crate::rules::convergence::apply_task_action;
        let now = now_nanos();
        let applied = mutate(self, msg.guid, move |current| {
            let task = existing(current)?;
            Ok(
                match apply_task_action(task, &msg.action, &msg.cells, now, msg.timing) {
                    None => (Change::Unchanged, None),
                    Some(None) => (Change::Delete, None),
                    Some(Some(next)) => (Change::Update(next.clone()), Some(next)),
                },
            )
        });
        let applied = then_after(self, applied, |deps, outcome| {
            if let Some(task) = outcome {
                if rules::state(task) == State::Completed {
                    TaskActor::queue_callback(deps, task);
                }
            }
        });
        Box::pin(actix::ActorFutureExt::map(applied, |r, _, _| r.map(|_| ())))
    }
}

impl Handler<ConvergeTasks> for TaskActor {
    type Result = BbsResult<TaskCounts>;

    fn handle(&mut self, msg: ConvergeTasks, _: &mut Self::Context) -> Self::Result {
        use crate::rules::convergence::{task_action, TaskAction};
        let now = now_nanos();
        let mut counts = TaskCounts::default();
        let mut kicks = Vec::new();
        let mut work = Vec::new();
        for task in self.tasks.read().values() {
            match rules::state(task) {
                State::Pending => counts.pending += 1,
                State::Running => counts.running += 1,
                State::Completed => counts.completed += 1,
                State::Resolving => counts.resolving += 1,
                State::Invalid => {}
            }
            match task_action(task, &msg.cells, now, msg.timing) {
                None => {}
                Some(TaskAction::Kick) => kicks.push(TaskStartRequest::for_task(task)),
                Some(action) => work.push((task.task_guid.clone(), action)),
            }
        }
        counts.kicked = kicks.len();
        for (_, action) in &work {
            if matches!(action, TaskAction::Delete) {
                counts.pruned += 1;
            } else {
                counts.kicked += 1;
            }
        }
        counts.actions = work;
        if !kicks.is_empty() {
            let (auctioneer, log) = (self.deps.auctioneer.clone(), self.deps.log.clone());
            actix::spawn(async move {
                if let Err(e) = auctioneer.request_task_auctions(&kicks, "").await {
                    warn!(log, "task-convergence-auction-failed"; "error" => %e);
                }
            });
        }
        Ok(counts)
    }
}

use actix::ActorFutureExt as _;

crate::metered_handlers!(TaskActor:
    DesireTask, StartTask, CancelTask, FailTask, RejectTask, CompleteTask, ResolvingTask,
    DeleteTask, SweepCallbacks, ConvergeTasks,
    ApplyTaskAction);

/// The version of every task held, for a standby's catch-up (crate::standby).
#[derive(Message)]
#[rtype(result = "Vec<(String, bbs_store::TaskVersion)>")]
pub struct TaskVersions;

/// Tasks another server wrote or removed, applied without a store write or an event.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct RefreshTasks {
    pub records: Vec<TaskRecord>,
    pub removed: Vec<String>,
}

impl Handler<TaskVersions> for TaskActor {
    type Result = Vec<(String, bbs_store::TaskVersion)>;

    fn handle(&mut self, _: TaskVersions, _: &mut Self::Context) -> Self::Result {
        self.tasks
            .read()
            .iter()
            .map(|(guid, task)| {
                let version = bbs_store::TaskVersion {
                    updated_at: task.updated_at,
                    state: task.state,
                    rejection_count: task.rejection_count,
                };
                (guid.clone(), version)
            })
            .collect()
    }
}

impl Handler<RefreshTasks> for TaskActor {
    type Result = usize;

    fn handle(&mut self, msg: RefreshTasks, _: &mut Self::Context) -> usize {
        let mut applied = 0;
        for guid in msg.removed {
            applied += usize::from(self.tasks.write().remove(&guid).is_some());
        }
        for record in msg.records {
            let guid = record.guid.clone();
            applied += usize::from(self.refresh_one(&guid, Some(record)));
        }
        applied
    }
}

impl TaskActor {
    /// Puts what the store holds for `guid` in memory; whether a task is held afterwards.
    fn refresh_one(&mut self, guid: &str, stored: Option<TaskRecord>) -> bool {
        let Some(record) = stored else {
            self.tasks.write().remove(guid);
            return false;
        };
        match from_record(&self.deps.codec, record) {
            Ok(task) => {
                self.tasks.write().insert(guid.to_owned(), Arc::new(task));
                true
            }
            // What it held before is stale now: not served rather than served wrong.
            Err(e) => {
                metrics::counter!("bbs_records_undecodable_total", "kind" => "task").increment(1);
                warn!(self.deps.log, "task-undecodable-dropped"; "task_guid" => guid, "error" => %e);
                self.tasks.write().remove(guid);
                false
            }
        }
    }
}

crate::metered_handlers!(TaskActor: TaskVersions, RefreshTasks);
