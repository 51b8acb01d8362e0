//! The way back from an AF_XDP worker to the kernel's stack. A frame taken from an AF_XDP
//! socket cannot be given back to the interface it came from, so a worker writes the frames it
//! accepts into a second device whose receive path is the stack: a TAP device (one queue per
//! worker), or one end of a veth pair whose other end receives them. A worker hands off the
//! accepted frames of a batch at once ([`Port::send_batch`]); how a batch is written is the
//! port's [`Submit`], and the ways were measured against each other with `herd-perf handoff`.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use io_uring::{opcode, types, IoUring};

use crate::socket_option;

/// The most frames a port writes with one system call; a longer batch takes several.
const BATCH_CAPACITY: usize = 256;

/// How the kernel receives what a TAP queue is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TapReceive {
    /// Each frame goes up the stack inside the `write(2)` that brings it.
    Direct,
    /// `IFF_NAPI`: the queue has a NAPI context of its own, which takes the frames through
    /// GRO.
    Napi,
    /// `IFF_NAPI | IFF_NAPI_FRAGS`: as [`TapReceive::Napi`], the frame built in page fragments
    /// (`napi_gro_frags`).
    NapiFrags,
}

/// How a port writes a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Submit {
    /// One system call per frame: `write(2)` to a TAP queue, `send(2)` on a packet socket.
    Each,
    /// One system call per batch: the writes go through an io_uring submission queue (a TAP
    /// queue), or `sendmmsg(2)` (a packet socket).
    Batch,
}

/// What became of a batch handed to [`Port::send_batch`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sent {
    /// Frames the device took.
    pub handed_off: u64,
    /// Frames it refused (a full backlog, a frame too short for it).
    pub refused: u64,
}

/// Where a worker writes the frames it hands to the stack: a TAP queue, or a packet socket
/// bound to the sending end of a veth pair.
#[derive(Debug)]
pub struct Port {
    // Before the descriptor, so that it goes first: nothing writes to a closed descriptor.
    writer: Writer,
    fd: OwnedFd,
}

/// How a port's frames reach its descriptor, with what that reuses from batch to batch.
enum Writer {
    /// `write(2)`, one frame at a time.
    Each,
    /// An io_uring whose submission queue holds a batch of writes.
    Uring(Box<IoUring>),
    /// The message headers of `sendmmsg(2)`.
    Messages(Box<Messages>),
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Writer::Each => "Each",
            Writer::Uring(_) => "Uring",
            Writer::Messages(_) => "Messages",
        })
    }
}

/// The headers and vectors of one `sendmmsg(2)`, kept between calls so that a batch allocates
/// nothing. Their pointers are set at the start of each call and used only during it.
struct Messages {
    headers: Vec<libc::mmsghdr>,
    vectors: Vec<libc::iovec>,
}

// SAFETY: the raw pointers in the headers and vectors point at frames only during a call of
// `Port::send_batch`, which borrows them; between calls they are never read, so the buffers
// may move to another thread with the port.
unsafe impl Send for Messages {}

impl Messages {
    fn new() -> Self {
        // SAFETY: mmsghdr and iovec are plain data, valid when zeroed.
        let (header, vector) = unsafe { (std::mem::zeroed(), std::mem::zeroed()) };
        Self {
            headers: vec![header; BATCH_CAPACITY],
            vectors: vec![vector; BATCH_CAPACITY],
        }
    }
}

impl Port {
    /// Hands a batch of frames to the stack, counting what the device took and refused.
    /// Allocates nothing: each port reuses its buffers.
    pub fn send_batch<'f>(&mut self, frames: impl IntoIterator<Item = &'f [u8]>) -> Sent {
        let fd = self.fd.as_raw_fd();
        let mut sent = Sent::default();
        match &mut self.writer {
            Writer::Each => {
                for frame in frames {
                    sent.count(write(fd, frame).is_ok());
                }
            }
            Writer::Uring(ring) => {
                let mut frames = frames.into_iter().peekable();
                while frames.peek().is_some() {
                    if let Err(error) = submit_writes(ring, fd, &mut frames, &mut sent) {
                        tracing::warn!(
                            "the io_uring of a hand-off queue failed ({error}); the queue is \
                             written one frame at a time from now on"
                        );
                        self.writer = Writer::Each;
                        for frame in frames {
                            sent.count(write(fd, frame).is_ok());
                        }
                        break;
                    }
                }
            }
            Writer::Messages(messages) => {
                let mut frames = frames.into_iter().peekable();
                while frames.peek().is_some() {
                    send_messages(messages, fd, &mut frames, &mut sent);
                }
            }
        }
        sent
    }

    /// `queues` queues of a new multi-queue TAP device `name` (it exists while one of them is
    /// open, and goes when herd exits, however it exits), received as `receive` says and
    /// written as `submit` says. Where the kernel refuses io_uring (`kernel.io_uring_disabled`,
    /// seccomp), the queues are written one frame at a time and a log line says so. The frames
    /// written to the device need its MAC as their destination, or the stack takes them for
    /// another host's.
    pub fn tap(
        name: &str,
        queues: usize,
        receive: TapReceive,
        submit: Submit,
    ) -> io::Result<Vec<Port>> {
        let name = interface_name(name)?;
        (0..queues)
            .map(|_| {
                let fd = tap_queue(&name, receive)?;
                let writer = match submit {
                    Submit::Each => Writer::Each,
                    Submit::Batch => match IoUring::new(BATCH_CAPACITY as u32) {
                        Ok(ring) => Writer::Uring(Box::new(ring)),
                        Err(error) => {
                            tracing::warn!(
                                device = ?name,
                                "the kernel refuses io_uring ({error}); the TAP queue is \
                                 written one frame at a time"
                            );
                            Writer::Each
                        }
                    },
                };
                Ok(Port { writer, fd })
            })
            .collect()
    }

    /// `count` packet sockets that send out of the interface with index `ifindex` (the sending
    /// end of a veth pair), written as `submit` says; with `qdisc_bypass` their frames skip
    /// the interface's queueing discipline (`PACKET_QDISC_BYPASS`).
    pub fn packet(
        ifindex: u32,
        count: usize,
        submit: Submit,
        qdisc_bypass: bool,
    ) -> io::Result<Vec<Port>> {
        (0..count)
            .map(|_| {
                let fd = packet_socket(ifindex, 0)?;
                if qdisc_bypass {
                    socket_option::set(
                        fd.as_raw_fd(),
                        libc::SOL_PACKET,
                        libc::PACKET_QDISC_BYPASS,
                        1,
                    )?;
                }
                let writer = match submit {
                    Submit::Each => Writer::Each,
                    Submit::Batch => Writer::Messages(Box::new(Messages::new())),
                };
                Ok(Port { writer, fd })
            })
            .collect()
    }
}

impl Sent {
    fn count(&mut self, taken: bool) {
        if taken {
            self.handed_off += 1;
        } else {
            self.refused += 1;
        }
    }
}

/// Writes one frame to `fd`.
fn write(fd: libc::c_int, frame: &[u8]) -> io::Result<()> {
    // SAFETY: `frame` is valid for reads of its length during the call.
    if unsafe { libc::write(fd, frame.as_ptr().cast(), frame.len()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Queues up to a ring's worth of `frames` as writes to `fd`, submits them with one system
/// call and counts their completions into `sent`. Returns only once every write it queued has
/// completed, so that none outlives its frame's borrow; an error means the ring no longer
/// works, and the caller must drop it, which keeps the kernel from reading what it still holds.
fn submit_writes<'f>(
    ring: &mut IoUring,
    fd: libc::c_int,
    frames: &mut impl Iterator<Item = &'f [u8]>,
    sent: &mut Sent,
) -> io::Result<()> {
    let mut queued = 0;
    {
        let mut submission = ring.submission();
        while !submission.is_full() {
            let Some(frame) = frames.next() else { break };
            let Ok(len) = u32::try_from(frame.len()) else {
                sent.refused += 1;
                continue;
            };
            let write = opcode::Write::new(types::Fd(fd), frame.as_ptr(), len).build();
            // SAFETY: the frame stays borrowed until its completion is reaped below, before
            // this function returns; the queue is not full, so the entry is taken.
            let _ = unsafe { submission.push(&write) };
            queued += 1;
        }
    }
    let mut reaped = 0;
    while reaped < queued {
        if let Err(error) = ring.submit_and_wait(queued - reaped) {
            // Interrupted, or the completion queue was full: the writes go on, so wait again.
            let again = error.kind() == io::ErrorKind::Interrupted
                || matches!(error.raw_os_error(), Some(libc::EAGAIN | libc::EBUSY));
            if !again {
                sent.refused += (queued - reaped) as u64;
                return Err(error);
            }
        }
        for completion in ring.completion() {
            sent.count(completion.result() >= 0);
            reaped += 1;
        }
    }
    Ok(())
}

/// Sends up to [`BATCH_CAPACITY`] of `frames` on the packet socket `fd` with `sendmmsg(2)`,
/// counting into `sent`. The kernel stops a call at the first frame it refuses; that frame is
/// counted as refused and the rest go in the next call.
fn send_messages<'f>(
    messages: &mut Messages,
    fd: libc::c_int,
    frames: &mut impl Iterator<Item = &'f [u8]>,
    sent: &mut Sent,
) {
    let Messages { headers, vectors } = messages;
    let mut filled = 0;
    for ((header, vector), frame) in headers.iter_mut().zip(vectors.iter_mut()).zip(frames) {
        *vector = libc::iovec {
            iov_base: frame.as_ptr().cast_mut().cast(),
            iov_len: frame.len(),
        };
        header.msg_hdr.msg_iov = vector;
        header.msg_hdr.msg_iovlen = 1;
        filled += 1;
    }
    let mut done = 0;
    while done < filled {
        let pending = &mut headers[done..filled];
        // SAFETY: each header points at one vector, which points at a frame borrowed for this
        // whole call; the kernel reads `pending.len()` headers and writes their `msg_len`.
        let count =
            unsafe { libc::sendmmsg(fd, pending.as_mut_ptr(), pending.len() as libc::c_uint, 0) };
        match usize::try_from(count) {
            Ok(count) => {
                sent.handed_off += count as u64;
                done += count;
            }
            Err(_) if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                sent.refused += 1;
                done += 1;
            }
        }
    }
}

/// Opens a queue of the multi-queue TAP device `name`, creating the device with the first.
fn tap_queue(name: &CString, receive: TapReceive) -> io::Result<OwnedFd> {
    // SAFETY: the path is a NUL-terminated string; the result is checked before use.
    let fd = unsafe { libc::open(c"/dev/net/tun".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd < 0 {
        let error = io::Error::last_os_error();
        return Err(io::Error::new(
            error.kind(),
            format!("cannot open /dev/net/tun: {error}"),
        ));
    }
    // SAFETY: `fd` is a new descriptor that nothing else owns.
    let queue = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain data, valid when zeroed.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (to, &from) in request.ifr_name.iter_mut().zip(name.as_bytes()) {
        *to = from as libc::c_char;
    }
    let napi = match receive {
        TapReceive::Direct => 0,
        TapReceive::Napi => libc::IFF_NAPI,
        TapReceive::NapiFrags => libc::IFF_NAPI | libc::IFF_NAPI_FRAGS,
    };
    request.ifr_ifru.ifru_flags =
        (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_MULTI_QUEUE | napi) as i16;
    // SAFETY: TUNSETIFF reads an ifreq, which `request` is, and writes the name back.
    if unsafe { libc::ioctl(queue.as_raw_fd(), libc::TUNSETIFF, &mut request) } < 0 {
        let error = io::Error::last_os_error();
        return Err(io::Error::new(
            error.kind(),
            format!("cannot create TAP device {name:?} ({receive:?}): {error}"),
        ));
    }
    Ok(queue)
}

/// A raw packet socket bound to the interface with index `ifindex`, receiving frames of
/// `protocol` (an EtherType in network byte order; 0 for a socket that only sends).
pub fn packet_socket(ifindex: u32, protocol: u16) -> io::Result<OwnedFd> {
    // SAFETY: socket() takes no pointers; the result is checked before use.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            i32::from(protocol),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor that nothing else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_ll is plain data, valid when zeroed.
    let mut address: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    address.sll_family = libc::AF_PACKET as u16;
    address.sll_protocol = protocol;
    address.sll_ifindex = ifindex as i32;
    // SAFETY: `address` is a valid sockaddr_ll of the length passed.
    let bound = unsafe {
        libc::bind(
            socket.as_raw_fd(),
            (&address as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if bound < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(socket)
}

/// `name` as the kernel takes an interface name: at most 15 bytes, no NUL.
fn interface_name(name: &str) -> io::Result<CString> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?}: an interface name has 1 to 15 bytes"),
        ));
    }
    CString::new(name).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?}: an interface name has no NUL byte"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_are_checked_before_the_kernel_sees_them() {
        assert!(interface_name("herd-eth0").is_ok());
        assert!(interface_name("").is_err());
        assert!(interface_name("a-name-too-long!").is_err());
        assert!(interface_name("nul\0").is_err());
    }
}
