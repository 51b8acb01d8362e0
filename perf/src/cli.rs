//! The command line: the dataplane comparison (the default, or `herd-perf dataplane`),
//! `herd-perf syn-flood`, `herd-perf failover`, `herd-perf console` and
//! `herd-perf membership`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use clap::{Parser, Subcommand, ValueEnum};

use herd_config::Membership;

use crate::bench::Settings;
use crate::contender::Kind;
use crate::handoff::Handoff;
use crate::mix::{MixSpec, MAX_SIZE, MIN_SIZE};
use herd_membership::wire::MAX_MEMBERS;

/// herd's benchmarks. Without a subcommand, the dataplane comparison (`dataplane`). Needs root.
#[derive(Debug, Parser)]
#[command(name = "herd-perf", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// The benchmark; `dataplane` when not given.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// The dataplane comparison's options, when no subcommand is given.
    #[command(flatten)]
    pub dataplane: Args,
}

/// herd-perf's benchmarks.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// herd's two dataplane modes against a bare XDP_DROP program and an nftables `jhash`
    /// rule, on the same generated traffic (what herd-perf runs without a subcommand).
    Dataplane(Args),
    /// herd's two dataplane modes under a flood of TCP SYNs from spoofed clients with random
    /// source ports: the SYNs received, the SYNs of owned buckets absorbed (accepted and handed
    /// to the stack, whose listeners answer them), what the stack did with them, and the CPU
    /// per SYN on the receiver's core; once with every SYN owned, once with a share owned.
    SynFlood(SynFloodArgs),
    /// A 3-node farm of `herd run` processes in network namespaces, with the membership
    /// settings given (the defaults unless told): the failover time after `kill -9` of a
    /// node's herd and after its link is cut (p50/p99/max over --runs runs of each, each on a
    /// fresh farm, the victim rotating over the nodes), the connections broken by a planned
    /// leave (SIGTERM) and by a join, and false positives for --quiet-minutes while stress-ng
    /// saturates every core and while a SYN flood keeps the dataplane busy; as the reference,
    /// keepalived's VRRPv3 failover after its master's link is cut, 2 nodes on the same kind of
    /// bed, at each --keepalived-advert-ms. Prints a markdown section with the goals.
    Failover(FailoverArgs),
    /// The AF_XDP mode's ways back to the stack on their own: one thread writes owned UDP
    /// frames to the VIP in batches of 64 through each way in turn (TAP device or veth pair,
    /// written frame by frame, with io_uring or with sendmmsg), a socket on the VIP counts what
    /// the stack delivers; the ways take turns within each of --runs rounds.
    Handoff(HandoffArgs),
    /// A 3-node farm of `herd run` processes in network namespaces, every node serving its
    /// metrics and the first the web console: the CPU time of the console's node and of
    /// another with no page open, one, five, and with `/metrics` scraped every second; then
    /// the time a page takes to show a node drained with its button (min/median/max over
    /// --runs). Prints a markdown section.
    Console(ConsoleArgs),
    /// Farms of 3, 16 and 64 real membership threads (herd's driver, over a dataplane that
    /// does nothing) in one process, each node on its own address in one network namespace,
    /// each farm at its configuration's heartbeat settings (its size's default unless
    /// --heartbeat-ms or --dead-after-ms set a key): the heartbeats and datagrams per node per second, their size, each membership
    /// thread's CPU time as a share of a core, and whether the farm stayed stable, over
    /// --seconds once it has settled. Prints a markdown section.
    Membership(MembershipArgs),
}

impl Cli {
    /// The dataplane comparison's options, if that is the benchmark asked for.
    pub fn dataplane_args(&self) -> Option<&Args> {
        match &self.command {
            None => Some(&self.dataplane),
            Some(Command::Dataplane(args)) => Some(args),
            Some(
                Command::Failover(_)
                | Command::SynFlood(_)
                | Command::Handoff(_)
                | Command::Console(_)
                | Command::Membership(_),
            ) => None,
        }
    }
}

/// A dataplane mode of the failover farm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FarmMode {
    /// The whole verdict in the kernel's XDP hook.
    Xdp,
    /// AF_XDP sockets served by herd's worker threads.
    Afxdp,
}

impl FarmMode {
    /// The mode's name in the configuration file.
    pub fn name(self) -> &'static str {
        match self {
            FarmMode::Xdp => "xdp",
            FarmMode::Afxdp => "afxdp",
        }
    }

    /// The mode, as the configuration holds it.
    pub fn dataplane(self) -> herd_config::DataplaneMode {
        match self {
            FarmMode::Xdp => herd_config::DataplaneMode::Xdp,
            FarmMode::Afxdp => herd_config::DataplaneMode::Afxdp,
        }
    }
}

/// How the victim of a failover run fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Failure {
    /// `kill -9` of its herd: its pinned XDP program and its servers stay.
    Kill,
    /// Its link to the bridge cut: the bridge's port goes down, the node loses its carrier.
    Link,
}

impl Failure {
    /// Every kind, in the order they are run.
    pub const ALL: [Failure; 2] = [Failure::Kill, Failure::Link];

    /// The kind's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Failure::Kill => "kill",
            Failure::Link => "link",
        }
    }
}

/// What keeps the farm busy in a false-positive run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum QuietLoad {
    /// stress-ng saturating every core.
    Cpu,
    /// A flood of TCP SYNs to the VIP from spoofed sources: the dataplane busy.
    Packets,
}

impl QuietLoad {
    /// Every kind, in the order they are run.
    pub const ALL: [QuietLoad; 2] = [QuietLoad::Cpu, QuietLoad::Packets];

    /// The kind's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            QuietLoad::Cpu => "cpu",
            QuietLoad::Packets => "packets",
        }
    }
}

/// The console measurement's options.
#[derive(Debug, clap::Args)]
pub struct ConsoleArgs {
    /// Each CPU phase's length, in seconds.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..=3600))]
    pub phase_seconds: u32,

    /// Drains timed for the page's update latency.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub runs: u32,

    /// Leaves out the phase with `/metrics` scraped every second.
    #[arg(long)]
    pub skip_scrapes: bool,

    /// The herd executable; by default the `herd` beside herd-perf.
    #[arg(long)]
    pub herd: Option<PathBuf>,
}

/// The membership cost's options.
#[derive(Debug, clap::Args)]
pub struct MembershipArgs {
    /// Farm sizes to measure, comma-separated, each from 2 to 64 nodes (the most a farm has).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "3,16,64",
        value_parser = clap::value_parser!(u16).range(2..=MAX_MEMBERS as i64),
    )]
    pub nodes: Vec<u16>,

    /// The heartbeat period, in ms, as `[membership] heartbeat_ms`; when not given, the
    /// default of a farm of each size (`herd_config::Membership::default_for`).
    #[arg(long)]
    pub heartbeat_ms: Option<u32>,

    /// The silence after which a node is dead, in ms, as `[membership] dead_after_ms`; when
    /// not given, the default of a farm of each size.
    #[arg(long)]
    pub dead_after_ms: Option<u32>,

    /// Seconds each farm is measured for, once it has settled.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=600))]
    pub seconds: u32,
}

/// The hand-off comparison's options.
#[derive(Debug, clap::Args)]
pub struct HandoffArgs {
    /// Rounds, each measuring every way once.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub runs: u32,

    /// Ways to measure, comma-separated; all when not given.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub only: Vec<Handoff>,

    /// The core the writing thread is pinned to.
    #[arg(long, default_value_t = 1)]
    pub writer_core: usize,

    /// The core the reading socket's thread is pinned to; must differ from the writer's.
    #[arg(long, default_value_t = 0)]
    pub reader_core: usize,

    /// Prints the results as JSON instead of markdown.
    #[arg(long)]
    pub json: bool,
}

impl HandoffArgs {
    /// The ways to measure, once the cores are checked against this machine.
    pub fn ways(&self) -> anyhow::Result<Vec<Handoff>> {
        check_two_cores(
            ("--reader-core", self.reader_core),
            ("--writer-core", self.writer_core),
        )?;
        Ok(Handoff::ALL
            .into_iter()
            .filter(|way| self.only.is_empty() || self.only.contains(way))
            .collect())
    }
}

/// The failover scenario's options.
#[derive(Debug, clap::Args)]
pub struct FailoverArgs {
    /// The farm's dataplane mode.
    #[arg(long, value_enum, default_value_t = FarmMode::Xdp)]
    pub mode: FarmMode,

    /// Failover runs of each kind of failure, each on a fresh farm.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub runs: u32,

    /// Leaves out the failover runs (to run only the false-positive runs, say).
    #[arg(long)]
    pub skip_kills: bool,

    /// How the victims fail, comma-separated or repeated: `kill` (kill -9 of the herd), `link`
    /// (its link to the bridge cut).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = Failure::ALL)]
    pub failure: Vec<Failure>,

    /// The membership's heartbeat period, in ms, written into the farm's `[membership]` table.
    #[arg(long, default_value_t = Membership::DEFAULT_HEARTBEAT_MS)]
    pub heartbeat_ms: u32,

    /// The silence after which a node is dead, in ms, written into the farm's `[membership]`
    /// table.
    #[arg(long, default_value_t = Membership::DEFAULT_DEAD_AFTER_MS)]
    pub dead_after_ms: u32,

    /// The goal for the failover time's p99, in ms: the issue's 250 at the default timing, 100
    /// at the tuned one.
    #[arg(long, default_value_t = 250, value_parser = clap::value_parser!(u32).range(1..=60_000))]
    pub goal_p99_ms: u32,

    /// Minutes each false-positive run lasts.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=600))]
    pub quiet_minutes: u32,

    /// What keeps the farm busy in the false-positive runs, comma-separated or repeated: `cpu`
    /// (stress-ng on every core), `packets` (a SYN flood to the VIP from spoofed sources).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = QuietLoad::ALL)]
    pub quiet_load: Vec<QuietLoad>,

    /// The SYN flood's rate in the `packets` false-positive run, in SYNs a second; as fast as
    /// the client can write when not given.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub flood_rate: Option<u64>,

    /// The herd executable; by default the `herd` next to herd-perf's own.
    #[arg(long)]
    pub herd: Option<PathBuf>,

    /// Leaves out the false-positive run.
    #[arg(long)]
    pub skip_false_positives: bool,

    /// Leaves out the planned leave and the join.
    #[arg(long)]
    pub skip_leave_join: bool,

    /// Runs of the application's failure (SIGKILL of the application a `tcp` or `http` check
    /// watches) per check at the recommended check settings; half as many at the defaults.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub app_runs: u32,

    /// Leaves out the application's failure.
    #[arg(long)]
    pub skip_app: bool,

    /// Also writes the markdown section to FILE.
    #[arg(long, value_name = "FILE")]
    pub markdown: Option<PathBuf>,

    /// The farm's buckets (a power of two, 64 to 65536); the failover load has a UDP flow and
    /// a stream of TCP connections in each of the victim's.
    #[arg(long, default_value_t = 256)]
    pub buckets: u32,

    /// How often each UDP flow of the failover load sends a request, in ms: the resolution of
    /// the UDP failover time.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub udp_interval_ms: u64,

    /// How often a TCP connection is opened in each of the victim's buckets, in ms.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub tcp_interval_ms: u64,

    /// keepalived's advert intervals for the reference rows, in ms, comma-separated: multiples
    /// of 10 (VRRPv3 counts centiseconds) up to 2000.
    #[arg(long, value_delimiter = ',', default_values_t = [1000, 100])]
    pub keepalived_advert_ms: Vec<u32>,

    /// Reference runs (the keepalived master's link cut) per advert interval; by default
    /// --runs.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub keepalived_runs: Option<u32>,

    /// Leaves out keepalived's reference rows.
    #[arg(long)]
    pub skip_keepalived: bool,

    /// Copies every herd's log into DIR (`FAILURE-N-NODE-K.log`, `quiet-LOAD-NODE-K.log`,
    /// `leave-join-NODE-K.log`), and keeps keepalived's there
    /// (`vrrp-ADVERTms-run-N-NODE.log`).
    #[arg(long, value_name = "DIR")]
    pub keep_logs: Option<PathBuf>,
}

/// Measures herd's two dataplane modes against a bare XDP_DROP program and an nftables
/// `jhash` rule, side by side on the same generated traffic, on a veth pair between two
/// network namespaces that it builds and removes. Needs root.
///
/// Each contender filters the receiver's veth as node 0 of a 3-node farm. A generator (the
/// kernel's BPF_PROG_RUN in live-frames mode) sends UDP to the farm's VIPs from the sender's
/// namespace. herd (xdp, afxdp) and the nftables rule are each measured twice: on the mix,
/// where node 0 owns `--owned-share` of the packets, and on the drop path, where it owns none.
/// The afxdp mode is also measured on the mix with a veth pair instead of its TAP device as
/// the way back to the stack. Prints a markdown table (or JSON), the eBPF program's cost per
/// packet, and the goals.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Seconds each row is measured for, after a 0.5 s warm-up (0.1 to 600).
    #[arg(long, default_value_t = 3.0, value_parser = seconds)]
    pub seconds: f64,

    /// Distinct clients (source address and port) the generator sends from, IPv4 and IPv6
    /// together; every client sends as often as the others of its family.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub flows: u32,

    /// Share of the packets that are IPv6, 0 to 1.
    #[arg(long, default_value = "0.25", value_parser = share)]
    pub ipv6_share: f64,

    /// Frame sizes in bytes, from the Ethernet header to the end of the payload, 60 to 1514;
    /// a comma-separated list is sent in equal shares. IPv6 frames are at least 70 bytes
    /// (headers and the 8-byte send time). The generator switches between sizes and families
    /// every 2^20 packets (about a quarter of a second), so a mix of several needs windows
    /// (--seconds) of several seconds to hold its shares.
    #[arg(
        long = "size",
        default_value = "64",
        value_delimiter = ',',
        value_parser = clap::value_parser!(u16).range(i64::from(MIN_SIZE)..=i64::from(MAX_SIZE)),
    )]
    pub sizes: Vec<u16>,

    /// Share of the mix's packets whose client this node (node 0 of 3) owns, 0 to 1 or a
    /// fraction such as 1/3 (a 3-node farm's share).
    #[arg(long, default_value = "1/3", value_parser = share)]
    pub owned_share: f64,

    /// Prints the results as JSON instead of markdown.
    #[arg(long)]
    pub json: bool,

    /// Contenders to measure, comma-separated; all when not given.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub only: Vec<Kind>,

    /// The core the generator is pinned to.
    #[arg(long, default_value_t = 0)]
    pub generator_core: usize,

    /// The core the receiver's veth NAPI thread and the latency sockets' readers are pinned
    /// to; must differ from the generator's.
    #[arg(long, default_value_t = 1)]
    pub receiver_core: usize,
}

impl Args {
    /// The settings of the run, once the cores are checked against this machine.
    pub fn settings(&self) -> anyhow::Result<Settings> {
        check_cores(self.generator_core, self.receiver_core)?;
        Ok(Settings {
            window: Duration::from_secs_f64(self.seconds),
            spec: MixSpec {
                flows: self.flows,
                ipv6_share: self.ipv6_share,
                sizes: self.sizes.clone(),
                owned_share: self.owned_share,
            },
            contenders: Kind::ALL
                .into_iter()
                .filter(|kind| self.only.is_empty() || self.only.contains(kind))
                .collect(),
            generator_core: self.generator_core,
            receiver_core: self.receiver_core,
        })
    }
}

/// The SYN flood's options.
#[derive(Debug, clap::Args)]
pub struct SynFloodArgs {
    /// Seconds each row is measured for, after a 0.5 s warm-up (0.1 to 600).
    #[arg(long, default_value_t = 3.0, value_parser = seconds)]
    pub seconds: f64,

    /// Spoofed client addresses the SYNs come from, IPv4 and IPv6 together; each SYN has a
    /// random source port, so every SYN opens a connection of its own.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub flows: u32,

    /// Share of the SYNs that are IPv6, 0 to 1.
    #[arg(long, default_value = "0.25", value_parser = share)]
    pub ipv6_share: f64,

    /// Share of the mixed flood's SYNs whose client this node (node 0 of 3) owns, 0 to 1 or a
    /// fraction such as 1/3; the other flood is all owned.
    #[arg(long, default_value = "1/3", value_parser = share)]
    pub owned_share: f64,

    /// Prints the results as JSON instead of markdown.
    #[arg(long)]
    pub json: bool,

    /// herd's modes to measure, comma-separated (xdp, afxdp); both when not given.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub only: Vec<Kind>,

    /// The core the generator is pinned to.
    #[arg(long, default_value_t = 0)]
    pub generator_core: usize,

    /// The core the receiver's veth NAPI thread and herd's AF_XDP worker are pinned to; must
    /// differ from the generator's.
    #[arg(long, default_value_t = 1)]
    pub receiver_core: usize,
}

/// herd's modes, the contenders of the SYN flood.
const SYN_FLOOD_CONTENDERS: [Kind; 2] = [Kind::Xdp, Kind::Afxdp];

impl SynFloodArgs {
    /// The settings of the run, once the cores and contenders are checked.
    pub fn settings(&self) -> anyhow::Result<Settings> {
        if let Some(other) = self
            .only
            .iter()
            .find(|kind| !SYN_FLOOD_CONTENDERS.contains(kind))
        {
            bail!(
                "--only {}: the SYN flood measures herd's modes only (xdp, afxdp)",
                other
                    .to_possible_value()
                    .map_or("?".into(), |v| v.get_name().to_owned())
            );
        }
        check_cores(self.generator_core, self.receiver_core)?;
        Ok(Settings {
            window: Duration::from_secs_f64(self.seconds),
            spec: MixSpec {
                flows: self.flows,
                ipv6_share: self.ipv6_share,
                sizes: Vec::new(),
                owned_share: self.owned_share,
            },
            contenders: SYN_FLOOD_CONTENDERS
                .into_iter()
                .filter(|kind| self.only.is_empty() || self.only.contains(kind))
                .collect(),
            generator_core: self.generator_core,
            receiver_core: self.receiver_core,
        })
    }
}

/// Fails unless both cores are this process's to run on, and differ.
fn check_cores(generator_core: usize, receiver_core: usize) -> anyhow::Result<()> {
    check_two_cores(
        ("--generator-core", generator_core),
        ("--receiver-core", receiver_core),
    )
}

/// Fails unless both cores, each named by its option, are this process's to run on, and
/// differ: the second's cost is only seen on a core of its own.
fn check_two_cores(first: (&str, usize), second: (&str, usize)) -> anyhow::Result<()> {
    let cores: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|core| core.id)
        .collect();
    for (what, core) in [first, second] {
        if !cores.contains(&core) {
            bail!("{what} {core}: this process may run on cores {cores:?} only");
        }
    }
    if first.1 == second.1 {
        bail!(
            "{} and {} are both {}: the {} cost is only seen on a core of its own",
            first.0,
            second.0,
            first.1,
            second.0.trim_start_matches("--").trim_end_matches("-core")
        );
    }
    Ok(())
}

/// A share: a number from 0 to 1, or a fraction `a/b`.
fn share(text: &str) -> Result<f64, String> {
    let value = match text.split_once('/') {
        Some((a, b)) => {
            let a: f64 = a
                .trim()
                .parse()
                .map_err(|_| format!("`{a}` is not a number"))?;
            let b: f64 = b
                .trim()
                .parse()
                .map_err(|_| format!("`{b}` is not a number"))?;
            a / b
        }
        None => text
            .trim()
            .parse()
            .map_err(|_| format!("`{text}` is not a number"))?,
    };
    if (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(format!("{text} is not a share from 0 to 1"))
    }
}

fn seconds(text: &str) -> Result<f64, String> {
    let value: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a number of seconds"))?;
    if (0.1..=600.0).contains(&value) {
        Ok(value)
    } else {
        Err(format!("{text} is not from 0.1 to 600 seconds"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn shares_are_numbers_or_fractions_from_0_to_1() {
        assert_eq!(share("0.25"), Ok(0.25));
        assert_eq!(share("1/4"), Ok(0.25));
        assert_eq!(share("1"), Ok(1.0));
        assert!(share("1.5").is_err());
        assert!(share("1/0").is_err());
        assert!(share("0/0").is_err());
        assert!(share("-0.1").is_err());
        assert!(share("a/3").is_err());
        assert!(share("").is_err());
    }

    /// The dataplane options of a command line.
    fn dataplane(line: &[&str]) -> Result<Args, clap::Error> {
        let cli = Cli::try_parse_from(line)?;
        match cli.command {
            None => Ok(cli.dataplane),
            Some(Command::Dataplane(args)) => Ok(args),
            Some(_) => panic!("not a dataplane command line"),
        }
    }

    #[test]
    fn defaults_give_a_short_run_of_everything() {
        Cli::command().debug_assert();
        let args = dataplane(&["herd-perf"]).unwrap();
        assert_eq!(args.seconds, 3.0);
        assert_eq!(args.sizes, [64]);
        assert!((args.owned_share - 1.0 / 3.0).abs() < 1e-12);
        assert!(args.only.is_empty());
    }

    #[test]
    fn lists_and_bounds_are_checked() {
        let args =
            dataplane(&["herd-perf", "--size", "64,1514", "--only", "xdp,baseline"]).unwrap();
        assert_eq!(args.sizes, [64, 1514]);
        assert_eq!(args.only, [Kind::Xdp, Kind::Baseline]);
        assert!(dataplane(&["herd-perf", "--size", "59"]).is_err());
        assert!(dataplane(&["herd-perf", "--flows", "0"]).is_err());
        assert!(dataplane(&["herd-perf", "--only", "dpdk"]).is_err());
        assert!(dataplane(&["herd-perf", "--seconds", "0"]).is_err());
        assert!(dataplane(&["herd-perf", "--seconds", "nan"]).is_err());
    }

    #[test]
    fn the_dataplane_comparison_is_also_a_subcommand() {
        let args = dataplane(&["herd-perf", "dataplane", "--seconds", "5"]).unwrap();
        assert_eq!(args.seconds, 5.0);
        assert!(Cli::try_parse_from(["herd-perf", "--seconds", "5", "failover"]).is_err());
    }

    /// The SYN flood's options of a command line.
    fn syn_flood(line: &[&str]) -> Result<SynFloodArgs, clap::Error> {
        match Cli::try_parse_from(line)?.command {
            Some(Command::SynFlood(args)) => Ok(args),
            _ => panic!("not a syn-flood command line"),
        }
    }

    #[test]
    fn the_syn_flood_measures_herds_modes_only() {
        let args = syn_flood(&["herd-perf", "syn-flood"]).unwrap();
        assert_eq!((args.seconds, args.flows), (3.0, 1024));
        assert!((args.owned_share - 1.0 / 3.0).abs() < 1e-12);
        let cli = Cli::try_parse_from(["herd-perf", "syn-flood"]).unwrap();
        assert!(cli.dataplane_args().is_none());
        let args = syn_flood(&["herd-perf", "syn-flood", "--only", "afxdp"]).unwrap();
        assert_eq!(args.only, [Kind::Afxdp]);
        let args = syn_flood(&["herd-perf", "syn-flood", "--only", "nftables"]).unwrap();
        let error = args.settings().unwrap_err().to_string();
        assert!(error.contains("--only nftables"), "{error}");
        assert!(syn_flood(&["herd-perf", "syn-flood", "--size", "64"]).is_err());
        assert!(syn_flood(&["herd-perf", "syn-flood", "--owned-share", "2"]).is_err());
    }

    #[test]
    fn failover_defaults_follow_the_issue() {
        let cli = Cli::try_parse_from(["herd-perf", "failover"]).unwrap();
        let Some(Command::Failover(args)) = cli.command else {
            panic!("a failover command line");
        };
        assert_eq!(args.mode, FarmMode::Xdp);
        assert_eq!(args.runs, 20);
        assert_eq!(args.quiet_minutes, 10);
        assert!(!args.skip_false_positives);
        assert_eq!(args.app_runs, 10);
        assert!(!args.skip_app);
        let cli = Cli::try_parse_from([
            "herd-perf",
            "failover",
            "--mode",
            "afxdp",
            "--runs",
            "3",
            "--quiet-minutes",
            "1",
            "--skip-false-positives",
            "--markdown",
            "out.md",
        ])
        .unwrap();
        let Some(Command::Failover(args)) = cli.command else {
            panic!("a failover command line");
        };
        assert_eq!(
            (args.mode, args.runs, args.quiet_minutes),
            (FarmMode::Afxdp, 3, 1)
        );
        assert!(args.skip_false_positives);
        let cli = Cli::try_parse_from(["herd-perf", "failover", "--app-runs", "4", "--skip-app"]);
        let Some(Command::Failover(args)) = cli.unwrap().command else {
            panic!("a failover command line");
        };
        assert_eq!((args.app_runs, args.skip_app), (4, true));
        assert!(Cli::try_parse_from(["herd-perf", "failover", "--app-runs", "0"]).is_err());
        assert!(Cli::try_parse_from(["herd-perf", "failover", "--runs", "0"]).is_err());
        assert!(Cli::try_parse_from(["herd-perf", "failover", "--mode", "dpdk"]).is_err());
    }

    /// The failover scenario's options of a command line.
    fn failover(line: &[&str]) -> Result<FailoverArgs, clap::Error> {
        match Cli::try_parse_from(line)?.command {
            Some(Command::Failover(args)) => Ok(args),
            _ => panic!("not a failover command line"),
        }
    }

    #[test]
    fn failover_runs_every_failure_and_load_at_the_default_membership() {
        let args = failover(&["herd-perf", "failover"]).unwrap();
        assert_eq!(args.failure, Failure::ALL);
        assert_eq!(args.quiet_load, QuietLoad::ALL);
        assert_eq!(
            (args.heartbeat_ms, args.dead_after_ms),
            (
                Membership::DEFAULT_HEARTBEAT_MS,
                Membership::DEFAULT_DEAD_AFTER_MS
            )
        );
        assert!(!args.skip_kills);
        assert_eq!(args.flood_rate, None);
        assert_eq!(args.goal_p99_ms, 250);
    }

    #[test]
    fn failover_takes_the_membership_failures_and_loads_it_is_given() {
        let args = failover(&[
            "herd-perf",
            "failover",
            "--heartbeat-ms",
            "20",
            "--dead-after-ms",
            "80",
            "--failure",
            "link",
            "--quiet-load",
            "packets",
            "--flood-rate",
            "100000",
            "--skip-kills",
            "--goal-p99-ms",
            "100",
        ])
        .unwrap();
        assert_eq!(args.goal_p99_ms, 100);
        assert_eq!((args.heartbeat_ms, args.dead_after_ms), (20, 80));
        assert_eq!(args.failure, [Failure::Link]);
        assert_eq!(args.quiet_load, [QuietLoad::Packets]);
        assert_eq!(args.flood_rate, Some(100_000));
        assert!(args.skip_kills);
        let args = failover(&["herd-perf", "failover", "--failure", "link,kill"]).unwrap();
        assert_eq!(args.failure, [Failure::Link, Failure::Kill]);
        let line = [
            "herd-perf",
            "failover",
            "--quiet-load",
            "cpu",
            "--quiet-load",
            "packets",
        ];
        assert_eq!(failover(&line).unwrap().quiet_load, QuietLoad::ALL);
        assert!(failover(&["herd-perf", "failover", "--failure", "reboot"]).is_err());
        assert!(failover(&["herd-perf", "failover", "--quiet-load", "disk"]).is_err());
        assert!(failover(&["herd-perf", "failover", "--heartbeat-ms", "-1"]).is_err());
        assert!(failover(&["herd-perf", "failover", "--flood-rate", "0"]).is_err());
        assert!(failover(&["herd-perf", "failover", "--goal-p99-ms", "0"]).is_err());
    }

    #[test]
    fn the_console_measurement_has_bounded_phases() {
        let cli = Cli::try_parse_from(["herd-perf", "console"]).unwrap();
        assert!(cli.dataplane_args().is_none());
        let Some(Command::Console(args)) = cli.command else {
            panic!("a console command line");
        };
        assert_eq!((args.phase_seconds, args.runs), (60, 10));
        assert!(!args.skip_scrapes);
        let line = [
            "herd-perf",
            "console",
            "--phase-seconds",
            "5",
            "--runs",
            "3",
        ];
        let Some(Command::Console(args)) = Cli::try_parse_from(line).unwrap().command else {
            panic!("a console command line");
        };
        assert_eq!((args.phase_seconds, args.runs), (5, 3));
        assert!(Cli::try_parse_from(["herd-perf", "console", "--phase-seconds", "0"]).is_err());
        assert!(Cli::try_parse_from(["herd-perf", "console", "--runs", "0"]).is_err());
    }

    /// The membership cost's options of a command line.
    fn membership(line: &[&str]) -> Result<MembershipArgs, clap::Error> {
        match Cli::try_parse_from(line)?.command {
            Some(Command::Membership(args)) => Ok(args),
            _ => panic!("not a membership command line"),
        }
    }

    #[test]
    fn the_membership_cost_leaves_the_settings_to_each_farms_configuration() {
        let args = membership(&["herd-perf", "membership"]).unwrap();
        assert_eq!(args.nodes, [3, 16, 64]);
        assert_eq!(args.seconds, 20);
        assert_eq!((args.heartbeat_ms, args.dead_after_ms), (None, None));
        let args = membership(&[
            "herd-perf",
            "membership",
            "--nodes",
            "2,64",
            "--heartbeat-ms",
            "20",
            "--dead-after-ms",
            "80",
        ])
        .unwrap();
        assert_eq!(args.nodes, [2, 64]);
        assert_eq!(
            (args.heartbeat_ms, args.dead_after_ms),
            (Some(20), Some(80))
        );
        let args = membership(&["herd-perf", "membership", "--dead-after-ms", "600"]).unwrap();
        assert_eq!((args.heartbeat_ms, args.dead_after_ms), (None, Some(600)));
        for line in [
            &["herd-perf", "membership", "--nodes", "1"][..],
            &["herd-perf", "membership", "--nodes", "65"],
            &["herd-perf", "membership", "--seconds", "0"],
            &["herd-perf", "membership", "--seconds", "601"],
            &["herd-perf", "membership", "--heartbeat-ms", "-5"],
        ] {
            assert!(membership(line).is_err(), "{line:?}");
        }
    }
}
