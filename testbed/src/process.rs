//! `herd run` processes in a bed's namespaces: started, signalled, their log lines awaited
//! with a deadline, asked for their status over their control socket, and stopped.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::bed::{Bed, SharedChild};
use crate::log::{Line, Log};
use crate::netns::Netns;

/// How long `herd run` may take to say that it runs.
pub const START: Duration = Duration::from_secs(20);
/// How many lines of the log an error about a herd shows.
const TAIL: usize = 15;

/// How to run `herd run`.
#[derive(Clone, Copy, Debug)]
pub struct HerdSpec<'a> {
    /// The herd executable.
    pub exe: &'a Path,
    /// The node (`--node`), or `None` to let herd find it by its addresses.
    pub node: Option<&'a str>,
    /// The configuration file.
    pub config: &'a Path,
    /// The directory of the XDP pin, on a BPF file system (`--bpf-dir`).
    pub bpf_dir: &'a Path,
    /// The directory of the incarnation and of the control socket (`--state-dir` and
    /// `--control-dir`).
    pub state_dir: &'a Path,
    /// A file the log is appended to (a restarted node's log follows its first life's).
    pub log_file: Option<&'a Path>,
    /// Whether each line is copied to standard error, after the node's name.
    pub echo: bool,
}

/// A `herd run` process, killed on drop if it still runs (and by its bed's drop, should the
/// bed go first). Its standard error is read line by line into its [`Log`].
#[derive(Debug)]
pub struct Herd {
    child: SharedChild,
    pid: Pid,
    log: Arc<Log>,
    exe: PathBuf,
    node: Option<String>,
    control_dir: PathBuf,
    exited: Option<ExitStatus>,
}

impl Herd {
    /// Starts `herd run` as `spec` says in `netns` and waits up to [`START`] for it to say
    /// that it runs.
    pub fn start(bed: &Bed, netns: &Netns, spec: &HerdSpec) -> anyhow::Result<Self> {
        let herd = Self::spawn(bed, netns, spec)?;
        if herd
            .wait_for(0, |line| line.contains("running:"), START)
            .is_none()
        {
            bail!(
                "{} did not say that it runs within {START:?}; the last lines of its log:\n{}",
                herd.label(),
                herd.tail(TAIL).join("\n")
            );
        }
        Ok(herd)
    }

    /// Starts `herd run` as `spec` says in `netns`, without waiting for anything. The process
    /// leads a group of its own, so that Ctrl-C on a terminal reaches its starter alone, which
    /// then stops it itself; and it dies with the thread that started it, should that end
    /// without cleaning up (SIGKILL).
    pub fn spawn(bed: &Bed, netns: &Netns, spec: &HerdSpec) -> anyhow::Result<Self> {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", netns.name()])
            .arg(spec.exe)
            .arg("run")
            .arg("-c")
            .arg(spec.config)
            .arg("--bpf-dir")
            .arg(spec.bpf_dir)
            .arg("--state-dir")
            .arg(spec.state_dir)
            .arg("--control-dir")
            .arg(spec.state_dir)
            // Plain lines: the log is matched as text.
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0);
        if let Some(node) = spec.node {
            command.args(["--node", node]);
        }
        dies_with_its_parent(&mut command);
        let mut copy = match spec.log_file {
            Some(path) => Some(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .with_context(|| format!("cannot open {}", path.display()))?,
            ),
            None => None,
        };
        let label = spec.node.unwrap_or("herd").to_owned();
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot start {} for {label}", spec.exe.display()))?;
        // `ip netns exec` runs herd in its own place (exec): the child is herd.
        let pid = Pid::from_raw(i32::try_from(child.id()).context("herd's process id")?);
        let stderr = child.stderr.take();
        let child = Arc::new(Mutex::new(child));
        bed.adopt(&child);
        // Made before the log's reader, so that herd is killed should that fail to start.
        let herd = Herd {
            child,
            pid,
            log: Arc::new(Log::default()),
            exe: spec.exe.to_owned(),
            node: spec.node.map(str::to_owned),
            control_dir: spec.state_dir.to_owned(),
            exited: None,
        };
        if let Some(stderr) = stderr {
            let writer = Arc::clone(&herd.log);
            let echo = spec.echo;
            std::thread::Builder::new()
                .name(format!("log-{label}"))
                .spawn(move || {
                    for text in BufReader::new(stderr).lines().map_while(Result::ok) {
                        if let Some(file) = &mut copy {
                            // A full disk loses the copy, not the run.
                            let _ = writeln!(file, "{text}");
                        }
                        if echo {
                            // eprintln: a test's output capture takes it.
                            eprintln!("{label}: {text}");
                        }
                        writer.push(text);
                    }
                })
                .context("cannot start a log reader thread")?;
        }
        Ok(herd)
    }

    /// herd's process id.
    pub fn pid(&self) -> u32 {
        self.pid.as_raw().unsigned_abs()
    }

    /// Sends herd `signal` (`Signal::SIGTERM`, `SIGKILL`, `SIGSTOP`, `SIGCONT`...).
    pub fn signal(&self, signal: Signal) -> anyhow::Result<()> {
        if self.exited.is_some() {
            bail!("{} has exited already", self.label());
        }
        // Under the lock: the child cannot be reaped meanwhile, so its pid cannot have been
        // reused.
        let _child = self.lock();
        kill(self.pid, signal)
            .with_context(|| format!("cannot send {signal} to {} ({})", self.label(), self.pid))
    }

    /// Kills herd with SIGKILL, as a crash would, and waits for it to be gone.
    pub fn kill(&mut self) -> anyhow::Result<ExitStatus> {
        if self.exited.is_none() {
            self.lock().kill().context("cannot kill herd")?;
        }
        self.wait()
    }

    /// Waits for herd to exit.
    pub fn wait(&mut self) -> anyhow::Result<ExitStatus> {
        if let Some(status) = self.exited {
            return Ok(status);
        }
        let status = self.lock().wait().context("cannot wait for herd")?;
        self.exited = Some(status);
        Ok(status)
    }

    /// How herd exited, if it has.
    pub fn exited(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        if self.exited.is_none() {
            let status = self.lock().try_wait().context("cannot wait for herd")?;
            self.exited = status;
        }
        Ok(self.exited)
    }

    /// Waits up to `timeout` for herd to exit; `None` if it still runs.
    pub fn wait_timeout(&mut self, timeout: Duration) -> anyhow::Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            // A child's exit is not an event this process can wait on with a timeout (short
            // of a pidfd); polling every 10 ms bounds the delay.
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// How many lines herd has logged so far: a starting point for [`Herd::wait_for`].
    pub fn logged(&self) -> usize {
        self.log.len()
    }

    /// Waits up to `timeout` for a line, from the `from`th one on, that `matches`.
    pub fn wait_for(
        &self,
        from: usize,
        matches: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> Option<Line> {
        self.log.wait_for(from, matches, timeout)
    }

    /// Whether a line from the `from`th one on `matches`, without waiting.
    pub fn has_logged(&self, from: usize, matches: impl Fn(&str) -> bool) -> bool {
        !self.log.lines_since(from, matches).is_empty()
    }

    /// The lines from the `from`th one on that `matches`.
    pub fn lines_since(&self, from: usize, matches: impl Fn(&str) -> bool) -> Vec<Line> {
        self.log.lines_since(from, matches)
    }

    /// The last `count` lines of the log.
    pub fn tail(&self, count: usize) -> Vec<String> {
        self.log.tail(count)
    }

    /// What `herd status --json` says about the node, asked over its control socket.
    pub fn status(&self) -> anyhow::Result<serde_json::Value> {
        let mut command = Command::new(&self.exe);
        command.args(["status", "--json", "--control-dir"]);
        command.arg(&self.control_dir);
        if let Some(node) = &self.node {
            command.args(["--node", node]);
        }
        let output = command
            .output()
            .with_context(|| format!("cannot run {} status", self.exe.display()))?;
        if !output.status.success() {
            bail!(
                "herd status for {}: {}",
                self.label(),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        serde_json::from_slice(&output.stdout).context("herd status --json printed no JSON")
    }

    fn label(&self) -> String {
        match &self.node {
            Some(node) => format!("{node}'s herd"),
            None => "herd".to_owned(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Child> {
        self.child.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Herd {
    fn drop(&mut self) {
        if self.exited.is_none() {
            let _ = self.kill();
        }
    }
}

/// Makes the child `command` starts get SIGKILL when the thread that started it ends, so that
/// a test or harness that dies without dropping it leaves no process behind.
pub fn dies_with_its_parent(command: &mut Command) {
    // SAFETY: the closure runs in the child between fork and exec, where only
    // async-signal-safe calls are allowed: prctl is one, and it touches no memory of the
    // parent's.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Stops `herds` together: SIGTERM to each (each leaves its farm and undoes its changes), then
/// SIGKILL to those still running after `grace`.
pub fn stop_all<'a>(herds: impl IntoIterator<Item = &'a mut Herd>, grace: Duration) {
    let mut herds: Vec<&mut Herd> = herds.into_iter().collect();
    for herd in &herds {
        // One already gone needs no signal.
        let _ = herd.signal(Signal::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    for herd in &mut herds {
        let left = deadline.saturating_duration_since(Instant::now());
        if !matches!(herd.wait_timeout(left), Ok(Some(_))) {
            let _ = herd.kill();
        }
    }
}
