//! The socket calls the standard library does not offer: a TCP connection from a chosen source
//! address and port (started without blocking, or given up after a time-out), a UDP socket on
//! an address another socket may have used a moment ago, a raw ICMP or ICMPv6 socket, an accept
//! time-out, `poll`, and the count of the calling thread's namespace's sockets in TIME_WAIT.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{
    self, setsockopt, sockopt, AddressFamily, SockFlag, SockProtocol, SockType, SockaddrStorage,
};
use nix::sys::time::TimeVal;

use crate::address::Family;

/// A new socket of `kind` and `protocol` for addresses of `address`'s family.
fn new_socket(
    address: &SocketAddr,
    kind: SockType,
    flags: SockFlag,
    protocol: Option<SockProtocol>,
) -> io::Result<OwnedFd> {
    let family = match address {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    Ok(socket::socket(
        family,
        kind,
        flags | SockFlag::SOCK_CLOEXEC,
        protocol,
    )?)
}

/// Binds `socket` to `address` (std binds only the sockets it creates).
pub fn bind(socket: &impl AsRawFd, address: SocketAddr) -> io::Result<()> {
    Ok(socket::bind(
        socket.as_raw_fd(),
        &SockaddrStorage::from(address),
    )?)
}

/// A TCP socket bound to `from` whose connection to `to` has been started without blocking:
/// the handshake is over when the socket becomes writable, and [`connect_result`] then says
/// how it went.
pub fn start_connect(from: SocketAddr, to: SocketAddr) -> io::Result<TcpStream> {
    let fd = new_socket(&to, SockType::Stream, SockFlag::SOCK_NONBLOCK, None)?;
    bind(&fd, from)?;
    match socket::connect(fd.as_raw_fd(), &SockaddrStorage::from(to)) {
        Ok(()) | Err(nix::errno::Errno::EINPROGRESS) => Ok(TcpStream::from(fd)),
        Err(error) => Err(error.into()),
    }
}

/// The outcome of a connection started with [`start_connect`] once its socket is writable
/// (or in error): `Ok` when the handshake completed.
pub fn connect_result(stream: &TcpStream) -> io::Result<()> {
    match stream.take_error()? {
        None => Ok(()),
        Some(error) => Err(error),
    }
}

/// A blocking TCP connection from `from` to `to`, given up after `timeout`; reads and writes
/// on it give up after `timeout` too.
pub fn connect(from: SocketAddr, to: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let stream = start_connect(from, to)?;
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        let mut fds = [PollFd::new(stream.as_fd(), PollFlags::POLLOUT)];
        let millis = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
        match nix::poll::poll(&mut fds, millis) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => {}
            Ok(_) => break,
            Err(error) => return Err(error.into()),
        }
    }
    connect_result(&stream)?;
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    Ok(stream)
}

/// A UDP socket bound to `address`, which an earlier socket may have used a moment ago.
/// `SO_REUSEADDR`, because a process forked meanwhile (another test starting herd) holds a
/// copy of every socket open at that moment until it executes, and the copy keeps the address
/// taken after this process has closed its own.
pub fn reused_udp(address: SocketAddr) -> io::Result<UdpSocket> {
    let fd = new_socket(&address, SockType::Datagram, SockFlag::empty(), None)?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    bind(&fd, address)?;
    Ok(UdpSocket::from(fd))
}

/// A raw ICMP socket of `family` (ICMPv6 for IPv6), used through `UdpSocket`'s datagram
/// calls (`send_to`, `recv_from`), which work on any datagram socket; the port of an address is
/// not used. It gets a copy of every ICMP message of its family that reaches its namespace:
/// with the IPv4 header for IPv4, without the header for IPv6. For IPv6 the kernel fills in
/// the checksum of what it sends (RFC 3542), which covers the addresses it chooses.
pub fn icmp_socket(family: Family) -> io::Result<UdpSocket> {
    let (any, protocol) = match family {
        Family::V4 => (IpAddr::from(Ipv4Addr::UNSPECIFIED), SockProtocol::Icmp),
        Family::V6 => (IpAddr::from(Ipv6Addr::UNSPECIFIED), SockProtocol::IcmpV6),
    };
    let any = SocketAddr::new(any, 0);
    let fd = new_socket(&any, SockType::Raw, SockFlag::empty(), Some(protocol))?;
    Ok(UdpSocket::from(fd))
}

/// The ICMP echo request and reply types of each family.
const fn echo_types(family: Family) -> (u8, u8) {
    match family {
        Family::V4 => (8, 0),
        Family::V6 => (128, 129),
    }
}

/// An ICMP echo request of `family` with identifier `id`, sequence number `seq` and `data`,
/// for a raw ICMP socket of that family to send; the IPv4 one has its checksum filled in.
pub fn icmp_echo_request(family: Family, id: u16, seq: u16, data: &[u8]) -> Vec<u8> {
    let mut message = vec![echo_types(family).0, 0, 0, 0];
    message.extend_from_slice(&id.to_be_bytes());
    message.extend_from_slice(&seq.to_be_bytes());
    message.extend_from_slice(data);
    if family == Family::V4 {
        let checksum = herd_packet::wire::checksum(&message);
        message[2..4].copy_from_slice(&checksum.to_be_bytes());
    }
    message
}

/// The identifier and sequence number of an ICMP echo reply of `family` as a raw ICMP socket
/// of that family receives it (after its IPv4 header, or alone for IPv6); `None` for any other
/// packet.
pub fn icmp_echo_reply(family: Family, packet: &[u8]) -> Option<(u16, u16)> {
    let header = match family {
        Family::V4 => usize::from(packet.first()? & 0x0f) * 4,
        Family::V6 => 0,
    };
    let icmp = packet.get(header..header + 8)?;
    (icmp[0] == echo_types(family).1).then(|| {
        (
            u16::from_be_bytes([icmp[4], icmp[5]]),
            u16::from_be_bytes([icmp[6], icmp[7]]),
        )
    })
}

/// Sets the receive time-out of `socket`, which `accept` on a listener obeys too.
pub fn set_receive_timeout(socket: &impl AsFd, timeout: Duration) -> io::Result<()> {
    let seconds = libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX);
    let value = TimeVal::new(seconds, timeout.subsec_micros().into());
    Ok(setsockopt(socket, sockopt::ReceiveTimeout, &value)?)
}

/// `poll(2)` on `fds` for at most `timeout`: how many have events. An interrupted call counts
/// as none.
pub fn poll(fds: &mut [libc::pollfd], timeout: Duration) -> io::Result<usize> {
    let millis = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    let count = libc::nfds_t::try_from(fds.len()).unwrap_or(libc::nfds_t::MAX);
    // SAFETY: `fds` is an array of at least `count` valid pollfd structures.
    let ready = unsafe { libc::poll(fds.as_mut_ptr(), count, millis) };
    if ready < 0 {
        let error = io::Error::last_os_error();
        if error.kind() == io::ErrorKind::Interrupted {
            return Ok(0);
        }
        return Err(error);
    }
    Ok(usize::try_from(ready).unwrap_or(0))
}

/// A poll entry asking for `events` on `socket`.
pub fn pollfd(socket: &impl AsRawFd, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd: socket.as_raw_fd(),
        events,
        revents: 0,
    }
}

/// How many TCP sockets of the calling thread's network namespace are in TIME_WAIT (state 06
/// of the kernel's /proc/net/tcp and tcp6 tables, read for this thread): a witness that does
/// not go through sock_diag, which herd counts its connections with.
pub fn time_wait_sockets() -> io::Result<usize> {
    let mut count = 0;
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/thread-self/net/{table}"))?;
        count += text
            .lines()
            .skip(1)
            .filter(|line| line.split_whitespace().nth(3) == Some("06"))
            .count();
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    #[test]
    fn a_connection_comes_from_the_address_and_port_asked_for() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let to = listener.local_addr().unwrap();
        let from = {
            // A free port: bound, then released.
            let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
            let port = probe.local_addr().unwrap().port();
            SocketAddr::from(([127, 0, 0, 1], port))
        };
        let mut stream = connect(from, to, Duration::from_secs(5)).unwrap();
        let (mut accepted, peer) = listener.accept().unwrap();
        assert_eq!(peer, from);
        stream.write_all(b"ping").unwrap();
        let mut got = [0u8; 4];
        accepted.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ping");
    }

    #[test]
    fn a_refused_connection_says_so() {
        let to = {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap()
        };
        let from = SocketAddr::from(([127, 0, 0, 1], 0));
        let error = connect(from, to, Duration::from_secs(5)).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::ConnectionRefused);
    }

    #[test]
    fn an_address_can_be_bound_again_at_once() {
        let first = reused_udp(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
        let address = first.local_addr().unwrap();
        let second = reused_udp(address).unwrap();
        assert_eq!(second.local_addr().unwrap(), address);
    }

    #[test]
    fn an_echo_request_checks_and_its_reply_is_recognised() {
        let request = icmp_echo_request(Family::V4, 7, 9, b"data");
        assert_eq!(herd_packet::wire::checksum(&request), 0, "a valid checksum");
        // The reply as the raw socket gives it: a 20-byte IPv4 header, then type 0.
        let mut reply = vec![0x45];
        reply.resize(20, 0);
        reply.extend_from_slice(&request);
        reply[20] = 0;
        assert_eq!(icmp_echo_reply(Family::V4, &reply), Some((7, 9)));
        reply[20] = 3;
        assert_eq!(
            icmp_echo_reply(Family::V4, &reply),
            None,
            "not an echo reply"
        );
        assert_eq!(icmp_echo_reply(Family::V4, &reply[..24]), None, "cut short");
    }

    #[test]
    fn an_icmpv6_echo_reply_is_recognised_without_a_header() {
        let mut reply = icmp_echo_request(Family::V6, 7, 9, b"data");
        assert_eq!(reply[0], 128, "an echo request");
        assert_eq!(icmp_echo_reply(Family::V6, &reply), None, "not a reply");
        reply[0] = 129;
        assert_eq!(icmp_echo_reply(Family::V6, &reply), Some((7, 9)));
        assert_eq!(icmp_echo_reply(Family::V6, &reply[..6]), None, "cut short");
    }

    #[test]
    fn an_accept_gives_up_after_the_receive_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        set_receive_timeout(&listener, Duration::from_millis(20)).unwrap();
        let started = Instant::now();
        assert!(listener.accept().is_err());
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
