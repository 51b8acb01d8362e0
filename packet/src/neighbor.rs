//! VIP address resolution: the virtual MAC the farm answers ARP requests and neighbour
//! solicitations for a VIP with, the multicast group behind it in the multicast mode, the
//! announcement a node sends when it starts, and the probe that finds another host already
//! using a VIP.
//!
//! The virtual MAC is never the source of a frame (answers carry it only inside the ARP or NDP
//! payload, and leave from the interface's own MAC). In the unicast mode no switch learns where
//! it is, so every switch floods the VIP's traffic to every node, as SafeKit's
//! `vmac_invisible` does. In the multicast mode it is the MAC of an IP multicast group every
//! node joins, as NLB's IGMP multicast mode does: a snooping switch forwards it to the ports
//! that joined.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use herd_config::MacMode;

use crate::wire::arp::ArpPacket;
use crate::wire::ethernet::{ethertype, EthernetFrame};
use crate::wire::ip_proto;
use crate::wire::ipv6::Ipv6Packet;
use crate::wire::transport_checksum;

/// The all-nodes multicast address, ff02::1.
const ALL_NODES: [u8; 16] = [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

/// The virtual MAC of a VIP in `mode`. Unicast: a locally administered unicast address, `02:68`
/// then the IPv4 address, or `06:68` then the last 4 bytes of the IPv6 address. Multicast: the
/// MAC of the VIP's [`multicast_group`], `01:00:5e:7f` then the last 2 bytes of the IPv4
/// address, or `33:33:ff` then the last 3 bytes of the IPv6 address. The in-kernel program
/// computes the same (`virtual_mac` in `bpf/herd.bpf.c`).
pub fn virtual_mac(vip: IpAddr, mode: MacMode) -> [u8; 6] {
    match (mode, vip) {
        (MacMode::Unicast, IpAddr::V4(addr)) => {
            let [a, b, c, d] = addr.octets();
            [0x02, 0x68, a, b, c, d]
        }
        (MacMode::Unicast, IpAddr::V6(addr)) => {
            let o = addr.octets();
            [0x06, 0x68, o[12], o[13], o[14], o[15]]
        }
        (MacMode::Multicast, vip) => group_mac(multicast_group(vip)),
    }
}

/// The IP multicast group whose MAC is a VIP's virtual MAC in the multicast mode, which every
/// node joins on its interface. For an IPv4 VIP `a.b.c.d`, `239.255.c.d`: organisation-local
/// scope (RFC 2365), so that routers keep it on the link, and the group NLB's IGMP mode uses.
/// For an IPv6 VIP, its solicited-node group `ff02::1:ffXX:XXXX` (RFC 4291), which the
/// kernel joins anyway for an address on the interface and whose solicitations for the VIP
/// must reach every node already.
pub fn multicast_group(vip: IpAddr) -> IpAddr {
    match vip {
        IpAddr::V4(addr) => {
            let [_, _, c, d] = addr.octets();
            Ipv4Addr::new(239, 255, c, d).into()
        }
        IpAddr::V6(addr) => {
            let o = addr.octets();
            let low = u32::from_be_bytes([0xff, o[13], o[14], o[15]]);
            Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, (low >> 16) as u16, low as u16).into()
        }
    }
}

/// The MAC an IP multicast group is sent to: `01:00:5e` and the group's low 23 bits (RFC
/// 1112), or `33:33` and its low 32 bits (RFC 2464).
fn group_mac(group: IpAddr) -> [u8; 6] {
    match group {
        IpAddr::V4(group) => {
            let [_, b, c, d] = group.octets();
            [0x01, 0x00, 0x5e, b & 0x7f, c, d]
        }
        IpAddr::V6(group) => {
            let o = group.octets();
            [0x33, 0x33, o[12], o[13], o[14], o[15]]
        }
    }
}

/// The frame a node sends when it starts, so that the hosts of the link map `vip` to its
/// virtual MAC in `mode` at once: a gratuitous ARP request for an IPv4 VIP, an unsolicited
/// neighbour advertisement (override set) to all nodes for an IPv6 VIP. It leaves from
/// `if_mac`, the interface's own MAC, like every answer.
pub fn announcement(if_mac: [u8; 6], vip: IpAddr, mode: MacMode) -> Vec<u8> {
    let vmac = virtual_mac(vip, mode);
    let mut frame = Vec::with_capacity(86);
    match vip {
        IpAddr::V4(addr) => arp_request(&mut frame, if_mac, (vmac, addr.octets()), addr.octets()),
        IpAddr::V6(addr) => {
            let mut message = vec![136, 0, 0, 0, 0x20, 0, 0, 0]; // override
            message.extend_from_slice(&addr.octets());
            message.extend_from_slice(&[2, 1]); // target link-layer address option
            message.extend_from_slice(&vmac);
            let all_nodes_mac = [0x33, 0x33, 0, 0, 0, 1];
            icmpv6_frame(
                &mut frame,
                (if_mac, all_nodes_mac),
                (addr.octets(), ALL_NODES),
                message,
            );
        }
    }
    frame
}

/// A probe for `vip` that only another host using it answers, sent from `if_mac`: an ARP
/// probe (RFC 5227: sender address 0.0.0.0) for an IPv4 VIP, which the farm answers with the
/// virtual MAC and another host with its own; a duplicate address detection solicitation (from
/// ::) for an IPv6 VIP, which the farm's nodes drop and another host answers.
pub fn probe(if_mac: [u8; 6], vip: IpAddr) -> Vec<u8> {
    let mut frame = Vec::with_capacity(78);
    match vip {
        IpAddr::V4(addr) => arp_request(&mut frame, if_mac, (if_mac, [0; 4]), addr.octets()),
        IpAddr::V6(addr) => {
            let target = addr.octets();
            let mut message = vec![135, 0, 0, 0, 0, 0, 0, 0];
            message.extend_from_slice(&target);
            let mut solicited = [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xff, 0, 0, 0];
            solicited[13..].copy_from_slice(&target[13..]);
            let mac = [0x33, 0x33, 0xff, target[13], target[14], target[15]];
            icmpv6_frame(&mut frame, (if_mac, mac), ([0; 16], solicited), message);
        }
    }
    frame
}

/// The MAC of a host other than the farm that `frame` shows using `vip`: the sender of an ARP
/// packet from `vip`, or the target link-layer address (else the Ethernet source) of a
/// neighbour advertisement for `vip`. `None` for anything else, and for the farm's own
/// virtual MAC in either mode (a node of a farm being moved to the other mode answers with
/// it). Never panics, whatever the bytes.
pub fn holder(frame: &[u8], vip: IpAddr) -> Option<[u8; 6]> {
    let ethernet = EthernetFrame::new_checked(frame).ok()?;
    let network = ethernet.network().ok()?;
    let mac = match (network.ethertype, vip) {
        (ethertype::ARP, IpAddr::V4(addr)) => {
            let arp = ArpPacket::new_checked(network.payload).ok()?;
            (arp.sender_ip() == addr.octets()).then(|| arp.sender_mac())?
        }
        (ethertype::IPV6, IpAddr::V6(addr)) => {
            let upper = Ipv6Packet::new_checked(network.payload)
                .ok()?
                .upper_layer()
                .ok()?;
            let message = upper.payload;
            if upper.protocol != ip_proto::ICMPV6
                || upper.is_fragment
                || message.first() != Some(&136)
                || message.get(8..24)? != addr.octets()
            {
                return None;
            }
            target_link_layer(message.get(24..)?).unwrap_or(ethernet.src())
        }
        _ => return None,
    };
    let farm_macs = [MacMode::Unicast, MacMode::Multicast].map(|mode| virtual_mac(vip, mode));
    (!farm_macs.contains(&mac)).then_some(mac)
}

/// The target link-layer address option among NDP `options`, if any.
fn target_link_layer(mut options: &[u8]) -> Option<[u8; 6]> {
    while let [kind, units, ..] = *options {
        let len = usize::from(units) * 8;
        if len == 0 || len > options.len() {
            return None;
        }
        if kind == 2 && len == 8 {
            return options[2..8].try_into().ok();
        }
        options = &options[len..];
    }
    None
}

/// Appends to `frame` a broadcast ARP request from `if_mac`, whose sender is `(mac, address)`
/// and whose target is `target`.
fn arp_request(
    frame: &mut Vec<u8>,
    if_mac: [u8; 6],
    (mac, address): ([u8; 6], [u8; 4]),
    target: [u8; 4],
) {
    frame.extend_from_slice(&[0xff; 6]);
    frame.extend_from_slice(&if_mac);
    frame.extend_from_slice(&ethertype::ARP.to_be_bytes());
    frame.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    frame.extend_from_slice(&mac);
    frame.extend_from_slice(&address);
    frame.extend_from_slice(&[0; 6]);
    frame.extend_from_slice(&target);
}

/// Appends to `frame` an ICMPv6 `message` with hop limit 255 (as NDP requires) from `src` to
/// `dst`, from `src_mac` to `dst_mac`, its checksum filled in.
fn icmpv6_frame(
    frame: &mut Vec<u8>,
    (src_mac, dst_mac): ([u8; 6], [u8; 6]),
    (src, dst): ([u8; 16], [u8; 16]),
    mut message: Vec<u8>,
) {
    let sum = transport_checksum(&src, &dst, ip_proto::ICMPV6, &message);
    message[2..4].copy_from_slice(&sum.to_be_bytes());
    frame.extend_from_slice(&dst_mac);
    frame.extend_from_slice(&src_mac);
    frame.extend_from_slice(&ethertype::IPV6.to_be_bytes());
    frame.extend_from_slice(&[0x60, 0, 0, 0]);
    frame.extend_from_slice(&(message.len() as u16).to_be_bytes());
    frame.extend_from_slice(&[ip_proto::ICMPV6, 255]);
    frame.extend_from_slice(&src);
    frame.extend_from_slice(&dst);
    frame.extend_from_slice(&message);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{arp, checksum};

    const IF_MAC: [u8; 6] = [2, 0, 0, 0, 0, 7];

    const MODES: [MacMode; 2] = [MacMode::Unicast, MacMode::Multicast];

    #[test]
    fn an_ipv4_vip_is_announced_by_gratuitous_arp_with_its_virtual_mac() {
        let vip = "198.18.0.100".parse().unwrap();
        for mode in MODES {
            let frame = announcement(IF_MAC, vip, mode);
            assert_eq!((&frame[..6], &frame[6..12]), (&[0xff; 6][..], &IF_MAC[..]));
            let arp = ArpPacket::new_checked(&frame[14..]).unwrap();
            assert_eq!(arp.operation(), arp::OP_REQUEST);
            assert_eq!(arp.sender_mac(), virtual_mac(vip, mode), "{mode}");
            assert_eq!(arp.sender_ip(), [198, 18, 0, 100]);
            assert_eq!(arp.target_ip(), arp.sender_ip(), "gratuitous");
        }
    }

    #[test]
    fn an_ipv6_vip_is_announced_by_an_unsolicited_advertisement_with_its_virtual_mac() {
        for mode in MODES {
            ipv6_announcement_carries_the_virtual_mac(mode);
        }
    }

    fn ipv6_announcement_carries_the_virtual_mac(mode: MacMode) {
        let vip: IpAddr = "2001:db8::100".parse().unwrap();
        let frame = announcement(IF_MAC, vip, mode);
        assert_eq!(frame[6..12], IF_MAC, "never from the virtual MAC");
        let ip = Ipv6Packet::new_checked(&frame[14..]).unwrap();
        assert_eq!((ip.hop_limit(), ip.next_header()), (255, ip_proto::ICMPV6));
        let message = ip.payload().unwrap();
        assert_eq!(message[..2], [136, 0]);
        assert_eq!(message[4], 0x20, "override, not solicited");
        assert_eq!(message[8..24], ip.src());
        assert_eq!(message[24..26], [2, 1]);
        assert_eq!(message[26..32], virtual_mac(vip, mode), "{mode}");
        let mut pseudo = ip.src().to_vec();
        pseudo.extend_from_slice(&ip.dst());
        pseudo.extend_from_slice(&[0, 0, 0, 32, 0, 0, 0, ip_proto::ICMPV6]);
        pseudo.extend_from_slice(message);
        assert_eq!(checksum(&pseudo), 0, "a valid checksum");
    }

    const OTHER: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];

    /// An ARP packet from `sender_mac` claiming `sender_ip`.
    fn arp_reply(sender_mac: [u8; 6], sender_ip: [u8; 4]) -> Vec<u8> {
        let mut frame = IF_MAC.to_vec();
        frame.extend_from_slice(&sender_mac);
        frame.extend_from_slice(&ethertype::ARP.to_be_bytes());
        frame.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 2]);
        frame.extend_from_slice(&sender_mac);
        frame.extend_from_slice(&sender_ip);
        frame.extend_from_slice(&IF_MAC);
        frame.extend_from_slice(&[0; 4]);
        frame
    }

    #[test]
    fn an_ipv4_probe_asks_for_the_vip_without_claiming_an_address() {
        let vip = "198.18.0.100".parse().unwrap();
        let frame = probe(IF_MAC, vip);
        assert_eq!((&frame[..6], &frame[6..12]), (&[0xff; 6][..], &IF_MAC[..]));
        let arp = ArpPacket::new_checked(&frame[14..]).unwrap();
        assert_eq!(arp.operation(), arp::OP_REQUEST);
        assert_eq!(arp.sender_mac(), IF_MAC);
        assert_eq!(arp.sender_ip(), [0; 4], "an RFC 5227 probe");
        assert_eq!(arp.target_ip(), [198, 18, 0, 100]);
    }

    #[test]
    fn an_ipv6_probe_is_a_duplicate_address_detection_solicitation() {
        let target: std::net::Ipv6Addr = "2001:db8::1:100".parse().unwrap();
        let frame = probe(IF_MAC, target.into());
        assert_eq!(frame[..6], [0x33, 0x33, 0xff, 0x01, 0x01, 0x00]);
        let ip = Ipv6Packet::new_checked(&frame[14..]).unwrap();
        assert_eq!((ip.src(), ip.hop_limit()), ([0; 16], 255));
        assert_eq!(
            ip.dst()[..13],
            [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff]
        );
        let message = ip.payload().unwrap();
        assert_eq!((message[0], &message[8..24]), (135, &target.octets()[..]));
        let mut pseudo = ip.src().to_vec();
        pseudo.extend_from_slice(&ip.dst());
        pseudo.extend_from_slice(&[0, 0, 0, 24, 0, 0, 0, ip_proto::ICMPV6]);
        pseudo.extend_from_slice(message);
        assert_eq!(checksum(&pseudo), 0, "a valid checksum");
    }

    #[test]
    fn a_host_answering_for_an_ipv4_vip_with_its_own_mac_holds_it() {
        let vip = "198.18.0.100".parse().unwrap();
        assert_eq!(
            holder(&arp_reply(OTHER, [198, 18, 0, 100]), vip),
            Some(OTHER)
        );
        for mode in MODES {
            assert_eq!(
                holder(&arp_reply(virtual_mac(vip, mode), [198, 18, 0, 100]), vip),
                None,
                "the farm answers with the virtual MAC of either mode"
            );
        }
        assert_eq!(
            holder(&arp_reply(OTHER, [198, 18, 0, 101]), vip),
            None,
            "another address"
        );
        assert_eq!(
            holder(&probe(OTHER, vip), vip),
            None,
            "a probe claims nothing"
        );
        assert_eq!(
            holder(
                &arp_reply(OTHER, [198, 18, 0, 100]),
                "2001:db8::1".parse().unwrap()
            ),
            None
        );
    }

    #[test]
    fn a_host_advertising_an_ipv6_vip_with_its_own_mac_holds_it() {
        let vip: IpAddr = "2001:db8::100".parse().unwrap();
        let mut theirs = announcement(OTHER, vip, MacMode::Unicast);
        // Their own MAC in the target link-layer address option.
        let option = theirs.len() - 6;
        theirs[option..].copy_from_slice(&OTHER);
        assert_eq!(holder(&theirs, vip), Some(OTHER));
        for mode in MODES {
            assert_eq!(
                holder(&announcement(IF_MAC, vip, mode), vip),
                None,
                "the farm's own, {mode}"
            );
        }
        assert_eq!(holder(&theirs, "2001:db8::101".parse().unwrap()), None);
        assert_eq!(
            holder(&probe(OTHER, vip), vip),
            None,
            "a solicitation claims nothing"
        );
        // Without the option, the advertisement's source.
        let mut bare = theirs[..theirs.len() - 8].to_vec();
        bare[18..20].copy_from_slice(&24u16.to_be_bytes());
        assert_eq!(holder(&bare, vip), Some(OTHER));
    }

    #[test]
    fn holder_reads_any_bytes_without_panicking() {
        let vip4 = "198.18.0.100".parse().unwrap();
        let vip6 = "2001:db8::100".parse().unwrap();
        let mut zero_option = announcement(OTHER, vip6, MacMode::Unicast);
        let option = zero_option.len() - 7;
        zero_option[option] = 0;
        for frame in [
            arp_reply(OTHER, [198, 18, 0, 100]),
            announcement(OTHER, vip6, MacMode::Multicast),
            zero_option,
        ] {
            for len in 0..=frame.len() {
                for vip in [vip4, vip6] {
                    let _ = holder(&frame[..len], vip);
                }
            }
        }
    }

    #[test]
    fn virtual_macs_are_locally_administered_unicast_and_per_family() {
        let v4 = virtual_mac("198.18.0.100".parse().unwrap(), MacMode::Unicast);
        let v6 = virtual_mac("2001:db8::c612:64".parse().unwrap(), MacMode::Unicast);
        assert_eq!(v4, [0x02, 0x68, 198, 18, 0, 100]);
        assert_eq!(v6, [0x06, 0x68, 0xc6, 0x12, 0, 0x64]);
        for mac in [v4, v6] {
            assert_eq!(mac[0] & 0b11, 0b10, "locally administered, unicast");
        }
        assert_ne!(
            v4, v6,
            "an IPv6 VIP ending in an IPv4 VIP's bytes gets another MAC"
        );
    }

    #[test]
    fn multicast_macs_are_those_of_the_groups_the_nodes_join() {
        let v4: IpAddr = "198.18.1.100".parse().unwrap();
        let v6: IpAddr = "fd00:198:18::18:1:100".parse().unwrap();
        assert_eq!(
            multicast_group(v4),
            "239.255.1.100".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            multicast_group(v6),
            "ff02::1:ff01:100".parse::<IpAddr>().unwrap(),
            "the VIP's solicited-node group"
        );
        assert_eq!(
            virtual_mac(v4, MacMode::Multicast),
            [0x01, 0x00, 0x5e, 0x7f, 1, 100]
        );
        assert_eq!(
            virtual_mac(v6, MacMode::Multicast),
            [0x33, 0x33, 0xff, 0x01, 0x01, 0x00]
        );
        for vip in [v4, v6] {
            assert!(multicast_group(vip).is_multicast());
            let mac = virtual_mac(vip, MacMode::Multicast);
            assert_eq!(mac[0] & 1, 1, "a group address");
            assert_eq!(mac, group_mac(multicast_group(vip)));
        }
        let probe = probe(IF_MAC, v6);
        assert_eq!(
            probe[..6],
            virtual_mac(v6, MacMode::Multicast),
            "solicitations for the VIP go to the same group"
        );
    }
}
