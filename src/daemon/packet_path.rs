//! The packet path of either dataplane mode, loaded and not yet attached, and the
//! [`Dataplane`] seam through which the membership thread steers it.
//!
//! Both modes differ only in the XDP program they attach (the whole verdict, or a redirect
//! to AF_XDP sockets) and in the workers the AF_XDP mode runs.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use core_affinity::CoreId;
use herd_config::{DataplaneMode, FarmConfig};
use herd_dataplane::afxdp::{Finished, QueueSocket, Worker, WorkerSettings};
use herd_dataplane::handoff::{Port, Submit, TapReceive};
use herd_dataplane::sockets::Sockets;
use herd_dataplane::xdp::XdpProgram;
use herd_membership::driver::{Dataplane, DataplaneError};
use herd_packet::counts::Traffic;
use herd_packet::table::{self, BucketMode, ModeTable, SharedTable};
use herd_packet::{FarmRules, FarmTable};

use super::drain_count::DrainCount;
use crate::host::Host;

/// The packet path of one mode, and the count of its connections that still drain.
pub struct PacketPath {
    mode: Mode,
    /// Counts the draining connections from the kernel's sockets of herd's namespace.
    drain_count: DrainCount,
}

/// The packet path of one mode.
enum Mode {
    /// The in-kernel mode: the verdict and the flow table in the XDP program.
    InKernel {
        /// The classifier.
        program: XdpProgram,
    },
    /// The AF_XDP mode: the redirect program hands the VIP flows to one socket per RX queue,
    /// each served by a worker pinned to a core, which classifies under the table published
    /// to it and hands what this node owns to the stack through a TAP device. The redirect
    /// program holds the liveness deadline.
    Workers {
        /// The redirect program.
        redirect: XdpProgram,
        /// The table the workers read.
        table: Arc<SharedTable<FarmTable>>,
        /// The farm's rules, for each new table.
        rules: Arc<FarmRules>,
        /// One per RX queue.
        workers: Vec<Worker>,
    },
}

impl PacketPath {
    /// Loads the packet path `config` asks for on `host`, owning no bucket and accepting for
    /// `ttl`. The AF_XDP mode's workers start now and run until `stop` rises: they serve the
    /// drain, after the membership thread.
    pub fn load(
        config: &FarmConfig,
        config_path: &Path,
        host: &mut Host,
        ttl: Duration,
        stop: Arc<AtomicBool>,
    ) -> anyhow::Result<Self> {
        let rules = Arc::new(FarmRules::from_config(config));
        // Opened here, in the interface's network namespace (herd's), whose sockets count.
        let sockets = Sockets::open()?;
        let drain_count = DrainCount::start(sockets, Arc::clone(&rules))
            .context("cannot start the thread that counts the draining connections")?;
        let mode = Mode::load(config, config_path, host, ttl, stop, rules)?;
        Ok(Self { mode, drain_count })
    }

    /// The mode's name, as the configuration and `herd status` write it.
    pub fn mode(&self) -> &'static str {
        match self.mode {
            Mode::InKernel { .. } => "xdp",
            Mode::Workers { .. } => "afxdp",
        }
    }

    /// The XDP program the mode attaches.
    pub fn program(&mut self) -> &mut XdpProgram {
        match &mut self.mode {
            Mode::InKernel { program } => program,
            Mode::Workers { redirect, .. } => redirect,
        }
    }

    /// Stops counting, waits for the workers, if any, to stop (their stop flag raised), and
    /// logs what they did.
    pub fn join(self) {
        drop(self.drain_count);
        let Mode::Workers { workers, .. } = self.mode else {
            return;
        };
        for worker in workers {
            let queue = worker.queue();
            let Finished { totals, batches } = worker.join();
            tracing::info!(
                queue,
                received = totals.received,
                accepted = totals.accepted,
                dropped = totals.dropped,
                handed_off = totals.handed_off,
                errors = totals.errors,
                shed = totals.shed,
                checksums_completed = totals.checksums_completed,
                batches = batches.len(),
                batch_p50_ns = batches.value_at_quantile(0.5),
                batch_p99_ns = batches.value_at_quantile(0.99),
                "worker stopped"
            );
        }
    }
}

impl Mode {
    /// Loads the mode `config` asks for, as [`PacketPath::load`] says.
    fn load(
        config: &FarmConfig,
        config_path: &Path,
        host: &mut Host,
        ttl: Duration,
        stop: Arc<AtomicBool>,
        rules: Arc<FarmRules>,
    ) -> anyhow::Result<Self> {
        let nothing = ModeTable::none(config.farm.buckets as usize)
            .expect("a configuration's bucket count is a valid table size");
        match config.dataplane.mode {
            DataplaneMode::Xdp => {
                let mut program = XdpProgram::load(&rules, &nothing, host.mac())?;
                program.keep_alive(ttl)?;
                Ok(Self::InKernel { program })
            }
            DataplaneMode::Afxdp => {
                let interface = host.name().to_owned();
                let interface = interface.as_str();
                let queues = host.rx_queues()?;
                let cores = worker_cores(&config.dataplane.cores, queues, config_path)?;
                prepare_busy_polling(host)?;
                warn_of_shared_cores(&cores);
                let mut redirect = XdpProgram::load_redirect(&rules, &nothing, host.mac())?;
                redirect.keep_alive(ttl)?;
                let mut sockets = Vec::with_capacity(queues as usize);
                for queue in 0..queues {
                    let socket = QueueSocket::open(interface, queue, config.dataplane.zero_copy)
                        .map_err(|error| {
                            if error.queue_taken() {
                                anyhow::anyhow!(
                                    "RX queue {queue} of {interface} already has an AF_XDP socket: \
                                     another program (another herd?) serves it"
                                )
                            } else {
                                anyhow::Error::new(error).context(
                                    "the kernel refused an AF_XDP socket (AF_XDP needs Linux 5.4 \
                                     or later with CONFIG_XDP_SOCKETS)",
                                )
                            }
                        })?;
                    tracing::info!(
                        %interface,
                        queue,
                        mode = if socket.zero_copy() { "zero-copy" } else { "copy" },
                        "opened the AF_XDP socket"
                    );
                    redirect.add_socket(queue, socket.fd())?;
                    sockets.push(socket);
                }
                let stack = format!("herd{}", host.index());
                let ports = Port::tap(&stack, sockets.len(), TapReceive::Direct, Submit::Batch)?;
                host.prepare_stack_device(&stack)?;
                tracing::info!(device = %stack, queues, "created the TAP device that takes accepted frames to the stack");
                let table = Arc::new(SharedTable::new(FarmTable::new(
                    Arc::clone(&rules),
                    nothing,
                )));
                let mut workers = Vec::with_capacity(sockets.len());
                for ((socket, port), core) in sockets.into_iter().zip(ports).zip(cores) {
                    let queue = socket.queue();
                    let settings = WorkerSettings {
                        core,
                        batch: config.dataplane.batch as usize,
                        if_mac: host.mac(),
                        table: Arc::clone(&table),
                        stop: Arc::clone(&stop),
                        behind: redirect.behind_switch(queue)?,
                    };
                    workers.push(Worker::spawn(socket, port, settings)?);
                    tracing::info!(queue, core = core.id, "started the worker");
                }
                Ok(Self::Workers {
                    redirect,
                    table,
                    rules,
                    workers,
                })
            }
        }
    }
}

impl Dataplane for &mut PacketPath {
    fn install(
        &mut self,
        generation: u64,
        modes: &[table::BucketMode],
    ) -> Result<(), DataplaneError> {
        let modes = ModeTable::new(generation, modes.to_vec())?;
        match &mut self.mode {
            Mode::InKernel { program } => program.install(&modes)?,
            Mode::Workers {
                table,
                rules,
                redirect,
                ..
            } => {
                // The redirect program asks the kernel while some bucket keeps known
                // connections: from before the workers read such a table to after they stop.
                let lookups = modes.modes().iter().any(|m| m.contains(BucketMode::KNOWN));
                if lookups {
                    redirect.set_lookups(true)?;
                }
                // The table a worker that is behind has the kernel drop by: NONE there is NONE
                // in the workers' table too, one write later.
                redirect.install(&modes)?;
                table.publish(FarmTable::new(Arc::clone(rules), modes.clone()));
                if !lookups {
                    redirect.set_lookups(false)?;
                }
            }
        }
        self.drain_count.install(modes);
        Ok(())
    }

    fn keep_alive(&mut self, ttl: Duration) -> Result<(), DataplaneError> {
        Ok(self.program().keep_alive(ttl)?)
    }

    /// Counted from the kernel's sockets under the modes installed last, whichever the mode.
    fn draining_flows(&mut self, generation: u64) -> Result<Option<u64>, DataplaneError> {
        Ok(self.drain_count.counted(generation))
    }

    fn traffic(&mut self) -> Result<Traffic, DataplaneError> {
        match &mut self.mode {
            Mode::InKernel { program } => Ok(program.traffic()?),
            // The workers count what they take; the redirect program what it passes or drops
            // before them.
            Mode::Workers {
                redirect, workers, ..
            } => {
                let kernel = redirect.traffic()?;
                Ok(std::iter::once(kernel)
                    .chain(workers.iter().map(|worker| worker.counters().traffic()))
                    .sum())
            }
        }
    }
}

/// How long the kernel holds a NAPI instance's interrupts off for a busy-polling worker that
/// has not polled it, and how many times in a row (`gro_flush_timeout`, in ns, and
/// `napi_defer_hard_irqs`): the values the kernel's NAPI documentation gives for preferred
/// busy polling. A worker that stops polling hands the queue back to interrupts after that.
const GRO_FLUSH_TIMEOUT_NS: &str = "200000";
const NAPI_DEFER_HARD_IRQS: &str = "2";

/// Sets the interface up for the workers' preferred busy polling (see
/// `herd_dataplane::wait`): with its interrupts deferred, the driver leaves the queue to the
/// worker that polls it. A virtual interface is left alone: veth gives AF_XDP sockets no NAPI
/// id to poll, and the deferral would only delay its frames.
fn prepare_busy_polling(host: &mut Host) -> anyhow::Result<()> {
    if host.is_virtual() {
        tracing::info!(
            interface = host.name(),
            "a virtual interface: no busy polling, its NAPI settings are left as they are"
        );
        return Ok(());
    }
    host.set_device("napi_defer_hard_irqs", NAPI_DEFER_HARD_IRQS)?;
    host.set_device("gro_flush_timeout", GRO_FLUSH_TIMEOUT_NS)
}

/// The core of each RX queue's worker: `configured` in order, reused round the list when
/// the interface has more queues, or queue `i` on core `i` when none is configured. Every
/// core must exist on this machine.
fn worker_cores(configured: &[usize], queues: u32, path: &Path) -> anyhow::Result<Vec<CoreId>> {
    let available: Vec<usize> = core_affinity::get_core_ids()
        .context("cannot list this machine's CPU cores")?
        .into_iter()
        .map(|core| core.id)
        .collect();
    let wanted: Vec<usize> = if configured.is_empty() {
        (0..queues as usize)
            .map(|queue| available[queue % available.len()])
            .collect()
    } else {
        (0..queues as usize)
            .map(|queue| configured[queue % configured.len()])
            .collect()
    };
    if let Some(core) = configured.iter().find(|core| !available.contains(core)) {
        bail!(
            "{}: [dataplane] cores: core {core} is not available to herd on this machine (it may use {})",
            path.display(),
            describe_cores(&available)
        );
    }
    Ok(wanted.into_iter().map(|id| CoreId { id }).collect())
}

/// Says which workers share a core (more RX queues than cores, or `[dataplane] cores` that
/// name a core twice): each then gets a share of its core, and a flood on one queue slows the
/// others.
fn warn_of_shared_cores(cores: &[CoreId]) {
    for (index, core) in cores.iter().enumerate() {
        if cores[..index].iter().any(|earlier| earlier.id == core.id) {
            continue;
        }
        let queues: Vec<usize> = (index..cores.len())
            .filter(|&queue| cores[queue].id == core.id)
            .collect();
        if queues.len() > 1 {
            tracing::warn!(
                core = core.id,
                ?queues,
                "the workers of these RX queues share a core: each gets a share of it, and a \
                 flood on one queue slows the others (give each a core with [dataplane] cores, \
                 or fewer queues: ethtool -L)"
            );
        }
    }
}

/// `0-3, 6` for cores 0, 1, 2, 3 and 6.
fn describe_cores(cores: &[usize]) -> String {
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    for &core in cores {
        match ranges.last_mut() {
            Some((_, end)) if *end + 1 == core => *end = core,
            _ => ranges.push((core, core)),
        }
    }
    ranges
        .iter()
        .map(|&(start, end)| {
            if start == end {
                format!("{start}")
            } else {
                format!("{start}-{end}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_lists_are_written_as_ranges() {
        assert_eq!(describe_cores(&[0, 1, 2, 3, 6]), "0-3, 6");
        assert_eq!(describe_cores(&[1]), "1");
        assert_eq!(describe_cores(&[0, 2, 3]), "0, 2-3");
    }

    #[test]
    fn queues_go_round_the_configured_cores() {
        let path = Path::new("farm.toml");
        let ids = |cores: Vec<CoreId>| cores.into_iter().map(|core| core.id).collect::<Vec<_>>();
        assert_eq!(ids(worker_cores(&[0], 3, path).unwrap()), [0, 0, 0]);
        let first = core_affinity::get_core_ids().unwrap()[0].id;
        assert_eq!(ids(worker_cores(&[], 1, path).unwrap()), [first]);
    }

    #[test]
    fn a_core_the_machine_lacks_is_named() {
        let error = worker_cores(&[0, 1023], 2, Path::new("farm.toml")).unwrap_err();
        let message = error.to_string();
        assert!(
            message.starts_with("farm.toml: [dataplane] cores: core 1023 is not available"),
            "{message}"
        );
    }
}
