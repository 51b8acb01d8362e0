//! The filters herd-perf compares, each on the receiver's veth, each one type behind the
//! [`Contender`] trait: adding one is a module here and an arm of [`Kind`].

mod afxdp;
mod baseline;
mod nftables;
mod xdp;

use std::path::Path;

use aya::programs::XdpMode;
use aya::Ebpf;
use clap::ValueEnum;
use herd_testbed::Netns;
use serde::Serialize;

use crate::farm::BenchFarm;
use crate::handoff::Handoff;
use crate::mix::Traffic;
use crate::programs::{self, Program};

/// Packets a contender counted since its setup.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Every frame it saw.
    pub received: u64,
    /// The frames it dropped.
    pub dropped: u64,
    /// The VIP packets it let through to the node.
    pub accepted: u64,
}

impl Counts {
    /// What was counted between `earlier` and `self`.
    pub fn since(&self, earlier: &Counts) -> Counts {
        Counts {
            received: self.received.saturating_sub(earlier.received),
            dropped: self.dropped.saturating_sub(earlier.dropped),
            accepted: self.accepted.saturating_sub(earlier.accepted),
        }
    }
}

/// The receiver's side of the test bed, where a contender is set up.
pub struct Receiver<'a> {
    /// The receiver's namespace.
    pub netns: &'a Netns,
    /// The receiver's veth, which the contender filters.
    pub interface: &'a str,
    /// A BPF file system private to the run, for programs that must be pinned.
    pub bpf_dir: &'a Path,
    /// The farm the receiver is node 0 of.
    pub farm: &'a BenchFarm,
    /// The receiver's core, where its threads run.
    pub core: usize,
}

/// A filter on the receiver's interface that keeps node 0's share of the farm's traffic.
pub trait Contender {
    /// Puts the filter on the receiver's interface.
    fn setup(&mut self, receiver: &Receiver<'_>) -> anyhow::Result<()>;
    /// What the filter counted since [`Contender::setup`].
    fn counts(&self) -> anyhow::Result<Counts>;
    /// The threads the filter runs besides the receiver's NAPI thread, whose CPU time is the
    /// receiver's too.
    fn threads(&self) -> anyhow::Result<Vec<libc::pid_t>> {
        Ok(Vec::new())
    }
    /// The kernel's id of herd's eBPF program on the interface, once set up, for its
    /// run-time statistics; `None` for the contenders that are not herd.
    fn program_id(&self) -> Option<u32> {
        None
    }
    /// Takes the filter off the interface.
    fn teardown(&mut self) -> anyhow::Result<()>;
}

/// The contenders, as `--only` names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A bare XDP program that counts and drops every frame: the ceiling of the machine.
    Baseline,
    /// The same after reading each frame's IPv4 destination: the ceiling of a filter that
    /// reads a header.
    BaselineRead,
    /// An nftables netdev ingress rule `jhash ip saddr mod 3 != 0 drop`: what an
    /// administrator uses since CLUSTERIP was removed.
    Nftables,
    /// herd's in-kernel mode (`XdpProgram`, driver mode).
    Xdp,
    /// herd's AF_XDP mode (copy mode), handing accepted packets to the stack through a TAP
    /// device, as `herd run` does.
    Afxdp,
    /// herd's AF_XDP mode, handing accepted packets to the stack through a veth pair: the
    /// alternative to the TAP device.
    AfxdpVeth,
}

impl Kind {
    /// Every contender, in the report's order.
    pub const ALL: [Kind; 6] = [
        Kind::Baseline,
        Kind::BaselineRead,
        Kind::Nftables,
        Kind::Xdp,
        Kind::Afxdp,
        Kind::AfxdpVeth,
    ];

    /// The contender's name in the report.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Baseline => "bare XDP_DROP",
            Kind::BaselineRead => "XDP_DROP reading the header",
            Kind::Nftables => "nftables jhash",
            Kind::Xdp => "herd xdp",
            Kind::Afxdp => "herd afxdp (TAP)",
            Kind::AfxdpVeth => "herd afxdp (veth)",
        }
    }

    /// The traffics the contender may be measured on, of which a run measures those it
    /// prepared. The baseline drops everything, so the drop path would only repeat its row;
    /// the SYN flood is herd's own question (what recording, or not recording, an owned SYN
    /// costs).
    pub fn traffics(self) -> &'static [Traffic] {
        match self {
            Kind::Baseline | Kind::BaselineRead => &[Traffic::Mix],
            Kind::Nftables => &[Traffic::Mix, Traffic::DropPath],
            Kind::Xdp | Kind::Afxdp => &[
                Traffic::Mix,
                Traffic::DropPath,
                Traffic::OwnedSyns,
                Traffic::MixedSyns,
            ],
            // The way back to the stack only matters for what is accepted.
            Kind::AfxdpVeth => &[Traffic::Mix],
        }
    }

    /// Whether the contender lets node 0's share through (the baseline drops everything).
    pub fn keeps_owned(self) -> bool {
        !matches!(self, Kind::Baseline | Kind::BaselineRead)
    }

    /// A contender of this kind, not yet set up.
    pub fn build(self) -> Box<dyn Contender> {
        match self {
            Kind::Baseline => Box::new(baseline::Baseline::new(Program::Drop)),
            Kind::BaselineRead => Box::new(baseline::Baseline::new(Program::DropRead)),
            Kind::Nftables => Box::new(nftables::Nftables::default()),
            Kind::Xdp => Box::new(xdp::HerdXdp::default()),
            Kind::Afxdp => Box::new(afxdp::HerdAfxdp::new(Handoff::HERD)),
            Kind::AfxdpVeth => Box::new(afxdp::HerdAfxdp::new(Handoff::VETH)),
        }
    }
}

/// Loads one of herd-perf's programs and attaches it to the receiver's interface in driver
/// mode; dropping the returned object detaches it.
fn attach(program: Program, receiver: &Receiver<'_>) -> anyhow::Result<Ebpf> {
    let mut ebpf = programs::load(program)?;
    receiver.netns.run(|| -> anyhow::Result<()> {
        programs::xdp(&mut ebpf, program)?.attach(receiver.interface, XdpMode::Driver)?;
        Ok(())
    })??;
    Ok(ebpf)
}
