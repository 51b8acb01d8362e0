//! A SYN flood from spoofed sources: TCP SYNs to a VIP's port, each from a random address of
//! [`SPOOFED4`] or [`SPOOFED6`] (inside the bed's ranges, no host of the bed) and a random
//! port, written by an `AF_PACKET` socket out of a host's veth onto the hub, many frames a
//! system call (`sendmmsg`) and past the queueing discipline (`PACKET_QDISC_BYPASS`). A flood
//! is bounded by a count and a deadline, and says how many SYNs it sent.
//!
//! The nodes answer the spoofed sources through a route of [`sink_replies`], to a host of the
//! bed that forwards nothing (the flooding host), whose kernel drops them: the SYN-ACKs cross
//! the hub and go no further.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use herd_packet::wire::{checksum, ip_proto, transport_checksum};

use crate::address::Family;
use crate::farm::Host;
use crate::netns::Netns;

/// The IPv4 sources a flood spoofs: the upper half of 198.19.0.0/16, where the plan puts no
/// host (the client's addresses are 198.19.0.1 and 198.19.1.x).
pub const SPOOFED4: (Ipv4Addr, u8) = (Ipv4Addr::new(198, 19, 128, 0), 17);
/// The IPv6 sources a flood spoofs: the upper half of fd00:198:18::/64, where no twin of a
/// plan address falls (theirs have 0 in the fifth group).
pub const SPOOFED6: (Ipv6Addr, u8) = (Ipv6Addr::new(0xfd00, 0x198, 0x18, 0, 0x8000, 0, 0, 0), 65);

/// SYNs a `sendmmsg` call writes.
const BATCH: usize = 256;
/// The longest frame: Ethernet, IPv6, TCP with an MSS option.
const MAX_FRAME: usize = 14 + 40 + 24;
/// The MSS the SYNs offer, as a client on Ethernet would.
const MSS: u16 = 1460;

/// What a flood sends, from where, and for how long at most.
#[derive(Clone, Debug)]
pub struct SynFlood {
    /// The flooding host's namespace.
    pub netns: Netns,
    /// Its interface, out of which the frames leave.
    pub interface: String,
    /// The frames' source MAC: the interface's own, so that the hub learns nothing new.
    pub from_mac: [u8; 6],
    /// The frames' destination MAC: the VIP's.
    pub to_mac: [u8; 6],
    /// The VIP and port the SYNs go to; the VIP's family is the sources'.
    pub to: SocketAddr,
    /// The most SYNs sent.
    pub count: u64,
    /// How long the flood lasts at most.
    pub within: Duration,
    /// The most SYNs a second, or `None` for as many as the host can write: a flood that
    /// shares the machine with what it tests leaves it some of the cores.
    pub rate: Option<u64>,
}

/// What a flood sent.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Flooded {
    /// The SYNs the interface took.
    pub sent: u64,
    /// How long sending took.
    pub took: Duration,
}

impl Flooded {
    /// SYNs a second.
    pub fn rate(&self) -> f64 {
        self.sent as f64 / self.took.as_secs_f64().max(1e-9)
    }
}

/// The progress a running flood shares with those that wait on it.
#[derive(Default)]
struct Progress {
    sent: Mutex<u64>,
    grew: Condvar,
    stop: AtomicBool,
}

/// A flood sending on a thread of its own; stopped when dropped.
pub struct Running {
    progress: Arc<Progress>,
    thread: Option<JoinHandle<anyhow::Result<Flooded>>>,
}

impl SynFlood {
    /// Sends until `count` SYNs are sent or `within` has passed, from the calling thread,
    /// which it moves into the flooding host's namespace.
    pub fn send(&self) -> anyhow::Result<Flooded> {
        self.send_reporting(&Progress::default())
    }

    /// Starts sending on a thread of its own.
    pub fn start(self) -> anyhow::Result<Running> {
        let progress = Arc::new(Progress::default());
        let shared = Arc::clone(&progress);
        let thread = std::thread::Builder::new()
            .name("syn-flood".to_owned())
            .spawn(move || self.send_reporting(&shared))
            .context("cannot start the flood's thread")?;
        Ok(Running {
            progress,
            thread: Some(thread),
        })
    }

    fn send_reporting(&self, progress: &Progress) -> anyhow::Result<Flooded> {
        let result = self.send_until_done(progress);
        // Whatever the outcome, those waiting for more are told that no more comes.
        progress.stop.store(true, Ordering::Relaxed);
        progress.grew.notify_all();
        result
    }

    fn send_until_done(&self, progress: &Progress) -> anyhow::Result<Flooded> {
        self.netns.enter()?;
        let socket = PacketSocket::open(&self.interface)?;
        let mut frames = Frames::new(self.from_mac, self.to_mac, self.to);
        let started = Instant::now();
        let until = started + self.within;
        let mut sent = 0;
        while sent < self.count && !progress.stop.load(Ordering::Relaxed) && Instant::now() < until
        {
            let batch = usize::try_from(self.count - sent).map_or(BATCH, |left| left.min(BATCH));
            frames.fill(batch);
            sent += socket.send(&frames.frames[..batch], frames.len)? as u64;
            *progress.sent.lock().unwrap_or_else(PoisonError::into_inner) = sent;
            progress.grew.notify_all();
            if let Some(rate) = self.rate.filter(|&rate| rate > 0) {
                // Paced: the next batch waits until the rate allows what was sent so far.
                let due = started + Duration::from_secs_f64(sent as f64 / rate as f64);
                std::thread::sleep(due.min(until).saturating_duration_since(Instant::now()));
            }
        }
        Ok(Flooded {
            sent,
            took: started.elapsed(),
        })
    }
}

impl Running {
    /// Waits until the flood has sent `count` SYNs, for at most `timeout`; false if it has
    /// not, or has ended short of them.
    pub fn wait_sent(&self, count: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut sent = self
            .progress
            .sent
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        while *sent < count {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.progress.stop.load(Ordering::Relaxed) {
                return false;
            }
            sent = self
                .progress
                .grew
                .wait_timeout(sent, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
    }

    /// Stops the flood and says what it sent.
    pub fn stop(mut self) -> anyhow::Result<Flooded> {
        self.progress.stop.store(true, Ordering::Relaxed);
        let thread = self
            .thread
            .take()
            .context("the flood was stopped already")?;
        thread
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.progress.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Routes the `nodes`' traffic to the spoofed sources of `family` through `sink`, another host
/// on the hub, made to forward nothing: the nodes' SYN-ACKs to those sources then need no
/// neighbour entry each (there would be millions, each resolved in vain), and `sink` drops
/// them.
pub fn sink_replies(nodes: &[Host], sink: &Host, family: Family) -> anyhow::Result<()> {
    sink.netns.write_sysctl("net/ipv4/ip_forward", "0")?;
    sink.netns
        .write_sysctl("net/ipv6/conf/all/forwarding", "0")?;
    let (prefix, flag) = match family {
        Family::V4 => (format!("{}/{}", SPOOFED4.0, SPOOFED4.1), "-4"),
        Family::V6 => (format!("{}/{}", SPOOFED6.0, SPOOFED6.1), "-6"),
    };
    let via = family.of(sink.address).to_string();
    for node in nodes {
        node.netns
            .ip(&[flag, "route", "add", &prefix, "via", &via])
            .with_context(|| format!("cannot route {prefix} via {via} on {}", node.name))?;
    }
    Ok(())
}

/// An `AF_PACKET` socket that writes whole frames out of one interface.
struct PacketSocket {
    fd: OwnedFd,
}

impl PacketSocket {
    /// A socket on `interface` of the calling thread's namespace that receives nothing and
    /// bypasses the interface's queueing discipline.
    fn open(interface: &str) -> anyhow::Result<Self> {
        let name = std::ffi::CString::new(interface).context("an interface name holds a NUL")?;
        // SAFETY: `name` is a NUL-terminated string that outlives the call.
        let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if index == 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("no interface {interface}"));
        }
        // Protocol 0: the socket is only for sending.
        // SAFETY: socket takes no pointers.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(std::io::Error::last_os_error())
                .context("cannot open an AF_PACKET socket (needs CAP_NET_RAW)");
        }
        // SAFETY: `raw` is a socket just opened, owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let bypass: libc::c_int = 1;
        // SAFETY: the option's value is a c_int that outlives the call, of the length given.
        let set = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_QDISC_BYPASS,
                (&bypass as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if set < 0 {
            return Err(std::io::Error::last_os_error()).context("PACKET_QDISC_BYPASS");
        }
        // SAFETY: sockaddr_ll is plain data, for which all zeroes is a valid value.
        let mut address: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        address.sll_family = libc::AF_PACKET as u16;
        address.sll_ifindex = index as i32;
        // SAFETY: `address` is a sockaddr_ll that outlives the call, of the length given.
        let bound = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&address as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if bound < 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("cannot bind an AF_PACKET socket to {interface}"));
        }
        Ok(PacketSocket { fd })
    }

    /// Writes the first `len` bytes of each of `frames`; returns how many frames the
    /// interface took. A full device queue takes none of a call's frames, which is no error:
    /// the flood goes on.
    fn send(&self, frames: &[[u8; MAX_FRAME]], len: usize) -> anyhow::Result<usize> {
        let mut iovecs: Vec<libc::iovec> = frames
            .iter()
            .map(|frame| libc::iovec {
                iov_base: frame.as_ptr() as *mut libc::c_void,
                iov_len: len,
            })
            .collect();
        let mut messages: Vec<libc::mmsghdr> = iovecs
            .iter_mut()
            .map(|iovec| {
                // SAFETY: mmsghdr is plain data, for which all zeroes is a valid value.
                let mut message: libc::mmsghdr = unsafe { std::mem::zeroed() };
                message.msg_hdr.msg_iov = iovec;
                message.msg_hdr.msg_iovlen = 1;
                message
            })
            .collect();
        let count = libc::c_uint::try_from(messages.len()).unwrap_or(libc::c_uint::MAX);
        // SAFETY: `messages` holds `count` headers, each naming one iovec of `iovecs` over a
        // frame of `frames`, all of which outlive the call; the kernel only reads them.
        let sent = unsafe { libc::sendmmsg(self.fd.as_raw_fd(), messages.as_mut_ptr(), count, 0) };
        if sent < 0 {
            let error = std::io::Error::last_os_error();
            return match error.raw_os_error() {
                Some(libc::ENOBUFS | libc::EAGAIN | libc::EINTR) => Ok(0),
                _ => Err(error).context("sendmmsg on the AF_PACKET socket"),
            };
        }
        Ok(sent as usize)
    }
}

/// A batch of SYN frames, each given a fresh random source before it is sent.
struct Frames {
    frames: Vec<[u8; MAX_FRAME]>,
    /// The length of every frame.
    len: usize,
    /// The family of the frames' IP headers.
    family: Family,
    random: XorShift,
}

/// The offset of the IP header in a frame.
const IP: usize = 14;

impl Frames {
    /// Frames from `from_mac` to `to_mac` carrying a SYN to `to`, whose sources are filled in
    /// by [`Frames::fill`].
    fn new(from_mac: [u8; 6], to_mac: [u8; 6], to: SocketAddr) -> Self {
        let family = Family::of_address(to.ip());
        let ip_len = match family {
            Family::V4 => 20,
            Family::V6 => 40,
        };
        let len = IP + ip_len + 24;
        let mut template = [0u8; MAX_FRAME];
        template[..6].copy_from_slice(&to_mac);
        template[6..12].copy_from_slice(&from_mac);
        let ethertype = match to.ip() {
            IpAddr::V4(_) => 0x0800u16,
            IpAddr::V6(_) => 0x86dd,
        };
        template[12..14].copy_from_slice(&ethertype.to_be_bytes());
        let ip = &mut template[IP..];
        match to.ip() {
            IpAddr::V4(to) => {
                ip[0] = 0x45;
                ip[2..4].copy_from_slice(&44u16.to_be_bytes());
                // Don't fragment, as a Linux client sets it.
                ip[6] = 0x40;
                ip[8] = 64;
                ip[9] = ip_proto::TCP;
                ip[16..20].copy_from_slice(&to.octets());
            }
            IpAddr::V6(to) => {
                ip[0] = 0x60;
                ip[4..6].copy_from_slice(&24u16.to_be_bytes());
                ip[6] = ip_proto::TCP;
                ip[7] = 64;
                ip[24..40].copy_from_slice(&to.octets());
            }
        }
        let tcp = &mut template[IP + ip_len..];
        tcp[2..4].copy_from_slice(&to.port().to_be_bytes());
        // A 24-byte header (the MSS option), SYN.
        tcp[12] = 6 << 4;
        tcp[13] = 0x02;
        tcp[14..16].copy_from_slice(&64240u16.to_be_bytes());
        tcp[20..24].copy_from_slice(&[2, 4, (MSS >> 8) as u8, MSS as u8]);
        Frames {
            frames: vec![template; BATCH],
            len,
            family,
            random: XorShift::seeded(),
        }
    }

    /// Gives the first `count` frames each a random spoofed source address and port, and an
    /// initial sequence number, with their checksums.
    fn fill(&mut self, count: usize) {
        for frame in &mut self.frames[..count] {
            let random = self.random.next();
            let port = (random as u16).max(1024);
            let sequence = (random >> 32) as u32;
            match self.family {
                Family::V4 => {
                    let host = (self.random.next() as u32) & (u32::MAX >> SPOOFED4.1);
                    let source = u32::from(SPOOFED4.0) | host;
                    fill_v4(frame, source.to_be_bytes(), port, sequence);
                }
                Family::V6 => {
                    let host =
                        u128::from(self.random.next()) | u128::from(self.random.next()) << 64;
                    let source = u128::from(SPOOFED6.0) | (host & (u128::MAX >> SPOOFED6.1));
                    fill_v6(frame, source.to_be_bytes(), port, sequence);
                }
            }
        }
    }
}

/// An IPv4 SYN's source, port and sequence number, and both checksums.
fn fill_v4(frame: &mut [u8; MAX_FRAME], source: [u8; 4], port: u16, sequence: u32) {
    let ip = IP;
    let tcp = IP + 20;
    frame[ip + 12..ip + 16].copy_from_slice(&source);
    frame[ip + 10..ip + 12].fill(0);
    let header = checksum(&frame[ip..tcp]);
    frame[ip + 10..ip + 12].copy_from_slice(&header.to_be_bytes());
    frame[tcp..tcp + 2].copy_from_slice(&port.to_be_bytes());
    frame[tcp + 4..tcp + 8].copy_from_slice(&sequence.to_be_bytes());
    fill_tcp_checksum(frame, (ip + 12, ip + 16, 4), tcp);
}

/// An IPv6 SYN's source, port and sequence number, and its TCP checksum.
fn fill_v6(frame: &mut [u8; MAX_FRAME], source: [u8; 16], port: u16, sequence: u32) {
    let ip = IP;
    let tcp = IP + 40;
    frame[ip + 8..ip + 24].copy_from_slice(&source);
    frame[tcp..tcp + 2].copy_from_slice(&port.to_be_bytes());
    frame[tcp + 4..tcp + 8].copy_from_slice(&sequence.to_be_bytes());
    fill_tcp_checksum(frame, (ip + 8, ip + 24, 16), tcp);
}

/// The checksum of the 24-byte SYN at `tcp`, whose addresses (`len` bytes each) are at the
/// offsets `src` and `dst` of `frame`.
fn fill_tcp_checksum(
    frame: &mut [u8; MAX_FRAME],
    (src, dst, len): (usize, usize, usize),
    tcp: usize,
) {
    frame[tcp + 16..tcp + 18].fill(0);
    let sum = transport_checksum(
        &frame[src..src + len],
        &frame[dst..dst + len],
        ip_proto::TCP,
        &frame[tcp..tcp + 24],
    );
    frame[tcp + 16..tcp + 18].copy_from_slice(&sum.to_be_bytes());
}

/// xorshift64*: fast, and random enough to spread sources over every bucket; not for secrets.
struct XorShift(u64);

impl XorShift {
    /// Seeded from the clock and the process, so that two floods differ.
    fn seeded() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos() as u64);
        XorShift((nanos ^ u64::from(std::process::id()) << 32) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(to: SocketAddr) -> Frames {
        let mut frames = Frames::new([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2], to);
        frames.fill(BATCH);
        frames
    }

    #[test]
    fn ipv4_syns_come_from_the_spoofed_range_with_right_checksums() {
        let to = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 100)), 82);
        let frames = frames(to);
        for frame in &frames.frames {
            let frame = &frame[..frames.len];
            assert_eq!(checksum(&frame[IP..IP + 20]), 0, "IPv4 header checksum");
            let source = Ipv4Addr::new(frame[26], frame[27], frame[28], frame[29]);
            assert_eq!(source.octets()[..2], [198, 19]);
            assert!(source.octets()[2] >= 128, "{source} is no host of the bed");
            let mut pseudo = frame[26..34].to_vec();
            pseudo.extend_from_slice(&[0, 6, 0, 24]);
            pseudo.extend_from_slice(&frame[34..]);
            assert_eq!(checksum(&pseudo), 0, "TCP checksum");
            assert_eq!(&frame[36..38], &82u16.to_be_bytes());
            assert_eq!(frame[47], 0x02, "a SYN");
        }
    }

    #[test]
    fn ipv6_syns_come_from_the_spoofed_range_with_right_checksums() {
        let vip = crate::address::VIP6;
        let to = SocketAddr::new(IpAddr::V6(vip), 82);
        let frames = frames(to);
        let mut sources = std::collections::HashSet::new();
        for frame in &frames.frames {
            let frame = &frame[..frames.len];
            let source: [u8; 16] = frame[22..38].try_into().unwrap();
            let source = Ipv6Addr::from(source);
            let prefix = u128::from(source) & !(u128::MAX >> SPOOFED6.1);
            assert_eq!(prefix, u128::from(SPOOFED6.0), "{source}");
            sources.insert(source);
            let mut pseudo = frame[22..54].to_vec();
            pseudo.extend_from_slice(&[0, 0, 0, 24, 0, 0, 0, 6]);
            pseudo.extend_from_slice(&frame[54..]);
            assert_eq!(checksum(&pseudo), 0, "TCP checksum");
        }
        assert_eq!(sources.len(), BATCH, "every SYN from another source");
    }
}
