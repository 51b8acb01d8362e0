//! The service every node runs on the VIP: a UDP responder that answers each datagram with
//! `NAME:DATAGRAM`, so that the client sees which node served it. One thread of the demo per
//! node, its socket made in the node's namespace. Responders stand for the application: they
//! keep running when a node's herd is killed, as an application does when only herd dies.

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;

use super::layout::{PORT, VIP};
use super::netns::Netns;

/// How often a responder looks at its stop flag.
const TICK: Duration = Duration::from_millis(50);

/// The responders of every node; they stop on drop.
pub struct Responders {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Responders {
    /// Starts a responder in each of `nodes`, named by `names`. The VIP must be on the nodes
    /// already (herd adds it when it starts), as they bind it.
    pub fn start(nodes: &[Netns], names: &[&'static str]) -> anyhow::Result<Self> {
        let mut responders = Responders {
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
        };
        for (netns, &name) in nodes.iter().zip(names) {
            let socket = netns.run(|| {
                let socket = UdpSocket::bind((VIP, PORT))
                    .with_context(|| format!("cannot bind {VIP}:{PORT} on node {name}"))?;
                socket.set_read_timeout(Some(TICK))?;
                Ok(socket)
            })?;
            let stop = Arc::clone(&responders.stop);
            let thread = std::thread::Builder::new()
                .name(format!("demo-{name}"))
                .spawn(move || serve(name, &socket, &stop))
                .context("cannot start a responder thread")?;
            responders.threads.push(thread);
        }
        Ok(responders)
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

/// Answers every datagram on `socket` with `NAME:DATAGRAM` until `stop`.
fn serve(name: &str, socket: &UdpSocket, stop: &AtomicBool) {
    let mut buf = [0u8; 512];
    let mut answer = Vec::with_capacity(600);
    while !stop.load(Ordering::Relaxed) {
        // The time-out, or an ICMP error of an earlier answer: look at the flag, go on.
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
}
