//! The farm configuration a bed's nodes run, written as an administrator would write it, and
//! the key file that signs their heartbeats.

use std::fmt::Write as _;
use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::Context;
use herd_config::{Affinity, DataplaneMode, MacMode, Protocol};

use crate::address::VIP4;

/// A key file's text: one key, id 1. Any key does: the farm is private to the bed.
pub const KEY: &str = "1 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n";
/// The hash key of a farm that does not ask for another.
pub const HASH_KEY: &str = "00112233445566778899aabbccddeeff";

/// A farm configuration file, built up and then written. Default membership settings unless
/// [`FarmToml::tables`] adds a `[membership]` table.
#[derive(Clone, Debug)]
pub struct FarmToml {
    comment: Option<String>,
    name: String,
    vips: Vec<IpAddr>,
    interface: String,
    buckets: u32,
    hash_key: String,
    key_file: Option<PathBuf>,
    /// `announce_interval_s`, when not herd's default.
    announce_interval_s: Option<u32>,
    nodes: Vec<NodeEntry>,
    rules: Vec<RuleEntry>,
    mode: DataplaneMode,
    mac: Option<MacMode>,
    console: Option<Console>,
    tables: String,
}

/// The console of `[admin]`: where it listens and the file of its secret.
#[derive(Clone, Debug)]
struct Console {
    address: SocketAddr,
    secret_file: PathBuf,
}

/// A `[[node]]` entry.
#[derive(Clone, Debug)]
struct NodeEntry {
    name: String,
    address: IpAddr,
    weight: Option<u32>,
}

/// A `[[rule]]` entry.
#[derive(Clone, Debug)]
struct RuleEntry {
    protocol: Protocol,
    ports: Vec<u16>,
    affinity: Option<Affinity>,
}

impl FarmToml {
    /// Farm `name` in dataplane `mode`, with the VIP [`VIP4`] on interface `eth0`, 256
    /// buckets, the hash key [`HASH_KEY`], and no node, rule or key file yet.
    pub fn new(name: &str, mode: DataplaneMode) -> Self {
        FarmToml {
            comment: None,
            name: name.to_owned(),
            vips: vec![VIP4.into()],
            interface: "eth0".to_owned(),
            buckets: 256,
            hash_key: HASH_KEY.to_owned(),
            key_file: None,
            announce_interval_s: None,
            nodes: Vec::new(),
            rules: Vec::new(),
            mode,
            mac: None,
            console: None,
            tables: String::new(),
        }
    }

    /// A comment line at the top of the file.
    pub fn comment(mut self, text: &str) -> Self {
        self.comment = Some(text.to_owned());
        self
    }

    /// The VIPs, instead of [`VIP4`] alone.
    pub fn vips(mut self, vips: &[IpAddr]) -> Self {
        self.vips = vips.to_vec();
        self
    }

    /// The interface the nodes filter.
    pub fn interface(mut self, interface: &str) -> Self {
        self.interface = interface.to_owned();
        self
    }

    /// The number of buckets.
    pub fn buckets(mut self, buckets: u32) -> Self {
        self.buckets = buckets;
        self
    }

    /// The hash key, 32 hex digits.
    pub fn hash_key(mut self, hash_key: &str) -> Self {
        self.hash_key = hash_key.to_owned();
        self
    }

    /// The farm's virtual MAC mode, written out (the file says nothing of it otherwise).
    pub fn mac(mut self, mac: MacMode) -> Self {
        self.mac = Some(mac);
        self
    }

    /// The key file that signs the heartbeats.
    pub fn key_file(mut self, path: &Path) -> Self {
        self.key_file = Some(path.to_owned());
        self
    }

    /// The period of the VIPs' announcements, in seconds (0 for none besides those at start
    /// and after each view).
    pub fn announce_interval_s(mut self, seconds: u32) -> Self {
        self.announce_interval_s = Some(seconds);
        self
    }

    /// A node of the default weight.
    pub fn node(mut self, name: &str, address: impl Into<IpAddr>) -> Self {
        self.nodes.push(NodeEntry {
            name: name.to_owned(),
            address: address.into(),
            weight: None,
        });
        self
    }

    /// A node of weight `weight`.
    pub fn weighted_node(mut self, name: &str, address: impl Into<IpAddr>, weight: u32) -> Self {
        self.nodes.push(NodeEntry {
            name: name.to_owned(),
            address: address.into(),
            weight: Some(weight),
        });
        self
    }

    /// A rule balancing `protocol` to `ports` (none for ICMP) with `affinity`, or the default
    /// affinity when `None`.
    pub fn rule(mut self, protocol: Protocol, ports: &[u16], affinity: Option<Affinity>) -> Self {
        self.rules.push(RuleEntry {
            protocol,
            ports: ports.to_vec(),
            affinity,
        });
        self
    }

    /// The console on `address` (`[admin] console`), its secret in `secret_file`
    /// (`console_secret_file`). The `[admin]` table is then this one's: [`FarmToml::tables`]
    /// must not add another.
    pub fn console(mut self, address: SocketAddr, secret_file: &Path) -> Self {
        self.console = Some(Console {
            address,
            secret_file: secret_file.to_owned(),
        });
        self
    }

    /// More tables, written as they are after the rest: `[membership]`, `[[check]]`,
    /// `[scripts]`, `[admin]`.
    pub fn tables(mut self, text: &str) -> Self {
        self.tables.push_str(text);
        self
    }

    /// The file's text.
    pub fn text(&self) -> String {
        let mut text = String::new();
        if let Some(comment) = &self.comment {
            let _ = writeln!(text, "# {comment}");
        }
        let vips: Vec<String> = self
            .vips
            .iter()
            .map(|vip| quoted(&vip.to_string()))
            .collect();
        let _ = writeln!(text, "[farm]");
        let _ = writeln!(text, "name = {}", quoted(&self.name));
        let _ = writeln!(text, "vip = [{}]", vips.join(", "));
        let _ = writeln!(text, "interface = {}", quoted(&self.interface));
        let _ = writeln!(text, "buckets = {}", self.buckets);
        let _ = writeln!(text, "hash_key = {}", quoted(&self.hash_key));
        if let Some(key_file) = &self.key_file {
            let _ = writeln!(
                text,
                "auth_key_file = {}",
                quoted(&key_file.display().to_string())
            );
        }
        if let Some(mac) = self.mac {
            let _ = writeln!(text, "mac = \"{mac}\"");
        }
        if let Some(seconds) = self.announce_interval_s {
            let _ = writeln!(text, "announce_interval_s = {seconds}");
        }
        for node in &self.nodes {
            let _ = write!(
                text,
                "\n[[node]]\nname = {}\naddress = {}\n",
                quoted(&node.name),
                quoted(&node.address.to_string())
            );
            if let Some(weight) = node.weight {
                let _ = writeln!(text, "weight = {weight}");
            }
        }
        for rule in &self.rules {
            let _ = write!(text, "\n[[rule]]\nprotocol = \"{}\"\n", rule.protocol);
            if !rule.ports.is_empty() {
                let ports: Vec<String> = rule.ports.iter().map(|p| format!("\"{p}\"")).collect();
                let _ = writeln!(text, "ports = [{}]", ports.join(", "));
            }
            if let Some(affinity) = rule.affinity {
                let _ = writeln!(text, "affinity = \"{affinity}\"");
            }
        }
        let _ = write!(text, "\n[dataplane]\nmode = \"{}\"\n", self.mode);
        if let Some(console) = &self.console {
            let _ = write!(
                text,
                "\n[admin]\nconsole = {}\nconsole_secret_file = {}\n",
                quoted(&console.address.to_string()),
                quoted(&console.secret_file.display().to_string())
            );
        }
        if !self.tables.is_empty() {
            text.push('\n');
            text.push_str(&self.tables);
        }
        text
    }
}

/// `text` as a TOML string, quoted and escaped.
pub fn quoted(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

/// `bytes` random bytes from the kernel, in hex: a run's hash key or heartbeat key, or a
/// name no earlier run can have used.
pub fn random_hex(bytes: usize) -> anyhow::Result<String> {
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut file| file.read_exact(&mut buf))
        .context("cannot read /dev/urandom")?;
    Ok(buf.iter().map(|byte| format!("{byte:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::node4;
    use std::net::Ipv6Addr;

    #[test]
    fn a_full_configuration_is_valid_and_says_what_was_asked() {
        let dir = crate::scratch::Scratch::create("herd-testbed-config").unwrap();
        let key = dir.write_private("farm.key", KEY).unwrap();
        let six: Ipv6Addr = "fd00:198:18::18:0:100".parse().unwrap();
        let text = FarmToml::new("e2e", DataplaneMode::Afxdp)
            .comment("a test farm")
            .vips(&[VIP4.into(), six.into()])
            .buckets(64)
            .key_file(&key)
            .announce_interval_s(3)
            .weighted_node("alpha", node4(0), 1)
            .weighted_node("bravo", node4(1), 2)
            .node("charlie", node4(2))
            .rule(Protocol::Udp, &[7], Some(Affinity::ClientIpPort))
            .rule(Protocol::Tcp, &[80, 81], Some(Affinity::ClientIp))
            .rule(Protocol::Icmp, &[], None)
            .mac(herd_config::MacMode::Multicast)
            .tables("[membership]\ndrain_s = 7\n")
            .text();
        let path = dir.write_private("farm.toml", &text).unwrap();
        let config = herd_config::FarmConfig::load(&path).unwrap();
        assert_eq!(config.farm.name, "e2e");
        assert_eq!(config.farm.buckets, 64);
        assert_eq!(config.farm.vips.len(), 2);
        assert_eq!(config.farm.announce_interval_s, 3);
        assert_eq!(config.nodes.len(), 3);
        assert_eq!(config.nodes[1].weight, 2);
        assert_eq!(config.rules.len(), 3);
        assert_eq!(config.dataplane.mode, DataplaneMode::Afxdp);
        assert_eq!(config.membership.drain_s, 7);
        assert_eq!(config.farm.mac, herd_config::MacMode::Multicast);
        assert!(text.starts_with("# a test farm\n"));
    }

    #[test]
    fn the_console_is_in_the_admin_table() {
        let dir = crate::scratch::Scratch::create("herd-testbed-console").unwrap();
        let secret_file = dir.path().join("console secret");
        let address: SocketAddr = "[fd00:198:18::18:0:1]:9480".parse().unwrap();
        let text = FarmToml::new("e2e", DataplaneMode::Xdp)
            .node("alpha", node4(0))
            .rule(Protocol::Tcp, &[80], None)
            .console(address, &secret_file)
            .text();
        let path = dir.write_private("farm.toml", &text).unwrap();
        let config = herd_config::FarmConfig::load(&path).unwrap();
        let console = config.admin.console.expect("a console");
        assert_eq!(console.address, address);
        assert_eq!(console.secret_file, secret_file);
    }

    #[test]
    fn strings_are_quoted_and_escaped() {
        for text in ["plain", "a \"b\" \\c", "it's", "/tmp/herd x/farm.key"] {
            let table: toml::Table = toml::from_str(&format!("x = {}", quoted(text))).unwrap();
            assert_eq!(table["x"].as_str(), Some(text));
        }
    }

    #[test]
    fn random_hex_has_two_digits_a_byte() {
        let hex = random_hex(16).unwrap();
        assert_eq!(hex.len(), 32);
        assert!(hex.chars().all(|c| c.is_ascii_hexdigit()));
    }
}
