//! Storms the rep loop does not drive. `--push-storm N`: thousands of apps pushed at once, N
//! DesireLRPs and N DesireTasks together (bounded only by `--max-in-flight`), checked listed,
//! then taken away the same way (RemoveDesiredLRP, CancelTask); the LRPs are gone afterwards,
//! the cancelled tasks stay COMPLETED until convergence expires them, as upstream's do, and a
//! run's guids carry its start time so runs repeat on one store. `--cell-loss N`: cells whose
//! presences expire. Each phase is timed.

use std::sync::Arc;
use std::time::Instant;

use bbs_models as m;
use bbs_models::actual_lrp::Presence;
use futures::stream::{self, StreamExt};

use crate::client::{routes, BbsClient};
use crate::recorder::Recorder;
use crate::workload;

/// What one storm phase did, for the summary.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct StormPhase {
    pub name: String,
    pub requests: usize,
    pub wall_s: f64,
    pub per_second: f64,
}

fn lrp_prefix(tag: &str) -> String {
    format!("storm-lrp-{tag}-")
}

fn task_prefix(tag: &str) -> String {
    format!("storm-task-{tag}-")
}

fn lrp_guid(tag: &str, i: usize) -> String {
    format!("{}{i:06}", lrp_prefix(tag))
}

fn task_guid(tag: &str, i: usize) -> String {
    format!("{}{i:06}", task_prefix(tag))
}

/// One call whose answer matters only as success or failure.
async fn call<Req: prost::Message, Resp: crate::client::Answer>(
    client: &BbsClient,
    route: &'static str,
    request: Req,
) -> Result<(), String> {
    client
        .call::<_, Resp>(route, &request)
        .await
        .map(drop)
        .map_err(|e| e.to_string())
}

/// A small one-off task, as a CF task or staging request would be.
fn task_definition() -> m::TaskDefinition {
    m::TaskDefinition {
        root_fs: "some:rootfs".into(),
        action: Some(m::Action {
            run_action: Some(m::RunAction {
                path: "echo".into(),
                args: vec!["storm".into()],
                user: "vcap".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        memory_mb: 128,
        disk_mb: 128,
        log_guid: "storm".into(),
        log_source: "TASK".into(),
        ..Default::default()
    }
}

/// Runs `count` calls of `op`, `in_flight` at a time, each timed under `name`.
async fn phase<F, Fut>(
    name: &'static str,
    count: usize,
    in_flight: usize,
    recorder: &Recorder,
    call: F,
) -> StormPhase
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let started = Instant::now();
    stream::iter(0..count)
        .map(|i| {
            let sent = Instant::now();
            let fut = call(i);
            async move {
                match fut.await {
                    Ok(()) => recorder.record(name, sent.elapsed()),
                    Err(e) => recorder.error(name, e),
                }
            }
        })
        .buffer_unordered(in_flight.max(1))
        .collect::<()>()
        .await;
    let wall_s = started.elapsed().as_secs_f64();
    StormPhase {
        name: name.into(),
        requests: count,
        wall_s,
        per_second: count as f64 / wall_s.max(1e-9),
    }
}

/// The push storm: desire, check, remove. Failures are recorded per request; a listing that
/// misses a storm record fails the run.
pub async fn push_storm(
    client: &BbsClient,
    tag: &str,
    count: usize,
    in_flight: usize,
    recorder: &Arc<Recorder>,
) -> Vec<StormPhase> {
    let mut phases = Vec::new();
    // LRPs and tasks together, as a push of many apps and their staging tasks arrives.
    let lrps = phase("storm_desire_lrp", count, in_flight / 2, recorder, |i| {
        let request = m::DesireLrpRequest {
            desired_lrp: Some(workload::desired_lrp(&lrp_guid(tag, i))),
        };
        call::<_, m::DesiredLrpLifecycleResponse>(client, routes::DESIRE_LRP, request)
    });
    let tasks = phase("storm_desire_task", count, in_flight / 2, recorder, |i| {
        let request = m::DesireTaskRequest {
            task_definition: Some(task_definition()),
            task_guid: task_guid(tag, i),
            domain: workload::DOMAIN.into(),
        };
        call::<_, m::TaskLifecycleResponse>(client, routes::DESIRE_TASK, request)
    });
    let (lrps, tasks) = futures::join!(lrps, tasks);
    phases.extend([lrps, tasks]);

    check_listed(client, tag, count, recorder).await;

    let remove = phase("storm_remove_lrp", count, in_flight / 2, recorder, |i| {
        let request = m::RemoveDesiredLrpRequest {
            process_guid: lrp_guid(tag, i),
        };
        call::<_, m::DesiredLrpLifecycleResponse>(client, routes::REMOVE_DESIRED_LRP, request)
    });
    let cancel = phase("storm_cancel_task", count, in_flight / 2, recorder, |i| {
        let request = m::TaskGuidRequest {
            task_guid: task_guid(tag, i),
        };
        call::<_, m::TaskLifecycleResponse>(client, routes::CANCEL_TASK, request)
    });
    let (remove, cancel) = futures::join!(remove, cancel);
    phases.extend([remove, cancel]);
    phases
}

/// Every storm LRP and task must be listed after the storm.
async fn check_listed(client: &BbsClient, tag: &str, count: usize, recorder: &Recorder) {
    let infos = client
        .call::<_, m::DesiredLrpSchedulingInfosResponse>(
            routes::SCHEDULING_INFOS,
            &m::DesiredLrpsRequest {
                domain: workload::DOMAIN.into(),
                ..Default::default()
            },
        )
        .await;
    match infos {
        Ok(r) => {
            let prefix = lrp_prefix(tag);
            let listed = r
                .desired_lrp_scheduling_infos
                .iter()
                .filter(|i| {
                    i.desired_lrp_key
                        .as_ref()
                        .is_some_and(|k| k.process_guid.starts_with(&prefix))
                })
                .count();
            if listed != count {
                recorder.fail(format!(
                    "push storm: {listed} of {count} desired LRPs listed"
                ));
            }
        }
        Err(e) => recorder.fail(format!("push storm: listing desired LRPs: {e}")),
    }
    let tasks = client
        .call::<_, m::TasksResponse>(
            routes::TASKS,
            &m::TasksRequest {
                domain: workload::DOMAIN.into(),
                ..Default::default()
            },
        )
        .await;
    match tasks {
        Ok(r) => {
            let prefix = task_prefix(tag);
            let listed = r
                .tasks
                .iter()
                .filter(|t| t.task_guid.starts_with(&prefix))
                .count();
            if listed != count {
                recorder.fail(format!("push storm: {listed} of {count} tasks listed"));
            }
        }
        Err(e) => recorder.fail(format!("push storm: listing tasks: {e}")),
    }
}

/// The cell-loss storm: `lost` cells stop renewing their presences (re-registered with a
/// 1 s TTL, then left to expire) while the other reps keep syncing. Measured from the
/// presences' expiry: until every instance on those cells is SUSPECT (convergence's
/// SuspectAndReplace, which also creates each replacement and asks for its auction), and
/// until every replacement is listed UNCLAIMED. Convergence runs on its interval, as
/// upstream's does (a cell's disappearance does not trigger a pass), so the first figure is at
/// most `convergence_repeat_interval` plus one pass. The world is changed afterwards: this is
/// the last thing a run does.
pub async fn cell_loss(
    client: BbsClient,
    lost: Vec<usize>,
    instances: usize,
    guids: std::collections::HashSet<String>,
    recorder: Arc<Recorder>,
) -> Vec<StormPhase> {
    let (client, recorder) = (&client, &*recorder);
    const TTL_SECONDS: u32 = 1;
    const GIVE_UP: std::time::Duration = std::time::Duration::from_secs(180);
    let registered = Instant::now();
    for &cell in &lost {
        let request = m::RegisterCellRequest {
            cell_presence: Some(workload::cell_presence(cell)),
            ttl_seconds: TTL_SECONDS,
        };
        if let Err(e) = client
            .call::<_, m::RegisterCellResponse>(routes::REGISTER_CELL, &request)
            .await
        {
            recorder.fail(format!("cell loss: re-registering cell-{cell}: {e}"));
            return Vec::new();
        }
    }
    let expired = registered + std::time::Duration::from_secs(u64::from(TTL_SECONDS));
    let mut phases = Vec::new();
    let suspect = Presence::Suspect as i32;
    loop {
        let polls = lost.iter().map(|&cell| {
            let request = m::ActualLrpsRequest {
                cell_id: workload::World::cell_id(cell),
                ..Default::default()
            };
            async move {
                client
                    .call::<_, m::ActualLrpsResponse>(routes::ACTUAL_LRPS, &request)
                    .await
                    .map(|r| {
                        r.actual_lrps
                            .iter()
                            .filter(|a| a.presence == suspect)
                            .count()
                    })
            }
        });
        let mut suspects = 0;
        for poll in futures::future::join_all(polls).await {
            match poll {
                Ok(n) => suspects += n,
                Err(e) => recorder.error("cell_loss_poll", e.to_string()),
            }
        }
        if suspects >= instances {
            let wall_s = expired.elapsed().as_secs_f64();
            phases.push(StormPhase {
                name: "cell_loss_expiry_to_all_suspect".into(),
                requests: instances,
                wall_s,
                per_second: instances as f64 / wall_s.max(1e-9),
            });
            break;
        }
        if registered.elapsed() > GIVE_UP {
            recorder.fail(format!(
                "cell loss: {suspects} of {instances} instances SUSPECT after {GIVE_UP:?}"
            ));
            return phases;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    // Every lost instance has its replacement: an ordinary row, UNCLAIMED until an auction
    // places it (no auctioneer answers here).
    let all = client
        .call::<_, m::ActualLrpsResponse>(
            routes::ACTUAL_LRPS,
            &m::ActualLrpsRequest {
                domain: workload::DOMAIN.into(),
                ..Default::default()
            },
        )
        .await;
    match all {
        Ok(r) => {
            let replaced = r
                .actual_lrps
                .iter()
                .filter(|a| a.presence == Presence::Ordinary as i32 && a.state == "UNCLAIMED")
                .filter(|a| {
                    a.actual_lrp_key
                        .as_ref()
                        .is_some_and(|k| guids.contains(&k.process_guid))
                })
                .count();
            let wall_s = expired.elapsed().as_secs_f64();
            phases.push(StormPhase {
                name: "cell_loss_expiry_to_replacements_listed".into(),
                requests: replaced,
                wall_s,
                per_second: replaced as f64 / wall_s.max(1e-9),
            });
            if replaced != instances {
                recorder.fail(format!(
                    "cell loss: {replaced} of {instances} lost instances have an UNCLAIMED replacement"
                ));
            }
        }
        Err(e) => recorder.fail(format!("cell loss: listing actual LRPs: {e}")),
    }
    phases
}
