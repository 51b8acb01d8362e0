//! Established connections across membership changes, under the loads that make a node
//! forget them if it keeps a table of the SYNs it took (issue 15): a three-node farm on a
//! learning bridge holds hundreds of long-lived TCP connections to the VIP (`client-ip-port`),
//! then
//!
//! - a node joins while the client floods the VIP with millions of SYNs from spoofed sources,
//!   and another node leaves (SIGTERM, a planned leave) under a second flood;
//! - a node joins after hundreds of thousands of other connections were opened and closed on
//!   the node that serves many of them.
//!
//! No long-lived connection may break, and some must have been in buckets that changed owner
//! (otherwise the test proves nothing). Each test prints what it measured: connections moved
//! and broken, SYNs sent and their rate, connections churned and their rate.
//!
//! Each test runs in both dataplane modes and both families (modules `xdp_v4`, `xdp_v6`,
//! `afxdp_v4`, `afxdp_v6`), one test at a time: each loads the machine's cores on its own.
//! Needs root (namespaces, XDP, raw sockets); `scripts/test` runs it as root, as CI does.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use herd_config::{Affinity, DataplaneMode, MacMode, Protocol};
use herd_packet::neighbor::virtual_mac;
use herd_testbed::address::Family;
use herd_testbed::churn::{self, Churn};
use herd_testbed::config::{FarmToml, KEY};
use herd_testbed::flood::{self, SynFlood};
use herd_testbed::held::{self, Broken, Held};
use herd_testbed::owner::Owners;
use herd_testbed::responder::{Kind, On, Responders, Service, Settings};
use herd_testbed::{FarmBed, FarmPlan, Herd, HerdRun, Host, HubKind, Offload, Signal, Uplink};

/// The long-lived connections' service: answers each line until the client closes.
const LONG_PORT: u16 = 82;
/// The churn's service: accepts each connection and closes it.
const CHURN_PORT: u16 = 83;
/// The nodes: name and weight; node `i`'s own address is the plan's [`Family::node`]`(i)`.
const NODES: [(&str, u32); 3] = [("alpha", 1), ("bravo", 1), ("charlie", 2)];
/// The node that joins the farm of the two others.
const JOINER: usize = 1;
/// The node that leaves the farm of three.
const LEAVER: usize = 0;
/// The node the churn goes to: the heaviest, which holds the most connections.
const CHURNED: usize = 2;
/// The client's extra source addresses.
const SOURCES: u8 = 200;
/// The services every node runs.
const SERVICES: [Service; 2] = [
    Service {
        kind: Kind::TcpLines,
        on: On::Vip,
        port: LONG_PORT,
    },
    Service {
        kind: Kind::TcpAccept,
        on: On::Vip,
        port: CHURN_PORT,
    },
];

/// Long-lived connections: one from each source address and each of these ports.
const HELD_PORTS: std::ops::Range<u16> = 40000..40002;
/// The least of them that must have moved bucket for a test to prove anything.
const MOVED_AT_LEAST: usize = 20;
/// How long the answers to one round of checks may take: under the flood a segment may be
/// lost and sent again, more than once.
const CHECK_TIME: Duration = Duration::from_secs(10);

/// SYNs the flood must send.
const FLOOD_SYNS: u64 = 2_000_000;
/// The most SYNs a flood sends, to bound it however long the test takes.
const FLOOD_MOST: u64 = 20_000_000;
/// How long a flood lasts at most.
const FLOOD_TIME: Duration = Duration::from_secs(180);
/// How long a flood may take to send what a step of the test waits for.
const FLOOD_WAIT: Duration = Duration::from_secs(90);

/// Connections the churn must open.
const CHURN: usize = 300_000;
/// How long the churn may take.
const CHURN_TIME: Duration = Duration::from_secs(120);
/// Connections the churn opens at once.
const CHURN_IN_FLIGHT: usize = 512;

/// How long a farm may take to settle or to move buckets after a change.
const SETTLE: Duration = Duration::from_secs(15);

/// The tests load the machine's two cores on their own: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// What a test's farm is.
#[derive(Clone, Copy, Debug)]
struct Variant {
    mode: DataplaneMode,
    family: Family,
}

/// The farm: a learning bridge, the three nodes with their servers (the joiner's herd not yet
/// started), the client. Dropped in this order: servers, herds, bed.
struct Farm {
    /// The servers of the nodes that run herd: a node's start once herd has added the VIP,
    /// which they bind.
    servers: Vec<Responders>,
    herds: Vec<Option<Herd>>,
    bed: FarmBed,
    variant: Variant,
    config: PathBuf,
}

impl Farm {
    /// Builds the farm for test `tag` with every node but [`JOINER`] running herd, and waits
    /// until it has settled.
    fn start(tag: &str, variant: Variant) -> Self {
        let Variant { mode, family } = variant;
        let names = NODES.map(|(name, _)| name);
        let bed = FarmBed::create(&FarmPlan {
            prefix: format!("herd-{tag}-{mode}-{family}-{}", std::process::id()),
            nodes: &names,
            hub: HubKind::Learning,
            uplink: Uplink::Veth,
            sources: SOURCES,
            client_offload: Offload::Default,
        })
        .expect("builds the farm's bed");
        let key = bed.bed().write_private("farm.key", KEY).unwrap();
        let farm = NODES.iter().enumerate().fold(
            FarmToml::new("conn", mode).vips(&[family.vip()]),
            |farm, (node, &(name, weight))| farm.weighted_node(name, family.node(node), weight),
        );
        let text = farm
            .key_file(&key)
            .rule(Protocol::Tcp, &[LONG_PORT], Some(Affinity::ClientIpPort))
            .rule(Protocol::Tcp, &[CHURN_PORT], Some(Affinity::ClientIpPort))
            // The long-lived connections stay open to the end, so every drain lasts until
            // drain_s, which breaks them: far beyond a test's length on a loaded machine (a
            // flood at a tenth of its usual rate once took 27 s through a join).
            .tables("[membership]\ndrain_s = 600\n")
            .text();
        let config = bed.bed().write_private("farm.toml", &text).unwrap();
        // The nodes answer the flood's spoofed sources through the client, which drops it.
        flood::sink_replies(&bed.nodes, &bed.client, family).unwrap();
        let run = HerdRun::echoed(Path::new(env!("CARGO_BIN_EXE_herd")), &config);
        let herds = (0..NODES.len())
            .map(|node| (node != JOINER).then(|| bed.start_herd(node, &run).expect("herd runs")))
            .collect();
        let up: Vec<Host> = (0..NODES.len())
            .filter(|&node| node != JOINER)
            .map(|node| bed.nodes[node].clone())
            .collect();
        let servers = Responders::start(&up, &SERVICES, &settings(family)).expect("servers listen");
        let farm = Farm {
            servers: vec![servers],
            herds,
            bed,
            variant,
            config,
        };
        farm.settle(&[0; 3], WITHOUT_JOINER);
        farm
    }

    /// Starts the joiner's herd, then its servers.
    fn join(&mut self) {
        let run = HerdRun::echoed(Path::new(env!("CARGO_BIN_EXE_herd")), &self.config);
        self.herds[JOINER] = Some(self.bed.start_herd(JOINER, &run).expect("herd runs"));
        let joiner = [self.bed.nodes[JOINER].clone()];
        let servers = Responders::start(&joiner, &SERVICES, &settings(self.variant.family))
            .expect("servers listen");
        self.servers.push(servers);
    }

    fn herd(&self, node: usize) -> &Herd {
        self.herds[node].as_ref().expect("herd runs")
    }

    fn marks(&self) -> Vec<usize> {
        self.herds
            .iter()
            .map(|herd| herd.as_ref().map_or(0, Herd::logged))
            .collect()
    }

    /// The owners when the nodes in `up` are the members.
    fn owners(&self, up: [bool; 3]) -> Owners {
        Owners::load(&self.config, &up).unwrap()
    }

    /// Waits until every node in `up` has installed, since `marks`, a table that gives it its
    /// whole share of the farm of `up`: each bucket wholly its owner's.
    fn settle(&self, marks: &[usize], up: [bool; 3]) {
        let whole = |share| format!("all_tcp={share} non_tcp={share}");
        self.each_installs(marks, up, whole, "its share of");
    }

    /// Waits until every node in `up` has installed, since `marks`, a table in which it takes
    /// the new connections of its share of the farm of `up`: the buckets have moved (those that
    /// left a node may still drain there).
    fn moved(&self, marks: &[usize], up: [bool; 3]) {
        let takes = |share| format!("new_connections={share} ");
        self.each_installs(marks, up, takes, "the new connections of its");
    }

    /// Waits until every node in `up` has logged, since `marks`, the install line that
    /// `logged` writes for its share of the farm of `up` (`what` it then takes).
    fn each_installs(
        &self,
        marks: &[usize],
        up: [bool; 3],
        logged: impl Fn(usize) -> String,
        what: &str,
    ) {
        let shares = self.owners(up).shares();
        for node in (0..3).filter(|&node| up[node]) {
            let line = logged(shares[node]);
            assert!(
                self.herd(node)
                    .wait_for(marks[node], |text| text.contains(&line), SETTLE)
                    .is_some(),
                "{} takes {what} {} buckets within {SETTLE:?}",
                NODES[node].0,
                shares[node]
            );
        }
    }

    /// Opens the long-lived connections and checks that each is served by its owner.
    fn hold(&self) -> Vec<Held> {
        let family = self.variant.family;
        let from: Vec<SocketAddr> = family.flows(HELD_PORTS, SOURCES).collect();
        let to = SocketAddr::new(family.vip(), LONG_PORT);
        let held = held::open(&self.bed.client.netns, &from, to, CHECK_TIME)
            .unwrap_or_else(|error| panic!("{error:#}"));
        let owners = self.owners(WITHOUT_JOINER);
        for connection in &held {
            let owner = owners
                .of(Protocol::Tcp, LONG_PORT, connection.from)
                .unwrap();
            assert_eq!(
                connection.node, NODES[owner].0,
                "the connection from {}",
                connection.from
            );
        }
        held
    }

    /// A flood of spoofed SYNs from the client to the VIP's long-lived service.
    fn flood(&self) -> SynFlood {
        let client = &self.bed.client;
        let vip = self.variant.family.vip();
        SynFlood {
            netns: client.netns.clone(),
            interface: client.interface.clone(),
            from_mac: client.mac().unwrap(),
            to_mac: virtual_mac(vip, MacMode::Unicast),
            to: SocketAddr::new(vip, LONG_PORT),
            count: FLOOD_MOST,
            within: FLOOD_TIME,
            rate: None,
        }
    }
}

/// The responders' settings.
fn settings(family: Family) -> Settings {
    Settings {
        vip: family.vip(),
        line_wait: Duration::from_secs(2),
        record: false,
    }
}

/// Every node but [`JOINER`] up.
const WITHOUT_JOINER: [bool; 3] = [true, false, true];
/// Every node up.
const ALL: [bool; 3] = [true; 3];
/// Every node but [`LEAVER`] up.
const WITHOUT_LEAVER: [bool; 3] = [false, true, true];

/// How many of `held` are in buckets whose owner differs between `before` and `after`, and
/// how many of those the node `from` served.
fn moved(held: &[Held], before: &Owners, after: &Owners) -> (usize, Vec<usize>) {
    let mut from = vec![0; 3];
    let mut count = 0;
    for connection in held {
        let old = before
            .of(Protocol::Tcp, LONG_PORT, connection.from)
            .unwrap();
        let new = after.of(Protocol::Tcp, LONG_PORT, connection.from).unwrap();
        if old != new {
            count += 1;
            from[old] += 1;
        }
    }
    (count, from)
}

/// The connections of `held` not in `broken`, checked again with `text`; those that break
/// now are added to `broken`.
fn check_again(held: &mut Vec<Held>, broken: &mut Vec<Broken>, text: &str) -> usize {
    let (mut whole, gone): (Vec<Held>, Vec<Held>) = std::mem::take(held)
        .into_iter()
        .partition(|c| !broken.iter().any(|b| b.from == c.from));
    let now = held::broken(&mut whole, text, CHECK_TIME);
    let count = now.len();
    broken.extend(now);
    whole.extend(gone);
    *held = whole;
    count
}

/// Prints the first of `broken` and fails if there are any.
fn assert_none_broken(broken: &[Broken], of: usize, what: &str) {
    for b in broken.iter().take(5) {
        eprintln!("  broken: {} {}", b.from, b.why);
    }
    assert!(
        broken.is_empty(),
        "{} of {of} long-lived connections broken {what}",
        broken.len()
    );
}

/// A node joins while spoofed SYNs flood the VIP, then another leaves (SIGTERM) under a second
/// flood, two million SYNs or more in all: none of the long-lived connections breaks, though
/// some were in buckets that moved at each change.
fn a_join_and_a_leave_under_a_syn_flood_break_no_connection(variant: Variant) {
    let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let began = Instant::now();
    let mut farm = Farm::start("flood", variant);
    let mut held = farm.hold();
    let count = held.len();
    let (moved_at_join, from) = moved(&held, &farm.owners(WITHOUT_JOINER), &farm.owners(ALL));
    let (moved_at_leave, _) = moved(&held, &farm.owners(ALL), &farm.owners(WITHOUT_LEAVER));
    assert!(
        moved_at_join >= MOVED_AT_LEAST && moved_at_leave >= MOVED_AT_LEAST,
        "connections in buckets that move: {moved_at_join} at the join, {moved_at_leave} at \
         the leave, of {count}"
    );

    // The first flood runs from before the joiner starts until its buckets have moved; the
    // connections are checked once it has stopped, so that no answer is lost to a saturated
    // link: a connection a node has forgotten stays broken.
    let first = farm.flood().start().unwrap();
    assert!(
        first.wait_sent(FLOOD_SYNS / 2, FLOOD_WAIT),
        "the flood sends {} SYNs within {FLOOD_WAIT:?}",
        FLOOD_SYNS / 2
    );
    let marks = farm.marks();
    let joining = Instant::now();
    farm.join();
    farm.moved(&marks, ALL);
    let joined = joining.elapsed();
    let first = first.stop().expect("the flood runs");
    let mut broken = Vec::new();
    let at_join = check_again(&mut held, &mut broken, "joined");

    // The second, from before the SIGTERM until the leaving node's buckets have moved and the
    // two floods together have sent enough.
    let second = farm.flood().start().unwrap();
    let rest = FLOOD_SYNS.saturating_sub(first.sent).max(FLOOD_SYNS / 4);
    assert!(
        second.wait_sent(rest / 2, FLOOD_WAIT),
        "the second flood sends {} SYNs within {FLOOD_WAIT:?}",
        rest / 2
    );
    let marks = farm.marks();
    let leaving = Instant::now();
    farm.herd(LEAVER).signal(Signal::SIGTERM).unwrap();
    for node in [1, 2] {
        assert!(
            farm.herd(node)
                .wait_for(
                    marks[node],
                    |line| line.contains("view agreed") && line.contains("members=bravo,charlie"),
                    SETTLE,
                )
                .is_some(),
            "{} agrees on a view without the leaving node",
            NODES[node].0
        );
    }
    farm.moved(&marks, WITHOUT_LEAVER);
    let left = leaving.elapsed();
    // What the floods sent together is asserted below, once the figures are printed.
    second.wait_sent(rest, FLOOD_WAIT);
    let second = second.stop().expect("the flood runs");
    let at_leave = check_again(&mut held, &mut broken, "left");
    let all = [
        farm.owners(WITHOUT_JOINER),
        farm.owners(ALL),
        farm.owners(WITHOUT_LEAVER),
    ];
    let unmoved = broken
        .iter()
        .filter(|b| {
            let owner = |owners: &Owners| owners.of(Protocol::Tcp, LONG_PORT, b.from).unwrap();
            all.iter().all(|owners| owner(owners) == owner(&all[0]))
        })
        .count();
    let sent = first.sent + second.sent;
    eprintln!(
        "{} mode, {}: {count} long-lived connections, {moved_at_join} in buckets moved by the \
         join ({} from alpha, {} from charlie), {moved_at_leave} by the leave; broken: \
         {at_join} at the join, {at_leave} at the leave ({unmoved} of them in buckets that \
         never moved); {sent} SYNs flooded: {} in {:?} ({:.0}/s) through the join, {} in {:?} \
         ({:.0}/s) through the leave; buckets moved {joined:?} after the joiner started, \
         {left:?} after SIGTERM; the whole test {:?}",
        variant.mode,
        variant.family,
        from[0],
        from[2],
        first.sent,
        first.took,
        first.rate(),
        second.sent,
        second.took,
        second.rate(),
        began.elapsed()
    );
    assert!(
        sent >= FLOOD_SYNS,
        "the floods sent {sent} SYNs, fewer than {FLOOD_SYNS}"
    );
    assert_none_broken(&broken, count, "by a join and a leave under a SYN flood");
}

/// A node joins after hundreds of thousands of other connections were opened and closed on
/// the node that serves most of the long-lived ones: none of those breaks, though some were in
/// buckets that moved.
fn a_join_after_heavy_connection_churn_breaks_no_connection(variant: Variant) {
    let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let began = Instant::now();
    let mut farm = Farm::start("churn", variant);
    let mut held = farm.hold();
    let count = held.len();
    let before = farm.owners(WITHOUT_JOINER);
    let (moved_at_join, from) = moved(&held, &before, &farm.owners(ALL));
    assert!(
        from[CHURNED] >= MOVED_AT_LEAST,
        "connections of {} in buckets that move: {} of {count}",
        NODES[CHURNED].0,
        from[CHURNED]
    );

    // Sources and ports of their own, none a long-lived connection's, each owned by the
    // churned node.
    let family = farm.variant.family;
    let sources = family
        .flows(10000..30000, SOURCES)
        .filter(|&from| before.of(Protocol::Tcp, CHURN_PORT, from).unwrap() == CHURNED);
    let churned = churn::churn(
        &farm.bed.client.netns,
        &Churn {
            to: SocketAddr::new(family.vip(), CHURN_PORT),
            count: CHURN,
            within: CHURN_TIME,
            in_flight: CHURN_IN_FLIGHT,
        },
        sources,
    )
    .unwrap_or_else(|error| panic!("{error:#}"));
    eprintln!(
        "{} mode, {}: {} connections opened and reset on {} in {:?} ({:.0}/s), {} failed",
        variant.mode,
        variant.family,
        churned.opened,
        NODES[CHURNED].0,
        churned.took,
        churned.rate(),
        churned.failed
    );
    assert!(
        churned.opened >= CHURN,
        "the churn opened {} connections, fewer than {CHURN}",
        churned.opened
    );

    let marks = farm.marks();
    farm.join();
    farm.moved(&marks, ALL);
    let mut broken = Vec::new();
    let at_join = check_again(&mut held, &mut broken, "joined");
    let after = farm.owners(ALL);
    let unmoved = broken
        .iter()
        .filter(|b| {
            let owner = |owners: &Owners| owners.of(Protocol::Tcp, LONG_PORT, b.from).unwrap();
            owner(&before) == owner(&after)
        })
        .count();
    eprintln!(
        "{} mode, {}: {count} long-lived connections, {moved_at_join} in buckets moved by the \
         join ({} from alpha, {} from charlie); broken: {at_join} ({unmoved} of them in buckets \
         that did not move); the whole test {:?}",
        variant.mode,
        variant.family,
        from[0],
        from[2],
        began.elapsed()
    );
    assert_none_broken(&broken, count, "by a join after the churn");
}

/// Generates, for each dataplane mode and family, a module of `#[test]` wrappers.
macro_rules! variants {
    ($($module:ident: $mode:expr, $family:expr;)*) => {$(
        mod $module {
            use super::*;

            const VARIANT: Variant = Variant {
                mode: $mode,
                family: $family,
            };

            #[test]
            fn a_join_and_a_leave_under_a_syn_flood_break_no_connection() {
                super::a_join_and_a_leave_under_a_syn_flood_break_no_connection(VARIANT);
            }

            #[test]
            fn a_join_after_heavy_connection_churn_breaks_no_connection() {
                super::a_join_after_heavy_connection_churn_breaks_no_connection(VARIANT);
            }
        }
    )*};
}

variants! {
    xdp_v4: DataplaneMode::Xdp, Family::V4;
    xdp_v6: DataplaneMode::Xdp, Family::V6;
    afxdp_v4: DataplaneMode::Afxdp, Family::V4;
    afxdp_v6: DataplaneMode::Afxdp, Family::V6;
}
