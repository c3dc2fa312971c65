//! `bbs-bench`: upstream benchmarkbbs's workload against a running BBS, over its HTTP API.
//! See docs/benchmarks.md.

mod client;
mod compare;
mod events;
mod flood;
mod idle;
mod plot;
mod pollers;
mod probes;
mod recorder;
mod rep_loop;
mod report;
mod seed;
mod storms;
mod workload;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use futures::future::join_all;

use crate::client::BbsClient;
use crate::recorder::Recorder;
use crate::rep_loop::{LoopSettings, RepContext, TrialCounts};
use crate::report::{ClientReport, OpReport, Results, ServerReport, TrialReport};
use crate::workload::World;

#[derive(Parser)]
#[command(name = "bbs-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Seed (optionally) and run the rep bulk loops, pollers and event subscriber.
    Run(Box<RunArgs>),
    /// Merge worker processes' results files into one.
    Merge(MergeArgs),
    /// Print a run's headline figures beside a baseline's (the CI regression guard; always
    /// exits 0 when both files read).
    Compare(CompareArgs),
}

#[derive(Args)]
struct CompareArgs {
    /// The committed baseline results file.
    baseline: PathBuf,
    /// This run's results file.
    current: PathBuf,
}

#[derive(Args, Clone)]
struct RunArgs {
    /// The BBS API (https:// with --ca, --cert and --key); several comma-separated addresses
    /// (an active and a passive node) are tried in turn when one refuses the connection.
    #[arg(long, default_value = "http://127.0.0.1:8889")]
    bbs_url: String,
    /// The CA the BBS's certificate is checked against (mutual TLS, with --cert and --key).
    #[arg(long)]
    ca: Option<std::path::PathBuf>,
    /// The client certificate presented to the BBS.
    #[arg(long)]
    cert: Option<std::path::PathBuf>,
    /// The client certificate's private key.
    #[arg(long)]
    key: Option<std::path::PathBuf>,
    /// The server's Prometheus endpoint, for convergence durations; "" to skip.
    #[arg(long, default_value = "http://127.0.0.1:17017/metrics")]
    metrics_url: String,
    /// The server's pid, to report its CPU and resident memory.
    #[arg(long)]
    server_pid: Option<u32>,
    /// A label for the report (sqlite, mysql, postgres, etcd).
    #[arg(long, default_value = "unknown")]
    backend: String,
    /// Single-instance desired LRPs in the world.
    #[arg(long, default_value_t = 2_000)]
    lrps: usize,
    /// Simulated cells (reps).
    #[arg(long, default_value_t = 20)]
    cells: usize,
    /// Seed the world through the API before measuring.
    #[arg(long)]
    seed: bool,
    /// Seed and check, then stop.
    #[arg(long)]
    seed_only: bool,
    /// Concurrent seeding workers.
    #[arg(long, default_value_t = 64)]
    populate_workers: usize,
    #[arg(long, default_value_t = 2)]
    trials: usize,
    /// Start trials this far apart (a real rep syncs every 30s); 0 runs them back to back,
    /// every rep at once. With an interval each rep starts at its own fixed offset within it,
    /// as real reps (and upstream's benchmark, with its random first sleep) spread out.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// Percent of instances written per trial (half claimed, half started back), as
    /// upstream's percent_writes.
    #[arg(long, default_value_t = 2.0)]
    percent_writes: f64,
    /// Percent of instances read back one by one per trial.
    #[arg(long, default_value_t = 2.0)]
    percent_reads: f64,
    /// Per-record calls in flight per simulated rep.
    #[arg(long, default_value_t = 4)]
    per_cell_concurrency: usize,
    /// Per-record calls in flight across the whole process.
    #[arg(long, default_value_t = 1024)]
    max_in_flight: usize,
    /// This process's share of the cells, as INDEX/COUNT (cells where id % COUNT == INDEX).
    /// Worker 0 also runs the global pollers.
    #[arg(long, default_value = "0/1", value_parser = parse_shard)]
    shard: (usize, usize),
    /// Request timeout, as the Go client's.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// How long to wait after the last trial for owed events.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    event_grace: Duration,
    /// Runtime worker threads (default: one per CPU).
    #[arg(long)]
    threads: Option<usize>,
    /// After the trials, desire this many LRPs and as many tasks at once (up to
    /// --max-in-flight requests in flight), check them listed, then remove and cancel them
    /// the same way; each phase is timed (storm_* operations).
    #[arg(long, default_value_t = 0)]
    push_storm: usize,
    /// During the last trial, this many cells (the highest-numbered) stop renewing their
    /// presences and their reps stop; measures the time from the presences' expiry until
    /// every one of their instances is SUSPECT and replaced (cell_loss_* storm phases). The
    /// pollers skip that trial, whose world is changing. Needs a single worker (no --shard).
    #[arg(long, default_value_t = 0)]
    cell_loss: usize,
    /// Keep this many idle keep-alive connections open to the BBS through the trials and the
    /// flood (docs/reliability.md, "Overload").
    #[arg(long, default_value_t = 0)]
    idle_connections: usize,
    /// After the trials, an open-loop flood of the rep loop's calls at this many per second,
    /// sent whether or not earlier ones were answered, none retried (0: no flood). Needs a
    /// single worker.
    #[arg(long, default_value_t = 0.0)]
    flood_rate: f64,
    /// How long the flood sends.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    flood_for: Duration,
    /// Percent of flood calls that are a claim and its start (two writes); the rest are
    /// Start re-asserts, which write nothing.
    #[arg(long, default_value_t = 1.0)]
    flood_claims: f64,
    /// Flood calls outstanding at most (the load generator's own limit: each is a
    /// connection); calls due beyond it are counted as unsent.
    #[arg(long, default_value_t = 8_000)]
    flood_max_open: usize,
    /// The results file.
    #[arg(long, default_value = "bench-results.json")]
    output: PathBuf,
    /// An SVG of the latency distributions.
    #[arg(long)]
    plot: Option<PathBuf>,
}

#[derive(Args)]
struct MergeArgs {
    /// The merged results file.
    #[arg(long)]
    output: PathBuf,
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Worker results files.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
}

fn parse_shard(s: &str) -> Result<(usize, usize), String> {
    let (index, count) = s
        .split_once('/')
        .ok_or_else(|| format!("{s:?} is not INDEX/COUNT"))?;
    let index: usize = index
        .parse()
        .map_err(|_| format!("bad shard index in {s:?}"))?;
    let count: usize = count
        .parse()
        .map_err(|_| format!("bad shard count in {s:?}"))?;
    if count == 0 || index >= count {
        return Err(format!("shard {s:?}: INDEX must be below COUNT"));
    }
    Ok((index, count))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => {
            if args.lrps == 0 || args.cells == 0 {
                eprintln!("bbs-bench: --lrps and --cells must be positive");
                return ExitCode::from(2);
            }
            let mut runtime = tokio::runtime::Builder::new_multi_thread();
            if let Some(threads) = args.threads {
                runtime.worker_threads(threads.max(1));
            }
            let runtime = match runtime.enable_all().build() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("bbs-bench: {e}");
                    return ExitCode::from(2);
                }
            };
            runtime.block_on(run(*args))
        }
        Command::Merge(args) => merge(args),
        Command::Compare(args) => compare(args),
    }
}

fn finish(results: &Results, output: &PathBuf, plot: Option<&PathBuf>) -> ExitCode {
    match serde_json::to_vec_pretty(results) {
        Ok(json) => {
            if let Err(e) = std::fs::write(output, json) {
                eprintln!("bbs-bench: writing {}: {e}", output.display());
                return ExitCode::from(2);
            }
        }
        Err(e) => {
            eprintln!("bbs-bench: {e}");
            return ExitCode::from(2);
        }
    }
    if let Some(path) = plot {
        if let Err(e) = plot::write_svg(results, path) {
            eprintln!("bbs-bench: plotting to {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    print!("{}", report::summary(results));
    println!("results: {}", output.display());
    if results.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn read_results(path: &PathBuf) -> Result<Results, String> {
    std::fs::read(path)
        .map_err(|e| e.to_string())
        .and_then(|bytes| serde_json::from_slice::<Results>(&bytes).map_err(|e| e.to_string()))
        .map_err(|e| format!("reading {}: {e}", path.display()))
}

fn compare(args: CompareArgs) -> ExitCode {
    match (read_results(&args.baseline), read_results(&args.current)) {
        (Ok(baseline), Ok(current)) => {
            println!("compared with {} (informational):", args.baseline.display());
            print!("{}", compare::table(&baseline, &current));
            ExitCode::SUCCESS
        }
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("bbs-bench: {e}");
            ExitCode::from(2)
        }
    }
}

fn merge(args: MergeArgs) -> ExitCode {
    let mut parts = Vec::new();
    for path in &args.inputs {
        match read_results(path) {
            Ok(r) => parts.push(r),
            Err(e) => {
                eprintln!("bbs-bench: {e}");
                return ExitCode::from(2);
            }
        }
    }
    match report::merge(parts) {
        Ok(merged) => finish(&merged, &args.output, args.plot.as_ref()),
        Err(e) => {
            eprintln!("bbs-bench: {e}");
            ExitCode::from(2)
        }
    }
}

/// The cell-loss storm runs in the last trial of a single worker and must leave some cells.
fn check_cell_loss(args: &RunArgs) -> Result<(), String> {
    if args.cell_loss == 0 {
        return Ok(());
    }
    if args.shard.1 != 1 || args.seed_only || args.trials == 0 {
        return Err("--cell-loss needs a single worker (no --shard) and at least one trial".into());
    }
    if args.cell_loss >= args.cells {
        return Err(format!(
            "--cell-loss {} must be below --cells {}",
            args.cell_loss, args.cells
        ));
    }
    Ok(())
}

/// The flood runs after the trials of a single worker, at a rate that makes calls due.
fn check_flood(args: &RunArgs) -> Result<(), String> {
    if args.flood_rate == 0.0 {
        return Ok(());
    }
    if !args.flood_rate.is_finite() || args.flood_rate < 0.0 {
        return Err(format!("--flood-rate {} is not a rate", args.flood_rate));
    }
    if args.shard.1 != 1 || args.seed_only {
        return Err("--flood-rate needs a single worker (no --shard) and no --seed-only".into());
    }
    if !(0.0..=100.0).contains(&args.flood_claims) {
        return Err(format!(
            "--flood-claims {} is not a percent",
            args.flood_claims
        ));
    }
    if args.flood_for.is_zero() || !(1..=1_000_000).contains(&args.flood_max_open) {
        return Err("--flood-for must be positive and --flood-max-open 1 to 1,000,000".into());
    }
    Ok(())
}

/// Seconds since the epoch: tags this run's storm records apart from an earlier run's.
fn started_at_secs(started_at: std::time::SystemTime) -> u64 {
    started_at
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Mutual TLS to the BBS from --ca, --cert and --key: all three, or none.
fn tls_config(args: &RunArgs) -> Result<Option<bbs_tls::rustls::ClientConfig>, String> {
    match (&args.ca, &args.cert, &args.key) {
        (None, None, None) => Ok(None),
        (Some(ca), Some(cert), Some(key)) => bbs_tls::client(
            bbs_tls::ServerCheck::Full(bbs_tls::PemFile::new("--ca", ca)),
            Some(bbs_tls::Identity {
                certificate: bbs_tls::PemFile::new("--cert", cert),
                private_key: bbs_tls::PemFile::new("--key", key),
            }),
        )
        .map(Some)
        .map_err(|e| format!("{}: {e}", e.key())),
        _ => Err("--ca, --cert and --key go together (mutual TLS)".into()),
    }
}

async fn run(args: RunArgs) -> ExitCode {
    let started_at = std::time::SystemTime::now();
    let world = World {
        lrps: args.lrps,
        cells: args.cells,
    };
    let tls = match tls_config(&args) {
        Ok(tls) => tls,
        Err(e) => {
            eprintln!("bbs-bench: {e}");
            return ExitCode::from(2);
        }
    };
    let max_idle = if args.flood_rate > 0.0 {
        (args.max_in_flight * 2).max(args.flood_max_open)
    } else {
        args.max_in_flight * 2
    };
    let client = match BbsClient::new(&args.bbs_url, args.timeout, max_idle, tls.clone()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("bbs-bench: {e}");
            return ExitCode::from(2);
        }
    };
    let recorder = Arc::new(Recorder::default());
    let mut ops = std::collections::BTreeMap::new();
    let mut seed_report = None;
    if args.seed || args.seed_only {
        match seed::seed(&client, world, args.populate_workers, &recorder).await {
            Ok(report) => {
                let seed_ops = recorder.take_ops();
                for (name, stats) in seed_ops {
                    ops.insert(name.to_owned(), OpReport::new(&stats, report.duration_s));
                }
                seed_report = Some(report);
            }
            Err(e) => {
                eprintln!("bbs-bench: {e}");
                return ExitCode::FAILURE;
            }
        }
        seed::verify(&client, world, &recorder).await;
    }
    let (index, count) = args.shard;
    let owned: Vec<usize> = (0..world.cells).filter(|c| c % count == index).collect();
    if let Err(e) = check_cell_loss(&args).and_then(|()| check_flood(&args)) {
        eprintln!("bbs-bench: {e}");
        return ExitCode::from(2);
    }
    let lost_cells: Vec<usize> = (world.cells - args.cell_loss..world.cells).collect();
    let mut storms = Vec::new();

    let mut trials = Vec::new();
    let expectations = Arc::new(events::Expectations::default());
    let mut measure_wall = 0.0;
    let mut convergence = None;
    let mut client_report = ClientReport::default();
    let mut server_report = None;
    let mut flood_report = None;
    let mut idle_report = None;
    let mut flood_failures = Vec::new();
    if !args.seed_only {
        // Renew this worker's presences, so convergence never sees its cells as gone.
        if let Err(e) = seed::register_cells(&client, owned.iter().copied()).await {
            eprintln!("bbs-bench: {e}");
            return ExitCode::FAILURE;
        }
        let rss_now = || {
            args.server_pid
                .and_then(probes::process_rss_mib)
                .map_or(0.0, |(rss, _)| rss)
        };
        let mut idle = None;
        if args.idle_connections > 0 {
            let before = rss_now();
            match idle::open(
                &args.bbs_url,
                tls.as_ref(),
                args.idle_connections,
                args.timeout,
            )
            .await
            {
                Ok(open) => {
                    let report = report::IdleReport {
                        connections: open.opened,
                        server_rss_mib_before: before,
                        server_rss_mib_after: rss_now(),
                        still_open: open.opened,
                    };
                    eprintln!(
                        "{} idle connections open: server resident {:.0} MiB before, {:.0} MiB after",
                        report.connections, report.server_rss_mib_before, report.server_rss_mib_after
                    );
                    idle_report = Some(report);
                    idle = Some(open);
                }
                Err(e) => {
                    eprintln!("bbs-bench: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        let stream = match events::subscribe(
            &client,
            Arc::clone(&expectations),
            Arc::clone(&recorder),
        )
        .await
        {
            Ok(handle) => handle,
            Err(e) => {
                eprintln!("bbs-bench: {e}");
                return ExitCode::FAILURE;
            }
        };
        let passes = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let watcher = (!args.metrics_url.is_empty()).then(|| {
            probes::watch_convergence(
                reqwest::Client::new(),
                args.metrics_url.clone(),
                Arc::clone(&recorder),
                Arc::clone(&passes),
            )
        });
        let all_slots = world.slots_by_cell();
        let ctx = RepContext {
            client: client.clone(),
            recorder: Arc::clone(&recorder),
            expectations: Arc::clone(&expectations),
            settings: LoopSettings {
                percent_writes: args.percent_writes,
                percent_reads: args.percent_reads,
                per_cell_concurrency: args.per_cell_concurrency,
            },
            in_flight: Arc::new(tokio::sync::Semaphore::new(args.max_in_flight.max(1))),
        };
        let meter = probes::CpuMeter::start(args.server_pid);
        let mut cell_loss = None;
        let first = Instant::now();
        for trial in 1..=args.trials {
            let due = first + args.interval * (trial as u32 - 1);
            tokio::time::sleep_until(due.into()).await;
            let counts = TrialCounts::default();
            let started = Instant::now();
            let (ctx, counts, all_slots) = (&ctx, &counts, &all_slots);
            let losing = trial == args.trials && !lost_cells.is_empty();
            let syncing = owned
                .iter()
                .filter(|cell| !(losing && lost_cells.contains(cell)));
            let loops = join_all(syncing.map(|&cell| async move {
                let offset =
                    workload::mix(cell as u64 ^ 0x5eed) % args.interval.as_millis().max(1) as u64;
                tokio::time::sleep_until((started + Duration::from_millis(offset)).into()).await;
                rep_loop::sync_cell(ctx, trial, cell, &all_slots[cell], counts).await
            }));
            let polls = async {
                if index == 0 && !losing {
                    pollers::poll_once(&client, world, &recorder).await;
                }
            };
            if losing {
                // Beside the trial, not part of it: the trial's wall and the CPU meter stop
                // when the other reps finish; the loss is awaited after them.
                let guids: std::collections::HashSet<String> = lost_cells
                    .iter()
                    .flat_map(|&cell| all_slots[cell].iter().map(|s| s.process_guid.clone()))
                    .collect();
                let instances = lost_cells.iter().map(|&cell| all_slots[cell].len()).sum();
                cell_loss = Some(tokio::spawn(storms::cell_loss(
                    client.clone(),
                    lost_cells.clone(),
                    instances,
                    guids,
                    Arc::clone(&recorder),
                )));
            }
            let ((), ()) = tokio::join!(
                async {
                    loops.await;
                },
                polls
            );
            let wall = started.elapsed().as_secs_f64();
            let report = TrialReport {
                trial,
                wall_s: wall,
                cells: owned.len(),
                starts: counts.starts.load(Ordering::Relaxed),
                claims: counts.claims.load(Ordering::Relaxed),
                reads: counts.reads.load(Ordering::Relaxed),
                errors: counts.errors.load(Ordering::Relaxed),
            };
            eprintln!(
                "trial {trial}/{}: {:.2} s, {} starts, {} claims, {} reads, {} errors",
                args.trials, wall, report.starts, report.claims, report.reads, report.errors
            );
            trials.push(report);
        }
        measure_wall = meter.wall();
        let own_cpu = meter.own_cpu();
        client_report = ClientReport {
            cpu_seconds: own_cpu,
            cores_used: own_cpu / measure_wall.max(1e-9),
            machine_busy_percent: meter.machine_busy_percent(),
            refused_retries: client.refused(),
        };
        if let Some(pid) = args.server_pid {
            let cpu = meter.server_cpu().unwrap_or(0.0);
            let (rss, peak) = probes::process_rss_mib(pid).unwrap_or((0.0, 0.0));
            server_report = Some(ServerReport {
                pid,
                rss_mib: rss,
                peak_rss_mib: peak,
                cpu_seconds: cpu,
                cores_used: cpu / measure_wall.max(1e-9),
            });
        }
        if let Some(watcher) = watcher {
            watcher.abort();
            convergence = Some(report::ConvergenceReport {
                passes: passes.load(Ordering::Relaxed),
            });
        }
        if let Some(loss) = cell_loss {
            match loss.await {
                Ok(phases) => storms.extend(phases),
                Err(e) => recorder.fail(format!("cell loss: {e}")),
            }
        }
        let grace = Instant::now();
        while expectations.outstanding() > 0 && grace.elapsed() < args.event_grace {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let missing = expectations.outstanding();
        let expected = expectations.expected.load(Ordering::Relaxed);
        let received = expectations.received.load(Ordering::Relaxed);
        if missing > 0 || expected != received {
            recorder.fail(format!(
                "{missing} instance changes never showed up on the event stream ({received} of {expected} seen)"
            ));
        }
        stream.abort();
        if args.flood_rate > 0.0 {
            let slots: Vec<workload::Slot> = owned
                .iter()
                .filter(|cell| !lost_cells.contains(cell))
                .flat_map(|&cell| all_slots[cell].iter().cloned())
                .collect();
            let settings = flood::FloodSettings {
                rate: args.flood_rate,
                duration: args.flood_for,
                max_open: args.flood_max_open,
                claims_percent: args.flood_claims,
            };
            let (report, failures) =
                flood::flood(&client, Arc::new(slots), &settings, args.server_pid).await;
            eprintln!(
                "flood: {} due at {:.0}/s, {} sent, {} unsent, {} accepted ({:.0}/s), {} refused, {} failed; server resident {:.0} MiB before, at most {:.0} MiB",
                report.due,
                report.offered_per_s,
                report.sent,
                report.unsent,
                report.accepted,
                report.accepted_per_s,
                report.refused,
                report.failed,
                report.server_rss_mib_before,
                report.server_rss_mib_max
            );
            flood_report = Some(report);
            flood_failures = failures;
        }
        if let (Some(open), Some(report)) = (idle.take(), idle_report.as_mut()) {
            report.still_open = open.still_open();
        }
    }

    if args.push_storm > 0 {
        let tag = format!("{:x}", started_at_secs(started_at));
        let pushed = storms::push_storm(
            &client,
            &tag,
            args.push_storm,
            args.max_in_flight,
            &recorder,
        )
        .await;
        for phase in &pushed {
            eprintln!(
                "storm {}: {} requests in {:.2} s",
                phase.name, phase.requests, phase.wall_s
            );
        }
        storms.extend(pushed);
    }

    let (measured, mut failures) = recorder.take();
    failures.append(&mut flood_failures);
    for (name, stats) in &measured {
        ops.insert((*name).to_owned(), OpReport::new(stats, measure_wall));
    }
    let errors: u64 = ops.values().map(|o| o.errors).sum();
    if errors > 0 {
        failures.push(format!("{errors} requests failed"));
    }
    let config = serde_json::json!({
        "lrps": args.lrps,
        "cells": args.cells,
        "trials": args.trials,
        "interval_s": args.interval.as_secs_f64(),
        "percent_writes": args.percent_writes,
        "percent_reads": args.percent_reads,
        "per_cell_concurrency": args.per_cell_concurrency,
        "max_in_flight": args.max_in_flight,
        "populate_workers": args.populate_workers,
        "push_storm": args.push_storm,
        "cell_loss": args.cell_loss,
        "idle_connections": args.idle_connections,
        "flood_rate": args.flood_rate,
        "flood_for_s": args.flood_for.as_secs_f64(),
        "flood_max_open": args.flood_max_open,
        "flood_claims": args.flood_claims,
        "seeded": seed_report.is_some(),
        "shard": format!("{}/{}", index, count),
        "bbs_url": args.bbs_url,
    });
    let results = Results {
        tool: format!("bbs-bench {}", env!("CARGO_PKG_VERSION")),
        started_at: humantime::format_rfc3339_seconds(started_at).to_string(),
        backend: args.backend.clone(),
        config,
        machine: probes::machine(),
        workers: 1,
        seed: seed_report,
        measure_wall_s: measure_wall,
        trials,
        ops,
        events: report::EventReport {
            expected: expectations.expected.load(Ordering::Relaxed),
            received: expectations.received.load(Ordering::Relaxed),
        },
        convergence,
        client: client_report,
        server: server_report,
        storms,
        flood: flood_report,
        idle: idle_report,
        passed: failures.is_empty(),
        failures,
    };
    finish(&results, &args.output, args.plot.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_index_over_count() {
        assert_eq!(parse_shard("1/4"), Ok((1, 4)));
        for bad in ["4/4", "0/0", "1", "a/2", "1/b"] {
            assert!(parse_shard(bad).is_err(), "{bad}");
        }
    }

    fn run_args(argv: &[&str]) -> RunArgs {
        let mut full = vec!["bbs-bench", "run"];
        full.extend_from_slice(argv);
        match Cli::try_parse_from(full).map(|cli| cli.command) {
            Ok(Command::Run(args)) => *args,
            _ => panic!("{argv:?} did not parse as a run"),
        }
    }

    #[test]
    fn a_cell_loss_needs_one_worker_a_trial_and_cells_left() {
        assert!(check_cell_loss(&run_args(&["--cells", "10", "--cell-loss", "3"])).is_ok());
        assert!(check_cell_loss(&run_args(&["--cells", "10"])).is_ok());
        for bad in [
            &["--cells", "10", "--cell-loss", "10"][..],
            &["--cells", "10", "--cell-loss", "3", "--shard", "0/2"],
            &["--cells", "10", "--cell-loss", "3", "--seed-only"],
            &["--cells", "10", "--cell-loss", "3", "--trials", "0"],
        ] {
            assert!(check_cell_loss(&run_args(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_flood_needs_one_worker_a_rate_and_room() {
        assert!(check_flood(&run_args(&[])).is_ok());
        assert!(check_flood(&run_args(&["--flood-rate", "50000", "--flood-for", "5s"])).is_ok());
        for bad in [
            &["--flood-rate=-1"][..],
            &["--flood-rate", "NaN"],
            &["--flood-rate", "100", "--shard", "0/2"],
            &["--flood-rate", "100", "--seed-only"],
            &["--flood-rate", "100", "--flood-for", "0s"],
            &["--flood-rate", "100", "--flood-max-open", "0"],
            &["--flood-rate", "100", "--flood-max-open", "4294967297"],
            &["--flood-rate", "100", "--flood-claims", "101"],
        ] {
            assert!(check_flood(&run_args(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_command_line_parses_and_refuses_nonsense() {
        assert!(
            Cli::try_parse_from(["bbs-bench", "run", "--lrps", "10", "--interval", "30s"]).is_ok()
        );
        assert!(Cli::try_parse_from(["bbs-bench", "run", "--shard", "3/2"]).is_err());
        assert!(Cli::try_parse_from(["bbs-bench", "run", "--interval", "soon"]).is_err());
        assert!(Cli::try_parse_from(["bbs-bench", "merge", "--output", "m.json"]).is_err());
    }
}
