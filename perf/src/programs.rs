//! herd-perf's own eBPF programs (`bpf/perf.bpf.c`): the generator, the two XDP_DROP
//! baselines and an empty program.

use anyhow::{anyhow, Context};
use aya::programs::Xdp;
use aya::Ebpf;

/// The object, built by `build.rs`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/perf.bpf.o"));

/// The programs of the object, by their function names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Program {
    /// Gives template frames their client and send time, and transmits them.
    Generate,
    /// Counts and drops every frame.
    Drop,
    /// Reads every frame's IPv4 destination, then counts and drops it.
    DropRead,
    /// Passes every frame: an empty program.
    Pass,
}

impl Program {
    /// The program's function name in the object.
    pub fn name(self) -> &'static str {
        match self {
            Program::Generate => "perf_generate",
            Program::Drop => "perf_drop",
            Program::DropRead => "perf_drop_read",
            Program::Pass => "perf_pass",
        }
    }
}

/// A fresh copy of the object (its own maps) with `program` loaded into the kernel.
pub fn load(program: Program) -> anyhow::Result<Ebpf> {
    let mut ebpf = Ebpf::load(OBJECT).context(
        "cannot load herd-perf's eBPF object (loading eBPF programs needs root or CAP_BPF)",
    )?;
    xdp(&mut ebpf, program)?
        .load()
        .with_context(|| format!("the kernel refused {}", program.name()))?;
    Ok(ebpf)
}

/// `program` in `ebpf`.
pub fn xdp(ebpf: &mut Ebpf, program: Program) -> anyhow::Result<&mut Xdp> {
    let found = ebpf
        .program_mut(program.name())
        .ok_or_else(|| anyhow!("the eBPF object has no {}", program.name()))?;
    Ok(found.try_into()?)
}
