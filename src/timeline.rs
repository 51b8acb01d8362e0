//! The node's timeline: what happened to the farm as this node saw it (views, deaths, joins,
//! leaves, drains, check failures, restarts), with wall-clock times, kept for the console.

use std::collections::VecDeque;
use std::sync::Mutex;

use herd_checkers::health::Health;
use herd_membership::snapshot::Snapshot;
use herd_membership::wire::State;
use serde::{Deserialize, Serialize};

use crate::status::Status;

/// How many events a timeline keeps: the oldest go first.
pub const CAPACITY: usize = 200;

/// What kind of thing happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A new view of the farm: who is a member.
    View,
    /// A node stopped being heard and was declared dead.
    Death,
    /// A node joined the view.
    Join,
    /// A node left the view on purpose.
    Leave,
    /// A drain began or ended.
    Drain,
    /// A check failed.
    CheckFailed,
    /// A failed check recovered.
    CheckRecovered,
    /// The application was restarted.
    Restart,
    /// The node's own state changed.
    State,
}

/// One thing that happened.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// When, in ms since the Unix epoch.
    pub at_ms: u64,
    /// The node it happened to.
    pub node: String,
    /// What kind of thing.
    pub kind: EventKind,
    /// What happened, in words.
    pub text: String,
}

/// The latest [`CAPACITY`] events, shared between the thread that records them and the servers
/// that show them.
#[derive(Debug, Default)]
pub struct Timeline {
    events: Mutex<VecDeque<Event>>,
}

impl Timeline {
    /// Adds `event`, forgetting the oldest when full.
    pub fn record(&self, event: Event) {
        let mut events = self
            .events
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if events.len() == CAPACITY {
            events.pop_front();
        }
        events.push_back(event);
    }

    /// The events kept, oldest first.
    pub fn recent(&self) -> Vec<Event> {
        let events = self
            .events
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        events.iter().cloned().collect()
    }
}

/// The events between two successive statuses of this node, `before` and `after`, taken at
/// `at_ms` (ms since the Unix epoch): what changed in the farm as this node sees it, and in
/// this node itself.
pub fn events_between(before: &Status, after: &Status, at_ms: u64) -> Vec<Event> {
    let mut events = Vec::new();
    let mut add = |node: &str, kind: EventKind, text: String| {
        events.push(Event {
            at_ms,
            node: node.to_owned(),
            kind,
            text,
        });
    };
    let local = after.node.as_str();
    if before.state != after.state {
        let why = after
            .reason
            .as_ref()
            .map(|reason| format!(": {reason}"))
            .unwrap_or_default();
        add(
            local,
            EventKind::State,
            format!("{} → {}{why}", before.state, after.state),
        );
    }
    if after.restarts.total > before.restarts.total {
        add(
            local,
            EventKind::Restart,
            format!(
                "the application was restarted ({} in the last {} s, limit {})",
                after.restarts.recent, after.restarts.within_s, after.restarts.limit
            ),
        );
    }
    for check in &after.checks {
        let was = before
            .checks
            .iter()
            .find(|earlier| earlier.name == check.name)
            .map(|earlier| earlier.health);
        match (was, check.health) {
            (Some(was), Health::Failed) if was != Health::Failed => {
                let error = check
                    .last
                    .as_ref()
                    .and_then(|probe| probe.error.as_deref())
                    .map(|error| format!(": {error}"))
                    .unwrap_or_default();
                add(
                    local,
                    EventKind::CheckFailed,
                    format!("check {} failed{error}", check.name),
                );
            }
            (Some(Health::Failed), Health::Healthy) => add(
                local,
                EventKind::CheckRecovered,
                format!("check {} recovered", check.name),
            ),
            _ => {}
        }
    }
    match (&before.membership.drain, &after.membership.drain) {
        (None, Some(drain)) => add(
            local,
            EventKind::Drain,
            format!(
                "began draining the connections of {} earlier view(s)",
                drain.views
            ),
        ),
        (Some(_), None) => add(local, EventKind::Drain, "the drain is over".into()),
        _ => {}
    }
    membership_events(&before.membership, &after.membership, &mut add);
    events
}

/// The views, deaths, joins and leaves between two snapshots of the membership.
fn membership_events(
    before: &Snapshot,
    after: &Snapshot,
    add: &mut impl FnMut(&str, EventKind, String),
) {
    for node in &after.nodes {
        let Some(earlier) = before
            .nodes
            .iter()
            .find(|earlier| earlier.name == node.name)
        else {
            continue;
        };
        if node.local {
            continue;
        }
        if earlier.alive && !node.alive {
            // A node that stopped on purpose falls silent too: that is no death.
            if matches!(
                earlier.state,
                Some(State::Leaving | State::Withdrawn | State::Stopped)
            ) {
                add(
                    &node.name,
                    EventKind::Leave,
                    format!("{} fell silent after stopping", node.name),
                );
            } else {
                add(
                    &node.name,
                    EventKind::Death,
                    format!("{} is no longer heard: declared dead", node.name),
                );
            }
            continue;
        }
        let was_up = earlier.alive && earlier.state == Some(State::Up);
        let is_up = node.alive && node.state == Some(State::Up);
        if !was_up && is_up {
            add(&node.name, EventKind::Join, format!("{} joined", node.name));
        } else if was_up && node.alive {
            if let Some(state) = node.state.filter(|&state| state != State::Up) {
                add(
                    &node.name,
                    EventKind::Leave,
                    format!("{} left ({state})", node.name),
                );
            }
        }
    }
    if after.epoch != before.epoch {
        let owners: Vec<String> = after
            .nodes
            .iter()
            .filter(|node| node.buckets > 0)
            .map(|node| format!("{} ({})", node.name, node.buckets))
            .collect();
        let owners = if owners.is_empty() {
            "no node owns a bucket".to_owned()
        } else {
            owners.join(", ")
        };
        let local = after
            .nodes
            .iter()
            .find(|node| node.local)
            .map_or("", |node| node.name.as_str());
        add(
            local,
            EventKind::View,
            format!("view {}: {owners}", after.epoch),
        );
    }
}

#[cfg(test)]
mod tests {
    use herd_checkers::lifecycle::{Action, NodeState};
    use herd_membership::snapshot::{DrainSnapshot, NodeSnapshot};

    use super::*;
    use crate::status::{CheckStatus, ProbeStatus, Restarts};

    const AT: u64 = 1_700_000_000_000;

    fn node(name: &str, local: bool, state: State, buckets: usize) -> NodeSnapshot {
        NodeSnapshot {
            name: name.into(),
            local,
            alive: true,
            state: Some(state),
            incarnation: Some(1),
            buckets,
            heard_ms_ago: None,
            delay_ms: None,
        }
    }

    /// Node alpha, up with bravo and charlie in view 3, with one healthy check.
    fn steady() -> Status {
        Status {
            node: "alpha".into(),
            farm: "web".into(),
            mode: "xdp".into(),
            pid: 1,
            state: NodeState::Up,
            reason: None,
            since_ms_ago: 0,
            restarts: Restarts {
                recent: 0,
                limit: 3,
                within_s: 600,
                total: 0,
            },
            checks: vec![CheckStatus {
                name: "web".into(),
                kind: "http".into(),
                action: Action::Restart,
                health: Health::Healthy,
                last: None,
                probes: 10,
                failures: 0,
            }],
            unseen_listeners: Vec::new(),
            drained: false,
            farm_commands: Default::default(),
            membership: Snapshot {
                state: State::Up,
                incarnation: 1,
                epoch: 3,
                agreed: true,
                quorum: true,
                buckets: 12,
                nodes: vec![
                    node("alpha", true, State::Up, 4),
                    node("bravo", false, State::Up, 4),
                    node("charlie", false, State::Up, 4),
                ],
                drain: None,
                stats: Default::default(),
                refused: Default::default(),
                join_held: None,
                traffic: Default::default(),
                bucket_owners: Default::default(),
                draining_buckets: Default::default(),
            },
        }
    }

    fn kinds(events: &[Event]) -> Vec<(EventKind, &str)> {
        events.iter().map(|e| (e.kind, e.node.as_str())).collect()
    }

    #[test]
    fn nothing_changed_nothing_happened() {
        assert_eq!(events_between(&steady(), &steady(), AT), Vec::new());
    }

    #[test]
    fn a_death_and_the_view_that_follows() {
        let before = steady();
        let mut after = steady();
        after.membership.epoch = 4;
        after.membership.nodes[2].alive = false;
        after.membership.nodes[2].buckets = 0;
        after.membership.nodes[0].buckets = 6;
        after.membership.nodes[1].buckets = 6;
        let events = events_between(&before, &after, AT);
        assert_eq!(
            kinds(&events),
            [(EventKind::Death, "charlie"), (EventKind::View, "alpha")]
        );
        assert_eq!(events[1].text, "view 4: alpha (6), bravo (6)");
        assert!(events.iter().all(|e| e.at_ms == AT));
    }

    #[test]
    fn a_leave_then_silence_is_no_death() {
        let before = steady();
        let mut leaving = steady();
        leaving.membership.nodes[1].state = Some(State::Leaving);
        let events = events_between(&before, &leaving, AT);
        assert_eq!(kinds(&events), [(EventKind::Leave, "bravo")]);
        assert_eq!(events[0].text, "bravo left (leaving)");
        let mut silent = leaving.clone();
        silent.membership.nodes[1].alive = false;
        let events = events_between(&leaving, &silent, AT);
        assert_eq!(kinds(&events), [(EventKind::Leave, "bravo")]);
    }

    #[test]
    fn a_node_back_joins() {
        let mut before = steady();
        before.membership.nodes[2].alive = false;
        before.membership.nodes[2].state = Some(State::Stopped);
        let mut joining = before.clone();
        joining.membership.nodes[2].alive = true;
        joining.membership.nodes[2].state = Some(State::Joining);
        assert_eq!(events_between(&before, &joining, AT), Vec::new());
        let after = steady();
        assert_eq!(
            kinds(&events_between(&joining, &after, AT)),
            [(EventKind::Join, "charlie")]
        );
    }

    #[test]
    fn a_check_fails_restarts_the_application_and_recovers() {
        let before = steady();
        let mut failed = steady();
        failed.checks[0].health = Health::Failed;
        failed.checks[0].last = Some(ProbeStatus {
            ok: false,
            error: Some("connection refused".into()),
            ms_ago: 0,
            took_ms: 1,
        });
        failed.restarts.total = 1;
        failed.restarts.recent = 1;
        let events = events_between(&before, &failed, AT);
        assert_eq!(
            kinds(&events),
            [
                (EventKind::Restart, "alpha"),
                (EventKind::CheckFailed, "alpha")
            ]
        );
        assert_eq!(events[1].text, "check web failed: connection refused");
        let mut recovered = failed.clone();
        recovered.checks[0].health = Health::Healthy;
        assert_eq!(
            kinds(&events_between(&failed, &recovered, AT)),
            [(EventKind::CheckRecovered, "alpha")]
        );
    }

    #[test]
    fn an_operators_drain_changes_the_state_and_drains() {
        let before = steady();
        let mut after = steady();
        after.state = NodeState::Withdrawing;
        after.reason = Some("an operator drains it".into());
        after.membership.state = State::Leaving;
        after.membership.drain = Some(DrainSnapshot {
            views: 1,
            connections: None,
        });
        let events = events_between(&before, &after, AT);
        assert_eq!(
            kinds(&events),
            [(EventKind::State, "alpha"), (EventKind::Drain, "alpha")]
        );
        assert_eq!(events[0].text, "up → withdrawing: an operator drains it");
        let mut over = after.clone();
        over.membership.drain = None;
        let events = events_between(&after, &over, AT);
        assert_eq!(events[0].text, "the drain is over");
    }

    #[test]
    fn the_timeline_keeps_the_latest() {
        let timeline = Timeline::default();
        for at_ms in 0..(CAPACITY as u64 + 5) {
            timeline.record(Event {
                at_ms,
                node: "alpha".into(),
                kind: EventKind::State,
                text: String::new(),
            });
        }
        let recent = timeline.recent();
        assert_eq!(recent.len(), CAPACITY);
        assert_eq!(recent[0].at_ms, 5);
    }
}
