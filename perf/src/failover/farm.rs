//! A running 3-node farm: the test bed's farm, `herd run` on each node, the servers, and the
//! application the nodes check if asked for. Dropped in order: the applications are killed,
//! the servers stop, the herds are killed, then the bed goes.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use herd_config::FarmConfig;
use herd_testbed::config::KEY;
use herd_testbed::owner::Owners;
use herd_testbed::process::START;
use herd_testbed::responder::{Responders, Settings};
use herd_testbed::{FarmBed, FarmPlan, Herd, HerdRun, HubKind, Offload, Uplink};

use super::app::{App, Apps};
use super::layout::{self, Timing, NODES, SERVICES, SOURCES, VIP};
use crate::cli::FarmMode;
use crate::topology::TAG;

/// How long the short server waits for a connection's request line: short, as it serves one
/// connection at a time and a stalled one (its node's herd killed mid-handshake) holds up the
/// next.
const SHORT_WAIT: Duration = Duration::from_millis(100);
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
    /// The membership's timing.
    pub timing: Timing,
    /// The herd executable.
    pub herd: &'a Path,
    /// Where the herds' logs are copied, if anywhere.
    pub keep_logs: Option<&'a Path>,
    /// The farm's name in log file names (`kill-3`, `link-1`, `quiet-cpu`, `leave-join`, ...).
    pub tag: String,
    /// The application every node runs and checks, if any.
    pub app: Option<App>,
}

/// A running farm.
pub struct Farm {
    apps: Option<Apps>,
    servers: Option<Responders>,
    herds: Vec<Option<Herd>>,
    /// The namespaces and files.
    pub bed: FarmBed,
    /// The configuration every node runs.
    pub config: FarmConfig,
    /// Its file.
    config_file: PathBuf,
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
        let bed = FarmBed::create(&FarmPlan {
            prefix: format!("{TAG}-{}-farm{serial}", std::process::id()),
            nodes: &NODES,
            hub: HubKind::Learning,
            uplink: Uplink::Veth,
            sources: SOURCES,
            client_offload: Offload::Default,
        })?;
        let key = bed.bed().write_private("farm.key", KEY)?;
        let mut toml = layout::config(spec.mode.dataplane(), spec.buckets, &key, spec.timing);
        if let Some(app) = spec.app {
            toml = toml.tables(&app.table());
        }
        let text = toml.text();
        let config_file = bed.bed().write_private("farm.toml", &text)?;
        let config = FarmConfig::load(&config_file).context("the farm's configuration")?;
        // Before the herds, whose nodes join once their checks pass.
        let apps = spec.app.map(|_| Apps::start(&bed)).transpose()?;
        let mut farm = Farm {
            apps,
            servers: None,
            herds: (0..NODES.len()).map(|_| None).collect(),
            bed,
            config,
            config_file,
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
        let settings = Settings {
            vip: VIP.into(),
            line_wait: SHORT_WAIT,
            record: false,
        };
        farm.servers = Some(Responders::start(&farm.bed.nodes, &SERVICES, &settings)?);
        farm.settle(&[0; NODES.len()], ALL_UP)?;
        Ok(farm)
    }

    /// Starts node `node`'s herd, without waiting.
    pub fn spawn_herd(&mut self, node: usize) -> anyhow::Result<()> {
        let name = NODES[node];
        let log_file = self
            .keep_logs
            .as_ref()
            .map(|dir| dir.join(format!("{}-{name}-{}.log", self.tag, self.starts[node])));
        self.starts[node] += 1;
        let run = HerdRun {
            exe: &self.herd,
            config: &self.config_file,
            log_file: log_file.as_deref(),
            echo: false,
        };
        self.herds[node] = Some(self.bed.spawn_herd(node, &run)?);
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
                NODES[node]
            );
        }
        Ok(())
    }

    /// Kills node `node`'s application with SIGKILL; returns the moment of the kill.
    pub fn kill_app(&mut self, node: usize) -> anyhow::Result<Instant> {
        self.apps
            .as_mut()
            .context("the farm runs no application")?
            .kill(node)
    }

    /// Node `node`'s herd.
    pub fn herd(&self, node: usize) -> anyhow::Result<&Herd> {
        self.herds[node]
            .as_ref()
            .with_context(|| format!("{}'s herd does not run", NODES[node]))
    }

    /// Node `node`'s herd, to wait for its exit.
    pub fn herd_mut(&mut self, node: usize) -> anyhow::Result<&mut Herd> {
        self.herds[node]
            .as_mut()
            .with_context(|| format!("{}'s herd does not run", NODES[node]))
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
        Owners::new(&self.config, &up)
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
                    NODES[node],
                    shares[node]
                );
            };
            when[node] = Some(line.at);
        }
        Ok(when)
    }
}
