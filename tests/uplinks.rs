//! herd on the interfaces users attach it to as often as to a plain NIC: an 802.1Q
//! sub-interface (`eth0.42` on each node's veth, the client on the same VLAN) and an
//! active-backup bond (`bond0` of two veths, both plugged into the hub), in both dataplane
//! modes, IPv4 and IPv6, on a learning bridge. Every UDP request and TCP connection to the VIP
//! must be answered exactly once, by the node that owns it; and when the bond's active link
//! fails, the VIP must lose no more requests than the node's own address does, which only the
//! kernel's own switch-over serves.
//!
//! Each test takes the dataplane mode and the address family; the `xdp` and `afxdp` modules
//! run them in each.
//!
//! Needs root (namespaces, XDP) and a kernel with 802.1Q VLANs and bonding (`CONFIG_VLAN_8021Q`,
//! `CONFIG_BONDING`, built in or as modules). Some kernels have neither (the development
//! machine's 6.18 among them), so the tests are ignored by default: `scripts/test` runs them
//! with `cargo test --test uplinks -- --ignored` wherever the kernel can make both devices
//! (Debian's can), and says when it could not.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use herd_config::{Affinity, DataplaneMode, Protocol};
use herd_testbed::address::{self, node4, twin, VIP4, VIP6};
use herd_testbed::config::{FarmToml, KEY};
use herd_testbed::owner::Owners;
use herd_testbed::responder::{Kind, On, Responders, Service, Settings};
use herd_testbed::stream::{self, Answered, Pace, Target};
use herd_testbed::uplink::{self, MIIMON_MS};
use herd_testbed::{
    client, FarmBed, FarmPlan, Herd, HerdRun, HubKind, Netns, Offload, Signal, Uplink,
};
use serde_json::Value;

/// The UDP echo service on the VIP, balanced per client address and port.
const UDP_PORT: u16 = 7;
/// A TCP service on the VIP, balanced per client address and port.
const TCP_PORT: u16 = 80;
/// A UDP echo service on each node's own address: the kernel's alone, herd leaves it be.
const OWN_PORT: u16 = 9;
/// The nodes; node `i`'s own address is the plan's [`node4`]`(i)`.
const NODES: [&str; 2] = ["alpha", "bravo"];
/// The node whose bond fails over.
const FAILING: usize = 0;
/// The VLAN the nodes and the client share.
const VLAN: u16 = 42;
/// How many more addresses the client has, [`address::source4`] 1 to `SOURCES`.
const SOURCES: u8 = 32;
/// The services every node runs: each answers `NAME:REQUEST`.
const SERVICES: [Service; 3] = [
    Service {
        kind: Kind::Udp,
        on: On::Vip,
        port: UDP_PORT,
    },
    Service {
        kind: Kind::TcpOnce,
        on: On::Vip,
        port: TCP_PORT,
    },
    Service {
        kind: Kind::Udp,
        on: On::Own,
        port: OWN_PORT,
    },
];
/// How long a farm may take to settle: detection, agreement, and the drain.
const SETTLE: Duration = Duration::from_secs(10);
/// How long a UDP request may wait for its answer.
const UDP_WAIT: Duration = Duration::from_secs(2);

/// The address family of a farm's VIP and of the client's flows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

impl Family {
    /// The farm's VIP.
    fn vip(self) -> IpAddr {
        match self {
            Family::V4 => VIP4.into(),
            Family::V6 => VIP6.into(),
        }
    }

    /// Node `node`'s own address.
    fn node(self, node: usize) -> IpAddr {
        match self {
            Family::V4 => node4(node).into(),
            Family::V6 => twin(node4(node)).into(),
        }
    }

    /// One flow from each of the client's extra addresses and each port in `ports`.
    fn flows(self, ports: std::ops::Range<u16>) -> Vec<SocketAddr> {
        address::flows(ports, SOURCES)
            .map(|flow| match self {
                Family::V4 => flow.into(),
                Family::V6 => SocketAddr::new(twin(*flow.ip()).into(), flow.port()),
            })
            .collect()
    }
}

/// The farm: a learning bridge, the nodes attached as `uplink` says running herd and the
/// servers, a client. Fields are dropped in this order: servers stop, herds are killed, then
/// the bed goes.
struct Farm {
    servers: Responders,
    herds: Vec<Herd>,
    bed: FarmBed,
    owners: Owners,
    family: Family,
    /// What the tests print before their figures.
    label: String,
}

impl Farm {
    /// Builds the farm for test `tag` and waits until every herd has taken its share and every
    /// server listens.
    fn start(tag: &str, mode: DataplaneMode, uplink: Uplink, family: Family) -> Self {
        let bed = FarmBed::create(&FarmPlan {
            prefix: format!("herd-up-{tag}-{mode}-{}", std::process::id()),
            nodes: &NODES,
            hub: HubKind::Learning,
            sources: SOURCES,
            client_offload: Offload::Default,
            uplink,
        })
        .expect("builds the farm's bed");
        let interface = bed.nodes[0].interface.clone();
        let key = bed.bed().write_private("farm.key", KEY).unwrap();
        let toml = NODES
            .iter()
            .enumerate()
            .fold(FarmToml::new("uplinks", mode), |farm, (node, &name)| {
                farm.node(name, node4(node))
            })
            .interface(&interface)
            .vips(&[family.vip()])
            .key_file(&key)
            .rule(Protocol::Udp, &[UDP_PORT], Some(Affinity::ClientIpPort))
            .rule(Protocol::Tcp, &[TCP_PORT], Some(Affinity::ClientIpPort));
        let config = bed.bed().write_private("farm.toml", &toml.text()).unwrap();
        let owners = Owners::load(&config, &[true; NODES.len()]).expect("a valid configuration");
        // Started before the servers, which bind the VIP that herd adds.
        let herds: Vec<Herd> = (0..NODES.len())
            .map(|node| start_herd(&bed, node, &config))
            .collect();
        let shares = owners.shares();
        for (node, herd) in herds.iter().enumerate() {
            let whole = format!("all_tcp={0} non_tcp={0}", shares[node]);
            assert!(
                herd.wait_for(0, |line| line.contains(&whole), SETTLE)
                    .is_some(),
                "{} takes its share of {} buckets within {SETTLE:?}",
                NODES[node],
                shares[node]
            );
        }
        let settings = Settings {
            vip: family.vip(),
            line_wait: Duration::from_secs(2),
            record: true,
        };
        let servers = Responders::start(&bed.nodes, &SERVICES, &settings).expect("servers listen");
        Farm {
            servers,
            herds,
            bed,
            owners,
            family,
            label: format!("{mode} on {interface} ({uplink:?}), {family:?}"),
        }
    }

    /// The client's namespace.
    fn client(&self) -> &Netns {
        &self.bed.client.netns
    }

    /// The node that owns `flow`'s traffic to the VIP's `port`.
    fn owner(&self, protocol: Protocol, port: u16, flow: SocketAddr) -> usize {
        self.owners
            .of(protocol, port, flow)
            .expect("a rule balances the flow")
    }

    /// Sends one UDP request to the VIP from each of `flows` and asserts that each was
    /// answered exactly once, by its owner, and served once; returns how many were.
    fn udp_answered_once(&self, flows: &[SocketAddr]) -> usize {
        let before = self.udp_hits();
        let vip = SocketAddr::new(self.family.vip(), UDP_PORT);
        let answers = client::udp_exchange(self.client(), vip, flows, UDP_WAIT)
            .unwrap_or_else(|error| panic!("{error:#}"));
        let mut once = 0;
        let mut wrong = Vec::new();
        for (i, (&flow, answers)) in flows.iter().zip(&answers).enumerate() {
            let expected = format!("{}:u{i}", NODES[self.owner(Protocol::Udp, UDP_PORT, flow)]);
            match answers.as_slice() {
                [answer] if *answer == expected => once += 1,
                _ => wrong.push((flow, answers.clone())),
            }
        }
        println!(
            "{}: UDP to the VIP, {once} of {} requests answered once by their owner",
            self.label,
            flows.len()
        );
        assert!(
            wrong.is_empty(),
            "{}: {} of {} UDP requests not answered exactly once by their owner, first: {:?}",
            self.label,
            wrong.len(),
            flows.len(),
            &wrong[..wrong.len().min(5)]
        );
        assert_eq!(
            self.udp_hits() - before,
            flows.len(),
            "each request served once"
        );
        once
    }

    /// How many UDP requests to the VIP the servers have served.
    fn udp_hits(&self) -> usize {
        self.servers
            .hits()
            .iter()
            .filter(|hit| hit.protocol == Protocol::Udp && hit.port == UDP_PORT)
            .count()
    }
}

/// Starts `herd run` as node `node` of `bed` with the configuration file `config`, its log
/// copied to the test's output.
fn start_herd(bed: &FarmBed, node: usize, config: &Path) -> Herd {
    let run = HerdRun::echoed(Path::new(env!("CARGO_BIN_EXE_herd")), config);
    bed.start_herd(node, &run).expect("herd runs")
}

/// On `uplink`: every UDP request and TCP connection to the VIP is answered exactly once, by
/// the node that owns it.
fn answers_each_request_once(mode: DataplaneMode, uplink: Uplink, family: Family) {
    let tag = match uplink {
        Uplink::Vlan(_) => "vlan",
        _ => "bond",
    };
    let farm = Farm::start(&format!("{tag}-{family:?}"), mode, uplink, family);
    let udp = family.flows(40000..40008);
    farm.udp_answered_once(&udp);

    let flows = family.flows(41000..41004);
    let vip = SocketAddr::new(family.vip(), TCP_PORT);
    let connections: Vec<(SocketAddr, SocketAddr)> = flows.iter().map(|&f| (f, vip)).collect();
    let before = farm.servers.hits().len();
    let replies = client::tcp_exchange(farm.client(), &connections)
        .unwrap_or_else(|error| panic!("{}: {error:#}", farm.label));
    let mut once = 0;
    for (i, (&flow, reply)) in flows.iter().zip(&replies).enumerate() {
        let owner = NODES[farm.owner(Protocol::Tcp, TCP_PORT, flow)];
        assert_eq!(
            *reply,
            format!("{owner}:t{i}"),
            "{}: connection from {flow}",
            farm.label
        );
        once += 1;
    }
    let served: Vec<SocketAddr> = farm.servers.hits()[before..]
        .iter()
        .filter(|hit| hit.protocol == Protocol::Tcp)
        .map(|hit| hit.peer)
        .collect();
    assert_eq!(
        served.iter().copied().collect::<HashSet<_>>(),
        flows.iter().copied().collect::<HashSet<_>>(),
        "{}: the servers served each connection once",
        farm.label
    );
    assert_eq!(
        served.len(),
        flows.len(),
        "{}: no connection served twice",
        farm.label
    );
    println!(
        "{}: TCP to the VIP, {once} of {} connections answered once by their owner",
        farm.label,
        flows.len()
    );
}

/// The requests of the failover stream: a request to each target every 2 ms for 4 s; the
/// bond's active link is pulled after 1.5 s, well after the client has resolved the VIP (a
/// neighbour entry younger than a second, `locktime`, would ignore a gratuitous ARP that
/// poisoned it), and the stream goes on long enough for the switch-over (up to `miimon`, 100 ms)
/// to end well before it does.
const PACE: Pace = Pace {
    count: 2000,
    interval: Duration::from_millis(2),
    wait: Duration::from_secs(1),
};
/// The request after which the cable is pulled.
const PULL_AT: usize = 750;
/// How many more requests to the VIP than to the node's own address the failover may lose
/// besides those [`margin`] allows for herd's longer path: the streams are interleaved, a
/// request to each every 2 ms, so the same outage takes the same stretch of each, but a
/// request at either edge of it may fall on either side for one stream and not the other.
const EDGES: usize = 2;

/// How many more requests to the VIP than to the node's own address the failover may lose:
/// [`EDGES`], and one for each interval of the time herd's path adds to the kernel's (the
/// 99th percentile of the VIP's waits for an answer before the pull, less the median of the
/// own address's): a request answered just before the cable is pulled is lost if its answer
/// is still on its way, in an AF_XDP worker say, when the link goes down.
fn margin(vip: &Answered, own: &Answered) -> usize {
    let before = 0..PULL_AT;
    let added = vip
        .wait_percentile(before.clone(), 99)
        .unwrap_or_default()
        .saturating_sub(own.wait_percentile(before, 50).unwrap_or_default());
    EDGES + added.as_micros().div_ceil(PACE.interval.as_micros()) as usize
}

/// While the client sends a steady stream of UDP requests to the VIP (from flows the failing
/// node owns, and from flows the other node owns) and to the failing node's own address,
/// the hub's port of the bond's active link goes down: the cable is pulled. The VIP's
/// requests the failing node owns lose no more than its own address does, plus
/// [`margin`]; the other node's lose none; afterwards, every request is answered once and the
/// client's neighbour entry for the VIP does not hold the failing node's MAC.
fn bond_failover_loses_no_more_than_the_kernel(mode: DataplaneMode, family: Family) {
    let mut farm = Farm::start(&format!("failover-{family:?}"), mode, Uplink::Bond, family);
    let failing = &farm.bed.nodes[FAILING];
    let vip = SocketAddr::new(family.vip(), UDP_PORT);
    let candidates = family.flows(42000..42016);
    let owned_by = |node: usize| -> Vec<SocketAddr> {
        candidates
            .iter()
            .copied()
            .filter(|&flow| farm.owner(Protocol::Udp, UDP_PORT, flow) == node)
            .take(16)
            .collect()
    };
    let targets = [
        Target {
            to: vip,
            flows: owned_by(FAILING),
        },
        Target {
            to: SocketAddr::new(family.node(FAILING), OWN_PORT),
            flows: family.flows(43000..43001).into_iter().take(16).collect(),
        },
        Target {
            to: vip,
            flows: owned_by(1 - FAILING),
        },
    ];
    let active = uplink::active_link(&failing.netns)
        .unwrap()
        .expect("the bond has an active link");
    let (pulled, pull) = mpsc::channel();
    let (bed, active_link) = (&farm.bed, &active);
    let answered: Vec<Answered> = std::thread::scope(|scope| {
        let puller = scope.spawn(move || {
            pull.recv().expect("the stream reaches the pull");
            bed.unplug(FAILING, active_link).expect("pulls the cable");
        });
        let answered = stream::steady_udp(farm.client(), &targets, &PACE, PULL_AT, || {
            let _ = pulled.send(());
        })
        .unwrap_or_else(|error| panic!("{error:#}"));
        puller.join().expect("the cable is pulled");
        answered
    });
    let now_active = uplink::active_link(&failing.netns).unwrap();
    let [vip_failing, own, vip_other] = [0, 1, 2].map(|i| &answered[i]);
    let margin = margin(vip_failing, own);
    let before = 0..PULL_AT;
    println!(
        "{}: bond failover ({active} pulled, now {now_active:?}, miimon {MIIMON_MS} ms), {} \
         requests each every {:?}: lost {} to the VIP (failing node's flows), {} to the node's \
         own address (the kernel's switch-over), {} to the VIP (the other node's flows); \
         margin {margin} (waits before the pull: VIP p99 {:?}, own median {:?})",
        farm.label,
        PACE.count,
        PACE.interval,
        vip_failing.lost(),
        own.lost(),
        vip_other.lost(),
        vip_failing.wait_percentile(before.clone(), 99),
        own.wait_percentile(before, 50),
    );
    assert_ne!(
        now_active.as_deref(),
        Some(active.as_str()),
        "the bond failed over"
    );
    for (name, answered) in [("VIP", vip_failing), ("own", own), ("VIP other", vip_other)] {
        assert_eq!(
            answered.repeated(),
            0,
            "{}: {name} requests answered twice",
            farm.label
        );
    }
    assert!(
        own.lost() < PACE.count / 2,
        "{}: the node's own address keeps answering after the switch-over",
        farm.label
    );
    assert!(
        vip_failing.lost() <= own.lost() + margin,
        "{}: the VIP lost {} requests, the kernel's switch-over {} (margin {margin})",
        farm.label,
        vip_failing.lost(),
        own.lost()
    );
    assert_eq!(
        vip_other.lost(),
        0,
        "{}: the other node's flows lose nothing",
        farm.label
    );

    farm.udp_answered_once(&family.flows(44000..44004));
    let neighbour = vip_neighbour(&farm);
    let failing_mac = mac(&failing.netns, &failing.interface);
    println!(
        "{}: the client's neighbour entry for the VIP: {neighbour:?}",
        farm.label
    );
    assert_ne!(
        neighbour.as_deref(),
        Some(failing_mac.as_str()),
        "{}: the client's neighbour entry for the VIP holds the failing node's MAC",
        farm.label
    );
    assert_guard_dropped_the_kernel_s_announcement(&mut farm);
}

/// Stops the failing node's herd and asserts that its egress guard dropped what the kernel
/// announced for the VIP with the node's MAC when the bond failed over (the bond asks for it,
/// `NETDEV_NOTIFY_PEERS`, and the kernel announces every address of the bond): a gratuitous
/// ARP for an IPv4 VIP, an unsolicited neighbour advertisement for an IPv6 one.
fn assert_guard_dropped_the_kernel_s_announcement(farm: &mut Farm) {
    let herd = &mut farm.herds[FAILING];
    herd.signal(Signal::SIGTERM).unwrap();
    assert!(
        herd.wait_timeout(SETTLE).unwrap().is_some(),
        "{}: the failing node's herd stops",
        farm.label
    );
    let line = herd
        .wait_for(
            0,
            |line| line.contains("what the egress guard kept"),
            SETTLE,
        )
        .expect("herd says what its egress guard did");
    println!("{}: {}", farm.label, line.text);
    let dropped = match farm.family {
        Family::V4 => "arp_dropped=",
        Family::V6 => "advertisements_dropped=",
    };
    let count: u64 = line
        .text
        .split_whitespace()
        .find_map(|field| field.strip_prefix(dropped))
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("{dropped} in {:?}", line.text));
    assert!(
        count > 0,
        "{}: the guard dropped the kernel's announcement of the VIP after the failover",
        farm.label
    );
}

/// The MAC the client's neighbour entry for the VIP holds, if it has one.
fn vip_neighbour(farm: &Farm) -> Option<String> {
    let vip = farm.family.vip().to_string();
    let text = farm
        .client()
        .ip_output(&["-j", "neigh", "show", &vip])
        .unwrap();
    let entries: Value = serde_json::from_str(&text).unwrap();
    entries[0]["lladdr"].as_str().map(str::to_owned)
}

/// `device`'s MAC in `netns`, as `ip` writes it.
fn mac(netns: &Netns, device: &str) -> String {
    let text = netns.ip_output(&["-j", "link", "show", device]).unwrap();
    let links: Value = serde_json::from_str(&text).unwrap();
    links[0]["address"]
        .as_str()
        .expect("the link has an address")
        .to_owned()
}

/// A bond that would undo the farm's virtual MAC is refused, by name, before herd changes
/// anything: one in mode balance-alb (it rewrites herd's ARP answers), one whose MAC follows
/// its active link (`fail_over_mac active`).
#[test]
#[ignore = "needs a kernel with bonding (CONFIG_BONDING)"]
fn a_bond_that_would_undo_the_virtual_mac_is_refused() {
    let bed = FarmBed::create(&FarmPlan {
        prefix: format!("herd-up-refuse-{}", std::process::id()),
        nodes: &NODES[..1],
        hub: HubKind::Learning,
        sources: 0,
        client_offload: Offload::Default,
        uplink: Uplink::Bond,
    })
    .expect("builds the bed");
    let node = &bed.nodes[0].netns;
    let key = bed.bed().write_private("farm.key", KEY).unwrap();
    let cases = [
        ("bond1", ["mode", "balance-alb"], "is in mode balance-alb"),
        (
            "bond2",
            ["fail_over_mac", "active"],
            "has fail_over_mac active",
        ),
    ];
    for (bond, [setting, value], refusal) in cases {
        node.ip(&["link", "add", bond, "type", "bond", setting, value])
            .unwrap();
        let text = FarmToml::new("refused", DataplaneMode::Xdp)
            .node(NODES[0], node4(0))
            .interface(bond)
            .key_file(&key)
            .rule(Protocol::Udp, &[UDP_PORT], None)
            .text();
        let config = bed
            .bed()
            .write_private(&format!("{bond}.toml"), &text)
            .unwrap();
        let run = HerdRun::echoed(Path::new(env!("CARGO_BIN_EXE_herd")), &config);
        let mut herd = bed.spawn_herd(0, &run).unwrap();
        let exit = herd
            .wait_timeout(Duration::from_secs(60))
            .unwrap()
            .expect("herd refuses to run");
        assert!(!exit.success(), "{bond}: {exit}");
        let message = format!("bond {bond} {refusal}");
        // The process has exited; its last lines may still be on their way to the test.
        assert!(
            herd.wait_for(0, |line| line.contains(&message), Duration::from_secs(5))
                .is_some(),
            "{bond}: herd says {message:?}"
        );
        let addresses = node.ip_output(&["addr", "show", bond]).unwrap();
        assert!(
            !addresses.contains(&VIP4.to_string()),
            "{bond}: refused before the VIP is added: {addresses}"
        );
    }
}

macro_rules! uplink_tests {
    ($mode:ident, $value:expr) => {
        mod $mode {
            use super::*;

            #[test]
            #[ignore = "needs a kernel with 802.1Q VLANs (CONFIG_VLAN_8021Q)"]
            fn vlan_ipv4() {
                answers_each_request_once($value, Uplink::Vlan(VLAN), Family::V4);
            }

            #[test]
            #[ignore = "needs a kernel with 802.1Q VLANs (CONFIG_VLAN_8021Q)"]
            fn vlan_ipv6() {
                answers_each_request_once($value, Uplink::Vlan(VLAN), Family::V6);
            }

            #[test]
            #[ignore = "needs a kernel with bonding (CONFIG_BONDING)"]
            fn bond_ipv4() {
                answers_each_request_once($value, Uplink::Bond, Family::V4);
            }

            #[test]
            #[ignore = "needs a kernel with bonding (CONFIG_BONDING)"]
            fn bond_ipv6() {
                answers_each_request_once($value, Uplink::Bond, Family::V6);
            }

            #[test]
            #[ignore = "needs a kernel with bonding (CONFIG_BONDING)"]
            fn bond_failover_ipv4() {
                bond_failover_loses_no_more_than_the_kernel($value, Family::V4);
            }

            #[test]
            #[ignore = "needs a kernel with bonding (CONFIG_BONDING)"]
            fn bond_failover_ipv6() {
                bond_failover_loses_no_more_than_the_kernel($value, Family::V6);
            }
        }
    };
}

uplink_tests!(xdp, DataplaneMode::Xdp);
uplink_tests!(afxdp, DataplaneMode::Afxdp);
