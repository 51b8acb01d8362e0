//! What the console's page shows of the farm: every node's report with its state in one
//! word, the bucket map as this node sees it, and one timeline merged from the nodes'.

use herd_checkers::lifecycle::NodeState;
use herd_config::FarmConfig;
use herd_membership::snapshot::Snapshot;
use herd_membership::wire::State;
use herd_packet::table::NodeId;
use serde::Serialize;

use crate::farm_access::{FarmReport, NodeReport};
use crate::timeline::{Event, EventKind};

/// The most events the page is sent.
const TIMELINE_EVENTS: usize = 100;

/// The farm as the page shows it.
#[derive(Serialize)]
pub struct FarmView {
    /// Every node's answer, in the configuration's order; their timelines are merged into
    /// `timeline`, so theirs are left empty.
    pub report: FarmReport,
    /// Each node's state in one word, in the same order.
    pub states: Vec<&'static str>,
    /// Each node's configured weight, in the same order.
    pub weights: Vec<u32>,
    /// The bucket map.
    pub buckets: BucketMap,
    /// The farm's events, newest first.
    pub timeline: Vec<Event>,
}

/// Every bucket's owner in the current view of this node, and whether it is still drained.
#[derive(Serialize)]
pub struct BucketMap {
    /// The nodes, in the configuration's order: the owners index it.
    pub nodes: Vec<String>,
    /// Each bucket's owner, `None` when no node owns it.
    pub owners: Vec<Option<NodeId>>,
    /// The buckets where a node still serves connections under an earlier view: few or none,
    /// so listed rather than flagged.
    pub draining: Vec<usize>,
}

impl FarmView {
    /// The view of `report`, with the weights of `config` and the bucket map of this node's
    /// membership `snapshot`.
    pub fn new(mut report: FarmReport, config: &FarmConfig, snapshot: &Snapshot) -> Self {
        let timeline = merged_timeline(&report);
        for node in &mut report.nodes {
            node.timeline = Vec::new();
        }
        Self {
            states: report.nodes.iter().map(state_word).collect(),
            weights: report
                .nodes
                .iter()
                .map(|node| {
                    config
                        .node_index(&node.name)
                        .map_or(0, |index| config.nodes[index].weight)
                })
                .collect(),
            buckets: BucketMap::of(snapshot),
            timeline,
            report,
        }
    }
}

impl BucketMap {
    /// The bucket map of `snapshot`.
    pub fn of(snapshot: &Snapshot) -> Self {
        let nodes = snapshot
            .nodes
            .iter()
            .map(|node| node.name.clone())
            .collect();
        let known = snapshot.nodes.len();
        Self {
            nodes,
            owners: snapshot
                .bucket_owners
                .iter()
                .map(|&owner| (usize::from(owner) < known).then_some(owner))
                .collect(),
            draining: snapshot
                .draining_buckets
                .iter()
                .enumerate()
                .filter_map(|(bucket, &drained)| drained.then_some(bucket))
                .collect(),
        }
    }
}

/// A node's state in one word: `no answer`, or what it does for the farm.
pub fn state_word(node: &NodeReport) -> &'static str {
    let Some(status) = &node.status else {
        return "no answer";
    };
    match status.state {
        NodeState::Stopped if status.drained => "drained",
        NodeState::Stopped => "stopped",
        NodeState::Starting => "starting",
        NodeState::Failed => "failed",
        NodeState::Withdrawing if status.membership.drain.is_some() => "draining",
        NodeState::Withdrawing => "withdrawn",
        NodeState::Up => match status.membership.state {
            State::Up if !status.membership.quorum => "no quorum",
            State::Up => "up",
            State::Joining => "joining",
            State::Leaving => "draining",
            State::Withdrawn => "withdrawn",
            State::Stopped => "stopped",
        },
    }
}

/// One timeline from the nodes': the farm's events (views, deaths, joins, leaves) as the node
/// that gathered the report saw them, and each node's own events (its state, checks,
/// restarts, drains) as it recorded them; newest first, at most [`TIMELINE_EVENTS`].
pub fn merged_timeline(report: &FarmReport) -> Vec<Event> {
    let mut events: Vec<Event> = report
        .nodes
        .iter()
        .flat_map(|node| {
            let gatherer = node.name == report.gathered_by;
            node.timeline.iter().filter(move |event| {
                let farm_wide = matches!(
                    event.kind,
                    EventKind::View | EventKind::Death | EventKind::Join | EventKind::Leave
                );
                if farm_wide {
                    gatherer
                } else {
                    event.node == node.name
                }
            })
        })
        .cloned()
        .collect();
    events.sort_by_key(|event| std::cmp::Reverse(event.at_ms));
    events.truncate(TIMELINE_EVENTS);
    events
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use herd_membership::snapshot::DrainSnapshot;

    use super::*;
    use crate::web::console::tests::status;

    fn report_of(name: &str, state: Option<(NodeState, State)>) -> NodeReport {
        NodeReport {
            name: name.into(),
            address: SocketAddr::from(([198, 18, 0, 1], 7400)),
            status: state.map(|(node, membership)| {
                let mut status = status(name);
                status.state = node;
                status.membership.state = membership;
                status
            }),
            timeline: Vec::new(),
            error: state.is_none().then(|| "timed out".to_owned()),
        }
    }

    #[test]
    fn state_words() {
        let word = |state| state_word(&report_of("alpha", state));
        assert_eq!(word(None), "no answer");
        assert_eq!(word(Some((NodeState::Up, State::Up))), "up");
        assert_eq!(word(Some((NodeState::Up, State::Joining))), "joining");
        assert_eq!(
            word(Some((NodeState::Starting, State::Withdrawn))),
            "starting"
        );
        assert_eq!(
            word(Some((NodeState::Stopped, State::Withdrawn))),
            "stopped"
        );
        assert_eq!(word(Some((NodeState::Failed, State::Withdrawn))), "failed");
        assert_eq!(
            word(Some((NodeState::Withdrawing, State::Withdrawn))),
            "withdrawn"
        );
        let mut draining = report_of("alpha", Some((NodeState::Withdrawing, State::Leaving)));
        if let Some(status) = &mut draining.status {
            status.membership.drain = Some(DrainSnapshot {
                views: 1,
                connections: Some(3),
            });
        }
        assert_eq!(state_word(&draining), "draining");
        let mut drained = report_of("alpha", Some((NodeState::Stopped, State::Withdrawn)));
        if let Some(status) = &mut drained.status {
            status.drained = true;
        }
        assert_eq!(
            state_word(&drained),
            "drained",
            "out, its application running"
        );
        let mut alone = report_of("alpha", Some((NodeState::Up, State::Up)));
        if let Some(status) = &mut alone.status {
            status.membership.quorum = false;
        }
        assert_eq!(state_word(&alone), "no quorum");
    }

    #[test]
    fn one_timeline_without_the_farm_events_twice() {
        let event = |at_ms, node: &str, kind| Event {
            at_ms,
            node: node.into(),
            kind,
            text: String::new(),
        };
        let mut alpha = report_of("alpha", None);
        alpha.timeline = vec![
            event(1, "charlie", EventKind::Death),
            event(2, "alpha", EventKind::View),
            event(5, "alpha", EventKind::CheckFailed),
        ];
        let mut bravo = report_of("bravo", None);
        bravo.timeline = vec![
            event(1, "charlie", EventKind::Death),
            event(3, "bravo", EventKind::View),
            event(4, "bravo", EventKind::Restart),
        ];
        let report = FarmReport {
            gathered_by: "alpha".into(),
            at_ms: 10,
            nodes: vec![alpha, bravo],
        };
        let merged: Vec<(u64, EventKind)> = merged_timeline(&report)
            .iter()
            .map(|event| (event.at_ms, event.kind))
            .collect();
        assert_eq!(
            merged,
            [
                (5, EventKind::CheckFailed),
                (4, EventKind::Restart),
                (2, EventKind::View),
                (1, EventKind::Death),
            ]
        );
    }
}
