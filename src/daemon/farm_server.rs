//! The daemon's end of the farm channel (see [`crate::farm_client`]): a TCP listener on this
//! node's own configured address and the farm port, the same number as the heartbeats' UDP
//! port, which takes the commands other nodes (or this one) carry for an operator. Every
//! command passes the [`CommandGate`] first (signed with the farm key, from this farm and a
//! configured node, for this node, fresh, not a replay); one refused gets no answer, only a
//! warning in the log and a count. One that passes is logged with its sender and who asked,
//! carried out through the supervisor's request channel, as the control socket's requests
//! are, and answered with a signed reply.
//!
//! An unauthenticated client cannot hold the server: at most [`MAX_CONNECTIONS`] connections
//! are served at once, each on a thread of its own, and each must send its command within
//! [`READ_TIMEOUT`], of at most [`MAX_COMMAND`] bytes.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Context;
use crossbeam_channel::Sender;
use herd_membership::auth::Keyring;
use herd_membership::command::{self, Action, CommandGate, Outcome, MAX_COMMAND};
use herd_membership::driver::wall_ms;

use super::shutdown::Shutdown;
use crate::control::{Incoming, Reply, Request};
use crate::farm_client::StatusAnswer;
use crate::farm_frame;
use crate::status::FarmCommands;
use crate::timeline::Timeline;

/// The most connections served at once; one more is closed at once.
pub const MAX_CONNECTIONS: usize = 8;

/// How long a client has to send its whole command.
pub const READ_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a reply may take to leave.
const WRITE_TIMEOUT: Duration = Duration::from_secs(3);

/// How long the supervisor has to answer a command: less than the client waits
/// ([`crate::farm_client::IO_TIMEOUT`]), so that the client hears why rather than a timeout.
const SUPERVISOR_TIMEOUT: Duration = Duration::from_secs(4);

/// How often one warning (the same reason from the same address) is logged.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// The counts of the farm commands received, which the supervisor shows in the status.
#[derive(Debug, Default)]
pub struct Counts(Mutex<FarmCommands>);

impl Counts {
    /// The counts now.
    pub fn get(&self) -> FarmCommands {
        *lock(&self.0)
    }
}

/// What the node is, for its gate and its replies.
pub struct Identity {
    /// The farm's keys.
    pub keys: Keyring,
    /// The farm digest of this node's configuration.
    pub farm: [u8; 32],
    /// Every configured node's name, in order.
    pub nodes: Vec<String>,
    /// This node's index among them.
    pub local: usize,
}

/// The farm channel's listening socket and what it answers with.
pub struct Server {
    listener: TcpListener,
    keys: Keyring,
    farm: [u8; 32],
    name: String,
    gate: Mutex<CommandGate>,
    /// Frames refused unread, larger than any command: malformed ones the gate never saw.
    unread: AtomicU64,
    counts: Arc<Counts>,
    timeline: Arc<Timeline>,
    /// When each (address, reason) was last warned about.
    warned: Mutex<HashMap<(IpAddr, &'static str), Instant>>,
}

impl Server {
    /// Listens on `address` (this node's address and the farm port) for the node `identity`,
    /// counting in `counts`; status answers carry `timeline`.
    pub fn bind(
        address: SocketAddr,
        identity: Identity,
        counts: Arc<Counts>,
        timeline: Arc<Timeline>,
    ) -> anyhow::Result<Self> {
        let context = || format!("cannot listen for farm commands on TCP {address} ([farm] port)");
        let listener = TcpListener::bind(address).with_context(context)?;
        listener.set_nonblocking(true).with_context(context)?;
        let Identity {
            keys,
            farm,
            nodes,
            local,
        } = identity;
        Ok(Self {
            listener,
            name: nodes[local].clone(),
            gate: Mutex::new(CommandGate::new(
                keys.clone(),
                farm,
                nodes,
                local,
                herd_membership::driver::wall_ms(),
            )),
            unread: AtomicU64::new(0),
            keys,
            farm,
            counts,
            timeline,
            warned: Mutex::new(HashMap::new()),
        })
    }

    /// The address it listens on.
    pub fn address(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Answers the connections until the shutdown, each on a thread of its own (at most
    /// [`MAX_CONNECTIONS`] at once), all joined before it returns.
    pub fn serve(&self, requests: &Sender<Incoming>, shutdown: &Shutdown) -> anyhow::Result<()> {
        let mut readiness = shutdown
            .watch(self.listener.as_raw_fd())
            .context("cannot watch the farm socket")?;
        let active = Arc::new(AtomicUsize::new(0));
        std::thread::scope(|scope| {
            while let Some((stream, peer)) =
                readiness.accept("farm commands", || self.listener.accept())?
            {
                let Some(slot) = Slot::take(&active) else {
                    tracing::debug!(%peer, "farm commands: {MAX_CONNECTIONS} connections already; one closed");
                    continue;
                };
                let spawned = std::thread::Builder::new()
                    .name("herd-farm-c".into())
                    .spawn_scoped(scope, move || {
                        let _slot = slot;
                        if let Err(error) = self.answer(stream, peer, requests) {
                            tracing::debug!(%peer, "farm commands: {error}");
                        }
                    });
                if let Err(error) = spawned {
                    tracing::warn!(
                        "farm commands: cannot start a thread for a connection: {error}"
                    );
                }
            }
            Ok(())
        })
    }

    /// Reads one command from `stream`, and carries it out and answers it if it passes the
    /// gate.
    fn answer(
        &self,
        mut stream: TcpStream,
        peer: SocketAddr,
        requests: &Sender<Incoming>,
    ) -> io::Result<()> {
        // Accepted from a non-blocking listener; the deadline bounds each connection instead.
        stream.set_nonblocking(false)?;
        stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
        let read = farm_frame::read(
            &mut farm_frame::Deadline {
                stream: &stream,
                at: Instant::now() + READ_TIMEOUT,
            },
            MAX_COMMAND,
        );
        let frame = match read {
            Ok(Some(frame)) => frame,
            Ok(None) => return Ok(()),
            Err(error) if error.kind() == io::ErrorKind::InvalidData => {
                // Larger than any command: counted as malformed, as the gate would.
                self.refuse_unread(peer, &error);
                return Ok(());
            }
            Err(error) => return Err(error),
        };
        let verdict = {
            let mut gate = lock(&self.gate);
            let verdict = gate.accept(&frame, wall_ms());
            self.publish(&gate);
            verdict
        };
        let command = match verdict {
            Ok((_, command)) => command,
            Err(refusal) => {
                self.warn(peer, refusal.reason(), &refusal);
                return Ok(());
            }
        };
        let log = |what: &str| {
            if command.action == Action::Status {
                tracing::debug!(%peer, from = %command.sender, origin = %command.origin, "farm command: status {what}");
            } else {
                tracing::info!(%peer, from = %command.sender, origin = %command.origin, "farm command: {} {what}", command.action);
            }
        };
        log("verified: carrying it out");
        lock(&self.counts.0).executed += 1;
        let (outcome, body) = self.carry_out(command.action, requests);
        if outcome == Outcome::Failed {
            log(&format!("not carried out: {body}"));
        }
        let reply = command::Reply {
            farm: self.farm,
            sender: self.name.clone(),
            incarnation: command.incarnation,
            sequence: command.sequence,
            outcome,
            body,
        };
        let Some(frame) = reply.encode(&self.keys).or_else(|| {
            command::Reply {
                outcome: Outcome::Failed,
                body: json_text("the answer is too large for a reply"),
                ..reply
            }
            .encode(&self.keys)
        }) else {
            return Ok(());
        };
        farm_frame::write(&mut stream, &frame)
    }

    /// Has the supervisor carry out `action`; the reply's outcome and body.
    fn carry_out(&self, action: Action, requests: &Sender<Incoming>) -> (Outcome, String) {
        let request = match action {
            Action::Status => Request::Status,
            Action::Drain => Request::Drain,
            Action::Stop => Request::Stop,
            Action::Start => Request::Start,
            Action::Restart => Request::Restart,
        };
        let (sender, receiver) = crossbeam_channel::bounded(1);
        let reply = match requests.send((request, sender)) {
            Ok(()) => receiver.recv_timeout(SUPERVISOR_TIMEOUT).ok(),
            Err(_) => None,
        };
        let Some(reply) = reply else {
            return (Outcome::Failed, json_text("herd is stopping"));
        };
        let body = match (action, reply) {
            (Action::Status, Reply::Status(status)) => serde_json::to_string(&StatusAnswer {
                status: *status,
                timeline: self.timeline.recent(),
            }),
            (Action::Status, _) => {
                return (Outcome::Failed, json_text("the node gave no status"));
            }
            (_, reply) => serde_json::to_string(&reply),
        };
        match body {
            Ok(body) => (Outcome::Done, body),
            Err(error) => (Outcome::Failed, json_text(&error.to_string())),
        }
    }

    /// Counts and warns about a frame larger than any command, refused unread.
    fn refuse_unread(&self, peer: SocketAddr, error: &io::Error) {
        self.unread.fetch_add(1, Ordering::Relaxed);
        self.publish(&lock(&self.gate));
        self.warn(peer, "malformed", &format!("malformed command: {error}"));
    }

    /// Makes the refusals counted so far, `gate`'s and those refused unread, the status's.
    fn publish(&self, gate: &CommandGate) {
        let mut refused = gate.refused();
        refused.malformed += self.unread.load(Ordering::Relaxed);
        lock(&self.counts.0).refused = refused;
    }

    /// Logs a refused command from `peer`, once every [`WARN_EVERY`] for one reason from one
    /// address: a flood of forgeries must not flood the log.
    fn warn(&self, peer: SocketAddr, reason: &'static str, why: &dyn std::fmt::Display) {
        let now = Instant::now();
        let mut warned = lock(&self.warned);
        warned.retain(|_, at| now.duration_since(*at) < WARN_EVERY);
        let key = (peer.ip(), reason);
        if warned.contains_key(&key) {
            return;
        }
        warned.insert(key, now);
        drop(warned);
        tracing::warn!(%peer, reason, "farm command refused, unanswered: {why} (the same from this address is logged once every {} s)", WARN_EVERY.as_secs());
    }
}

/// `text` as a JSON string.
fn json_text(text: &str) -> String {
    serde_json::Value::from(text).to_string()
}

/// One of the [`MAX_CONNECTIONS`] connections served at once, given back when dropped, even
/// by a thread that panics.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    /// A slot, if one is free.
    fn take(active: &Arc<AtomicUsize>) -> Option<Self> {
        active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |count| {
                (count < MAX_CONNECTIONS).then_some(count + 1)
            })
            .ok()
            .map(|_| Self(Arc::clone(active)))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Locks `mutex`, whose data no panic leaves half-changed (counts, a gate whose every change
/// is one assignment).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use herd_membership::command::Command;

    use super::*;
    use crate::farm_access::FarmCommand;
    use crate::farm_client::{Answer, Ask, AskError, FarmClient};
    use crate::timeline::{Event, EventKind};

    const KEYS: &str = "1 000102030405060708090a0b0c0d0e0f\n";
    const FARM: [u8; 32] = [9; 32];

    fn keys() -> Keyring {
        Keyring::parse(KEYS).unwrap()
    }

    /// A server of node `bravo` (index 1) on loopback, its counts, and a client of node
    /// `alpha` that reaches it.
    fn bravo() -> (Server, Arc<Counts>, FarmClient) {
        let counts = Arc::new(Counts::default());
        let timeline = Arc::new(Timeline::default());
        timeline.record(Event {
            at_ms: 1,
            node: "bravo".into(),
            kind: EventKind::Join,
            text: "bravo joined".into(),
        });
        let server = Server::bind(
            "127.0.0.1:0".parse().unwrap(),
            Identity {
                keys: keys(),
                farm: FARM,
                nodes: vec!["alpha".into(), "bravo".into()],
                local: 1,
            },
            Arc::clone(&counts),
            timeline,
        )
        .unwrap();
        let nodes = vec![
            ("alpha".into(), "127.0.0.1:9".parse().unwrap()),
            ("bravo".into(), server.address().unwrap()),
        ];
        let client = FarmClient::new(keys(), FARM, nodes, 0, 1000);
        (server, counts, client)
    }

    /// Runs `test` while `server` serves, with a supervisor that answers every request as
    /// `supervisor` says.
    fn serving(server: &Server, supervisor: impl Fn(Request) -> Reply + Send, test: impl FnOnce()) {
        let (requests, incoming) = crossbeam_channel::unbounded::<Incoming>();
        let shutdown = &Shutdown::default();
        std::thread::scope(|scope| {
            // The request channel goes with the server: the supervisor ends when it is done.
            let serve = scope.spawn(move || server.serve(&requests, shutdown));
            scope.spawn(move || {
                for (request, reply) in incoming {
                    let _ = reply.send(supervisor(request));
                }
            });
            test();
            shutdown.trigger();
            serve.join().unwrap().unwrap();
        });
    }

    fn supervisor(request: Request) -> Reply {
        match request {
            Request::Status => Reply::Status(Box::new(crate::daemon::metrics::tests::status())),
            Request::Drain => Reply::Done("draining".into()),
            other => Reply::Refused(format!("no {other:?} here")),
        }
    }

    #[test]
    fn verified_commands_are_carried_out_and_answered() {
        let (server, counts, client) = bravo();
        serving(&server, supervisor, || {
            let Answer::Status(report) = client.ask("bravo", Ask::Status, "test").unwrap() else {
                panic!("a status answers a status")
            };
            assert_eq!(report.name, "bravo");
            assert_eq!(
                report.status.unwrap().node,
                "alpha",
                "the supervisor's status"
            );
            assert_eq!(report.timeline[0].text, "bravo joined");
            let answer = client
                .ask("bravo", Ask::Command(FarmCommand::Drain), "root on alpha")
                .unwrap();
            assert!(matches!(answer, Answer::Reply(Reply::Done(text)) if text == "draining"));
            let report = client.report("test");
            assert!(report.nodes[1].status.is_some(), "{:?}", report.nodes[1]);
            assert_eq!(
                report.nodes[0].error.as_deref(),
                Some("connection refused: is herd running there?")
            );
        });
        assert_eq!(counts.get().executed, 3);
        assert_eq!(counts.get().refused, Default::default());
    }

    /// Sends `frame` to `server` and returns what comes back before the close.
    fn send(server: &Server, frame: &[u8]) -> Vec<u8> {
        let mut stream = TcpStream::connect(server.address().unwrap()).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        farm_frame::write(&mut stream, frame).unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).unwrap();
        answer
    }

    #[test]
    fn refused_commands_get_no_answer_and_are_counted() {
        let (server, counts, _) = bravo();
        let command = Command {
            farm: FARM,
            sender: "alpha".into(),
            incarnation: 5,
            sequence: 1,
            sent_ms: wall_ms(),
            target: "bravo".into(),
            action: Action::Drain,
            origin: "test".into(),
        };
        let other_key = Keyring::parse(&format!("1 {}", "ee".repeat(16))).unwrap();
        let valid = command.encode(&keys()).unwrap();
        let drains = std::sync::atomic::AtomicUsize::new(0);
        serving(
            &server,
            |request| {
                if request == Request::Drain {
                    drains.fetch_add(1, Ordering::SeqCst);
                }
                supervisor(request)
            },
            || {
                // A frame announced larger than any command is refused before it is read.
                let mut stream = TcpStream::connect(server.address().unwrap()).unwrap();
                stream.write_all(&u32::MAX.to_be_bytes()).unwrap();
                let mut answer = Vec::new();
                stream.read_to_end(&mut answer).unwrap();
                assert!(answer.is_empty());
                assert!(send(&server, &command.encode(&other_key).unwrap()).is_empty());
                let other_farm = Command {
                    farm: [1; 32],
                    ..command.clone()
                };
                assert!(send(&server, &other_farm.encode(&keys()).unwrap()).is_empty());
                assert!(
                    !send(&server, &valid).is_empty(),
                    "the first one is answered"
                );
                assert!(send(&server, &valid).is_empty(), "its replay is not");
                assert!(send(&server, b"garbage").is_empty());
            },
        );
        assert_eq!(
            drains.load(Ordering::SeqCst),
            1,
            "only the valid one drained"
        );
        let counts = counts.get();
        assert_eq!(counts.executed, 1);
        let refused: Vec<_> = counts
            .refused
            .by_reason()
            .into_iter()
            .filter(|(_, count)| *count > 0)
            .collect();
        assert_eq!(
            refused,
            [
                ("malformed", 2),
                ("forged", 1),
                ("wrong_farm", 1),
                ("replayed", 1)
            ]
        );
    }

    #[test]
    fn a_silent_client_is_dropped_and_does_not_block_others() {
        let (server, counts, client) = bravo();
        serving(&server, supervisor, || {
            let started = Instant::now();
            let silent: Vec<_> = (0..MAX_CONNECTIONS)
                .map(|_| TcpStream::connect(server.address().unwrap()).unwrap())
                .collect();
            for mut stream in silent {
                let mut answer = Vec::new();
                let closed = stream.read_to_end(&mut answer);
                assert!(
                    closed.is_ok() && answer.is_empty(),
                    "closed without an answer"
                );
            }
            let took = started.elapsed();
            assert!(
                took >= READ_TIMEOUT && took < READ_TIMEOUT * 2,
                "silent clients are held {took:?}"
            );
            // Once they are gone, the server answers again.
            let error = client.ask("charlie", Ask::Status, "test").unwrap_err();
            assert!(matches!(error, AskError::UnknownNode { .. }));
            assert!(client.ask("bravo", Ask::Status, "test").is_ok());
        });
        assert_eq!(counts.get().executed, 1);
    }
}
