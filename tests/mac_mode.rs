//! The virtual MAC modes end to end, on a switch whose ports flood no unknown unicast
//! ([`HubKind::NoFlood`]: `flood off`, IGMP and MLD snooping with a querier): there the unicast
//! virtual MAC reaches no node, and the multicast one reaches every node, which answers each
//! request once; the switch's snooping shows each node's membership of the VIP's group, which a
//! killed node's kernel gives up. Fail closed holds in both modes: a frame to the multicast MAC would reach a
//! node's IP layer without herd's program (the kernel drops a frame to another host's unicast
//! MAC, not one to a group, as the tests show once the program is gone), so a node whose herd
//! is frozen or killed must still take nothing.
//!
//! Each test takes the dataplane mode; the `xdp` and `afxdp` modules run them in each.
//!
//! Needs root (namespaces, XDP); `scripts/test` runs it as root, as CI does.

use std::net::{IpAddr, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use herd_config::{Affinity, DataplaneMode, MacMode, Protocol};
use herd_packet::neighbor::{multicast_group, virtual_mac};
use herd_testbed::address::{node4, twin, CLIENT4, VIP4, VIP6};
use herd_testbed::config::{FarmToml, KEY};
use herd_testbed::farm::INTERFACE;
use herd_testbed::link::mac_text;
use herd_testbed::owner::Owners;
use herd_testbed::responder::{Kind, On, Responders, Service, Settings};
use herd_testbed::{FarmBed, FarmPlan, Herd, HerdRun, HubKind, Netns, Offload, Signal, Uplink};

/// The UDP echo service on the VIP.
const PORT: u16 = 7;
/// How many requests a run of requests sends, each from a port of its own.
const REQUESTS: usize = 200;
/// How long a run of requests waits for its answers.
const WAIT: Duration = Duration::from_secs(2);
/// How long a run of requests waits for a second answer after every request has one: every
/// node gets a request at the same moment, so a second answer would come within a
/// millisecond or so of the first.
const LINGER: Duration = Duration::from_millis(100);
/// How long a farm may take to settle: every node takes its share.
const SETTLE: Duration = Duration::from_secs(15);

/// A farm of `nodes` on a hub: the servers stop, the herds are killed, then the bed goes.
struct Farm {
    servers: Option<Responders>,
    herds: Vec<Herd>,
    bed: FarmBed,
    /// The VIP.
    vip: IpAddr,
}

impl Farm {
    /// Builds a farm of `nodes` in dataplane `mode` whose VIP `vip` resolves to a `mac` MAC, on
    /// a hub of `hub`, and waits until every node owns its share and every server listens.
    fn start(
        tag: &str,
        mode: DataplaneMode,
        (mac, hub): (MacMode, HubKind),
        vip: IpAddr,
        nodes: &[&str],
    ) -> Self {
        let bed = FarmBed::create(&FarmPlan {
            prefix: format!("herd-mac{tag}-{mode}-{}", std::process::id()),
            nodes,
            hub,
            uplink: Uplink::Veth,
            sources: 0,
            client_offload: Offload::Default,
        })
        .expect("builds the farm's bed");
        let key = bed.bed().write_private("farm.key", KEY).unwrap();
        let text = nodes
            .iter()
            .enumerate()
            .fold(FarmToml::new("mac", mode), |farm, (index, name)| {
                farm.node(name, node4(index))
            })
            .vips(&[vip])
            .mac(mac)
            .key_file(&key)
            .rule(Protocol::Udp, &[PORT], Some(Affinity::ClientIpPort))
            .text();
        let config = bed.bed().write_private("farm.toml", &text).unwrap();
        let herds = (0..nodes.len())
            .map(|node| start_herd(&bed, node, &config))
            .collect();
        let mut farm = Farm {
            servers: None,
            herds,
            bed,
            vip,
        };
        farm.settle(&config);
        let settings = Settings {
            vip,
            line_wait: Duration::ZERO,
            record: false,
        };
        let service = Service {
            kind: Kind::Udp,
            on: On::Vip,
            port: PORT,
        };
        let servers = Responders::start(&farm.bed.nodes, &[service], &settings);
        farm.servers = Some(servers.expect("the servers listen"));
        farm
    }

    /// Waits until every node has installed the table that gives it its whole share.
    fn settle(&self, config: &Path) {
        let owners = Owners::load(config, &vec![true; self.herds.len()]).unwrap();
        for (herd, share) in self.herds.iter().zip(owners.shares()) {
            let whole = format!("all_tcp={share} non_tcp={share}");
            assert!(
                herd.wait_for(0, |line| line.contains(&whole), SETTLE)
                    .is_some(),
                "a node takes its share of {share} buckets within {SETTLE:?}"
            );
        }
    }

    /// The client's namespace.
    fn client(&self) -> &Netns {
        &self.bed.client.netns
    }

    /// Sends `count` requests to the VIP, each from a port of its own, and returns the answers
    /// each got within `wait` (and [`LINGER`] after the last request had its first).
    fn exchange(&self, count: usize, wait: Duration) -> Vec<Vec<String>> {
        let vip = self.vip;
        let from: IpAddr = match vip {
            IpAddr::V4(_) => CLIENT4.into(),
            IpAddr::V6(_) => twin(CLIENT4).into(),
        };
        self.client()
            .run(move || {
                let sockets: Vec<UdpSocket> = (0..count)
                    .map(|_| {
                        let socket = UdpSocket::bind((from, 0)).unwrap();
                        socket.set_nonblocking(true).unwrap();
                        socket
                    })
                    .collect();
                for (i, socket) in sockets.iter().enumerate() {
                    socket
                        .send_to(format!("m{i}").as_bytes(), (vip, PORT))
                        .unwrap();
                }
                let started = Instant::now();
                let mut last_answer = started;
                let mut answers = vec![Vec::new(); count];
                let mut buf = [0u8; 64];
                loop {
                    for (socket, got) in sockets.iter().zip(&mut answers) {
                        while let Ok(len) = socket.recv(&mut buf) {
                            got.push(String::from_utf8_lossy(&buf[..len]).into_owned());
                            last_answer = Instant::now();
                        }
                    }
                    let all = answers.iter().all(|got| !got.is_empty());
                    if started.elapsed() > wait || (all && last_answer.elapsed() > LINGER) {
                        return answers;
                    }
                    // The sockets are polled: a pause between rounds, not a wait for an event.
                    std::thread::sleep(Duration::from_millis(2));
                }
            })
            .expect("enters the client's namespace")
    }

    /// Whether one request is answered within `wait`.
    fn answered(&self, wait: Duration) -> bool {
        !self.exchange(1, wait)[0].is_empty()
    }

    /// What the client maps the VIP to (`ip neigh` output).
    fn client_neighbour(&self) -> String {
        self.client()
            .ip_output(&["neigh", "show", &self.vip.to_string()])
            .unwrap()
    }

    /// The hub's multicast database (`bridge mdb` output).
    fn groups(&self) -> String {
        self.bed
            .hub
            .exec(&["bridge", "mdb", "show"], None)
            .expect("bridge mdb")
    }

    /// Whether the hub's snooping has the port of `node` as a member of the VIP's group.
    fn member(&self, node: &str) -> bool {
        let entry = format!("port {node} grp {} ", multicast_group(self.vip));
        self.groups().lines().any(|line| line.contains(&entry))
    }
}

fn start_herd(bed: &FarmBed, node: usize, config: &Path) -> Herd {
    let run = HerdRun::echoed(Path::new(env!("CARGO_BIN_EXE_herd")), config);
    bed.start_herd(node, &run).expect("herd runs")
}

/// How many requests got no answer, one, and more than one.
fn tally(answers: &[Vec<String>]) -> (usize, usize, usize) {
    let count = |n: fn(usize) -> bool| answers.iter().filter(|got| n(got.len())).count();
    (count(|n| n == 0), count(|n| n == 1), count(|n| n > 1))
}

/// The IPv4 or the IPv6 VIP.
fn vip(v6: bool) -> IpAddr {
    if v6 {
        VIP6.into()
    } else {
        VIP4.into()
    }
}

fn unicast_reaches_no_node_on_a_switch_that_does_not_flood(mode: DataplaneMode, v6: bool) {
    let farm = Farm::start(
        if v6 { "u6" } else { "u4" },
        mode,
        (MacMode::Unicast, HubKind::NoFlood),
        vip(v6),
        &["alpha", "bravo"],
    );
    let answers = farm.exchange(REQUESTS, WAIT);
    let (none, once, more) = tally(&answers);
    eprintln!(
        "unicast MAC, {} VIP, {mode}, no flooding: {once} of {REQUESTS} answered once, {more} more than once, {none} not at all",
        if v6 { "IPv6" } else { "IPv4" }
    );
    let unicast = mac_text(virtual_mac(farm.vip, MacMode::Unicast));
    assert!(
        farm.client_neighbour().contains(&unicast),
        "the client learnt the unicast virtual MAC {unicast}: {}",
        farm.client_neighbour()
    );
    assert_eq!(
        (once, more),
        (0, 0),
        "no frame to the unicast virtual MAC crosses a switch that floods no unknown unicast"
    );
}

fn multicast_answers_every_request_once_on_a_switch_that_does_not_flood(
    mode: DataplaneMode,
    v6: bool,
) {
    let nodes = ["alpha", "bravo"];
    let farm = Farm::start(
        if v6 { "m6" } else { "m4" },
        mode,
        (MacMode::Multicast, HubKind::NoFlood),
        vip(v6),
        &nodes,
    );
    let answers = farm.exchange(REQUESTS, WAIT);
    let (none, once, more) = tally(&answers);
    eprintln!(
        "multicast MAC, {} VIP, {mode}, no flooding: {once} of {REQUESTS} answered once, {more} more than once, {none} not at all",
        if v6 { "IPv6" } else { "IPv4" }
    );
    assert_eq!(
        (none, once, more),
        (0, REQUESTS, 0),
        "every request answered once"
    );
    for node in nodes {
        let served = answers
            .iter()
            .filter(|got| got[0].starts_with(&format!("{node}:")))
            .count();
        assert!(served > REQUESTS / 4, "{node} answered {served}: its share");
    }
    let multicast = mac_text(virtual_mac(farm.vip, MacMode::Multicast));
    assert!(
        farm.client_neighbour().contains(&multicast),
        "the client took the multicast virtual MAC {multicast}: {}",
        farm.client_neighbour()
    );
    // Each node reported its membership of the VIP's group (IGMP or MLD), which the switch's
    // snooping recorded against its port.
    for node in nodes {
        assert!(
            farm.member(node),
            "{node} is a member of {}: {}",
            multicast_group(farm.vip),
            farm.groups()
        );
    }
}

/// Sends a request every 100 ms until one is not answered, which must come within the
/// liveness deadline and some slack; then none of a run of requests may be answered.
fn closes_within_the_deadline(farm: &Farm, what: &str) {
    let since = Instant::now();
    let mut first_refused = None;
    while first_refused.is_none() && since.elapsed() < Duration::from_secs(5) {
        if !farm.answered(Duration::from_millis(100)) {
            first_refused = Some(since.elapsed());
        }
    }
    let first_refused = first_refused.expect("the node stops answering");
    assert!(
        first_refused < Duration::from_secs(2),
        "{what}: stopped after {first_refused:?}"
    );
    let late = farm.exchange(20, Duration::from_millis(500));
    let (none, _, _) = tally(&late);
    eprintln!("{what}: first request refused after {first_refused:?}; then {none} of 20 refused");
    assert_eq!(none, 20, "no VIP packet is accepted once herd is {what}");
}

fn a_frozen_or_killed_node_accepts_nothing(mode: DataplaneMode, mac: MacMode) {
    // The unicast MAC needs a switch that floods; the multicast one takes the one that does not.
    let hub = match mac {
        MacMode::Unicast => HubKind::Learning,
        MacMode::Multicast => HubKind::NoFlood,
    };
    let mut farm = Farm::start(&format!("f{mac}"), mode, (mac, hub), vip(false), &["alpha"]);
    assert!(farm.answered(Duration::from_secs(1)), "the node serves");
    let herd = &farm.herds[0];
    herd.signal(Signal::SIGSTOP).unwrap();
    closes_within_the_deadline(&farm, &format!("frozen ({mac} MAC)"));
    herd.signal(Signal::SIGCONT).unwrap();
    let resumed = Instant::now();
    let mut answered = false;
    while !answered && resumed.elapsed() < Duration::from_secs(5) {
        answered = farm.answered(Duration::from_millis(100));
    }
    assert!(answered, "a resumed node takes its traffic again");

    let group = multicast_group(farm.vip);
    let joined = farm.member("alpha");
    farm.herds[0].kill().unwrap();
    closes_within_the_deadline(&farm, &format!("killed ({mac} MAC)"));
    if mac == MacMode::Multicast {
        assert!(joined, "the node had joined {group}");
        // The killed herd's socket took the membership with it: the kernel sent a leave, and
        // the switch asked the link for other members before it forgot the port (a second or
        // two). Polled, as the switch tells of it to no one.
        let killed = Instant::now();
        while farm.member("alpha") && killed.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(!farm.member("alpha"), "the killed node left {group}");
        eprintln!(
            "{mode}: the switch forgot the killed node's membership after {:?}",
            killed.elapsed()
        );
    }
    let node = &farm.bed.nodes[0].netns;
    let link = node.ip_output(&["link", "show", INTERFACE]).unwrap();
    assert!(
        link.contains("prog/xdp"),
        "the program outlives herd, closed"
    );
    // The server still answers from inside the node: the program, not the server, refuses.
    let vip = farm.vip;
    let inside = node.run(move || {
        let socket = UdpSocket::bind((node4(0), 0)).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(1)))
            .unwrap();
        socket.send_to(b"inside", (vip, PORT)).unwrap();
        socket.recv_from(&mut [0u8; 64]).is_ok()
    });
    assert!(
        inside.expect("enters the node's namespace"),
        "the server is alive"
    );

    // Without the program (its pin removed, as by hand), the node's kernel takes what the
    // destination MAC lets through: a group's frames, but not those to another host's MAC.
    std::fs::remove_file(farm.bed.bpf_dir(0).unwrap().join(INTERFACE)).unwrap();
    let removed = Instant::now();
    let detached = || {
        !node
            .ip_output(&["link", "show", INTERFACE])
            .unwrap()
            .contains("prog/xdp")
    };
    while !detached() && removed.elapsed() < Duration::from_secs(5) {
        // The kernel releases the link once the pin was its last holder: polled, as nothing
        // tells of it.
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(detached(), "the program goes with its pin");
    let taken = farm.answered(Duration::from_secs(1));
    eprintln!("{mac} MAC, {mode}, no program left: the node's kernel took the request: {taken}");
    assert_eq!(
        taken,
        mac == MacMode::Multicast,
        "the kernel takes frames to a group, not to another host's MAC"
    );
}

macro_rules! mode_tests {
    ($module:ident, $mode:expr) => {
        mod $module {
            use super::*;

            #[test]
            fn unicast_reaches_no_node_on_a_switch_that_does_not_flood_v4() {
                super::unicast_reaches_no_node_on_a_switch_that_does_not_flood($mode, false);
            }

            #[test]
            fn unicast_reaches_no_node_on_a_switch_that_does_not_flood_v6() {
                super::unicast_reaches_no_node_on_a_switch_that_does_not_flood($mode, true);
            }

            #[test]
            fn multicast_answers_every_request_once_on_a_switch_that_does_not_flood_v4() {
                super::multicast_answers_every_request_once_on_a_switch_that_does_not_flood(
                    $mode, false,
                );
            }

            #[test]
            fn multicast_answers_every_request_once_on_a_switch_that_does_not_flood_v6() {
                super::multicast_answers_every_request_once_on_a_switch_that_does_not_flood(
                    $mode, true,
                );
            }

            #[test]
            fn a_frozen_or_killed_node_accepts_nothing_with_the_unicast_mac() {
                super::a_frozen_or_killed_node_accepts_nothing($mode, MacMode::Unicast);
            }

            #[test]
            fn a_frozen_or_killed_node_accepts_nothing_with_the_multicast_mac() {
                super::a_frozen_or_killed_node_accepts_nothing($mode, MacMode::Multicast);
            }
        }
    };
}

mode_tests!(xdp, DataplaneMode::Xdp);
mode_tests!(afxdp, DataplaneMode::Afxdp);
