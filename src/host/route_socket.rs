//! The kernel's routing netlink socket, through which herd reads and changes the interface's
//! link (index, MAC, promiscuous mode, up) and addresses, as `ip` would, without running a
//! program and reading what it prints. The messages are those of `netlink-packet-route`; each
//! request waits for the kernel's answer before the next is sent.

use std::io;
use std::net::IpAddr;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL,
    NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressHeaderFlags, AddressMessage};
use netlink_packet_route::link::{
    AfSpecInet6, AfSpecUnspec, In6AddrGenMode, LinkAttribute, LinkFlags, LinkMessage, LinkXdp,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// An interface as the kernel describes it.
#[derive(Debug, Clone)]
pub struct Link {
    /// Its index.
    pub index: u32,
    /// Its hardware address (six bytes on Ethernet; none on some virtual devices).
    pub address: Vec<u8>,
    /// Whether promiscuous mode was asked for (by herd, `ip` or another such program; a packet
    /// capture's own count does not show here).
    pub promiscuous: bool,
    /// The id of the XDP program attached, if any.
    pub xdp_program: Option<u32>,
}

/// A routing netlink socket.
pub struct RouteSocket {
    socket: Socket,
    /// The sequence number of the last request, which its answers carry.
    sequence: u32,
}

impl RouteSocket {
    /// A socket of the network namespace this thread is in.
    pub fn open() -> io::Result<Self> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        // Dumps then hold only what the request's header selects (one interface's addresses).
        socket.set_netlink_get_strict_chk(true)?;
        Ok(Self {
            socket,
            sequence: 0,
        })
    }

    /// The interface named `name`; the error `ENODEV` when there is none.
    pub fn link(&mut self, name: &str) -> io::Result<Link> {
        let mut request = LinkMessage::default();
        request
            .attributes
            .push(LinkAttribute::IfName(name.to_owned()));
        let answers = self.request(RouteNetlinkMessage::GetLink(request), NLM_F_ACK)?;
        let found = answers.into_iter().find_map(|answer| match answer {
            RouteNetlinkMessage::NewLink(link) => Some(link),
            _ => None,
        });
        let link = found.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "the kernel answered without the interface",
            )
        })?;
        let address = link
            .attributes
            .iter()
            .find_map(|attribute| match attribute {
                LinkAttribute::Address(address) => Some(address.clone()),
                _ => None,
            })
            .unwrap_or_default();
        let xdp_program = link
            .attributes
            .iter()
            .filter_map(|attribute| match attribute {
                LinkAttribute::Xdp(xdp) => Some(xdp),
                _ => None,
            })
            .flatten()
            .find_map(|xdp| match xdp {
                LinkXdp::ProgId(id) if *id != 0 => Some(*id),
                _ => None,
            });
        Ok(Link {
            index: link.header.index,
            address,
            promiscuous: link.header.flags.contains(LinkFlags::Promisc),
            xdp_program,
        })
    }

    /// Turns promiscuous mode of the interface with index `index` on or off.
    pub fn set_promiscuous(&mut self, index: u32, on: bool) -> io::Result<()> {
        let mut request = LinkMessage::default();
        request.header.index = index;
        request.header.change_mask = LinkFlags::Promisc;
        if on {
            request.header.flags = LinkFlags::Promisc;
        }
        self.change(RouteNetlinkMessage::SetLink(request))
    }

    /// Makes the interface named `name` take no IPv6 address of its own (no link-local
    /// address, so no neighbour discovery from it). Nothing to do where IPv6 is off.
    pub fn generate_no_ipv6_address(&mut self, name: &str) -> io::Result<()> {
        let mut request = LinkMessage::default();
        request.attributes = vec![
            LinkAttribute::IfName(name.to_owned()),
            LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(vec![AfSpecInet6::AddrGenMode(
                In6AddrGenMode::None,
            )])]),
        ];
        match self.change(RouteNetlinkMessage::SetLink(request)) {
            Err(error) if error.raw_os_error() == Some(libc::EAFNOSUPPORT) => Ok(()),
            result => result,
        }
    }

    /// Gives the interface named `name` the hardware address `mac` and sets it up.
    pub fn set_address_and_up(&mut self, name: &str, mac: [u8; 6]) -> io::Result<()> {
        let mut request = LinkMessage::default();
        request.header.flags = LinkFlags::Up;
        request.header.change_mask = LinkFlags::Up;
        request.attributes = vec![
            LinkAttribute::IfName(name.to_owned()),
            LinkAttribute::Address(mac.to_vec()),
        ];
        self.change(RouteNetlinkMessage::SetLink(request))
    }

    /// The addresses configured on the interface with index `index`.
    pub fn addresses(&mut self, index: u32) -> io::Result<Vec<IpAddr>> {
        let mut request = AddressMessage::default();
        request.header.index = index;
        let answers = self.request(RouteNetlinkMessage::GetAddress(request), NLM_F_DUMP)?;
        Ok(answers
            .into_iter()
            .filter_map(|answer| match answer {
                RouteNetlinkMessage::NewAddress(address) if address.header.index == index => {
                    local_address(&address)
                }
                _ => None,
            })
            .collect())
    }

    /// Adds `address` alone (a /32 or /128: no route comes with it) to the interface with
    /// index `index`; IPv6 without duplicate address detection. An error of kind
    /// `AlreadyExists` when it is there.
    pub fn add_address(&mut self, index: u32, address: IpAddr) -> io::Result<()> {
        let request = single_address(index, address);
        self.request(
            RouteNetlinkMessage::NewAddress(request),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }

    /// Removes `address` (a /32 or /128) from the interface with index `index`. An error of
    /// kind `AddrNotAvailable` when it is not there.
    pub fn remove_address(&mut self, index: u32, address: IpAddr) -> io::Result<()> {
        self.change(RouteNetlinkMessage::DelAddress(single_address(
            index, address,
        )))
    }

    /// Sends a request that changes something and waits for the kernel's acknowledgement.
    fn change(&mut self, message: RouteNetlinkMessage) -> io::Result<()> {
        self.request(message, NLM_F_ACK).map(drop)
    }

    /// Sends `message` with `flags` and gathers the kernel's answers to it, up to the end of a
    /// dump or the acknowledgement; a refusal is the error it names.
    fn request(
        &mut self,
        message: RouteNetlinkMessage,
        flags: u16,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.sequence = self.sequence.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = self.sequence;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(message));
        packet.finalize();
        let mut buffer = vec![0; packet.buffer_len()];
        packet.serialize(&mut buffer);
        self.socket.send(&buffer, 0)?;

        let mut answers = Vec::new();
        loop {
            let (datagram, _) = self.socket.recv_from_full()?;
            let mut rest = &datagram[..];
            while !rest.is_empty() {
                let answer = NetlinkMessage::<RouteNetlinkMessage>::deserialize(rest)
                    .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))?;
                let length = answer.header.length as usize;
                if length == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "the kernel sent a netlink message of length 0",
                    ));
                }
                // Messages in a datagram start on four-byte boundaries.
                rest = &rest[length.next_multiple_of(4).min(rest.len())..];
                // An answer to an earlier request that was given up on.
                if answer.header.sequence_number != self.sequence {
                    continue;
                }
                match answer.payload {
                    NetlinkPayload::InnerMessage(inner) => answers.push(inner),
                    NetlinkPayload::Done(_) => return Ok(answers),
                    NetlinkPayload::Error(error) => match error.code {
                        None => return Ok(answers),
                        Some(_) => return Err(error.to_io()),
                    },
                    NetlinkPayload::Overrun(_) => {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "the kernel's netlink answer overran",
                        ))
                    }
                    _ => {}
                }
            }
        }
    }
}

/// A message naming `address` alone on the interface with index `index`, as `ip` writes it.
fn single_address(index: u32, address: IpAddr) -> AddressMessage {
    let mut message = AddressMessage::default();
    message.header.index = index;
    match address {
        IpAddr::V4(_) => {
            message.header.family = AddressFamily::Inet;
            message.header.prefix_len = 32;
        }
        IpAddr::V6(_) => {
            message.header.family = AddressFamily::Inet6;
            message.header.prefix_len = 128;
            // The other nodes hold the same address: detection would fail.
            message.header.flags = AddressHeaderFlags::Nodad;
        }
    }
    message.attributes = vec![
        AddressAttribute::Local(address),
        AddressAttribute::Address(address),
    ];
    message
}

/// The interface's own address in an address message: the local one, which differs from
/// the other (the peer's) on a point-to-point link, or the only one.
fn local_address(message: &AddressMessage) -> Option<IpAddr> {
    let find = |local: bool| {
        message
            .attributes
            .iter()
            .find_map(|attribute| match (attribute, local) {
                (AddressAttribute::Local(address), true)
                | (AddressAttribute::Address(address), false) => Some(*address),
                _ => None,
            })
    };
    find(true).or_else(|| find(false))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `f` in a thread of a network namespace of its own, which goes with the thread: the
    /// test changes nothing of the host's. Needs root.
    fn in_own_netns<T: Send>(f: impl FnOnce(RouteSocket) -> T + Send) -> T {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    // SAFETY: unshare takes no pointers; CLONE_NEWNET moves this thread alone.
                    let unshared = unsafe { libc::unshare(libc::CLONE_NEWNET) };
                    assert_eq!(unshared, 0, "a network namespace of its own needs root");
                    f(RouteSocket::open().unwrap())
                })
                .join()
                .unwrap()
        })
    }

    #[test]
    fn links_are_read_and_promiscuous_mode_set() {
        in_own_netns(|mut netlink| {
            let lo = netlink.link("lo").unwrap();
            assert_eq!(lo.index, 1);
            assert_eq!(lo.address, [0; 6]);
            assert!(!lo.promiscuous);
            netlink.set_promiscuous(lo.index, true).unwrap();
            assert!(netlink.link("lo").unwrap().promiscuous);
            netlink.set_promiscuous(lo.index, false).unwrap();
            assert!(!netlink.link("lo").unwrap().promiscuous);
            let missing = netlink.link("herd-no-such").unwrap_err();
            assert_eq!(missing.raw_os_error(), Some(libc::ENODEV), "{missing}");
        });
    }

    #[test]
    fn single_addresses_are_added_listed_and_removed() {
        in_own_netns(|mut netlink| {
            let v4: IpAddr = "198.18.0.7".parse().unwrap();
            let v6: IpAddr = "fd00::7".parse().unwrap();
            assert!(netlink.addresses(1).unwrap().is_empty());
            for address in [v4, v6] {
                netlink.add_address(1, address).unwrap();
                let again = netlink.add_address(1, address).unwrap_err();
                assert_eq!(again.kind(), io::ErrorKind::AlreadyExists, "{again}");
            }
            assert_eq!(netlink.addresses(1).unwrap(), [v4, v6]);
            netlink.remove_address(1, v4).unwrap();
            assert_eq!(netlink.addresses(1).unwrap(), [v6]);
            let gone = netlink.remove_address(1, v4).unwrap_err();
            assert_eq!(gone.kind(), io::ErrorKind::AddrNotAvailable, "{gone}");
            netlink.remove_address(1, v6).unwrap();
            assert!(netlink.addresses(1).unwrap().is_empty());
        });
    }
}
