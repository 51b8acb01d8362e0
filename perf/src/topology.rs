//! The dataplane bench's bed (the test bed's [`Bed`]): a sender and a receiver network
//! namespace joined by a veth pair, addressed from the test bed's plan, with a BPF file
//! system for herd's pinned program; all removed when the [`Topology`] is dropped, whether the
//! run succeeded, failed or was interrupted.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context;
use herd_packet::craft::{MAC_A, MAC_B};
use herd_testbed::address::{node4, VIP4, VIP6};
use herd_testbed::link::{self, End};
use herd_testbed::{Bed, Netns};

use crate::mix::{V4_CLIENTS, V6_CLIENTS};
use crate::sched;

/// The tag of every bed of this program, whose names are `TAG-PID-...`: a bed left by a killed
/// run is found again by its process id.
pub const TAG: &str = "herd-perf";
/// The receiver's IPv6 gateway to the clients: a link-local address that stands for the
/// sender, whose own IPv6 is off.
const GATEWAY6: &str = "fe80::a";
/// A kernel thread's name is cut to 15 bytes.
const COMM_LEN: usize = 15;

/// The sender and receiver namespaces, their veth pair and the BPF file system.
pub struct Topology {
    /// Where the generator runs.
    pub sender: Netns,
    /// Where the contenders filter and the latency sockets listen.
    pub receiver: Netns,
    /// The sender's end of the veth pair (MAC [`MAC_A`]).
    pub sender_if: String,
    /// The receiver's end of the veth pair (MAC [`MAC_B`], which the templates address).
    pub receiver_if: String,
    /// A BPF file system private to this run, where herd pins its attachment.
    bpf_dir: PathBuf,
    /// What removes the namespaces and the BPF file system.
    _bed: Bed,
}

impl Topology {
    /// Builds the namespaces and the veth pair, named after this process so that runs do not
    /// collide.
    pub fn create() -> anyhow::Result<Self> {
        let pid = std::process::id();
        let mut bed = Bed::create(&format!("{TAG}-{pid}-bench"))?;
        let (sender, receiver) = (bed.netns("sender")?, bed.netns("receiver")?);
        // Short names, so that the receiver's NAPI thread ("napi/<name>-<id>") is recognisable
        // within the 15 bytes of a thread name.
        let (sender_if, receiver_if) = (format!("hs{pid}"), format!("hr{pid}"));
        // The sender only transmits what the generator makes: no IPv6 router solicitations or
        // listener reports of its own in the counts.
        for key in ["all", "default"] {
            sender.write_sysctl(&format!("net/ipv6/conf/{key}/disable_ipv6"), "1")?;
        }
        link::veth(
            End {
                netns: &sender,
                name: &sender_if,
                mac: Some(MAC_A),
            },
            End {
                netns: &receiver,
                name: &receiver_if,
                mac: Some(MAC_B),
            },
        )?;
        let rif = receiver_if.as_str();
        receiver.ip(&["addr", "add", &format!("{}/24", node4(0)), "dev", rif])?;
        receiver.ip(&["addr", "add", &format!("{VIP4}/32"), "dev", rif])?;
        receiver.ip(&["addr", "add", &format!("{VIP6}/128"), "dev", rif, "nodad"])?;
        sender.ip(&[
            "addr",
            "add",
            &format!("{}/24", node4(1)),
            "dev",
            &sender_if,
        ])?;
        for (netns, device) in [(&receiver, rif), (&receiver, "lo"), (&sender, &sender_if)] {
            netns.ip(&["link", "set", device, "up"])?;
        }
        // Routes back to the clients, so that the receiver's reverse-path check passes
        // whatever the namespace's rp_filter default; through the sender as a gateway whose
        // MAC is known, as a node's clients are behind a router, so that the SYN flood's
        // SYN-ACKs leave at once rather than wait for the address resolution of each spoofed
        // client (the sender's kernel drops them).
        let sender_mac = mac_text(MAC_A);
        let gateway4 = node4(1).to_string();
        receiver.ip(&["route", "add", V4_CLIENTS, "via", &gateway4, "dev", rif])?;
        receiver.ip(&[
            "-6", "route", "add", V6_CLIENTS, "via", GATEWAY6, "dev", rif,
        ])?;
        for gateway in [gateway4.as_str(), GATEWAY6] {
            receiver.ip(&[
                "neigh",
                "replace",
                gateway,
                "lladdr",
                &sender_mac,
                "dev",
                rif,
                "nud",
                "permanent",
            ])?;
        }
        let bpf_dir = bed.bpf_dir("bench")?;
        Ok(Topology {
            sender,
            receiver,
            sender_if,
            receiver_if,
            bpf_dir,
            _bed: bed,
        })
    }

    /// A BPF file system private to this run, where herd pins its attachment.
    pub fn bpf_dir(&self) -> &Path {
        &self.bpf_dir
    }

    /// Runs the receiver's NAPI (veth's receive loop: XDP, then the stack for what XDP
    /// passes) in a kernel thread pinned to `core` at a high priority, away from the
    /// generator's core, so that the receiver's cost shows in a thread of its own. veth
    /// creates its NAPI instance when an XDP program is attached, so this is called after each
    /// contender's setup. Returns the threads.
    pub fn thread_receiver_napi(&self, core: usize) -> anyhow::Result<Vec<libc::pid_t>> {
        let sysfs = format!("/sys/class/net/{}/threaded", self.receiver_if);
        self.receiver
            .exec(&["sh", "-c", &format!("echo 1 > {sysfs}")], None)
            .context("cannot switch the receiver's veth to threaded NAPI")?;
        let mut prefix = format!("napi/{}-", self.receiver_if);
        prefix.truncate(COMM_LEN);
        let threads = threads_named(&prefix)?;
        for &tid in &threads {
            sched::pin(tid, core)?;
            sched::favour(tid)?;
        }
        Ok(threads)
    }
}

/// A MAC address as `ip` writes it.
fn mac_text(mac: [u8; 6]) -> String {
    mac.map(|byte| format!("{byte:02x}")).join(":")
}

/// The threads (kernel threads included) whose name starts with `prefix`.
fn threads_named(prefix: &str) -> anyhow::Result<Vec<libc::pid_t>> {
    let mut pids = Vec::new();
    for entry in fs::read_dir("/proc")
        .context("cannot list /proc")?
        .flatten()
    {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<libc::pid_t>() else {
            continue;
        };
        // A process may exit between the listing and the read.
        if let Ok(comm) = fs::read_to_string(entry.path().join("comm")) {
            if comm.trim_end().starts_with(prefix) {
                pids.push(pid);
            }
        }
    }
    Ok(pids)
}
