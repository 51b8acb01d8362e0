//! The socket calls the standard library does not offer: a TCP connection from a chosen
//! source address and port, started without blocking, and `poll`.

use std::io;
use std::net::{SocketAddrV4, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// A TCP socket bound to `from` whose connection to `to` has been started without blocking
/// (the handshake completes when the socket becomes writable).
pub fn start_connect(from: SocketAddrV4, to: SocketAddrV4) -> io::Result<OwnedFd> {
    // SAFETY: socket takes no pointers.
    let fd = sys(unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    })?;
    // SAFETY: `fd` was just opened and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let source = sockaddr(from);
    // SAFETY: `source` is a valid sockaddr_in and the length is its size.
    sys(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&raw const source).cast(),
            size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    })?;
    let target = sockaddr(to);
    // SAFETY: `target` is a valid sockaddr_in and the length is its size.
    let started = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&raw const target).cast(),
            size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if started != 0 {
        let error = io::Error::last_os_error();
        if error.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(error);
        }
    }
    Ok(fd)
}

/// The outcome of a connection started with [`start_connect`] once its socket is writable
/// (or in error): `Ok` when the handshake completed.
pub fn connect_result(fd: &impl AsRawFd) -> io::Result<()> {
    let mut error: libc::c_int = 0;
    let mut length = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `error` and `length` are valid for writes and `length` holds `error`'s size.
    sys(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&raw mut error).cast(),
            &raw mut length,
        )
    })?;
    if error == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(error))
    }
}

/// A blocking TCP connection from `from` to `to`, given up after `timeout`; reads on it give
/// up after `timeout` too.
pub fn connect(from: SocketAddrV4, to: SocketAddrV4, timeout: Duration) -> io::Result<TcpStream> {
    let fd = start_connect(from, to)?;
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        let mut fds = [libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLOUT,
            revents: 0,
        }];
        if poll(&mut fds, left)? > 0 {
            break;
        }
    }
    connect_result(&fd)?;
    let stream = TcpStream::from(fd);
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    Ok(stream)
}

/// `poll(2)` on `fds` for at most `timeout`: how many have events. An interrupted call counts
/// as none.
pub fn poll(fds: &mut [libc::pollfd], timeout: Duration) -> io::Result<usize> {
    let millis = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: `fds` is an array of `fds.len()` valid pollfd structures.
    let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, millis) };
    if ready < 0 {
        let error = io::Error::last_os_error();
        if error.kind() == io::ErrorKind::Interrupted {
            return Ok(0);
        }
        return Err(error);
    }
    Ok(usize::try_from(ready).unwrap_or(0))
}

/// Sets the socket time-out `option` (`SO_RCVTIMEO`, `SO_SNDTIMEO`) of `socket`.
pub fn set_timeout(
    socket: &impl AsRawFd,
    option: libc::c_int,
    timeout: Duration,
) -> io::Result<()> {
    let value = libc::timeval {
        tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_usec: timeout.subsec_micros().into(),
    };
    // SAFETY: `value` is a valid timeval and the length is its size.
    sys(unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (&raw const value).cast(),
            size_of::<libc::timeval>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// `address` for the socket calls.
fn sockaddr(address: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: address.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*address.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

/// A system call's result, or its error.
fn sys(result: libc::c_int) -> io::Result<libc::c_int> {
    if result < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(result)
    }
}
