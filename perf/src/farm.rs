//! The farm herd-perf measures against: three nodes sharing two VIPs, this machine's receiver
//! playing node 0, and the equivalent nftables rule's view of which clients node 0 keeps.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use anyhow::Context;
use herd_config::{FarmConfig, Protocol};
use herd_membership::farm_table;
use herd_packet::table::{BucketTable, NodeId};
use herd_packet::FarmRules;

use crate::jhash;

/// The IPv4 VIP (RFC 2544's benchmarking range).
pub const VIP4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
/// The IPv6 VIP (RFC 5180's benchmarking range).
pub const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x100);
/// The UDP port the farm balances, where the receiver's latency sockets listen.
pub const PORT: u16 = 5001;
/// The number of nodes: the nftables rule keeps `jhash mod NODES == 0`.
pub const NODES: u32 = 3;
/// The node the receiver plays.
pub const LOCAL: NodeId = 0;
/// The seed of the nftables rule's `jhash`. nftables draws a random one when none is given;
/// a fixed one lets herd-perf compute which clients the rule keeps.
pub const NFT_SEED: u32 = 0x6865_7264;

/// The configuration, as an administrator would write it.
const CONFIG: &str = r#"
[farm]
name = "herd-perf"
vip = ["198.18.0.100", "2001:2::100"]
interface = "eth0"
buckets = 4096
hash_key = "68657264207065726620686173682121"

[[node]]
name = "n0"
address = "198.18.0.1"

[[node]]
name = "n1"
address = "198.18.0.2"

[[node]]
name = "n2"
address = "198.18.0.3"

[[rule]]
protocol = "udp"
ports = ["5001"]
affinity = "client-ip"

[dataplane]
mode = "xdp"
"#;

/// The farm's rules and the bucket table of all three nodes up.
pub struct BenchFarm {
    rules: FarmRules,
    table: BucketTable,
}

impl BenchFarm {
    /// Parses the configuration and assigns the buckets as every node would.
    pub fn new() -> anyhow::Result<Self> {
        let config = FarmConfig::parse(CONFIG, Path::new("<herd-perf farm>"))
            .context("herd-perf's built-in farm configuration")?;
        let table =
            farm_table(&config, &[true; NODES as usize]).context("the farm's bucket table")?;
        Ok(Self {
            rules: FarmRules::from_config(&config),
            table,
        })
    }

    /// The compiled rules.
    pub fn rules(&self) -> &FarmRules {
        &self.rules
    }

    /// The bucket owners.
    pub fn table(&self) -> &BucketTable {
        &self.table
    }

    /// Whether herd on node [`LOCAL`] accepts UDP from `client` to the VIP port.
    pub fn herd_keeps(&self, client: IpAddr, client_port: u16) -> bool {
        self.rules
            .client_flow_hash(Protocol::Udp, PORT, client, client_port)
            .is_ok_and(|hash| self.table.owner(self.table.bucket_of(hash)) == LOCAL)
    }

    /// Whether the nftables rule (`jhash ip saddr mod 3 seed NFT_SEED != 0 drop`) keeps
    /// `client`.
    pub fn nft_keeps(client: IpAddr) -> bool {
        let bucket = match client {
            IpAddr::V4(addr) => jhash::nft_bucket(&addr.octets(), NFT_SEED, NODES),
            IpAddr::V6(addr) => jhash::nft_bucket(&addr.octets(), NFT_SEED, NODES),
        };
        bucket == 0
    }
}
