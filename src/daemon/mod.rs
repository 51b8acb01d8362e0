//! `herd run`'s daemon: this node, run in the foreground as a member of its farm until SIGINT
//! or SIGTERM makes it leave.
//!
//! [`run`] holds its whole life: the setup (the configuration and key, the host, the packet
//! path loaded and attached), the serving (the membership thread, the supervisor, the control
//! socket's, farm and web servers, each on a thread of one scope) and the teardown (one
//! shutdown signal that every thread watches, every thread joined, the host put back). The
//! membership thread ([`herd_membership::driver`]) steers the packet path through the
//! `Dataplane` seam: it installs the bucket modes the protocol decides and renews the liveness
//! deadline with every heartbeat; the node starts owning nothing. The farm server takes the
//! commands other nodes carry for an operator, on the node's address and the farm port (TCP).
//! The supervisor runs the start script, joins the farm once the checks are healthy and
//! answers the operator's requests and the signals. The announcer sends the VIPs' virtual MACs
//! again after each new view and every period.

mod announcer;
mod control_server;
mod drain_count;
mod farm_relay;
mod farm_server;
mod host_watch;
mod listener_watch;
mod lock;
pub mod metrics;
mod packet_path;
mod pin;
mod shutdown;
mod signals;
mod supervisor;
mod timeline_recorder;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use arc_swap::ArcSwap;
use axum::Router;
use crossbeam_channel::{Receiver, Sender};
use herd_config::{FarmConfig, MacMode};
use herd_dataplane::egress::{EgressError, EgressGuard};
use herd_dataplane::xdp::XdpProgram;
use herd_membership::driver::{self, Command, Driver, Start};
use herd_membership::snapshot::Snapshot;
use herd_membership::{incarnation, Farm, Settings};
use herd_packet::neighbor::multicast_group;

use crate::control::Incoming;
use crate::farm_access::FarmAccess;
use crate::farm_client::FarmClient;
use crate::host::{format_mac, Groups, Host};
use crate::timeline::Timeline;
use crate::web::console::secret::Secret;
use crate::web::console::ConsoleState;
use crate::web::{self, Web};
use crate::{control, farm};
use announcer::Announcer;
use control_server::Server;
use farm_relay::FarmRelay;
use host_watch::HostWatch;
use lock::{Holder, InterfaceLock};
use packet_path::PacketPath;
use shutdown::Shutdown;
use signals::Stop;
use supervisor::{Ending, Identity, Supervisor};

/// How long `herd run` waits for another host to answer for a VIP before it takes it.
const VIP_PROBE_WAIT: Duration = Duration::from_millis(300);

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

/// Runs the daemon as node `node` (found by its addresses when not given) until it has
/// stopped, and puts the host back.
pub fn run(paths: &Paths, node: Option<&str>) -> anyhow::Result<()> {
    let shutdown = Shutdown::default();
    let (stops_sender, stops) = crossbeam_channel::unbounded();
    let signals = signals::listen(stops_sender, &shutdown)?;
    let result = setup_serve_teardown(paths, node, &shutdown, &stops);
    shutdown.trigger();
    signals
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
    result
}

/// The setup, the serving and the teardown, which runs whenever the packet path was loaded.
fn setup_serve_teardown(
    paths: &Paths,
    node: Option<&str>,
    shutdown: &Shutdown,
    stops: &Receiver<Stop>,
) -> anyhow::Result<()> {
    let (mut node, start) = Node::setup(paths, node)?;
    let ttl = node.liveness_ttl();
    let mut path = PacketPath::load(
        &node.config,
        paths.config,
        &mut node.host,
        ttl,
        shutdown.flag(),
    )?;
    let served = node
        .prepare_host()
        .and_then(|()| node.attach(path.program()))
        .and_then(|()| {
            node.announce(path.mode());
            node.serve(start, &mut path, shutdown, stops)
        });
    let undone = node.teardown(path.program());
    shutdown.trigger();
    path.join();
    served.and(undone)
}

/// What the node is made of once set up.
struct Node {
    config: FarmConfig,
    name: String,
    incarnation: u64,
    host: Host,
    /// The VIPs' multicast groups, joined in the multicast MAC mode.
    groups: Option<Groups>,
    /// Where the XDP attachment is pinned.
    pin: PathBuf,
    /// The guard on what the kernel sends from the VIPs, loaded, attached by
    /// [`Node::prepare_host`].
    egress: EgressGuard,
    /// Where its attachment is pinned.
    egress_pin: PathBuf,
    /// The control socket.
    control: Server,
    /// How this node carries an operator's command to any node of the farm.
    farm_client: Arc<FarmClient>,
    /// What happened to the farm as this node saw it, shown by the farm channel's status
    /// answers.
    timeline: Arc<Timeline>,
    /// Held while the node runs: one herd per interface.
    _lock: InterfaceLock,
}

impl Node {
    /// Reads the configuration and the key, finds this node and its interface and binds its
    /// control socket, refusing before anything on the host is changed when something is
    /// wrong.
    fn setup(paths: &Paths, node: Option<&str>) -> anyhow::Result<(Self, Start)> {
        // First, so that a user without root is told so, not that the key is unreadable.
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            bail!("herd run needs root: it attaches an XDP program, adds the VIPs to the interface and sets its options");
        }
        let config = FarmConfig::load(paths.config)?;
        let local = identify(&config, node)?;
        let keys = farm::load_keys(paths.config, &config)?;
        let name = config.nodes[local].name.clone();
        let interface = config.interface_of(local).to_owned();
        // Taken before anything is changed, on the host or in the state directory: a second
        // herd on the interface stops here, whatever directories it was given.
        let lock = InterfaceLock::take(
            Path::new(lock::LOCK_DIR),
            &interface,
            &Holder {
                pid: std::process::id(),
                node: name.clone(),
                control: control::socket_path(paths.control_dir, &name),
            },
        )?;
        let incarnation = incarnation::next(
            &paths.state_dir.join(format!("{name}.incarnation")),
            driver::wall_ms(),
        )?;
        let mut host = Host::open(&interface, paths.state_dir, &name)?;
        let egress = load_egress_guard(&mut host, &config.farm.vips)?;
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
        let farm_client = FarmClient::new(
            start.keys.clone(),
            config.digest().0,
            config
                .nodes
                .iter()
                .map(|node| node.name.clone())
                .zip(start.addresses.iter().copied())
                .collect(),
            local,
            incarnation,
        );
        let pin_dir = pin::pin_dir(paths.bpf_dir)?;
        let node = Self {
            name,
            incarnation,
            pin: pin::xdp_pin(&pin_dir, &interface),
            egress,
            egress_pin: pin::egress_pin(&pin_dir, &interface),
            config,
            host,
            groups: None,
            control,
            farm_client: Arc::new(farm_client),
            timeline: Arc::default(),
            _lock: lock,
        };
        node.check_vips_are_free()?;
        Ok((node, start))
    }

    /// How long the node keeps accepting without a sign of life from this process until the
    /// membership thread takes over (it then renews the deadline with every heartbeat): the
    /// membership's `dead_after_ms`.
    fn liveness_ttl(&self) -> Duration {
        Duration::from_millis(self.config.membership.dead_after_ms.into())
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

    /// Prepares the host for the VIPs' traffic: nothing the kernel sends may teach the link
    /// this node's own MAC for a VIP, so the egress guard is attached first (it covers IPv6
    /// neighbour discovery and the ARP packets) and the kernel chooses the node's own address
    /// for the ARP packets it sends (arp_announce 2); the interface takes the frames sent to
    /// the virtual MACs (promiscuous mode); the kernel takes the VIPs' packets that the
    /// dataplane hands it (the VIP addresses). In the multicast MAC mode, the interface joins
    /// the VIPs' groups, so that snooping switches send it their traffic.
    fn prepare_host(&mut self) -> anyhow::Result<()> {
        self.guard_egress()?;
        self.host.set_ipv4_conf("arp_announce", "2")?;
        self.host.promiscuous()?;
        for &vip in &self.config.farm.vips {
            self.host.add_vip(vip)?;
        }
        if self.config.farm.mac == MacMode::Multicast {
            let groups: Vec<_> = self
                .config
                .farm
                .vips
                .iter()
                .map(|&vip| multicast_group(vip))
                .collect();
            self.groups = Some(self.host.join_groups(&groups)?);
            tracing::info!(interface = %self.host.name(), ?groups, "joined the VIPs' multicast groups");
        }
        Ok(())
    }

    /// Attaches the egress guard to the interface, replacing one an earlier herd left.
    fn guard_egress(&mut self) -> anyhow::Result<()> {
        let interface = self.host.name();
        if EgressGuard::remove_stale(&self.egress_pin)? {
            tracing::warn!(%interface, "removed the egress guard an earlier herd left attached (it was killed)");
        }
        self.egress
            .attach(interface, &self.egress_pin)
            .with_context(|| {
                format!(
                    "cannot attach the egress guard to {interface} (herd needs tcx links: Linux \
                     6.6 or later)"
                )
            })?;
        tracing::info!(%interface, pin = %self.egress_pin.display(), "attached the egress guard");
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
            .map_err(|error| {
                if errno(&error) == Some(libc::EBUSY) {
                    anyhow::anyhow!(
                        "cannot attach the XDP program to {interface}: another XDP program, not \
                         herd's, is attached to it (`ip link show dev {interface}` shows it); \
                         remove it, or give herd another interface"
                    )
                } else {
                    anyhow::Error::new(error).context(format!(
                        "cannot attach the XDP program to {interface} (herd needs a kernel with \
                         XDP and BPF links: Linux 5.9 or later, CONFIG_BPF_SYSCALL and \
                         CONFIG_XDP_SOCKETS)"
                    ))
                }
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
            farm_commands = %self.farm_client.nodes()[self.farm_client.local()].1,
            "running: the node joins the farm once its application is up"
        );
        self.announcer().announce();
    }

    /// The announcer of the VIPs' virtual MACs on the node's interface.
    fn announcer(&self) -> Announcer<'_> {
        Announcer::new(&self.host, &self.config.farm)
    }

    /// Runs the node over `path` until it has stopped: the membership thread, the supervisor
    /// with its checks and scripts, the control socket's, farm and web servers, all on
    /// threads of one scope. When the supervisor is done (or a thread could not start) the
    /// shutdown is signalled, and every thread is joined before this returns.
    fn serve(
        &self,
        start: Start,
        path: &mut PacketPath,
        shutdown: &Shutdown,
        stops: &Receiver<Stop>,
    ) -> anyhow::Result<()> {
        let identity = Identity {
            node: self.name.clone(),
            farm: self.config.farm.name.clone(),
            mode: path.mode(),
        };
        let mut addresses = self.config.farm.vips.clone();
        addresses.push(start.addresses[start.local].ip());
        let checked = herd_checkers::check::Host {
            interface: self.host.name().to_owned(),
            addresses,
        };
        let watch = HostWatch::new(
            self.host.name(),
            &self.config.farm.vips,
            path.program().id()?,
            self.egress.id()?,
        )
        .context("cannot open a routing netlink socket")?;
        let farm_commands = Arc::new(farm_server::Counts::default());
        let supervisor = Supervisor::new(
            &self.config,
            identity,
            &checked,
            watch,
            Arc::clone(&farm_commands),
        )?;
        let farm_server = farm_server::Server::bind(
            start.addresses[start.local],
            farm_server::Identity {
                keys: start.keys.clone(),
                farm: self.config.digest().0,
                nodes: self
                    .config
                    .nodes
                    .iter()
                    .map(|node| node.name.clone())
                    .collect(),
                local: start.local,
            },
            farm_commands,
            Arc::clone(&self.timeline),
        )?;
        tracing::info!(address = %farm_server.address()?, "taking farm commands (TCP)");
        let (driver, membership) = Driver::new(start, path, false)?;
        let exit = membership.clone();
        shutdown.on_trigger(move || {
            // Already stopped if it failed: its own error then says why.
            let _ = exit.send(Command::Exit);
        });
        let farm_access: Arc<dyn FarmAccess> = Arc::new(FarmRelay::new(
            Arc::clone(&self.farm_client) as Arc<dyn farm_relay::Channel>,
            &self.config.farm.name,
            &self.name,
            self.config
                .nodes
                .iter()
                .map(|node| node.name.clone())
                .collect(),
        ));
        let (requests, incoming) = crossbeam_channel::unbounded();
        let web = self.web(&requests, &farm_access, &membership.snapshot, shutdown)?;
        let (ending, stopped) = std::thread::scope(|scope| {
            let _shutdown = shutdown.guard();
            let spawn = |name: &str| std::thread::Builder::new().name(name.into());
            let membership_thread = spawn("herd-membership")
                .spawn_scoped(scope, || driver.run())
                .context("cannot start the membership thread")?;
            let announcer = self.announcer();
            let announcements = spawn("herd-announce")
                .spawn_scoped(scope, || announcer.run(&membership.views))
                .context("cannot start the announcement thread")?;
            let control = spawn("herd-control")
                .spawn_scoped(scope, || {
                    self.control.serve(&requests, &farm_access, shutdown)
                })
                .context("cannot start the control thread")?;
            let farm = spawn("herd-farm")
                .spawn_scoped(scope, || farm_server.serve(&requests, shutdown))
                .context("cannot start the farm command thread")?;
            let web = match web {
                Some(web) => Some(
                    spawn("herd-web")
                        .spawn_scoped(scope, || web.run())
                        .context("cannot start the web thread")?,
                ),
                None => None,
            };
            let recorder = spawn("herd-timeline")
                .spawn_scoped(scope, || {
                    timeline_recorder::run(&self.timeline, &requests, shutdown)
                })
                .context("cannot start the timeline thread")?;
            let ending = supervisor.run(scope, &membership, incoming, stops, shutdown);
            shutdown.trigger();
            let stopped = joined(membership_thread).context("the membership thread stopped");
            joined(announcements);
            joined(control)?;
            joined(farm)?;
            joined(recorder);
            if let Some(web) = web {
                joined(web)?;
            }
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

    /// The web servers `[admin]` asks for, their listeners bound, stopped at the shutdown:
    /// `/metrics` and `/healthz`, answered from the status asked for over `requests`, and the
    /// console, which reaches the farm through `farm` and draws the bucket map from this node's
    /// `membership`; `None` when neither is configured.
    fn web(
        &self,
        requests: &Sender<Incoming>,
        farm: &Arc<dyn FarmAccess>,
        membership: &Arc<ArcSwap<Snapshot>>,
        shutdown: &Shutdown,
    ) -> anyhow::Result<Option<Web>> {
        let admin = &self.config.admin;
        if admin.metrics.is_none() && admin.console.is_none() {
            return Ok(None);
        }
        let (mut web, stop) = Web::new();
        if let Some(address) = admin.metrics {
            let listener = web::Listener::bind(address, web::metrics::WHAT, web::metrics::KEY)?;
            tracing::info!(address = %listener.address()?, "serving /metrics and /healthz");
            web.serve(listener, web::metrics::router(requests.clone()));
        }
        if let Some(console) = &admin.console {
            let router = self.console_router(console, farm, membership)?;
            let listener = web::Listener::bind(console.address, "the console", "[admin] console")?;
            tracing::info!(address = %listener.address()?, "serving the console");
            web.serve(listener, router);
        }
        shutdown.on_trigger(move || stop.stop());
        Ok(Some(web))
    }

    /// The console's router, with its secret read from `console_secret_file`: without a
    /// secret the console does not start, and neither does the node.
    fn console_router(
        &self,
        console: &herd_config::Console,
        farm: &Arc<dyn FarmAccess>,
        membership: &Arc<ArcSwap<Snapshot>>,
    ) -> anyhow::Result<Router> {
        let secret = Secret::read(&console.secret_file).context("[admin] console_secret_file")?;
        Ok(web::console::router(ConsoleState::new(
            secret,
            Arc::clone(farm),
            self.name.clone(),
            Arc::new(self.config.clone()),
            Arc::clone(membership),
        )))
    }

    /// Undoes everything: the groups and the VIPs first, since once the program is detached
    /// the kernel would take every VIP packet, and since the egress guard must outlast them.
    fn teardown(&mut self, program: &mut XdpProgram) -> anyhow::Result<()> {
        self.groups = None;
        self.host.restore();
        match self.egress.guarded() {
            Ok(guarded) => tracing::info!(
                solicitations_readdressed = guarded.solicitations_readdressed,
                advertisements_dropped = guarded.advertisements_dropped,
                arp_dropped = guarded.arp_dropped,
                "what the egress guard kept from mapping a VIP to this node's MAC"
            ),
            Err(error) => tracing::warn!("cannot read the egress guard's counters: {error}"),
        }
        let program_detached = program.detach();
        let guard_detached = self.egress.detach();
        program_detached?;
        guard_detached?;
        tracing::info!("stopped; the host is as herd found it");
        Ok(())
    }
}

/// Loads the egress guard for `vips` on `host`'s interface.
fn load_egress_guard(host: &mut Host, vips: &[std::net::IpAddr]) -> anyhow::Result<EgressGuard> {
    let source = host.solicitation_source(vips)?;
    EgressGuard::load(vips, host.mac(), source).map_err(|error| match error {
        EgressError::NoSource => anyhow::anyhow!(
            "{} has no IPv6 address of its own, which the IPv6 VIPs need: herd makes the \
             neighbour solicitations the kernel would send from a VIP leave from it. The kernel \
             gives every interface a link-local address unless IPv6 is off there \
             (net.ipv6.conf.{0}.disable_ipv6 = 1, or addr_gen_mode none): turn it on, or add an \
             address",
            host.name()
        ),
        error => anyhow::Error::new(error).context("cannot load the egress guard"),
    })
}

/// The result of a scoped thread, whose panic goes on in the caller.
fn joined<T>(thread: std::thread::ScopedJoinHandle<'_, T>) -> T {
    thread
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// The system's error number in `error`'s chain of causes, if any.
fn errno(error: &(dyn std::error::Error + 'static)) -> Option<i32> {
    std::iter::successors(Some(error), |error| error.source())
        .find_map(|error| error.downcast_ref::<std::io::Error>()?.raw_os_error())
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
