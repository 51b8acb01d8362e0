//! Zero-copy, typed views over packet bytes, in the manner of smoltcp's `wire` module.
//!
//! Each view wraps a borrowed byte slice. `new_checked` verifies that every byte an accessor
//! reads is present (and the fields that give lengths are consistent), so accessors never
//! fail and never panic; nothing is copied. Checksums are not verified here: the kernel does
//! that for the packets herd accepts.

pub mod arp;
pub mod ethernet;
pub mod icmp;
pub mod ipv4;
pub mod ipv6;
pub mod tcp;
pub mod udp;

/// Why bytes could not be viewed as a header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// The buffer ends before the header (or the length a header field announces) does.
    Truncated,
    /// A field holds a value the header cannot have (wrong version, impossible length, ...).
    Malformed,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Error::Truncated => "truncated header",
            Error::Malformed => "malformed header",
        })
    }
}

impl std::error::Error for Error {}

/// IP protocol numbers (IPv4 `protocol`, IPv6 `next header`) that the classifier looks at.
pub mod ip_proto {
    /// IPv6 hop-by-hop options.
    pub const HOP_BY_HOP: u8 = 0;
    /// ICMP for IPv4.
    pub const ICMP: u8 = 1;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// IPv6 routing header.
    pub const ROUTING: u8 = 43;
    /// IPv6 fragment header.
    pub const FRAGMENT: u8 = 44;
    /// IPsec authentication header.
    pub const AUTH: u8 = 51;
    /// ICMP for IPv6.
    pub const ICMPV6: u8 = 58;
    /// IPv6 destination options.
    pub const DEST_OPTS: u8 = 60;
}

/// The Internet checksum (RFC 1071) of `bytes`: 0 over a header or message whose checksum
/// field is right.
pub fn checksum(bytes: &[u8]) -> u16 {
    fold(sum(bytes))
}

/// The checksum of a TCP, UDP or ICMPv6 message of IP protocol `protocol` sent from `src` to
/// `dst` (both 4 or both 16 bytes): the Internet checksum over the IPv4 (RFC 793) or IPv6
/// (RFC 8200, 8.1) pseudo-header and `message`, whose checksum field counts as written (zero
/// to compute it; 0 comes out of a right one). Both pseudo-headers sum to the same words.
pub fn transport_checksum(src: &[u8], dst: &[u8], protocol: u8, message: &[u8]) -> u16 {
    fold(pseudo_header_sum(src, dst, protocol, message.len()) + sum(message))
}

/// What a sender whose transmit checksum offload is on leaves in the checksum field of a TCP or
/// UDP message of `length` bytes from `src` to `dst`, for the hardware to finish: the
/// pseudo-header's sum folded into 16 bits, not complemented (Linux's `~csum_tcpudp_magic` and
/// `~csum_ipv6_magic`).
pub fn partial_checksum(src: &[u8], dst: &[u8], protocol: u8, length: usize) -> u16 {
    !fold(pseudo_header_sum(src, dst, protocol, length))
}

/// The words of the IPv4 or IPv6 pseudo-header (both sum to the same words), not folded.
fn pseudo_header_sum(src: &[u8], dst: &[u8], protocol: u8, length: usize) -> u32 {
    let length = length as u32;
    sum(src) + sum(dst) + u32::from(protocol) + (length >> 16) + (length & 0xffff)
}

/// The 16-bit words of `bytes` added up (a last odd byte as the high half of a word), not
/// folded.
fn sum(bytes: &[u8]) -> u32 {
    let mut sum: u32 = 0;
    let mut words = bytes.chunks_exact(2);
    for word in words.by_ref() {
        sum += u32::from(u16::from_be_bytes([word[0], word[1]]));
    }
    if let [last] = words.remainder() {
        sum += u32::from(*last) << 8;
    }
    sum
}

/// A sum of words folded into 16 bits, complemented.
fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[inline(always)]
fn be16(buf: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([buf[at], buf[at + 1]])
}

#[inline(always)]
fn array<const N: usize>(buf: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&buf[at..at + N]);
    out
}

/// The source and destination ports at the start of a TCP or UDP header. Needs only 4 bytes,
/// so it also reads the header quoted (cut to 8 bytes) in an ICMP error.
pub fn transport_ports(buf: &[u8]) -> Result<(u16, u16), Error> {
    if buf.len() < 4 {
        return Err(Error::Truncated);
    }
    Ok((be16(buf, 0), be16(buf, 2)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pseudo-header of RFC 793 (IPv4) or RFC 8200 (IPv6) written out, then the message.
    fn with_pseudo_header(src: &[u8], dst: &[u8], protocol: u8, message: &[u8]) -> Vec<u8> {
        let mut bytes = [src, dst].concat();
        if src.len() == 4 {
            bytes.extend_from_slice(&[0, protocol]);
            bytes.extend_from_slice(&(message.len() as u16).to_be_bytes());
        } else {
            bytes.extend_from_slice(&(message.len() as u32).to_be_bytes());
            bytes.extend_from_slice(&[0, 0, 0, protocol]);
        }
        bytes.extend_from_slice(message);
        bytes
    }

    #[test]
    fn a_partial_checksum_is_the_pseudo_header_sum_folded() {
        let v4 = ([198, 19, 0, 7], [198, 18, 0, 100]);
        let v6 = ([0xfd; 16], [0x20; 16]);
        for (src, dst) in [(&v4.0[..], &v4.1[..]), (&v6.0[..], &v6.1[..])] {
            for protocol in [ip_proto::TCP, ip_proto::UDP] {
                let header = &with_pseudo_header(src, dst, protocol, &[0; 37])[..];
                let header = &header[..header.len() - 37];
                assert_eq!(partial_checksum(src, dst, protocol, 37), !checksum(header));
            }
        }
    }

    #[test]
    fn a_transport_checksum_is_the_checksum_over_the_pseudo_header() {
        let message: Vec<u8> = (0..37u8).map(|i| i.wrapping_mul(53)).collect();
        let v4 = ([198, 19, 0, 7], [198, 18, 0, 100]);
        let v6 = ([0xfd; 16], [0x20; 16]);
        for (src, dst) in [(&v4.0[..], &v4.1[..]), (&v6.0[..], &v6.1[..])] {
            for protocol in [ip_proto::TCP, ip_proto::UDP, ip_proto::ICMPV6] {
                let written = with_pseudo_header(src, dst, protocol, &message);
                assert_eq!(
                    transport_checksum(src, dst, protocol, &message),
                    checksum(&written)
                );
            }
        }
    }
}
