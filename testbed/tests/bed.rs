//! The test bed itself, in network namespaces: a farm's bed connects its hosts in IPv4 and
//! IPv6, the hub floods or learns as asked, the responders answer with the node's name, and
//! everything the bed made is gone once it is dropped, even by a panic.
//!
//! Needs root (namespaces, mounts); `scripts/test` runs it as root, as CI does.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::Duration;

use herd_config::Protocol;
use herd_testbed::address::{self, source4, CLIENT4};
use herd_testbed::responder::{Kind, On, Responders, Service, Settings};
use herd_testbed::{socket, FarmBed, FarmPlan, HubKind, Netns, Offload, Uplink};

const NODES: [&str; 2] = ["alpha", "bravo"];
const UDP_PORT: u16 = 7;
const ONCE_PORT: u16 = 81;
const LINES_PORT: u16 = 82;

fn plan<'a>(tag: &str, hub: HubKind) -> FarmPlan<'a> {
    herd_testbed::require_root("the test bed's tests").unwrap();
    FarmPlan {
        prefix: format!("herd-tb-{tag}-{}", std::process::id()),
        nodes: &NODES,
        hub,
        uplink: Uplink::Veth,
        sources: 4,
        client_offload: Offload::TxOff,
    }
}

/// The responders on the nodes' own addresses (there is no herd, so no VIP).
fn responders(bed: &FarmBed) -> Responders {
    let services = [
        (Kind::Udp, UDP_PORT),
        (Kind::TcpOnce, ONCE_PORT),
        (Kind::TcpLines, LINES_PORT),
    ]
    .map(|(kind, port)| Service {
        kind,
        on: On::Own,
        port,
    });
    let settings = Settings {
        vip: address::VIP4.into(),
        line_wait: Duration::from_secs(2),
        record: true,
    };
    Responders::start(&bed.nodes, &services, &settings).unwrap()
}

/// One UDP request from `from` to `to` in `client`: the answer, if one came within a second.
fn ask_udp(client: &Netns, from: SocketAddr, to: SocketAddr, text: &str) -> Option<String> {
    client
        .run(|| {
            let socket = socket::reused_udp(from).unwrap();
            socket
                .set_read_timeout(Some(Duration::from_secs(1)))
                .unwrap();
            socket.send_to(text.as_bytes(), to).unwrap();
            let mut buf = [0u8; 512];
            let (n, _) = socket.recv_from(&mut buf).ok()?;
            Some(String::from_utf8_lossy(&buf[..n]).into_owned())
        })
        .unwrap()
}

/// The packets `netns`'s `eth0` has received.
fn received(netns: &Netns) -> u64 {
    // /proc/thread-self: /proc/self/net would be the namespace of the process, not the thread.
    let dev = netns
        .run(|| std::fs::read_to_string("/proc/thread-self/net/dev").unwrap())
        .unwrap();
    let line = dev
        .lines()
        .find_map(|line| line.trim_start().strip_prefix("eth0:"))
        .expect("eth0 is listed");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// What a bed made, to check afterwards that it is gone.
struct Made {
    namespaces: Vec<String>,
    scratch: PathBuf,
}

impl Made {
    fn of(bed: &FarmBed) -> Self {
        Made {
            namespaces: bed.bed().namespaces(),
            scratch: bed.bed().scratch().to_owned(),
        }
    }

    fn assert_gone(&self) {
        for name in &self.namespaces {
            assert!(
                !Path::new("/run/netns").join(name).exists(),
                "namespace {name} is removed"
            );
        }
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
        assert!(
            !mounts.contains(self.scratch.to_str().unwrap()),
            "the BPF file system is unmounted"
        );
        assert!(!self.scratch.exists(), "the scratch directory is removed");
    }
}

#[test]
fn hosts_reach_each_other_and_the_responders_answer_with_the_node_s_name() {
    let bed = FarmBed::create(&plan("answer", HubKind::Flooding)).unwrap();
    let made = Made::of(&bed);
    assert_eq!(made.namespaces.len(), 4, "a hub, two nodes, a client");
    assert!(made.scratch.join("bpf").exists());
    let responders = responders(&bed);
    let client = &bed.client.netns;

    for (index, node) in bed.nodes.iter().enumerate() {
        let from = SocketAddr::new(source4(1).into(), 40000 + index as u16);
        let to = SocketAddr::new(node.address.into(), UDP_PORT);
        assert_eq!(
            ask_udp(client, from, to, "u").as_deref(),
            Some(format!("{}:u", node.name).as_str()),
            "UDP over IPv4 to {}",
            node.name
        );
        // The responders listen on IPv4: a socket of the test's own on the node's twin.
        let twin = |a: std::net::Ipv4Addr| IpAddr::V6(address::twin(a));
        let to6 = SocketAddr::new(twin(node.address), UDP_PORT);
        let listener = node.netns.run(|| UdpSocket::bind(to6).unwrap()).unwrap();
        let from6 = SocketAddr::new(twin(CLIENT4), 40010 + index as u16);
        assert_eq!(ask_udp(client, from6, to6, "six"), None, "nobody answers");
        listener
            .set_read_timeout(Some(Duration::from_secs(1)))
            .unwrap();
        let mut buf = [0u8; 16];
        let (n, peer) = listener.recv_from(&mut buf).expect("the node gets it");
        assert_eq!((&buf[..n], peer), (&b"six"[..], from6), "UDP over IPv6");
    }

    let alpha = SocketAddr::new(bed.nodes[0].address.into(), ONCE_PORT);
    let from = SocketAddr::new(source4(2).into(), 41000);
    let reply = client
        .run(|| {
            let mut stream = socket::connect(from, alpha, Duration::from_secs(5)).unwrap();
            stream.write_all(b"once\n").unwrap();
            let mut reply = String::new();
            stream.read_to_string(&mut reply).unwrap();
            reply
        })
        .unwrap();
    assert_eq!(reply, "alpha:once\n");

    let bravo = SocketAddr::new(bed.nodes[1].address.into(), LINES_PORT);
    let from = SocketAddr::new(source4(3).into(), 41001);
    let stream = client
        .run(|| socket::connect(from, bravo, Duration::from_secs(5)).unwrap())
        .unwrap();
    let mut reader = BufReader::new(stream);
    for text in ["one", "two"] {
        reader
            .get_mut()
            .write_all(format!("{text}\n").as_bytes())
            .unwrap();
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert_eq!(line, format!("bravo:{text}\n"));
    }
    drop(reader);

    let hits = responders.hits();
    let tcp: Vec<(usize, u16)> = hits
        .iter()
        .filter(|hit| hit.protocol == Protocol::Tcp)
        .map(|hit| (hit.node, hit.port))
        .collect();
    assert_eq!(tcp, [(0, ONCE_PORT), (1, LINES_PORT)]);
    assert_eq!(
        hits.iter().filter(|h| h.protocol == Protocol::Udp).count(),
        2
    );
    drop(responders);
    drop(bed);
    made.assert_gone();
}

/// Sends `count` requests from the client to alpha's responder, each answered, and returns how
/// many packets bravo received meanwhile.
fn bravo_sees(bed: &FarmBed, count: u16) -> u64 {
    let to = SocketAddr::new(bed.nodes[0].address.into(), UDP_PORT);
    // A first exchange: the ARP resolution, and a learning bridge learns both MACs.
    let first = SocketAddr::new(CLIENT4.into(), 42000);
    assert!(ask_udp(&bed.client.netns, first, to, "first").is_some());
    let before = received(&bed.nodes[1].netns);
    for i in 0..count {
        let from = SocketAddr::new(CLIENT4.into(), 42001 + i);
        assert!(
            ask_udp(&bed.client.netns, from, to, "r").is_some(),
            "request {i} answered"
        );
    }
    received(&bed.nodes[1].netns) - before
}

#[test]
fn a_flooding_hub_shows_every_frame_to_every_node_and_a_learning_one_does_not() {
    const REQUESTS: u16 = 20;
    let flooding = FarmBed::create(&plan("flood", HubKind::Flooding)).unwrap();
    let responders_flooding = responders(&flooding);
    let flooded = bravo_sees(&flooding, REQUESTS);
    drop(responders_flooding);
    drop(flooding);
    assert!(
        flooded >= 2 * u64::from(REQUESTS),
        "bravo sees the requests to alpha and the answers: {flooded} packets"
    );

    let learning = FarmBed::create(&plan("learn", HubKind::Learning)).unwrap();
    let responders_learning = responders(&learning);
    let learnt = bravo_sees(&learning, REQUESTS);
    drop(responders_learning);
    drop(learning);
    assert!(
        learnt < u64::from(REQUESTS),
        "a learning hub sends alpha's frames to alpha: bravo saw {learnt} packets"
    );
}

#[test]
fn a_bed_dropped_by_a_panic_removes_everything() {
    let (sender, made) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let bed = FarmBed::create(&plan("panic", HubKind::Flooding)).unwrap();
        bed.bed()
            .write_private("farm.key", herd_testbed::config::KEY)
            .unwrap();
        bed.bpf_dir(0).unwrap();
        sender.send(Made::of(&bed)).unwrap();
        panic!("a test fails with its bed built");
    });
    assert!(thread.join().is_err(), "the thread panicked");
    made.recv().unwrap().assert_gone();
}

#[test]
fn a_plan_beyond_the_address_plan_is_refused_before_anything_is_made() {
    let names: Vec<String> = (0..100).map(|i| format!("n{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut too_many = plan("many", HubKind::Flooding);
    too_many.nodes = &names;
    let error = FarmBed::create(&too_many).unwrap_err();
    assert!(
        format!("{error:#}").contains("at most 99 nodes"),
        "{error:#}"
    );
    let listed = herd_testbed::command::run("ip", &["netns", "list"], None).unwrap();
    assert!(!listed.contains(&too_many.prefix), "{listed}");
}
