//! ICMP for IPv4 (RFC 792) and ICMPv6 (RFC 4443), with IPv6 neighbour solicitations (RFC 4861).

use super::{array, Error};

/// Length of the ICMP / ICMPv6 header that precedes an error's quoted packet.
pub const HEADER_LEN: usize = 8;
/// Length of a neighbour solicitation up to the end of its target address.
pub const NEIGHBOR_SOLICIT_LEN: usize = 24;

/// ICMPv4 message types the classifier distinguishes.
pub mod v4_type {
    /// Destination unreachable (code 4 is "fragmentation needed": path-MTU discovery).
    pub const DEST_UNREACHABLE: u8 = 3;
    /// Time exceeded.
    pub const TIME_EXCEEDED: u8 = 11;
    /// Parameter problem.
    pub const PARAMETER_PROBLEM: u8 = 12;
}

/// ICMPv6 message types the classifier distinguishes.
pub mod v6_type {
    /// Destination unreachable.
    pub const DEST_UNREACHABLE: u8 = 1;
    /// Packet too big (path-MTU discovery).
    pub const PACKET_TOO_BIG: u8 = 2;
    /// Time exceeded.
    pub const TIME_EXCEEDED: u8 = 3;
    /// Parameter problem.
    pub const PARAMETER_PROBLEM: u8 = 4;
    /// First multicast listener discovery type (130-132 are MLDv1).
    pub const MLD_QUERY: u8 = 130;
    /// Neighbour solicitation.
    pub const NEIGHBOR_SOLICIT: u8 = 135;
    /// Redirect, the last neighbour-discovery type (133-137 are RS, RA, NS, NA, redirect).
    pub const REDIRECT: u8 = 137;
    /// MLDv2 listener report.
    pub const MLD2_REPORT: u8 = 143;
}

/// A view of an ICMP or ICMPv6 message: both start with type, code and checksum.
#[derive(Clone, Copy, Debug)]
pub struct IcmpPacket<'a> {
    buf: &'a [u8],
    /// The header, as an array so that its accessors need no bounds checks.
    header: &'a [u8; HEADER_LEN],
}

impl<'a> IcmpPacket<'a> {
    /// Views `buf` as ICMP/ICMPv6: the 8-byte header present.
    pub fn new_checked(buf: &'a [u8]) -> Result<Self, Error> {
        let header = buf.first_chunk().ok_or(Error::Truncated)?;
        Ok(Self { buf, header })
    }

    /// Message type.
    pub fn msg_type(&self) -> u8 {
        self.header[0]
    }

    /// Message code.
    pub fn code(&self) -> u8 {
        self.header[1]
    }

    /// Whether this ICMPv4 message is an error that quotes the packet it is about.
    pub fn is_v4_error(&self) -> bool {
        matches!(
            self.msg_type(),
            v4_type::DEST_UNREACHABLE | v4_type::TIME_EXCEEDED | v4_type::PARAMETER_PROBLEM
        )
    }

    /// Whether this ICMPv6 message is an error that quotes the packet it is about.
    pub fn is_v6_error(&self) -> bool {
        matches!(
            self.msg_type(),
            v6_type::DEST_UNREACHABLE
                | v6_type::PACKET_TOO_BIG
                | v6_type::TIME_EXCEEDED
                | v6_type::PARAMETER_PROBLEM
        )
    }

    /// Whether this ICMPv6 message is link-local control (neighbour discovery or multicast
    /// listener discovery) that every node's own kernel must see.
    pub fn is_v6_link_control(&self) -> bool {
        matches!(
            self.msg_type(),
            v6_type::MLD_QUERY..=v6_type::REDIRECT | v6_type::MLD2_REPORT
        )
    }

    /// The quoted packet of an error message: the bytes after the 8-byte header.
    pub fn quoted(&self) -> &'a [u8] {
        &self.buf[HEADER_LEN..]
    }

    /// The target address of a well-formed neighbour solicitation (type 135, code 0, long
    /// enough to hold a target), or `None`.
    pub fn solicited_target(&self) -> Option<[u8; 16]> {
        let well_formed = self.msg_type() == v6_type::NEIGHBOR_SOLICIT
            && self.code() == 0
            && self.buf.len() >= NEIGHBOR_SOLICIT_LEN;
        well_formed.then(|| array(self.buf, 8))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_and_control() {
        let frag_needed = [3, 4, 0, 0, 0, 0, 5, 0xdc, 0x45];
        let icmp = IcmpPacket::new_checked(&frag_needed).unwrap();
        assert!(icmp.is_v4_error());
        assert_eq!((icmp.code(), icmp.quoted()), (4, &[0x45][..]));
        let echo = [8, 0, 0, 0, 0, 1, 0, 1];
        assert!(!IcmpPacket::new_checked(&echo).unwrap().is_v4_error());
        let too_big = [2, 0, 0, 0, 0, 0, 5, 0];
        assert!(IcmpPacket::new_checked(&too_big).unwrap().is_v6_error());
        for t in [130, 133, 134, 135, 136, 137, 143] {
            let m = [t, 0, 0, 0, 0, 0, 0, 0];
            assert!(
                IcmpPacket::new_checked(&m).unwrap().is_v6_link_control(),
                "{t}"
            );
        }
        assert!(!IcmpPacket::new_checked(&[128, 0, 0, 0, 0, 0, 0, 0])
            .unwrap()
            .is_v6_link_control());
        assert_eq!(
            IcmpPacket::new_checked(&[3, 4, 0]).unwrap_err(),
            Error::Truncated
        );
    }

    #[test]
    fn neighbor_solicitation() {
        let mut ns = vec![135, 0, 0, 0, 0, 0, 0, 0];
        ns.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]);
        let icmp = IcmpPacket::new_checked(&ns).unwrap();
        assert_eq!(icmp.solicited_target().unwrap()[14], 1);
        assert_eq!(
            IcmpPacket::new_checked(&ns[..23])
                .unwrap()
                .solicited_target(),
            None
        );
        ns[1] = 1;
        assert_eq!(
            IcmpPacket::new_checked(&ns).unwrap().solicited_target(),
            None
        );
    }
}
