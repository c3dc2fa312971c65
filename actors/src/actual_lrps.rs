//! The ActualLRPActor shards own every actual LRP instance: each shard holds the instances of
//! the process guids that hash to it, so the hottest traffic (reps re-asserting instances)
//! spreads over cores. A shard changes an instance only through `rules::actual_lrps`, writes
//! all of that instance's rows in one store batch before answering, and serves reads from
//! memory. Re-asserting an unchanged running instance writes nothing.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use actix::{Actor, ArbiterHandle, Context, Handler, Message, ResponseActFuture};
use futures::future::BoxFuture;
use futures::FutureExt;
use slog::{info, warn, Logger};

use bbs_models as m;
use bbs_models::actual_lrp::Presence;
use bbs_store::{ActualLrpFilter, ActualLrpRecord, ActualLrpWrite, RecordWrite};

use crate::clock::now_nanos;
use crate::codec::Codec;
use crate::error::{BbsError, BbsResult};
use crate::keyed_lock::KeyedLocks;
use crate::lrp_records::{actual_from_record, actual_to_record};
use crate::mailbox::Mailbox;
use crate::rules::actual_lrps::{self as rules, presence_of, Instance, Retire, Running};
use crate::rules::lrp_events::{self, Direct, Emitter};
use crate::storage::StoragePool;
use crate::write_through::{mutate, mutate_reported, Change, OwnsRecords, Unsettled};

pub use crate::instance_table::InstanceId;
use crate::instance_table::{order_key, SharedTable, Table};

#[derive(Message)]
#[rtype(result = "BbsResult<()>")]
pub struct CreateUnclaimed {
    pub key: m::ActualLrpKey,
    /// The desire or update request's `X-Vcap-Request-Id`, for the events.
    pub trace_id: String,
}

#[derive(Message)]
#[rtype(result = "BbsResult<()>")]
pub struct ClaimLrp {
    pub process_guid: String,
    pub index: i32,
    pub instance_key: m::ActualLrpInstanceKey,
}

#[derive(Message)]
#[rtype(result = "BbsResult<()>")]
pub struct StartLrp {
    pub running: Running,
}

/// Answers whether the instance went straight back to UNCLAIMED (and needs an auction).
#[derive(Message)]
#[rtype(result = "BbsResult<bool>")]
pub struct CrashLrp {
    pub key: m::ActualLrpKey,
    pub instance_key: m::ActualLrpInstanceKey,
    pub reason: String,
}

#[derive(Message)]
#[rtype(result = "BbsResult<()>")]
pub struct FailLrp {
    pub key: m::ActualLrpKey,
    pub placement_error: String,
}

#[derive(Message)]
#[rtype(result = "BbsResult<()>")]
pub struct RemoveLrpInstance {
    pub process_guid: String,
    pub index: i32,
    pub instance_key: Option<m::ActualLrpInstanceKey>,
}

/// Retires an instance: deletes it when nothing runs it, or names the cell to stop it on.
#[derive(Message)]
#[rtype(result = "BbsResult<Option<(String, m::ActualLrpInstanceKey)>>")]
pub struct RetireLrp {
    pub key: m::ActualLrpKey,
    /// The request's `X-Vcap-Request-Id` (empty from convergence), for the events.
    pub trace_id: String,
}

/// Deletes the ordinary row of an instance that is not running (scale-down, removal).
#[derive(Message)]
#[rtype(result = "BbsResult<()>")]
pub struct DeleteUnstarted {
    pub process_guid: String,
    pub index: i32,
    /// The update or remove request's `X-Vcap-Request-Id`, for the events.
    pub trace_id: String,
}

/// Every instance of one process guid, for decisions about stopping them.
#[derive(Message)]
#[rtype(result = "Vec<(i32, Instance)>")]
pub struct InstancesOf {
    pub process_guid: String,
}

pub struct ActualLrpActor {
    /// The shard's instances, shared with readers (lists, bulk fetches) that read them under
    /// a read lock outside this mailbox. Only this actor writes, so its own reads never wait.
    table: SharedTable,
    locks: KeyedLocks<InstanceId>,
    storage: StoragePool,
    codec: Codec,
    capacity: usize,
    events: crate::events::EventHub,
    shard_index: usize,
    shard_count: usize,
    unsettled: Unsettled<InstanceId>,
}

impl Actor for ActualLrpActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.capacity);
    }
}

impl ActualLrpActor {
    /// A copy of an instance in `touched` (taken once), for a catch-up to change and put
    /// back; the table keeps serving the original until then.
    /// A stored row as a model; one that does not decode is counted and leaves its slot
    /// empty, since what memory held for it is stale.
    fn decoded(&self, record: &ActualLrpRecord) -> Option<m::ActualLrp> {
        actual_from_record(&self.codec, record)
            .inspect_err(|_| {
                metrics::counter!("bbs_records_undecodable_total", "kind" => "actual_lrp")
                    .increment(1)
            })
            .ok()
    }

    fn detach<'t>(
        &self,
        touched: &'t mut HashMap<InstanceId, Instance>,
        id: InstanceId,
    ) -> &'t mut Instance {
        if !touched.contains_key(&id) {
            let held = self.table.read().get(&id).map(|i| (**i).clone());
            touched.insert(id.clone(), held.unwrap_or_default());
        }
        touched.entry(id).or_default()
    }
}

/// The store writes that take `before` to `after`, row by row.
fn writes(codec: &Codec, before: Option<&Instance>, after: &Instance) -> Vec<ActualLrpWrite> {
    let empty = Instance::default();
    let before = before.unwrap_or(&empty);
    let mut out = Vec::new();
    for presence in [Presence::Ordinary, Presence::Evacuating, Presence::Suspect] {
        match (before.slot(presence), after.slot(presence)) {
            (None, None) => {}
            (None, Some(row)) => out.push(ActualLrpWrite::Insert(actual_to_record(codec, row))),
            (Some(old), Some(row)) if old != row => {
                out.push(ActualLrpWrite::Update(actual_to_record(codec, row)))
            }
            (Some(_), Some(_)) => {}
            (Some(old), None) => {
                out.push(ActualLrpWrite::Delete(actual_to_record(codec, old).key()))
            }
        }
    }
    // Deletes first, so a row moving between presences never collides with itself.
    out.sort_by_key(|w| !matches!(w, ActualLrpWrite::Delete(_)));
    out
}

impl OwnsRecords for ActualLrpActor {
    type Key = InstanceId;
    type Record = Instance;
    type Held<'a> = Arc<Instance>;
    type Report = Report;

    fn locks(&self) -> &KeyedLocks<InstanceId> {
        &self.locks
    }

    fn record(&self, key: &InstanceId) -> Option<Arc<Instance>> {
        self.table.read().get(key).cloned()
    }

    fn persist(
        &self,
        _key: &InstanceId,
        before: Option<&Instance>,
        change: &Change<Instance>,
    ) -> BoxFuture<'static, BbsResult<()>> {
        let empty = Instance::default();
        let after = match change {
            Change::Insert(i) | Change::Update(i) => i,
            Change::Delete => &empty,
            Change::Unchanged => return async { Ok(()) }.boxed(),
        };
        let batch = writes(&self.codec, before, after)
            .into_iter()
            .map(RecordWrite::Actual)
            .collect();
        let storage = self.storage.clone();
        async move { storage.write(batch).await }.boxed()
    }

    type Stored = Vec<ActualLrpRecord>;

    fn unsettled(&mut self) -> &mut Unsettled<InstanceId> {
        &mut self.unsettled
    }

    fn reload(&self, key: &InstanceId) -> BoxFuture<'static, BbsResult<Vec<ActualLrpRecord>>> {
        let filter = ActualLrpFilter {
            process_guids: Some(vec![key.0.clone()]),
            index: Some(key.1),
            ..ActualLrpFilter::default()
        };
        let storage = self.storage.clone();
        async move {
            storage
                .run(move |s| async move { s.actual_lrps(&filter).await })
                .await
        }
        .boxed()
    }

    /// The instance becomes exactly the rows the store holds; a row that does not decode
    /// leaves its slot empty (what was held is stale).
    fn settle(&mut self, key: &InstanceId, stored: Vec<ActualLrpRecord>) {
        let mut instance = Instance::default();
        for record in stored {
            *instance.slot_mut(model_presence(record.presence)) = self.decoded(&record);
        }
        self.table.write().put(key.clone(), Arc::new(instance));
    }

    fn apply(&mut self, key: InstanceId, change: Change<Instance>, report: Report) {
        let new = Arc::new(match change {
            Change::Insert(instance) | Change::Update(instance) => instance,
            Change::Delete | Change::Unchanged => Instance::default(),
        });
        let old = self.table.write().put(key, Arc::clone(&new));
        let empty = Instance::default();
        self.events.publish_traced(
            &report.trace_id,
            lrp_events::events(old.as_deref().unwrap_or(&empty), &new, report.emitter),
        );
    }
}

/// How a change is reported: upstream's emitter for it and the trace id of the request that
/// caused it (empty where upstream sends none).
#[derive(Debug, Default)]
pub struct Report {
    pub emitter: Emitter,
    pub trace_id: String,
}

impl Report {
    fn traced(emitter: Emitter, trace_id: String) -> Report {
        Report { emitter, trace_id }
    }

    fn by(emitter: Emitter) -> Report {
        Report {
            emitter,
            trace_id: String::new(),
        }
    }
}

/// `next` as a change to the instance (an emptied instance is deleted).
fn change_to(next: Instance) -> Change<Instance> {
    if next.is_empty() {
        Change::Delete
    } else {
        Change::Update(next)
    }
}

fn id(process_guid: &str, index: i32) -> InstanceId {
    (process_guid.to_owned(), index)
}

impl Handler<CreateUnclaimed> for ActualLrpActor {
    type Result = ResponseActFuture<Self, BbsResult<()>>;

    fn handle(&mut self, msg: CreateUnclaimed, _: &mut Self::Context) -> Self::Result {
        let now = now_nanos();
        let (key, trace_id) = (msg.key, msg.trace_id);
        mutate_reported(self, id(&key.process_guid, key.index), move |current| {
            let mut next = current.cloned().unwrap_or_default();
            if next.ordinary.is_some() {
                return Err(BbsError::Exists);
            }
            next.ordinary = Some(rules::new_unclaimed(
                key,
                now,
                uuid::Uuid::new_v4().to_string(),
            ));
            let report = Report::traced(Emitter::Lifecycle, trace_id);
            Ok((Change::Update(next), report, ()))
        })
    }
}

impl Handler<ClaimLrp> for ActualLrpActor {
    type Result = ResponseActFuture<Self, BbsResult<()>>;

    fn handle(&mut self, msg: ClaimLrp, _: &mut Self::Context) -> Self::Result {
        let now = now_nanos();
        mutate(self, id(&msg.process_guid, msg.index), move |current| {
            let instance = current.ok_or(BbsError::NotFound)?;
            let change = rules::claim(instance, &msg.instance_key, now)?
                .map_or(Change::Unchanged, change_to);
            Ok((change, ()))
        })
    }
}

impl Handler<StartLrp> for ActualLrpActor {
    type Result = ResponseActFuture<Self, BbsResult<()>>;

    fn handle(&mut self, msg: StartLrp, _: &mut Self::Context) -> Self::Result {
        let now = now_nanos();
        let running = msg.running;
        mutate(
            self,
            id(&running.key.process_guid, running.key.index),
            move |current| {
                let empty = Instance::default();
                let change = rules::start(current.unwrap_or(&empty), &running, now, || {
                    uuid::Uuid::new_v4().to_string()
                })?
                .map_or(Change::Unchanged, change_to);
                Ok((change, ()))
            },
        )
    }
}

impl Handler<CrashLrp> for ActualLrpActor {
    type Result = ResponseActFuture<Self, BbsResult<bool>>;

    fn handle(&mut self, msg: CrashLrp, _: &mut Self::Context) -> Self::Result {
        let now = now_nanos();
        mutate_reported(
            self,
            id(&msg.key.process_guid, msg.key.index),
            move |current| {
                let instance = current.ok_or(BbsError::NotFound)?;
                // A suspect's crash only removes it, which upstream reports as any removal.
                let emitter = match instance.matching(&msg.instance_key).map(presence_of) {
                    Some(Presence::Suspect) => Emitter::Lifecycle,
                    _ => Emitter::Crash,
                };
                match rules::crash(instance, &msg.key, &msg.instance_key, &msg.reason, now)? {
                    None => Ok((Change::Unchanged, Report::default(), false)),
                    Some(crash) => Ok((
                        change_to(crash.after),
                        Report::by(emitter),
                        crash.restart_now,
                    )),
                }
            },
        )
    }
}

impl Handler<FailLrp> for ActualLrpActor {
    type Result = ResponseActFuture<Self, BbsResult<()>>;

    fn handle(&mut self, msg: FailLrp, _: &mut Self::Context) -> Self::Result {
        let now = now_nanos();
        mutate(
            self,
            id(&msg.key.process_guid, msg.key.index),
            move |current| {
                // Upstream answers success when there is no instance to fail.
                let Some(instance) = current.filter(|i| i.ordinary.is_some()) else {
                    return Ok((Change::Unchanged, ()));
                };
                let change = rules::fail(instance, &msg.key, &msg.placement_error, now)?
                    .map_or(Change::Unchanged, change_to);
                Ok((change, ()))
            },
        )
    }
}

impl Handler<RemoveLrpInstance> for ActualLrpActor {
    type Result = ResponseActFuture<Self, BbsResult<()>>;

    fn handle(&mut self, msg: RemoveLrpInstance, _: &mut Self::Context) -> Self::Result {
        mutate(self, id(&msg.process_guid, msg.index), move |current| {
            let instance = current.ok_or(BbsError::NotFound)?;
            Ok((
                change_to(rules::remove(instance, msg.instance_key.as_ref())?),
                (),
            ))
        })
    }
}

impl Handler<RetireLrp> for ActualLrpActor {
    type Result = ResponseActFuture<Self, BbsResult<Option<(String, m::ActualLrpInstanceKey)>>>;

    fn handle(&mut self, msg: RetireLrp, _: &mut Self::Context) -> Self::Result {
        let trace_id = msg.trace_id;
        mutate_reported(
            self,
            id(&msg.key.process_guid, msg.key.index),
            move |current| {
                let instance = current.ok_or(BbsError::NotFound)?;
                let report = Report::traced(Emitter::Lifecycle, trace_id);
                match rules::retire(instance)? {
                    Retire::Delete(after) => Ok((change_to(*after), report, None)),
                    Retire::StopOnCell {
                        cell_id,
                        instance_key,
                    } => Ok((Change::Unchanged, report, Some((cell_id, instance_key)))),
                }
            },
        )
    }
}

impl Handler<DeleteUnstarted> for ActualLrpActor {
    type Result = ResponseActFuture<Self, BbsResult<()>>;

    fn handle(&mut self, msg: DeleteUnstarted, _: &mut Self::Context) -> Self::Result {
        let trace_id = msg.trace_id;
        mutate_reported(self, id(&msg.process_guid, msg.index), move |current| {
            let instance = current.ok_or(BbsError::NotFound)?;
            let running = instance
                .ordinary
                .as_ref()
                .is_some_and(|o| o.state == rules::CLAIMED || o.state == rules::RUNNING);
            let report = Report::traced(Emitter::Direct(Direct::Removed), trace_id);
            if instance.ordinary.is_none() || running {
                return Ok((Change::Unchanged, report, ()));
            }
            let mut next = instance.clone();
            next.ordinary = None;
            Ok((change_to(next), report, ()))
        })
    }
}

impl Handler<InstancesOf> for ActualLrpActor {
    type Result = Vec<(i32, Instance)>;

    fn handle(&mut self, msg: InstancesOf, _: &mut Self::Context) -> Self::Result {
        let table = self.table.read();
        table
            .indices_of(&msg.process_guid)
            .filter_map(|index| {
                let instance = table.get(&(msg.process_guid.clone(), index))?;
                Some((index, (**instance).clone()))
            })
            .collect()
    }
}

/// The convergence actions for this shard's instances.
#[derive(Message)]
#[rtype(result = "Vec<((String, i32), crate::rules::convergence::LrpAction)>")]
pub struct PlanConvergence {
    pub desired: Arc<crate::rules::convergence::DesiredView>,
    pub cells: Arc<HashSet<String>>,
    pub fresh_domains: Arc<HashSet<String>>,
}

/// What applying a convergence action asks of the converger.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    pub auction: bool,
    /// A running instance to stop through its rep: (cell id, instance guid).
    pub stop: Option<(String, String)>,
}

/// Applies one convergence action to one instance, re-checked against it now.
#[derive(Message)]
#[rtype(result = "BbsResult<Applied>")]
pub struct ApplyLrpAction {
    pub process_guid: String,
    pub index: i32,
    pub domain: String,
    pub action: crate::rules::convergence::LrpAction,
    pub cells: Arc<HashSet<String>>,
}

impl Handler<PlanConvergence> for ActualLrpActor {
    type Result = Vec<((String, i32), crate::rules::convergence::LrpAction)>;

    fn handle(&mut self, msg: PlanConvergence, _: &mut Self::Context) -> Self::Result {
        // Desired LRPs of other shards are not this shard's to create.
        let (shards, shard) = (self.shard_count.max(1), self.shard_index);
        crate::rules::convergence::lrp_actions(
            &msg.desired,
            self.table.read().instances(),
            &msg.cells,
            &msg.fresh_domains,
            now_nanos(),
            &|guid| shard_of(guid, shards) == shard,
        )
    }
}

impl Handler<ApplyLrpAction> for ActualLrpActor {
    type Result = ResponseActFuture<Self, BbsResult<Applied>>;

    fn handle(&mut self, msg: ApplyLrpAction, _: &mut Self::Context) -> Self::Result {
        use crate::rules::convergence::LrpAction;
        let now = now_nanos();
        let epoch = uuid::Uuid::new_v4().to_string();
        let key = m::ActualLrpKey {
            process_guid: msg.process_guid.clone(),
            index: msg.index,
            domain: msg.domain.clone(),
        };
        mutate_reported(self, id(&msg.process_guid, msg.index), move |current| {
            let instance = current.cloned().unwrap_or_default();
            let mut next = instance.clone();
            let mut applied = Applied::default();
            let unchanged = |applied| Ok((Change::Unchanged, Report::default(), applied));
            // Convergence's events carry no trace id upstream.
            let emitter = match msg.action {
                LrpAction::CreateMissing => Emitter::Direct(Direct::Created),
                LrpAction::Restart => Emitter::Direct(Direct::Unclaimed),
                LrpAction::SuspectAndReplace => Emitter::Direct(Direct::Suspected),
                LrpAction::PromoteSuspect => Emitter::Direct(Direct::Promoted),
                LrpAction::PruneEvacuating | LrpAction::DeleteSuspect => {
                    Emitter::Direct(Direct::Removed)
                }
                LrpAction::Retire | LrpAction::UpdateRep(_) => Emitter::Lifecycle,
            };
            match msg.action {
                LrpAction::CreateMissing => {
                    if next.ordinary.is_some() {
                        return unchanged(applied);
                    }
                    next.ordinary = Some(rules::new_unclaimed(key, now, epoch));
                    applied.auction = true;
                }
                LrpAction::Restart => {
                    let Some(ordinary) = next.ordinary.as_mut() else {
                        return unchanged(applied);
                    };
                    match ordinary.state.as_str() {
                        rules::UNCLAIMED => applied.auction = true,
                        rules::CRASHED => {
                            ordinary.state = rules::UNCLAIMED.into();
                            ordinary.since = now;
                            rules::bump(ordinary);
                            applied.auction = true;
                        }
                        _ => return unchanged(applied),
                    }
                }
                LrpAction::SuspectAndReplace => {
                    let Some(ordinary) = next.ordinary.take() else {
                        return unchanged(applied);
                    };
                    if next.suspect.is_some()
                        || !(ordinary.state == rules::RUNNING || ordinary.state == rules::CLAIMED)
                    {
                        return unchanged(applied);
                    }
                    let mut suspect = ordinary.clone();
                    suspect.presence = Presence::Suspect as i32;
                    next.suspect = Some(suspect);
                    next.ordinary =
                        Some(rules::new_unclaimed(rules::key_of(&ordinary), now, epoch));
                    applied.auction = true;
                }
                LrpAction::Retire => {
                    let Some(ordinary) = next.ordinary.as_ref() else {
                        return unchanged(applied);
                    };
                    let ik = rules::instance_key_of(ordinary);
                    let running =
                        ordinary.state == rules::RUNNING || ordinary.state == rules::CLAIMED;
                    if running && msg.cells.contains(&ik.cell_id) {
                        applied.stop = Some((ik.cell_id, ik.instance_guid));
                        return unchanged(applied);
                    }
                    next.ordinary = None;
                }
                LrpAction::PruneEvacuating => next.evacuating = None,
                LrpAction::DeleteSuspect => next.suspect = None,
                LrpAction::PromoteSuspect => {
                    let Some(mut suspect) = next.suspect.take() else {
                        return unchanged(applied);
                    };
                    suspect.presence = Presence::Ordinary as i32;
                    next.ordinary = Some(suspect);
                }
                // The converger sends these to the rep itself; no record changes here.
                LrpAction::UpdateRep(_) => return unchanged(applied),
            }
            if next == instance {
                return unchanged(applied);
            }
            Ok((change_to(next), Report::by(emitter), applied))
        })
    }
}

/// Instance counts by state, for upstream's LRP metrics.
#[derive(Debug, Default, Clone, PartialEq, Eq, actix::MessageResponse)]
pub struct LrpCounts {
    pub unclaimed: usize,
    pub claimed: usize,
    pub running: usize,
    pub crashed: usize,
    pub suspect_running: usize,
    pub suspect_claimed: usize,
    /// Process guids with a crashed ordinary instance.
    pub crashing: HashSet<String>,
    /// Cells that suspect rows sit on.
    pub suspect_cells: HashSet<String>,
}

#[derive(Message)]
#[rtype(result = "LrpCounts")]
pub struct CountLrps;

impl Handler<CountLrps> for ActualLrpActor {
    type Result = LrpCounts;

    fn handle(&mut self, _: CountLrps, _: &mut Self::Context) -> Self::Result {
        let mut counts = LrpCounts::default();
        for ((guid, _), instance) in self.table.read().iter() {
            if let Some(o) = &instance.ordinary {
                match o.state.as_str() {
                    rules::UNCLAIMED => counts.unclaimed += 1,
                    rules::CLAIMED => counts.claimed += 1,
                    rules::RUNNING => counts.running += 1,
                    rules::CRASHED => {
                        counts.crashed += 1;
                        counts.crashing.insert(guid.clone());
                    }
                    _ => {}
                }
            }
            if let Some(s) = &instance.suspect {
                let cell = rules::instance_key_of(s).cell_id;
                if !cell.is_empty() {
                    counts.suspect_cells.insert(cell);
                }
                match s.state.as_str() {
                    rules::RUNNING => counts.suspect_running += 1,
                    rules::CLAIMED => counts.suspect_claimed += 1,
                    _ => {}
                }
            }
        }
        counts
    }
}

/// One evacuation request from a draining cell's rep.
pub enum EvacuationRequest {
    RemoveEvacuating(m::ActualLrpInstanceKey),
    Claimed(m::ActualLrpInstanceKey),
    Crashed {
        key: m::ActualLrpKey,
        instance_key: m::ActualLrpInstanceKey,
        reason: String,
    },
    Stopped(m::ActualLrpInstanceKey),
    Running {
        running: Running,
        /// The desired LRP's (update strategy, instances), if it exists.
        desired: Option<(i32, i32)>,
    },
}

/// What an evacuation answered: keep the container, auction the instance, and any error.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct EvacuationAnswer {
    pub keep_container: bool,
    pub auction: bool,
    pub error: Option<BbsError>,
}

#[derive(Message)]
#[rtype(result = "BbsResult<EvacuationAnswer>")]
pub struct Evacuate {
    pub process_guid: String,
    pub index: i32,
    pub request: EvacuationRequest,
}

impl Handler<Evacuate> for ActualLrpActor {
    type Result = ResponseActFuture<Self, BbsResult<EvacuationAnswer>>;

    fn handle(&mut self, msg: Evacuate, _: &mut Self::Context) -> Self::Result {
        use crate::rules::evacuation::{self as evac, DesiredForEvacuation, Evacuated};
        let now = now_nanos();
        // The LRP's own instances, through the per-guid index rather than a shard scan.
        let running_count = {
            let table = self.table.read();
            table
                .indices_of(&msg.process_guid)
                .filter(|index| {
                    table
                        .get(&(msg.process_guid.clone(), *index))
                        .and_then(|i| i.ordinary.as_ref())
                        .is_some_and(|o| o.state == rules::RUNNING)
                })
                .count() as i32
        };
        let request = msg.request;
        mutate_reported(self, id(&msg.process_guid, msg.index), move |current| {
            let instance = current.cloned().unwrap_or_default();
            let answer = |e: Evacuated| {
                let change = e.after.map_or(Change::Unchanged, change_to);
                (
                    change,
                    Report::by(e.emitter),
                    EvacuationAnswer {
                        keep_container: e.keep_container,
                        auction: e.auction,
                        error: None,
                    },
                )
            };
            Ok(match request {
                EvacuationRequest::RemoveEvacuating(ik) => (
                    change_to(evac::remove_evacuating(&instance, &ik)?),
                    Report::default(),
                    EvacuationAnswer::default(),
                ),
                EvacuationRequest::Claimed(ik) => match evac::evacuate_claimed(&instance, &ik, now)
                {
                    Ok(e) => answer(e),
                    Err((keep_container, error)) => (
                        Change::Unchanged,
                        Report::default(),
                        EvacuationAnswer {
                            keep_container,
                            auction: false,
                            error: Some(error),
                        },
                    ),
                },
                EvacuationRequest::Crashed {
                    key,
                    instance_key,
                    reason,
                } => answer(evac::evacuate_crashed(
                    &instance,
                    &key,
                    &instance_key,
                    &reason,
                    now,
                )?),
                EvacuationRequest::Stopped(ik) => answer(evac::evacuate_stopped(&instance, &ik)?),
                EvacuationRequest::Running { running, desired } => {
                    let desired =
                        desired.map(|(update_strategy, instances)| DesiredForEvacuation {
                            update_strategy,
                            instances,
                            running: running_count,
                        });
                    answer(evac::evacuate_running(
                        &instance,
                        &running,
                        desired,
                        now,
                        || uuid::Uuid::new_v4().to_string(),
                    ))
                }
            })
        })
    }
}

/// The version of every row this shard holds, for a standby's catch-up (crate::standby).
#[derive(Message)]
#[rtype(result = "Vec<(bbs_store::ActualLrpKey, bbs_store::ActualLrpVersion)>")]
pub struct ActualVersions;

/// Rows another server wrote (to decode and hold) or removed, applied without a store write
/// or an event: the store already has them and the events went to that server's subscribers.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct RefreshActual {
    pub records: Vec<bbs_store::ActualLrpRecord>,
    pub removed: Vec<bbs_store::ActualLrpKey>,
}

/// A store presence as the model's.
fn model_presence(presence: bbs_store::Presence) -> Presence {
    match presence {
        bbs_store::Presence::Ordinary => Presence::Ordinary,
        bbs_store::Presence::Evacuating => Presence::Evacuating,
        bbs_store::Presence::Suspect => Presence::Suspect,
    }
}

/// A row's version as the store reads it from its columns.
pub fn actual_version(lrp: &m::ActualLrp) -> bbs_store::ActualLrpVersion {
    let tag = lrp.modification_tag.clone().unwrap_or_default();
    bbs_store::ActualLrpVersion {
        modification_tag_epoch: tag.epoch,
        modification_tag_index: tag.index as i32,
        state: lrp.state.clone(),
        since: lrp.since,
    }
}

impl Handler<ActualVersions> for ActualLrpActor {
    type Result = Vec<(bbs_store::ActualLrpKey, bbs_store::ActualLrpVersion)>;

    fn handle(&mut self, _: ActualVersions, _: &mut Self::Context) -> Self::Result {
        let table = self.table.read();
        let mut out = Vec::with_capacity(table.len());
        for ((guid, index), instance) in table.iter() {
            for presence in [
                bbs_store::Presence::Ordinary,
                bbs_store::Presence::Evacuating,
                bbs_store::Presence::Suspect,
            ] {
                if let Some(lrp) = instance.slot(model_presence(presence)) {
                    let key = bbs_store::ActualLrpKey {
                        process_guid: guid.clone(),
                        index: *index,
                        presence,
                    };
                    out.push((key, actual_version(lrp)));
                }
            }
        }
        out
    }
}

impl Handler<RefreshActual> for ActualLrpActor {
    type Result = usize;

    fn handle(&mut self, msg: RefreshActual, _: &mut Self::Context) -> usize {
        let mut applied = 0;
        // Each touched instance leaves the table and its indexes once, and comes back once.
        let mut touched: HashMap<InstanceId, Instance> = HashMap::new();
        for key in msg.removed {
            let instance = self.detach(&mut touched, id(&key.process_guid, key.index));
            *instance.slot_mut(model_presence(key.presence)) = None;
            applied += 1;
        }
        for record in msg.records {
            let lrp = self.decoded(&record);
            applied += usize::from(lrp.is_some());
            let instance = self.detach(&mut touched, id(&record.process_guid, record.index));
            *instance.slot_mut(model_presence(record.presence)) = lrp;
        }
        let mut table = self.table.write();
        for (id, instance) in touched {
            table.put(id, Arc::new(instance));
        }
        applied
    }
}

crate::metered_handlers!(ActualLrpActor: PlanConvergence, ApplyLrpAction, Evacuate, CountLrps);
crate::metered_handlers!(ActualLrpActor: ActualVersions, RefreshActual);

crate::metered_handlers!(ActualLrpActor:
    CreateUnclaimed, ClaimLrp, StartLrp, CrashLrp, FailLrp, RemoveLrpInstance, RetireLrp,
    DeleteUnstarted, InstancesOf);

/// The shards, addressed by process guid.
#[derive(Clone)]
pub struct ActualLrps {
    shards: Arc<[Mailbox<ActualLrpActor>]>,
    /// Each shard's table, in shard order, for reads outside the mailboxes.
    tables: Arc<[SharedTable]>,
}

fn shard_of(process_guid: &str, shards: usize) -> usize {
    let mut hasher = DefaultHasher::new();
    process_guid.hash(&mut hasher);
    (hasher.finish() % shards.max(1) as u64) as usize
}

impl ActualLrps {
    /// Loads every actual LRP and starts `shards` actors over `arbiters`.
    pub async fn start(
        storage: StoragePool,
        codec: Codec,
        shards: usize,
        capacity: usize,
        arbiters: &[ArbiterHandle],
        log: &Logger,
        events: crate::events::EventHub,
    ) -> BbsResult<ActualLrps> {
        let shards = shards.max(1);
        let reading = std::time::Instant::now();
        let records = storage
            .load(|store| async move { store.actual_lrps(&ActualLrpFilter::default()).await })
            .await?;
        let (read, decoding, count) = (reading.elapsed(), std::time::Instant::now(), records.len());
        let decoder = codec.clone();
        let decoded = crate::load::decode_all(records, move |record| {
            let lrp = actual_from_record(&decoder, &record);
            (record.process_guid, record.index, lrp)
        })
        .await?;
        let mut parts: Vec<HashMap<InstanceId, Instance>> = vec![HashMap::new(); shards];
        for (process_guid, index, lrp) in decoded {
            let lrp = match lrp {
                Ok(lrp) => lrp,
                // A key this server lacks: stop start-up rather than serve without it.
                Err(BbsError::UnknownKeyLabel(label)) => {
                    return Err(BbsError::UnknownKeyLabel(label))
                }
                Err(e) => {
                    metrics::counter!("bbs_records_undecodable_total", "kind" => "actual_lrp")
                        .increment(1);
                    warn!(log, "actual-lrp-undecodable-skipped"; "process_guid" => &process_guid, "index" => index, "error" => %e);
                    continue;
                }
            };
            let part = &mut parts[shard_of(&process_guid, shards)];
            let instance = part.entry(id(&process_guid, index)).or_default();
            let presence = presence_of(&lrp);
            *instance.slot_mut(presence) = Some(lrp);
        }
        info!(log, "loaded"; "kind" => "actual_lrps", "records" => count,
            "read_ms" => read.as_millis() as u64, "decode_ms" => decoding.elapsed().as_millis() as u64);
        let mut tables = Vec::with_capacity(shards);
        let mailboxes: Vec<Mailbox<ActualLrpActor>> = parts
            .into_iter()
            .enumerate()
            .map(|(i, instances)| {
                let mut table = Table::default();
                for (id, instance) in instances {
                    table.put(id, Arc::new(instance));
                }
                let table: SharedTable = Arc::new(parking_lot::RwLock::new(table));
                tables.push(Arc::clone(&table));
                let actor = ActualLrpActor {
                    table,
                    locks: KeyedLocks::default(),
                    storage: storage.clone(),
                    codec: codec.clone(),
                    capacity,
                    events: events.clone(),
                    shard_index: i,
                    shard_count: shards,
                    unsettled: Unsettled::default(),
                };
                let addr = match arbiters.get(i % arbiters.len().max(1)) {
                    Some(arbiter) => ActualLrpActor::start_in_arbiter(arbiter, move |_| actor),
                    None => actor.start(),
                };
                Mailbox::new(addr, "actual_lrps", capacity)
            })
            .collect();
        Ok(ActualLrps {
            shards: mailboxes.into(),
            tables: tables.into(),
        })
    }

    pub fn shards(&self) -> &[Mailbox<ActualLrpActor>] {
        &self.shards
    }

    /// The index in [`Self::shards`] of the shard owning `process_guid`.
    pub fn shard_index(&self, process_guid: &str) -> usize {
        shard_of(process_guid, self.shards.len())
    }

    pub fn shard(&self, process_guid: &str) -> &Mailbox<ActualLrpActor> {
        &self.shards[shard_of(process_guid, self.shards.len())]
    }

    /// Lists across shards (only the owning shard when the filter names one process guid),
    /// each shard read as it stands, without a message: a list never queues behind writes.
    /// A list of a cell or of named LRPs is small and read in place; a wide one (every
    /// instance, or a domain's) copies each shard's rows on a blocking thread, in parallel,
    /// so it holds no HTTP worker for the copy.
    pub async fn list(&self, filter: ActualLrpFilter) -> BbsResult<Vec<m::ActualLrp>> {
        let by_key = |a: &m::ActualLrp, b: &m::ActualLrp| order_key(a).cmp(&order_key(b));
        let mut out = Vec::new();
        if filter.cell_id.is_some() || filter.process_guids.is_some() {
            let targets: Vec<&SharedTable> = match &filter.process_guids {
                Some(guids) if guids.len() == 1 => {
                    vec![&self.tables[self.shard_index(&guids[0])]]
                }
                _ => self.tables.iter().collect(),
            };
            for table in targets {
                out.extend(crate::instance_table::list(table, &filter));
            }
        } else {
            let filter = Arc::new(filter);
            let copies = self.tables.iter().map(|table| {
                let (table, filter) = (Arc::clone(table), Arc::clone(&filter));
                tokio::task::spawn_blocking(move || crate::instance_table::list(&table, &filter))
            });
            for copied in futures::future::join_all(copies).await {
                let rows = copied.map_err(|e| BbsError::Unavailable(e.to_string()))?;
                out.extend(rows);
            }
        }
        out.sort_by(by_key);
        Ok(out)
    }
}

pub use crate::rules::actual_lrps::group;
