//! The DesiredLRPActor owns every desired LRP: loaded at start-up, changed only through
//! `rules::desired_lrps`, written through the storage pool before it answers, read from
//! memory. Rebuilding full DesiredLRPs for reads is left to the callers, off this actor.

use std::collections::HashMap;
use std::sync::Arc;

use actix::{Actor, Context, Handler, Message, ResponseActFuture};
use futures::future::BoxFuture;
use futures::FutureExt;
use slog::{info, warn, Logger};

use bbs_models as m;
use bbs_store::{DesiredLrpFilter, DesiredLrpRecord, RecordWrite, Write};

use crate::clock::now_nanos;
use crate::codec::Codec;
use crate::desired_table::DesiredTable;
use crate::error::{BbsError, BbsResult};
use crate::keyed_lock::KeyedLocks;
use crate::lrp_records::{desired_from_record, desired_to_record};
use crate::mailbox::Mailbox;
use crate::rules::convergence::{Desired, DesiredView};
use crate::rules::desired_lrps::{self as rules, DesiredEntry, Updated};
use crate::storage::StoragePool;
use crate::write_through::{mutate_reported, Change, OwnsRecords, Unsettled};

#[derive(Message)]
#[rtype(result = "BbsResult<DesiredEntry>")]
pub struct DesireLrp {
    pub lrp: Box<m::DesiredLrp>,
    /// The request's `X-Vcap-Request-Id`, carried by the event.
    pub trace_id: String,
}

#[derive(Message)]
#[rtype(result = "BbsResult<Updated>")]
pub struct UpdateLrp {
    pub process_guid: String,
    pub update: m::DesiredLrpUpdate,
    pub trace_id: String,
}

#[derive(Message)]
#[rtype(result = "BbsResult<DesiredEntry>")]
pub struct RemoveLrp {
    pub process_guid: String,
    pub trace_id: String,
}

/// What convergence needs of every desired LRP: counts, internal routes and metric tags,
/// not the run infos nor the route bytes. The actor's view as it stands (shared).
#[derive(Message)]
#[rtype(result = "Arc<DesiredView>")]
pub struct ConvergenceView;

/// The scheduling infos of the named LRPs (the ones convergence auctions), looked up one by
/// one; unknown guids are left out.
#[derive(Message)]
#[rtype(result = "Vec<std::sync::Arc<m::DesiredLrpSchedulingInfo>>")]
pub struct SchedulingInfosOf {
    pub process_guids: Vec<String>,
}

/// The desired instance counts of the named LRPs, now; unknown guids are left out.
#[derive(Message)]
#[rtype(result = "Vec<(String, i32)>")]
pub struct DesiredInstances {
    pub process_guids: Vec<String>,
}

pub struct DesiredLrpActor {
    /// Shared with readers outside the mailbox (crate::desired_table); changed only through
    /// `put` and `take`, which keep `view` in step.
    lrps: DesiredTable,
    /// Convergence's view of every LRP, kept as LRPs change: a pass takes it in O(1). While a
    /// pass holds it, the next change copies it (pointers per LRP) once.
    view: Arc<DesiredView>,
    locks: KeyedLocks<String>,
    storage: StoragePool,
    codec: Codec,
    capacity: usize,
    events: crate::events::EventHub,
    unsettled: Unsettled<String>,
}

impl Actor for DesiredLrpActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.capacity);
    }
}

impl DesiredLrpActor {
    pub async fn start(
        storage: StoragePool,
        codec: Codec,
        capacity: usize,
        log: &Logger,
        events: crate::events::EventHub,
    ) -> BbsResult<(Mailbox<DesiredLrpActor>, DesiredTable)> {
        let reading = std::time::Instant::now();
        let records = storage
            .load(|store| async move { store.desired_lrps(&DesiredLrpFilter::default()).await })
            .await?;
        let (read, decoding) = (reading.elapsed(), std::time::Instant::now());
        let decoder = codec.clone();
        let decoded = crate::load::decode_all(records, move |record| {
            let entry = desired_from_record(&decoder, &record).map(|entry| {
                let view = Arc::new(convergence_view(&entry));
                (entry, view)
            });
            (record.scheduling.process_guid, entry)
        })
        .await?;
        let mut lrps = HashMap::with_capacity(decoded.len());
        let mut view = std::collections::BTreeMap::new();
        for (process_guid, entry) in decoded {
            match entry {
                Ok((entry, converging)) => {
                    view.insert(process_guid.clone(), converging);
                    lrps.insert(process_guid, entry);
                }
                // A key this server lacks: stop start-up rather than serve without it.
                Err(BbsError::UnknownKeyLabel(label)) => {
                    return Err(BbsError::UnknownKeyLabel(label))
                }
                Err(e) => {
                    metrics::counter!("bbs_records_undecodable_total", "kind" => "desired_lrp")
                        .increment(1);
                    warn!(log, "desired-lrp-undecodable-skipped"; "process_guid" => &process_guid, "error" => %e);
                }
            }
        }
        info!(log, "loaded"; "kind" => "desired_lrps", "records" => lrps.len(),
            "read_ms" => read.as_millis() as u64, "decode_ms" => decoding.elapsed().as_millis() as u64);
        let lrps = DesiredTable::new(lrps);
        let actor = DesiredLrpActor {
            lrps: lrps.clone(),
            view: Arc::new(view),
            locks: KeyedLocks::default(),
            storage,
            codec,
            capacity,
            events,
            unsettled: Unsettled::default(),
        };
        Ok((Mailbox::new(actor.start(), "desired_lrps", capacity), lrps))
    }
}

impl OwnsRecords for DesiredLrpActor {
    type Key = String;
    type Record = DesiredEntry;
    type Held<'a> = parking_lot::MappedRwLockReadGuard<'a, DesiredEntry>;
    /// The trace id of the request that made the change.
    type Report = String;

    fn locks(&self) -> &KeyedLocks<String> {
        &self.locks
    }

    fn record(&self, key: &String) -> Option<Self::Held<'_>> {
        self.lrps.entry(key, |entry| entry)
    }

    fn persist(
        &self,
        key: &String,
        _before: Option<&DesiredEntry>,
        change: &Change<DesiredEntry>,
    ) -> BoxFuture<'static, BbsResult<()>> {
        let write = match change {
            Change::Unchanged => return async { Ok(()) }.boxed(),
            Change::Insert(entry) => desired_to_record(&self.codec, entry).map(Write::Insert),
            Change::Update(entry) => desired_to_record(&self.codec, entry).map(Write::Update),
            Change::Delete => Ok(Write::Delete(key.clone())),
        };
        let storage = self.storage.clone();
        async move { storage.write(vec![RecordWrite::Desired(write?)]).await }.boxed()
    }

    type Stored = Option<DesiredLrpRecord>;

    fn unsettled(&mut self) -> &mut Unsettled<String> {
        &mut self.unsettled
    }

    fn reload(&self, key: &String) -> BoxFuture<'static, BbsResult<Option<DesiredLrpRecord>>> {
        let (storage, guid) = (self.storage.clone(), key.clone());
        async move {
            storage
                .run(move |s| async move { s.desired_lrp(&guid).await })
                .await
        }
        .boxed()
    }

    fn settle(&mut self, key: &String, stored: Option<DesiredLrpRecord>) {
        self.refresh_one(key, stored);
    }

    fn apply(&mut self, key: String, change: Change<DesiredEntry>, trace_id: String) {
        use crate::events::Event;
        // Events carry the desired LRP as stored: upstream fills `metrics_guid` from the
        // `source_id` tag in its read routes only.
        let full = |e: &DesiredEntry| Box::new(rules::rebuild(e));
        let event = match change {
            Change::Unchanged => None,
            Change::Insert(entry) => {
                let event = Event::DesiredLrpCreated(full(&entry));
                self.put(key, entry);
                Some(event)
            }
            Change::Update(entry) => {
                let after = full(&entry);
                self.put(key, entry)
                    .map(|before| Event::DesiredLrpChanged(full(&before), after))
            }
            Change::Delete => self.take(&key).map(|e| Event::DesiredLrpRemoved(full(&e))),
        };
        self.events
            .publish_traced(&trace_id, event.into_iter().collect());
    }
}

impl Handler<DesireLrp> for DesiredLrpActor {
    type Result = ResponseActFuture<Self, BbsResult<DesiredEntry>>;

    fn handle(&mut self, msg: DesireLrp, _: &mut Self::Context) -> Self::Result {
        let entry = rules::split(&msg.lrp, uuid::Uuid::new_v4().to_string(), now_nanos());
        let trace_id = msg.trace_id;
        mutate_reported(
            self,
            msg.lrp.process_guid.clone(),
            move |current| match current {
                Some(_) => Err(BbsError::Exists),
                None => Ok((Change::Insert(entry.clone()), trace_id, entry)),
            },
        )
    }
}

impl Handler<UpdateLrp> for DesiredLrpActor {
    type Result = ResponseActFuture<Self, BbsResult<Updated>>;

    fn handle(&mut self, msg: UpdateLrp, _: &mut Self::Context) -> Self::Result {
        let (update, trace_id) = (msg.update, msg.trace_id);
        mutate_reported(self, msg.process_guid, move |current| {
            let updated = rules::update(current.ok_or(BbsError::NotFound)?, &update);
            Ok((Change::Update(updated.after.clone()), trace_id, updated))
        })
    }
}

impl Handler<RemoveLrp> for DesiredLrpActor {
    type Result = ResponseActFuture<Self, BbsResult<DesiredEntry>>;

    fn handle(&mut self, msg: RemoveLrp, _: &mut Self::Context) -> Self::Result {
        let trace_id = msg.trace_id;
        mutate_reported(self, msg.process_guid, move |current| {
            let before = current.ok_or(BbsError::NotFound)?.clone();
            Ok((Change::Delete, trace_id, before))
        })
    }
}

impl Handler<ConvergenceView> for DesiredLrpActor {
    type Result = Arc<DesiredView>;

    fn handle(&mut self, _: ConvergenceView, _: &mut Self::Context) -> Self::Result {
        Arc::clone(&self.view)
    }
}

/// What convergence reads of one desired LRP.
fn convergence_view(entry: &DesiredEntry) -> Desired {
    let internal_routes = rules::internal_routes(entry.scheduling.routes.as_ref())
        .unwrap_or_default()
        .into_iter()
        .map(|r| r.hostname)
        .collect();
    Desired {
        domain: entry.domain().to_owned(),
        instances: entry.instances(),
        internal_routes,
        metric_tags: Arc::clone(&entry.metric_tags),
    }
}

impl DesiredLrpActor {
    /// Holds `entry` under `guid`, returning what it replaces.
    fn put(&mut self, guid: String, entry: DesiredEntry) -> Option<DesiredEntry> {
        Arc::make_mut(&mut self.view).insert(guid.clone(), Arc::new(convergence_view(&entry)));
        self.lrps.write().insert(guid, entry)
    }

    /// Puts what the store holds for `guid` in memory; whether an LRP is held afterwards.
    fn refresh_one(&mut self, guid: &str, stored: Option<DesiredLrpRecord>) -> bool {
        let Some(record) = stored else {
            self.take(guid);
            return false;
        };
        match desired_from_record(&self.codec, &record) {
            Ok(entry) => {
                self.put(guid.to_owned(), entry);
                true
            }
            // What it held before is stale now: not served rather than served wrong.
            Err(_) => {
                metrics::counter!("bbs_records_undecodable_total", "kind" => "desired_lrp")
                    .increment(1);
                self.take(guid);
                false
            }
        }
    }

    /// Drops the LRP under `guid`, returning it.
    fn take(&mut self, guid: &str) -> Option<DesiredEntry> {
        let taken = self.lrps.write().remove(guid)?;
        Arc::make_mut(&mut self.view).remove(guid);
        Some(taken)
    }
}

impl Handler<SchedulingInfosOf> for DesiredLrpActor {
    type Result = Vec<std::sync::Arc<m::DesiredLrpSchedulingInfo>>;

    fn handle(&mut self, msg: SchedulingInfosOf, _: &mut Self::Context) -> Self::Result {
        msg.process_guids
            .iter()
            .filter_map(|guid| self.lrps.read().get(guid).map(|e| e.scheduling.clone()))
            .collect()
    }
}

impl Handler<DesiredInstances> for DesiredLrpActor {
    type Result = Vec<(String, i32)>;

    fn handle(&mut self, msg: DesiredInstances, _: &mut Self::Context) -> Self::Result {
        msg.process_guids
            .into_iter()
            .filter_map(|guid| {
                let instances = self.lrps.read().get(&guid)?.instances();
                Some((guid, instances))
            })
            .collect()
    }
}

crate::metered_handlers!(DesiredLrpActor:
    DesireLrp, UpdateLrp, RemoveLrp, ConvergenceView, SchedulingInfosOf, DesiredInstances);

/// The version of every desired LRP held, for a standby's catch-up (crate::standby).
#[derive(Message)]
#[rtype(result = "Vec<(String, bbs_store::DesiredLrpVersion)>")]
pub struct DesiredVersions;

/// Desired LRPs another server wrote or removed, applied without a store write or an event.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct RefreshDesired {
    pub records: Vec<DesiredLrpRecord>,
    pub removed: Vec<String>,
}

impl Handler<DesiredVersions> for DesiredLrpActor {
    type Result = Vec<(String, bbs_store::DesiredLrpVersion)>;

    fn handle(&mut self, _: DesiredVersions, _: &mut Self::Context) -> Self::Result {
        self.lrps
            .read()
            .iter()
            .map(|(guid, entry)| {
                let tag = entry
                    .scheduling
                    .modification_tag
                    .clone()
                    .unwrap_or_default();
                let version = bbs_store::DesiredLrpVersion {
                    modification_tag_epoch: tag.epoch,
                    modification_tag_index: tag.index as i32,
                    instances: entry.scheduling.instances,
                };
                (guid.clone(), version)
            })
            .collect()
    }
}

impl Handler<RefreshDesired> for DesiredLrpActor {
    type Result = usize;

    fn handle(&mut self, msg: RefreshDesired, _: &mut Self::Context) -> usize {
        let mut applied = 0;
        for guid in msg.removed {
            applied += usize::from(self.take(&guid).is_some());
        }
        for record in msg.records {
            let guid = record.scheduling.process_guid.clone();
            applied += usize::from(self.refresh_one(&guid, Some(record)));
        }
        applied
    }
}

crate::metered_handlers!(DesiredLrpActor: DesiredVersions, RefreshDesired);
