//! Which node owns which client, computed from the configuration with the workspace's crates
//! as every node computes it, for a given set of live nodes: thousands of flows can be checked
//! without asking `herd whois` about each.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;

use anyhow::{anyhow, bail, Context};
use herd_config::{FarmConfig, Protocol};
use herd_membership::farm_table;
use herd_packet::table::BucketTable;
use herd_packet::FarmRules;

/// The owners of the buckets when some of the farm's nodes are the members.
pub struct Owners {
    rules: FarmRules,
    table: BucketTable,
    nodes: usize,
}

impl Owners {
    /// The owners when the nodes of `config` marked in `up` (in the configuration's order)
    /// are the members.
    pub fn new(config: &FarmConfig, up: &[bool]) -> anyhow::Result<Self> {
        Ok(Owners {
            rules: FarmRules::from_config(config),
            table: farm_table(config, up).context("the farm's bucket table")?,
            nodes: config.nodes.len(),
        })
    }

    /// The owners for the configuration file at `path`.
    pub fn load(path: &Path, up: &[bool]) -> anyhow::Result<Self> {
        let config = FarmConfig::load(path)
            .with_context(|| format!("the farm configuration {}", path.display()))?;
        Self::new(&config, up)
    }

    /// How many buckets each node owns.
    pub fn shares(&self) -> Vec<usize> {
        self.table.counts(self.nodes)
    }

    /// The bucket of `client`'s traffic of `protocol` to `vip_port` (the port is not used for
    /// ICMP, nor the client's port where the rule's affinity ignores it).
    pub fn bucket(
        &self,
        protocol: Protocol,
        vip_port: u16,
        client: impl Into<SocketAddr>,
    ) -> anyhow::Result<u32> {
        let client = client.into();
        let hash = self
            .rules
            .client_flow_hash(protocol, vip_port, client.ip(), client.port())
            .map_err(|reason| {
                anyhow!("no rule balances {protocol} to port {vip_port}: {reason:?}")
            })?;
        Ok(self.table.bucket_of(hash))
    }

    /// The node (its index in the configuration) that owns `bucket`.
    pub fn owner(&self, bucket: u32) -> usize {
        usize::from(self.table.owner(bucket))
    }

    /// The node that owns `client`'s traffic of `protocol` to `vip_port`.
    pub fn of(
        &self,
        protocol: Protocol,
        vip_port: u16,
        client: impl Into<SocketAddr>,
    ) -> anyhow::Result<usize> {
        Ok(self.owner(self.bucket(protocol, vip_port, client)?))
    }

    /// The buckets `node` owns, in order.
    pub fn buckets_of(&self, node: usize) -> Vec<u32> {
        (0u32..)
            .zip(self.table.owners())
            .filter(|&(_, &owner)| usize::from(owner) == node)
            .map(|(bucket, _)| bucket)
            .collect()
    }

    /// For each of `buckets`, up to `per_bucket` of `candidates` whose traffic of `protocol`
    /// to `vip_port` lands in it, in the order they come. Fails if a bucket gets none.
    pub fn flows_in<A: Into<SocketAddr> + Copy>(
        &self,
        protocol: Protocol,
        vip_port: u16,
        buckets: &[u32],
        per_bucket: usize,
        candidates: impl IntoIterator<Item = A>,
    ) -> anyhow::Result<Vec<Vec<A>>> {
        let mut flows: Vec<Vec<A>> = vec![Vec::new(); buckets.len()];
        let index: HashMap<u32, usize> = buckets.iter().enumerate().map(|(i, &b)| (b, i)).collect();
        let mut missing = buckets.len() * per_bucket;
        for flow in candidates {
            if missing == 0 {
                break;
            }
            let Some(&slot) = index.get(&self.bucket(protocol, vip_port, flow)?) else {
                continue;
            };
            if flows[slot].len() < per_bucket {
                flows[slot].push(flow);
                missing -= 1;
            }
        }
        if let Some(i) = flows.iter().position(Vec::is_empty) {
            bail!("no candidate flow lands in bucket {}", buckets[i]);
        }
        Ok(flows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::{flows, node4, VIP4};
    use crate::config::FarmToml;
    use herd_config::{Affinity, DataplaneMode};

    fn config() -> FarmConfig {
        let text = FarmToml::new("owners", DataplaneMode::Xdp)
            .node("alpha", node4(0))
            .node("bravo", node4(1))
            .node("charlie", node4(2))
            .rule(Protocol::Udp, &[7], Some(Affinity::ClientIpPort))
            .text();
        FarmConfig::parse(&text, Path::new("<owners test>")).unwrap()
    }

    #[test]
    fn every_bucket_has_one_owner_and_a_dead_node_owns_none() {
        let all = Owners::new(&config(), &[true; 3]).unwrap();
        let shares = all.shares();
        assert_eq!(shares.iter().sum::<usize>(), 256);
        assert!(shares.iter().all(|&share| share > 0));
        for (node, &share) in shares.iter().enumerate() {
            assert_eq!(all.buckets_of(node).len(), share);
        }
        let without = Owners::new(&config(), &[true, false, true]).unwrap();
        assert_eq!(without.shares()[1], 0);
        let flow = flows(20000..20001, 1).next().unwrap();
        assert_ne!(without.of(Protocol::Udp, 7, flow).unwrap(), 1);
    }

    #[test]
    fn flows_land_in_the_buckets_asked_for() {
        let owners = Owners::new(&config(), &[true; 3]).unwrap();
        let buckets = owners.buckets_of(0);
        let found = owners
            .flows_in(Protocol::Udp, 7, &buckets[..4], 2, flows(40000..40100, 64))
            .unwrap();
        for (bucket, flows) in buckets.iter().zip(&found) {
            assert_eq!(flows.len(), 2);
            for &flow in flows {
                assert_eq!(owners.bucket(Protocol::Udp, 7, flow).unwrap(), *bucket);
            }
        }
        let unbalanced = owners.bucket(Protocol::Tcp, 80, SocketAddr::from((VIP4, 1)));
        assert!(unbalanced.is_err(), "no rule balances TCP");
    }
}
