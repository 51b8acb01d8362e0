//! Any bytes given to the classifier yield a verdict, never a panic, and at most one node of a
//! farm accepts them.
#![no_main]

use std::sync::{Arc, OnceLock};

use herd_config::{Affinity, Farm, FarmConfig, Node, PortRange, Protocol, Rule};
use herd_dataplane::table::{BucketTable, NodeId};
use herd_dataplane::{classify, FarmRules, FarmTable, Verdict};
use libfuzzer_sys::fuzz_target;

const NODES: u16 = 3;

fn farm() -> &'static [FarmTable] {
    static FARM: OnceLock<Vec<FarmTable>> = OnceLock::new();
    FARM.get_or_init(|| {
        let all_ports = |protocol, affinity| Rule {
            protocol,
            ports: vec![PortRange { first: 0, last: 65535 }],
            affinity,
        };
        let config = FarmConfig {
            farm: Farm {
                name: "fuzz".into(),
                // Small addresses so that random bytes hit a VIP now and then.
                vips: vec![[0, 0, 0, 0x0a].into(), "::a".parse().unwrap()],
                interface: Some("eth0".into()),
                buckets: 64,
                hash_key: [7; 16],
                port: 7400,
                auth_key_file: "/dev/null".into(),
            },
            nodes: (0..NODES)
                .map(|i| Node {
                    name: format!("n{i}"),
                    address: [198, 18, 0, 1 + i as u8].into(),
                    weight: 1,
                    interface: None,
                })
                .collect(),
            rules: vec![
                all_ports(Protocol::Tcp, Affinity::ClientIp),
                all_ports(Protocol::Udp, Affinity::ClientIpPort),
                all_ports(Protocol::Icmp, Affinity::ClientIp),
            ],
        };
        let rules = Arc::new(FarmRules::from_config(&config));
        let owners: Vec<NodeId> = (0..64).map(|b| b % NODES).collect();
        let buckets = BucketTable::new(1, owners).unwrap();
        (0..NODES)
            .map(|n| FarmTable::new(Arc::clone(&rules), buckets.clone(), n))
            .collect()
    })
}

fuzz_target!(|frame: &[u8]| {
    let accepted = farm()
        .iter()
        .filter(|table| classify(frame, table) == Verdict::Accept)
        .count();
    assert!(accepted <= 1);
});
