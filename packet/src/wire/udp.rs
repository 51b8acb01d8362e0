//! UDP headers (RFC 768).

use super::{be16, Error};

/// Length of the UDP header.
pub const HEADER_LEN: usize = 8;

/// A view of a UDP datagram.
#[derive(Clone, Copy, Debug)]
pub struct UdpPacket<'a> {
    /// The header, as an array so that its accessors need no bounds checks.
    header: &'a [u8; HEADER_LEN],
}

impl<'a> UdpPacket<'a> {
    /// Views `buf` as UDP: the 8-byte header present.
    pub fn new_checked(buf: &'a [u8]) -> Result<Self, Error> {
        let header = buf.first_chunk().ok_or(Error::Truncated)?;
        Ok(Self { header })
    }

    /// Source port.
    pub fn src_port(&self) -> u16 {
        be16(self.header, 0)
    }

    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        be16(self.header, 2)
    }

    /// Length of header and data, as the header says.
    pub fn len(&self) -> u16 {
        be16(self.header, 4)
    }

    /// Whether the header announces no byte at all (never valid: the header alone is 8).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header() {
        let h = [0x13, 0x88, 0x00, 0x35, 0, 9, 0, 0, 0xff];
        let u = UdpPacket::new_checked(&h).unwrap();
        assert_eq!((u.src_port(), u.dst_port(), u.len()), (5000, 53, 9));
        assert_eq!(
            UdpPacket::new_checked(&h[..7]).unwrap_err(),
            Error::Truncated
        );
    }
}
