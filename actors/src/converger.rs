//! The ConvergerActor: every `converge_repeat_interval` (and on demand) it gathers the desired
//! LRPs, the present cells and the fresh domains, asks each actual-LRP shard and the TaskActor
//! for their convergence decisions (pure rules in `rules::convergence`), has the owners apply
//! them through their write-through paths with `convergence_workers` at a time, then sends one
//! batched auction request and the rep stops (bbs-reference §4).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{
    Actor, ActorFutureExt, AsyncContext, Context, Handler, Message, ResponseActFuture, WrapFuture,
};
use futures::StreamExt;
use slog::{info, warn};

use bbs_models as m;

use crate::actual_lrps::{ApplyLrpAction, CountLrps, LrpCounts, PlanConvergence};
use crate::auctioneer::LrpStartRequest;
use crate::desired_lrps::{ConvergenceView, DesiredInstances, SchedulingInfosOf};
use crate::domains::{DomainActor, FreshDomains, PruneExpiredDomains};
use crate::error::BbsResult;
use crate::lrps::Lrps;
use crate::mailbox::Mailbox;
use crate::rep::{InternalRoute, LrpInstanceUpdate};
use crate::rules::convergence::{DesiredView, LrpAction, TaskTiming};
use crate::tasks::{ApplyTaskAction, ConvergeTasks, TaskActor, TaskCounts};

#[derive(Clone, Copy, Debug)]
pub struct ConvergerSettings {
    pub interval: Duration,
    pub timing: TaskTiming,
    pub workers: usize,
}

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ConvergenceReport {
    pub cells: usize,
    pub lrp_actions: BTreeMap<String, usize>,
    pub auctioned: usize,
    pub stopped: usize,
    /// Rep UpdateLRPInstance calls answered 202.
    pub rep_updates: usize,
    pub tasks: TaskCounts,
    pub lrp_counts: LrpCounts,
    pub pruned_domains: usize,
}

#[derive(Message)]
#[rtype(result = "BbsResult<ConvergenceReport>")]
pub struct Converge;

pub struct ConvergerActor {
    lrps: Lrps,
    domains: Mailbox<DomainActor>,
    tasks: Mailbox<TaskActor>,
    settings: ConvergerSettings,
    running: bool,
    active: crate::Activation,
}

impl Actor for ConvergerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(self.settings.interval, |actor, ctx| {
            // Only the lock holder converges (upstream runs no converger while passive).
            if actor.running || !actor.active.is_active() {
                return;
            }
            actor.running = true;
            let pass = converge(
                actor.lrps.clone(),
                actor.domains.clone(),
                actor.tasks.clone(),
                actor.settings,
            );
            ctx.spawn(pass.into_actor(actor).map(|result, actor, _| {
                actor.running = false;
                if let Err(e) = result {
                    warn!(actor.lrps.log, "convergence-failed"; "error" => %e);
                }
            }));
        });
    }
}

impl ConvergerActor {
    pub fn start(
        lrps: Lrps,
        domains: Mailbox<DomainActor>,
        tasks: Mailbox<TaskActor>,
        settings: ConvergerSettings,
        active: crate::Activation,
    ) -> Mailbox<ConvergerActor> {
        let actor = ConvergerActor {
            lrps,
            domains,
            tasks,
            settings,
            running: false,
            active,
        };
        Mailbox::new(actor.start(), "converger", 16)
    }
}

/// LRP actions each of `convergence_workers` keeps in flight. Upstream's workers each wait
/// for one database transaction per action; here actions arriving together share commits
/// (the group commit), so a worker's share is several actions, and a pass that suspects and
/// replaces a lost cell's hundreds of instances takes a few commits rather than one each.
const ACTIONS_PER_WORKER: usize = 16;

fn action_name(action: &LrpAction) -> &'static str {
    match action {
        LrpAction::CreateMissing => "missing",
        LrpAction::Restart => "restart",
        LrpAction::SuspectAndReplace => "suspect",
        LrpAction::Retire => "extra",
        LrpAction::PruneEvacuating => "prune_evacuating",
        LrpAction::DeleteSuspect => "delete_suspect",
        LrpAction::PromoteSuspect => "promote_suspect",
        LrpAction::UpdateRep(_) => "rep_update",
    }
}

async fn converge(
    lrps: Lrps,
    domains: Mailbox<DomainActor>,
    tasks: Mailbox<TaskActor>,
    settings: ConvergerSettings,
) -> BbsResult<ConvergenceReport> {
    let started = Instant::now();
    let presences = lrps.cells.cells().await?;
    let cells: Arc<HashSet<String>> =
        Arc::new(presences.iter().map(|c| c.cell_id.clone()).collect());
    let mut report = ConvergenceReport {
        cells: cells.len(),
        ..Default::default()
    };

    report.tasks = tasks
        .call(ConvergeTasks {
            cells: (*cells).clone(),
            timing: settings.timing,
        })
        .await??;
    let task_work = std::mem::take(&mut report.tasks.actions)
        .into_iter()
        .map(|(guid, action)| {
            let message = ApplyTaskAction {
                guid: guid.clone(),
                action,
                cells: cells.clone(),
                timing: settings.timing,
            };
            let tasks = tasks.clone();
            async move { (guid, tasks.call(message).await) }
        });
    let task_results: Vec<_> = futures::stream::iter(task_work)
        .buffer_unordered(settings.workers.max(1))
        .collect()
        .await;
    for (guid, result) in task_results {
        if let Ok(Err(e)) | Err(e) = result {
            warn!(lrps.log, "convergence-task-action-failed"; "task_guid" => &guid, "error" => %e);
        }
    }

    let tasks_done = started.elapsed();
    let desired = lrps.desired.call(ConvergenceView).await?;
    let pruned_domains = domains.call(PruneExpiredDomains).await?;
    let fresh: Arc<HashSet<String>> =
        Arc::new(domains.call(FreshDomains).await?.into_iter().collect());

    let view_done = started.elapsed();
    // The shards run on their own arbiters: they plan at once.
    let planning = lrps.actual.shards().iter().map(|shard| {
        shard.call(PlanConvergence {
            desired: desired.clone(),
            cells: cells.clone(),
            fresh_domains: fresh.clone(),
        })
    });
    let mut plans = Vec::new();
    for plan in futures::future::join_all(planning).await {
        plans.extend(plan?);
    }
    // The desired view was read before the shards planned, so an LRP desired or scaled up
    // in between has instances the view does not cover. Read those LRPs again before
    // retiring: an instance that existed when its shard planned had its desired LRP written
    // first, so this read sees it.
    let retiring: BTreeSet<String> = plans
        .iter()
        .filter(|(_, action)| *action == LrpAction::Retire)
        .map(|((guid, _), _)| guid.clone())
        .collect();
    if !retiring.is_empty() {
        let current: HashMap<String, i32> = lrps
            .desired
            .call(DesiredInstances {
                process_guids: retiring.into_iter().collect(),
            })
            .await?
            .into_iter()
            .collect();
        plans.retain(|((guid, index), action)| {
            *action != LrpAction::Retire || current.get(guid).is_none_or(|n| index >= n)
        });
    }
    for (_, action) in &plans {
        *report
            .lrp_actions
            .entry(action_name(action).to_owned())
            .or_default() += 1;
    }
    let plan_done = started.elapsed();
    let (rep_updates, plans): (Vec<_>, Vec<_>) = plans
        .into_iter()
        .partition(|(_, action)| matches!(action, LrpAction::UpdateRep(_)));
    let applying = plans.into_iter().map(|((guid, index), action)| {
        let shard = lrps.actual.shard(&guid).clone();
        let domain = desired
            .get(&guid)
            .map(|d| d.domain.clone())
            .unwrap_or_default();
        let cells = cells.clone();
        async move {
            let message = ApplyLrpAction {
                process_guid: guid.clone(),
                index,
                domain,
                action,
                cells,
            };
            (guid, index, shard.call(message).await)
        }
    });
    let applied: Vec<_> = futures::stream::iter(applying)
        .buffer_unordered(settings.workers.max(1) * ACTIONS_PER_WORKER)
        .collect()
        .await;

    let mut auctions: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    let mut stops = Vec::new();
    for (guid, index, result) in applied {
        match result {
            Ok(Ok(outcome)) => {
                if outcome.auction {
                    auctions.entry(guid.clone()).or_default().push(index);
                }
                if let Some((cell, instance_guid)) = outcome.stop {
                    stops.push((cell, guid, instance_guid));
                }
            }
            Ok(Err(e)) | Err(e) => {
                warn!(lrps.log, "convergence-action-failed"; "process_guid" => &guid, "index" => index, "error" => %e)
            }
        }
    }
    let infos = lrps
        .desired
        .call(SchedulingInfosOf {
            process_guids: auctions.keys().cloned().collect(),
        })
        .await?;
    let requests: Vec<LrpStartRequest> = infos
        .iter()
        .filter_map(|info| {
            let guid = &info.desired_lrp_key.as_ref()?.process_guid;
            Some(LrpStartRequest::new(info, auctions.remove(guid)?))
        })
        .collect();
    report.auctioned = requests.iter().map(|r| r.indices.len()).sum();
    if !requests.is_empty() {
        if let Err(e) = lrps.auctioneer.request_lrp_auctions(&requests, "").await {
            warn!(lrps.log, "convergence-auction-failed"; "error" => %e);
        }
    }
    for (cell_id, guid, instance_guid) in stops {
        if let Some(cell) = presences.iter().find(|c| c.cell_id == cell_id) {
            match lrps
                .rep
                .stop_lrp_instance(cell, &guid, &instance_guid)
                .await
            {
                Ok(()) => report.stopped += 1,
                Err(e) => {
                    warn!(lrps.log, "convergence-stop-failed"; "process_guid" => &guid, "cell_id" => &cell_id, "error" => %e)
                }
            }
        }
    }

    report.rep_updates =
        send_rep_updates(&lrps, &presences, &desired, rep_updates, settings.workers).await;

    let apply_done = started.elapsed();
    let mut counts = LrpCounts::default();
    let counting = lrps
        .actual
        .shards()
        .iter()
        .map(|shard| shard.call(CountLrps));
    for c in futures::future::join_all(counting).await {
        let c = c?;
        counts.unclaimed += c.unclaimed;
        counts.claimed += c.claimed;
        counts.running += c.running;
        counts.crashed += c.crashed;
        counts.suspect_running += c.suspect_running;
        counts.suspect_claimed += c.suspect_claimed;
        counts.crashing.extend(c.crashing);
        counts.suspect_cells.extend(c.suspect_cells);
    }
    // Upstream's SuspectCells: the cells whose instances are held as suspects while gone.
    counts.suspect_cells.retain(|cell| !cells.contains(cell));
    metrics::gauge!("bbs_suspect_cells").set(counts.suspect_cells.len() as f64);
    // Upstream's metrics (bbs-reference §9) under Prometheus names: docs/metrics.md.
    metrics::gauge!("bbs_lrps_unclaimed").set(counts.unclaimed as f64);
    metrics::gauge!("bbs_lrps_claimed").set(counts.claimed as f64);
    metrics::gauge!("bbs_lrps_running").set(counts.running as f64);
    metrics::gauge!("bbs_crashed_actual_lrps").set(counts.crashed as f64);
    metrics::gauge!("bbs_crashing_desired_lrps").set(counts.crashing.len() as f64);
    metrics::gauge!("bbs_suspect_running_actual_lrps").set(counts.suspect_running as f64);
    metrics::gauge!("bbs_suspect_claimed_actual_lrps").set(counts.suspect_claimed as f64);
    metrics::gauge!("bbs_lrps_desired").set(
        desired
            .values()
            .map(|d| f64::from(d.instances.max(0)))
            .sum::<f64>(),
    );
    for domain in fresh.iter() {
        metrics::gauge!("bbs_domain", "domain" => domain.clone()).set(1.0);
    }
    report.lrp_counts = counts;
    report.pruned_domains = pruned_domains;
    let elapsed = started.elapsed();
    metrics::gauge!("bbs_convergence_lrp_duration_seconds").set(elapsed.as_secs_f64());
    metrics::counter!("bbs_convergence_lrp_runs_total").increment(1);
    // Tasks converge first in the same pass: upstream's ConvergenceTaskDuration and Runs.
    metrics::gauge!("bbs_convergence_task_duration_seconds").set(tasks_done.as_secs_f64());
    metrics::counter!("bbs_convergence_task_runs_total").increment(1);
    metrics::gauge!("bbs_lrps_missing")
        .set(*report.lrp_actions.get("missing").unwrap_or(&0) as f64);
    metrics::gauge!("bbs_lrps_extra").set(*report.lrp_actions.get("extra").unwrap_or(&0) as f64);
    metrics::gauge!("bbs_present_cells").set(report.cells as f64);
    metrics::gauge!("bbs_tasks_pending").set(report.tasks.pending as f64);
    metrics::gauge!("bbs_tasks_running").set(report.tasks.running as f64);
    metrics::gauge!("bbs_tasks_completed").set(report.tasks.completed as f64);
    metrics::gauge!("bbs_tasks_resolving").set(report.tasks.resolving as f64);
    metrics::counter!("bbs_convergence_tasks_kicked_total").increment(report.tasks.kicked as u64);
    metrics::counter!("bbs_convergence_tasks_pruned_total").increment(report.tasks.pruned as u64);
    // Where a pass's time went, cumulative from its start: tasks converged, the desired
    // view read, the shards' plans made, their actions applied (then the counts).
    info!(lrps.log, "convergence-finished"; "seconds" => elapsed.as_secs_f64(), "auctioned" => report.auctioned, "cells" => report.cells,
        "tasks_done_s" => tasks_done.as_secs_f64(), "view_done_s" => view_done.as_secs_f64(),
        "plan_done_s" => plan_done.as_secs_f64(), "apply_done_s" => apply_done.as_secs_f64());
    Ok(report)
}

/// The drift updates (§4.4 G), `workers` at a time; failures are logged, as upstream's are.
async fn send_rep_updates(
    lrps: &Lrps,
    presences: &[m::CellPresence],
    desired: &DesiredView,
    updates: Vec<((String, i32), LrpAction)>,
    workers: usize,
) -> usize {
    let by_cell: HashMap<&str, &m::CellPresence> =
        presences.iter().map(|c| (c.cell_id.as_str(), c)).collect();
    let calls = updates.into_iter().filter_map(|((guid, index), action)| {
        let LrpAction::UpdateRep(update) = action else {
            return None;
        };
        let cell = (*by_cell.get(update.cell_id.as_str())?).clone();
        let body = LrpInstanceUpdate {
            instance_guid: update.instance_guid,
            domain: desired.get(&guid).map(|d| d.domain.clone()).unwrap_or_default(),
            process_guid: guid,
            index,
            internal_routes: update.internal_routes.map(|hosts| {
                hosts
                    .into_iter()
                    .map(|hostname| InternalRoute { hostname })
                    .collect()
            }),
            metric_tags: update.metric_tags,
        };
        Some(async move {
            let result = lrps.rep.update_lrp_instance(&cell, &body).await;
            if let Err(e) = &result {
                warn!(lrps.log, "convergence-rep-update-failed"; "process_guid" => &body.process_guid, "cell_id" => &cell.cell_id, "error" => %e);
            }
            result.is_ok()
        })
    });
    futures::stream::iter(calls)
        .buffer_unordered(workers.max(1))
        .filter(|ok| futures::future::ready(*ok))
        .count()
        .await
}

impl Handler<Converge> for ConvergerActor {
    type Result = ResponseActFuture<Self, BbsResult<ConvergenceReport>>;

    fn handle(&mut self, _: Converge, _: &mut Self::Context) -> Self::Result {
        let pass = converge(
            self.lrps.clone(),
            self.domains.clone(),
            self.tasks.clone(),
            self.settings,
        );
        Box::pin(pass.into_actor(self))
    }
}

crate::metered_handlers!(ConvergerActor: Converge);
