//! `interface`: a network interface is up, with carrier.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::{ProbeError, Probed};

/// Whether interface `name` is administratively up and has carrier (`IFF_UP` and
/// `IFF_RUNNING`). Asked of the kernel through a socket, so that it answers for the caller's
/// network namespace.
pub fn interface(name: &str) -> Probed {
    let failed = |what: &str| ProbeError::new(format!("interface {name}: {what}"));
    // SAFETY: ifreq is plain data, valid when zeroed.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    if name.is_empty() || name.len() >= request.ifr_name.len() || name.contains('\0') {
        return Err(failed("not an interface name"));
    }
    for (slot, byte) in request.ifr_name.iter_mut().zip(name.bytes()) {
        *slot = byte as libc::c_char;
    }
    // SAFETY: socket takes no pointers.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(failed(&std::io::Error::last_os_error().to_string()));
    }
    // SAFETY: `fd` is a socket just opened and owned by nothing else.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: `request` is a valid ifreq holding a NUL-terminated name; SIOCGIFFLAGS writes
    // only its flags.
    if unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS, &mut request) } < 0 {
        let error = std::io::Error::last_os_error();
        return Err(failed(&format!("{error} (does it exist?)")));
    }
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    let flags = i32::from(unsafe { request.ifr_ifru.ifru_flags });
    if flags & libc::IFF_UP == 0 {
        return Err(failed("down"));
    }
    if flags & libc::IFF_RUNNING == 0 {
        return Err(failed("no carrier"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_cannot_be_interfaces_are_refused() {
        for name in ["", "a-name-far-too-long", "a\0b"] {
            assert!(interface(name).is_err(), "{name:?}");
        }
    }

    #[test]
    fn a_missing_interface_is_named() {
        let error = interface("herd-nosuch0").unwrap_err();
        assert!(error.0.starts_with("interface herd-nosuch0:"), "{error}");
    }

    #[test]
    fn the_loopback_is_up() {
        assert_eq!(interface("lo"), Ok(()));
    }
}
