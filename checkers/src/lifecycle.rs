//! The node's lifecycle, as a pure state machine with time passed in.
//!
//! The order is always the same: the start script, then every check healthy, then the node
//! joins the farm; on the way out, the node leaves (its buckets drain), then the stop script.
//! Inputs are the operator's commands ([`Lifecycle::start`], [`Lifecycle::stop`],
//! [`Lifecycle::restart`]), the checks' results ([`Lifecycle::check_result`]), the end of a
//! script ([`Lifecycle::script_done`]) and the end of the drain ([`Lifecycle::left`]); outputs,
//! taken with [`Lifecycle::poll_output`], are scripts to run, the membership's join and leave,
//! and events to log.

use std::collections::VecDeque;

use crate::health::{Health, Tracker};
use crate::limit::RestartLimit;

/// Where the node stands, as `herd status` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// The application is stopped; the node owns nothing until an operator starts it.
    Stopped,
    /// The start script runs, or the checks are not all healthy yet.
    Starting,
    /// A member of the farm, owning its share.
    Up,
    /// Leaving the farm: its buckets drain.
    Withdrawing,
    /// Stopped by herd: the restart limit was hit or the start failed.
    Failed,
}

impl NodeState {
    /// Every state, in the order they are declared.
    pub const ALL: [NodeState; 5] = [
        NodeState::Stopped,
        NodeState::Starting,
        NodeState::Up,
        NodeState::Withdrawing,
        NodeState::Failed,
    ];
}

impl std::fmt::Display for NodeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NodeState::Stopped => "stopped",
            NodeState::Starting => "starting",
            NodeState::Up => "up",
            NodeState::Withdrawing => "withdrawing",
            NodeState::Failed => "failed",
        })
    }
}

/// What a check's failure makes the node do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Withdraw (with a drain), run the stop script, run the start script, rejoin when healthy;
    /// counted against the restart limit.
    Restart,
    /// Withdraw, run the stop script and stay out until an operator starts the node.
    Stop,
    /// Withdraw and rejoin by itself once the check is healthy again (for ping and interface
    /// checks: the application is fine, the network is not).
    Wait,
    /// Only log it.
    Log,
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Action::Restart => "restart",
            Action::Stop => "stop",
            Action::Wait => "wait",
            Action::Log => "log",
        })
    }
}

/// An application script.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Script {
    /// The start script.
    Start,
    /// The stop script.
    Stop,
}

impl std::fmt::Display for Script {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Script::Start => "start",
            Script::Stop => "stop",
        })
    }
}

/// Why a script runs, passed to it in its environment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The node starts.
    Start,
    /// A check failed and the node restarts the application.
    Restart,
    /// The node stops.
    Stop,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Reason::Start => "start",
            Reason::Restart => "restart",
            Reason::Stop => "stop",
        })
    }
}

/// What the lifecycle asks its driver to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Run `script` for `reason`, then report with [`Lifecycle::script_done`].
    Run {
        /// The script.
        script: Script,
        /// Why.
        reason: Reason,
    },
    /// Join the farm: the application is healthy.
    Join,
    /// Leave the farm with a drain, then report with [`Lifecycle::left`].
    Leave,
    /// Something to log.
    Event(Event),
}

/// What happened, for the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The node's state changed.
    State {
        /// The state before.
        from: NodeState,
        /// The state now.
        to: NodeState,
    },
    /// Check `check` became healthy or failed.
    Check {
        /// Its index.
        check: usize,
        /// Its health now.
        health: Health,
        /// What its failure does.
        action: Action,
    },
    /// A script failed (or timed out).
    ScriptFailed {
        /// Which.
        script: Script,
    },
    /// A restart was due, but the node made `count` within `within_ms` already: it stops.
    RestartLimit {
        /// The restarts allowed.
        count: u32,
        /// In this long.
        within_ms: u64,
    },
}

/// What comes after the drain, or after the stop script.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Then {
    /// Run the start script (a restart).
    Start,
    /// Rest in `Stopped`.
    Stop,
    /// Rest in `Failed`.
    Fail,
    /// Wait for the checks, without scripts.
    Wait,
    /// Rest in `Stopped` with the application running (an operator's drain).
    Hold,
}

/// One node's lifecycle.
#[derive(Debug)]
pub struct Lifecycle {
    state: NodeState,
    checks: Vec<(Action, Tracker)>,
    limit: RestartLimit,
    /// The script running, if any.
    running: Option<Script>,
    /// What to do once the drain, or the stop script, is over.
    then: Option<Then>,
    /// Stopped by a drain: the application still runs.
    held: bool,
    outputs: VecDeque<Output>,
}

impl Lifecycle {
    /// A stopped node with `checks` (each an action and its health's thresholds) and a restart
    /// limit.
    pub fn new(checks: Vec<(Action, Tracker)>, limit: RestartLimit) -> Self {
        Self {
            state: NodeState::Stopped,
            checks,
            limit,
            running: None,
            then: None,
            held: false,
            outputs: VecDeque::new(),
        }
    }

    /// The node's state.
    pub fn state(&self) -> NodeState {
        self.state
    }

    /// Check `check`'s health.
    pub fn health(&self, check: usize) -> Option<Health> {
        self.checks.get(check).map(|(_, tracker)| tracker.health())
    }

    /// The next thing to do, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// The restarts made within the restart limit's window, as of the last one.
    pub fn recent_restarts(&self) -> usize {
        self.limit.recent()
    }

    /// The restart limit: how many restarts within how many ms.
    pub fn restart_limit(&self) -> (u32, u64) {
        self.limit.limit()
    }

    /// Whether a script it asked for still runs.
    pub fn script_running(&self) -> bool {
        self.running.is_some()
    }

    /// Whether the node was stopped by a drain, its application still running.
    pub fn held(&self) -> bool {
        self.held
    }

    /// Whether the node leaves for an operator's drain, its application running.
    pub fn draining(&self) -> bool {
        self.state == NodeState::Withdrawing && self.then == Some(Then::Hold)
    }

    /// An operator (or the service manager at boot) starts the node: from `Stopped` or
    /// `Failed`, the start script runs (after a drain, the application still runs: the node
    /// only waits for its checks). During an operator's drain, the drain is called off: the
    /// node joins again once its checks are healthy, its connections kept. The restart limit
    /// starts afresh.
    pub fn start(&mut self) {
        if self.draining() {
            self.then = None;
            self.set_state(NodeState::Starting);
            self.join_if_healthy();
            return;
        }
        if !matches!(self.state, NodeState::Stopped | NodeState::Failed) || self.running.is_some() {
            return;
        }
        self.limit.reset();
        if std::mem::take(&mut self.held) {
            self.set_state(NodeState::Starting);
            self.join_if_healthy();
        } else {
            self.run_start(Reason::Start);
        }
    }

    /// An operator stops the node: it leaves with a drain, then the stop script runs (also
    /// after a drain, which left the application running).
    pub fn stop(&mut self) {
        if self.state == NodeState::Stopped && std::mem::take(&mut self.held) {
            self.run_stop(Reason::Stop, Then::Stop);
        } else {
            self.go_out(Then::Stop);
        }
    }

    /// An operator drains the node: it leaves with a drain, keeping its connections until
    /// they end, and rests stopped with the application still running.
    pub fn drain(&mut self) {
        self.go_out(Then::Hold);
    }

    /// An operator restarts the node: as a check's restart, but not counted against the limit.
    pub fn restart(&mut self) {
        if self.state != NodeState::Stopped && self.state != NodeState::Failed {
            self.go_out(Then::Start);
        }
    }

    /// Check `check` gave a result at `now`. Results are ignored while the start script runs:
    /// the application is not expected to answer yet, and its checks rise once it ends.
    pub fn check_result(&mut self, check: usize, ok: bool, now: u64) {
        if self.running == Some(Script::Start) {
            return;
        }
        let Some((action, tracker)) = self.checks.get_mut(check) else {
            return;
        };
        let action = *action;
        let Some(health) = tracker.record(ok) else {
            return;
        };
        self.event(Event::Check {
            check,
            health,
            action,
        });
        match health {
            Health::Failed => self.failed(action, now),
            Health::Healthy => self.join_if_healthy(),
            Health::Unknown => {}
        }
    }

    /// The script started last ended, well (`ok`) or not (failed, or killed at its timeout).
    pub fn script_done(&mut self, ok: bool) {
        let Some(script) = self.running.take() else {
            return;
        };
        if !ok {
            self.event(Event::ScriptFailed { script });
        }
        match script {
            // A stop or restart asked for while the start script ran applies now.
            Script::Start if ok => match self.then.take() {
                Some(then) => self.go_out(then),
                None => self.join_if_healthy(),
            },
            // A failed start leaves the application half up: the stop script cleans up.
            Script::Start => self.run_stop(Reason::Stop, Then::Fail),
            Script::Stop => match self.then.take() {
                Some(Then::Start) => self.run_start(Reason::Restart),
                Some(Then::Fail) => self.set_state(NodeState::Failed),
                _ => self.set_state(NodeState::Stopped),
            },
        }
    }

    /// The node has left the farm: its drain is over.
    pub fn left(&mut self) {
        if self.state != NodeState::Withdrawing {
            return;
        }
        match self.then.take() {
            Some(Then::Wait) => {
                self.set_state(NodeState::Starting);
                self.join_if_healthy();
            }
            Some(Then::Start) => self.run_stop(Reason::Restart, Then::Start),
            Some(Then::Fail) => self.run_stop(Reason::Stop, Then::Fail),
            Some(Then::Hold) => self.hold(),
            Some(Then::Stop) | None => self.run_stop(Reason::Stop, Then::Stop),
        }
    }

    /// Rests stopped, the application left running.
    fn hold(&mut self) {
        self.held = true;
        self.set_state(NodeState::Stopped);
    }

    /// A check failed with `action`.
    fn failed(&mut self, action: Action, now: u64) {
        // A stopped node's application is not expected to be healthy.
        if matches!(self.state, NodeState::Stopped | NodeState::Failed) {
            return;
        }
        let then = match action {
            Action::Log => return,
            Action::Wait => Then::Wait,
            Action::Stop => Then::Stop,
            Action::Restart if self.limit.try_restart(now) => Then::Start,
            Action::Restart => {
                let (count, within_ms) = self.limit.limit();
                self.event(Event::RestartLimit { count, within_ms });
                Then::Fail
            }
        };
        self.go_out(then);
    }

    /// Leaves the farm if a member, then does `then`; while starting, does it at once.
    fn go_out(&mut self, then: Then) {
        match self.state {
            NodeState::Up => {
                self.then = Some(then);
                self.set_state(NodeState::Withdrawing);
                self.outputs.push_back(Output::Leave);
            }
            NodeState::Withdrawing => self.defer(then),
            NodeState::Starting if self.running.is_none() => match then {
                Then::Wait => {}
                Then::Hold => self.hold(),
                Then::Start => self.run_stop(Reason::Restart, Then::Start),
                Then::Stop => self.run_stop(Reason::Stop, Then::Stop),
                Then::Fail => self.run_stop(Reason::Stop, Then::Fail),
            },
            // The script running reports first; what follows it then applies.
            NodeState::Starting if then != Then::Wait => self.defer(then),
            NodeState::Starting | NodeState::Stopped | NodeState::Failed => {}
        }
    }

    /// Keeps `then` for when the drain or the script under way is over: the later decision
    /// wins, but a stop or a failure is never undone by a wait or a restart.
    fn defer(&mut self, then: Then) {
        let keep = matches!(self.then, Some(Then::Stop | Then::Fail));
        if !keep || then == Then::Fail {
            self.then = Some(then);
        }
    }

    /// Joins when starting, with no script running and every check healthy.
    fn join_if_healthy(&mut self) {
        let healthy = self
            .checks
            .iter()
            .all(|(_, tracker)| tracker.health() == Health::Healthy);
        if self.state == NodeState::Starting && self.running.is_none() && healthy {
            self.set_state(NodeState::Up);
            self.outputs.push_back(Output::Join);
        }
    }

    fn run_start(&mut self, reason: Reason) {
        // The application starts afresh: each check must rise again.
        for (_, tracker) in &mut self.checks {
            *tracker = tracker.restarted();
        }
        self.set_state(NodeState::Starting);
        self.running = Some(Script::Start);
        self.outputs.push_back(Output::Run {
            script: Script::Start,
            reason,
        });
    }

    fn run_stop(&mut self, reason: Reason, then: Then) {
        self.then = Some(then);
        self.running = Some(Script::Stop);
        self.outputs.push_back(Output::Run {
            script: Script::Stop,
            reason,
        });
    }

    fn set_state(&mut self, to: NodeState) {
        if to != self.state {
            let from = std::mem::replace(&mut self.state, to);
            self.event(Event::State { from, to });
        }
    }

    fn event(&mut self, event: Event) {
        self.outputs.push_back(Output::Event(event));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400_000;

    /// A node with one check of each given action (fall 3, rise 2), at most `restarts` a day.
    fn node(actions: &[Action], restarts: u32) -> Lifecycle {
        let checks = actions.iter().map(|&a| (a, Tracker::new(3, 2))).collect();
        Lifecycle::new(checks, RestartLimit::new(restarts, DAY))
    }

    /// What the node asked for since the last call, events left out.
    fn asked(node: &mut Lifecycle) -> Vec<Output> {
        std::iter::from_fn(|| node.poll_output())
            .filter(|output| !matches!(output, Output::Event(_)))
            .collect()
    }

    /// The events since the last call.
    fn events(node: &mut Lifecycle) -> Vec<Event> {
        std::iter::from_fn(|| node.poll_output())
            .filter_map(|output| match output {
                Output::Event(event) => Some(event),
                _ => None,
            })
            .collect()
    }

    fn run(script: Script, reason: Reason) -> Output {
        Output::Run { script, reason }
    }

    /// `count` results of every check at `now`.
    fn results(node: &mut Lifecycle, ok: bool, count: usize, now: u64) {
        for _ in 0..count {
            for check in 0..node.checks.len() {
                node.check_result(check, ok, now);
            }
        }
    }

    /// Starts `node` up to a member of the farm.
    fn up(node: &mut Lifecycle) {
        node.start();
        assert_eq!(asked(node), [run(Script::Start, Reason::Start)]);
        node.script_done(true);
        results(node, true, 2, 0);
        assert_eq!(asked(node), [Output::Join]);
        assert_eq!(node.state(), NodeState::Up);
    }

    #[test]
    fn the_start_script_then_healthy_checks_then_the_join() {
        let mut node = node(&[Action::Restart, Action::Wait], 3);
        assert_eq!(node.state(), NodeState::Stopped);
        node.start();
        assert_eq!(asked(&mut node), [run(Script::Start, Reason::Start)]);
        assert_eq!(node.state(), NodeState::Starting);
        results(&mut node, true, 2, 0);
        assert_eq!(asked(&mut node), [], "the start script still runs");
        node.script_done(true);
        assert_eq!(asked(&mut node), [], "the checks have not risen since");
        results(&mut node, true, 1, 100);
        assert_eq!(asked(&mut node), [], "one success of two");
        results(&mut node, true, 1, 200);
        assert_eq!(asked(&mut node), [Output::Join]);
        assert_eq!(node.state(), NodeState::Up);
    }

    #[test]
    fn failures_during_a_long_start_script_do_not_count() {
        let mut node = node(&[Action::Restart], 0);
        node.start();
        asked(&mut node);
        results(&mut node, false, 10, 0);
        assert_eq!(asked(&mut node), [], "no restart, nor a stop at the limit");
        assert_eq!(node.health(0), Some(Health::Unknown));
        node.script_done(true);
        results(&mut node, true, 2, 100);
        assert_eq!(asked(&mut node), [Output::Join]);
    }

    #[test]
    fn a_failed_check_restarts_the_node_through_a_drain_and_the_scripts() {
        let mut node = node(&[Action::Restart], 3);
        up(&mut node);
        results(&mut node, false, 2, 1_000);
        assert_eq!(asked(&mut node), [], "two failures of three");
        results(&mut node, false, 1, 1_100);
        assert_eq!(asked(&mut node), [Output::Leave]);
        assert_eq!(node.state(), NodeState::Withdrawing);
        node.left();
        assert_eq!(asked(&mut node), [run(Script::Stop, Reason::Restart)]);
        node.script_done(true);
        assert_eq!(asked(&mut node), [run(Script::Start, Reason::Restart)]);
        assert_eq!(node.state(), NodeState::Starting);
        assert_eq!(
            node.health(0),
            Some(Health::Unknown),
            "the check rises again"
        );
        node.script_done(true);
        results(&mut node, true, 2, 2_000);
        assert_eq!(asked(&mut node), [Output::Join]);
    }

    #[test]
    fn past_the_restart_limit_the_node_stops_and_says_why() {
        let mut node = node(&[Action::Restart], 1);
        up(&mut node);
        results(&mut node, false, 3, 1_000);
        node.left();
        node.script_done(true);
        node.script_done(true);
        results(&mut node, true, 2, 2_000);
        assert_eq!(node.state(), NodeState::Up, "the first restart");
        events(&mut node);
        results(&mut node, false, 3, 3_000);
        assert!(events(&mut node).contains(&Event::RestartLimit {
            count: 1,
            within_ms: DAY
        }));
        node.left();
        assert_eq!(asked(&mut node), [run(Script::Stop, Reason::Stop)]);
        node.script_done(true);
        assert_eq!(node.state(), NodeState::Failed);
        results(&mut node, true, 5, 4_000);
        assert_eq!(asked(&mut node), [], "a failed node stays out");
        node.start();
        assert_eq!(asked(&mut node), [run(Script::Start, Reason::Start)]);
    }

    #[test]
    fn a_wait_check_withdraws_and_rejoins_by_itself() {
        let mut node = node(&[Action::Wait], 0);
        up(&mut node);
        results(&mut node, false, 3, 1_000);
        assert_eq!(asked(&mut node), [Output::Leave]);
        node.left();
        assert_eq!(asked(&mut node), [], "no script");
        assert_eq!(node.state(), NodeState::Starting);
        results(&mut node, true, 2, 2_000);
        assert_eq!(asked(&mut node), [Output::Join]);
    }

    #[test]
    fn a_log_check_only_logs() {
        let mut node = node(&[Action::Log], 0);
        up(&mut node);
        results(&mut node, false, 3, 1_000);
        assert_eq!(asked(&mut node), []);
        assert_eq!(node.state(), NodeState::Up);
    }

    #[test]
    fn a_stop_check_keeps_the_node_out_until_an_operator_starts_it() {
        let mut node = node(&[Action::Stop], 3);
        up(&mut node);
        results(&mut node, false, 3, 1_000);
        assert_eq!(asked(&mut node), [Output::Leave]);
        node.left();
        assert_eq!(asked(&mut node), [run(Script::Stop, Reason::Stop)]);
        node.script_done(true);
        assert_eq!(node.state(), NodeState::Stopped);
        results(&mut node, true, 5, 2_000);
        assert_eq!(asked(&mut node), []);
    }

    #[test]
    fn a_failed_start_runs_the_stop_script_and_fails() {
        let mut node = node(&[Action::Restart], 3);
        node.start();
        asked(&mut node);
        node.script_done(false);
        assert!(events(&mut node).contains(&Event::ScriptFailed {
            script: Script::Start
        }));
        node.script_done(true);
        assert_eq!(node.state(), NodeState::Failed);
    }

    #[test]
    fn a_stop_during_the_start_script_applies_when_it_ends() {
        let mut node = node(&[Action::Restart], 3);
        node.start();
        asked(&mut node);
        node.stop();
        assert_eq!(asked(&mut node), [], "the start script runs on");
        node.script_done(true);
        assert_eq!(asked(&mut node), [run(Script::Stop, Reason::Stop)]);
        node.script_done(true);
        assert_eq!(node.state(), NodeState::Stopped);
    }

    #[test]
    fn a_check_that_fails_before_the_join_restarts_without_a_leave() {
        let mut node = node(&[Action::Restart], 3);
        node.start();
        node.script_done(true);
        asked(&mut node);
        results(&mut node, false, 3, 1_000);
        assert_eq!(asked(&mut node), [run(Script::Stop, Reason::Restart)]);
    }

    #[test]
    fn an_operator_restart_is_not_counted_against_the_limit() {
        let mut node = node(&[Action::Restart], 0);
        up(&mut node);
        node.restart();
        assert_eq!(asked(&mut node), [Output::Leave]);
        node.left();
        assert_eq!(asked(&mut node), [run(Script::Stop, Reason::Restart)]);
        node.script_done(true);
        assert_eq!(asked(&mut node), [run(Script::Start, Reason::Restart)]);
    }

    #[test]
    fn a_stop_during_a_drain_is_not_undone_by_a_later_restart() {
        let mut node = node(&[Action::Restart], 3);
        up(&mut node);
        node.stop();
        node.restart();
        node.left();
        assert_eq!(
            asked(&mut node),
            [Output::Leave, run(Script::Stop, Reason::Stop)]
        );
        node.script_done(true);
        assert_eq!(node.state(), NodeState::Stopped);
    }

    #[test]
    fn a_start_during_a_drain_calls_it_off() {
        let mut node = node(&[Action::Restart], 3);
        up(&mut node);
        node.drain();
        assert_eq!(asked(&mut node), [Output::Leave]);
        assert!(node.draining());
        node.start();
        assert_eq!(asked(&mut node), [Output::Join], "no script: it runs");
        assert_eq!(node.state(), NodeState::Up);
        assert!(!node.draining());
        node.left();
        assert_eq!(
            asked(&mut node),
            [],
            "a drain's end that comes late changes nothing"
        );
        assert_eq!(node.state(), NodeState::Up);

        // A stop's drain is not called off: its stop script still runs.
        node.stop();
        assert_eq!(asked(&mut node), [Output::Leave]);
        assert!(!node.draining());
        node.start();
        node.left();
        assert_eq!(asked(&mut node), [run(Script::Stop, Reason::Stop)]);
    }

    #[test]
    fn a_drain_leaves_the_application_running_until_a_start_or_a_stop() {
        let mut node = node(&[Action::Restart], 3);
        up(&mut node);
        node.drain();
        assert_eq!(asked(&mut node), [Output::Leave]);
        assert_eq!(node.state(), NodeState::Withdrawing);
        node.left();
        assert_eq!(asked(&mut node), [], "no stop script");
        assert_eq!(node.state(), NodeState::Stopped);
        assert!(node.held());
        results(&mut node, false, 3, 1_000);
        assert_eq!(asked(&mut node), [], "a stopped node's checks do nothing");
        results(&mut node, true, 2, 2_000);
        node.start();
        assert_eq!(asked(&mut node), [Output::Join], "no start script: it runs");
        assert_eq!(node.state(), NodeState::Up);

        node.drain();
        node.left();
        assert_eq!(asked(&mut node), [Output::Leave]);
        node.stop();
        assert_eq!(
            asked(&mut node),
            [run(Script::Stop, Reason::Stop)],
            "stopping a drained node stops its application"
        );
        node.script_done(true);
        assert_eq!(node.state(), NodeState::Stopped);
        assert!(!node.held());
    }
}
