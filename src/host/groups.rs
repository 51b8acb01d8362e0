//! The multicast groups of the multicast MAC mode, joined on the interface for as long as herd
//! runs: the kernel then reports them (IGMP, MLD) and answers the queries of the link, so that
//! a snooping switch forwards the VIPs' traffic to the node. No group is sent to or read from:
//! the sockets exist only to hold the memberships, which the kernel drops with them when herd
//! stops or is killed.

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// The memberships, one socket per group.
pub struct Groups {
    _sockets: Vec<OwnedFd>,
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

/// A new unbound UDP socket of `group`'s family, member of `group` on interface `index`.
fn join_one(index: u32, group: IpAddr) -> io::Result<OwnedFd> {
    let family = match group {
        IpAddr::V4(_) => libc::AF_INET,
        IpAddr::V6(_) => libc::AF_INET6,
    };
    // SAFETY: socket() takes no pointers; the result is checked before use.
    let fd = unsafe { libc::socket(family, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor that nothing else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    let joined = match group {
        IpAddr::V4(group) => {
            // ip_mreqn names the interface by index: an address could be on several.
            let request = libc::ip_mreqn {
                imr_multiaddr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(group.octets()),
                },
                imr_address: libc::in_addr { s_addr: 0 },
                imr_ifindex: index as i32,
            };
            set(&socket, libc::IPPROTO_IP, libc::IP_ADD_MEMBERSHIP, &request)
        }
        IpAddr::V6(group) => {
            let request = libc::ipv6_mreq {
                ipv6mr_multiaddr: libc::in6_addr {
                    s6_addr: group.octets(),
                },
                ipv6mr_interface: index,
            };
            set(
                &socket,
                libc::IPPROTO_IPV6,
                libc::IPV6_ADD_MEMBERSHIP,
                &request,
            )
        }
    };
    joined.map(|()| socket)
}

/// Sets socket option `name` of `level` to `value`.
fn set<T>(socket: &OwnedFd, level: i32, name: i32, value: &T) -> io::Result<()> {
    // SAFETY: `value` is a valid, initialised T of the length passed.
    let set = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if set < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
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
