//! herd's packet path in the kernel: the XDP programs and their loader ([`xdp`]), which make
//! `herd_packet::classify`'s verdict in the kernel or redirect VIP traffic to AF_XDP sockets, and
//! the AF_XDP workers ([`afxdp`]) with their way back to the stack ([`handoff`]).

pub mod afxdp;
pub mod handoff;
pub mod xdp;
