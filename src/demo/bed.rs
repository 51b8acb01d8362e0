//! The demo's bed: the test bed's farm ([`FarmBed`]), a namespace per node and one for the
//! client plugged into a hub whose bridge learns, as a switch does, named after the demo's process
//! id; the farm's configuration, a random key and the nodes' logs in its scratch directory;
//! the nodes' pins on its BPF file system. Nothing is made in the host's own network
//! namespace, and everything is removed when the [`Bed`] is dropped, whether the demo
//! succeeded, failed or was interrupted.

use std::path::{Path, PathBuf};

use anyhow::Context;
use herd_config::DataplaneMode;
use herd_testbed::config::random_hex;
use herd_testbed::farm::BRIDGE;
use herd_testbed::{FarmBed, FarmPlan, HubKind, Offload, Uplink};

use super::layout::{self, NAMES, SOURCES};

/// What a bed is made of, for `--json` and for the checks that it is gone.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Made {
    /// The namespaces: the hub, the nodes', the client's.
    pub namespaces: Vec<String>,
    /// The bridge, in the hub namespace.
    pub bridge: String,
    /// The scratch directory (configuration, key, logs, BPF file system).
    pub scratch_dir: PathBuf,
}

/// One demo farm's namespaces, files and BPF file system.
pub struct Bed {
    /// The hosts, in the test bed's farm.
    pub farm: FarmBed,
    /// The configuration file.
    config: PathBuf,
}

impl Bed {
    /// Builds the bed of a farm of `nodes` nodes in dataplane `mode`. Whatever fails half-way
    /// is undone before the error is returned.
    pub fn create(nodes: usize, mode: &str) -> anyhow::Result<Self> {
        let mode: DataplaneMode = mode.parse().context("the demo's dataplane mode")?;
        let farm = FarmBed::create(&FarmPlan {
            prefix: format!("herd-demo-{}", std::process::id()),
            nodes: &NAMES[..nodes],
            hub: HubKind::Learning,
            uplink: Uplink::Veth,
            sources: SOURCES,
            client_offload: Offload::Default,
        })?;
        let files = farm.bed();
        let key = files.write_private("farm.key", &format!("1 {}\n", random_hex(32)?))?;
        let text = layout::config(nodes, mode, &random_hex(16)?, &key).text();
        let config = files.write_private("farm.toml", &text)?;
        Ok(Bed { farm, config })
    }

    /// The configuration file.
    pub fn config(&self) -> &Path {
        &self.config
    }

    /// Node `name`'s log file.
    pub fn log(&self, name: &str) -> PathBuf {
        self.farm.bed().scratch().join(format!("{name}.log"))
    }

    /// What the bed is made of.
    pub fn made(&self) -> Made {
        Made {
            namespaces: self.farm.bed().namespaces(),
            bridge: BRIDGE.to_owned(),
            scratch_dir: self.farm.bed().scratch().to_owned(),
        }
    }
}
