//! TCP headers (RFC 9293): the ports and flags the packet path reads.

use super::{be16, Error};

/// Length of a TCP header without options.
pub const MIN_HEADER_LEN: usize = 20;

/// The FIN flag: the sender has finished sending.
pub const FIN: u8 = 0x01;
/// The SYN flag: synchronise sequence numbers (opens a connection).
pub const SYN: u8 = 0x02;
/// The RST flag: reset the connection.
pub const RST: u8 = 0x04;
/// The ACK flag: the acknowledgment number is significant.
pub const ACK: u8 = 0x10;

/// The offset of the flags byte in the TCP header.
pub const FLAGS_OFFSET: usize = 13;

/// A view of a TCP segment.
#[derive(Clone, Copy, Debug)]
pub struct TcpPacket<'a> {
    /// The header without options, as an array so that its accessors need no bounds checks.
    header: &'a [u8; MIN_HEADER_LEN],
}

impl<'a> TcpPacket<'a> {
    /// Views `buf` as TCP: the 20-byte header present, a data offset from 5 words up to the
    /// buffer's length.
    pub fn new_checked(buf: &'a [u8]) -> Result<Self, Error> {
        let header: &[u8; MIN_HEADER_LEN] = buf.first_chunk().ok_or(Error::Truncated)?;
        let header_len = usize::from(header[12] >> 4) * 4;
        if header_len < MIN_HEADER_LEN {
            return Err(Error::Malformed);
        }
        if header_len > buf.len() {
            return Err(Error::Truncated);
        }
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

    /// The flags byte (CWR, ECE, URG, ACK, PSH, RST, SYN, FIN from the high bit down).
    pub fn flags(&self) -> u8 {
        self.header[FLAGS_OFFSET]
    }

    /// Whether SYN is set without ACK: the first segment of a new connection.
    pub fn is_connection_request(&self) -> bool {
        self.flags() & (SYN | ACK) == SYN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header() {
        let mut h = vec![0x30, 0x39, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02];
        h.resize(20, 0);
        let t = TcpPacket::new_checked(&h).unwrap();
        assert_eq!(
            (t.src_port(), t.dst_port(), t.is_connection_request()),
            (12345, 80, true)
        );
        h[13] = 0x12;
        assert!(!TcpPacket::new_checked(&h).unwrap().is_connection_request());
        h[12] = 0x40;
        assert_eq!(TcpPacket::new_checked(&h).unwrap_err(), Error::Malformed);
        h[12] = 0x60;
        assert_eq!(TcpPacket::new_checked(&h).unwrap_err(), Error::Truncated);
        assert_eq!(
            TcpPacket::new_checked(&h[..19]).unwrap_err(),
            Error::Truncated
        );
    }
}
