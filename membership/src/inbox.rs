//! The gate every received datagram passes before the protocol sees it: authenticated, from
//! this farm (same configuration digest), from another configured node, fresh, and not a
//! replay. Whatever fails is refused with the reason and counted; nothing refused changes any
//! state, so a forged or replayed datagram cannot move a sender's replay window either.

use crate::auth::{Keyring, Replay, ReplayGuard};
use crate::wire::{Heartbeat, WireError};

/// How far a heartbeat's send time may be from the receiver's clock, either way: the nodes'
/// clocks must agree this well (NTP keeps them far closer). Older heartbeats are refused, so a
/// recording replayed later is refused even by a node that has just started and has no
/// replay window for the sender yet.
pub const FRESHNESS_MS: u64 = 30_000;

/// Why a datagram was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Not a well-formed, authenticated heartbeat.
    #[error("{0}")]
    Wire(#[from] WireError),
    /// From a node whose configuration differs from this one's.
    #[error("node {name} runs a different farm configuration (digest {theirs}, ours {ours}): refused until both files are the same")]
    WrongFarm {
        /// The sender's name.
        name: String,
        /// The first 12 hex digits of its digest.
        theirs: String,
        /// The first 12 hex digits of ours.
        ours: String,
    },
    /// From a name the configuration does not list.
    #[error("node {0} is not in the configuration")]
    UnknownNode(String),
    /// Carrying this node's own name: a loop, or another host configured as this node.
    #[error(
        "a heartbeat with this node's own name ({0}): is another host configured as this node?"
    )]
    FromSelf(String),
    /// Sent too long ago, or in the future, by this node's clock.
    #[error("heartbeat of node {name} sent {skew_ms} ms away from this node's clock (more than {FRESHNESS_MS}): replayed, or the clocks disagree")]
    Stale {
        /// The sender's name.
        name: String,
        /// How far its send time is from now, either way.
        skew_ms: u64,
    },
    /// Seen before.
    #[error("heartbeat of node {name} replayed: {replay}")]
    Replayed {
        /// The sender's name.
        name: String,
        /// What gave it away.
        replay: Replay,
    },
}

impl Refusal {
    /// Whether the datagram says that a node runs there with another farm configuration or
    /// another key: one this node cannot agree with on who owns what.
    pub fn disputes_the_farm(&self) -> bool {
        matches!(
            self,
            Refusal::WrongFarm { .. } | Refusal::Wire(WireError::Tag | WireError::UnknownKey(_))
        )
    }
}

/// How many datagrams were refused, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Refused {
    /// Malformed: too short or long, not herd's, an unknown version, fields that do not fit.
    pub malformed: u64,
    /// Failed authentication, or made with a key this node does not have.
    pub unauthenticated: u64,
    /// From another farm configuration.
    pub wrong_farm: u64,
    /// From an unknown node, or with this node's own name.
    pub unknown_node: u64,
    /// Too old or too far in the future.
    pub stale: u64,
    /// Replays.
    pub replayed: u64,
}

impl Refused {
    /// Each count with the name of its reason, as the metrics label them (the field's name).
    /// The pattern names every field, so a new reason cannot be left out.
    pub fn by_reason(&self) -> [(&'static str, u64); 6] {
        let Refused {
            malformed,
            unauthenticated,
            wrong_farm,
            unknown_node,
            stale,
            replayed,
        } = *self;
        [
            ("malformed", malformed),
            ("unauthenticated", unauthenticated),
            ("wrong_farm", wrong_farm),
            ("unknown_node", unknown_node),
            ("stale", stale),
            ("replayed", replayed),
        ]
    }

    fn count(&mut self, refusal: &Refusal) {
        let counter = match refusal {
            Refusal::Wire(WireError::Tag | WireError::UnknownKey(_)) => &mut self.unauthenticated,
            Refusal::Wire(_) => &mut self.malformed,
            Refusal::WrongFarm { .. } => &mut self.wrong_farm,
            Refusal::UnknownNode(_) | Refusal::FromSelf(_) => &mut self.unknown_node,
            Refusal::Stale { .. } => &mut self.stale,
            Refusal::Replayed { .. } => &mut self.replayed,
        };
        *counter += 1;
    }
}

/// The gate of one node.
#[derive(Debug)]
pub struct Inbox {
    keys: Keyring,
    farm: [u8; 32],
    /// The configured nodes' names, by index.
    nodes: Vec<String>,
    /// This node's index.
    local: usize,
    /// One replay guard per configured node.
    guards: Vec<ReplayGuard>,
    refused: Refused,
}

impl Inbox {
    /// The gate of node `local` among `nodes` (the configuration's names, in order), in the
    /// farm whose configuration digest is `farm`, checking tags with `keys`.
    pub fn new(keys: Keyring, farm: [u8; 32], nodes: Vec<String>, local: usize) -> Self {
        let guards = vec![ReplayGuard::default(); nodes.len()];
        Self {
            keys,
            farm,
            nodes,
            local,
            guards,
            refused: Refused::default(),
        }
    }

    /// Lets `datagram`, received at `now_ms` (ms since the Unix epoch), through as a heartbeat
    /// of the node at the returned index, or refuses it (and counts the refusal).
    pub fn accept(&mut self, datagram: &[u8], now_ms: u64) -> Result<(usize, Heartbeat), Refusal> {
        let result = self.check(datagram, now_ms);
        if let Err(refusal) = &result {
            self.refused.count(refusal);
        }
        result
    }

    fn check(&mut self, datagram: &[u8], now_ms: u64) -> Result<(usize, Heartbeat), Refusal> {
        let heartbeat = Heartbeat::decode(datagram, &self.keys)?;
        if heartbeat.farm != self.farm {
            return Err(Refusal::WrongFarm {
                name: heartbeat.name,
                theirs: hex::encode(&heartbeat.farm[..6]),
                ours: hex::encode(&self.farm[..6]),
            });
        }
        let Some(sender) = self.nodes.iter().position(|name| *name == heartbeat.name) else {
            return Err(Refusal::UnknownNode(heartbeat.name));
        };
        if sender == self.local {
            return Err(Refusal::FromSelf(heartbeat.name));
        }
        let skew_ms = now_ms.abs_diff(heartbeat.sent_ms);
        if skew_ms > FRESHNESS_MS {
            return Err(Refusal::Stale {
                name: heartbeat.name,
                skew_ms,
            });
        }
        // Last, so that only a heartbeat that passed everything else moves the window.
        if let Err(replay) = self.guards[sender].accept(heartbeat.incarnation, heartbeat.sequence) {
            return Err(Refusal::Replayed {
                name: heartbeat.name,
                replay,
            });
        }
        Ok((sender, heartbeat))
    }

    /// The refusals so far.
    pub fn refused(&self) -> Refused {
        self.refused
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::State;

    const NOW: u64 = 1_790_000_000_000;
    const FARM: [u8; 32] = [3; 32];

    fn keys() -> Keyring {
        Keyring::parse("1 000102030405060708090a0b0c0d0e0f").unwrap()
    }

    fn inbox() -> Inbox {
        let nodes = ["alpha", "bravo", "charlie"].map(String::from).to_vec();
        Inbox::new(keys(), FARM, nodes, 0)
    }

    fn from(name: &str, sequence: u64) -> Heartbeat {
        Heartbeat {
            farm: FARM,
            name: name.into(),
            incarnation: NOW - 60_000,
            sequence,
            sent_ms: NOW,
            state: State::Up,
            weight: 1,
            epoch: 1,
            released: 1,
            agreed: 0,
            drains: Vec::new(),
            view: Vec::new(),
        }
    }

    fn datagram(heartbeat: &Heartbeat) -> Vec<u8> {
        heartbeat.encode(&keys()).unwrap()
    }

    #[test]
    fn a_heartbeat_from_a_configured_node_passes_once() {
        let mut inbox = inbox();
        let sent = datagram(&from("bravo", 1));
        assert_eq!(inbox.accept(&sent, NOW + 3), Ok((1, from("bravo", 1))));
        assert_eq!(
            inbox.accept(&sent, NOW + 5),
            Err(Refusal::Replayed {
                name: "bravo".into(),
                replay: Replay::Seen(1)
            })
        );
        assert_eq!(
            inbox.accept(&datagram(&from("charlie", 1)), NOW),
            Ok((2, from("charlie", 1)))
        );
        assert_eq!(inbox.refused().replayed, 1);
    }

    #[test]
    fn each_refusal_is_named_and_counted() {
        let mut inbox = inbox();
        let mut other_farm = from("bravo", 1);
        other_farm.farm = [4; 32];
        let mut old = from("bravo", 2);
        old.sent_ms = NOW - FRESHNESS_MS - 1;
        let mut future = from("bravo", 3);
        future.sent_ms = NOW + FRESHNESS_MS + 1;
        let forged = {
            let mut bytes = datagram(&from("bravo", 4));
            let last = bytes.len() - 1;
            bytes[last] ^= 1;
            bytes
        };
        let cases = [
            (b"hello".to_vec(), Refusal::Wire(WireError::TooShort(5))),
            (forged, Refusal::Wire(WireError::Tag)),
            (
                datagram(&other_farm),
                Refusal::WrongFarm {
                    name: "bravo".into(),
                    theirs: "040404040404".into(),
                    ours: "030303030303".into(),
                },
            ),
            (
                datagram(&from("delta", 1)),
                Refusal::UnknownNode("delta".into()),
            ),
            (
                datagram(&from("alpha", 1)),
                Refusal::FromSelf("alpha".into()),
            ),
            (
                datagram(&old),
                Refusal::Stale {
                    name: "bravo".into(),
                    skew_ms: FRESHNESS_MS + 1,
                },
            ),
            (
                datagram(&future),
                Refusal::Stale {
                    name: "bravo".into(),
                    skew_ms: FRESHNESS_MS + 1,
                },
            ),
        ];
        for (bytes, expected) in cases {
            assert_eq!(inbox.accept(&bytes, NOW), Err(expected));
        }
        assert_eq!(
            inbox.refused(),
            Refused {
                malformed: 1,
                unauthenticated: 1,
                wrong_farm: 1,
                unknown_node: 2,
                stale: 2,
                replayed: 0,
            }
        );
        // None of them moved bravo's window: its sequence 1 still passes.
        assert!(inbox.accept(&datagram(&from("bravo", 1)), NOW).is_ok());
    }

    #[test]
    fn a_wrong_farm_is_reported_loudly() {
        let refusal = Refusal::WrongFarm {
            name: "bravo".into(),
            theirs: "040404040404".into(),
            ours: "030303030303".into(),
        };
        assert_eq!(
            refusal.to_string(),
            "node bravo runs a different farm configuration (digest 040404040404, ours \
             030303030303): refused until both files are the same"
        );
    }
}
