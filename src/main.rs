//! `herd`: active-active load balancing with failover for Linux, with no load balancer in front.
//!
//! This binary is the command-line entry point; the work is done by the workspace crates
//! (`herd-config`, `herd-dataplane`, `herd-membership`).

mod commands;
mod farm;
mod host;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

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
    /// attaches the dataplane and announces the VIPs' virtual MACs, then joins the farm: it
    /// heartbeats the other nodes on the farm port and owns its share of the buckets once they
    /// agree. SIGINT or SIGTERM makes it leave: it releases its buckets, keeps serving its
    /// established connections until they end (at most drain_s), then undoes everything; a
    /// second signal stops it at once. If herd is killed or frozen, the node accepts no VIP
    /// traffic within dead_after_ms (fail closed) and the others take its buckets.
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
        #[arg(long, value_name = "DIR", default_value = commands::run::STATE_DIR)]
        state_dir: PathBuf,
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
    // Colours only on a terminal: a journal or a log file would keep the escape codes.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
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

fn main() -> ExitCode {
    let cli = Cli::parse();
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
        } => {
            init_logging(log_format);
            let paths = commands::run::Paths {
                config: &config.config,
                bpf_dir: bpf_dir.as_deref(),
                state_dir: &state_dir,
            };
            commands::run::run(&paths, node.as_deref())
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
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("herd: {error:#}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}
