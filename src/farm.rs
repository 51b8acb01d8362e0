//! What the commands share: choosing the live set and computing the bucket table every node
//! would compute for it.

use anyhow::bail;
use herd_config::FarmConfig;
use herd_dataplane::hash::HashKey;
use herd_dataplane::table::{BucketTable, NodeId};
use herd_membership::assign::{assign, Member};

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

/// The bucket table of a live set: what every node computes from the same view.
pub fn table(config: &FarmConfig, live: &[bool]) -> anyhow::Result<BucketTable> {
    let members: Vec<Member> = config
        .nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| live[*i])
        .map(|(i, node)| Member {
            id: i as NodeId,
            name: node.name.clone(),
            weight: node.weight,
        })
        .collect();
    let key = HashKey::from_bytes(config.farm.hash_key);
    let owners = assign(&key, config.farm.buckets as usize, &members);
    Ok(BucketTable::new(0, owners)?)
}

/// This host's addresses, by which it finds its `[[node]]` entry.
pub fn local_addresses() -> std::io::Result<Vec<std::net::IpAddr>> {
    Ok(if_addrs::get_if_addrs()?.iter().map(|i| i.ip()).collect())
}

/// A share of the buckets as a percentage with one decimal, for display.
pub fn percent(count: usize, total: usize) -> f64 {
    if total == 0 {
        return 0.0;
    }
    (count as f64 * 1000.0 / total as f64).round() / 10.0
}
