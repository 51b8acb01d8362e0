//! The farm client: how one node carries an operator's command to a node of its farm (itself
//! included) over the farm's TCP channel, and checks the answer. Each command is a frame of
//! [`herd_membership::command`], signed with the farm key, carrying this daemon's incarnation
//! and a sequence number of its own, so that the target can refuse a replay; the reply is
//! signed too and must answer that very command, from that very node, of the same farm. The
//! target's end is `crate::daemon`'s farm server, on the node's address and the farm port.

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use herd_membership::auth::Keyring;
use herd_membership::command::{self, Action, Command, FrameError, Outcome, MAX_ORIGIN, MAX_REPLY};
use herd_membership::driver::wall_ms;
use serde::{Deserialize, Serialize};
use socket2::{Domain, Socket, Type};

use crate::control::Reply;
use crate::farm_access::{FarmCommand, FarmReport, NodeReport};
use crate::farm_frame;
use crate::status::Status;
use crate::timeline::Event;

/// How long a connection to a node may take to open.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a node may take to answer a command once connected: a stop or a drain answers
/// when it is under way, not when it is over.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// How long [`FarmClient::report`] waits for every node's answer: a node silent for longer is
/// shown as not answering rather than holding up the view of the others.
pub const REPORT_TIMEOUT: Duration = Duration::from_millis(1500);

/// What is asked of a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ask {
    /// Where it stands: its status and timeline.
    Status,
    /// An operator's command.
    Command(FarmCommand),
}

impl Ask {
    fn action(self) -> Action {
        match self {
            Ask::Status => Action::Status,
            Ask::Command(FarmCommand::Drain) => Action::Drain,
            Ask::Command(FarmCommand::Stop) => Action::Stop,
            Ask::Command(FarmCommand::Start) => Action::Start,
            Ask::Command(FarmCommand::Restart) => Action::Restart,
        }
    }
}

/// A node's answer.
#[derive(Clone, Debug)]
pub enum Answer {
    /// To [`Ask::Status`]: its report, with its status and timeline.
    Status(Box<NodeReport>),
    /// To [`Ask::Command`]: what its daemon replied, as its control socket would.
    Reply(Reply),
}

/// The body of the answer to a status request, as the farm server writes it.
#[derive(Debug, Serialize, Deserialize)]
pub struct StatusAnswer {
    /// The node's status.
    pub status: Status,
    /// Its timeline, oldest first.
    pub timeline: Vec<Event>,
}

/// Why a node gave no answer to act on. The texts are short, to stand beside the node's name
/// in a report.
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    /// No such node in the configuration.
    #[error("no node {node} in the configuration; the farm's nodes are {known}")]
    UnknownNode {
        /// The name asked for.
        node: String,
        /// The configured names.
        known: String,
    },
    /// Nothing listens on the node's farm port.
    #[error("connection refused: is herd running there?")]
    ConnectionRefused,
    /// No connection or no answer in time.
    #[error("no answer within {}", seconds(*.0))]
    Timeout(Duration),
    /// The connection failed otherwise.
    #[error("cannot reach it: {0}")]
    Unreachable(std::io::Error),
    /// The node closed the connection without a reply: its gate refused the command, and
    /// says why in its log.
    #[error(
        "refused our command: wrong farm key or configuration, or clocks apart? (its log says why)"
    )]
    NoReply,
    /// The reply does not verify.
    #[error("its reply does not verify: {0} (wrong farm key?)")]
    BadReply(FrameError),
    /// The reply verifies but is not the answer to this command from this node.
    #[error("its reply is not the answer to our command: {0}")]
    Mismatch(&'static str),
    /// The node could not carry the command out.
    #[error("it could not carry the command out: {0}")]
    Failed(String),
    /// The answer's body is not what was asked for.
    #[error("unreadable answer: {0}")]
    Body(String),
}

/// `duration` as an operator reads it: `1.5 s`, `5 s`.
fn seconds(duration: Duration) -> String {
    format!("{} s", duration.as_secs_f64())
}

/// One node's client of the farm channel.
#[derive(Debug)]
pub struct FarmClient {
    keys: Keyring,
    farm: [u8; 32],
    /// This node's index among `nodes`.
    local: usize,
    /// This daemon's incarnation: the targets' replay guards key on it.
    incarnation: u64,
    /// Every node's name and farm address (its address and the farm port), in configuration
    /// order.
    nodes: Vec<(String, SocketAddr)>,
    /// The last sequence number used in this incarnation.
    sequence: AtomicU64,
}

impl FarmClient {
    /// The client of node `local` among `nodes` (every node's name and farm address, in
    /// configuration order), signing with `keys` for the farm whose configuration digest is
    /// `farm`, in this daemon's `incarnation`.
    pub fn new(
        keys: Keyring,
        farm: [u8; 32],
        nodes: Vec<(String, SocketAddr)>,
        local: usize,
        incarnation: u64,
    ) -> Self {
        Self {
            keys,
            farm,
            local,
            incarnation,
            nodes,
            sequence: AtomicU64::new(0),
        }
    }

    /// This node's name.
    pub fn name(&self) -> &str {
        &self.nodes[self.local].0
    }

    /// This node's index among [`FarmClient::nodes`].
    pub fn local(&self) -> usize {
        self.local
    }

    /// Every node's name and farm address, in configuration order.
    pub fn nodes(&self) -> &[(String, SocketAddr)] {
        &self.nodes
    }

    /// Asks node `node` for `ask` on behalf of `origin` (who asked, for both nodes' logs;
    /// cut to [`MAX_ORIGIN`] bytes), waiting up to [`CONNECT_TIMEOUT`] for the connection
    /// and [`IO_TIMEOUT`] for the answer.
    pub fn ask(&self, node: &str, ask: Ask, origin: &str) -> Result<Answer, AskError> {
        let index = self.index(node)?;
        if ask != Ask::Status {
            tracing::info!(node, command = %ask.action(), origin, "carrying a farm command");
        }
        let deadline = Instant::now() + CONNECT_TIMEOUT + IO_TIMEOUT;
        self.ask_until(index, ask, origin, deadline, None)
    }

    /// Every node's status and timeline, asked of all at once on behalf of `origin`; a node
    /// that does not answer within [`REPORT_TIMEOUT`] has an `error` saying why.
    pub fn report(&self, origin: &str) -> FarmReport {
        let deadline = Instant::now() + REPORT_TIMEOUT;
        let nodes = std::thread::scope(|scope| {
            let asking: Vec<_> = (0..self.nodes.len())
                .map(|index| {
                    scope.spawn(move || {
                        self.ask_until(index, Ask::Status, origin, deadline, Some(REPORT_TIMEOUT))
                    })
                })
                .collect();
            asking
                .into_iter()
                .zip(&self.nodes)
                .map(|(thread, (name, address))| {
                    let answer = thread
                        .join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                    match answer {
                        Ok(Answer::Status(report)) => *report,
                        Ok(Answer::Reply(_)) => {
                            unanswered(name, *address, "answered another question".into())
                        }
                        Err(error) => unanswered(name, *address, error.to_string()),
                    }
                })
                .collect()
        });
        FarmReport {
            gathered_by: self.name().to_owned(),
            at_ms: wall_ms(),
            nodes,
        }
    }

    fn index(&self, node: &str) -> Result<usize, AskError> {
        self.nodes
            .iter()
            .position(|(name, _)| name == node)
            .ok_or_else(|| AskError::UnknownNode {
                node: node.to_owned(),
                known: self
                    .nodes
                    .iter()
                    .map(|(name, _)| name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// A connection to `address` from this node's own address: left to itself, the kernel
    /// would pick a VIP as the source for an IPv6 node in the VIP's prefix (a `/128` VIP
    /// matches longer than the node's `/64`), and the target's answer would go to its own VIP.
    fn connect(&self, address: &SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
        let socket = Socket::new(Domain::for_address(*address), Type::STREAM, None)?;
        socket.bind(&SocketAddr::new(self.nodes[self.local].1.ip(), 0).into())?;
        socket.connect_timeout(&(*address).into(), timeout)?;
        Ok(socket.into())
    }

    /// Asks node `index` for `ask`, giving up at `deadline`; a timeout is reported as
    /// `overall` when given, else as the phase's own timeout.
    fn ask_until(
        &self,
        index: usize,
        ask: Ask,
        origin: &str,
        deadline: Instant,
        overall: Option<Duration>,
    ) -> Result<Answer, AskError> {
        let (name, address) = &self.nodes[index];
        let sequence = self.sequence.fetch_add(1, Ordering::Relaxed) + 1;
        let command = Command {
            farm: self.farm,
            sender: self.name().to_owned(),
            incarnation: self.incarnation,
            sequence,
            sent_ms: wall_ms(),
            target: name.clone(),
            action: ask.action(),
            origin: cut(origin, MAX_ORIGIN).to_owned(),
        };
        let frame = command
            .encode(&self.keys)
            .ok_or(AskError::Mismatch("our command does not fit its frame"))?;
        let timeout = |phase: Duration| AskError::Timeout(overall.unwrap_or(phase));
        let left = |phase: Duration| {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                Err(timeout(phase))
            } else {
                Ok(left.min(phase))
            }
        };
        let io_error = |error: std::io::Error, phase: Duration| match error.kind() {
            ErrorKind::WouldBlock | ErrorKind::TimedOut => timeout(phase),
            ErrorKind::ConnectionRefused => AskError::ConnectionRefused,
            ErrorKind::ConnectionReset | ErrorKind::UnexpectedEof | ErrorKind::BrokenPipe => {
                AskError::NoReply
            }
            _ => AskError::Unreachable(error),
        };
        let mut stream = self
            .connect(address, left(CONNECT_TIMEOUT)?)
            .map_err(|error| io_error(error, CONNECT_TIMEOUT))?;
        let io = |stream: &mut TcpStream| -> Result<Option<Vec<u8>>, AskError> {
            let _ = stream.set_nodelay(true);
            stream
                .set_write_timeout(Some(left(IO_TIMEOUT)?))
                .map_err(AskError::Unreachable)?;
            farm_frame::write(stream, &frame).map_err(|error| io_error(error, IO_TIMEOUT))?;
            // The whole reply by the deadline, however slowly it comes.
            let at = Instant::now() + left(IO_TIMEOUT)?;
            farm_frame::read(&mut farm_frame::Deadline { stream, at }, MAX_REPLY)
                .map_err(|error| io_error(error, IO_TIMEOUT))
        };
        let frame = io(&mut stream)?.ok_or(AskError::NoReply)?;
        let reply = command::Reply::decode(&frame, &self.keys).map_err(AskError::BadReply)?;
        if reply.farm != self.farm {
            return Err(AskError::Mismatch("it runs another farm configuration"));
        }
        if reply.sender != *name {
            return Err(AskError::Mismatch("another node answered"));
        }
        if (reply.incarnation, reply.sequence) != (self.incarnation, sequence) {
            return Err(AskError::Mismatch("it answers another command"));
        }
        if reply.outcome == Outcome::Failed {
            let why = serde_json::from_str::<String>(&reply.body).unwrap_or(reply.body);
            return Err(AskError::Failed(why));
        }
        let body = |error: serde_json::Error| AskError::Body(error.to_string());
        Ok(match ask {
            Ask::Status => {
                let answer: StatusAnswer = serde_json::from_str(&reply.body).map_err(body)?;
                Answer::Status(Box::new(NodeReport {
                    name: name.clone(),
                    address: *address,
                    status: Some(answer.status),
                    timeline: answer.timeline,
                    error: None,
                }))
            }
            Ask::Command(_) => Answer::Reply(serde_json::from_str(&reply.body).map_err(body)?),
        })
    }
}

/// The report of node `name` at `address`, which did not answer, and why.
fn unanswered(name: &str, address: SocketAddr, error: String) -> NodeReport {
    NodeReport {
        name: name.to_owned(),
        address,
        status: None,
        timeline: Vec::new(),
        error: Some(error),
    }
}

/// The longest start of `text` of at most `limit` bytes that ends on a character boundary.
fn cut(text: &str, limit: usize) -> &str {
    let mut end = text.len().min(limit);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::net::TcpListener;

    use super::*;

    const KEYS: &str = "1 000102030405060708090a0b0c0d0e0f\n";
    const FARM: [u8; 32] = [5; 32];

    fn keys() -> Keyring {
        Keyring::parse(KEYS).unwrap()
    }

    /// A client of node `alpha` in a farm of `alpha` and `bravo`, bravo at `bravo`.
    fn client(bravo: SocketAddr) -> FarmClient {
        let alpha = "127.0.0.1:9".parse().unwrap();
        let nodes = vec![("alpha".into(), alpha), ("bravo".into(), bravo)];
        FarmClient::new(keys(), FARM, nodes, 0, 77)
    }

    /// Serves one connection on `listener` as `answer` says, from the command received.
    fn serve_one(listener: &TcpListener, answer: impl FnOnce(Command) -> Option<command::Reply>) {
        let (mut stream, _) = listener.accept().unwrap();
        let frame = farm_frame::read(&mut stream, command::MAX_COMMAND)
            .unwrap()
            .unwrap();
        let command = Command::decode(&frame, &keys()).unwrap();
        if let Some(reply) = answer(command) {
            farm_frame::write(&mut stream, &reply.encode(&keys()).unwrap()).unwrap();
        }
    }

    fn reply_to(command: &Command, body: &str) -> command::Reply {
        command::Reply {
            farm: FARM,
            sender: command.target.clone(),
            incarnation: command.incarnation,
            sequence: command.sequence,
            outcome: Outcome::Done,
            body: body.into(),
        }
    }

    #[test]
    fn a_command_is_signed_numbered_and_its_verified_reply_returned() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = client(listener.local_addr().unwrap());
        std::thread::scope(|scope| {
            scope.spawn(|| {
                for expected in 1..=2 {
                    serve_one(&listener, |command| {
                        assert_eq!(command.sender, "alpha");
                        assert_eq!(command.target, "bravo");
                        assert_eq!(command.action, Action::Drain);
                        assert_eq!((command.incarnation, command.sequence), (77, expected));
                        assert_eq!(command.origin.len(), MAX_ORIGIN, "cut to the limit");
                        Some(reply_to(&command, r#"{"done":"draining"}"#))
                    });
                }
            });
            let origin = "é".repeat(MAX_ORIGIN);
            for _ in 0..2 {
                let answer = client
                    .ask("bravo", Ask::Command(FarmCommand::Drain), &origin)
                    .unwrap();
                assert!(matches!(answer, Answer::Reply(Reply::Done(text)) if text == "draining"));
            }
        });
    }

    #[test]
    fn a_reply_that_is_not_the_answer_is_refused() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = client(listener.local_addr().unwrap());
        type Change = fn(&mut command::Reply);
        let cases: [(Change, &str); 4] = [
            (|reply| reply.sequence += 1, "it answers another command"),
            (
                |reply| reply.farm = [6; 32],
                "it runs another farm configuration",
            ),
            (
                |reply| reply.sender = "alpha".into(),
                "another node answered",
            ),
            (
                |reply| {
                    reply.outcome = Outcome::Failed;
                    reply.body = r#""herd is stopping""#.into();
                },
                "it could not carry the command out: herd is stopping",
            ),
        ];
        for (change, expected) in cases {
            std::thread::scope(|scope| {
                scope.spawn(|| {
                    serve_one(&listener, |command| {
                        let mut reply = reply_to(&command, r#"{"done":"x"}"#);
                        change(&mut reply);
                        Some(reply)
                    })
                });
                let error = client
                    .ask("bravo", Ask::Command(FarmCommand::Stop), "test")
                    .unwrap_err();
                assert!(error.to_string().ends_with(expected), "{error}");
            });
        }
    }

    #[test]
    fn a_node_that_refuses_or_is_not_there_is_said_so() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let asking = client(listener.local_addr().unwrap());
        std::thread::scope(|scope| {
            scope.spawn(|| serve_one(&listener, |_| None));
            let error = asking.ask("bravo", Ask::Status, "test").unwrap_err();
            assert!(matches!(error, AskError::NoReply), "{error}");
        });
        let error = asking.ask("charlie", Ask::Status, "test").unwrap_err();
        assert_eq!(
            error.to_string(),
            "no node charlie in the configuration; the farm's nodes are alpha, bravo"
        );
        let address = listener.local_addr().unwrap();
        drop(listener);
        let gone = client(address);
        let error = gone.ask("bravo", Ask::Status, "t").unwrap_err();
        assert_eq!(
            error.to_string(),
            "connection refused: is herd running there?"
        );
    }

    #[test]
    fn a_report_marks_the_nodes_that_do_not_answer_in_time() {
        // Bravo accepts (the kernel does, from the backlog) but never answers; alpha is not
        // there at all.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = client(listener.local_addr().unwrap());
        let started = Instant::now();
        let report = client.report("test");
        let took = started.elapsed();
        assert!(
            took >= REPORT_TIMEOUT && took < REPORT_TIMEOUT + Duration::from_millis(500),
            "{took:?}"
        );
        assert_eq!(report.gathered_by, "alpha");
        let errors: Vec<_> = report
            .nodes
            .iter()
            .map(|node| (node.name.as_str(), node.error.as_deref()))
            .collect();
        assert_eq!(
            errors,
            [
                ("alpha", Some("connection refused: is herd running there?")),
                ("bravo", Some("no answer within 1.5 s")),
            ]
        );
        drop(listener);
    }

    #[test]
    fn a_reply_that_trickles_in_is_given_up_on_at_the_deadline() {
        // Bravo sends a byte of a long reply every 100 ms: each read is quick, the whole is not.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = client(listener.local_addr().unwrap());
        let started = Instant::now();
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let (mut stream, _) = listener.accept().unwrap();
                farm_frame::read(&mut stream, command::MAX_COMMAND).unwrap();
                let _ = stream.write_all(&1000u32.to_be_bytes());
                for _ in 0..100 {
                    if stream.write_all(b"x").is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
            let report = client.report("test");
            let took = started.elapsed();
            assert!(
                took < REPORT_TIMEOUT + Duration::from_millis(500),
                "{took:?}"
            );
            assert_eq!(
                report.nodes[1].error.as_deref(),
                Some("no answer within 1.5 s")
            );
        });
    }
}
