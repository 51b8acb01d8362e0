//! The farm as an operator sees it from any node: the commands one node carries to another,
//! what a node answers when asked where it stands, and the seam through which the console
//! reaches the farm (the daemon's farm client, or a fake in tests).

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::control::Reply;
use crate::status::Status;
use crate::timeline::Event;

/// An operator's command for one node of the farm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FarmCommand {
    /// Take no new connection, keep the old ones, keep the application running.
    Drain,
    /// Leave with a drain, then run the stop script.
    Stop,
    /// Start a stopped, failed or drained node.
    Start,
    /// Stop, then start.
    Restart,
}

/// One node's answer when asked where it stands.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeReport {
    /// The node's name, from the configuration.
    pub name: String,
    /// Where it was asked: its address and the farm port.
    pub address: SocketAddr,
    /// Its status, when it answered.
    pub status: Option<Status>,
    /// Its timeline, when it answered.
    pub timeline: Vec<Event>,
    /// Why there is no answer, when it did not answer.
    pub error: Option<String>,
}

/// Every node's answer, gathered by one node.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FarmReport {
    /// The node that gathered it.
    pub gathered_by: String,
    /// When it was gathered, in ms since the Unix epoch.
    pub at_ms: u64,
    /// Every node of the configuration, in its order.
    pub nodes: Vec<NodeReport>,
}

/// What the console asks of the farm. Every call may block for up to a few seconds (a node
/// that does not answer): call it off the server's event loop.
pub trait FarmAccess: Send + Sync {
    /// Every node's status and timeline.
    fn report(&self) -> FarmReport;
    /// Carries `command` to node `node`, on behalf of `origin` (who asked, for both nodes'
    /// logs), and returns the node's reply.
    fn command(&self, node: &str, command: FarmCommand, origin: &str) -> anyhow::Result<Reply>;
    /// Starts `command` on every node, one after another, each waiting until the previous is
    /// back up or out (a rolling restart); returns at once with what is under way.
    fn roll(&self, command: FarmCommand, origin: &str) -> anyhow::Result<String>;
}
