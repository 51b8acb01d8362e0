//! The farm port's datagrams, many per system call: a heartbeat goes to every other node in
//! one `sendmmsg(2)`, and what waits on the socket is read with one `recvmmsg(2)`. In a large
//! farm a node sends and receives a datagram per peer per heartbeat period, and the system
//! calls, not the protocol, are then most of the membership's cost.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use socket2::{SockAddr, SockAddrStorage};

use crate::wire::{MAX_DATAGRAM, MAX_MEMBERS};

/// The most datagrams one call sends: a heartbeat to every other node of the largest farm.
const MAX_FANOUT: usize = MAX_MEMBERS - 1;

/// Bytes read of each datagram: one more than the longest heartbeat, so that a longer
/// datagram fills its buffer and is refused as too long.
pub const SLOT: usize = MAX_DATAGRAM + 1;

/// The other nodes' farm ports, as the kernel takes them.
#[derive(Debug)]
pub struct Fanout {
    addresses: Vec<SockAddr>,
}

impl Fanout {
    /// The ports of `addresses`, in order; at most [`MAX_MEMBERS`]` - 1` of them are sent to.
    pub fn new(addresses: impl IntoIterator<Item = SocketAddr>) -> Self {
        Self {
            addresses: addresses
                .into_iter()
                .take(MAX_FANOUT)
                .map(SockAddr::from)
                .collect(),
        }
    }

    /// Sends `datagram` to every address from `socket`, and tells `sent` how each send went,
    /// by the address's index, in order. The kernel stops a call at the first datagram it
    /// cannot send; that one's error is the next call's, and the rest go in the call after.
    pub fn send(
        &self,
        socket: &impl AsRawFd,
        datagram: &[u8],
        mut sent: impl FnMut(usize, io::Result<()>),
    ) {
        let mut vector = libc::iovec {
            iov_base: datagram.as_ptr().cast_mut().cast(),
            iov_len: datagram.len(),
        };
        // SAFETY: mmsghdr is plain data for which zeros mean "no name, no data, no control
        // data"; the fields used are set below.
        let mut headers: [libc::mmsghdr; MAX_FANOUT] = unsafe { std::mem::zeroed() };
        for (header, address) in headers.iter_mut().zip(&self.addresses) {
            header.msg_hdr.msg_name = address.as_ptr().cast_mut().cast();
            header.msg_hdr.msg_namelen = address.len();
            header.msg_hdr.msg_iov = &mut vector;
            header.msg_hdr.msg_iovlen = 1;
        }
        let count = self.addresses.len();
        let mut done = 0;
        while done < count {
            let pending = &mut headers[done..count];
            // SAFETY: each header points at an address of `self.addresses` and at `vector`,
            // which points at `datagram`; all outlive the call. The kernel only reads them,
            // and writes each header's `msg_len`.
            let result = unsafe {
                libc::sendmmsg(
                    socket.as_raw_fd(),
                    pending.as_mut_ptr(),
                    pending.len() as libc::c_uint,
                    0,
                )
            };
            match usize::try_from(result) {
                // At least one was sent: none, only when asked to send none.
                Ok(0) => return,
                Ok(taken) => {
                    for index in done..done + taken {
                        sent(index, Ok(()));
                    }
                    done += taken;
                }
                Err(_) => {
                    let error = io::Error::last_os_error();
                    if error.kind() != io::ErrorKind::Interrupted {
                        sent(done, Err(error));
                        done += 1;
                    }
                }
            }
        }
    }
}

/// Buffers for the datagrams one `recvmmsg(2)` reads, kept from call to call, and what the
/// last call read.
pub struct Inbound {
    buffers: Box<[[u8; SLOT]]>,
    senders: Box<[libc::sockaddr_storage]>,
    /// Each datagram's length and its sender's address length, as the last call read them.
    lengths: Vec<(usize, libc::socklen_t)>,
}

impl std::fmt::Debug for Inbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbound")
            .field("capacity", &self.buffers.len())
            .field("read", &self.lengths.len())
            .finish()
    }
}

/// The most datagrams a call reads.
pub const MAX_BATCH: usize = 64;

impl Inbound {
    /// Buffers for `capacity` datagrams a call, at most [`MAX_BATCH`].
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.clamp(1, MAX_BATCH);
        // SAFETY: sockaddr_storage is plain data, valid when zeroed.
        let sender: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        Self {
            buffers: vec![[0; SLOT]; capacity].into_boxed_slice(),
            senders: vec![sender; capacity].into_boxed_slice(),
            lengths: Vec::with_capacity(capacity),
        }
    }

    /// How many datagrams a call reads at most.
    pub fn capacity(&self) -> usize {
        self.buffers.len()
    }

    /// Reads the datagrams waiting on `socket`, up to [`Inbound::capacity`], without waiting;
    /// returns how many. `WouldBlock` when none waits.
    pub fn receive(&mut self, socket: &impl AsRawFd) -> io::Result<usize> {
        self.lengths.clear();
        // SAFETY: iovec and mmsghdr are plain data; every field used is set below.
        let mut vectors: [libc::iovec; MAX_BATCH] = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut headers: [libc::mmsghdr; MAX_BATCH] = unsafe { std::mem::zeroed() };
        let slots = headers
            .iter_mut()
            .zip(vectors.iter_mut())
            .zip(self.buffers.iter_mut().zip(self.senders.iter_mut()));
        for ((header, vector), (buffer, sender)) in slots {
            *vector = libc::iovec {
                iov_base: buffer.as_mut_ptr().cast(),
                iov_len: SLOT,
            };
            header.msg_hdr.msg_iov = vector;
            header.msg_hdr.msg_iovlen = 1;
            header.msg_hdr.msg_name = std::ptr::from_mut(sender).cast();
            header.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        }
        // SAFETY: the first `capacity` headers each point at one vector, itself pointing at a
        // buffer of SLOT bytes, and at a sockaddr_storage for the sender; all outlive the call,
        // and the kernel writes no more than their lengths say. A null timeout: the call does
        // not wait (MSG_DONTWAIT).
        let result = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                headers.as_mut_ptr(),
                self.capacity() as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        // A negative count is an error; any other fits in usize.
        let count = usize::try_from(result).map_err(|_| io::Error::last_os_error())?;
        self.lengths.extend(
            headers[..count]
                .iter()
                .map(|header| (header.msg_len as usize, header.msg_hdr.msg_namelen)),
        );
        Ok(count)
    }

    /// The `index`th datagram the last call read, and its sender's address when it has one.
    pub fn datagram(&self, index: usize) -> Option<(&[u8], Option<SocketAddr>)> {
        let &(length, name_length) = self.lengths.get(index)?;
        let bytes = &self.buffers[index][..length.min(SLOT)];
        let mut storage = SockAddrStorage::zeroed();
        // SAFETY: socket2's storage is a sockaddr_storage.
        *unsafe { storage.view_as::<libc::sockaddr_storage>() } = self.senders[index];
        // SAFETY: the kernel wrote a sockaddr of `name_length` bytes into the storage.
        let sender = unsafe { SockAddr::new(storage, name_length) }.as_socket();
        Some((bytes, sender))
    }
}

#[cfg(test)]
mod tests {
    use std::net::UdpSocket;

    use super::*;

    fn bound() -> UdpSocket {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_nonblocking(true).unwrap();
        socket
    }

    #[test]
    fn a_datagram_reaches_every_peer_and_is_read_with_its_sender() {
        let sender = bound();
        let peers: Vec<UdpSocket> = (0..5).map(|_| bound()).collect();
        let fanout = Fanout::new(peers.iter().map(|peer| peer.local_addr().unwrap()));
        let mut outcomes = Vec::new();
        fanout.send(&sender, b"heartbeat", |index, result| {
            outcomes.push((index, result.is_ok()));
        });
        assert_eq!(
            outcomes,
            (0..5).map(|index| (index, true)).collect::<Vec<_>>()
        );
        let mut inbound = Inbound::new(8);
        for peer in &peers {
            assert_eq!(inbound.receive(peer).unwrap(), 1);
            let (bytes, from) = inbound.datagram(0).unwrap();
            assert_eq!(bytes, b"heartbeat");
            assert_eq!(from, Some(sender.local_addr().unwrap()));
            assert!(inbound.datagram(1).is_none());
            let empty = inbound.receive(peer).unwrap_err();
            assert_eq!(empty.kind(), io::ErrorKind::WouldBlock);
        }
    }

    #[test]
    fn a_call_reads_at_most_its_capacity_and_a_long_datagram_fills_its_buffer() {
        let receiver = bound();
        let to = receiver.local_addr().unwrap();
        let sender = bound();
        for n in 0..5u8 {
            sender.send_to(&[n; 3], to).unwrap();
        }
        sender.send_to(&[9; SLOT + 100], to).unwrap();
        let mut inbound = Inbound::new(4);
        assert_eq!(inbound.receive(&receiver).unwrap(), 4);
        let firsts: Vec<u8> = (0..4).map(|i| inbound.datagram(i).unwrap().0[0]).collect();
        assert_eq!(firsts, [0, 1, 2, 3]);
        assert_eq!(inbound.receive(&receiver).unwrap(), 2);
        assert_eq!(inbound.datagram(0).unwrap().0, [4; 3]);
        assert_eq!(
            inbound.datagram(1).unwrap().0.len(),
            SLOT,
            "cut to the buffer"
        );
    }

    #[test]
    fn an_unsendable_datagram_is_reported_for_its_peer_and_the_rest_still_go() {
        let sender = bound();
        let peers: Vec<UdpSocket> = (0..3).map(|_| bound()).collect();
        let mut addresses: Vec<SocketAddr> = peers
            .iter()
            .map(|peer| peer.local_addr().unwrap())
            .collect();
        // An IPv6 address from an IPv4 socket: refused for that peer alone.
        addresses.insert(1, "[::1]:9".parse().unwrap());
        let fanout = Fanout::new(addresses);
        let mut outcomes = Vec::new();
        fanout.send(&sender, b"hb", |index, result| {
            outcomes.push((index, result.is_ok()));
        });
        assert_eq!(outcomes, [(0, true), (1, false), (2, true), (3, true)]);
        let mut inbound = Inbound::new(2);
        for peer in &peers {
            assert_eq!(inbound.receive(peer).unwrap(), 1);
        }
    }
}
