//! A shell command line run with a timeout, for `command` checks and the application's
//! scripts. It runs in a process group of its own, killed whole when the time is up, and its
//! output is handed over line by line.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::{ProbeError, Probed};

/// How long the output is still read after the shell has exited: a daemon the command
/// started may hold the pipes open for good.
const DRAIN: Duration = Duration::from_millis(200);

/// How often the shell is looked at while its output is quiet.
const TICK: Duration = Duration::from_millis(20);

/// How a command ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finished {
    /// Whether it exited with status 0 in time.
    pub success: bool,
    /// How it ended, for the log: `exit status 3`, `killed by signal 9`, `timed out after 5s`.
    pub how: String,
}

impl Finished {
    /// As a probe's result: a command check is healthy when it exits with 0 in time.
    pub fn probed(&self) -> Probed {
        if self.success {
            Ok(())
        } else {
            Err(ProbeError::new(self.how.clone()))
        }
    }
}

/// Runs `command_line` with `sh -c` and the environment variables `env`, handing each line
/// it writes (standard output or error) to `line`, and kills its whole process group if it
/// has not exited after `timeout`.
pub fn run(
    command_line: &str,
    env: &[(&str, &str)],
    timeout: Duration,
    mut line: impl FnMut(&str),
) -> std::io::Result<Finished> {
    let deadline = Instant::now() + timeout;
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(command_line)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()?;
    let (lines, output) = mpsc::channel();
    for pipe in [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let lines = lines.clone();
        std::thread::spawn(move || {
            for text in BufReader::new(pipe).lines().map_while(Result::ok) {
                if lines.send(text).is_err() {
                    return;
                }
            }
        });
    }
    drop(lines);
    let group = child.id() as libc::pid_t;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break None;
        }
        if let Ok(text) = output.recv_timeout(left.min(TICK)) {
            line(&text);
        }
    };
    let Some(status) = status else {
        // SAFETY: kill takes no pointers; the negative pid names the command's process group,
        // which it leads, so nothing outside it is signalled.
        unsafe { libc::kill(-group, libc::SIGKILL) };
        child.wait()?;
        while let Ok(text) = output.recv_timeout(TICK) {
            line(&text);
        }
        return Ok(Finished {
            success: false,
            how: format!("timed out after {timeout:?}: its process group was killed"),
        });
    };
    let drained = Instant::now() + DRAIN;
    while let Ok(text) = output.recv_timeout(drained.saturating_duration_since(Instant::now())) {
        line(&text);
    }
    Ok(Finished {
        success: status.success(),
        how: status.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(command: &str, timeout: Duration) -> (Finished, Vec<String>) {
        let mut lines = Vec::new();
        let finished = run(command, &[("HERD_REASON", "start")], timeout, |l| {
            lines.push(l.to_owned())
        })
        .unwrap();
        (finished, lines)
    }

    #[test]
    fn output_comes_line_by_line_with_the_environment() {
        let (finished, mut lines) = collect(
            "echo one; echo two >&2; echo \"reason=$HERD_REASON\"",
            Duration::from_secs(5),
        );
        assert!(finished.success, "{finished:?}");
        lines.sort();
        assert_eq!(lines, ["one", "reason=start", "two"]);
    }

    #[test]
    fn a_failing_command_says_how() {
        let (finished, _) = collect("exit 3", Duration::from_secs(5));
        assert!(!finished.success);
        assert_eq!(finished.how, "exit status: 3");
        assert!(finished.probed().is_err());
    }

    #[test]
    fn a_command_past_its_timeout_is_killed_with_its_children() {
        let dir = std::env::temp_dir().join(format!("herd-command-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let marker = dir.join("child-survived");
        let started = Instant::now();
        // The child would write the marker after the timeout, were it not killed with the
        // shell's group.
        let command = format!("(sleep 1; touch {}) & sleep 30", marker.display());
        let (finished, _) = collect(&command, Duration::from_millis(300));
        assert!(!finished.success);
        assert!(finished.how.starts_with("timed out"), "{}", finished.how);
        assert!(started.elapsed() < Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(1200));
        assert!(!marker.exists(), "the background child was killed too");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_daemon_holding_the_output_open_does_not_hold_up_the_end() {
        let started = Instant::now();
        let (finished, lines) = collect("echo started; sleep 3 &", Duration::from_secs(10));
        assert!(finished.success);
        assert_eq!(lines, ["started"]);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }
}
