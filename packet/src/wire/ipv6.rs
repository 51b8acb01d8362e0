//! IPv6 headers (RFC 8200) and the walk through extension headers to the upper layer.

use super::{array, be16, ip_proto, Error};

/// Length of the fixed IPv6 header.
pub const HEADER_LEN: usize = 40;
/// How many extension headers are walked before giving up. Real traffic has at most a few;
/// the bound keeps hostile chains cheap, and the eBPF program needs one anyway.
pub const MAX_EXTENSION_HEADERS: usize = 8;

/// A view of an IPv6 packet.
///
/// Construction checks the fixed header (40 bytes, version 6); [`Ipv6Packet::payload`] checks
/// the payload length.
#[derive(Clone, Copy, Debug)]
pub struct Ipv6Packet<'a> {
    buf: &'a [u8],
    /// The fixed header, as an array so that its accessors need no bounds checks.
    fixed: &'a [u8; HEADER_LEN],
}

impl<'a> Ipv6Packet<'a> {
    /// Views `buf` as IPv6: at least 40 bytes, version 6.
    pub fn new_checked(buf: &'a [u8]) -> Result<Self, Error> {
        let fixed = buf.first_chunk().ok_or(Error::Truncated)?;
        if fixed[0] >> 4 != 6 {
            return Err(Error::Malformed);
        }
        Ok(Self { buf, fixed })
    }

    /// Payload length, as the header says.
    pub fn payload_len(&self) -> usize {
        usize::from(be16(self.fixed, 4))
    }

    /// The type of the first header after the fixed one.
    pub fn next_header(&self) -> u8 {
        self.fixed[6]
    }

    /// Hop limit.
    pub fn hop_limit(&self) -> u8 {
        self.fixed[7]
    }

    /// Source address.
    pub fn src(&self) -> [u8; 16] {
        array(self.fixed, 8)
    }

    /// Destination address.
    pub fn dst(&self) -> [u8; 16] {
        array(self.fixed, 24)
    }

    /// The bytes after the fixed header, up to the payload length (Ethernet padding ignored).
    pub fn payload(&self) -> Result<&'a [u8], Error> {
        self.buf
            .get(HEADER_LEN..HEADER_LEN + self.payload_len())
            .ok_or(Error::Truncated)
    }

    /// The payload of a packet quoted in an ICMPv6 error, cut short on purpose: everything after
    /// the fixed header.
    pub fn quoted_payload(&self) -> &'a [u8] {
        &self.buf[HEADER_LEN..]
    }

    /// Walks the extension headers of this packet's (strict) payload to the upper layer.
    pub fn upper_layer(&self) -> Result<UpperLayer<'a>, Error> {
        upper_layer(self.next_header(), self.payload()?)
    }
}

/// The upper-layer part of an IPv6 packet, found after its extension headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UpperLayer<'a> {
    /// Upper-layer protocol (TCP, UDP, ICMPv6, or any other that is not an extension header).
    pub protocol: u8,
    /// Its bytes.
    pub payload: &'a [u8],
    /// Whether a fragment header made this packet a fragment (offset > 0 or more fragments).
    /// An atomic fragment (offset 0, no more fragments, RFC 6946) is a whole datagram.
    pub is_fragment: bool,
}

/// Walks extension headers from `next_header` over `bytes` (the bytes after the fixed header).
///
/// Hop-by-hop, routing, destination options, fragment and authentication headers are skipped;
/// any other value is the upper-layer protocol. More than [`MAX_EXTENSION_HEADERS`] headers is
/// `Malformed`; a header running past `bytes` is `Truncated`. The walk stops at the fragment
/// header of a real fragment, taking its next header as the protocol: only the first fragment
/// carries the headers behind it, and every fragment of a datagram must be classified alike.
pub fn upper_layer(mut next_header: u8, mut bytes: &[u8]) -> Result<UpperLayer<'_>, Error> {
    for _ in 0..=MAX_EXTENSION_HEADERS {
        let len = match next_header {
            ip_proto::HOP_BY_HOP | ip_proto::ROUTING | ip_proto::DEST_OPTS => {
                (usize::from(*bytes.get(1).ok_or(Error::Truncated)?) + 1) * 8
            }
            ip_proto::AUTH => (usize::from(*bytes.get(1).ok_or(Error::Truncated)?) + 2) * 4,
            ip_proto::FRAGMENT => 8,
            protocol => {
                return Ok(UpperLayer {
                    protocol,
                    payload: bytes,
                    is_fragment: false,
                })
            }
        };
        let header = bytes.get(..len).ok_or(Error::Truncated)?;
        if next_header == ip_proto::FRAGMENT {
            let offset = be16(header, 2) >> 3;
            let more = header[3] & 1 != 0;
            if offset != 0 || more {
                return Ok(UpperLayer {
                    protocol: header[0],
                    payload: &bytes[len..],
                    is_fragment: true,
                });
            }
        }
        next_header = header[0];
        bytes = &bytes[len..];
    }
    Err(Error::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(next: u8, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0];
        p.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        p.extend_from_slice(&[next, 64]);
        p.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8].repeat(4));
        p.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]);
        p.extend_from_slice(payload);
        p
    }

    #[test]
    fn fixed_header() {
        let p = packet(ip_proto::UDP, &[1, 2, 3, 4, 5, 6, 7, 8]);
        let v = Ipv6Packet::new_checked(&p).unwrap();
        assert_eq!(
            (v.payload_len(), v.next_header(), v.hop_limit()),
            (8, ip_proto::UDP, 64)
        );
        assert_eq!(v.dst()[15], 0);
        assert_eq!(v.dst()[14], 1);
        let upper = v.upper_layer().unwrap();
        assert_eq!(
            (upper.protocol, upper.payload.len(), upper.is_fragment),
            (17, 8, false)
        );
    }

    #[test]
    fn extension_headers_are_skipped() {
        // hop-by-hop (8 bytes) -> destination options (16 bytes) -> TCP
        let mut ext = vec![ip_proto::DEST_OPTS, 0, 1, 4, 0, 0, 0, 0];
        ext.extend_from_slice(&[ip_proto::TCP, 1]);
        ext.extend_from_slice(&[0; 14]);
        ext.extend_from_slice(&[0xaa; 20]);
        let p = packet(ip_proto::HOP_BY_HOP, &ext);
        let upper = Ipv6Packet::new_checked(&p).unwrap().upper_layer().unwrap();
        assert_eq!((upper.protocol, upper.payload.len()), (ip_proto::TCP, 20));
    }

    #[test]
    fn fragment_headers() {
        let first = [ip_proto::UDP, 0, 0, 1, 0, 0, 0, 9, 0xaa, 0xbb];
        let upper = upper_layer(ip_proto::FRAGMENT, &first).unwrap();
        assert_eq!(
            (upper.protocol, upper.is_fragment, upper.payload.len()),
            (17, true, 2)
        );
        let later = [ip_proto::UDP, 0, 0x05, 0x00, 0, 0, 0, 9, 0xaa];
        let upper = upper_layer(ip_proto::FRAGMENT, &later).unwrap();
        assert_eq!((upper.protocol, upper.is_fragment), (17, true));
        let atomic = [ip_proto::UDP, 0, 0, 0, 0, 0, 0, 9];
        assert!(
            !upper_layer(ip_proto::FRAGMENT, &atomic)
                .unwrap()
                .is_fragment
        );
    }

    #[test]
    fn hostile_chains() {
        let endless: Vec<u8> = [ip_proto::DEST_OPTS, 0, 0, 0, 0, 0, 0, 0].repeat(20);
        assert_eq!(
            upper_layer(ip_proto::DEST_OPTS, &endless),
            Err(Error::Malformed)
        );
        assert_eq!(
            upper_layer(ip_proto::HOP_BY_HOP, &[6]),
            Err(Error::Truncated)
        );
        assert_eq!(
            upper_layer(ip_proto::HOP_BY_HOP, &[6, 1, 0, 0]),
            Err(Error::Truncated)
        );
        let mut p = packet(ip_proto::UDP, &[0; 8]);
        p[5] = 9;
        let v = Ipv6Packet::new_checked(&p).unwrap();
        assert_eq!(v.payload(), Err(Error::Truncated));
        assert_eq!(
            Ipv6Packet::new_checked(&p[..39]).unwrap_err(),
            Error::Truncated
        );
        p[0] = 0x40;
        assert_eq!(Ipv6Packet::new_checked(&p).unwrap_err(), Error::Malformed);
    }
}
