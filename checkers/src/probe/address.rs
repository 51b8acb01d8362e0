//! `address`: the node's addresses (its own and the VIPs) are still on its interface.

use std::net::IpAddr;

use super::{ProbeError, Probed};

/// Whether every one of `expected` is an address of interface `name`.
pub fn addresses(name: &str, expected: &[IpAddr]) -> Probed {
    let present = if_addrs::get_if_addrs()
        .map_err(|error| ProbeError::new(format!("cannot list the addresses: {error}")))?;
    let missing: Vec<String> = expected
        .iter()
        .filter(|&&address| !present.iter().any(|a| a.name == name && a.ip() == address))
        .map(IpAddr::to_string)
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(ProbeError::new(format!(
            "{} missing from interface {name}",
            missing.join(", ")
        )))
    }
}
