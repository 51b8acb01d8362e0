//! Connections broken by a planned leave and by a join: long-lived TCP connections spread over
//! every node, a line exchanged on each, round after round, while one node leaves with
//! SIGTERM (it drains: its connections must keep working) and while it joins again (the
//! connections the others serve in the buckets it takes back must keep working too).

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddrV4, TcpStream};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use herd_config::Protocol;
use herd_testbed::address::source4 as source;
use herd_testbed::owner::Owners;
use herd_testbed::{socket, Netns, Signal};
use serde::Serialize;

use super::farm::{without, Farm, FarmSpec, ALL_UP, SETTLE};
use super::layout::{LONG_PORT, NODES, SHORT_PORT, SOURCES, VIP};
use super::pause;

/// The node that leaves and joins again.
const LEAVER: usize = 1;
/// How many long-lived connections are held.
const CONNECTIONS: usize = 100;
/// How long an exchange on a connection may take before it counts as broken.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(2);
/// The pause between two rounds of exchanges.
const ROUND_GAP: Duration = Duration::from_millis(100);
/// How long the rounds go on once the farm has agreed on its new view.
const AFTER_AGREED: Duration = Duration::from_secs(1);
/// How long the leaving node may take to exit once its connections are closed: its drain
/// ends when it counts none left (every 250 ms), or after drain_s (30 s by default).
const EXIT_BOUND: Duration = Duration::from_secs(40);
/// New short connections opened in the buckets the joining node took back.
const FRESH: usize = 10;

/// What the leave and the join did to the connections.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LeaveJoin {
    /// The node that left and joined again.
    pub node: String,
    /// Connections held when the node left.
    pub leave_connections: usize,
    /// Of those, the ones the leaving node served.
    pub leave_on_leaver: usize,
    /// Connections broken while it left (an exchange failed or another node answered).
    pub broken_by_leave: usize,
    /// Rounds of exchanges during the leave.
    pub leave_rounds: usize,
    /// From SIGTERM until the last survivor agreed on the view without the node, in ms.
    pub leave_agreed_ms: Option<f64>,
    /// How the leaving node's drain ended (its log line).
    pub drain_end: String,
    /// From closing its connections until it exited, in ms.
    pub exit_ms: Option<f64>,
    /// Connections held when the node joined again.
    pub join_connections: usize,
    /// Of those, the ones in buckets it took back (served by the others, drained there).
    pub join_in_moved_buckets: usize,
    /// Connections broken while it joined.
    pub broken_by_join: usize,
    /// Rounds of exchanges during the join.
    pub join_rounds: usize,
    /// From its start until it logged the agreed view with every node, in ms.
    pub join_agreed_ms: Option<f64>,
    /// New connections in the buckets it took back, and how many it answered.
    pub fresh: usize,
    /// Of those, the ones the joining node answered.
    pub fresh_to_joiner: usize,
    /// The first few broken connections, described.
    pub broken: Vec<String>,
}

/// A long-lived TCP connection to [`LONG_PORT`] and the node that serves it.
struct Held {
    from: SocketAddrV4,
    reader: BufReader<TcpStream>,
    node: usize,
    broken: bool,
}

impl Held {
    /// Sends `text` and reads the answer; `Err` says how the connection broke.
    fn exchange(&mut self, text: &str) -> Result<(), String> {
        let reply = (|| {
            self.reader
                .get_mut()
                .write_all(format!("{text}\n").as_bytes())?;
            let mut line = String::new();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            Ok::<_, std::io::Error>(line.trim().to_owned())
        })();
        let expected = format!("{}:{text}", NODES[self.node]);
        match reply {
            Ok(reply) if reply == expected => Ok(()),
            Ok(reply) => Err(format!("answered `{reply}` instead of `{expected}`")),
            Err(error) => Err(error.to_string()),
        }
    }
}

/// Opens a long-lived connection from each of `from` (in the client's namespace) and learns,
/// with a first exchange, which node serves each.
fn hold(client: &Netns, from: Vec<SocketAddrV4>) -> anyhow::Result<Vec<Held>> {
    let streams = client.run(|| {
        from.into_iter()
            .map(|from| {
                connect(from, SocketAddrV4::new(VIP, LONG_PORT))
                    .with_context(|| format!("cannot connect from {from}"))
                    .map(|stream| (from, stream))
            })
            .collect::<anyhow::Result<Vec<_>>>()
    })??;
    streams
        .into_iter()
        .map(|(from, stream)| {
            let mut reader = BufReader::new(stream);
            reader
                .get_mut()
                .write_all(b"hello\n")
                .with_context(|| format!("connection from {from}"))?;
            let mut line = String::new();
            reader
                .read_line(&mut line)
                .with_context(|| format!("connection from {from}"))?;
            let name = line.trim().strip_suffix(":hello").unwrap_or_default();
            let node = NODES
                .iter()
                .position(|node| *node == name)
                .with_context(|| format!("connection from {from} answered `{}`", line.trim()))?;
            Ok(Held {
                from,
                reader,
                node,
                broken: false,
            })
        })
        .collect()
}

/// Exchanges `text` on every connection not broken yet; marks and describes the ones that
/// break.
fn round(held: &mut [Held], text: &str, broken: &mut Vec<String>) {
    for connection in held.iter_mut().filter(|c| !c.broken) {
        if let Err(why) = connection.exchange(text) {
            connection.broken = true;
            broken.push(format!(
                "{} (served by {}) at `{text}`: {why}",
                connection.from, NODES[connection.node]
            ));
        }
    }
}

/// `count` client flows (extra source addresses, ports from `first_port` on), those whose
/// TCP connections to `vip_port` `owners` gives to `node` only, if any.
fn clients(
    owners: &Owners,
    vip_port: u16,
    first_port: u16,
    node: Option<usize>,
    count: usize,
) -> anyhow::Result<Vec<SocketAddrV4>> {
    let mut found = Vec::with_capacity(count);
    for port in first_port..first_port.saturating_add(1000) {
        for i in 1..=SOURCES {
            let flow = SocketAddrV4::new(source(i), port);
            if node.is_none() || Some(owners.of(Protocol::Tcp, vip_port, flow)?) == node {
                found.push(flow);
                if found.len() == count {
                    return Ok(found);
                }
            }
        }
    }
    bail!("not enough client flows from port {first_port}")
}

/// Matches herd's line saying the farm agreed on the view whose members are `members`
/// (`alpha,charlie`, as [`names`] gives them).
fn agreed_line(members: &str) -> impl Fn(&str) -> bool + '_ {
    move |line: &str| {
        line.contains("view agreed")
            && line
                .split_whitespace()
                .any(|field| field.strip_prefix("members=") == Some(members))
    }
}

/// Runs the leave and the join on a fresh farm.
pub fn run(
    serial: usize,
    spec: &FarmSpec,
    interrupted: &Arc<AtomicBool>,
) -> anyhow::Result<LeaveJoin> {
    let mut farm = Farm::start(serial, spec)?;
    let all = farm.owners(ALL_UP)?;
    let mut result = LeaveJoin {
        node: NODES[LEAVER].to_owned(),
        ..LeaveJoin::default()
    };
    let mut broken = Vec::new();

    // The leave.
    let mut held = hold(
        &farm.bed.client.netns,
        clients(&all, LONG_PORT, 50000, None, CONNECTIONS)?,
    )?;
    result.leave_connections = held.len();
    result.leave_on_leaver = held.iter().filter(|c| c.node == LEAVER).count();
    let survivors = names(without(LEAVER));
    let marks = farm.marks();
    let term_at = Instant::now();
    farm.herd(LEAVER)?.signal(Signal::SIGTERM)?;
    let mut agreed: [Option<Instant>; NODES.len()] = [None; NODES.len()];
    loop {
        pause(ROUND_GAP, interrupted)?;
        round(
            &mut held,
            &format!("leave-{}", result.leave_rounds),
            &mut broken,
        );
        result.leave_rounds += 1;
        for (node, herd) in farm.herds().filter(|&(node, _)| node != LEAVER) {
            if agreed[node].is_none() {
                agreed[node] = herd
                    .lines_since(marks[node], agreed_line(&survivors))
                    .first()
                    .map(|line| line.at);
            }
        }
        let last = (0..NODES.len())
            .filter(|&node| node != LEAVER)
            .map(|node| agreed[node])
            .collect::<Option<Vec<Instant>>>()
            .and_then(|all| all.into_iter().max());
        if let Some(last) = last {
            result.leave_agreed_ms = Some(ms(last, term_at));
            if last.elapsed() >= AFTER_AGREED {
                break;
            }
        }
        if term_at.elapsed() > SETTLE {
            bail!(
                "the survivors did not agree on a view without {} within {SETTLE:?}",
                NODES[LEAVER]
            );
        }
    }
    round(&mut held, "left", &mut broken);
    result.broken_by_leave = held.iter().filter(|c| c.broken).count();

    // The leaving node exits once the connections it serves are closed.
    held.retain(|c| c.node != LEAVER && !c.broken);
    let closed_at = Instant::now();
    let exited = farm.herd_mut(LEAVER)?.wait_timeout(EXIT_BOUND)?;
    if exited.is_some() {
        result.exit_ms = Some(ms(Instant::now(), closed_at));
    }
    result.drain_end = farm
        .herd(LEAVER)?
        .lines_since(marks[LEAVER], |line| line.contains("drain over"))
        .first()
        .map_or_else(
            || "no `drain over` line".to_owned(),
            |line| drain_message(&line.text),
        );
    if exited.is_none() {
        bail!(
            "{} did not exit within {EXIT_BOUND:?} of its connections' close",
            NODES[LEAVER]
        );
    }
    farm.forget_herd(LEAVER);
    // No wait for the survivors' whole shares: a survivor that released buckets to the other
    // in the new view drains them for as long as the connections held there stay open.

    // The join: as many connections again, the new ones in the buckets it will take back.
    let refill = CONNECTIONS.saturating_sub(held.len());
    held.extend(hold(
        &farm.bed.client.netns,
        clients(&all, LONG_PORT, 51000, Some(LEAVER), refill)?,
    )?);
    result.join_connections = held.len();
    result.join_in_moved_buckets = held
        .iter()
        .map(|c| all.of(Protocol::Tcp, LONG_PORT, c.from))
        .collect::<anyhow::Result<Vec<usize>>>()?
        .into_iter()
        .filter(|&owner| owner == LEAVER)
        .count();
    let everyone = names(ALL_UP);
    let start_at = Instant::now();
    farm.spawn_herd(LEAVER)?;
    let mut joined = None;
    loop {
        pause(ROUND_GAP, interrupted)?;
        round(
            &mut held,
            &format!("join-{}", result.join_rounds),
            &mut broken,
        );
        result.join_rounds += 1;
        if joined.is_none() {
            joined = farm
                .herd(LEAVER)?
                .lines_since(0, agreed_line(&everyone))
                .first()
                .map(|line| line.at);
        }
        if let Some(at) = joined {
            result.join_agreed_ms = Some(ms(at, start_at));
            if at.elapsed() >= AFTER_AGREED {
                break;
            }
        }
        if start_at.elapsed() > SETTLE {
            bail!("{} did not rejoin within {SETTLE:?}", NODES[LEAVER]);
        }
    }
    round(&mut held, "joined", &mut broken);
    let fresh = clients(&all, SHORT_PORT, 52000, Some(LEAVER), FRESH)?;
    result.fresh = fresh.len();
    result.fresh_to_joiner = farm.bed.client.netns.run(|| {
        fresh
            .iter()
            .filter(|&&from| ask(from) == Some(LEAVER))
            .count()
    })?;
    pause(AFTER_AGREED, interrupted)?;
    round(&mut held, "still", &mut broken);
    result.broken_by_join = held.iter().filter(|c| c.broken).count();
    broken.truncate(10);
    result.broken = broken;
    Ok(result)
}

/// One line over a new short connection from `from`: the node that answered.
fn ask(from: SocketAddrV4) -> Option<usize> {
    let stream = connect(from, SocketAddrV4::new(VIP, SHORT_PORT)).ok()?;
    (&stream).write_all(b"fresh\n").ok()?;
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line).ok()?;
    let name = line.trim().strip_suffix(":fresh")?;
    NODES.iter().position(|node| *node == name)
}

/// A TCP connection from `from` to `to`, given up after [`EXCHANGE_TIMEOUT`] as its exchanges
/// are.
fn connect(from: SocketAddrV4, to: SocketAddrV4) -> std::io::Result<TcpStream> {
    socket::connect(from.into(), to.into(), EXCHANGE_TIMEOUT)
}

/// The members named as herd logs them: `alpha,charlie`.
fn names(up: [bool; NODES.len()]) -> String {
    NODES
        .iter()
        .zip(up)
        .filter(|&(_, up)| up)
        .map(|(name, _)| *name)
        .collect::<Vec<_>>()
        .join(",")
}

/// The message of a `drain over` log line, without its timestamp and fields.
fn drain_message(line: &str) -> String {
    line.find("drain over")
        .map_or(line, |at| &line[at..])
        .trim()
        .to_owned()
}

/// Milliseconds from `since` to `at`.
fn ms(at: Instant, since: Instant) -> f64 {
    at.saturating_duration_since(since).as_secs_f64() * 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_named_in_node_order() {
        assert_eq!(names(without(1)), "alpha,charlie");
        assert_eq!(names(ALL_UP), "alpha,bravo,charlie");
    }

    #[test]
    fn an_agreed_view_is_recognised_by_its_whole_member_list() {
        let matches = agreed_line("alpha,charlie");
        assert!(matches(
            "INFO herd: view agreed by every live node epoch=3 members=alpha,charlie"
        ));
        assert!(!matches(
            "INFO herd: view agreed by every live node epoch=3 members=alpha,charlie,delta"
        ));
        assert!(!matches(
            "INFO herd: new view epoch=3 members=alpha,charlie"
        ));
    }
}
