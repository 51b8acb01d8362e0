//! What a demo farm looks like: its names, its addresses and its configuration file. Every
//! address is from 198.18.0.0/15 (RFC 2544's benchmarking range) and exists only inside the
//! demo's network namespaces.

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;

use anyhow::Context;

/// The node names, in order; `--nodes N` takes the first N. Their number bounds `--nodes`.
pub const NAMES: [&str; 8] = [
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel",
];
/// The farm's VIP.
pub const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
/// The UDP service on the VIP that the responders answer (the echo port).
pub const PORT: u16 = 7;
/// The number of buckets: few, so that the owned counts read easily.
pub const BUCKETS: usize = 256;
/// The client's own address.
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);
/// How many more addresses the client has: the flows' sources.
const SOURCES: u8 = 64;
/// The client ports of the flows, each used from every source address.
const CLIENT_PORTS: [u16; 2] = [40000, 40001];
/// The prefix length of every address: 198.18.0.0/15 is one link.
pub const PREFIX: u8 = 15;

/// Node `node`'s own address (its heartbeats come from it).
pub fn node_address(node: usize) -> Ipv4Addr {
    // At most NAMES.len() nodes: the last octet stays small.
    Ipv4Addr::new(198, 18, 0, node as u8 + 1)
}

/// Every address of the client: its own, then the flows' sources.
pub fn client_addresses() -> Vec<Ipv4Addr> {
    std::iter::once(CLIENT)
        .chain((1..=SOURCES).map(|i| Ipv4Addr::new(198, 19, 1, i)))
        .collect()
}

/// The client flows: each source address with each client port, interleaved so that
/// consecutive flows come from different addresses.
pub fn flows() -> Vec<SocketAddrV4> {
    CLIENT_PORTS
        .iter()
        .flat_map(|&port| {
            client_addresses()
                .into_iter()
                .skip(1)
                .map(move |address| SocketAddrV4::new(address, port))
        })
        .collect()
}

/// The farm's configuration for `nodes` nodes in dataplane `mode`, its heartbeats signed with
/// the key in `key_file` and its flows hashed with `hash_key` (32 hex digits). Default
/// membership settings: the failover shown is the one a farm gets out of the box.
pub fn config_text(nodes: usize, mode: &str, hash_key: &str, key_file: &Path) -> String {
    let entries: String = NAMES[..nodes]
        .iter()
        .enumerate()
        .map(|(node, name)| {
            format!(
                "[[node]]\nname = \"{name}\"\naddress = \"{}\"\n\n",
                node_address(node)
            )
        })
        .collect();
    // client-ip-port: the flows of one client address spread over the nodes, so that the
    // few dozen source addresses give every node a visible share.
    format!(
        r#"# herd demo: a farm in network namespaces, removed when the demo ends.
[farm]
name = "demo"
vip = ["{VIP}"]
interface = "eth0"
buckets = {BUCKETS}
hash_key = "{hash_key}"
auth_key_file = "{key_file}"

{entries}[[rule]]
protocol = "udp"
ports = ["{PORT}"]
affinity = "client-ip-port"

[dataplane]
mode = "{mode}"
"#,
        key_file = key_file.display()
    )
}

/// `bytes` random bytes from the kernel, in hex: the run's hash key and heartbeat key.
pub fn random_hex(bytes: usize) -> anyhow::Result<String> {
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut file| file.read_exact(&mut buf))
        .context("cannot read /dev/urandom")?;
    Ok(buf.iter().map(|byte| format!("{byte:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_configuration_the_demo_writes_is_valid() {
        let dir = std::env::temp_dir().join(format!("herd-demo-layout-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("farm.key");
        std::fs::write(&key, format!("1 {}\n", random_hex(32).unwrap())).unwrap();
        for nodes in 2..=NAMES.len() {
            for mode in ["xdp", "afxdp"] {
                let path = dir.join("farm.toml");
                let text = config_text(nodes, mode, &random_hex(16).unwrap(), &key);
                std::fs::write(&path, text).unwrap();
                let config = herd_config::FarmConfig::load(&path).unwrap();
                assert_eq!(config.nodes.len(), nodes);
                assert_eq!(config.farm.buckets as usize, BUCKETS);
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn flows_are_distinct_and_in_the_benchmarking_range() {
        let flows = flows();
        assert_eq!(flows.len(), 128);
        let distinct: std::collections::HashSet<_> = flows.iter().collect();
        assert_eq!(distinct.len(), flows.len());
        let range = |a: Ipv4Addr| a.octets()[0] == 198 && a.octets()[1] & 0xfe == 18;
        assert!(flows.iter().all(|flow| range(*flow.ip())));
        assert!((0..NAMES.len()).all(|node| range(node_address(node))));
        assert!(range(VIP) && range(CLIENT));
    }
}
