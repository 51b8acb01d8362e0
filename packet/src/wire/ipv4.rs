//! IPv4 headers (RFC 791), options and fragments included.

use super::{array, be16, Error};

/// Length of an IPv4 header without options.
pub const MIN_HEADER_LEN: usize = 20;

/// A view of an IPv4 packet.
///
/// Construction checks the fixed header (20 bytes, version 4), which is all the address and
/// protocol accessors read; [`Ipv4Packet::payload`] checks the lengths the header announces.
#[derive(Clone, Copy, Debug)]
pub struct Ipv4Packet<'a> {
    buf: &'a [u8],
    /// The fixed header, as an array so that its accessors need no bounds checks.
    fixed: &'a [u8; MIN_HEADER_LEN],
}

impl<'a> Ipv4Packet<'a> {
    /// Views `buf` as IPv4: at least 20 bytes, version 4.
    pub fn new_checked(buf: &'a [u8]) -> Result<Self, Error> {
        let fixed = buf.first_chunk().ok_or(Error::Truncated)?;
        if fixed[0] >> 4 != 4 {
            return Err(Error::Malformed);
        }
        Ok(Self { buf, fixed })
    }

    /// Header length in bytes, options included (from IHL; not yet checked against the buffer).
    pub fn header_len(&self) -> usize {
        usize::from(self.fixed[0] & 0x0f) * 4
    }

    /// Total length of the packet in bytes, as the header says.
    pub fn total_len(&self) -> usize {
        usize::from(be16(self.fixed, 2))
    }

    /// Whether more fragments follow (the MF flag).
    pub fn more_fragments(&self) -> bool {
        self.fixed[6] & 0x20 != 0
    }

    /// Offset of this fragment in the datagram, in 8-byte units.
    pub fn fragment_offset(&self) -> u16 {
        be16(self.fixed, 6) & 0x1fff
    }

    /// Whether this packet is a fragment of a larger datagram (first, middle or last).
    pub fn is_fragment(&self) -> bool {
        self.more_fragments() || self.fragment_offset() != 0
    }

    /// Time to live.
    pub fn ttl(&self) -> u8 {
        self.fixed[8]
    }

    /// The protocol of the payload.
    pub fn protocol(&self) -> u8 {
        self.fixed[9]
    }

    /// Source address.
    pub fn src(&self) -> [u8; 4] {
        array(self.fixed, 12)
    }

    /// Destination address.
    pub fn dst(&self) -> [u8; 4] {
        array(self.fixed, 16)
    }

    /// The payload: from the end of the header to the total length. Fails when IHL is below 5,
    /// the total length is below the header length, or the buffer is shorter than either
    /// (bytes past the total length, such as Ethernet padding, are ignored).
    pub fn payload(&self) -> Result<&'a [u8], Error> {
        let header_len = self.header_len();
        let total_len = self.total_len();
        if header_len < MIN_HEADER_LEN || total_len < header_len {
            return Err(Error::Malformed);
        }
        if total_len > self.buf.len() {
            return Err(Error::Truncated);
        }
        Ok(&self.buf[header_len..total_len])
    }

    /// The payload of a packet quoted in an ICMP error: the quote is cut short on purpose, so
    /// the payload runs from the end of the header to the end of the buffer.
    pub fn quoted_payload(&self) -> Result<&'a [u8], Error> {
        let header_len = self.header_len();
        if header_len < MIN_HEADER_LEN {
            return Err(Error::Malformed);
        }
        self.buf.get(header_len..).ok_or(Error::Truncated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(ihl: u8, total: u16, flags_frag: u16) -> Vec<u8> {
        let mut h = vec![0x40 | ihl, 0];
        h.extend_from_slice(&total.to_be_bytes());
        h.extend_from_slice(&[0, 1]);
        h.extend_from_slice(&flags_frag.to_be_bytes());
        h.extend_from_slice(&[64, 17, 0, 0, 198, 18, 1, 1, 198, 18, 0, 100]);
        h.resize(usize::from(total).max(20), 0xaa);
        h
    }

    #[test]
    fn fields() {
        let h = header(5, 28, 0x4000);
        let p = Ipv4Packet::new_checked(&h).unwrap();
        assert_eq!(
            (p.header_len(), p.total_len(), p.ttl(), p.protocol()),
            (20, 28, 64, 17)
        );
        assert_eq!((p.src(), p.dst()), ([198, 18, 1, 1], [198, 18, 0, 100]));
        assert!(!p.is_fragment(), "DF alone is not a fragment");
        assert_eq!(p.payload().unwrap().len(), 8);
    }

    #[test]
    fn options_are_skipped() {
        let h = header(6, 32, 0);
        assert_eq!(
            Ipv4Packet::new_checked(&h)
                .unwrap()
                .payload()
                .unwrap()
                .len(),
            8
        );
    }

    #[test]
    fn fragments() {
        let first = header(5, 28, 0x2000);
        let last = header(5, 28, 0x0003);
        assert!(Ipv4Packet::new_checked(&first).unwrap().is_fragment());
        let last = Ipv4Packet::new_checked(&last).unwrap();
        assert!(last.is_fragment());
        assert_eq!(last.fragment_offset(), 3);
    }

    #[test]
    fn bad_lengths() {
        assert_eq!(
            Ipv4Packet::new_checked(&[0x45; 19]).unwrap_err(),
            Error::Truncated
        );
        assert_eq!(
            Ipv4Packet::new_checked(&[0x65; 20]).unwrap_err(),
            Error::Malformed
        );
        let ihl4 = header(4, 28, 0);
        assert_eq!(
            Ipv4Packet::new_checked(&ihl4).unwrap().payload(),
            Err(Error::Malformed)
        );
        let mut long = header(5, 28, 0);
        long[3] = 200;
        assert_eq!(
            Ipv4Packet::new_checked(&long).unwrap().payload(),
            Err(Error::Truncated)
        );
        let mut short_total = header(5, 28, 0);
        short_total[3] = 12;
        let p = Ipv4Packet::new_checked(&short_total).unwrap();
        assert_eq!(p.payload(), Err(Error::Malformed));
        let big_ihl = header(15, 28, 0);
        let p = Ipv4Packet::new_checked(&big_ihl).unwrap();
        assert_eq!(p.quoted_payload(), Err(Error::Truncated));
    }
}
