//! The services every node runs, standing for the application: each answers `NAME:REQUEST`, so
//! that the client sees which node served it. Each runs in threads of the bed's user, its
//! sockets made in the node's namespace; they keep running when a node's herd is killed, as an
//! application does when only herd dies, and stop when dropped.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use herd_config::Protocol;

use crate::address::Family;
use crate::farm::Host;
use crate::socket;

/// How often a responder looks at its stop flag.
const TICK: Duration = Duration::from_millis(50);

/// What a service answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Each UDP datagram with `NAME:DATAGRAM`.
    Udp,
    /// One line per TCP connection with `NAME:LINE`, then closes it; one connection at a
    /// time.
    TcpOnce,
    /// Every line of a TCP connection with `NAME:LINE` until the client closes it: the
    /// long-lived connections, each served by a thread of its own.
    TcpLines,
    /// Accepts each TCP connection and closes it at once, unrecorded: the churn of short
    /// connections, by the hundred thousand.
    TcpAccept,
}

/// Where a service listens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum On {
    /// On the VIP, which herd must have added to the node already.
    Vip,
    /// On the node's own address in the VIP's family, which herd must leave alone.
    Own,
}

/// A service every node runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Service {
    /// What it answers.
    pub kind: Kind,
    /// Where it listens.
    pub on: On,
    /// Its port.
    pub port: u16,
}

/// How the responders run.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// The VIP the services of [`On::Vip`] listen on.
    pub vip: IpAddr,
    /// How long a [`Kind::TcpOnce`] service waits for a connection's request line before it
    /// gives the connection up and takes the next.
    pub line_wait: Duration,
    /// Whether every request served is recorded as a [`Hit`].
    pub record: bool,
}

/// A request a responder served: which node, on which port, from whom.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hit {
    /// The node's index.
    pub node: usize,
    /// UDP or TCP.
    pub protocol: Protocol,
    /// The service's port.
    pub port: u16,
    /// The client.
    pub peer: SocketAddr,
}

/// The responders of every node; they stop on drop.
pub struct Responders {
    stop: Arc<AtomicBool>,
    hits: Arc<Mutex<Vec<Hit>>>,
    threads: Vec<JoinHandle<()>>,
}

/// What a responder's thread shares.
#[derive(Clone)]
struct Shared {
    node: usize,
    name: Arc<str>,
    port: u16,
    stop: Arc<AtomicBool>,
    hits: Option<Arc<Mutex<Vec<Hit>>>>,
}

impl Shared {
    fn record(&self, protocol: Protocol, peer: SocketAddr) {
        if let Some(hits) = &self.hits {
            hits.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(Hit {
                    node: self.node,
                    protocol,
                    port: self.port,
                    peer,
                });
        }
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn answer(&self, request: &[u8]) -> Vec<u8> {
        let mut answer = Vec::with_capacity(self.name.len() + 1 + request.len());
        answer.extend_from_slice(self.name.as_bytes());
        answer.push(b':');
        answer.extend_from_slice(request);
        answer
    }
}

/// A bound socket of a service, ready to serve.
enum Bound {
    Udp(UdpSocket),
    TcpOnce(TcpListener),
    TcpLines(TcpListener),
    TcpAccept(TcpListener),
}

impl Responders {
    /// Starts `services` on each of `nodes`; they listen when this returns.
    pub fn start(
        nodes: &[Host],
        services: &[Service],
        settings: &Settings,
    ) -> anyhow::Result<Self> {
        let mut responders = Responders {
            stop: Arc::new(AtomicBool::new(false)),
            hits: Arc::new(Mutex::new(Vec::new())),
            threads: Vec::new(),
        };
        for (index, node) in nodes.iter().enumerate() {
            let sockets = node.netns.run(|| {
                services
                    .iter()
                    .map(|service| bind(service, node, settings))
                    .collect::<anyhow::Result<Vec<Bound>>>()
            })??;
            for (service, bound) in services.iter().zip(sockets) {
                let shared = Shared {
                    node: index,
                    name: Arc::from(node.name.as_str()),
                    port: service.port,
                    stop: Arc::clone(&responders.stop),
                    hits: settings.record.then(|| Arc::clone(&responders.hits)),
                };
                let line_wait = settings.line_wait;
                let thread = std::thread::Builder::new()
                    .name(format!("{}-{}", node.name, service.port))
                    .spawn(move || match bound {
                        Bound::Udp(socket) => serve_udp(&shared, &socket),
                        Bound::TcpOnce(listener) => serve_once(&shared, &listener, line_wait),
                        Bound::TcpLines(listener) => serve_connections(&shared, &listener),
                        Bound::TcpAccept(listener) => serve_accept(&shared, &listener),
                    })
                    .context("cannot start a responder thread")?;
                responders.threads.push(thread);
            }
        }
        Ok(responders)
    }

    /// Every request served so far, if recorded.
    pub fn hits(&self) -> Vec<Hit> {
        self.hits
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Drop for Responders {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Binds `service`'s socket on `node`, in the calling thread's namespace.
fn bind(service: &Service, node: &Host, settings: &Settings) -> anyhow::Result<Bound> {
    let address = match service.on {
        On::Vip => settings.vip,
        On::Own => Family::of_address(settings.vip).of(node.address),
    };
    let at = SocketAddr::new(address, service.port);
    Ok(match service.kind {
        Kind::Udp => {
            let socket = UdpSocket::bind(at)
                .with_context(|| format!("cannot bind {at} on node {}", node.name))?;
            socket.set_read_timeout(Some(TICK))?;
            Bound::Udp(socket)
        }
        Kind::TcpOnce | Kind::TcpLines | Kind::TcpAccept => {
            let listener = TcpListener::bind(at)
                .with_context(|| format!("cannot listen on {at} on node {}", node.name))?;
            // accept() gives up after the receive time-out, so that the stop flag is seen.
            socket::set_receive_timeout(&listener, TICK)?;
            match service.kind {
                Kind::TcpOnce => Bound::TcpOnce(listener),
                Kind::TcpLines => Bound::TcpLines(listener),
                _ => Bound::TcpAccept(listener),
            }
        }
    })
}

/// Answers every datagram on `socket` until stopped.
fn serve_udp(shared: &Shared, socket: &UdpSocket) {
    let mut buf = [0u8; 512];
    while !shared.stopped() {
        // The time-out, or an ICMP error of an earlier answer: look at the flag, go on.
        let Ok((n, peer)) = socket.recv_from(&mut buf) else {
            continue;
        };
        shared.record(Protocol::Udp, peer);
        // A full socket buffer loses this answer: the client counts it lost.
        let _ = socket.send_to(&shared.answer(&buf[..n]), peer);
    }
}

/// Accepts connections one at a time until stopped, answering one line on each and closing
/// it.
fn serve_once(shared: &Shared, listener: &TcpListener, line_wait: Duration) {
    while !shared.stopped() {
        let Ok((stream, peer)) = listener.accept() else {
            continue;
        };
        shared.record(Protocol::Tcp, peer);
        if stream.set_read_timeout(Some(line_wait)).is_err() {
            continue;
        }
        let mut line = String::new();
        if BufReader::new(&stream).read_line(&mut line).is_ok() {
            let answer = shared.answer(format!("{}\n", line.trim()).as_bytes());
            let _ = (&stream).write_all(&answer);
        }
    }
}

/// Accepts connections and closes them until stopped.
fn serve_accept(shared: &Shared, listener: &TcpListener) {
    while !shared.stopped() {
        // The time-out, or a connection reset before it was accepted: go on either way.
        let _ = listener.accept();
    }
}

/// Accepts connections until stopped, each served by a thread of its own.
fn serve_connections(shared: &Shared, listener: &TcpListener) {
    while !shared.stopped() {
        let Ok((stream, peer)) = listener.accept() else {
            continue;
        };
        shared.record(Protocol::Tcp, peer);
        let connection = shared.clone();
        // The connection threads end with their connection or when stopped; they are not
        // joined, as a closed connection is all that is left of them.
        let _ = std::thread::Builder::new()
            .name(format!("line-{}", shared.name))
            .spawn(move || serve_lines(&connection, &stream));
    }
}

/// Answers each line of a long-lived connection until the client closes it, or stopped.
fn serve_lines(shared: &Shared, stream: &TcpStream) {
    if stream.set_read_timeout(Some(TICK)).is_err() {
        return;
    }
    let mut reader = BufReader::new(stream);
    let mut writer = stream;
    let mut line = String::new();
    while !shared.stopped() {
        match reader.read_line(&mut line) {
            Ok(0) => return,
            Ok(_) => {
                let answer = shared.answer(format!("{}\n", line.trim()).as_bytes());
                if writer.write_all(&answer).is_err() {
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
