//! The way back from an AF_XDP worker to the kernel's stack. A frame taken from an AF_XDP
//! socket cannot be given back to the interface it came from, so a worker writes the frames it
//! accepts into a second device whose receive path is the stack: a TAP device (one queue per
//! worker), or one end of a veth pair whose other end receives them. Both are a file
//! descriptor written one frame at a time, which is all a [`Port`] is.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Where a worker writes the frames it hands to the stack: a TAP queue, or a packet socket
/// bound to the sending end of a veth pair.
#[derive(Debug)]
pub struct Port(OwnedFd);

impl Port {
    /// Hands one frame to the stack.
    #[inline]
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        // SAFETY: `frame` is valid for reads of its length, and the descriptor is open.
        let written =
            unsafe { libc::write(self.0.as_raw_fd(), frame.as_ptr().cast(), frame.len()) };
        if written < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// `queues` queues of a new multi-queue TAP device `name` (it exists while one of them is
    /// open, and goes when herd exits, however it exits). The frames written to it need the
    /// device's MAC as their destination, or the stack takes them for another host's.
    pub fn tap(name: &str, queues: usize) -> io::Result<Vec<Port>> {
        let name = interface_name(name)?;
        (0..queues).map(|_| Self::tap_queue(&name)).collect()
    }

    fn tap_queue(name: &CString) -> io::Result<Port> {
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
        let port = Port(unsafe { OwnedFd::from_raw_fd(fd) });
        // SAFETY: ifreq is plain data, valid when zeroed.
        let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
        for (to, &from) in request.ifr_name.iter_mut().zip(name.as_bytes()) {
            *to = from as libc::c_char;
        }
        request.ifr_ifru.ifru_flags =
            (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_MULTI_QUEUE) as i16;
        // SAFETY: TUNSETIFF reads an ifreq, which `request` is, and writes the name back.
        if unsafe { libc::ioctl(port.0.as_raw_fd(), libc::TUNSETIFF, &mut request) } < 0 {
            let error = io::Error::last_os_error();
            return Err(io::Error::new(
                error.kind(),
                format!("cannot create TAP device {name:?}: {error}"),
            ));
        }
        Ok(port)
    }

    /// `count` packet sockets that send out of the interface with index `ifindex` (the sending
    /// end of a veth pair).
    pub fn packet(ifindex: u32, count: usize) -> io::Result<Vec<Port>> {
        (0..count)
            .map(|_| packet_socket(ifindex, 0).map(Port))
            .collect()
    }
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
