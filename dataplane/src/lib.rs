//! herd's packet path in the kernel: the XDP programs and their loader ([`xdp`]), which make
//! `herd_packet::classify`'s verdict in the kernel or redirect VIP traffic to AF_XDP sockets, and
//! the AF_XDP workers ([`afxdp`]) with their way back to the stack ([`handoff`]) and their way
//! of waiting for frames ([`wait`]) and of shedding what they cannot take ([`overload`]); the egress
//! guard ([`egress`]), which keeps the kernel from mapping a VIP to the node's MAC; the pins
//! that keep both attached past a killed herd ([`pin`]); the node's TCP sockets as its kernel
//! lists them ([`sockets`]), which say when a drain is over.

pub mod afxdp;
pub mod egress;
pub mod handoff;
pub mod overload;
pub mod pin;
mod socket_option;
pub mod sockets;
pub mod wait;
pub mod xdp;
