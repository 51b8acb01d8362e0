//! The failover scenario's results as a markdown section: the distributions of the failover
//! times, the counts of false positives and broken connections, each against its goal, the
//! command that reproduces them and the machine they come from.

use std::fmt::Write;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::app::AppFailure;
use super::keepalived::{self, VrrpSet};
use super::kill::{KillRun, RECOVERY_BOUND};
use super::layout::NODES;
use super::leave_join::LeaveJoin;
use super::quiet::Quiet;
use crate::cli::{Failure, QuietLoad};

/// Everything the scenario measured.
#[derive(Debug, Serialize)]
pub struct FailoverReport {
    /// The command line that produced it.
    pub command: String,
    /// The dataplane mode.
    pub mode: String,
    /// The machine, in a sentence.
    pub machine: String,
    /// How the farm and the load were set up, in a sentence.
    pub setup: String,
    /// The goal for the failover time's p99, in milliseconds.
    pub goal_p99_ms: f64,
    /// The failover runs.
    pub runs: Vec<KillRun>,
    /// Runs that could not be measured (the farm did not start or settle), with why.
    pub failed_runs: Vec<String>,
    /// The leave and the join, unless skipped.
    pub leave_join: Option<LeaveJoin>,
    /// The false-positive runs, one per load, unless skipped.
    pub quiet: Vec<Quiet>,
    /// keepalived's reference runs, one set per advert interval, unless skipped.
    pub keepalived: Vec<VrrpSet>,
    /// The application's failure, unless skipped.
    pub app: Option<AppFailure>,
}

/// A row of the failover table: what it times, how to read it from a run, and whether the
/// failover goal applies to it (a missing value is then a run that did not recover; otherwise
/// a run where the event was not seen, left out of the spread).
type Timing = (&'static str, fn(&KillRun) -> Option<f64>, bool);

/// p50, p99 and max of some milliseconds, and how many were missing (not within the bound).
pub(super) struct Spread {
    pub(super) p50: f64,
    pub(super) p99: f64,
    pub(super) max: f64,
    pub(super) missing: usize,
    pub(super) count: usize,
}

impl Spread {
    /// The spread of `values`, the missing ones counted at [`RECOVERY_BOUND`].
    pub(super) fn of(values: impl Iterator<Item = Option<f64>>) -> Option<Spread> {
        // Microseconds, 3 significant digits: 0.1 % at most off, well below the resolution.
        let mut histogram = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).ok()?;
        let (mut missing, mut count) = (0, 0);
        for value in values {
            count += 1;
            let ms = value.unwrap_or_else(|| {
                missing += 1;
                RECOVERY_BOUND.as_secs_f64() * 1e3
            });
            histogram.saturating_record((ms * 1e3).max(1.0) as u64);
        }
        (count > 0).then(|| Spread {
            p50: histogram.value_at_quantile(0.5) as f64 / 1e3,
            p99: histogram.value_at_quantile(0.99) as f64 / 1e3,
            max: histogram.max() as f64 / 1e3,
            missing,
            count,
        })
    }

    /// A table cell for a value: `> 10 s` for a missing one.
    pub(super) fn cell(&self, value: f64) -> String {
        if self.missing > 0 && value >= RECOVERY_BOUND.as_secs_f64() * 1e3 - 1.0 {
            format!("> {} s", RECOVERY_BOUND.as_secs())
        } else {
            format!("{value:.0} ms")
        }
    }
}

/// PASS or SHORT.
pub(super) fn verdict(met: bool) -> &'static str {
    if met {
        "PASS"
    } else {
        "SHORT"
    }
}

impl FailoverReport {
    /// The report as a markdown section.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = self.write(&mut out);
        out
    }

    fn write(&self, out: &mut String) -> std::fmt::Result {
        writeln!(
            out,
            "## Failover, false positives and broken connections ({} mode)\n",
            self.mode
        )?;
        writeln!(out, "```sh\n{}\n```\n", self.command)?;
        writeln!(out, "{}\n", self.machine)?;
        writeln!(out, "{}\n", self.setup)?;
        for failure in Failure::ALL {
            let runs: Vec<&KillRun> = self.runs.iter().filter(|r| r.failure == failure).collect();
            if !runs.is_empty() {
                self.write_timings(out, failure, &runs)?;
            }
        }
        keepalived::write_markdown(out, &self.keepalived)?;
        if !self.failed_runs.is_empty() {
            writeln!(out, "Runs that could not be measured:\n")?;
            for failure in &self.failed_runs {
                writeln!(out, "- {failure}")?;
            }
            writeln!(out)?;
        }
        self.write_counts(out)?;
        if !self.runs.is_empty() {
            self.write_runs(out)?;
        }
        if let Some(app) = &self.app {
            app.write(out)?;
        }
        Ok(())
    }

    /// The spreads of the runs of one kind of failure against the goal.
    fn write_timings(
        &self,
        out: &mut String,
        failure: Failure,
        runs: &[&KillRun],
    ) -> std::fmt::Result {
        let timings: [Timing; 5] = [
            (
                "every UDP flow of the victim's buckets answered by its new owner",
                |r| r.udp_ms,
                true,
            ),
            (
                "a new TCP connection in each of the victim's buckets answered by its new owner",
                |r| r.tcp_ms,
                true,
            ),
            ("a survivor logs `peer dead`", |r| r.detected_ms, false),
            (
                "the last survivor installs its whole new share",
                |r| r.installed_ms,
                false,
            ),
            (
                match failure {
                    Failure::Kill => {
                        "the victim's last answer (in xdp mode its pinned program accepts until \
                         its liveness deadline)"
                    }
                    Failure::Link => "the victim's last answer (on its way when the link was cut)",
                },
                |r| r.victim_last_ms,
                false,
            ),
        ];
        writeln!(
            out,
            "Failover after {}, over {} runs, the victim rotating over the nodes:\n",
            match failure {
                Failure::Kill => "`kill -9` of a node's herd",
                Failure::Link => "a node's link to the bridge is cut",
            },
            runs.len()
        )?;
        writeln!(
            out,
            "| from the failure until | p50 | p99 | max | goal | verdict |"
        )?;
        writeln!(out, "| --- | --- | --- | --- | --- | --- |")?;
        for (what, value, goal) in timings {
            let spread = if goal {
                Spread::of(runs.iter().map(|run| value(run)))
            } else {
                Spread::of(runs.iter().map(|run| value(run)).filter(Option::is_some))
            };
            let Some(spread) = spread else {
                continue;
            };
            let (goal, verdict) = if goal {
                (
                    format!("p99 ≤ {:.0} ms", self.goal_p99_ms),
                    verdict(spread.missing == 0 && spread.p99 <= self.goal_p99_ms),
                )
            } else {
                (String::new(), "")
            };
            let seen = if spread.count < runs.len() {
                format!(" (seen in {} of {} runs)", spread.count, runs.len())
            } else {
                String::new()
            };
            let missing = if spread.missing > 0 {
                format!(
                    " ({} of {} runs not within {} s)",
                    spread.missing,
                    spread.count,
                    RECOVERY_BOUND.as_secs()
                )
            } else {
                String::new()
            };
            writeln!(
                out,
                "| {what}{seen}{missing} | {} | {} | {} | {goal} | {verdict} |",
                spread.cell(spread.p50),
                spread.cell(spread.p99),
                spread.cell(spread.max),
            )?;
        }
        writeln!(out)?;
        Ok(())
    }

    fn write_counts(&self, out: &mut String) -> std::fmt::Result {
        if self.quiet.is_empty() && self.leave_join.is_none() {
            return Ok(());
        }
        writeln!(out, "| figure | measured | goal | verdict |")?;
        writeln!(out, "| --- | --- | --- | --- |")?;
        for quiet in &self.quiet {
            let load = match quiet.load {
                QuietLoad::Cpu => format!("every core saturated (`{}`)", quiet.stress),
                QuietLoad::Packets => format!(
                    "the dataplane busy ({}; {:.0} SYNs a second reached)",
                    quiet.stress,
                    quiet.flood_rate.unwrap_or_default()
                ),
            };
            writeln!(
                out,
                "| false positives over {} min with {load} while the farm serves light traffic \
                 | {} `peer dead` ({} `ran late`, {} other membership changes; {} of {} requests \
                 answered, {} by a wrong node) | 0 | {} |",
                quiet.minutes,
                quiet.peer_dead,
                quiet.ran_late,
                quiet.other_alarms,
                quiet.udp_answers,
                quiet.udp_sent,
                quiet.udp_wrong_node,
                verdict(quiet.peer_dead == 0)
            )?;
        }
        if let Some(lj) = &self.leave_join {
            writeln!(
                out,
                "| connections broken by a planned leave (SIGTERM of {}, which drains) | {} of {} \
                 ({} served by the leaving node; {} rounds of exchanges, survivors agreed {} \
                 after SIGTERM; {}; exit {} after its connections closed) | 0 | {} |",
                lj.node,
                lj.broken_by_leave,
                lj.leave_connections,
                lj.leave_on_leaver,
                lj.leave_rounds,
                optional_ms(lj.leave_agreed_ms),
                lj.drain_end,
                optional_ms(lj.exit_ms),
                verdict(lj.broken_by_leave == 0)
            )?;
            writeln!(
                out,
                "| connections broken by a join ({} started again) | {} of {} ({} in the buckets \
                 it took back; {} rounds of exchanges, view agreed {} after its start; new \
                 connections in those buckets answered by it: {} of {}) | 0 | {} |",
                lj.node,
                lj.broken_by_join,
                lj.join_connections,
                lj.join_in_moved_buckets,
                lj.join_rounds,
                optional_ms(lj.join_agreed_ms),
                lj.fresh_to_joiner,
                lj.fresh,
                verdict(lj.broken_by_join == 0)
            )?;
        }
        writeln!(out)?;
        if let Some(lj) = self.leave_join.as_ref().filter(|lj| !lj.broken.is_empty()) {
            writeln!(out, "Broken connections (the first ones):\n")?;
            for broken in &lj.broken {
                writeln!(out, "- {broken}")?;
            }
            writeln!(out)?;
        }
        for quiet in self.quiet.iter().filter(|q| !q.excerpts.is_empty()) {
            writeln!(
                out,
                "Membership lines logged under the {} load (the first ones):\n",
                quiet.load.name()
            )?;
            writeln!(out, "```")?;
            for line in &quiet.excerpts {
                writeln!(out, "{line}")?;
            }
            writeln!(out, "```\n")?;
        }
        Ok(())
    }

    fn write_runs(&self, out: &mut String) -> std::fmt::Result {
        writeln!(out, "<details><summary>Every run</summary>\n")?;
        writeln!(
            out,
            "| run | failure | victim | delay | buckets | answered by the victim before (UDP, TCP) | UDP | TCP | \
             `peer dead` | installed | victim's last answer | UDP answered | TCP failed |"
        )?;
        writeln!(
            out,
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
        )?;
        for (i, run) in self.runs.iter().enumerate() {
            writeln!(
                out,
                "| {} | {} | {} | {:.0} ms | {} | {}, {}{} | {} | {} | {} | {} | {} | {} of {} | {} of {} |",
                i + 1,
                run.failure.name(),
                NODES[run.victim],
                run.delay_ms,
                run.buckets,
                run.udp_by_victim_before,
                run.tcp_by_victim_before,
                if run.stray_before > 0 {
                    format!(" ({} answers by others)", run.stray_before)
                } else {
                    String::new()
                },
                optional_ms(run.udp_ms),
                optional_ms(run.tcp_ms),
                optional_ms(run.detected_ms),
                optional_ms(run.installed_ms),
                optional_ms(run.victim_last_ms),
                run.udp_answers,
                run.udp_sent,
                run.tcp_failed,
                run.tcp_opened,
            )?;
        }
        writeln!(out, "\n</details>\n")
    }
}

/// Milliseconds, or `-` when not measured.
pub(super) fn optional_ms(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |ms| format!("{ms:.0} ms"))
}

/// The machine in a sentence: cores, CPU model, memory, kernel.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .and_then(|rest| rest.split_once(':'))
        .map_or("an unknown CPU", |(_, model)| model.trim());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map_or_else(String::new, |kib| {
            format!(", {} GiB", kib.div_ceil(1 << 20))
        });
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "?".to_owned(), |release| release.trim().to_owned());
    format!("Machine: {cores} cores, \"{model}\"{memory}, Linux {kernel}.")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run of `failure` that recovered after `ms`.
    fn run(failure: Failure, ms: f64) -> KillRun {
        KillRun {
            failure,
            victim: 0,
            delay_ms: 0.0,
            buckets: 85,
            udp_by_victim_before: 85,
            tcp_by_victim_before: 85,
            stray_before: 0,
            udp_ms: Some(ms),
            tcp_ms: Some(ms),
            victim_last_ms: None,
            detected_ms: Some(ms),
            installed_ms: Some(ms),
            udp_sent: 100,
            udp_answers: 100,
            tcp_opened: 10,
            tcp_failed: 0,
        }
    }

    /// A false-positive run under `load`.
    fn quiet(load: QuietLoad, flood_rate: Option<f64>) -> Quiet {
        Quiet {
            load,
            minutes: 1,
            stress: "the load".to_owned(),
            flood_rate,
            peer_dead: 0,
            ran_late: 0,
            other_alarms: 0,
            excerpts: Vec::new(),
            udp_sent: 600,
            udp_answers: 600,
            udp_wrong_node: 0,
        }
    }

    #[test]
    fn each_failure_and_each_load_gets_its_rows() {
        let report = FailoverReport {
            command: "herd-perf failover".to_owned(),
            mode: "xdp".to_owned(),
            machine: String::new(),
            setup: String::new(),
            goal_p99_ms: 250.0,
            runs: vec![
                run(Failure::Link, 300.0),
                run(Failure::Kill, 100.0),
                run(Failure::Link, 300.0),
            ],
            failed_runs: Vec::new(),
            leave_join: None,
            quiet: vec![
                quiet(QuietLoad::Cpu, None),
                quiet(QuietLoad::Packets, Some(123_456.0)),
            ],
            keepalived: Vec::new(),
            app: None,
        };
        let text = report.markdown();
        let kill = text
            .find("after `kill -9` of a node's herd, over 1 runs")
            .unwrap();
        let link = text
            .find("after a node's link to the bridge is cut, over 2 runs")
            .unwrap();
        assert!(kill < link, "{text}");
        assert!(
            text[kill..link].contains("| 100 ms | p99 ≤ 250 ms | PASS |"),
            "{text}"
        );
        assert!(
            text[link..].contains("| 300 ms | p99 ≤ 250 ms | SHORT |"),
            "{text}"
        );
        assert!(text.contains("every core saturated (`the load`)"), "{text}");
        assert!(text.contains("123456 SYNs a second reached"), "{text}");
    }

    #[test]
    fn spreads_count_the_missing_at_the_bound() {
        let spread = Spread::of([Some(400.0), Some(500.0), None].into_iter()).unwrap();
        assert_eq!(spread.missing, 1);
        assert!((spread.p50 - 500.0).abs() < 1.0);
        assert_eq!(spread.cell(spread.max), "> 10 s");
        assert_eq!(spread.cell(spread.p50), "500 ms");
        assert!(Spread::of(std::iter::empty()).is_none());
    }
}
