//! herd's packet path: zero-copy views over packet bytes ([`wire`]), the keyed flow hash
//! ([`hash`]), the bucket table the workers read ([`table`]) and the verdict for each frame
//! ([`classify`]).

pub mod hash;
pub mod table;
