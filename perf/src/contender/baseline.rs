//! The baselines: a bare XDP program that counts every frame and drops it (nothing that
//! filters in XDP can be faster on this machine), and the same after reading the frame's
//! destination address (nothing that filters on a header can be faster).

use anyhow::Context;
use aya::maps::PerCpuArray;
use aya::Ebpf;

use super::{attach, Contender, Counts, Receiver};
use crate::programs::Program;

/// `perf_drop` or `perf_drop_read` on the receiver's interface.
pub struct Baseline {
    kind: Program,
    program: Option<Ebpf>,
}

impl Baseline {
    /// The baseline that runs `kind`.
    pub fn new(kind: Program) -> Self {
        Self {
            kind,
            program: None,
        }
    }
}

impl Contender for Baseline {
    fn setup(&mut self, receiver: &Receiver<'_>) -> anyhow::Result<()> {
        self.program = Some(attach(self.kind, receiver)?);
        Ok(())
    }

    fn counts(&self) -> anyhow::Result<Counts> {
        let program = self
            .program
            .as_ref()
            .context("the baseline is not set up")?;
        let map = program
            .map("dropped")
            .context("the baseline has no counter")?;
        let dropped: u64 = PerCpuArray::<_, u64>::try_from(map)?
            .get(&0, 0)?
            .iter()
            .sum();
        Ok(Counts {
            received: dropped,
            dropped,
            accepted: 0,
        })
    }

    fn teardown(&mut self) -> anyhow::Result<()> {
        self.program = None;
        Ok(())
    }
}
