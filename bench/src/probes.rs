//! What the load generator can see of the machine: its own CPU use (to tell whether it, not
//! the server, was the limit), the server's CPU and memory from /proc, the machine's busy
//! share, and the server's convergence histogram from /metrics.

use std::time::Instant;

use crate::report::Machine;

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// User + system CPU seconds of this process.
pub fn own_cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the struct we own.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0.0;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// User + system CPU seconds of another process, from /proc/<pid>/stat.
pub fn process_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; fields restart after the closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks())
}

/// (resident, peak resident) in MiB.
pub fn process_rss_mib(pid: u32) -> Option<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<f64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib / 1024.0)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// The machine's busy and total jiffies since boot.
#[derive(Clone, Copy)]
pub struct MachineCpu {
    busy: u64,
    total: u64,
}

impl MachineCpu {
    pub fn now() -> Option<MachineCpu> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let line = stat.lines().next()?;
        let values: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|v| v.parse().ok())
            .collect();
        let total: u64 = values.iter().sum();
        let idle = values.get(3).copied().unwrap_or(0) + values.get(4).copied().unwrap_or(0);
        Some(MachineCpu {
            busy: total - idle,
            total,
        })
    }

    pub fn busy_percent_since(&self, earlier: &MachineCpu) -> f64 {
        let total = self.total.saturating_sub(earlier.total);
        if total == 0 {
            return 0.0;
        }
        100.0 * self.busy.saturating_sub(earlier.busy) as f64 / total as f64
    }
}

pub fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory_gib = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kib| kib.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    Machine {
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cpu_model,
        memory_gib,
    }
}

/// A CPU meter over one phase, for this process and optionally the server.
pub struct CpuMeter {
    started: Instant,
    own: f64,
    server: Option<(u32, f64)>,
    machine: Option<MachineCpu>,
}

impl CpuMeter {
    pub fn start(server_pid: Option<u32>) -> CpuMeter {
        CpuMeter {
            started: Instant::now(),
            own: own_cpu_seconds(),
            server: server_pid.and_then(|pid| Some((pid, process_cpu_seconds(pid)?))),
            machine: MachineCpu::now(),
        }
    }

    pub fn wall(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    pub fn own_cpu(&self) -> f64 {
        own_cpu_seconds() - self.own
    }

    pub fn server_cpu(&self) -> Option<f64> {
        let (pid, before) = self.server?;
        Some(process_cpu_seconds(pid)? - before)
    }

    pub fn machine_busy_percent(&self) -> f64 {
        match (self.machine, MachineCpu::now()) {
            (Some(before), Some(now)) => now.busy_percent_since(&before),
            _ => 0.0,
        }
    }
}

/// The server's convergence figures, as its Prometheus text shows them: passes so far and
/// the last pass's duration.
#[derive(Default, Clone, Copy, Debug)]
pub struct ConvergenceSample {
    pub runs: u64,
    pub last_duration_s: f64,
}

pub async fn scrape_convergence(
    http: &reqwest::Client,
    url: &str,
) -> Result<ConvergenceSample, String> {
    let text = http
        .get(url)
        .send()
        .await
        .map_err(|e| e.to_string())?
        .text()
        .await
        .map_err(|e| e.to_string())?;
    Ok(parse_convergence(&text))
}

/// Reads the LRP convergence counter and the last pass's duration from Prometheus text.
pub fn parse_convergence(text: &str) -> ConvergenceSample {
    let value = |name: &str| -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    };
    ConvergenceSample {
        runs: value("bbs_convergence_lrp_runs_total").unwrap_or(0.0) as u64,
        last_duration_s: value("bbs_convergence_lrp_duration_seconds").unwrap_or(0.0),
    }
}

/// Polls the server every second during the measured phase and records each new pass's
/// duration as the `server_convergence_pass` operation. Passes closer than a second apart
/// are counted but only the later one's duration is seen.
pub fn watch_convergence(
    http: reqwest::Client,
    url: String,
    recorder: std::sync::Arc<crate::recorder::Recorder>,
    passes: std::sync::Arc<std::sync::atomic::AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last = match scrape_convergence(&http, &url).await {
            Ok(sample) => sample.runs,
            Err(e) => {
                eprintln!("bbs-bench: no convergence figures ({e})");
                return;
            }
        };
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            let Ok(sample) = scrape_convergence(&http, &url).await else {
                continue;
            };
            if sample.runs > last {
                passes.fetch_add(sample.runs - last, std::sync::atomic::Ordering::Relaxed);
                last = sample.runs;
                recorder.record(
                    "server_convergence_pass",
                    std::time::Duration::from_secs_f64(sample.last_duration_s.max(0.0)),
                );
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn convergence_figures_are_read_from_prometheus_text() {
        let text = "# TYPE bbs_convergence_lrp_runs_total counter\n\
            bbs_convergence_lrp_runs_total 7\n\
            bbs_convergence_lrp_duration_seconds_other 9\n\
            bbs_convergence_lrp_duration_seconds 1.25\n";
        let sample = parse_convergence(text);
        assert_eq!((sample.runs, sample.last_duration_s), (7, 1.25));
        let none = parse_convergence("");
        assert_eq!((none.runs, none.last_duration_s), (0, 0.0));
    }

    #[test]
    fn this_process_and_the_machine_are_measured() {
        assert!(own_cpu_seconds() >= 0.0);
        assert!(process_cpu_seconds(std::process::id()).is_some());
        let (rss, peak) = process_rss_mib(std::process::id()).unwrap();
        assert!(rss > 0.0 && peak >= rss);
        assert!(process_rss_mib(u32::MAX).is_none());
        assert!(machine().cpus >= 1);
    }
}
