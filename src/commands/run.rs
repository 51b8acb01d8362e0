//! `herd run`: runs this node in the foreground until SIGINT or SIGTERM.
//!
//! Until the membership protocol exists, every configured node is taken as alive, so the
//! node owns its share of the table of the whole farm.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use herd_config::{FarmConfig, Mode};
use herd_dataplane::neighbor::announcement;
use herd_dataplane::table::NodeId;
use herd_dataplane::xdp::XdpClassifier;
use herd_dataplane::FarmRules;

use crate::farm;
use crate::host::Host;

/// How long the node keeps owning its buckets without a sign of life from this process: the
/// membership protocol's default `dead_after_ms`, so that a frozen node stops accepting no
/// later than the others take its buckets over.
const LIVENESS_TTL: Duration = Duration::from_millis(500);

/// How often the sign of life is renewed.
const RENEW_EVERY: Duration = Duration::from_millis(100);

/// Where the BPF file system is mounted, and where herd pins its programs.
const BPF_FS: &str = "/sys/fs/bpf";

/// Runs the command; `bpf_dir` is where the XDP attachment is pinned (a BPF file system),
/// `/sys/fs/bpf/herd` when not given.
pub fn run(path: &Path, node: Option<&str>, bpf_dir: Option<&Path>) -> anyhow::Result<()> {
    // Installed first, so that a signal during the setup lets the setup finish and be undone
    // rather than kill herd halfway.
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("cannot install the signal handlers")?;
    }
    let config = FarmConfig::load(path)?;
    let local = identify(&config, node)?;
    let name = config.nodes[local].name.clone();
    if config.dataplane.mode == Mode::Afxdp {
        bail!(
            "{}: [dataplane] mode = \"afxdp\" (the default) is not available yet; set \
             mode = \"xdp\" in [dataplane] to run the in-kernel mode",
            path.display()
        );
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!("herd run needs root: it attaches an XDP program, adds the VIPs to the interface and sets its options");
    }
    let interface = config.interface_of(local).to_owned();
    let mut host = Host::open(&interface)?;
    let table = farm::table(&config, &vec![true; config.nodes.len()])?;
    let owned = table.counts(config.nodes.len())[local];
    let rules = FarmRules::from_config(&config);

    let pin = pin_dir(bpf_dir)?.join(&interface);
    let mut xdp = XdpClassifier::load(&rules, &table, local as NodeId, host.mac())?;
    xdp.keep_alive(LIVENESS_TTL)?;
    // The kernel must never send an ARP packet with a VIP as its sender address: that would
    // teach the link this node's own MAC for the VIP. arp_announce 2 makes it use the node's
    // own address.
    host.set_ipv4_conf("arp_announce", "2")?;
    host.promiscuous()?;
    for &vip in &config.farm.vips {
        host.add_vip(vip)?;
    }
    // A program an earlier herd left attached (it was killed) keeps the node closed until the
    // moment it is replaced, so it is removed only now, with everything else ready.
    if XdpClassifier::remove_stale(&pin)? {
        tracing::warn!(%interface, "removed the XDP program an earlier herd left attached (it was killed)");
    }
    let generic = host.is_virtual();
    xdp.attach(&interface, &pin, generic)?;
    tracing::info!(
        %interface,
        xdp = if generic { "generic (a virtual interface)" } else { "driver" },
        pin = %pin.display(),
        "attached the XDP program"
    );
    tracing::info!(
        node = %name,
        farm = %config.farm.name,
        %interface,
        mode = "xdp",
        buckets = owned,
        of = table.len(),
        "running: every configured node taken as alive"
    );
    for &vip in &config.farm.vips {
        if let Err(error) = host.send(&announcement(host.mac(), vip)) {
            tracing::warn!(%vip, "cannot announce the VIP's virtual MAC: {error}");
        }
    }

    while !stop.load(Ordering::Relaxed) {
        xdp.keep_alive(LIVENESS_TTL)?;
        std::thread::sleep(RENEW_EVERY);
    }
    tracing::info!("stopping");
    // The VIPs go first: once the program is detached the kernel would take every VIP packet.
    host.restore();
    xdp.detach()?;
    tracing::info!("stopped; the host is as herd found it");
    Ok(())
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
