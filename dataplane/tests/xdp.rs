//! The in-kernel program against the Rust classifier: thousands of generated frames of every
//! shape the rules name, well-formed and damaged, run through the eBPF program with
//! `BPF_PROG_TEST_RUN` and through `classify`; every verdict must be the same, and what the
//! program does with each frame must follow from its verdict (passed untouched, accepted with
//! the interface's MAC as destination, dropped, or answered with the VIP's virtual MAC).
//! Sequences of TCP segments of a few connections, among other frames, under random bucket
//! modes, hold the two flow tables together: same verdicts in order, same records. The
//! program's counters must hold the packets and bytes of what the Rust verdicts say, and in the
//! AF_XDP mode the redirect program's and a real worker's counts must add up to them.
//!
//! Needs root (loading eBPF programs); `scripts/test` runs it as root, as CI does.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use core_affinity::CoreId;
use herd_config::{Affinity, FarmConfig, MacMode, Protocol, ZeroCopy};
use herd_dataplane::afxdp::{QueueSocket, Worker, WorkerSettings};
use herd_dataplane::handoff::{Port, Submit, TapReceive};
use herd_dataplane::xdp::{TestOutcome, XdpProgram};
use herd_packet::clock::coarse_monotonic_ns;
use herd_packet::counts::{Count, Traffic};
use herd_packet::craft::{self, Fragment};
use herd_packet::flows::Connection;
use herd_packet::kernel::{Kernel, NoSockets, Served};
use herd_packet::neighbor::virtual_mac;
use herd_packet::table::{BucketMode, BucketTable, ModeTable, NodeId, SharedTable};
use herd_packet::wire::{ethernet::ethertype, ip_proto, transport_checksum};
use herd_packet::{classify, DropReason, FarmRules, FarmTable, Flows, Verdict};
use herd_testbed::netns::in_a_namespace_of_its_own;
use herd_testbed::socket::time_wait_sockets;
use herd_testbed::Bed;
use socket2::{Domain, Protocol as SocketProtocol, Socket, Type};

const VIP: [u8; 4] = [198, 18, 0, 100];
const VIP_B: [u8; 4] = [198, 18, 0, 101];
const VIP6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x00,
];
const BUCKETS: u32 = 256;
/// The MAC of the node's interface.
const IF_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x99];

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;

/// The differential farm, with an ICMP rule when `icmp`, whose VIPs resolve to `mac` MACs.
fn farm(icmp: bool, mac: MacMode) -> FarmConfig {
    let mut rules = vec![
        craft::rule(Protocol::Tcp, 80, 80, Affinity::ClientIp),
        craft::rule(Protocol::Tcp, 8000, 8099, Affinity::ClientIpPort),
        craft::rule(Protocol::Udp, 5000, 5099, Affinity::ClientIpPort),
        craft::rule(Protocol::Udp, 53, 53, Affinity::ClientIp),
    ];
    if icmp {
        rules.push(craft::rule(Protocol::Icmp, 0, 0, Affinity::ClientIp));
    }
    let mut config = craft::farm_config(
        &[VIP.into(), VIP_B.into(), VIP6.into()],
        BUCKETS,
        *b"differential-key",
        3,
        rules,
    );
    config.farm.mac = mac;
    config
}

/// Bucket owners from a seed: nodes 0-2, and some buckets nobody owns.
fn owners(seed: u64) -> BucketTable {
    let mut rng = Rng(seed);
    let owners = (0..BUCKETS)
        .map(|_| match rng.below(8) {
            0 => herd_packet::table::NO_OWNER,
            n => (n % 3) as NodeId,
        })
        .collect();
    BucketTable::new(seed, owners).unwrap()
}

/// A xorshift generator: the same frames on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, in_n: u64) -> bool {
        self.below(in_n) == 0
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        std::array::from_fn(|_| self.next() as u8)
    }
}

fn port(rng: &mut Rng) -> u16 {
    rng.pick(&[
        80, 443, 8000, 8050, 8099, 8100, 5000, 5099, 5100, 53, 0, 65535,
    ])
}

fn fragment(rng: &mut Rng) -> Fragment {
    match rng.below(6) {
        0 => Fragment {
            offset: 0,
            more: true,
        },
        1 => Fragment {
            offset: 185,
            more: rng.chance(2),
        },
        _ => Fragment::default(),
    }
}

/// A TCP, UDP or other transport payload; the protocol number comes with it.
fn transport(rng: &mut Rng, (src_port, dst_port): (u16, u16)) -> (u8, Vec<u8>) {
    match rng.below(5) {
        0 | 1 => {
            let mut segment = craft::tcp(src_port, dst_port, 0x02, &[0; 12]);
            if rng.chance(5) {
                segment[12] = (rng.below(16) as u8) << 4;
            }
            (ip_proto::TCP, segment)
        }
        2 | 3 => (ip_proto::UDP, craft::udp(src_port, dst_port, &[7; 10])),
        _ => (rng.pick(&[47, 132, 0, 1, 58]), vec![0; 16]),
    }
}

fn v4_packet(rng: &mut Rng) -> Vec<u8> {
    let client = [198, 19, rng.next() as u8, rng.next() as u8];
    let dst = rng.pick(&[VIP, VIP_B, [198, 18, 0, 1]]);
    let (protocol, payload) = match rng.below(4) {
        0 => {
            // An ICMP error quoting a packet the farm (or someone else) sent to the client.
            let src = rng.pick(&[VIP, VIP, [198, 18, 0, 9]]);
            let ports = (port(rng), rng.next() as u16);
            let (inner_protocol, inner_l4) = transport(rng, ports);
            let mut inner = craft::ipv4(src, client, inner_protocol, fragment(rng), &inner_l4);
            inner.truncate(20 + rng.below(12) as usize);
            if rng.chance(6) {
                inner[0] = rng.pick(&[0x44, 0x46, 0x65]);
            }
            let kind = rng.pick(&[3, 11, 12, 8, 0, 5]);
            (
                ip_proto::ICMP,
                craft::icmp(kind, 4, [0, 0, 5, 0xdc], &inner),
            )
        }
        1 => (ip_proto::ICMP, craft::icmp(8, 0, [0, 1, 0, 1], &[0; 8])),
        _ => {
            let ports = (rng.next() as u16, port(rng));
            transport(rng, ports)
        }
    };
    craft::ipv4(client, dst, protocol, fragment(rng), &payload)
}

fn v6_packet(rng: &mut Rng) -> Vec<u8> {
    let mut client = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    client[8..].copy_from_slice(&rng.bytes::<8>());
    let mut other = VIP6;
    other[15] = 1;
    let dst = rng.pick(&[VIP6, VIP6, other, craft::solicited_node(VIP6)]);
    let hop_limit = rng.pick(&[255, 64]);
    let (next, mut payload) = match rng.below(5) {
        0 => {
            let src = rng.pick(&[VIP6, VIP6, other]);
            let ports = (port(rng), rng.next() as u16);
            let (inner_protocol, inner_l4) = transport(rng, ports);
            let mut inner = craft::ipv6(src, client, inner_protocol, 64, &inner_l4);
            inner.truncate(40 + rng.below(16) as usize);
            let kind = rng.pick(&[1, 2, 3, 4, 128, 135, 136, 143]);
            (ip_proto::ICMPV6, craft::icmp(kind, 0, [0; 4], &inner))
        }
        1 => {
            let target = rng.pick(&[VIP6, other]);
            let mut message = craft::neighbor_solicitation(target);
            if rng.chance(5) {
                // Duplicate address detection comes from the unspecified address.
                client = [0; 16];
            }
            if rng.chance(4) {
                message[0] = rng.pick(&[130, 133, 134, 136, 137, 143, 128]);
            }
            (ip_proto::ICMPV6, message)
        }
        _ => {
            let ports = (rng.next() as u16, port(rng));
            transport(rng, ports)
        }
    };
    let mut next = next;
    match rng.below(6) {
        0 => {
            payload = craft::ipv6_fragment(next, fragment(rng), &payload);
            next = ip_proto::FRAGMENT;
        }
        1 => {
            payload = craft::ipv6_options(next, rng.below(3) as u8, &payload);
            next = rng.pick(&[ip_proto::HOP_BY_HOP, ip_proto::DEST_OPTS, ip_proto::ROUTING]);
        }
        _ => {}
    }
    craft::ipv6(client, dst, next, hop_limit, &payload)
}

fn frame(rng: &mut Rng) -> Vec<u8> {
    let tags: &[u16] = match rng.below(10) {
        0 => &[7],
        1 => &[7, 8],
        _ => &[],
    };
    let mut frame = match rng.below(10) {
        0 => {
            let target = rng.pick(&[VIP, [198, 18, 0, 1]]);
            let sender = rng.pick(&[[198, 19, 0, 1], target]);
            craft::ethernet(tags, ethertype::ARP, &craft::arp_request(sender, target))
        }
        1..=5 => craft::ethernet(tags, ethertype::IPV4, &v4_packet(rng)),
        _ => craft::ethernet(tags, ethertype::IPV6, &v6_packet(rng)),
    };
    if rng.chance(12) {
        // A third tag, which nothing looks through.
        frame.splice(12..12, [0x81, 0x00, 0, 9]);
    }
    // Damage: flipped bytes, then sometimes a cut or Ethernet padding.
    for _ in 0..rng.below(3).saturating_sub(1) {
        let at = rng.below(frame.len().min(90) as u64) as usize;
        frame[at] = rng.next() as u8;
    }
    match rng.below(8) {
        0 => frame.truncate(14 + rng.below(frame.len() as u64 - 13) as usize),
        1 => frame.resize(frame.len() + rng.below(20) as usize, 0),
        _ => {}
    }
    frame
}

fn needs_root() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test loads eBPF programs and needs root: run it through scripts/test as root"
    );
}

/// Adds a frame of `length` bytes to the outcome of `traffic` that `verdict` counts under (none
/// for a neighbour answer).
fn tally(traffic: &mut Traffic, verdict: Verdict, length: usize) {
    let outcome = match verdict {
        Verdict::Accept => &mut traffic.accepted,
        Verdict::Drop(_) => &mut traffic.dropped,
        Verdict::Pass => &mut traffic.passed,
        Verdict::AnswerNeighbor => return,
    };
    *outcome = *outcome
        + Count {
            packets: 1,
            bytes: length as u64,
        };
}

/// Runs `frames` through node `local` of `config` in both classifiers, with two successive
/// bucket tables, and returns how many frames met each verdict. The program must also have
/// counted them, and their bytes, as the Rust verdicts say.
fn differential(config: &FarmConfig, local: NodeId, frames: &[Vec<u8>]) -> Vec<(Verdict, usize)> {
    let rules = Arc::new(FarmRules::from_config(config));
    let first = ModeTable::of_owner(&owners(1 + u64::from(local)), local);
    let mut xdp = XdpProgram::load(&rules, &first, IF_MAC).expect("loads the eBPF program");
    let mut flows = Flows::with_capacity(4096);
    let mut seen: Vec<(Verdict, usize)> = Vec::new();
    let mut traffic = Traffic::default();
    let second = ModeTable::of_owner(&owners(7 + u64::from(local)), local);
    for table in [first, second] {
        xdp.install(&table).expect("installs the table");
        let rust = FarmTable::new(Arc::clone(&rules), table);
        for frame in frames {
            let expected = classify(frame, &rust, &mut flows, &NoSockets, 0);
            let outcome = xdp.test_run(frame).expect("runs the eBPF program");
            assert_eq!(outcome.verdict, Some(expected), "frame {frame:02x?}");
            check_action(frame, &outcome, config.farm.mac);
            tally(&mut traffic, expected, frame.len());
            match seen.iter_mut().find(|(verdict, _)| *verdict == expected) {
                Some((_, count)) => *count += 1,
                None => seen.push((expected, 1)),
            }
        }
    }
    same_flows(&flows, &xdp);
    assert_eq!(
        xdp.traffic().expect("reads the counters"),
        traffic,
        "packets and bytes per outcome"
    );
    for (verdict, count) in xdp.counts().expect("reads the counters") {
        let frames = seen.iter().find(|(v, _)| *v == verdict).map_or(0, |s| s.1);
        assert_eq!(count, frames as u64, "packets of {verdict:?}");
    }
    seen
}

/// The two flow tables hold the same connections (their times differ: the test gives the Rust
/// classifier its own).
fn same_flows(rust: &Flows, xdp: &XdpProgram) {
    let kernel = xdp.flows().expect("reads the flow map");
    assert_eq!(kernel.len(), rust.len(), "{kernel:?}");
    for (connection, _) in &kernel {
        assert!(rust.get(connection).is_some(), "{connection:?}");
    }
}

/// What the program did with `frame`, given its verdict, in a farm of `mac` virtual MACs.
fn check_action(frame: &[u8], outcome: &TestOutcome, mac: MacMode) {
    let out = &outcome.frame;
    match outcome.verdict.expect("a verdict, not a redirect") {
        Verdict::Pass => {
            assert_eq!(
                (outcome.action, &out[..]),
                (XDP_PASS, frame),
                "passed untouched"
            );
        }
        Verdict::Accept => {
            assert_eq!(outcome.action, XDP_PASS);
            assert_eq!(out[..6], IF_MAC, "to the interface's own MAC");
            assert_eq!(out[6..], frame[6..], "nothing else changed");
        }
        Verdict::Drop(_) => assert_eq!(outcome.action, XDP_DROP),
        Verdict::AnswerNeighbor => check_answer(frame, outcome, mac),
    }
}

/// The answer to an ARP request or neighbour solicitation for a VIP, with its `mac` virtual MAC.
fn check_answer(question: &[u8], outcome: &TestOutcome, mac: MacMode) {
    let answer = &outcome.frame;
    // Where the network header starts, under the tags.
    let mut l3 = 14;
    while matches!(question[l3 - 2..l3], [0x81, 0x00] | [0x88, 0xa8]) {
        l3 += 4;
    }
    let arp = question[l3 - 2..l3] == [0x08, 0x06];
    if !arp && (question[l3 + 6] != ip_proto::ICMPV6 || question[l3 + 8..l3 + 24] == [0; 16]) {
        // Behind extension headers, or duplicate address detection: not answered in place,
        // and not left to the kernel either.
        assert_eq!(outcome.action, XDP_DROP);
        return;
    }
    assert_eq!(outcome.action, XDP_TX, "answered: {question:02x?}");
    assert_eq!(answer[..6], question[6..12], "back to the asker");
    assert_eq!(
        answer[6..12],
        IF_MAC,
        "from the interface's MAC, never the virtual one"
    );
    assert_eq!(answer[12..l3], question[12..l3], "same tags and EtherType");
    if arp {
        let (q, a) = (&question[l3..l3 + 28], &answer[l3..]);
        let vip: [u8; 4] = q[24..28].try_into().unwrap();
        assert_eq!(answer.len(), question.len());
        assert_eq!(a[..8], [0, 1, 0x08, 0x00, 6, 4, 0, 2], "an ARP reply");
        assert_eq!(
            a[8..14],
            virtual_mac(IpAddr::from(vip), mac),
            "the VIP's virtual MAC"
        );
        assert_eq!(a[14..18], vip);
        assert_eq!(a[18..28], q[8..18], "to the asker's MAC and address");
    } else {
        let (q, a) = (&question[l3..], &answer[l3..]);
        let vip: [u8; 16] = q[48..64].try_into().unwrap();
        assert_eq!(a.len(), 40 + 32, "an advertisement with one option");
        assert_eq!(a[..8], [0x60, 0, 0, 0, 0, 32, ip_proto::ICMPV6, 255]);
        assert_eq!(
            (&a[8..24], &a[24..40]),
            (&vip[..], &q[8..24]),
            "VIP to asker"
        );
        assert_eq!(
            a[40..44],
            [136, 0, a[42], a[43]],
            "a neighbour advertisement"
        );
        assert_eq!(a[44..48], [0x60, 0, 0, 0], "solicited, override");
        assert_eq!(a[48..64], vip);
        assert_eq!(a[64..66], [2, 1], "a target link-layer address option");
        assert_eq!(a[66..72], virtual_mac(IpAddr::from(vip), mac));
        let mut pseudo = a[8..40].to_vec();
        pseudo.extend_from_slice(&[0, 0, 0, 32, 0, 0, 0, ip_proto::ICMPV6]);
        pseudo.extend_from_slice(&a[40..72]);
        assert_eq!(
            herd_packet::wire::checksum(&pseudo),
            0,
            "a valid ICMPv6 checksum"
        );
    }
}

#[test]
fn the_ebpf_program_and_classify_agree_on_every_frame() {
    needs_root();
    let mut rng = Rng(0x5eed_f00d_d00d_cafe);
    let frames: Vec<Vec<u8>> = (0..3000).map(|_| frame(&mut rng)).collect();
    let seen = differential(&farm(true, MacMode::Unicast), 0, &frames);
    // The frames reach every verdict, so agreement is not agreement on a few easy cases.
    for verdict in [
        Verdict::Pass,
        Verdict::Accept,
        Verdict::Drop(DropReason::NotOwner),
        Verdict::Drop(DropReason::NoRule),
        Verdict::Drop(DropReason::Malformed),
        Verdict::AnswerNeighbor,
    ] {
        let count = seen.iter().find(|(v, _)| *v == verdict).map_or(0, |c| c.1);
        assert!(count >= 20, "only {count} frames met {verdict:?}: {seen:?}");
    }
}

#[test]
fn they_agree_for_another_node_and_a_farm_without_an_icmp_rule_in_the_multicast_mode() {
    needs_root();
    let mut rng = Rng(0x0123_4567_89ab_cdef);
    let frames: Vec<Vec<u8>> = (0..1500).map(|_| frame(&mut rng)).collect();
    let seen = differential(&farm(false, MacMode::Multicast), 2, &frames);
    let answered = seen
        .iter()
        .find(|(v, _)| *v == Verdict::AnswerNeighbor)
        .map_or(0, |c| c.1);
    assert!(answered >= 20, "only {answered} neighbour answers");
}

#[test]
fn a_node_whose_herd_stops_renewing_its_deadline_owns_nothing() {
    needs_root();
    let config = farm(true, MacMode::Unicast);
    let rules = Arc::new(FarmRules::from_config(&config));
    let table = ModeTable::of_owner(&owners(3), 0);
    let mut xdp = XdpProgram::load(&rules, &table, IF_MAC).expect("loads");
    let mut rng = Rng(0xdead_beef_0bad_f00d);
    let frames: Vec<Vec<u8>> = (0..1500).map(|_| frame(&mut rng)).collect();
    let accepted = |xdp: &XdpProgram| {
        frames
            .iter()
            .filter(|f| xdp.test_run(f).unwrap().verdict == Some(Verdict::Accept))
            .count()
    };
    xdp.keep_alive(Duration::from_secs(60)).unwrap();
    assert!(accepted(&xdp) > 50, "a live node accepts its share");
    // The deadline passes at once: as if herd had been killed.
    xdp.keep_alive(Duration::ZERO).unwrap();
    let nobody = FarmTable::new(
        Arc::clone(&rules),
        ModeTable::none(BUCKETS as usize).unwrap(),
    );
    let mut flows = Flows::with_capacity(64);
    for frame in &frames {
        let outcome = xdp.test_run(frame).unwrap();
        assert_eq!(
            outcome.verdict,
            Some(classify(frame, &nobody, &mut flows, &NoSockets, 0)),
            "frame {frame:02x?}"
        );
        check_action(frame, &outcome, config.farm.mac);
    }
    xdp.keep_alive(Duration::from_secs(60)).unwrap();
    assert!(
        accepted(&xdp) > 50,
        "and takes its share again once renewed"
    );
}

#[test]
fn the_redirect_program_hands_the_workers_exactly_the_flows_classify_looks_up() {
    needs_root();
    for mac in [MacMode::Unicast, MacMode::Multicast] {
        redirects_exactly_the_flows_classify_looks_up(mac);
    }
}

/// The redirect program of a farm of `mac` virtual MACs hands the workers exactly the flows
/// that classify looks up, and answers the rest as classify says.
fn redirects_exactly_the_flows_classify_looks_up(mac: MacMode) {
    let config = farm(true, mac);
    let rules = Arc::new(FarmRules::from_config(&config));
    let modes = ModeTable::of_owner(&owners(5), 1);
    let rust = FarmTable::new(Arc::clone(&rules), modes.clone());
    let mut redirect = XdpProgram::load_redirect(&rules, &modes, IF_MAC).expect("loads");
    let mut rng = Rng(0x7ed1_4ec7_5eed_0001);
    let frames: Vec<Vec<u8>> = (0..3000).map(|_| frame(&mut rng)).collect();
    let looked_up = |verdict| {
        matches!(
            verdict,
            Verdict::Accept | Verdict::Drop(DropReason::NotOwner)
        )
    };
    // What the program counts besides the redirected frames: the workers count those.
    let mut kept = Traffic::default();
    let mut check = |redirect: &XdpProgram, alive: bool| {
        let mut redirected = 0;
        for frame in &frames {
            let expected = classify(frame, &rust, &mut Flows::with_capacity(8), &NoSockets, 0);
            let outcome = redirect.test_run(frame).unwrap();
            if looked_up(expected) && alive {
                // No socket on the queue in a test run: the frame is dropped, never left to
                // the kernel.
                assert_eq!(outcome.verdict, None, "frame {frame:02x?}");
                // The kernel's answer goes in front: nothing, with no bucket keeping known
                // connections.
                assert_eq!(outcome.action, XDP_DROP);
                assert_eq!(outcome.frame[..4], [0; 4]);
                assert_eq!(outcome.frame[4..], frame[..]);
                redirected += 1;
            } else if looked_up(expected) {
                assert_eq!(outcome.verdict, Some(Verdict::Drop(DropReason::NotOwner)));
                assert_eq!(outcome.action, XDP_DROP);
                tally(&mut kept, Verdict::Drop(DropReason::NotOwner), frame.len());
            } else {
                assert_eq!(outcome.verdict, Some(expected), "frame {frame:02x?}");
                check_action(frame, &outcome, mac);
                tally(&mut kept, expected, frame.len());
            }
        }
        assert_eq!(redirect.traffic().unwrap(), kept);
        redirected
    };
    let before = redirect.redirected().unwrap();
    let redirected = check(&redirect, true);
    assert!(redirected > 500, "only {redirected} frames redirected");
    assert_eq!(redirect.redirected().unwrap() - before, redirected);
    // herd frozen or killed: the deadline passes, and no VIP flow reaches a socket.
    redirect.keep_alive(Duration::ZERO).unwrap();
    assert_eq!(check(&redirect, false), 0);
    assert_eq!(redirect.traffic().unwrap().accepted, Count::default());

    // Alive again, with the worker of queue 0 behind: the program drops itself the flows of
    // the buckets this node does not serve, and still hands the worker every flow it accepts.
    redirect.keep_alive(Duration::from_secs(60)).unwrap();
    let mut behind = redirect.behind_switch(0).unwrap();
    behind.set(true).unwrap();
    let (mut handed, mut shed) = (0, 0);
    for frame in &frames {
        let expected = classify(frame, &rust, &mut Flows::with_capacity(8), &NoSockets, 0);
        let outcome = redirect.test_run(frame).unwrap();
        match expected {
            Verdict::Accept => {
                assert_eq!(outcome.verdict, None, "frame {frame:02x?}");
                handed += 1;
            }
            Verdict::Drop(DropReason::NotOwner) => {
                assert_eq!(
                    outcome.verdict,
                    Some(Verdict::Drop(DropReason::NotOwner)),
                    "frame {frame:02x?}"
                );
                shed += 1;
            }
            _ => assert_eq!(outcome.verdict, Some(expected), "frame {frame:02x?}"),
        }
    }
    assert!(handed > 100 && shed > 100, "{handed} handed, {shed} shed");
    behind.set(false).unwrap();
    let frame = frames
        .iter()
        .find(|frame| {
            let verdict = classify(frame, &rust, &mut Flows::with_capacity(8), &NoSockets, 0);
            verdict == Verdict::Drop(DropReason::NotOwner)
        })
        .unwrap();
    assert_eq!(
        redirect.test_run(frame).unwrap().verdict,
        None,
        "caught up: the worker drops other nodes' flows again"
    );
}

/// The AF_XDP mode counts every frame once, with its length: the redirect program what the
/// kernel gets and what it drops itself, a worker behind a real socket what it accepts or
/// drops. Frames of every outcome and many lengths cross a veth pair into the redirect program
/// (generic XDP) and the worker, in a network namespace of the test's own.
#[test]
fn the_afxdp_mode_counts_the_packets_and_bytes_of_every_outcome() {
    needs_root();
    in_a_namespace_of_its_own(afxdp_traffic);
}

/// The AF_XDP mode on a veth pair of the test's namespace: the redirect program (generic XDP)
/// on `herd-a` under a table where node 1 of 5 owns some buckets, one socket on its queue and
/// a worker on `core` handing off to a TAP device, and a packet socket that sends into
/// `herd-b`, the other end.
struct AfxdpBed {
    redirect: XdpProgram,
    table: FarmTable,
    worker: Worker,
    stop: Arc<AtomicBool>,
    sender: Port,
    // Declared last, so that it goes last: the program's pin is on its BPF file system.
    _bed: Bed,
}

impl AfxdpBed {
    fn new(tag: &str, core: usize) -> Self {
        // A BPF file system of the test's own for the pin, none being assumed at /sys/fs/bpf.
        let bed = Bed::create(&format!("herd-xdp-{tag}-{}", std::process::id()))
            .expect("mounts a BPF file system");
        // Interfaces with IPv6 send listener reports and solicitations of their own, which the
        // program would count among the test's frames.
        for conf in ["all", "default"] {
            std::fs::write(format!("/proc/sys/net/ipv6/conf/{conf}/disable_ipv6"), "1")
                .expect("turns IPv6 off in the namespace");
        }
        ip(&[
            "link", "add", "herd-a", "type", "veth", "peer", "name", "herd-b",
        ]);
        ip(&["link", "set", "herd-a", "up"]);
        ip(&["link", "set", "herd-b", "up"]);

        let rules = Arc::new(FarmRules::from_config(&farm(true, MacMode::Unicast)));
        let modes = ModeTable::of_owner(&owners(5), 1);
        let table = FarmTable::new(Arc::clone(&rules), modes.clone());
        let mut redirect = XdpProgram::load_redirect(&rules, &modes, IF_MAC).expect("loads");
        let socket = QueueSocket::open("herd-a", 0, ZeroCopy::Off).expect("opens an AF_XDP socket");
        redirect.add_socket(0, socket.fd()).unwrap();
        let to_stack = Port::tap("herd-t", 1, TapReceive::Direct, Submit::Batch)
            .expect("creates a TAP device")
            .remove(0);
        ip(&["link", "set", "herd-t", "up"]);
        let stop = Arc::new(AtomicBool::new(false));
        let settings = WorkerSettings {
            core: CoreId { id: core },
            batch: 64,
            if_mac: IF_MAC,
            table: Arc::new(SharedTable::new(table.clone())),
            stop: Arc::clone(&stop),
            behind: redirect.behind_switch(0).unwrap(),
        };
        let worker = Worker::spawn(socket, to_stack, settings).expect("starts the worker");
        let pin = bed.bpf_dir(tag).unwrap().join("herd-a");
        redirect.attach("herd-a", &pin, true).expect("attaches");
        // SAFETY: the name is a NUL-terminated string that outlives the call.
        let peer = unsafe { libc::if_nametoindex(c"herd-b".as_ptr()) };
        let sender = Port::packet(peer, 1, Submit::Batch, false)
            .expect("opens a packet socket")
            .remove(0);
        Self {
            redirect,
            table,
            worker,
            stop,
            sender,
            _bed: bed,
        }
    }

    /// What the redirect program counted: what it kept and what it redirected.
    fn in_program(&self) -> u64 {
        let counted: u64 = self.redirect.counts().unwrap().iter().map(|c| c.1).sum();
        counted + self.redirect.redirected().unwrap()
    }

    /// Sends `frames` a few at a time, so that none overflows the interface's backlog.
    fn send(&mut self, frames: &[Vec<u8>]) {
        let before = self.in_program();
        for (sent, chunk) in frames.chunks(50).enumerate() {
            let taken = self.sender.send_batch(chunk.iter().map(Vec::as_slice));
            assert_eq!(taken.handed_off, chunk.len() as u64, "sends every frame");
            let sent = (sent * 50 + chunk.len()) as u64;
            wait_for("the program to count every frame", || {
                self.in_program() - before == sent
            });
        }
    }

    /// Stops the worker and detaches the program; the worker's final totals.
    fn finish(mut self) -> herd_dataplane::afxdp::Totals {
        self.stop.store(true, Ordering::Relaxed);
        let totals = self.worker.join().totals;
        self.redirect.detach().unwrap();
        totals
    }
}

fn afxdp_traffic() {
    let mut afxdp = AfxdpBed::new("counts", 0);
    let table = &afxdp.table;
    let mut rng = Rng(0xaf0d_c0de_0000_0001);
    let frames: Vec<Vec<u8>> = (0..800).map(|i| afxdp_frame(&mut rng, i)).collect();
    // What the whole mode counts, what the redirect program keeps, what the worker takes.
    let (mut whole, mut kept, mut taken) = Default::default();
    let mut flows = Flows::with_capacity(1024);
    for frame in &frames {
        let verdict = classify(frame, table, &mut flows, &NoSockets, coarse_monotonic_ns());
        tally(&mut whole, verdict, frame.len());
        let looked_up = matches!(
            verdict,
            Verdict::Accept | Verdict::Drop(DropReason::NotOwner)
        );
        tally(
            if looked_up { &mut taken } else { &mut kept },
            verdict,
            frame.len(),
        );
    }

    afxdp.send(&frames);
    let redirect = &afxdp.redirect;
    let counters = afxdp.worker.counters();
    wait_for("the worker to count every redirected frame", || {
        counters.received.load(Ordering::Relaxed) == redirect.redirected().unwrap()
    });

    let (in_kernel, in_worker) = (redirect.traffic().unwrap(), counters.traffic());
    assert_eq!(in_kernel, kept, "the redirect program's count");
    assert_eq!(in_worker, taken, "the worker's count");
    assert_eq!([in_kernel, in_worker].into_iter().sum::<Traffic>(), whole);
    for count in [kept.passed, kept.dropped, taken.accepted, taken.dropped] {
        assert!(
            count.packets >= 20,
            "too few frames of an outcome: {whole:?}"
        );
    }
    let received_bytes = counters.received_bytes.load(Ordering::Relaxed);
    assert_eq!(received_bytes, taken.accepted.bytes + taken.dropped.bytes);
    assert_eq!(in_worker.shed, 0, "a worker that keeps up sheds nothing");

    let totals = afxdp.finish();
    assert_eq!(
        (
            totals.received_bytes,
            totals.accepted_bytes,
            totals.dropped_bytes
        ),
        (received_bytes, taken.accepted.bytes, taken.dropped.bytes),
        "the worker's final totals"
    );
}

/// A worker that cannot keep up does not make the kernel queue without bound: the frames its
/// full ring cannot take are dropped by the kernel before the worker, and counted as shed.
/// Every redirected frame is then either received by the worker or shed. The worker is kept
/// off its core by a real-time thread of higher priority while the frames arrive from the
/// other core.
#[test]
fn a_worker_that_cannot_keep_up_has_the_excess_shed_and_counted() {
    needs_root();
    in_a_namespace_of_its_own(|| {
        let mut afxdp = AfxdpBed::new("shed", 0);
        // More owned frames than the worker's ring and memory hold (2048 each).
        let client = |i: usize| [198, 19, (i >> 8) as u8, i as u8];
        let frames: Vec<Vec<u8>> = (0..6000)
            .map(|i| {
                let udp = craft::udp(40000, 5000, &[0x55; 18]);
                let ip = craft::ipv4(client(i), VIP, ip_proto::UDP, Fragment::default(), &udp);
                craft::ethernet(&[], ethertype::IPV4, &ip)
            })
            .collect();
        let hog_stop = Arc::new(AtomicBool::new(false));
        let hog = {
            let hog_stop = Arc::clone(&hog_stop);
            let (started, running) = std::sync::mpsc::channel();
            let hog = std::thread::spawn(move || {
                assert!(core_affinity::set_for_current(CoreId { id: 0 }));
                let param = libc::sched_param { sched_priority: 2 };
                // SAFETY: `param` is a valid sched_param; pid 0 is the calling thread.
                let raised = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
                started.send(raised).unwrap();
                // Bounded: the sender stops it, or two seconds do.
                let deadline = Instant::now() + Duration::from_secs(2);
                while !hog_stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    std::hint::spin_loop();
                }
            });
            assert_eq!(
                running.recv().unwrap(),
                0,
                "the hog runs at real-time priority"
            );
            hog
        };
        assert!(core_affinity::set_for_current(CoreId { id: 1 }));
        afxdp.send(&frames);
        hog_stop.store(true, Ordering::Relaxed);
        hog.join().unwrap();
        let redirected = afxdp.redirect.redirected().unwrap();
        let counters = afxdp.worker.counters();
        wait_for(
            "the worker to take or count as shed every redirected frame",
            || {
                let traffic = counters.traffic();
                counters.received.load(Ordering::Relaxed) + traffic.shed == redirected
            },
        );
        let totals = afxdp.finish();
        assert!(
            totals.shed > 0 && totals.received > 0,
            "shed {} and received {} of {redirected}",
            totals.shed,
            totals.received
        );
        assert_eq!(totals.received + totals.shed, redirected);
    });
}

/// Frame `i` of the AF_XDP test, of every outcome: VIP flows of the workers (UDP, TCP, ICMP,
/// IPv6), and what the redirect program keeps (traffic for another address, VIP traffic no rule
/// balances, malformed VIP packets, an ARP request it answers).
fn afxdp_frame(rng: &mut Rng, i: usize) -> Vec<u8> {
    let client = [198, 19, rng.next() as u8, rng.next() as u8];
    let data = vec![0x55; rng.below(1400) as usize];
    let port = rng.next() as u16;
    let v4 = |dst, protocol, l4: &[u8]| {
        let ip = craft::ipv4(client, dst, protocol, Fragment::default(), l4);
        craft::ethernet(&[], ethertype::IPV4, &ip)
    };
    let udp = |dst_port| craft::udp(port, dst_port, &data);
    match i % 8 {
        0..=2 => v4(VIP, ip_proto::UDP, &udp(5000 + rng.below(100) as u16)),
        3 => {
            let flags = rng.pick(&[SYN, ACK, PSH | ACK]);
            v4(VIP_B, ip_proto::TCP, &craft::tcp(port, 80, flags, &data))
        }
        4 => {
            let mut address = VIP6;
            address[8..].copy_from_slice(&rng.bytes::<8>());
            let ip = craft::ipv6(address, VIP6, ip_proto::UDP, 64, &udp(53));
            craft::ethernet(&[], ethertype::IPV6, &ip)
        }
        5 => v4([198, 18, 0, 1], ip_proto::UDP, &udp(5000)),
        6 => v4(VIP, ip_proto::UDP, &udp(443)),
        _ => match rng.below(3) {
            0 => {
                let mut frame = v4(VIP, ip_proto::UDP, &udp(5000));
                frame.truncate(frame.len() - 1 - rng.below(8) as usize);
                frame
            }
            1 => craft::ethernet(&[], ethertype::ARP, &craft::arp_request(client, VIP)),
            _ => v4(VIP, ip_proto::ICMP, &craft::icmp(8, 0, [0, 1, 0, 1], &data)),
        },
    }
}

/// Runs `ip args` in this thread's namespace, which must succeed.
fn ip(args: &[&str]) {
    herd_testbed::command::run("ip", args, None).unwrap_or_else(|error| panic!("{error:#}"));
}

/// Waits until `done`, for a few seconds at most.
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn a_table_of_another_size_is_refused() {
    needs_root();
    let rules = FarmRules::from_config(&farm(true, MacMode::Unicast));
    let modes = ModeTable::of_owner(&owners(1), 0);
    let mut xdp = XdpProgram::load(&rules, &modes, IF_MAC).expect("loads");
    let other = ModeTable::none(2 * BUCKETS as usize).unwrap();
    let error = xdp.install(&other).unwrap_err().to_string();
    assert!(
        error.contains("512 buckets") && error.contains("256"),
        "{error}"
    );
}

/// Bucket modes from a seed: the named ones and arbitrary sets of bits.
fn modes(seed: u64) -> ModeTable {
    let mut rng = Rng(seed | 1);
    let named = [
        BucketMode::OWN,
        BucketMode::DRAIN,
        BucketMode::GAIN,
        BucketMode::NONE,
        BucketMode::KNOWN,
    ];
    let modes = (0..BUCKETS)
        .map(|_| {
            if rng.chance(3) {
                BucketMode(rng.below(16) as u8)
            } else {
                rng.pick(&named)
            }
        })
        .collect();
    ModeTable::new(seed, modes).unwrap()
}

/// One end of a TCP connection to the farm.
#[derive(Clone, Copy, Debug)]
struct Client {
    v6: bool,
    address: [u8; 16],
    port: u16,
    vip: [u8; 4],
    vip_port: u16,
}

impl Client {
    fn random(rng: &mut Rng) -> Self {
        let mut address = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        address[12..].copy_from_slice(&rng.bytes::<4>());
        let v6 = rng.chance(3);
        if !v6 {
            address = [0; 16];
            address[..4].copy_from_slice(&[198, 19, rng.next() as u8, rng.next() as u8]);
        }
        Self {
            v6,
            address,
            port: rng.pick(&[1000, 1001, 40000, 65535]),
            vip: rng.pick(&[VIP, VIP_B]),
            // Balanced on the client address, on address and port, and not at all.
            vip_port: rng.pick(&[80, 80, 8000, 8001, 8099, 443]),
        }
    }

    /// A segment with `flags` (and, when `data`, some bytes), and whether it is intact: not
    /// cut short.
    fn segment(&self, rng: &mut Rng, flags: u8) -> (Vec<u8>, bool) {
        let data = vec![0x61; rng.below(3) as usize * 20];
        let l4 = craft::tcp(self.port, self.vip_port, flags, &data);
        let tags: &[u16] = if rng.chance(8) { &[7] } else { &[] };
        let mut frame = if self.v6 {
            let ip = if rng.chance(5) {
                let options = craft::ipv6_options(ip_proto::TCP, 0, &l4);
                craft::ipv6(self.address, VIP6, ip_proto::DEST_OPTS, 64, &options)
            } else {
                craft::ipv6(self.address, VIP6, ip_proto::TCP, 64, &l4)
            };
            craft::ethernet(tags, ethertype::IPV6, &ip)
        } else {
            let client = self.address[..4].try_into().unwrap();
            let ip = craft::ipv4(client, self.vip, ip_proto::TCP, Fragment::default(), &l4);
            craft::ethernet(tags, ethertype::IPV4, &ip)
        };
        let intact = !rng.chance(15);
        if !intact {
            frame.truncate(frame.len() - 1 - rng.below(30) as usize);
        }
        (frame, intact)
    }

    /// The client's address and port, and its VIP and port.
    fn addresses(&self) -> (SocketAddr, SocketAddr) {
        if self.v6 {
            (
                SocketAddr::new(IpAddr::from(self.address), self.port),
                SocketAddr::new(IpAddr::from(VIP6), self.vip_port),
            )
        } else {
            let client: [u8; 4] = self.address[..4].try_into().unwrap();
            (
                SocketAddr::new(IpAddr::from(client), self.port),
                SocketAddr::new(IpAddr::from(self.vip), self.vip_port),
            )
        }
    }

    /// This connection's key in the flow tables.
    fn key(&self) -> Connection {
        if self.v6 {
            Connection::v6(self.address, VIP6, self.port, self.vip_port)
        } else {
            let client = self.address[..4].try_into().unwrap();
            Connection::v4(client, self.vip, self.port, self.vip_port)
        }
    }

    /// This connection's bucket under `modes`, if a rule balances it.
    fn bucket(&self, rules: &FarmRules, modes: &ModeTable) -> Option<u32> {
        let client = if self.v6 {
            IpAddr::from(self.address)
        } else {
            IpAddr::from(<[u8; 4]>::try_from(&self.address[..4]).unwrap())
        };
        let hash = rules
            .client_flow_hash(Protocol::Tcp, self.vip_port, client, self.port)
            .ok()?;
        Some(modes.bucket_of(hash))
    }
}

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const FIN: u8 = 0x01;
const RST: u8 = 0x04;
const PSH: u8 = 0x08;

/// The flags of every step of a connection, and some that no step has.
const FLAGS: [u8; 12] = [
    SYN,
    SYN,
    SYN | ACK,
    ACK,
    ACK,
    PSH | ACK,
    FIN | ACK,
    RST,
    RST | ACK,
    SYN | FIN,
    FIN,
    0,
];

/// How often step 6 met each case of a bucket keeping known connections.
#[derive(Debug, Default)]
struct Cases {
    recorded: usize,
    forgotten: usize,
    by_record: usize,
    by_socket: usize,
    time_wait: usize,
    unknown: usize,
}

impl std::ops::Add for Cases {
    type Output = Cases;

    fn add(self, other: Cases) -> Cases {
        Cases {
            recorded: self.recorded + other.recorded,
            forgotten: self.forgotten + other.forgotten,
            by_record: self.by_record + other.by_record,
            by_socket: self.by_socket + other.by_socket,
            time_wait: self.time_wait + other.time_wait,
            unknown: self.unknown + other.unknown,
        }
    }
}

/// The sockets of the test's namespace, as the classifier's model of the kernel: the
/// connections with an established socket on the VIP's side. Those in TIME_WAIT and the
/// listeners serve nothing.
struct Sockets {
    open: HashSet<Connection>,
    time_wait: HashSet<Connection>,
    /// Both ends of each open connection, kept open.
    _connections: Vec<TcpStream>,
    /// The listeners, kept open.
    _listeners: Vec<TcpListener>,
}

impl Kernel for Sockets {
    fn served(&self, connection: &Connection) -> Served {
        if self.open.contains(connection) {
            Served::SOCKET
        } else {
            Served::NOTHING
        }
    }
}

impl Sockets {
    /// Real connections, in this thread's namespace, for about half of `clients` (from their
    /// address and port to their VIP and port), a third of which end in TIME_WAIT on the VIP's
    /// side. The addresses go on the loopback interface, where test runs look sockets up.
    fn open(clients: &[Client], rng: &mut Rng) -> Self {
        ip(&["link", "set", "lo", "up"]);
        let mut addresses: HashSet<IpAddr> = HashSet::new();
        let mut listeners: HashMap<SocketAddr, TcpListener> = HashMap::new();
        let mut sockets = Sockets {
            open: HashSet::new(),
            time_wait: HashSet::new(),
            _connections: Vec::new(),
            _listeners: Vec::new(),
        };
        let mut closing = Vec::new();
        for client in clients {
            if !rng.chance(2) || sockets.open.contains(&client.key()) {
                continue;
            }
            let (local, vip) = client.addresses();
            for address in [local.ip(), vip.ip()] {
                if addresses.insert(address) {
                    on_loopback(address);
                }
            }
            let listener = listeners
                .entry(vip)
                .or_insert_with(|| TcpListener::bind(vip).expect("listens"));
            let outbound = connected(local, vip);
            let (inbound, _) = listener.accept().expect("accepts");
            if rng.chance(3) {
                closing.push((client.key(), inbound, outbound));
            } else {
                sockets.open.insert(client.key());
                sockets._connections.extend([inbound, outbound]);
            }
        }
        // The VIP's side closes first, so that its socket ends in TIME_WAIT once the client's
        // FIN is in.
        for (key, inbound, outbound) in closing {
            drop(inbound);
            let mut byte = [0u8; 1];
            let read = (&outbound).read(&mut byte).expect("reads to the end");
            assert_eq!(read, 0, "the client sees the FIN");
            drop(outbound);
            sockets.time_wait.insert(key);
        }
        wait_for("the closed connections to reach TIME_WAIT", || {
            time_wait_sockets().expect("reads the socket tables") == sockets.time_wait.len()
        });
        sockets._listeners.extend(listeners.into_values());
        sockets
    }
}

/// Gives this thread's namespace `address`, on its loopback interface.
fn on_loopback(address: IpAddr) {
    if address.is_ipv6() {
        let address = format!("{address}/128");
        ip(&["addr", "add", &address, "dev", "lo", "nodad"]);
    } else {
        ip(&["addr", "add", &format!("{address}/32"), "dev", "lo"]);
    }
}

/// A TCP connection from `local` to `remote`. A new IPv6 address's routes come from a work
/// queue, and until then a connection from it may find the network unreachable: it is tried
/// again, for a few seconds at most.
fn connected(local: SocketAddr, remote: SocketAddr) -> TcpStream {
    let mut stream = None;
    wait_for("a connection from a new address", || {
        match herd_testbed::socket::connect(local, remote, Duration::from_secs(5)) {
            Ok(connected) => stream = Some(connected),
            Err(error) if error.raw_os_error() == Some(libc::ENETUNREACH) => {}
            Err(error) => panic!("connects {local} to {remote}: {error}"),
        }
        stream.is_some()
    });
    stream.expect("connected")
}

/// Sequences of TCP segments of a few connections, among other frames, under random bucket
/// modes: the program and the classifier, with the test namespace's real sockets as its model
/// of the kernel, give the same verdicts in order and keep the same records; and the redirect
/// program, asked to look connections up, puts the same answer in front of the frames it
/// hands the workers.
#[test]
fn the_program_and_classify_agree_on_sequences_of_connections_with_real_sockets() {
    needs_root();
    let mut cases = Cases::default();
    for sequence in 0..12u64 {
        // Each sequence in a namespace of its own, so that no socket outlives it.
        let seen = in_a_namespace_of_its_own(move || sequence_with_sockets(sequence));
        cases = cases + seen;
    }
    // The sequences reach every case, so agreement is not agreement on a few easy ones.
    assert!(
        cases.recorded >= 30
            && cases.forgotten >= 5
            && cases.by_record >= 30
            && cases.by_socket >= 30
            && cases.time_wait >= 5
            && cases.unknown >= 50,
        "{cases:?}"
    );
}

/// Sequence number `sequence`, in this thread's namespace: the cases it met.
fn sequence_with_sockets(sequence: u64) -> Cases {
    let rules = Arc::new(FarmRules::from_config(&farm(true, MacMode::Unicast)));
    let mut cases = Cases::default();
    let mut redirect =
        XdpProgram::load_redirect(&rules, &ModeTable::none(BUCKETS as usize).unwrap(), IF_MAC)
            .expect("loads");
    redirect.set_lookups(true).expect("turns the lookups on");
    let mut rng = Rng(0x5e9_ce00_0000 + sequence * 7919);
    let clients: Vec<Client> = (0..16).map(|_| Client::random(&mut rng)).collect();
    let sockets = Sockets::open(&clients, &mut rng);
    let mut table = modes(rng.next());
    // A fresh program: its flow table is empty, as the Rust one is.
    let mut xdp = XdpProgram::load(&rules, &table, IF_MAC).expect("loads");
    let mut flows = Flows::with_capacity(4096);
    for step in 0..400u64 {
        if step % 100 == 99 {
            // Modes change under live connections; the flow tables stay.
            table = modes(rng.next());
            xdp.install(&table).expect("installs");
        }
        let rust = FarmTable::new(Arc::clone(&rules), table.clone());
        let (frame, segment) = if rng.chance(4) {
            (frame(&mut rng), None)
        } else {
            let client = rng.pick(&clients);
            let flags = rng.pick(&FLAGS);
            let (frame, intact) = client.segment(&mut rng, flags);
            (frame, intact.then_some((client, flags)))
        };
        let recorded = segment.is_some_and(|(client, _)| flows.get(&client.key()).is_some());
        let expected = classify(&frame, &rust, &mut flows, &sockets, step);
        let outcome = xdp.test_run(&frame).expect("runs the eBPF program");
        assert_eq!(
            outcome.verdict,
            Some(expected),
            "sequence {sequence}, step {step}: frame {frame:02x?}"
        );
        check_action(&frame, &outcome, MacMode::Unicast);
        let handed = redirect
            .test_run(&frame)
            .expect("runs the redirect program");
        let syn = |flags: u8| flags & (SYN | ACK) == SYN;
        if handed.verdict.is_none() {
            let answer = match segment {
                Some((client, flags)) if !syn(flags) => sockets.served(&client.key()),
                _ => Served::NOTHING,
            };
            let prefix: [u8; 4] = handed.frame[..4].try_into().unwrap();
            assert_eq!(Served::from_prefix(prefix), answer, "frame {frame:02x?}");
            assert_eq!(handed.frame[4..], frame[..]);
        }
        let Some((client, flags)) = segment else {
            continue;
        };
        let Some(bucket) = client.bucket(&rules, &table) else {
            continue;
        };
        let mode = table.mode(bucket);
        let accepted = expected == Verdict::Accept;
        let key = client.key();
        if syn(flags) {
            let keeps = mode.contains(BucketMode::KNOWN);
            cases.recorded += usize::from(accepted && keeps);
            cases.forgotten += usize::from(recorded && keeps && !accepted);
        } else if mode.contains(BucketMode::KNOWN) && !mode.contains(BucketMode::TCP_ANY) {
            if !accepted {
                cases.unknown += 1;
                cases.time_wait += usize::from(sockets.time_wait.contains(&key));
            } else if recorded {
                cases.by_record += 1;
            } else {
                cases.by_socket += usize::from(sockets.open.contains(&key));
            }
        }
    }
    same_flows(&flows, &xdp);
    cases
}

/// A handshake the node answered with a SYN cookie leaves no socket: the ACK that completes it
/// is taken by a bucket that drains (a cookie there predates the move), never by one being
/// gained, where the cookie may be the draining node's; the classifier, told of the cookie,
/// agrees, and the redirect program hands the workers the same answer. Both families, with a
/// real listener that always answers with cookies.
#[test]
fn the_ack_of_a_handshake_answered_with_a_cookie_is_the_draining_nodes() {
    needs_root();
    for v6 in [false, true] {
        in_a_namespace_of_its_own(move || cookie_handshake(v6));
    }
}

fn cookie_handshake(v6: bool) {
    ip(&["link", "set", "lo", "up"]);
    std::fs::write("/proc/sys/net/ipv4/tcp_syncookies", "2")
        .expect("makes the namespace's listeners always answer with cookies");
    let client_port = 40001;
    let (client, vip): (IpAddr, IpAddr) = if v6 {
        let mut client = VIP6;
        client[15] = 0x07;
        (client.into(), VIP6.into())
    } else {
        ([198, 19, 0, 7].into(), VIP.into())
    };
    for address in [client, vip] {
        on_loopback(address);
    }
    let _listener = TcpListener::bind((vip, 80)).expect("listens");
    let cookie = syn_ack_cookie(client, client_port, vip);
    let mut ack = craft::tcp(client_port, 80, ACK, &[]);
    ack[4..8].copy_from_slice(&SYN_SEQUENCE.wrapping_add(1).to_be_bytes());
    ack[8..12].copy_from_slice(&cookie.wrapping_add(1).to_be_bytes());
    let frame = match (client, vip) {
        (IpAddr::V4(client), IpAddr::V4(vip)) => {
            let ip = craft::ipv4(
                client.octets(),
                vip.octets(),
                ip_proto::TCP,
                Fragment::default(),
                &ack,
            );
            craft::ethernet(&[], ethertype::IPV4, &ip)
        }
        (IpAddr::V6(client), IpAddr::V6(vip)) => {
            let ip = craft::ipv6(client.octets(), vip.octets(), ip_proto::TCP, 64, &ack);
            craft::ethernet(&[], ethertype::IPV6, &ip)
        }
        _ => unreachable!("one family"),
    };
    let rules = Arc::new(FarmRules::from_config(&farm(true, MacMode::Unicast)));
    let every = |mode| ModeTable::new(1, vec![mode; BUCKETS as usize]).unwrap();
    let mut xdp = XdpProgram::load(&rules, &every(BucketMode::OWN), IF_MAC).expect("loads");
    let expected = [
        (BucketMode::DRAIN, Verdict::Accept),
        (BucketMode::KNOWN, Verdict::Accept),
        (BucketMode::GAIN, Verdict::Drop(DropReason::NotOwner)),
        (BucketMode::NONE, Verdict::Drop(DropReason::NotOwner)),
    ];
    for (mode, verdict) in expected {
        let table = every(mode);
        xdp.install(&table).unwrap();
        let rust = FarmTable::new(Arc::clone(&rules), table);
        let classified = classify(
            &frame,
            &rust,
            &mut Flows::with_capacity(8),
            &Served::COOKIE,
            0,
        );
        assert_eq!(classified, verdict, "{mode:?}, IPv6 {v6}");
        let outcome = xdp.test_run(&frame).expect("runs the eBPF program");
        assert_eq!(outcome.verdict, Some(verdict), "{mode:?}, IPv6 {v6}");
    }
    let mut redirect =
        XdpProgram::load_redirect(&rules, &ModeTable::none(BUCKETS as usize).unwrap(), IF_MAC)
            .expect("loads");
    redirect.set_lookups(true).unwrap();
    let handed = redirect
        .test_run(&frame)
        .expect("runs the redirect program");
    let prefix: [u8; 4] = handed.frame[..4].try_into().unwrap();
    assert_eq!(Served::from_prefix(prefix), Served::COOKIE, "IPv6 {v6}");
    // A segment that completes no handshake of the listener is nobody's.
    let mut stray = frame.clone();
    let last = stray.len() - 1 - 12;
    stray[last] ^= 0x40;
    let handed = redirect
        .test_run(&stray)
        .expect("runs the redirect program");
    let prefix: [u8; 4] = handed.frame[..4].try_into().unwrap();
    assert_eq!(Served::from_prefix(prefix), Served::NOTHING, "IPv6 {v6}");
}

/// The sequence number of the SYN [`syn_ack_cookie`] sends.
const SYN_SEQUENCE: u32 = 0x1000_0000;

/// Sends a SYN from `client`:`port` to `vip`:80 through a raw socket and returns the sequence
/// number of the listener's SYN-ACK: its cookie.
fn syn_ack_cookie(client: IpAddr, port: u16, vip: IpAddr) -> u32 {
    let domain = if vip.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let raw =
        Socket::new(domain, Type::RAW, Some(SocketProtocol::TCP)).expect("opens a raw socket");
    raw.bind(&SocketAddr::new(client, 0).into())
        .expect("binds the client's address");
    raw.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let mut syn = craft::tcp(port, 80, SYN, &[]);
    syn[4..8].copy_from_slice(&SYN_SEQUENCE.to_be_bytes());
    match (client, vip) {
        (IpAddr::V4(client), IpAddr::V4(vip)) => {
            let sum = transport_checksum(&client.octets(), &vip.octets(), ip_proto::TCP, &syn);
            syn[16..18].copy_from_slice(&sum.to_be_bytes());
        }
        _ => {
            // The kernel fills the checksum at byte 16 of what an IPv6 raw socket sends.
            let offset: libc::c_int = 16;
            // SAFETY: the option value is a live `c_int` of the size given, for a socket this
            // function owns.
            let set = unsafe {
                libc::setsockopt(
                    std::os::fd::AsRawFd::as_raw_fd(&raw),
                    libc::IPPROTO_IPV6,
                    libc::IPV6_CHECKSUM,
                    (&raw const offset).cast(),
                    size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            assert_eq!(set, 0, "IPV6_CHECKSUM: {}", std::io::Error::last_os_error());
        }
    }
    // A new IPv6 address's routes come from a work queue: until then the SYN or its answer
    // may be lost, and the SYN is sent again, every second for 5 s at most.
    for _ in 0..5 {
        raw.send_to(&syn, &SocketAddr::new(vip, 0).into())
            .expect("sends the SYN");
        let mut buffer = [std::mem::MaybeUninit::new(0u8); 256];
        while let Ok((length, _)) = raw.recv_from(&mut buffer) {
            // SAFETY: `recv_from` initialised the first `length` bytes.
            let bytes: Vec<u8> = buffer[..length]
                .iter()
                .map(|b| unsafe { b.assume_init() })
                .collect();
            // An IPv4 raw socket reads the IP header too; an IPv6 one does not.
            let tcp = if vip.is_ipv6() {
                &bytes[..]
            } else {
                &bytes[usize::from(bytes[0] & 0x0f) * 4..]
            };
            let from_listener =
                tcp.len() >= 20 && tcp[..4] == [0, 80, (port >> 8) as u8, port as u8];
            if from_listener && tcp[13] == SYN | ACK {
                return u32::from_be_bytes(tcp[4..8].try_into().unwrap());
            }
        }
    }
    panic!("no SYN-ACK from the listener within 5 s");
}

/// The program's cost per packet, as `BPF_PROG_TEST_RUN` times it, on the frames of a bucket
/// owned outright, of one not owned, of one draining and of one being gained, in a namespace
/// where the kernel has a socket for the connection from port 40000 and a listener on the VIP
/// port, but none for the one from port 40002 (so a draining bucket's TCP segments look up a
/// served connection, or an unknown one, which the listener answers for: no cookie sent
/// lately): `cargo test -p herd-dataplane --release --test xdp -- --ignored --nocapture`
/// (as root). Prints the fastest and the median of 15 timings of 200000 runs each.
#[test]
#[ignore]
fn cost_per_packet() {
    needs_root();
    in_a_namespace_of_its_own(time_each_mode);
}

fn time_each_mode() {
    ip(&["link", "set", "lo", "up"]);
    let client = [198, 19, 1, 2];
    for address in [VIP, client] {
        on_loopback(IpAddr::from(address));
    }
    let vip = SocketAddr::new(IpAddr::from(VIP), 80);
    let _listener = TcpListener::bind(vip).expect("listens");
    let _served = connected(SocketAddr::new(IpAddr::from(client), 40000), vip);
    let rules = FarmRules::from_config(&farm(true, MacMode::Unicast));
    let frames = [
        ("UDP", ip_proto::UDP, craft::udp(40000, 5000, &[0; 22])),
        (
            "TCP ACK, served",
            ip_proto::TCP,
            craft::tcp(40000, 80, ACK, &[0; 10]),
        ),
        (
            "TCP ACK, unknown",
            ip_proto::TCP,
            craft::tcp(40002, 80, ACK, &[0; 10]),
        ),
        (
            "TCP SYN",
            ip_proto::TCP,
            craft::tcp(40000, 80, SYN, &[0; 10]),
        ),
    ];
    let modes = [
        ("OWN", BucketMode::OWN),
        ("NONE", BucketMode::NONE),
        ("DRAIN", BucketMode::DRAIN),
        ("GAIN", BucketMode::GAIN),
    ];
    for (name, mode) in modes {
        let table = ModeTable::new(1, vec![mode; BUCKETS as usize]).unwrap();
        let xdp = XdpProgram::load(&rules, &table, IF_MAC).expect("loads");
        for (kind, protocol, l4) in &frames {
            let ip = craft::ipv4(client, VIP, *protocol, Fragment::default(), l4);
            let frame = craft::ethernet(&[], ethertype::IPV4, &ip);
            let mut times: Vec<Duration> = (0..15)
                .map(|_| xdp.time_per_run(&frame, 200_000).unwrap())
                .collect();
            times.sort();
            println!(
                "{name} {kind} ({} bytes): fastest {:?}, median {:?}",
                frame.len(),
                times[0],
                times[7]
            );
        }
    }
}
