//! The nodes' `herd run` processes: started in their namespaces, their standard error
//! written to a log file, asked for their status over their control sockets, killed, and
//! stopped for good when dropped.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::bed::Bed;
use crate::control::{self, Reply, Request};
use crate::status::Status;

/// How long the herds have, together, to leave after SIGTERM before they are killed.
const LEAVE: Duration = Duration::from_secs(3);

/// One node's `herd run`, while it runs.
pub struct Herd {
    child: Child,
    log: PathBuf,
}

impl Herd {
    /// Starts `exe run` as node `name` in `netns`, with the bed's files.
    pub fn spawn(exe: &Path, bed: &Bed, node: usize, name: &str) -> anyhow::Result<Self> {
        let log = bed.log(name);
        // Appended to: a restarted node's log follows the log of its first life.
        let stderr = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("cannot open {}", log.display()))?;
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", bed.nodes[node].name()])
            .arg(exe)
            .args(["run", "--node", name, "-c"])
            .arg(bed.config())
            .arg("--bpf-dir")
            .arg(bed.bpf_dir(name))
            .arg("--state-dir")
            .arg(bed.state_dir())
            .arg("--control-dir")
            .arg(bed.state_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            // A process group of its own: Ctrl-C on the terminal reaches the demo alone, which
            // then stops the nodes itself, in order.
            .process_group(0);
        // SAFETY: the closure runs in the child between fork and exec, where only
        // async-signal-safe calls are allowed: prctl is one, and it touches no memory of the
        // parent's.
        unsafe {
            command.pre_exec(|| {
                // Should the demo die without cleaning up (SIGKILL), the node dies with it
                // rather than run on. The signal follows the spawning thread, the demo's main
                // thread, which lives until the end.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command
            .spawn()
            .with_context(|| format!("cannot start herd for node {name}"))?;
        Ok(Herd { child, log })
    }

    /// Kills herd with SIGKILL, as a crash would, and waits for it to be gone. `ip netns
    /// exec` runs herd in its own place (exec), so the child is herd.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        self.child.kill().context("cannot kill herd")?;
        self.child
            .wait()
            .context("cannot wait for the killed herd")?;
        Ok(())
    }

    /// herd's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// How herd exited, if it has.
    pub fn exited(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        self.child.try_wait().context("cannot wait for herd")
    }

    /// Where its log goes.
    pub fn log(&self) -> &Path {
        &self.log
    }
}

/// The herds of every node, stopped when dropped: SIGTERM (each leaves the farm and undoes
/// its changes), and SIGKILL for those still there after [`LEAVE`].
pub struct Herds {
    /// Each node's herd, `None` while it does not run.
    pub running: Vec<Option<Herd>>,
}

impl Drop for Herds {
    fn drop(&mut self) {
        for herd in self.running.iter().flatten() {
            if let Ok(pid) = libc::pid_t::try_from(herd.child.id()) {
                // SAFETY: kill takes no pointers; `pid` is a child not yet reaped, so the id
                // cannot have been reused.
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
        }
        let deadline = Instant::now() + LEAVE;
        for herd in self.running.iter_mut().flatten() {
            while matches!(herd.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                // A child's exit cannot be waited for with a time-out (short of a pidfd);
                // polling every 20 ms bounds the delay.
                std::thread::sleep(Duration::from_millis(20));
            }
            if matches!(herd.child.try_wait(), Ok(None)) {
                let _ = herd.child.kill();
                let _ = herd.child.wait();
            }
        }
    }
}

/// Node `name`'s status, from its control socket in `dir`.
pub fn status(dir: &Path, name: &str) -> anyhow::Result<Status> {
    match control::request(dir, Some(name), Request::Status)? {
        Reply::Status(status) => Ok(*status),
        other => bail!("node {name} answered something else than a status: {other:?}"),
    }
}

/// The last `lines` lines of the log at `path`, each indented, for an error message.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let Ok(file) = File::open(path) else {
        return format!("    (no log at {})", path.display());
    };
    let all: Vec<String> = BufReader::new(file).lines().map_while(Result::ok).collect();
    if all.is_empty() {
        return "    (the log is empty)".to_owned();
    }
    all[all.len().saturating_sub(lines)..]
        .iter()
        .map(|line| format!("    {line}\n"))
        .collect::<String>()
        .trim_end()
        .to_owned()
}
