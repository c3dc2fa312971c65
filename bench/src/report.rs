//! The results file (JSON, with each operation's full histogram so worker processes' files
//! merge exactly), the summary table for people, and merging.

use std::collections::BTreeMap;

use base64::Engine;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::recorder::OpStats;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Results {
    pub tool: String,
    pub started_at: String,
    pub backend: String,
    pub config: serde_json::Value,
    pub machine: Machine,
    pub workers: usize,
    pub seed: Option<SeedReport>,
    /// Wall time of the measured phase (all trials), seconds.
    pub measure_wall_s: f64,
    pub trials: Vec<TrialReport>,
    pub ops: BTreeMap<String, OpReport>,
    pub events: EventReport,
    pub convergence: Option<ConvergenceReport>,
    pub client: ClientReport,
    pub server: Option<ServerReport>,
    /// The storm phases run after the trials (`--push-storm`), each with its own wall time.
    #[serde(default)]
    pub storms: Vec<crate::storms::StormPhase>,
    /// The open-loop flood after the trials (`--flood-rate`).
    #[serde(default)]
    pub flood: Option<crate::flood::FloodReport>,
    /// The idle connections held open through the run (`--idle-connections`).
    #[serde(default)]
    pub idle: Option<IdleReport>,
    pub failures: Vec<String>,
    pub passed: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdleReport {
    pub connections: usize,
    /// The server's resident memory before they opened and once they all had.
    pub server_rss_mib_before: f64,
    pub server_rss_mib_after: f64,
    /// How many answered their last ping (every 30 s) at the end of the run.
    #[serde(default)]
    pub still_open: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub memory_gib: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeedReport {
    pub lrps: usize,
    pub cells: usize,
    pub duration_s: f64,
    /// DesireLRP + StartActualLRP pairs per second.
    pub lrps_per_s: f64,
    pub desire_errors: u64,
    pub start_errors: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TrialReport {
    pub trial: usize,
    /// From the first bulk fetch to the last cell's last per-record call.
    pub wall_s: f64,
    pub cells: usize,
    pub starts: u64,
    pub claims: u64,
    pub reads: u64,
    pub errors: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EventReport {
    /// State changes the rep loops caused (claims, and starts of claimed instances).
    pub expected: u64,
    /// Of those, how many arrived on the instance event stream.
    pub received: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConvergenceReport {
    /// Passes the server finished during the measured phase; their durations are the
    /// `server_convergence_pass` operation.
    pub passes: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ClientReport {
    pub cpu_seconds: f64,
    /// CPU seconds per wall second: 1.0 is one core busy.
    pub cores_used: f64,
    /// Share of all the machine's CPU busy (any process) during the measured phase.
    pub machine_busy_percent: f64,
    /// Answers that were not protobuf (503 from a server past `max_pending_requests`), each
    /// retried as the Go client retries them; a request refused three times is an error.
    #[serde(default)]
    pub refused_retries: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServerReport {
    pub pid: u32,
    pub rss_mib: f64,
    pub peak_rss_mib: f64,
    pub cpu_seconds: f64,
    pub cores_used: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OpReport {
    pub count: u64,
    pub errors: u64,
    pub error_samples: Vec<String>,
    /// Unix seconds of the first and last error, if any.
    #[serde(default)]
    pub error_span: Option<(f64, f64)>,
    pub per_second: f64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// HdrHistogram V2, base64: microseconds.
    pub histogram: String,
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

impl OpReport {
    pub fn new(stats: &OpStats, wall_s: f64) -> OpReport {
        let h = &stats.histogram;
        let mut bytes = Vec::new();
        V2Serializer::new()
            .serialize(h, &mut bytes)
            .expect("serializing into a Vec cannot fail");
        let count = h.len();
        OpReport {
            count,
            errors: stats.errors,
            error_samples: stats.error_samples.clone(),
            error_span: stats.error_span,
            per_second: if wall_s > 0.0 {
                count as f64 / wall_s
            } else {
                0.0
            },
            mean_ms: h.mean() / 1000.0,
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            max_ms: ms(h.max()),
            histogram: base64::engine::general_purpose::STANDARD.encode(bytes),
        }
    }

    pub fn histogram(&self) -> Result<Histogram<u64>, String> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&self.histogram)
            .map_err(|e| e.to_string())?;
        Deserializer::new()
            .deserialize(&mut bytes.as_slice())
            .map_err(|e| format!("{e:?}"))
    }
}

/// Merges worker processes' results: histograms add, a trial's wall time is the slowest
/// worker's, counts add.
pub fn merge(mut parts: Vec<Results>) -> Result<Results, String> {
    if parts.is_empty() {
        return Err("nothing to merge".into());
    }
    let mut merged = parts.remove(0);
    let mut histograms: BTreeMap<String, OpStats> = BTreeMap::new();
    let mut absorb = |r: &Results| -> Result<(), String> {
        for (name, op) in &r.ops {
            let entry = histograms.entry(name.clone()).or_default();
            entry
                .histogram
                .add(op.histogram()?)
                .map_err(|e| format!("{name}: {e:?}"))?;
            entry.errors += op.errors;
            if let Some((first, last)) = op.error_span {
                entry.note_span(first, last);
            }
            for sample in &op.error_samples {
                entry.note_sample(sample);
            }
        }
        Ok(())
    };
    absorb(&merged)?;
    for part in &parts {
        absorb(part)?;
        merged.workers += part.workers;
        merged.measure_wall_s = merged.measure_wall_s.max(part.measure_wall_s);
        for trial in &part.trials {
            match merged.trials.iter_mut().find(|t| t.trial == trial.trial) {
                Some(t) => {
                    t.wall_s = t.wall_s.max(trial.wall_s);
                    t.cells += trial.cells;
                    t.starts += trial.starts;
                    t.claims += trial.claims;
                    t.reads += trial.reads;
                    t.errors += trial.errors;
                }
                None => merged.trials.push(trial.clone()),
            }
        }
        merged.events.expected += part.events.expected;
        merged.events.received += part.events.received;
        merged.client.cpu_seconds += part.client.cpu_seconds;
        merged.client.cores_used += part.client.cores_used;
        merged.client.refused_retries += part.client.refused_retries;
        merged.client.machine_busy_percent = merged
            .client
            .machine_busy_percent
            .max(part.client.machine_busy_percent);
        if merged.convergence.is_none() {
            merged.convergence = part.convergence.clone();
        }
        if merged.server.is_none() {
            merged.server = part.server.clone();
        }
        if merged.seed.is_none() {
            merged.seed = part.seed.clone();
        }
        merged.failures.extend(part.failures.iter().cloned());
        merged.passed &= part.passed;
    }
    let wall = merged.measure_wall_s;
    merged.ops = histograms
        .iter()
        .map(|(name, stats)| (name.clone(), OpReport::new(stats, wall)))
        .collect();
    Ok(merged)
}

/// The table for people.
/// Start re-asserts handled per CPU second the server spent over the trials: the rate one
/// core sustains, comparable across machines with different core counts.
pub fn starts_per_server_core_second(r: &Results) -> Option<f64> {
    let server = r.server.as_ref()?;
    let starts: u64 = r.trials.iter().map(|t| t.starts).sum();
    (server.cpu_seconds > 0.0 && starts > 0).then(|| starts as f64 / server.cpu_seconds)
}

pub fn summary(r: &Results) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "backend {} | {} workers | {} CPUs ({}) | measured {:.1} s",
        r.backend, r.workers, r.machine.cpus, r.machine.cpu_model, r.measure_wall_s
    );
    if let Some(seed) = &r.seed {
        let _ = writeln!(
            out,
            "seed: {} LRPs on {} cells in {:.1} s ({:.0} LRPs/s, {} desire and {} start errors)",
            seed.lrps,
            seed.cells,
            seed.duration_s,
            seed.lrps_per_s,
            seed.desire_errors,
            seed.start_errors
        );
    }
    let _ = writeln!(
        out,
        "{:<38} {:>9} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "operation", "count", "errors", "per s", "p50 ms", "p90 ms", "p99 ms", "max ms"
    );
    for (name, op) in &r.ops {
        let _ = writeln!(
            out,
            "{:<38} {:>9} {:>6} {:>9.0} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
            name, op.count, op.errors, op.per_second, op.p50_ms, op.p90_ms, op.p99_ms, op.max_ms
        );
    }
    for t in &r.trials {
        let _ = writeln!(
            out,
            "trial {:>2}: {:>7.2} s wall, {} cells, {} starts ({:.0}/s), {} claims, {} reads, {} errors",
            t.trial,
            t.wall_s,
            t.cells,
            t.starts,
            if t.wall_s > 0.0 { t.starts as f64 / t.wall_s } else { 0.0 },
            t.claims,
            t.reads,
            t.errors
        );
    }
    for storm in &r.storms {
        let _ = writeln!(
            out,
            "storm {}: {} requests in {:.2} s ({:.0}/s)",
            storm.name, storm.requests, storm.wall_s, storm.per_second
        );
    }
    if let Some(idle) = &r.idle {
        let _ = writeln!(
            out,
            "idle connections: {} opened, {} still open at the end; server resident {:.0} MiB before, {:.0} MiB with them",
            idle.connections, idle.still_open, idle.server_rss_mib_before, idle.server_rss_mib_after
        );
    }
    if let Some(f) = &r.flood {
        let _ = writeln!(
            out,
            "flood: {:.0}/s offered for {:.0} s ({}% claims): {} due, {} sent, {} unsent (client limit), {} accepted ({:.0}/s), {} refused, {} failed",
            f.offered_per_s, f.seconds, f.claims_percent, f.due, f.sent, f.unsent, f.accepted, f.accepted_per_s, f.refused, f.failed
        );
        for (what, op) in [
            ("accepted", &f.accepted_latency),
            ("refused", &f.refused_latency),
        ] {
            if let Some(op) = op {
                let _ = writeln!(
                    out,
                    "flood {what}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                    op.p50_ms, op.p99_ms, op.max_ms
                );
            }
        }
        let _ = writeln!(
            out,
            "flood server resident: {:.0} MiB before, at most {:.0} MiB during",
            f.server_rss_mib_before, f.server_rss_mib_max
        );
    }
    let _ = writeln!(
        out,
        "events: {} of {} expected instance changes seen on the stream",
        r.events.received, r.events.expected
    );
    if let Some(c) = &r.convergence {
        let _ = writeln!(
            out,
            "convergence: {} server passes during the run (durations: server_convergence_pass)",
            c.passes
        );
    }
    let _ = writeln!(
        out,
        "load generator: {:.1} CPU s, {:.2} cores busy of {}; whole machine {:.0}% busy",
        r.client.cpu_seconds, r.client.cores_used, r.machine.cpus, r.client.machine_busy_percent
    );
    if r.client.refused_retries > 0 {
        let _ = writeln!(
            out,
            "refused by the server (503) and retried as the Go client retries: {}",
            r.client.refused_retries
        );
    }
    if let Some(s) = &r.server {
        let _ = writeln!(
            out,
            "server (pid {}): {:.0} MiB resident (peak {:.0} MiB), {:.1} CPU s, {:.2} cores busy",
            s.pid, s.rss_mib, s.peak_rss_mib, s.cpu_seconds, s.cores_used
        );
        if let Some(rate) = starts_per_server_core_second(r) {
            let _ = writeln!(
                out,
                "Start re-asserts per second of server CPU (one core busy for a second): {rate:.0}"
            );
        }
    }
    if r.failures.is_empty() {
        let _ = writeln!(out, "PASSED: no errors, every count matched");
    } else {
        let _ = writeln!(out, "FAILED: {} problems", r.failures.len());
        for f in r.failures.iter().take(20) {
            let _ = writeln!(out, "  - {f}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn results(latency_ms: u64, wall: f64, failures: Vec<String>) -> Results {
        let recorder = crate::recorder::Recorder::default();
        recorder.record("rep_start_actual_lrp", Duration::from_millis(latency_ms));
        recorder.error("rep_start_actual_lrp", "boom".into());
        let (ops, _) = recorder.take();
        Results {
            tool: "t".into(),
            started_at: "now".into(),
            backend: "sqlite".into(),
            config: serde_json::json!({"lrps": 2, "cells": 1}),
            machine: Machine {
                cpus: 2,
                cpu_model: "x".into(),
                memory_gib: 1.0,
            },
            workers: 1,
            seed: None,
            measure_wall_s: wall,
            trials: vec![TrialReport {
                trial: 1,
                wall_s: wall,
                cells: 1,
                starts: 1,
                ..Default::default()
            }],
            ops: ops
                .iter()
                .map(|(k, v)| ((*k).to_owned(), OpReport::new(v, wall)))
                .collect(),
            events: EventReport {
                expected: 1,
                received: 1,
            },
            convergence: None,
            client: ClientReport::default(),
            server: None,
            storms: Vec::new(),
            flood: None,
            idle: None,
            passed: failures.is_empty(),
            failures,
        }
    }

    #[test]
    fn workers_merge_exactly() {
        let merged = merge(vec![
            results(10, 2.0, vec![]),
            results(30, 3.0, vec!["cell-1 short".into()]),
        ])
        .unwrap();
        let op = &merged.ops["rep_start_actual_lrp"];
        assert_eq!((op.count, op.errors), (2, 2));
        assert!((op.max_ms - 30.0).abs() < 0.1 && (op.p50_ms - 10.0).abs() < 0.1);
        assert_eq!(merged.workers, 2);
        assert_eq!(merged.trials.len(), 1);
        assert_eq!((merged.trials[0].wall_s, merged.trials[0].starts), (3.0, 2));
        assert_eq!((merged.events.expected, merged.events.received), (2, 2));
        assert!(!merged.passed);
        assert!(summary(&merged).contains("FAILED: 1 problems"));
    }

    #[test]
    fn merging_nothing_or_a_bad_histogram_is_refused() {
        assert!(merge(vec![]).is_err());
        let mut bad = results(1, 1.0, vec![]);
        bad.ops.get_mut("rep_start_actual_lrp").unwrap().histogram = "not base64!".into();
        assert!(merge(vec![results(1, 1.0, vec![]), bad]).is_err());
    }

    #[test]
    fn a_results_file_round_trips() {
        let r = results(5, 1.0, vec![]);
        let back: Results = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(
            back.ops["rep_start_actual_lrp"].histogram().unwrap().len(),
            1
        );
        assert!(summary(&back).contains("PASSED"));
    }
}
