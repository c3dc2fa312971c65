//! Latency and error accounting shared by every simulated component. Histograms keep the full
//! distribution (µs, 3 significant digits) so worker processes' results merge exactly.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// How many distinct error messages are kept per operation, for the report.
const ERROR_SAMPLES: usize = 5;

pub struct OpStats {
    pub histogram: Histogram<u64>,
    pub errors: u64,
    pub error_samples: Vec<String>,
    /// When the first and the last error happened (Unix seconds), so a run across a planned
    /// cut-over can show every error fell inside it.
    pub error_span: Option<(f64, f64)>,
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

impl Default for OpStats {
    fn default() -> Self {
        OpStats {
            // 1 µs to 1 hour.
            histogram: Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .expect("static histogram bounds are valid"),
            errors: 0,
            error_samples: Vec::new(),
            error_span: None,
        }
    }
}

impl OpStats {
    pub fn note_error(&mut self, message: String) {
        self.errors += 1;
        self.note_span(unix_now(), unix_now());
        self.note_sample(&message);
    }

    /// Widens the error span to include `first..last`.
    pub fn note_span(&mut self, first: f64, last: f64) {
        self.error_span = Some(match self.error_span {
            None => (first, last),
            Some((a, b)) => (a.min(first), b.max(last)),
        });
    }

    /// Keeps `message` if it is new and there is room.
    pub fn note_sample(&mut self, message: &str) {
        if self.error_samples.len() < ERROR_SAMPLES
            && !self.error_samples.iter().any(|m| m == message)
        {
            self.error_samples.push(message.to_owned());
        }
    }
}

#[derive(Default)]
pub struct Recorder {
    ops: Mutex<BTreeMap<&'static str, OpStats>>,
    failures: Mutex<Vec<String>>,
}

impl Recorder {
    pub fn record(&self, op: &'static str, took: Duration) {
        let micros = (took.as_micros() as u64).max(1);
        let mut ops = self.ops.lock().unwrap_or_else(|e| e.into_inner());
        ops.entry(op)
            .or_default()
            .histogram
            .saturating_record(micros);
    }

    pub fn error(&self, op: &'static str, message: String) {
        let mut ops = self.ops.lock().unwrap_or_else(|e| e.into_inner());
        ops.entry(op).or_default().note_error(message);
    }

    /// Times `f`; an `Err` counts as an error of `op` (not as a latency sample) and is
    /// handed back so the caller can decide what it means.
    pub async fn time<T, E: std::fmt::Display>(
        &self,
        op: &'static str,
        f: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let started = Instant::now();
        let result = f.await;
        match &result {
            Ok(_) => self.record(op, started.elapsed()),
            Err(e) => self.error(op, e.to_string()),
        }
        result
    }

    /// A failed check (a wrong count, a missing event): fails the run.
    pub fn fail(&self, message: String) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if failures.len() < 100 {
            failures.push(message);
        }
    }

    /// The operations so far, leaving the failures for the final report.
    pub fn take_ops(&self) -> BTreeMap<&'static str, OpStats> {
        std::mem::take(&mut *self.ops.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn take(&self) -> (BTreeMap<&'static str, OpStats>, Vec<String>) {
        let ops = std::mem::take(&mut *self.ops.lock().unwrap_or_else(|e| e.into_inner()));
        let failures =
            std::mem::take(&mut *self.failures.lock().unwrap_or_else(|e| e.into_inner()));
        (ops, failures)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_counted_and_a_few_distinct_ones_kept() {
        let recorder = Recorder::default();
        for i in 0..20 {
            recorder.error("op", format!("e{}", i % 7));
        }
        let (ops, _) = recorder.take();
        assert_eq!(ops["op"].errors, 20);
        assert_eq!(ops["op"].error_samples, ["e0", "e1", "e2", "e3", "e4"]);
    }

    #[test]
    fn failures_are_capped() {
        let recorder = Recorder::default();
        for i in 0..150 {
            recorder.fail(format!("f{i}"));
        }
        assert_eq!(recorder.take().1.len(), 100);
    }
}
