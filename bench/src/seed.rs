//! Seeding through the API, as upstream's benchmark does: per LRP one DesireLRP (1 instance)
//! and one StartActualLRP straight to RUNNING on its cell. Cells are registered with a long
//! TTL first, so convergence does not take their instances for lost.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bbs_models as m;
use futures::future::join_all;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};

use crate::client::{routes, BbsClient};
use crate::recorder::Recorder;
use crate::report::SeedReport;
use crate::workload::{self, World};

/// Presences outlive the run, as upstream's 10-day locket locks do.
pub const CELL_TTL_SECONDS: u32 = 864_000;

pub async fn register_cells(
    client: &BbsClient,
    cells: impl Iterator<Item = usize>,
) -> Result<(), String> {
    for cell in cells {
        let request = m::RegisterCellRequest {
            cell_presence: Some(workload::cell_presence(cell)),
            ttl_seconds: CELL_TTL_SECONDS,
        };
        client
            .call::<_, m::RegisterCellResponse>(routes::REGISTER_CELL, &request)
            .await
            .map_err(|e| format!("registering cell-{cell}: {e}"))?;
    }
    Ok(())
}

pub async fn seed(
    client: &BbsClient,
    world: World,
    workers: usize,
    recorder: &Recorder,
) -> Result<SeedReport, String> {
    register_cells(client, 0..world.cells).await?;
    let domain = m::UpsertDomainRequest {
        domain: workload::DOMAIN.into(),
        ttl: 0,
    };
    client
        .call::<_, m::UpsertDomainResponse>(routes::UPSERT_DOMAIN, &domain)
        .await
        .map_err(|e| format!("upserting the domain: {e}"))?;

    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let desire_errors = Arc::new(AtomicU64::new(0));
    let start_errors = Arc::new(AtomicU64::new(0));
    let bar = ProgressBar::new(world.lrps as u64).with_style(
        ProgressStyle::with_template("seeding {bar:40} {pos}/{len} LRPs, {per_sec}, eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let jobs = (0..workers.max(1)).map(|_| {
        let next = Arc::clone(&next);
        let desire_errors = Arc::clone(&desire_errors);
        let start_errors = Arc::clone(&start_errors);
        let bar = bar.clone();
        async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= world.lrps {
                    break;
                }
                let slot = world.slot(i);
                let desire = m::DesireLrpRequest {
                    desired_lrp: Some(workload::desired_lrp(&slot.process_guid)),
                };
                // A desired LRP left by an earlier seed is fine (upstream counts
                // ResourceExists as success), so this call is timed by hand.
                let sent = Instant::now();
                match client
                    .call::<_, m::DesiredLrpLifecycleResponse>(routes::DESIRE_LRP, &desire)
                    .await
                {
                    Ok(_) => recorder.record("seed_desire_lrp", sent.elapsed()),
                    Err(e) if e.is_resource_exists() => {
                        recorder.record("seed_desire_lrp", sent.elapsed())
                    }
                    Err(e) => {
                        recorder.error("seed_desire_lrp", e.to_string());
                        desire_errors.fetch_add(1, Ordering::Relaxed);
                        bar.inc(1);
                        continue;
                    }
                }
                let start = workload::start_request(&slot);
                if recorder
                    .time(
                        "seed_start_actual_lrp",
                        client.call::<_, m::ActualLrpLifecycleResponse>(routes::START, &start),
                    )
                    .await
                    .is_err()
                {
                    start_errors.fetch_add(1, Ordering::Relaxed);
                }
                bar.inc(1);
            }
        }
    });
    join_all(jobs).await;
    bar.finish_and_clear();
    let duration = started.elapsed().as_secs_f64();
    let report = SeedReport {
        lrps: world.lrps,
        cells: world.cells,
        duration_s: duration,
        lrps_per_s: world.lrps as f64 / duration.max(1e-9),
        desire_errors: desire_errors.load(Ordering::Relaxed),
        start_errors: start_errors.load(Ordering::Relaxed),
    };
    if report.desire_errors + report.start_errors > 0 {
        recorder.fail(format!(
            "seeding: {} DesireLRP and {} StartActualLRP errors",
            report.desire_errors, report.start_errors
        ));
    }
    Ok(report)
}

/// Checks that every cell holds exactly the instances the world puts there, all RUNNING.
pub async fn verify(client: &BbsClient, world: World, recorder: &Recorder) {
    let expected = world.slots_by_cell();
    let checks = futures::stream::iter(expected.iter().enumerate().map(|(cell, slots)| async move {
        let request = m::ActualLrpsRequest {
            cell_id: World::cell_id(cell),
            ..Default::default()
        };
        match client
            .call::<_, m::ActualLrpsResponse>(routes::ACTUAL_LRPS, &request)
            .await
        {
            Err(e) => recorder.fail(format!("seed check of cell-{cell}: {e}")),
            Ok(answer) => {
                let running = answer
                    .actual_lrps
                    .iter()
                    .filter(|a| a.state == "RUNNING")
                    .count();
                if answer.actual_lrps.len() != slots.len() || running != slots.len() {
                    recorder.fail(format!(
                        "seed check: cell-{cell} holds {} instances ({running} running), expected {}",
                        answer.actual_lrps.len(),
                        slots.len()
                    ));
                }
            }
        }
    }));
    checks.buffer_unordered(64).collect::<Vec<()>>().await;
}
