//! `herd`: active-active load balancing with failover for Linux, with no load balancer in front.
//!
//! This binary is the command-line entry point and the daemon (`herd run`); the packet path,
//! the protocol and the checks are the workspace crates' (`herd-config`, `herd-packet`,
//! `herd-dataplane`, `herd-membership`, `herd-checkers`).

mod commands;
mod control;
mod daemon;
mod demo;
mod farm;
mod farm_access;
mod farm_client;
mod farm_frame;
mod host;
mod rolling;
mod status;
mod timeline;
mod web;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::farm_access::FarmCommand;

/// Exit status of a command that failed (invalid configuration, unknown node, no rule).
const EXIT_FAILURE: u8 = 1;

#[derive(Parser)]
#[command(
    name = "herd",
    version,
    about = "Active-active load balancing with failover for Linux, with no load balancer in front",
    long_about = "Active-active load balancing with failover for Linux, with no load balancer in front.\n\n\
Every node of a farm holds the virtual IP addresses (VIPs) and receives every packet sent to \
them; each node hashes the client's identity into a bucket and keeps only the buckets it owns.",
    after_help = "Exit status: 0 on success, 1 when the command fails (invalid configuration, \
unknown node, no rule for the traffic asked about), 2 on a command-line usage error."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate the farm configuration and print the farm: VIPs, rules, nodes and their share
    /// of the buckets, and which node this machine is.
    CheckConfig {
        /// The configuration file (the same as --config).
        #[arg(value_name = "FILE", conflicts_with = "config")]
        file: Option<PathBuf>,
        #[command(flatten)]
        common: Common,
        /// The node this machine is, instead of finding it by its local addresses.
        #[arg(long, value_name = "NAME")]
        node: Option<String>,
    },
    /// Print which node owns how many buckets when the named nodes are down (what-if).
    Table {
        #[command(flatten)]
        common: Common,
        /// Nodes to take as down (repeat, or separate with commas).
        #[arg(long, value_name = "NAME", value_delimiter = ',')]
        down: Vec<String>,
    },
    /// Run this node as a member of its farm, in the foreground (root).
    ///
    /// Adds the VIPs to the node's interface, turns on promiscuous mode, sets arp_announce,
    /// attaches the dataplane and announces the VIPs' virtual MACs. Then it runs the start
    /// script, waits for every check to be healthy and joins the farm: it owns its share of the
    /// buckets once the nodes agree. Checks that fail withdraw the node, restart its
    /// application or stop it, as their action says; `herd status`, `stop`, `start`, `restart`
    /// and `drain` talk to it over its control socket. SIGINT or SIGTERM makes it leave: it
    /// releases its buckets, keeps serving its established connections until they end (at
    /// most drain_s), runs the stop script, then undoes everything; a second signal stops it
    /// at once. If herd is killed or frozen, the node accepts no VIP traffic within
    /// dead_after_ms (fail closed) and the others take its buckets.
    Run {
        #[command(flatten)]
        config: ConfigFile,
        /// The node this machine is, instead of finding it by its local addresses.
        #[arg(long, value_name = "NAME")]
        node: Option<String>,
        /// How log lines are written.
        #[arg(long, value_name = "FORMAT", default_value = "human")]
        log_format: LogFormat,
        /// Where to pin the XDP attachment so that it outlives a killed herd (fail closed): a
        /// directory on a BPF file system [default: /sys/fs/bpf/herd, mounting /sys/fs/bpf if
        /// needed].
        #[arg(long, value_name = "DIR")]
        bpf_dir: Option<PathBuf>,
        /// Where herd keeps what outlives it: the incarnation, raised at every start so that
        /// the other nodes tell a restart from a pause.
        #[arg(long, value_name = "DIR", default_value = daemon::STATE_DIR)]
        state_dir: PathBuf,
        /// Where the control socket is made (`<DIR>/<node>.sock`, root only), which `herd
        /// status`, `stop`, `start`, `restart` and `drain` talk to.
        #[arg(long, value_name = "DIR", default_value = control::CONTROL_DIR)]
        control_dir: PathBuf,
    },
    /// Tell which node handles a client: "who has this client?"
    Whois {
        /// The client's address, with its port for client-ip-port rules: 198.51.100.7,
        /// 198.51.100.7:40000, 2001:db8::7 or [2001:db8::7]:40000.
        #[arg(value_name = "CLIENT_IP[:PORT]")]
        client: String,
        #[command(flatten)]
        common: Common,
        /// The protocol of the traffic.
        #[arg(long = "proto", value_name = "PROTO", default_value = "tcp",
              value_parser = ["tcp", "udp", "icmp"])]
        protocol: String,
        /// The VIP port the client connects to [default: the first port of the first rule for
        /// the protocol].
        #[arg(long, value_name = "VIP_PORT")]
        port: Option<u16>,
        /// Nodes to take as down (repeat, or separate with commas).
        #[arg(long, value_name = "NAME", value_delimiter = ',')]
        down: Vec<String>,
    },
    /// Show the running node: its state, the farm view with each node's state and share of
    /// the buckets, the checks with their last result, the drain and the dataplane's counts.
    /// With --farm, every node's state, gathered from the nodes.
    Status {
        #[command(flatten)]
        target: Target,
        /// Every node of the farm: its state, share of the buckets, checks and counters, as
        /// each node answers this host's herd over the farm's channel; a node that did not
        /// answer is marked, with why.
        #[arg(long)]
        farm: bool,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Stop a node: it leaves the farm with a drain (its connections end on their own, at
    /// most drain_s), then its stop script runs. herd keeps running; `herd start` starts it
    /// again.
    #[command(after_help = FARM_HELP)]
    Stop {
        #[command(flatten)]
        target: FarmTarget,
    },
    /// Start a stopped or failed node: the start script, then the checks healthy, then the
    /// join. After `herd drain`, the application still runs: only the checks and the join.
    #[command(after_help = FARM_HELP)]
    Start {
        #[command(flatten)]
        target: FarmTarget,
    },
    /// Restart a node's application: leave with a drain, the stop script, the start script,
    /// the join once the checks are healthy. With --all, a rolling restart of the farm.
    #[command(after_help = FARM_HELP)]
    Restart {
        #[command(flatten)]
        target: FarmTarget,
    },
    /// Show herd at work on this machine: a farm in network namespaces, one of its nodes
    /// killed and brought back, the failover measured (root).
    ///
    /// Builds a farm of --nodes nodes on this machine: a network namespace per node and one for
    /// a client, plugged into a bridge that floods every frame like a hub (in a namespace of
    /// its own), with addresses from 198.18.0.0/15 only, inside the namespaces; the host's own
    /// network is not touched. Each node runs `herd run` in --mode, and a responder that
    /// answers UDP requests to the VIP with the node's name. The client sends 2560 requests a
    /// second from 128 flows (64 addresses, 2 ports each), and a table shows, every second,
    /// each node's state, owned buckets and share of the answers.
    ///
    /// Once every node is up and the farm agrees, the traffic runs steady for a quarter of
    /// --duration; then the last node's herd is killed with SIGKILL. The failover time is
    /// measured at the client: from the kill until every flow that node was answering has been
    /// answered by a surviving node. The node is then started again; the rejoin time runs
    /// until it has answered each of its flows again. Steady traffic follows, then a summary:
    /// each node's answers, the failover and rejoin times, the requests lost and why.
    ///
    /// What it makes, all named after its process id (`herd-demo-<pid>-hub`,
    /// `herd-demo-<pid>-alpha`..., `herd-demo-<pid>-client`): the namespaces with their veth
    /// pairs and bridge, and a scratch directory `herd-demo-<pid>-<hex>` in the temporary
    /// directory holding the farm's configuration, key and logs and a BPF file system mounted
    /// for the nodes' pins. It removes all of it when it ends, whether it succeeds, fails or is
    /// interrupted (Ctrl-C, SIGTERM). Needs ip. Exit status 1 when something did
    /// not go as designed (the summary says what).
    Demo(commands::demo::Options),
    /// Drain a node: it takes no new connection and keeps its own until they end, leaving
    /// the application running; `herd start` brings it back, `herd stop` stops the
    /// application.
    #[command(after_help = FARM_HELP)]
    Drain {
        #[command(flatten)]
        target: FarmTarget,
    },
}

/// How the farm commands reach a node, for their help.
const FARM_HELP: &str = "Without NODE, the command is for this host's node, over its control socket. With NODE (any node of the farm, this one too) or --all, this host's herd carries it to the node over the farm's authenticated channel (signed with the farm key), and both nodes log who asked. --all takes the nodes in configuration order, one at a time: each is asked only once the one before is back up (start, restart) or out (drain, stop), and none is taken out while another is not serving; the first node that refuses or does not come back within 10 minutes ends it. --node is another thing: which herd of this host to talk to, when several run here (test farms).";

/// Which node a farm command is for, and through which of this host's daemons.
#[derive(Args)]
struct FarmTarget {
    /// The node of the farm to act on, by its name in the configuration [default: this
    /// host's node].
    #[arg(value_name = "NODE", conflicts_with = "all")]
    target: Option<String>,
    /// Every node of the farm, one after another (a rolling restart for `restart --all`).
    #[arg(long)]
    all: bool,
    #[command(flatten)]
    local: Target,
}

impl FarmTarget {
    /// Carries `command` to the node, or to every node, or does it on this host's node.
    fn carry(&self, command: FarmCommand) -> anyhow::Result<()> {
        let (dir, local) = (&self.local.control_dir, self.local.node.as_deref());
        match &self.target {
            _ if self.all => commands::farm::roll(dir, local, command),
            Some(node) => commands::farm::command(dir, local, node, command),
            None => self.local.send(match command {
                FarmCommand::Drain => control::Request::Drain,
                FarmCommand::Stop => control::Request::Stop,
                FarmCommand::Start => control::Request::Start,
                FarmCommand::Restart => control::Request::Restart,
            }),
        }
    }
}

/// Which of this host's running daemons a control command talks to.
#[derive(Args)]
struct Target {
    /// Which herd of this host to talk to, when several run here (one per node, as in a test
    /// farm) [default: the only one running]. The farm commands act on the node named by
    /// NODE, not --node.
    #[arg(long, value_name = "NAME")]
    node: Option<String>,
    /// Where the control sockets are (as given to `herd run`).
    #[arg(long, value_name = "DIR", default_value = control::CONTROL_DIR)]
    control_dir: PathBuf,
}

/// The configuration file option alone, for commands that print no data.
#[derive(Args)]
struct ConfigFile {
    /// The farm configuration file.
    #[arg(long, short = 'c', value_name = "FILE", default_value = herd_config::FarmConfig::DEFAULT_PATH)]
    config: PathBuf,
}

/// How `herd run` writes its log.
#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    /// One readable line per event.
    Human,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Logs to standard error, at `info` unless `RUST_LOG` says otherwise.
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal (a journal or a log file would keep the escape codes), and
    // not when NO_COLOR says so.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Options every command takes.
#[derive(Args)]
struct Common {
    /// The farm configuration file.
    #[arg(long, short = 'c', value_name = "FILE", default_value = herd_config::FarmConfig::DEFAULT_PATH)]
    config: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

impl Target {
    fn send(&self, request: control::Request) -> anyhow::Result<()> {
        commands::status::command(&self.control_dir, self.node.as_deref(), request)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Run { .. }) {
        // A command whose output goes to `head` ends quietly when the pipe closes, as Unix
        // tools do, instead of failing to print.
        // SAFETY: setting a signal's disposition to the default has no preconditions.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    let result = match cli.command {
        Command::CheckConfig { file, common, node } => {
            let path = file.unwrap_or(common.config);
            commands::check_config::run(&path, node.as_deref(), common.json)
        }
        Command::Table { common, down } => commands::table::run(&common.config, &down, common.json),
        Command::Run {
            config,
            node,
            log_format,
            bpf_dir,
            state_dir,
            control_dir,
        } => {
            init_logging(log_format);
            commands::run::run(
                &config.config,
                node.as_deref(),
                bpf_dir.as_deref(),
                &state_dir,
                &control_dir,
            )
        }
        Command::Whois {
            client,
            common,
            protocol,
            port,
            down,
        } => commands::whois::run(
            &common.config,
            &commands::whois::Query {
                client: &client,
                protocol: &protocol,
                vip_port: port,
                down: &down,
            },
            common.json,
        ),
        Command::Status {
            target,
            farm: true,
            json,
        } => commands::farm::status(&target.control_dir, target.node.as_deref(), json),
        Command::Status { target, json, .. } => {
            commands::status::status(&target.control_dir, target.node.as_deref(), json)
        }
        Command::Stop { target } => target.carry(FarmCommand::Stop),
        Command::Start { target } => target.carry(FarmCommand::Start),
        Command::Restart { target } => target.carry(FarmCommand::Restart),
        Command::Drain { target } => target.carry(FarmCommand::Drain),
        Command::Demo(options) => commands::demo::run(&options),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("herd: {error:#}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }
}
