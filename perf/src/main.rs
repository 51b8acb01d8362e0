//! herd-perf: herd's two dataplane modes against a bare XDP_DROP program and an nftables rule,
//! on the same generated traffic, on a veth pair between two network namespaces; the same two
//! modes under a SYN flood (`herd-perf syn-flood`); and (`herd-perf failover`) a 3-node
//! farm's failover time, false positives and broken connections; (`herd-perf console`) the
//! web console's CPU cost and its page's update latency; and (`herd-perf membership`) the
//! membership's heartbeats and CPU per node as the farm grows. See `--help`.

mod bench;
mod cli;
mod console;
mod contender;
mod cost;
mod failover;
mod farm;
mod generator;
mod handoff;
mod jhash;
mod latency;
mod membership;
mod mix;
mod programs;
mod report;
mod runtime;
mod sched;
mod stack;
mod syn_report;
mod topology;
mod xsk_tx;

use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::Parser;
use herd_testbed::{command, stale};
use signal_hook::consts::{SIGINT, SIGTERM};
use tracing_subscriber::EnvFilter;

use crate::bench::{Bench, Measurement, Settings, Traffics};
use crate::cli::{Args, Cli, Command, HandoffArgs, SynFloodArgs};
use crate::contender::Kind;
use crate::farm::BenchFarm;
use crate::mix::Traffic;
use crate::report::{Report, Setup};
use crate::syn_report::{SynFloodReport, SynSetup};
use crate::topology::{Topology, TAG};

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let outcome = match (&cli.command, cli.dataplane_args()) {
        (Some(Command::Failover(args)), _) => {
            failover(args).map(|report| print!("{}", report.markdown()))
        }
        (Some(Command::Console(args)), _) => console(args),
        (Some(Command::Membership(args)), _) => membership_cost(args),
        (Some(Command::SynFlood(args)), _) => syn_flood(args),
        (Some(Command::Handoff(args)), _) => handoffs(args),
        (_, Some(args)) => dataplane(args),
        (_, None) => Ok(()),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("herd-perf: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The dataplane comparison, printed as markdown or JSON.
fn dataplane(args: &Args) -> anyhow::Result<()> {
    let report = run(args)?;
    print_report(&report, args.json, || report.markdown())
}

/// Prints `report` as JSON when `json`, as its `markdown` otherwise.
fn print_report(
    report: &impl serde::Serialize,
    json: bool,
    markdown: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    if json {
        let json =
            serde_json::to_string_pretty(report).context("cannot write the report as JSON")?;
        println!("{json}");
    } else {
        print!("{}", markdown());
    }
    Ok(())
}

/// The SYN flood, printed as markdown or JSON.
fn syn_flood(args: &SynFloodArgs) -> anyhow::Result<()> {
    let settings = args.settings()?;
    needs_root()?;
    let interrupted = interruptions()?;
    let farm = BenchFarm::new()?;
    let traffics = Traffics::syn_flood(&settings.spec, &farm)?;
    let (_topology, measurements) = measure(&settings, &farm, &traffics, &interrupted)?;
    let setup = SynSetup {
        seconds: args.seconds,
        generator_core: settings.generator_core,
        receiver_core: settings.receiver_core,
        flows: args.flows,
        ipv6_share: args.ipv6_share,
        owned_share: traffics
            .owned_share(Traffic::MixedSyns)
            .unwrap_or(args.owned_share),
    };
    let report = SynFloodReport::new(command_line(), setup, &measurements);
    print_report(&report, args.json, || report.markdown())
}

/// The ways back to the stack, every way once per round, printed as markdown or JSON.
fn handoffs(args: &HandoffArgs) -> anyhow::Result<()> {
    let ways = args.ways()?;
    needs_root()?;
    let interrupted = interruptions()?;
    stale::remove(TAG)?;
    let topology = Topology::create().context("cannot build the test bed")?;
    let mut rounds = Vec::new();
    for round in 1..=args.runs {
        if interrupted.load(std::sync::atomic::Ordering::Relaxed) {
            bail!("interrupted");
        }
        tracing::info!("round {round} of {}", args.runs);
        rounds.push(handoff::measure(
            &topology.receiver,
            &ways,
            args.writer_core,
            args.reader_core,
        )?);
    }
    let report = handoff::HandoffReport::new(command_line(), rounds);
    print_report(&report, args.json, || report.markdown())
}

/// The failover scenario.
fn failover(args: &cli::FailoverArgs) -> anyhow::Result<failover::FailoverReport> {
    needs_root()?;
    failover::run(args, &interruptions()?)
}

/// The console measurement, printed as markdown.
fn console(args: &cli::ConsoleArgs) -> anyhow::Result<()> {
    needs_root()?;
    let interrupted = interruptions()?;
    let report = console::run(args, &interrupted)?;
    print!("{}", report.markdown());
    Ok(())
}

/// The membership cost, printed as markdown.
fn membership_cost(args: &cli::MembershipArgs) -> anyhow::Result<()> {
    needs_root()?;
    let interrupted = interruptions()?;
    let report = membership::run(args, &interrupted)?;
    print!("{}", report.markdown());
    Ok(())
}

/// Fails unless this process runs as root.
fn needs_root() -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "herd-perf needs root: it creates network namespaces and loads eBPF programs (run \
             it with sudo)"
        );
    }
    Ok(())
}

/// A flag raised by SIGINT or SIGTERM, so that the run stops and removes what it built; a
/// second signal while the first is being handled exits at once.
fn interruptions() -> anyhow::Result<Arc<AtomicBool>> {
    let interrupted = Arc::new(AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(signal, 1, Arc::clone(&interrupted))
            .context("cannot handle signals")?;
        signal_hook::flag::register(signal, Arc::clone(&interrupted))
            .context("cannot handle signals")?;
    }
    Ok(interrupted)
}

fn run(args: &Args) -> anyhow::Result<Report> {
    let settings = args.settings()?;
    needs_root()?;
    if settings.contenders.contains(&Kind::Nftables) {
        command::run("nft", &["--version"], None)
            .context("the nftables contender needs nft (add --only to leave it out)")?;
    }
    let interrupted = interruptions()?;
    let farm = BenchFarm::new()?;
    let traffics = Traffics::new(&settings.spec, &farm)?;
    let (topology, measurements) = measure(&settings, &farm, &traffics, &interrupted)?;
    tracing::info!("timing the eBPF program with BPF_PROG_TEST_RUN");
    let costs = cost::measure(&farm)?;
    let setup = Setup {
        seconds: args.seconds,
        generator_core: settings.generator_core,
        receiver_core: settings.receiver_core,
        flows: args.flows,
        ipv6_share: args.ipv6_share,
        sizes: args.sizes.clone(),
        owned_share: traffics
            .owned_share(Traffic::Mix)
            .unwrap_or(args.owned_share),
    };
    let mut report = Report::new(command_line(), setup, &measurements, costs);
    if settings
        .contenders
        .iter()
        .any(|kind| matches!(kind, Kind::Afxdp | Kind::AfxdpVeth))
    {
        tracing::info!("timing the AF_XDP mode's ways back to the stack");
        report.handoffs = handoff::measure(
            &topology.receiver,
            &handoff::Handoff::ALL,
            settings.receiver_core,
            settings.generator_core,
        )?;
    }
    Ok(report)
}

/// Builds the test bed (after removing any a killed run left) and measures every contender of
/// `settings` on `traffics`; the bed is returned for further measurements.
fn measure(
    settings: &Settings,
    farm: &BenchFarm,
    traffics: &Traffics,
    interrupted: &AtomicBool,
) -> anyhow::Result<(Topology, Vec<Measurement>)> {
    stale::remove(TAG)?;
    let topology = Topology::create().context("cannot build the test bed")?;
    tracing::info!(
        "test bed: {} ({}) -> {} ({})",
        topology.sender.name(),
        topology.sender_if,
        topology.receiver.name(),
        topology.receiver_if
    );
    let measurements = Bench::new(&topology, farm, settings, traffics, interrupted)?.run()?;
    Ok((topology, measurements))
}

/// This run's command line, as the reports quote it.
fn command_line() -> String {
    std::iter::once("herd-perf".to_owned())
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ")
}
