//! herd's checkers: whether the node's application is healthy, and what the node does about it.
//!
//! Pure logic, with time passed in, so that it is tested by simulation: [`health`] turns each
//! check's results into healthy or failed (`fall` failures in a row, `rise` successes),
//! [`limit`] counts restarts in a sliding window (SafeKit's maxloop), and [`lifecycle`] is the
//! node's state machine: it runs the start script, joins once every check is healthy, and on
//! a failure withdraws, stops or restarts the node as the check's action says. [`probe`] holds
//! the thin probes that look at the application, the host and the network, and [`check`] turns
//! a configured `[[check]]` into the probe it runs; [`scripts`] runs the application's start and
//! stop scripts.

pub mod check;
pub mod health;
pub mod lifecycle;
pub mod limit;
pub mod probe;
pub mod scripts;
