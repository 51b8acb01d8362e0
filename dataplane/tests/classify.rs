//! The classifier's verdicts, rule by rule, and the farm-wide property that exactly one node
//! accepts each balanced VIP packet.

use std::sync::Arc;

use herd_config::{Affinity, FarmConfig, Protocol, Rule};
use herd_dataplane::craft::{self, Fragment};
use herd_dataplane::table::{BucketTable, NodeId, NO_OWNER};
use herd_dataplane::wire::ethernet::ethertype;
use herd_dataplane::wire::ip_proto;
use herd_dataplane::{classify, DropReason, FarmRules, FarmTable, Verdict};
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

fn verdicts(farm: &[FarmTable], frame: &[u8]) -> Vec<Verdict> {
    farm.iter().map(|table| classify(frame, table)).collect()
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
    let outsider = FarmTable::new(rules, BucketTable::unowned(256).unwrap(), NO_OWNER);
    let frame = v4(CLIENT4, VIP4, ip_proto::TCP, &craft::tcp(1, 80, 2, &[]));
    assert_eq!(
        classify(&frame, &outsider),
        Verdict::Drop(DropReason::NotOwner)
    );
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
            .map(|local| FarmTable::new(Arc::clone(&rules), buckets.clone(), local as NodeId))
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
