//! How a host is attached to the hub: its own veth, an 802.1Q sub-interface of it, or an
//! active-backup bond of two veths. herd runs on the interface the host's addresses are on,
//! whichever it is.

use anyhow::{bail, Context};
use serde_json::Value;

use crate::link::{self, End, HubKind, PortOf};
use crate::netns::Netns;

/// The veth every host has, plugged into the hub (a bond's first one).
pub const VETH: &str = "eth0";
/// A bond's second veth.
pub const SECOND_VETH: &str = "eth1";
/// The bond's name.
pub const BOND: &str = "bond0";
/// How often the bond looks at its veths' carrier (`miimon`), in milliseconds: the kernel's
/// switch-over takes up to this long after a link goes down, plus the announcement of the
/// bond's MAC on the new link.
pub const MIIMON_MS: u32 = 100;
/// The longest VLAN sub-interface name the kernel takes.
const NAME_MAX: usize = 15;

/// How each node is attached to the hub. The client is on the same link: on the same VLAN
/// for [`Uplink::Vlan`], on its own veth otherwise.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Uplink {
    /// Its veth `eth0`, addressed.
    #[default]
    Veth,
    /// The 802.1Q sub-interface `eth0.VID` of its veth, addressed; the hub's bridge (no VLAN
    /// filtering) carries the tagged frames as they are, learning their source MACs.
    Vlan(u16),
    /// `bond0`, addressed: an active-backup bond (`miimon` [`MIIMON_MS`]) of two veths,
    /// `eth0` and `eth1`, each plugged into a port of the hub (`NAME` and `NAME-1`), as a
    /// server is cabled to two ports of one switch. `eth0` is the active link at the start.
    Bond,
}

impl Uplink {
    /// The interface the host's addresses are on, which herd runs on.
    pub fn interface(self) -> String {
        match self {
            Uplink::Veth => VETH.to_owned(),
            Uplink::Vlan(vid) => format!("{VETH}.{vid}"),
            Uplink::Bond => BOND.to_owned(),
        }
    }

    /// Whether the client is attached this way too: it shares a VLAN, but has no bond.
    fn for_client(self) -> Uplink {
        match self {
            Uplink::Bond => Uplink::Veth,
            other => other,
        }
    }
}

/// The port of the hub that `veth` of host `name` is plugged into.
pub fn hub_port(name: &str, veth: &str) -> String {
    if veth == SECOND_VETH {
        format!("{name}-1")
    } else {
        name.to_owned()
    }
}

/// Attaches host `name`, in `netns`, to `bridge` (of `kind`, in namespace `hub`) as `uplink`
/// says (a client as it says for a client), everything up; returns the interface to address.
pub fn plug(
    netns: &Netns,
    (hub, kind, of): (&Netns, HubKind, PortOf),
    bridge: &str,
    name: &str,
    uplink: Uplink,
) -> anyhow::Result<String> {
    let uplink = match of {
        PortOf::Client => uplink.for_client(),
        PortOf::Node => uplink,
    };
    let hub = (hub, kind, of);
    let interface = uplink.interface();
    match uplink {
        Uplink::Veth => {
            cable(netns, hub, bridge, name, VETH)?;
        }
        Uplink::Vlan(vid) => {
            if !(1..=4094).contains(&vid) {
                bail!("VLAN {vid} is not a VLAN id (1 to 4094)");
            }
            if interface.len() > NAME_MAX {
                bail!("the VLAN interface name {interface} is longer than {NAME_MAX} bytes");
            }
            cable(netns, hub, bridge, name, VETH)?;
            let vid = vid.to_string();
            netns
                .ip(&[
                    "link", "add", "link", VETH, "name", &interface, "type", "vlan", "id", &vid,
                ])
                .with_context(|| {
                    format!(
                        "cannot create {interface} in {} (does the kernel have 802.1Q VLANs, \
                         CONFIG_VLAN_8021Q?)",
                        netns.name()
                    )
                })?;
        }
        Uplink::Bond => {
            let miimon = MIIMON_MS.to_string();
            netns
                .ip(&[
                    "link",
                    "add",
                    BOND,
                    "type",
                    "bond",
                    "mode",
                    "active-backup",
                    "miimon",
                    &miimon,
                ])
                .with_context(|| {
                    format!(
                        "cannot create {BOND} in {} (does the kernel have bonding, \
                         CONFIG_BONDING?)",
                        netns.name()
                    )
                })?;
            for veth in [VETH, SECOND_VETH] {
                cable(netns, hub, bridge, name, veth)?;
                netns
                    .ip(&["link", "set", veth, "master", BOND])
                    .with_context(|| format!("cannot enslave {veth} to {BOND}"))?;
            }
        }
    }
    if uplink != Uplink::Bond {
        netns.ip(&["link", "set", VETH, "up"])?;
    }
    netns.ip(&["link", "set", &interface, "up"])?;
    Ok(interface)
}

/// A veth pair from `veth` in `netns` to its port in `bridge`, the port up.
fn cable(
    netns: &Netns,
    (hub, kind, of): (&Netns, HubKind, PortOf),
    bridge: &str,
    name: &str,
    veth: &str,
) -> anyhow::Result<()> {
    let port = hub_port(name, veth);
    if port.len() > NAME_MAX {
        bail!(
            "the hub's port name {port} is longer than {NAME_MAX} bytes: shorten host name {name}"
        );
    }
    link::veth(End::new(netns, veth), End::new(hub, &port))?;
    link::attach(hub, &port, bridge, kind, of)
}

/// The bond's active link in `netns` (`eth0` or `eth1`), or `None` while it has none.
pub fn active_link(netns: &Netns) -> anyhow::Result<Option<String>> {
    let text = netns.ip_output(&["-d", "-j", "link", "show", BOND])?;
    let links: Value =
        serde_json::from_str(&text).with_context(|| format!("ip -j link show {BOND}: {text}"))?;
    let active = &links[0]["linkinfo"]["info_data"]["active_slave"];
    Ok(active.as_str().map(str::to_owned))
}
