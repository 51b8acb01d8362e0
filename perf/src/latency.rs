//! The latency of accepted packets: a UDP socket on a VIP in the receiver's namespace reads
//! what the contender let through, and each datagram's age is the time since the generator
//! stamped it (both clocks are CLOCK_MONOTONIC): the delay an application on the node sees,
//! socket queueing included.

use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::Context;
use core_affinity::CoreId;
use hdrhistogram::Histogram;
use herd_packet::clock::now_ns;
use herd_testbed::Netns;

use crate::sched;

/// The longest latency recorded exactly; longer ones count as this.
const MAX_NS: u64 = 60_000_000_000;
/// How long a read waits before looking at the `done` flag again.
const POLL: Duration = Duration::from_millis(50);

/// Where and while [`read`] reads.
pub struct Listen<'a> {
    /// The receiver's namespace.
    pub netns: &'a Netns,
    /// The VIP and port to bind.
    pub addr: SocketAddr,
    /// The core the reader is pinned to (the receiver's).
    pub core: usize,
    /// Latencies are recorded while it is set.
    pub recording: &'a AtomicBool,
    /// Set to stop reading.
    pub done: &'a AtomicBool,
    /// Where the reader sends its thread id once it listens, so that its CPU time can be
    /// counted with the receiver's.
    pub started: mpsc::Sender<libc::pid_t>,
}

/// An empty histogram of latencies in nanoseconds, 3 significant digits.
pub fn histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, MAX_NS, 3).context("cannot create a latency histogram")
}

/// Reads datagrams on `listen.addr` from the calling thread, which it moves into the
/// receiver's namespace, until `listen.done` is set; returns the latencies recorded.
pub fn read(listen: Listen<'_>) -> anyhow::Result<Histogram<u64>> {
    listen.netns.enter()?;
    // Not fatal: the reader then competes with the generator instead of with the receiver.
    if !core_affinity::set_for_current(CoreId { id: listen.core }) {
        tracing::warn!("cannot pin the latency reader to core {}", listen.core);
    }
    sched::prompt()?;
    let socket = UdpSocket::bind(listen.addr)
        .with_context(|| format!("cannot bind a latency socket to {}", listen.addr))?;
    socket.set_read_timeout(Some(POLL))?;
    // The send fails only once the harness has given up waiting for the readers, which then
    // stops them through `done`.
    let _ = listen.started.send(sched::current());
    let mut latencies = histogram()?;
    let mut batch = Batch::new();
    while !listen.done.load(Ordering::Relaxed) {
        match batch.receive(&socket) {
            Ok(stamps) => {
                if listen.recording.load(Ordering::Relaxed) {
                    // The datagrams of a batch all reached the application now.
                    let now = now_ns(libc::CLOCK_MONOTONIC);
                    for stamp in stamps {
                        latencies.saturating_record(now.saturating_sub(stamp).max(1));
                    }
                }
            }
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(error) => {
                return Err(error).with_context(|| format!("reading {}", listen.addr));
            }
        }
    }
    Ok(latencies)
}

/// Datagrams read at most per system call.
const BATCH: usize = 64;
/// Bytes kept of each datagram: the send time; the rest is cut off.
const KEPT: usize = 8;

/// Buffers for reading many datagrams with one `recvmmsg`, so that the reader keeps up with
/// the hundreds of thousands of packets per second a contender accepts.
struct Batch {
    buffers: Box<[[u8; KEPT]; BATCH]>,
    lengths: [usize; BATCH],
}

impl Batch {
    fn new() -> Self {
        Self {
            buffers: Box::new([[0; KEPT]; BATCH]),
            lengths: [0; BATCH],
        }
    }

    /// Waits for at least one datagram (up to the socket's read timeout), then takes what is
    /// queued, up to [`BATCH`]; returns the send times of those long enough to carry one.
    fn receive(&mut self, socket: &UdpSocket) -> std::io::Result<impl Iterator<Item = u64> + '_> {
        // SAFETY: iovec is plain data; every field is set below.
        let mut iovecs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
        for (iovec, buffer) in iovecs.iter_mut().zip(self.buffers.iter_mut()) {
            iovec.iov_base = buffer.as_mut_ptr().cast();
            iovec.iov_len = KEPT;
        }
        // SAFETY: mmsghdr is plain data for which zeros mean "no name, no control data".
        let mut messages: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for (message, iovec) in messages.iter_mut().zip(iovecs.iter_mut()) {
            message.msg_hdr.msg_iov = iovec;
            message.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: `messages` holds BATCH headers, each pointing to one iovec of `iovecs`, each
        // pointing to KEPT writable bytes of `self.buffers`; all outlive the call. A null
        // timeout leaves the waiting to the socket's read timeout.
        let received = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                messages.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        // A negative count is an error; any other fits in usize.
        let received = usize::try_from(received).map_err(|_| std::io::Error::last_os_error())?;
        for (length, message) in self.lengths.iter_mut().zip(&messages[..received]) {
            *length = message.msg_len as usize;
        }
        Ok(self.buffers[..received]
            .iter()
            .zip(self.lengths)
            .filter(|(_, length)| *length >= KEPT)
            .map(|(buffer, _)| u64::from_ne_bytes(*buffer)))
    }
}
