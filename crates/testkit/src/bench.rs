//! What the benchmarks (`examples/bench*.rs`) share: CPU accounting of the
//! processes under test, the machine's load, table cells.

use anyhow::{Context, Result};

use crate::process::cpu_seconds;

/// CPU seconds (user + system) that a set of processes spend from
/// [`CpuMeter::start`] on, from `/proc/PID/stat` (all threads included).
#[derive(Debug)]
pub struct CpuMeter {
    pids: Vec<u32>,
    at_start: f64,
}

impl CpuMeter {
    /// Start counting for `pids`.
    pub fn start(pids: &[u32]) -> Result<CpuMeter> {
        Ok(CpuMeter {
            pids: pids.to_vec(),
            at_start: total_cpu_seconds(pids)?,
        })
    }

    /// CPU seconds spent since [`CpuMeter::start`].
    pub fn seconds(&self) -> Result<f64> {
        Ok(total_cpu_seconds(&self.pids)? - self.at_start)
    }

    /// CPU seconds spent since [`CpuMeter::start`] per gigabyte (10^9 bytes)
    /// moved; `None` with no processes or no bytes.
    pub fn seconds_per_gb(&self, bytes: u64) -> Result<Option<f64>> {
        let cpu = self.seconds()?;
        Ok((!self.pids.is_empty() && bytes > 0).then(|| cpu / (bytes as f64 / 1e9)))
    }
}

fn total_cpu_seconds(pids: &[u32]) -> Result<f64> {
    pids.iter().map(|p| cpu_seconds(*p)).sum()
}

/// The machine's 1, 5 and 15 minute load averages (`/proc/loadavg`), to
/// print with figures measured on a shared machine.
pub fn load_average() -> Result<String> {
    let text = std::fs::read_to_string("/proc/loadavg").context("reading /proc/loadavg")?;
    Ok(text
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" "))
}

/// A table cell: `v` with `prec` decimals, `-` when there is none.
pub fn cell(v: Option<f64>, prec: usize) -> String {
    v.map(|x| format!("{x:.prec$}"))
        .unwrap_or_else(|| "-".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_cpu_is_counted() {
        let meter = CpuMeter::start(&[std::process::id()]).unwrap();
        // Burn a little CPU: the meter never goes backwards.
        let spun: u64 = (0..2_000_000u64).map(std::hint::black_box).sum();
        assert!(spun > 0);
        assert!(meter.seconds().unwrap() >= 0.0);
        assert_eq!(meter.seconds_per_gb(0).unwrap(), None);
        assert_eq!(
            CpuMeter::start(&[]).unwrap().seconds_per_gb(1).unwrap(),
            None
        );
    }

    #[test]
    fn load_average_has_three_figures() {
        assert_eq!(load_average().unwrap().split(' ').count(), 3);
    }

    #[test]
    fn cells() {
        assert_eq!(cell(Some(1.23456), 2), "1.23");
        assert_eq!(cell(None, 2), "-");
    }
}
