//! `--flood-rate R`: an open-loop flood after the trials. Calls are made due at a fixed rate
//! whether or not earlier ones were answered, as many clients that do not wait for each other
//! would send them, so a server that cannot keep up meets a growing backlog rather than a
//! closed loop that slows down with it (docs/reliability.md, "Overload").
//!
//! The calls are the rep loop's: Start re-asserts of running instances (no write), and a share
//! (`--flood-claims`, percent; 1 as the rep loop's) a claim followed by its start (two real
//! writes), so a flood can be aimed at the store as well as at the server. Nothing is retried:
//! an HTTP 503 is counted as a refusal, timed from the refused request's sending (how fast the
//! server said no); an accepted call is timed from when it was due; any other failure is an
//! error. Calls due while `--flood-max-open` are outstanding are not sent and are counted
//! (the load generator's own limit, its file descriptors). Every instance a refused or
//! failed start left CLAIMED is started again afterwards, so later runs find the world as
//! seeded.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bbs_models as m;
use futures::stream::{self, StreamExt};
use tokio::sync::Semaphore;

use crate::client::{routes, BbsClient, CallError};
use crate::recorder::Recorder;
use crate::report::OpReport;
use crate::workload::{self, Slot};

/// The recorder's names: accepted calls timed from when they were due, refusals from the
/// refused request's sending, failures counted.
const ACCEPTED: &str = "flood_accepted";
const REFUSED: &str = "flood_refused";
const FAILED: &str = "flood_failed";

pub struct FloodSettings {
    /// Calls per second the schedule makes due.
    pub rate: f64,
    pub duration: Duration,
    /// Calls outstanding at most; due calls past it are counted, not sent.
    pub max_open: usize,
    /// Percent of calls that are a claim and its start.
    pub claims_percent: f64,
}

/// What the flood offered, what the server did with it, and its memory meanwhile.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct FloodReport {
    pub offered_per_s: f64,
    #[serde(default)]
    pub claims_percent: f64,
    pub seconds: f64,
    /// Calls the schedule made due.
    pub due: u64,
    /// Of those, sent (each is accepted, refused or failed).
    pub sent: u64,
    /// Due while `max_open` were outstanding: the load generator's limit, not the server's.
    pub unsent: u64,
    pub accepted: u64,
    /// Answered HTTP 503 (past the server's `max_pending_requests`).
    pub refused: u64,
    pub failed: u64,
    /// Accepted calls per second of the flood's wall time (sending until the last answer).
    pub accepted_per_s: f64,
    /// The server's resident memory when the flood began, and the most sampled during it.
    pub server_rss_mib_before: f64,
    pub server_rss_mib_max: f64,
    /// Latencies of the accepted calls (from when each was due, a claim and its start
    /// together) and of the refusals (the refused request alone).
    pub accepted_latency: Option<OpReport>,
    pub refused_latency: Option<OpReport>,
}

#[derive(Default)]
struct Tally {
    accepted: AtomicU64,
    refused: AtomicU64,
    failed: AtomicU64,
}

/// Where a flood call ended.
enum Outcome {
    Accepted,
    Refused,
    Failed(String),
}

fn outcome<T>(answer: Result<T, CallError>) -> Outcome {
    match answer {
        Ok(_) => Outcome::Accepted,
        Err(CallError::Status { status: 503, .. }) => Outcome::Refused,
        Err(e) => Outcome::Failed(e.to_string()),
    }
}

/// How one flood call ended: its outcome, when the request it ended with was sent (a
/// refusal is timed from there: how fast the server said no), and whether the instance may
/// have been left CLAIMED.
struct Ended {
    outcome: Outcome,
    last_sent: Instant,
    left_claimed: bool,
}

async fn request(client: &BbsClient, route: &'static str, body: Vec<u8>) -> (Outcome, Instant) {
    let sent = Instant::now();
    let answer = client
        .call_once::<m::ActualLrpLifecycleResponse>(route, body)
        .await;
    (outcome(answer), sent)
}

/// One flood call: a start re-assert, or a claim and its start.
async fn flood_call(client: &BbsClient, slot: &Slot, claim_first: bool) -> Ended {
    if claim_first {
        let claim = prost::Message::encode_to_vec(&workload::claim_request(slot));
        let (claimed, last_sent) = request(client, routes::CLAIM, claim).await;
        if !matches!(claimed, Outcome::Accepted) {
            // A failed claim may still have landed; a refused one did not.
            let left_claimed = matches!(claimed, Outcome::Failed(_));
            return Ended {
                outcome: claimed,
                last_sent,
                left_claimed,
            };
        }
    }
    let start = prost::Message::encode_to_vec(&workload::start_request(slot));
    let (started, last_sent) = request(client, routes::START, start).await;
    let left_claimed = claim_first && !matches!(started, Outcome::Accepted);
    Ended {
        outcome: started,
        last_sent,
        left_claimed,
    }
}

/// Samples the server's resident memory every 100 ms until `done`.
fn watch_rss(pid: Option<u32>, done: Arc<AtomicBool>) -> tokio::task::JoinHandle<f64> {
    tokio::spawn(async move {
        let mut max: f64 = 0.0;
        while let Some(pid) = pid {
            if let Some((rss, _)) = crate::probes::process_rss_mib(pid) {
                max = max.max(rss);
            }
            if done.load(Ordering::Relaxed) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        max
    })
}

/// Runs the flood over `slots` (every running instance this worker owns).
pub async fn flood(
    client: &BbsClient,
    slots: Arc<Vec<Slot>>,
    settings: &FloodSettings,
    server_pid: Option<u32>,
) -> (FloodReport, Vec<String>) {
    let recorder = Arc::new(Recorder::default());
    let tally = Arc::new(Tally::default());
    let left_claimed: Arc<Mutex<Vec<usize>>> = Arc::default();
    let max_open = u32::try_from(settings.max_open.max(1)).unwrap_or(u32::MAX);
    let open = Arc::new(Semaphore::new(max_open as usize));
    let before = server_pid
        .and_then(crate::probes::process_rss_mib)
        .map_or(0.0, |(rss, _)| rss);
    let done = Arc::new(AtomicBool::new(false));
    let rss = watch_rss(server_pid, Arc::clone(&done));

    let started = Instant::now();
    let (mut due, mut sent, mut unsent) = (0u64, 0u64, 0u64);
    while started.elapsed() < settings.duration && !slots.is_empty() {
        let owed = (settings.rate * started.elapsed().as_secs_f64()) as u64;
        while due < owed {
            let call = due;
            due += 1;
            let Ok(permit) = Arc::clone(&open).try_acquire_owned() else {
                unsent += 1;
                continue;
            };
            sent += 1;
            let drawn = workload::mix(call);
            let index = (drawn % slots.len() as u64) as usize;
            let claim_first = (((drawn >> 32) % 10_000) as f64) < settings.claims_percent * 100.0;
            let (client, slots, recorder, tally, left_claimed) = (
                client.clone(),
                Arc::clone(&slots),
                Arc::clone(&recorder),
                Arc::clone(&tally),
                Arc::clone(&left_claimed),
            );
            // Timed from when the schedule made it due, not from when a runtime thread got to
            // it: a generator that falls behind must not hide the wait (coordinated omission).
            let due_at = started + Duration::from_secs_f64(call as f64 / settings.rate);
            tokio::spawn(async move {
                let _permit = permit;
                let ended = flood_call(&client, &slots[index], claim_first).await;
                match ended.outcome {
                    Outcome::Accepted => {
                        tally.accepted.fetch_add(1, Ordering::Relaxed);
                        recorder.record(ACCEPTED, due_at.elapsed());
                    }
                    Outcome::Refused => {
                        tally.refused.fetch_add(1, Ordering::Relaxed);
                        recorder.record(REFUSED, ended.last_sent.elapsed());
                    }
                    Outcome::Failed(e) => {
                        tally.failed.fetch_add(1, Ordering::Relaxed);
                        recorder.error(FAILED, e);
                    }
                }
                if ended.left_claimed {
                    left_claimed
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push(index);
                }
            });
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // Every outstanding call has answered once all the permits are back.
    let _all = open.acquire_many(max_open).await;
    let wall = started.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    let rss_max = rss.await.unwrap_or(0.0);

    restart_left_claimed(client, &slots, &left_claimed, &recorder).await;

    let accepted = tally.accepted.load(Ordering::Relaxed);
    let (ops, mut failures) = recorder.take();
    if let Some(errors) = ops.get(FAILED).filter(|s| s.errors > 0) {
        failures.push(format!("{} flood calls failed", errors.errors));
    }
    let latency = |name: &str| ops.get(name).map(|stats| OpReport::new(stats, wall));
    let report = FloodReport {
        offered_per_s: settings.rate,
        claims_percent: settings.claims_percent,
        seconds: settings.duration.as_secs_f64(),
        due,
        sent,
        unsent,
        accepted,
        refused: tally.refused.load(Ordering::Relaxed),
        failed: tally.failed.load(Ordering::Relaxed),
        accepted_per_s: accepted as f64 / wall.max(1e-9),
        server_rss_mib_before: before,
        server_rss_mib_max: rss_max,
        accepted_latency: latency(ACCEPTED),
        refused_latency: latency(REFUSED),
    };
    (report, failures)
}

/// Starts again, as the rep would on its next loop (with the Go client's retries), every
/// instance a flood call may have left CLAIMED.
async fn restart_left_claimed(
    client: &BbsClient,
    slots: &[Slot],
    left_claimed: &Mutex<Vec<usize>>,
    recorder: &Recorder,
) {
    let mut indices = std::mem::take(
        &mut *left_claimed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    indices.sort_unstable();
    indices.dedup();
    stream::iter(indices)
        .map(|i| async move {
            let start = workload::start_request(&slots[i]);
            if let Err(e) = client
                .call::<_, m::ActualLrpLifecycleResponse>(routes::START, &start)
                .await
            {
                recorder.fail(format!(
                    "after the flood, {} could not be started again: {e}",
                    slots[i].process_guid
                ));
            }
        })
        .buffer_unordered(64)
        .collect::<()>()
        .await;
}
