//! `herd status`, `stop`, `start`, `restart` and `drain`: the operator's commands, sent to the
//! running daemon over its control socket.

use std::path::Path;

use anyhow::bail;
use herd_checkers::lifecycle::NodeState;
use herd_membership::snapshot::NodeSnapshot;

use crate::control::{self, Reply, Request};
use crate::status::{CheckStatus, Status};

/// Prints where the node stands.
pub fn status(dir: &Path, node: Option<&str>, json: bool) -> anyhow::Result<()> {
    let status = match control::request(dir, node, Request::Status)? {
        Reply::Status(status) => status,
        Reply::Refused(why) => bail!("refused: {why}"),
        _ => bail!("herd answered something else than its status"),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", render(&status));
    }
    Ok(())
}

/// Sends `request` (stop, start, restart or drain) and prints what the node does.
pub fn command(dir: &Path, node: Option<&str>, request: Request) -> anyhow::Result<()> {
    match control::request(dir, node, request)? {
        Reply::Done(what) => {
            println!("{what}");
            Ok(())
        }
        Reply::Refused(why) => bail!("refused: {why}"),
        _ => bail!("herd answered something else than a reply to a command"),
    }
}

/// The status as text for a terminal.
fn render(status: &Status) -> String {
    let mut out = String::new();
    let snapshot = &status.membership;
    let mut line = |text: String| {
        out.push_str(&text);
        out.push('\n');
    };
    // Up as far as its application goes, but kept out by the farm: that is what matters.
    let refused = snapshot
        .join_held
        .as_ref()
        .filter(|_| status.state == NodeState::Up);
    let state = match refused {
        Some(_) => "REFUSED by the farm".to_owned(),
        None => status.state.to_string(),
    };
    line(format!(
        "node {} of farm {}: {state} for {} ({} mode, pid {})",
        status.node,
        status.farm,
        duration(status.since_ms_ago),
        status.mode,
        status.pid
    ));
    if let Some(why) = refused {
        line(format!(
            "  why: {why}; this node takes no bucket while it hears such heartbeats"
        ));
    } else if let Some(reason) = &status.reason {
        line(format!("  why: {reason}"));
    }
    line(format!(
        "  membership: {}, view {} {}, {}, owns {} of {} buckets",
        snapshot.state,
        snapshot.epoch,
        if snapshot.agreed {
            "agreed by every live node"
        } else {
            "not agreed yet"
        },
        if snapshot.quorum {
            "quorum held"
        } else {
            "QUORUM LOST"
        },
        snapshot.owned(),
        snapshot.buckets
    ));
    if let Some(drain) = &snapshot.drain {
        let left = drain.connections.map_or("not counted yet".into(), |count| {
            format!("{count} connections left")
        });
        line(format!("  draining: {} views, {left}", drain.views));
    }
    if !status.unseen_listeners.is_empty() {
        line(format!(
            "  listeners: none in herd's network namespace for {}: a join, a leave or a drain breaks their connections (run herd in the application's network namespace)",
            status.unseen_listeners.join(", ")
        ));
    }
    let restarts = &status.restarts;
    line(format!(
        "  restarts: {} of {} allowed within {} s ({} since herd started)",
        restarts.recent, restarts.limit, restarts.within_s, restarts.total
    ));
    line(String::new());
    line(format!(
        "  {:<16} {:<11} {:>8} {:>11} {:>9}",
        "NODE", "STATE", "BUCKETS", "LAST HEARD", "DELAY"
    ));
    for node in &snapshot.nodes {
        line(node_row(node));
    }
    if !status.checks.is_empty() {
        line(String::new());
        line(format!(
            "  {:<16} {:<9} {:<8} {:<8} {:>7} {:>8}  LAST",
            "CHECK", "KIND", "ACTION", "HEALTH", "PROBES", "FAILURES"
        ));
        for check in &status.checks {
            line(check_row(check));
        }
    }
    let traffic = &snapshot.traffic;
    line(String::new());
    line(format!(
        "  {:<16} {:>14} {:>16}",
        "TRAFFIC", "PACKETS", "BYTES"
    ));
    for (name, count) in traffic.by_outcome() {
        line(format!(
            "  {name:<16} {:>14} {:>16}",
            count.packets, count.bytes
        ));
    }
    if traffic.shed > 0 {
        line(format!(
            "  {:<16} {:>14} {:>16}  (a worker could not keep up)",
            "shed", traffic.shed, "-"
        ));
    }
    if traffic.checksums_completed > 0 {
        line(format!(
            "  checksums completed: {} (of senders whose transmit offload left them unfinished)",
            traffic.checksums_completed
        ));
    }
    let stats = &snapshot.stats;
    let refused: u64 = snapshot
        .refused
        .by_reason()
        .iter()
        .map(|(_, count)| count)
        .sum();
    line(String::new());
    line(format!(
        "  events: {} views, {} nodes declared dead, {} returns after a partition or a freeze, {} pauses of this node, {} heartbeats sent, {refused} datagrams refused",
        stats.views, stats.deaths, stats.returns, stats.pauses, stats.sent
    ));
    out
}

fn node_row(node: &NodeSnapshot) -> String {
    let name = if node.local {
        format!("{} (this)", node.name)
    } else {
        node.name.clone()
    };
    let state = match node.state {
        _ if !node.alive && node.state.is_some() => "dead".to_owned(),
        Some(state) => state.to_string(),
        None => "never heard".to_owned(),
    };
    let heard = node
        .heard_ms_ago
        .map_or("-".into(), |ms| format!("{} ago", duration(ms)));
    let delay = node.delay_ms.map_or("-".into(), |ms| format!("{ms} ms"));
    format!(
        "  {name:<16} {state:<11} {:>8} {heard:>11} {delay:>9}",
        node.buckets
    )
}

fn check_row(check: &CheckStatus) -> String {
    let (action, health) = (check.action.to_string(), check.health.to_string());
    let last = match &check.last {
        None => "not probed yet".to_owned(),
        Some(probe) => {
            let when = format!("{} ago, took {} ms", duration(probe.ms_ago), probe.took_ms);
            match &probe.error {
                None => format!("ok {when}"),
                Some(error) => format!("failed {when}: {error}"),
            }
        }
    };
    format!(
        "  {:<16} {:<9} {action:<8} {health:<8} {:>7} {:>8}  {last}",
        check.name, check.kind, check.probes, check.failures
    )
}

/// `850 ms`, `12.3 s`, `4 min 5 s`, `2 h 3 min`.
pub(super) fn duration(ms: u64) -> String {
    match ms {
        0..1000 => format!("{ms} ms"),
        1000..60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{} min {} s", ms / 60_000, ms % 60_000 / 1000),
        _ => format!("{} h {} min", ms / 3_600_000, ms % 3_600_000 / 60_000),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(duration(850), "850 ms");
        assert_eq!(duration(12_345), "12.3 s");
        assert_eq!(duration(245_000), "4 min 5 s");
        assert_eq!(duration(7_380_000), "2 h 3 min");
    }
}
