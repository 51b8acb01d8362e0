//! What `herd status` shows, what the metrics are made of and what `herd demo` reads: the
//! node's state, its checks and its membership at one moment.

use herd_checkers::health::Health;
use herd_checkers::lifecycle::{Action, NodeState};
use herd_membership::command::Refused;
use herd_membership::snapshot::Snapshot;
use herd_membership::wire::State;
use serde::{Deserialize, Serialize};

/// One node at one moment.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Status {
    /// The node's name.
    pub node: String,
    /// The farm's name.
    pub farm: String,
    /// The dataplane mode: `xdp` or `afxdp`.
    pub mode: String,
    /// The daemon's process id.
    pub pid: u32,
    /// The node's state.
    pub state: NodeState,
    /// Why the node is in that state, when it is not up.
    pub reason: Option<String>,
    /// Whether the node is out after an operator's drain, its application still running
    /// (`stopped` with the application up: `herd start` brings it back, checks first).
    #[serde(default)]
    pub drained: bool,
    /// How long ago the node entered that state.
    pub since_ms_ago: u64,
    /// Restarts of the application, against the restart limit.
    pub restarts: Restarts,
    /// Each configured check, in configuration order.
    pub checks: Vec<CheckStatus>,
    /// The VIP ports of TCP rules without a listening socket in herd's network namespace at
    /// the last look (in the first minute after the node came up), as `198.18.0.100:80`:
    /// their connections break at every join, leave or drain.
    #[serde(default)]
    pub unseen_listeners: Vec<String>,
    /// The node's membership: the farm view, each node's state and share, the drain, the
    /// dataplane's counts.
    pub membership: Snapshot,
    /// The farm commands other nodes (or this one) sent this node: carried out, and refused.
    #[serde(default)]
    pub farm_commands: FarmCommands,
}

/// The farm commands a node received since its daemon started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FarmCommands {
    /// Verified and carried out, status requests included.
    pub executed: u64,
    /// Refused, by reason: they changed nothing.
    pub refused: Refused,
}

impl Status {
    /// Whether the node serves its share: up, a member of the farm with quorum (without it,
    /// the node accepts nothing), owning buckets. What `/healthz` answers, for a cloud load
    /// balancer in front of the farm.
    pub fn serving(&self) -> bool {
        self.state == NodeState::Up
            && self.membership.state == State::Up
            && self.membership.quorum
            && self.membership.owned() > 0
    }
}

/// The restarts of the application: the checks' count against the limit, an operator's
/// do not.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Restarts {
    /// Restarts within the window.
    pub recent: usize,
    /// The most allowed in the window.
    pub limit: u32,
    /// The window, in seconds.
    pub within_s: u64,
    /// Restarts since the daemon started, the checks' and the operators'.
    pub total: u64,
}

/// One check.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckStatus {
    /// Its name.
    pub name: String,
    /// Its kind: `tcp`, `http`, `process`, `ping`, `interface`, `address` or `command`.
    pub kind: String,
    /// What its failure does.
    pub action: Action,
    /// Its health.
    pub health: Health,
    /// Its last probe, if any yet.
    pub last: Option<ProbeStatus>,
    /// Probes made.
    pub probes: u64,
    /// Probes that failed.
    pub failures: u64,
}

/// A probe's result.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProbeStatus {
    /// Whether it succeeded.
    pub ok: bool,
    /// What it found wrong, when it failed.
    pub error: Option<String>,
    /// How long ago it ended.
    pub ms_ago: u64,
    /// How long it took.
    pub took_ms: u64,
}
