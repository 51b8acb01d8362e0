//! herd's packet path without I/O: zero-copy views over packet bytes ([`wire`]), the keyed flow
//! hash ([`hash`]), the farm's rules compiled for lookups ([`rules`]), the bucket owners and the
//! per-bucket modes the workers read ([`table`]), the handshakes a node answered in buckets it
//! is taking over ([`flows`]), what its kernel says of a connection ([`kernel`]), the verdict
//! on each frame ([`mod@classify`]), the packets and bytes per outcome ([`counts`]), the
//! answers to ARP and neighbour discovery for the VIPs ([`neighbor`]), the transport checksums
//! a sender's offload left unfinished ([`offload`]), frames made for tests and benchmarks
//! ([`craft`]) and the kernel clocks the verdict reads ([`clock`]).
//!
//! Nothing here loads a program or opens a socket, so the membership protocol, the checkers and
//! the fuzz targets build on it without a C toolchain; `herd-dataplane` runs it in the kernel
//! and in the AF_XDP workers.

pub mod classify;
pub mod clock;
pub mod counts;
pub mod craft;
pub mod flows;
pub mod hash;
pub mod kernel;
pub mod neighbor;
pub mod offload;
pub mod rules;
pub mod table;
pub mod wire;

pub use classify::{classify, FarmTable, Verdict};
pub use flows::Flows;
pub use rules::{DropReason, FarmRules};
