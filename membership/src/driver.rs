//! The membership thread: the protocol of [`crate::protocol`] driven by the clocks, a UDP
//! socket on the farm port and the node's dataplane. Everything the protocol decides is
//! decided there; this module only moves bytes and time in and out, and logs. The rest of the
//! node steers it through a [`Handle`]: it joins when the application is healthy, leaves when
//! it is not or an operator says so, and tells back when it is up and when it has left; a
//! [`Snapshot`] of it is always there to read, and [`Handle::views`] signals each new view.
//!
//! # Scheduling
//!
//! In AF_XDP mode a worker busy-polls each core, so a thread of the normal class shares a core
//! with a thread that never sleeps: it may wait a whole scheduler slice (several ms, more under
//! load) for each wake-up, and a heartbeat late by `dead_after` makes the others declare this
//! node dead while it is alive. [`Driver::run`] therefore moves its thread to the real-time
//! class (`SCHED_FIFO`, priority [`RT_PRIORITY`]): it then runs as soon as it wakes, before any
//! normal thread. It sleeps almost all the time (a few µs of work per heartbeat), and the
//! kernel's real-time throttling (`sched_rt_runtime_us`) bounds what a bug could take. Where
//! real-time scheduling is refused (no `CAP_SYS_NICE`, or a container without a real-time
//! budget), it falls back to the highest normal priority (nice -20) and says so. Whatever
//! lateness remains is noticed by the protocol itself (local health awareness), which then
//! stretches its timeouts instead of declaring the others dead.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use crossbeam_channel::{Receiver, Sender, TryRecvError};
use herd_packet::counts::Traffic;
use herd_packet::table::BucketMode;
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token, Waker};

use crate::auth::Keyring;
use crate::datagrams::{Fanout, Inbound};
use crate::inbox::Refusal;
use crate::protocol::{DrainEnd, Event, Farm, Membership, Now, Output, Settings};
use crate::snapshot::Snapshot;
use crate::wire::State;

/// The real-time priority of the membership thread: the lowest but one, above every normal
/// thread and below the kernel's own real-time threads (which use 50 and up).
pub const RT_PRIORITY: i32 = 2;

/// How often the dataplane is asked, while this node drains, whether its connections are gone:
/// as often as it counts them at most (a dump of the kernel's sockets, on a thread of its own).
const DRAIN_POLL_MS: u64 = 250;

/// Datagrams read in one turn of the loop: a flood of them on the farm port must not hold up
/// the timers, which send this node's heartbeats.
const READS_PER_TURN: usize = 64;

/// How many times a heartbeat period a node with more peers than this reads its socket, at
/// most. Each read wakes the thread, and on a large farm the wake-ups cost more than the
/// heartbeats they read (`herd-perf membership`, 64 nodes at 200 ms: 0.89 % of a core a node
/// on average and 1.71 % at most without this, 0.62 % and 0.84 % with it). With this many
/// peers or fewer, heartbeats come about this often anyway, and each is read as it comes.
const READS_PER_PERIOD: u64 = 10;

/// The senders of refused datagrams remembered for the rate limit of their log lines: a flood
/// from forged addresses must not grow it without end.
const REFUSAL_SENDERS: usize = 256;

/// How soon the dataplane is asked again when it has not counted under the latest table yet.
const DRAIN_RETRY_MS: u64 = 25;

/// How often, at most, the datagrams refused from one address are logged.
const REFUSAL_LOG_MS: u64 = 10_000;

/// How often the snapshot is refreshed when nothing changes, for the dataplane's counts and
/// the time since each heartbeat.
const REFRESH_MS: u64 = 1000;

/// An error of the dataplane, as the driver reports it.
pub type DataplaneError = Box<dyn std::error::Error + Send + Sync>;

/// What the membership thread needs of the node's dataplane.
pub trait Dataplane {
    /// Installs the bucket modes of install `generation`, at once for every packet.
    fn install(&mut self, generation: u64, modes: &[BucketMode]) -> Result<(), DataplaneError>;

    /// Keeps the dataplane accepting for `ttl` from now: without a renewal by then, it accepts
    /// no VIP packet (fail closed), so a frozen herd stops serving before the others take
    /// its buckets.
    fn keep_alive(&mut self, ttl: Duration) -> Result<(), DataplaneError>;

    /// How many connections still drain under the modes of install `generation`; `None` while
    /// the dataplane has not counted them under those modes yet.
    fn draining_flows(&mut self, generation: u64) -> Result<Option<u64>, DataplaneError>;

    /// What the dataplane did with the traffic so far.
    fn traffic(&mut self) -> Result<Traffic, DataplaneError>;
}

/// What the rest of the node asks of the membership thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// Join the farm (the application is healthy); a node that is not withdrawn is already in.
    Join,
    /// Leave the farm with a drain, and stay out until told to join.
    Leave,
    /// Stop the thread now, whatever still drains.
    Exit,
}

/// What the membership thread tells the rest of the node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notice {
    /// This node has become a member of the farm.
    Up,
    /// This node is out of the farm after a [`Command::Leave`]: its drain is over. Sent once
    /// per leave.
    Left,
}

/// The rest of the node's end of the membership thread.
#[derive(Clone, Debug)]
pub struct Handle {
    commands: Sender<Command>,
    waker: Arc<Waker>,
    /// What the thread tells.
    pub notices: Receiver<Notice>,
    /// Where it stands, refreshed at every change and every [`REFRESH_MS`].
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    /// The epoch of each new view, for whoever reacts to a change of view (the daemon
    /// announces the VIPs again). It holds one: views that come while one waits unread are
    /// folded into it, so a reader that only needs to know that the view changed never falls
    /// behind, and a node without such a reader keeps nothing. It closes when the thread
    /// stops.
    pub views: Receiver<u64>,
}

impl Handle {
    /// Asks `command` of the thread. Fails only once the thread has stopped.
    pub fn send(&self, command: Command) -> Result<(), DriverError> {
        self.commands
            .send(command)
            .map_err(|_| DriverError::Stopped)?;
        self.waker.wake().map_err(DriverError::Poll)
    }
}

/// Why the membership thread stopped before the node had left.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The farm port could not be opened.
    #[error("cannot open the farm port {address} (is another herd running, or is {ip} not this host's?): {source}", ip = address.ip())]
    Bind {
        /// The address.
        address: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The event loop failed.
    #[error("the membership event loop failed: {0}")]
    Poll(std::io::Error),
    /// The thread has stopped.
    #[error("the membership thread has stopped")]
    Stopped,
    /// The dataplane refused something: the node can no longer keep its table right.
    #[error("the dataplane cannot {what}: {source}")]
    Dataplane {
        /// What was asked of it.
        what: &'static str,
        /// Why it failed.
        source: DataplaneError,
    },
}

/// The milliseconds the protocol reads: a monotonic clock for timeouts, the wall clock for
/// send times and incarnations.
#[derive(Clone, Copy, Debug)]
struct Clock {
    start: Instant,
}

impl Clock {
    fn now(&self) -> Now {
        Now {
            // From 1, so that no time the protocol sees is 0 (its "never").
            mono_ms: self.start.elapsed().as_millis() as u64 + 1,
            wall_ms: wall_ms(),
        }
    }
}

/// The wall clock in ms since the Unix epoch (0 before it).
pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

/// The datagrams refused from one address since its last log line.
#[derive(Clone, Copy, Debug)]
struct RefusalLog {
    address: SocketAddr,
    logged_ms: u64,
    suppressed: u64,
}

const SOCKET: Token = Token(0);
const WAKER: Token = Token(1);

/// The membership thread of one node.
pub struct Driver<D> {
    membership: Membership,
    settings: Settings,
    names: Vec<String>,
    socket: UdpSocket,
    /// The other nodes' farm ports, with their index.
    peers: Vec<(usize, SocketAddr)>,
    /// The same ports, as one heartbeat to each is sent.
    fanout: Fanout,
    /// The datagrams read in one turn.
    inbound: Inbound,
    /// How long the thread waits after a read before it reads again, so that what comes
    /// meanwhile is read in one go (see [`READS_PER_PERIOD`]): zero in a farm of few nodes.
    read_gap: Duration,
    /// Whether sending to each peer failed last time, so that a failure is logged once.
    send_failing: Vec<bool>,
    dataplane: D,
    poll: Poll,
    commands: Receiver<Command>,
    notices: Sender<Notice>,
    snapshot: Arc<ArcSwap<Snapshot>>,
    views: Sender<u64>,
    /// The protocol's state when the snapshot was last refreshed.
    reported: State,
    /// A leave was asked for and its [`Notice::Left`] is still due: exactly one per leave, so
    /// that a late one never ends a later leave's drain.
    leaving: bool,
    next_refresh_ms: u64,
    clock: Clock,
    generation: u64,
    next_drain_poll_ms: u64,
    /// The dataplane's last count of the connections this node drains.
    draining_connections: Option<u64>,
    refusals: Vec<RefusalLog>,
}

/// What a node's membership starts from.
pub struct Start {
    /// The farm.
    pub farm: Farm,
    /// This node's index in the configuration.
    pub local: usize,
    /// The keys heartbeats are signed and checked with.
    pub keys: Keyring,
    /// This start's incarnation (see [`crate::incarnation`]).
    pub incarnation: u64,
    /// The protocol's timing and policy.
    pub settings: Settings,
    /// Every configured node's farm port, in configuration order.
    pub addresses: Vec<SocketAddr>,
}

impl<D: Dataplane> Driver<D> {
    /// The driver of the node described by `start`, over `dataplane`, and the handle that
    /// steers it. It binds the node's farm port now, so that a port in use is reported before
    /// the node goes on. The node joins the farm at once when `join`; otherwise it is heard
    /// by the others, withdrawn, until told to join.
    pub fn new(start: Start, mut dataplane: D, join: bool) -> Result<(Self, Handle), DriverError> {
        let Start {
            farm,
            local,
            keys,
            incarnation,
            settings,
            addresses,
        } = start;
        let address = addresses[local];
        let socket =
            UdpSocket::bind(address).map_err(|source| DriverError::Bind { address, source })?;
        let peers: Vec<(usize, SocketAddr)> = addresses
            .iter()
            .copied()
            .enumerate()
            .filter(|&(node, _)| node != local)
            .collect();
        let fanout = Fanout::new(peers.iter().map(|&(_, address)| address));
        let read_gap = read_gap(peers.len(), &settings);
        let names: Vec<String> = farm.nodes.iter().map(|node| node.name.clone()).collect();
        let clock = Clock {
            start: Instant::now(),
        };
        let now = clock.now();
        let membership = Membership::new(farm, local, keys, incarnation, settings, now, join);
        let poll = Poll::new().map_err(DriverError::Poll)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER).map_err(DriverError::Poll)?);
        let (commands, inbox) = crossbeam_channel::unbounded();
        let (notify, notices) = crossbeam_channel::unbounded();
        let (view_sender, views) = crossbeam_channel::bounded(1);
        let traffic = dataplane
            .traffic()
            .map_err(|source| DriverError::Dataplane {
                what: "count its traffic",
                source,
            })?;
        let snapshot = Arc::new(ArcSwap::from_pointee(Snapshot::of(
            &membership,
            &names,
            now.mono_ms,
            traffic,
            None,
        )));
        let handle = Handle {
            commands,
            waker,
            notices,
            snapshot: Arc::clone(&snapshot),
            views,
        };
        let driver = Self {
            reported: membership.state(),
            leaving: false,
            membership,
            settings,
            send_failing: vec![false; names.len()],
            names,
            socket,
            peers,
            fanout,
            inbound: Inbound::new(READS_PER_TURN),
            read_gap,
            dataplane,
            poll,
            commands: inbox,
            notices: notify,
            snapshot,
            views: view_sender,
            next_refresh_ms: 0,
            clock,
            generation: 0,
            next_drain_poll_ms: 0,
            draining_connections: None,
            refusals: Vec::new(),
        };
        Ok((driver, handle))
    }

    /// Runs the protocol until told to exit (or until the handle is dropped), and gives the
    /// dataplane back.
    pub fn run(mut self) -> Result<D, DriverError> {
        raise_priority();
        self.poll
            .registry()
            .register(&mut self.socket, SOCKET, Interest::READABLE)
            .map_err(DriverError::Poll)?;
        let mut events = Events::with_capacity(16);
        let mut unread = false;
        loop {
            let now = self.clock.now();
            if !self.commanded(now)? {
                return Ok(self.dataplane);
            }
            if now.mono_ms >= self.membership.poll_timeout() {
                self.membership.handle_timeout(now);
            }
            self.poll_drain(now)?;
            self.act(now, None)?;
            self.refresh(now)?;
            let wait = if unread {
                Duration::ZERO
            } else {
                self.wait(now)
            };
            match self.poll.poll(&mut events, Some(wait)) {
                Ok(()) => {}
                Err(error) if error.kind() == ErrorKind::Interrupted => continue,
                Err(error) => return Err(DriverError::Poll(error)),
            }
            let readable = events.iter().any(|event| event.token() == SOCKET);
            if unread || readable {
                unread = self.receive()?;
                if !unread {
                    self.pause_reads();
                }
            }
        }
    }

    /// Reads the datagrams waiting on the socket, at most [`READS_PER_TURN`], in one call;
    /// returns whether some may be left (the socket is edge-triggered: they raise no new
    /// event).
    fn receive(&mut self) -> Result<bool, DriverError> {
        let count = match self.inbound.receive(&self.socket) {
            Ok(count) => count,
            Err(error) if error.kind() == ErrorKind::WouldBlock => return Ok(false),
            Err(error) if error.kind() == ErrorKind::Interrupted => return Ok(true),
            // An ICMP error for an earlier send (a peer's port closed) shows up here: it
            // says nothing about what is waiting, so reading goes on.
            Err(error) => {
                tracing::debug!("farm port: {error}");
                return Ok(true);
            }
        };
        for index in 0..count {
            let Some((datagram, from)) = self.inbound.datagram(index) else {
                break;
            };
            // A datagram longer than any heartbeat fills its buffer, one byte longer than
            // the longest, and is refused as too long.
            let now = self.clock.now();
            self.membership.handle_datagram(datagram, now);
            self.act(now, from)?;
        }
        // Fewer than asked for: the call found the socket empty.
        Ok(count == self.inbound.capacity())
    }

    /// Waits [`Driver::read_gap`], or until the next timer if it comes sooner, without
    /// watching the socket: datagrams that arrive meanwhile wake nobody, and the next turn
    /// reads them together.
    fn pause_reads(&self) {
        if self.read_gap.is_zero() {
            return;
        }
        std::thread::sleep(self.read_gap.min(self.wait(self.clock.now())));
    }

    /// How long the loop may sleep: until the protocol's next timeout, the next drain poll or
    /// the next refresh of the snapshot.
    fn wait(&self, now: Now) -> Duration {
        let mut due = self.membership.poll_timeout().min(self.next_refresh_ms);
        if self.membership.draining() > 0 {
            due = due.min(self.next_drain_poll_ms);
        }
        let ms = due
            .saturating_sub(now.mono_ms)
            .min(self.settings.heartbeat_ms);
        Duration::from_millis(ms)
    }

    /// Carries out the commands waiting; returns whether the thread goes on.
    fn commanded(&mut self, now: Now) -> Result<bool, DriverError> {
        loop {
            match self.commands.try_recv() {
                Ok(Command::Join) => {
                    match self.membership.state() {
                        State::Withdrawn => tracing::info!("joining the farm"),
                        State::Leaving => {
                            tracing::info!("joining the farm again: the leave is called off, the connections draining are kept");
                            // No notice of its end: the leave is over.
                            self.leaving = false;
                        }
                        _ => {}
                    }
                    self.membership.join(now);
                }
                Ok(Command::Leave) => {
                    if matches!(self.membership.state(), State::Joining | State::Up) {
                        tracing::info!("leaving the farm: releasing every bucket and draining the connections this node serves");
                    }
                    self.membership.leave(now);
                    self.leaving = true;
                }
                Ok(Command::Exit) | Err(TryRecvError::Disconnected) => {
                    // A withdrawn node says it stops, so that nobody waits for it.
                    self.membership.stop(now);
                    self.act(now, None)?;
                    return Ok(false);
                }
                Err(TryRecvError::Empty) => return Ok(true),
            }
        }
    }

    /// Publishes a fresh snapshot when the protocol's state changed (telling the rest of the
    /// node when it is up, and when a leave asked for is over) or every [`REFRESH_MS`].
    fn refresh(&mut self, now: Now) -> Result<(), DriverError> {
        let state = self.membership.state();
        let changed = state != self.reported;
        self.reported = state;
        let left = self.leaving && state == State::Withdrawn;
        if !changed && !left && now.mono_ms < self.next_refresh_ms {
            return Ok(());
        }
        // Nobody left to tell only when the node is stopping.
        if changed && state == State::Up {
            let _ = self.notices.send(Notice::Up);
        }
        if left {
            self.leaving = false;
            let _ = self.notices.send(Notice::Left);
        }
        let traffic = self
            .dataplane
            .traffic()
            .map_err(|source| DriverError::Dataplane {
                what: "count its traffic",
                source,
            })?;
        self.snapshot.store(Arc::new(Snapshot::of(
            &self.membership,
            &self.names,
            now.mono_ms,
            traffic,
            self.draining_connections,
        )));
        self.next_refresh_ms = now.mono_ms + REFRESH_MS;
        Ok(())
    }

    /// While the node drains, asks the dataplane now and then whether its connections are
    /// gone, and tells the protocol when they are.
    fn poll_drain(&mut self, now: Now) -> Result<(), DriverError> {
        if self.membership.draining() == 0 || now.mono_ms < self.next_drain_poll_ms {
            return Ok(());
        }
        let left = self
            .dataplane
            .draining_flows(self.generation)
            .map_err(|source| DriverError::Dataplane {
                what: "count its draining connections",
                source,
            })?;
        // Not counted under the latest table yet (the count of its sockets is under way):
        // asked again soon, since a drain that ends on the first count is the common case.
        let next = if left.is_some() {
            DRAIN_POLL_MS
        } else {
            DRAIN_RETRY_MS
        };
        self.next_drain_poll_ms = now.mono_ms + next;
        if left.is_some() {
            self.draining_connections = left;
        }
        if left == Some(0) {
            self.membership.flows_drained(self.generation, now);
        }
        Ok(())
    }

    /// Does what the protocol asks: heartbeats to send, tables to install, events to log.
    /// `from` is the sender of the datagram just handled, if any.
    fn act(&mut self, now: Now, from: Option<SocketAddr>) -> Result<(), DriverError> {
        while let Some(output) = self.membership.poll_output() {
            // Shown at once, but a flood of refused datagrams must not cost a refresh each.
            if !matches!(
                output,
                Output::Heartbeat(_) | Output::Event(Event::Refused(_))
            ) {
                self.next_refresh_ms = now.mono_ms;
            }
            match output {
                Output::Heartbeat(datagram) => self.send(&datagram)?,
                Output::Install { generation, modes } => {
                    self.dataplane
                        .install(generation, &modes)
                        .map_err(|source| DriverError::Dataplane {
                            what: "install a new bucket table",
                            source,
                        })?;
                    self.generation = generation;
                    // Counted again under the new modes before the drain may end.
                    self.next_drain_poll_ms = now.mono_ms;
                    self.draining_connections = None;
                    let count = |bits| modes.iter().filter(|mode| mode.contains(bits)).count();
                    tracing::info!(
                        generation,
                        new_connections = count(BucketMode::SYN),
                        known_connections = count(BucketMode::KNOWN),
                        all_tcp = count(BucketMode::TCP_ANY),
                        non_tcp = count(BucketMode::OTHER),
                        "installed a bucket table (buckets per kind of traffic taken)"
                    );
                }
                Output::Event(Event::Refused(refusal)) => self.log_refusal(&refusal, from, now),
                Output::Event(event @ Event::View { epoch, .. }) => {
                    self.log(&event);
                    // Full: a view already waits unread, which says the same. Disconnected:
                    // nobody reacts to views.
                    let _ = self.views.try_send(epoch);
                }
                Output::Event(event) => self.log(&event),
            }
        }
        Ok(())
    }

    /// Sends a heartbeat to every other node, then renews the dataplane's deadline: the
    /// others count `dead_after` from this heartbeat, and the node stops accepting one
    /// heartbeat period before that, so that it never serves what they may already serve.
    fn send(&mut self, datagram: &[u8]) -> Result<(), DriverError> {
        let Self {
            fanout,
            socket,
            peers,
            send_failing,
            names,
            ..
        } = self;
        fanout.send(socket, datagram, |index, result| {
            let (node, address) = peers[index];
            match result {
                Ok(()) => {
                    if std::mem::take(&mut send_failing[node]) {
                        tracing::info!(peer = %names[node], %address, "heartbeats reach the peer's host again");
                    }
                }
                Err(error) => {
                    if !std::mem::replace(&mut send_failing[node], true) {
                        tracing::warn!(peer = %names[node], %address, "cannot send heartbeats to the peer: {error}");
                    }
                }
            }
        });
        let ttl = self
            .settings
            .dead_after_ms
            .saturating_sub(self.settings.heartbeat_ms);
        self.dataplane
            .keep_alive(Duration::from_millis(ttl))
            .map_err(|source| DriverError::Dataplane {
                what: "renew its liveness deadline",
                source,
            })
    }

    /// Logs a refused datagram, at most once per [`REFUSAL_LOG_MS`] for each sender address
    /// (a hostile sender cannot flood the log), with the count of those not logged.
    fn log_refusal(&mut self, refusal: &Refusal, from: Option<SocketAddr>, now: Now) {
        let Some(address) = from else { return };
        let index = match self.refusals.iter().position(|log| log.address == address) {
            Some(index) => index,
            None => {
                if self.refusals.len() >= REFUSAL_SENDERS {
                    // The sender logged longest ago makes room.
                    let oldest = (0..self.refusals.len())
                        .min_by_key(|&i| self.refusals[i].logged_ms)
                        .unwrap_or(0);
                    self.refusals.swap_remove(oldest);
                }
                self.refusals.push(RefusalLog {
                    address,
                    logged_ms: 0,
                    suppressed: 0,
                });
                self.refusals.len() - 1
            }
        };
        let log = &mut self.refusals[index];
        if log.logged_ms != 0 && now.mono_ms < log.logged_ms + REFUSAL_LOG_MS {
            log.suppressed += 1;
            return;
        }
        let suppressed = std::mem::take(&mut log.suppressed);
        log.logged_ms = now.mono_ms;
        let refused = self.membership.refused();
        match refusal {
            Refusal::WrongFarm { .. } => tracing::error!(
                from = %address,
                suppressed,
                wrong_farm = refused.wrong_farm,
                "refused a heartbeat: {refusal}"
            ),
            _ => tracing::warn!(
                from = %address,
                suppressed,
                "refused a datagram on the farm port: {refusal}"
            ),
        }
    }

    /// Logs what the protocol did, with node names.
    fn log(&self, event: &Event) {
        let name = |node: usize| self.names.get(node).map_or("?", String::as_str);
        match event {
            Event::Refused(_) => {}
            Event::Up => tracing::info!("up: this node is a member of the farm"),
            Event::Left => tracing::info!("left the farm: the drain is over and this node owns nothing"),
            Event::PeerAlive { node, state } => {
                tracing::info!(peer = name(*node), %state, "peer alive")
            }
            Event::PeerRestarted { node } => {
                tracing::info!(peer = name(*node), "peer restarted (a new incarnation)")
            }
            Event::PeerDead {
                node,
                withdrawn: true,
                ..
            } => tracing::info!(
                peer = name(*node),
                "peer gone: it had left the farm and withdrawn"
            ),
            Event::PeerDead {
                node, timeout_ms, ..
            } => tracing::warn!(
                peer = name(*node),
                timeout_ms,
                "peer dead: silent for the timeout; its buckets move to the live nodes"
            ),
            Event::PeerReturned { node } => tracing::error!(
                peer = name(*node),
                returns = self.membership.stats().returns,
                "split brain healed: a peer declared dead is heard again in the same incarnation \
                 (it was frozen or cut off), so both sides may have served its buckets meanwhile; \
                 the farm now agrees on one table again"
            ),
            Event::View {
                epoch,
                members,
                owned,
            } => {
                let members: Vec<&str> = members.iter().map(|&node| name(node)).collect();
                tracing::info!(
                    epoch,
                    members = %members.join(","),
                    owned,
                    "new view"
                )
            }
            // The empty view of a node that has just started says nothing.
            Event::Agreed { .. } if self.membership.view().is_empty() => {}
            Event::Agreed { epoch } => {
                let members: Vec<&str> = self
                    .membership
                    .view()
                    .iter()
                    .map(|member| name(usize::from(member.node)))
                    .collect();
                tracing::info!(
                    epoch,
                    members = %members.join(","),
                    "view agreed by every live node: this node takes the buckets it gives it"
                )
            }
            Event::DrainStarted { drains } => tracing::info!(
                drains,
                "draining: this node keeps the connections it serves in the buckets it released"
            ),
            Event::DrainEnded(DrainEnd::Flows) => {
                tracing::info!("drain over: no connection left in the released buckets")
            }
            Event::DrainEnded(DrainEnd::Timeout) => tracing::warn!(
                drain_ms = self.settings.drain_ms,
                "drain over after drain_s: the connections still open in the released buckets break"
            ),
            Event::DrainEnded(DrainEnd::TooMany) => tracing::warn!(
                "drain cut short: more views drained at once than a heartbeat lists; the oldest one's connections break"
            ),
            Event::Quorum { held: true } => {
                tracing::info!("quorum regained: this side holds a majority of the weight")
            }
            Event::Quorum { held: false } => tracing::error!(
                "quorum lost: this side holds no majority of the configured weight and accepts nothing"
            ),
            Event::LateTick { late_ms, penalty } => tracing::warn!(
                late_ms,
                penalty,
                timeout_ms = self.membership.timeout_ms(),
                "the membership loop ran late (this node was starved or frozen): timeouts stretched"
            ),
            Event::JoinHeld { refusal } => tracing::error!(
                "not joining the farm: {refusal}; this node takes no bucket while such heartbeats keep coming"
            ),
            Event::Paused { silent_ms } => tracing::warn!(
                silent_ms,
                "this node was silent long enough to be declared dead: it takes no new connection until the farm agrees on a view with it again"
            ),
        }
    }
}

/// The pause between two reads of a node with `peers` peers (see [`READS_PER_PERIOD`]).
fn read_gap(peers: usize, settings: &Settings) -> Duration {
    if u64::try_from(peers).unwrap_or(u64::MAX) <= READS_PER_PERIOD {
        return Duration::ZERO;
    }
    Duration::from_millis(settings.heartbeat_ms / READS_PER_PERIOD)
}

/// Moves the calling thread to the real-time class, or failing that to the highest normal
/// priority (see the module's documentation), and logs which.
fn raise_priority() {
    let param = libc::sched_param {
        sched_priority: RT_PRIORITY,
    };
    // SAFETY: `param` is a valid sched_param; pid 0 is the calling thread.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) } == 0 {
        tracing::info!(
            priority = RT_PRIORITY,
            "membership thread scheduled SCHED_FIFO: busy workers cannot delay heartbeats"
        );
        return;
    }
    let refused = std::io::Error::last_os_error();
    // SAFETY: setpriority has no memory preconditions; who 0 with PRIO_PROCESS is the caller
    // (on Linux, the calling thread).
    let niced = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, -20) } == 0;
    tracing::warn!(
        niced,
        "real-time scheduling refused ({refused}): the membership thread runs in the normal class{}; \
         on a loaded node its heartbeats may come late, which the others tolerate up to dead_after_ms",
        if niced { " at nice -20" } else { "" }
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every(heartbeat_ms: u64) -> Settings {
        Settings {
            heartbeat_ms,
            dead_after_ms: 4 * heartbeat_ms,
            drain_ms: 0,
            quorum: false,
        }
    }

    #[test]
    fn only_a_node_with_many_peers_pauses_between_reads() {
        assert_eq!(read_gap(2, &every(40)), Duration::ZERO);
        assert_eq!(read_gap(10, &every(40)), Duration::ZERO);
        assert_eq!(read_gap(11, &every(50)), Duration::from_millis(5));
        assert_eq!(read_gap(63, &every(200)), Duration::from_millis(20));
    }
}
