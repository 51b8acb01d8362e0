//! The test bed of one farm: a hub namespace whose bridge floods every frame, three node
//! namespaces and a client namespace plugged into it, a BPF file system for the nodes' pins,
//! and the configuration and key files. Everything is removed when the [`Bed`] is dropped,
//! whether the run succeeded, failed or was interrupted.

use std::fs;
use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::cli::FarmMode;
use crate::topology::{self, Netns, NETNS_PREFIX};

/// The farm's VIP (RFC 2544's benchmarking range, as every address here).
pub const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
/// The UDP echo service on the VIP, balanced per client address and port.
pub const UDP_PORT: u16 = 7;
/// A TCP service on the VIP that answers one line and closes: the short connections.
pub const SHORT_PORT: u16 = 81;
/// A TCP service on the VIP that answers every line until the client closes: the long-lived
/// connections.
pub const LONG_PORT: u16 = 82;
/// The nodes: name and own address. Equal weights: a third of the buckets each.
pub const NODES: [(&str, Ipv4Addr); 3] = [
    ("alpha", Ipv4Addr::new(198, 18, 0, 1)),
    ("bravo", Ipv4Addr::new(198, 18, 0, 2)),
    ("charlie", Ipv4Addr::new(198, 18, 0, 3)),
];
/// The client's main address.
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);
/// How many more addresses the client has, [`source`] 1 to `SOURCES`.
pub const SOURCES: u8 = 64;
/// The key that signs the heartbeats (id 1); any key does, the farm is private.
const KEY: &str = "1 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n";

/// The client's `i`th extra source address.
pub fn source(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 19, 1, i)
}

/// The configuration file's text: default membership settings (no `[membership]` table).
pub fn config_text(mode: FarmMode, buckets: u32, key_file: &Path) -> String {
    let nodes: String = NODES
        .iter()
        .map(|(name, address)| format!("[[node]]\nname = \"{name}\"\naddress = \"{address}\"\n\n"))
        .collect();
    format!(
        r#"[farm]
name = "herd-perf"
vip = ["{VIP}"]
interface = "eth0"
buckets = {buckets}
hash_key = "68657264207065726620686173682121"
auth_key_file = "{key_file}"

{nodes}[[rule]]
protocol = "udp"
ports = ["{UDP_PORT}"]
affinity = "client-ip-port"

[[rule]]
protocol = "tcp"
ports = ["{SHORT_PORT}", "{LONG_PORT}"]
affinity = "client-ip-port"

[dataplane]
mode = "{mode}"
"#,
        mode = mode.name(),
        key_file = key_file.display()
    )
}

/// One farm's namespaces, BPF file system and files.
pub struct Bed {
    /// The node namespaces, in [`NODES`] order.
    pub nodes: Vec<Netns>,
    /// The client's namespace.
    pub client: Netns,
    /// Every namespace made so far, the hub included: what drop deletes.
    made: Vec<Netns>,
    /// This farm's directory.
    dir: PathBuf,
    /// Whether the BPF file system under `dir` is mounted.
    mounted: bool,
}

impl Bed {
    /// Builds farm number `serial` of this process in `mode` with `buckets` buckets.
    pub fn create(serial: usize, mode: FarmMode, buckets: u32) -> anyhow::Result<Self> {
        let pid = std::process::id();
        let dir = topology::run_dir(pid).join(format!("farm-{serial}"));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let prefix = format!("{NETNS_PREFIX}f-{pid}-{serial}");
        // The namespaces are filled in as they are made, so that a failure half-way through
        // still deletes what was made.
        let mut bed = Bed {
            nodes: Vec::new(),
            client: Netns::add(format!("{prefix}-client"))?,
            made: Vec::new(),
            dir,
            mounted: false,
        };
        bed.made.push(bed.client.clone());
        let hub = Netns::add(format!("{prefix}-hub"))?;
        bed.made.push(hub.clone());
        // ageing_time 0: the bridge learns no address and floods every frame, as a switch
        // floods frames to a MAC it never saw as a source, which is what a VIP's virtual MAC
        // is.
        hub.ip(&[
            "link",
            "add",
            "name",
            "hub",
            "type",
            "bridge",
            "ageing_time",
            "0",
        ])?;
        hub.ip(&["link", "set", "hub", "up"])?;
        for (name, address) in NODES {
            let netns = Netns::add(format!("{prefix}-{name}"))?;
            bed.made.push(netns.clone());
            bed.plug(&hub, &netns, name, &[address])?;
            bed.nodes.push(netns);
        }
        let addresses: Vec<Ipv4Addr> = std::iter::once(CLIENT)
            .chain((1..=SOURCES).map(source))
            .collect();
        let client = bed.client.clone();
        bed.plug(&hub, &client, "client", &addresses)?;
        // Between veth devices the transmit checksum offload leaves checksums unfilled, with
        // a mark that an AF_XDP copy does not keep: the afxdp mode would hand the nodes'
        // stacks packets whose checksums fail. Complete checksums, as on a wire.
        client
            .exec(&["ethtool", "-K", "eth0", "tx", "off"], None)
            .context("cannot turn off the client's checksum offload (needs ethtool)")?;

        let key = bed.dir.join("farm.key");
        fs::write(&key, KEY).with_context(|| format!("cannot write {}", key.display()))?;
        let config = bed.config();
        fs::write(&config, config_text(mode, buckets, &key))
            .with_context(|| format!("cannot write {}", config.display()))?;
        let bpf = bed.dir.join("bpf");
        fs::create_dir_all(&bpf).with_context(|| format!("cannot create {}", bpf.display()))?;
        topology::mount_bpffs(&bpf)?;
        bed.mounted = true;
        Ok(bed)
    }

    /// Plugs `netns` into the hub with a veth pair (`eth0` in `netns`, `port` in the hub)
    /// and gives `eth0` `addresses` in 198.18.0.0/15.
    fn plug(
        &self,
        hub: &Netns,
        netns: &Netns,
        port: &str,
        addresses: &[Ipv4Addr],
    ) -> anyhow::Result<()> {
        crate::command::run(
            "ip",
            &[
                "link",
                "add",
                "eth0",
                "netns",
                netns.name(),
                "type",
                "veth",
                "peer",
                "name",
                port,
                "netns",
                hub.name(),
            ],
            None,
        )?;
        hub.ip(&["link", "set", port, "master", "hub", "up"])?;
        // One `ip` for all the addresses: the client has dozens.
        let batch: String = addresses
            .iter()
            .map(|a| format!("addr add {a}/15 dev eth0\n"))
            .collect();
        let file = self.dir.join(format!("{port}.ip"));
        fs::write(&file, batch).with_context(|| format!("cannot write {}", file.display()))?;
        let file = file
            .to_str()
            .with_context(|| format!("{} is not UTF-8", file.display()))?;
        netns.ip(&["-batch", file])?;
        netns.ip(&["link", "set", "eth0", "up"])
    }

    /// The configuration file.
    pub fn config(&self) -> PathBuf {
        self.dir.join("farm.toml")
    }

    /// Node `node`'s pin directory, created, on the farm's BPF file system.
    pub fn bpf_dir(&self, node: usize) -> anyhow::Result<PathBuf> {
        let dir = self.dir.join("bpf").join(NODES[node].0);
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(dir)
    }

    /// Node `node`'s state directory (its incarnation), kept across its restarts.
    pub fn state_dir(&self, node: usize) -> PathBuf {
        self.dir.join(format!("state-{}", NODES[node].0))
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        // Deleting a namespace deletes its interfaces and the programs attached to them.
        for netns in self.made.iter().rev() {
            netns.delete();
        }
        if self.mounted {
            if let Err(error) = topology::unmount(&self.dir.join("bpf")) {
                tracing::warn!("{error:#}");
            }
        }
        if let Err(error) = fs::remove_dir_all(&self.dir) {
            if error.kind() != io::ErrorKind::NotFound {
                tracing::warn!("cannot remove {}: {error}", self.dir.display());
            }
        }
    }
}
