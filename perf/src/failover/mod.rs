//! `herd-perf failover`: a 3-node farm of `herd run` processes in network namespaces, with the
//! membership timing asked for, measured for the figures: the failover time after
//! `kill -9` of a node's herd and after its link is cut (p50/p99 over many runs, each on a fresh
//! farm), connections broken by a planned leave and by a join, false positives while stress-ng
//! saturates every core and while a SYN flood keeps the dataplane busy, and the time from an
//! application's death (SIGKILL of the process a `tcp` or `http` check watches) to its node's
//! withdrawal; and, as the reference, keepalived's failover on the same kind of bed (the
//! `keepalived` module).

mod app;
mod cut;
mod farm;
mod keepalived;
mod kill;
mod layout;
mod leave_join;
mod load;
mod quiet;
mod report;
mod victim;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use herd_config::Membership;
use herd_testbed::{command, stale};

use self::farm::FarmSpec;
use self::layout::{Timing, NODES};
pub use self::report::{machine, FailoverReport};
use crate::cli::{FailoverArgs, QuietLoad};
use crate::topology::TAG;

/// How long a TCP connection of the failover load may take to be answered before it is given
/// up (and another one opened in its bucket).
const TCP_TIMEOUT: Duration = Duration::from_millis(250);
/// Consecutive runs that may fail to start before the scenario gives up.
const FAILURES_IN_A_ROW: usize = 3;

/// The load of a failover run.
pub struct Settings {
    /// How often each UDP flow sends a request.
    pub udp_interval: Duration,
    /// How often a TCP connection is opened in each bucket.
    pub tcp_interval: Duration,
    /// How long a TCP connection may take.
    pub tcp_timeout: Duration,
}

/// Runs the scenario as `args` say; `interrupted` is raised by SIGINT or SIGTERM.
pub fn run(args: &FailoverArgs, interrupted: &Arc<AtomicBool>) -> anyhow::Result<FailoverReport> {
    let herd = herd_exe(args.herd.as_deref())?;
    let timing = Timing {
        heartbeat_ms: args.heartbeat_ms,
        dead_after_ms: args.dead_after_ms,
    };
    timing.check()?;
    if !args.skip_false_positives && args.quiet_load.contains(&QuietLoad::Cpu) {
        command::run("stress-ng", &["--version"], None).context(
            "the cpu false-positive run needs stress-ng (or pass --quiet-load packets, or \
                 --skip-false-positives)",
        )?;
    }
    command::run("ethtool", &["--version"], None).context("the farm needs ethtool")?;
    if !args.skip_keepalived {
        keepalived::validate(&args.keepalived_advert_ms)?;
    }
    if !args.skip_app {
        command::run("nginx", &["-v"], None)
            .context("the application-failure runs need nginx (or pass --skip-app)")?;
    }
    if let Some(dir) = &args.keep_logs {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    stale::remove(TAG)?;
    let settings = Settings {
        udp_interval: Duration::from_millis(args.udp_interval_ms),
        tcp_interval: Duration::from_millis(args.tcp_interval_ms),
        tcp_timeout: TCP_TIMEOUT,
    };
    let spec = |tag: String| FarmSpec {
        mode: args.mode,
        buckets: args.buckets,
        timing,
        herd: &herd,
        keep_logs: args.keep_logs.as_deref(),
        tag,
        app: None,
    };
    let mut report = FailoverReport {
        command: command_line(),
        mode: args.mode.name().to_owned(),
        machine: report::machine(),
        setup: setup(args, &settings),
        goal_p99_ms: args.goal_p99_ms.into(),
        runs: Vec::new(),
        failed_runs: Vec::new(),
        leave_join: None,
        quiet: Vec::new(),
        keepalived: Vec::new(),
        app: None,
    };
    let mut serial = 0;
    let failures = if args.skip_kills {
        &[][..]
    } else {
        &args.failure[..]
    };
    for &failure in failures {
        let mut in_a_row = 0;
        for run in 0..args.runs as usize {
            check(interrupted)?;
            let victim = run % NODES.len();
            let name = format!("{} run {}", failure.name(), run + 1);
            tracing::info!("{name} of {}: {}", args.runs, NODES[victim]);
            serial += 1;
            match kill::run_once(
                serial,
                &spec(format!("{}-{}", failure.name(), run + 1)),
                failure,
                victim,
                kill::kill_delay(run, timing.heartbeat()),
                &settings,
                interrupted,
            ) {
                Ok(result) => {
                    tracing::info!(
                        "{name}: UDP {:?} ms, TCP {:?} ms, peer dead {:?} ms",
                        result.udp_ms.map(f64::round),
                        result.tcp_ms.map(f64::round),
                        result.detected_ms.map(f64::round)
                    );
                    report.runs.push(result);
                    in_a_row = 0;
                }
                Err(error) => {
                    check(interrupted)?;
                    tracing::warn!("{name} failed: {error:#}");
                    report.failed_runs.push(format!("{name}: {error:#}"));
                    in_a_row += 1;
                    if in_a_row == FAILURES_IN_A_ROW {
                        bail!("{FAILURES_IN_A_ROW} runs in a row failed; the last: {error:#}");
                    }
                }
            }
        }
    }
    if !args.skip_keepalived {
        report.keepalived = keepalived::run(
            &mut serial,
            &keepalived::Reference {
                advert_ms: &args.keepalived_advert_ms,
                runs: args.keepalived_runs.unwrap_or(args.runs),
                flows: (args.buckets as usize).div_ceil(NODES.len()),
                settings: &settings,
                keep_logs: args.keep_logs.as_deref(),
            },
            interrupted,
        )?;
    }
    if !args.skip_app {
        report.app = Some(app::run(
            &mut serial,
            &spec,
            args.app_runs,
            &settings,
            interrupted,
        )?);
    }
    if !args.skip_leave_join {
        check(interrupted)?;
        tracing::info!("connections through a planned leave and a join");
        serial += 1;
        report.leave_join = Some(leave_join::run(
            serial,
            &spec("leave-join".to_owned()),
            interrupted,
        )?);
    }
    let quiet_loads = if args.skip_false_positives {
        &[][..]
    } else {
        &args.quiet_load[..]
    };
    for &kind in quiet_loads {
        check(interrupted)?;
        serial += 1;
        report.quiet.push(quiet::run(
            serial,
            &spec(format!("quiet-{}", kind.name())),
            args.quiet_minutes,
            kind,
            args.flood_rate,
            interrupted,
        )?);
    }
    if let Some(path) = &args.markdown {
        write_markdown(path, &report.markdown())?;
    }
    Ok(report)
}

/// The herd executable: `given`, or the one beside herd-perf's own.
pub fn herd_exe(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    let herd = match given {
        Some(path) => path.to_owned(),
        None => std::env::current_exe()
            .context("cannot find herd-perf's own executable")?
            .with_file_name("herd"),
    };
    if !herd.is_file() {
        bail!(
            "no herd at {} (build it with `cargo build --release -p herd --bin herd`, or give \
             --herd PATH)",
            herd.display()
        );
    }
    Ok(herd)
}

/// Writes the markdown section to `path`.
fn write_markdown(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// The farm and, when failover runs are made, their load, in a few sentences.
fn setup(args: &FailoverArgs, settings: &Settings) -> String {
    let defaults = if (args.heartbeat_ms, args.dead_after_ms)
        == (
            Membership::DEFAULT_HEARTBEAT_MS,
            Membership::DEFAULT_DEAD_AFTER_MS,
        ) {
        "the default "
    } else {
        ""
    };
    let farm = format!(
        "Farm: 3 nodes (weight 1 each) in network namespaces on a learning bridge, \
         {} buckets, {defaults}membership timing heartbeat {} ms, dead_after {} ms (drain {} s), \
         {} mode.",
        args.buckets,
        args.heartbeat_ms,
        args.dead_after_ms,
        Membership::DEFAULT_DRAIN_S,
        args.mode.name(),
    );
    if args.skip_kills {
        return farm;
    }
    format!(
        "{farm} Each failover run has a fresh farm. Load of a failover run: one UDP flow per \
         bucket of the victim, each sending a request every {} ms (the resolution), and a short \
         TCP connection opened in each of its buckets every {} ms (given up after {} ms); the \
         failure (`kill -9` of the victim's herd, or its link to the bridge cut) comes 1 s into \
         the load plus a delay that spreads the failures over the heartbeat period. Only answers \
         by a bucket's new owner count, as a killed node's pinned XDP program keeps accepting \
         until its liveness deadline in xdp mode.",
        settings.udp_interval.as_millis(),
        settings.tcp_interval.as_millis(),
        settings.tcp_timeout.as_millis(),
    )
}

/// The command line that reproduces the run.
fn command_line() -> String {
    std::iter::once("sudo herd-perf".to_owned())
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Fails once the run has been interrupted.
pub fn check(interrupted: &AtomicBool) -> anyhow::Result<()> {
    if interrupted.load(Ordering::Relaxed) {
        bail!("interrupted");
    }
    Ok(())
}

/// Sleeps for `length`, failing early if the run is interrupted.
pub fn pause(length: Duration, interrupted: &AtomicBool) -> anyhow::Result<()> {
    let end = Instant::now() + length;
    loop {
        check(interrupted)?;
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}
