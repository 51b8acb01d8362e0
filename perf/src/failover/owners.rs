//! Which node owns which flow, computed from the configuration with the workspace's crates as
//! every node computes it, for a given set of live nodes; and the client flows that land in
//! chosen buckets.

use std::net::{IpAddr, SocketAddrV4};

use anyhow::{anyhow, bail, Context};
use herd_config::{FarmConfig, Protocol};
use herd_membership::farm_table;
use herd_packet::table::BucketTable;
use herd_packet::FarmRules;

use super::bed::{source, NODES, SOURCES};

/// The owners of the buckets when the nodes marked `up` are the members.
pub struct Owners {
    rules: FarmRules,
    table: BucketTable,
}

impl Owners {
    /// The owners when the nodes of `config` marked in `up` are the members.
    pub fn new(config: &FarmConfig, up: [bool; NODES.len()]) -> anyhow::Result<Self> {
        Ok(Owners {
            rules: FarmRules::from_config(config),
            table: farm_table(config, &up).context("the farm's bucket table")?,
        })
    }

    /// How many buckets each node owns.
    pub fn shares(&self) -> Vec<usize> {
        self.table.counts(NODES.len())
    }

    /// The bucket of `client`'s traffic of `protocol` to `vip_port`.
    pub fn bucket(
        &self,
        protocol: Protocol,
        vip_port: u16,
        client: SocketAddrV4,
    ) -> anyhow::Result<u32> {
        let hash = self
            .rules
            .client_flow_hash(protocol, vip_port, IpAddr::V4(*client.ip()), client.port())
            .map_err(|reason| {
                anyhow!("no rule balances {protocol} to port {vip_port}: {reason:?}")
            })?;
        Ok(self.table.bucket_of(hash))
    }

    /// The node (index in [`NODES`]) that owns `bucket`.
    pub fn owner(&self, bucket: u32) -> usize {
        usize::from(self.table.owner(bucket))
    }

    /// The node that owns `client`'s traffic of `protocol` to `vip_port`.
    pub fn of(
        &self,
        protocol: Protocol,
        vip_port: u16,
        client: SocketAddrV4,
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
}

/// For each of `buckets`, up to `per_bucket` client flows (extra source address and port, the
/// ports from `ports`) whose traffic of `protocol` to `vip_port` lands in it, in the order the
/// ports come. Fails if a bucket gets none.
pub fn flows_in(
    owners: &Owners,
    protocol: Protocol,
    vip_port: u16,
    buckets: &[u32],
    per_bucket: usize,
    ports: std::ops::Range<u16>,
) -> anyhow::Result<Vec<Vec<SocketAddrV4>>> {
    let mut flows: Vec<Vec<SocketAddrV4>> = vec![Vec::new(); buckets.len()];
    let index: std::collections::HashMap<u32, usize> =
        buckets.iter().enumerate().map(|(i, &b)| (b, i)).collect();
    let mut missing = buckets.len() * per_bucket;
    'search: for port in ports {
        for i in 1..=SOURCES {
            let flow = SocketAddrV4::new(source(i), port);
            let Some(&slot) = index.get(&owners.bucket(protocol, vip_port, flow)?) else {
                continue;
            };
            if flows[slot].len() < per_bucket {
                flows[slot].push(flow);
                missing -= 1;
                if missing == 0 {
                    break 'search;
                }
            }
        }
    }
    if let Some(i) = flows.iter().position(Vec::is_empty) {
        bail!(
            "no client flow of the port range lands in bucket {}",
            buckets[i]
        );
    }
    Ok(flows)
}
