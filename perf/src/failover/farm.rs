//! A running 3-node farm: the test bed, `herd run` on each node, and the servers. Dropped in
//! order: the servers stop, the herds are killed, then the test bed goes.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use herd_config::FarmConfig;

use super::bed::{Bed, NODES};
use super::herd::{Herd, HerdFiles};
use super::owners::Owners;
use super::servers::Servers;
use crate::cli::FarmMode;

/// How long herd may take to say it runs.
const START: Duration = Duration::from_secs(20);
/// How long a farm may take to settle after a change: detection, agreement, and a drain of
/// connections that are already gone (counted every 250 ms).
pub const SETTLE: Duration = Duration::from_secs(20);

/// Every node up.
pub const ALL_UP: [bool; NODES.len()] = [true; NODES.len()];

/// Every node but `node` up.
pub fn without(node: usize) -> [bool; NODES.len()] {
    let mut up = ALL_UP;
    up[node] = false;
    up
}

/// What a farm is started with.
pub struct FarmSpec<'a> {
    /// The dataplane mode.
    pub mode: FarmMode,
    /// The number of buckets.
    pub buckets: u32,
    /// The herd executable.
    pub herd: &'a Path,
    /// Where the herds' logs are copied, if anywhere.
    pub keep_logs: Option<&'a Path>,
    /// The farm's name in log file names (`run-3`, `leave-join`, ...).
    pub tag: String,
}

/// A running farm.
pub struct Farm {
    servers: Option<Servers>,
    herds: Vec<Option<Herd>>,
    /// The namespaces and files.
    pub bed: Bed,
    /// The configuration every node runs.
    pub config: FarmConfig,
    herd: PathBuf,
    keep_logs: Option<PathBuf>,
    tag: String,
    /// How many times each node's herd was started, for the log file names.
    starts: [usize; NODES.len()],
}

impl Farm {
    /// Builds farm number `serial`, starts every node's herd and the servers, and waits until
    /// the farm has settled: every node has installed the table that gives it its whole share.
    pub fn start(serial: usize, spec: &FarmSpec) -> anyhow::Result<Self> {
        let bed = Bed::create(serial, spec.mode, spec.buckets)?;
        let config = FarmConfig::load(&bed.config()).context("the farm's configuration")?;
        let mut farm = Farm {
            servers: None,
            herds: (0..NODES.len()).map(|_| None).collect(),
            bed,
            config,
            herd: spec.herd.to_owned(),
            keep_logs: spec.keep_logs.map(Path::to_owned),
            tag: spec.tag.clone(),
            starts: [0; NODES.len()],
        };
        // Started together: each waits for the others' heartbeats anyway.
        for node in 0..NODES.len() {
            farm.spawn_herd(node)?;
        }
        for node in 0..NODES.len() {
            farm.wait_running(node, 0)?;
        }
        // After herd, which adds the VIP the servers bind.
        farm.servers = Some(Servers::start(&farm.bed.nodes)?);
        farm.settle(&[0; NODES.len()], ALL_UP)?;
        Ok(farm)
    }

    /// Starts node `node`'s herd, without waiting.
    pub fn spawn_herd(&mut self, node: usize) -> anyhow::Result<()> {
        let name = NODES[node].0;
        let log_file = self
            .keep_logs
            .as_ref()
            .map(|dir| dir.join(format!("{}-{name}-{}.log", self.tag, self.starts[node])));
        self.starts[node] += 1;
        let config = self.bed.config();
        let files = HerdFiles {
            herd: &self.herd,
            config: &config,
            bpf_dir: &self.bed.bpf_dir(node)?,
            state_dir: &self.bed.state_dir(node),
            log_file,
        };
        self.herds[node] = Some(Herd::spawn(&self.bed.nodes[node], name, &files)?);
        Ok(())
    }

    /// Waits until node `node`'s herd says, from its `from`th line on, that it runs.
    fn wait_running(&self, node: usize, from: usize) -> anyhow::Result<()> {
        let herd = self.herd(node)?;
        if herd
            .wait_for(from, |line| line.contains("running:"), START)
            .is_none()
        {
            bail!(
                "{}'s herd did not say that it runs within {START:?}",
                NODES[node].0
            );
        }
        Ok(())
    }

    /// Node `node`'s herd.
    pub fn herd(&self, node: usize) -> anyhow::Result<&Herd> {
        self.herds[node]
            .as_ref()
            .with_context(|| format!("{}'s herd does not run", NODES[node].0))
    }

    /// Node `node`'s herd, to wait for its exit.
    pub fn herd_mut(&mut self, node: usize) -> anyhow::Result<&mut Herd> {
        self.herds[node]
            .as_mut()
            .with_context(|| format!("{}'s herd does not run", NODES[node].0))
    }

    /// Forgets node `node`'s herd once it has exited.
    pub fn forget_herd(&mut self, node: usize) {
        self.herds[node] = None;
    }

    /// The running herds, with their node.
    pub fn herds(&self) -> impl Iterator<Item = (usize, &Herd)> {
        self.herds
            .iter()
            .enumerate()
            .filter_map(|(node, herd)| herd.as_ref().map(|herd| (node, herd)))
    }

    /// How many lines each running herd has logged so far (0 for the others): where
    /// [`Farm::settle`] starts looking.
    pub fn marks(&self) -> [usize; NODES.len()] {
        let mut marks = [0; NODES.len()];
        for (node, herd) in self.herds() {
            marks[node] = herd.logged();
        }
        marks
    }

    /// The owners when the nodes in `up` are the members.
    pub fn owners(&self, up: [bool; NODES.len()]) -> anyhow::Result<Owners> {
        Owners::new(&self.config, up)
    }

    /// Waits until every node in `up` has installed, since `marks`, the table that gives it
    /// its whole share of the farm whose members are `up`: new connections, all TCP and
    /// non-TCP traffic in each of its buckets. Returns when each did.
    pub fn settle(
        &self,
        marks: &[usize; NODES.len()],
        up: [bool; NODES.len()],
    ) -> anyhow::Result<[Option<Instant>; NODES.len()]> {
        let shares = self.owners(up)?.shares();
        let mut when = [None; NODES.len()];
        for node in (0..NODES.len()).filter(|&node| up[node]) {
            let whole = format!("all_tcp={0} non_tcp={0}", shares[node]);
            let Some(line) =
                self.herd(node)?
                    .wait_for(marks[node], |line| line.contains(&whole), SETTLE)
            else {
                bail!(
                    "{} did not take its share of {} buckets within {SETTLE:?}",
                    NODES[node].0,
                    shares[node]
                );
            };
            when[node] = Some(line.at);
        }
        Ok(when)
    }
}
