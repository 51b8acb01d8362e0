//! Tests of the whole crate through its public API.

mod digest;
mod errors;
mod identify;
mod robustness;
mod valid;

use std::net::IpAddr;
use std::path::Path;

use crate::{ConfigError, FarmConfig};

/// A valid configuration; tests change one thing in it. Line numbers matter to the tests.
const BASE: &str = r#"[farm]
name = "web"
vip = ["198.18.0.100", "2001:db8::100"]
interface = "eth0"
buckets = 4096
hash_key = "00112233445566778899aabbccddeeff"
port = 7400

[[node]]
name = "alpha"
address = "198.18.0.1"

[[node]]
name = "bravo"
address = "198.18.0.2"
weight = 2

[[rule]]
protocol = "tcp"
ports = ["80", "443", "8000-8099"]

[[rule]]
protocol = "udp"
affinity = "client-ip-port"
"#;

fn parse(text: &str) -> Result<FarmConfig, ConfigError> {
    FarmConfig::parse(text, Path::new("farm.toml"))
}

/// `BASE` with the first `from` replaced by `to`; `from` must be there.
fn base_with(from: &str, to: &str) -> String {
    assert!(BASE.contains(from), "{from:?} is not in BASE");
    BASE.replacen(from, to, 1)
}

/// The address `text`, which must be one.
fn ip(text: &str) -> IpAddr {
    text.parse().expect("test address")
}
