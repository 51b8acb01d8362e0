//! What a failover farm looks like: three nodes of equal weight, the VIP's services and the
//! configuration file. Its addresses are the test bed's plan ([`herd_testbed::address`]).

use std::path::Path;

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

/// The configuration: default membership settings (no `[membership]` table).
pub fn config(mode: DataplaneMode, buckets: u32, key_file: &Path) -> FarmToml {
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
}
