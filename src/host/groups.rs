//! The multicast groups of the multicast MAC mode, joined on the interface for as long as herd
//! runs: the kernel then reports them (IGMP, MLD) and answers the queries of the link, so that
//! a snooping switch forwards the VIPs' traffic to the node. No group is sent to or read from:
//! the sockets exist only to hold the memberships, which the kernel drops with them when herd
//! stops or is killed.

use std::io;
use std::net::IpAddr;

use socket2::{Domain, InterfaceIndexOrAddress, Socket, Type};

/// The memberships, one socket per group.
pub struct Groups {
    _sockets: Vec<Socket>,
}

impl Groups {
    /// Joins each of `groups` (multicast addresses of either family) on the interface of index
    /// `index`; each group once, however often it is listed.
    pub fn join(index: u32, groups: &[IpAddr]) -> io::Result<Self> {
        let mut joined: Vec<IpAddr> = Vec::new();
        let mut sockets = Vec::new();
        for &group in groups {
            if !joined.contains(&group) {
                sockets.push(join_one(index, group)?);
                joined.push(group);
            }
        }
        Ok(Self { _sockets: sockets })
    }
}

/// A new unbound UDP socket of `group`'s family, member of `group` on interface `index` (named
/// by index: an address could be on several interfaces).
fn join_one(index: u32, group: IpAddr) -> io::Result<Socket> {
    let domain = match group {
        IpAddr::V4(_) => Domain::IPV4,
        IpAddr::V6(_) => Domain::IPV6,
    };
    let socket = Socket::new(domain, Type::DGRAM, None)?;
    match group {
        IpAddr::V4(group) => {
            socket.join_multicast_v4_n(&group, &InterfaceIndexOrAddress::Index(index))?
        }
        IpAddr::V6(group) => socket.join_multicast_v6(&group, index)?,
    }
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_unicast_address_is_refused() {
        // The loopback interface, index 1, exists in every namespace.
        let error = Groups::join(1, &["198.18.0.100".parse().unwrap()])
            .err()
            .expect("not a group");
        assert_eq!(error.raw_os_error(), Some(libc::EINVAL));
    }
}
