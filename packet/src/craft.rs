//! Builders for tests, benchmarks and traffic generators: well-formed packets of every shape
//! the classifier knows, and small farms to classify them against.
//!
//! Builders produce correct lengths and the IPv4 header checksum; transport checksums are left
//! zero, which the classifier never reads.

use std::net::IpAddr;
use std::sync::Arc;

use herd_config::{Affinity, Farm, FarmConfig, MacMode, Node, PortRange, Protocol, Rule};

use crate::classify::FarmTable;
use crate::rules::FarmRules;
use crate::table::{BucketTable, ModeTable, NodeId};
use crate::wire::ethernet::ethertype;
use crate::wire::{checksum, ip_proto};

/// A rule balancing `protocol` traffic to the ports `first..=last` on `affinity`.
pub fn rule(protocol: Protocol, first: u16, last: u16, affinity: Affinity) -> Rule {
    Rule {
        protocol,
        ports: vec![PortRange { first, last }],
        affinity,
    }
}

/// A farm of `nodes` nodes `n0`, `n1`, ... at 198.18.0.1, 198.18.0.2, ... (weight 1, interface
/// eth0) with these VIPs, bucket count, hash key and rules, as a validated file would give.
pub fn farm_config(
    vips: &[IpAddr],
    buckets: u32,
    hash_key: [u8; 16],
    nodes: u8,
    rules: Vec<Rule>,
) -> FarmConfig {
    FarmConfig {
        farm: Farm {
            name: "craft".into(),
            vips: vips.to_vec(),
            interface: Some("eth0".into()),
            buckets,
            hash_key,
            port: Farm::DEFAULT_PORT,
            announce_interval_s: Farm::DEFAULT_ANNOUNCE_INTERVAL_S,
            auth_key_file: Farm::DEFAULT_AUTH_KEY_FILE.into(),
            mac: MacMode::Unicast,
        },
        nodes: (0..nodes)
            .map(|i| Node {
                name: format!("n{i}"),
                address: [198, 18, 0, 1 + i].into(),
                weight: 1,
                interface: None,
            })
            .collect(),
        rules,
        membership: Default::default(),
        dataplane: Default::default(),
        checks: Vec::new(),
        scripts: Default::default(),
        admin: Default::default(),
    }
}

/// One table per node of `config`, over the same owners: bucket `b` owned by node `b` modulo
/// the number of nodes, so each node's buckets are [`crate::table::BucketMode::OWN`] and the others
/// [`crate::table::BucketMode::NONE`]. Panics when the bucket count is not a power of two up to 65536, which
/// validation guarantees.
pub fn round_robin_tables(config: &FarmConfig) -> Vec<FarmTable> {
    let nodes = config.nodes.len().max(1);
    let owners = (0..config.farm.buckets as usize)
        .map(|b| (b % nodes) as NodeId)
        .collect();
    let buckets = BucketTable::new(1, owners).expect("a farm's bucket count is a power of two");
    let rules = Arc::new(FarmRules::from_config(config));
    (0..nodes)
        .map(|local| {
            let modes = ModeTable::of_owner(&buckets, local as NodeId);
            FarmTable::new(Arc::clone(&rules), modes)
        })
        .collect()
}

/// A MAC address of the test hosts: locally administered, unicast.
pub const MAC_A: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x0a];
/// Another test MAC address.
pub const MAC_B: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x0b];

/// An Ethernet frame around `payload`, with 802.1Q tags (VLAN ids) in `vlans`, the outermost
/// first; with two tags the outer one is 802.1ad, as in Q-in-Q.
pub fn ethernet(vlans: &[u16], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(14 + 4 * vlans.len() + payload.len());
    frame.extend_from_slice(&MAC_B);
    frame.extend_from_slice(&MAC_A);
    for (i, vid) in vlans.iter().enumerate() {
        let tpid = if i == 0 && vlans.len() > 1 {
            ethertype::QINQ
        } else {
            ethertype::VLAN
        };
        frame.extend_from_slice(&tpid.to_be_bytes());
        frame.extend_from_slice(&(vid & 0x0fff).to_be_bytes());
    }
    frame.extend_from_slice(&ethertype.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// An ARP request from `sender` asking for `target`.
pub fn arp_request(sender: [u8; 4], target: [u8; 4]) -> Vec<u8> {
    let mut p = vec![0, 1, 0x08, 0x00, 6, 4, 0, 1];
    p.extend_from_slice(&MAC_A);
    p.extend_from_slice(&sender);
    p.extend_from_slice(&[0; 6]);
    p.extend_from_slice(&target);
    p
}

/// IPv4 fragment fields: offset in 8-byte units and the more-fragments flag.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fragment {
    /// Offset in 8-byte units.
    pub offset: u16,
    /// More fragments follow.
    pub more: bool,
}

/// An IPv4 packet (no options) carrying `payload`.
pub fn ipv4(
    src: [u8; 4],
    dst: [u8; 4],
    protocol: u8,
    fragment: Fragment,
    payload: &[u8],
) -> Vec<u8> {
    let total = (20 + payload.len()).min(usize::from(u16::MAX)) as u16;
    let flags = (u16::from(fragment.more) << 13) | (fragment.offset & 0x1fff);
    let mut p = vec![0x45, 0];
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&[0x12, 0x34]);
    p.extend_from_slice(&flags.to_be_bytes());
    p.extend_from_slice(&[64, protocol, 0, 0]);
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    let checksum = checksum(&p);
    p[10..12].copy_from_slice(&checksum.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// An IPv6 packet carrying `payload` (extension headers included) behind `next_header`.
pub fn ipv6(
    src: [u8; 16],
    dst: [u8; 16],
    next_header: u8,
    hop_limit: u8,
    payload: &[u8],
) -> Vec<u8> {
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&(payload.len().min(usize::from(u16::MAX)) as u16).to_be_bytes());
    p.extend_from_slice(&[next_header, hop_limit]);
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    p.extend_from_slice(payload);
    p
}

/// An IPv6 fragment header in front of `rest`.
pub fn ipv6_fragment(next_header: u8, fragment: Fragment, rest: &[u8]) -> Vec<u8> {
    let field = (fragment.offset << 3) | u16::from(fragment.more);
    let mut h = vec![next_header, 0];
    h.extend_from_slice(&field.to_be_bytes());
    h.extend_from_slice(&[0, 0, 0x56, 0x78]);
    h.extend_from_slice(rest);
    h
}

/// An IPv6 hop-by-hop, routing or destination-options header of `units` 8-byte units (padded
/// with a PadN option) in front of `rest`.
pub fn ipv6_options(next_header: u8, units: u8, rest: &[u8]) -> Vec<u8> {
    let len = (usize::from(units) + 1) * 8;
    let mut h = vec![next_header, units, 1, (len - 4) as u8];
    h.resize(len, 0);
    h.extend_from_slice(rest);
    h
}

/// A TCP segment with `flags` (e.g. 0x02 for SYN) and `data`.
pub fn tcp(src_port: u16, dst_port: u16, flags: u8, data: &[u8]) -> Vec<u8> {
    let mut s = Vec::with_capacity(20 + data.len());
    s.extend_from_slice(&src_port.to_be_bytes());
    s.extend_from_slice(&dst_port.to_be_bytes());
    s.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    s.extend_from_slice(data);
    s
}

/// A UDP datagram carrying `data`.
pub fn udp(src_port: u16, dst_port: u16, data: &[u8]) -> Vec<u8> {
    let len = (8 + data.len()).min(usize::from(u16::MAX)) as u16;
    let mut d = Vec::with_capacity(8 + data.len());
    d.extend_from_slice(&src_port.to_be_bytes());
    d.extend_from_slice(&dst_port.to_be_bytes());
    d.extend_from_slice(&len.to_be_bytes());
    d.extend_from_slice(&[0, 0]);
    d.extend_from_slice(data);
    d
}

/// An ICMP or ICMPv6 message: type, code, a zero checksum, 4 bytes of `rest_of_header` (echo
/// id and sequence, or the MTU of a "too big") and `body` (for errors, the quoted packet).
pub fn icmp(msg_type: u8, code: u8, rest_of_header: [u8; 4], body: &[u8]) -> Vec<u8> {
    let mut m = vec![msg_type, code, 0, 0];
    m.extend_from_slice(&rest_of_header);
    m.extend_from_slice(body);
    m
}

/// An ICMPv6 neighbour solicitation for `target`.
pub fn neighbor_solicitation(target: [u8; 16]) -> Vec<u8> {
    let mut m = icmp(135, 0, [0; 4], &target);
    m.extend_from_slice(&[1, 1]);
    m.extend_from_slice(&MAC_A);
    m
}

/// The solicited-node multicast address of `addr` (ff02::1:ffxx:xxxx).
pub fn solicited_node(addr: [u8; 16]) -> [u8; 16] {
    let mut out = [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xff, 0, 0, 0];
    out[13..].copy_from_slice(&addr[13..]);
    out
}

/// The IP protocol number of ICMP for an address family: ICMP for IPv4, ICMPv6 for IPv6.
pub fn icmp_protocol(v6: bool) -> u8 {
    if v6 {
        ip_proto::ICMPV6
    } else {
        ip_proto::ICMP
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ipv4::Ipv4Packet;

    #[test]
    fn ipv4_header_checksum_verifies() {
        let p = ipv4(
            [198, 18, 1, 1],
            [198, 18, 0, 100],
            17,
            Fragment::default(),
            &udp(1, 2, b"x"),
        );
        assert_eq!(checksum(&p[..20]), 0);
        let v = Ipv4Packet::new_checked(&p).unwrap();
        assert_eq!(v.payload().unwrap().len(), 9);
    }
}
