//! The baseline: a bare XDP program that counts every frame and drops it. Nothing that
//! filters in XDP can be faster on this machine.

use anyhow::Context;
use aya::maps::PerCpuArray;
use aya::Ebpf;

use super::{attach, Contender, Counts, Receiver};
use crate::programs::Program;

/// `perf_drop` on the receiver's interface.
#[derive(Default)]
pub struct Baseline {
    program: Option<Ebpf>,
}

impl Contender for Baseline {
    fn setup(&mut self, receiver: &Receiver<'_>) -> anyhow::Result<()> {
        self.program = Some(attach(Program::Drop, receiver)?);
        Ok(())
    }

    fn counts(&self) -> anyhow::Result<Counts> {
        let program = self
            .program
            .as_ref()
            .context("the baseline is not set up")?;
        let map = program.map("dropped").context("perf_drop has no counter")?;
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
