//! ARP for IPv4 over Ethernet (RFC 826).

use super::{array, be16, Error};

/// Length of an Ethernet/IPv4 ARP packet.
pub const PACKET_LEN: usize = 28;
/// `operation` of a request.
pub const OP_REQUEST: u16 = 1;
/// `operation` of a reply.
pub const OP_REPLY: u16 = 2;

/// A view of an Ethernet/IPv4 ARP packet.
#[derive(Clone, Copy, Debug)]
pub struct ArpPacket<'a> {
    /// The packet, as an array so that its accessors need no bounds checks.
    buf: &'a [u8; PACKET_LEN],
}

impl<'a> ArpPacket<'a> {
    /// Views `buf` as ARP; it must be Ethernet (htype 1, hlen 6) over IPv4 (ptype 0x0800, plen 4).
    pub fn new_checked(buf: &'a [u8]) -> Result<Self, Error> {
        let buf = buf.first_chunk().ok_or(Error::Truncated)?;
        if be16(buf, 0) != 1 || be16(buf, 2) != 0x0800 || buf[4] != 6 || buf[5] != 4 {
            return Err(Error::Malformed);
        }
        Ok(Self { buf })
    }

    /// Request or reply ([`OP_REQUEST`], [`OP_REPLY`]).
    pub fn operation(&self) -> u16 {
        be16(self.buf, 6)
    }

    /// Sender MAC address.
    pub fn sender_mac(&self) -> [u8; 6] {
        array(self.buf, 8)
    }

    /// Sender IPv4 address.
    pub fn sender_ip(&self) -> [u8; 4] {
        array(self.buf, 14)
    }

    /// Target MAC address (zero in a request).
    pub fn target_mac(&self) -> [u8; 6] {
        array(self.buf, 18)
    }

    /// The IPv4 address asked about.
    pub fn target_ip(&self) -> [u8; 4] {
        array(self.buf, 24)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_fields() {
        let mut p = vec![0, 1, 8, 0, 6, 4, 0, 1];
        p.extend_from_slice(&[2, 0, 0, 0, 0, 1, 198, 18, 0, 9]);
        p.extend_from_slice(&[0, 0, 0, 0, 0, 0, 198, 18, 0, 100]);
        let arp = ArpPacket::new_checked(&p).unwrap();
        assert_eq!(arp.operation(), OP_REQUEST);
        assert_eq!(arp.sender_mac(), [2, 0, 0, 0, 0, 1]);
        assert_eq!(arp.sender_ip(), [198, 18, 0, 9]);
        assert_eq!(arp.target_mac(), [0; 6]);
        assert_eq!(arp.target_ip(), [198, 18, 0, 100]);
        assert_eq!(
            ArpPacket::new_checked(&p[..27]).unwrap_err(),
            Error::Truncated
        );
        p[5] = 16;
        assert_eq!(ArpPacket::new_checked(&p).unwrap_err(), Error::Malformed);
    }
}
