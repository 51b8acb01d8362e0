//! The traffic: which clients send, in which address family and frame sizes, and which of
//! them the receiver's node owns; the template frames the generator starts from (UDP
//! datagrams, or the SYN flood's TCP SYNs); and the order in which it sends them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::bail;
use herd_packet::craft::{self, Fragment};
use herd_packet::wire::ethernet::ethertype;
use herd_packet::wire::{checksum, ip_proto, tcp};
use herd_testbed::address::{VIP4, VIP6};
use serde::Serialize;

use crate::farm::{PORT, SYN_PORT};

/// Ethernet, IPv4 and UDP headers.
const V4_HEADERS: usize = 14 + 20 + 8;
/// Ethernet, IPv6 and UDP headers.
const V6_HEADERS: usize = 14 + 40 + 8;
/// A SYN's TCP options: the maximum segment size (1460), as every real SYN carries.
const SYN_OPTIONS: [u8; 4] = [2, 4, 0x05, 0xb4];
/// The send time the generator stamps at the start of the payload.
const STAMP_LEN: usize = 8;
/// The smallest frame: Ethernet's minimum without the frame check sequence.
pub const MIN_SIZE: u16 = 60;
/// The largest frame: a 1500-byte MTU, the veth default.
pub const MAX_SIZE: u16 = 1514;
/// The most clients of one address family (the generator's maps hold as many).
pub const MAX_CLIENTS: usize = 65536;
/// Where the IPv4 clients come from: the upper half of the benchmarking range.
pub const V4_CLIENTS: &str = "198.19.0.0/16";
/// How many IPv4 clients there may be, [`v4_candidate`] 0 on.
const V4_CANDIDATES: u32 = 1 << 16;
/// Where the IPv6 clients come from, a unique local prefix beside the test bed's link.
pub const V6_CLIENTS: &str = "fd00:198:19:1::/64";
/// How many IPv6 clients there may be, [`v6_candidate`] 0 on.
const V6_CANDIDATES: u32 = 1 << 22;

/// Which clients a measurement sends from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Traffic {
    /// The configured mix.
    Mix,
    /// The configured mix with no client the receiver owns: every packet takes the drop path.
    DropPath,
    /// A flood of TCP SYNs from spoofed clients, every one of them in a bucket the receiver
    /// owns.
    OwnedSyns,
    /// The same flood, of which the receiver owns the configured share.
    MixedSyns,
}

impl Traffic {
    /// The traffic's name in the report.
    pub fn label(self) -> &'static str {
        match self {
            Traffic::Mix => "mix",
            Traffic::DropPath => "drop path",
            Traffic::OwnedSyns => "owned SYNs",
            Traffic::MixedSyns => "mixed SYNs",
        }
    }

    /// Whether the traffic is a SYN flood, which the receiver's stack answers.
    pub fn is_syn_flood(self) -> bool {
        matches!(self, Traffic::OwnedSyns | Traffic::MixedSyns)
    }
}

/// The mix of traffic to send.
#[derive(Clone, Debug)]
pub struct MixSpec {
    /// Distinct clients (address and port), over both families.
    pub flows: u32,
    /// The share of packets that are IPv6, 0 to 1.
    pub ipv6_share: f64,
    /// Frame sizes in bytes (Ethernet header to the end of the payload), sent in equal shares.
    pub sizes: Vec<u16>,
    /// The share of packets whose client the receiver's node owns, 0 to 1.
    pub owned_share: f64,
}

/// One client: its address and UDP port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Client {
    /// The source address.
    pub addr: IpAddr,
    /// The source port.
    pub port: u16,
}

/// The clients of one traffic, per family; the generator sends from each in turn, so every
/// client sends the same number of packets of its family.
#[derive(Clone, Debug, Default)]
pub struct Clients {
    /// IPv4 clients.
    pub v4: Vec<Client>,
    /// IPv6 clients.
    pub v6: Vec<Client>,
    /// How many of `v4` the receiver owns.
    owned_v4: usize,
    /// How many of `v6` the receiver owns.
    owned_v6: usize,
}

impl Clients {
    /// Chooses `spec.flows` clients of which a share `owned_share` is owned, per family.
    /// `keeps(addr, port)` says whether every contender keeps a client (`Some(true)`), drops
    /// it (`Some(false)`) or whether they disagree (`None`: the client is not used, so that
    /// all contenders see the same share).
    pub fn choose(
        spec: &MixSpec,
        owned_share: f64,
        keeps: impl Fn(IpAddr, u16) -> Option<bool>,
    ) -> anyhow::Result<Self> {
        let (v4_count, v6_count) = family_counts(spec.flows, spec.ipv6_share);
        let (v4, owned_v4) = pick(v4_count, owned_share, v4_candidate, V4_CANDIDATES, &keeps)?;
        let (v6, owned_v6) = pick(v6_count, owned_share, v6_candidate, V6_CANDIDATES, &keeps)?;
        Ok(Self {
            v4,
            v6,
            owned_v4,
            owned_v6,
        })
    }

    /// The share of packets the receiver owns when a share `ipv6_share` of them is IPv6: the
    /// requested share up to rounding to whole clients.
    pub fn owned_share(&self, ipv6_share: f64) -> f64 {
        let share = |owned: usize, all: usize| {
            if all == 0 {
                0.0
            } else {
                owned as f64 / all as f64
            }
        };
        (1.0 - ipv6_share) * share(self.owned_v4, self.v4.len())
            + ipv6_share * share(self.owned_v6, self.v6.len())
    }
}

/// IPv4 and IPv6 clients out of `flows`: at least one of a family that sends at all.
fn family_counts(flows: u32, ipv6_share: f64) -> (usize, usize) {
    let flows = flows as usize;
    let mut v6 = (flows as f64 * ipv6_share).round() as usize;
    if ipv6_share > 0.0 {
        v6 = v6.max(1);
    }
    if ipv6_share < 1.0 {
        v6 = v6.min(flows.saturating_sub(1));
    }
    let v4 = if ipv6_share < 1.0 { flows - v6 } else { 0 };
    (v4, v6)
}

/// The `i`th IPv4 client address, in [`V4_CLIENTS`].
pub fn v4_candidate(i: u32) -> IpAddr {
    let [_, _, high, low] = i.to_be_bytes();
    IpAddr::V4(Ipv4Addr::new(198, 19, high, low))
}

/// The `i`th IPv6 client address, in [`V6_CLIENTS`].
pub fn v6_candidate(i: u32) -> IpAddr {
    let [a, b, c, d] = i.to_be_bytes();
    IpAddr::V6(Ipv6Addr::new(
        0xfd00,
        0x198,
        0x19,
        1,
        0,
        0,
        u16::from_be_bytes([a, b]),
        u16::from_be_bytes([c, d]),
    ))
}

/// `count` clients from the candidates, `owned_share` of them kept, spread evenly through the
/// list; also how many are kept. The generator sends from the clients in list order and the
/// veth ring loses frames in patterns that repeat with the generator's batches, so owned
/// clients bunched in one part of the list would be lost more, or less, than the others.
fn pick(
    count: usize,
    owned_share: f64,
    candidate: fn(u32) -> IpAddr,
    candidates: u32,
    keeps: &impl Fn(IpAddr, u16) -> Option<bool>,
) -> anyhow::Result<(Vec<Client>, usize)> {
    if count > MAX_CLIENTS {
        bail!("{count} clients of one family, but the generator holds at most {MAX_CLIENTS}");
    }
    let owned_wanted = (count as f64 * owned_share).round() as usize;
    let wanted = [count - owned_wanted, owned_wanted];
    let mut found: [Vec<Client>; 2] = [Vec::new(), Vec::new()];
    for i in 0..candidates {
        if found[0].len() == wanted[0] && found[1].len() == wanted[1] {
            break;
        }
        let addr = candidate(i);
        // Ports spread over the unprivileged range; they do not change which node owns a
        // client under the farm's client-ip rule.
        let port = 1024 + (i % 60000) as u16;
        if let Some(kept) = keeps(addr, port) {
            let list = &mut found[usize::from(kept)];
            if list.len() < wanted[usize::from(kept)] {
                list.push(Client { addr, port });
            }
        }
    }
    let got = found[0].len() + found[1].len();
    if got < count {
        bail!(
            "found only {got} of {count} clients with an owned share of {owned_share} among \
             {candidates} candidate addresses; lower --flows"
        );
    }
    let [others, owned] = found;
    Ok((interleave(owned, others), owned_wanted))
}

/// `a` and `b` merged so that the items of `a` are evenly spaced.
fn interleave<T>(a: Vec<T>, b: Vec<T>) -> Vec<T> {
    let (from_a, total) = (a.len(), a.len() + b.len());
    let (mut a, mut b) = (a.into_iter(), b.into_iter());
    // Slot k takes from `a` when the number of `a`s due by its end goes up; over all slots
    // that happens exactly `from_a` times.
    (0..total)
        .filter_map(|k| {
            if (k + 1) * from_a / total > k * from_a / total {
                a.next()
            } else {
                b.next()
            }
        })
        .collect()
}

/// A frame the generator starts from, and the share of packets sent from it.
#[derive(Clone, Debug)]
pub struct Template {
    /// The frame: Ethernet to the receiver's MAC, IP to the VIP, UDP to [`PORT`].
    pub frame: Vec<u8>,
    /// Its share of the packets.
    pub share: f64,
}

/// One template per family that sends and per size, the sizes of a family in equal shares.
/// `clients` gives each family's first client, which the generator replaces anyway.
pub fn templates(spec: &MixSpec, clients: &Clients) -> Vec<Template> {
    let sizes = spec.sizes.len().max(1) as f64;
    let mut out = Vec::new();
    for (family, share) in [
        (clients.v4.first(), 1.0 - spec.ipv6_share),
        (clients.v6.first(), spec.ipv6_share),
    ] {
        let Some(client) = family else { continue };
        if share <= 0.0 {
            continue;
        }
        for &size in &spec.sizes {
            out.push(Template {
                frame: frame(*client, usize::from(size)),
                share: share / sizes,
            });
        }
    }
    out
}

/// A UDP frame from `client` to the VIP of its family, `size` bytes long or as short as the
/// headers and the send time allow.
pub fn frame(client: Client, size: usize) -> Vec<u8> {
    match client.addr {
        IpAddr::V4(src) => {
            let payload = vec![0; size.saturating_sub(V4_HEADERS).max(STAMP_LEN)];
            let udp = craft::udp(client.port, PORT, &payload);
            let ip = craft::ipv4(
                src.octets(),
                VIP4.octets(),
                ip_proto::UDP,
                Fragment::default(),
                &udp,
            );
            craft::ethernet(&[], ethertype::IPV4, &ip)
        }
        IpAddr::V6(src) => {
            let payload = vec![0; size.saturating_sub(V6_HEADERS).max(STAMP_LEN)];
            let mut udp = craft::udp(client.port, PORT, &payload);
            let sum = transport_checksum(&src.octets(), &VIP6.octets(), ip_proto::UDP, &udp);
            udp[6..8].copy_from_slice(&sum.to_be_bytes());
            let ip = craft::ipv6(src.octets(), VIP6.octets(), ip_proto::UDP, 64, &udp);
            craft::ethernet(&[], ethertype::IPV6, &ip)
        }
    }
}

/// The SYN flood's templates: one SYN per family that sends, with the family's share of the
/// packets. `clients` gives each family's first client, whose address the generator replaces
/// with the next client's, and whose port and sequence number with random ones.
pub fn syn_templates(ipv6_share: f64, clients: &Clients) -> Vec<Template> {
    [
        (clients.v4.first(), 1.0 - ipv6_share),
        (clients.v6.first(), ipv6_share),
    ]
    .into_iter()
    .filter(|&(_, share)| share > 0.0)
    .filter_map(|(client, share)| {
        Some(Template {
            frame: syn_frame(*client?),
            share,
        })
    })
    .collect()
}

/// A TCP SYN from `client` to [`SYN_PORT`] on the VIP of its family, with a valid checksum:
/// the receiver's kernel verifies it before its listener sees the SYN.
pub fn syn_frame(client: Client) -> Vec<u8> {
    let mut segment = craft::tcp(client.port, SYN_PORT, tcp::SYN, &SYN_OPTIONS);
    // The data offset, in 32-bit words: the options belong to the header.
    segment[12] = ((tcp::MIN_HEADER_LEN + SYN_OPTIONS.len()) as u8 / 4) << 4;
    let (src, vip): (Vec<u8>, Vec<u8>) = match client.addr {
        IpAddr::V4(src) => (src.octets().into(), VIP4.octets().into()),
        IpAddr::V6(src) => (src.octets().into(), VIP6.octets().into()),
    };
    let sum = transport_checksum(&src, &vip, ip_proto::TCP, &segment);
    segment[16..18].copy_from_slice(&sum.to_be_bytes());
    match client.addr {
        IpAddr::V4(src) => {
            let ip = craft::ipv4(
                src.octets(),
                VIP4.octets(),
                ip_proto::TCP,
                Fragment::default(),
                &segment,
            );
            craft::ethernet(&[], ethertype::IPV4, &ip)
        }
        IpAddr::V6(src) => {
            let ip = craft::ipv6(src.octets(), VIP6.octets(), ip_proto::TCP, 64, &segment);
            craft::ethernet(&[], ethertype::IPV6, &ip)
        }
    }
}

/// The checksum of a TCP or UDP `segment` from `src` to `dst` (both IPv4 or both IPv6),
/// pseudo-header included. The IPv6 layout of the pseudo-header serves IPv4 too: its words
/// sum to the same.
fn transport_checksum(src: &[u8], dst: &[u8], protocol: u8, segment: &[u8]) -> u16 {
    let mut bytes = Vec::with_capacity(40 + segment.len());
    bytes.extend_from_slice(src);
    bytes.extend_from_slice(dst);
    bytes.extend_from_slice(&(segment.len() as u32).to_be_bytes());
    bytes.extend_from_slice(&[0, 0, 0, protocol]);
    bytes.extend_from_slice(segment);
    match checksum(&bytes) {
        // 0 means "no checksum" in UDP, which IPv6 forbids; 0xffff is the same value.
        0 => 0xffff,
        sum => sum,
    }
}

/// Which template to send next, so that each gets its share of the packets: the one furthest
/// behind its share.
#[derive(Clone, Debug)]
pub struct Schedule {
    shares: Vec<f64>,
    sent: Vec<u64>,
    total: u64,
}

impl Schedule {
    /// A schedule over templates with these shares.
    pub fn new(shares: Vec<f64>) -> Self {
        let sent = vec![0; shares.len()];
        Self {
            shares,
            sent,
            total: 0,
        }
    }

    /// The template to send the next `chunk` packets from, `None` when there is none.
    pub fn next(&mut self, chunk: u64) -> Option<usize> {
        let after = (self.total + chunk) as f64;
        let behind = |i: usize| self.shares[i] * after - self.sent[i] as f64;
        let next = (0..self.shares.len()).max_by(|&a, &b| behind(a).total_cmp(&behind(b)))?;
        self.sent[next] += chunk;
        self.total += chunk;
        Some(next)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use herd_packet::wire::ipv4::Ipv4Packet;
    use herd_packet::wire::ipv6::Ipv6Packet;

    fn spec(flows: u32, ipv6_share: f64) -> MixSpec {
        MixSpec {
            flows,
            ipv6_share,
            sizes: vec![64, 512],
            owned_share: 1.0 / 3.0,
        }
    }

    /// A stand-in for the contenders: keeps a client when both hashes of its address agree.
    fn keeps(addr: IpAddr, _port: u16) -> Option<bool> {
        let key = match addr {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        };
        let herd = crate::jhash::nft_bucket(&key, 1, 3) == 0;
        let other = crate::jhash::nft_bucket(&key, 2, 3) == 0;
        (herd == other).then_some(herd)
    }

    #[test]
    fn the_owned_share_holds_per_family_and_overall() {
        let spec = spec(3000, 0.25);
        let clients = Clients::choose(&spec, spec.owned_share, keeps).unwrap();
        assert_eq!(clients.v4.len() + clients.v6.len(), 3000);
        assert_eq!(clients.v6.len(), 750);
        let kept = |list: &[Client]| {
            list.iter()
                .filter(|c| keeps(c.addr, c.port) == Some(true))
                .count()
        };
        assert_eq!(kept(&clients.v4), 750);
        assert_eq!(kept(&clients.v6), 250);
        assert!((clients.owned_share(0.25) - 1.0 / 3.0).abs() < 1e-9);
        assert!(clients.v4.iter().all(|c| c.addr.is_ipv4()));
        assert!(clients.v6.iter().all(|c| c.addr.is_ipv6()));
    }

    #[test]
    fn the_drop_path_owns_nothing_and_all_owned_owns_everything() {
        let spec = spec(200, 0.5);
        let none = Clients::choose(&spec, 0.0, keeps).unwrap();
        assert_eq!(none.owned_share(0.5), 0.0);
        let all = Clients::choose(&spec, 1.0, keeps).unwrap();
        assert_eq!(all.owned_share(0.5), 1.0);
    }

    #[test]
    fn owned_clients_are_spread_through_the_list() {
        assert_eq!(interleave(vec![1, 1], vec![0; 4]), [0, 0, 1, 0, 0, 1]);
        assert_eq!(interleave(Vec::<u8>::new(), vec![0; 2]), [0, 0]);
        assert_eq!(interleave(vec![1; 3], Vec::new()), [1, 1, 1]);
        let spec = spec(900, 0.0);
        let clients = Clients::choose(&spec, 1.0 / 3.0, keeps).unwrap();
        for third in clients.v4.chunks(300) {
            let kept = third
                .iter()
                .filter(|c| keeps(c.addr, c.port) == Some(true))
                .count();
            assert_eq!(kept, 100);
        }
    }

    #[test]
    fn too_many_flows_is_an_error_not_a_panic() {
        let spec = spec(65536, 0.0);
        assert!(Clients::choose(&spec, 1.0, keeps).is_err());
    }

    #[test]
    fn a_family_with_a_share_gets_at_least_one_client() {
        assert_eq!(family_counts(10, 0.01), (9, 1));
        assert_eq!(family_counts(10, 0.99), (1, 9));
        assert_eq!(family_counts(10, 0.0), (10, 0));
        assert_eq!(family_counts(10, 1.0), (0, 10));
    }

    #[test]
    fn templates_have_the_asked_sizes_and_shares() {
        let spec = spec(100, 0.25);
        let clients = Clients::choose(&spec, spec.owned_share, keeps).unwrap();
        let templates = templates(&spec, &clients);
        let sizes: Vec<usize> = templates.iter().map(|t| t.frame.len()).collect();
        // IPv6 frames are at least 70 bytes: headers and the send time.
        assert_eq!(sizes, [64, 512, 70, 512]);
        let shares: Vec<f64> = templates.iter().map(|t| t.share).collect();
        assert_eq!(shares, [0.375, 0.375, 0.125, 0.125]);
    }

    #[test]
    fn ipv6_frames_carry_a_valid_udp_checksum() {
        let client = Client {
            addr: v6_candidate(7),
            port: 4242,
        };
        let frame = frame(client, 100);
        let ip = Ipv6Packet::new_checked(&frame[14..]).unwrap();
        let udp = &frame[14 + 40..];
        assert_eq!(udp.len(), ip.payload_len());
        let mut bytes = frame[14 + 8..14 + 40].to_vec();
        bytes.extend_from_slice(&(udp.len() as u32).to_be_bytes());
        bytes.extend_from_slice(&[0, 0, 0, ip_proto::UDP]);
        bytes.extend_from_slice(udp);
        assert_eq!(checksum(&bytes), 0);
    }

    /// The client, destination and flags of a SYN frame, once its checksums are checked.
    pub(crate) fn syn_of(frame: &[u8]) -> (Client, IpAddr, u16, u8) {
        let (src, dst, segment): (IpAddr, IpAddr, &[u8]) = match frame[12..14] {
            [0x08, 0x00] => {
                let ip = Ipv4Packet::new_checked(&frame[14..]).unwrap();
                assert_eq!(ip.protocol(), ip_proto::TCP);
                assert_eq!(checksum(&frame[14..34]), 0, "IPv4 header checksum");
                (ip.src().into(), ip.dst().into(), &frame[34..])
            }
            [0x86, 0xdd] => {
                let ip = Ipv6Packet::new_checked(&frame[14..]).unwrap();
                assert_eq!(frame[14 + 6], ip_proto::TCP);
                assert_eq!(ip.payload_len(), frame.len() - 54);
                (ip.src().into(), ip.dst().into(), &frame[54..])
            }
            _ => panic!("neither IPv4 nor IPv6"),
        };
        let octets = |addr: IpAddr| match addr {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        };
        let mut pseudo = octets(src);
        pseudo.extend(octets(dst));
        pseudo.extend((segment.len() as u32).to_be_bytes());
        pseudo.extend([0, 0, 0, ip_proto::TCP]);
        pseudo.extend_from_slice(segment);
        assert_eq!(checksum(&pseudo), 0, "TCP checksum");
        let view = herd_packet::wire::tcp::TcpPacket::new_checked(segment).unwrap();
        assert_eq!(
            usize::from(segment[12] >> 4) * 4,
            segment.len(),
            "options in the header"
        );
        let client = Client {
            addr: src,
            port: view.src_port(),
        };
        (client, dst, view.dst_port(), view.flags())
    }

    #[test]
    fn syn_templates_are_syns_to_the_vip_from_the_first_clients() {
        let spec = spec(100, 0.25);
        let clients = Clients::choose(&spec, 1.0, keeps).unwrap();
        let templates = syn_templates(0.25, &clients);
        let sent: Vec<(Client, IpAddr, u16, u8)> =
            templates.iter().map(|t| syn_of(&t.frame)).collect();
        assert_eq!(
            sent,
            [
                (clients.v4[0], IpAddr::V4(VIP4), SYN_PORT, tcp::SYN),
                (clients.v6[0], IpAddr::V6(VIP6), SYN_PORT, tcp::SYN),
            ]
        );
        let shares: Vec<f64> = templates.iter().map(|t| t.share).collect();
        assert_eq!(shares, [0.75, 0.25]);
        assert_eq!(syn_templates(0.0, &clients).len(), 1);
        assert!(syn_templates(0.5, &Clients::default()).is_empty());
    }

    #[test]
    fn syn_frames_from_any_client_check_out() {
        for i in [0, 1, 255, 60000] {
            for addr in [v4_candidate(i), v6_candidate(i)] {
                let client = Client {
                    addr,
                    port: 1024 + i as u16,
                };
                let (from, _, port, flags) = syn_of(&syn_frame(client));
                assert_eq!((from, port, flags), (client, SYN_PORT, tcp::SYN));
            }
        }
    }

    #[test]
    fn the_schedule_follows_the_shares() {
        let mut schedule = Schedule::new(vec![0.5, 0.25, 0.125, 0.125]);
        let mut counts = [0u32; 4];
        for _ in 0..800 {
            counts[schedule.next(10).unwrap()] += 1;
        }
        assert_eq!(counts, [400, 200, 100, 100]);
        assert_eq!(Schedule::new(Vec::new()).next(1), None);
    }
}
