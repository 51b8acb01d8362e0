//! The nodes' `herd run` processes (the test bed's [`Herd`]): started in their namespaces,
//! their logs appended to files in the scratch directory, asked for their status over their
//! control sockets, and stopped together when dropped.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use herd_testbed::{Herd, HerdRun};

use super::bed::Bed;
use crate::control::{self, Reply, Request};
use crate::status::Status;

/// How long the herds have, together, to leave after SIGTERM before they are killed.
const LEAVE: Duration = Duration::from_secs(3);

/// Starts `exe run` as node `node` (named `name`) with the bed's files, its log appended to
/// the node's log file (a restarted node's log follows the log of its first life).
pub fn spawn(exe: &Path, bed: &Bed, node: usize, name: &str) -> anyhow::Result<Herd> {
    let log = bed.log(name);
    let run = HerdRun {
        exe,
        config: bed.config(),
        log_file: Some(&log),
        echo: false,
    };
    bed.farm
        .spawn_herd(node, &run)
        .with_context(|| format!("cannot start herd for node {name}"))
}

/// The herds of every node, stopped when dropped: SIGTERM (each leaves the farm and undoes
/// its changes), and SIGKILL for those still there after [`LEAVE`].
pub struct Herds {
    /// Each node's herd, `None` while it does not run.
    pub running: Vec<Option<Herd>>,
}

impl Drop for Herds {
    fn drop(&mut self) {
        herd_testbed::process::stop_all(self.running.iter_mut().flatten(), LEAVE);
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
