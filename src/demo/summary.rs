//! What the demo measured, printed at its end as text or as JSON (`--json`).

use std::fmt::Write;
use std::time::Duration;

use herd_config::Membership;
use serde::Serialize;

use super::bed::Made;
use super::load::{Counts, Phase, Tally, Watched, INTERVAL, TIMEOUT};
use super::scenario::{FAILOVER_BOUND, REJOIN_BOUND};

/// What the demo's course measured, from which [`Summary::new`] makes the summary.
pub struct Measured<'a> {
    /// The dataplane mode.
    pub mode: &'a str,
    /// The traffic time planned.
    pub duration: Duration,
    /// The nodes' names.
    pub names: &'a [&'static str],
    /// What the load saw.
    pub tally: &'a Tally,
    /// The client flows.
    pub flows: usize,
    /// The node killed and restarted.
    pub victim: usize,
    /// The flows it answered when it was killed.
    pub victim_flows: usize,
    /// The watch of its flows from the kill on.
    pub failover: Watched,
    /// The watch of its flows from the restart on.
    pub rejoin: Watched,
    /// How long each phase lasted.
    pub lengths: [(Phase, Duration); 5],
    /// What the demo made.
    pub made: Made,
}

/// The demo's results.
#[derive(Debug, Serialize)]
pub struct Summary {
    /// The dataplane mode.
    pub mode: String,
    /// The traffic time planned, in seconds.
    pub duration_s: u64,
    /// The client flows.
    pub flows: usize,
    /// Requests per second, all flows together.
    pub requests_per_s: u64,
    /// How often each flow sends a request: the resolution of the times measured.
    pub interval_ms: u64,
    /// How long a request waits for its answer before it counts as lost.
    pub timeout_ms: u64,
    /// The node killed and restarted.
    pub victim: String,
    /// The flows it answered when it was killed.
    pub victim_flows: usize,
    /// From the kill until each of those flows had been answered by a surviving node.
    pub failover_ms: Option<f64>,
    /// The victim's last answer after the kill (its pinned program still accepting).
    pub victim_answered_until_ms: Option<f64>,
    /// From the restart until the victim had answered each of its flows again.
    pub rejoin_ms: Option<f64>,
    /// The survivors' last answer in those flows after the restart.
    pub survivors_answered_until_ms: Option<f64>,
    /// Each node's answers, by phase.
    pub nodes: Vec<NodeAnswers>,
    /// Each phase: how long it lasted and its requests.
    pub phases: Vec<PhaseCounts>,
    /// Every phase together.
    pub total: Counts,
    /// What was measured wrong or not at all (empty when all went as designed).
    pub problems: Vec<String>,
    /// The last lines of the logs of the nodes that did not do their part, if any.
    pub logs: Vec<NodeLog>,
    /// What the demo made (and removed).
    pub made: Made,
}

/// A node's answers in each phase.
#[derive(Debug, Serialize)]
pub struct NodeAnswers {
    /// Its name.
    pub name: String,
    /// Before the kill (warm-up and steady).
    pub before_kill: u64,
    /// From the kill until the restart.
    pub while_down: u64,
    /// From the restart until the victim served its share again.
    pub rejoining: u64,
    /// After the rejoin.
    pub after_rejoin: u64,
}

/// The last lines of a node's log.
#[derive(Debug, Serialize)]
pub struct NodeLog {
    /// The node's name.
    pub name: String,
    /// The lines, each indented.
    pub last_lines: String,
}

/// One phase's requests.
#[derive(Debug, Serialize)]
pub struct PhaseCounts {
    /// The phase's name.
    pub name: &'static str,
    /// How long it lasted, in seconds.
    pub seconds: f64,
    /// Its requests.
    #[serde(flatten)]
    pub counts: Counts,
}

impl NodeAnswers {
    /// Node `node`'s answers in `tally`.
    pub fn of(tally: &Tally, node: usize, name: &str) -> Self {
        let answers = |phase| tally.phase(phase).by_node[node];
        NodeAnswers {
            name: name.to_owned(),
            before_kill: answers(Phase::WarmUp) + answers(Phase::Steady),
            while_down: answers(Phase::Down),
            rejoining: answers(Phase::Rejoining),
            after_rejoin: answers(Phase::Final),
        }
    }
}

/// A duration in milliseconds, to a tenth.
pub fn ms(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1e4).round() / 10.0
}

impl Summary {
    /// The summary of what was `measured`, with the problems found in it.
    pub fn new(measured: Measured) -> Self {
        let tally = measured.tally;
        let mut summary = Summary {
            mode: measured.mode.to_owned(),
            duration_s: measured.duration.as_secs(),
            flows: measured.flows,
            requests_per_s: (measured.flows as f64 / INTERVAL.as_secs_f64()).round() as u64,
            interval_ms: INTERVAL.as_millis() as u64,
            timeout_ms: TIMEOUT.as_millis() as u64,
            victim: measured.names[measured.victim].to_owned(),
            victim_flows: measured.victim_flows,
            failover_ms: measured.failover.done.map(ms),
            victim_answered_until_ms: measured.failover.others_last.map(ms),
            rejoin_ms: measured.rejoin.done.map(ms),
            survivors_answered_until_ms: measured.rejoin.others_last.map(ms),
            nodes: (0..measured.names.len())
                .map(|node| NodeAnswers::of(tally, node, measured.names[node]))
                .collect(),
            phases: measured
                .lengths
                .iter()
                .map(|&(phase, length)| PhaseCounts {
                    name: phase.label(),
                    seconds: (length.as_secs_f64() * 10.0).round() / 10.0,
                    counts: tally.phase(phase).clone(),
                })
                .collect(),
            total: tally.total(),
            problems: Vec::new(),
            logs: Vec::new(),
            made: measured.made,
        };
        summary.problems = summary.problems();
        summary
    }

    /// What went otherwise than designed.
    fn problems(&self) -> Vec<String> {
        let victim = &self.victim;
        let mut problems = Vec::new();
        if self.failover_ms.is_none() {
            problems.push(format!(
                "the survivors did not answer every flow of {victim} within {FAILOVER_BOUND:?} \
                 of the kill"
            ));
        }
        if self.rejoin_ms.is_none() {
            problems.push(format!(
                "{victim} did not answer each of its flows again within {REJOIN_BOUND:?} of its \
                 restart"
            ));
        }
        for node in &self.nodes {
            if node.before_kill == 0 {
                problems.push(format!("{} answered nothing before the kill", node.name));
            }
            if node.name == *victim && node.after_rejoin == 0 {
                problems.push(format!("{victim} answered nothing after its rejoin"));
            }
        }
        if self.total.duplicates > 0 {
            problems.push(format!(
                "{} requests were answered twice: two nodes took the same packet",
                self.total.duplicates
            ));
        }
        for phase in &self.phases {
            let steady = [Phase::Steady.label(), Phase::Final.label()].contains(&phase.name);
            if steady && phase.counts.lost > 0 {
                problems.push(format!(
                    "{} requests lost in phase \"{}\", with every node up",
                    phase.counts.lost, phase.name
                ));
            }
        }
        problems
    }

    /// The summary as text.
    pub fn text(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = self.write_text(&mut out);
        out
    }

    fn write_text(&self, out: &mut String) -> std::fmt::Result {
        let victim = &self.victim;
        writeln!(
            out,
            "\nSummary: {} nodes in {} mode, {} s of traffic from {} UDP flows ({} requests/s)\n",
            self.nodes.len(),
            self.mode,
            self.duration_s,
            self.flows,
            self.requests_per_s
        )?;
        writeln!(
            out,
            "  {:<9} {:>12} {:>12} {:>12} {:>13}",
            "ANSWERS", "BEFORE KILL", "WHILE DOWN", "REJOINING", "AFTER REJOIN"
        )?;
        for node in &self.nodes {
            writeln!(
                out,
                "  {:<9} {:>12} {:>12} {:>12} {:>13}",
                node.name, node.before_kill, node.while_down, node.rejoining, node.after_rejoin
            )?;
        }
        writeln!(out)?;
        let dead_after = Membership::DEFAULT_DEAD_AFTER_MS;
        let deadline = dead_after - Membership::DEFAULT_HEARTBEAT_MS;
        let mut failover = match self.failover_ms {
            Some(ms) => format!(
                "{ms:.0} ms: from kill -9 of {victim}'s herd until each of the {} flows {victim} \
                 was answering had been answered by a surviving node (measured at the client, \
                 each flow sending every {} ms).",
                self.victim_flows, self.interval_ms
            ),
            None => "not measured: see the problems below.".to_owned(),
        };
        if let Some(ms) = self.victim_answered_until_ms {
            failover.push_str(&format!(
                " {victim}'s last answer came {ms:.0} ms after the kill."
            ));
        }
        failover.push_str(&if self.mode == "xdp" {
            format!(
                " In xdp mode a killed node's pinned XDP program keeps accepting its buckets \
                 until its liveness deadline ({deadline} ms after its last heartbeat), and its \
                 application (here the responder) lives on: it answers until then. The \
                 survivors take its buckets once they have not heard it for {dead_after} ms; a \
                 bucket never has two owners."
            )
        } else {
            format!(
                " In afxdp mode a killed node's AF_XDP sockets go with its herd: it answers \
                 nothing from the kill on. The survivors take its buckets once they have not \
                 heard it for {dead_after} ms."
            )
        });
        paragraph(out, "failover", &failover)?;
        let mut rejoin = match self.rejoin_ms {
            Some(ms) => format!(
                "{ms:.0} ms: from the restart of {victim}'s herd until {victim} had answered \
                 each of those flows again (start, VIP probe, join, agreement)."
            ),
            None => "not measured: see the problems below.".to_owned(),
        };
        if let Some(ms) = self.survivors_answered_until_ms {
            rejoin.push_str(&format!(
                " The survivors answered them until {ms:.0} ms after the restart."
            ));
        }
        paragraph(out, "rejoin", &rejoin)?;
        let total = &self.total;
        let mut requests = format!(
            "{} sent, {} answered, {} lost, {} answered twice.",
            total.sent, total.answered, total.lost, total.duplicates
        );
        for phase in &self.phases {
            if phase.counts.lost == 0 {
                continue;
            }
            let why = match phase.name {
                name if name == Phase::Down.label() => format!(
                    "sent to {victim}'s buckets after it stopped accepting and before the \
                     survivors took them over: expected"
                ),
                name if name == Phase::Rejoining.label() => format!(
                    "sent to the buckets moving back to {victim} between their release by the \
                     survivors and their take-over by {victim}: expected"
                ),
                _ => "not expected while every node is up".to_owned(),
            };
            requests.push_str(&format!(
                " {} lost in phase \"{}\": {why}.",
                phase.counts.lost, phase.name
            ));
        }
        paragraph(out, "requests", &requests)?;
        for problem in &self.problems {
            paragraph(out, "PROBLEM", problem)?;
        }
        for log in &self.logs {
            writeln!(
                out,
                "  the last lines of {}'s log:\n{}",
                log.name, log.last_lines
            )?;
        }
        Ok(())
    }
}

/// Width of the summary's paragraphs.
const WIDTH: usize = 100;

/// Writes `text` under `head`, wrapped at [`WIDTH`] with a hanging indent.
fn paragraph(out: &mut String, head: &str, text: &str) -> std::fmt::Result {
    const INDENT: usize = 12;
    let mut line = format!("  {head:<width$}", width = INDENT - 2);
    let mut empty = true;
    for word in text.split_whitespace() {
        if !empty && line.len() + 1 + word.len() > WIDTH {
            writeln!(out, "{line}")?;
            line = " ".repeat(INDENT);
            empty = true;
        }
        if !empty {
            line.push(' ');
        }
        line.push_str(word);
        empty = false;
    }
    writeln!(out, "{line}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paragraphs_wrap_under_their_head() {
        let mut out = String::new();
        paragraph(&mut out, "rejoin", &"word ".repeat(40)).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("  rejoin    word word"));
        assert!(lines[1].starts_with("            word"));
        assert!(lines.iter().all(|line| line.len() <= WIDTH));
        assert_eq!(out.split_whitespace().filter(|w| *w == "word").count(), 40);
    }
}
