//! `herd run`: runs this node in the foreground, as a member of its farm, until SIGINT or
//! SIGTERM makes it leave.
//!
//! Both dataplane modes prepare the host the same way and end the same way; they differ in the
//! XDP program they attach (the whole verdict, or a redirect to AF_XDP sockets) and in the
//! workers the AF_XDP mode runs. In both, the membership thread ([`herd_membership::driver`])
//! installs the bucket modes the protocol decides and renews the liveness deadline with every
//! heartbeat; the node starts owning nothing. The supervisor ([`crate::supervisor`]) runs the
//! start script, joins the farm once the checks are healthy and answers the control socket.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use core_affinity::CoreId;
use herd_config::{DataplaneMode, FarmConfig};
use herd_dataplane::afxdp::{Finished, QueueSocket, Worker, WorkerSettings};
use herd_dataplane::handoff::Port;
use herd_dataplane::xdp::XdpProgram;
use herd_membership::auth::Keyring;
use herd_membership::driver::{self, Command, Dataplane, DataplaneError, Driver, Start};
use herd_membership::{incarnation, Farm, Settings};
use herd_packet::counts::Traffic;
use herd_packet::neighbor::announcement;
use herd_packet::table::{self, ModeTable, SharedTable};
use herd_packet::{FarmRules, FarmTable};

use crate::control::Server;
use crate::farm;
use crate::host::{format_mac, Host};
use crate::supervisor::{Ending, Identity, Supervisor};

/// How long `herd run` waits for another host to answer for a VIP before it takes it.
const VIP_PROBE_WAIT: Duration = Duration::from_millis(300);

/// Where the BPF file system is mounted, and where herd pins its programs.
const BPF_FS: &str = "/sys/fs/bpf";

/// Where `herd run` keeps what outlives it (the incarnation) when not told otherwise.
pub const STATE_DIR: &str = "/var/lib/herd";

/// Where things are, besides the configuration.
pub struct Paths<'a> {
    /// The configuration file.
    pub config: &'a Path,
    /// Where the XDP attachment is pinned (a BPF file system); `/sys/fs/bpf/herd` when not
    /// given.
    pub bpf_dir: Option<&'a Path>,
    /// Where the incarnation is kept.
    pub state_dir: &'a Path,
    /// Where the control socket is made.
    pub control_dir: &'a Path,
}

/// Runs the command as node `node` (found by its addresses when not given).
pub fn run(paths: &Paths, node: Option<&str>) -> anyhow::Result<()> {
    // Installed first, so that a signal during the setup lets the setup finish and be undone
    // rather than kill herd halfway: the membership thread reads the count when it starts.
    let signals = Arc::new(AtomicUsize::new(0));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let signals = Arc::clone(&signals);
        // SAFETY: the handler only adds to an atomic integer, which is async-signal-safe.
        unsafe {
            signal_hook::low_level::register(signal, move || {
                signals.fetch_add(1, Ordering::SeqCst);
            })
        }
        .context("cannot install the signal handlers")?;
    }
    let config = FarmConfig::load(paths.config)?;
    let local = identify(&config, node)?;
    let keys = Keyring::load(&config.farm.auth_key_file).with_context(|| {
        format!(
            "{}: [farm] auth_key_file {}",
            paths.config.display(),
            config.farm.auth_key_file.display()
        )
    })?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!("herd run needs root: it attaches an XDP program, adds the VIPs to the interface and sets its options");
    }
    let name = config.nodes[local].name.clone();
    let incarnation = incarnation::next(
        &paths.state_dir.join(format!("{name}.incarnation")),
        driver::wall_ms(),
    )?;
    let interface = config.interface_of(local).to_owned();
    let host = Host::open(&interface, paths.state_dir, &name)?;
    // Bound before the host is touched: a second herd of the same node stops here.
    let control = Server::bind(paths.control_dir, &name)?;
    let start = Start {
        farm: Farm::from_config(&config),
        local,
        keys,
        incarnation,
        settings: Settings::from_config(&config.membership),
        addresses: config
            .nodes
            .iter()
            .map(|node| SocketAddr::new(node.address, config.farm.port))
            .collect(),
    };
    let node = Node {
        name,
        incarnation,
        rules: FarmRules::from_config(&config),
        pin: pin_dir(paths.bpf_dir)?.join(&interface),
        config,
        host,
        signals,
        control,
    };
    node.check_vips_are_free()?;
    match node.config.dataplane.mode {
        DataplaneMode::Xdp => run_xdp(node, start),
        DataplaneMode::Afxdp => run_afxdp(node, start, paths.config),
    }
}

/// What both modes start from.
struct Node {
    config: FarmConfig,
    name: String,
    incarnation: u64,
    rules: FarmRules,
    host: Host,
    /// Where the XDP attachment is pinned.
    pin: PathBuf,
    /// SIGINT and SIGTERM received so far.
    signals: Arc<AtomicUsize>,
    /// The control socket.
    control: Server,
}

impl Node {
    /// How long the node keeps accepting without a sign of life from this process until the
    /// membership thread takes over (it then renews the deadline with every heartbeat): the
    /// membership's `dead_after_ms`.
    fn liveness_ttl(&self) -> Duration {
        Duration::from_millis(self.config.membership.dead_after_ms.into())
    }

    /// A table in which this node accepts nothing: where every node starts, until the farm
    /// agrees on its share.
    fn nothing(&self) -> ModeTable {
        ModeTable::none(self.config.farm.buckets as usize)
            .expect("a configuration's bucket count is a valid table size")
    }

    /// Prepares the host for the VIPs' traffic: the kernel must never send an ARP packet with a
    /// VIP as its sender address, which would teach the link this node's own MAC for the VIP
    /// (arp_announce 2 makes it use the node's own address); the interface takes the frames
    /// sent to the virtual MACs (promiscuous mode); the kernel takes the VIPs' packets that
    /// the dataplane hands it (the VIP addresses).
    fn prepare_host(&mut self) -> anyhow::Result<()> {
        self.host.set_ipv4_conf("arp_announce", "2")?;
        self.host.promiscuous()?;
        for &vip in &self.config.farm.vips {
            self.host.add_vip(vip)?;
        }
        Ok(())
    }

    /// Refuses to start when another host of the link answers for a VIP: the farm would take
    /// its traffic.
    fn check_vips_are_free(&self) -> anyhow::Result<()> {
        let vips = &self.config.farm.vips;
        let holders = self
            .host
            .vip_holders(vips, VIP_PROBE_WAIT)
            .with_context(|| format!("cannot probe {} for the VIPs", self.host.name()))?;
        if let Some((vip, mac)) = holders.first() {
            let mac = format_mac(*mac);
            bail!(
                "VIP {vip} is already used by another host on {} (it answered from MAC {mac}); \
                 the farm would take its traffic: remove the address there or choose another VIP",
                self.host.name()
            );
        }
        Ok(())
    }

    /// Attaches `program` to the interface, replacing one an earlier herd left attached.
    fn attach(&self, program: &mut XdpProgram) -> anyhow::Result<()> {
        let interface = self.host.name();
        // A program an earlier herd left attached (it was killed) keeps the node closed until
        // the moment it is replaced, so it is removed only now, with everything else ready.
        if XdpProgram::remove_stale(&self.pin)? {
            tracing::warn!(%interface, "removed the XDP program an earlier herd left attached (it was killed)");
        }
        // The setup may have outlasted the deadline set when the program was loaded.
        program.keep_alive(self.liveness_ttl())?;
        let generic = self.host.is_virtual();
        program
            .attach(interface, &self.pin, generic)
            .with_context(|| {
                format!(
                "cannot attach the XDP program to {interface} (herd needs a kernel with XDP and \
                 BPF links: Linux 5.9 or later, CONFIG_BPF_SYSCALL and CONFIG_XDP_SOCKETS)"
            )
            })?;
        tracing::info!(
            %interface,
            xdp = if generic { "generic (a virtual interface)" } else { "driver" },
            pin = %self.pin.display(),
            "attached the XDP program"
        );
        Ok(())
    }

    /// Says the node runs, and announces the VIPs' virtual MACs.
    fn announce(&self, mode: &str) {
        tracing::info!(
            node = %self.name,
            farm = %self.config.farm.name,
            interface = %self.host.name(),
            mode,
            incarnation = self.incarnation,
            control = %self.control.path().display(),
            "running: the node joins the farm once its application is up"
        );
        for &vip in &self.config.farm.vips {
            if let Err(error) = self.host.send(&announcement(self.host.mac(), vip)) {
                tracing::warn!(%vip, "cannot announce the VIP's virtual MAC: {error}");
            }
        }
    }

    /// Runs the node over `dataplane` until it has stopped: the membership thread, the
    /// supervisor with its checks and scripts, and the control socket.
    fn serve<D: Dataplane + Send>(
        &self,
        start: Start,
        dataplane: D,
        mode: &'static str,
    ) -> anyhow::Result<()> {
        let identity = Identity {
            node: self.name.clone(),
            farm: self.config.farm.name.clone(),
            mode,
        };
        let mut addresses = self.config.farm.vips.clone();
        addresses.push(start.addresses[start.local].ip());
        let checked = herd_checkers::check::Host {
            interface: self.host.name().to_owned(),
            addresses,
        };
        let supervisor =
            Supervisor::new(&self.config, identity, &checked, Arc::clone(&self.signals))?;
        let (driver, handle) = Driver::new(start, dataplane, false)?;
        let (requests, incoming) = crossbeam_channel::unbounded();
        if let Some(address) = self.config.admin.metrics {
            let bound = crate::metrics::spawn(address, requests.clone())?;
            tracing::info!(address = %bound, "serving /metrics and /healthz");
        }
        self.control.spawn(requests)?;
        // The dataplane comes back too; it only holds borrows here.
        let (ending, stopped) = std::thread::scope(|scope| {
            let membership = std::thread::Builder::new()
                .name("herd-membership".into())
                .spawn_scoped(scope, || driver.run())
                .context("cannot start the membership thread")?;
            let ending = supervisor.run(&handle, &incoming);
            // Already stopped if it failed: its own error then says why.
            let _ = handle.send(Command::Exit);
            let stopped = membership
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                .context("the membership thread stopped");
            anyhow::Ok((ending, stopped))
        })?;
        stopped?;
        match ending? {
            Ending::Stopped => tracing::info!(
                "stopping: the node has left the farm and its application is stopped"
            ),
            Ending::Forced => {
                tracing::info!("stopping before the drain and the stop script are over")
            }
        }
        Ok(())
    }

    /// Undoes everything: the VIPs first, since once the program is detached the kernel would
    /// take every VIP packet.
    fn finish(mut self, program: &mut XdpProgram) -> anyhow::Result<()> {
        self.host.restore();
        program.detach()?;
        tracing::info!("stopped; the host is as herd found it");
        Ok(())
    }
}

/// The in-kernel dataplane: the verdict and the flow table in the XDP program.
struct InKernel<'a> {
    program: &'a mut XdpProgram,
}

impl Dataplane for InKernel<'_> {
    fn install(
        &mut self,
        generation: u64,
        modes: &[table::BucketMode],
    ) -> Result<(), DataplaneError> {
        Ok(self
            .program
            .install(&ModeTable::new(generation, modes.to_vec())?)?)
    }

    fn keep_alive(&mut self, ttl: Duration) -> Result<(), DataplaneError> {
        Ok(self.program.keep_alive(ttl)?)
    }

    fn draining_flows(&mut self, _generation: u64) -> Result<Option<u64>, DataplaneError> {
        // The program's count is made against the table installed last, this generation's.
        Ok(Some(self.program.draining_flows()? as u64))
    }

    fn traffic(&mut self) -> Result<Traffic, DataplaneError> {
        Ok(self.program.traffic()?)
    }
}

/// The AF_XDP dataplane: the workers classify under the table published to them, and the
/// redirect program holds the liveness deadline.
struct Workers<'a> {
    redirect: &'a mut XdpProgram,
    table: &'a SharedTable<FarmTable>,
    rules: Arc<FarmRules>,
    workers: &'a [Worker],
}

impl Dataplane for Workers<'_> {
    fn install(
        &mut self,
        generation: u64,
        modes: &[table::BucketMode],
    ) -> Result<(), DataplaneError> {
        let modes = ModeTable::new(generation, modes.to_vec())?;
        self.table
            .publish(FarmTable::new(Arc::clone(&self.rules), modes));
        Ok(())
    }

    fn keep_alive(&mut self, ttl: Duration) -> Result<(), DataplaneError> {
        Ok(self.redirect.keep_alive(ttl)?)
    }

    fn draining_flows(&mut self, generation: u64) -> Result<Option<u64>, DataplaneError> {
        let mut total = 0;
        for worker in self.workers {
            match worker.counters().drained() {
                Some(drained) if drained.generation == generation => total += drained.flows as u64,
                _ => return Ok(None),
            }
        }
        Ok(Some(total))
    }

    fn traffic(&mut self) -> Result<Traffic, DataplaneError> {
        // The workers count what they take; the redirect program what it passes or drops
        // before them.
        let kernel = self.redirect.traffic()?;
        Ok(std::iter::once(kernel)
            .chain(
                self.workers
                    .iter()
                    .map(|worker| worker.counters().traffic()),
            )
            .sum())
    }
}

/// The in-kernel mode: the whole verdict in the XDP program.
fn run_xdp(mut node: Node, start: Start) -> anyhow::Result<()> {
    let mut xdp = XdpProgram::load(&node.rules, &node.nothing(), node.host.mac())?;
    xdp.keep_alive(node.liveness_ttl())?;
    node.prepare_host()?;
    node.attach(&mut xdp)?;
    node.announce("xdp");
    let result = node.serve(start, InKernel { program: &mut xdp }, "xdp");
    let finished = node.finish(&mut xdp);
    result.and(finished)
}

/// The AF_XDP mode: the redirect program hands the VIP flows to one socket per RX queue, each
/// served by a worker pinned to a core, which hands what this node owns to the stack through
/// a TAP device.
fn run_afxdp(mut node: Node, start: Start, path: &Path) -> anyhow::Result<()> {
    let interface = node.host.name().to_owned();
    let queues = node.host.rx_queues()?;
    let cores = worker_cores(&node.config.dataplane.cores, queues, path)?;
    let mut redirect = XdpProgram::load_redirect(&node.rules, node.host.mac())?;
    redirect.keep_alive(node.liveness_ttl())?;
    let mut sockets = Vec::with_capacity(queues as usize);
    for queue in 0..queues {
        let socket = QueueSocket::open(&interface, queue, node.config.dataplane.zero_copy)
            .context("the kernel refused an AF_XDP socket (AF_XDP needs Linux 5.4 or later with CONFIG_XDP_SOCKETS)")?;
        tracing::info!(
            %interface,
            queue,
            mode = if socket.zero_copy() { "zero-copy" } else { "copy" },
            "opened the AF_XDP socket"
        );
        redirect.add_socket(queue, socket.fd())?;
        sockets.push(socket);
    }
    let stack = format!("herd{}", node.host.index());
    let ports = Port::tap(&stack, sockets.len())?;
    node.host.prepare_stack_device(&stack)?;
    tracing::info!(device = %stack, queues, "created the TAP device that takes accepted frames to the stack");

    let rules = Arc::new(node.rules.clone());
    let table = Arc::new(SharedTable::new(FarmTable::new(
        Arc::clone(&rules),
        node.nothing(),
    )));
    node.prepare_host()?;
    // The workers stop after the membership thread, once the node has left: they serve the
    // drain.
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::with_capacity(sockets.len());
    for ((socket, port), core) in sockets.into_iter().zip(ports).zip(cores) {
        let queue = socket.queue();
        let settings = WorkerSettings {
            core,
            batch: node.config.dataplane.batch as usize,
            if_mac: node.host.mac(),
            table: Arc::clone(&table),
            stop: Arc::clone(&stop),
        };
        workers.push(Worker::spawn(socket, port, settings)?);
        tracing::info!(queue, core = core.id, "started the worker");
    }
    node.attach(&mut redirect)?;
    node.announce("afxdp");
    let dataplane = Workers {
        redirect: &mut redirect,
        table: &table,
        rules,
        workers: &workers,
    };
    let result = node.serve(start, dataplane, "afxdp");
    let finished = node.finish(&mut redirect);
    stop.store(true, Ordering::Relaxed);
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
            batches = batches.len(),
            batch_p50_ns = batches.value_at_quantile(0.5),
            batch_p99_ns = batches.value_at_quantile(0.99),
            "worker stopped"
        );
    }
    result.and(finished)
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

/// The index of this node in the configuration: named, or found by a local address.
fn identify(config: &FarmConfig, node: Option<&str>) -> anyhow::Result<usize> {
    let local: Vec<std::net::IpAddr> = if node.is_some() {
        Vec::new()
    } else {
        farm::local_addresses().context("cannot list this host's addresses")?
    };
    Ok(config.identify(node, &local)?)
}

/// The directory the XDP attachment is pinned in: `dir`, which must be on a BPF file system,
/// or `/sys/fs/bpf/herd`, mounting the BPF file system at `/sys/fs/bpf` if it is not (it stays
/// mounted: the pin must outlive herd).
fn pin_dir(dir: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(dir) = dir {
        if !on_bpf_fs(dir) {
            bail!(
                "--bpf-dir {}: not a directory on a BPF file system (mount -t bpf bpf {0})",
                dir.display()
            );
        }
        return Ok(dir.to_owned());
    }
    if !on_bpf_fs(Path::new(BPF_FS)) {
        let status = std::process::Command::new("mount")
            .args(["-t", "bpf", "bpf", BPF_FS])
            .status()
            .context("cannot run mount")?;
        if !status.success() {
            bail!("cannot mount the BPF file system at {BPF_FS} ({status})");
        }
        tracing::info!("mounted the BPF file system at {BPF_FS}");
    }
    let dir = Path::new(BPF_FS).join("herd");
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

/// Whether `dir` is on a BPF file system.
fn on_bpf_fs(dir: &Path) -> bool {
    const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs is plain data, valid when zeroed.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a NUL-terminated string and `stat` a valid statfs to write to.
    let result = unsafe { libc::statfs(path.as_ptr(), &mut stat) };
    result == 0 && stat.f_type as i64 == BPF_FS_MAGIC
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
