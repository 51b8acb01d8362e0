//! The client's load: from one thread, UDP requests to the VIP from many flows (each flow its
//! own socket, bound to a source address and port of the client's namespace), each flow
//! sending one request every [`INTERVAL`]. Every answer names the node that gave it; a
//! request not answered within [`TIMEOUT`] is lost. The driving thread reads the counts, asks
//! which flows a node answers, and sets watches: "when has each of these flows been answered
//! by such nodes?", which is how the failover and the rejoin are timed. Bounded in time and in
//! the number of requests.

use std::collections::BTreeMap;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use herd_testbed::address::VIP4 as VIP;
use herd_testbed::Netns;
use serde::Serialize;

use super::layout::{self, PORT};

/// How often each flow sends a request: the resolution of the times measured.
pub const INTERVAL: Duration = Duration::from_millis(50);
/// How long a request may wait for its answer before it counts as lost.
pub const TIMEOUT: Duration = Duration::from_secs(1);
/// How long a request is remembered, to tell a second answer to it from a late one.
const MEMORY: Duration = Duration::from_secs(3);
/// The longest wait in `poll`: the stop flag is seen at least this often.
const POLL: Duration = Duration::from_millis(5);

/// A part of the demo; each request counts in the phase it was sent in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// From the first request until every flow has been answered once.
    WarmUp,
    /// Every node up.
    Steady,
    /// From the kill of a node until its restart.
    Down,
    /// From the restart until the node serves its whole share again.
    Rejoining,
    /// Every node up again.
    Final,
}

impl Phase {
    /// Every phase, in order.
    pub const ALL: [Phase; 5] = [
        Phase::WarmUp,
        Phase::Steady,
        Phase::Down,
        Phase::Rejoining,
        Phase::Final,
    ];

    /// The phase's name, as the screen and the summary show it.
    pub fn label(self) -> &'static str {
        match self {
            Phase::WarmUp => "warm-up",
            Phase::Steady => "steady",
            Phase::Down => "node down",
            Phase::Rejoining => "rejoining",
            Phase::Final => "steady again",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Requests of one phase and what became of them.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Counts {
    /// Requests sent.
    pub sent: u64,
    /// Requests answered (the first answer of each).
    pub answered: u64,
    /// Requests not answered within the time-out.
    pub lost: u64,
    /// Second answers to a request: two nodes took the same packet (never, if herd works).
    pub duplicates: u64,
    /// Requests answered, by node (in node order).
    pub by_node: Vec<u64>,
}

impl Counts {
    fn add(&mut self, other: &Counts) {
        self.sent += other.sent;
        self.answered += other.answered;
        self.lost += other.lost;
        self.duplicates += other.duplicates;
        for (mine, theirs) in self.by_node.iter_mut().zip(&other.by_node) {
            *mine += theirs;
        }
    }
}

/// Which answers a watch waits for.
#[derive(Clone, Copy, Debug)]
pub enum Want {
    /// An answer by any node but this one.
    AnyBut(usize),
    /// An answer by this node.
    Only(usize),
}

impl Want {
    fn accepts(self, node: usize) -> bool {
        match self {
            Want::AnyBut(excluded) => node != excluded,
            Want::Only(wanted) => node == wanted,
        }
    }
}

/// A watch over some flows from a moment on: when has each been answered as wanted?
#[derive(Clone, Debug)]
struct Watch {
    since: Instant,
    want: Want,
    watched: Vec<bool>,
    left: usize,
    done: Option<Instant>,
    others_last: Option<Instant>,
}

/// What a watch found, in times after its start.
#[derive(Clone, Copy, Debug, Default)]
pub struct Watched {
    /// When every watched flow had been answered as wanted.
    pub done: Option<Duration>,
    /// The last answer in a watched flow by a node the watch does not want.
    pub others_last: Option<Duration>,
}

/// What the load has seen so far.
#[derive(Clone, Debug)]
pub struct Tally {
    /// The counts of each phase, in [`Phase::ALL`] order.
    pub phases: Vec<Counts>,
    /// Answers by node since the start.
    pub by_node: Vec<u64>,
    /// For each flow, the node of its latest answer.
    last: Vec<Option<usize>>,
    watch: Option<Watch>,
}

impl Tally {
    /// The counts of `phase`.
    pub fn phase(&self, phase: Phase) -> &Counts {
        &self.phases[phase.index()]
    }

    /// The counts of every phase together.
    pub fn total(&self) -> Counts {
        let mut total = Counts {
            by_node: vec![0; self.by_node.len()],
            ..Counts::default()
        };
        for counts in &self.phases {
            total.add(counts);
        }
        total
    }
}

/// What the load thread and the driving thread share.
struct Shared {
    tally: Mutex<Tally>,
    /// Notified whenever the load thread has added a turn to the tally.
    tallied: Condvar,
    phase: AtomicUsize,
    stop: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Tally> {
        // Every update is made whole under the lock: a poisoned one is still consistent.
        self.tally
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The load, running.
pub struct Load {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<anyhow::Result<()>>>,
    flows: usize,
}

impl Load {
    /// Starts the load from `client`'s namespace to a farm whose nodes are `names`; it stops
    /// by itself after `bound`.
    pub fn start(client: &Netns, names: &[&'static str], bound: Duration) -> anyhow::Result<Self> {
        let flows = layout::flows();
        let sockets = client.run(|| {
            flows
                .iter()
                .map(|&flow| {
                    let socket = UdpSocket::bind(flow)
                        .with_context(|| format!("cannot bind the client flow {flow}"))?;
                    socket
                        .connect((VIP, PORT))
                        .context("cannot connect a UDP socket to the VIP")?;
                    socket
                        .set_nonblocking(true)
                        .context("cannot make a UDP socket non-blocking")?;
                    Ok(socket)
                })
                .collect::<anyhow::Result<Vec<UdpSocket>>>()
        })??;
        let shared = Arc::new(Shared {
            tally: Mutex::new(Tally {
                phases: vec![
                    Counts {
                        by_node: vec![0; names.len()],
                        ..Counts::default()
                    };
                    Phase::ALL.len()
                ],
                by_node: vec![0; names.len()],
                last: vec![None; sockets.len()],
                watch: None,
            }),
            tallied: Condvar::new(),
            phase: AtomicUsize::new(Phase::WarmUp.index()),
            stop: AtomicBool::new(false),
        });
        let names = names.to_vec();
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("demo-load".into())
            .spawn(move || run(&sockets, &names, &thread_shared, bound))
            .context("cannot start the load thread")?;
        Ok(Load {
            shared,
            thread: Some(thread),
            flows: flows.len(),
        })
    }

    /// How many flows the load sends from.
    pub fn flows(&self) -> usize {
        self.flows
    }

    /// The requests sent from now on count in `phase`.
    pub fn set_phase(&self, phase: Phase) {
        self.shared.phase.store(phase.index(), Ordering::Relaxed);
    }

    /// Waits until every request sent in `phase` has been answered or found lost, at most
    /// [`TIMEOUT`] and a little more (the load's own time-out settles every request by then);
    /// whether they all were.
    pub fn settle(&self, phase: Phase) -> bool {
        let deadline = Instant::now() + TIMEOUT + 4 * POLL;
        let mut tally = self.shared.lock();
        loop {
            let counts = tally.phase(phase);
            if counts.answered + counts.lost >= counts.sent {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            tally = self
                .shared
                .tallied
                .wait_timeout(tally, deadline - now)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
    }

    /// A copy of what the load has seen so far.
    pub fn tally(&self) -> Tally {
        self.shared.lock().clone()
    }

    /// Whether every flow has been answered at least once.
    pub fn all_answered(&self) -> bool {
        self.shared.lock().last.iter().all(Option::is_some)
    }

    /// The flows whose latest answer came from `node`: those it serves.
    pub fn flows_of(&self, node: usize) -> Vec<usize> {
        let tally = self.shared.lock();
        (0..tally.last.len())
            .filter(|&flow| tally.last[flow] == Some(node))
            .collect()
    }

    /// Watches `flows` from now on, until each has been answered as `want` says; replaces
    /// the previous watch.
    pub fn watch(&self, flows: &[usize], want: Want) {
        let mut tally = self.shared.lock();
        let mut watched = vec![false; tally.last.len()];
        for &flow in flows {
            watched[flow] = true;
        }
        tally.watch = Some(Watch {
            since: Instant::now(),
            want,
            watched,
            left: flows.len(),
            done: None,
            others_last: None,
        });
    }

    /// What the current watch has found so far.
    pub fn watched(&self) -> Watched {
        let tally = self.shared.lock();
        let Some(watch) = &tally.watch else {
            return Watched::default();
        };
        let after = |at: Instant| at.saturating_duration_since(watch.since);
        Watched {
            done: watch.done.map(after),
            others_last: watch.others_last.map(after),
        }
    }

    /// Stops sending, waits for the answers still due (at most [`TIMEOUT`]) and returns the
    /// final tally.
    pub fn finish(mut self) -> anyhow::Result<Tally> {
        self.stop()?;
        Ok(self.tally())
    }

    /// Stops the thread and waits for it; its error, if it failed.
    fn stop(&mut self) -> anyhow::Result<()> {
        self.shared.stop.store(true, Ordering::Relaxed);
        match self.thread.take() {
            Some(thread) => thread
                .join()
                .map_err(|_| anyhow!("the load thread panicked"))?,
            None => Ok(()),
        }
    }

    /// Whether the load thread still runs; its error if it failed.
    pub fn check(&mut self) -> anyhow::Result<()> {
        if self.thread.as_ref().is_some_and(JoinHandle::is_finished) {
            self.stop()?;
            anyhow::bail!("the load stopped before the demo's end (its bound was reached)");
        }
        Ok(())
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// A request sent, until it is forgotten.
struct Request {
    flow: usize,
    sent: Instant,
    phase: usize,
    state: State,
}

/// What became of a request.
#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Waiting,
    Answered,
    Lost,
}

/// What one turn of the loop saw, applied to the tally at once.
#[derive(Default)]
struct Turn {
    /// The phase of each request sent.
    sent: Vec<usize>,
    /// The flow, the node that answered and the phase of each request answered.
    answers: Vec<(usize, usize, usize)>,
    /// The phase of each request answered a second time.
    duplicates: Vec<usize>,
    /// The phase of each request found lost.
    lost: Vec<usize>,
}

/// The load's loop: until `shared.stop` or `bound`, then until the last answers are in.
fn run(
    sockets: &[UdpSocket],
    names: &[&'static str],
    shared: &Shared,
    bound: Duration,
) -> anyhow::Result<()> {
    let start = Instant::now();
    let flows = sockets.len();
    // The bound in requests, too: whatever the clock does, the load sends no more.
    let most = (bound.as_secs_f64() / INTERVAL.as_secs_f64()).ceil() as u64 * flows as u64;
    // Staggered, so that the requests go out evenly rather than in bursts.
    let mut next: Vec<Instant> = (0..flows)
        .map(|flow| start + INTERVAL.mul_f64(flow as f64 / flows as f64))
        .collect();
    let mut requests: BTreeMap<u64, Request> = BTreeMap::new();
    let mut seq = 0u64;
    // The first request that may still be waiting: older ones are answered or lost.
    let mut oldest_waiting = 0u64;
    let mut stopping: Option<Instant> = None;
    let mut fds: Vec<libc::pollfd> = sockets
        .iter()
        .map(|socket| libc::pollfd {
            fd: socket.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let mut buf = [0u8; 512];
    loop {
        let now = Instant::now();
        if stopping.is_none()
            && (shared.stop.load(Ordering::Relaxed) || now >= start + bound || seq >= most)
        {
            stopping = Some(now);
        }
        if stopping.is_some_and(|at| now >= at + TIMEOUT || oldest_waiting == seq) {
            break;
        }
        let mut turn = Turn::default();
        if stopping.is_none() {
            let phase = shared.phase.load(Ordering::Relaxed);
            for (flow, (socket, due)) in sockets.iter().zip(&mut next).enumerate() {
                if now < *due {
                    continue;
                }
                // A full send buffer loses the request: it counts as lost.
                let _ = socket.send(seq.to_string().as_bytes());
                requests.insert(
                    seq,
                    Request {
                        flow,
                        sent: now,
                        phase,
                        state: State::Waiting,
                    },
                );
                turn.sent.push(phase);
                seq += 1;
                // Never in the past: a loop that fell behind does not send a burst.
                *due = (*due + INTERVAL).max(now);
            }
        }
        // Until the next request is due; once stopping, only the answers are waited for.
        let wait = match stopping {
            Some(_) => POLL,
            None => next
                .iter()
                .min()
                .map_or(POLL, |soonest| {
                    soonest.saturating_duration_since(Instant::now())
                })
                .min(POLL),
        };
        poll(&mut fds, wait)?;
        for (socket, fd) in sockets.iter().zip(&fds) {
            if fd.revents == 0 {
                continue;
            }
            // Until the socket is empty; an error (an ICMP one of an earlier request) ends
            // this turn's reading of it.
            while let Ok(n) = socket.recv(&mut buf) {
                let Some((node, answered)) = parse(&buf[..n], names) else {
                    continue;
                };
                match requests.get_mut(&answered) {
                    Some(request) if request.state == State::Waiting => {
                        request.state = State::Answered;
                        turn.answers.push((request.flow, node, request.phase));
                    }
                    Some(request) if request.state == State::Answered => {
                        turn.duplicates.push(request.phase);
                    }
                    // A late answer to a request counted lost, or one forgotten.
                    _ => {}
                }
            }
        }
        let now = Instant::now();
        for (&number, request) in requests.range_mut(oldest_waiting..) {
            if request.state == State::Waiting {
                if now.duration_since(request.sent) < TIMEOUT {
                    break;
                }
                request.state = State::Lost;
                turn.lost.push(request.phase);
            }
            oldest_waiting = number + 1;
        }
        while requests
            .first_key_value()
            .is_some_and(|(_, request)| now.duration_since(request.sent) > MEMORY)
        {
            requests.pop_first();
        }
        apply(&mut shared.lock(), &turn, now);
        shared.tallied.notify_all();
    }
    let mut turn = Turn::default();
    for request in requests.values().filter(|r| r.state == State::Waiting) {
        turn.lost.push(request.phase);
    }
    apply(&mut shared.lock(), &turn, Instant::now());
    shared.tallied.notify_all();
    Ok(())
}

/// Adds a turn of the loop, whose answers came at `now`, to the tally.
fn apply(tally: &mut Tally, turn: &Turn, now: Instant) {
    for &phase in &turn.sent {
        tally.phases[phase].sent += 1;
    }
    for &phase in &turn.lost {
        tally.phases[phase].lost += 1;
    }
    for &phase in &turn.duplicates {
        tally.phases[phase].duplicates += 1;
    }
    for &(flow, node, phase) in &turn.answers {
        let counts = &mut tally.phases[phase];
        counts.answered += 1;
        counts.by_node[node] += 1;
        tally.by_node[node] += 1;
        tally.last[flow] = Some(node);
        if let Some(watch) = &mut tally.watch {
            if now > watch.since && watch.watched[flow] {
                if !watch.want.accepts(node) {
                    watch.others_last = Some(now);
                } else if std::mem::take(&mut watch.watched[flow]) {
                    watch.left -= 1;
                    if watch.left == 0 {
                        watch.done = Some(now);
                    }
                }
            }
        }
    }
}

/// The node and the request of an answer `NAME:SEQ`.
fn parse(answer: &[u8], names: &[&str]) -> Option<(usize, u64)> {
    let text = std::str::from_utf8(answer).ok()?;
    let (name, seq) = text.split_once(':')?;
    Some((names.iter().position(|&n| n == name)?, seq.parse().ok()?))
}

/// Waits up to `timeout` for one of `fds` to be readable.
fn poll(fds: &mut [libc::pollfd], timeout: Duration) -> anyhow::Result<()> {
    for fd in fds.iter_mut() {
        fd.revents = 0;
    }
    // Whole milliseconds, rounded up: a shorter wait would spin.
    let ms = timeout.as_micros().div_ceil(1000) as libc::c_int;
    // SAFETY: `fds` is a valid array of `fds.len()` pollfd structures for the whole call.
    let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
    if ready < 0 {
        let error = std::io::Error::last_os_error();
        // A signal (Ctrl-C) interrupts the wait: the loop looks at its flags and goes on.
        if error.kind() != std::io::ErrorKind::Interrupted {
            return Err(error).context("poll on the client's sockets");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_name_their_node_and_request() {
        let names = ["alpha", "bravo"];
        assert_eq!(parse(b"bravo:42", &names), Some((1, 42)));
        assert_eq!(parse(b"alpha:0", &names), Some((0, 0)));
        assert_eq!(parse(b"charlie:1", &names), None);
        assert_eq!(parse(b"alpha:", &names), None);
        assert_eq!(parse(b"alpha", &names), None);
        assert_eq!(parse(b"\xff:1", &names), None);
    }

    fn tally(flows: usize, nodes: usize) -> Tally {
        Tally {
            phases: vec![
                Counts {
                    by_node: vec![0; nodes],
                    ..Counts::default()
                };
                Phase::ALL.len()
            ],
            by_node: vec![0; nodes],
            last: vec![None; flows],
            watch: None,
        }
    }

    #[test]
    fn a_watch_ends_when_every_flow_is_answered_as_wanted() {
        let mut tally = tally(3, 2);
        let since = Instant::now();
        tally.watch = Some(Watch {
            since,
            want: Want::AnyBut(1),
            watched: vec![true, false, true],
            left: 2,
            done: None,
            others_last: None,
        });
        let later = |ms| since + Duration::from_millis(ms);
        let answer = |flow, node| Turn {
            answers: vec![(flow, node, Phase::Down.index())],
            ..Turn::default()
        };
        apply(&mut tally, &answer(0, 1), later(10));
        apply(&mut tally, &answer(0, 0), later(20));
        apply(&mut tally, &answer(1, 0), later(30));
        assert!(tally.watch.as_ref().unwrap().done.is_none());
        apply(&mut tally, &answer(2, 0), later(40));
        let watch = tally.watch.as_ref().unwrap();
        assert_eq!(watch.done, Some(later(40)));
        assert_eq!(watch.others_last, Some(later(10)));
        assert_eq!(tally.phase(Phase::Down).answered, 4);
        assert_eq!(tally.phase(Phase::Down).by_node, [3, 1]);
        assert_eq!(tally.last, [Some(0), Some(0), Some(0)]);
        assert_eq!(tally.total().answered, 4);
    }
}
