//! `herd check-config`: validate the configuration and show the farm it describes.

use std::net::IpAddr;
use std::path::Path;

use herd_config::FarmConfig;
use herd_membership::farm_table;
use serde::Serialize;

use crate::farm;

#[derive(Serialize)]
struct Report {
    file: String,
    farm: String,
    digest: String,
    vips: Vec<IpAddr>,
    buckets: u32,
    heartbeat_port: u16,
    rules: Vec<RuleReport>,
    nodes: Vec<NodeReport>,
    this_node: Option<String>,
    this_node_note: String,
}

#[derive(Serialize)]
struct RuleReport {
    protocol: String,
    ports: Vec<String>,
    affinity: String,
}

#[derive(Serialize)]
struct NodeReport {
    name: String,
    address: IpAddr,
    weight: u32,
    interface: String,
    buckets: usize,
    share_percent: f64,
}

/// Runs the command.
pub fn run(path: &Path, node: Option<&str>, json: bool) -> anyhow::Result<()> {
    let config = FarmConfig::load(path)?;
    let all_up = vec![true; config.nodes.len()];
    let counts = farm_table(&config, &all_up)?.counts(config.nodes.len());
    let (this_node, this_node_note) = identify(&config, node)?;
    let report = Report {
        file: path.display().to_string(),
        farm: config.farm.name.clone(),
        digest: config.digest().to_string(),
        vips: config.farm.vips.clone(),
        buckets: config.farm.buckets,
        heartbeat_port: config.farm.port,
        rules: config
            .rules
            .iter()
            .map(|r| RuleReport {
                protocol: r.protocol.to_string(),
                ports: r.ports.iter().map(ToString::to_string).collect(),
                affinity: r.affinity.to_string(),
            })
            .collect(),
        nodes: config
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| NodeReport {
                name: n.name.clone(),
                address: n.address,
                weight: n.weight,
                interface: config.interface_of(i).to_string(),
                buckets: counts[i],
                share_percent: farm::percent(counts[i], config.farm.buckets as usize),
            })
            .collect(),
        this_node,
        this_node_note,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_text(&report);
    }
    Ok(())
}

/// Which node this machine is: the one named, or the one whose address is local. Naming an
/// unknown node is an error; finding none by address is not (a machine may check a farm it
/// does not belong to).
fn identify(config: &FarmConfig, node: Option<&str>) -> anyhow::Result<(Option<String>, String)> {
    let local: Vec<IpAddr> = if node.is_some() {
        Vec::new()
    } else {
        farm::local_addresses().unwrap_or_default()
    };
    match config.identify(node, &local) {
        Ok(index) => {
            let name = config.nodes[index].name.clone();
            let how = match node {
                Some(_) => "named by --node".to_string(),
                None => format!("local address {}", config.nodes[index].address),
            };
            Ok((Some(name), how))
        }
        Err(error) if node.is_none() => Ok((None, error.to_string())),
        Err(error) => Err(error.into()),
    }
}

fn print_text(r: &Report) {
    println!("{}: valid configuration of farm {:?}", r.file, r.farm);
    println!("  digest          {}", r.digest);
    let vips: Vec<String> = r.vips.iter().map(ToString::to_string).collect();
    println!("  VIPs            {}", vips.join(", "));
    println!("  buckets         {}", r.buckets);
    println!("  heartbeats      UDP port {}", r.heartbeat_port);
    println!();
    println!("rules (VIP traffic no rule matches is dropped on every node):");
    for rule in &r.rules {
        println!(
            "  {:<5} {:<24} {}",
            rule.protocol,
            rule.ports.join(","),
            rule.affinity
        );
    }
    println!();
    println!("nodes:");
    let name_width = r
        .nodes
        .iter()
        .map(|n| n.name.len())
        .max()
        .unwrap_or(0)
        .max(4);
    let addresses: Vec<String> = r.nodes.iter().map(|n| n.address.to_string()).collect();
    let address_width = addresses.iter().map(String::len).max().unwrap_or(0).max(7);
    println!(
        "  {:<name_width$}  {:<address_width$}  {:>6}  {:>7}  {:>6}  INTERFACE",
        "NAME", "ADDRESS", "WEIGHT", "BUCKETS", "SHARE"
    );
    for (n, address) in r.nodes.iter().zip(&addresses) {
        let marker = if r.this_node.as_deref() == Some(n.name.as_str()) {
            "  <- this machine"
        } else {
            ""
        };
        println!(
            "  {:<name_width$}  {:<address_width$}  {:>6}  {:>7}  {:>5.1}%  {}{}",
            n.name, address, n.weight, n.buckets, n.share_percent, n.interface, marker
        );
    }
    println!();
    match &r.this_node {
        Some(name) => println!("this machine: node {name} ({})", r.this_node_note),
        None => println!(
            "this machine: not a node of this farm ({})",
            r.this_node_note
        ),
    }
}
