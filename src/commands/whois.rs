//! `herd whois`: which node handles a client.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use anyhow::{anyhow, bail};
use herd_config::{Affinity, FarmConfig, Protocol};
use herd_membership::farm_table;
use herd_packet::FarmRules;
use serde::Serialize;

use crate::farm;

/// What is asked.
pub struct Query<'a> {
    /// `IP` or `IP:PORT` (`[IPv6]:PORT`).
    pub client: &'a str,
    /// `tcp`, `udp` or `icmp`.
    pub protocol: &'a str,
    /// The VIP port, if given.
    pub vip_port: Option<u16>,
    /// Nodes taken as down.
    pub down: &'a [String],
}

/// Which node handles a client, and why: its bucket under the rule that balances its traffic.
#[derive(Debug, Serialize)]
pub struct Answer {
    client: IpAddr,
    client_port: Option<u16>,
    protocol: String,
    vip_port: Option<u16>,
    rule_ports: Vec<String>,
    affinity: String,
    bucket: u32,
    buckets: usize,
    owner: Option<String>,
    down: Vec<String>,
}

/// Runs the command.
pub fn run(path: &Path, query: &Query<'_>, json: bool) -> anyhow::Result<()> {
    let config = FarmConfig::load(path)?;
    let answer = answer(&config, query)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else {
        println!("{}", answer.lines().join("\n"));
    }
    Ok(())
}

/// Which node of `config`'s farm handles the client of `query`, with the nodes it names
/// down: what `herd whois` and the console answer.
pub fn answer(config: &FarmConfig, query: &Query<'_>) -> anyhow::Result<Answer> {
    let protocol: Protocol = query
        .protocol
        .parse()
        .map_err(|e| anyhow!("--proto: {e}"))?;
    let (client, client_port) = parse_client(query.client)?;
    let vip_port = match protocol {
        Protocol::Icmp => None,
        _ => Some(
            query
                .vip_port
                .map_or_else(|| default_port(config, protocol), Ok)?,
        ),
    };
    let Some(rule) = config.rule_for(protocol, vip_port.unwrap_or(0)) else {
        let port = vip_port.map(|p| format!(" port {p}")).unwrap_or_default();
        bail!("no rule balances {protocol}{port}: VIP traffic to it is dropped on every node");
    };
    if rule.affinity == Affinity::ClientIpPort
        && protocol != Protocol::Icmp
        && client_port.is_none()
    {
        bail!(
            "the {protocol} rule for port {} balances on client-ip-port: give the client's port, as {}",
            vip_port.unwrap_or(0),
            match client {
                IpAddr::V4(a) => format!("{a}:PORT"),
                IpAddr::V6(a) => format!("[{a}]:PORT"),
            }
        );
    }
    let rules = FarmRules::from_config(config);
    let hash = rules
        .client_flow_hash(
            protocol,
            vip_port.unwrap_or(0),
            client,
            client_port.unwrap_or(0),
        )
        .map_err(|_| anyhow!("no rule balances this traffic"))?;
    let live = farm::live_set(config, query.down)?;
    let table = farm_table(config, &live)?;
    let bucket = table.bucket_of(hash);
    let owner = config
        .nodes
        .get(usize::from(table.owner(bucket)))
        .map(|n| n.name.clone());
    Ok(Answer {
        client,
        client_port,
        protocol: protocol.to_string(),
        vip_port,
        rule_ports: rule.ports.iter().map(ToString::to_string).collect(),
        affinity: rule.affinity.to_string(),
        bucket,
        buckets: table.len(),
        owner,
        down: query.down.to_vec(),
    })
}

impl Answer {
    /// The answer in words, one line each.
    pub fn lines(&self) -> [String; 2] {
        let client = match (self.client, self.client_port) {
            (ip, Some(port)) => SocketAddr::new(ip, port).to_string(),
            (ip, None) => ip.to_string(),
        };
        let to = match self.vip_port {
            Some(port) => format!("{} to VIP port {port}", self.protocol),
            None => self.protocol.clone(),
        };
        [
            format!(
                "client {client}, {to} (rule {} {}, {}): bucket {} of {}",
                self.protocol,
                self.rule_ports.join(","),
                self.affinity,
                self.bucket,
                self.buckets
            ),
            match &self.owner {
                Some(owner) => format!("owner: {owner}"),
                None => "owner: none (no live node)".to_owned(),
            },
        ]
    }
}

/// The first port of the first rule for `protocol`, so that a farm with one rule needs no
/// `--port`.
fn default_port(config: &FarmConfig, protocol: Protocol) -> anyhow::Result<u16> {
    config
        .rules
        .iter()
        .find(|r| r.protocol == protocol)
        .and_then(|r| r.ports.first())
        .map(|range| range.first)
        .ok_or_else(|| {
            anyhow!("no rule balances {protocol}: VIP traffic of it is dropped on every node")
        })
}

/// `IP`, `IP:PORT` or `[IPv6]:PORT`.
fn parse_client(text: &str) -> anyhow::Result<(IpAddr, Option<u16>)> {
    if let Ok(socket) = text.parse::<SocketAddr>() {
        return Ok((socket.ip(), Some(socket.port())));
    }
    text.parse::<IpAddr>().map(|ip| (ip, None)).map_err(|_| {
        anyhow!("{text:?} is not a client address: expected IP, IP:PORT or [IPv6]:PORT")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_forms() {
        let v4: IpAddr = "198.51.100.7".parse().unwrap();
        let v6: IpAddr = "2001:db8::7".parse().unwrap();
        assert_eq!(parse_client("198.51.100.7").unwrap(), (v4, None));
        assert_eq!(
            parse_client("198.51.100.7:40000").unwrap(),
            (v4, Some(40000))
        );
        assert_eq!(parse_client("2001:db8::7").unwrap(), (v6, None));
        assert_eq!(parse_client("[2001:db8::7]:443").unwrap(), (v6, Some(443)));
        assert!(parse_client("198.51.100.7:99999").is_err());
        assert!(parse_client("alpha").is_err());
    }
}
