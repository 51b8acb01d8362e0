//! The farm herd-perf measures against: three nodes sharing two VIPs, this machine's receiver
//! playing node 0, and the equivalent nftables rule's view of which clients node 0 keeps.
//! UDP to [`PORT`] is the dataplane comparison's traffic, TCP to [`SYN_PORT`] the SYN flood's.

use std::net::IpAddr;
use std::path::Path;

use anyhow::Context;
use herd_config::{Affinity, DataplaneMode, FarmConfig, Protocol};
use herd_membership::farm_table;
use herd_packet::table::{BucketTable, NodeId};
use herd_packet::FarmRules;
use herd_testbed::address::{node4, VIP4, VIP6};
use herd_testbed::config::FarmToml;

use crate::jhash;

/// The UDP port the farm balances, where the receiver's latency sockets listen.
pub const PORT: u16 = 5001;
/// The TCP port the farm balances per client address, which the SYN flood is sent to and
/// where the receiver's listeners answer it. Per address, so that the flood's random source
/// ports do not change which node owns a SYN.
pub const SYN_PORT: u16 = 5002;
/// The number of nodes: the nftables rule keeps `jhash mod NODES == 0`.
pub const NODES: u32 = 3;
/// The node the receiver plays.
pub const LOCAL: NodeId = 0;
/// The seed of the nftables rule's `jhash`. nftables draws a random one when none is given;
/// a fixed one lets herd-perf compute which clients the rule keeps.
pub const NFT_SEED: u32 = 0x6865_7264;

/// The configuration, as an administrator would write it: both VIPs, the three nodes, UDP to
/// [`PORT`] and TCP to [`SYN_PORT`] balanced per client address.
fn config() -> FarmToml {
    (0..NODES as usize)
        .fold(
            FarmToml::new("herd-perf", DataplaneMode::Xdp),
            |farm, node| farm.node(&format!("n{node}"), node4(node)),
        )
        .vips(&[VIP4.into(), VIP6.into()])
        .buckets(4096)
        .hash_key("68657264207065726620686173682121")
        .rule(Protocol::Udp, &[PORT], Some(Affinity::ClientIp))
        .rule(Protocol::Tcp, &[SYN_PORT], Some(Affinity::ClientIp))
}

/// The farm's rules and the bucket table of all three nodes up.
pub struct BenchFarm {
    rules: FarmRules,
    table: BucketTable,
}

impl BenchFarm {
    /// Parses the configuration and assigns the buckets as every node would.
    pub fn new() -> anyhow::Result<Self> {
        let config = FarmConfig::parse(&config().text(), Path::new("<herd-perf farm>"))
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

    /// Whether herd on node [`LOCAL`] accepts a SYN from `client` to [`SYN_PORT`], whatever
    /// its source port.
    pub fn herd_keeps_syn(&self, client: IpAddr) -> bool {
        self.rules
            .client_flow_hash(Protocol::Tcp, SYN_PORT, client, 0)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mix::{v4_candidate, v6_candidate};

    #[test]
    fn a_syn_belongs_to_its_address_whatever_its_port() {
        let farm = BenchFarm::new().unwrap();
        for i in 0..200 {
            for client in [v4_candidate(i), v6_candidate(i)] {
                let hash = |port| {
                    farm.rules()
                        .client_flow_hash(Protocol::Tcp, SYN_PORT, client, port)
                        .unwrap()
                };
                assert!([1024, 40000, 65535].into_iter().all(|p| hash(p) == hash(0)));
                let owner = farm.table().owner(farm.table().bucket_of(hash(0)));
                assert_eq!(farm.herd_keeps_syn(client), owner == LOCAL);
            }
        }
    }
}
