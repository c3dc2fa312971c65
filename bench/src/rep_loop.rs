//! One simulated rep's sync, as the real rep does every 30 s: fetch the cell's actual LRPs
//! (and tasks) and check them, then re-assert every running instance with StartActualLRP,
//! claim a share (the next trial's start flips it back: two real writes), and read a share of
//! records one by one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bbs_models as m;
use futures::StreamExt;
use tokio::sync::Semaphore;

use crate::client::{routes, BbsClient};
use crate::events::Expectations;
use crate::recorder::Recorder;
use crate::workload::{self, Slot, World};

#[derive(Clone, Copy, Debug)]
pub struct LoopSettings {
    /// Percent of instances claimed per trial is half this, as upstream's percent_writes.
    pub percent_writes: f64,
    /// Percent of instances read back one by one (actual LRP by guid and index, and the
    /// desired scheduling info by guid).
    pub percent_reads: f64,
    /// Per-record calls in flight per cell.
    pub per_cell_concurrency: usize,
}

#[derive(Default)]
pub struct TrialCounts {
    pub starts: AtomicU64,
    pub claims: AtomicU64,
    pub reads: AtomicU64,
    pub errors: AtomicU64,
}

pub struct RepContext {
    pub client: BbsClient,
    pub recorder: Arc<Recorder>,
    pub expectations: Arc<Expectations>,
    pub settings: LoopSettings,
    pub in_flight: Arc<Semaphore>,
}

/// A cheap, reproducible draw in [0, 100) per (trial, cell, record).
fn draw(trial: usize, cell: usize, record: usize) -> f64 {
    let mixed = workload::mix(((trial as u64) << 40) ^ ((cell as u64) << 20) ^ record as u64);
    (mixed % 10_000) as f64 / 100.0
}

pub async fn sync_cell(
    ctx: &RepContext,
    trial: usize,
    cell: usize,
    slots: &[Slot],
    counts: &TrialCounts,
) {
    let started = Instant::now();
    let cell_id = World::cell_id(cell);
    let actuals_request = m::ActualLrpsRequest {
        cell_id: cell_id.clone(),
        ..Default::default()
    };
    let tasks_request = m::TasksRequest {
        cell_id: cell_id.clone(),
        ..Default::default()
    };
    let (actuals, tasks) = tokio::join!(
        ctx.recorder.time(
            "rep_bulk_fetch",
            ctx.client
                .call::<_, m::ActualLrpsResponse>(routes::ACTUAL_LRPS, &actuals_request)
        ),
        ctx.recorder.time(
            "rep_task_fetch",
            ctx.client
                .call::<_, m::TasksResponse>(routes::TASKS, &tasks_request)
        ),
    );
    if tasks.is_err() {
        counts.errors.fetch_add(1, Ordering::Relaxed);
    }
    let actuals = match actuals {
        Ok(answer) => answer.actual_lrps,
        Err(e) => {
            counts.errors.fetch_add(1, Ordering::Relaxed);
            ctx.recorder
                .fail(format!("trial {trial}: bulk fetch of {cell_id}: {e}"));
            return;
        }
    };
    if actuals.len() != slots.len() {
        ctx.recorder.fail(format!(
            "trial {trial}: {cell_id} holds {} instances, expected {}",
            actuals.len(),
            slots.len()
        ));
    }
    let by_guid: std::collections::HashMap<&str, &Slot> =
        slots.iter().map(|s| (s.process_guid.as_str(), s)).collect();
    let work = actuals.iter().enumerate().filter_map(|(i, lrp)| {
        let guid = lrp.actual_lrp_key.as_ref()?.process_guid.as_str();
        match by_guid.get(guid) {
            Some(slot) => Some((i, *slot, lrp.state == "RUNNING")),
            None => {
                ctx.recorder.fail(format!(
                    "trial {trial}: {cell_id} holds {guid}, which is not its own"
                ));
                None
            }
        }
    });
    futures::stream::iter(work)
        .for_each_concurrent(
            ctx.settings.per_cell_concurrency.max(1),
            |(i, slot, running)| record_work(ctx, trial, cell, i, slot, running, counts),
        )
        .await;
    ctx.recorder.record("rep_bulk_loop", started.elapsed());
}

async fn record_work(
    ctx: &RepContext,
    trial: usize,
    cell: usize,
    i: usize,
    slot: &Slot,
    running: bool,
    counts: &TrialCounts,
) {
    let Ok(_permit) = ctx.in_flight.acquire().await else {
        return;
    };
    let roll = draw(trial, cell, i);
    if !running {
        ctx.expectations.expect(&slot.instance_guid, "RUNNING");
    }
    let start = workload::start_request(slot);
    counts.starts.fetch_add(1, Ordering::Relaxed);
    if ctx
        .recorder
        .time(
            "rep_start_actual_lrp",
            ctx.client
                .call::<_, m::ActualLrpLifecycleResponse>(routes::START, &start),
        )
        .await
        .is_err()
    {
        counts.errors.fetch_add(1, Ordering::Relaxed);
        if !running {
            ctx.expectations.cancel(&slot.instance_guid, "RUNNING");
        }
        return;
    }
    if roll < ctx.settings.percent_writes / 2.0 {
        ctx.expectations.expect(&slot.instance_guid, "CLAIMED");
        counts.claims.fetch_add(1, Ordering::Relaxed);
        let claim = workload::claim_request(slot);
        if ctx
            .recorder
            .time(
                "rep_claim_actual_lrp",
                ctx.client
                    .call::<_, m::ActualLrpLifecycleResponse>(routes::CLAIM, &claim),
            )
            .await
            .is_err()
        {
            counts.errors.fetch_add(1, Ordering::Relaxed);
            ctx.expectations.cancel(&slot.instance_guid, "CLAIMED");
        }
    }
    // Reads use the other end of the draw so they are independent of the claims.
    if 100.0 - roll <= ctx.settings.percent_reads {
        counts.reads.fetch_add(1, Ordering::Relaxed);
        read_back(ctx, trial, slot, counts).await;
    }
}

async fn read_back(ctx: &RepContext, trial: usize, slot: &Slot, counts: &TrialCounts) {
    let by_index = m::ActualLrpsRequest {
        process_guid: slot.process_guid.clone(),
        optional_index: Some(m::actual_lr_ps_request::OptionalIndex::Index(0)),
        ..Default::default()
    };
    let by_guid = m::DesiredLrpByProcessGuidRequest {
        process_guid: slot.process_guid.clone(),
    };
    let (actual, info) = tokio::join!(
        ctx.recorder.time(
            "rep_read_actual_lrp",
            ctx.client
                .call::<_, m::ActualLrpsResponse>(routes::ACTUAL_LRPS, &by_index)
        ),
        ctx.recorder.time(
            "rep_read_scheduling_info",
            ctx.client
                .call::<_, m::DesiredLrpSchedulingInfoByProcessGuidResponse>(
                    routes::SCHEDULING_INFO,
                    &by_guid
                )
        ),
    );
    match actual {
        Ok(a) if a.actual_lrps.len() == 1 => {}
        Ok(a) => ctx.recorder.fail(format!(
            "trial {trial}: {} index 0 read back {} instances",
            slot.process_guid,
            a.actual_lrps.len()
        )),
        Err(_) => {
            counts.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
    match info {
        Ok(i) if i.desired_lrp_scheduling_info.is_some() => {}
        Ok(_) => ctx.recorder.fail(format!(
            "trial {trial}: {} has no scheduling info",
            slot.process_guid
        )),
        Err(_) => {
            counts.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}
