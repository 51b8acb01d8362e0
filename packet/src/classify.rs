//! The verdict on one frame: leave it to the kernel, accept it, drop it, or answer it.
//!
//! The rules, in the order they are applied (the eBPF program of the in-kernel mode follows the
//! same text; a differential test holds the two together):
//!
//! 1. Ethernet, looking through up to two VLAN tags (802.1Q, 802.1ad). A frame too short for
//!    its headers, with more tags, or of another EtherType is `Pass`.
//! 2. ARP: a well-formed Ethernet/IPv4 request whose target is a VIP, and whose sender address
//!    is not the target (a gratuitous announcement, which is not answered), is
//!    `AnswerNeighbor`. Every other ARP packet is `Pass`.
//! 3. IPv4: a packet too short for the fixed header or not of version 4 is `Pass` (the kernel
//!    drops it); one whose destination is not a VIP is `Pass`. IPv6: the same with the 40-byte
//!    header; a destination that is neither a VIP nor a solicited-node multicast address is
//!    `Pass`.
//! 4. ICMPv6 neighbour discovery and multicast listener messages (types 130-137, 143, not in a
//!    fragment) to a VIP or a solicited-node address: a neighbour solicitation with hop limit
//!    255, code 0 and a VIP as target is `AnswerNeighbor`; all others are `Pass` (each node's
//!    kernel needs them). Any other packet to a solicited-node address is `Pass`.
//! 5. From here the packet is for a VIP, and a packet whose headers are truncated or
//!    impossible is `Drop(Malformed)`. The flow is identified:
//!    - a fragment (IPv4 MF or offset; an IPv6 fragment header with M or offset) by client
//!      address alone, balanced when any rule covers its protocol;
//!    - TCP and UDP by the rule of their destination port: client address (`client-ip`) or
//!      client address and port (`client-ip-port`);
//!    - ICMP errors (v4: destination unreachable, time exceeded, parameter problem; v6:
//!      destination unreachable, packet too big, time exceeded, parameter problem) by the
//!      packet they quote, which the farm sent: its source must be a VIP, its destination is
//!      the client, and its source port is the VIP port of the rule. So path-MTU discovery
//!      reaches the node that owns the connection;
//!    - other ICMP messages (echo) by the client address, balanced when an `icmp` rule exists
//!      (an `icmp` rule covers IP protocols 1 and 58, whichever the family);
//!    - any other protocol is `Drop(NoRule)`, as is a packet no rule covers.
//! 6. The bucket is the flow hash modulo the bucket count, and its [`BucketMode`] says what this node
//!    accepts; everything refused is `Drop(NotOwner)`. A TCP segment (one identified by its
//!    TCP header, not a fragment, nor a segment an ICMP error quotes) is keyed in the flow
//!    table by family, client address, VIP address, client port and VIP port:
//!    - SYN without ACK: `Accept` when the mode has `SYN`; when the mode also has `KNOWN`
//!      (`GAIN`: another node drains the bucket) the connection is recorded (seen now),
//!      replacing any earlier record. When the mode has `KNOWN` but not `SYN`, any record of
//!      the connection is forgotten (a client reusing its ports opens a new connection, which
//!      the node taking SYNs answers).
//!    - any other segment: `Accept` when the mode has `TCP_ANY`; otherwise, when the mode has
//!      `KNOWN`, `Accept` if the connection is recorded (it is then seen now), or if the node's
//!      kernel serves it ([`crate::kernel`]): it has a socket for the 4-tuple, in any state but
//!      LISTEN and TIME_WAIT, or, in a mode without `SYN`, the segment completes a SYN-cookie
//!      handshake of the node's listener.
//!    - every other VIP packet (UDP, ICMP and ICMP errors, fragments): `Accept` when the mode
//!      has `OTHER`.
//!
//!    In a bucket owned outright (`OWN`) or not at all (`NONE`), no packet touches the flow
//!    table or asks the kernel. Modes let a bucket move between live nodes without breaking
//!    connections: the old owner keeps the ones its kernel serves (`DRAIN`) while the new one
//!    takes the new ones (`GAIN`). On separate machines the old owner never takes the cookie of
//!    a handshake the new owner answered, since only the new owner's kernel knows its secret.
//!
//! The most common frame, untagged IPv4 TCP or UDP without options or fragmentation, is decided
//! by a straight-line fast path first (`fast_v4`); everything else, and anything malformed,
//! goes through the general parser. A property test holds the two to the same verdicts.

use std::net::IpAddr;
use std::sync::Arc;

use herd_config::Protocol;

use crate::flows::{Connection, Flows};
use crate::kernel::{Kernel, Served};
use crate::rules::{DropReason, FarmRules, Flow, FlowKey};
use crate::table::{BucketMode, ModeTable};
use crate::wire::arp::{self, ArpPacket};
use crate::wire::ethernet::{ethertype, EthernetFrame};
use crate::wire::icmp::IcmpPacket;
use crate::wire::ipv4::Ipv4Packet;
use crate::wire::ipv6::{self, Ipv6Packet, UpperLayer};
use crate::wire::tcp::{self, TcpPacket};
use crate::wire::udp::UdpPacket;
use crate::wire::{ip_proto, transport_ports, Error};

/// What to do with a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Not for a VIP: the kernel gets it untouched.
    Pass,
    /// For a VIP, in a bucket this node owns: the kernel gets it.
    Accept,
    /// For a VIP, and not this node's to take.
    Drop(DropReason),
    /// An ARP request or IPv6 neighbour solicitation asking for a VIP: the dataplane answers it
    /// with the farm's virtual MAC.
    AnswerNeighbor,
}

/// Everything `classify` reads besides the flow table: the farm's rules and what this node
/// accepts in each bucket.
#[derive(Clone, Debug)]
pub struct FarmTable {
    rules: Arc<FarmRules>,
    modes: ModeTable,
}

impl FarmTable {
    /// A table accepting, in each bucket, what `modes` says.
    pub fn new(rules: Arc<FarmRules>, modes: ModeTable) -> Self {
        Self { rules, modes }
    }

    /// What this node accepts in each bucket.
    pub fn modes(&self) -> &ModeTable {
        &self.modes
    }

    /// The verdict on a VIP packet with flow hash `hash`, or the reason it has none, by step 6
    /// of the rules; `segment` gives the packet's TCP segment, if it is one.
    #[inline(always)]
    fn decide(
        &self,
        hash: Result<u64, DropReason>,
        segment: impl FnOnce() -> Option<Segment>,
        known: &mut Known<'_, impl Kernel>,
    ) -> Verdict {
        let hash = match hash {
            Ok(hash) => hash,
            Err(reason) => return Verdict::Drop(reason),
        };
        let mode = self.modes.mode(self.modes.bucket_of(hash));
        let accepted = match segment() {
            Some(segment) => segment.accepted(mode, known),
            None => mode.contains(BucketMode::OTHER),
        };
        if accepted {
            Verdict::Accept
        } else {
            Verdict::Drop(DropReason::NotOwner)
        }
    }
}

/// What step 6 knows of TCP connections besides the modes: the flow table, the node's kernel,
/// and the time.
struct Known<'a, K> {
    flows: &'a mut Flows,
    kernel: &'a K,
    now: u64,
}

/// A TCP segment to a VIP, as step 6 reads it.
#[derive(Clone, Copy)]
struct Segment {
    flags: u8,
    connection: Connection,
}

impl Segment {
    /// Whether a bucket in `mode` takes the segment; updates the flow table as step 6 says.
    #[inline(always)]
    fn accepted(&self, mode: BucketMode, known: &mut Known<'_, impl Kernel>) -> bool {
        if self.flags & (tcp::SYN | tcp::ACK) == tcp::SYN {
            let taken = mode.contains(BucketMode::SYN);
            if mode.contains(BucketMode::KNOWN) {
                recorded(known.flows, self.connection, taken, known.now);
            }
            return taken;
        }
        if mode.contains(BucketMode::TCP_ANY) {
            return true;
        }
        mode.contains(BucketMode::KNOWN) && self.served(mode, known)
    }

    /// Whether the node serves the segment's connection, in a bucket whose mode has `KNOWN`:
    /// recorded in the flow table (and seen now), or served by the kernel.
    #[inline(never)]
    fn served(&self, mode: BucketMode, known: &mut Known<'_, impl Kernel>) -> bool {
        if known.flows.touch(&self.connection, known.now) {
            return true;
        }
        let served = known.kernel.served(&self.connection);
        // Only a node that answers no SYN of the bucket can tell that a cookie came before
        // the bucket moved.
        served.contains(Served::SOCKET)
            || (!mode.contains(BucketMode::SYN) && served.contains(Served::COOKIE))
    }
}

/// Records a connection whose SYN a bucket with `KNOWN` has `taken` (`GAIN`), or forgets it
/// when the bucket took none: the node that did answers the connection's later segments. Out
/// of line: the SYNs of a bucket owned outright, or not at all, never reach it.
#[inline(never)]
fn recorded(flows: &mut Flows, connection: Connection, taken: bool, now: u64) {
    if taken {
        flows.insert(connection, now);
    } else {
        flows.remove(&connection);
    }
}

/// The verdict on one Ethernet frame, updating `flows` (the handshakes this node answered in
/// buckets another node drains) at time `now_ns` (`CLOCK_MONOTONIC_COARSE`, see
/// [`crate::clock::coarse_monotonic_ns`]), and asking `kernel` whether it serves a connection
/// where step 6 needs to know. Never panics, whatever the bytes; never allocates.
#[inline]
pub fn classify(
    frame: &[u8],
    table: &FarmTable,
    flows: &mut Flows,
    kernel: &impl Kernel,
    now_ns: u64,
) -> Verdict {
    let mut known = Known {
        flows,
        kernel,
        now: now_ns,
    };
    if let Some(verdict) = fast_v4(frame, table, &mut known) {
        return verdict;
    }
    classify_general(frame, table, &mut known)
}

/// The bytes [`fast_v4`] reads: Ethernet, an IPv4 header without options, and the UDP header
/// or the first 8 bytes of a TCP header (the rest of which it reads once it knows it is there).
const FAST_LEN: usize = 14 + 20 + 8;

/// The most common frame in straight-line code: untagged IPv4 without options or
/// fragmentation, carrying TCP or UDP. `None` for anything else, and for anything malformed,
/// which [`classify_general`] then decides; a test holds the two to the same verdicts.
#[inline(always)]
fn fast_v4(frame: &[u8], table: &FarmTable, known: &mut Known<'_, impl Kernel>) -> Option<Verdict> {
    let head: &[u8; FAST_LEN] = frame.first_chunk()?;
    // EtherType IPv4, version 4 with a 20-byte header, no MF flag and a zero fragment offset.
    if head[12..14] != [0x08, 0x00] || head[14] != 0x45 || head[20] & 0x3f != 0 || head[21] != 0 {
        return None;
    }
    let dst = [head[30], head[31], head[32], head[33]];
    if !table.rules.is_vip_v4(dst) {
        return Some(Verdict::Pass);
    }
    let total_len = usize::from(u16::from_be_bytes([head[16], head[17]]));
    let protocol = match head[23] {
        ip_proto::TCP if total_len >= 40 && frame.len() >= 14 + 40 => {
            let data_offset = usize::from(frame[14 + 20 + 12] >> 4) * 4;
            if data_offset < 20 || data_offset > total_len - 20 {
                return None;
            }
            Protocol::Tcp
        }
        ip_proto::UDP if total_len >= 28 => Protocol::Udp,
        _ => return None,
    };
    if 14 + total_len > frame.len() {
        return None;
    }
    let src = [head[26], head[27], head[28], head[29]];
    let (vip_port, client_port) = (
        u16::from_be_bytes([head[36], head[37]]),
        u16::from_be_bytes([head[34], head[35]]),
    );
    let flow = Flow {
        protocol,
        client: IpAddr::from(src),
        key: FlowKey::Ports {
            vip: vip_port,
            client: client_port,
        },
    };
    let segment = || {
        (protocol == Protocol::Tcp).then(|| Segment {
            flags: frame[14 + 20 + tcp::FLAGS_OFFSET],
            connection: Connection::v4(src, dst, client_port, vip_port),
        })
    };
    Some(table.decide(table.rules.flow_hash(&flow), segment, known))
}

/// The verdict on any frame, by the rules at the top of this module.
fn classify_general(
    frame: &[u8],
    table: &FarmTable,
    known: &mut Known<'_, impl Kernel>,
) -> Verdict {
    let Ok(network) = EthernetFrame::new_checked(frame).and_then(|eth| eth.network()) else {
        return Verdict::Pass;
    };
    match network.ethertype {
        ethertype::IPV4 => classify_v4(network.payload, table, known),
        ethertype::IPV6 => classify_v6(network.payload, table, known),
        ethertype::ARP => classify_arp(network.payload, &table.rules),
        _ => Verdict::Pass,
    }
}

fn classify_arp(bytes: &[u8], rules: &FarmRules) -> Verdict {
    match ArpPacket::new_checked(bytes) {
        Ok(arp)
            if arp.operation() == arp::OP_REQUEST
                && arp.sender_ip() != arp.target_ip()
                && rules.is_vip_v4(arp.target_ip()) =>
        {
            Verdict::AnswerNeighbor
        }
        _ => Verdict::Pass,
    }
}

#[inline(always)]
fn classify_v4(bytes: &[u8], table: &FarmTable, known: &mut Known<'_, impl Kernel>) -> Verdict {
    match Ipv4Packet::new_checked(bytes) {
        Ok(ip) if table.rules.is_vip_v4(ip.dst()) => {
            let segment = || v4_segment(&ip);
            table.decide(v4_hash(&ip, &table.rules), segment, known)
        }
        _ => Verdict::Pass,
    }
}

/// The TCP segment an IPv4 packet carries (not a fragment of one), if any.
fn v4_segment(ip: &Ipv4Packet<'_>) -> Option<Segment> {
    if ip.is_fragment() || ip.protocol() != ip_proto::TCP {
        return None;
    }
    let segment = TcpPacket::new_checked(ip.payload().ok()?).ok()?;
    Some(Segment {
        flags: segment.flags(),
        connection: Connection::v4(ip.src(), ip.dst(), segment.src_port(), segment.dst_port()),
    })
}

/// The TCP segment above an IPv6 header (not in a fragment), if any.
fn v6_segment(ip: &Ipv6Packet<'_>, upper: &UpperLayer<'_>) -> Option<Segment> {
    if upper.is_fragment || upper.protocol != ip_proto::TCP {
        return None;
    }
    let segment = TcpPacket::new_checked(upper.payload).ok()?;
    Some(Segment {
        flags: segment.flags(),
        connection: Connection::v6(ip.src(), ip.dst(), segment.src_port(), segment.dst_port()),
    })
}

fn malformed(_: Error) -> DropReason {
    DropReason::Malformed
}

/// The protocol a rule would name for an IP protocol number, or `NoRule`.
fn rule_protocol(number: u8) -> Result<Protocol, DropReason> {
    match number {
        ip_proto::TCP => Ok(Protocol::Tcp),
        ip_proto::UDP => Ok(Protocol::Udp),
        ip_proto::ICMP | ip_proto::ICMPV6 => Ok(Protocol::Icmp),
        _ => Err(DropReason::NoRule),
    }
}

// The functions below hash the flow where they build it, rather than returning it: a `Flow`
// that crossed a function boundary inside a `Result` was written to the stack byte by byte and
// read back whole, a store-forwarding stall that cost more than the parsing itself.

fn address_only(rules: &FarmRules, number: u8, client: IpAddr) -> Result<u64, DropReason> {
    rules.flow_hash(&Flow {
        protocol: rule_protocol(number)?,
        client,
        key: FlowKey::AddressOnly,
    })
}

/// The flow hash of a TCP or UDP packet arriving from `client`.
#[inline(always)]
fn transport_hash(
    rules: &FarmRules,
    number: u8,
    payload: &[u8],
    client: IpAddr,
) -> Result<u64, DropReason> {
    let (protocol, (src, dst)) = match number {
        ip_proto::TCP => {
            let tcp = TcpPacket::new_checked(payload).map_err(malformed)?;
            (Protocol::Tcp, (tcp.src_port(), tcp.dst_port()))
        }
        _ => {
            let udp = UdpPacket::new_checked(payload).map_err(malformed)?;
            (Protocol::Udp, (udp.src_port(), udp.dst_port()))
        }
    };
    rules.flow_hash(&Flow {
        protocol,
        client,
        key: FlowKey::Ports {
            vip: dst,
            client: src,
        },
    })
}

/// The flow hash of the packet an ICMP error quotes: one the farm sent, from a VIP to the
/// client.
fn quoted_hash(
    rules: &FarmRules,
    number: u8,
    l4: &[u8],
    is_fragment: bool,
    client: IpAddr,
) -> Result<u64, DropReason> {
    if is_fragment || !matches!(number, ip_proto::TCP | ip_proto::UDP) {
        return address_only(rules, number, client);
    }
    // Only the first 8 bytes of the quoted transport header are guaranteed: read the ports.
    let (vip, client_port) = transport_ports(l4).map_err(malformed)?;
    rules.flow_hash(&Flow {
        protocol: rule_protocol(number)?,
        client,
        key: FlowKey::Ports {
            vip,
            client: client_port,
        },
    })
}

fn v4_hash(ip: &Ipv4Packet<'_>, rules: &FarmRules) -> Result<u64, DropReason> {
    let payload = ip.payload().map_err(malformed)?;
    let client = IpAddr::from(ip.src());
    if ip.is_fragment() {
        return address_only(rules, ip.protocol(), client);
    }
    match ip.protocol() {
        number @ (ip_proto::TCP | ip_proto::UDP) => transport_hash(rules, number, payload, client),
        ip_proto::ICMP => {
            let icmp = IcmpPacket::new_checked(payload).map_err(malformed)?;
            if !icmp.is_v4_error() {
                return address_only(rules, ip_proto::ICMP, client);
            }
            let quoted = Ipv4Packet::new_checked(icmp.quoted()).map_err(malformed)?;
            if !rules.is_vip_v4(quoted.src()) {
                return Err(DropReason::Malformed);
            }
            let l4 = quoted.quoted_payload().map_err(malformed)?;
            quoted_hash(
                rules,
                quoted.protocol(),
                l4,
                quoted.is_fragment(),
                IpAddr::from(quoted.dst()),
            )
        }
        _ => Err(DropReason::NoRule),
    }
}

/// Whether an IPv6 address is a solicited-node multicast address (ff02::1:ffxx:xxxx), where
/// neighbour solicitations for a VIP are sent.
fn is_solicited_node(addr: [u8; 16]) -> bool {
    addr[..13] == [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xff]
}

fn classify_v6(bytes: &[u8], table: &FarmTable, known: &mut Known<'_, impl Kernel>) -> Verdict {
    let Ok(ip) = Ipv6Packet::new_checked(bytes) else {
        return Verdict::Pass;
    };
    let for_vip = table.rules.is_vip_v6(ip.dst());
    if !for_vip && !is_solicited_node(ip.dst()) {
        return Verdict::Pass;
    }
    let upper = ip.upper_layer();
    if let Ok(upper) = upper {
        if let Some(verdict) = link_control(&ip, &upper, &table.rules) {
            return verdict;
        }
    }
    if !for_vip {
        return Verdict::Pass;
    }
    let upper = match upper {
        Ok(upper) => upper,
        Err(error) => return Verdict::Drop(malformed(error)),
    };
    let segment = || v6_segment(&ip, &upper);
    table.decide(v6_hash(&ip, &upper, &table.rules), segment, known)
}

/// The verdict on ICMPv6 neighbour-discovery and listener messages, or `None` for any other.
fn link_control(ip: &Ipv6Packet<'_>, upper: &UpperLayer<'_>, rules: &FarmRules) -> Option<Verdict> {
    if upper.protocol != ip_proto::ICMPV6 || upper.is_fragment {
        return None;
    }
    let icmp = IcmpPacket::new_checked(upper.payload).ok()?;
    if !icmp.is_v6_link_control() {
        return None;
    }
    // RFC 4861 makes hosts ignore a solicitation whose hop limit is not 255 (it came from off
    // the link); so do we.
    let asks_for_vip = ip.hop_limit() == 255
        && icmp
            .solicited_target()
            .is_some_and(|target| rules.is_vip_v6(target));
    Some(if asks_for_vip {
        Verdict::AnswerNeighbor
    } else {
        Verdict::Pass
    })
}

fn v6_hash(
    ip: &Ipv6Packet<'_>,
    upper: &UpperLayer<'_>,
    rules: &FarmRules,
) -> Result<u64, DropReason> {
    let client = IpAddr::from(ip.src());
    if upper.is_fragment {
        return address_only(rules, upper.protocol, client);
    }
    match upper.protocol {
        number @ (ip_proto::TCP | ip_proto::UDP) => {
            transport_hash(rules, number, upper.payload, client)
        }
        ip_proto::ICMPV6 => {
            let icmp = IcmpPacket::new_checked(upper.payload).map_err(malformed)?;
            if !icmp.is_v6_error() {
                return address_only(rules, ip_proto::ICMPV6, client);
            }
            let quoted = Ipv6Packet::new_checked(icmp.quoted()).map_err(malformed)?;
            if !rules.is_vip_v6(quoted.src()) {
                return Err(DropReason::Malformed);
            }
            let inner = ipv6::upper_layer(quoted.next_header(), quoted.quoted_payload())
                .map_err(malformed)?;
            quoted_hash(
                rules,
                inner.protocol,
                inner.payload,
                inner.is_fragment,
                IpAddr::from(quoted.dst()),
            )
        }
        _ => Err(DropReason::NoRule),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::craft::{self, Fragment};
    use herd_config::Affinity;
    use proptest::prelude::*;

    const VIP: [u8; 4] = [198, 18, 0, 100];
    const VIP6: [u8; 16] = [
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x64,
    ];

    /// Both nodes of a two-node farm, then a node with every mode (bucket `b` in mode
    /// `b % 16`).
    fn tables() -> Vec<FarmTable> {
        let rules = vec![
            craft::rule(Protocol::Tcp, 0, 1023, Affinity::ClientIp),
            craft::rule(Protocol::Tcp, 1024, 1100, Affinity::ClientIpPort),
            craft::rule(Protocol::Udp, 0, 1023, Affinity::ClientIpPort),
        ];
        let config = craft::farm_config(&[VIP.into(), VIP6.into()], 64, [3; 16], 2, rules);
        let mut tables = craft::round_robin_tables(&config);
        let every_mode = (0..64).map(|bucket| BucketMode(bucket % 16)).collect();
        let every_mode = ModeTable::new(1, every_mode).unwrap();
        tables.push(FarmTable::new(Arc::clone(&tables[0].rules), every_mode));
        tables
    }

    /// Well-formed frames around the fast path: IPv4 or IPv6 (to a VIP, to a solicited-node
    /// address, or elsewhere) carrying TCP, UDP or a neighbour solicitation, with VIP ports
    /// balanced on either affinity or on none, and TCP segments of any data offset with the
    /// flags of every step of a connection.
    fn frames() -> impl Strategy<Value = Vec<u8>> {
        (
            (0..3u8, 0..3u8, any::<bool>()),
            prop_oneof![
                prop::sample::select(vec![0, 1, 255, 256, 1023, 1024, 1100, 1101, 65535]),
                0..1200u16,
                any::<u16>(),
            ],
            (any::<u16>(), any::<[u8; 16]>(), 0..40usize, 0..16u8),
            prop::sample::select(vec![0x02u8, 0x12, 0x10, 0x18, 0x11, 0x14, 0x04, 0x03, 0]),
        )
            .prop_map(
                |((kind, to, v6), vip_port, (client_port, src, data, offset), flags)| {
                    let data = vec![0; data];
                    let (protocol, l4) = match kind {
                        0 => {
                            let mut segment = craft::tcp(client_port, vip_port, flags, &data);
                            segment[12] = offset << 4;
                            (ip_proto::TCP, segment)
                        }
                        1 => (ip_proto::UDP, craft::udp(client_port, vip_port, &data)),
                        _ => (craft::icmp_protocol(v6), craft::neighbor_solicitation(VIP6)),
                    };
                    if v6 {
                        let dst = [VIP6, craft::solicited_node(VIP6), src][usize::from(to)];
                        let ip = craft::ipv6(src, dst, protocol, 255, &l4);
                        craft::ethernet(&[], ethertype::IPV6, &ip)
                    } else {
                        let dst = if to == 0 { VIP } else { [198, 18, 0, 1] };
                        let src = [src[0], src[1], src[2], src[3]];
                        let ip = craft::ipv4(src, dst, protocol, Fragment::default(), &l4);
                        craft::ethernet(&[], ethertype::IPV4, &ip)
                    }
                },
            )
    }

    /// Those frames damaged: often one of the IP header's first byte, flags and fragment offset
    /// (IPv4) or next header (IPv6) set to a value the two paths must tell apart; the IP length
    /// off by a little or a lot, random bytes written anywhere and, one time in four, a cut.
    fn damaged_frames() -> impl Strategy<Value = Vec<u8>> {
        (
            frames(),
            (
                prop::option::of(prop::sample::select(vec![14usize, 20, 21])),
                prop_oneof![
                    prop::sample::select(vec![
                        0x44, 0x45, 0x46, 0x4f, 0x55, 0x60, 0x65, 0x20, 0x21, 0x40, 0x01, 0, 6, 17,
                        44, 58, 60
                    ]),
                    any::<u8>(),
                ],
            ),
            prop_oneof![Just(0), -2..=2i32, -8..0i32, -30..30i32],
            prop::collection::vec((0..80usize, any::<u8>()), 0..2),
            prop::option::weighted(0.25, any::<prop::sample::Index>()),
        )
            .prop_map(|(mut frame, (field, value), skew, flips, cut)| {
                if let Some(field) = field {
                    frame[field] = value;
                }
                // The IPv4 total length or the IPv6 payload length.
                let at = if frame[12..14] == [0x86, 0xdd] {
                    18
                } else {
                    16
                };
                let length = i32::from(u16::from_be_bytes([frame[at], frame[at + 1]]));
                let skewed = (length + skew).clamp(0, 65535) as u16;
                frame[at..at + 2].copy_from_slice(&skewed.to_be_bytes());
                for (at, value) in flips {
                    if let Some(byte) = frame.get_mut(at) {
                        *byte = value;
                    }
                }
                if let Some(cut) = cut {
                    frame.truncate(cut.index(frame.len() + 1));
                }
                frame
            })
    }

    /// The same verdict from both paths, and the same flow records after it. Each path's flow
    /// table first takes the frame's connection opening (the frame with SYN alone), through
    /// the general rules in a bucket owned outright, so that `KNOWN` lookups can succeed.
    fn same_verdicts(frame: &[u8]) -> Result<(), TestCaseError> {
        let mut syn = frame.to_vec();
        let ip_header = if syn.get(12..14) == Some(&[0x86, 0xdd]) {
            40
        } else {
            20
        };
        if let Some(flags) = syn.get_mut(14 + ip_header + tcp::FLAGS_OFFSET) {
            *flags = tcp::SYN;
        }
        for table in tables() {
            let gaining = ModeTable::new(0, vec![BucketMode::GAIN; table.modes.len()]).unwrap();
            let gaining = FarmTable::new(Arc::clone(&table.rules), gaining);
            let (mut fast, mut general) = (Flows::with_capacity(64), Flows::with_capacity(64));
            classify_general(&syn, &gaining, &mut known(&mut fast, 1));
            classify_general(&syn, &gaining, &mut known(&mut general, 1));
            prop_assert_eq!(
                classify(frame, &table, &mut fast, &SomeSockets, 2),
                classify_general(frame, &table, &mut known(&mut general, 2))
            );
            prop_assert_eq!(fast.len(), general.len());
            for (connection, seen) in fast.iter() {
                prop_assert_eq!(general.get(connection), Some(seen));
            }
        }
        Ok(())
    }

    /// A kernel serving about half the connections, by a hash of the whole connection, so that
    /// both paths must ask it about the same one.
    struct SomeSockets;

    impl Kernel for SomeSockets {
        fn served(&self, connection: &Connection) -> Served {
            let hash = std::hash::BuildHasher::hash_one(
                &std::hash::BuildHasherDefault::<std::hash::DefaultHasher>::default(),
                connection,
            );
            [Served::NOTHING, Served::SOCKET, Served::COOKIE][(hash % 3) as usize]
        }
    }

    fn known(flows: &mut Flows, now: u64) -> Known<'_, SomeSockets> {
        Known {
            flows,
            kernel: &SomeSockets,
            now,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn the_fast_path_agrees_with_the_general_rules(frame in frames()) {
            same_verdicts(&frame)?;
        }

        #[test]
        fn the_fast_path_agrees_on_damaged_frames(frame in damaged_frames()) {
            same_verdicts(&frame)?;
        }
    }

    #[test]
    fn the_fast_path_decides_the_common_case() {
        let table = &tables()[0];
        let mut flows = Flows::with_capacity(64);
        let segment = craft::tcp(1, 80, 2, &[]);
        let ip = craft::ipv4(
            [198, 19, 0, 1],
            VIP,
            ip_proto::TCP,
            Fragment::default(),
            &segment,
        );
        let frame = craft::ethernet(&[], ethertype::IPV4, &ip);
        assert!(fast_v4(&frame, table, &mut known(&mut flows, 0)).is_some());
        let tagged = craft::ethernet(&[5], ethertype::IPV4, &ip);
        assert!(
            fast_v4(&tagged, table, &mut known(&mut flows, 0)).is_none(),
            "tagged frames take the general path"
        );
    }
}
