//! What a host knows of its link, as `ip -j` tells it: the MAC its neighbour table holds for
//! an address, and the MAC of an interface of its own. A farm's clients must hold the VIP's
//! virtual MAC, never a node's.

use std::net::IpAddr;

use anyhow::{bail, Context};
use serde_json::Value;

use crate::netns::Netns;

/// The MAC `netns`'s neighbour entry for `address` on `device` holds, if it has an entry
/// with one (an entry still being resolved, or that failed, holds none).
pub fn neighbour_mac(
    netns: &Netns,
    device: &str,
    address: IpAddr,
) -> anyhow::Result<Option<[u8; 6]>> {
    let text = netns.ip_output(&["-j", "neigh", "show", &address.to_string(), "dev", device])?;
    let entries = json_list(&text).context("ip -j neigh show")?;
    match entries.as_slice() {
        [] => Ok(None),
        [entry] => entry
            .get("lladdr")
            .map(|mac| mac_of(mac).context("the neighbour entry's lladdr"))
            .transpose(),
        _ => bail!(
            "{} neighbour entries for {address} on {device}",
            entries.len()
        ),
    }
}

/// The MAC of `device` in `netns`.
pub fn interface_mac(netns: &Netns, device: &str) -> anyhow::Result<[u8; 6]> {
    let text = netns.ip_output(&["-j", "link", "show", "dev", device])?;
    let links = json_list(&text).context("ip -j link show")?;
    let [link] = links.as_slice() else {
        bail!("{} links named {device} in {}", links.len(), netns.name());
    };
    let mac = link
        .get("address")
        .with_context(|| format!("no address for {device} in {}", netns.name()))?;
    mac_of(mac).with_context(|| format!("the address of {device} in {}", netns.name()))
}

/// The JSON list `ip -j` prints (nothing at all when nothing matches).
fn json_list(text: &str) -> anyhow::Result<Vec<Value>> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    match serde_json::from_str(text).context("not JSON")? {
        Value::Array(list) => Ok(list),
        other => bail!("not a JSON list: {other}"),
    }
}

/// A MAC written `aa:bb:cc:dd:ee:ff`, as a JSON string.
fn mac_of(value: &Value) -> anyhow::Result<[u8; 6]> {
    let text = value.as_str().context("not a string")?;
    let bytes: Vec<u8> = text
        .split(':')
        .map(|byte| u8::from_str_radix(byte, 16))
        .collect::<Result<_, _>>()
        .with_context(|| format!("{text} is not a MAC"))?;
    bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("{text} is not a MAC of 6 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mac_is_read_as_ip_writes_it() {
        let mac = mac_of(&Value::from("02:68:c6:12:00:64")).unwrap();
        assert_eq!(mac, [0x02, 0x68, 0xc6, 0x12, 0x00, 0x64]);
        for bad in [
            "02:68:c6:12:00",
            "02:68:c6:12:00:64:01",
            "02:68:zz:12:00:64",
            "",
        ] {
            assert!(mac_of(&Value::from(bad)).is_err(), "{bad}");
        }
        assert!(mac_of(&Value::from(3)).is_err());
    }

    #[test]
    fn ip_s_lists_are_read_and_nothing_is_an_empty_list() {
        assert!(json_list("").unwrap().is_empty());
        assert!(json_list("\n").unwrap().is_empty());
        let list = json_list(r#"[{"dst":"198.18.0.100","lladdr":"02:68:c6:12:00:64"}]"#).unwrap();
        assert_eq!(list.len(), 1);
        assert!(json_list("{}").is_err());
        assert!(json_list("[").is_err());
    }
}
