//! The kernel-only alternative an administrator has since CLUSTERIP was removed: an nftables
//! rule on the netdev ingress hook that hashes the client address with `jhash` and drops the
//! share of the other nodes.
//!
//! veth takes frames sent to it from XDP (the generator) only when it has an XDP program or GRO
//! on; herd-perf attaches the empty `perf_pass` program rather than turning GRO on, which would
//! merge packets and change what the rule sees. Its cost is the empty program's, a few
//! nanoseconds (see the cost table).

use anyhow::{bail, Context};
use aya::Ebpf;
use herd_testbed::address::{VIP4, VIP6};
use herd_testbed::Netns;
use serde_json::Value;

use super::{attach, Contender, Counts, Receiver};
use crate::farm::{NFT_SEED, NODES};
use crate::programs::Program;

/// The table herd-perf creates in the receiver's namespace.
const TABLE: &str = "herdperf";

/// The rule and its counters, loaded with `nft -f -` in the receiver's namespace.
#[derive(Default)]
pub struct Nftables {
    pass: Option<Ebpf>,
    netns: Option<Netns>,
}

/// The ruleset: node 0 keeps the clients whose `jhash` bucket is 0, as
/// [`crate::farm::BenchFarm::nft_keeps`] computes it.
fn ruleset(interface: &str) -> String {
    let hash = |family: &str| format!("jhash {family} saddr mod {NODES} seed {NFT_SEED:#x}");
    format!(
        "table netdev {TABLE} {{\n\
         \tcounter dropped {{}}\n\
         \tcounter accepted {{}}\n\
         \tchain ingress {{\n\
         \t\ttype filter hook ingress device \"{interface}\" priority -500; policy accept;\n\
         \t\tip daddr {VIP4} {} != 0 counter name \"dropped\" drop\n\
         \t\tip6 daddr {VIP6} {} != 0 counter name \"dropped\" drop\n\
         \t\tip daddr {VIP4} counter name \"accepted\"\n\
         \t\tip6 daddr {VIP6} counter name \"accepted\"\n\
         \t}}\n\
         }}\n",
        hash("ip"),
        hash("ip6"),
    )
}

/// The packets of the named counters in the output of `nft -j list counters`.
fn counter_packets(json: &str, name: &str) -> anyhow::Result<u64> {
    let value: Value = serde_json::from_str(json).context("nft printed invalid JSON")?;
    let entries = value["nftables"]
        .as_array()
        .context("nft's JSON has no list")?;
    for entry in entries {
        let counter = &entry["counter"];
        if counter["table"] == TABLE && counter["name"] == name {
            return counter["packets"]
                .as_u64()
                .with_context(|| format!("counter {name} has no packet count"));
        }
    }
    bail!("nft lists no counter {name} in table {TABLE}")
}

impl Contender for Nftables {
    fn setup(&mut self, receiver: &Receiver<'_>) -> anyhow::Result<()> {
        self.pass = Some(attach(Program::Pass, receiver)?);
        receiver
            .netns
            .exec(&["nft", "-f", "-"], Some(&ruleset(receiver.interface)))
            .context("cannot load the nftables rule")?;
        self.netns = Some(receiver.netns.clone());
        Ok(())
    }

    fn counts(&self) -> anyhow::Result<Counts> {
        let netns = self
            .netns
            .as_ref()
            .context("the nftables rule is not set up")?;
        let json = netns.exec(
            &["nft", "-j", "list", "counters", "table", "netdev", TABLE],
            None,
        )?;
        let dropped = counter_packets(&json, "dropped")?;
        let accepted = counter_packets(&json, "accepted")?;
        Ok(Counts {
            received: dropped + accepted,
            dropped,
            accepted,
        })
    }

    fn teardown(&mut self) -> anyhow::Result<()> {
        if let Some(netns) = self.netns.take() {
            netns.exec(&["nft", "delete", "table", "netdev", TABLE], None)?;
        }
        self.pass = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_drops_what_other_nodes_hash_to() {
        let rules = ruleset("hr42");
        assert!(rules.contains("device \"hr42\""));
        assert!(rules.contains(
            "ip daddr 198.18.0.100 jhash ip saddr mod 3 seed 0x68657264 != 0 counter name \
             \"dropped\" drop"
        ));
        assert!(rules.contains("ip6 daddr fd00:198:18::18:0:100 jhash ip6 saddr mod 3"));
    }

    #[test]
    fn counters_are_read_from_nft_json() {
        let json = r#"{"nftables": [{"metainfo": {"version": "1.0.6"}},
            {"counter": {"family": "netdev", "name": "dropped", "table": "herdperf", "packets": 12, "bytes": 0}},
            {"counter": {"family": "netdev", "name": "accepted", "table": "herdperf", "packets": 5, "bytes": 0}}]}"#;
        assert_eq!(counter_packets(json, "dropped").unwrap(), 12);
        assert_eq!(counter_packets(json, "accepted").unwrap(), 5);
        assert!(counter_packets(json, "other").is_err());
        assert!(counter_packets("not json", "dropped").is_err());
    }
}
