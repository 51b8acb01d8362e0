//! VIP address resolution: the virtual MAC the farm answers ARP requests and neighbour
//! solicitations for a VIP with.
//!
//! The virtual MAC is never the source of a frame (answers carry it only inside the ARP or NDP
//! payload, and leave from the interface's own MAC), so no switch learns where it is and every
//! switch floods the VIP's traffic to every node, as SafeKit's `vmac_invisible` does.

use std::net::IpAddr;

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

#[cfg(test)]
mod tests {
    use super::*;

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
