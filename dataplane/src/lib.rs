//! herd's packet path: zero-copy views over packet bytes ([`wire`]), the keyed flow hash
//! ([`hash`]), the farm's rules compiled for lookups ([`rules`]), the bucket table the workers
//! read ([`table`]), the verdict on each frame ([`classify`]) and the in-kernel program that
//! makes the same verdict in XDP ([`xdp`]).

pub mod classify;
pub mod craft;
pub mod hash;
pub mod neighbor;
pub mod rules;
pub mod table;
pub mod wire;
pub mod xdp;

pub use classify::{classify, FarmTable, Verdict};
pub use rules::{DropReason, FarmRules};
