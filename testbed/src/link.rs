//! The links between hosts: veth pairs, the hub's bridge, and the checksum offload of a
//! host's interface.

use anyhow::Context;

use crate::netns::Netns;

/// One end of a veth pair.
#[derive(Clone, Copy, Debug)]
pub struct End<'a> {
    /// The namespace the end is in.
    pub netns: &'a Netns,
    /// The interface's name, at most 15 bytes.
    pub name: &'a str,
    /// Its MAC address; the kernel draws one when `None`.
    pub mac: Option<[u8; 6]>,
}

impl<'a> End<'a> {
    /// The end `name` in `netns`, with a MAC address the kernel draws.
    pub fn new(netns: &'a Netns, name: &'a str) -> Self {
        End {
            netns,
            name,
            mac: None,
        }
    }
}

/// Creates a veth pair between `a` and `b`, each end in its namespace, both down.
pub fn veth(a: End, b: End) -> anyhow::Result<()> {
    let (mac_a, mac_b) = (a.mac.map(mac_text), b.mac.map(mac_text));
    let mut args = vec!["link", "add", "name", a.name];
    if let Some(mac) = &mac_a {
        args.extend(["address", mac]);
    }
    args.extend([
        "netns",
        a.netns.name(),
        "type",
        "veth",
        "peer",
        "name",
        b.name,
    ]);
    if let Some(mac) = &mac_b {
        args.extend(["address", mac]);
    }
    args.extend(["netns", b.netns.name()]);
    crate::command::run("ip", &args, None)
        .with_context(|| format!("cannot create the veth pair {} - {}", a.name, b.name))
        .map(drop)
}

/// How the hub forwards frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HubKind {
    /// A bridge that learns no address (`ageing_time 0`) and floods every frame to every port,
    /// as a switch floods frames to a MAC it never saw as a source, which is what a VIP's
    /// virtual MAC is. herd needs every node to see every packet to the VIP.
    Flooding,
    /// A bridge that learns, with the kernel's default ageing: a switch that has seen the
    /// VIP's MAC as a source sends its frames to that port only.
    Learning,
    /// A learning bridge whose ports flood no unknown unicast (`flood off`), as a switch with
    /// unicast flooding blocked or storm control, with IGMP and MLD snooping and a querier:
    /// the unicast virtual MAC reaches no node. Its snooping looks groups up by a frame's IP
    /// destination, as many switches' does, so traffic to a group MAC whose destination is
    /// the VIP goes to the multicast router ports only (or floods while no querier is
    /// known): the nodes' ports are static router ports (`mcast_router 2`), the static entry
    /// such a switch needs for the multicast MAC mode.
    NoFlood,
}

/// What a hub's port leads to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortOf {
    /// A node of the farm.
    Node,
    /// A client.
    Client,
}

/// Creates bridge `name` in `netns` of `kind` and brings it up.
pub fn bridge(netns: &Netns, name: &str, kind: HubKind) -> anyhow::Result<()> {
    let mut args = vec!["link", "add", "name", name, "type", "bridge"];
    match kind {
        HubKind::Flooding => args.extend(["ageing_time", "0"]),
        HubKind::Learning => {}
        HubKind::NoFlood => args.extend(["mcast_snooping", "1", "mcast_querier", "1"]),
    }
    netns
        .ip(&args)
        .with_context(|| format!("cannot create bridge {name} in {}", netns.name()))?;
    netns.ip(&["link", "set", name, "up"])
}

/// Makes `port` (in the bridge's namespace) a port of `bridge` of `kind`, leading to `of`, and
/// brings it up.
pub fn attach(
    netns: &Netns,
    port: &str,
    bridge: &str,
    kind: HubKind,
    of: PortOf,
) -> anyhow::Result<()> {
    netns.ip(&["link", "set", port, "master", bridge, "up"])?;
    if kind != HubKind::NoFlood {
        return Ok(());
    }
    let mut args = vec![
        "link",
        "set",
        "dev",
        port,
        "type",
        "bridge_slave",
        "flood",
        "off",
    ];
    if of == PortOf::Node {
        args.extend(["mcast_router", "2"]);
    }
    netns
        .ip(&args)
        .with_context(|| format!("cannot set the flooding of port {port} of {bridge}"))
}

/// The checksum offload of a host's interface.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Offload {
    /// What the kernel gives a veth device: between veth devices the transmit checksum
    /// offload leaves checksums unfilled, with a mark in the kernel's packet buffer.
    #[default]
    Default,
    /// Transmit checksum offload off (`ethtool -K DEV tx off`), so that the host's frames
    /// carry complete checksums, as frames on a wire do.
    TxOff,
}

/// Applies `offload` to `device` in `netns`.
pub fn set_offload(netns: &Netns, device: &str, offload: Offload) -> anyhow::Result<()> {
    match offload {
        Offload::Default => Ok(()),
        Offload::TxOff => netns
            .exec(&["ethtool", "-K", device, "tx", "off"], None)
            .with_context(|| {
                format!(
                    "cannot turn off the checksum offload of {device} in {}",
                    netns.name()
                )
            })
            .map(drop),
    }
}

/// A MAC address as `ip` reads it.
pub fn mac_text(bytes: [u8; 6]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_are_written_as_ip_reads_them() {
        assert_eq!(mac_text([0x02, 0, 0, 0, 0, 0x0b]), "02:00:00:00:00:0b");
    }
}
