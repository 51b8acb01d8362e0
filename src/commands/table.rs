//! `herd table`: bucket ownership for a live set, compared with the whole farm up.

use std::path::Path;

use herd_config::FarmConfig;
use herd_membership::farm_table;
use serde::Serialize;

use crate::farm;

#[derive(Serialize)]
struct Report {
    farm: String,
    buckets: u32,
    down: Vec<String>,
    nodes: Vec<NodeRow>,
    unowned: usize,
    moved_from_all_up: usize,
}

#[derive(Serialize)]
struct NodeRow {
    name: String,
    live: bool,
    weight: u32,
    buckets: usize,
    share_percent: f64,
}

/// Runs the command.
pub fn run(path: &Path, down: &[String], json: bool) -> anyhow::Result<()> {
    let config = FarmConfig::load(path)?;
    let live = farm::live_set(&config, down)?;
    let table = farm_table(&config, &live)?;
    let all_up = farm_table(&config, &vec![true; config.nodes.len()])?;
    let counts = table.counts(config.nodes.len());
    let total = table.len();
    let report = Report {
        farm: config.farm.name.clone(),
        buckets: config.farm.buckets,
        down: down.to_vec(),
        nodes: config
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| NodeRow {
                name: n.name.clone(),
                live: live[i],
                weight: n.weight,
                buckets: counts[i],
                share_percent: farm::percent(counts[i], total),
            })
            .collect(),
        unowned: total - counts.iter().sum::<usize>(),
        moved_from_all_up: table
            .owners()
            .iter()
            .zip(all_up.owners())
            .filter(|(a, b)| a != b)
            .count(),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!("farm {:?}: {} buckets", report.farm, report.buckets);
    println!(
        "  {:<16} {:<5} {:>6} {:>8} {:>7}",
        "NAME", "STATE", "WEIGHT", "BUCKETS", "SHARE"
    );
    for n in &report.nodes {
        let state = if n.live { "up" } else { "down" };
        println!(
            "  {:<16} {:<5} {:>6} {:>8} {:>6.1}%",
            n.name, state, n.weight, n.buckets, n.share_percent
        );
    }
    if report.unowned > 0 {
        println!("unowned buckets: {} (no live node)", report.unowned);
    }
    println!(
        "buckets owned by another node than with every node up: {}",
        report.moved_from_all_up
    );
    Ok(())
}
