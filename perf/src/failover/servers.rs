//! The services every node runs on the VIP, each in threads of herd-perf entered into the
//! node's namespace: a UDP echo server and two TCP line servers (one line per connection, or
//! every line until the client closes). Each answers `NAME:REQUEST`, so the client sees which
//! node served it. They keep running when a node's herd is killed: only herd dies.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;

use super::bed::{LONG_PORT, NODES, SHORT_PORT, UDP_PORT, VIP};
use super::net;
use crate::topology::Netns;

/// How often a server looks at its stop flag.
const TICK: Duration = Duration::from_millis(50);
/// How long the short server waits for a connection's request line: short, as it serves one
/// connection at a time and a stalled one (its node's herd killed mid-handshake) holds up the
/// next.
const SHORT_WAIT: Duration = Duration::from_millis(100);

/// The servers of every node; they stop on drop.
pub struct Servers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Servers {
    /// Starts the servers of every node in `nodes` (in [`NODES`] order). The VIP must be on
    /// the nodes already (herd adds it), as the servers bind it.
    pub fn start(nodes: &[Netns]) -> anyhow::Result<Self> {
        let mut servers = Servers {
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
        };
        for (node, netns) in nodes.iter().enumerate() {
            // Sockets belong to the namespace they are made in, whichever thread serves them.
            let (udp, short, long) = netns.run(|| {
                let udp = UdpSocket::bind((VIP, UDP_PORT)).context("cannot bind the VIP")?;
                let short =
                    TcpListener::bind((VIP, SHORT_PORT)).context("cannot listen on the VIP")?;
                let long =
                    TcpListener::bind((VIP, LONG_PORT)).context("cannot listen on the VIP")?;
                Ok((udp, short, long))
            })?;
            let name = NODES[node].0;
            let stop = Arc::clone(&servers.stop);
            servers.spawn(format!("udp-{name}"), move || serve_udp(name, &udp, &stop))?;
            let stop = Arc::clone(&servers.stop);
            servers.spawn(format!("short-{name}"), move || {
                serve_short(name, &short, &stop)
            })?;
            let stop = Arc::clone(&servers.stop);
            servers.spawn(format!("long-{name}"), move || {
                serve_long(name, &long, &stop)
            })?;
        }
        Ok(servers)
    }

    fn spawn(
        &mut self,
        name: String,
        f: impl FnOnce() -> io::Result<()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let thread = std::thread::Builder::new()
            .name(name.clone())
            .spawn(move || {
                if let Err(error) = f() {
                    tracing::warn!("server {name} stopped: {error}");
                }
            })
            .context("cannot start a server thread")?;
        self.threads.push(thread);
        Ok(())
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Answers every datagram with `NAME:DATAGRAM` until `stop`.
fn serve_udp(name: &str, socket: &UdpSocket, stop: &AtomicBool) -> io::Result<()> {
    socket.set_read_timeout(Some(TICK))?;
    let mut buf = [0u8; 512];
    let mut answer = Vec::with_capacity(600);
    while !stop.load(Ordering::Relaxed) {
        let Ok((n, peer)) = socket.recv_from(&mut buf) else {
            continue;
        };
        answer.clear();
        answer.extend_from_slice(name.as_bytes());
        answer.push(b':');
        answer.extend_from_slice(&buf[..n]);
        // A full socket buffer loses this answer: the client counts it lost.
        let _ = socket.send_to(&answer, peer);
    }
    Ok(())
}

/// Accepts connections one at a time until `stop`, answering one line on each with
/// `NAME:LINE` and closing it.
fn serve_short(name: &str, listener: &TcpListener, stop: &AtomicBool) -> io::Result<()> {
    // accept() gives up after the receive timeout, so that the stop flag is seen.
    net::set_timeout(listener, libc::SO_RCVTIMEO, TICK)?;
    while !stop.load(Ordering::Relaxed) {
        let Ok((stream, _)) = listener.accept() else {
            continue;
        };
        if stream.set_read_timeout(Some(SHORT_WAIT)).is_err() {
            continue;
        }
        let mut line = String::new();
        if BufReader::new(&stream).read_line(&mut line).is_ok() {
            let _ = (&stream).write_all(format!("{name}:{}\n", line.trim()).as_bytes());
        }
    }
    Ok(())
}

/// Accepts connections until `stop`, each served by a thread of its own that answers every
/// line with `NAME:LINE` until the client closes it.
fn serve_long(
    name: &'static str,
    listener: &TcpListener,
    stop: &Arc<AtomicBool>,
) -> io::Result<()> {
    net::set_timeout(listener, libc::SO_RCVTIMEO, TICK)?;
    while !stop.load(Ordering::Relaxed) {
        let Ok((stream, _)) = listener.accept() else {
            continue;
        };
        let stop = Arc::clone(stop);
        // The connection threads end with their connection or with `stop`; they are not
        // joined, as a closed connection is all that is left of them.
        let _ = std::thread::Builder::new()
            .name(format!("line-{name}"))
            .spawn(move || serve_lines(name, &stream, &stop));
    }
    Ok(())
}

/// Answers each line of a long-lived connection with `NAME:LINE` until the client closes it,
/// or `stop`.
fn serve_lines(name: &str, stream: &TcpStream, stop: &AtomicBool) {
    if stream.set_read_timeout(Some(TICK)).is_err() {
        return;
    }
    let mut reader = BufReader::new(stream);
    let mut writer = stream;
    let mut line = String::new();
    while !stop.load(Ordering::Relaxed) {
        match reader.read_line(&mut line) {
            Ok(0) => return,
            Ok(_) => {
                let answer = format!("{name}:{}\n", line.trim());
                if writer.write_all(answer.as_bytes()).is_err() {
                    return;
                }
                line.clear();
            }
            // The time-out: a partial line stays in `line`.
            Err(error)
                if matches!(
                    error.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}
