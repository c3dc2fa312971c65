//! LRP operations that span the desired and actual actors: desiring creates instances and
//! asks for their placement, scaling adds or retires instances, a crash that restarts at once
//! asks for a new placement. These are plain async functions over the actors' mailboxes (and
//! the desired table, for reads), so no actor ever waits on another inside its handler.

use slog::{info, warn, Logger};

use bbs_models as m;

use crate::actual_lrps::{
    ActualLrps, CrashLrp, CreateUnclaimed, DeleteUnstarted, InstancesOf, RetireLrp,
};
use crate::auctioneer::{AuctioneerClient, LrpStartRequest};
use crate::desired_lrps::{DesireLrp, DesiredLrpActor, RemoveLrp, UpdateLrp};
use crate::error::{BbsError, BbsResult};
use crate::mailbox::Mailbox;
use crate::rep::{InternalRoute, LrpInstanceUpdate};
use crate::rules::actual_lrps::{self as rules, Instance};
use crate::rules::desired_lrps::DesiredEntry;

/// What the LRP operations need.
#[derive(Clone)]
pub struct Lrps {
    pub desired: Mailbox<DesiredLrpActor>,
    /// The desired LRPs as the actor holds them, for reads outside its mailbox.
    pub desired_table: crate::desired_table::DesiredTable,
    pub actual: ActualLrps,
    pub auctioneer: AuctioneerClient,
    pub cells: crate::cells::Directory,
    pub rep: crate::rep::RepClient,
    pub log: Logger,
}

impl Lrps {
    /// Creates UNCLAIMED instances for `indices` and asks the auctioneer to place the ones
    /// created (existing instances are skipped, as upstream skips them).
    async fn create_and_auction(
        &self,
        entry: &DesiredEntry,
        indices: std::ops::Range<i32>,
        trace_id: &str,
    ) {
        let key = entry.scheduling.desired_lrp_key.clone().unwrap_or_default();
        let shard = self.actual.shard(&key.process_guid);
        let creations = indices.map(|index| {
            let key = m::ActualLrpKey {
                process_guid: key.process_guid.clone(),
                index,
                domain: key.domain.clone(),
            };
            let trace_id = trace_id.to_owned();
            async move { (index, shard.call(CreateUnclaimed { key, trace_id }).await) }
        });
        let mut created = Vec::new();
        for (index, result) in futures::future::join_all(creations).await {
            match result {
                Ok(Ok(())) => created.push(index),
                Ok(Err(e)) | Err(e) => {
                    info!(self.log, "create-unclaimed-skipped"; "process_guid" => &key.process_guid, "index" => index, "reason" => %e)
                }
            }
        }
        self.auction(entry, created, trace_id).await;
    }

    async fn auction(&self, entry: &DesiredEntry, indices: Vec<i32>, trace_id: &str) {
        let request = LrpStartRequest::new(&entry.scheduling, indices);
        if let Err(e) = self
            .auctioneer
            .request_lrp_auctions(std::slice::from_ref(&request), trace_id)
            .await
        {
            warn!(self.log, "lrp-auction-request-failed"; "process_guid" => &request.process_guid, "error" => %e);
        }
    }

    pub async fn desire(&self, lrp: m::DesiredLrp, trace_id: &str) -> BbsResult<()> {
        let entry = self
            .desired
            .call(DesireLrp {
                lrp: Box::new(lrp),
                trace_id: trace_id.to_owned(),
            })
            .await??;
        self.create_and_auction(&entry, 0..entry.instances(), trace_id)
            .await;
        Ok(())
    }

    pub async fn update(
        &self,
        process_guid: String,
        update: m::DesiredLrpUpdate,
        trace_id: &str,
    ) -> BbsResult<()> {
        let updated = self
            .desired
            .call(UpdateLrp {
                process_guid: process_guid.clone(),
                update,
                trace_id: trace_id.to_owned(),
            })
            .await??;
        if updated.instances_changed {
            let (old, new) = (updated.before.instances(), updated.after.instances());
            if new > old {
                self.create_and_auction(&updated.after, old..new, trace_id)
                    .await;
            } else if new < old {
                self.stop_instances_from(&process_guid, new, trace_id).await;
            }
        }
        if updated.internal_routes_changed || updated.metric_tags_changed {
            // Off the request path, as the rep stops are: a slow rep must not hold the API.
            let (lrps, after) = (self.clone(), updated.after);
            actix::spawn(async move { lrps.update_running_instances(&after).await });
        }
        Ok(())
    }

    pub async fn remove(&self, process_guid: String, trace_id: &str) -> BbsResult<()> {
        self.desired
            .call(RemoveLrp {
                process_guid: process_guid.clone(),
                trace_id: trace_id.to_owned(),
            })
            .await??;
        self.stop_instances_from(&process_guid, 0, trace_id).await;
        Ok(())
    }

    /// Tells the reps of the claimed and running instances (not evacuating ones) the LRP's
    /// internal routes and metric tags, after an update changed either. Instances on cells not
    /// present are skipped; rep failures are logged, as upstream's are.
    async fn update_running_instances(&self, entry: &DesiredEntry) {
        let process_guid = entry.process_guid().to_owned();
        let instances = match self
            .actual
            .shard(&process_guid)
            .call(InstancesOf {
                process_guid: process_guid.clone(),
            })
            .await
        {
            Ok(instances) => instances,
            Err(e) => {
                warn!(self.log, "rep-update-list-failed"; "process_guid" => &process_guid, "error" => %e);
                return;
            }
        };
        let internal_routes: Vec<InternalRoute> =
            crate::rules::desired_lrps::internal_routes(entry.scheduling.routes.as_ref())
                .unwrap_or_default()
                .into_iter()
                .map(|r| InternalRoute {
                    hostname: r.hostname,
                })
                .collect();
        for (index, instance) in instances {
            let Some(ordinary) = instance.ordinary.as_ref() else {
                continue;
            };
            if ordinary.state != rules::CLAIMED && ordinary.state != rules::RUNNING {
                continue;
            }
            let instance_key = rules::instance_key_of(ordinary);
            let cell = match self.cells.cell(&instance_key.cell_id).await {
                Ok(Some(cell)) => cell,
                Ok(None) => {
                    info!(self.log, "rep-update-cell-unknown"; "process_guid" => &process_guid, "index" => index);
                    continue;
                }
                Err(e) => {
                    warn!(self.log, "rep-update-cell-lookup-failed"; "process_guid" => &process_guid, "index" => index, "error" => %e);
                    continue;
                }
            };
            let update = LrpInstanceUpdate {
                metric_tags: Some(crate::rules::desired_lrps::resolve_metric_tags(
                    &entry.metric_tags,
                    index,
                    &instance_key.instance_guid,
                )),
                instance_guid: instance_key.instance_guid,
                process_guid: process_guid.clone(),
                index,
                domain: entry.domain().to_owned(),
                internal_routes: Some(internal_routes.clone()),
            };
            if let Err(e) = self.rep.update_lrp_instance(&cell, &update).await {
                warn!(self.log, "rep-update-failed"; "process_guid" => &process_guid, "cell_id" => &cell.cell_id, "error" => %e);
            }
        }
    }

    /// Upstream's "stop instances from N": unstarted instances at or above `from` are deleted;
    /// claimed or running ones are stopped through their cell's rep (the row stays until the
    /// rep removes it). Cells not known are skipped, as upstream skips them.
    async fn stop_instances_from(&self, process_guid: &str, from: i32, trace_id: &str) {
        let shard = self.actual.shard(process_guid);
        let instances = match shard
            .call(InstancesOf {
                process_guid: process_guid.to_owned(),
            })
            .await
        {
            Ok(instances) => instances,
            Err(e) => {
                warn!(self.log, "stop-instances-list-failed"; "process_guid" => process_guid, "error" => %e);
                return;
            }
        };
        for (index, instance) in instances.into_iter().filter(|(i, _)| *i >= from) {
            if unstarted(&instance) {
                let delete = DeleteUnstarted {
                    process_guid: process_guid.to_owned(),
                    index,
                    trace_id: trace_id.to_owned(),
                };
                if let Ok(Err(e)) | Err(e) = shard.call(delete).await {
                    warn!(self.log, "stop-instance-delete-failed"; "process_guid" => process_guid, "index" => index, "error" => %e);
                }
            } else if let Some(running) = instance.ordinary.as_ref().or(instance.suspect.as_ref()) {
                let instance_key = rules::instance_key_of(running);
                match self.cells.cell(&instance_key.cell_id).await {
                    // Upstream skips an instance whose cell is not known; the row stays.
                    Ok(None) => {
                        info!(self.log, "stop-instance-cell-unknown"; "process_guid" => process_guid, "index" => index)
                    }
                    Err(e) => {
                        warn!(self.log, "stop-instance-cell-lookup-failed"; "process_guid" => process_guid, "index" => index, "error" => %e)
                    }
                    Ok(Some(cell)) => {
                        let (rep, log, guid) =
                            (self.rep.clone(), self.log.clone(), process_guid.to_owned());
                        actix::spawn(async move {
                            if let Err(e) = rep
                                .stop_lrp_instance(&cell, &guid, &instance_key.instance_guid)
                                .await
                            {
                                warn!(log, "stop-instance-failed"; "process_guid" => &guid, "cell_id" => &cell.cell_id, "error" => %e);
                            }
                        });
                    }
                }
            }
        }
    }

    /// CrashActualLRP, then a new placement when the instance restarts at once.
    pub async fn crash(&self, request: CrashLrp) -> BbsResult<()> {
        let process_guid = request.key.process_guid.clone();
        let index = request.key.index;
        let restart_now = self.actual.shard(&process_guid).call(request).await??;
        if restart_now {
            let entry = self
                .desired_table
                .get(&process_guid)
                .ok_or(BbsError::NotFound)?;
            self.auction(&entry, vec![index], "").await;
        }
        Ok(())
    }

    /// RetireActualLRP: a running instance's cell is asked to stop it (the rep then removes
    /// it); when the cell is not present the instance is deleted, as upstream does.
    pub async fn retire(&self, key: m::ActualLrpKey, trace_id: &str) -> BbsResult<()> {
        let shard = self.actual.shard(&key.process_guid);
        let retire = RetireLrp {
            key: key.clone(),
            trace_id: trace_id.to_owned(),
        };
        let outcome = shard.call(retire).await??;
        let Some((cell_id, instance_key)) = outcome else {
            return Ok(());
        };
        match self.cells.cell(&cell_id).await? {
            Some(cell) => self
                .rep
                .stop_lrp_instance(&cell, &key.process_guid, &instance_key.instance_guid)
                .await
                .map_err(|e| crate::error::BbsError::Unknown(e.to_string())),
            None => {
                // The cell is gone: nothing will remove the instance but us.
                info!(self.log, "retire-cell-unknown-deleting"; "process_guid" => &key.process_guid, "index" => key.index, "cell_id" => cell_id);
                let remove = crate::actual_lrps::RemoveLrpInstance {
                    process_guid: key.process_guid.clone(),
                    index: key.index,
                    instance_key: Some(instance_key),
                };
                shard.call(remove).await?
            }
        }
    }
}

impl Lrps {
    /// An evacuation request; asks for a placement when the instance needs one.
    pub async fn evacuate(
        &self,
        process_guid: String,
        index: i32,
        request: crate::actual_lrps::EvacuationRequest,
    ) -> BbsResult<crate::actual_lrps::EvacuationAnswer> {
        let shard = self.actual.shard(&process_guid).clone();
        let answer = shard
            .call(crate::actual_lrps::Evacuate {
                process_guid: process_guid.clone(),
                index,
                request,
            })
            .await??;
        if answer.auction {
            if let Some(entry) = self.desired_table.get(&process_guid) {
                self.auction(&entry, vec![index], "").await;
            }
        }
        Ok(answer)
    }

    /// The desired LRP's update strategy and instance count, for evacuate-running.
    pub async fn evacuation_target(&self, process_guid: &str) -> BbsResult<Option<(i32, i32)>> {
        let entry = self.desired_table.get(process_guid);
        Ok(entry.map(|e| (e.update_strategy, e.instances())))
    }
}

fn unstarted(instance: &Instance) -> bool {
    instance
        .ordinary
        .as_ref()
        .is_some_and(|o| o.state == rules::UNCLAIMED || o.state == rules::CRASHED)
}
