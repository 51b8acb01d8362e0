//! The address plan. Every address is from 198.18.0.0/15 (RFC 2544's benchmarking range), one
//! link, or its IPv6 twin in the unique local prefix fd00:198:18::/64, and exists only inside
//! the bed's namespaces: the nodes' own addresses, the VIP, the client's main address and its
//! extra source addresses, the flows' sources.

use std::fmt::{self, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4};
use std::ops::Range;

use anyhow::Context;

use crate::netns::Netns;

/// The prefix length of every IPv4 address: 198.18.0.0/15 is one link.
pub const PREFIX4: u8 = 15;
/// The prefix length of every IPv6 address.
pub const PREFIX6: u8 = 64;
/// The farm's IPv4 VIP.
pub const VIP4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
/// The client's main address.
pub const CLIENT4: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);
/// The most nodes the plan addresses: their addresses stay below the VIP's.
pub const MAX_NODES: usize = 99;
/// The most extra source addresses a client has.
pub const MAX_SOURCES: u8 = 254;

/// The farm's IPv6 VIP, the IPv4 VIP's twin.
pub const VIP6: Ipv6Addr = twin(VIP4);

/// Node `index`'s own address (its heartbeats come from it): 198.18.0.1 for the first.
/// `index` is below [`MAX_NODES`].
pub const fn node4(index: usize) -> Ipv4Addr {
    // Past the last node, the last node's address again.
    let last = if index < MAX_NODES {
        index + 1
    } else {
        MAX_NODES
    };
    Ipv4Addr::new(198, 18, 0, last as u8)
}

/// The client's `i`th extra source address, 198.19.1.`i`, `i` from 1 to [`MAX_SOURCES`].
pub const fn source4(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 19, 1, i)
}

/// One flow from each of the client's first `sources` extra addresses and each port in
/// `ports`, port by port, so that consecutive flows come from different addresses. Callers
/// that must not share a flow take disjoint port ranges.
pub fn flows(ports: Range<u16>, sources: u8) -> impl Iterator<Item = SocketAddrV4> {
    ports.flat_map(move |port| (1..=sources).map(move |i| SocketAddrV4::new(source4(i), port)))
}

/// The IP family a farm's traffic is in: the plan's IPv4 addresses, or their IPv6 twins. The
/// nodes' interfaces have both; a farm of one family has its VIP, its nodes' own addresses and
/// its clients' addresses in that family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// IPv4, 198.18.0.0/15.
    V4,
    /// IPv6, the twins in fd00:198:18::/64.
    V6,
}

impl Family {
    /// The plan address `v4` in this family: itself, or its [`twin`].
    pub const fn of(self, v4: Ipv4Addr) -> IpAddr {
        match self {
            Family::V4 => IpAddr::V4(v4),
            Family::V6 => IpAddr::V6(twin(v4)),
        }
    }

    /// The farm's VIP: [`VIP4`] or [`VIP6`].
    pub const fn vip(self) -> IpAddr {
        self.of(VIP4)
    }

    /// The client's main address.
    pub const fn client(self) -> IpAddr {
        self.of(CLIENT4)
    }

    /// Node `index`'s own address (see [`node4`]).
    pub const fn node(self, index: usize) -> IpAddr {
        self.of(node4(index))
    }

    /// The client's `i`th extra source address (see [`source4`]).
    pub const fn source(self, i: u8) -> IpAddr {
        self.of(source4(i))
    }

    /// The [`flows`] of `ports` and `sources` in this family.
    pub fn flows(self, ports: Range<u16>, sources: u8) -> impl Iterator<Item = SocketAddr> {
        flows(ports, sources).map(move |flow| SocketAddr::new(self.of(*flow.ip()), flow.port()))
    }

    /// The family of `address`.
    pub const fn of_address(address: IpAddr) -> Self {
        match address {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }
}

impl fmt::Display for Family {
    /// `v4` or `v6`, as in a test's or a namespace's name.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "v4",
            Family::V6 => "v6",
        })
    }
}

/// The IPv6 twin of a plan address `a.b.c.d`: fd00:198:18::b:c:d, each of `b`, `c`, `d` written
/// with the same digits, so that the twin reads like the address (198.18.0.100 is
/// fd00:198:18::18:0:100).
pub const fn twin(v4: Ipv4Addr) -> Ipv6Addr {
    let [_, b, c, d] = v4.octets();
    Ipv6Addr::new(
        0xfd00,
        0x198,
        0x18,
        0,
        0,
        same_digits(b),
        same_digits(c),
        same_digits(d),
    )
}

/// Gives `device` in `netns` each of `addresses` and its IPv6 twin, in one `ip -batch` (a
/// client has dozens).
pub fn assign(netns: &Netns, device: &str, addresses: &[Ipv4Addr]) -> anyhow::Result<()> {
    let mut batch = String::new();
    for &address in addresses {
        let _ = writeln!(batch, "addr add {address}/{PREFIX4} dev {device}");
        // nodad: the address is usable at once, with no duplicate detection to wait for.
        let _ = writeln!(
            batch,
            "addr add {}/{PREFIX6} dev {device} nodad",
            twin(address)
        );
    }
    netns
        .ip_batch(&batch)
        .with_context(|| format!("cannot address {device} in {}", netns.name()))
}

/// `n`'s decimal digits read as hexadecimal ones: 100 is 0x100.
const fn same_digits(n: u8) -> u16 {
    let n = n as u16;
    ((n / 100) << 8) | ((n / 10 % 10) << 4) | (n % 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn benchmarking(a: Ipv4Addr) -> bool {
        a.octets()[0] == 198 && a.octets()[1] & 0xfe == 18
    }

    #[test]
    fn every_address_is_in_the_benchmarking_range_and_twins_are_unique_local() {
        let all: Vec<Ipv4Addr> = (0..MAX_NODES)
            .map(node4)
            .chain((1..=MAX_SOURCES).map(source4))
            .chain([VIP4, CLIENT4])
            .collect();
        assert!(all.iter().copied().all(benchmarking));
        let distinct: std::collections::HashSet<_> = all.iter().collect();
        assert_eq!(distinct.len(), all.len(), "no address is used twice");
        let twins: std::collections::HashSet<_> = all.iter().map(|&a| twin(a)).collect();
        assert_eq!(twins.len(), all.len(), "no twin is used twice");
        assert!(twins.iter().all(|t| t.segments()[0] == 0xfd00));
    }

    #[test]
    fn a_twin_reads_like_its_address() {
        assert_eq!(VIP6.to_string(), "fd00:198:18::18:0:100");
        assert_eq!(twin(source4(64)).to_string(), "fd00:198:18::19:1:64");
        assert_eq!(twin(node4(0)).to_string(), "fd00:198:18::18:0:1");
    }

    #[test]
    fn flows_are_distinct_and_interleaved() {
        let flows: Vec<SocketAddrV4> = flows(40000..40002, 64).collect();
        assert_eq!(flows.len(), 128);
        let distinct: std::collections::HashSet<_> = flows.iter().collect();
        assert_eq!(distinct.len(), flows.len());
        assert_ne!(flows[0].ip(), flows[1].ip());
        assert_eq!(flows[64], SocketAddrV4::new(source4(1), 40001));
    }

    #[test]
    fn a_family_gives_the_plan_s_addresses_or_their_twins() {
        assert_eq!(Family::V4.vip(), IpAddr::V4(VIP4));
        assert_eq!(Family::V6.vip(), IpAddr::V6(VIP6));
        assert_eq!(Family::V6.node(2), IpAddr::V6(twin(node4(2))));
        assert_eq!(Family::V6.client(), IpAddr::V6(twin(CLIENT4)));
        let six: Vec<SocketAddr> = Family::V6.flows(40000..40002, 64).collect();
        assert_eq!(six[64], SocketAddr::new(Family::V6.source(1), 40001));
        assert!(six
            .iter()
            .all(|flow| Family::of_address(flow.ip()) == Family::V6));
        assert_eq!(Family::V6.to_string(), "v6");
    }
}
