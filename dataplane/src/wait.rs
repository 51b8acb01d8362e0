//! How an AF_XDP worker waits for frames. Two ways, chosen per socket once its first frames
//! have arrived:
//!
//! - [`Waiting::BusyPoll`]: preferred busy polling. The socket asks for it
//!   (`SO_PREFER_BUSY_POLL`, `SO_BUSY_POLL`, `SO_BUSY_POLL_BUDGET`), and the worker runs the
//!   interface's NAPI processing itself, a budget at a time, whenever its ring is empty: the
//!   driver fills the ring only when the worker asks, so the two never compete for the core.
//!   It needs the socket to know its NAPI instance, which the kernel tells once frames came
//!   (`SO_INCOMING_NAPI_ID`). Drivers with AF_XDP support give one; veth in copy mode gives
//!   none (Linux 6.18 registers its XDP queues before their NAPI instances have ids).
//! - [`Waiting::Woken`]: the kernel's NAPI processing fills the ring by itself, in a softirq
//!   or a NAPI thread, often on the worker's own core. The worker then runs at real-time
//!   priority and sleeps in `poll(2)` as soon as its ring is empty: woken, it runs at once
//!   instead of waiting out the NAPI thread's time slice (without this, a NAPI thread kept busy
//!   by a flood left a worker on its core about 1 % of it), and it cannot starve the NAPI
//!   processing, the only thing that fills its ring.

use std::io;
use std::os::fd::RawFd;

use crate::socket_option;

/// `SO_BUSY_POLL`, `SO_INCOMING_NAPI_ID`, `SO_PREFER_BUSY_POLL` and `SO_BUSY_POLL_BUDGET`
/// from `include/uapi/asm-generic/socket.h`: the libc crate has them for some platforms only.
const SO_BUSY_POLL: libc::c_int = 46;
const SO_INCOMING_NAPI_ID: libc::c_int = 56;
const SO_PREFER_BUSY_POLL: libc::c_int = 69;
const SO_BUSY_POLL_BUDGET: libc::c_int = 70;

/// How long a busy-polling syscall polls the NAPI instance before it gives up, in µs: the
/// value the kernel's AF_XDP documentation and sample use.
const BUSY_POLL_US: libc::c_int = 20;

/// The real-time priority of a worker that is woken: under the membership thread's
/// (`herd_membership::driver::RT_PRIORITY`, 2), so that no worker delays a heartbeat.
pub const WORKER_RT_PRIORITY: libc::c_int = 1;

/// How a worker waits for frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Waiting {
    /// The worker drives the NAPI processing of its queue itself.
    BusyPoll,
    /// The kernel fills the ring; the worker sleeps when it is empty.
    Woken,
}

impl Waiting {
    /// Its name in logs and status.
    pub fn label(self) -> &'static str {
        match self {
            Waiting::BusyPoll => "busy polling",
            Waiting::Woken => "woken by the kernel",
        }
    }
}

/// Asks the kernel to let the socket `fd` drive its NAPI instance, `budget` frames at a time.
pub fn prefer_busy_poll(fd: RawFd, budget: u16) -> io::Result<()> {
    socket_option::set(fd, libc::SOL_SOCKET, SO_PREFER_BUSY_POLL, 1)?;
    socket_option::set(fd, libc::SOL_SOCKET, SO_BUSY_POLL, BUSY_POLL_US)?;
    socket_option::set(
        fd,
        libc::SOL_SOCKET,
        SO_BUSY_POLL_BUDGET,
        libc::c_int::from(budget),
    )
}

/// The id of the NAPI instance that delivered the socket's frames, 0 if none is known.
pub fn napi_id(fd: RawFd) -> io::Result<u32> {
    let mut id: u32 = 0;
    let mut len = std::mem::size_of_val(&id) as libc::socklen_t;
    // SAFETY: `id` and `len` are valid for writes and `len` holds the size of `id`.
    let result = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            SO_INCOMING_NAPI_ID,
            (&mut id as *mut u32).cast(),
            &mut len,
        )
    };
    if result != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(id)
}

/// Runs the socket's NAPI instance once, up to its budget, without sleeping: an empty
/// non-blocking receive, which is how AF_XDP sockets busy-poll.
#[inline]
pub fn drive_napi(fd: RawFd) {
    // SAFETY: a receive of 0 bytes into no buffer, with no address asked for, writes nothing.
    // Its result carries nothing: the frames, if any, arrive in the RX ring.
    unsafe {
        libc::recvfrom(
            fd,
            std::ptr::null_mut(),
            0,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    };
}

/// Moves the calling thread to the real-time class at [`WORKER_RT_PRIORITY`], or failing
/// that (no CAP_SYS_NICE, a container without real-time budget) to nice -20. Returns what
/// was refused, if anything.
pub fn run_promptly() -> Result<(), io::Error> {
    let param = libc::sched_param {
        sched_priority: WORKER_RT_PRIORITY,
    };
    // SAFETY: `param` is a valid sched_param; pid 0 is the calling thread.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) } == 0 {
        return Ok(());
    }
    let refused = io::Error::last_os_error();
    // SAFETY: setpriority has no memory preconditions; who 0 with PRIO_PROCESS is the caller
    // (on Linux, the calling thread).
    unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, -20) };
    Err(refused)
}
