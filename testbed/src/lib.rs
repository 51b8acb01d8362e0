//! herd's farm test bed, written once for the end-to-end tests, `herd demo` and `herd-perf`:
//! hosts in network namespaces joined by a hub (a bridge that floods every frame, or one that
//! learns) or by a veth pair, addressed from the benchmarking range 198.18.0.0/15 and its IPv6
//! twin in fd00::/8; a scratch directory and a BPF file system of the bed's own; the farm's
//! configuration file and key; `herd run` processes with their logs; responders that answer
//! with the node's name; and which node owns a client, computed as every node computes it. The
//! loads a farm must withstand come from it too: a SYN flood from spoofed sources, the churn
//! of many short connections, and long-lived connections held open and checked together.
//!
//! A [`Bed`] owns what it makes and removes all of it when dropped, in one order, whether its
//! user succeeded, failed or panicked: the processes started in it, its namespaces (with their
//! interfaces and the programs attached to them), its BPF file system, then its scratch
//! directory, which is kept if the file system could not be unmounted.
//!
//! It is test infrastructure: it runs `ip` and `ethtool`, which the product itself does not.

pub mod address;
pub mod bed;
pub mod bpffs;
#[cfg(feature = "browser")]
pub mod browser;
pub mod churn;
pub mod client;
pub mod command;
pub mod config;
pub mod farm;
pub mod flood;
pub mod held;
pub mod link;
pub mod log;
pub mod neighbour;
pub mod netns;
pub mod owner;
pub mod process;
pub mod responder;
pub mod scratch;
pub mod socket;
pub mod stale;
pub mod stream;
pub mod uplink;

pub use bed::Bed;
pub use farm::{FarmBed, FarmPlan, HerdRun, Host};
pub use link::{HubKind, Offload};
pub use netns::Netns;
pub use nix::sys::signal::Signal;
pub use process::{Herd, HerdSpec};
pub use uplink::Uplink;

/// Fails unless this process runs as root, which namespaces, mounts and XDP need; `what` says
/// who asks.
pub fn require_root(what: &str) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        anyhow::bail!("{what} needs root: it builds network namespaces");
    }
    Ok(())
}
