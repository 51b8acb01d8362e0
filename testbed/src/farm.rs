//! A farm's bed: a hub namespace whose bridge joins a namespace per node and one for the
//! client, each plugged in with a veth pair (`eth0` in the host, a port named after the host
//! in the hub), or as the plan's [`Uplink`] says, and addressed from the plan, IPv4 and IPv6.
//! Nothing is made in the machine's own network namespace.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use crate::address::{self, CLIENT4, MAX_NODES, MAX_SOURCES};
use crate::bed::Bed;
use crate::link::{self, HubKind, Offload, PortOf};
use crate::netns::Netns;
use crate::process::{Herd, HerdSpec};
use crate::uplink::{self, Uplink};

/// The bridge's name, in the hub namespace.
pub const BRIDGE: &str = "hub";
/// The veth of every host, plugged into the hub: its interface unless the plan's [`Uplink`]
/// puts a VLAN or a bond on top.
pub const INTERFACE: &str = uplink::VETH;
/// The client's name, of its namespace and its port in the hub.
pub const CLIENT: &str = "client";

/// What a farm's bed is made of.
#[derive(Clone, Debug)]
pub struct FarmPlan<'a> {
    /// The prefix of every name (see [`Bed::create`]).
    pub prefix: String,
    /// The nodes' names, in order: node `i` has the plan's address [`address::node4`]`(i)`.
    /// Each names its namespace (`PREFIX-NAME`) and its port in the hub, so at most 15 bytes.
    pub nodes: &'a [&'a str],
    /// How the hub forwards frames.
    pub hub: HubKind,
    /// How many extra source addresses the client has ([`address::source4`] 1 to this).
    pub sources: u8,
    /// The client's checksum offload.
    pub client_offload: Offload,
    /// How each node is attached to the hub, and the client with it.
    pub uplink: Uplink,
}

/// How a node's `herd run` is started, besides the node's own directories.
#[derive(Clone, Copy, Debug)]
pub struct HerdRun<'a> {
    /// The herd executable.
    pub exe: &'a Path,
    /// The configuration file.
    pub config: &'a Path,
    /// A file the log is appended to.
    pub log_file: Option<&'a Path>,
    /// Whether each line of the log is copied to standard error, after the node's name.
    pub echo: bool,
}

impl<'a> HerdRun<'a> {
    /// A run of `exe` with `config` whose log is copied to standard error and kept in no
    /// file: what a test shows among its own output.
    pub fn echoed(exe: &'a Path, config: &'a Path) -> Self {
        HerdRun {
            exe,
            config,
            log_file: None,
            echo: true,
        }
    }
}

/// A host plugged into the hub.
#[derive(Clone, Debug)]
pub struct Host {
    /// The node's name, or [`CLIENT`].
    pub name: String,
    /// Its namespace.
    pub netns: Netns,
    /// Its own IPv4 address; its IPv6 twin is on its interface too.
    pub address: Ipv4Addr,
    /// The interface its addresses are on (`eth0`, `eth0.VID`, `bond0`), which herd runs on.
    pub interface: String,
}

impl Host {
    /// The MAC of its interface.
    pub fn mac(&self) -> anyhow::Result<[u8; 6]> {
        crate::neighbour::interface_mac(&self.netns, &self.interface)
    }
}

/// The hub, the nodes and the client; the [`Bed`] inside removes them.
#[derive(Debug)]
pub struct FarmBed {
    /// The nodes, in the plan's order.
    pub nodes: Vec<Host>,
    /// The client.
    pub client: Host,
    /// The hub's namespace.
    pub hub: Netns,
    bed: Bed,
}

impl FarmBed {
    /// Builds the bed `plan` describes. Whatever fails half-way is undone before the error is
    /// returned.
    pub fn create(plan: &FarmPlan) -> anyhow::Result<Self> {
        if plan.nodes.len() > MAX_NODES {
            bail!("at most {MAX_NODES} nodes, not {}", plan.nodes.len());
        }
        if plan.sources > MAX_SOURCES {
            bail!(
                "at most {MAX_SOURCES} source addresses, not {}",
                plan.sources
            );
        }
        let mut bed = Bed::create(&plan.prefix)?;
        let hub = bed.netns("hub")?;
        link::bridge(&hub, BRIDGE, plan.hub)?;
        let mut nodes = Vec::new();
        for (index, &name) in plan.nodes.iter().enumerate() {
            let address = address::node4(index);
            let (netns, interface) = plug(
                &mut bed,
                (&hub, plan.hub, PortOf::Node),
                name,
                plan.uplink,
                &[address],
            )?;
            nodes.push(Host {
                name: name.to_owned(),
                netns,
                address,
                interface,
            });
        }
        let addresses: Vec<Ipv4Addr> = std::iter::once(CLIENT4)
            .chain((1..=plan.sources).map(address::source4))
            .collect();
        let (netns, interface) = plug(
            &mut bed,
            (&hub, plan.hub, PortOf::Client),
            CLIENT,
            plan.uplink,
            &addresses,
        )?;
        link::set_offload(&netns, INTERFACE, plan.client_offload)?;
        if interface != INTERFACE {
            // A VLAN device has offloads of its own, on top of its veth's.
            link::set_offload(&netns, &interface, plan.client_offload)?;
        }
        Ok(FarmBed {
            nodes,
            client: Host {
                name: CLIENT.to_owned(),
                netns,
                address: CLIENT4,
                interface,
            },
            hub,
            bed,
        })
    }

    /// The bed: scratch directory, BPF file system, namespaces, processes.
    pub fn bed(&self) -> &Bed {
        &self.bed
    }

    /// Node `node`'s directory for its incarnation and control socket, created; a node's own,
    /// so that what one node keeps there cannot be taken for another's.
    pub fn state_dir(&self, node: usize) -> anyhow::Result<PathBuf> {
        let name = &self.node(node)?.name;
        self.bed.dir(&format!("state/{name}"))
    }

    /// Node `node`'s pin directory (`--bpf-dir`), created on the bed's BPF file system.
    pub fn bpf_dir(&self, node: usize) -> anyhow::Result<PathBuf> {
        self.bed.bpf_dir(&self.node(node)?.name)
    }

    /// Starts `herd run` as node `node` in its namespace, with its own pin and state
    /// directories, without waiting for anything.
    pub fn spawn_herd(&self, node: usize, run: &HerdRun) -> anyhow::Result<Herd> {
        let dirs = self.dirs(node)?;
        Herd::spawn(&self.bed, &self.node(node)?.netns, &dirs.spec(run))
    }

    /// Starts `herd run` as node `node`, as [`FarmBed::spawn_herd`] does, and waits for it to
    /// say that it runs.
    pub fn start_herd(&self, node: usize, run: &HerdRun) -> anyhow::Result<Herd> {
        let dirs = self.dirs(node)?;
        Herd::start(&self.bed, &self.node(node)?.netns, &dirs.spec(run))
    }

    fn dirs(&self, node: usize) -> anyhow::Result<NodeDirs> {
        Ok(NodeDirs {
            name: self.node(node)?.name.clone(),
            bpf_dir: self.bpf_dir(node)?,
            state_dir: self.state_dir(node)?,
        })
    }

    /// Pulls the cable of node `node`'s `veth` (`eth0`, or a bond's `eth1`) out of the hub:
    /// the hub's port goes down, so the veth loses its carrier as a NIC whose cable is pulled
    /// does, and the bridge forgets the MACs it learnt on that port.
    pub fn unplug(&self, node: usize, veth: &str) -> anyhow::Result<()> {
        let port = uplink::hub_port(&self.node(node)?.name, veth);
        self.hub
            .ip(&["link", "set", &port, "down"])
            .with_context(|| format!("cannot take the hub's port {port} down"))
    }

    /// Node `node`.
    pub fn node(&self, node: usize) -> anyhow::Result<&Host> {
        self.nodes
            .get(node)
            .with_context(|| format!("the farm has no node {node}"))
    }
}

/// Makes host `name`'s namespace and plugs it into the hub, a bridge of `kind` in namespace
/// `hub`, as `uplink` says (a port or two named after the host, leading to `of`), its
/// interface given `addresses` and their IPv6 twins; returns the namespace and the
/// interface.
fn plug(
    bed: &mut Bed,
    hub: (&Netns, HubKind, PortOf),
    name: &str,
    uplink: Uplink,
    addresses: &[Ipv4Addr],
) -> anyhow::Result<(Netns, String)> {
    let netns = bed.netns(name)?;
    let interface = uplink::plug(&netns, hub, BRIDGE, name, uplink)?;
    address::assign(&netns, &interface, addresses)?;
    Ok((netns, interface))
}

/// A node's own name and directories.
struct NodeDirs {
    name: String,
    bpf_dir: PathBuf,
    state_dir: PathBuf,
}

impl NodeDirs {
    fn spec<'a>(&'a self, run: &HerdRun<'a>) -> HerdSpec<'a> {
        HerdSpec {
            exe: run.exe,
            node: Some(&self.name),
            config: run.config,
            bpf_dir: &self.bpf_dir,
            state_dir: &self.state_dir,
            log_file: run.log_file,
            echo: run.echo,
        }
    }
}
