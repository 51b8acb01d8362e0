//! What a failover farm looks like: three nodes of equal weight, the VIP's services and the
//! configuration file. Its addresses are the test bed's plan ([`herd_testbed::address`]).

use std::path::Path;
use std::time::Duration;

use herd_config::{Affinity, DataplaneMode, Protocol};
use herd_testbed::address::node4;
use herd_testbed::config::FarmToml;
use herd_testbed::responder::{Kind, On, Service};

pub use herd_testbed::address::VIP4 as VIP;

/// The UDP echo service on the VIP, balanced per client address and port.
pub const UDP_PORT: u16 = 7;
/// A TCP service on the VIP that answers one line and closes: the short connections.
pub const SHORT_PORT: u16 = 81;
/// A TCP service on the VIP that answers every line until the client closes: the long-lived
/// connections.
pub const LONG_PORT: u16 = 82;
/// The nodes, in order: node `i`'s own address is the plan's [`node4`]`(i)`. Equal weights:
/// a third of the buckets each.
pub const NODES: [&str; 3] = ["alpha", "bravo", "charlie"];
/// How many more addresses the client has, the plan's sources 1 to `SOURCES`.
pub const SOURCES: u8 = 64;
/// The services every node runs on the VIP, each answering `NAME:REQUEST`.
pub const SERVICES: [Service; 3] = [
    Service {
        kind: Kind::Udp,
        on: On::Vip,
        port: UDP_PORT,
    },
    Service {
        kind: Kind::TcpOnce,
        on: On::Vip,
        port: SHORT_PORT,
    },
    Service {
        kind: Kind::TcpLines,
        on: On::Vip,
        port: LONG_PORT,
    },
];

/// The membership's timing a farm runs with, written into its `[membership]` table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// The heartbeat period, in ms.
    pub heartbeat_ms: u32,
    /// The silence after which a node is dead, in ms.
    pub dead_after_ms: u32,
}

impl Timing {
    /// The heartbeat period.
    pub fn heartbeat(self) -> Duration {
        Duration::from_millis(self.heartbeat_ms.into())
    }

    /// The `[membership]` table.
    fn table(self) -> String {
        format!(
            "[membership]\nheartbeat_ms = {}\ndead_after_ms = {}\n",
            self.heartbeat_ms, self.dead_after_ms
        )
    }

    /// Fails, saying why, unless the configuration of a farm of [`NODES`] takes this timing:
    /// checked by the configuration's own validation, before any farm is built.
    pub fn check(self) -> anyhow::Result<()> {
        crate::membership::Timing::resolve(
            NODES.len(),
            Some(self.heartbeat_ms),
            Some(self.dead_after_ms),
        )
        .map(drop)
    }
}

/// The configuration, with `timing` in its `[membership]` table.
pub fn config(mode: DataplaneMode, buckets: u32, key_file: &Path, timing: Timing) -> FarmToml {
    NODES
        .iter()
        .enumerate()
        .fold(FarmToml::new("herd-perf", mode), |farm, (node, name)| {
            farm.node(name, node4(node))
        })
        .buckets(buckets)
        .hash_key("68657264207065726620686173682121")
        .key_file(key_file)
        .rule(Protocol::Udp, &[UDP_PORT], Some(Affinity::ClientIpPort))
        .rule(
            Protocol::Tcp,
            &[SHORT_PORT, LONG_PORT],
            Some(Affinity::ClientIpPort),
        )
        .tables(&timing.table())
}

#[cfg(test)]
mod tests {
    use herd_config::FarmConfig;

    use super::*;

    #[test]
    fn the_timing_is_checked_as_the_configuration_is() {
        let timing = |heartbeat_ms, dead_after_ms| Timing {
            heartbeat_ms,
            dead_after_ms,
        };
        timing(40, 160).check().unwrap();
        timing(15, 60).check().unwrap();
        let error = timing(20, 50).check().unwrap_err().to_string();
        assert!(error.contains("--dead-after-ms 50"), "{error}");
        assert!(error.contains("dead_after_ms"), "{error}");
        let error = timing(5, 200).check().unwrap_err().to_string();
        assert!(error.contains("heartbeat_ms"), "{error}");
        let text = config(DataplaneMode::Afxdp, 64, Path::new("k"), timing(20, 80)).text();
        let config = FarmConfig::parse(&text, Path::new("farm.toml")).unwrap();
        assert_eq!(
            (
                config.membership.heartbeat_ms,
                config.membership.dead_after_ms
            ),
            (20, 80)
        );
    }
}
