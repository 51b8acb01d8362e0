//! The node's TCP sockets as its kernel lists them (sock_diag, the interface `ss` reads): the
//! connections that still hold a drain, and the VIP ports that have a listener.
//!
//! A connection is the node's while its kernel has a socket for it; counting those sockets
//! is what ends a drain, not a table filled by the packet path. A [`Sockets`] sees the network
//! namespace it was opened in: an application listening in another one (a container) is
//! invisible to it, and [`Sockets::listeners`] is how the daemon notices.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use herd_config::Protocol;
use herd_packet::table::ModeTable;
use herd_packet::FarmRules;
use netlink_packet_core::{
    DoneBuffer, ErrorBuffer, NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload,
    Parseable, NLMSG_DONE, NLMSG_ERROR, NLMSG_NOOP, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_sock_diag::constants::{
    AF_INET, AF_INET6, IPPROTO_TCP, SOCK_DIAG_BY_FAMILY, TCP_SYN_RECV,
};
use netlink_packet_sock_diag::inet::nlas::Nla;
use netlink_packet_sock_diag::inet::{
    ExtensionFlags, InetRequest, InetResponse, InetResponseHeader, SocketId, StateFlags, Timer,
};
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_sys::protocols::NETLINK_SOCK_DIAG;
use netlink_sys::{Socket, SocketAddr as NetlinkAddr};

/// How long the kernel may take to send the next part of a dump before it is given up on:
/// the caller (the membership thread) must not wait for ever.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// The receive buffer: the kernel fills at most 32 KiB per datagram of a dump when the reader
/// offers that much; twice that leaves room to spare, and a longer datagram is an error.
const DATAGRAM: usize = 64 * 1024;

/// The states in which a connection still holds a drain: open, being opened (the SYN-ACK not
/// yet retransmitted, see [`holds_drain`]), or closing with data of either side still in
/// flight. FIN_WAIT2, TIME_WAIT, LISTEN and CLOSE hold nothing of the application's.
fn draining_states() -> StateFlags {
    StateFlags::ESTABLISHED
        | StateFlags::SYN_RECV
        | StateFlags::FIN_WAIT1
        | StateFlags::CLOSE_WAIT
        | StateFlags::CLOSING
        | StateFlags::LAST_ACK
}

/// What went wrong while asking the kernel for its sockets.
#[derive(Debug, thiserror::Error)]
pub enum SocketsError {
    /// The netlink socket could not be opened or set up.
    #[error("cannot open a sock_diag netlink socket: {0}")]
    Open(#[source] io::Error),
    /// The request could not be sent.
    #[error("cannot send the sock_diag request for the {family} TCP sockets: {error}")]
    Send {
        /// `IPv4` or `IPv6`.
        family: &'static str,
        /// Why.
        #[source]
        error: io::Error,
    },
    /// The answer could not be read (including no answer within the timeout).
    #[error("cannot read the kernel's sock_diag answer for the {family} TCP sockets: {error}")]
    Receive {
        /// `IPv4` or `IPv6`.
        family: &'static str,
        /// Why.
        #[source]
        error: io::Error,
    },
    /// The kernel refused the dump (an error message, or an error code at its end).
    #[error("the kernel refused the sock_diag dump of the {family} TCP sockets: {error}")]
    Refused {
        /// `IPv4` or `IPv6`.
        family: &'static str,
        /// The kernel's error.
        #[source]
        error: io::Error,
    },
    /// The answer is not what a sock_diag dump sends.
    #[error("malformed sock_diag answer for the {family} TCP sockets: {what}")]
    Malformed {
        /// `IPv4` or `IPv6`.
        family: &'static str,
        /// What is wrong with it.
        what: String,
    },
}

/// A sock_diag netlink socket of the network namespace it was opened in.
pub struct Sockets {
    socket: Socket,
    /// The sequence number of the last request, which its answers carry.
    sequence: u32,
    buffer: Vec<u8>,
}

impl Sockets {
    /// A socket of the calling thread's network namespace, which it keeps whichever thread
    /// uses it later.
    pub fn open() -> Result<Self, SocketsError> {
        let mut socket = Socket::new(NETLINK_SOCK_DIAG).map_err(SocketsError::Open)?;
        socket.bind_auto().map_err(SocketsError::Open)?;
        socket
            .connect(&NetlinkAddr::new(0, 0))
            .map_err(SocketsError::Open)?;
        socket2::SockRef::from(&socket)
            .set_read_timeout(Some(ANSWER_TIMEOUT))
            .map_err(SocketsError::Open)?;
        Ok(Self {
            socket,
            sequence: 0,
            buffer: vec![0; DATAGRAM],
        })
    }

    /// How many TCP connections of the node still drain under `modes`: those whose local
    /// address is a VIP of `rules` and whose local port has a TCP rule, whose bucket
    /// [`herd_packet::table::BucketMode::drains`], and whose socket holds a drain (see
    /// [`draining_states`]; a half-open one only until its SYN-ACK is retransmitted, so that
    /// port scans and clients that gave up hold nothing). Nothing is asked of the kernel when
    /// no bucket drains.
    pub fn draining_connections(
        &mut self,
        rules: &FarmRules,
        modes: &ModeTable,
    ) -> Result<u64, SocketsError> {
        if !modes.drains() {
            return Ok(0);
        }
        let mut count = 0;
        for family in [AF_INET, AF_INET6] {
            self.dump(family, draining_states(), |payload| {
                let header =
                    InetResponseHeader::parse(payload).map_err(|error| error.to_string())?;
                if holds_drain(&header) && drains(rules, modes, &header.socket_id) {
                    count += 1;
                }
                Ok(())
            })?;
        }
        Ok(count)
    }

    /// The VIP addresses and TCP rule ports of `rules` that have a listening socket in this
    /// namespace, sorted: bound to the VIP, to the wildcard address of its family, or for an
    /// IPv4 VIP to its IPv4-mapped address or to `[::]` without `IPV6_V6ONLY`.
    pub fn listeners(&mut self, rules: &FarmRules) -> Result<Vec<SocketAddr>, SocketsError> {
        let mut found = Vec::new();
        for family in [AF_INET, AF_INET6] {
            self.dump(family, StateFlags::LISTEN, |payload| {
                let response = InetResponse::parse(payload).map_err(|error| error.to_string())?;
                let v6_only = response
                    .nlas
                    .iter()
                    .any(|nla| matches!(nla, Nla::SkV6Only(true)));
                let id = &response.header.socket_id;
                listened(
                    rules,
                    id.source_address,
                    id.source_port,
                    v6_only,
                    &mut found,
                );
                Ok(())
            })?;
        }
        found.sort_unstable();
        found.dedup();
        Ok(found)
    }

    /// Dumps the TCP sockets of `family` in `states`, handing each answer's payload to `each`
    /// (which says what is wrong with one it cannot read), up to the end of the dump.
    fn dump(
        &mut self,
        family: u8,
        states: StateFlags,
        mut each: impl FnMut(&[u8]) -> Result<(), String>,
    ) -> Result<(), SocketsError> {
        let name = if family == AF_INET { "IPv4" } else { "IPv6" };
        let malformed = |what: String| SocketsError::Malformed { family: name, what };
        self.sequence = self.sequence.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        header.sequence_number = self.sequence;
        let request = SockDiagMessage::InetRequest(InetRequest {
            family,
            protocol: IPPROTO_TCP,
            extensions: ExtensionFlags::empty(),
            states,
            socket_id: if family == AF_INET {
                SocketId::new_v4()
            } else {
                SocketId::new_v6()
            },
        });
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(request));
        packet.finalize();
        let mut request = vec![0; packet.buffer_len()];
        packet.serialize(&mut request);
        self.socket
            .send(&request, 0)
            .map_err(|error| SocketsError::Send {
                family: name,
                error,
            })?;

        loop {
            let length = self
                .socket
                .recv(&mut &mut self.buffer[..], libc::MSG_TRUNC)
                .map_err(|error| SocketsError::Receive {
                    family: name,
                    error,
                })?;
            if length > self.buffer.len() {
                return Err(malformed(format!(
                    "a datagram of {length} bytes, longer than the {} read",
                    self.buffer.len()
                )));
            }
            match read_datagram(&self.buffer[..length], self.sequence, &mut each) {
                Ok(false) => {}
                Ok(true) => return Ok(()),
                Err(Fault::Refused(errno)) => {
                    return Err(SocketsError::Refused {
                        family: name,
                        error: io::Error::from_raw_os_error(errno),
                    })
                }
                Err(Fault::Malformed(what)) => return Err(malformed(what)),
            }
        }
    }
}

/// What is wrong with an answer.
#[derive(Debug, PartialEq, Eq)]
enum Fault {
    /// The kernel refused the request with this error number.
    Refused(i32),
    /// The answer is not what a dump sends.
    Malformed(String),
}

/// Reads one datagram of the answer to request `sequence`, handing the payload of each
/// socket's message to `each`; whether the dump ends with it. Messages of other requests
/// (one given up on) are skipped.
fn read_datagram(
    datagram: &[u8],
    sequence: u32,
    each: &mut impl FnMut(&[u8]) -> Result<(), String>,
) -> Result<bool, Fault> {
    let mut rest = datagram;
    while !rest.is_empty() {
        let message = NetlinkBuffer::new_checked(rest)
            .map_err(|error| Fault::Malformed(format!("a truncated message: {error}")))?;
        let payload = message.payload();
        // Messages in a datagram start on four-byte boundaries.
        let next = (message.length() as usize)
            .next_multiple_of(4)
            .min(rest.len());
        let (answers, kind) = (message.sequence_number(), message.message_type());
        rest = &rest[next..];
        if answers != sequence {
            continue;
        }
        match kind {
            SOCK_DIAG_BY_FAMILY => each(payload).map_err(Fault::Malformed)?,
            NLMSG_DONE => {
                let code = DoneBuffer::new_checked(payload)
                    .map_err(|error| Fault::Malformed(format!("a truncated end: {error}")))?
                    .code();
                return match code {
                    0 => Ok(true),
                    code => Err(Fault::Refused(code.saturating_neg())),
                };
            }
            NLMSG_ERROR => {
                let code = ErrorBuffer::new_checked(payload)
                    .map_err(|error| Fault::Malformed(format!("a truncated error: {error}")))?
                    .code();
                return Err(match code {
                    Some(code) => Fault::Refused(code.get().saturating_neg()),
                    None => Fault::Malformed("an acknowledgement instead of a dump".into()),
                });
            }
            NLMSG_NOOP => {}
            other => return Err(Fault::Malformed(format!("a message of type {other}"))),
        }
    }
    Ok(false)
}

/// Whether a socket in one of [`draining_states`] holds a drain: any but a half-open one
/// whose SYN-ACK the kernel has already had to send again.
fn holds_drain(header: &InetResponseHeader) -> bool {
    let retransmitted = matches!(header.timer, Some(Timer::Retransmit(_, sent)) if sent > 0);
    !(header.state == TCP_SYN_RECV && retransmitted)
}

/// Whether the connection of socket `id` is a VIP's, on a TCP rule's port, in a bucket that
/// drains under `modes`. An IPv4 connection to a dual-stack socket shows IPv4-mapped
/// addresses: it is hashed as the IPv4 packets that carry it are.
fn drains(rules: &FarmRules, modes: &ModeTable, id: &SocketId) -> bool {
    let local = unmapped(id.source_address);
    let is_vip = match local {
        IpAddr::V4(address) => rules.is_vip_v4(address.octets()),
        IpAddr::V6(address) => rules.is_vip_v6(address.octets()),
    };
    if !is_vip {
        return false;
    }
    let client = unmapped(id.destination_address);
    match rules.client_flow_hash(Protocol::Tcp, id.source_port, client, id.destination_port) {
        Ok(hash) => modes.mode(modes.bucket_of(hash)).drains(),
        Err(_) => false,
    }
}

/// Adds to `found` the VIP addresses and rule ports that a listener bound to `address` and
/// `port` takes connections for.
fn listened(
    rules: &FarmRules,
    address: IpAddr,
    port: u16,
    v6_only: bool,
    found: &mut Vec<SocketAddr>,
) {
    if rules.affinity(Protocol::Tcp, port).is_none() {
        return;
    }
    let v4: Vec<IpAddr> = rules.vips_v4().iter().map(|&vip| vip.into()).collect();
    let v6: Vec<IpAddr> = rules.vips_v6().iter().map(|&vip| vip.into()).collect();
    let mut add = |vips: &[IpAddr], bound: IpAddr| {
        found.extend(
            vips.iter()
                .filter(|&&vip| bound.is_unspecified() || bound == vip)
                .map(|&vip| SocketAddr::new(vip, port)),
        );
    };
    match unmapped(address) {
        bound @ IpAddr::V4(_) => add(&v4, bound),
        bound @ IpAddr::V6(_) => {
            add(&v6, bound);
            if bound.is_unspecified() && !v6_only {
                add(&v4, Ipv4Addr::UNSPECIFIED.into());
            }
        }
    }
}

/// The IPv4 address an IPv4-mapped IPv6 address stands for; any other address as it is.
fn unmapped(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
        IpAddr::V4(_) => address,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herd_config::Affinity;
    use herd_packet::craft;

    fn rules() -> FarmRules {
        let vips: [IpAddr; 2] = [
            "198.18.0.100".parse().unwrap(),
            "fd00:198:18::100".parse().unwrap(),
        ];
        let config = craft::farm_config(
            &vips,
            64,
            [7; 16],
            2,
            vec![craft::rule(Protocol::Tcp, 80, 81, Affinity::ClientIpPort)],
        );
        FarmRules::from_config(&config)
    }

    fn listened_by(address: &str, port: u16, v6_only: bool) -> Vec<String> {
        let mut found = Vec::new();
        listened(
            &rules(),
            address.parse().unwrap(),
            port,
            v6_only,
            &mut found,
        );
        found.iter().map(ToString::to_string).collect()
    }

    /// A netlink message of `kind` answering request `sequence`.
    fn message(kind: u16, sequence: u32, payload: &[u8]) -> Vec<u8> {
        let mut message = ((16 + payload.len()) as u32).to_ne_bytes().to_vec();
        message.extend_from_slice(&kind.to_ne_bytes());
        message.extend_from_slice(&2u16.to_ne_bytes());
        message.extend_from_slice(&sequence.to_ne_bytes());
        message.extend_from_slice(&[0; 4]);
        message.extend_from_slice(payload);
        message
    }

    /// An established IPv4 socket's message (`struct inet_diag_msg`, no attributes).
    fn socket(sequence: u32) -> Vec<u8> {
        let mut payload = vec![AF_INET, 1, 0, 0];
        payload.resize(72, 0);
        message(SOCK_DIAG_BY_FAMILY, sequence, &payload)
    }

    /// Reads `datagram` as the answer to request 7, parsing each socket as the count does.
    fn read(datagram: &[u8]) -> (Result<bool, Fault>, usize) {
        let mut sockets = 0;
        let result = read_datagram(datagram, 7, &mut |payload| {
            InetResponseHeader::parse(payload).map_err(|error| error.to_string())?;
            sockets += 1;
            Ok(())
        });
        (result, sockets)
    }

    #[test]
    fn a_dump_is_read_to_its_end_and_a_refusal_named() {
        let mut datagram = socket(7);
        datagram.extend(socket(6));
        datagram.extend(message(NLMSG_NOOP, 7, &[]));
        datagram.extend(socket(7));
        assert_eq!(read(&datagram), (Ok(false), 2));
        datagram.extend(message(NLMSG_DONE, 7, &0i32.to_ne_bytes()));
        assert_eq!(read(&datagram), (Ok(true), 2));
        let refused = message(NLMSG_DONE, 7, &(-libc::EINVAL).to_ne_bytes());
        assert_eq!(read(&refused).0, Err(Fault::Refused(libc::EINVAL)));
        let mut error = (-libc::EPERM).to_ne_bytes().to_vec();
        error.extend_from_slice(&[0; 16]);
        assert_eq!(
            read(&message(NLMSG_ERROR, 7, &error)).0,
            Err(Fault::Refused(libc::EPERM))
        );
        assert!(
            matches!(read(&message(99, 7, &[])).0, Err(Fault::Malformed(what)) if what == "a message of type 99")
        );
    }

    #[test]
    fn truncated_or_garbled_answers_are_errors_not_panics() {
        let mut datagram = socket(7);
        let whole = datagram.len();
        datagram.extend(message(NLMSG_DONE, 7, &0i32.to_ne_bytes()));
        for end in 0..datagram.len() {
            let (result, _) = read(&datagram[..end]);
            // Cut between messages, a datagram is whole; anywhere else, not.
            let between = end == 0 || end == whole;
            assert_eq!(result.is_err(), !between, "{end} bytes: {result:?}");
        }
        // A socket's payload cut short, and length fields that lie.
        let short = message(SOCK_DIAG_BY_FAMILY, 7, &[AF_INET, 1, 0, 0, 0]);
        assert!(matches!(read(&short).0, Err(Fault::Malformed(_))));
        for length in [0u32, 15, 1000] {
            let mut lying = socket(7);
            lying[..4].copy_from_slice(&length.to_ne_bytes());
            assert!(
                matches!(read(&lying).0, Err(Fault::Malformed(_))),
                "length {length}"
            );
        }
        // Every byte flipped in turn, and noise.
        for index in 0..datagram.len() {
            let mut flipped = datagram.clone();
            flipped[index] ^= 0xff;
            let _ = read(&flipped);
        }
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..2000 {
            let noise: Vec<u8> = (0..(state % 200) as usize)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            let _ = read(&noise);
        }
    }

    #[test]
    fn a_listener_covers_the_vips_its_address_takes() {
        assert_eq!(listened_by("0.0.0.0", 80, false), ["198.18.0.100:80"]);
        assert_eq!(listened_by("198.18.0.100", 81, false), ["198.18.0.100:81"]);
        assert!(listened_by("198.18.0.1", 80, false).is_empty());
        assert!(listened_by("0.0.0.0", 82, false).is_empty());
        assert_eq!(
            listened_by("::", 80, false),
            ["[fd00:198:18::100]:80", "198.18.0.100:80"]
        );
        assert_eq!(listened_by("::", 80, true), ["[fd00:198:18::100]:80"]);
        assert_eq!(
            listened_by("::ffff:198.18.0.100", 80, true),
            ["198.18.0.100:80"]
        );
        assert_eq!(
            listened_by("fd00:198:18::100", 80, false),
            ["[fd00:198:18::100]:80"]
        );
        assert!(listened_by("fd00:198:18::1", 80, false).is_empty());
    }
}
