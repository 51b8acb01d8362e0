//! The farm's balancing rules, compiled for the packet path: which addresses are VIPs, which
//! VIP ports are balanced and on what, and the flow hash of a client.

use std::net::IpAddr;

use herd_config::{Affinity, FarmConfig, MacMode, Protocol};

use crate::hash::{client_hash, HashKey};

/// Why a VIP packet is dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Its bucket belongs to another node.
    NotOwner,
    /// No `[[rule]]` balances its protocol and port: dropped on every node.
    NoRule,
    /// It is addressed to a VIP but its headers are truncated or impossible.
    Malformed,
}

/// How a packet's flow is identified before hashing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowKey {
    /// TCP or UDP with its ports: the rule for the VIP port decides whether the client port
    /// joins the client address in the hash.
    Ports {
        /// The farm-side (VIP) port.
        vip: u16,
        /// The client's port.
        client: u16,
    },
    /// No ports: a fragment (every fragment of a datagram must reach the same node, and only
    /// the first carries ports) or an ICMP message. Hashed on the client address alone,
    /// balanced when any rule covers the protocol.
    AddressOnly,
}

/// A packet's flow as the rules see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flow {
    /// The protocol the rules are looked up for.
    pub protocol: Protocol,
    /// The client's address.
    pub client: IpAddr,
    /// How the flow is identified.
    pub key: FlowKey,
}

const PORTS: usize = 1 << 16;

/// The affinity of the rule for each port: a fixed-size array, so that indexing it with a
/// `u16` needs no bounds check.
type PortRules = [Option<Affinity>; PORTS];

/// The farm settings the packet path needs, in the form it reads fastest.
///
/// Port rules are flattened into one entry per port and protocol (64 KiB each): one load per
/// packet, whatever the number of rules, and the same layout as the BPF array map that
/// carries them into the in-kernel mode.
#[derive(Clone, Debug)]
pub struct FarmRules {
    key: HashKey,
    vips_v4: Box<[[u8; 4]]>,
    vips_v6: Box<[[u8; 16]]>,
    tcp: Box<PortRules>,
    udp: Box<PortRules>,
    /// Whether any rule covers TCP, UDP, ICMP: what fragments and ICMP messages are checked
    /// against.
    covered: [bool; 3],
    /// The kind of virtual MAC the VIPs' neighbour answers carry.
    mac: MacMode,
}

impl FarmRules {
    /// Compiles the rules of a validated configuration.
    pub fn from_config(config: &FarmConfig) -> Self {
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        for vip in &config.farm.vips {
            match vip {
                IpAddr::V4(a) => v4.push(a.octets()),
                IpAddr::V6(a) => v6.push(a.octets()),
            }
        }
        let mut rules = Self {
            key: HashKey::from_bytes(config.farm.hash_key),
            vips_v4: v4.into_boxed_slice(),
            vips_v6: v6.into_boxed_slice(),
            tcp: no_port_rules(),
            udp: no_port_rules(),
            covered: [false; 3],
            mac: config.farm.mac,
        };
        // Rules are applied in reverse so that, where they overlap, the first one listed wins,
        // as `FarmConfig::rule_for` reads them (validation refuses overlaps that disagree).
        for rule in config.rules.iter().rev() {
            rules.covered[protocol_index(rule.protocol)] = true;
            let ports = match rule.protocol {
                Protocol::Tcp => &mut rules.tcp,
                Protocol::Udp => &mut rules.udp,
                Protocol::Icmp => continue,
            };
            for range in &rule.ports {
                for port in range.first..=range.last {
                    ports[usize::from(port)] = Some(rule.affinity);
                }
            }
        }
        rules
    }

    /// The kind of virtual MAC the VIPs' neighbour answers carry.
    pub fn mac_mode(&self) -> MacMode {
        self.mac
    }

    /// Whether an IPv4 address is one of the farm's VIPs.
    #[inline(always)]
    pub fn is_vip_v4(&self, addr: [u8; 4]) -> bool {
        self.vips_v4.contains(&addr)
    }

    /// Whether an IPv6 address is one of the farm's VIPs.
    #[inline(always)]
    pub fn is_vip_v6(&self, addr: [u8; 16]) -> bool {
        self.vips_v6.contains(&addr)
    }

    /// The affinity of the rule that balances `protocol` traffic to `port`, if any.
    #[inline(always)]
    pub fn affinity(&self, protocol: Protocol, port: u16) -> Option<Affinity> {
        match protocol {
            Protocol::Tcp => self.tcp[usize::from(port)],
            Protocol::Udp => self.udp[usize::from(port)],
            Protocol::Icmp => self.covers(Protocol::Icmp).then_some(Affinity::ClientIp),
        }
    }

    /// The IPv4 VIPs.
    pub fn vips_v4(&self) -> &[[u8; 4]] {
        &self.vips_v4
    }

    /// The IPv6 VIPs.
    pub fn vips_v6(&self) -> &[[u8; 16]] {
        &self.vips_v6
    }

    /// The key of the flow hash.
    pub fn key(&self) -> &HashKey {
        &self.key
    }

    /// Whether any rule balances some traffic of `protocol`.
    #[inline(always)]
    pub fn covers(&self, protocol: Protocol) -> bool {
        self.covered[protocol_index(protocol)]
    }

    /// The flow hash of `flow`, or why no rule balances it.
    #[inline(always)]
    pub fn flow_hash(&self, flow: &Flow) -> Result<u64, DropReason> {
        let port = match flow.key {
            FlowKey::Ports { vip, client } => match self.affinity(flow.protocol, vip) {
                Some(Affinity::ClientIp) => 0,
                Some(Affinity::ClientIpPort) => client,
                None => return Err(DropReason::NoRule),
            },
            FlowKey::AddressOnly if self.covers(flow.protocol) => 0,
            FlowKey::AddressOnly => return Err(DropReason::NoRule),
        };
        Ok(client_hash(&self.key, flow.client, port))
    }

    /// The flow hash of a client reaching `vip_port` with `protocol` (the port is ignored for
    /// ICMP), as `herd whois` asks it.
    pub fn client_flow_hash(
        &self,
        protocol: Protocol,
        vip_port: u16,
        client: IpAddr,
        client_port: u16,
    ) -> Result<u64, DropReason> {
        let key = match protocol {
            Protocol::Icmp => FlowKey::AddressOnly,
            Protocol::Tcp | Protocol::Udp => FlowKey::Ports {
                vip: vip_port,
                client: client_port,
            },
        };
        self.flow_hash(&Flow {
            protocol,
            client,
            key,
        })
    }
}

/// A port table with no rule, built on the heap (64 KiB is too big for a worker's stack).
fn no_port_rules() -> Box<PortRules> {
    let ports: Box<[Option<Affinity>]> = vec![None; PORTS].into_boxed_slice();
    ports.try_into().expect("PORTS entries")
}

fn protocol_index(protocol: Protocol) -> usize {
    match protocol {
        Protocol::Tcp => 0,
        Protocol::Udp => 1,
        Protocol::Icmp => 2,
    }
}
