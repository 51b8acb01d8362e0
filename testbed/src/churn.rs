//! Connection churn: many short TCP connections from a client, as a busy front end sees
//! them, each from a source address and port of its own, opened without blocking, hundreds at a
//! time, and reset as soon as its handshake completes (`SO_LINGER` 0), so that neither side
//! keeps it in TIME_WAIT. Bounded by a count and a deadline; counts the handshakes that
//! completed.

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::netns::Netns;
use crate::socket;

/// How long a connection may take to open before it counts as failed: a SYN lost once is
/// sent again after a second.
const CONNECT_TIME: Duration = Duration::from_secs(3);

/// What a churn opens, and how much of it at most.
#[derive(Clone, Copy, Debug)]
pub struct Churn {
    /// The server every connection goes to.
    pub to: SocketAddr,
    /// How many connections to open.
    pub count: usize,
    /// How long the churn lasts at most.
    pub within: Duration,
    /// How many connections are being opened at any moment.
    pub in_flight: usize,
}

/// What a churn did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Churned {
    /// Connections whose handshake completed, then reset.
    pub opened: usize,
    /// Connections that failed or did not open in time.
    pub failed: usize,
    /// How long it took.
    pub took: Duration,
}

impl Churned {
    /// Connections opened a second.
    pub fn rate(&self) -> f64 {
        self.opened as f64 / self.took.as_secs_f64().max(1e-9)
    }
}

/// A connection being opened.
struct Opening {
    stream: TcpStream,
    since: Instant,
}

/// Opens and resets `churn.count` connections from `netns` to `churn.to`, one from each of
/// `from` in turn (each source address and port used once: a tuple used again would only
/// refresh what the first connection left behind), until the count is reached, `from` is
/// exhausted or `churn.within` has passed.
pub fn churn(
    netns: &Netns,
    churn: &Churn,
    from: impl Iterator<Item = SocketAddr> + Send,
) -> anyhow::Result<Churned> {
    netns.run(|| run(churn, from))?
}

fn run(churn: &Churn, mut from: impl Iterator<Item = SocketAddr>) -> anyhow::Result<Churned> {
    let started = Instant::now();
    let until = started + churn.within;
    let mut opening: Vec<Opening> = Vec::with_capacity(churn.in_flight);
    let (mut opened, mut failed) = (0, 0);
    let mut exhausted = false;
    loop {
        let now = Instant::now();
        while !exhausted && opening.len() < churn.in_flight && opened + opening.len() < churn.count
        {
            let Some(source) = from.next() else {
                exhausted = true;
                break;
            };
            let stream = socket::start_connect(source, churn.to)
                .with_context(|| format!("cannot connect from {source} to {}", churn.to))?;
            // Closed with a reset, so that no side keeps the connection in TIME_WAIT.
            nix::sys::socket::setsockopt(
                &stream,
                nix::sys::socket::sockopt::Linger,
                &libc::linger {
                    l_onoff: 1,
                    l_linger: 0,
                },
            )
            .context("SO_LINGER")?;
            opening.push(Opening { stream, since: now });
        }
        if opening.is_empty() || now >= until {
            failed += opening.len();
            break;
        }
        let mut fds: Vec<libc::pollfd> = opening
            .iter()
            .map(|o| socket::pollfd(&o.stream, libc::POLLOUT))
            .collect();
        socket::poll(&mut fds, Duration::from_millis(100)).context("poll")?;
        let now = Instant::now();
        let mut index = 0;
        opening.retain(|o| {
            let events = fds[index].revents;
            index += 1;
            if events != 0 {
                match socket::connect_result(&o.stream) {
                    Ok(()) => opened += 1,
                    Err(_) => failed += 1,
                }
                false
            } else if now - o.since > CONNECT_TIME {
                failed += 1;
                false
            } else {
                true
            }
        });
    }
    Ok(Churned {
        opened,
        failed,
        took: started.elapsed(),
    })
}
