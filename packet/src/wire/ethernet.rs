//! Ethernet II frames and their 802.1Q / 802.1ad VLAN tags.

use super::{array, be16, Error};

/// EtherType values the classifier dispatches on.
pub mod ethertype {
    /// IPv4.
    pub const IPV4: u16 = 0x0800;
    /// ARP.
    pub const ARP: u16 = 0x0806;
    /// 802.1Q customer VLAN tag.
    pub const VLAN: u16 = 0x8100;
    /// 802.1ad service VLAN tag (the outer tag of Q-in-Q).
    pub const QINQ: u16 = 0x88a8;
    /// IPv6.
    pub const IPV6: u16 = 0x86dd;
}

/// Length of the Ethernet header without tags.
pub const HEADER_LEN: usize = 14;
/// Length of one VLAN tag.
pub const TAG_LEN: usize = 4;
/// How many stacked VLAN tags are looked through (Q-in-Q); a frame with more is not parsed.
pub const MAX_TAGS: usize = 2;

/// A view of an Ethernet II frame.
#[derive(Clone, Copy, Debug)]
pub struct EthernetFrame<'a> {
    buf: &'a [u8],
    /// The header, as an array so that its accessors need no bounds checks.
    header: &'a [u8; HEADER_LEN],
}

impl<'a> EthernetFrame<'a> {
    /// Views `buf` as an Ethernet frame; it must hold the 14-byte header.
    pub fn new_checked(buf: &'a [u8]) -> Result<Self, Error> {
        let header = buf.first_chunk().ok_or(Error::Truncated)?;
        Ok(Self { buf, header })
    }

    /// Destination MAC address.
    pub fn dst(&self) -> [u8; 6] {
        array(self.header, 0)
    }

    /// Source MAC address.
    pub fn src(&self) -> [u8; 6] {
        array(self.header, 6)
    }

    /// The EtherType of the outer header (a VLAN TPID when the frame is tagged).
    pub fn ethertype(&self) -> u16 {
        be16(self.header, 12)
    }

    /// Looks through up to [`MAX_TAGS`] VLAN tags: the EtherType of the network-layer packet,
    /// the packet's bytes and the number of tags.
    pub fn network(&self) -> Result<Network<'a>, Error> {
        let mut ethertype = self.ethertype();
        let mut offset = HEADER_LEN;
        let mut tags = 0;
        while ethertype == ethertype::VLAN || ethertype == ethertype::QINQ {
            if tags == MAX_TAGS {
                return Err(Error::Malformed);
            }
            if self.buf.len() < offset + TAG_LEN {
                return Err(Error::Truncated);
            }
            // A tag is TCI (2 bytes) then the next EtherType.
            ethertype = be16(self.buf, offset + 2);
            offset += TAG_LEN;
            tags += 1;
        }
        Ok(Network {
            ethertype,
            payload: &self.buf[offset..],
            tags,
        })
    }
}

/// The network-layer part of a frame, found under its VLAN tags.
#[derive(Clone, Copy, Debug)]
pub struct Network<'a> {
    /// EtherType of the packet.
    pub ethertype: u16,
    /// The packet's bytes, to the end of the frame.
    pub payload: &'a [u8],
    /// How many VLAN tags were looked through.
    pub tags: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(ethertypes: &[u16]) -> Vec<u8> {
        let mut f = vec![0xff; 12];
        for (i, t) in ethertypes.iter().enumerate() {
            f.extend_from_slice(&t.to_be_bytes());
            if i + 1 < ethertypes.len() {
                f.extend_from_slice(&[0x00, 0x07]); // TCI: VLAN 7
            }
        }
        f.extend_from_slice(&[0x45, 0]);
        f
    }

    #[test]
    fn untagged() {
        let f = frame(&[ethertype::IPV4]);
        let net = EthernetFrame::new_checked(&f).unwrap().network().unwrap();
        assert_eq!(
            (net.ethertype, net.tags, net.payload),
            (ethertype::IPV4, 0, &[0x45, 0][..])
        );
    }

    #[test]
    fn qinq_is_looked_through() {
        let f = frame(&[ethertype::QINQ, ethertype::VLAN, ethertype::IPV6]);
        let net = EthernetFrame::new_checked(&f).unwrap().network().unwrap();
        assert_eq!((net.ethertype, net.tags), (ethertype::IPV6, 2));
    }

    #[test]
    fn three_tags_are_refused() {
        let f = frame(&[
            ethertype::VLAN,
            ethertype::VLAN,
            ethertype::VLAN,
            ethertype::IPV4,
        ]);
        let eth = EthernetFrame::new_checked(&f).unwrap();
        assert_eq!(eth.network().unwrap_err(), Error::Malformed);
    }

    #[test]
    fn short_frames_and_tags() {
        assert_eq!(
            EthernetFrame::new_checked(&[0; 13]).unwrap_err(),
            Error::Truncated
        );
        let mut f = vec![0; 12];
        f.extend_from_slice(&ethertype::VLAN.to_be_bytes());
        f.extend_from_slice(&[0, 7, 0x08]);
        let eth = EthernetFrame::new_checked(&f).unwrap();
        assert_eq!(eth.network().unwrap_err(), Error::Truncated);
    }
}
