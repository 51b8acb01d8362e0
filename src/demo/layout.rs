//! What a demo farm looks like: its names, its flows and its configuration file. Its addresses
//! are the test bed's plan ([`herd_testbed::address`]): 198.18.0.0/15 only, inside the demo's
//! network namespaces.

use std::net::SocketAddrV4;
use std::path::Path;

use herd_config::{Affinity, DataplaneMode, Protocol};
use herd_testbed::address::{self, node4};
use herd_testbed::config::FarmToml;

/// The node names, in order; `--nodes N` takes the first N. Their number bounds `--nodes`.
pub const NAMES: [&str; 8] = [
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel",
];
/// The UDP service on the VIP that the responders answer (the echo port).
pub const PORT: u16 = 7;
/// The number of buckets: few, so that the owned counts read easily.
pub const BUCKETS: u32 = 256;
/// How many more addresses the client has: the flows' sources.
pub const SOURCES: u8 = 64;
/// The client ports of the flows, each used from every source address.
const CLIENT_PORTS: std::ops::Range<u16> = 40000..40002;

/// The client flows: each source address with each client port, interleaved so that
/// consecutive flows come from different addresses.
pub fn flows() -> Vec<SocketAddrV4> {
    address::flows(CLIENT_PORTS, SOURCES).collect()
}

/// The farm's configuration for `nodes` nodes in dataplane `mode`, its heartbeats signed with
/// the key in `key_file` and its flows hashed with `hash_key` (32 hex digits). Default
/// membership settings: the failover shown is the one a farm gets out of the box.
/// `client-ip-port`: the flows of one client address spread over the nodes, so that the few
/// dozen source addresses give every node a visible share.
pub fn config(nodes: usize, mode: DataplaneMode, hash_key: &str, key_file: &Path) -> FarmToml {
    NAMES[..nodes]
        .iter()
        .enumerate()
        .fold(FarmToml::new("demo", mode), |farm, (node, name)| {
            farm.node(name, node4(node))
        })
        .comment("herd demo: a farm in network namespaces, removed when the demo ends.")
        .buckets(BUCKETS)
        .hash_key(hash_key)
        .key_file(key_file)
        .rule(Protocol::Udp, &[PORT], Some(Affinity::ClientIpPort))
}

#[cfg(test)]
mod tests {
    use super::*;
    use herd_testbed::config::random_hex;

    #[test]
    fn every_configuration_the_demo_writes_is_valid() {
        let dir = std::env::temp_dir().join(format!("herd-demo-layout-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("farm.key");
        std::fs::write(&key, format!("1 {}\n", random_hex(32).unwrap())).unwrap();
        std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        for nodes in 2..=NAMES.len() {
            for mode in [DataplaneMode::Xdp, DataplaneMode::Afxdp] {
                let path = dir.join("farm.toml");
                let text = config(nodes, mode, &random_hex(16).unwrap(), &key).text();
                std::fs::write(&path, text).unwrap();
                let config = herd_config::FarmConfig::load(&path).unwrap();
                assert_eq!(config.nodes.len(), nodes);
                assert_eq!(config.farm.buckets, BUCKETS);
                assert_eq!(config.dataplane.mode, mode);
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
        let range = |a: std::net::Ipv4Addr| a.octets()[0] == 198 && a.octets()[1] & 0xfe == 18;
        assert!(flows.iter().all(|flow| range(*flow.ip())));
        assert!((0..NAMES.len()).all(|node| range(node4(node))));
    }
}
