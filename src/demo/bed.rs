//! The demo's test bed: a hub namespace whose bridge floods every frame, a namespace per node
//! and one for the client, each plugged into the hub with a veth pair; a private scratch
//! directory with the farm's configuration, key and logs; a BPF file system of its own for
//! the nodes' pins. Nothing is made in the host's own network namespace. Everything is
//! removed when the [`Bed`] is dropped, whether the demo succeeded, failed or was
//! interrupted.

use std::fs;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::layout::{self, NAMES, PREFIX};
use super::netns::{self, Netns};

/// What a bed is made of, for `--json` and for the checks that it is gone.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Made {
    /// The namespaces: the hub, the nodes', the client's.
    pub namespaces: Vec<String>,
    /// The bridge, in the hub namespace.
    pub bridge: String,
    /// The scratch directory (configuration, key, logs, BPF file system).
    pub scratch_dir: PathBuf,
}

/// One demo farm's namespaces, files and BPF file system.
pub struct Bed {
    /// The node namespaces, in [`NAMES`] order.
    pub nodes: Vec<Netns>,
    /// The client's namespace, once made.
    client: Option<Netns>,
    /// Every namespace made so far, in order: what drop deletes.
    made: Vec<Netns>,
    /// The run's prefix (`hd<pid>`), of every name the bed gives.
    prefix: String,
    /// The scratch directory.
    dir: PathBuf,
    /// Whether the BPF file system is mounted.
    mounted: bool,
}

impl Bed {
    /// Builds the bed of a farm of `nodes` nodes in dataplane `mode`. Whatever fails half-way
    /// is undone before the error is returned.
    pub fn create(nodes: usize, mode: &str) -> anyhow::Result<Self> {
        let pid = std::process::id();
        // A random suffix: a directory of this name cannot be there already, made by an
        // earlier run or by another user of the temporary directory.
        let dir = std::env::temp_dir().join(format!("herd-demo-{pid}-{}", layout::random_hex(4)?));
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("cannot create the scratch directory {}", dir.display()))?;
        let mut bed = Bed {
            nodes: Vec::new(),
            client: None,
            made: Vec::new(),
            prefix: format!("hd{pid}"),
            dir,
            mounted: false,
        };
        bed.build(nodes, mode)?;
        Ok(bed)
    }

    fn build(&mut self, nodes: usize, mode: &str) -> anyhow::Result<()> {
        let hub = self.add(format!("{}-hub", self.prefix))?;
        let bridge = self.bridge();
        // ageing_time 0: the bridge learns no address and floods every frame, as a switch
        // floods frames to a MAC it never saw as a source, which is what a VIP's virtual MAC
        // is. herd needs every node to see every packet.
        hub.ip(&[
            "link",
            "add",
            "name",
            &bridge,
            "type",
            "bridge",
            "ageing_time",
            "0",
        ])?;
        hub.ip(&["link", "set", &bridge, "up"])?;
        for node in 0..nodes {
            let netns = self.add(format!("{}-n{}", self.prefix, node + 1))?;
            let port = format!("{}-n{}", self.prefix, node + 1);
            self.plug(
                &hub,
                &netns,
                &port,
                &[layout::node_address(node).to_string()],
            )?;
            self.nodes.push(netns);
        }
        let client = self.add(format!("{}-cl", self.prefix))?;
        let addresses: Vec<String> = layout::client_addresses()
            .iter()
            .map(ToString::to_string)
            .collect();
        self.plug(&hub, &client, &format!("{}-cl", self.prefix), &addresses)?;
        // Between veth devices the transmit checksum offload leaves checksums unfilled, with
        // a mark that an AF_XDP copy does not keep: the afxdp mode would hand the nodes'
        // stacks packets whose checksums fail. Complete checksums, as on a wire.
        client
            .exec(&["ethtool", "-K", "eth0", "tx", "off"])
            .context("cannot turn off the client's checksum offload")?;
        self.client = Some(client);

        let key = self.dir.join("farm.key");
        write_private(&key, &format!("1 {}\n", layout::random_hex(32)?))?;
        let text = layout::config_text(nodes, mode, &layout::random_hex(16)?, &key);
        write_private(&self.config(), &text)?;
        let bpf = self.dir.join("bpf");
        fs::create_dir(&bpf).with_context(|| format!("cannot create {}", bpf.display()))?;
        // A BPF file system of the run's own: the nodes' pins neither meet another herd's
        // nor outlive the demo.
        let path = path_str(&bpf)?;
        netns::run("mount", &["-t", "bpf", "bpf", path])
            .context("cannot mount a BPF file system for the nodes' pins")?;
        self.mounted = true;
        for name in &NAMES[..nodes] {
            let dir = bpf.join(name);
            fs::create_dir(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        Ok(())
    }

    /// Creates a namespace with its loopback up, recorded for removal as soon as it exists.
    fn add(&mut self, name: String) -> anyhow::Result<Netns> {
        let netns = Netns::add(name)?;
        self.made.push(netns.clone());
        netns.ip(&["link", "set", "lo", "up"])?;
        Ok(netns)
    }

    /// Plugs `netns` into the hub: a veth pair, `eth0` in `netns` and `port` in the hub's
    /// bridge, and `addresses` on `eth0`.
    fn plug(
        &self,
        hub: &Netns,
        netns: &Netns,
        port: &str,
        addresses: &[String],
    ) -> anyhow::Result<()> {
        netns::run(
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
        )?;
        hub.ip(&["link", "set", port, "master", &self.bridge(), "up"])?;
        // One `ip` for all the addresses: the client has dozens.
        let batch: String = addresses
            .iter()
            .map(|address| format!("addr add {address}/{PREFIX} dev eth0\n"))
            .collect();
        let file = self.dir.join(format!("{port}.ip"));
        write_private(&file, &batch)?;
        netns.ip(&["-batch", path_str(&file)?])?;
        netns.ip(&["link", "set", "eth0", "up"])
    }

    /// The bridge's name (in the hub namespace).
    fn bridge(&self) -> String {
        self.prefix.clone()
    }

    /// The client's namespace.
    pub fn client(&self) -> anyhow::Result<&Netns> {
        self.client
            .as_ref()
            .context("the client's namespace is not made")
    }

    /// The configuration file.
    pub fn config(&self) -> PathBuf {
        self.dir.join("farm.toml")
    }

    /// Node `name`'s pin directory, on the run's BPF file system.
    pub fn bpf_dir(&self, name: &str) -> PathBuf {
        self.dir.join("bpf").join(name)
    }

    /// Where the nodes keep their incarnations and their control sockets.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// Node `name`'s log file.
    pub fn log(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.log"))
    }

    /// What the bed is made of.
    pub fn made(&self) -> Made {
        Made {
            namespaces: self
                .made
                .iter()
                .map(|netns| netns.name().to_owned())
                .collect(),
            bridge: self.bridge(),
            scratch_dir: self.dir.clone(),
        }
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        // Deleting a namespace deletes its interfaces and the programs attached to them;
        // the herds are gone by now (they are dropped first).
        for netns in self.made.iter().rev() {
            if let Err(error) = netns.delete() {
                warn(format_args!(
                    "cannot remove network namespace {}: {error:#}",
                    netns.name()
                ));
            }
        }
        let bpf = self.dir.join("bpf");
        if self.mounted {
            // Unmounting releases what is still pinned there.
            if let Err(error) = path_str(&bpf).and_then(|path| netns::run("umount", &[path])) {
                warn(format_args!("cannot unmount {}: {error:#}", bpf.display()));
                // The directory would take the file system's contents with it: keep it.
                return;
            }
        }
        if let Err(error) = fs::remove_dir_all(&self.dir) {
            if error.kind() != ErrorKind::NotFound {
                warn(format_args!(
                    "cannot remove {}: {error}",
                    self.dir.display()
                ));
            }
        }
    }
}

/// Says on standard error what the cleanup could not undo; a closed standard error loses the
/// message rather than stop the cleanup.
fn warn(message: std::fmt::Arguments) {
    let _ = writeln!(std::io::stderr(), "herd demo: {message}");
}

/// Writes `text` to a new file at `path` readable by root only (the key is a secret).
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut file| file.write_all(text.as_bytes()))
        .with_context(|| format!("cannot write {}", path.display()))
}

/// `path` as a command argument.
fn path_str(path: &Path) -> anyhow::Result<&str> {
    path.to_str()
        .with_context(|| format!("{} is not UTF-8", path.display()))
}
