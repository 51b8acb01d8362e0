//! Network namespaces as `ip netns` makes them, and the commands the demo runs to build them.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::Command;

use anyhow::{anyhow, bail, Context};

/// Where `ip netns` keeps its namespaces.
const NETNS_DIR: &str = "/run/netns";

/// Runs `program` with `args` and returns its standard output; the error names the command
/// and carries what it printed on standard error.
pub fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {program}"))?;
    if !output.status.success() {
        bail!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// A named network namespace. Only a name: the [`crate::demo::bed::Bed`] that made it
/// deletes it.
#[derive(Clone, Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates namespace `name` (its loopback is still down).
    pub fn add(name: String) -> anyhow::Result<Self> {
        run("ip", &["netns", "add", &name])?;
        Ok(Netns { name })
    }

    /// Deletes the namespace, with its interfaces and the programs attached to them.
    pub fn delete(&self) -> anyhow::Result<()> {
        run("ip", &["netns", "del", &self.name]).map(drop)
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n <namespace> <args>`.
    pub fn ip(&self, args: &[&str]) -> anyhow::Result<()> {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        run("ip", &full).map(drop)
    }

    /// Runs a command inside the namespace (`ip netns exec`).
    pub fn exec(&self, args: &[&str]) -> anyhow::Result<()> {
        let mut full = vec!["netns", "exec", &self.name];
        full.extend_from_slice(args);
        run("ip", &full).map(drop)
    }

    /// Runs `f` on a thread that has entered the namespace and returns what it returns.
    /// Sockets belong to the namespace they are made in, whichever thread uses them later,
    /// so this is all it takes to serve or send from inside a namespace.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> anyhow::Result<T> + Send) -> anyhow::Result<T> {
        let path = format!("{NETNS_DIR}/{}", self.name);
        let file = File::open(&path).with_context(|| format!("cannot open {path}"))?;
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    // SAFETY: `file` is an open namespace file for the whole call; setns with
                    // CLONE_NEWNET changes only the calling thread's network namespace, and
                    // this thread ends with the scope.
                    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                        return Err(std::io::Error::last_os_error()).with_context(|| {
                            format!("cannot enter network namespace {}", self.name)
                        });
                    }
                    f()
                })
                .join()
                .map_err(|_| anyhow!("a thread in network namespace {} panicked", self.name))?
        })
    }
}
