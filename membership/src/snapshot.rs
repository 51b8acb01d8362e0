//! Where this node's membership stands, copied out of the membership thread for `herd status`
//! and the metrics: the thread publishes a fresh [`Snapshot`] whenever something changes, and
//! readers never wait for it.

use std::sync::Arc;

use herd_packet::counts::Traffic;
use herd_packet::table::NodeId;
use serde::{Deserialize, Serialize};

use crate::inbox::Refused;
use crate::protocol::{Membership, Stats};
use crate::wire::State;

/// The membership of this node at one moment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// This node's state in the farm.
    pub state: State,
    /// This node's incarnation.
    pub incarnation: u64,
    /// The current view's epoch: this node's own count of the views it has had, which another
    /// node's count need not match.
    pub epoch: u64,
    /// Whether every live node agreed on the current view.
    pub agreed: bool,
    /// Whether this side holds a majority of the weight (always, without quorum).
    pub quorum: bool,
    /// The farm's bucket count.
    pub buckets: usize,
    /// Every configured node, this one included, in configuration order.
    pub nodes: Vec<NodeSnapshot>,
    /// The drain under way, if any.
    pub drain: Option<DrainSnapshot>,
    /// The protocol's counts.
    pub stats: Stats,
    /// The datagrams refused on the farm port, by reason.
    pub refused: Refused,
    /// Why this node does not join, while it hears a node it cannot agree with: another farm
    /// configuration or another key.
    pub join_held: Option<String>,
    /// The dataplane's counts, as of the last refresh.
    pub traffic: Traffic,
    /// The owner of each bucket in the current view, for the console's bucket map; not
    /// serialised, to keep `herd status --json` small.
    #[serde(skip)]
    pub bucket_owners: Arc<[NodeId]>,
    /// Whether each bucket is still drained under an earlier view (see
    /// [`Membership::drained`]); not serialised either.
    #[serde(skip)]
    pub draining_buckets: Arc<[bool]>,
}

/// A node of the farm, as this node sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeSnapshot {
    /// Its name.
    pub name: String,
    /// Whether it is this node.
    pub local: bool,
    /// Whether this node considers it alive (this node always is).
    pub alive: bool,
    /// Its state as its latest heartbeat says (this node's own for this node); `None` for a
    /// node never heard.
    pub state: Option<State>,
    /// Its incarnation, if known.
    pub incarnation: Option<u64>,
    /// The buckets the current view gives it.
    pub buckets: usize,
    /// How long ago its latest heartbeat arrived (not for this node).
    pub heard_ms_ago: Option<u64>,
    /// How long that heartbeat took on the way, clock offset included (not for this node).
    pub delay_ms: Option<i64>,
}

/// This node's drain: the views whose buckets it still serves connections in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainSnapshot {
    /// The views drained.
    pub views: usize,
    /// The connections left in them, at the last count (`None` before the first).
    pub connections: Option<u64>,
}

impl Snapshot {
    /// `membership` at `now_ms` (monotonic), with the nodes' `names`, the dataplane's `traffic`
    /// and the last count of the connections it drains.
    pub fn of(
        membership: &Membership,
        names: &[String],
        now_ms: u64,
        traffic: Traffic,
        draining_connections: Option<u64>,
    ) -> Self {
        let owners = membership.owners();
        let nodes = names
            .iter()
            .enumerate()
            .map(|(node, name)| {
                let local = node == membership.local();
                let peer = membership.peer(node);
                NodeSnapshot {
                    name: name.clone(),
                    local,
                    alive: membership.is_alive(node),
                    state: if local {
                        Some(membership.state())
                    } else {
                        peer.map(|peer| peer.state)
                    },
                    incarnation: if local {
                        Some(membership.incarnation())
                    } else {
                        peer.map(|peer| peer.incarnation)
                    },
                    buckets: owners
                        .iter()
                        .filter(|&&owner| owner == node as NodeId)
                        .count(),
                    heard_ms_ago: peer.map(|peer| now_ms.saturating_sub(peer.heard_ms)),
                    delay_ms: peer.map(|peer| peer.delay_ms),
                }
            })
            .collect();
        Self {
            state: membership.state(),
            incarnation: membership.incarnation(),
            epoch: membership.epoch(),
            agreed: membership.agreed(),
            quorum: membership.quorum(),
            buckets: owners.len(),
            nodes,
            drain: (membership.draining() > 0).then_some(DrainSnapshot {
                views: membership.draining(),
                connections: draining_connections,
            }),
            stats: membership.stats(),
            refused: membership.refused(),
            join_held: membership.join_held(now_ms).map(ToString::to_string),
            traffic,
            bucket_owners: membership.shared_owners(),
            draining_buckets: membership.drained(),
        }
    }

    /// The buckets the current view gives this node.
    pub fn owned(&self) -> usize {
        self.nodes
            .iter()
            .find(|node| node.local)
            .map_or(0, |node| node.buckets)
    }
}
