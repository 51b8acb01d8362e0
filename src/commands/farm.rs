//! `herd drain|stop|start|restart NODE`, the same with `--all`, and `herd status --farm`: the
//! operator's commands for the whole farm. Each is sent to this host's daemon over its control
//! socket, which relays it to the nodes over the farm's authenticated channel.

use std::path::Path;

use anyhow::bail;
use herd_checkers::health::Health;

use super::status::duration;
use crate::control::{self, Reply, Request};
use crate::farm_access::{FarmCommand, FarmReport, NodeReport};
use crate::rolling::{self, Pace, SystemClock};
use crate::status::Status;

/// This host's daemon, through which the farm is reached.
struct LocalDaemon<'a> {
    /// Where the control sockets are.
    dir: &'a Path,
    /// Which of this host's daemons, when several run here.
    node: Option<&'a str>,
}

impl rolling::Farm for LocalDaemon<'_> {
    fn report(&self) -> anyhow::Result<FarmReport> {
        match control::request(self.dir, self.node, Request::FarmStatus)? {
            Reply::Farm(report) => Ok(*report),
            Reply::Refused(why) => bail!("refused: {why}"),
            _ => bail!("herd answered something else than the farm's status"),
        }
    }

    fn command(&self, node: &str, command: FarmCommand) -> anyhow::Result<Reply> {
        let request = Request::Farm {
            node: node.into(),
            action: command,
        };
        control::request(self.dir, self.node, request)
    }
}

/// Carries `command` to node `target` of the farm, through this host's daemon (`local` among
/// several), and prints what the node does.
pub fn command(
    dir: &Path,
    local: Option<&str>,
    target: &str,
    command: FarmCommand,
) -> anyhow::Result<()> {
    let daemon = LocalDaemon { dir, node: local };
    match rolling::Farm::command(&daemon, target, command)? {
        Reply::Done(what) => {
            println!("{target}: {what}");
            Ok(())
        }
        Reply::Refused(why) => bail!("{why}"),
        _ => bail!("herd answered something else than a reply to a command"),
    }
}

/// Carries `command` to every node, one after another (see [`rolling`]), printing each step.
pub fn roll(dir: &Path, local: Option<&str>, command: FarmCommand) -> anyhow::Result<()> {
    let daemon = LocalDaemon { dir, node: local };
    rolling::roll(
        &daemon,
        &SystemClock::default(),
        command,
        Pace::default(),
        &mut |step| println!("{step}"),
    )
}

/// Prints every node's state, gathered by this host's daemon.
pub fn status(dir: &Path, local: Option<&str>, json: bool) -> anyhow::Result<()> {
    let report = rolling::Farm::report(&LocalDaemon { dir, node: local })?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    Ok(())
}

/// The farm's report as text for a terminal: a row per node, then what is wrong with each.
fn render(report: &FarmReport) -> String {
    let farm = report
        .nodes
        .iter()
        .find_map(|node| Some(node.status.as_ref()?.farm.clone()))
        .unwrap_or_else(|| "?".into());
    let silent = report
        .nodes
        .iter()
        .filter(|node| node.status.is_none())
        .count();
    let mut out = format!(
        "farm {farm}, as gathered by {}: {} nodes, {}\n\n",
        report.gathered_by,
        report.nodes.len(),
        match silent {
            0 => "every node answered".to_owned(),
            count => format!("{count} did NOT ANSWER"),
        }
    );
    out.push_str(&format!(
        "  {:<16} {:<12} {:>10} {:>9} {:<12} {:>12} {:>12} {:>8}\n",
        "NODE", "STATE", "FOR", "BUCKETS", "CHECKS", "ACCEPTED", "DROPPED", "RESTARTS"
    ));
    let mut notes = Vec::new();
    for node in &report.nodes {
        match &node.status {
            Some(status) => {
                out.push_str(&row(&node.name, status));
                notes.extend(troubles(&node.name, status));
            }
            None => {
                out.push_str(&format!("  {:<16} NO ANSWER\n", node.name));
                notes.push(silence(node));
            }
        }
    }
    if !notes.is_empty() {
        out.push('\n');
        for note in notes {
            out.push_str(&format!("  {note}\n"));
        }
    }
    out
}

fn row(name: &str, status: &Status) -> String {
    let state = if status.state == herd_checkers::lifecycle::NodeState::Up && !status.serving() {
        "up, idle".to_owned()
    } else {
        status.state.to_string()
    };
    let healthy = status
        .checks
        .iter()
        .filter(|check| check.health == Health::Healthy)
        .count();
    let checks = format!("{healthy}/{} ok", status.checks.len());
    let buckets = format!(
        "{}/{}",
        status.membership.owned(),
        status.membership.buckets
    );
    let traffic = &status.membership.traffic;
    format!(
        "  {name:<16} {state:<12} {:>10} {buckets:>9} {checks:<12} {:>12} {:>12} {:>8}\n",
        duration(status.since_ms_ago),
        traffic.accepted.packets,
        traffic.dropped.packets,
        status.restarts.total
    )
}

/// What is wrong with an answering node: why it is not up, its checks that are not healthy.
fn troubles(name: &str, status: &Status) -> Vec<String> {
    let mut notes = Vec::new();
    if let Some(reason) = &status.reason {
        notes.push(format!("{name}: {}: {reason}", status.state));
    }
    if let Some(why) = &status.membership.join_held {
        notes.push(format!("{name}: refused by the farm: {why}"));
    }
    for check in status
        .checks
        .iter()
        .filter(|check| check.health != Health::Healthy)
    {
        let last = check
            .last
            .as_ref()
            .and_then(|probe| probe.error.clone())
            .unwrap_or_else(|| "not probed yet".into());
        notes.push(format!(
            "{name}: check {} is {}: {last}",
            check.name, check.health
        ));
    }
    notes
}

/// Why a node did not answer, and where it was asked.
fn silence(node: &NodeReport) -> String {
    format!(
        "{}: NO ANSWER from {}: {}",
        node.name,
        node.address,
        node.error.as_deref().unwrap_or("no reason given")
    )
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;

    #[test]
    fn a_node_that_did_not_answer_is_marked_with_why() {
        let report = FarmReport {
            gathered_by: "alpha".into(),
            at_ms: 0,
            nodes: vec![NodeReport {
                name: "bravo".into(),
                address: SocketAddr::from(([198, 18, 0, 2], 7946)),
                status: None,
                timeline: Vec::new(),
                error: Some("connection refused".into()),
            }],
        };
        let text = render(&report);
        assert!(
            text.starts_with("farm ?, as gathered by alpha: 1 nodes, 1 did NOT ANSWER"),
            "{text}"
        );
        assert!(text.contains("\n  bravo            NO ANSWER"), "{text}");
        assert!(
            text.contains("bravo: NO ANSWER from 198.18.0.2:7946: connection refused"),
            "{text}"
        );
    }
}
