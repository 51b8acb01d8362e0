//! What the node's kernel says of a TCP connection: whether it serves it. Step 6 of the rules
//! (see [`mod@crate::classify`]) asks for a segment in a bucket whose mode keeps known
//! connections, so that a bucket moving away keeps exactly the connections the node's kernel
//! still has, however many SYNs the node took since they started.
//!
//! The in-kernel mode asks the kernel from the eBPF program (`bpf_skc_lookup_tcp`,
//! `bpf_tcp_check_syncookie`); in the AF_XDP mode the redirect program asks and puts the answer
//! in front of the frame it hands the worker ([`Served::from_prefix`]).

use crate::flows::Connection;

/// The kernel's answer for one segment's connection: a set of the bits below.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Served(u8);

impl Served {
    /// Nothing: no socket, no cookie.
    pub const NOTHING: Served = Served(0);
    /// The kernel has a socket for the connection's 4-tuple in a state other than LISTEN and
    /// TIME_WAIT: an established connection, one closing, or a handshake under way (a request
    /// socket).
    pub const SOCKET: Served = Served(1);
    /// The segment is an ACK that completes a SYN-cookie handshake of the node's listener on
    /// the VIP port: the node answered the SYN with a cookie and keeps no socket for it yet.
    pub const COOKIE: Served = Served(2);

    /// Whether every bit of `bits` is set.
    #[inline(always)]
    pub const fn contains(self, bits: Served) -> bool {
        self.0 & bits.0 == bits.0
    }

    /// The answer the redirect program put in front of a frame (`prepend_answer` in
    /// herd.bpf.c): a 32-bit word in the machine's byte order, of which only the bits above
    /// count.
    #[inline(always)]
    pub const fn from_prefix(prefix: [u8; 4]) -> Self {
        Served(u32::from_ne_bytes(prefix) as u8 & (Self::SOCKET.0 | Self::COOKIE.0))
    }
}

impl std::ops::BitOr for Served {
    type Output = Served;

    fn bitor(self, other: Served) -> Served {
        Served(self.0 | other.0)
    }
}

/// Where step 6 asks whether the node serves a connection.
pub trait Kernel {
    /// What the kernel says of `connection`, whose segment is being classified.
    fn served(&self, connection: &Connection) -> Served;
}

/// A kernel that serves no connection: what tools and tests without sockets classify against.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoSockets;

impl Kernel for NoSockets {
    #[inline(always)]
    fn served(&self, _: &Connection) -> Served {
        Served::NOTHING
    }
}

/// One answer for every connection: what the AF_XDP worker has for the frame in hand.
impl Kernel for Served {
    #[inline(always)]
    fn served(&self, _: &Connection) -> Served {
        *self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_gives_its_two_bits_only() {
        let prefix = |word: u32| Served::from_prefix(word.to_ne_bytes());
        assert_eq!(prefix(0), Served::NOTHING);
        assert_eq!(prefix(1), Served::SOCKET);
        assert_eq!(prefix(2), Served::COOKIE);
        assert_eq!(prefix(0xffff_ff07), Served::SOCKET | Served::COOKIE);
        assert!(!Served::SOCKET.contains(Served::COOKIE));
    }
}
