//! The test bed: a sender and a receiver network namespace joined by a veth pair, addressed
//! from the benchmarking range 198.18.0.0/15 (and 2001:2::/48 for IPv6), with a BPF file
//! system for herd's pinned program; all removed when the [`Topology`] is dropped, whether the
//! run succeeded, failed or was interrupted.

use std::ffi::CString;
use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};
use herd_packet::craft::{MAC_A, MAC_B};

use crate::farm::{VIP4, VIP6};
use crate::{command, sched};

/// Names of this program's namespaces: the prefix, then `s` or `r` and the process id (the
/// dataplane test bed), or `f`, the process id and the rest of the name (the failover farms).
pub const NETNS_PREFIX: &str = "herd-perf-";
/// Where `ip netns` keeps its namespaces.
const NETNS_DIR: &str = "/run/netns";
/// A kernel thread's name is cut to 15 bytes.
const COMM_LEN: usize = 15;

/// A named network namespace (as `ip netns` creates them).
#[derive(Clone, Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates the namespace `name` and brings its loopback up. The caller deletes it with
    /// [`Netns::delete`].
    pub fn add(name: String) -> anyhow::Result<Self> {
        command::run("ip", &["netns", "add", &name], None)?;
        let netns = Netns { name };
        if let Err(error) = netns.ip(&["link", "set", "lo", "up"]) {
            netns.delete();
            return Err(error);
        }
        Ok(netns)
    }

    /// Deletes the namespace, with its interfaces and the programs attached to them; warns
    /// rather than fails, as it runs on the way out.
    pub fn delete(&self) {
        if Path::new(NETNS_DIR).join(&self.name).exists() {
            if let Err(error) = command::run("ip", &["netns", "del", &self.name], None) {
                tracing::warn!("cannot remove network namespace {}: {error:#}", self.name);
            }
        }
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Moves the calling thread into the namespace. Only this thread changes: aya attaches
    /// programs and resolves interface names in the namespace of the thread that asks.
    pub fn enter(&self) -> anyhow::Result<()> {
        let path = Path::new(NETNS_DIR).join(&self.name);
        let file = File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
        // SAFETY: `file` is an open namespace file for the whole call; setns with
        // CLONE_NEWNET changes only the calling thread's network namespace.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(io::Error::last_os_error())
                .with_context(|| format!("cannot enter network namespace {}", self.name));
        }
        Ok(())
    }

    /// Runs `f` on a thread that has entered the namespace and returns what it returns.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> anyhow::Result<T> + Send) -> anyhow::Result<T> {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    self.enter()?;
                    f()
                })
                .join()
                .map_err(|_| anyhow!("a thread in network namespace {} panicked", self.name))?
        })
    }

    /// Runs a command inside the namespace (`ip netns exec`, which also shows the namespace's
    /// own `/sys`) and returns its standard output.
    pub fn exec(&self, args: &[&str], stdin: Option<&str>) -> anyhow::Result<String> {
        let mut full = vec!["netns", "exec", &self.name];
        full.extend_from_slice(args);
        command::run("ip", &full, stdin)
    }

    /// Runs `ip -n <namespace> <args>`.
    pub fn ip(&self, args: &[&str]) -> anyhow::Result<()> {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        command::run("ip", &full, None).map(drop)
    }
}

/// The sender and receiver namespaces, their veth pair and the BPF file system.
pub struct Topology {
    /// Where the generator runs.
    pub sender: Netns,
    /// Where the contenders filter and the latency sockets listen.
    pub receiver: Netns,
    /// The sender's end of the veth pair (MAC [`MAC_A`]).
    pub sender_if: String,
    /// The receiver's end of the veth pair (MAC [`MAC_B`], which the templates address).
    pub receiver_if: String,
    /// This run's temporary directory.
    dir: PathBuf,
    /// Whether the BPF file system under `dir` is mounted.
    mounted: bool,
}

impl Topology {
    /// Builds the namespaces and the veth pair, named after this process so that runs do not
    /// collide.
    pub fn create() -> anyhow::Result<Self> {
        let pid = std::process::id();
        let mut topology = Topology {
            sender: Netns {
                name: format!("{NETNS_PREFIX}s-{pid}"),
            },
            receiver: Netns {
                name: format!("{NETNS_PREFIX}r-{pid}"),
            },
            // Short names, so that the receiver's NAPI thread ("napi/<name>-<id>") is
            // recognisable within the 15 bytes of a thread name.
            sender_if: format!("hs{pid}"),
            receiver_if: format!("hr{pid}"),
            dir: run_dir(pid),
            mounted: false,
        };
        topology.build()?;
        Ok(topology)
    }

    fn build(&mut self) -> anyhow::Result<()> {
        let (s, r) = (&self.sender, &self.receiver);
        command::run("ip", &["netns", "add", &s.name], None)?;
        command::run("ip", &["netns", "add", &r.name], None)?;
        // The sender only transmits what the generator makes: no IPv6 router solicitations or
        // listener reports of its own in the counts.
        s.run(|| {
            for key in ["all", "default"] {
                let path = format!("/proc/sys/net/ipv6/conf/{key}/disable_ipv6");
                fs::write(&path, "1").with_context(|| format!("cannot write {path}"))?;
            }
            Ok(())
        })?;
        let (mac_a, mac_b) = (mac(MAC_A), mac(MAC_B));
        command::run(
            "ip",
            &[
                "link",
                "add",
                "name",
                &self.sender_if,
                "address",
                &mac_a,
                "netns",
                &s.name,
                "type",
                "veth",
                "peer",
                "name",
                &self.receiver_if,
                "address",
                &mac_b,
                "netns",
                &r.name,
            ],
            None,
        )?;
        let rif = self.receiver_if.as_str();
        r.ip(&["addr", "add", "198.18.0.1/24", "dev", rif])?;
        r.ip(&["addr", "add", &format!("{VIP4}/32"), "dev", rif])?;
        r.ip(&["addr", "add", &format!("{VIP6}/128"), "dev", rif, "nodad"])?;
        s.ip(&["addr", "add", "198.18.0.2/24", "dev", &self.sender_if])?;
        for (ns, dev) in [(r, rif), (r, "lo"), (s, self.sender_if.as_str())] {
            ns.ip(&["link", "set", dev, "up"])?;
        }
        // Routes back to the clients, so that the receiver's reverse-path check passes
        // whatever the namespace's rp_filter default.
        r.ip(&["route", "add", "198.19.0.0/16", "dev", rif])?;
        r.ip(&["route", "add", "2001:2:0:1::/64", "dev", rif])?;
        self.mount_bpffs()
    }

    fn mount_bpffs(&mut self) -> anyhow::Result<()> {
        let bpf = self.bpf_dir();
        fs::create_dir_all(&bpf).with_context(|| format!("cannot create {}", bpf.display()))?;
        mount_bpffs(&bpf)?;
        self.mounted = true;
        Ok(())
    }

    /// A BPF file system private to this run, where herd pins its attachment.
    pub fn bpf_dir(&self) -> PathBuf {
        self.dir.join("bpf")
    }

    /// Runs the receiver's NAPI (veth's receive loop: XDP, then the stack for what XDP
    /// passes) in a kernel thread pinned to `core` at a high priority, away from the
    /// generator's core, so that the receiver's cost shows in a thread of its own. veth
    /// creates its NAPI instance when an XDP program is attached, so this is called after each
    /// contender's setup. Returns the threads.
    pub fn thread_receiver_napi(&self, core: usize) -> anyhow::Result<Vec<libc::pid_t>> {
        let sysfs = format!("/sys/class/net/{}/threaded", self.receiver_if);
        self.receiver
            .exec(&["sh", "-c", &format!("echo 1 > {sysfs}")], None)
            .context("cannot switch the receiver's veth to threaded NAPI")?;
        let mut prefix = format!("napi/{}-", self.receiver_if);
        prefix.truncate(COMM_LEN);
        let threads = threads_named(&prefix)?;
        for &tid in &threads {
            sched::pin(tid, core)?;
            sched::favour(tid)?;
        }
        Ok(threads)
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of the veth pair, and with it the other end and
        // every program and nftables table on them.
        for ns in [&self.sender, &self.receiver] {
            ns.delete();
        }
        if self.mounted {
            if let Err(error) = unmount(&self.bpf_dir()) {
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

/// Removes what killed runs of herd-perf left behind: namespaces and temporary directories
/// named after a process that no longer exists.
pub fn remove_stale() -> anyhow::Result<()> {
    let Ok(entries) = fs::read_dir(NETNS_DIR) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = stale_pid(&name) else {
            continue;
        };
        tracing::info!("removing network namespace {name}, left by herd-perf process {pid}");
        command::run("ip", &["netns", "del", &name], None)?;
        let dir = run_dir(pid);
        if dir.exists() {
            // Not mounted any more is the usual case; the removal below says what is wrong.
            let _ = unmount(&dir.join("bpf"));
            // The failover farms mount theirs one level down.
            for farm in fs::read_dir(&dir).into_iter().flatten().flatten() {
                let _ = unmount(&farm.path().join("bpf"));
            }
            fs::remove_dir_all(&dir).with_context(|| format!("cannot remove {}", dir.display()))?;
        }
    }
    Ok(())
}

/// The process id in a namespace name of this program whose process is gone.
fn stale_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(NETNS_PREFIX)?;
    let pid: u32 = match rest.strip_prefix("f-") {
        Some(farm) => farm.split('-').next()?.parse().ok()?,
        None => rest
            .strip_prefix("s-")
            .or_else(|| rest.strip_prefix("r-"))?
            .parse()
            .ok()?,
    };
    (!Path::new("/proc").join(pid.to_string()).exists()).then_some(pid)
}

/// The temporary directory of herd-perf process `pid`.
pub fn run_dir(pid: u32) -> PathBuf {
    std::env::temp_dir().join(format!("herd-perf-{pid}"))
}

fn mac(bytes: [u8; 6]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn c_path(path: &Path) -> anyhow::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .with_context(|| format!("{} holds a NUL byte", path.display()))
}

/// Mounts a BPF file system on `path`, which must exist.
pub fn mount_bpffs(path: &Path) -> anyhow::Result<()> {
    let target = c_path(path)?;
    // SAFETY: every pointer is a NUL-terminated string that outlives the call, and the
    // data argument may be null.
    let mounted = unsafe {
        libc::mount(
            c"bpf".as_ptr(),
            target.as_ptr(),
            c"bpf".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if mounted != 0 {
        return Err(io::Error::last_os_error())
            .with_context(|| format!("cannot mount a BPF file system on {}", path.display()));
    }
    Ok(())
}

/// Unmounts `path` (lazily: what is still pinned there is released once unused).
pub fn unmount(path: &Path) -> anyhow::Result<()> {
    let target = c_path(path)?;
    // SAFETY: `target` is a NUL-terminated path that outlives the call.
    if unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) } != 0 {
        return Err(io::Error::last_os_error())
            .with_context(|| format!("cannot unmount {}", path.display()));
    }
    Ok(())
}

/// The threads (kernel threads included) whose name starts with `prefix`.
fn threads_named(prefix: &str) -> anyhow::Result<Vec<libc::pid_t>> {
    let mut pids = Vec::new();
    for entry in fs::read_dir("/proc")
        .context("cannot list /proc")?
        .flatten()
    {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<libc::pid_t>() else {
            continue;
        };
        // A process may exit between the listing and the read.
        if let Ok(comm) = fs::read_to_string(entry.path().join("comm")) {
            if comm.trim_end().starts_with(prefix) {
                pids.push(pid);
            }
        }
    }
    Ok(pids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_names_are_recognised_by_their_dead_process() {
        // Process ids are below 2^22; this one cannot exist.
        assert_eq!(stale_pid("herd-perf-s-99999999"), Some(99999999));
        assert_eq!(stale_pid("herd-perf-r-99999999"), Some(99999999));
        let live = std::process::id();
        assert_eq!(stale_pid(&format!("herd-perf-r-{live}")), None);
        assert_eq!(stale_pid("herd-perf-x-99999999"), None);
        assert_eq!(stale_pid("other-r-99999999"), None);
        assert_eq!(stale_pid("herd-perf-f-99999999-3-hub"), Some(99999999));
        assert_eq!(stale_pid(&format!("herd-perf-f-{live}-0-alpha")), None);
    }

    #[test]
    fn macs_are_written_as_ip_reads_them() {
        assert_eq!(mac([0x02, 0, 0, 0, 0, 0x0b]), "02:00:00:00:00:0b");
    }
}
