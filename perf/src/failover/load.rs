//! The client's steady load, from one thread in the client's namespace: UDP requests sent
//! continuously from one flow per chosen bucket (each flow its own socket, bound to its source
//! address and port), and short TCP connections opened continuously in the same buckets. Every
//! answer is recorded with the moment it came and the node that gave it. Bounded in time.

use std::io::{self, Read, Write};
use std::net::{SocketAddrV4, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::Context;
use herd_testbed::socket::{self, pollfd};

use super::layout::{NODES, SHORT_PORT, UDP_PORT, VIP};

/// What the load sends.
pub struct Plan {
    /// The UDP flows, one per bucket.
    pub udp: Vec<SocketAddrV4>,
    /// For each bucket, the client addresses and ports its TCP connections come from, each
    /// used once (an address and port whose connection has just closed waits out TIME-WAIT).
    /// Empty: no TCP.
    pub tcp: Vec<Vec<SocketAddrV4>>,
    /// How often each UDP flow sends a request.
    pub udp_interval: Duration,
    /// How often a TCP connection is opened in each bucket.
    pub tcp_interval: Duration,
    /// How long a TCP connection may take to answer before it is given up.
    pub tcp_timeout: Duration,
    /// When to stop early, if ever.
    pub goal: Option<Goal>,
}

/// Stop once, after the kill, every UDP flow and every bucket's TCP connections have been
/// answered by these nodes, and `linger` more.
pub struct Goal {
    /// For each UDP flow, the node that must answer it.
    pub udp: Vec<usize>,
    /// For each bucket, the node that must answer a TCP connection in it.
    pub tcp: Vec<usize>,
    /// How long the load goes on once the goal is met.
    pub linger: Duration,
}

/// What the driving thread tells the load.
#[derive(Default)]
pub struct Control {
    /// Stop now.
    pub stop: AtomicBool,
    /// When the victim was killed: from then on, the goal is watched.
    pub kill_at: OnceLock<Instant>,
}

/// An answer: when it came and which node (index in [`NODES`]) gave it.
#[derive(Clone, Copy, Debug)]
pub struct Answer {
    /// When the answer was read.
    pub at: Instant,
    /// The node that answered.
    pub node: usize,
}

/// Everything the load saw.
pub struct Records {
    /// For each UDP flow, its answers.
    pub udp: Vec<Vec<Answer>>,
    /// For each bucket, the TCP connections answered.
    pub tcp: Vec<Vec<Answer>>,
    /// UDP requests sent.
    pub udp_sent: u64,
    /// TCP connections opened.
    pub tcp_opened: u64,
    /// TCP connections that failed or timed out.
    pub tcp_failed: u64,
    /// Buckets that ran out of client addresses and ports before the end.
    pub tcp_exhausted: usize,
}

/// A short TCP connection under way.
struct Attempt {
    bucket: usize,
    stream: TcpStream,
    opened: Instant,
    /// Whether the handshake is done and the request sent.
    sent: bool,
    reply: Vec<u8>,
}

/// What became of an attempt in one turn of the loop.
enum Outcome {
    Pending,
    Answered(usize),
    Failed,
}

/// Runs the load until `control.stop`, `until`, or the goal met; in the calling thread's
/// namespace.
pub fn run(plan: &Plan, control: &Control, until: Instant) -> anyhow::Result<Records> {
    let start = Instant::now();
    let sockets = plan
        .udp
        .iter()
        .map(|&flow| {
            let socket = UdpSocket::bind(flow)
                .with_context(|| format!("cannot bind the client flow {flow}"))?;
            socket
                .connect((VIP, UDP_PORT))
                .context("cannot connect a UDP socket to the VIP")?;
            socket
                .set_nonblocking(true)
                .context("cannot make a UDP socket non-blocking")?;
            Ok(socket)
        })
        .collect::<anyhow::Result<Vec<UdpSocket>>>()?;
    let mut records = Records {
        udp: vec![Vec::new(); sockets.len()],
        tcp: vec![Vec::new(); plan.tcp.len()],
        udp_sent: 0,
        tcp_opened: 0,
        tcp_failed: 0,
        tcp_exhausted: 0,
    };
    // Staggered, so that the requests go out evenly rather than in bursts.
    let stagger = |interval: Duration, i: usize, n: usize| {
        start + interval.mul_f64(i as f64 / n.max(1) as f64)
    };
    let mut udp_next: Vec<Instant> = (0..sockets.len())
        .map(|i| stagger(plan.udp_interval, i, sockets.len()))
        .collect();
    let mut tcp_next: Vec<Instant> = (0..plan.tcp.len())
        .map(|i| stagger(plan.tcp_interval, i, plan.tcp.len()))
        .collect();
    let mut tcp_used = vec![0usize; plan.tcp.len()];
    let mut attempts: Vec<Attempt> = Vec::new();
    let mut fds: Vec<libc::pollfd> = Vec::new();
    let mut progress = Progress::new(plan);
    let mut buf = [0u8; 512];
    loop {
        let now = Instant::now();
        if control.stop.load(Ordering::Relaxed) || now >= until {
            break;
        }
        if let (Some(met), Some(goal)) = (progress.met, &plan.goal) {
            if now >= met + goal.linger {
                break;
            }
        }
        for (socket, next) in sockets.iter().zip(&mut udp_next) {
            if now >= *next {
                // A full send buffer loses the request: it counts as unanswered.
                let _ = socket.send(b"s");
                records.udp_sent += 1;
                *next = later(*next, plan.udp_interval, now);
            }
        }
        for (bucket, pool) in plan.tcp.iter().enumerate() {
            if now < tcp_next[bucket] {
                continue;
            }
            tcp_next[bucket] = later(tcp_next[bucket], plan.tcp_interval, now);
            let Some(&from) = pool.get(tcp_used[bucket]) else {
                if tcp_used[bucket] == pool.len() {
                    records.tcp_exhausted += 1;
                    tcp_used[bucket] += 1;
                }
                continue;
            };
            tcp_used[bucket] += 1;
            records.tcp_opened += 1;
            match socket::start_connect(from.into(), SocketAddrV4::new(VIP, SHORT_PORT).into()) {
                Ok(stream) => attempts.push(Attempt {
                    bucket,
                    stream,
                    opened: now,
                    sent: false,
                    reply: Vec::new(),
                }),
                Err(_) => records.tcp_failed += 1,
            }
        }
        let before = attempts.len();
        attempts.retain(|attempt| now.duration_since(attempt.opened) < plan.tcp_timeout);
        records.tcp_failed += (before - attempts.len()) as u64;

        fds.clear();
        fds.extend(sockets.iter().map(|socket| pollfd(socket, libc::POLLIN)));
        fds.extend(attempts.iter().map(|attempt| {
            pollfd(
                &attempt.stream,
                if attempt.sent {
                    libc::POLLIN
                } else {
                    libc::POLLOUT
                },
            )
        }));
        socket::poll(&mut fds, Duration::from_millis(1)).context("poll")?;
        let now = Instant::now();
        for (flow, (socket, fd)) in sockets.iter().zip(&fds).enumerate() {
            if fd.revents == 0 {
                continue;
            }
            loop {
                match socket.recv(&mut buf) {
                    Ok(n) => {
                        if let Some(node) = node_of(&buf[..n]) {
                            records.udp[flow].push(Answer { at: now, node });
                            progress.udp(plan, control, flow, node, now);
                        }
                    }
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                    // An ICMP error from an earlier request: the next read goes on.
                    Err(_) => {}
                }
            }
        }
        let mut finished = Vec::new();
        for (index, (attempt, fd)) in attempts.iter_mut().zip(&fds[sockets.len()..]).enumerate() {
            if fd.revents == 0 {
                continue;
            }
            match step(attempt, &mut buf) {
                Outcome::Pending => {}
                Outcome::Answered(node) => {
                    records.tcp[attempt.bucket].push(Answer { at: now, node });
                    progress.tcp(plan, control, attempt.bucket, node, now);
                    finished.push(index);
                }
                Outcome::Failed => {
                    records.tcp_failed += 1;
                    finished.push(index);
                }
            }
        }
        for index in finished.into_iter().rev() {
            attempts.swap_remove(index);
        }
    }
    records.tcp_failed += attempts.len() as u64;
    Ok(records)
}

/// Moves a short connection on once its socket has an event: sends the request once the
/// handshake is done, then reads the answer line.
fn step(attempt: &mut Attempt, buf: &mut [u8]) -> Outcome {
    if !attempt.sent {
        if socket::connect_result(&attempt.stream).is_err() {
            return Outcome::Failed;
        }
        // Two bytes into an empty send buffer: the write is whole or fails.
        if (&attempt.stream).write(b"p\n").ok() != Some(2) {
            return Outcome::Failed;
        }
        attempt.sent = true;
        return Outcome::Pending;
    }
    match (&attempt.stream).read(buf) {
        Ok(0) => Outcome::Failed,
        Ok(n) => {
            attempt.reply.extend_from_slice(&buf[..n]);
            if !attempt.reply.contains(&b'\n') {
                return Outcome::Pending;
            }
            node_of(&attempt.reply).map_or(Outcome::Failed, Outcome::Answered)
        }
        Err(error) if error.kind() == io::ErrorKind::WouldBlock => Outcome::Pending,
        Err(_) => Outcome::Failed,
    }
}

/// The next time after `next` a periodic action is due; never in the past, so that a loop
/// that fell behind does not send a burst.
fn later(next: Instant, interval: Duration, now: Instant) -> Instant {
    let due = next + interval;
    if due < now {
        now + interval
    } else {
        due
    }
}

/// The node that wrote the answer `NAME:...`.
fn node_of(answer: &[u8]) -> Option<usize> {
    let name = answer.split(|&b| b == b':').next()?;
    NODES.iter().position(|node| node.as_bytes() == name)
}

/// How far the goal is met, once the victim has been killed.
struct Progress {
    udp_left: Vec<bool>,
    tcp_left: Vec<bool>,
    left: usize,
    met: Option<Instant>,
}

impl Progress {
    fn new(plan: &Plan) -> Self {
        let (udp, tcp) = plan
            .goal
            .as_ref()
            .map_or((0, 0), |goal| (goal.udp.len(), goal.tcp.len()));
        Progress {
            udp_left: vec![true; udp],
            tcp_left: vec![true; tcp],
            left: udp + tcp,
            met: None,
        }
    }

    fn udp(&mut self, plan: &Plan, control: &Control, flow: usize, node: usize, now: Instant) {
        let expected = plan.goal.as_ref().and_then(|goal| goal.udp.get(flow));
        if expected == Some(&node) && control.kill_at.get().is_some_and(|&kill| now > kill) {
            if let Some(left) = self.udp_left.get_mut(flow) {
                if std::mem::take(left) {
                    self.done(now);
                }
            }
        }
    }

    fn tcp(&mut self, plan: &Plan, control: &Control, bucket: usize, node: usize, now: Instant) {
        let expected = plan.goal.as_ref().and_then(|goal| goal.tcp.get(bucket));
        if expected == Some(&node) && control.kill_at.get().is_some_and(|&kill| now > kill) {
            if let Some(left) = self.tcp_left.get_mut(bucket) {
                if std::mem::take(left) {
                    self.done(now);
                }
            }
        }
    }

    /// One more flow or bucket answered by its new owner.
    fn done(&mut self, now: Instant) {
        self.left -= 1;
        if self.left == 0 {
            self.met = Some(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_name_their_node() {
        assert_eq!(node_of(b"alpha:s"), Some(0));
        assert_eq!(node_of(b"charlie:p\n"), Some(2));
        assert_eq!(node_of(b"delta:s"), None);
        assert_eq!(node_of(b""), None);
    }

    #[test]
    fn a_late_loop_does_not_burst() {
        let start = Instant::now();
        let ms = Duration::from_millis;
        assert_eq!(later(start, ms(5), start + ms(3)), start + ms(5));
        assert_eq!(later(start, ms(5), start + ms(20)), start + ms(25));
    }
}
