//! The control socket: how `herd status`, `stop`, `start`, `restart` and `drain` talk to the
//! running daemon. A unix stream socket, `<dir>/<node>.sock` (mode 0600, in a directory of
//! mode 0700: root only), carries one request per connection, one JSON line each way.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use crossbeam_channel::Sender;
use serde::{Deserialize, Serialize};

use crate::status::Status;

/// Where the control sockets are when not told otherwise.
pub const CONTROL_DIR: &str = "/run/herd";

/// How long either side waits for the other's line.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest request line read: every request is a few bytes.
const MAX_REQUEST: u64 = 4096;

/// What an operator asks of the daemon.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
}

/// A request received, with where its reply goes.
pub type Incoming = (Request, Sender<Reply>);

/// The socket of node `node` in `dir`.
fn socket_path(dir: &Path, node: &str) -> PathBuf {
    dir.join(format!("{node}.sock"))
}

/// Sends `request` to the daemon of node `node` (or of the only node running here) and
/// returns its reply.
pub fn request(dir: &Path, node: Option<&str>, request: Request) -> anyhow::Result<Reply> {
    let path = match node {
        Some(node) => socket_path(dir, node),
        None => only_socket(dir)?,
    };
    let mut stream = UnixStream::connect(&path).map_err(|error| match error.kind() {
        ErrorKind::NotFound | ErrorKind::ConnectionRefused => anyhow::anyhow!(
            "herd is not running{} (nothing listens on {})",
            node.map(|node| format!(" node {node}")).unwrap_or_default(),
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
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
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
    match sockets.len() {
        0 => bail!(
            "herd is not running (no control socket in {})",
            dir.display()
        ),
        1 => Ok(sockets.remove(0)),
        _ => {
            let names: Vec<String> = sockets
                .iter()
                .filter_map(|path| Some(path.file_stem()?.to_string_lossy().into_owned()))
                .collect();
            bail!(
                "several herd nodes run here ({}): say which with --node",
                names.join(", ")
            )
        }
    }
}

/// The daemon's end: a listening socket, removed when dropped.
#[derive(Debug)]
pub struct Server {
    listener: UnixListener,
    path: PathBuf,
}

impl Server {
    /// Listens on node `node`'s socket in `dir`, creating `dir` (mode 0700) if needed. Refuses
    /// when a daemon of the same node answers there already; a socket left by a killed one is
    /// replaced.
    pub fn bind(dir: &Path, node: &str) -> anyhow::Result<Self> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create the control directory {}", dir.display()))?;
        let path = socket_path(dir, node);
        if UnixStream::connect(&path).is_ok() {
            bail!(
                "another herd runs node {node} on this host (it answers on {})",
                path.display()
            );
        }
        match std::fs::remove_file(&path) {
            Ok(()) => {
                tracing::info!(socket = %path.display(), "removed the control socket an earlier herd left (it was killed)")
            }
            Err(error) if error.kind() == ErrorKind::NotFound => {}
            Err(error) => bail!("cannot remove the stale {}: {error}", path.display()),
        }
        let listener = UnixListener::bind(&path)
            .with_context(|| format!("cannot listen on {}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("cannot make {} root's only", path.display()))?;
        Ok(Self { listener, path })
    }

    /// Where it listens.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Serves connections on a thread of its own: each request goes to `requests` with a
    /// channel for its reply. The thread ends at the first request after the receiving end
    /// is gone (the process ends anyway).
    pub fn spawn(&self, requests: Sender<Incoming>) -> anyhow::Result<()> {
        let listener = self.listener.try_clone()?;
        std::thread::Builder::new()
            .name("herd-control".into())
            .spawn(move || serve(&listener, &requests))?;
        Ok(())
    }
}

/// Answers the connections to `listener` until the daemon stops taking requests.
fn serve(listener: &UnixListener, requests: &Sender<Incoming>) {
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!("control socket: cannot accept: {error}");
                continue;
            }
        };
        if let Err(error) = answer(stream, requests) {
            match error.downcast_ref::<Gone>() {
                Some(Gone) => return,
                None => tracing::warn!("control socket: {error:#}"),
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The daemon is stopping: nobody takes requests any more.
#[derive(Debug, thiserror::Error)]
#[error("herd is stopping")]
struct Gone;

/// Reads one request from `stream`, has it carried out and writes the reply.
fn answer(stream: UnixStream, requests: &Sender<Incoming>) -> anyhow::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut line = String::new();
    BufReader::new((&stream).take(MAX_REQUEST))
        .read_line(&mut line)
        .context("cannot read the request")?;
    let reply = match serde_json::from_str::<Request>(&line) {
        Ok(request) => {
            let (sender, receiver) = crossbeam_channel::bounded(1);
            requests.send((request, sender)).map_err(|_| Gone)?;
            receiver.recv_timeout(IO_TIMEOUT).map_err(|_| Gone)?
        }
        Err(error) => Reply::Refused(format!("not a request herd knows: {error}")),
    };
    let mut text = serde_json::to_string(&reply)?;
    text.push('\n');
    (&stream)
        .write_all(text.as_bytes())
        .context("cannot write the reply")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("herd-control-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_request_reaches_the_daemon_and_its_reply_comes_back() {
        let dir = scratch("reply");
        let server = Server::bind(&dir, "alpha").unwrap();
        let mode = std::fs::metadata(server.path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let (requests, incoming) = crossbeam_channel::unbounded::<Incoming>();
        server.spawn(requests).unwrap();
        // The daemon takes one request, then stops taking any.
        let daemon = std::thread::spawn(move || {
            let (request, reply) = incoming.recv().unwrap();
            assert_eq!(request, Request::Drain);
            reply.send(Reply::Done("draining".into())).unwrap();
        });
        let reply = request(&dir, None, Request::Drain).unwrap();
        assert!(matches!(reply, Reply::Done(text) if text == "draining"));
        daemon.join().unwrap();
        assert!(
            Server::bind(&dir, "alpha").is_err(),
            "a second daemon of the node is refused"
        );
        let error = request(&dir, Some("alpha"), Request::Status).unwrap_err();
        assert!(error.to_string().starts_with("no answer"), "{error}");
        drop(server);
        let error = request(&dir, Some("alpha"), Request::Status).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("herd is not running node alpha"),
            "{error}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn without_a_node_the_only_socket_is_used_or_the_choice_is_asked_for() {
        let dir = scratch("choice");
        let error = request(&dir, None, Request::Status).unwrap_err();
        assert!(error.to_string().contains("does not exist"), "{error}");
        let _alpha = Server::bind(&dir, "alpha").unwrap();
        let _bravo = Server::bind(&dir, "bravo").unwrap();
        let error = request(&dir, None, Request::Status).unwrap_err();
        assert_eq!(
            error.to_string(),
            "several herd nodes run here (alpha, bravo): say which with --node"
        );
        drop((_alpha, _bravo));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
