//! A steady stream of UDP requests: a fixed count to each of a few targets at a fixed rate,
//! the targets' requests interleaved, so that every target sees the same moments of a change
//! on the way (a link failing over) and the requests each lost to it can be compared.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::netns::Netns;
use crate::socket;

/// Where one series of requests goes.
#[derive(Clone, Debug)]
pub struct Target {
    /// The server: a VIP's service, or one on a node's own address.
    pub to: SocketAddr,
    /// The client's flows the requests come from in turn, so that a VIP's requests spread
    /// over the buckets these flows fall in.
    pub flows: Vec<SocketAddr>,
}

/// How fast and how long the stream runs.
#[derive(Clone, Copy, Debug)]
pub struct Pace {
    /// How many requests go to each target.
    pub count: usize,
    /// The time between two requests to one target.
    pub interval: Duration,
    /// How long answers are still counted after the last request.
    pub wait: Duration,
}

/// What the requests to one target got, in the order they were sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answered {
    /// How many answers each request got.
    pub answers: Vec<u32>,
    /// How long each request waited for its first answer, if it had one.
    pub waits: Vec<Option<Duration>>,
}

impl Answered {
    fn new(count: usize) -> Self {
        Answered {
            answers: vec![0; count],
            waits: vec![None; count],
        }
    }

    /// How many requests got no answer.
    pub fn lost(&self) -> usize {
        self.answers.iter().filter(|&&answers| answers == 0).count()
    }

    /// How many requests got more than one answer.
    pub fn repeated(&self) -> usize {
        self.answers.iter().filter(|&&answers| answers > 1).count()
    }

    /// The `percent`th percentile of the waits for a first answer of the requests in
    /// `requests` that had one; `None` if none had.
    pub fn wait_percentile(
        &self,
        requests: std::ops::Range<usize>,
        percent: usize,
    ) -> Option<Duration> {
        let mut waits: Vec<Duration> = self
            .waits
            .get(requests)?
            .iter()
            .flatten()
            .copied()
            .collect();
        waits.sort_unstable();
        let last = waits.len().checked_sub(1)?;
        waits.get(last * percent.min(100) / 100).copied()
    }
}

/// Sends request `s{i}` to every target at `start + i * interval` from `client`'s namespace,
/// `i` from 0 to `pace.count`, and counts the answers to each (a responder answers
/// `NAME:s{i}`). Calls `marked` once the requests numbered `mark` have gone: the moment to
/// change something. A late wake-up sends the requests that are due at once, so the count
/// and the mean rate hold.
pub fn steady_udp(
    client: &Netns,
    targets: &[Target],
    pace: &Pace,
    mark: usize,
    marked: impl FnOnce() + Send,
) -> anyhow::Result<Vec<Answered>> {
    if targets.iter().any(|target| target.flows.is_empty()) {
        bail!("every target of a stream needs a flow to send from");
    }
    client.run(|| {
        let sockets = targets
            .iter()
            .map(|target| {
                target
                    .flows
                    .iter()
                    .map(|&flow| {
                        let socket = socket::reused_udp(flow)
                            .with_context(|| format!("cannot bind the flow {flow}"))?;
                        socket.set_nonblocking(true)?;
                        Ok(socket)
                    })
                    .collect::<anyhow::Result<Vec<UdpSocket>>>()
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut answered = vec![Answered::new(pace.count); targets.len()];
        let mut marked = Some(marked);
        let start = Instant::now();
        let sent_at = |i: usize| start + pace.interval * i as u32;
        let end = start + pace.interval * u32::try_from(pace.count)? + pace.wait;
        let mut next = 0;
        let mut buf = [0u8; 512];
        loop {
            let now = Instant::now();
            while next < pace.count && sent_at(next) <= now {
                for (target, sockets) in targets.iter().zip(&sockets) {
                    let socket = &sockets[next % sockets.len()];
                    socket
                        .send_to(format!("s{next}").as_bytes(), target.to)
                        .with_context(|| format!("cannot send request {next} to {}", target.to))?;
                }
                if next == mark {
                    if let Some(marked) = marked.take() {
                        marked();
                    }
                }
                next += 1;
            }
            if now >= end {
                break;
            }
            let due = if next < pace.count {
                sent_at(next)
            } else {
                end
            };
            let mut fds: Vec<libc::pollfd> = sockets
                .iter()
                .flatten()
                .map(|socket| socket::pollfd(socket, libc::POLLIN))
                .collect();
            socket::poll(&mut fds, due.saturating_duration_since(now)).context("poll")?;
            let now = Instant::now();
            for (answered, sockets) in answered.iter_mut().zip(&sockets) {
                for socket in sockets {
                    while let Ok(n) = socket.recv(&mut buf) {
                        let Some(i) = request_number(&buf[..n]).filter(|&i| i < next) else {
                            continue;
                        };
                        answered.answers[i] += 1;
                        // A request sent late (see above) waited less than this says.
                        answered.waits[i].get_or_insert(now.saturating_duration_since(sent_at(i)));
                    }
                }
            }
        }
        Ok(answered)
    })?
}

/// The `i` of an answer `NAME:s{i}`.
fn request_number(answer: &[u8]) -> Option<usize> {
    let text = std::str::from_utf8(answer).ok()?;
    text.rsplit_once(":s")?.1.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_back_to_their_requests() {
        assert_eq!(request_number(b"alpha:s17"), Some(17));
        assert_eq!(request_number(b"alpha:u17"), None);
        assert_eq!(request_number(b"s17"), None);
    }

    #[test]
    fn lost_and_repeated_requests_are_counted() {
        let answered = Answered {
            answers: vec![1, 0, 2, 1, 0],
            waits: vec![None; 5],
        };
        assert_eq!(answered.lost(), 2);
        assert_eq!(answered.repeated(), 1);
    }

    #[test]
    fn percentiles_are_of_the_answered_requests_in_the_range() {
        let ms = Duration::from_millis;
        let answered = Answered {
            answers: vec![1, 1, 0, 1, 1],
            waits: vec![Some(ms(9)), Some(ms(1)), None, Some(ms(3)), Some(ms(100))],
        };
        assert_eq!(answered.wait_percentile(0..4, 0), Some(ms(1)));
        assert_eq!(answered.wait_percentile(0..4, 50), Some(ms(3)));
        assert_eq!(answered.wait_percentile(0..4, 100), Some(ms(9)));
        assert_eq!(answered.wait_percentile(2..3, 50), None);
        assert_eq!(answered.wait_percentile(0..9, 50), None);
    }
}
