//! A `herd run` process in a node's namespace, its log kept line by line with the moment each
//! line arrived, so that log events can be timed against a kill.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};

use crate::topology::Netns;

/// A line of herd's log and when herd-perf read it.
#[derive(Clone, Debug)]
pub struct Line {
    /// When the line was read (a few microseconds after herd wrote it).
    pub at: Instant,
    /// The line.
    pub text: String,
}

/// The lines a herd has logged so far, and a signal for each new one.
#[derive(Default)]
struct Log {
    lines: Mutex<Vec<Line>>,
    grew: Condvar,
}

impl Log {
    fn lock(&self) -> MutexGuard<'_, Vec<Line>> {
        // A reader thread that panicked cannot leave the list half-written: pushes are whole.
        self.lines
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Where `herd run` finds its files.
pub struct HerdFiles<'a> {
    /// The herd executable.
    pub herd: &'a Path,
    /// The configuration file.
    pub config: &'a Path,
    /// The directory of the XDP pin, on a BPF file system.
    pub bpf_dir: &'a Path,
    /// The directory of the incarnation.
    pub state_dir: &'a Path,
    /// A file the log is copied to, if any.
    pub log_file: Option<PathBuf>,
}

/// A `herd run` process, killed on drop if it still runs.
pub struct Herd {
    child: Child,
    log: Arc<Log>,
    exited: Option<ExitStatus>,
}

impl Herd {
    /// Starts `herd run` as node `node` in `netns`, without waiting for anything.
    pub fn spawn(netns: &Netns, node: &str, files: &HerdFiles) -> anyhow::Result<Self> {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", netns.name()])
            .arg(files.herd)
            .arg("run")
            .arg("-c")
            .arg(files.config)
            .args(["--node", node])
            .arg("--bpf-dir")
            .arg(files.bpf_dir)
            .arg("--state-dir")
            .arg(files.state_dir)
            .arg("--control-dir")
            .arg(files.state_dir)
            // Plain lines: the log is matched as text.
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot start {}", files.herd.display()))?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| anyhow!("herd's standard error is not piped"))?;
        let mut copy = match &files.log_file {
            Some(path) => Some(
                File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
            ),
            None => None,
        };
        let log = Arc::new(Log::default());
        let writer = Arc::clone(&log);
        let label = node.to_owned();
        std::thread::Builder::new()
            .name(format!("log-{label}"))
            .spawn(move || {
                for text in BufReader::new(stderr).lines().map_while(Result::ok) {
                    let at = Instant::now();
                    if let Some(file) = &mut copy {
                        // A full disk loses the copy, not the run.
                        let _ = writeln!(file, "{text}");
                    }
                    tracing::debug!("{label}: {text}");
                    writer.lock().push(Line { at, text });
                    writer.grew.notify_all();
                }
            })
            .context("cannot start a log reader thread")?;
        Ok(Herd {
            child,
            log,
            exited: None,
        })
    }

    /// herd's process id (`ip netns exec` runs herd in its place, so the child's pid is
    /// herd's).
    pub fn pid(&self) -> anyhow::Result<libc::pid_t> {
        libc::pid_t::try_from(self.child.id()).context("herd's process id")
    }

    /// How many lines herd has logged so far: a starting point for [`Herd::wait_for`].
    pub fn logged(&self) -> usize {
        self.log.lock().len()
    }

    /// Waits up to `timeout` for a line, from the `from`th one on, that `matches`; returns it.
    pub fn wait_for(
        &self,
        from: usize,
        matches: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> Option<Line> {
        let deadline = Instant::now() + timeout;
        let mut lines = self.log.lock();
        let mut next = from;
        loop {
            let start = next.min(lines.len());
            if let Some(line) = lines[start..].iter().find(|line| matches(&line.text)) {
                return Some(line.clone());
            }
            next = lines.len();
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            lines = self
                .log
                .grew
                .wait_timeout(lines, left)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
    }

    /// The lines from the `from`th one on that `match`.
    pub fn lines_since(&self, from: usize, matches: impl Fn(&str) -> bool) -> Vec<Line> {
        let lines = self.log.lock();
        lines[from.min(lines.len())..]
            .iter()
            .filter(|line| matches(&line.text))
            .cloned()
            .collect()
    }

    /// Sends herd `signal` (`libc::SIGKILL`, `libc::SIGTERM`, ...).
    pub fn signal(&self, signal: libc::c_int) -> anyhow::Result<()> {
        if self.exited.is_some() {
            bail!("herd has exited already");
        }
        let pid = self.pid()?;
        // SAFETY: kill takes no pointers; `pid` is our child, not yet reaped, so the id
        // cannot have been reused.
        if unsafe { libc::kill(pid, signal) } != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("cannot send signal {signal} to herd ({pid})"));
        }
        Ok(())
    }

    /// Waits up to `timeout` for herd to exit; `None` if it still runs.
    pub fn wait_timeout(&mut self, timeout: Duration) -> anyhow::Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited {
                return Ok(Some(status));
            }
            if let Some(status) = self.child.try_wait().context("cannot wait for herd")? {
                self.exited = Some(status);
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
}

impl Drop for Herd {
    fn drop(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
