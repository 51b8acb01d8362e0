//! The farm's commands: what one node asks of another over the farm's TCP channel (where it
//! stands, drain, stop, start, restart) and the signed reply, their byte layouts, and the gate
//! every received command passes. A command is signed with the farm key like a heartbeat and
//! passes the same checks as one in [`crate::inbox`] (authenticated, from this farm, from a
//! configured node, fresh, not a replay), and one more: it names this node as its target.
//! Decoding checks the tag before it reads a single field and never panics.
//!
//! The command:
//!
//! ```text
//! offset  size  field
//!      0     4  magic "HERC"
//!      4     1  version (1)
//!      5     1  key id: which farm key made the tag
//!      6    32  farm digest: SHA-256 of the configuration every node must share
//!     38     1  sender name length n (1-63)
//!     39     n  sender's node name ([A-Za-z0-9_.-])
//!              then, big-endian:
//!              8  incarnation of the sender's daemon
//!              8  sequence number, from 1 in each incarnation
//!              8  send time, ms since the Unix epoch (freshness)
//!              1  target name length t (1-63)
//!              t  target's node name
//!              1  action: 0 status, 1 drain, 2 stop, 3 start, 4 restart
//!              1  origin length o (0-128)
//!              o  origin: who asked, UTF-8 (for both nodes' logs)
//!             16  tag: HMAC-SHA256 of everything above, truncated
//! ```
//!
//! The reply:
//!
//! ```text
//! offset  size  field
//!      0     4  magic "HERR"
//!      4     1  version (1)
//!      5     1  key id
//!      6    32  farm digest
//!     38     1  sender name length n (1-63)
//!     39     n  the replying node's name
//!              then, big-endian:
//!              8  incarnation of the command answered
//!              8  sequence number of the command answered
//!              1  outcome: 0 done (the body is the answer), 1 failed (the body says why)
//!              4  body length b (0-262144)
//!              b  body: JSON, UTF-8
//!             16  tag: HMAC-SHA256 of everything above, truncated
//! ```

use crate::auth::{Keyring, Replay, ReplayGuard, TAG_LEN};
use crate::inbox::FRESHNESS_MS;
use crate::wire::MAX_NAME;

/// The first bytes of every command.
pub const COMMAND_MAGIC: [u8; 4] = *b"HERC";
/// The first bytes of every reply.
pub const REPLY_MAGIC: [u8; 4] = *b"HERR";
/// The layouts' version.
pub const VERSION: u8 = 1;
/// The longest origin: a user and a host, or a console session, fit.
pub const MAX_ORIGIN: usize = 128;
/// The largest reply body: a node's status and timeline fit many times over.
pub const MAX_BODY: usize = 256 * 1024;
/// The largest command: every field at its largest fits.
pub const MAX_COMMAND: usize = 512;
/// The largest reply.
pub const MAX_REPLY: usize = MAX_BODY + 256;

/// Bytes before the sender's name, in both frames: magic, version, key id, digest, length.
const HEAD_LEN: usize = 4 + 1 + 1 + 32 + 1;
/// The fixed bytes of a command after the sender's name.
const COMMAND_FIXED: usize = 8 + 8 + 8 + 1 + 1 + 1;
/// The fixed bytes of a reply after the sender's name.
const REPLY_FIXED: usize = 8 + 8 + 1 + 4;

/// What a command asks of its target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Where the node stands: its status and timeline.
    Status,
    /// Take no new connection, keep the old ones and the application.
    Drain,
    /// Leave with a drain, then run the stop script.
    Stop,
    /// Start a stopped, failed or drained node.
    Start,
    /// Stop, then start.
    Restart,
}

impl Action {
    /// Every action, in the order of their wire bytes.
    pub const ALL: [Action; 5] = [
        Action::Status,
        Action::Drain,
        Action::Stop,
        Action::Start,
        Action::Restart,
    ];

    fn byte(self) -> u8 {
        match self {
            Action::Status => 0,
            Action::Drain => 1,
            Action::Stop => 2,
            Action::Start => 3,
            Action::Restart => 4,
        }
    }

    fn from_byte(byte: u8) -> Option<Self> {
        Action::ALL.into_iter().find(|action| action.byte() == byte)
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Action::Status => "status",
            Action::Drain => "drain",
            Action::Stop => "stop",
            Action::Start => "start",
            Action::Restart => "restart",
        })
    }
}

/// One command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    /// The farm digest of the sender's configuration.
    pub farm: [u8; 32],
    /// The sender's node name.
    pub sender: String,
    /// The sender daemon's incarnation.
    pub incarnation: u64,
    /// The command's number in that incarnation, from 1.
    pub sequence: u64,
    /// When it was sent, ms since the Unix epoch by the sender's clock.
    pub sent_ms: u64,
    /// The node it is for.
    pub target: String,
    /// What it asks.
    pub action: Action,
    /// Who asked, for the logs: at most [`MAX_ORIGIN`] bytes.
    pub origin: String,
}

/// How a command went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Carried out (or refused by the node's own rules): the body is the answer.
    Done,
    /// The node could not carry it out (it is stopping): the body says why.
    Failed,
}

/// A node's reply to one command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The farm digest of the replying node's configuration.
    pub farm: [u8; 32],
    /// The replying node's name.
    pub sender: String,
    /// The incarnation of the command answered.
    pub incarnation: u64,
    /// The sequence number of the command answered.
    pub sequence: u64,
    /// How it went.
    pub outcome: Outcome,
    /// The answer, JSON: at most [`MAX_BODY`] bytes.
    pub body: String,
}

/// Why bytes are not a command or a reply to act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Shorter than the smallest frame.
    #[error("{0} bytes: shorter than any frame of its kind")]
    TooShort(usize),
    /// Longer than the largest frame.
    #[error("{got} bytes: longer than any frame of its kind ({limit})")]
    TooLong {
        /// Its length.
        got: usize,
        /// The largest.
        limit: usize,
    },
    /// Not a herd command or reply.
    #[error("not a herd command or reply (wrong magic)")]
    Magic,
    /// A layout this node does not know.
    #[error("version {0}; this herd reads version {VERSION}")]
    Version(u8),
    /// Made with a key this node does not have.
    #[error("made with key id {0}, which is not in this node's key file")]
    UnknownKey(u8),
    /// The tag does not match: a wrong key, or altered on the way.
    #[error("authentication failed (a different key, or altered on the way)")]
    Tag,
    /// The fields do not add up to the frame's length.
    #[error("the fields do not fit the frame")]
    Length,
    /// A node name that breaks the configuration's rules.
    #[error("invalid node name")]
    Name,
    /// An unknown action.
    #[error("unknown action {0}")]
    Action(u8),
    /// An origin too long or not UTF-8.
    #[error("the origin is longer than {MAX_ORIGIN} bytes or not UTF-8")]
    Origin,
    /// An unknown outcome.
    #[error("unknown outcome {0}")]
    Outcome(u8),
    /// A body too long or not UTF-8.
    #[error("the body is longer than {MAX_BODY} bytes or not UTF-8")]
    Body,
}

impl FrameError {
    /// Whether the frame failed authentication (rather than being malformed).
    pub fn is_forgery(&self) -> bool {
        matches!(self, FrameError::Tag | FrameError::UnknownKey(_))
    }
}

impl Command {
    /// The frame, tagged with `keys`' signing key. `None` if a field breaks the layout's
    /// limits (a name or the origin too long), which a node of a valid configuration never
    /// produces for names; callers shorten the origin first.
    pub fn encode(&self, keys: &Keyring) -> Option<Vec<u8>> {
        if !valid_name(self.sender.as_bytes())
            || !valid_name(self.target.as_bytes())
            || self.origin.len() > MAX_ORIGIN
        {
            return None;
        }
        let mut out = head(COMMAND_MAGIC, keys, &self.farm, &self.sender);
        for word in [self.incarnation, self.sequence, self.sent_ms] {
            out.extend_from_slice(&word.to_be_bytes());
        }
        out.push(self.target.len() as u8);
        out.extend_from_slice(self.target.as_bytes());
        out.push(self.action.byte());
        out.push(self.origin.len() as u8);
        out.extend_from_slice(self.origin.as_bytes());
        Some(signed(out, keys))
    }

    /// Reads a command: the tag is checked with the key it names before any field is read.
    pub fn decode(frame: &[u8], keys: &Keyring) -> Result<Self, FrameError> {
        let smallest = HEAD_LEN + 1 + COMMAND_FIXED + 1 + TAG_LEN;
        let mut reader = Reader::authenticated(frame, keys, COMMAND_MAGIC, smallest, MAX_COMMAND)?;
        let farm = reader.take::<32>()?;
        let sender = reader.name()?;
        let incarnation = reader.u64()?;
        let sequence = reader.u64()?;
        let sent_ms = reader.u64()?;
        let target = reader.name()?;
        let byte = reader.u8()?;
        let action = Action::from_byte(byte).ok_or(FrameError::Action(byte))?;
        let origin_len = usize::from(reader.u8()?);
        if origin_len > MAX_ORIGIN {
            return Err(FrameError::Origin);
        }
        let origin = reader.bytes(origin_len)?;
        let origin = String::from_utf8(origin.to_vec()).map_err(|_| FrameError::Origin)?;
        reader.end()?;
        Ok(Command {
            farm,
            sender,
            incarnation,
            sequence,
            sent_ms,
            target,
            action,
            origin,
        })
    }
}

impl Reply {
    /// The frame, tagged with `keys`' signing key. `None` if the name or the body is too long.
    pub fn encode(&self, keys: &Keyring) -> Option<Vec<u8>> {
        if !valid_name(self.sender.as_bytes()) || self.body.len() > MAX_BODY {
            return None;
        }
        let mut out = head(REPLY_MAGIC, keys, &self.farm, &self.sender);
        out.extend_from_slice(&self.incarnation.to_be_bytes());
        out.extend_from_slice(&self.sequence.to_be_bytes());
        out.push(match self.outcome {
            Outcome::Done => 0,
            Outcome::Failed => 1,
        });
        out.extend_from_slice(&(self.body.len() as u32).to_be_bytes());
        out.extend_from_slice(self.body.as_bytes());
        Some(signed(out, keys))
    }

    /// Reads a reply: the tag is checked with the key it names before any field is read.
    pub fn decode(frame: &[u8], keys: &Keyring) -> Result<Self, FrameError> {
        let smallest = HEAD_LEN + 1 + REPLY_FIXED + TAG_LEN;
        let mut reader = Reader::authenticated(frame, keys, REPLY_MAGIC, smallest, MAX_REPLY)?;
        let farm = reader.take::<32>()?;
        let sender = reader.name()?;
        let incarnation = reader.u64()?;
        let sequence = reader.u64()?;
        let outcome = match reader.u8()? {
            0 => Outcome::Done,
            1 => Outcome::Failed,
            other => return Err(FrameError::Outcome(other)),
        };
        let body_len = u32::from_be_bytes(reader.take()?) as usize;
        if body_len > MAX_BODY {
            return Err(FrameError::Body);
        }
        let body = reader.bytes(body_len)?;
        let body = String::from_utf8(body.to_vec()).map_err(|_| FrameError::Body)?;
        reader.end()?;
        Ok(Reply {
            farm,
            sender,
            incarnation,
            sequence,
            outcome,
            body,
        })
    }
}

/// Whether `name` follows the configuration's rules for node names.
fn valid_name(name: &[u8]) -> bool {
    let valid = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-');
    !name.is_empty() && name.len() <= MAX_NAME && name.iter().all(valid)
}

/// The fields both frames begin with.
fn head(magic: [u8; 4], keys: &Keyring, farm: &[u8; 32], sender: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(&magic);
    out.push(VERSION);
    out.push(keys.signing().id);
    out.extend_from_slice(farm);
    out.push(sender.len() as u8);
    out.extend_from_slice(sender.as_bytes());
    out
}

/// `frame` with its tag appended.
fn signed(mut frame: Vec<u8>, keys: &Keyring) -> Vec<u8> {
    let tag = keys.signing().tag(&frame);
    frame.extend_from_slice(&tag);
    frame
}

/// Reads the fields of an authenticated frame in order.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    /// Checks the length, magic, version and tag of `frame`, then reads from after the key id.
    fn authenticated(
        frame: &'a [u8],
        keys: &Keyring,
        magic: [u8; 4],
        smallest: usize,
        largest: usize,
    ) -> Result<Self, FrameError> {
        if frame.len() < smallest {
            return Err(FrameError::TooShort(frame.len()));
        }
        if frame.len() > largest {
            return Err(FrameError::TooLong {
                got: frame.len(),
                limit: largest,
            });
        }
        if frame[..4] != magic {
            return Err(FrameError::Magic);
        }
        if frame[4] != VERSION {
            return Err(FrameError::Version(frame[4]));
        }
        let key = keys.key(frame[5]).ok_or(FrameError::UnknownKey(frame[5]))?;
        let (signed, tag) = frame.split_at(frame.len() - TAG_LEN);
        if !key.verify(signed, tag) {
            return Err(FrameError::Tag);
        }
        Ok(Reader {
            bytes: signed,
            at: 6,
        })
    }

    fn bytes(&mut self, len: usize) -> Result<&'a [u8], FrameError> {
        let end = self.at.checked_add(len).ok_or(FrameError::Length)?;
        let bytes = self.bytes.get(self.at..end).ok_or(FrameError::Length)?;
        self.at = end;
        Ok(bytes)
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N], FrameError> {
        let bytes = self.bytes(N)?;
        bytes.try_into().map_err(|_| FrameError::Length)
    }

    fn u8(&mut self) -> Result<u8, FrameError> {
        Ok(self.take::<1>()?[0])
    }

    fn u64(&mut self) -> Result<u64, FrameError> {
        Ok(u64::from_be_bytes(self.take()?))
    }

    fn name(&mut self) -> Result<String, FrameError> {
        let len = usize::from(self.u8()?);
        let name = self.bytes(len)?;
        if !valid_name(name) {
            return Err(FrameError::Name);
        }
        String::from_utf8(name.to_vec()).map_err(|_| FrameError::Name)
    }

    /// Every byte read: nothing may follow the last field.
    fn end(&self) -> Result<(), FrameError> {
        if self.at == self.bytes.len() {
            Ok(())
        } else {
            Err(FrameError::Length)
        }
    }
}

/// Why a command was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Not a well-formed command.
    #[error("malformed command: {0}")]
    Malformed(FrameError),
    /// Failed authentication, or made with a key this node does not have.
    #[error("forged command: {0}")]
    Forged(FrameError),
    /// From a node whose configuration differs from this one's.
    #[error("command from node {name}, which runs a different farm configuration (digest {theirs}, ours {ours})")]
    WrongFarm {
        /// The sender's name.
        name: String,
        /// The first 12 hex digits of its digest.
        theirs: String,
        /// The first 12 hex digits of ours.
        ours: String,
    },
    /// From a name the configuration does not list.
    #[error("command from node {0}, which is not in the configuration")]
    UnknownNode(String),
    /// For another node.
    #[error("command from node {name} for node {target}, not this node")]
    WrongTarget {
        /// The sender's name.
        name: String,
        /// The node it was for.
        target: String,
    },
    /// Sent too long ago, or in the future, by this node's clock.
    #[error("command from node {name} sent {skew_ms} ms away from this node's clock (more than {FRESHNESS_MS}): replayed, or the clocks disagree")]
    Stale {
        /// The sender's name.
        name: String,
        /// How far its send time is from now, either way.
        skew_ms: u64,
    },
    /// Seen before.
    #[error("command from node {name} replayed: {replay}")]
    Replayed {
        /// The sender's name.
        name: String,
        /// What gave it away.
        replay: Replay,
    },
    /// Sent before this node's herd started: the replay windows of the herd before it are
    /// gone, so a command recorded then would otherwise pass again for the rest of its
    /// freshness.
    #[error("command from node {name} sent {early_ms} ms before this node's herd started: replayed, or the clocks disagree")]
    BeforeStart {
        /// The sender's name.
        name: String,
        /// How long before the start it was sent.
        early_ms: u64,
    },
}

impl Refusal {
    /// The reason's name, as the counters and the metrics label it.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Malformed(_) => "malformed",
            Refusal::Forged(_) => "forged",
            Refusal::WrongFarm { .. } => "wrong_farm",
            Refusal::UnknownNode(_) => "unknown_node",
            Refusal::WrongTarget { .. } => "wrong_target",
            Refusal::Stale { .. } => "stale",
            Refusal::Replayed { .. } | Refusal::BeforeStart { .. } => "replayed",
        }
    }
}

/// How many commands were refused, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Refused {
    /// Not a well-formed command.
    pub malformed: u64,
    /// Failed authentication, or made with an unknown key.
    pub forged: u64,
    /// From another farm configuration.
    pub wrong_farm: u64,
    /// From a node the configuration does not list.
    pub unknown_node: u64,
    /// For another node.
    pub wrong_target: u64,
    /// Too old or too far in the future.
    pub stale: u64,
    /// Replays.
    pub replayed: u64,
}

impl Refused {
    /// Each count with the name of its reason, as the metrics label them (the field's name).
    /// The pattern names every field, so a new reason cannot be left out.
    pub fn by_reason(&self) -> [(&'static str, u64); 7] {
        let Refused {
            malformed,
            forged,
            wrong_farm,
            unknown_node,
            wrong_target,
            stale,
            replayed,
        } = *self;
        [
            ("malformed", malformed),
            ("forged", forged),
            ("wrong_farm", wrong_farm),
            ("unknown_node", unknown_node),
            ("wrong_target", wrong_target),
            ("stale", stale),
            ("replayed", replayed),
        ]
    }

    fn count(&mut self, refusal: &Refusal) {
        let counter = match refusal {
            Refusal::Malformed(_) => &mut self.malformed,
            Refusal::Forged(_) => &mut self.forged,
            Refusal::WrongFarm { .. } => &mut self.wrong_farm,
            Refusal::UnknownNode(_) => &mut self.unknown_node,
            Refusal::WrongTarget { .. } => &mut self.wrong_target,
            Refusal::Stale { .. } => &mut self.stale,
            Refusal::Replayed { .. } | Refusal::BeforeStart { .. } => &mut self.replayed,
        };
        *counter += 1;
    }
}

/// The gate of one node's farm commands. Its replay guards are its own, apart from the
/// heartbeats': a command's sequence numbers are counted by the sender's farm client.
#[derive(Debug)]
pub struct CommandGate {
    keys: Keyring,
    farm: [u8; 32],
    /// The configured nodes' names, by index.
    nodes: Vec<String>,
    /// This node's index.
    local: usize,
    /// When the gate opened, in ms since the Unix epoch: commands sent earlier are refused.
    opened_ms: u64,
    /// One replay guard per configured node (this one too: a node asks itself as any other).
    guards: Vec<ReplayGuard>,
    refused: Refused,
}

impl CommandGate {
    /// The gate of node `local` among `nodes` (the configuration's names, in order), in the
    /// farm whose configuration digest is `farm`, checking tags with `keys`, opened at
    /// `opened_ms` (ms since the Unix epoch; the daemon's start). Its replay windows start
    /// empty, so it refuses every command sent before it opened: a command recorded before a
    /// restart of herd cannot pass again after it.
    pub fn new(
        keys: Keyring,
        farm: [u8; 32],
        nodes: Vec<String>,
        local: usize,
        opened_ms: u64,
    ) -> Self {
        let guards = vec![ReplayGuard::default(); nodes.len()];
        Self {
            keys,
            farm,
            nodes,
            local,
            opened_ms,
            guards,
            refused: Refused::default(),
        }
    }

    /// Lets `frame`, received at `now_ms` (ms since the Unix epoch), through as a command of
    /// the node at the returned index, or refuses it (and counts the refusal). Nothing refused
    /// moves a replay window.
    pub fn accept(&mut self, frame: &[u8], now_ms: u64) -> Result<(usize, Command), Refusal> {
        let result = self.check(frame, now_ms);
        if let Err(refusal) = &result {
            self.refused.count(refusal);
        }
        result
    }

    fn check(&mut self, frame: &[u8], now_ms: u64) -> Result<(usize, Command), Refusal> {
        let command = Command::decode(frame, &self.keys).map_err(|error| {
            if error.is_forgery() {
                Refusal::Forged(error)
            } else {
                Refusal::Malformed(error)
            }
        })?;
        if command.farm != self.farm {
            return Err(Refusal::WrongFarm {
                name: command.sender,
                theirs: hex::encode(&command.farm[..6]),
                ours: hex::encode(&self.farm[..6]),
            });
        }
        let Some(sender) = self.nodes.iter().position(|name| *name == command.sender) else {
            return Err(Refusal::UnknownNode(command.sender));
        };
        if command.target != self.nodes[self.local] {
            return Err(Refusal::WrongTarget {
                name: command.sender,
                target: command.target,
            });
        }
        let skew_ms = now_ms.abs_diff(command.sent_ms);
        if skew_ms > FRESHNESS_MS {
            return Err(Refusal::Stale {
                name: command.sender,
                skew_ms,
            });
        }
        if command.sent_ms < self.opened_ms {
            return Err(Refusal::BeforeStart {
                name: command.sender,
                early_ms: self.opened_ms - command.sent_ms,
            });
        }
        // Last, so that only a command that passed everything else moves the window.
        if let Err(replay) = self.guards[sender].accept(command.incarnation, command.sequence) {
            return Err(Refusal::Replayed {
                name: command.sender,
                replay,
            });
        }
        Ok((sender, command))
    }

    /// The refusals so far.
    pub fn refused(&self) -> Refused {
        self.refused
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const NOW: u64 = 1_790_000_000_000;
    const FARM: [u8; 32] = [3; 32];
    const KEYS: &str = "1 000102030405060708090a0b0c0d0e0f\n";

    fn keys() -> Keyring {
        Keyring::parse(KEYS).unwrap()
    }

    fn gate() -> CommandGate {
        let nodes = ["alpha", "bravo", "charlie"].map(String::from).to_vec();
        CommandGate::new(keys(), FARM, nodes, 0, NOW - 1_000)
    }

    fn command(sender: &str, sequence: u64) -> Command {
        Command {
            farm: FARM,
            sender: sender.into(),
            incarnation: NOW - 60_000,
            sequence,
            sent_ms: NOW,
            target: "alpha".into(),
            action: Action::Drain,
            origin: "root@bravo (uid 0)".into(),
        }
    }

    fn frame(command: &Command) -> Vec<u8> {
        command.encode(&keys()).unwrap()
    }

    fn reply() -> Reply {
        Reply {
            farm: FARM,
            sender: "alpha".into(),
            incarnation: NOW - 60_000,
            sequence: 7,
            outcome: Outcome::Done,
            body: r#"{"done":"draining"}"#.into(),
        }
    }

    #[test]
    fn commands_and_replies_round_trip() {
        for action in Action::ALL {
            let sent = Command {
                action,
                ..command("bravo", 1)
            };
            assert_eq!(Command::decode(&frame(&sent), &keys()), Ok(sent));
        }
        let largest = Command {
            sender: "s".repeat(MAX_NAME),
            target: "t".repeat(MAX_NAME),
            origin: "é".repeat(MAX_ORIGIN / 2),
            ..command("bravo", 1)
        };
        let bytes = frame(&largest);
        assert!(bytes.len() <= MAX_COMMAND, "{}", bytes.len());
        assert_eq!(Command::decode(&bytes, &keys()), Ok(largest));
        let too_long = Command {
            origin: "o".repeat(MAX_ORIGIN + 1),
            ..command("bravo", 1)
        };
        assert_eq!(too_long.encode(&keys()), None);

        for outcome in [Outcome::Done, Outcome::Failed] {
            let sent = Reply { outcome, ..reply() };
            let bytes = sent.encode(&keys()).unwrap();
            assert_eq!(Reply::decode(&bytes, &keys()), Ok(sent));
        }
        let largest = Reply {
            sender: "s".repeat(MAX_NAME),
            body: "b".repeat(MAX_BODY),
            ..reply()
        };
        let bytes = largest.encode(&keys()).unwrap();
        assert!(bytes.len() <= MAX_REPLY, "{}", bytes.len());
        assert_eq!(Reply::decode(&bytes, &keys()), Ok(largest));
        let too_long = Reply {
            body: "b".repeat(MAX_BODY + 1),
            ..reply()
        };
        assert_eq!(too_long.encode(&keys()), None);
    }

    #[test]
    fn a_command_is_not_a_reply_nor_a_heartbeat() {
        let bytes = frame(&command("bravo", 1));
        assert_eq!(Reply::decode(&bytes, &keys()), Err(FrameError::Magic));
        let reply = reply().encode(&keys()).unwrap();
        assert_eq!(Command::decode(&reply, &keys()), Err(FrameError::Magic));
    }

    #[test]
    fn every_altered_byte_fails_authentication_or_framing() {
        for bytes in [
            frame(&command("bravo", 1)),
            reply().encode(&keys()).unwrap(),
        ] {
            let is_command = bytes[..4] == COMMAND_MAGIC;
            for at in 0..bytes.len() {
                let mut altered = bytes.clone();
                altered[at] ^= 0x20;
                let error = if is_command {
                    Command::decode(&altered, &keys()).unwrap_err()
                } else {
                    Reply::decode(&altered, &keys()).unwrap_err()
                };
                let expected = match at {
                    0..4 => FrameError::Magic,
                    4 => FrameError::Version(VERSION ^ 0x20),
                    5 => FrameError::UnknownKey(1 ^ 0x20),
                    _ => FrameError::Tag,
                };
                assert_eq!(error, expected, "byte {at}");
            }
        }
    }

    /// `bytes` with their body rewritten by `change` and tagged again, as a holder of the key
    /// building a broken frame would send them.
    fn resigned(bytes: Vec<u8>, change: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut bytes = bytes;
        bytes.truncate(bytes.len() - TAG_LEN);
        change(&mut bytes);
        signed(bytes, &keys())
    }

    #[test]
    fn authenticated_but_broken_frames_are_refused() {
        let command_bytes = || frame(&command("bravo", 1));
        let action_at = HEAD_LEN + 5 + 24 + 1 + 5;
        let reply_bytes = || reply().encode(&keys()).unwrap();
        let outcome_at = HEAD_LEN + 5 + 16;
        let cases: Vec<(Vec<u8>, FrameError)> = vec![
            (
                resigned(command_bytes(), |b| b[HEAD_LEN] = b'!'),
                FrameError::Name,
            ),
            (
                resigned(command_bytes(), |b| b[HEAD_LEN - 1] = 0),
                FrameError::Name,
            ),
            (
                resigned(command_bytes(), |b| b[HEAD_LEN - 1] = 200),
                FrameError::Length,
            ),
            (
                resigned(command_bytes(), |b| b[action_at] = 5),
                FrameError::Action(5),
            ),
            (
                resigned(command_bytes(), |b| b[action_at + 1] = 200),
                FrameError::Origin,
            ),
            (
                resigned(command_bytes(), |b| b[action_at + 1] = 1),
                FrameError::Length,
            ),
            (resigned(command_bytes(), |b| b.push(0)), FrameError::Length),
        ];
        for (bytes, expected) in cases {
            assert_eq!(Command::decode(&bytes, &keys()), Err(expected));
        }
        let cases: Vec<(Vec<u8>, FrameError)> = vec![
            (
                resigned(reply_bytes(), |b| b[outcome_at] = 2),
                FrameError::Outcome(2),
            ),
            (
                resigned(reply_bytes(), |b| b[outcome_at + 1] = 0xff),
                FrameError::Body,
            ),
            (
                resigned(reply_bytes(), |b| b[outcome_at + 4] += 1),
                FrameError::Length,
            ),
            (
                resigned(reply_bytes(), |b| {
                    let last = b.len() - 1;
                    b[last] = 0xff
                }),
                FrameError::Body,
            ),
        ];
        for (bytes, expected) in cases {
            assert_eq!(Reply::decode(&bytes, &keys()), Err(expected));
        }
    }

    #[test]
    fn a_command_from_a_configured_node_for_this_one_passes_once() {
        let mut gate = gate();
        let sent = frame(&command("bravo", 1));
        assert_eq!(gate.accept(&sent, NOW + 3), Ok((1, command("bravo", 1))));
        assert_eq!(
            gate.accept(&sent, NOW + 5),
            Err(Refusal::Replayed {
                name: "bravo".into(),
                replay: Replay::Seen(1)
            })
        );
        assert_eq!(
            gate.accept(&frame(&command("alpha", 1)), NOW),
            Ok((0, command("alpha", 1))),
            "a node asks itself as any other"
        );
        assert_eq!(gate.refused().replayed, 1);
    }

    #[test]
    fn a_command_sent_before_the_gate_opened_is_a_replay_across_a_restart() {
        let nodes = ["alpha", "bravo", "charlie"].map(String::from).to_vec();
        // The herd before this one took `sent`; this one started 2 ms after it was sent, with
        // empty windows, and the frame is still fresh.
        let sent = frame(&command("bravo", 1));
        let mut restarted = CommandGate::new(keys(), FARM, nodes, 0, NOW + 2);
        assert_eq!(
            restarted.accept(&sent, NOW + 5),
            Err(Refusal::BeforeStart {
                name: "bravo".into(),
                early_ms: 2
            })
        );
        assert_eq!(restarted.refused().replayed, 1);
        let after_the_start = Command {
            sent_ms: NOW + 2,
            ..command("bravo", 2)
        };
        assert!(restarted.accept(&frame(&after_the_start), NOW + 5).is_ok());
    }

    #[test]
    fn each_refusal_is_named_and_counted_and_moves_no_window() {
        let mut gate = gate();
        // Bravo's latest incarnation is known: an older one is a replay.
        let mut later = command("bravo", 1);
        later.incarnation += 1;
        assert!(gate.accept(&frame(&later), NOW).is_ok());

        let flipped = {
            let mut bytes = frame(&command("charlie", 1));
            bytes[HEAD_LEN + 10] ^= 1;
            bytes
        };
        let other_key = Keyring::parse(&format!("1 {}", "ff".repeat(16))).unwrap();
        let forged = command("charlie", 1).encode(&other_key).unwrap();
        let unknown_id = Keyring::parse(&format!("9 {}", "ff".repeat(16))).unwrap();
        let unknown_id = command("charlie", 1).encode(&unknown_id).unwrap();
        let other_farm = Command {
            farm: [4; 32],
            ..command("charlie", 1)
        };
        let wrong_target = Command {
            target: "bravo".into(),
            ..command("charlie", 1)
        };
        let old = Command {
            sent_ms: NOW - FRESHNESS_MS - 1,
            ..command("charlie", 1)
        };
        let future = Command {
            sent_ms: NOW + FRESHNESS_MS + 1,
            ..command("charlie", 1)
        };
        let cases = [
            (b"HERC".to_vec(), "malformed"),
            (flipped, "forged"),
            (forged, "forged"),
            (unknown_id, "forged"),
            (frame(&other_farm), "wrong_farm"),
            (frame(&command("delta", 1)), "unknown_node"),
            (frame(&wrong_target), "wrong_target"),
            (frame(&old), "stale"),
            (frame(&future), "stale"),
            (frame(&command("bravo", 2)), "replayed"),
        ];
        for (bytes, reason) in &cases {
            let refusal = gate.accept(bytes, NOW).unwrap_err();
            assert_eq!(refusal.reason(), *reason, "{refusal}");
        }
        assert_eq!(
            gate.accept(&frame(&command("bravo", 2)), NOW),
            Err(Refusal::Replayed {
                name: "bravo".into(),
                replay: Replay::OldIncarnation {
                    got: NOW - 60_000,
                    latest: NOW - 59_999
                }
            })
        );
        assert_eq!(
            gate.refused(),
            Refused {
                malformed: 1,
                forged: 3,
                wrong_farm: 1,
                unknown_node: 1,
                wrong_target: 1,
                stale: 2,
                replayed: 2,
            }
        );
        // None of them moved charlie's window: its sequence 1 still passes, once.
        assert!(gate.accept(&frame(&command("charlie", 1)), NOW).is_ok());
        assert_eq!(gate.refused().replayed, 2);
        assert_eq!(
            gate.refused()
                .by_reason()
                .iter()
                .map(|(_, n)| n)
                .sum::<u64>(),
            11
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn any_bytes_decode_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..700)) {
            let _ = Command::decode(&bytes, &keys());
            let _ = Reply::decode(&bytes, &keys());
            let _ = gate().accept(&bytes, NOW);
        }

        #[test]
        fn altered_valid_frames_decode_without_panicking(
            at in 0usize..200,
            byte in any::<u8>(),
            cut in 0usize..200,
        ) {
            let mut bytes = frame(&command("bravo", 1));
            let len = bytes.len();
            bytes[at % len] = byte;
            bytes.truncate(len - cut % len);
            let _ = Command::decode(&bytes, &keys());
            let mut reply = reply().encode(&keys()).unwrap();
            let len = reply.len();
            reply[at % len] = byte;
            reply.truncate(len - cut % len);
            let _ = Reply::decode(&reply, &keys());
        }

        #[test]
        fn any_signed_fields_decode_without_panicking(
            fields in proptest::collection::vec(any::<u8>(), 0..600),
        ) {
            // Past the tag: what a holder of the key could send.
            for magic in [COMMAND_MAGIC, REPLY_MAGIC] {
                let mut bytes = magic.to_vec();
                bytes.extend_from_slice(&[VERSION, 1]);
                bytes.extend_from_slice(&fields);
                let bytes = signed(bytes, &keys());
                let _ = Command::decode(&bytes, &keys());
                let _ = Reply::decode(&bytes, &keys());
            }
        }
    }
}
