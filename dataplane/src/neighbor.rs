//! VIP address resolution: the virtual MAC the farm answers ARP requests and neighbour
//! solicitations for a VIP with.
//!
//! The virtual MAC is never the source of a frame (answers carry it only inside the ARP or NDP
//! payload, and leave from the interface's own MAC), so no switch learns where it is and every
//! switch floods the VIP's traffic to every node, as SafeKit's `vmac_invisible` does.

use std::net::IpAddr;

use crate::wire::checksum;
use crate::wire::ethernet::ethertype;
use crate::wire::ip_proto;

/// The virtual MAC of a VIP: a locally administered unicast address, `02:68` then the IPv4
/// address, or `06:68` then the last 4 bytes of the IPv6 address. The in-kernel program
/// computes the same (`virtual_mac` in `bpf/herd.bpf.c`).
pub fn virtual_mac(vip: IpAddr) -> [u8; 6] {
    let (first, low) = match vip {
        IpAddr::V4(addr) => (0x02, addr.octets()),
        IpAddr::V6(addr) => {
            let octets = addr.octets();
            (0x06, [octets[12], octets[13], octets[14], octets[15]])
        }
    };
    [first, 0x68, low[0], low[1], low[2], low[3]]
}

/// The frame a node sends when it starts, so that the hosts of the link map `vip` to its
/// virtual MAC at once: a gratuitous ARP request for an IPv4 VIP, an unsolicited neighbour
/// advertisement (override set) to all nodes for an IPv6 VIP. It leaves from `if_mac`, the
/// interface's own MAC, like every answer.
pub fn announcement(if_mac: [u8; 6], vip: IpAddr) -> Vec<u8> {
    let vmac = virtual_mac(vip);
    let mut frame = Vec::with_capacity(86);
    match vip {
        IpAddr::V4(addr) => {
            frame.extend_from_slice(&[0xff; 6]);
            frame.extend_from_slice(&if_mac);
            frame.extend_from_slice(&ethertype::ARP.to_be_bytes());
            frame.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 1]);
            frame.extend_from_slice(&vmac);
            frame.extend_from_slice(&addr.octets());
            frame.extend_from_slice(&[0; 6]);
            frame.extend_from_slice(&addr.octets());
        }
        IpAddr::V6(addr) => {
            const ALL_NODES: [u8; 16] = [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
            let mut message = vec![136, 0, 0, 0, 0x20, 0, 0, 0]; // override
            message.extend_from_slice(&addr.octets());
            message.extend_from_slice(&[2, 1]); // target link-layer address option
            message.extend_from_slice(&vmac);
            let mut pseudo = addr.octets().to_vec();
            pseudo.extend_from_slice(&ALL_NODES);
            pseudo.extend_from_slice(&(message.len() as u32).to_be_bytes());
            pseudo.extend_from_slice(&[0, 0, 0, ip_proto::ICMPV6]);
            pseudo.extend_from_slice(&message);
            message[2..4].copy_from_slice(&checksum(&pseudo).to_be_bytes());
            frame.extend_from_slice(&[0x33, 0x33, 0, 0, 0, 1]);
            frame.extend_from_slice(&if_mac);
            frame.extend_from_slice(&ethertype::IPV6.to_be_bytes());
            frame.extend_from_slice(&[0x60, 0, 0, 0]);
            frame.extend_from_slice(&(message.len() as u16).to_be_bytes());
            frame.extend_from_slice(&[ip_proto::ICMPV6, 255]);
            frame.extend_from_slice(&addr.octets());
            frame.extend_from_slice(&ALL_NODES);
            frame.extend_from_slice(&message);
        }
    }
    frame
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::arp::{self, ArpPacket};
    use crate::wire::ipv6::Ipv6Packet;

    const IF_MAC: [u8; 6] = [2, 0, 0, 0, 0, 7];

    #[test]
    fn an_ipv4_vip_is_announced_by_gratuitous_arp_with_its_virtual_mac() {
        let vip = "198.18.0.100".parse().unwrap();
        let frame = announcement(IF_MAC, vip);
        assert_eq!((&frame[..6], &frame[6..12]), (&[0xff; 6][..], &IF_MAC[..]));
        let arp = ArpPacket::new_checked(&frame[14..]).unwrap();
        assert_eq!(arp.operation(), arp::OP_REQUEST);
        assert_eq!(arp.sender_mac(), virtual_mac(vip));
        assert_eq!(arp.sender_ip(), [198, 18, 0, 100]);
        assert_eq!(arp.target_ip(), arp.sender_ip(), "gratuitous");
    }

    #[test]
    fn an_ipv6_vip_is_announced_by_an_unsolicited_advertisement_with_its_virtual_mac() {
        let vip: IpAddr = "2001:db8::100".parse().unwrap();
        let frame = announcement(IF_MAC, vip);
        assert_eq!(frame[6..12], IF_MAC, "never from the virtual MAC");
        let ip = Ipv6Packet::new_checked(&frame[14..]).unwrap();
        assert_eq!((ip.hop_limit(), ip.next_header()), (255, ip_proto::ICMPV6));
        let message = ip.payload().unwrap();
        assert_eq!(message[..2], [136, 0]);
        assert_eq!(message[4], 0x20, "override, not solicited");
        assert_eq!(message[8..24], ip.src());
        assert_eq!(message[24..26], [2, 1]);
        assert_eq!(message[26..32], virtual_mac(vip));
        let mut pseudo = ip.src().to_vec();
        pseudo.extend_from_slice(&ip.dst());
        pseudo.extend_from_slice(&[0, 0, 0, 32, 0, 0, 0, ip_proto::ICMPV6]);
        pseudo.extend_from_slice(message);
        assert_eq!(checksum(&pseudo), 0, "a valid checksum");
    }

    #[test]
    fn virtual_macs_are_locally_administered_unicast_and_per_family() {
        let v4 = virtual_mac("198.18.0.100".parse().unwrap());
        let v6 = virtual_mac("2001:db8::c612:64".parse().unwrap());
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
}
