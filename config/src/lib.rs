//! The herd farm configuration.
//!
//! One TOML file (by default [`FarmConfig::DEFAULT_PATH`]) describes a whole farm and is installed,
//! identical, on every node: the farm's VIPs and flow-hash parameters, every node, and the rules
//! that say which VIP traffic is balanced and by which client identity. [`FarmConfig::load`]
//! reads and validates it; every error names the file, and every error in its content also the
//! line, column and key at fault and what was expected there (toml's own messages that lack
//! an "expected" are given one). [`FarmConfig::digest`] fingerprints the farm-wide part so nodes can check
//! that they run the same configuration. An optional `[membership]` table sets the timings of
//! the heartbeat protocol, the same on every node and so part of the digest. An optional
//! `[dataplane]` table tunes how a node's packet path runs; it is local to each node and left
//! out of the digest. So are the `[[check]]` entries, which say how a node checks its
//! application and what it does when a check fails, the optional `[scripts]` table, which
//! starts and stops the application, and the optional `[admin]` table, which says where the
//! node serves its metrics and health and the farm's web console. [`secret::read`] reads a
//! secret file (the farm key, the console's secret), refusing one that its group or others may
//! read.

#![warn(missing_docs)]

mod digest;
mod error;
mod keyword;
mod locate;
mod ports;
mod raw;
pub mod secret;
mod validate;

#[cfg(test)]
mod tests;

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;
use toml::de::{DeTable, Deserializer};

pub use digest::FarmDigest;
pub use error::{ConfigError, IdentifyError, ValueError};
pub use ports::PortRange;

use keyword::Keyword;
use locate::Source;

/// A validated farm configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FarmConfig {
    /// Farm-wide settings, the `[farm]` table.
    pub farm: Farm,
    /// The nodes, one per `[[node]]` entry, in file order; indices are node numbers.
    pub nodes: Vec<Node>,
    /// The traffic rules, one per `[[rule]]` entry, in file order; the first match wins.
    pub rules: Vec<Rule>,
    /// How the nodes watch each other, the `[membership]` table; [`Membership::default`] when
    /// the file has none.
    pub membership: Membership,
    /// How this node's packet path runs, the `[dataplane]` table; [`Dataplane::default`] when
    /// the file has none.
    pub dataplane: Dataplane,
    /// How this node checks its application, one per `[[check]]` entry, in file order; at most
    /// [`FarmConfig::MAX_CHECKS`], none when the file has no `[[check]]`.
    pub checks: Vec<Check>,
    /// The application's start and stop scripts, the `[scripts]` table; [`Scripts::default`]
    /// when the file has none.
    pub scripts: Scripts,
    /// How this node is watched from outside, the `[admin]` table; [`Admin::default`] (no
    /// metrics server) when the file has none.
    pub admin: Admin,
}

/// Farm-wide settings, the `[farm]` table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Farm {
    /// Name used in logs and metrics: 1 to 63 characters from `[A-Za-z0-9_.-]`.
    pub name: String,
    /// The virtual addresses every node answers for, in file order; 1 to [`Farm::MAX_VIPS`].
    pub vips: Vec<IpAddr>,
    /// Default network interface of every node; `None` when every node names its own.
    pub interface: Option<String>,
    /// Number of hash buckets the flow space is split into: a power of two from
    /// [`Farm::MIN_BUCKETS`] to [`Farm::MAX_BUCKETS`].
    pub buckets: u32,
    /// 128-bit secret seed of the flow hash, so outsiders cannot aim traffic at one node.
    pub hash_key: [u8; 16],
    /// UDP port of the heartbeats.
    pub port: u16,
    /// Seconds between the announcements of the VIPs' virtual MACs this node sends besides
    /// those at start and after every change of view: 0 (none) to
    /// [`Farm::MAX_ANNOUNCE_INTERVAL_S`].
    pub announce_interval_s: u32,
    /// File holding the key that authenticates heartbeats.
    pub auth_key_file: PathBuf,
    /// The kind of virtual MAC the nodes answer ARP and neighbour solicitations for a VIP
    /// with.
    pub mac: MacMode,
}

impl Farm {
    /// Bucket count when `buckets` is not given.
    pub const DEFAULT_BUCKETS: u32 = 4096;
    /// Fewest buckets: below this, one bucket is too large a share of the traffic to move.
    pub const MIN_BUCKETS: u32 = 64;
    /// Most buckets: bounds the size of the ownership table every node keeps.
    pub const MAX_BUCKETS: u32 = 65536;
    /// Heartbeat port when `port` is not given.
    pub const DEFAULT_PORT: u16 = 7400;
    /// Announcement period when `announce_interval_s` is not given: a neighbour cache that
    /// took a wrong MAC for a VIP (on a learning switch, the traffic then reaches one node,
    /// which drops what it does not own) heals within 10 s, for one small frame per VIP and
    /// node every 10 s.
    pub const DEFAULT_ANNOUNCE_INTERVAL_S: u32 = 10;
    /// Longest announcement period, an hour: beyond it a wrong cache entry would outlive most
    /// routers' own ARP timeouts anyway.
    pub const MAX_ANNOUNCE_INTERVAL_S: u32 = 3600;
    /// Heartbeat key file when `auth_key_file` is not given.
    pub const DEFAULT_AUTH_KEY_FILE: &'static str = "/etc/herd/farm.key";
    /// Most VIPs a farm may have.
    pub const MAX_VIPS: usize = 16;
}

/// One node of the farm, a `[[node]]` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// Unique name, same charset as the farm name.
    pub name: String,
    /// Unique unicast heartbeat address; a node recognises itself by it.
    pub address: IpAddr,
    /// Share of the buckets, 0 to [`Node::MAX_WEIGHT`]; 0 = standby, owning no bucket while a
    /// weighted node lives.
    pub weight: u32,
    /// This node's interface, overriding [`Farm::interface`].
    pub interface: Option<String>,
}

impl Node {
    /// Weight when `weight` is not given.
    pub const DEFAULT_WEIGHT: u32 = 1;
    /// Largest weight.
    pub const MAX_WEIGHT: u32 = 1000;
}

/// Transport protocol of a rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// ICMP and ICMPv6; these have no ports.
    Icmp,
}

impl Keyword for Protocol {
    const ALL: &'static [Protocol] = &[Protocol::Tcp, Protocol::Udp, Protocol::Icmp];
    const NAMES: &'static [&'static str] = &["tcp", "udp", "icmp"];
    const WHAT: &'static str = "a protocol";
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Protocol {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, ValueError> {
        Self::parse(s)
    }
}

/// Which client identity is hashed to pick the bucket, and so the node, of a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Affinity {
    /// The client's address: every connection of a client lands on the same node.
    ClientIp,
    /// The client's address and port: a client's connections spread over the nodes.
    ClientIpPort,
}

impl Keyword for Affinity {
    const ALL: &'static [Affinity] = &[Affinity::ClientIp, Affinity::ClientIpPort];
    const NAMES: &'static [&'static str] = &["client-ip", "client-ip-port"];
    const WHAT: &'static str = "an affinity";
}

impl fmt::Display for Affinity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Affinity {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, ValueError> {
        Self::parse(s)
    }
}

/// A traffic rule, a `[[rule]]` entry: VIP traffic of `protocol` to one of `ports` is balanced
/// by `affinity`. VIP traffic that no rule matches is dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// Protocol the rule applies to.
    pub protocol: Protocol,
    /// Destination ports the rule applies to; `[PortRange::ALL]` when the entry has no `ports`
    /// (always so for ICMP, which has no ports).
    pub ports: Vec<PortRange>,
    /// Client identity that is hashed.
    pub affinity: Affinity,
}

impl Rule {
    /// Whether traffic of `protocol` to destination `port` falls under this rule.
    pub fn matches(&self, protocol: Protocol, port: u16) -> bool {
        self.protocol == protocol && self.ports.iter().any(|range| range.contains(port))
    }
}

/// How the nodes watch each other and hand buckets over, the `[membership]` table. The table
/// and each of its keys are optional.
///
/// Unlike [`Dataplane`], part of [`FarmDigest`]: nodes that disagree on these would disagree on
/// when a node is dead, and so on who owns its buckets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Membership {
    /// Period of the heartbeats every node sends, in milliseconds:
    /// [`Membership::MIN_HEARTBEAT_MS`] to [`Membership::MAX_HEARTBEAT_MS`].
    pub heartbeat_ms: u32,
    /// How long a node may stay silent before the others declare it dead and take its buckets,
    /// in milliseconds: at least [`Membership::DEAD_AFTER_HEARTBEATS`] × `heartbeat_ms`, at most
    /// [`Membership::MAX_DEAD_AFTER_MS`].
    pub dead_after_ms: u32,
    /// How long, in seconds, the old owner of a bucket that moves between two live nodes (when a
    /// node joins, for instance) keeps the bucket's established connections: 0 (none) to
    /// [`Membership::MAX_DRAIN_S`].
    pub drain_s: u32,
    /// Whether a side of a partition that holds no majority of the configured weight stops
    /// accepting traffic, so that two sides never serve the same buckets. Needs at least
    /// [`Membership::QUORUM_MIN_NODES`] nodes.
    pub quorum: bool,
}

impl Membership {
    /// Heartbeat period when `heartbeat_ms` is not given, in a farm of up to 13 nodes (see
    /// [`Membership::default_for`]).
    pub const DEFAULT_HEARTBEAT_MS: u32 = 40;
    /// Shortest heartbeat period: below it, scheduling delays on a busy node are on the scale of
    /// the period itself.
    pub const MIN_HEARTBEAT_MS: u32 = 10;
    /// Longest heartbeat period: above it, detecting a failure would take most of a minute.
    pub const MAX_HEARTBEAT_MS: u32 = 10_000;
    /// Silence after which a node is dead when `dead_after_ms` is not given, in a farm of up
    /// to 13 nodes: four heartbeat periods.
    pub const DEFAULT_DEAD_AFTER_MS: u32 = 160;
    /// The most heartbeats a node receives a second at the default period. Each costs the
    /// node's CPU (a wake-up, the kernel's UDP path, the HMAC): a larger farm gets a longer
    /// default period, so that its membership costs a node under 1 % of a core (0.62 % on
    /// average and 0.84 % at most at 64 nodes in BENCHMARKS.md, `herd-perf membership`).
    pub const DEFAULT_HEARTBEATS_PER_S: u32 = 320;
    /// Fewest heartbeat periods `dead_after_ms` spans, so that one or two lost heartbeats do not
    /// declare a live node dead.
    pub const DEAD_AFTER_HEARTBEATS: u32 = 3;
    /// Longest silence before a node is dead, ten minutes: a dead node's buckets go unserved
    /// until then.
    pub const MAX_DEAD_AFTER_MS: u32 = 600_000;
    /// Drain time when `drain_s` is not given.
    pub const DEFAULT_DRAIN_S: u32 = 30;
    /// Longest drain, an hour: it delays every rebalancing by as much.
    pub const MAX_DRAIN_S: u32 = 3600;
    /// Fewest nodes `quorum` may be set with: with fewer, the loss of one node can leave no
    /// majority anywhere and stop the whole farm.
    pub const QUORUM_MIN_NODES: usize = 3;

    /// The settings of a farm of `nodes` nodes without a `[membership]` table: those of
    /// [`Membership::default`] up to 13 nodes. In a larger farm the heartbeat period is the
    /// shortest multiple of 10 ms at which a node receives at most
    /// [`Membership::DEFAULT_HEARTBEATS_PER_S`] heartbeats a second (200 ms for 64 nodes),
    /// and `dead_after_ms` spans as many periods as at the default.
    pub fn default_for(nodes: usize) -> Membership {
        let peers = u32::try_from(nodes.saturating_sub(1)).unwrap_or(u32::MAX);
        let spread_ms = peers
            .saturating_mul(1000)
            .div_ceil(Membership::DEFAULT_HEARTBEATS_PER_S)
            .div_ceil(10)
            .saturating_mul(10);
        let heartbeat_ms = spread_ms.clamp(
            Membership::DEFAULT_HEARTBEAT_MS,
            Membership::MAX_HEARTBEAT_MS,
        );
        let periods = Membership::DEFAULT_DEAD_AFTER_MS / Membership::DEFAULT_HEARTBEAT_MS;
        Membership {
            heartbeat_ms,
            dead_after_ms: heartbeat_ms * periods,
            ..Membership::default()
        }
    }
}

/// The settings of a farm of up to 13 nodes without a `[membership]` table.
impl Default for Membership {
    fn default() -> Membership {
        Membership {
            heartbeat_ms: Membership::DEFAULT_HEARTBEAT_MS,
            dead_after_ms: Membership::DEFAULT_DEAD_AFTER_MS,
            drain_s: Membership::DEFAULT_DRAIN_S,
            quorum: false,
        }
    }
}

/// How the packet path runs, the `[dataplane]` value of `mode`. The default is the mode that
/// measured faster on herd-perf's mix (the README's performance section has the table).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum DataplaneMode {
    /// AF_XDP sockets served by poll-mode worker threads, one per core of
    /// [`Dataplane::cores`].
    Afxdp,
    /// The whole verdict in the kernel's XDP hook; no worker threads, so
    /// [`Dataplane::cores`], [`Dataplane::zero_copy`] and [`Dataplane::batch`] are not used.
    #[default]
    Xdp,
}

impl Keyword for DataplaneMode {
    const ALL: &'static [DataplaneMode] = &[DataplaneMode::Afxdp, DataplaneMode::Xdp];
    const NAMES: &'static [&'static str] = &["afxdp", "xdp"];
    const WHAT: &'static str = "a dataplane mode";
}

impl fmt::Display for DataplaneMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DataplaneMode {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, ValueError> {
        Self::parse(s)
    }
}

/// The kind of virtual MAC a farm's VIPs resolve to, the `[farm]` value of `mac`.
///
/// Farm-wide: every node must answer with the same MAC, so [`FarmDigest`] covers it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum MacMode {
    /// A locally administered unicast MAC that is never the source of a frame: switches never
    /// learn it and flood the VIP's traffic to every port. Needs switches that flood unknown
    /// unicast.
    #[default]
    Unicast,
    /// An IP multicast MAC whose group every node joins on its interface: snooping switches
    /// forward the VIP's traffic to the ports that joined it. For switches that do not flood
    /// unknown unicast.
    Multicast,
}

impl Keyword for MacMode {
    const ALL: &'static [MacMode] = &[MacMode::Unicast, MacMode::Multicast];
    const NAMES: &'static [&'static str] = &["unicast", "multicast"];
    const WHAT: &'static str = "a virtual MAC mode";
}

impl fmt::Display for MacMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for MacMode {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, ValueError> {
        Self::parse(s)
    }
}

/// Whether AF_XDP sockets use zero-copy, the `[dataplane]` value of `zero_copy`.
///
/// Zero-copy needs support from the NIC's driver; copy mode works with every driver.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ZeroCopy {
    /// Try zero-copy and fall back to copy mode where the driver lacks it.
    #[default]
    Auto,
    /// Require zero-copy: a driver without it is an error rather than a slower node.
    On,
    /// Copy mode only.
    Off,
}

impl Keyword for ZeroCopy {
    const ALL: &'static [ZeroCopy] = &[ZeroCopy::Auto, ZeroCopy::On, ZeroCopy::Off];
    const NAMES: &'static [&'static str] = &["auto", "on", "off"];
    const WHAT: &'static str = "a zero-copy setting";
}

impl fmt::Display for ZeroCopy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ZeroCopy {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, ValueError> {
        Self::parse(s)
    }
}

/// How this node's packet path runs, the `[dataplane]` table. The table and each of its keys
/// are optional.
///
/// A local performance choice: it does not change which packets a node takes, so nodes may set
/// it differently (to suit their hardware) and [`FarmDigest`] leaves it out. Validation checks
/// the values only; whether the cores exist on the machine is checked by `herd run` on the host
/// that runs, as the file is shared by hosts of different sizes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dataplane {
    /// Where the verdict is taken; [`DataplaneMode::Afxdp`] when `mode` is not given.
    pub mode: DataplaneMode,
    /// CPU cores the AF_XDP workers are pinned to: distinct, each from 0 to
    /// [`Dataplane::MAX_CORE`]. There is one worker per RX queue of the interface; that of
    /// queue `i` runs on `cores[i % cores.len()]`, or on core `i` when the list is empty (the
    /// default).
    pub cores: Vec<usize>,
    /// Whether the AF_XDP sockets use zero-copy; [`ZeroCopy::Auto`] when `zero_copy` is not
    /// given.
    pub zero_copy: ZeroCopy,
    /// Packets a worker takes from its ring at once, 1 to [`Dataplane::MAX_BATCH`].
    pub batch: u32,
}

impl Dataplane {
    /// Batch size when `batch` is not given.
    pub const DEFAULT_BATCH: u32 = 64;
    /// Largest batch: it bounds how long a worker spends on one batch before it serves its
    /// rings again, and keeps a batch within the default AF_XDP ring of 2048 descriptors.
    pub const MAX_BATCH: u32 = 1024;
    /// Largest core index: the fixed-size `cpu_set_t` that pins a thread (glibc's
    /// `CPU_SETSIZE`) holds cores 0 to 1023.
    pub const MAX_CORE: usize = 1023;
}

impl Default for Dataplane {
    fn default() -> Dataplane {
        Dataplane {
            mode: DataplaneMode::default(),
            cores: Vec::new(),
            zero_copy: ZeroCopy::default(),
            batch: Dataplane::DEFAULT_BATCH,
        }
    }
}

/// A check of this node's application, a `[[check]]` entry: what is probed, how often, and what
/// the node does when the probe keeps failing.
///
/// A check is healthy or failed: [`Check::fall`] failed probes in a row make it failed,
/// [`Check::rise`] successful ones in a row make it healthy again.
///
/// Local to the node, like [`Scripts`]: [`FarmDigest`] leaves the checks out, so the copies of
/// the file on different nodes may check the application differently.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    /// Names the check in logs: unique among the checks, same charset as node names.
    pub name: String,
    /// What is probed, with the settings of that kind of probe.
    pub kind: CheckKind,
    /// Time from the start of one probe to the start of the next, in milliseconds:
    /// [`Check::MIN_INTERVAL_MS`] to [`Check::MAX_INTERVAL_MS`].
    pub interval_ms: u32,
    /// How long a probe may take before it counts as failed, in milliseconds:
    /// [`Check::MIN_TIMEOUT_MS`] to `interval_ms`, so that a probe ends before the next starts.
    pub timeout_ms: u32,
    /// Failed probes in a row that make a healthy check failed: 1 to [`Check::MAX_FALL`].
    pub fall: u32,
    /// Successful probes in a row that make a failed check healthy again: 1 to
    /// [`Check::MAX_RISE`].
    pub rise: u32,
    /// What the node does when the check becomes failed.
    pub action: CheckAction,
}

impl Check {
    /// Probe period when `interval_ms` is not given.
    pub const DEFAULT_INTERVAL_MS: u32 = 1000;
    /// Shortest probe period: probing more often than ten times a second loads the
    /// application for no faster reaction than the heartbeats'.
    pub const MIN_INTERVAL_MS: u32 = 100;
    /// Longest probe period, an hour.
    pub const MAX_INTERVAL_MS: u32 = 3_600_000;
    /// Probe timeout when `timeout_ms` is not given.
    pub const DEFAULT_TIMEOUT_MS: u32 = 1000;
    /// Shortest probe timeout: below it, scheduling delays alone would fail probes.
    pub const MIN_TIMEOUT_MS: u32 = 10;
    /// Failures in a row that fail a check when `fall` is not given.
    pub const DEFAULT_FALL: u32 = 3;
    /// Largest `fall`.
    pub const MAX_FALL: u32 = 100;
    /// Successes in a row that make a check healthy when `rise` is not given.
    pub const DEFAULT_RISE: u32 = 2;
    /// Largest `rise`.
    pub const MAX_RISE: u32 = 100;
}

/// What a [`Check`] probes, the `kind` of a `[[check]]` entry with the keys of that kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckKind {
    /// `kind = "tcp"`: healthy when a TCP connection to `host`:`port` is accepted within the
    /// timeout.
    Tcp {
        /// Address connected to, such as 127.0.0.1 for the node's own application.
        host: IpAddr,
        /// Port connected to, 1 to 65535.
        port: u16,
    },
    /// `kind = "http"`: healthy when a plain-HTTP `GET` of `url` is answered within the timeout
    /// with a status within `status` and, when `body` is set, a body that contains it.
    Http {
        /// The URL: `http://` then a host, an optional port and an optional path. HTTPS is not
        /// supported.
        url: String,
        /// Statuses that count as healthy, both ends included: from
        /// [`CheckKind::MIN_STATUS`] to [`CheckKind::MAX_STATUS`];
        /// [`CheckKind::DEFAULT_STATUS`] when `status` is not given.
        status: (u16, u16),
        /// Text the body must contain, when set; never empty.
        body: Option<String>,
    },
    /// `kind = "process"`: healthy when the number of running processes that `matcher`
    /// selects is at least `at_least` and, when set, at most `at_most`.
    Process {
        /// Which processes are counted.
        matcher: ProcessMatcher,
        /// Fewest matching processes, 0 to [`CheckKind::MAX_PROCESSES`];
        /// [`CheckKind::DEFAULT_AT_LEAST`] when `at_least` is not given.
        at_least: u32,
        /// Most matching processes, `at_least` to [`CheckKind::MAX_PROCESSES`]; no limit when
        /// `None`. Set, for instance, to 0 with `at_least = 0` to require that a process does
        /// not run.
        at_most: Option<u32>,
    },
    /// `kind = "ping"`: healthy when an ICMP echo request to `address` is answered within the
    /// timeout. It checks the network rather than the application, so it usually goes with
    /// [`CheckAction::Wait`].
    Ping {
        /// Address pinged, such as the gateway.
        address: IpAddr,
    },
    /// `kind = "interface"`: healthy while the interface is up and has its carrier.
    Interface {
        /// The interface; `None` for this node's own ([`FarmConfig::interface_of`]), which
        /// the caller resolves once it knows which node it is.
        interface: Option<String>,
    },
    /// `kind = "address"`: healthy while this node's interface holds the farm's VIPs and the
    /// node's own address. No key of its own.
    Address,
    /// `kind = "command"`: healthy when `run`, run with `sh -c`, exits with status 0 within the
    /// timeout.
    Command {
        /// The shell command line; never empty.
        run: String,
    },
}

impl CheckKind {
    /// Healthy HTTP statuses when `status` is not given: success and redirection.
    pub const DEFAULT_STATUS: (u16, u16) = (200, 399);
    /// Lowest HTTP status.
    pub const MIN_STATUS: u16 = 100;
    /// Highest HTTP status.
    pub const MAX_STATUS: u16 = 599;
    /// Fewest matching processes when `at_least` is not given.
    pub const DEFAULT_AT_LEAST: u32 = 1;
    /// Largest `at_least` and `at_most`.
    pub const MAX_PROCESSES: u32 = 100_000;

    /// The `kind` this is written as in the file: `"tcp"`, `"http"`, ...
    pub fn name(&self) -> &'static str {
        self.kind_name().name()
    }

    /// The kind without its settings.
    pub(crate) fn kind_name(&self) -> KindName {
        match self {
            CheckKind::Tcp { .. } => KindName::Tcp,
            CheckKind::Http { .. } => KindName::Http,
            CheckKind::Process { .. } => KindName::Process,
            CheckKind::Ping { .. } => KindName::Ping,
            CheckKind::Interface { .. } => KindName::Interface,
            CheckKind::Address => KindName::Address,
            CheckKind::Command { .. } => KindName::Command,
        }
    }
}

/// The value of `kind`: a [`CheckKind`] without its settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum KindName {
    Tcp,
    Http,
    Process,
    Ping,
    Interface,
    Address,
    Command,
}

impl Keyword for KindName {
    const ALL: &'static [KindName] = &[
        KindName::Tcp,
        KindName::Http,
        KindName::Process,
        KindName::Ping,
        KindName::Interface,
        KindName::Address,
        KindName::Command,
    ];
    const NAMES: &'static [&'static str] = &[
        "tcp",
        "http",
        "process",
        "ping",
        "interface",
        "address",
        "command",
    ];
    const WHAT: &'static str = "a check kind";
}

/// Which processes a [`CheckKind::Process`] check counts: its `process` or its `command` key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ProcessMatcher {
    /// `process`: the processes of this name, compared exactly with `/proc/PID/comm`; 1 to
    /// [`ProcessMatcher::MAX_NAME_LEN`] bytes, without control characters.
    Name(String),
    /// `command`: the processes whose full command line (`/proc/PID/cmdline`, its arguments
    /// joined by spaces) this regular expression matches, anywhere in it unless anchored. The
    /// source as written, which validation has compiled with the `regex` crate; never empty.
    Command(String),
}

impl ProcessMatcher {
    /// Longest process name, in bytes: the kernel's `TASK_COMM_LEN` less the terminating NUL.
    /// The kernel truncates longer names, so a longer one would never match.
    pub const MAX_NAME_LEN: usize = 15;
}

/// What the node does when a check becomes failed, the `action` of a `[[check]]` entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum CheckAction {
    /// Leave the farm (with a drain), run the stop script then the start script, and rejoin
    /// once every check is healthy; counted against [`Scripts::restart_limit`], past which the
    /// node stops instead.
    #[default]
    Restart,
    /// Leave the farm, run the stop script, and stay out until an operator starts the node.
    Stop,
    /// Leave the farm and rejoin by itself once the check is healthy again, without scripts:
    /// for what is outside the application, such as the network (ping and interface checks).
    Wait,
    /// Only log it; the node stays in the farm.
    Log,
}

impl Keyword for CheckAction {
    const ALL: &'static [CheckAction] = &[
        CheckAction::Restart,
        CheckAction::Stop,
        CheckAction::Wait,
        CheckAction::Log,
    ];
    const NAMES: &'static [&'static str] = &["restart", "stop", "wait", "log"];
    const WHAT: &'static str = "a check action";
}

impl fmt::Display for CheckAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for CheckAction {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, ValueError> {
        Self::parse(s)
    }
}

/// The application's scripts, the `[scripts]` table. The table and each of its keys are
/// optional.
///
/// Local to the node, like the checks: [`FarmDigest`] leaves it out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scripts {
    /// Shell command line, run with `sh -c`, that starts the application before the node
    /// joins; `None` when the application is started by other means. Never empty.
    pub start: Option<String>,
    /// Shell command line, run with `sh -c`, that stops the application after the node has
    /// left; `None` when there is nothing to stop. Never empty.
    pub stop: Option<String>,
    /// How long a script may run before it counts as failed, in seconds: 1 to
    /// [`Scripts::MAX_TIMEOUT_S`].
    pub timeout_s: u32,
    /// How many restarts the checks may cause before the node gives up.
    pub restart_limit: RestartLimit,
}

impl Scripts {
    /// Script timeout when `timeout_s` is not given.
    pub const DEFAULT_TIMEOUT_S: u32 = 60;
    /// Longest script timeout, an hour.
    pub const MAX_TIMEOUT_S: u32 = 3600;
}

impl Default for Scripts {
    fn default() -> Scripts {
        Scripts {
            start: None,
            stop: None,
            timeout_s: Scripts::DEFAULT_TIMEOUT_S,
            restart_limit: RestartLimit::default(),
        }
    }
}

/// At most `count` restarts within `within_s` seconds, the `restart_limit` of `[scripts]`: a
/// restart beyond it stops the node instead, rather than restart a broken application forever.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RestartLimit {
    /// Restarts allowed in the window: 0 (a restart always stops the node) to
    /// [`RestartLimit::MAX_COUNT`].
    pub count: u32,
    /// Length of the sliding window, in seconds: 1 to [`RestartLimit::MAX_WITHIN_S`].
    pub within_s: u32,
}

impl RestartLimit {
    /// Restarts allowed when `count` is not given.
    pub const DEFAULT_COUNT: u32 = 3;
    /// Largest `count`.
    pub const MAX_COUNT: u32 = 1000;
    /// Window when `within_s` is not given: a day.
    pub const DEFAULT_WITHIN_S: u32 = 86_400;
    /// Longest window: a year of 365 days.
    pub const MAX_WITHIN_S: u32 = 31_536_000;
}

impl Default for RestartLimit {
    fn default() -> RestartLimit {
        RestartLimit {
            count: RestartLimit::DEFAULT_COUNT,
            within_s: RestartLimit::DEFAULT_WITHIN_S,
        }
    }
}

/// How this node is watched from outside, the `[admin]` table. The table and its key are
/// optional.
///
/// Local to the node, like the checks: [`FarmDigest`] leaves it out. Each node serves its own
/// metrics, often on an address of its own (a loopback or management address), and a node
/// watched differently takes the same packets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Admin {
    /// Where the node answers `GET /metrics` (Prometheus text format) and `GET /healthz` (200
    /// while it serves its share, 503 otherwise) over plain HTTP, the value of `metrics`: an IP
    /// address, which may be unspecified (`0.0.0.0`, `::`) to listen on every address, and a
    /// port from 1 to 65535. `None`, when `metrics` is not given, for no such server.
    pub metrics: Option<SocketAddr>,
    /// The farm's web console, `console` and `console_secret_file`; `None`, when `console` is
    /// not given, for no console.
    pub console: Option<Console>,
}

/// Where the node serves the farm's web console over plain HTTP, and the file of the secret
/// that logs in to it: the values of `console` and `console_secret_file` of `[admin]`.
///
/// The secret file is only a path here: `herd run` reads it, and refuses to serve the console
/// without it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Console {
    /// An IP address, which may be unspecified (`0.0.0.0`, `::`) to listen on every address,
    /// and a port from 1 to 65535.
    pub address: SocketAddr,
    /// The file of the console's secret.
    pub secret_file: PathBuf,
}

impl FarmConfig {
    /// Where the configuration is installed unless told otherwise.
    pub const DEFAULT_PATH: &'static str = "/etc/herd/farm.toml";
    /// Most nodes a farm may have.
    pub const MAX_NODES: usize = 64;
    /// Most `[[check]]` entries a file may have.
    pub const MAX_CHECKS: usize = 64;
    /// Largest file [`FarmConfig::load`] reads, in bytes: far above any real farm, it keeps a
    /// wrong path (a log, a device) from being read into memory whole.
    pub const MAX_FILE_SIZE: u64 = 1024 * 1024;

    /// Reads and validates the configuration file at `path`, of at most
    /// [`FarmConfig::MAX_FILE_SIZE`] bytes.
    pub fn load(path: &Path) -> Result<FarmConfig, ConfigError> {
        let unreadable = |e: std::io::Error| ConfigError::unreadable(path, &e);
        let file = File::open(path).map_err(unreadable)?;
        let mut bytes = Vec::new();
        // One byte more than allowed tells a file at the limit from a larger one, without
        // reading an endless one such as /dev/zero.
        file.take(FarmConfig::MAX_FILE_SIZE + 1)
            .read_to_end(&mut bytes)
            .map_err(unreadable)?;
        if bytes.len() as u64 > FarmConfig::MAX_FILE_SIZE {
            return Err(ConfigError::too_large(path, FarmConfig::MAX_FILE_SIZE));
        }
        match String::from_utf8(bytes) {
            Ok(text) => FarmConfig::parse(&text, path),
            Err(e) => Err(ConfigError::not_utf8(path, e.as_bytes(), e.utf8_error())),
        }
    }

    /// Validates the configuration `text`; `file` is only used in error messages.
    pub fn parse(text: &str, file: &Path) -> Result<FarmConfig, ConfigError> {
        let source = Source { file, text };
        // Parsing to a spanned tree first, rather than straight to structs, keeps a map from
        // byte offsets to keys: toml's errors carry a span but no key path.
        let (tree, syntax_errors) = DeTable::parse_recoverable(text);
        if let Some(error) = syntax_errors.first() {
            return Err(error::from_toml(&source, tree.get_ref(), error));
        }
        raw::check_tables(tree.get_ref(), &source)?;
        let raw = raw::RawConfig::deserialize(Deserializer::from(tree.clone()))
            .map_err(|error| error::from_toml(&source, tree.get_ref(), &error))?;
        validate::validate(raw, &source)
    }

    /// Fingerprint of everything that must be identical on every node; see [`FarmDigest`].
    pub fn digest(&self) -> FarmDigest {
        digest::digest(self)
    }

    /// Index of the node called `name`.
    pub fn node_index(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|node| node.name == name)
    }

    /// Interface of node `node`: its own, else the farm default.
    ///
    /// Validation guarantees one of the two exists; a hand-built config without either yields
    /// `""`. Panics if `node` is not an index of [`FarmConfig::nodes`].
    pub fn interface_of(&self, node: usize) -> &str {
        self.nodes[node]
            .interface
            .as_deref()
            .or(self.farm.interface.as_deref())
            .unwrap_or_default()
    }

    /// The first rule matching traffic of `protocol` to destination `port`, if any.
    pub fn rule_for(&self, protocol: Protocol, port: u16) -> Option<&Rule> {
        self.rules.iter().find(|rule| rule.matches(protocol, port))
    }

    /// Which node this host is: the node called `name` when one is given, else the only node
    /// whose address is among `local_addrs` (this host's addresses).
    pub fn identify(
        &self,
        name: Option<&str>,
        local_addrs: &[IpAddr],
    ) -> Result<usize, IdentifyError> {
        if let Some(name) = name {
            return self
                .node_index(name)
                .ok_or_else(|| IdentifyError::UnknownName {
                    name: name.to_owned(),
                    known: self.nodes.iter().map(|node| node.name.clone()).collect(),
                });
        }
        let local: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| local_addrs.contains(&self.nodes[i].address))
            .collect();
        match local.as_slice() {
            [] => Err(IdentifyError::NoLocalMatch {
                addresses: local_addrs.to_vec(),
            }),
            [only] => Ok(*only),
            several => Err(IdentifyError::Ambiguous {
                names: several
                    .iter()
                    .map(|&i| self.nodes[i].name.clone())
                    .collect(),
            }),
        }
    }
}
