//! Named network namespaces, as `ip netns` makes them, and threads inside them.

use std::fs::{self, File};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use nix::sched::{setns, CloneFlags};

use crate::command;

/// Where `ip netns` keeps its namespaces.
pub const NETNS_DIR: &str = "/run/netns";
/// The calling thread's network namespace.
const THREAD_NETNS: &str = "/proc/thread-self/ns/net";

/// A named network namespace: a handle, cheap to clone. The [`crate::Bed`] that made it
/// deletes it.
#[derive(Clone, Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates namespace `name` and brings its loopback up; deletes it again if that fails.
    pub(crate) fn create(name: String) -> anyhow::Result<Self> {
        command::run("ip", &["netns", "add", &name], None)?;
        let netns = Netns { name };
        if let Err(error) = netns.ip(&["link", "set", "lo", "up"]) {
            // The error that matters is the first one.
            let _ = netns.delete();
            return Err(error);
        }
        Ok(netns)
    }

    /// Deletes the namespace. Its interfaces and the programs attached to them go with it once
    /// no process or socket holds it any more.
    pub(crate) fn delete(&self) -> anyhow::Result<()> {
        command::run("ip", &["netns", "del", &self.name], None).map(drop)
    }

    /// The namespace's name, for `ip -n` and `ip netns exec`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace's file, which setns(2) takes.
    fn path(&self) -> PathBuf {
        Path::new(NETNS_DIR).join(&self.name)
    }

    /// Moves the calling thread into the namespace; only this thread changes. Sockets belong
    /// to the namespace they are made in, whichever thread uses them later.
    pub fn enter(&self) -> anyhow::Result<()> {
        let path = self.path();
        let file = File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
        setns(&file, CloneFlags::CLONE_NEWNET)
            .with_context(|| format!("cannot enter network namespace {}", self.name))
    }

    /// Whether the calling thread is inside the namespace.
    pub fn holds_this_thread(&self) -> anyhow::Result<bool> {
        let path = self.path();
        let namespace =
            fs::metadata(&path).with_context(|| format!("cannot stat {}", path.display()))?;
        let own =
            fs::metadata(THREAD_NETNS).with_context(|| format!("cannot stat {THREAD_NETNS}"))?;
        Ok((namespace.dev(), namespace.ino()) == (own.dev(), own.ino()))
    }

    /// Runs `f` on a thread that has entered the namespace and returns what it returns. A
    /// panic in `f` goes on in the caller, so that a test's assertion inside still fails the
    /// test with its message.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> anyhow::Result<T> {
        std::thread::scope(|scope| {
            let thread = scope.spawn(|| -> anyhow::Result<T> {
                self.enter()?;
                Ok(f())
            });
            thread
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
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

    /// What `ip -n <namespace> <args>` prints.
    pub fn ip_output(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        command::run("ip", &full, None)
    }

    /// Runs the `ip` commands in `batch`, one a line, in one `ip -batch` (a client has dozens
    /// of addresses).
    pub fn ip_batch(&self, batch: &str) -> anyhow::Result<()> {
        command::run("ip", &["-n", &self.name, "-batch", "-"], Some(batch)).map(drop)
    }

    /// Writes `value` to the namespace's sysctl `key` (`net/ipv6/conf/all/disable_ipv6`).
    pub fn write_sysctl(&self, key: &str, value: &str) -> anyhow::Result<()> {
        // /proc/sys/net shows the namespace of the thread that opens it.
        let path = Path::new("/proc/sys").join(key);
        self.run(|| std::fs::write(&path, value))?
            .with_context(|| format!("cannot write {} in {}", path.display(), self.name))
    }

    /// The namespace's sysctl `key`, without its line end.
    pub fn read_sysctl(&self, key: &str) -> anyhow::Result<String> {
        let path = Path::new("/proc/sys").join(key);
        let text = self
            .run(|| std::fs::read_to_string(&path))?
            .with_context(|| format!("cannot read {} in {}", path.display(), self.name))?;
        Ok(text.trim_end().to_owned())
    }
}

/// Runs `test` in a thread moved to a new, unnamed network namespace, which goes with the
/// thread, its interfaces and its sockets, however the test ends; a panic of the test is the
/// caller's.
pub fn in_a_namespace_of_its_own<T: Send + 'static>(
    test: impl FnOnce() -> T + Send + 'static,
) -> T {
    let thread = std::thread::spawn(move || {
        // SAFETY: unshare takes no pointers; it moves this thread alone to a new network
        // namespace.
        let unshared = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(unshared, 0, "unshare: {}", std::io::Error::last_os_error());
        test()
    });
    thread
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}
