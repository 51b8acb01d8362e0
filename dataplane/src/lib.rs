//! herd's packet path: zero-copy views over packet bytes ([`wire`]), the keyed flow hash
//! ([`hash`]), the farm's rules compiled for lookups ([`rules`]), the bucket table the workers
//! read ([`table`]), the verdict on each frame ([`classify`]), the in-kernel program that
//! makes the same verdict in XDP ([`xdp`]), and the AF_XDP workers ([`afxdp`]) with their way
//! back to the stack ([`handoff`]).

pub mod afxdp;
pub mod classify;
pub mod craft;
pub mod handoff;
pub mod hash;
pub mod neighbor;
pub mod rules;
pub mod table;
pub mod wire;
pub mod xdp;

pub use classify::{classify, FarmTable, Verdict};
pub use rules::{DropReason, FarmRules};
