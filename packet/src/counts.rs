//! What the dataplane did with the traffic it saw, as `herd status` and the metrics show it.

use std::ops::Add;

use serde::{Deserialize, Serialize};

/// Packets and their bytes (whole frames, Ethernet header included).
///
/// `repr(C)`: it is also the value of the XDP program's per-CPU `counters` map, `struct count`
/// in herd.bpf.c.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Count {
    /// Packets.
    pub packets: u64,
    /// Their bytes.
    pub bytes: u64,
}

impl Add for Count {
    type Output = Self;

    fn add(self, other: Self) -> Self {
        Self {
            packets: self.packets + other.packets,
            bytes: self.bytes + other.bytes,
        }
    }
}

/// The dataplane's counts since it started.
///
/// In the AF_XDP mode they are split between the redirect program, which counts what it passes
/// to the kernel or drops itself, and the workers, which count what they accept or drop; the
/// mode's traffic is their sum.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Traffic {
    /// VIP packets of the buckets this node takes, handed to its stack.
    pub accepted: Count,
    /// VIP packets left to other nodes, or malformed.
    pub dropped: Count,
    /// Packets for anything but a VIP, which the kernel gets untouched.
    pub passed: Count,
    /// VIP packets the kernel dropped before an AF_XDP worker could see them, its ring being
    /// full: the worker could not keep up. Packets only (the kernel does not count their
    /// bytes); always 0 in the in-kernel mode.
    #[serde(default)]
    pub shed: u64,
    /// Handed-off packets whose TCP or UDP checksum the AF_XDP workers finished, which the
    /// sender's transmit offload had left unfinished (see [`crate::offload`]); always 0 in the
    /// in-kernel mode, which hands on the kernel's own packet buffers.
    #[serde(default)]
    pub checksums_completed: u64,
}

impl Traffic {
    /// Each count with the name of its outcome (`accepted`, `dropped`, `passed`), as `herd
    /// status` and the metrics label them. The pattern names every field, so a new outcome
    /// cannot be left out.
    pub fn by_outcome(&self) -> [(&'static str, Count); 3] {
        let Traffic {
            accepted,
            dropped,
            passed,
            ..
        } = *self;
        [
            ("accepted", accepted),
            ("dropped", dropped),
            ("passed", passed),
        ]
    }
}

impl Add for Traffic {
    type Output = Self;

    fn add(self, other: Self) -> Self {
        Self {
            accepted: self.accepted + other.accepted,
            dropped: self.dropped + other.dropped,
            passed: self.passed + other.passed,
            shed: self.shed + other.shed,
            checksums_completed: self.checksums_completed + other.checksums_completed,
        }
    }
}

impl std::iter::Sum for Traffic {
    fn sum<I: Iterator<Item = Self>>(iter: I) -> Self {
        iter.fold(Self::default(), Add::add)
    }
}
