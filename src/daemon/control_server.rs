//! The daemon's end of the control socket (see [`crate::control`]): it listens on
//! `<dir>/<node>.sock` and hands each request to the supervisor, until the shutdown. Requests
//! for the farm are relayed to it here, each on a thread of its own, so that neither the
//! supervisor's loop nor the next operator waits on the network.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context};
use crossbeam_channel::Sender;
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};

use super::shutdown::Shutdown;
use crate::control::{self, Incoming, Reply, Request, IO_TIMEOUT, MAX_REQUEST};
use crate::farm_access::FarmAccess;
use crate::rolling::verb;

/// The most relayed requests under way at once; more are refused until one ends.
const MAX_RELAYS: usize = 8;

/// The daemon's end: a listening socket, removed when dropped.
#[derive(Debug)]
pub struct Server {
    listener: UnixListener,
    path: PathBuf,
    /// The node's name, for the origin of relayed requests.
    node: String,
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
        let path = control::socket_path(dir, node);
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
        listener
            .set_nonblocking(true)
            .with_context(|| format!("cannot listen on {}", path.display()))?;
        Ok(Self {
            listener,
            path,
            node: node.into(),
        })
    }

    /// Where it listens.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Answers the connections until the shutdown: each request for this node goes to
    /// `requests` with a channel for its reply, one at a time; each request for the farm goes
    /// to `farm` on a thread of its own.
    pub fn serve(
        &self,
        requests: &Sender<Incoming>,
        farm: &Arc<dyn FarmAccess>,
        shutdown: &Shutdown,
    ) -> anyhow::Result<()> {
        let mut readiness = shutdown
            .watch(self.listener.as_raw_fd())
            .context("cannot watch the control socket")?;
        let relays = Arc::new(AtomicUsize::new(0));
        while let Some(stream) =
            readiness.accept("control socket", || Ok(self.listener.accept()?.0))?
        {
            let relay = Relay {
                farm,
                under_way: &relays,
                node: &self.node,
            };
            if let Err(error) = answer(stream, requests, &relay) {
                tracing::warn!("control socket: {error:#}");
            }
        }
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// What relays the requests for the farm.
struct Relay<'a> {
    farm: &'a Arc<dyn FarmAccess>,
    /// How many relayed requests are under way.
    under_way: &'a Arc<AtomicUsize>,
    /// This node's name.
    node: &'a str,
}

/// Reads one request from `stream`, has it carried out and writes the reply.
fn answer(stream: UnixStream, requests: &Sender<Incoming>, relay: &Relay) -> anyhow::Result<()> {
    // Accepted from a non-blocking listener; the timeouts bound each connection instead.
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut line = String::new();
    BufReader::new((&stream).take(MAX_REQUEST))
        .read_line(&mut line)
        .context("cannot read the request")?;
    if line.is_empty() {
        // `herd status` telling live sockets from sockets left by killed herds.
        return Ok(());
    }
    let reply = match serde_json::from_str::<Request>(&line) {
        Ok(request) if request.relayed() => return relayed(stream, request, relay),
        Ok(request) => {
            let (sender, receiver) = crossbeam_channel::bounded(1);
            match requests.send((request, sender)) {
                Ok(()) => receiver
                    .recv_timeout(IO_TIMEOUT)
                    .unwrap_or_else(|_| Reply::Refused("herd is stopping".into())),
                Err(_) => Reply::Refused("herd is stopping".into()),
            }
        }
        Err(error) => Reply::Refused(format!("not a request herd knows: {error}")),
    };
    write_reply(&stream, &reply)
}

fn write_reply(stream: &UnixStream, reply: &Reply) -> anyhow::Result<()> {
    let mut text = serde_json::to_string(reply)?;
    text.push('\n');
    let mut stream = stream;
    stream
        .write_all(text.as_bytes())
        .context("cannot write the reply")
}

/// Relays `request` to the farm on a thread of its own, which writes the reply, on behalf of
/// the process at the other end of `stream`.
fn relayed(stream: UnixStream, request: Request, relay: &Relay) -> anyhow::Result<()> {
    let origin = origin(&stream, relay.node);
    if relay.under_way.fetch_add(1, Ordering::AcqRel) >= MAX_RELAYS {
        relay.under_way.fetch_sub(1, Ordering::AcqRel);
        let why = format!("{MAX_RELAYS} farm requests are under way already: try again");
        return write_reply(&stream, &Reply::Refused(why));
    }
    let farm = Arc::clone(relay.farm);
    let under_way = Arc::clone(relay.under_way);
    let spawned = std::thread::Builder::new()
        .name("herd-relay".into())
        .spawn(move || {
            let reply = match request {
                Request::Farm { node, action } => match farm.command(&node, action, &origin) {
                    // Said whole, for the operator who asked another node.
                    Ok(Reply::Refused(why)) => {
                        Reply::Refused(format!("{node} refused to {}: {why}", verb(action)))
                    }
                    Ok(reply) => reply,
                    Err(error) => Reply::Refused(format!("{error:#}")),
                },
                // The only other relayed request.
                _ => Reply::Farm(Box::new(farm.report())),
            };
            if let Err(error) = write_reply(&stream, &reply) {
                tracing::warn!("control socket: {error:#}");
            }
            under_way.fetch_sub(1, Ordering::AcqRel);
        });
    if let Err(error) = spawned {
        relay.under_way.fetch_sub(1, Ordering::AcqRel);
        bail!("cannot start a thread for a farm request: {error}");
    }
    Ok(())
}

/// Who asked, from the socket's peer credentials: "uid 0 (pid 4242) on alpha via the command
/// line".
fn origin(stream: &UnixStream, node: &str) -> String {
    match getsockopt(stream, PeerCredentials) {
        Ok(peer) => format!(
            "uid {} (pid {}) on {node} via the command line",
            peer.uid(),
            peer.pid()
        ),
        Err(error) => format!("an unknown user ({error}) on {node} via the command line"),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::control::request;
    use crate::farm_access::{FarmCommand, FarmReport};

    /// A farm that records who asked what, and has no node.
    #[derive(Default)]
    struct RecordingFarm {
        asked: Mutex<Vec<String>>,
    }

    impl FarmAccess for RecordingFarm {
        fn report(&self) -> FarmReport {
            FarmReport {
                gathered_by: "alpha".into(),
                at_ms: 7,
                nodes: Vec::new(),
            }
        }

        fn command(&self, node: &str, command: FarmCommand, origin: &str) -> anyhow::Result<Reply> {
            self.asked
                .lock()
                .unwrap()
                .push(format!("{command:?} {node} for {origin}"));
            match node {
                "bravo" => Ok(Reply::Done("draining".into())),
                _ => bail!("no node {node}"),
            }
        }

        fn roll(&self, _: FarmCommand, _: &str) -> anyhow::Result<String> {
            bail!("no roll here")
        }
    }

    fn no_farm() -> Arc<dyn FarmAccess> {
        Arc::new(RecordingFarm::default())
    }

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
        let shutdown = Shutdown::default();
        let farm = no_farm();
        std::thread::scope(|scope| {
            let serving = scope.spawn(|| server.serve(&requests, &farm, &shutdown));
            // The daemon takes one request, then stops taking any.
            let daemon = scope.spawn(move || {
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
            let reply = request(&dir, Some("alpha"), Request::Status).unwrap();
            assert!(
                matches!(&reply, Reply::Refused(why) if why == "herd is stopping"),
                "{reply:?}"
            );
            shutdown.trigger();
            serving.join().unwrap().unwrap();
        });
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
    fn a_farm_request_is_relayed_with_who_asked() {
        let dir = scratch("relay");
        let server = Server::bind(&dir, "alpha").unwrap();
        let (requests, _incoming) = crossbeam_channel::unbounded::<Incoming>();
        let shutdown = Shutdown::default();
        let recording = Arc::new(RecordingFarm::default());
        let farm: Arc<dyn FarmAccess> = recording.clone();
        std::thread::scope(|scope| {
            let serving = scope.spawn(|| server.serve(&requests, &farm, &shutdown));
            let drain = |node: &str| Request::Farm {
                node: node.into(),
                action: FarmCommand::Drain,
            };
            let reply = request(&dir, None, drain("bravo")).unwrap();
            assert!(
                matches!(&reply, Reply::Done(what) if what == "draining"),
                "{reply:?}"
            );
            let reply = request(&dir, None, drain("zulu")).unwrap();
            assert!(
                matches!(&reply, Reply::Refused(why) if why == "no node zulu"),
                "{reply:?}"
            );
            let reply = request(&dir, None, Request::FarmStatus).unwrap();
            assert!(
                matches!(&reply, Reply::Farm(report) if report.at_ms == 7),
                "{reply:?}"
            );
            shutdown.trigger();
            serving.join().unwrap().unwrap();
        });
        // SAFETY: getuid has no preconditions and cannot fail.
        let uid = unsafe { libc::getuid() };
        let origin = format!(
            "uid {uid} (pid {}) on alpha via the command line",
            std::process::id()
        );
        assert_eq!(
            *recording.asked.lock().unwrap(),
            [
                format!("Drain bravo for {origin}"),
                format!("Drain zulu for {origin}")
            ]
        );
        drop(server);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A farm whose every command says it began, then waits for the test's word.
    struct HeldFarm {
        began: crossbeam_channel::Sender<()>,
        release: crossbeam_channel::Receiver<()>,
    }

    impl FarmAccess for HeldFarm {
        fn report(&self) -> FarmReport {
            RecordingFarm::default().report()
        }

        fn command(&self, _: &str, _: FarmCommand, _: &str) -> anyhow::Result<Reply> {
            let _ = self.began.send(());
            let _ = self.release.recv();
            Ok(Reply::Done("draining".into()))
        }

        fn roll(&self, _: FarmCommand, _: &str) -> anyhow::Result<String> {
            bail!("no roll here")
        }
    }

    #[test]
    fn a_relayed_request_holds_up_no_other_request() {
        let dir = scratch("held");
        let server = Server::bind(&dir, "alpha").unwrap();
        let (requests, incoming) = crossbeam_channel::unbounded::<Incoming>();
        let shutdown = Shutdown::default();
        let (release, held) = crossbeam_channel::unbounded();
        let (began, beginning) = crossbeam_channel::unbounded();
        let farm: Arc<dyn FarmAccess> = Arc::new(HeldFarm {
            began,
            release: held,
        });
        std::thread::scope(|scope| {
            let serving = scope.spawn(|| server.serve(&requests, &farm, &shutdown));
            let daemon = scope.spawn(move || {
                let (request, reply) = incoming.recv().unwrap();
                assert_eq!(request, Request::Stop);
                reply.send(Reply::Done("stopping".into())).unwrap();
            });
            let relayed = scope.spawn(|| {
                let drain = Request::Farm {
                    node: "bravo".into(),
                    action: FarmCommand::Drain,
                };
                request(&dir, Some("alpha"), drain).unwrap()
            });
            // Answered while the drain for bravo waits on the farm.
            beginning.recv().unwrap();
            let reply = request(&dir, Some("alpha"), Request::Stop).unwrap();
            assert!(
                matches!(&reply, Reply::Done(what) if what == "stopping"),
                "{reply:?}"
            );
            release.send(()).unwrap();
            let reply = relayed.join().unwrap();
            assert!(
                matches!(&reply, Reply::Done(what) if what == "draining"),
                "{reply:?}"
            );
            daemon.join().unwrap();
            shutdown.trigger();
            serving.join().unwrap().unwrap();
        });
        drop(server);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
