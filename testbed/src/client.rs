//! What a client does to a farm: a UDP request from each of many flows, paced; a TCP request
//! over a new connection from each of many addresses, from a few threads; pings. Each returns
//! every answer, so that its caller can check which node gave it and that none came twice.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::address::Family;
use crate::netns::Netns;
use crate::socket::{self, icmp_echo_reply, icmp_echo_request};

/// At most this many UDP requests wait for their first answer at once; the rest wait their
/// turn, so that no queue on the way (the backlog of a veth, a server's socket buffer) drops
/// a burst.
const IN_FLIGHT: usize = 32;
/// After this long without an answer, a request no longer holds back the next ones (it may
/// still be answered until the deadline of [`udp_exchange`]).
const PACING: Duration = Duration::from_millis(50);
/// How long a flow's socket stays open after its first answer, to catch a second one. Every
/// node gets the request at the same moment, so a second answer would come within a
/// millisecond or so of the first.
pub const LINGER: Duration = Duration::from_millis(100);
/// How long a TCP request may take: long enough for a lost SYN to be sent again (after 1 s).
const TCP_TIMEOUT: Duration = Duration::from_secs(5);
/// How many threads open the TCP connections.
const TCP_THREADS: usize = 4;

/// Sends one request, `u{i}`, to `to` from each of `flows` (the `i`th) in `client`'s
/// namespace, and returns what each flow got back within `wait` of its request (and
/// [`LINGER`] after its first answer).
pub fn udp_exchange(
    client: &Netns,
    to: SocketAddr,
    flows: &[SocketAddr],
    wait: Duration,
) -> anyhow::Result<Vec<Vec<String>>> {
    /// A flow whose socket is open.
    struct Open {
        flow: usize,
        socket: UdpSocket,
        sent: Instant,
        answered: Option<Instant>,
    }
    client.run(|| {
        let mut answers = vec![Vec::new(); flows.len()];
        let mut open: Vec<Open> = Vec::new();
        let mut next = 0;
        while next < flows.len() || !open.is_empty() {
            let now = Instant::now();
            let mut in_flight = open
                .iter()
                .filter(|o| o.answered.is_none() && now - o.sent < PACING)
                .count();
            while in_flight < IN_FLIGHT && next < flows.len() {
                let flow = flows[next];
                let socket = socket::reused_udp(flow)
                    .with_context(|| format!("cannot bind the flow {flow}"))?;
                socket.set_nonblocking(true)?;
                socket
                    .send_to(format!("u{next}").as_bytes(), to)
                    .with_context(|| format!("cannot send from the flow {flow}"))?;
                open.push(Open {
                    flow: next,
                    socket,
                    sent: Instant::now(),
                    answered: None,
                });
                next += 1;
                in_flight += 1;
            }
            let mut fds: Vec<libc::pollfd> = open
                .iter()
                .map(|o| socket::pollfd(&o.socket, libc::POLLIN))
                .collect();
            socket::poll(&mut fds, Duration::from_millis(10)).context("poll")?;
            let now = Instant::now();
            let mut buf = [0u8; 512];
            for o in &mut open {
                while let Ok(n) = o.socket.recv(&mut buf) {
                    answers[o.flow].push(String::from_utf8_lossy(&buf[..n]).into_owned());
                    o.answered.get_or_insert(now);
                }
            }
            open.retain(|o| match o.answered {
                Some(at) => now - at < LINGER,
                None => now - o.sent < wait,
            });
        }
        Ok(answers)
    })?
}

/// Opens one TCP connection from each of `connections`' client addresses to its server
/// address, from a few threads in `client`'s namespace; sends the line `t{i}` on the `i`th
/// and returns the whole reply of each, without its line end. Fails at the first connection
/// that fails, once the threads have stopped: a broken farm then fails in seconds rather than
/// after a time-out per connection.
pub fn tcp_exchange(
    client: &Netns,
    connections: &[(SocketAddr, SocketAddr)],
) -> anyhow::Result<Vec<String>> {
    let failed = AtomicBool::new(false);
    let indexed: Vec<(usize, SocketAddr, SocketAddr)> = connections
        .iter()
        .enumerate()
        .map(|(i, &(from, to))| (i, from, to))
        .collect();
    let chunk = indexed.len().div_ceil(TCP_THREADS).max(1);
    let mut replies: Vec<(usize, String)> = std::thread::scope(|scope| {
        let threads: Vec<_> = indexed
            .chunks(chunk)
            .map(|part| {
                let failed = &failed;
                scope.spawn(move || -> anyhow::Result<Vec<(usize, String)>> {
                    client.enter()?;
                    let mut replies = Vec::new();
                    for &(i, from, to) in part {
                        if failed.load(Ordering::Relaxed) {
                            break;
                        }
                        match ask_tcp(from, to, &format!("t{i}")) {
                            Ok(reply) => replies.push((i, reply)),
                            Err(error) => {
                                failed.store(true, Ordering::Relaxed);
                                bail!("connection {i} from {from} to {to}: {error}");
                            }
                        }
                    }
                    Ok(replies)
                })
            })
            .collect();
        let mut replies = Vec::new();
        for thread in threads {
            match thread.join() {
                Ok(part) => replies.extend(part?),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        anyhow::Ok(replies)
    })?;
    replies.sort_by_key(|(i, _)| *i);
    Ok(replies.into_iter().map(|(_, reply)| reply).collect())
}

/// One request `text` over a new TCP connection from `from` to `to`, in the calling thread's
/// namespace: the whole reply, without its line end.
pub fn ask_tcp(from: SocketAddr, to: SocketAddr, text: &str) -> io::Result<String> {
    let mut stream = socket::connect(from, to, TCP_TIMEOUT)?;
    stream.write_all(format!("{text}\n").as_bytes())?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply)?;
    Ok(reply.strip_suffix('\n').unwrap_or(&reply).to_owned())
}

/// Sends an ICMP echo request for each `(from, to)` from `client`'s namespace, and counts the
/// echo replies to each that arrive within `wait` (and [`LINGER`] after every request has had
/// one). Every address is of one family: ICMPv6 for IPv6.
pub fn ping(
    client: &Netns,
    pings: &[(IpAddr, IpAddr)],
    wait: Duration,
) -> anyhow::Result<Vec<usize>> {
    // The sequence number tells these replies from late ones to an earlier call.
    static SEQUENCE: AtomicU16 = AtomicU16::new(0);
    let sequence = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    let Some(&(first, _)) = pings.first() else {
        return Ok(Vec::new());
    };
    let family = Family::of_address(first);
    if let Some((from, to)) = pings
        .iter()
        .find(|(from, to)| Family::of_address(*from) != family || Family::of_address(*to) != family)
    {
        bail!("the pings are of one family: {from} to {to} is not {family}");
    }
    client.run(|| {
        // A raw ICMP socket gets a copy of every ICMP message of its family that reaches the
        // namespace.
        let receiver = socket::icmp_socket(family).context("cannot open a raw ICMP socket")?;
        for (i, &(from, to)) in pings.iter().enumerate() {
            let Ok(id) = u16::try_from(i) else {
                bail!("at most {} pings at once", u16::MAX);
            };
            let sender = socket::icmp_socket(family)?;
            // The bound address is the request's source.
            socket::bind(&sender, SocketAddr::new(from, 0))?;
            let request = icmp_echo_request(family, id, sequence, b"herd test bed");
            sender
                .send_to(&request, SocketAddr::new(to, 0))
                .with_context(|| format!("cannot ping {to} from {from}"))?;
        }
        let mut counts = vec![0; pings.len()];
        let mut until = Instant::now() + wait;
        let mut lingering = false;
        let mut buf = [0u8; 1500];
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            receiver.set_read_timeout(Some(left.max(Duration::from_micros(1))))?;
            if let Ok((n, from)) = receiver.recv_from(&mut buf) {
                let ping = icmp_echo_reply(family, &buf[..n]).filter(|&(_, seq)| seq == sequence);
                if let Some(i) = ping.map(|(id, _)| usize::from(id)) {
                    if pings.get(i).is_some_and(|p| p.1 == from.ip()) {
                        counts[i] += 1;
                    }
                }
            }
            // As for UDP: a second reply would come right after the first.
            if !lingering && counts.iter().all(|&c| c > 0) {
                lingering = true;
                until = Instant::now() + LINGER;
            }
        }
        Ok(counts)
    })?
}

/// How many ICMP echo replies of `family` `netns` has sent (its `Icmp: OutEchoReps`, or its
/// `Icmp6OutEchoReplies`).
pub fn echo_replies_sent(netns: &Netns, family: Family) -> anyhow::Result<u64> {
    // /proc/thread-self: /proc/self/net would be the namespace of the process, not the thread.
    let file = match family {
        Family::V4 => "snmp",
        Family::V6 => "snmp6",
    };
    let path = format!("/proc/thread-self/net/{file}");
    let counters = netns
        .run(|| std::fs::read_to_string(&path))?
        .context("cannot read the namespace's SNMP counters")?;
    let value = match family {
        Family::V4 => {
            // Two lines: the names, then the values.
            let mut icmp = counters.lines().filter(|l| l.starts_with("Icmp:"));
            let (Some(names), Some(values)) = (icmp.next(), icmp.next()) else {
                bail!("no Icmp: lines in the SNMP counters");
            };
            names
                .split_whitespace()
                .zip(values.split_whitespace())
                .find(|(name, _)| *name == "OutEchoReps")
                .context("no Icmp: OutEchoReps counter")?
                .1
        }
        // A line per counter: its name, then its value.
        Family::V6 => counters
            .lines()
            .filter_map(|line| line.split_once(char::is_whitespace))
            .find(|(name, _)| *name == "Icmp6OutEchoReplies")
            .context("no Icmp6OutEchoReplies counter")?
            .1
            .trim(),
    };
    value
        .parse()
        .with_context(|| format!("the echo replies counter in {path} is not a number"))
}
