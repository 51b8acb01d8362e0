//! The kernel's own timing of an eBPF program as it runs on live traffic (its run-time
//! statistics, BPF_ENABLE_STATS): the time herd's program takes per packet under the SYN flood,
//! apart from the stack's share of the receiver's CPU.

use std::os::fd::OwnedFd;
use std::time::Duration;

use anyhow::Context;
use aya::programs::loaded_programs;
use aya::sys::{enable_stats, Stats};

/// Keeps the kernel timing every eBPF program (each run then also reads the clock twice,
/// a few nanoseconds) until dropped.
pub struct Timing {
    _enabled: OwnedFd,
}

impl Timing {
    /// Starts the timing (kernel 5.8 or later).
    pub fn start() -> anyhow::Result<Self> {
        Ok(Self {
            _enabled: enable_stats(Stats::RunTime)
                .context("cannot enable the kernel's eBPF run-time statistics")?,
        })
    }
}

/// The time and runs the kernel counted for program `id` while a [`Timing`] was held.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Runs {
    /// The time spent in the program.
    pub time: Duration,
    /// Its runs: one per packet.
    pub count: u64,
}

impl Runs {
    /// The program's totals now.
    pub fn of(id: u32) -> anyhow::Result<Self> {
        // Programs of other processes may be unloaded during the walk: their errors are not
        // this program's.
        let info = loaded_programs()
            .filter_map(Result::ok)
            .find(|info| info.id() == id)
            .with_context(|| format!("no eBPF program {id} is loaded"))?;
        Ok(Self {
            time: info.run_time(),
            count: info.run_count(),
        })
    }

    /// What was counted between `earlier` and `self`.
    pub fn since(&self, earlier: &Runs) -> Runs {
        Runs {
            time: self.time.saturating_sub(earlier.time),
            count: self.count.saturating_sub(earlier.count),
        }
    }

    /// Nanoseconds per run, if it ran.
    pub fn ns_per_run(&self) -> Option<f64> {
        (self.count > 0).then(|| self.time.as_nanos() as f64 / self.count as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_give_the_time_per_packet_of_a_window() {
        let before = Runs {
            time: Duration::from_millis(10),
            count: 1000,
        };
        let after = Runs {
            time: Duration::from_millis(40),
            count: 301_000,
        };
        let window = after.since(&before);
        assert_eq!(window.count, 300_000);
        assert_eq!(window.ns_per_run(), Some(100.0));
        assert_eq!(Runs::default().ns_per_run(), None);
    }
}
