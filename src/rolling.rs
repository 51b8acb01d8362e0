//! A command carried to every node of the farm, one node after another (a rolling restart):
//! each node is asked only once the one before is back up, or out when the command takes
//! nodes out for good, so that the farm never loses more than one node's share at a time.
//!
//! Written once for `herd restart --all` (over the control socket) and the console (over the
//! daemon's farm client): the asking and the clock are passed in.

use std::time::{Duration, Instant};

use anyhow::bail;
use herd_checkers::lifecycle::NodeState;

use crate::control::Reply;
use crate::farm_access::{FarmCommand, FarmReport, NodeReport};
use crate::status::Status;

/// The longest a whole roll may take: a node that is not back by then ends it.
pub const ROLL_LIMIT: Duration = Duration::from_secs(600);

/// How often a node's state is asked while waiting for it.
pub const POLL_EVERY: Duration = Duration::from_millis(500);

/// What a roll needs of the farm.
pub trait Farm {
    /// Every node's status, in configuration order; a node that did not answer has none.
    /// Fails when the report cannot be had at all (the local daemon does not answer).
    fn report(&self) -> anyhow::Result<FarmReport>;
    /// Carries `command` to node `node` and returns its reply.
    fn command(&self, node: &str, command: FarmCommand) -> anyhow::Result<Reply>;
}

/// The roll's time: monotonic milliseconds, and the waits between two looks at the farm.
pub trait Clock {
    /// Milliseconds since some fixed moment.
    fn now_ms(&self) -> u64;
    /// Waits `duration`.
    fn sleep(&self, duration: Duration);
}

/// The real clock.
pub struct SystemClock {
    start: Instant,
}

impl Default for SystemClock {
    fn default() -> Self {
        Self {
            start: Instant::now(),
        }
    }
}

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn sleep(&self, duration: Duration) {
        std::thread::sleep(duration);
    }
}

/// How long a roll may take and how often it looks.
#[derive(Clone, Copy, Debug)]
pub struct Pace {
    /// The longest the whole roll may take.
    pub limit: Duration,
    /// The wait between two looks at a node.
    pub poll: Duration,
}

impl Default for Pace {
    fn default() -> Self {
        Self {
            limit: ROLL_LIMIT,
            poll: POLL_EVERY,
        }
    }
}

/// The command's verb, as an operator types it.
pub fn verb(command: FarmCommand) -> &'static str {
    match command {
        FarmCommand::Drain => "drain",
        FarmCommand::Stop => "stop",
        FarmCommand::Start => "start",
        FarmCommand::Restart => "restart",
    }
}

/// Whether `command` takes a node out of the farm, for a while or for good.
fn takes_out(command: FarmCommand) -> bool {
    command != FarmCommand::Start
}

/// Whether `command` leaves the node out when it is done (drain, stop) rather than back up.
fn leaves_out(command: FarmCommand) -> bool {
    matches!(command, FarmCommand::Drain | FarmCommand::Stop)
}

/// Whether a node is out: it owns no bucket and is not up.
fn out(status: &Status) -> bool {
    status.membership.owned() == 0 && status.state != NodeState::Up
}

/// Why `node` is not serving, or `None` when it is.
fn not_serving(node: &NodeReport) -> Option<String> {
    match (&node.status, &node.error) {
        (Some(status), _) if status.serving() => None,
        (Some(status), _) => Some(describe(status)),
        (None, Some(error)) => Some(format!("no answer: {error}")),
        (None, None) => Some("no answer".into()),
    }
}

/// A node's state in a few words, for messages.
fn describe(status: &Status) -> String {
    let mut text = format!(
        "{}, owning {} of {} buckets",
        status.state,
        status.membership.owned(),
        status.membership.buckets
    );
    if status.state == NodeState::Up && !status.membership.quorum {
        text.push_str(", without quorum");
    }
    if let Some(reason) = &status.reason {
        text.push_str(&format!(" ({reason})"));
    }
    text
}

/// Carries `command` to every node of `farm`, in configuration order, each once the one before
/// is done; says what it does through `progress`. Refuses to take a node out while another is
/// not serving (other than those this roll took out for good), and ends with an error naming
/// the node that refused the command or did not come back within the pace's limit.
pub fn roll(
    farm: &dyn Farm,
    clock: &dyn Clock,
    command: FarmCommand,
    pace: Pace,
    progress: &mut dyn FnMut(&str),
) -> anyhow::Result<()> {
    let verb = verb(command);
    let deadline = clock.now_ms() + pace.limit.as_millis() as u64;
    let names: Vec<String> = farm
        .report()?
        .nodes
        .into_iter()
        .map(|node| node.name)
        .collect();
    if names.is_empty() {
        bail!("the farm's report lists no node");
    }
    progress(&format!(
        "{verb} every node, one after another: {}",
        names.join(", ")
    ));
    let mut left_out: Vec<&str> = Vec::new();
    for name in &names {
        let report = farm.report()?;
        let Some(node) = report.nodes.iter().find(|node| &node.name == name) else {
            bail!("{name} is no longer in the farm's report; the roll stops here");
        };
        // A restart has to be carried out on a node up; the other commands may be done already.
        let already = command != FarmCommand::Restart
            && node
                .status
                .as_ref()
                .is_some_and(|status| done(command, status, None));
        if already {
            progress(&format!(
                "{name} is already {}: skipped",
                if leaves_out(command) { "out" } else { "up" }
            ));
            if leaves_out(command) {
                left_out.push(name);
            }
            continue;
        }
        if takes_out(command) {
            let down = report.nodes.iter().find_map(|other| {
                let counted = &other.name != name && !left_out.contains(&other.name.as_str());
                counted
                    .then(|| not_serving(other).map(|why| (&other.name, why)))
                    .flatten()
            });
            if let Some((other, why)) = down {
                bail!(
                    "not taking {name} out: {other} is not serving ({why}); the farm would lose \
                     two nodes' share at once, so the roll stops here"
                );
            }
        }
        let sent_at = clock.now_ms();
        match farm.command(name, command) {
            Ok(Reply::Done(what)) => progress(&format!("{name}: {what}")),
            Ok(Reply::Refused(why)) => {
                bail!("{name} refused to {verb}: {why}; the roll stops here")
            }
            Ok(_) => {
                bail!("{name} answered something else than a reply to {verb}; the roll stops here")
            }
            Err(error) => bail!("cannot ask {name} to {verb}: {error:#}; the roll stops here"),
        }
        wait(farm, clock, command, name, sent_at, deadline, pace)?;
        progress(&format!(
            "{name} is {}",
            if leaves_out(command) {
                "out"
            } else {
                "back up"
            }
        ));
        if leaves_out(command) {
            left_out.push(name);
        }
    }
    progress(&format!("{verb}: every node done"));
    Ok(())
}

/// Whether `command` is done on a node in `status`: out for drain and stop; serving for start
/// and restart, having entered that state after `sent_at` (ms ago at the report) when given.
fn done(command: FarmCommand, status: &Status, since_sent_ms: Option<u64>) -> bool {
    if leaves_out(command) {
        out(status)
    } else {
        status.serving() && since_sent_ms.is_none_or(|elapsed| status.since_ms_ago < elapsed)
    }
}

/// Waits until `command` is done on node `name`, asked at `sent_at`, or fails at `deadline`.
fn wait(
    farm: &dyn Farm,
    clock: &dyn Clock,
    command: FarmCommand,
    name: &str,
    sent_at: u64,
    deadline: u64,
    pace: Pace,
) -> anyhow::Result<()> {
    let mut last = String::from("not asked yet");
    loop {
        let now = clock.now_ms();
        if now >= deadline {
            bail!(
                "{name} is not {} {} s after the {} (last seen: {last}); the roll stops here",
                if leaves_out(command) {
                    "out"
                } else {
                    "back up"
                },
                (now - sent_at) / 1000,
                verb(command)
            );
        }
        clock.sleep(pace.poll);
        // Taken before asking: the node answers later, so its state entered after `sent_at`
        // is older than this gap when it truly entered it after the command.
        let asked_at = clock.now_ms();
        let report = farm.report()?;
        let node = report.nodes.iter().find(|node| node.name == name);
        match node.and_then(|node| node.status.as_ref()) {
            Some(status) if done(command, status, Some(asked_at - sent_at)) => return Ok(()),
            Some(status) => last = describe(status),
            None => last = node.and_then(not_serving).unwrap_or("no answer".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};
    use std::net::SocketAddr;

    use herd_checkers::lifecycle::NodeState;
    use herd_membership::snapshot::{NodeSnapshot, Snapshot};
    use herd_membership::wire::State;

    use super::*;
    use crate::status::Restarts;

    /// A clock that moves only when slept on.
    #[derive(Default)]
    struct FakeClock {
        now: Cell<u64>,
    }

    impl Clock for FakeClock {
        fn now_ms(&self) -> u64 {
            self.now.get()
        }

        fn sleep(&self, duration: Duration) {
            self.now.set(self.now.get() + duration.as_millis() as u64);
        }
    }

    /// One fake node: up or out, and when it entered that state.
    #[derive(Clone)]
    struct FakeNode {
        name: &'static str,
        state: NodeState,
        owned: usize,
        entered_at: u64,
        answers: bool,
        /// When it comes back after a restart or start (never when `None`).
        back_after_ms: Option<u64>,
        /// When an asked node is to change state.
        pending: Option<(u64, NodeState, usize)>,
    }

    /// A farm of fake nodes that change state some time after they are asked to, recording
    /// the commands and the most nodes out at once.
    struct FakeFarm<'a> {
        clock: &'a FakeClock,
        nodes: RefCell<Vec<FakeNode>>,
        asked: RefCell<Vec<String>>,
        most_out: Cell<usize>,
    }

    const OUT_AFTER_MS: u64 = 1_200;

    impl<'a> FakeFarm<'a> {
        fn new(clock: &'a FakeClock, names: &[&'static str]) -> Self {
            let nodes = names
                .iter()
                .map(|&name| FakeNode {
                    name,
                    state: NodeState::Up,
                    owned: 10,
                    entered_at: 0,
                    answers: true,
                    back_after_ms: Some(3_000),
                    pending: None,
                })
                .collect();
            clock.now.set(100_000);
            Self {
                clock,
                nodes: RefCell::new(nodes),
                asked: RefCell::default(),
                most_out: Cell::new(0),
            }
        }

        fn node(&self, name: &str, change: impl FnOnce(&mut FakeNode)) {
            let mut nodes = self.nodes.borrow_mut();
            change(nodes.iter_mut().find(|node| node.name == name).unwrap());
        }

        /// Brings every node's pending change up to the clock.
        fn advance(&self) {
            let now = self.clock.now_ms();
            let mut nodes = self.nodes.borrow_mut();
            for node in nodes.iter_mut() {
                if let Some((at, state, owned)) = node.pending {
                    if at <= now {
                        node.pending = None;
                        node.state = state;
                        node.owned = owned;
                        node.entered_at = at;
                    }
                }
            }
            let out = nodes.iter().filter(|node| node.owned == 0).count();
            self.most_out.set(self.most_out.get().max(out));
        }
    }

    fn status(node: &FakeNode, now: u64) -> Status {
        Status {
            node: node.name.into(),
            farm: "web".into(),
            mode: "xdp".into(),
            pid: 1,
            state: node.state,
            reason: None,
            since_ms_ago: now - node.entered_at,
            restarts: Restarts {
                recent: 0,
                limit: 3,
                within_s: 60,
                total: 0,
            },
            checks: Vec::new(),
            unseen_listeners: Vec::new(),
            drained: false,
            membership: Snapshot {
                state: if node.state == NodeState::Up {
                    State::Up
                } else {
                    State::Withdrawn
                },
                incarnation: 1,
                epoch: 1,
                agreed: true,
                quorum: true,
                buckets: 30,
                nodes: vec![NodeSnapshot {
                    name: node.name.into(),
                    local: true,
                    alive: true,
                    state: None,
                    incarnation: None,
                    buckets: node.owned,
                    heard_ms_ago: None,
                    delay_ms: None,
                }],
                drain: None,
                stats: Default::default(),
                refused: Default::default(),
                join_held: None,
                traffic: Default::default(),
                bucket_owners: Default::default(),
                draining_buckets: Default::default(),
            },
            farm_commands: Default::default(),
        }
    }

    impl Farm for FakeFarm<'_> {
        fn report(&self) -> anyhow::Result<FarmReport> {
            self.advance();
            let now = self.clock.now_ms();
            let nodes = self
                .nodes
                .borrow()
                .iter()
                .map(|node| NodeReport {
                    name: node.name.into(),
                    address: SocketAddr::from(([198, 18, 0, 1], 7946)),
                    status: node.answers.then(|| status(node, now)),
                    timeline: Vec::new(),
                    error: (!node.answers).then(|| "timed out".into()),
                })
                .collect();
            Ok(FarmReport {
                gathered_by: "alpha".into(),
                at_ms: now,
                nodes,
            })
        }

        fn command(&self, name: &str, command: FarmCommand) -> anyhow::Result<Reply> {
            self.advance();
            self.asked
                .borrow_mut()
                .push(format!("{} {name}", verb(command)));
            let now = self.clock.now_ms();
            let mut reply = Reply::Done(format!("{}ing", verb(command)));
            self.node(name, |node| {
                if !node.answers {
                    reply = Reply::Refused("unreachable".into());
                    return;
                }
                match command {
                    FarmCommand::Drain | FarmCommand::Stop => {
                        node.state = NodeState::Withdrawing;
                        node.entered_at = now;
                        node.pending = Some((now + OUT_AFTER_MS, NodeState::Stopped, 0));
                    }
                    FarmCommand::Restart => {
                        node.state = NodeState::Withdrawing;
                        node.entered_at = now;
                        node.owned = 0;
                        node.pending = node
                            .back_after_ms
                            .map(|after| (now + after, NodeState::Up, 10));
                    }
                    FarmCommand::Start => {
                        node.pending = node
                            .back_after_ms
                            .map(|after| (now + after, NodeState::Up, 10));
                    }
                }
            });
            self.advance();
            Ok(reply)
        }
    }

    fn run(farm: &FakeFarm, command: FarmCommand) -> (anyhow::Result<()>, Vec<String>) {
        let mut said = Vec::new();
        let result = roll(farm, farm.clock, command, Pace::default(), &mut |line| {
            said.push(line.to_owned())
        });
        (result, said)
    }

    #[test]
    fn a_rolling_restart_takes_the_nodes_in_order_one_at_a_time() {
        let clock = FakeClock::default();
        let farm = FakeFarm::new(&clock, &["alpha", "bravo", "charlie"]);
        let (result, said) = run(&farm, FarmCommand::Restart);
        result.unwrap();
        assert_eq!(
            *farm.asked.borrow(),
            ["restart alpha", "restart bravo", "restart charlie"]
        );
        assert_eq!(farm.most_out.get(), 1, "never two nodes out at once");
        assert!(
            said.iter().any(|line| line == "charlie is back up"),
            "{said:?}"
        );
        assert!(farm
            .nodes
            .borrow()
            .iter()
            .all(|node| node.state == NodeState::Up && node.owned > 0));
    }

    #[test]
    fn a_node_up_since_before_the_command_is_not_taken_as_back() {
        let clock = FakeClock::default();
        let farm = FakeFarm::new(&clock, &["alpha", "bravo"]);
        // alpha ignores the restart: it stays up, owning its share, as before.
        let wrapped = IgnoringFarm(&farm);
        let pace = Pace {
            limit: Duration::from_secs(20),
            poll: POLL_EVERY,
        };
        let error = roll(&wrapped, &clock, FarmCommand::Restart, pace, &mut |_| {})
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("alpha is not back up 20 s after the restart"),
            "{error}"
        );
    }

    /// A farm whose nodes answer `Done` to every command and do nothing.
    struct IgnoringFarm<'a>(&'a FakeFarm<'a>);

    impl Farm for IgnoringFarm<'_> {
        fn report(&self) -> anyhow::Result<FarmReport> {
            self.0.report()
        }

        fn command(&self, _: &str, _: FarmCommand) -> anyhow::Result<Reply> {
            Ok(Reply::Done("restarting".into()))
        }
    }

    #[test]
    fn a_node_that_never_comes_back_ends_the_roll_naming_it() {
        let clock = FakeClock::default();
        let farm = FakeFarm::new(&clock, &["alpha", "bravo", "charlie"]);
        farm.node("bravo", |node| node.back_after_ms = None);
        let (result, _) = run(&farm, FarmCommand::Restart);
        let error = result.unwrap_err().to_string();
        assert!(
            error.starts_with("bravo is not back up") && error.contains("withdrawing"),
            "{error}"
        );
        assert_eq!(*farm.asked.borrow(), ["restart alpha", "restart bravo"]);
        assert!(clock.now_ms() <= 100_000 + ROLL_LIMIT.as_millis() as u64 + 1_000);
    }

    #[test]
    fn no_node_is_taken_out_while_another_is_not_serving() {
        let clock = FakeClock::default();
        let farm = FakeFarm::new(&clock, &["alpha", "bravo", "charlie"]);
        farm.node("charlie", |node| node.answers = false);
        let (result, _) = run(&farm, FarmCommand::Restart);
        let error = result.unwrap_err().to_string();
        assert_eq!(
            error,
            "not taking alpha out: charlie is not serving (no answer: timed out); the farm \
             would lose two nodes' share at once, so the roll stops here"
        );
        assert!(farm.asked.borrow().is_empty());

        let farm = FakeFarm::new(&clock, &["alpha", "bravo", "charlie"]);
        farm.node("bravo", |node| {
            node.state = NodeState::Failed;
            node.owned = 0;
        });
        let error = run(&farm, FarmCommand::Drain).0.unwrap_err().to_string();
        assert!(
            error.starts_with(
                "not taking alpha out: bravo is not serving (failed, owning 0 of 30 buckets)"
            ),
            "{error}"
        );
    }

    #[test]
    fn draining_every_node_leaves_each_out_in_turn() {
        let clock = FakeClock::default();
        let farm = FakeFarm::new(&clock, &["alpha", "bravo", "charlie"]);
        let (result, said) = run(&farm, FarmCommand::Drain);
        result.unwrap();
        assert_eq!(
            *farm.asked.borrow(),
            ["drain alpha", "drain bravo", "drain charlie"]
        );
        assert!(said.iter().any(|line| line == "alpha is out"), "{said:?}");
        assert!(farm.nodes.borrow().iter().all(|node| node.owned == 0));
    }

    #[test]
    fn starting_every_node_skips_those_up_and_waits_for_the_others() {
        let clock = FakeClock::default();
        let farm = FakeFarm::new(&clock, &["alpha", "bravo", "charlie"]);
        for name in ["alpha", "charlie"] {
            farm.node(name, |node| {
                node.state = NodeState::Stopped;
                node.owned = 0;
            });
        }
        let (result, said) = run(&farm, FarmCommand::Start);
        result.unwrap();
        assert_eq!(*farm.asked.borrow(), ["start alpha", "start charlie"]);
        assert!(
            said.iter()
                .any(|line| line == "bravo is already up: skipped"),
            "{said:?}"
        );
    }

    #[test]
    fn a_refusal_ends_the_roll_naming_the_node() {
        let clock = FakeClock::default();
        let farm = FakeFarm::new(&clock, &["alpha", "bravo"]);
        let refusing = RefusingFarm(&farm);
        let error = roll(
            &refusing,
            &clock,
            FarmCommand::Stop,
            Pace::default(),
            &mut |_| {},
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            error,
            "alpha refused to stop: herd is stopping on a signal; the roll stops here"
        );
    }

    /// A farm whose nodes refuse every command.
    struct RefusingFarm<'a>(&'a FakeFarm<'a>);

    impl Farm for RefusingFarm<'_> {
        fn report(&self) -> anyhow::Result<FarmReport> {
            self.0.report()
        }

        fn command(&self, _: &str, _: FarmCommand) -> anyhow::Result<Reply> {
            Ok(Reply::Refused("herd is stopping on a signal".into()))
        }
    }
}
