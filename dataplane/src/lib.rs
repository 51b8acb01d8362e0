//! herd's packet path: zero-copy views over packet bytes ([`wire`]), the keyed flow hash
//! ([`hash`]), the farm's rules compiled for lookups ([`rules`]), the bucket owners and the
//! per-bucket modes the workers read ([`table`]), the TCP connections a node has taken
//! ([`flows`]), the verdict on each frame ([`mod@classify`]), the in-kernel program that makes the
//! same verdict in XDP ([`xdp`]), and the AF_XDP workers ([`afxdp`]) with their way back to the
//! stack ([`handoff`]).

pub mod afxdp;
pub mod classify;
pub mod clock;
pub mod counts;
pub mod craft;
pub mod flows;
pub mod handoff;
pub mod hash;
pub mod neighbor;
pub mod rules;
pub mod table;
pub mod wire;
pub mod xdp;

pub use classify::{classify, FarmTable, Verdict};
pub use flows::Flows;
pub use rules::{DropReason, FarmRules};
