//! `ping`: an ICMP or ICMPv6 echo to an address (the gateway, say) is answered.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use herd_packet::wire::checksum;

use super::{ProbeError, Probed};

/// Sequence numbers of this process's echoes, so that a late answer to an earlier one is not
/// taken for this one's.
static SEQUENCE: AtomicU16 = AtomicU16::new(1);

/// Whether `address` answers an echo request within `timeout`. Needs a raw socket (root or
/// `CAP_NET_RAW`).
pub fn ping(address: IpAddr, timeout: Duration) -> Probed {
    let failed = |error: std::io::Error| ProbeError::new(format!("ping {address}: {error}"));
    let (domain, protocol, request_type, reply_type) = match address {
        IpAddr::V4(_) => (libc::AF_INET, libc::IPPROTO_ICMP, 8, 0),
        IpAddr::V6(_) => (libc::AF_INET6, libc::IPPROTO_ICMPV6, 128, 129),
    };
    // SAFETY: socket takes no pointers.
    let fd = unsafe { libc::socket(domain, libc::SOCK_RAW | libc::SOCK_CLOEXEC, protocol) };
    if fd < 0 {
        return Err(failed(std::io::Error::last_os_error()));
    }
    // SAFETY: `fd` is a socket just opened and owned by nothing else. A raw socket takes
    // sendto and recvfrom as a UDP socket does.
    let socket = UdpSocket::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let id = std::process::id() as u16;
    let sequence = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    let mut request = [0u8; 16];
    request[0] = request_type;
    request[4..6].copy_from_slice(&id.to_be_bytes());
    request[6..8].copy_from_slice(&sequence.to_be_bytes());
    request[8..].copy_from_slice(b"herd-chk");
    if address.is_ipv4() {
        // The kernel fills ICMPv6 checksums itself, not ICMP ones.
        let checksum = checksum(&request);
        request[2..4].copy_from_slice(&checksum.to_be_bytes());
    }
    socket
        .send_to(&request, SocketAddr::new(address, 0))
        .map_err(failed)?;
    let deadline = Instant::now() + timeout;
    let mut buffer = [0u8; 1500];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ProbeError::new(format!(
                "ping {address}: no answer within {timeout:?}"
            )));
        }
        socket.set_read_timeout(Some(left)).map_err(failed)?;
        let (length, from) = match socket.recv_from(&mut buffer) {
            Ok(received) => received,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) => return Err(failed(e)),
        };
        let packet = &buffer[..length];
        // An IPv4 raw socket hands the IP header over too; an IPv6 one does not.
        let icmp = match address {
            IpAddr::V4(_) => packet
                .first()
                .and_then(|&b| packet.get(usize::from(b & 0x0f) * 4..)),
            IpAddr::V6(_) => Some(packet),
        };
        let answered = from.ip() == address
            && icmp.is_some_and(|icmp| {
                icmp.len() >= 8
                    && icmp[0] == reply_type
                    && icmp[4..6] == id.to_be_bytes()
                    && icmp[6..8] == sequence.to_be_bytes()
            });
        if answered {
            return Ok(());
        }
    }
}
