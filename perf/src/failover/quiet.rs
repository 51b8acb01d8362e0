//! False positives: a settled farm under light traffic for minutes while `stress-ng` saturates
//! every core, or while a flood of SYNs from spoofed sources keeps its dataplane busy. No node
//! fails, so any `peer dead` a herd logs is a false positive; `ran late` lines show how starved
//! the membership loops were.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use herd_config::Protocol;
use herd_packet::neighbor::virtual_mac;
use herd_testbed::address::{flows, Family};
use herd_testbed::flood::{self, SynFlood};
use serde::Serialize;

use super::farm::{Farm, FarmSpec, ALL_UP};
use super::layout::{NODES, SHORT_PORT, SOURCES, UDP_PORT, VIP};
use super::load::{self, Control, Plan};
use super::pause;
use crate::cli::QuietLoad;

/// How often each flow of the light traffic sends a request.
const LIGHT_INTERVAL: Duration = Duration::from_millis(100);
/// How long stress-ng may overrun its own time-out before it is killed.
const OVERRUN: Duration = Duration::from_secs(60);

/// What the farm logged under one load.
#[derive(Clone, Debug, Serialize)]
pub struct Quiet {
    /// What kept the farm busy.
    pub load: QuietLoad,
    /// How long it was kept busy, in minutes.
    pub minutes: u32,
    /// The load in words: stress-ng's command line, or the flood's target and pace.
    pub stress: String,
    /// The SYNs a second the flood reached, in a `packets` run.
    pub flood_rate: Option<f64>,
    /// `peer dead` lines: false positives.
    pub peer_dead: usize,
    /// `ran late` lines.
    pub ran_late: usize,
    /// Other lines that show the membership moved: new views, nodes pausing after a silence,
    /// split brains healed.
    pub other_alarms: usize,
    /// The first few of those lines, with their node.
    pub excerpts: Vec<String>,
    /// UDP requests of the light traffic sent.
    pub udp_sent: u64,
    /// UDP answers received.
    pub udp_answers: u64,
    /// UDP answers from another node than the flow's owner.
    pub udp_wrong_node: u64,
}

/// Runs `minutes` of `kind` on a fresh farm; `flood_rate` paces a `packets` load.
pub fn run(
    serial: usize,
    spec: &FarmSpec,
    minutes: u32,
    kind: QuietLoad,
    flood_rate: Option<u64>,
    interrupted: &Arc<AtomicBool>,
) -> anyhow::Result<Quiet> {
    let farm = Farm::start(serial, spec)?;
    let length = Duration::from_secs(u64::from(minutes) * 60);
    let syn_flood = match kind {
        QuietLoad::Cpu => None,
        QuietLoad::Packets => {
            // The nodes answer the spoofed sources through the client, which drops the answers.
            flood::sink_replies(&farm.bed.nodes, &farm.bed.client, Family::V4)?;
            Some(syn_flood(&farm, length, flood_rate)?)
        }
    };
    let owners = farm.owners(ALL_UP)?;
    // One flow per client address, over every node's buckets.
    let udp: Vec<_> = flows(45000..45001, SOURCES).collect();
    let expected = udp
        .iter()
        .map(|&flow| owners.of(Protocol::Udp, UDP_PORT, flow))
        .collect::<anyhow::Result<Vec<usize>>>()?;
    let plan = Plan {
        udp,
        tcp: Vec::new(),
        udp_interval: LIGHT_INTERVAL,
        tcp_interval: LIGHT_INTERVAL,
        tcp_timeout: LIGHT_INTERVAL,
        goal: None,
    };
    let control = Arc::new(Control::default());
    let until = Instant::now() + length + OVERRUN + Duration::from_secs(10);
    let client = farm.bed.client.netns.clone();
    let thread_control = Arc::clone(&control);
    let load = std::thread::Builder::new()
        .name("light-load".into())
        .spawn(move || {
            client.enter()?;
            load::run(&plan, &thread_control, until)
        })
        .context("cannot start the load thread")?;

    let marks = farm.marks();
    let (stress, stressed) = match syn_flood {
        None => {
            let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
            let args = [
                "--cpu".to_owned(),
                cores.to_string(),
                "--timeout".to_owned(),
                format!("{minutes}m"),
                "--quiet".to_owned(),
            ];
            let stress = format!("stress-ng {}", args.join(" "));
            tracing::info!("{stress}: {minutes} min of saturated cores");
            let stressed = saturate(&args, length + OVERRUN, interrupted).map(|()| None);
            (stress, stressed)
        }
        Some(syn_flood) => {
            let stress = format!(
                "SYNs to {} from spoofed sources, {}",
                syn_flood.to,
                flood_rate.map_or_else(
                    || "as fast as the client writes them".to_owned(),
                    |rate| format!("at most {rate} a second")
                )
            );
            tracing::info!("{stress}: {minutes} min of a busy dataplane");
            (stress, run_flood(syn_flood, interrupted).map(Some))
        }
    };
    control.stop.store(true, Ordering::Relaxed);
    let records = load
        .join()
        .map_err(|_| anyhow!("the load thread panicked"))??;
    let flood_rate = stressed?;

    let alarms = [
        "peer dead",
        "ran late",
        "new view",
        "silent long enough",
        "split brain",
    ];
    let mut counts = [0usize; 5];
    let mut excerpts = Vec::new();
    for (node, herd) in farm.herds() {
        for line in herd.lines_since(marks[node], |line| alarms.iter().any(|a| line.contains(a))) {
            for (count, alarm) in counts.iter_mut().zip(alarms) {
                if line.text.contains(alarm) {
                    *count += 1;
                }
            }
            if excerpts.len() < 12 {
                excerpts.push(format!("{}: {}", NODES[node], line.text));
            }
        }
    }
    Ok(Quiet {
        load: kind,
        minutes,
        stress,
        flood_rate,
        peer_dead: counts[0],
        ran_late: counts[1],
        other_alarms: counts[2..].iter().sum(),
        excerpts,
        udp_sent: records.udp_sent,
        udp_answers: records.udp.iter().map(|flow| flow.len() as u64).sum(),
        udp_wrong_node: records
            .udp
            .iter()
            .zip(&expected)
            .map(|(flow, &owner)| flow.iter().filter(|a| a.node != owner).count() as u64)
            .sum(),
    })
}

/// A flood of SYNs from spoofed sources, out of the client, to the VIP's short TCP service,
/// where every node listens: each SYN costs its owner's dataplane a verdict and its stack a
/// SYN-ACK (a cookie once the queue is full). It lasts `length`, paced at `rate` if given.
fn syn_flood(farm: &Farm, length: Duration, rate: Option<u64>) -> anyhow::Result<SynFlood> {
    let client = &farm.bed.client;
    Ok(SynFlood {
        netns: client.netns.clone(),
        interface: client.interface.clone(),
        from_mac: client.mac()?,
        to_mac: virtual_mac(VIP.into(), farm.config.farm.mac),
        to: (VIP, SHORT_PORT).into(),
        count: rate.map_or(u64::MAX, |rate| rate.saturating_mul(length.as_secs())),
        within: length,
        rate,
    })
}

/// Runs `syn_flood` for its length (dropped, it stops, on an interruption too); returns the
/// SYNs a second it reached.
fn run_flood(syn_flood: SynFlood, interrupted: &AtomicBool) -> anyhow::Result<f64> {
    let length = syn_flood.within;
    let running = syn_flood.start()?;
    pause(length, interrupted)?;
    Ok(running.stop()?.rate())
}

/// Runs stress-ng with `args` until it exits, killing it after `bound` or on an interruption.
fn saturate(args: &[String], bound: Duration, interrupted: &AtomicBool) -> anyhow::Result<()> {
    let mut child = Command::new("stress-ng")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .map_err(|error| {
            anyhow!(
                "cannot run stress-ng ({error}); install it (scripts/deps, or apt-get install \
                 stress-ng) or pass --skip-false-positives"
            )
        })?;
    let deadline = Instant::now() + bound;
    loop {
        if let Some(status) = child.try_wait().context("cannot wait for stress-ng")? {
            if !status.success() {
                bail!("stress-ng failed: {status}");
            }
            return Ok(());
        }
        if interrupted.load(Ordering::Relaxed) || Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!(if interrupted.load(Ordering::Relaxed) {
                "interrupted".to_owned()
            } else {
                format!("stress-ng outlived its time-out by {OVERRUN:?}")
            });
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
