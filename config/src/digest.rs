//! Fingerprint of the farm-wide configuration, so nodes can tell they run the same one.

use std::fmt;
use std::net::IpAddr;

use sha2::{Digest, Sha256};

use crate::{Affinity, FarmConfig, MacMode, Membership, Protocol};

/// SHA-256 of the part of a [`FarmConfig`] that must be identical on every node.
///
/// It hashes a canonical, versioned binary encoding of the values, not the TOML text, so
/// comments, whitespace, key order and spelling (such as `"80-80"` for `"80"`) do not matter.
/// Included: the farm name, the VIPs (in file order), the bucket count, the hash key, the
/// heartbeat port, every node's name, address and weight (in file order), every rule's
/// protocol, port ranges and affinity, the `[membership]` timings and quorum setting, and the
/// farm's virtual MAC mode: any of these differing between nodes would make them disagree on
/// who owns a flow, not hear each other, or give clients different MACs for a VIP.
///
/// The `[membership]` table, added after the first version of the encoding, is encoded only
/// when it differs from [`ENCODED_MEMBERSHIP_DEFAULTS`], the defaults of the release that added
/// it: a file that writes those values out (or, for a release of that time, leaves the table
/// out) hashes as it did before the table existed. A file without the table now runs the faster
/// defaults of today, so it hashes differently from the same file under a release with the old
/// defaults: nodes that would time each other out with different periods never form a farm.
/// So is the MAC mode, when it is not the default `unicast`.
///
/// Excluded: the interfaces, as NIC names are host-local and may legitimately differ between
/// nodes; `auth_key_file`, which is only a path: the key itself is checked by every
/// heartbeat's HMAC; the whole `[dataplane]` table (mode, cores, zero-copy, batch), a local
/// performance choice that does not change which packets a node takes, so nodes on different
/// hardware may tune it differently; the `[[check]]` entries and the `[scripts]` table,
/// which say how a node checks, starts and stops its own application: they are local to each
/// node, as the application may be installed, and so checked, differently from node to node,
/// and whatever they decide reaches the others only as the node joining or leaving; and the
/// `[admin]` table, where a node serves its own metrics, health and console, which changes
/// nothing of what the node does with packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FarmDigest(pub [u8; 32]);

impl FarmDigest {
    /// The first 12 hex digits, enough to tell configurations apart in logs.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..6])
    }
}

impl fmt::Display for FarmDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// Names the encoding; change it whenever the encoding changes, so that nodes running
/// different encodings see different digests rather than equal digests of different things.
///
/// A section added after the fields of v1 does not change it when the section is encoded only
/// where it differs from fixed values (see [`ENCODED_MEMBERSHIP_DEFAULTS`]): every
/// configuration that v1 could express still encodes to the same bytes. Those values are then
/// part of the encoding: changing one means changing this name.
const VERSION: &[u8] = b"herd farm digest v1";

/// The `[membership]` values the encoding leaves out: the defaults when the section was added
/// (heartbeat 100 ms, dead after 500 ms). They stay fixed when the defaults change, so that a
/// farm that writes them out keeps its digest across releases and can be upgraded one node at
/// a time (README, "Upgrading").
const ENCODED_MEMBERSHIP_DEFAULTS: Membership = Membership {
    heartbeat_ms: 100,
    dead_after_ms: 500,
    drain_s: 30,
    quorum: false,
};

/// Tag of the `[membership]` section, encoded after the fields of v1 only when it differs from
/// [`ENCODED_MEMBERSHIP_DEFAULTS`]. The v1 encoding is self-delimiting, so a section appended to it can never make
/// two configurations encode alike; the tag keeps sections added later apart from this one.
const MEMBERSHIP_TAG: u8 = 1;

/// Tag of the farm's virtual MAC mode, encoded after the `[membership]` section only when it
/// is not [`MacMode::Unicast`], the only mode before it existed.
const MAC_TAG: u8 = 2;

/// Feeds values to the hash in a self-delimiting encoding: every variable-length field is
/// prefixed with its length, so no two different configurations encode to the same bytes.
struct Encoder(Sha256);

impl Encoder {
    fn u8(&mut self, value: u8) {
        self.0.update([value]);
    }

    fn u16(&mut self, value: u16) {
        self.0.update(value.to_be_bytes());
    }

    fn u32(&mut self, value: u32) {
        self.0.update(value.to_be_bytes());
    }

    /// A count or length. Counts in a valid configuration are small; saturating keeps this
    /// total anyway.
    fn len(&mut self, len: usize) {
        self.u32(u32::try_from(len).unwrap_or(u32::MAX));
    }

    fn bytes(&mut self, bytes: &[u8]) {
        self.len(bytes.len());
        self.0.update(bytes);
    }

    fn address(&mut self, address: &IpAddr) {
        match address {
            IpAddr::V4(v4) => {
                self.u8(4);
                self.0.update(v4.octets());
            }
            IpAddr::V6(v6) => {
                self.u8(6);
                self.0.update(v6.octets());
            }
        }
    }
}

/// Wire codes of protocols: their IP protocol numbers, fixed whatever the enum's order.
fn protocol_code(protocol: Protocol) -> u8 {
    match protocol {
        Protocol::Icmp => 1,
        Protocol::Tcp => 6,
        Protocol::Udp => 17,
    }
}

/// Wire codes of virtual MAC modes, fixed whatever the enum's order.
fn mac_code(mac: MacMode) -> u8 {
    match mac {
        MacMode::Unicast => 1,
        MacMode::Multicast => 2,
    }
}

/// Wire codes of affinities, fixed whatever the enum's order.
fn affinity_code(affinity: Affinity) -> u8 {
    match affinity {
        Affinity::ClientIp => 1,
        Affinity::ClientIpPort => 2,
    }
}

pub(crate) fn digest(config: &FarmConfig) -> FarmDigest {
    let mut encoder = Encoder(Sha256::new());
    encoder.bytes(VERSION);

    let farm = &config.farm;
    encoder.bytes(farm.name.as_bytes());
    encoder.len(farm.vips.len());
    farm.vips.iter().for_each(|vip| encoder.address(vip));
    encoder.u32(farm.buckets);
    encoder.0.update(farm.hash_key);
    encoder.u16(farm.port);

    encoder.len(config.nodes.len());
    for node in &config.nodes {
        encoder.bytes(node.name.as_bytes());
        encoder.address(&node.address);
        encoder.u32(node.weight);
    }

    encoder.len(config.rules.len());
    for rule in &config.rules {
        encoder.u8(protocol_code(rule.protocol));
        encoder.len(rule.ports.len());
        for range in &rule.ports {
            encoder.u16(range.first);
            encoder.u16(range.last);
        }
        encoder.u8(affinity_code(rule.affinity));
    }

    let membership = &config.membership;
    if *membership != ENCODED_MEMBERSHIP_DEFAULTS {
        encoder.u8(MEMBERSHIP_TAG);
        encoder.u32(membership.heartbeat_ms);
        encoder.u32(membership.dead_after_ms);
        encoder.u32(membership.drain_s);
        encoder.u8(u8::from(membership.quorum));
    }

    if farm.mac != MacMode::default() {
        encoder.u8(MAC_TAG);
        encoder.u8(mac_code(farm.mac));
    }

    FarmDigest(encoder.0.finalize().into())
}
