//! A farm's bed: a hub namespace whose bridge joins a namespace per node and one for the
//! client, each plugged in with a veth pair (`eth0` in the host, a port named after the host
//! in the hub) and addressed from the plan, IPv4 and IPv6. Nothing is made in the machine's
//! own network namespace.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use anyhow::{bail, Context};

use crate::address::{self, CLIENT4, MAX_NODES, MAX_SOURCES, PREFIX4, PREFIX6};
use crate::bed::Bed;
use crate::link::{self, End, HubKind, Offload};
use crate::netns::Netns;

/// The bridge's name, in the hub namespace.
pub const BRIDGE: &str = "hub";
/// The interface of every host, plugged into the hub.
pub const INTERFACE: &str = "eth0";
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
            let netns = plug(&mut bed, &hub, name, &[address])?;
            nodes.push(Host {
                name: name.to_owned(),
                netns,
                address,
            });
        }
        let addresses: Vec<Ipv4Addr> = std::iter::once(CLIENT4)
            .chain((1..=plan.sources).map(address::source4))
            .collect();
        let netns = plug(&mut bed, &hub, CLIENT, &addresses)?;
        link::set_offload(&netns, INTERFACE, plan.client_offload)?;
        Ok(FarmBed {
            nodes,
            client: Host {
                name: CLIENT.to_owned(),
                netns,
                address: CLIENT4,
            },
            hub,
            bed,
        })
    }

    /// The bed: scratch directory, BPF file system, namespaces, processes.
    pub fn bed(&self) -> &Bed {
        &self.bed
    }

    /// Node `name`'s index, if the farm has it.
    pub fn index(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|node| node.name == name)
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

    /// Node `node`.
    pub fn node(&self, node: usize) -> anyhow::Result<&Host> {
        self.nodes
            .get(node)
            .with_context(|| format!("the farm has no node {node}"))
    }
}

/// Makes host `name`'s namespace and plugs it into the hub: a veth pair, `eth0` in the host
/// with `addresses` and their IPv6 twins, the port `name` in the hub's bridge.
fn plug(bed: &mut Bed, hub: &Netns, name: &str, addresses: &[Ipv4Addr]) -> anyhow::Result<Netns> {
    let netns = bed.netns(name)?;
    link::veth(End::new(&netns, INTERFACE), End::new(hub, name))?;
    link::attach(hub, name, BRIDGE)?;
    let mut batch = String::new();
    for &address in addresses {
        let twin = IpAddr::V6(address::twin(address));
        let _ = writeln!(batch, "addr add {address}/{PREFIX4} dev {INTERFACE}");
        // nodad: the address is usable at once, with no duplicate detection to wait for.
        let _ = writeln!(batch, "addr add {twin}/{PREFIX6} dev {INTERFACE} nodad");
    }
    netns
        .ip_batch(&batch)
        .with_context(|| format!("cannot address {name}"))?;
    netns.ip(&["link", "set", INTERFACE, "up"])?;
    Ok(netns)
}
