//! The control socket: how `herd status`, `stop`, `start`, `restart` and `drain` talk to the
//! running daemon. A unix stream socket, `<dir>/<node>.sock` (mode 0600, in a directory of
//! mode 0700: root only), carries one request per connection, one JSON line each way. A
//! command for another node of the farm, or the whole farm's status, is relayed: the local
//! daemon asks the farm over its authenticated channel and sends the answer back. This module
//! holds the requests, the replies and the operator's end; the daemon's end is
//! [`crate::daemon`]'s.

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use crossbeam_channel::Sender;
use serde::{Deserialize, Serialize};

use crate::farm_access::{FarmCommand, FarmReport};
use crate::status::Status;

/// Where the control sockets are when not told otherwise.
pub const CONTROL_DIR: &str = "/run/herd";

/// How long either side waits for the other's line.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the operator's end waits for the answer to a relayed request: the daemon's own
/// wait for the farm's answer, and some.
pub const RELAY_TIMEOUT: Duration = Duration::from_secs(15);

/// The longest request line read: every request is a few bytes.
pub const MAX_REQUEST: u64 = 4096;

/// What an operator asks of the daemon.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "command")]
pub enum Request {
    /// Where the node stands.
    Status,
    /// A planned leave with a drain, then the stop script; the node stays stopped.
    Stop,
    /// Start a stopped or failed node: the start script, the checks, the join.
    Start,
    /// Stop, then start.
    Restart,
    /// Stop taking new connections and keep the old ones: the node leaves with a drain but
    /// the application keeps running (no stop script); `start` brings it back.
    Drain,
    /// Carry `action` to node `node` of the farm (this node too), over the farm's channel.
    Farm {
        /// The node's name, from the configuration.
        node: String,
        /// What it is to do.
        action: FarmCommand,
    },
    /// Every node's status and timeline, gathered from the nodes over the farm's channel.
    FarmStatus,
}

impl Request {
    /// Whether the daemon relays it to the farm rather than carrying it out itself.
    pub fn relayed(&self) -> bool {
        matches!(self, Request::Farm { .. } | Request::FarmStatus)
    }

    /// How long the operator's end waits for the answer.
    fn timeout(&self) -> Duration {
        if self.relayed() {
            RELAY_TIMEOUT
        } else {
            IO_TIMEOUT
        }
    }
}

/// The daemon's answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reply {
    /// The status asked for.
    Status(Box<Status>),
    /// The command is under way: what the node does now.
    Done(String),
    /// The command does not apply: why.
    Refused(String),
    /// Every node's status, gathered by this node.
    Farm(Box<FarmReport>),
}

/// A request received, with where its reply goes.
pub type Incoming = (Request, Sender<Reply>);

/// The socket of node `node` in `dir`.
pub fn socket_path(dir: &Path, node: &str) -> PathBuf {
    dir.join(format!("{node}.sock"))
}

/// Sends `request` to the daemon of node `node` (or of the only node running here) and
/// returns its reply.
pub fn request(dir: &Path, node: Option<&str>, request: Request) -> anyhow::Result<Reply> {
    let path = match node {
        Some(node) => socket_path(dir, node),
        None => only_socket(dir)?,
    };
    let named = node.map(|node| format!(" node {node}")).unwrap_or_default();
    let mut stream = UnixStream::connect(&path).map_err(|error| match error.kind() {
        ErrorKind::NotFound => anyhow::anyhow!(
            "herd is not running{named} (nothing listens on {})",
            path.display()
        ),
        ErrorKind::ConnectionRefused => anyhow::anyhow!(
            "herd is not running{named} ({} is a control socket left by a herd that did not \
             exit cleanly (killed?); the next `herd run` replaces it)",
            path.display()
        ),
        ErrorKind::PermissionDenied => {
            anyhow::anyhow!(
                "{}: permission denied (the control socket is root's)",
                path.display()
            )
        }
        _ => anyhow::anyhow!("cannot reach herd at {}: {error}", path.display()),
    })?;
    stream.set_read_timeout(Some(request.timeout()))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut line = serde_json::to_string(&request)?;
    line.push('\n');
    stream
        .write_all(line.as_bytes())
        .with_context(|| format!("cannot write to {}", path.display()))?;
    let mut answer = String::new();
    BufReader::new(stream)
        .read_line(&mut answer)
        .with_context(|| format!("no answer from herd on {}", path.display()))?;
    if answer.is_empty() {
        bail!("no answer from herd on {}: it is stopping", path.display());
    }
    serde_json::from_str(&answer)
        .with_context(|| format!("unreadable answer from herd on {}", path.display()))
}

/// The one socket in `dir`, for commands run without `--node`.
fn only_socket(dir: &Path) -> anyhow::Result<PathBuf> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == ErrorKind::NotFound => {
            bail!("herd is not running ({} does not exist)", dir.display())
        }
        Err(error) => bail!("cannot read {}: {error}", dir.display()),
    };
    let mut sockets: Vec<PathBuf> = entries
        .filter_map(|entry| Some(entry.ok()?.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "sock"))
        .collect();
    sockets.sort();
    // A socket whose herd was killed is still there, but refuses connections. One that cannot
    // be told (no permission) counts as live: asking it says why.
    let (mut live, stale): (Vec<PathBuf>, Vec<PathBuf>) = sockets.into_iter().partition(|path| {
        !matches!(UnixStream::connect(path), Err(error) if error.kind() == ErrorKind::ConnectionRefused)
    });
    let names = |sockets: &[PathBuf]| -> String {
        sockets
            .iter()
            .filter_map(|path| Some(path.file_stem()?.to_string_lossy().into_owned()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match live.len() {
        0 if stale.is_empty() => bail!(
            "herd is not running (no control socket in {})",
            dir.display()
        ),
        0 => bail!(
            "herd is not running: the control sockets in {} ({}) were left by herds that did \
             not exit cleanly (killed?); the next `herd run` of each node replaces its socket",
            dir.display(),
            names(&stale)
        ),
        1 => Ok(live.remove(0)),
        _ => bail!(
            "several herd nodes run here ({}): say which with --node",
            names(&live)
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixListener;

    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("herd-control-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn without_a_node_the_only_socket_is_used_or_the_choice_is_asked_for() {
        let dir = scratch("choice");
        let error = request(&dir, None, Request::Status).unwrap_err();
        assert!(error.to_string().contains("does not exist"), "{error}");
        std::fs::create_dir_all(&dir).unwrap();
        let _alpha = UnixListener::bind(socket_path(&dir, "alpha")).unwrap();
        let _bravo = UnixListener::bind(socket_path(&dir, "bravo")).unwrap();
        let error = request(&dir, None, Request::Status).unwrap_err();
        assert_eq!(
            error.to_string(),
            "several herd nodes run here (alpha, bravo): say which with --node"
        );
        drop((_alpha, _bravo));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn sockets_left_by_killed_herds_are_told_from_live_ones() {
        let dir = scratch("stale");
        std::fs::create_dir_all(&dir).unwrap();
        // A listener dropped leaves its file behind, as a killed herd does.
        drop(UnixListener::bind(socket_path(&dir, "alpha")).unwrap());
        drop(UnixListener::bind(socket_path(&dir, "bravo")).unwrap());
        let error = request(&dir, None, Request::Status)
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("herd is not running: the control sockets in")
                && error.contains("(alpha, bravo) were left by herds that did not exit cleanly"),
            "{error}"
        );
        let error = request(&dir, Some("alpha"), Request::Status)
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("herd is not running node alpha (")
                && error.contains("alpha.sock is a control socket left by a herd"),
            "{error}"
        );
        // A live one among stale ones is the one asked, without --node.
        std::fs::remove_file(socket_path(&dir, "bravo")).unwrap();
        let bravo = UnixListener::bind(socket_path(&dir, "bravo")).unwrap();
        let daemon = std::thread::spawn(move || {
            // The liveness probe connects and sends nothing; the request comes next.
            for stream in bravo.incoming() {
                let mut stream = stream.unwrap();
                let mut line = String::new();
                BufReader::new(&stream).read_line(&mut line).unwrap();
                if !line.is_empty() {
                    stream.write_all(b"{\"done\":\"bravo\"}\n").unwrap();
                    return;
                }
            }
        });
        let reply = request(&dir, None, Request::Drain).unwrap();
        assert!(matches!(reply, Reply::Done(name) if name == "bravo"));
        daemon.join().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
