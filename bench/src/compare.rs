//! The regression guard: a run's headline figures set beside a committed baseline's, with the
//! change of each, so a CI log shows a slowdown the day it lands. Informational only: CI
//! machines are too noisy for a threshold to fail a build on.

use std::fmt::Write as _;

use crate::report::Results;

/// Which way is better for a figure.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Better {
    Lower,
    Higher,
}

/// One compared figure.
pub struct Row {
    pub name: String,
    pub baseline: f64,
    pub current: f64,
    better: Better,
}

impl Row {
    /// The change from the baseline in percent, positive when worse.
    pub fn worse_by_percent(&self) -> Option<f64> {
        if self.baseline == 0.0 {
            return None;
        }
        let change = (self.current - self.baseline) / self.baseline * 100.0;
        Some(match self.better {
            Better::Lower => change,
            Better::Higher => -change,
        })
    }
}

/// The figures both files have, in a fixed order.
pub fn rows(baseline: &Results, current: &Results) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut push = |name: String, b: Option<f64>, c: Option<f64>, better| {
        if let (Some(baseline), Some(current)) = (b, c) {
            rows.push(Row {
                name,
                baseline,
                current,
                better,
            });
        }
    };
    push(
        "seeding LRPs/s".into(),
        baseline.seed.as_ref().map(|s| s.lrps_per_s),
        current.seed.as_ref().map(|s| s.lrps_per_s),
        Better::Higher,
    );
    let mean_wall = |r: &Results| {
        (!r.trials.is_empty())
            .then(|| r.trials.iter().map(|t| t.wall_s).sum::<f64>() / r.trials.len() as f64)
    };
    push(
        "trial wall s (mean)".into(),
        mean_wall(baseline),
        mean_wall(current),
        Better::Lower,
    );
    for (op, b) in &baseline.ops {
        let Some(c) = current.ops.get(op) else {
            continue;
        };
        if b.count == 0 || c.count == 0 {
            continue;
        }
        push(
            format!("{op} p50 ms"),
            Some(b.p50_ms),
            Some(c.p50_ms),
            Better::Lower,
        );
        push(
            format!("{op} p99 ms"),
            Some(b.p99_ms),
            Some(c.p99_ms),
            Better::Lower,
        );
    }
    push(
        "Start re-asserts per server CPU s".into(),
        crate::report::starts_per_server_core_second(baseline),
        crate::report::starts_per_server_core_second(current),
        Better::Higher,
    );
    push(
        "server resident MiB".into(),
        baseline.server.as_ref().map(|s| s.rss_mib),
        current.server.as_ref().map(|s| s.rss_mib),
        Better::Lower,
    );
    push(
        "server CPU s".into(),
        baseline.server.as_ref().map(|s| s.cpu_seconds),
        current.server.as_ref().map(|s| s.cpu_seconds),
        Better::Lower,
    );
    rows
}

/// Changes beyond this are flagged in the table (not failed).
pub const FLAG_PERCENT: f64 = 25.0;

/// The comparison as a table, with a note when the two runs' worlds differ.
pub fn table(baseline: &Results, current: &Results) -> String {
    let mut out = String::new();
    const WORLD: [&str; 6] = [
        "lrps",
        "cells",
        "trials",
        "interval_s",
        "push_storm",
        "cell_loss",
    ];
    let differing: Vec<String> = WORLD
        .iter()
        .filter(|key| baseline.config.get(**key) != current.config.get(**key))
        .map(|key| {
            let show = |r: &Results| {
                r.config
                    .get(*key)
                    .map_or_else(|| "-".to_owned(), |v| v.to_string())
            };
            format!("{key} {} vs {}", show(baseline), show(current))
        })
        .collect();
    if baseline.backend != current.backend || !differing.is_empty() {
        let _ = writeln!(
            out,
            "note: the runs differ (backend {} vs {}; {}); figures may not compare",
            baseline.backend,
            current.backend,
            differing.join(", "),
        );
    }
    let _ = writeln!(
        out,
        "{:<44} {:>12} {:>12} {:>9}",
        "figure", "baseline", "current", "worse by"
    );
    let mut flagged = 0;
    for row in rows(baseline, current) {
        let (change, flag) = match row.worse_by_percent() {
            Some(p) if p > FLAG_PERCENT => {
                flagged += 1;
                (format!("{p:+.0}%"), "  <-")
            }
            Some(p) => (format!("{p:+.0}%"), ""),
            None => ("-".into(), ""),
        };
        let _ = writeln!(
            out,
            "{:<44} {:>12.2} {:>12.2} {:>9}{flag}",
            row.name, row.baseline, row.current, change
        );
    }
    let _ = writeln!(
        out,
        "{flagged} figure(s) more than {FLAG_PERCENT:.0}% worse than the baseline (informational)"
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(baseline: f64, current: f64, better: Better) -> Row {
        Row {
            name: "x".into(),
            baseline,
            current,
            better,
        }
    }

    #[test]
    fn worse_is_positive_whichever_way_is_better() {
        assert_eq!(
            row(100.0, 150.0, Better::Lower).worse_by_percent(),
            Some(50.0)
        );
        assert_eq!(
            row(100.0, 50.0, Better::Lower).worse_by_percent(),
            Some(-50.0)
        );
        assert_eq!(
            row(100.0, 50.0, Better::Higher).worse_by_percent(),
            Some(50.0)
        );
        assert_eq!(row(0.0, 5.0, Better::Lower).worse_by_percent(), None);
    }
}
