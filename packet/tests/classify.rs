//! The classifier's verdicts, rule by rule; the farm-wide property that exactly one node accepts
//! each balanced VIP packet; and what each bucket mode accepts, with the flow table it keeps.

use std::collections::HashSet;
use std::sync::Arc;

use herd_config::{Affinity, FarmConfig, Protocol, Rule};
use herd_packet::craft::{self, Fragment};
use herd_packet::flows::Connection;
use herd_packet::kernel::{Kernel, NoSockets, Served};
use herd_packet::table::{BucketMode, BucketTable, ModeTable, NodeId, NO_OWNER};
use herd_packet::wire::ethernet::ethertype;
use herd_packet::wire::ip_proto;
use herd_packet::{classify, DropReason, FarmRules, FarmTable, Flows, Verdict};
use proptest::prelude::*;

const VIP4: [u8; 4] = [198, 18, 0, 100];
const VIP6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x00,
];
const CLIENT4: [u8; 4] = [198, 19, 7, 9];
const CLIENT6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0x07, 0x09,
];
const NODE4: [u8; 4] = [198, 18, 0, 1];
const NODES: usize = 3;

fn config(rules: Vec<Rule>) -> FarmConfig {
    craft::farm_config(
        &[VIP4.into(), VIP6.into()],
        256,
        *b"herd-test-key-16",
        NODES as u8,
        rules,
    )
}

fn standard_rules() -> Vec<Rule> {
    vec![
        craft::rule(Protocol::Tcp, 80, 80, Affinity::ClientIp),
        craft::rule(Protocol::Tcp, 443, 443, Affinity::ClientIp),
        craft::rule(Protocol::Udp, 5000, 5099, Affinity::ClientIpPort),
        craft::rule(Protocol::Icmp, 0, 65535, Affinity::ClientIp),
    ]
}

/// One table per node over the same owners (bucket b owned by node b mod 3).
fn farm(rules: Vec<Rule>) -> Vec<FarmTable> {
    craft::round_robin_tables(&config(rules))
}

/// Each node's verdict, each with a flow table of its own.
fn verdicts(farm: &[FarmTable], frame: &[u8]) -> Vec<Verdict> {
    farm.iter()
        .map(|table| classify(frame, table, &mut Flows::with_capacity(64), &NoSockets, 0))
        .collect()
}

/// The verdict every node agrees on, or, for a balanced packet, the index of the one that
/// accepts it (asserting that all others drop it as not theirs).
fn single_acceptor(farm: &[FarmTable], frame: &[u8]) -> usize {
    let v = verdicts(farm, frame);
    let accepting: Vec<usize> = (0..v.len()).filter(|&i| v[i] == Verdict::Accept).collect();
    assert_eq!(accepting.len(), 1, "verdicts {v:?}");
    for (i, verdict) in v.iter().enumerate() {
        if i != accepting[0] {
            assert_eq!(*verdict, Verdict::Drop(DropReason::NotOwner));
        }
    }
    accepting[0]
}

fn unanimous(farm: &[FarmTable], frame: &[u8]) -> Verdict {
    let v = verdicts(farm, frame);
    assert!(v.iter().all(|x| *x == v[0]), "nodes disagree: {v:?}");
    v[0]
}

fn v4(src: [u8; 4], dst: [u8; 4], protocol: u8, l4: &[u8]) -> Vec<u8> {
    craft::ethernet(
        &[],
        ethertype::IPV4,
        &craft::ipv4(src, dst, protocol, Fragment::default(), l4),
    )
}

fn v6(src: [u8; 16], dst: [u8; 16], next: u8, l4: &[u8]) -> Vec<u8> {
    craft::ethernet(&[], ethertype::IPV6, &craft::ipv6(src, dst, next, 64, l4))
}

#[test]
fn traffic_not_for_a_vip_passes() {
    let farm = farm(standard_rules());
    let to_node = v4(
        CLIENT4,
        NODE4,
        ip_proto::TCP,
        &craft::tcp(40000, 22, 0x02, &[]),
    );
    assert_eq!(unanimous(&farm, &to_node), Verdict::Pass);
    let ping_node = v4(
        CLIENT4,
        NODE4,
        ip_proto::ICMP,
        &craft::icmp(8, 0, [0, 1, 0, 1], &[]),
    );
    assert_eq!(unanimous(&farm, &ping_node), Verdict::Pass);
    let other_v6 = v6(CLIENT6, CLIENT6, ip_proto::UDP, &craft::udp(1, 5000, &[]));
    assert_eq!(unanimous(&farm, &other_v6), Verdict::Pass);
    let ipx = craft::ethernet(&[], 0x8137, &[0; 40]);
    assert_eq!(unanimous(&farm, &ipx), Verdict::Pass);
}

#[test]
fn balanced_tcp_udp_and_icmp_have_one_owner() {
    let farm = farm(standard_rules());
    for src_port in 1000..1100u16 {
        single_acceptor(
            &farm,
            &v4(
                CLIENT4,
                VIP4,
                ip_proto::TCP,
                &craft::tcp(src_port, 443, 0x02, &[]),
            ),
        );
        single_acceptor(
            &farm,
            &v4(
                CLIENT4,
                VIP4,
                ip_proto::UDP,
                &craft::udp(src_port, 5050, b"q"),
            ),
        );
        single_acceptor(
            &farm,
            &v6(
                CLIENT6,
                VIP6,
                ip_proto::TCP,
                &craft::tcp(src_port, 80, 0x10, &[]),
            ),
        );
    }
    single_acceptor(
        &farm,
        &v4(
            CLIENT4,
            VIP4,
            ip_proto::ICMP,
            &craft::icmp(8, 0, [0, 1, 0, 1], &[]),
        ),
    );
    single_acceptor(
        &farm,
        &v6(
            CLIENT6,
            VIP6,
            ip_proto::ICMPV6,
            &craft::icmp(128, 0, [0, 1, 0, 1], &[]),
        ),
    );
}

#[test]
fn client_ip_affinity_keeps_a_client_on_one_node() {
    let farm = farm(standard_rules());
    let owners: Vec<usize> = (1000..1200u16)
        .map(|p| {
            single_acceptor(
                &farm,
                &v4(CLIENT4, VIP4, ip_proto::TCP, &craft::tcp(p, 80, 2, &[])),
            )
        })
        .collect();
    assert!(owners.iter().all(|&o| o == owners[0]));
    // Port 443 is under the same rule: the same node.
    let https = v4(CLIENT4, VIP4, ip_proto::TCP, &craft::tcp(999, 443, 2, &[]));
    assert_eq!(single_acceptor(&farm, &https), owners[0]);
}

#[test]
fn client_ip_port_affinity_spreads_one_client_over_every_node() {
    let farm = farm(standard_rules());
    let mut seen = [0usize; NODES];
    for p in 20000..20300u16 {
        seen[single_acceptor(
            &farm,
            &v4(CLIENT4, VIP4, ip_proto::UDP, &craft::udp(p, 5000, &[])),
        )] += 1;
    }
    assert!(seen.iter().all(|&n| n > 50), "{seen:?}");
}

#[test]
fn vip_traffic_no_rule_matches_is_dropped_everywhere() {
    let farm = farm(standard_rules());
    let cases = [
        v4(CLIENT4, VIP4, ip_proto::TCP, &craft::tcp(1, 8080, 2, &[])),
        v4(CLIENT4, VIP4, ip_proto::UDP, &craft::udp(1, 53, &[])),
        v4(CLIENT4, VIP4, 47, &[0; 24]),
        v6(CLIENT6, VIP6, ip_proto::UDP, &craft::udp(1, 5100, &[])),
        v6(CLIENT6, VIP6, 59, &[]),
    ];
    for frame in cases {
        assert_eq!(unanimous(&farm, &frame), Verdict::Drop(DropReason::NoRule));
    }
    let no_icmp = self::farm(standard_rules()[..3].to_vec());
    let ping = v4(
        CLIENT4,
        VIP4,
        ip_proto::ICMP,
        &craft::icmp(8, 0, [0; 4], &[]),
    );
    assert_eq!(
        unanimous(&no_icmp, &ping),
        Verdict::Drop(DropReason::NoRule)
    );
}

#[test]
fn vlan_tags_do_not_change_the_owner() {
    let farm = farm(standard_rules());
    let ip = craft::ipv4(
        CLIENT4,
        VIP4,
        ip_proto::UDP,
        Fragment::default(),
        &craft::udp(7, 5001, &[]),
    );
    let untagged = single_acceptor(&farm, &craft::ethernet(&[], ethertype::IPV4, &ip));
    assert_eq!(
        single_acceptor(&farm, &craft::ethernet(&[10], ethertype::IPV4, &ip)),
        untagged
    );
    assert_eq!(
        single_acceptor(&farm, &craft::ethernet(&[10, 20], ethertype::IPV4, &ip)),
        untagged
    );
    // Three tags are more than herd looks through: not recognisably for a VIP.
    assert_eq!(
        unanimous(&farm, &craft::ethernet(&[1, 2, 3], ethertype::IPV4, &ip)),
        Verdict::Pass
    );
}

#[test]
fn all_fragments_of_a_datagram_reach_the_node_of_the_client_address() {
    let farm = farm(standard_rules());
    let mut owners = Vec::new();
    for (offset, more) in [(0, true), (185, true), (370, false)] {
        let frag = Fragment { offset, more };
        let body = if offset == 0 {
            craft::udp(4242, 5000, &[0; 1472])
        } else {
            vec![0; 1480]
        };
        let ip = craft::ipv4(CLIENT4, VIP4, ip_proto::UDP, frag, &body);
        owners.push(single_acceptor(
            &farm,
            &craft::ethernet(&[], ethertype::IPV4, &ip),
        ));
        let l6 = if offset == 0 {
            craft::udp(4242, 5000, &[0; 64])
        } else {
            vec![0; 64]
        };
        let ip6 = craft::ipv6(
            CLIENT6,
            VIP6,
            ip_proto::FRAGMENT,
            64,
            &craft::ipv6_fragment(ip_proto::UDP, frag, &l6),
        );
        owners.push(single_acceptor(&farm, &craft::ethernet(&[], ethertype::IPV6, &ip6)) + 100);
    }
    let v4_owner = owners[0];
    let v6_owner = owners[1];
    assert!(
        owners.iter().step_by(2).all(|&o| o == v4_owner),
        "{owners:?}"
    );
    assert!(
        owners.iter().skip(1).step_by(2).all(|&o| o == v6_owner),
        "{owners:?}"
    );
    // A fragment goes where the client's address alone hashes, whatever its ports: the same
    // node as an ICMP echo from that client, which is hashed the same way.
    let ping = v4(
        CLIENT4,
        VIP4,
        ip_proto::ICMP,
        &craft::icmp(8, 0, [0; 4], &[]),
    );
    assert_eq!(single_acceptor(&farm, &ping), v4_owner);
    // A fragment of a protocol no rule covers is dropped everywhere.
    let tcp_only = self::farm(standard_rules()[..2].to_vec());
    let frag = craft::ipv4(
        CLIENT4,
        VIP4,
        ip_proto::UDP,
        Fragment {
            offset: 3,
            more: false,
        },
        &[0; 8],
    );
    let frame = craft::ethernet(&[], ethertype::IPV4, &frag);
    assert_eq!(
        unanimous(&tcp_only, &frame),
        Verdict::Drop(DropReason::NoRule)
    );
}

#[test]
fn icmp_errors_reach_the_node_that_owns_the_connection() {
    let farm = farm(standard_rules());
    let router4 = [198, 18, 9, 1];
    for client_port in [1000u16, 2000, 3000, 4000, 50000] {
        // v4: fragmentation needed about a segment the farm sent from VIP:443 to the client.
        let incoming = v4(
            CLIENT4,
            VIP4,
            ip_proto::UDP,
            &craft::udp(client_port, 5000, &[]),
        );
        let owner = single_acceptor(&farm, &incoming);
        let sent = craft::ipv4(
            VIP4,
            CLIENT4,
            ip_proto::UDP,
            Fragment::default(),
            &craft::udp(5000, client_port, &[0; 100]),
        );
        let error = craft::icmp(3, 4, [0, 0, 0x05, 0x78], &sent[..28]);
        assert_eq!(
            single_acceptor(&farm, &v4(router4, VIP4, ip_proto::ICMP, &error)),
            owner
        );

        // v6: packet too big, quoting 48 bytes of what the farm sent.
        let incoming = v6(
            CLIENT6,
            VIP6,
            ip_proto::UDP,
            &craft::udp(client_port, 5001, &[]),
        );
        let owner = single_acceptor(&farm, &incoming);
        let sent = craft::ipv6(
            VIP6,
            CLIENT6,
            ip_proto::UDP,
            64,
            &craft::udp(5001, client_port, &[0; 100]),
        );
        let error = craft::icmp(2, 0, [0, 0, 0x05, 0x00], &sent[..48]);
        let router6 = [0x20, 0x01, 0x0d, 0xb8, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        assert_eq!(
            single_acceptor(&farm, &v6(router6, VIP6, ip_proto::ICMPV6, &error)),
            owner
        );
    }
    // An error quoting a packet the farm did not send (source not a VIP) is not believed.
    let forged = craft::ipv4(
        NODE4,
        CLIENT4,
        ip_proto::UDP,
        Fragment::default(),
        &craft::udp(5000, 1, &[]),
    );
    let error = craft::icmp(3, 4, [0; 4], &forged[..28]);
    assert_eq!(
        unanimous(&farm, &v4(router4, VIP4, ip_proto::ICMP, &error)),
        Verdict::Drop(DropReason::Malformed)
    );
}

#[test]
fn neighbour_requests_for_a_vip_are_answered() {
    let farm = farm(standard_rules());
    let request = craft::ethernet(&[], ethertype::ARP, &craft::arp_request(CLIENT4, VIP4));
    assert_eq!(unanimous(&farm, &request), Verdict::AnswerNeighbor);
    let gratuitous = craft::ethernet(&[], ethertype::ARP, &craft::arp_request(VIP4, VIP4));
    assert_eq!(unanimous(&farm, &gratuitous), Verdict::Pass);
    let for_node = craft::ethernet(&[7], ethertype::ARP, &craft::arp_request(CLIENT4, NODE4));
    assert_eq!(unanimous(&farm, &for_node), Verdict::Pass);

    let ns = craft::neighbor_solicitation(VIP6);
    let multicast = craft::ipv6(
        CLIENT6,
        craft::solicited_node(VIP6),
        ip_proto::ICMPV6,
        255,
        &ns,
    );
    let frame = craft::ethernet(&[], ethertype::IPV6, &multicast);
    assert_eq!(unanimous(&farm, &frame), Verdict::AnswerNeighbor);
    let unicast = craft::ipv6(CLIENT6, VIP6, ip_proto::ICMPV6, 255, &ns);
    assert_eq!(
        unanimous(&farm, &craft::ethernet(&[], ethertype::IPV6, &unicast)),
        Verdict::AnswerNeighbor
    );
    let off_link = craft::ipv6(CLIENT6, VIP6, ip_proto::ICMPV6, 254, &ns);
    assert_eq!(
        unanimous(&farm, &craft::ethernet(&[], ethertype::IPV6, &off_link)),
        Verdict::Pass
    );
    let other = craft::neighbor_solicitation(CLIENT6);
    let other = craft::ipv6(
        CLIENT6,
        craft::solicited_node(CLIENT6),
        ip_proto::ICMPV6,
        255,
        &other,
    );
    assert_eq!(
        unanimous(&farm, &craft::ethernet(&[], ethertype::IPV6, &other)),
        Verdict::Pass
    );
    // A neighbour advertisement to the VIP answers the kernel's own solicitation: every node's
    // kernel gets it.
    let na = craft::icmp(136, 0, [0x60, 0, 0, 0], &VIP6);
    let na = craft::ipv6(CLIENT6, VIP6, ip_proto::ICMPV6, 255, &na);
    assert_eq!(
        unanimous(&farm, &craft::ethernet(&[], ethertype::IPV6, &na)),
        Verdict::Pass
    );
}

#[test]
fn malformed_vip_packets_are_dropped_and_malformed_others_pass() {
    let farm = farm(standard_rules());
    let good = v4(CLIENT4, VIP4, ip_proto::TCP, &craft::tcp(1, 80, 2, &[]));
    // Cut inside the TCP header; then inside the IPv4 header (destination still readable at
    // offset 14+16..14+20 only when at least 34 bytes remain).
    assert_eq!(
        unanimous(&farm, &good[..14 + 20 + 10]),
        Verdict::Drop(DropReason::Malformed)
    );
    assert_eq!(unanimous(&farm, &good[..14 + 19]), Verdict::Pass);
    let mut bad_ihl = good.clone();
    bad_ihl[14] = 0x44;
    assert_eq!(
        unanimous(&farm, &bad_ihl),
        Verdict::Drop(DropReason::Malformed)
    );
    let mut long_total = good.clone();
    long_total[16] = 0x05;
    assert_eq!(
        unanimous(&farm, &long_total),
        Verdict::Drop(DropReason::Malformed)
    );
    let v6_cut = v6(CLIENT6, VIP6, ip_proto::TCP, &craft::tcp(1, 80, 2, &[]));
    assert_eq!(
        unanimous(&farm, &v6_cut[..v6_cut.len() - 1]),
        Verdict::Drop(DropReason::Malformed)
    );
    let chain = (0..10).fold(craft::tcp(1, 80, 2, &[]), |rest, _| {
        craft::ipv6_options(ip_proto::DEST_OPTS, 0, &rest)
    });
    let long_chain = v6(CLIENT6, VIP6, ip_proto::DEST_OPTS, &chain);
    assert_eq!(
        unanimous(&farm, &long_chain),
        Verdict::Drop(DropReason::Malformed)
    );
    let not_vip = v4(CLIENT4, NODE4, ip_proto::TCP, &craft::tcp(1, 80, 2, &[]));
    assert_eq!(unanimous(&farm, &not_vip[..14 + 20 + 3]), Verdict::Pass);
}

#[test]
fn extension_headers_do_not_change_the_owner() {
    let farm = farm(standard_rules());
    let segment = craft::tcp(3333, 80, 2, &[]);
    let plain = single_acceptor(&farm, &v6(CLIENT6, VIP6, ip_proto::TCP, &segment));
    let dest = craft::ipv6_options(ip_proto::TCP, 1, &segment);
    let hbh = craft::ipv6_options(ip_proto::DEST_OPTS, 0, &dest);
    assert_eq!(
        single_acceptor(&farm, &v6(CLIENT6, VIP6, ip_proto::HOP_BY_HOP, &hbh)),
        plain
    );
    let atomic = craft::ipv6_fragment(ip_proto::TCP, Fragment::default(), &segment);
    assert_eq!(
        single_acceptor(&farm, &v6(CLIENT6, VIP6, ip_proto::FRAGMENT, &atomic)),
        plain
    );
}

#[test]
fn a_machine_outside_the_farm_accepts_nothing() {
    let rules = Arc::new(FarmRules::from_config(&config(standard_rules())));
    let unowned = BucketTable::unowned(256).unwrap();
    let outsider = FarmTable::new(rules, ModeTable::of_owner(&unowned, NO_OWNER));
    let frame = v4(CLIENT4, VIP4, ip_proto::TCP, &craft::tcp(1, 80, 2, &[]));
    let mut flows = Flows::with_capacity(64);
    assert_eq!(
        classify(&frame, &outsider, &mut flows, &NoSockets, 0),
        Verdict::Drop(DropReason::NotOwner)
    );
    assert!(flows.is_empty());
}

/// A VIP packet some rule matches, built from random choices.
fn balanced_packet() -> impl Strategy<Value = Vec<u8>> {
    (
        any::<bool>(),
        any::<[u8; 16]>(),
        0..4u8,
        any::<u16>(),
        prop::sample::select(vec![80u16, 443]),
        5000..5100u16,
        prop::collection::vec(any::<u16>(), 0..3),
        0..3u16,
    )
        .prop_map(
            |(is_v6, client, kind, src_port, tcp_port, udp_port, vlans, frag)| {
                let fragment = Fragment {
                    offset: frag.saturating_sub(1) * 100,
                    more: frag == 1,
                };
                let (protocol, l4) = match kind {
                    0 => (ip_proto::TCP, craft::tcp(src_port, tcp_port, 0x02, &[])),
                    1 => (ip_proto::UDP, craft::udp(src_port, udp_port, &[1, 2, 3])),
                    _ => (
                        craft::icmp_protocol(is_v6),
                        craft::icmp(if is_v6 { 128 } else { 8 }, 0, [0; 4], &[]),
                    ),
                };
                let (ethertype, ip) = if is_v6 {
                    let body = if frag > 0 {
                        craft::ipv6_fragment(protocol, fragment, &l4)
                    } else {
                        l4
                    };
                    let next = if frag > 0 {
                        ip_proto::FRAGMENT
                    } else {
                        protocol
                    };
                    (ethertype::IPV6, craft::ipv6(client, VIP6, next, 64, &body))
                } else {
                    let src = [client[0], client[1], client[2], client[3]];
                    (
                        ethertype::IPV4,
                        craft::ipv4(src, VIP4, protocol, fragment, &l4),
                    )
                };
                craft::ethernet(&vlans, ethertype, &ip)
            },
        )
}

fn random_farm() -> impl Strategy<Value = Vec<FarmTable>> {
    (2..9usize, prop::collection::vec(any::<u16>(), 256)).prop_map(|(nodes, raw)| {
        let rules = Arc::new(FarmRules::from_config(&config(standard_rules())));
        let owners: Vec<NodeId> = raw.iter().map(|r| r % nodes as u16).collect();
        let buckets = BucketTable::new(7, owners).unwrap();
        (0..nodes)
            .map(|local| {
                let modes = ModeTable::of_owner(&buckets, local as NodeId);
                FarmTable::new(Arc::clone(&rules), modes)
            })
            .collect()
    })
}

proptest! {
    #[test]
    fn exactly_one_node_accepts_each_balanced_vip_packet(farm in random_farm(), frame in balanced_packet()) {
        single_acceptor(&farm, &frame);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_only_ownership_differs(farm in random_farm(), bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let v = verdicts(&farm, &bytes);
        let accepts = v.iter().filter(|x| **x == Verdict::Accept).count();
        if accepts > 0 {
            prop_assert_eq!(accepts, 1);
            prop_assert!(v.iter().all(|x| matches!(x, Verdict::Accept | Verdict::Drop(DropReason::NotOwner))));
        } else {
            prop_assert!(v.iter().all(|x| *x == v[0]));
        }
    }

    #[test]
    fn mutated_packets_never_panic(frame in balanced_packet(), cut in any::<prop::sample::Index>(), flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4)) {
        let farm = farm(standard_rules());
        let mut frame = frame;
        for (at, value) in flips {
            let i = at.index(frame.len());
            frame[i] = value;
        }
        let len = cut.index(frame.len() + 1);
        let v = verdicts(&farm, &frame[..len]);
        prop_assert!(v.iter().filter(|x| **x == Verdict::Accept).count() <= 1);
    }
}

// What each bucket mode accepts, and the flow table it keeps.

/// The rules of the mode tests: TCP 80 on the client address, TCP 8000-8099 on address and
/// port, UDP and ICMP.
fn mode_rules() -> Arc<FarmRules> {
    let mut rules = standard_rules();
    rules.push(craft::rule(
        Protocol::Tcp,
        8000,
        8099,
        Affinity::ClientIpPort,
    ));
    Arc::new(FarmRules::from_config(&config(rules)))
}

/// A node whose every bucket is in `mode`.
fn every_bucket(mode: BucketMode) -> FarmTable {
    FarmTable::new(mode_rules(), ModeTable::new(1, vec![mode; 256]).unwrap())
}

const SYN: u8 = 0x02;
const SYN_ACK: u8 = 0x12;
const ACK: u8 = 0x10;
const PSH_ACK: u8 = 0x18;
const FIN_ACK: u8 = 0x11;
const RST: u8 = 0x04;

/// A TCP segment from the client's `port` to the VIP's `vip_port`, over IPv4 or IPv6.
fn segment(v6: bool, port: u16, vip_port: u16, flags: u8) -> Vec<u8> {
    let data: &[u8] = if flags & 0x08 != 0 { b"GET /" } else { &[] };
    let l4 = craft::tcp(port, vip_port, flags, data);
    if v6 {
        self::v6(CLIENT6, VIP6, ip_proto::TCP, &l4)
    } else {
        v4(CLIENT4, VIP4, ip_proto::TCP, &l4)
    }
}

/// The flow-table key of [`segment`]'s connection.
fn connection(v6: bool, port: u16, vip_port: u16) -> Connection {
    if v6 {
        Connection::v6(CLIENT6, VIP6, port, vip_port)
    } else {
        Connection::v4(CLIENT4, VIP4, port, vip_port)
    }
}

/// A frame of every kind that is not TCP as step 6 reads it: UDP, an echo request, a
/// fragment of a TCP segment and an ICMP error quoting one.
fn not_tcp(v6: bool) -> Vec<Vec<u8>> {
    let first_fragment = Fragment {
        offset: 0,
        more: true,
    };
    let syn = craft::tcp(1234, 80, SYN, &[0; 16]);
    if v6 {
        let sent = craft::ipv6(
            VIP6,
            CLIENT6,
            ip_proto::TCP,
            64,
            &craft::tcp(80, 1234, ACK, &[]),
        );
        vec![
            self::v6(CLIENT6, VIP6, ip_proto::UDP, &craft::udp(1234, 5000, b"q")),
            self::v6(
                CLIENT6,
                VIP6,
                ip_proto::ICMPV6,
                &craft::icmp(128, 0, [0; 4], &[]),
            ),
            self::v6(
                CLIENT6,
                VIP6,
                ip_proto::FRAGMENT,
                &craft::ipv6_fragment(ip_proto::TCP, first_fragment, &syn),
            ),
            self::v6(
                CLIENT6,
                VIP6,
                ip_proto::ICMPV6,
                &craft::icmp(2, 0, [0, 0, 5, 0], &sent[..48]),
            ),
        ]
    } else {
        let fragment = craft::ipv4(CLIENT4, VIP4, ip_proto::TCP, first_fragment, &syn);
        let sent = craft::ipv4(
            VIP4,
            CLIENT4,
            ip_proto::TCP,
            Fragment::default(),
            &craft::tcp(80, 1234, ACK, &[]),
        );
        vec![
            v4(CLIENT4, VIP4, ip_proto::UDP, &craft::udp(1234, 5000, b"q")),
            v4(
                CLIENT4,
                VIP4,
                ip_proto::ICMP,
                &craft::icmp(8, 0, [0; 4], &[]),
            ),
            craft::ethernet(&[], ethertype::IPV4, &fragment),
            v4(
                CLIENT4,
                VIP4,
                ip_proto::ICMP,
                &craft::icmp(3, 4, [0, 0, 5, 0], &sent[..28]),
            ),
        ]
    }
}

const NOT_OWNER: Verdict = Verdict::Drop(DropReason::NotOwner);

/// The client address of [`segment`].
fn connection_client(v6: bool) -> std::net::IpAddr {
    if v6 {
        CLIENT6.into()
    } else {
        CLIENT4.into()
    }
}

/// A node's kernel as a test sets it up: the connections it has sockets for, and those whose
/// next ACK completes a SYN-cookie handshake of its listener.
#[derive(Default)]
struct Sockets {
    open: HashSet<Connection>,
    cookies: HashSet<Connection>,
}

impl Sockets {
    fn with_open(connections: impl IntoIterator<Item = Connection>) -> Self {
        Self {
            open: connections.into_iter().collect(),
            ..Self::default()
        }
    }
}

impl Kernel for Sockets {
    fn served(&self, connection: &Connection) -> Served {
        let socket = if self.open.contains(connection) {
            Served::SOCKET
        } else {
            Served::NOTHING
        };
        let cookie = if self.cookies.contains(connection) {
            Served::COOKIE
        } else {
            Served::NOTHING
        };
        socket | cookie
    }
}

#[test]
fn own_accepts_everything_and_records_nothing() {
    for v6 in [false, true] {
        let table = every_bucket(BucketMode::OWN);
        let mut flows = Flows::with_capacity(64);
        for (flags, t) in [(SYN, 4), (ACK, 5), (SYN_ACK, 6), (PSH_ACK, 7), (RST, 8)] {
            let frame = segment(v6, 1000, 80, flags);
            assert_eq!(
                classify(&frame, &table, &mut flows, &NoSockets, t),
                Verdict::Accept
            );
        }
        for frame in not_tcp(v6) {
            assert_eq!(
                classify(&frame, &table, &mut flows, &NoSockets, 12),
                Verdict::Accept
            );
        }
        assert!(flows.is_empty(), "nothing is recorded per SYN");
    }
}

#[test]
fn drain_keeps_the_connections_its_kernel_serves_and_everything_but_tcp() {
    for v6 in [false, true] {
        let mut flows = Flows::with_capacity(64);
        let mut kernel = Sockets::with_open([connection(v6, 1000, 80)]);
        kernel.cookies.insert(connection(v6, 1002, 80));
        let draining = every_bucket(BucketMode::DRAIN);
        for flags in [ACK, PSH_ACK, SYN_ACK, FIN_ACK, RST] {
            assert_eq!(
                classify(
                    &segment(v6, 1000, 80, flags),
                    &draining,
                    &mut flows,
                    &kernel,
                    2
                ),
                Verdict::Accept,
                "flags {flags:#x}"
            );
        }
        assert_eq!(
            classify(
                &segment(v6, 1002, 80, ACK),
                &draining,
                &mut flows,
                &kernel,
                2
            ),
            Verdict::Accept,
            "a handshake answered with a cookie before the bucket moved"
        );
        assert_eq!(
            classify(
                &segment(v6, 1001, 80, ACK),
                &draining,
                &mut flows,
                &kernel,
                3
            ),
            NOT_OWNER,
            "a connection the kernel does not serve"
        );
        for port in [1000, 1001] {
            assert_eq!(
                classify(
                    &segment(v6, port, 80, SYN),
                    &draining,
                    &mut flows,
                    &kernel,
                    3
                ),
                NOT_OWNER,
                "a new connection"
            );
        }
        for frame in not_tcp(v6) {
            assert_eq!(
                classify(&frame, &draining, &mut flows, &kernel, 4),
                Verdict::Accept
            );
        }
        assert!(flows.is_empty(), "nothing recorded");
    }
}

#[test]
fn a_new_connection_on_a_recorded_ones_ports_is_left_to_the_node_taking_syns() {
    for v6 in [false, true] {
        for keeping in [BucketMode::DRAIN, BucketMode::KNOWN] {
            let mut flows = Flows::with_capacity(64);
            let gaining = every_bucket(BucketMode::GAIN);
            for port in [1000, 1001] {
                classify(
                    &segment(v6, port, 80, SYN),
                    &gaining,
                    &mut flows,
                    &NoSockets,
                    1,
                );
            }
            // The bucket moves on while the two handshakes are recorded.
            let keeping = every_bucket(keeping);
            // The client reuses port 1000: the node taking SYNs answers this one, so this node
            // must no longer take the connection's segments, or its kernel would reset the
            // new connection.
            assert_eq!(
                classify(
                    &segment(v6, 1000, 80, SYN),
                    &keeping,
                    &mut flows,
                    &NoSockets,
                    2
                ),
                NOT_OWNER
            );
            assert_eq!(flows.get(&connection(v6, 1000, 80)), None, "forgotten");
            for flags in [ACK, PSH_ACK, FIN_ACK] {
                assert_eq!(
                    classify(
                        &segment(v6, 1000, 80, flags),
                        &keeping,
                        &mut flows,
                        &NoSockets,
                        3
                    ),
                    NOT_OWNER,
                    "flags {flags:#x}"
                );
            }
            assert_eq!(
                classify(
                    &segment(v6, 1001, 80, ACK),
                    &keeping,
                    &mut flows,
                    &NoSockets,
                    3
                ),
                Verdict::Accept,
                "the other connection is kept"
            );
            // A bucket another node owns outright leaves the table alone.
            classify(
                &segment(v6, 1001, 80, SYN),
                &every_bucket(BucketMode::NONE),
                &mut flows,
                &NoSockets,
                4,
            );
            assert_eq!(flows.get(&connection(v6, 1001, 80)), Some(3));
        }
    }
}

#[test]
fn gain_takes_new_connections_and_then_their_packets_and_nothing_else() {
    for v6 in [false, true] {
        let gaining = every_bucket(BucketMode::GAIN);
        let mut flows = Flows::with_capacity(64);
        let mut kernel = Sockets::with_open([connection(v6, 2003, 80)]);
        kernel.cookies.insert(connection(v6, 2002, 80));
        assert_eq!(
            classify(
                &segment(v6, 2000, 80, ACK),
                &gaining,
                &mut flows,
                &kernel,
                1
            ),
            NOT_OWNER,
            "a connection another node opened"
        );
        assert_eq!(
            classify(
                &segment(v6, 2000, 80, SYN),
                &gaining,
                &mut flows,
                &kernel,
                2
            ),
            Verdict::Accept
        );
        assert_eq!(flows.get(&connection(v6, 2000, 80)), Some(2), "recorded");
        for flags in [ACK, PSH_ACK, SYN_ACK] {
            assert_eq!(
                classify(
                    &segment(v6, 2000, 80, flags),
                    &gaining,
                    &mut flows,
                    &kernel,
                    3
                ),
                Verdict::Accept,
                "flags {flags:#x}"
            );
        }
        assert_eq!(flows.get(&connection(v6, 2000, 80)), Some(3), "seen");
        assert_eq!(
            classify(
                &segment(v6, 2001, 80, ACK),
                &gaining,
                &mut flows,
                &kernel,
                4
            ),
            NOT_OWNER
        );
        assert_eq!(
            classify(
                &segment(v6, 2002, 80, ACK),
                &gaining,
                &mut flows,
                &kernel,
                4
            ),
            NOT_OWNER,
            "a cookie this node cannot tell from the draining node's"
        );
        assert_eq!(
            classify(
                &segment(v6, 2003, 80, ACK),
                &gaining,
                &mut flows,
                &kernel,
                4
            ),
            Verdict::Accept,
            "a connection whose record a flood evicted is still known by its socket"
        );
        for frame in not_tcp(v6) {
            assert_eq!(
                classify(&frame, &gaining, &mut flows, &kernel, 5),
                NOT_OWNER
            );
        }
        assert_eq!(flows.len(), 1);
    }
}

#[test]
fn known_alone_takes_only_served_connections() {
    for v6 in [false, true] {
        let mut flows = Flows::with_capacity(64);
        classify(
            &segment(v6, 3000, 80, SYN),
            &every_bucket(BucketMode::GAIN),
            &mut flows,
            &NoSockets,
            1,
        );
        let mut kernel = Sockets::with_open([connection(v6, 3002, 80)]);
        kernel.cookies.insert(connection(v6, 3003, 80));
        let known = every_bucket(BucketMode::KNOWN);
        for port in [3000, 3002, 3003] {
            assert_eq!(
                classify(&segment(v6, port, 80, ACK), &known, &mut flows, &kernel, 2),
                Verdict::Accept,
                "port {port}"
            );
        }
        assert_eq!(
            classify(&segment(v6, 3001, 80, ACK), &known, &mut flows, &kernel, 2),
            NOT_OWNER
        );
        assert_eq!(
            classify(&segment(v6, 3002, 80, SYN), &known, &mut flows, &kernel, 2),
            NOT_OWNER
        );
        for frame in not_tcp(v6) {
            assert_eq!(classify(&frame, &known, &mut flows, &kernel, 3), NOT_OWNER);
        }
    }
}

#[test]
fn none_drops_everything_and_leaves_the_flow_table_alone() {
    for v6 in [false, true] {
        let mut flows = Flows::with_capacity(64);
        classify(
            &segment(v6, 4000, 80, SYN),
            &every_bucket(BucketMode::GAIN),
            &mut flows,
            &NoSockets,
            1,
        );
        let kernel = Sockets::with_open([connection(v6, 4000, 80), connection(v6, 4001, 80)]);
        let none = every_bucket(BucketMode::NONE);
        for flags in [SYN, ACK, PSH_ACK, FIN_ACK, RST] {
            for port in [4000, 4001] {
                assert_eq!(
                    classify(&segment(v6, port, 80, flags), &none, &mut flows, &kernel, 2),
                    NOT_OWNER
                );
            }
        }
        for frame in not_tcp(v6) {
            assert_eq!(classify(&frame, &none, &mut flows, &kernel, 3), NOT_OWNER);
        }
        assert_eq!(flows.get(&connection(v6, 4000, 80)), Some(1));
        assert_eq!(flows.len(), 1);
    }
}

#[test]
fn connections_are_told_apart_by_both_ports_whatever_the_affinity() {
    for v6 in [false, true] {
        let mut flows = Flows::with_capacity(64);
        // client-ip (port 80) and client-ip-port (port 8000) rules.
        let kernel = Sockets::with_open([80, 8000].map(|vip_port| connection(v6, 6000, vip_port)));
        let draining = every_bucket(BucketMode::DRAIN);
        for vip_port in [80, 8000] {
            assert_eq!(
                classify(
                    &segment(v6, 6000, vip_port, ACK),
                    &draining,
                    &mut flows,
                    &kernel,
                    2
                ),
                Verdict::Accept
            );
            assert_eq!(
                classify(
                    &segment(v6, 6001, vip_port, ACK),
                    &draining,
                    &mut flows,
                    &kernel,
                    2
                ),
                NOT_OWNER,
                "another connection of the same client"
            );
        }
        assert_eq!(
            classify(
                &segment(v6, 6000, 443, ACK),
                &draining,
                &mut flows,
                &kernel,
                2
            ),
            NOT_OWNER,
            "the same client port to another VIP port"
        );
    }
}

/// The modes of a two-node farm while bucket ownership moves from node A to node B, bucket by
/// bucket from the owners `before` to `after`: A drains what it loses, B gains it.
fn handover(before: &BucketTable, after: &BucketTable, node: NodeId) -> ModeTable {
    let modes = before
        .owners()
        .iter()
        .zip(after.owners())
        .map(|(&was, &will)| match (was == node, will == node) {
            (true, true) => BucketMode::OWN,
            (true, false) => BucketMode::DRAIN,
            (false, true) => BucketMode::GAIN,
            (false, false) => BucketMode::NONE,
        })
        .collect();
    ModeTable::new(after.generation(), modes).unwrap()
}

#[test]
fn a_bucket_moves_between_live_nodes_without_breaking_a_connection() {
    let rules = mode_rules();
    let before = BucketTable::new(1, vec![0; 256]).unwrap();
    let after = BucketTable::new(2, (0..256).map(|b| (b % 2) as NodeId).collect()).unwrap();
    let steady = |owners: &BucketTable| -> Vec<FarmTable> {
        (0..2)
            .map(|n| FarmTable::new(Arc::clone(&rules), ModeTable::of_owner(owners, n)))
            .collect()
    };
    let moving: Vec<FarmTable> = (0..2)
        .map(|n| FarmTable::new(Arc::clone(&rules), handover(&before, &after, n)))
        .collect();
    let mut nodes = TwoNodes::default();
    // client-ip-port: the connections of one client spread over the buckets.
    for v6 in [false, true] {
        for port in 1000..1064u16 {
            assert_eq!(nodes.segment(&steady(&before), v6, port, SYN, 1), [0]);
        }
        for port in 1000..1064u16 {
            for flags in [ACK, PSH_ACK, FIN_ACK] {
                assert_eq!(
                    nodes.segment(&moving, v6, port, flags, 2),
                    [0],
                    "an old connection"
                );
            }
        }
        for port in 2000..2064u16 {
            let owner = nodes.segment(&steady(&after), v6, port, ACK, 3);
            let opened = nodes.segment(&moving, v6, port, SYN, 3);
            assert_eq!(
                opened, owner,
                "a new connection goes to the bucket's new owner"
            );
            for flags in [ACK, PSH_ACK] {
                assert_eq!(nodes.segment(&moving, v6, port, flags, 4), owner);
            }
        }
        for frame in not_tcp(v6) {
            assert_eq!(
                nodes.acceptors(&moving, &frame, 5),
                [0],
                "UDP stays with the old owner"
            );
        }
    }
    // Node B recorded the handshakes of the new connections in the buckets it gained, and
    // nothing else; node A recorded nothing.
    let gained = (2000..2064u16)
        .flat_map(|port| [false, true].map(|v6| (v6, port)))
        .filter(|&(v6, port)| {
            let client = connection_client(v6);
            let hash = rules
                .client_flow_hash(Protocol::Tcp, 8000, client, port)
                .unwrap();
            after.owner(after.bucket_of(hash)) == 1
        })
        .count();
    assert!(gained > 20, "{gained} new connections in gained buckets");
    assert_eq!(nodes.flows[1].len(), gained);
    assert!(nodes.flows[0].is_empty());
}

/// The two nodes of [`a_bucket_moves_between_live_nodes_without_breaking_a_connection`]: each
/// node's kernel opens a socket for the connections whose SYN it takes.
struct TwoNodes {
    flows: [Flows; 2],
    kernels: [Sockets; 2],
}

impl Default for TwoNodes {
    fn default() -> Self {
        Self {
            flows: [Flows::with_capacity(1024), Flows::with_capacity(1024)],
            kernels: [Sockets::default(), Sockets::default()],
        }
    }
}

impl TwoNodes {
    /// The nodes that accept `frame` under `tables`.
    fn acceptors(&mut self, tables: &[FarmTable], frame: &[u8], now: u64) -> Vec<usize> {
        (0..2)
            .filter(|&n| {
                let verdict =
                    classify(frame, &tables[n], &mut self.flows[n], &self.kernels[n], now);
                verdict == Verdict::Accept
            })
            .collect()
    }

    /// The nodes that accept a segment of the connection from `port` to port 8000.
    fn segment(
        &mut self,
        tables: &[FarmTable],
        v6: bool,
        port: u16,
        flags: u8,
        now: u64,
    ) -> Vec<usize> {
        let accepted = self.acceptors(tables, &segment(v6, port, 8000, flags), now);
        if flags == SYN {
            for &n in &accepted {
                self.kernels[n].open.insert(connection(v6, port, 8000));
            }
        }
        accepted
    }
}
