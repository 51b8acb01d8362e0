//! herd's in-kernel mode: `XdpProgram` loaded for node 0 of the farm and attached to the
//! receiver's veth in driver mode, as `herd run` does with `mode = "xdp"` on a NIC.

use std::time::Duration;

use anyhow::Context;
use herd_dataplane::xdp::XdpProgram;
use herd_packet::craft::MAC_B;
use herd_packet::table::ModeTable;
use herd_packet::Verdict;

use super::{Contender, Counts, Receiver};
use crate::farm::LOCAL;

/// How long the program stays alive without renewal: longer than any measurement (herd renews
/// it every 100 ms; herd-perf sets it once).
const ALIVE_FOR: Duration = Duration::from_secs(3600);

/// herd's classifier on the receiver's interface.
#[derive(Default)]
pub struct HerdXdp {
    classifier: Option<XdpProgram>,
    program_id: Option<u32>,
}

impl Contender for HerdXdp {
    fn setup(&mut self, receiver: &Receiver<'_>) -> anyhow::Result<()> {
        let farm = receiver.farm;
        let modes = ModeTable::of_owner(farm.table(), LOCAL);
        let mut classifier = XdpProgram::load(farm.rules(), &modes, MAC_B)?;
        classifier.keep_alive(ALIVE_FOR)?;
        let pin = receiver.bpf_dir.join("herd-xdp");
        receiver
            .netns
            .run(|| classifier.attach(receiver.interface, &pin, false))??;
        self.program_id = Some(classifier.id()?);
        self.classifier = Some(classifier);
        Ok(())
    }

    fn counts(&self) -> anyhow::Result<Counts> {
        let classifier = self.classifier.as_ref().context("herd xdp is not set up")?;
        let mut counts = Counts::default();
        for (verdict, count) in classifier.counts()? {
            counts.received += count;
            match verdict {
                Verdict::Accept => counts.accepted += count,
                Verdict::Drop(_) => counts.dropped += count,
                Verdict::Pass | Verdict::AnswerNeighbor => {}
            }
        }
        Ok(counts)
    }

    fn program_id(&self) -> Option<u32> {
        self.program_id
    }

    fn teardown(&mut self) -> anyhow::Result<()> {
        if let Some(mut classifier) = self.classifier.take() {
            classifier.detach()?;
        }
        Ok(())
    }
}
