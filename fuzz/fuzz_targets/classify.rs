//! Any bytes given to the classifier yield a verdict, never a panic, and at most one node of a
//! farm accepts them.
#![no_main]

use std::sync::OnceLock;

use herd_config::{Affinity, Protocol};
use herd_dataplane::craft;
use herd_dataplane::{classify, FarmTable, Verdict};
use libfuzzer_sys::fuzz_target;

fn farm() -> &'static [FarmTable] {
    static FARM: OnceLock<Vec<FarmTable>> = OnceLock::new();
    FARM.get_or_init(|| {
        let all_ports = |protocol, affinity| craft::rule(protocol, 0, 65535, affinity);
        let rules = vec![
            all_ports(Protocol::Tcp, Affinity::ClientIp),
            all_ports(Protocol::Udp, Affinity::ClientIpPort),
            all_ports(Protocol::Icmp, Affinity::ClientIp),
        ];
        // Small addresses so that random bytes hit a VIP now and then.
        let vips = [[0, 0, 0, 0x0a].into(), "::a".parse().unwrap()];
        craft::round_robin_tables(&craft::farm_config(&vips, 64, [7; 16], 3, rules))
    })
}

fuzz_target!(|frame: &[u8]| {
    let accepted = farm()
        .iter()
        .filter(|table| classify(frame, table) == Verdict::Accept)
        .count();
    assert!(accepted <= 1);
});
