//! `herd-perf failover`: a 3-node farm of `herd run` processes in network namespaces, with
//! default membership settings, measured for the figures: the failover time after
//! `kill -9` (p50/p99 over many runs, each on a fresh farm), connections broken by a planned
//! leave and by a join, false positives while stress-ng saturates every core, and the time
//! from an application's death (SIGKILL of the process a `tcp` or `http` check watches) to its
//! node's withdrawal; and, as the reference, keepalived's failover on the same kind of bed (the
//! `keepalived` module).

mod app;
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
use self::layout::NODES;
pub use self::report::FailoverReport;
use crate::cli::FailoverArgs;
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
    if !args.skip_false_positives {
        command::run("stress-ng", &["--version"], None)
            .context("the false-positive run needs stress-ng (or pass --skip-false-positives)")?;
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
        runs: Vec::new(),
        failed_runs: Vec::new(),
        leave_join: None,
        quiet: None,
        keepalived: Vec::new(),
        app: None,
    };
    let heartbeat = Duration::from_millis(Membership::DEFAULT_HEARTBEAT_MS.into());
    let mut serial = 0;
    let mut in_a_row = 0;
    for run in 0..args.runs as usize {
        check(interrupted)?;
        let victim = run % NODES.len();
        tracing::info!(
            "failover run {} of {}: killing {}",
            run + 1,
            args.runs,
            NODES[victim]
        );
        serial += 1;
        match kill::run_once(
            serial,
            &spec(format!("run-{}", run + 1)),
            victim,
            kill::kill_delay(run, heartbeat),
            &settings,
            interrupted,
        ) {
            Ok(result) => {
                tracing::info!(
                    "run {}: UDP {:?} ms, TCP {:?} ms, peer dead {:?} ms",
                    run + 1,
                    result.udp_ms.map(f64::round),
                    result.tcp_ms.map(f64::round),
                    result.detected_ms.map(f64::round)
                );
                report.runs.push(result);
                in_a_row = 0;
            }
            Err(error) => {
                check(interrupted)?;
                tracing::warn!("run {} failed: {error:#}", run + 1);
                report
                    .failed_runs
                    .push(format!("run {}: {error:#}", run + 1));
                in_a_row += 1;
                if in_a_row == FAILURES_IN_A_ROW {
                    bail!("{FAILURES_IN_A_ROW} runs in a row failed; the last: {error:#}");
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
    if !args.skip_false_positives {
        check(interrupted)?;
        serial += 1;
        report.quiet = Some(quiet::run(
            serial,
            &spec("quiet".to_owned()),
            args.quiet_minutes,
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

/// The farm and the load in a sentence.
fn setup(args: &FailoverArgs, settings: &Settings) -> String {
    format!(
        "Farm: 3 nodes (weight 1 each) in network namespaces on a learning bridge, \
         {} buckets, default membership settings (heartbeat {} ms, dead_after {} ms, drain {} s), \
         {} mode, each failover run on a fresh farm. Load of a failover run: one UDP flow per \
         bucket of the victim, each sending a request every {} ms (the resolution), and a short \
         TCP connection opened in each of its buckets every {} ms (given up after {} ms); the \
         kill comes 1 s into the load plus a delay that spreads the kills over the heartbeat \
         period. Only answers by a bucket's new owner count, as the killed node's pinned XDP \
         program keeps accepting until its liveness deadline in xdp mode.",
        args.buckets,
        Membership::DEFAULT_HEARTBEAT_MS,
        Membership::DEFAULT_DEAD_AFTER_MS,
        Membership::DEFAULT_DRAIN_S,
        args.mode.name(),
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
