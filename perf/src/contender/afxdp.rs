//! herd's AF_XDP mode, as `herd run` sets it up with `mode = "afxdp"`: the redirect program on
//! the receiver's veth (driver mode), one AF_XDP socket on its queue (copy mode: veth has no
//! zero-copy) and one worker pinned to the receiver's core, handing the packets it accepts to
//! the stack. Measured with the way back to the stack `herd run` uses (a TAP device written
//! through io_uring, [`Handoff::HERD`]) and with the cheapest through a veth pair
//! ([`Handoff::VETH`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use core_affinity::CoreId;
use herd_config::ZeroCopy;
use herd_dataplane::afxdp::{QueueSocket, Worker, WorkerSettings};
use herd_dataplane::xdp::XdpProgram;
use herd_packet::craft::MAC_B;
use herd_packet::table::{ModeTable, SharedTable};
use herd_packet::FarmTable;
use herd_testbed::Netns;

use super::{Contender, Counts, Receiver};
use crate::farm::LOCAL;
use crate::handoff::Handoff;

/// How long the program stays alive without renewal: longer than any measurement.
const ALIVE_FOR: Duration = Duration::from_secs(3600);
/// Frames the worker takes at once: the default of `[dataplane] batch`.
const BATCH: usize = 64;

/// The redirect program, the socket's worker and the handoff device.
pub struct HerdAfxdp {
    handoff: Handoff,
    redirect: Option<XdpProgram>,
    program_id: Option<u32>,
    worker: Option<Worker>,
    stop: Arc<AtomicBool>,
    netns: Option<Netns>,
}

impl HerdAfxdp {
    /// The contender, handing off through `handoff`.
    pub fn new(handoff: Handoff) -> Self {
        Self {
            handoff,
            redirect: None,
            program_id: None,
            worker: None,
            stop: Arc::new(AtomicBool::new(false)),
            netns: None,
        }
    }
}

impl Contender for HerdAfxdp {
    fn setup(&mut self, receiver: &Receiver<'_>) -> anyhow::Result<()> {
        let farm = receiver.farm;
        let modes = ModeTable::of_owner(farm.table(), LOCAL);
        let mut redirect = XdpProgram::load_redirect(farm.rules(), &modes, MAC_B)?;
        redirect.keep_alive(ALIVE_FOR)?;
        self.netns = Some(receiver.netns.clone());
        let socket = receiver
            .netns
            .run(|| QueueSocket::open(receiver.interface, 0, ZeroCopy::Auto))??;
        redirect.add_socket(0, socket.fd())?;
        let port = self.handoff.port(receiver.netns)?;
        let table = FarmTable::new(Arc::new(farm.rules().clone()), modes);
        let settings = WorkerSettings {
            core: CoreId { id: receiver.core },
            batch: BATCH,
            if_mac: MAC_B,
            table: Arc::new(SharedTable::new(table)),
            stop: Arc::clone(&self.stop),
            behind: redirect.behind_switch(0)?,
        };
        let worker = Worker::spawn(socket, port, settings)?;
        self.worker = Some(worker);
        let pin = receiver.bpf_dir.join("herd-afxdp");
        receiver
            .netns
            .run(|| redirect.attach(receiver.interface, &pin, false))??;
        self.program_id = Some(redirect.id()?);
        self.redirect = Some(redirect);
        Ok(())
    }

    /// The worker's counts, and what the redirect program dropped itself for a worker that
    /// was behind.
    fn counts(&self) -> anyhow::Result<Counts> {
        let worker = self.worker.as_ref().context("herd afxdp is not set up")?;
        let redirect = self.redirect.as_ref().context("herd afxdp is not set up")?;
        let counters = worker.counters();
        let in_kernel = redirect.traffic()?.dropped.packets;
        Ok(Counts {
            received: counters.received.load(Ordering::Relaxed) + in_kernel,
            dropped: counters.dropped.load(Ordering::Relaxed) + in_kernel,
            accepted: counters.accepted.load(Ordering::Relaxed),
        })
    }

    fn threads(&self) -> anyhow::Result<Vec<libc::pid_t>> {
        let worker = self.worker.as_ref().context("herd afxdp is not set up")?;
        Ok(vec![worker.tid()])
    }

    fn program_id(&self) -> Option<u32> {
        self.program_id
    }

    fn teardown(&mut self) -> anyhow::Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(worker) = self.worker.take() {
            worker.join();
        }
        if let Some(mut redirect) = self.redirect.take() {
            redirect.detach()?;
        }
        if let Some(netns) = self.netns.take() {
            self.handoff.remove(&netns)?;
        }
        Ok(())
    }
}
