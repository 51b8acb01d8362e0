//! Cutting a node's link to the bridge at a known moment: the hub's port taken down by one
//! `ioctl` on a socket opened beforehand in the hub's namespace. Running `ip link set ... down`
//! instead would cut the link some tens of milliseconds after the failure's recorded moment on
//! a busy machine (a process to start), and add as much to every failover time.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use anyhow::{anyhow, bail, Context};
use herd_testbed::{uplink, FarmBed};

use super::layout::NODES;

/// Node `node`'s port on the hub, ready to be taken down.
pub struct LinkCut {
    /// A socket of the hub's namespace: its `ioctl`s act on the hub's devices.
    socket: OwnedFd,
    /// The request naming the port.
    request: libc::ifreq,
    /// The port's name, for messages.
    port: String,
}

impl LinkCut {
    /// Prepares the cut of node `node`'s link in `bed`.
    pub fn prepare(bed: &FarmBed, node: usize) -> anyhow::Result<Self> {
        let port = uplink::hub_port(NODES[node], uplink::VETH);
        // SAFETY: ifreq is plain data, valid when zeroed.
        let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
        if port.len() >= request.ifr_name.len() || port.contains('\0') {
            bail!("{port:?} is not an interface name");
        }
        for (slot, byte) in request.ifr_name.iter_mut().zip(port.bytes()) {
            *slot = byte as libc::c_char;
        }
        // A socket belongs to the namespace of the thread that opens it: a thread of its own
        // enters the hub's, so that this one stays where it is.
        let hub = bed.hub.clone();
        let socket = std::thread::scope(|scope| {
            scope
                .spawn(move || -> anyhow::Result<OwnedFd> {
                    hub.enter()?;
                    // SAFETY: socket takes no pointers.
                    let fd = unsafe {
                        libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0)
                    };
                    if fd < 0 {
                        return Err(std::io::Error::last_os_error())
                            .context("cannot open a socket in the hub's namespace");
                    }
                    // SAFETY: `fd` is a socket just opened and owned by nothing else.
                    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
                })
                .join()
                .map_err(|_| anyhow!("the thread opening the hub's socket panicked"))?
        })?;
        Ok(LinkCut {
            socket,
            request,
            port,
        })
    }

    /// Takes the port down now: the node's veth loses its carrier, and the bridge forgets the
    /// MACs it learnt on that port.
    pub fn cut(mut self) -> anyhow::Result<()> {
        let fd = self.socket.as_raw_fd();
        // SAFETY: `request` is a valid ifreq holding a NUL-terminated name; SIOCGIFFLAGS writes
        // only its flags.
        if unsafe { libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut self.request) } < 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("cannot read the flags of the hub's port {}", self.port));
        }
        // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
        let flags = unsafe { self.request.ifr_ifru.ifru_flags };
        self.request.ifr_ifru.ifru_flags = flags & !(libc::IFF_UP as libc::c_short);
        // SAFETY: `request` names the port and holds its flags; SIOCSIFFLAGS only reads it.
        if unsafe { libc::ioctl(fd, libc::SIOCSIFFLAGS, &self.request) } < 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("cannot take the hub's port {} down", self.port));
        }
        Ok(())
    }
}
