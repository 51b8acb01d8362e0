//! The parts of `herd demo` (the command itself is [`crate::commands::demo`]): a farm in
//! network namespaces on this machine (the test bed's, [`herd_testbed`]), a responder on each
//! node, a client's load, the live table and the summary.

pub mod bed;
pub mod herd;
pub mod layout;
pub mod load;
pub mod scenario;
pub mod screen;
pub mod summary;
