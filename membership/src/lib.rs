//! herd's farm membership: which live node owns which bucket.
//!
//! Every node of a farm sees every packet to a virtual IP, hashes the client identity into one
//! of the buckets of its `BucketTable` and keeps only the packets of the buckets it owns. This
//! crate decides the owners: [`assign()`] maps the set of live members to one owner per bucket,
//! the same on every node, and [`farm_table()`] builds the table of a configured farm from it.
//!
//! The nodes learn who is alive from heartbeats: [`wire`] is their datagram, [`auth`] the keys
//! that sign them and the replay guard, [`inbox`] the gate every received datagram passes,
//! [`detector`] the failure detector that decides who is alive, and [`protocol`] the state
//! machine that turns all of it into the modes of the buckets this node's dataplane installs.
//! [`driver`] runs that machine on its own thread with a UDP socket and the real clocks
//! (sending and reading many [`datagrams`] per system call),
//! publishing a [`snapshot`] of it for the rest of the node, and [`incarnation`] raises the
//! number a node runs in at every start. [`command`] holds the farm's commands between nodes
//! (drain, stop, start, restart, status), signed and checked like heartbeats.

pub mod assign;
pub mod auth;
pub mod command;
pub mod datagrams;
pub mod detector;
pub mod driver;
pub mod inbox;
pub mod incarnation;
pub mod protocol;
pub mod snapshot;
pub mod wire;

pub use assign::{assign, farm_table, Member, MAX_BUCKETS};
pub use protocol::{Farm, Membership, Now, Output, Settings};
