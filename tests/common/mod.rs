//! What the end-to-end tests of `herd run` share: the root check, `ip`, network namespaces and
//! threads inside them, a scratch directory, a BPF file system for the pins, and herd itself.
//! Everything made here is removed on drop, whether the test passed or not.

// Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Fails the test unless it runs as root.
pub fn needs_root() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test builds network namespaces and needs root: run it through scripts/test as root"
    );
}

/// Runs `ip` with `args`, panicking with its message on failure.
pub fn ip(args: &[&str]) {
    let output = Command::new("ip").args(args).output().expect("runs ip");
    assert!(
        output.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The namespace `herd-<id>-hub` holding bridge `hub`, to which the tests' hosts are plugged.
/// `ageing_time 0`: the bridge learns no address and floods every frame, as a switch floods
/// frames to a MAC it never saw as a source, which is what a VIP's virtual MAC is.
pub fn hub(id: &str) -> Netns {
    let hub = Netns::new(format!("herd-{id}-hub"));
    ip(&[
        "-n",
        hub.name(),
        "link",
        "add",
        "name",
        "hub",
        "type",
        "bridge",
        "ageing_time",
        "0",
    ]);
    ip(&["-n", hub.name(), "link", "set", "hub", "up"]);
    hub
}

/// A veth pair: `a_dev` in namespace `a`, its peer `b_dev` in `b`.
pub fn veth(a: &Netns, a_dev: &str, b: &Netns, b_dev: &str) {
    ip(&[
        "link",
        "add",
        a_dev,
        "netns",
        a.name(),
        "type",
        "veth",
        "peer",
        "name",
        b_dev,
        "netns",
        b.name(),
    ]);
}

/// What `ip args` prints, whether it succeeded or not.
pub fn ip_show(args: &[&str]) -> String {
    let output = Command::new("ip").args(args).output().expect("runs ip");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Turns off the transmit checksum offload of `device` in `netns`, so that its frames carry
/// complete checksums, as frames on a wire do. Between veth devices the offload leaves them
/// unfilled, with a mark in the kernel's packet buffer that an AF_XDP copy does not keep: the
/// AF_XDP mode would hand the stack packets whose checksums fail.
pub fn complete_checksums(netns: &Netns, device: &str) {
    let output = Command::new("ip")
        .args([
            "netns",
            "exec",
            netns.name(),
            "ethtool",
            "-K",
            device,
            "tx",
            "off",
        ])
        .output()
        .expect("runs ethtool (scripts/deps installs it)");
    assert!(
        output.status.success(),
        "ethtool -K {device} tx off: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A network namespace, deleted on drop (with the interfaces in it, and the XDP programs
/// attached to them).
pub struct Netns {
    name: String,
}

impl Netns {
    /// A new namespace named `name`, with its loopback up.
    pub fn new(name: String) -> Self {
        ip(&["netns", "add", &name]);
        let netns = Netns { name };
        ip(&["-n", &netns.name, "link", "set", "lo", "up"]);
        netns
    }

    /// The namespace's name, for `ip -n` and `ip netns exec`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `f` in a new thread that has entered this namespace; the thread's sockets live in
    /// it.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> JoinHandle<T> {
        let file = File::open(format!("/run/netns/{}", self.name)).expect("the namespace exists");
        std::thread::spawn(move || {
            // SAFETY: `file` is an open namespace file; setns only changes this thread.
            let entered = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(entered, 0, "enters the namespace");
            f()
        })
    }

    /// Runs `f` in this namespace and returns what it returns.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        self.spawn(f).join().unwrap()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A directory of the test's own under the system's temporary directory, removed on drop.
pub struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    /// A new, empty directory whose name holds `tag` and the process id, so that runs and
    /// tests do not collide.
    pub fn new(tag: &str) -> Self {
        let path = std::env::temp_dir().join(format!("herd-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        ScratchDir { path }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A BPF file system of the test's own, where herd pins its attachments (`--bpf-dir`), so
/// that tests running at the same time do not replace each other's programs. Unmounted on
/// drop, which releases what is still pinned.
pub struct BpfFs {
    path: PathBuf,
}

impl BpfFs {
    /// Mounts a BPF file system on `path`, which is created.
    pub fn mount(path: PathBuf) -> Self {
        std::fs::create_dir_all(&path).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "bpf", "bpf"])
            .arg(&path)
            .status()
            .unwrap();
        assert!(mounted.success(), "mounts a BPF file system");
        BpfFs { path }
    }

    /// A directory for one node's pins, created.
    pub fn dir(&self, name: &str) -> PathBuf {
        let dir = self.path.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}

impl Drop for BpfFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
        let _ = std::fs::remove_dir(&self.path);
    }
}

/// A `herd run` process, killed on drop if it still runs.
pub struct Herd {
    child: Child,
    log: Arc<Log>,
}

/// The lines a herd has logged so far, and a signal for each new one.
#[derive(Default)]
struct Log {
    lines: Mutex<Vec<String>>,
    grew: Condvar,
}

/// Where `herd run` finds its files: the configuration, the pin directory (on a BPF file
/// system) and the state directory (which holds the control sockets too).
pub struct HerdFiles<'a> {
    /// The configuration file.
    pub config: &'a Path,
    /// The directory of the XDP pin.
    pub bpf_dir: &'a Path,
    /// The directory of the incarnation.
    pub state_dir: &'a Path,
}

impl Herd {
    /// Starts `herd run` with `files` [--node node] in namespace `netns` and waits for it to
    /// say that it runs. Its log goes to the test's standard error, each line prefixed with
    /// the node's name, and is kept for [`Herd::wait_for`].
    pub fn start(netns: &Netns, files: &HerdFiles, node: Option<&str>) -> Self {
        let herd = Self::spawn(netns, files, node);
        assert!(
            herd.wait_for(0, |line| line.contains("running:"), Duration::from_secs(20))
                .is_some(),
            "herd reports that it runs"
        );
        herd
    }

    /// Starts `herd run` as [`Herd::start`] does, without waiting for anything.
    pub fn spawn(netns: &Netns, files: &HerdFiles, node: Option<&str>) -> Self {
        let mut command = Command::new("ip");
        command
            .args([
                "netns",
                "exec",
                netns.name(),
                env!("CARGO_BIN_EXE_herd"),
                "run",
            ])
            .arg("-c")
            .arg(files.config)
            .arg("--bpf-dir")
            .arg(files.bpf_dir)
            .arg("--state-dir")
            .arg(files.state_dir)
            .arg("--control-dir")
            .arg(files.state_dir)
            .stderr(Stdio::piped());
        if let Some(node) = node {
            command.args(["--node", node]);
        }
        let mut child = command.spawn().expect("starts herd");
        let stderr = child.stderr.take().unwrap();
        let label = node.unwrap_or("herd").to_owned();
        let log = Arc::new(Log::default());
        let writer = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("{label}: {line}");
                writer.lines.lock().unwrap().push(line);
                writer.grew.notify_all();
            }
        });
        Herd { child, log }
    }

    /// How many lines herd has logged so far: a starting point for [`Herd::wait_for`].
    pub fn logged(&self) -> usize {
        self.log.lines.lock().unwrap().len()
    }

    /// Waits up to `timeout` for a line, from the `from`th one on, that `matches`; returns its
    /// index.
    pub fn wait_for(
        &self,
        from: usize,
        matches: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> Option<usize> {
        let deadline = Instant::now() + timeout;
        let mut lines = self.log.lines.lock().unwrap();
        let mut next = from;
        loop {
            if let Some(found) = lines[next.min(lines.len())..]
                .iter()
                .position(|line| matches(line))
            {
                return Some(next.min(lines.len()) + found);
            }
            next = lines.len();
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            lines = self.log.grew.wait_timeout(lines, left).unwrap().0;
        }
    }

    /// Whether a line from the `from`th one on `matches`, without waiting.
    pub fn has_logged(&self, from: usize, matches: impl Fn(&str) -> bool) -> bool {
        let lines = self.log.lines.lock().unwrap();
        lines[from.min(lines.len())..]
            .iter()
            .any(|line| matches(line))
    }

    /// Sends herd a signal (`STOP`, `CONT`, `KILL`, ...). `ip netns exec` runs herd in place
    /// (exec), so the child's pid is herd's.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -{signal} {pid}");
    }

    /// Waits for herd to exit.
    pub fn wait(mut self) -> ExitStatus {
        self.child.wait().unwrap()
    }

    /// Waits up to `timeout` for herd to exit; `None` if it still runs.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            // A child's exit is not an event this process can wait on with a timeout (short
            // of a pidfd); polling every 10 ms bounds the delay.
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// A farm key file's text: one key, id 1.
pub const KEY: &str = "1 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n";

impl Drop for Herd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What `herd status --json --node NODE --control-dir DIR` prints: where a running node stands,
/// asked over its control socket (the `--control-dir` it was started with; [`Herd::spawn`]
/// gives it the state directory).
pub fn status_json(control_dir: &Path, node: &str) -> serde_json::Value {
    let output = Command::new(env!("CARGO_BIN_EXE_herd"))
        .args(["status", "--json", "--node", node, "--control-dir"])
        .arg(control_dir)
        .output()
        .expect("runs herd status");
    assert!(
        output.status.success(),
        "herd status --node {node}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("herd status --json prints JSON")
}
