//! What the commands share: choosing the live set, finding this host's addresses, reading
//! the farm's key, showing a share.

use std::path::Path;

use anyhow::{bail, Context};
use herd_config::FarmConfig;
use herd_membership::auth::Keyring;

/// Which nodes are live when the named ones are down, indexed like `config.nodes`.
pub fn live_set(config: &FarmConfig, down: &[String]) -> anyhow::Result<Vec<bool>> {
    let mut live = vec![true; config.nodes.len()];
    for name in down {
        let Some(index) = config.node_index(name) else {
            let known: Vec<&str> = config.nodes.iter().map(|n| n.name.as_str()).collect();
            bail!(
                "--down {name}: no such node; the farm's nodes are {}",
                known.join(", ")
            );
        };
        live[index] = false;
    }
    Ok(live)
}

/// This host's addresses, by which it finds its `[[node]]` entry.
pub fn local_addresses() -> std::io::Result<Vec<std::net::IpAddr>> {
    Ok(if_addrs::get_if_addrs()?.iter().map(|i| i.ip()).collect())
}

/// The farm's keys, read from the `auth_key_file` of `config` (read from `path`).
pub fn load_keys(path: &Path, config: &FarmConfig) -> anyhow::Result<Keyring> {
    Keyring::load(&config.farm.auth_key_file).with_context(|| {
        format!(
            "{}: [farm] auth_key_file {}",
            path.display(),
            config.farm.auth_key_file.display()
        )
    })
}

/// A share of the buckets as a percentage with one decimal, for display.
pub fn percent(count: usize, total: usize) -> f64 {
    if total == 0 {
        return 0.0;
    }
    (count as f64 * 1000.0 / total as f64).round() / 10.0
}
