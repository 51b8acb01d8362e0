//! `herd check-config`: validate the configuration and show the farm it describes.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use anyhow::bail;
use herd_config::{Check, CheckKind, FarmConfig, MacMode, ProcessMatcher};
use herd_membership::farm_table;
use herd_packet::neighbor::{multicast_group, virtual_mac};
use serde::Serialize;

use crate::farm;
use crate::host::format_mac;
use crate::host::route_socket::RouteSocket;

#[derive(Serialize)]
struct Report {
    file: String,
    farm: String,
    digest: String,
    vips: Vec<IpAddr>,
    /// The kind of virtual MAC, `unicast` or `multicast`.
    mac: String,
    virtual_macs: Vec<VirtualMacReport>,
    buckets: u32,
    heartbeat_port: u16,
    /// Seconds between the VIPs' periodic announcements; 0 for none.
    announce_interval_s: u32,
    rules: Vec<RuleReport>,
    nodes: Vec<NodeReport>,
    this_node: Option<String>,
    this_node_note: String,
    checks: Vec<CheckReport>,
    scripts: ScriptsReport,
    admin: AdminReport,
}

/// The `[admin]` table: where the node serves its metrics and the console.
#[derive(Serialize)]
struct AdminReport {
    metrics: Option<SocketAddr>,
    console: Option<SocketAddr>,
    /// Read by `herd run`, not by check-config.
    console_secret_file: Option<String>,
}

#[derive(Serialize)]
struct CheckReport {
    name: String,
    kind: String,
    /// What it looks at, in words.
    target: String,
    interval_ms: u32,
    timeout_ms: u32,
    fall: u32,
    rise: u32,
    action: String,
}

#[derive(Serialize)]
struct ScriptsReport {
    start: Option<String>,
    stop: Option<String>,
    timeout_s: u32,
    restart_limit: u32,
    restart_within_s: u32,
}

/// A VIP's virtual MAC, and the group the nodes join in the multicast mode: what a router
/// that refuses a multicast MAC in an ARP answer needs as a static entry.
#[derive(Serialize)]
struct VirtualMacReport {
    vip: IpAddr,
    mac: String,
    group: Option<IpAddr>,
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
    check_host_side(path, &config, this_node.as_deref())?;
    let report = Report {
        file: path.display().to_string(),
        farm: config.farm.name.clone(),
        digest: config.digest().to_string(),
        vips: config.farm.vips.clone(),
        mac: config.farm.mac.to_string(),
        virtual_macs: config
            .farm
            .vips
            .iter()
            .map(|&vip| VirtualMacReport {
                vip,
                mac: format_mac(virtual_mac(vip, config.farm.mac)),
                group: (config.farm.mac == MacMode::Multicast).then(|| multicast_group(vip)),
            })
            .collect(),
        buckets: config.farm.buckets,
        heartbeat_port: config.farm.port,
        announce_interval_s: config.farm.announce_interval_s,
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
        checks: config.checks.iter().map(check_report).collect(),
        scripts: ScriptsReport {
            start: config.scripts.start.clone(),
            stop: config.scripts.stop.clone(),
            timeout_s: config.scripts.timeout_s,
            restart_limit: config.scripts.restart_limit.count,
            restart_within_s: config.scripts.restart_limit.within_s,
        },
        admin: AdminReport {
            metrics: config.admin.metrics,
            console: config.admin.console.as_ref().map(|console| console.address),
            console_secret_file: config
                .admin
                .console
                .as_ref()
                .map(|console| console.secret_file.display().to_string()),
        },
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_text(&report);
    }
    Ok(())
}

/// Checks what `herd run` would find wrong beyond the file itself, short of changing the host:
/// the key file, read as `herd run` reads it, and the interface of this machine's node.
fn check_host_side(
    path: &Path,
    config: &FarmConfig,
    this_node: Option<&str>,
) -> anyhow::Result<()> {
    let mut problems = Vec::new();
    if let Err(error) = farm::load_keys(path, config) {
        problems.push(format!("{error:#}"));
    }
    if let Some(index) = this_node.and_then(|name| config.node_index(name)) {
        let interface = config.interface_of(index);
        let found = RouteSocket::open().and_then(|mut netlink| netlink.link(interface));
        match found {
            Ok(_) => {}
            Err(error) if error.raw_os_error() == Some(libc::ENODEV) => problems.push(format!(
                "{}: node {}'s interface {interface} does not exist on this machine",
                path.display(),
                config.nodes[index].name
            )),
            Err(error) => problems.push(format!(
                "{}: cannot read node {}'s interface {interface}: {error}",
                path.display(),
                config.nodes[index].name
            )),
        }
    }
    if !problems.is_empty() {
        bail!("{}", problems.join("\n"));
    }
    Ok(())
}

fn check_report(check: &Check) -> CheckReport {
    let target = match &check.kind {
        CheckKind::Tcp { host, port } => {
            format!("connects to {}", std::net::SocketAddr::new(*host, *port))
        }
        CheckKind::Http { url, status, body } => {
            let body = body
                .as_ref()
                .map(|body| format!(" with {body:?} in the body"))
                .unwrap_or_default();
            format!("GET {url}: status {}-{}{body}", status.0, status.1)
        }
        CheckKind::Process {
            matcher,
            at_least,
            at_most,
        } => {
            let which = match matcher {
                ProcessMatcher::Name(name) => format!("processes named {name:?}"),
                ProcessMatcher::Command(regex) => {
                    format!("processes whose command line matches {regex:?}")
                }
            };
            match at_most {
                Some(most) => format!("{at_least} to {most} {which}"),
                None => format!("at least {at_least} {which}"),
            }
        }
        CheckKind::Ping { address } => format!("pings {address}"),
        CheckKind::Interface { interface } => format!(
            "{} is up with a carrier",
            interface.as_deref().unwrap_or("the node's interface")
        ),
        CheckKind::Address => "the VIPs and the node's address are on its interface".into(),
        CheckKind::Command { run } => format!("runs `{run}`: exit status 0"),
    };
    CheckReport {
        name: check.name.clone(),
        kind: check.kind.name().into(),
        target,
        interval_ms: check.interval_ms,
        timeout_ms: check.timeout_ms,
        fall: check.fall,
        rise: check.rise,
        action: check.action.to_string(),
    }
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
    match r.announce_interval_s {
        0 => println!("  announcements   at start and after each new view"),
        every => println!("  announcements   at start, after each new view and every {every} s"),
    }
    println!();
    println!("virtual MACs ({}):", r.mac);
    let vip_width = r
        .virtual_macs
        .iter()
        .map(|v| v.vip.to_string().len())
        .max()
        .unwrap_or(0);
    for v in &r.virtual_macs {
        let vip = v.vip.to_string();
        match v.group {
            Some(group) => println!("  {vip:<vip_width$}  {}  group {group}", v.mac),
            None => println!("  {vip:<vip_width$}  {}", v.mac),
        }
    }
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
    if !r.checks.is_empty() {
        println!();
        println!(
            "checks (every interval; `fall` failures in a row fail it, `rise` successes heal it):"
        );
        for check in &r.checks {
            println!(
                "  {:<16} {:<9} every {} ms, timeout {} ms, fall {}, rise {}, on failure {}: {}",
                check.name,
                check.kind,
                check.interval_ms,
                check.timeout_ms,
                check.fall,
                check.rise,
                check.action,
                check.target
            );
        }
    }
    let scripts = &r.scripts;
    println!();
    println!(
        "scripts (timeout {} s; at most {} restarts within {} s):",
        scripts.timeout_s, scripts.restart_limit, scripts.restart_within_s
    );
    for (name, script) in [("start", &scripts.start), ("stop", &scripts.stop)] {
        println!("  {name:<6} {}", script.as_deref().unwrap_or("(none)"));
    }
    let admin = &r.admin;
    println!();
    println!("admin (plain HTTP):");
    match admin.metrics {
        Some(address) => println!("  metrics  {address}: /metrics and /healthz, without a login"),
        None => println!("  metrics  off"),
    }
    match (admin.console, &admin.console_secret_file) {
        (Some(address), Some(secret)) => {
            println!("  console  {address}: the farm's web console, secret in {secret}")
        }
        _ => println!("  console  off"),
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
