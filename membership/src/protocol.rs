//! The membership protocol of one node, as a pure state machine.
//!
//! Inputs are datagrams received ([`Membership::handle_datagram`]), timer expiries
//! ([`Membership::handle_timeout`], due at [`Membership::poll_timeout`]), the operator's leave
//! ([`Membership::leave`]) and the dataplane's report that a drain is over
//! ([`Membership::flows_drained`]), each with the current time. Outputs, taken with
//! [`Membership::poll_output`], are datagrams to send to every other node, tables of bucket
//! modes to install in the dataplane, and events to log. Nothing here reads a clock or touches
//! a socket, so the protocol runs the same under the driver and in the seeded simulation.
//!
//! # How ownership moves
//!
//! A node's *view* is the set of nodes it considers alive and up, itself included while it is
//! up; every node computes the bucket table from its view with [`assign`]. A bucket's *mode*
//! (the dataplane's bits) says what the node accepts in it: new TCP connections (`SYN`),
//! packets of connections it remembers (`KNOWN`), any TCP packet (`TCP_ANY`), and everything
//! that is not TCP (`OTHER`).
//!
//! - **Release early.** When its view changes, a node at once stops taking new connections in
//!   the buckets the new table gives to others: it keeps only `KNOWN` there (and `OTHER` where
//!   it had it), installs that, and only then sends the heartbeat that shows the new view.
//! - **Acquire late.** A node takes new connections in a bucket the table gives it once every
//!   live node's latest heartbeat shows the same view with its releases installed (the view is
//!   *agreed*; a node that has withdrawn holds nothing and is not waited for), or at once
//!   when the bucket's owner in the last agreed view is dead and the new view only lost
//!   members since (a crash: nobody else can claim the bucket).
//! - **Drain.** The node that released buckets where it held connections keeps accepting those
//!   connections (and the bucket's non-TCP traffic) until the dataplane reports them gone or
//!   `drain_ms` passes; its heartbeats list the views it drains. A node takes `TCP_ANY` and
//!   `OTHER` in a bucket only when no live node's drains cover it: until then it takes new
//!   connections and its own, and a TCP packet of a connection nobody knows is dropped by all.
//!
//! So for every bucket at most one node takes new TCP connections and at most one takes
//! non-TCP traffic, unless nodes that see each other disagree about who is alive: a partition,
//! where each side takes the buckets of the nodes it cannot see (as SafeKit and NLB do), and
//! says so loudly. With `quorum`, a side without a majority of the configured weight accepts
//! nothing instead.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use herd_config::FarmConfig;
use herd_packet::hash::HashKey;
use herd_packet::table::{BucketMode, NodeId};

use crate::assign::{assign, Member};
use crate::auth::Keyring;
use crate::detector::Detector;
use crate::inbox::{Inbox, Refusal, Refused};
use crate::wire::{Heartbeat, State, ViewMember, MAX_DRAINS};

/// What the protocol needs to know of the farm's configuration.
#[derive(Clone, Debug)]
pub struct Farm {
    /// The configuration digest every heartbeat carries.
    pub digest: [u8; 32],
    /// The flow-hash key, which also seeds the assignment.
    pub key: HashKey,
    /// The number of buckets.
    pub buckets: usize,
    /// The configured nodes, in order: a node's index is its id.
    pub nodes: Vec<FarmNode>,
}

/// One configured node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FarmNode {
    /// Its unique name.
    pub name: String,
    /// Its share of the buckets relative to the others.
    pub weight: u32,
}

impl Farm {
    /// The farm of a configuration.
    pub fn from_config(config: &FarmConfig) -> Self {
        Self {
            digest: config.digest().0,
            key: HashKey::from_bytes(config.farm.hash_key),
            buckets: config.farm.buckets as usize,
            nodes: config
                .nodes
                .iter()
                .map(|node| FarmNode {
                    name: node.name.clone(),
                    weight: node.weight,
                })
                .collect(),
        }
    }

    /// The owner of each bucket when the nodes in `members` (bit `i`: node `i`) are alive.
    pub fn owners(&self, members: u64) -> Vec<NodeId> {
        let live: Vec<Member> = self
            .nodes
            .iter()
            .enumerate()
            .filter(|&(i, _)| members & (1 << i) != 0)
            .map(|(i, node)| Member {
                id: i as NodeId,
                name: node.name.clone(),
                weight: node.weight,
            })
            .collect();
        assign(&self.key, self.buckets, &live)
    }

    /// Whether the nodes in `members` hold more than half of the configured weight (nodes
    /// count one each when every weight is 0).
    fn has_majority(&self, members: u64) -> bool {
        let total: u64 = self.nodes.iter().map(|node| u64::from(node.weight)).sum();
        let weight = |i: usize| match total {
            0 => 1,
            _ => u64::from(self.nodes[i].weight),
        };
        let all: u64 = (0..self.nodes.len()).map(weight).sum();
        let held: u64 = (0..self.nodes.len())
            .filter(|&i| members & (1 << i) != 0)
            .map(weight)
            .sum();
        2 * held > all
    }
}

/// The protocol's timing and policy, from `[membership]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// The heartbeat period.
    pub heartbeat_ms: u64,
    /// Silence after which a node is dead.
    pub dead_after_ms: u64,
    /// The longest drain.
    pub drain_ms: u64,
    /// Whether a side without a majority of the configured weight stops accepting.
    pub quorum: bool,
}

impl Settings {
    /// The settings of a configuration.
    pub fn from_config(config: &herd_config::Membership) -> Self {
        Self {
            heartbeat_ms: config.heartbeat_ms.into(),
            dead_after_ms: config.dead_after_ms.into(),
            drain_ms: u64::from(config.drain_s) * 1000,
            quorum: config.quorum,
        }
    }
}

/// The current time, as the protocol sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    /// A monotonic clock, in ms: every timeout is measured on it.
    pub mono_ms: u64,
    /// The wall clock, in ms since the Unix epoch: only heartbeats' send times (freshness) and
    /// incarnations use it.
    pub wall_ms: u64,
}

/// What the protocol asks its driver to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Send this datagram to every other configured node.
    Heartbeat(Vec<u8>),
    /// Install these bucket modes in the dataplane, replacing the table of an earlier
    /// generation at once.
    Install {
        /// Counts installs, from 1.
        generation: u64,
        /// One mode per bucket.
        modes: Vec<BucketMode>,
    },
    /// Something to log.
    Event(Event),
}

/// Why a drain ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DrainEnd {
    /// The dataplane reported no connection left in the drained buckets.
    Flows,
    /// `drain_ms` passed with connections left: they now break.
    Timeout,
    /// More views were drained at once than a heartbeat lists: the oldest was cut short.
    TooMany,
}

/// What happened, for the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A datagram was refused.
    Refused(Refusal),
    /// This node became a member: it had heard the configured nodes, or waited `dead_after`.
    Up,
    /// This node left the farm: its drain is over, and it owns nothing.
    Left,
    /// A node was heard from for the first time, or again after being declared dead.
    PeerAlive {
        /// Its index.
        node: usize,
        /// Its state.
        state: State,
    },
    /// A node restarted: a heartbeat with a higher incarnation.
    PeerRestarted {
        /// Its index.
        node: usize,
    },
    /// A node fell silent for the timeout and is dead.
    PeerDead {
        /// Its index.
        node: usize,
        /// The timeout it exceeded.
        timeout_ms: u64,
        /// Whether its last heartbeat said it had withdrawn: it left on purpose and stopped,
        /// and its silence is no failure.
        withdrawn: bool,
    },
    /// A node declared dead is heard again in the same incarnation: it was frozen or cut off,
    /// so both sides may have served its buckets meanwhile.
    PeerReturned {
        /// Its index.
        node: usize,
    },
    /// The view changed.
    View {
        /// Its epoch.
        epoch: u64,
        /// The members, by index.
        members: Vec<usize>,
        /// Buckets the new table gives this node.
        owned: usize,
    },
    /// Every live node showed this node's view: it takes the buckets the view gives it.
    Agreed {
        /// The view's epoch.
        epoch: u64,
    },
    /// This node keeps serving its connections in buckets it released.
    DrainStarted {
        /// Views drained now.
        drains: usize,
    },
    /// A drain ended.
    DrainEnded(DrainEnd),
    /// The live nodes lost or regained a majority of the configured weight (`quorum`).
    Quorum {
        /// Whether this node's side has it now.
        held: bool,
    },
    /// This node's loop ran late: it was starved or frozen.
    LateTick {
        /// By how much.
        late_ms: u64,
        /// The health penalty now stretching the timeouts.
        penalty: u32,
    },
    /// This node was silent long enough to be declared dead: it stopped taking new connections
    /// until the others agree on a view with it again.
    Paused {
        /// Its silence.
        silent_ms: u64,
    },
    /// This node, joining, heard a heartbeat it refuses as from another farm configuration or
    /// under another key: a node runs there that it cannot agree with, so it does not join
    /// while such heartbeats keep coming (within `dead_after`).
    JoinHeld {
        /// Why the heartbeat was refused.
        refusal: Refusal,
    },
}

/// Another node, as its latest heartbeat shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    /// Its state.
    pub state: State,
    /// Its incarnation.
    pub incarnation: u64,
    /// When its latest heartbeat arrived, on the monotonic clock.
    pub heard_ms: u64,
    /// How long that heartbeat took on the way: the receiver's wall clock at arrival less the
    /// sender's at sending, so the clocks' offset is in it too.
    pub delay_ms: i64,
}

/// Counts kept for operators and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Stats {
    /// Views installed.
    pub views: u64,
    /// Nodes declared dead.
    pub deaths: u64,
    /// Nodes declared dead that came back in the same incarnation: partitions or freezes.
    pub returns: u64,
    /// Times this node found itself paused past the point of being declared dead.
    pub pauses: u64,
    /// Heartbeats sent.
    pub sent: u64,
}

/// A view this node still drains.
#[derive(Clone, Copy, Debug)]
struct Drain {
    members: u64,
    since_ms: u64,
}

/// Everything the modes are computed from, besides the modes themselves.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ModeInputs {
    epoch: u64,
    agreed: bool,
    last_agreed: Option<u64>,
    quorum: bool,
    drains: Vec<u64>,
    peer_drains: Vec<(usize, Vec<u64>)>,
}

/// The last view every live node agreed on, and its table.
#[derive(Clone, Debug)]
struct Agreed {
    view: Vec<ViewMember>,
    owners: Arc<[NodeId]>,
}

/// One node's membership protocol.
#[derive(Debug)]
pub struct Membership {
    farm: Farm,
    settings: Settings,
    local: usize,
    incarnation: u64,
    keys: Keyring,
    inbox: Inbox,
    detector: Detector,
    /// The latest heartbeat of each node.
    latest: Vec<Option<Heartbeat>>,
    /// When each node's latest heartbeat arrived.
    received_ms: Vec<u64>,
    /// How long each node's latest heartbeat took on the way, by the two nodes' clocks.
    delay_ms: Vec<i64>,
    /// Heartbeats that arrived before this time, or at it, do not count towards agreement.
    fresh_after_ms: Option<u64>,
    /// Who was alive at the last update.
    alive: Vec<bool>,
    /// The incarnation in which each node was last declared dead.
    declared_dead: Vec<Option<u64>>,
    state: State,
    started_ms: u64,
    /// When this node last refused a heartbeat of another farm configuration or key.
    disputed_ms: Option<u64>,
    /// Why, while joining, it last refused one.
    dispute: Option<Refusal>,
    sequence: u64,
    epoch: u64,
    view: Vec<ViewMember>,
    owners: Arc<[NodeId]>,
    modes: Vec<BucketMode>,
    /// Whether `modes` changed since the last install.
    modes_changed: bool,
    /// What the modes were last computed from.
    mode_inputs: Option<ModeInputs>,
    /// The buckets some node, this one or a live other, still drains under an earlier view,
    /// as of the last computation of the modes.
    drained: Arc<[bool]>,
    generation: u64,
    agreed: bool,
    /// A partition healed and the farm has not agreed on a view since.
    merging: bool,
    last_agreed: Option<Agreed>,
    drains: Vec<Drain>,
    quorum_held: bool,
    next_heartbeat_ms: u64,
    last_sent_ms: Option<u64>,
    send_now: bool,
    tables: HashMap<u64, Arc<[NodeId]>>,
    outputs: VecDeque<Output>,
    stats: Stats,
}

impl Membership {
    /// Node `local` of `farm`, starting at `now` in incarnation `incarnation` (higher than any
    /// earlier run of this node), signing with `keys`. It starts owning nothing, and asks at
    /// once for an empty table and its first heartbeat. It starts joining when `join`;
    /// otherwise withdrawn, heard by the others but no member until [`Membership::join`] (a
    /// node whose application is not up yet).
    pub fn new(
        farm: Farm,
        local: usize,
        keys: Keyring,
        incarnation: u64,
        settings: Settings,
        now: Now,
        join: bool,
    ) -> Self {
        let nodes = farm.nodes.len();
        let names = farm.nodes.iter().map(|node| node.name.clone()).collect();
        let inbox = Inbox::new(keys.clone(), farm.digest, names, local);
        let owners: Arc<[NodeId]> = farm.owners(0).into();
        let mut membership = Self {
            modes: vec![BucketMode::NONE; farm.buckets],
            modes_changed: false,
            mode_inputs: None,
            drained: vec![false; farm.buckets].into(),
            settings,
            local,
            incarnation,
            keys,
            inbox,
            detector: Detector::new(nodes, settings.heartbeat_ms, settings.dead_after_ms),
            latest: vec![None; nodes],
            received_ms: vec![0; nodes],
            delay_ms: vec![0; nodes],
            fresh_after_ms: None,
            alive: vec![false; nodes],
            declared_dead: vec![None; nodes],
            state: if join {
                State::Joining
            } else {
                State::Withdrawn
            },
            started_ms: now.mono_ms,
            disputed_ms: None,
            dispute: None,
            sequence: 0,
            epoch: 0,
            view: Vec::new(),
            owners,
            generation: 0,
            agreed: false,
            merging: false,
            last_agreed: None,
            drains: Vec::new(),
            quorum_held: true,
            next_heartbeat_ms: now.mono_ms,
            last_sent_ms: None,
            send_now: false,
            tables: HashMap::new(),
            outputs: VecDeque::new(),
            stats: Stats::default(),
            farm,
        };
        membership.install();
        membership.update(now);
        membership
    }

    /// A datagram received at `now` from the farm port.
    pub fn handle_datagram(&mut self, datagram: &[u8], now: Now) {
        self.enter(now);
        match self.inbox.accept(datagram, now.wall_ms) {
            Ok((node, heartbeat)) => {
                let restarted = self.latest[node]
                    .as_ref()
                    .is_some_and(|before| before.incarnation < heartbeat.incarnation);
                if restarted {
                    self.event(Event::PeerRestarted { node });
                }
                self.detector.heard(node, now.mono_ms);
                // A heartbeat overtaken on the way says less than the one already here.
                let newer = self.latest[node].as_ref().is_none_or(|before| {
                    (heartbeat.incarnation, heartbeat.sequence)
                        > (before.incarnation, before.sequence)
                });
                if newer {
                    self.delay_ms[node] = now.wall_ms as i64 - heartbeat.sent_ms as i64;
                    self.latest[node] = Some(heartbeat);
                    self.received_ms[node] = now.mono_ms;
                }
            }
            Err(refusal) => {
                if refusal.disputes_the_farm() && self.state == State::Joining {
                    let held = self
                        .disputed_ms
                        .is_some_and(|at| now.mono_ms <= at + self.settings.dead_after_ms);
                    self.disputed_ms = Some(now.mono_ms);
                    self.dispute = Some(refusal.clone());
                    if !held {
                        self.event(Event::JoinHeld {
                            refusal: refusal.clone(),
                        });
                    }
                }
                self.event(Event::Refused(refusal));
            }
        }
        self.update(now);
    }

    /// The timer set by [`Membership::poll_timeout`] expired (calling it early is harmless).
    pub fn handle_timeout(&mut self, now: Now) {
        self.enter(now);
        self.update(now);
    }

    /// This node leaves the farm (an operator, a signal or a failed check): it releases every
    /// bucket, drains its connections and then reports [`Membership::finished`], withdrawn
    /// until [`Membership::join`].
    pub fn leave(&mut self, now: Now) {
        self.enter(now);
        if matches!(self.state, State::Joining | State::Up) {
            self.state = State::Leaving;
            self.send_now = true;
        }
        self.update(now);
    }

    /// The node's application is up again: a withdrawn node joins the farm anew, in the same
    /// incarnation (it was never declared dead). A leaving node joins again at once (an
    /// operator called its leave off): the connections it drains are kept until its drain
    /// ends, as any member's. Harmless in any other state.
    ///
    /// The view it last saw agreed before it left is forgotten: the others may have agreed on
    /// views without it since, so it takes no bucket without a new agreement (a crash
    /// takeover reasoned from that view could take a bucket another node already took).
    pub fn join(&mut self, now: Now) {
        self.enter(now);
        if matches!(self.state, State::Withdrawn | State::Leaving) {
            self.state = State::Joining;
            self.last_agreed = None;
            self.started_ms = now.mono_ms;
            self.send_now = true;
        }
        self.update(now);
    }

    /// herd stops on a withdrawn node: its last heartbeat says so, so that the others stop
    /// waiting for it to agree. Harmless in any other state (a node that still owns buckets
    /// just falls silent, and the others declare it dead).
    pub fn stop(&mut self, now: Now) {
        self.enter(now);
        if self.state == State::Withdrawn {
            self.state = State::Stopped;
            self.send_now = true;
        }
        self.update(now);
    }

    /// The dataplane reports that no connection is left in the buckets this node drains, as
    /// counted against the modes of install `generation`. A report about an earlier install
    /// is ignored: it may not have counted the buckets released since.
    pub fn flows_drained(&mut self, generation: u64, now: Now) {
        self.enter(now);
        if generation == self.generation && !self.drains.is_empty() {
            self.drains.clear();
            self.event(Event::DrainEnded(DrainEnd::Flows));
            self.send_now = true;
        }
        self.update(now);
    }

    /// When [`Membership::handle_timeout`] is next due, on the monotonic clock.
    pub fn poll_timeout(&self) -> u64 {
        let mut due = self.next_heartbeat_ms;
        for node in (0..self.alive.len()).filter(|&node| self.alive[node]) {
            if let Some(dies) = self.detector.dies_at(node) {
                due = due.min(dies);
            }
        }
        for drain in &self.drains {
            due = due.min(drain.since_ms.saturating_add(self.settings.drain_ms));
        }
        if self.state == State::Joining {
            due = due.min(self.join_at());
        }
        due
    }

    /// The next thing to do, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// Whether the node is out of the farm: withdrawn, its drain (if any) over and its last
    /// heartbeat saying so.
    pub fn finished(&self) -> bool {
        self.state == State::Withdrawn
    }

    /// This node's state.
    pub fn state(&self) -> State {
        self.state
    }

    /// This node's index in the configuration.
    pub fn local(&self) -> usize {
        self.local
    }

    /// This node's incarnation.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// The current view's epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The current view.
    pub fn view(&self) -> &[ViewMember] {
        &self.view
    }

    /// Whether every live node agreed on the current view.
    pub fn agreed(&self) -> bool {
        self.agreed
    }

    /// The owner of each bucket in the current view.
    pub fn owners(&self) -> &[NodeId] {
        &self.owners
    }

    /// The owner of each bucket in the current view, shared.
    pub fn shared_owners(&self) -> Arc<[NodeId]> {
        Arc::clone(&self.owners)
    }

    /// Whether each bucket is still drained under an earlier view: its connections there
    /// are served by the node the earlier view gave it to (this one, or a live node whose
    /// heartbeats list the drain).
    pub fn drained(&self) -> Arc<[bool]> {
        Arc::clone(&self.drained)
    }

    /// The installed mode of each bucket.
    pub fn modes(&self) -> &[BucketMode] {
        &self.modes
    }

    /// How many views this node drains.
    pub fn draining(&self) -> usize {
        self.drains.len()
    }

    /// Whether `node` is alive, as of the last input.
    pub fn is_alive(&self, node: usize) -> bool {
        node == self.local || self.alive.get(node).copied().unwrap_or(false)
    }

    /// What this node knows of node `node` from its latest heartbeat; `None` for this node
    /// and for a node never heard.
    pub fn peer(&self, node: usize) -> Option<Peer> {
        let heartbeat = self.latest.get(node)?.as_ref()?;
        Some(Peer {
            state: heartbeat.state,
            incarnation: heartbeat.incarnation,
            heard_ms: self.received_ms[node],
            delay_ms: self.delay_ms[node],
        })
    }

    /// Whether this side of the farm holds a majority of the weight (always, without quorum).
    pub fn quorum(&self) -> bool {
        self.quorum_held
    }

    /// How long a node may be silent before this one declares it dead: `dead_after`, stretched
    /// while this node's own loop has lately run late.
    pub fn timeout_ms(&self) -> u64 {
        self.detector.timeout_ms()
    }

    /// The counts kept so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The datagrams refused so far, by reason.
    pub fn refused(&self) -> Refused {
        self.inbox.refused()
    }

    /// Why this node, joining, does not become a member at `now_ms`: the last heartbeat it
    /// refused as from another farm configuration or key, while such heartbeats keep coming
    /// (see [`Event::JoinHeld`]).
    pub fn join_held(&self, now_ms: u64) -> Option<&Refusal> {
        let held = self.state == State::Joining
            && self
                .disputed_ms
                .is_some_and(|at| now_ms <= at + self.settings.dead_after_ms);
        self.dispute.as_ref().filter(|_| held)
    }

    /// What every input does first: the loop's own health. A tick that comes late means this
    /// node was starved or frozen; a silence long enough for the others to have declared it
    /// dead means they may have taken its buckets, so it stops taking new connections until
    /// they agree on a view with it again.
    fn enter(&mut self, now: Now) {
        let due = self
            .detector
            .last_tick()
            .is_none_or(|tick| now.mono_ms >= tick + self.settings.heartbeat_ms);
        if due {
            let late_ms = self.detector.tick(now.mono_ms);
            if late_ms > 0 {
                let penalty = self.detector.penalty();
                self.event(Event::LateTick { late_ms, penalty });
            }
        }
        let Some(sent) = self.last_sent_ms else {
            return;
        };
        let silent_ms = now.mono_ms.saturating_sub(sent);
        let threshold = self
            .settings
            .dead_after_ms
            .saturating_sub(self.settings.heartbeat_ms);
        // The buckets are looked at only once the silence is long enough: every input
        // passes here.
        let takes_new = || {
            self.modes
                .iter()
                .any(|mode| mode.0 & !BucketMode::KNOWN.0 != 0)
        };
        if silent_ms >= threshold && (self.agreed || takes_new()) {
            self.stats.pauses += 1;
            self.event(Event::Paused { silent_ms });
            self.start_over(now);
            self.install();
        }
    }

    /// Gives up every bucket but this node's own connections, and waits for the others to
    /// agree on a view anew, with heartbeats sent from now on: after a pause or a partition,
    /// the others may have taken any bucket.
    fn start_over(&mut self, now: Now) {
        for mode in &mut self.modes {
            *mode = keep_known(*mode, true);
        }
        self.agreed = false;
        self.last_agreed = None;
        self.mode_inputs = None;
        self.fresh_after_ms = Some(now.mono_ms);
        self.send_now = true;
    }

    /// When a joining node that has not heard every configured node becomes a member:
    /// `dead_after` after it started, or after the last heartbeat it refused as another farm's
    /// (see [`Event::JoinHeld`]).
    fn join_at(&self) -> u64 {
        let since = self
            .disputed_ms
            .map_or(self.started_ms, |at| at.max(self.started_ms) + 1);
        since + self.settings.dead_after_ms
    }

    /// Brings everything up to date with what is known at `now`.
    fn update(&mut self, now: Now) {
        self.observe_peers(now);
        let undisputed = self
            .disputed_ms
            .is_none_or(|at| now.mono_ms > at + self.settings.dead_after_ms);
        if self.state == State::Joining && undisputed {
            let heard_all = (0..self.latest.len())
                .all(|node| node == self.local || self.latest[node].is_some());
            if heard_all || now.mono_ms >= self.join_at() {
                self.state = State::Up;
                self.send_now = true;
                self.event(Event::Up);
            }
        }
        // Compared member by member: most inputs leave the view as it is, and need not
        // build it.
        if !self.current_view().eq(self.view.iter().copied()) {
            let view = self.current_view().collect();
            self.change_view(view, now);
        }
        if !self.agreed && self.everyone_agrees() {
            self.agreed = true;
            self.merging = false;
            self.last_agreed = Some(Agreed {
                view: self.view.clone(),
                owners: Arc::clone(&self.owners),
            });
            self.event(Event::Agreed { epoch: self.epoch });
        }
        self.expire_drains(now);
        self.refresh_modes();
        if self.state == State::Leaving && self.drains.is_empty() {
            self.state = State::Withdrawn;
            self.send_now = true;
            self.event(Event::Left);
        }
        if self.send_now || now.mono_ms >= self.next_heartbeat_ms {
            self.send_heartbeat(now);
        }
    }

    /// Who is alive now, with the events of the changes.
    fn observe_peers(&mut self, now: Now) {
        for node in 0..self.alive.len() {
            if node == self.local {
                continue;
            }
            let Some(heartbeat) = &self.latest[node] else {
                continue;
            };
            let (incarnation, state) = (heartbeat.incarnation, heartbeat.state);
            let alive = self.detector.alive(node, now.mono_ms);
            if alive == self.alive[node] {
                continue;
            }
            self.alive[node] = alive;
            if alive {
                if self.declared_dead[node] == Some(incarnation) {
                    self.stats.returns += 1;
                    self.event(Event::PeerReturned { node });
                }
                self.event(Event::PeerAlive { node, state });
            } else {
                self.declared_dead[node] = Some(incarnation);
                self.stats.deaths += 1;
                let timeout_ms = self.detector.timeout_ms();
                let withdrawn = matches!(state, State::Withdrawn | State::Stopped);
                self.event(Event::PeerDead {
                    node,
                    timeout_ms,
                    withdrawn,
                });
            }
        }
        let members = self.alive_set() | (1 << self.local);
        let held = !self.settings.quorum || self.farm.has_majority(members);
        if held != self.quorum_held {
            self.quorum_held = held;
            self.event(Event::Quorum { held });
        }
    }

    /// The live nodes other than this one, as a set.
    fn alive_set(&self) -> u64 {
        (0..self.alive.len())
            .filter(|&node| self.alive[node])
            .fold(0, |set, node| set | (1 << node))
    }

    /// The live nodes that are up, with this one while it is up.
    fn current_view(&self) -> impl Iterator<Item = ViewMember> + '_ {
        (0..self.alive.len()).filter_map(|node| {
            let incarnation = if node == self.local {
                (self.state == State::Up).then_some(self.incarnation)?
            } else {
                let heartbeat = self.latest[node].as_ref()?;
                (self.alive[node] && heartbeat.state == State::Up)
                    .then_some(heartbeat.incarnation)?
            };
            Some(ViewMember {
                node: node as u8,
                incarnation,
            })
        })
    }

    /// Moves to a new view: its table, and a drain of the released buckets that held
    /// connections.
    fn change_view(&mut self, view: Vec<ViewMember>, now: Now) {
        let before = members_of(&self.view);
        let owners = self.table(members_of(&view));
        let local = self.local as NodeId;
        // A node declared dead that is back in the same incarnation never stopped serving its
        // buckets, and a node whose buckets rest on an agreed view without this one has been
        // serving without it: the farm was partitioned, and until the merged farm agrees on a view
        // both sides may hold any bucket. This node starts over, and the buckets that change
        // hands are dropped at once rather than drained, since two nodes draining one bucket
        // would both take its non-TCP traffic; so are those the nodes back own in their own
        // views.
        let me = self.local as u8;
        let returning: Vec<&ViewMember> = view
            .iter()
            .filter(|m| {
                let node = usize::from(m.node);
                let serving_alone = self.latest[node].as_ref().is_some_and(|heartbeat| {
                    heartbeat.agreed & (1 << m.node) != 0 && heartbeat.agreed & (1 << me) == 0
                });
                !self.view.contains(m)
                    && node != self.local
                    && (self.declared_dead[node] == Some(m.incarnation) || serving_alone)
            })
            .collect();
        if !returning.is_empty() {
            self.start_over(now);
            self.merging = true;
        }
        // The nodes back never stopped serving what their own views give them, and may take
        // any TCP packet there: this node keeps not even its connections in those buckets, or
        // both would answer them.
        let mut theirs = vec![false; self.modes.len()];
        for m in returning {
            let Some(heartbeat) = &self.latest[usize::from(m.node)] else {
                continue;
            };
            let table = self.table(members_of(&heartbeat.view));
            for (bucket, &owner) in table.iter().enumerate() {
                theirs[bucket] |= owner == NodeId::from(m.node);
            }
        }
        if self.merging {
            for (bucket, mode) in self.modes.iter_mut().enumerate() {
                if (owners[bucket] != local || theirs[bucket]) && *mode != BucketMode::NONE {
                    *mode = BucketMode::NONE;
                    self.modes_changed = true;
                }
            }
        }
        let lost_held = (0..self.modes.len()).any(|bucket| {
            self.owners[bucket] == local
                && owners[bucket] != local
                && self.modes[bucket] != BucketMode::NONE
        });
        if lost_held {
            self.drains.push(Drain {
                members: before,
                since_ms: now.mono_ms,
            });
            if self.drains.len() > MAX_DRAINS {
                self.drains.remove(0);
                self.event(Event::DrainEnded(DrainEnd::TooMany));
            }
            self.event(Event::DrainStarted {
                drains: self.drains.len(),
            });
        }
        self.epoch += 1;
        self.stats.views += 1;
        self.owners = owners;
        self.view = view;
        self.agreed = false;
        self.send_now = true;
        let owned = self.owners.iter().filter(|&&owner| owner == local).count();
        let members = self.view.iter().map(|m| usize::from(m.node)).collect();
        self.event(Event::View {
            epoch: self.epoch,
            members,
            owned,
        });
    }

    /// Whether every live node's latest heartbeat shows its releases installed and this
    /// node's very view. Joining, leaving and withdrawn nodes too: a joining or withdrawn
    /// node may become a member at any moment, and shows it in its view when it does (two
    /// withdrawn nodes joining at once would otherwise each take every bucket). But not a
    /// stopped node: it holds nothing and has fallen silent, so its view will never change,
    /// and waiting for it to be declared dead would leave the buckets of a node that died
    /// meanwhile without an owner.
    fn everyone_agrees(&self) -> bool {
        (0..self.alive.len())
            .filter(|&node| self.alive[node])
            .all(|node| {
                let Some(heartbeat) = &self.latest[node] else {
                    return false;
                };
                heartbeat.state == State::Stopped
                    || (self
                        .fresh_after_ms
                        .is_none_or(|after| self.received_ms[node] > after)
                        && heartbeat.released == heartbeat.epoch
                        && heartbeat.view == self.view)
            })
    }

    /// Ends the drains older than `drain_ms`.
    fn expire_drains(&mut self, now: Now) {
        let drain_ms = self.settings.drain_ms;
        let before = self.drains.len();
        self.drains
            .retain(|drain| now.mono_ms < drain.since_ms.saturating_add(drain_ms));
        if self.drains.len() < before {
            self.event(Event::DrainEnded(DrainEnd::Timeout));
            self.send_now = true;
        }
    }

    /// Recomputes every bucket's mode from the view, the agreement and the drains, and
    /// installs the result if it changed.
    fn refresh_modes(&mut self) {
        // Most heartbeats change nothing the modes depend on.
        let inputs = ModeInputs {
            epoch: self.epoch,
            agreed: self.agreed,
            last_agreed: self.last_agreed.as_ref().map(|a| members_of(&a.view)),
            quorum: self.quorum_held,
            drains: self.drains.iter().map(|drain| drain.members).collect(),
            peer_drains: (0..self.alive.len())
                .filter(|&node| self.alive[node])
                .filter_map(|node| Some((node, self.latest[node].as_ref()?.drains.clone())))
                .filter(|(_, drains)| !drains.is_empty())
                .collect(),
        };
        if !self.modes_changed && self.mode_inputs.as_ref() == Some(&inputs) {
            return;
        }
        self.mode_inputs = Some(inputs);
        let local = self.local as NodeId;
        let busy = self.drained_by_others();
        let drained: Vec<u64> = self.drains.iter().map(|drain| drain.members).collect();
        let mine_drains: Vec<Arc<[NodeId]>> = drained
            .into_iter()
            .map(|members| self.table(members))
            .collect();
        self.drained = (0..self.modes.len())
            .map(|bucket| busy[bucket] || mine_drains.iter().any(|owners| owners[bucket] == local))
            .collect();
        let crash_takeover = self.crash_takeover();
        let mut changed = std::mem::take(&mut self.modes_changed);
        for bucket in 0..self.modes.len() {
            let before = self.modes[bucket];
            let mine = self.owners[bucket] == local;
            let acquire = mine
                && (self.agreed
                    || before.0 & BucketMode::SYN.0 != 0
                    || crash_takeover.as_ref().is_some_and(|c| c[bucket]));
            // What this node holds in any other bucket must be covered by the drains its
            // heartbeats announce, so that no other node takes the same traffic.
            let mode = if !self.quorum_held {
                BucketMode::NONE
            } else if acquire {
                owned_mode(busy[bucket])
            } else if mine_drains.iter().any(|owners| owners[bucket] == local) {
                keep_known(before, busy[bucket])
            } else {
                BucketMode::NONE
            };
            if mode != before {
                self.modes[bucket] = mode;
                changed = true;
            }
        }
        if changed {
            self.install();
        }
    }

    /// The buckets some live node still drains: those its drained views gave it.
    fn drained_by_others(&mut self) -> Vec<bool> {
        let mut busy = vec![false; self.modes.len()];
        let draining: Vec<(usize, u64)> = (0..self.alive.len())
            .filter(|&node| self.alive[node])
            .filter_map(|node| Some((node, self.latest[node].as_ref()?)))
            .flat_map(|(node, heartbeat)| heartbeat.drains.iter().map(move |&d| (node, d)))
            .collect();
        for (node, members) in draining {
            let owners = self.table(members);
            for (bucket, &owner) in owners.iter().enumerate() {
                busy[bucket] |= usize::from(owner) == node;
            }
        }
        busy
    }

    /// The buckets this node may take without waiting for agreement: when the view only lost
    /// members since the last agreed view, the buckets whose owner there is gone and which no
    /// node could claim in any view between the two (a node that has not yet noticed every
    /// loss computes one of those, and the others may have agreed on one). Past
    /// [`MAX_TAKEOVER_LOSSES`] losses at once the views between are too many to check, and
    /// agreement decides.
    fn crash_takeover(&mut self) -> Option<Vec<bool>> {
        let agreed = self.last_agreed.clone()?;
        if !self.view.iter().all(|member| agreed.view.contains(member)) {
            return None;
        }
        let current = members_of(&self.view);
        let lost = members_of(&agreed.view) & !current;
        if lost.count_ones() > MAX_TAKEOVER_LOSSES {
            return None;
        }
        let claimable = lost | (1 << self.local);
        let mut takeover: Vec<bool> = agreed
            .owners
            .iter()
            .map(|&owner| !is_in(current, owner))
            .collect();
        // Every subset of the lost nodes, the empty one (the current view) included.
        let mut subset: u64 = 0;
        loop {
            let owners = self.table(current | subset);
            // Even where the old owner still lives: the others may have agreed on that view,
            // which this node showed too, without this node hearing of it, and the old owner
            // then released the bucket.
            for (take, &owner) in takeover.iter_mut().zip(owners.iter()) {
                if !is_in(claimable, owner) {
                    *take = false;
                }
            }
            if subset == lost {
                break;
            }
            // The next subset of `lost`, in increasing order.
            subset = subset.wrapping_sub(lost) & lost;
        }
        Some(takeover)
    }

    /// The table of a set of members, computed once.
    fn table(&mut self, members: u64) -> Arc<[NodeId]> {
        if let Some(owners) = self.tables.get(&members) {
            return Arc::clone(owners);
        }
        // Views come and go; a handful of recent tables is all that is ever looked up.
        if self.tables.len() >= 64 {
            self.tables.clear();
        }
        let owners: Arc<[NodeId]> = self.farm.owners(members).into();
        self.tables.insert(members, Arc::clone(&owners));
        owners
    }

    fn install(&mut self) {
        self.generation += 1;
        self.outputs.push_back(Output::Install {
            generation: self.generation,
            modes: self.modes.clone(),
        });
    }

    fn send_heartbeat(&mut self, now: Now) {
        self.sequence += 1;
        let local = &self.farm.nodes[self.local];
        let heartbeat = Heartbeat {
            farm: self.farm.digest,
            name: local.name.clone(),
            incarnation: self.incarnation,
            sequence: self.sequence,
            sent_ms: now.wall_ms,
            state: self.state,
            weight: local.weight.min(u32::from(u16::MAX)) as u16,
            epoch: self.epoch,
            // Releases are installed before the heartbeat that shows the view is sent.
            released: self.epoch,
            agreed: self
                .last_agreed
                .as_ref()
                .map_or(0, |agreed| members_of(&agreed.view)),
            view: self.view.clone(),
            drains: self.drains.iter().map(|drain| drain.members).collect(),
        };
        if let Some(datagram) = heartbeat.encode(&self.keys) {
            self.outputs.push_back(Output::Heartbeat(datagram));
            self.stats.sent += 1;
        }
        self.last_sent_ms = Some(now.mono_ms);
        self.next_heartbeat_ms = now.mono_ms + self.settings.heartbeat_ms;
        self.send_now = false;
    }

    fn event(&mut self, event: Event) {
        self.outputs.push_back(Output::Event(event));
    }
}

/// The most members a view may have lost since the last agreed view for a crash takeover.
const MAX_TAKEOVER_LOSSES: u32 = 4;

/// Whether `node` (a `NodeId`, perhaps `NO_OWNER`) is in the set `members`.
fn is_in(members: u64, node: NodeId) -> bool {
    usize::from(node) < 64 && members & (1 << node) != 0
}

/// The set of a view's members.
fn members_of(view: &[ViewMember]) -> u64 {
    view.iter().fold(0, |set, member| set | (1 << member.node))
}

/// The mode of a bucket the table gives this node and that it has acquired: it takes new
/// connections, and everything else too unless another node drains the bucket, which may be
/// taking its non-TCP traffic and serves connections this node must not answer.
fn owned_mode(drained_elsewhere: bool) -> BucketMode {
    if drained_elsewhere {
        BucketMode(BucketMode::SYN.0 | BucketMode::KNOWN.0)
    } else {
        BucketMode::OWN
    }
}

/// The mode of a bucket this node released or drains, which had mode `before`: its own
/// connections if it had any TCP, and non-TCP traffic if it had it and no other node drains
/// the bucket too (then neither knows which of them had it rightly, and both give it up).
/// Never takes more.
fn keep_known(before: BucketMode, drained_elsewhere: bool) -> BucketMode {
    let tcp = BucketMode::SYN.0 | BucketMode::KNOWN.0 | BucketMode::TCP_ANY.0;
    let known = if before.0 & tcp != 0 {
        BucketMode::KNOWN.0
    } else {
        0
    };
    let other = if drained_elsewhere {
        0
    } else {
        before.0 & BucketMode::OTHER.0
    };
    BucketMode(known | other)
}
