//! The daemon's end of the control socket (see [`crate::control`]): it listens on
//! `<dir>/<node>.sock` and hands each request to the supervisor, until the shutdown.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use crossbeam_channel::Sender;

use super::shutdown::Shutdown;
use crate::control::{self, Incoming, Reply, Request, IO_TIMEOUT, MAX_REQUEST};

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
        Ok(Self { listener, path })
    }

    /// Where it listens.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Answers the connections, one at a time, until the shutdown: each request goes to
    /// `requests` with a channel for its reply.
    pub fn serve(&self, requests: &Sender<Incoming>, shutdown: &Shutdown) -> anyhow::Result<()> {
        let mut readiness = shutdown
            .watch(self.listener.as_raw_fd())
            .context("cannot watch the control socket")?;
        while let Some(stream) =
            readiness.accept("control socket", || Ok(self.listener.accept()?.0))?
        {
            if let Err(error) = answer(stream, requests) {
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

/// Reads one request from `stream`, has it carried out and writes the reply.
fn answer(stream: UnixStream, requests: &Sender<Incoming>) -> anyhow::Result<()> {
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
    let mut text = serde_json::to_string(&reply)?;
    text.push('\n');
    (&stream)
        .write_all(text.as_bytes())
        .context("cannot write the reply")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::request;

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
        std::thread::scope(|scope| {
            let serving = scope.spawn(|| server.serve(&requests, &shutdown));
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
}
