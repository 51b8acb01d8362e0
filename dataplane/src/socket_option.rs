//! Integer socket options on a raw descriptor: the one `setsockopt(2)` of the workers' sockets
//! and their hand-off ports.

use std::io;
use std::os::fd::RawFd;

/// Sets the integer socket option `name` of `level` on the socket `fd`.
pub(crate) fn set(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `value` is a c_int that outlives the call, of the length passed.
    let set = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if set < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
