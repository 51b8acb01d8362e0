//! The console measurement's report: the CPU time per phase and the page's update latency,
//! as a markdown section.

use std::fmt::Write as _;
use std::time::Duration;

use super::cpu::CpuTime;
use super::{CONSOLE_NODE, DRAINED, NODES, OTHER_NODE};

/// One phase's CPU time on the two nodes measured.
pub struct Phase {
    /// What was going on.
    pub name: String,
    /// How long it lasted.
    pub wall: Duration,
    /// The console node's herd.
    pub console: CpuTime,
    /// Another node's herd.
    pub other: CpuTime,
    /// The 1-minute load average at its end.
    pub load: f64,
}

/// The time from a drain's answer to the page's event showing it, over the runs.
pub struct Latency {
    /// How many runs.
    pub runs: usize,
    /// The shortest, the median and the longest; `None` without runs.
    pub min_median_max: Option<[Duration; 3]>,
}

impl Latency {
    /// The summary of `latencies`.
    pub fn of(latencies: &[Duration]) -> Self {
        let mut sorted = latencies.to_vec();
        sorted.sort();
        let min_median_max = match (sorted.first(), sorted.last()) {
            (Some(&min), Some(&max)) => Some([min, sorted[sorted.len() / 2], max]),
            _ => None,
        };
        Latency {
            runs: latencies.len(),
            min_median_max,
        }
    }
}

/// What `herd-perf console` measured.
pub struct ConsoleReport {
    /// The command line that reproduces it.
    pub command: String,
    /// Each phase's length asked for.
    pub phase_seconds: u32,
    /// The phases, in order.
    pub phases: Vec<Phase>,
    /// The page's update latency.
    pub latency: Latency,
}

impl ConsoleReport {
    /// The report as a markdown section.
    pub fn markdown(&self) -> String {
        let mut text = String::new();
        let _ = writeln!(text, "## Console\n\n`{}`\n", self.command);
        let _ = writeln!(
            text,
            "A 3-node farm (xdp mode) in network namespaces on a learning bridge, `[admin] \
             metrics` on every node, `[admin] console` on {}. CPU time (utime + stime) of herd's \
             process and of its `herd-web*` threads, in ms per second of the phase ({} s each), \
             on {} (the console's node) and {}; a page is a logged-in session holding `GET \
             /api/events` open from the client's namespace.\n",
            NODES[CONSOLE_NODE], self.phase_seconds, NODES[CONSOLE_NODE], NODES[OTHER_NODE]
        );
        let _ = writeln!(
            text,
            "| phase | {0} process | {0} herd-web* | {1} process | {1} herd-web* | load (1 min) |",
            NODES[CONSOLE_NODE], NODES[OTHER_NODE]
        );
        let _ = writeln!(text, "|---|---:|---:|---:|---:|---:|");
        for phase in &self.phases {
            let per_second = |used: Duration| {
                format!("{:.2}", used.as_secs_f64() * 1e3 / phase.wall.as_secs_f64())
            };
            let _ = writeln!(
                text,
                "| {} | {} | {} | {} | {} | {:.2} |",
                phase.name,
                per_second(phase.console.process),
                per_second(phase.console.threads),
                per_second(phase.other.process),
                per_second(phase.other.threads),
                phase.load
            );
        }
        let _ = writeln!(
            text,
            "\nPage update latency: {} drained with the page's button (`POST \
             /api/nodes/{}/drain`), from the answer to the first `farm` event showing it not \
             up, {} runs (started again and up between runs):",
            NODES[DRAINED], NODES[DRAINED], self.latency.runs
        );
        match self.latency.min_median_max {
            Some([min, median, max]) => {
                let _ = writeln!(
                    text,
                    "min {} ms, median {} ms, max {} ms.",
                    min.as_millis(),
                    median.as_millis(),
                    max.as_millis()
                );
            }
            None => {
                let _ = writeln!(text, "no run.");
            }
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_is_the_middle_run() {
        let ms = Duration::from_millis;
        let latency = Latency::of(&[ms(300), ms(100), ms(900), ms(200), ms(400)]);
        assert_eq!(latency.runs, 5);
        assert_eq!(latency.min_median_max, Some([ms(100), ms(300), ms(900)]));
        assert_eq!(Latency::of(&[]).min_median_max, None);
    }

    #[test]
    fn the_table_has_a_row_per_phase() {
        let report = ConsoleReport {
            command: "herd-perf console".to_owned(),
            phase_seconds: 2,
            phases: vec![Phase {
                name: "idle".to_owned(),
                wall: Duration::from_secs(2),
                console: CpuTime {
                    process: Duration::from_millis(30),
                    threads: Duration::from_millis(10),
                },
                other: CpuTime::default(),
                load: 0.5,
            }],
            latency: Latency::of(&[Duration::from_millis(250)]),
        };
        let text = report.markdown();
        assert!(
            text.contains("| idle | 15.00 | 5.00 | 0.00 | 0.00 | 0.50 |"),
            "{text}"
        );
        assert!(
            text.contains("min 250 ms, median 250 ms, max 250 ms."),
            "{text}"
        );
    }
}
