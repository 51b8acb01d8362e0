//! A three-node farm end to end: `herd run` on three node namespaces joined by a bridge that
//! floods like a hub, a client namespace with many source addresses, and on every node a UDP
//! echo server and TCP servers that answer with the node's name. Every flow to the VIP must get
//! exactly one answer, from the node `herd whois` names; affinity must hold; traffic to the
//! nodes' own addresses must pass untouched; a node whose herd is killed must go quiet.
//!
//! Each test takes the dataplane mode; the `xdp` and `afxdp` modules run them in each.
//!
//! Needs root (namespaces, XDP); `scripts/test` runs it as root, as CI does.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{complete_checksums, ip, ip_show, needs_root, BpfFs, Herd, Netns, ScratchDir};
use herd_config::{FarmConfig, Mode, Protocol};
use herd_dataplane::table::BucketTable;
use herd_dataplane::FarmRules;
use herd_membership::farm_table;
use serde_json::Value;

/// The farm's VIP.
const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
/// The UDP echo service on the VIP, balanced per client address and port.
const UDP_PORT: u16 = 7;
/// A TCP service on the VIP balanced per client address (`client-ip`).
const STICKY_PORT: u16 = 80;
/// A TCP service on the VIP balanced per client address and port (`client-ip-port`).
const SPREAD_PORT: u16 = 81;
/// An ssh-like TCP service on each node's own address, which herd must leave alone.
const OWN_PORT: u16 = 22;
/// The nodes: name, own address, weight. The weights differ so that a share can be seen to
/// follow them.
const NODES: [(&str, Ipv4Addr, u32); 3] = [
    ("alpha", Ipv4Addr::new(198, 18, 0, 1), 1),
    ("bravo", Ipv4Addr::new(198, 18, 0, 2), 1),
    ("charlie", Ipv4Addr::new(198, 18, 0, 3), 2),
];
/// The client's main address.
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);
/// How many more addresses the client has, [`source`] 1 to `SOURCES`.
const SOURCES: u8 = 64;

/// The client's `i`th extra source address.
fn source(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 19, 1, i)
}

/// One flow from each extra source address and port in `ports`, interleaved so that
/// consecutive flows come from different addresses. Tests take disjoint port ranges so that no
/// two of their flows share an address and port.
fn flows(ports: std::ops::Range<u16>) -> Vec<SocketAddrV4> {
    ports
        .flat_map(|port| (1..=SOURCES).map(move |i| SocketAddrV4::new(source(i), port)))
        .collect()
}

/// The farm's configuration file.
fn config_text(mode: Mode) -> String {
    let nodes: String = NODES
        .iter()
        .map(|(name, address, weight)| {
            format!("[[node]]\nname = \"{name}\"\naddress = \"{address}\"\nweight = {weight}\n\n")
        })
        .collect();
    // A small table: `herd whois` computes it at every call, and the tests call it often.
    format!(
        r#"[farm]
name = "e2e"
vip = ["{VIP}"]
interface = "eth0"
buckets = 256
hash_key = "00112233445566778899aabbccddeeff"

{nodes}[[rule]]
protocol = "udp"
ports = ["{UDP_PORT}"]
affinity = "client-ip-port"

[[rule]]
protocol = "tcp"
ports = ["{STICKY_PORT}"]
affinity = "client-ip"

[[rule]]
protocol = "tcp"
ports = ["{SPREAD_PORT}"]
affinity = "client-ip-port"

[[rule]]
protocol = "icmp"

[dataplane]
mode = "{mode}"
"#
    )
}

/// The owner of every flow, computed from the configuration with the workspace's crates as
/// `herd whois` computes it (all nodes up), so that thousands of flows can be checked without
/// a process each; [`Owners::agree_with_whois`] holds it to `herd whois` itself.
struct Owners {
    rules: FarmRules,
    table: BucketTable,
}

impl Owners {
    /// The owners with every node of `config` up, as `herd run` takes them for now.
    fn new(config: &FarmConfig) -> Self {
        Owners {
            rules: FarmRules::from_config(config),
            table: farm_table(config, &[true; NODES.len()]).unwrap(),
        }
    }

    /// The index in [`NODES`] of the node that owns `client`'s traffic of `protocol` to
    /// `vip_port` (the port is not used for ICMP).
    fn of(&self, protocol: Protocol, vip_port: u16, client: SocketAddrV4) -> usize {
        let hash = self
            .rules
            .client_flow_hash(protocol, vip_port, IpAddr::V4(*client.ip()), client.port())
            .expect("a rule balances the flow");
        usize::from(self.table.owner(self.table.bucket_of(hash)))
    }

    /// Asks `herd whois` about every `step`th client and checks that it names the same node.
    fn agree_with_whois(
        &self,
        config: &Path,
        protocol: Protocol,
        vip_port: u16,
        clients: &[SocketAddrV4],
        step: usize,
    ) {
        let (name, client_text): (&str, fn(&SocketAddrV4) -> String) = match protocol {
            Protocol::Tcp => ("tcp", SocketAddrV4::to_string),
            Protocol::Udp => ("udp", SocketAddrV4::to_string),
            Protocol::Icmp => ("icmp", |c| c.ip().to_string()),
        };
        for client in clients.iter().step_by(step) {
            let output = Command::new(env!("CARGO_BIN_EXE_herd"))
                .args(["whois", &client_text(client), "--proto", name, "--json"])
                .args(["--port", &vip_port.to_string(), "-c"])
                .arg(config)
                .output()
                .expect("runs herd whois");
            assert!(
                output.status.success(),
                "herd whois {client}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            let answer: Value = serde_json::from_slice(&output.stdout).unwrap();
            assert_eq!(
                answer["owner"],
                NODES[self.of(protocol, vip_port, *client)].0,
                "herd whois {client} --proto {name} --port {vip_port}"
            );
        }
    }
}

/// What a server saw: which node, on which port, from whom.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Hit {
    node: usize,
    protocol: Protocol,
    port: u16,
    peer: SocketAddrV4,
}

/// The servers of every node, each in a thread of its own; they stop on drop.
struct Servers {
    stop: Arc<AtomicBool>,
    hits: Arc<Mutex<Vec<Hit>>>,
    threads: Vec<JoinHandle<()>>,
}

/// How often a server looks at its stop flag.
const SERVER_TICK: Duration = Duration::from_millis(50);

impl Servers {
    /// Starts, on each node, a UDP echo server on the VIP, TCP servers on the VIP's two
    /// ports and one on the node's own address. Each answers `NAME:REQUEST` and records what
    /// it served. They listen when this returns. The VIP must be on the nodes already.
    fn start(nodes: &[Netns]) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let hits = Arc::new(Mutex::new(Vec::new()));
        let mut threads = Vec::new();
        for (node, netns) in nodes.iter().enumerate() {
            // Sockets belong to the namespace they are made in, whichever thread serves them.
            let (udp, listeners) = netns.run(move || {
                let udp = UdpSocket::bind((VIP, UDP_PORT)).expect("binds the VIP");
                let listeners: Vec<(u16, TcpListener)> = [
                    (VIP, STICKY_PORT),
                    (VIP, SPREAD_PORT),
                    (NODES[node].1, OWN_PORT),
                ]
                .into_iter()
                .map(|(address, port)| (port, TcpListener::bind((address, port)).expect("listens")))
                .collect();
                (udp, listeners)
            });
            let (stop2, hits2) = (Arc::clone(&stop), Arc::clone(&hits));
            threads.push(std::thread::spawn(move || {
                serve_udp(node, &udp, &stop2, &hits2)
            }));
            for (port, listener) in listeners {
                let (stop, hits) = (Arc::clone(&stop), Arc::clone(&hits));
                threads.push(std::thread::spawn(move || {
                    serve_tcp(node, port, &listener, &stop, &hits)
                }));
            }
        }
        Servers {
            stop,
            hits,
            threads,
        }
    }

    /// What the servers have served so far.
    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
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
fn serve_udp(node: usize, socket: &UdpSocket, stop: &AtomicBool, hits: &Mutex<Vec<Hit>>) {
    socket.set_read_timeout(Some(SERVER_TICK)).unwrap();
    let mut buf = [0u8; 512];
    while !stop.load(Ordering::Relaxed) {
        let Ok((n, SocketAddr::V4(peer))) = socket.recv_from(&mut buf) else {
            continue;
        };
        hits.lock().unwrap().push(Hit {
            node,
            protocol: Protocol::Udp,
            port: UDP_PORT,
            peer,
        });
        let mut answer = format!("{}:", NODES[node].0).into_bytes();
        answer.extend_from_slice(&buf[..n]);
        let _ = socket.send_to(&answer, peer);
    }
}

/// Accepts connections one at a time until `stop`, answering each request line with
/// `NAME:LINE` and closing.
fn serve_tcp(
    node: usize,
    port: u16,
    listener: &TcpListener,
    stop: &AtomicBool,
    hits: &Mutex<Vec<Hit>>,
) {
    // accept() gives up after the receive timeout, so that the stop flag is seen.
    set_timeout(listener, libc::SO_RCVTIMEO, SERVER_TICK).unwrap();
    while !stop.load(Ordering::Relaxed) {
        let Ok((stream, SocketAddr::V4(peer))) = listener.accept() else {
            continue;
        };
        hits.lock().unwrap().push(Hit {
            node,
            protocol: Protocol::Tcp,
            port,
            peer,
        });
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let mut line = String::new();
        if BufReader::new(&stream).read_line(&mut line).is_ok() {
            let _ = (&stream).write_all(format!("{}:{}", NODES[node].0, line.trim()).as_bytes());
        }
    }
}

/// The farm: a hub, three nodes running herd and the servers, a client. Fields are dropped
/// in this order: servers stop, herds are killed, namespaces go (with the interfaces and
/// programs), then the BPF file system and the scratch directory.
struct Farm {
    servers: Servers,
    herds: Vec<Option<Herd>>,
    nodes: Vec<Netns>,
    client: Netns,
    _hub: Netns,
    _bpf: BpfFs,
    dir: ScratchDir,
    owners: Owners,
}

impl Farm {
    /// Builds the farm for test `tag` in `mode` and waits until every herd runs and every
    /// server listens.
    fn start(tag: &str, mode: Mode) -> Self {
        needs_root();
        let id = format!("{tag}-{mode}-{}", std::process::id());
        let dir = ScratchDir::new(&format!("farm-{tag}-{mode}"));
        let hub = Netns::new(format!("herd-{id}-hub"));
        // ageing_time 0: the bridge learns no address and floods every frame, as a switch
        // floods frames to a MAC it never saw as a source, which is what a VIP's virtual MAC is.
        ip(&[
            "-n",
            hub.name(),
            "link",
            "add",
            "name",
            "hub",
            "type",
            "bridge",
            "ageing_time",
            "0",
        ]);
        ip(&["-n", hub.name(), "link", "set", "hub", "up"]);
        let plug = |netns: &Netns, port: &str, addresses: &[String]| {
            ip(&[
                "link",
                "add",
                "eth0",
                "netns",
                netns.name(),
                "type",
                "veth",
                "peer",
                "name",
                port,
                "netns",
                hub.name(),
            ]);
            ip(&["-n", hub.name(), "link", "set", port, "master", "hub", "up"]);
            // One `ip` for all the addresses: the client has dozens.
            let batch: String = addresses
                .iter()
                .map(|a| format!("addr add {a}/15 dev eth0\n"))
                .collect();
            let file = dir.path().join(format!("{port}.ip"));
            std::fs::write(&file, batch).unwrap();
            ip(&["-n", netns.name(), "-batch", file.to_str().unwrap()]);
            ip(&["-n", netns.name(), "link", "set", "eth0", "up"]);
        };
        let nodes: Vec<Netns> = NODES
            .iter()
            .map(|(name, address, _)| {
                let netns = Netns::new(format!("herd-{id}-{name}"));
                plug(&netns, name, &[address.to_string()]);
                netns
            })
            .collect();
        let client = Netns::new(format!("herd-{id}-client"));
        let addresses: Vec<String> = std::iter::once(CLIENT)
            .chain((1..=SOURCES).map(source))
            .map(|a| a.to_string())
            .collect();
        plug(&client, "client", &addresses);
        complete_checksums(&client, "eth0");

        let config = dir.path().join("farm.toml");
        std::fs::write(&config, config_text(mode)).unwrap();
        let owners = Owners::new(&FarmConfig::load(&config).expect("a valid configuration"));
        let bpf = BpfFs::mount(dir.path().join("bpf"));
        let herds = nodes
            .iter()
            .zip(NODES)
            .map(|(netns, (name, _, _))| {
                Some(Herd::start(netns, &config, Some(name), &bpf.dir(name)))
            })
            .collect();
        let servers = Servers::start(&nodes);
        Farm {
            servers,
            herds,
            nodes,
            client,
            _hub: hub,
            _bpf: bpf,
            dir,
            owners,
        }
    }

    /// The configuration file.
    fn config(&self) -> PathBuf {
        self.dir.path().join("farm.toml")
    }

    /// Kills node `node`'s herd with SIGKILL and waits until it is gone.
    fn kill_herd(&mut self, node: usize) {
        let herd = self.herds[node].take().expect("herd runs");
        herd.signal("KILL");
        herd.wait();
    }
}

/// At most this many UDP requests wait for their first answer at once; the rest wait their
/// turn, so that no queue on the way (the backlog of a veth, a server's socket buffer) drops
/// a burst.
const IN_FLIGHT: usize = 32;
/// After this long without an answer, a request no longer holds back the next ones (it may
/// still be answered until the deadline of [`udp_exchange`]).
const PACING: Duration = Duration::from_millis(50);
/// How long a flow's socket stays open after its first answer, to catch a second one. Every
/// node gets the request at the same moment, so a second answer would come within a
/// millisecond or so of the first; the servers' records catch any later one.
const LINGER: Duration = Duration::from_millis(100);

/// Sends one request, `u{i}`, to the VIP's UDP port from each of `flows` (the `i`th) in the
/// client namespace, and returns what each flow got back within `wait` of its request.
fn udp_exchange(client: &Netns, flows: Vec<SocketAddrV4>, wait: Duration) -> Vec<Vec<String>> {
    /// A flow whose socket is open.
    struct Open {
        flow: usize,
        socket: UdpSocket,
        sent: Instant,
        answered: Option<Instant>,
    }
    client.run(move || {
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
                let socket = UdpSocket::bind(flows[next]).expect("binds the flow's address");
                socket.set_nonblocking(true).unwrap();
                socket
                    .send_to(format!("u{next}").as_bytes(), (VIP, UDP_PORT))
                    .unwrap();
                open.push(Open {
                    flow: next,
                    socket,
                    sent: Instant::now(),
                    answered: None,
                });
                next += 1;
                in_flight += 1;
            }
            wait_readable(open.iter().map(|o| &o.socket), Duration::from_millis(10));
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
        answers
    })
}

/// Asserts that each of `flows` got exactly one answer to its request `u{i}` (as sent by
/// [`udp_exchange`]), from the node that owns it, and that the servers served each flow once.
fn assert_each_udp_flow_answered_once(
    farm: &Farm,
    flows: &[SocketAddrV4],
    answers: &[Vec<String>],
) {
    let mut lost = 0;
    for (i, (flow, answers)) in flows.iter().zip(answers).enumerate() {
        let owner = NODES[farm.owners.of(Protocol::Udp, UDP_PORT, *flow)].0;
        lost += usize::from(answers.is_empty());
        assert!(
            answers.len() <= 1,
            "flow {flow} answered more than once: {answers:?}"
        );
        if let Some(answer) = answers.first() {
            assert_eq!(*answer, format!("{owner}:u{i}"), "flow {flow}");
        }
    }
    assert_eq!(
        lost,
        0,
        "of {} UDP flows, {lost} got no answer",
        flows.len()
    );
    let served: Vec<SocketAddrV4> = farm
        .servers
        .hits()
        .iter()
        .filter(|h| h.protocol == Protocol::Udp)
        .map(|h| h.peer)
        .collect();
    assert_eq!(served.len(), flows.len(), "every request served once");
    assert_eq!(
        served.iter().collect::<HashSet<_>>(),
        flows.iter().collect::<HashSet<_>>(),
        "the servers served exactly the flows sent"
    );
}

/// Opens one TCP connection from each of `connections`' client addresses to its server
/// address, from a few threads in the client namespace; sends `t{i}` on the `i`th and returns
/// what each got back. Panics at the first connection that fails, once the threads have
/// stopped: a broken farm then fails in seconds rather than after a time-out per connection.
fn tcp_exchange(client: &Netns, connections: &[(SocketAddrV4, SocketAddrV4)]) -> Vec<String> {
    const THREADS: usize = 4;
    let failed = Arc::new(AtomicBool::new(false));
    let indexed: Vec<(usize, SocketAddrV4, SocketAddrV4)> = connections
        .iter()
        .enumerate()
        .map(|(i, &(from, to))| (i, from, to))
        .collect();
    let chunk = indexed.len().div_ceil(THREADS).max(1);
    let threads: Vec<_> = indexed
        .chunks(chunk)
        .map(|part| {
            let part = part.to_vec();
            let failed = Arc::clone(&failed);
            client.spawn(move || {
                let mut replies = Vec::new();
                for (i, from, to) in part {
                    if failed.load(Ordering::Relaxed) {
                        break;
                    }
                    match ask_tcp(from, to, &format!("t{i}")) {
                        Ok(reply) => replies.push((i, reply)),
                        Err(error) => {
                            failed.store(true, Ordering::Relaxed);
                            return Err(format!("connection {i} from {from} to {to}: {error}"));
                        }
                    }
                }
                Ok(replies)
            })
        })
        .collect();
    let mut replies: Vec<(usize, String)> = Vec::new();
    for thread in threads {
        match thread.join().unwrap() {
            Ok(part) => replies.extend(part),
            Err(error) => panic!("{error}"),
        }
    }
    replies.sort_by_key(|(i, _)| *i);
    replies.into_iter().map(|(_, reply)| reply).collect()
}

/// One request `text` over a new TCP connection from `from` to `to`: the whole reply.
fn ask_tcp(from: SocketAddrV4, to: SocketAddrV4, text: &str) -> io::Result<String> {
    // Long enough for a lost SYN to be sent again (after 1 s).
    let timeout = Duration::from_secs(5);
    let fd = socket(libc::SOCK_STREAM, 0)?;
    // A blocking connect gives up after the send timeout (socket(7)).
    set_timeout(&fd, libc::SO_SNDTIMEO, timeout)?;
    bind(&fd, from)?;
    let address = sockaddr(to);
    // SAFETY: `address` is a valid sockaddr_in and the length is its size.
    sys(unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&raw const address).cast(),
            size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    })?;
    let mut stream = TcpStream::from(fd);
    stream.set_read_timeout(Some(timeout))?;
    stream.write_all(format!("{text}\n").as_bytes())?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply)?;
    Ok(reply)
}

/// Asserts that each of `connections` (to the VIP's `port`) was answered `NAME:t{i}` by the
/// node that owns it, and accepted once, by that node, with no other connection accepted.
fn assert_each_connection_answered_once(
    farm: &Farm,
    port: u16,
    connections: &[(SocketAddrV4, SocketAddrV4)],
    replies: &[String],
) {
    for (i, ((from, _), reply)) in connections.iter().zip(replies).enumerate() {
        let owner = NODES[farm.owners.of(Protocol::Tcp, port, *from)].0;
        assert_eq!(*reply, format!("{owner}:t{i}"), "connection from {from}");
    }
    let mut accepted: BTreeMap<SocketAddrV4, Vec<usize>> = BTreeMap::new();
    for hit in farm.servers.hits() {
        if hit.protocol == Protocol::Tcp && hit.port == port {
            accepted.entry(hit.peer).or_default().push(hit.node);
        }
    }
    assert_eq!(accepted.len(), connections.len(), "accepted connections");
    for (from, _) in connections {
        assert_eq!(
            accepted.get(from),
            Some(&vec![farm.owners.of(Protocol::Tcp, port, *from)]),
            "the nodes that accepted the connection from {from}"
        );
    }
}

/// Sends an ICMP echo request for each `(from, to)` from the client namespace, and counts
/// the echo replies to each that arrive within `wait` (and [`LINGER`] after the last one).
fn ping(client: &Netns, pings: Vec<(Ipv4Addr, Ipv4Addr)>, wait: Duration) -> Vec<usize> {
    // The sequence number tells these replies from late ones to an earlier call.
    static SEQUENCE: AtomicU16 = AtomicU16::new(0);
    let sequence = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    client.run(move || {
        // A raw ICMP socket gets a copy of every ICMP message that reaches the namespace.
        let receiver = icmp_socket().expect("opens a raw ICMP socket");
        for (i, &(from, to)) in pings.iter().enumerate() {
            let sender = icmp_socket().unwrap();
            // The bound address is the request's source.
            bind(&sender, SocketAddrV4::new(from, 0)).unwrap();
            let id = u16::try_from(i).unwrap();
            sender
                .send_to(&echo_request(id, sequence), (to, 0))
                .unwrap();
        }
        let mut counts = vec![0; pings.len()];
        let mut until = Instant::now() + wait;
        let mut lingering = false;
        let mut buf = [0u8; 1500];
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            receiver
                .set_read_timeout(Some(left.max(Duration::from_micros(1))))
                .unwrap();
            if let Ok((n, SocketAddr::V4(from))) = receiver.recv_from(&mut buf) {
                let ping = echo_reply(&buf[..n]).filter(|&(_, seq)| seq == sequence);
                if let Some(i) = ping.map(|(id, _)| usize::from(id)) {
                    if pings.get(i).is_some_and(|p| p.1 == *from.ip()) {
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
        counts
    })
}

/// An ICMP echo request with identifier `id` and sequence number `seq`.
fn echo_request(id: u16, seq: u16) -> Vec<u8> {
    let mut message = vec![8, 0, 0, 0];
    message.extend_from_slice(&id.to_be_bytes());
    message.extend_from_slice(&seq.to_be_bytes());
    message.extend_from_slice(b"herd farm test");
    let checksum = internet_checksum(&message);
    message[2..4].copy_from_slice(&checksum.to_be_bytes());
    message
}

/// The identifier and sequence number of an echo reply, given as a raw socket gives it (with
/// its IPv4 header).
fn echo_reply(packet: &[u8]) -> Option<(u16, u16)> {
    let header = usize::from(packet.first()? & 0x0f) * 4;
    let icmp = packet.get(header..header + 8)?;
    (icmp[0] == 0).then(|| {
        (
            u16::from_be_bytes([icmp[4], icmp[5]]),
            u16::from_be_bytes([icmp[6], icmp[7]]),
        )
    })
}

/// The Internet checksum (RFC 1071) of `data`.
fn internet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// How many ICMP echo replies namespace `netns` has sent (its `Icmp: OutEchoReps`).
fn echo_replies_sent(netns: &Netns) -> u64 {
    // /proc/thread-self: /proc/self/net would be the namespace of the process, not the thread.
    let snmp = netns.run(|| std::fs::read_to_string("/proc/thread-self/net/snmp").unwrap());
    let mut icmp = snmp.lines().filter(|l| l.starts_with("Icmp:"));
    let (names, values) = (icmp.next().unwrap(), icmp.next().unwrap());
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(name, _)| *name == "OutEchoReps")
        .map(|(_, value)| value.parse().unwrap())
        .expect("Icmp: OutEchoReps")
}

/// A raw ICMP socket, used through `UdpSocket`'s datagram calls (`send_to`, `recv_from`),
/// which work on any IPv4 datagram socket; the port of an address is not used.
fn icmp_socket() -> io::Result<UdpSocket> {
    socket(libc::SOCK_RAW, libc::IPPROTO_ICMP).map(UdpSocket::from)
}

/// A new IPv4 socket of `kind` and `protocol`.
fn socket(kind: libc::c_int, protocol: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: socket takes no pointers.
    let fd = sys(unsafe { libc::socket(libc::AF_INET, kind | libc::SOCK_CLOEXEC, protocol) })?;
    // SAFETY: `fd` was just opened and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Binds `socket` to `address` (std binds only the sockets it creates).
fn bind(socket: &impl AsRawFd, address: SocketAddrV4) -> io::Result<()> {
    let address = sockaddr(address);
    // SAFETY: `address` is a valid sockaddr_in and the length is its size.
    sys(unsafe {
        libc::bind(
            socket.as_raw_fd(),
            (&raw const address).cast(),
            size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// Sets the socket time-out `option` (`SO_RCVTIMEO`, `SO_SNDTIMEO`) of `socket`.
fn set_timeout(socket: &impl AsRawFd, option: libc::c_int, timeout: Duration) -> io::Result<()> {
    let value = libc::timeval {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_usec: timeout.subsec_micros().into(),
    };
    // SAFETY: `value` is a valid timeval and the length is its size.
    sys(unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (&raw const value).cast(),
            size_of::<libc::timeval>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// `address` for the socket calls.
fn sockaddr(address: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: address.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*address.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

/// Waits until one of `sockets` is readable, or `timeout`.
fn wait_readable<'a>(sockets: impl Iterator<Item = &'a UdpSocket>, timeout: Duration) {
    let mut fds: Vec<libc::pollfd> = sockets
        .map(|s| libc::pollfd {
            fd: s.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // SAFETY: `fds` is an array of `fds.len()` valid pollfd structures.
    let ready = unsafe {
        libc::poll(
            fds.as_mut_ptr(),
            fds.len() as libc::nfds_t,
            timeout.as_millis() as libc::c_int,
        )
    };
    assert!(ready >= 0, "poll: {}", io::Error::last_os_error());
}

/// A system call's result, or its error.
fn sys(result: libc::c_int) -> io::Result<libc::c_int> {
    if result < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(result)
    }
}

/// Every UDP request, TCP connection and ping to the VIP, from 64 client addresses and many
/// ports, is answered exactly once, by the node `herd whois` names. Were a node to keep the
/// packets it does not own, every flow would be answered two or three times; were the hub to
/// learn the virtual MAC, or a node's answer to the ARP request go astray, flows would be lost.
fn every_flow_gets_exactly_one_answer_from_its_owner(mode: Mode) {
    let farm = Farm::start("once", mode);
    let config = farm.config();

    let udp = flows(20000..20064);
    let started = Instant::now();
    let answers = udp_exchange(&farm.client, udp.clone(), Duration::from_secs(2));
    eprintln!("{} UDP flows in {:?}", udp.len(), started.elapsed());
    assert_each_udp_flow_answered_once(&farm, &udp, &answers);
    farm.owners
        .agree_with_whois(&config, Protocol::Udp, UDP_PORT, &udp, 32);
    // The client reached the VIP through its virtual MAC, which no frame carries as its
    // source: the hub had to flood every request to every node.
    let neighbours = ip_show(&["-n", farm.client.name(), "neigh", "show", &VIP.to_string()]);
    assert!(
        neighbours.contains("02:68:c6:12:00:64"),
        "the client learnt the VIP's virtual MAC: {neighbours}"
    );

    for port in [STICKY_PORT, SPREAD_PORT] {
        let connections: Vec<_> = flows(21000..21008)
            .into_iter()
            .map(|from| (from, SocketAddrV4::new(VIP, port)))
            .collect();
        let started = Instant::now();
        let replies = tcp_exchange(&farm.client, &connections);
        eprintln!(
            "{} TCP connections to port {port} in {:?}",
            connections.len(),
            started.elapsed()
        );
        assert_each_connection_answered_once(&farm, port, &connections, &replies);
        let clients: Vec<SocketAddrV4> = connections.iter().map(|c| c.0).collect();
        farm.owners
            .agree_with_whois(&config, Protocol::Tcp, port, &clients, 16);
    }

    let before: Vec<u64> = farm.nodes.iter().map(echo_replies_sent).collect();
    let pings: Vec<(Ipv4Addr, Ipv4Addr)> = (1..=SOURCES).map(|i| (source(i), VIP)).collect();
    let replies = ping(&farm.client, pings.clone(), Duration::from_secs(2));
    assert_eq!(replies, vec![1; pings.len()], "one echo reply per request");
    let sent: Vec<u64> = farm
        .nodes
        .iter()
        .zip(before)
        .map(|(netns, before)| echo_replies_sent(netns) - before)
        .collect();
    let clients: Vec<SocketAddrV4> = pings
        .iter()
        .map(|&(from, _)| SocketAddrV4::new(from, 0))
        .collect();
    let mut expected = vec![0; NODES.len()];
    for client in &clients {
        expected[farm.owners.of(Protocol::Icmp, 0, *client)] += 1;
    }
    assert_eq!(sent, expected, "echo replies sent by each node");
    farm.owners
        .agree_with_whois(&config, Protocol::Icmp, 0, &clients, 4);
}

/// `client-ip`: every connection of a client, whatever its port, reaches the same node, the
/// one `herd whois` names for the client's address; different clients reach different nodes.
fn client_ip_affinity_keeps_a_client_on_one_node(mode: Mode) {
    let farm = Farm::start("sticky", mode);
    const CLIENTS: u8 = 16;
    let connections: Vec<(SocketAddrV4, SocketAddrV4)> = (1..=CLIENTS)
        .flat_map(|i| (22000..22025).map(move |port| SocketAddrV4::new(source(i), port)))
        .map(|from| (from, SocketAddrV4::new(VIP, STICKY_PORT)))
        .collect();
    let replies = tcp_exchange(&farm.client, &connections);
    assert_each_connection_answered_once(&farm, STICKY_PORT, &connections, &replies);

    let mut node_of_client: BTreeMap<Ipv4Addr, HashSet<&str>> = BTreeMap::new();
    for ((from, _), reply) in connections.iter().zip(&replies) {
        let node = reply.split(':').next().unwrap();
        node_of_client.entry(*from.ip()).or_default().insert(node);
    }
    for (client, nodes) in &node_of_client {
        assert_eq!(nodes.len(), 1, "client {client} reached {nodes:?}");
    }
    let reached: HashSet<&str> = node_of_client.values().flatten().copied().collect();
    assert!(
        reached.len() > 1,
        "{CLIENTS} clients all on one node: the test would not tell client-ip from a single owner"
    );
    let clients: Vec<SocketAddrV4> = (1..=CLIENTS)
        .map(|i| SocketAddrV4::new(source(i), 0))
        .collect();
    farm.owners
        .agree_with_whois(&farm.config(), Protocol::Tcp, STICKY_PORT, &clients, 1);
}

/// `client-ip-port`: the connections of a single client spread over every node, each node's
/// share following its share of the buckets as `herd table` gives it, which follows the
/// weights (1, 1, 2).
fn client_ip_port_spreads_a_client_by_weight(mode: Mode) {
    let farm = Farm::start("spread", mode);
    let connections: Vec<(SocketAddrV4, SocketAddrV4)> = (23000..23800)
        .map(|port| {
            (
                SocketAddrV4::new(CLIENT, port),
                SocketAddrV4::new(VIP, SPREAD_PORT),
            )
        })
        .collect();
    let replies = tcp_exchange(&farm.client, &connections);
    assert_each_connection_answered_once(&farm, SPREAD_PORT, &connections, &replies);

    let table = Command::new(env!("CARGO_BIN_EXE_herd"))
        .args(["table", "--json", "-c"])
        .arg(farm.config())
        .output()
        .expect("runs herd table");
    assert!(table.status.success(), "herd table");
    let table: Value = serde_json::from_slice(&table.stdout).unwrap();
    let total_buckets = table["buckets"].as_f64().unwrap();
    let total_weight: u32 = NODES.iter().map(|n| n.2).sum();
    let n = connections.len() as f64;
    for (node, (name, _, weight)) in NODES.iter().enumerate() {
        let row = &table["nodes"][node];
        assert_eq!(row["name"], *name);
        let share = row["buckets"].as_f64().unwrap() / total_buckets;
        let weighted = f64::from(*weight) / f64::from(total_weight);
        assert!(
            (share - weighted).abs() * total_buckets <= 1.0,
            "{name}: {share} of the buckets for weight {weight} of {total_weight}"
        );
        let served = replies
            .iter()
            .filter(|r| r.starts_with(&format!("{name}:")))
            .count() as f64;
        // Each connection lands on the node with probability `share` (the hash is uniform
        // over the buckets): a binomial count. Five standard deviations: a correct farm fails
        // this about once in two million; a count blind to the weights (a third each) is
        // off by more than that (charlie: 267 instead of 400, sigma 14).
        let sigma = (n * share * (1.0 - share)).sqrt();
        eprintln!(
            "{name}: {served} of {n} connections, {:.0} expected",
            n * share
        );
        assert!(
            (served - n * share).abs() <= 5.0 * sigma,
            "{name} served {served} of {n} connections, expected {:.0} ± {:.0}",
            n * share,
            5.0 * sigma
        );
    }
}

/// Traffic to a node's own address passes whatever the program does with the VIP: an
/// ssh-like TCP service and ping.
fn non_vip_traffic_reaches_the_nodes_untouched(mode: Mode) {
    let farm = Farm::start("own", mode);
    let connections: Vec<(SocketAddrV4, SocketAddrV4)> = NODES
        .iter()
        .zip(24000..)
        .flat_map(|(&(_, address, _), port)| {
            // A port per node: a client address and port make one connection at a time.
            (1..=8).map(move |i| {
                (
                    SocketAddrV4::new(source(i), port),
                    SocketAddrV4::new(address, OWN_PORT),
                )
            })
        })
        .collect();
    let replies = tcp_exchange(&farm.client, &connections);
    for (i, ((from, to), reply)) in connections.iter().zip(&replies).enumerate() {
        let node = NODES.iter().find(|n| n.1 == *to.ip()).unwrap().0;
        assert_eq!(*reply, format!("{node}:t{i}"), "{from} to {to}");
    }
    let pings: Vec<(Ipv4Addr, Ipv4Addr)> = NODES
        .iter()
        .flat_map(|&(_, address, _)| [(CLIENT, address), (source(1), address)])
        .collect();
    let replies = ping(&farm.client, pings.clone(), Duration::from_secs(2));
    assert_eq!(replies, vec![1; pings.len()], "each node answers ping");
}

/// SIGKILL of one node's herd: within the liveness deadline the node accepts no VIP packet
/// (fail closed), while the other nodes still answer theirs exactly once; and no other node
/// takes the dead node's flows over (there is no membership protocol yet).
fn a_node_whose_herd_is_killed_accepts_no_more_vip_traffic(mode: Mode) {
    const VICTIM: usize = 1;
    let mut farm = Farm::start("kill", mode);
    let udp = flows(25000..25002);
    let answers = udp_exchange(&farm.client, udp.clone(), Duration::from_secs(2));
    assert_each_udp_flow_answered_once(&farm, &udp, &answers);

    // Fresh flows of the victim, one at a time, until one is not answered: that must come
    // within the deadline (renewed every 100 ms, 500 ms ahead) and some slack.
    let victims: Vec<SocketAddrV4> = flows(25002..25100)
        .into_iter()
        .filter(|f| farm.owners.of(Protocol::Udp, UDP_PORT, *f) == VICTIM)
        .collect();
    farm.kill_herd(VICTIM);
    let killed = Instant::now();
    let mut refused = None;
    for flow in victims {
        if killed.elapsed() > Duration::from_secs(5) {
            break;
        }
        let answers = udp_exchange(&farm.client, vec![flow], Duration::from_millis(100));
        if answers[0].is_empty() {
            refused = Some(killed.elapsed());
            break;
        }
    }
    let refused = refused.expect("the killed node stops answering");
    eprintln!("first request refused {refused:?} after the kill");
    assert!(
        refused < Duration::from_secs(2),
        "refused after {refused:?}"
    );

    let udp = flows(25100..25105);
    let before = farm.servers.hits().len();
    let answers = udp_exchange(&farm.client, udp.clone(), Duration::from_secs(1));
    let hits = farm.servers.hits().split_off(before);
    let mut dead = 0;
    for (i, (flow, answers)) in udp.iter().zip(&answers).enumerate() {
        let owner = farm.owners.of(Protocol::Udp, UDP_PORT, *flow);
        if owner == VICTIM {
            dead += 1;
            assert_eq!(
                answers.len(),
                0,
                "flow {flow} of the dead node answered: {answers:?}"
            );
        } else {
            assert_eq!(
                *answers,
                vec![format!("{}:u{i}", NODES[owner].0)],
                "flow {flow}"
            );
        }
    }
    assert!(dead > 0, "some of the flows belong to the dead node");
    assert!(
        hits.iter().all(|h| h.node != VICTIM),
        "the dead node's server, still running, got no request: its program dropped them"
    );
    assert_eq!(hits.len(), udp.len() - dead, "requests served");
}

/// Generates, for each mode, a module of `#[test]` wrappers around the tests above.
macro_rules! in_mode {
    ($($module:ident: $mode:expr),*) => {$(
        mod $module {
            use super::*;

            #[test]
            fn every_flow_gets_exactly_one_answer_from_its_owner() {
                super::every_flow_gets_exactly_one_answer_from_its_owner($mode);
            }

            #[test]
            fn client_ip_affinity_keeps_a_client_on_one_node() {
                super::client_ip_affinity_keeps_a_client_on_one_node($mode);
            }

            #[test]
            fn client_ip_port_spreads_a_client_by_weight() {
                super::client_ip_port_spreads_a_client_by_weight($mode);
            }

            #[test]
            fn non_vip_traffic_reaches_the_nodes_untouched() {
                super::non_vip_traffic_reaches_the_nodes_untouched($mode);
            }

            #[test]
            fn a_node_whose_herd_is_killed_accepts_no_more_vip_traffic() {
                super::a_node_whose_herd_is_killed_accepts_no_more_vip_traffic($mode);
            }
        }
    )*};
}

in_mode!(xdp: Mode::Xdp, afxdp: Mode::Afxdp);
