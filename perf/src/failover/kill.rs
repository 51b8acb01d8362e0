//! One failover run: a fresh farm, steady load in the victim's buckets, the victim's failure
//! (`kill -9` of its herd, or its link to the bridge cut), and the time until the survivors
//! answer for every one of its buckets.
//!
//! After a kill, the victim's XDP program stays attached (herd pins it) and, in xdp mode,
//! keeps accepting the victim's buckets until its liveness deadline (dead_after minus one
//! heartbeat); its servers, threads of herd-perf, keep answering. So only answers by each
//! bucket's new owner count. After a cut link, nothing of the victim's reaches the client.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use herd_testbed::Signal;
use serde::Serialize;

use super::cut::LinkCut;
use super::farm::{without, Farm, FarmSpec};
use super::layout::NODES;
use super::load::Records;
use super::victim::{last_answer, recovered, served_before, VictimLoad};
use super::{pause, Settings};
use crate::cli::Failure;

/// How long the load runs before the failure, so that the victim is seen answering; each run adds
/// its own delay within a heartbeat period (see [`kill_delay`]).
pub const WARM_UP: Duration = Duration::from_secs(1);
/// How long after the failure the survivors have to answer for every bucket; a run that takes
/// longer counts as not recovered.
pub const RECOVERY_BOUND: Duration = Duration::from_secs(10);

/// What one run measured. Times are in milliseconds after the failure.
#[derive(Clone, Debug, Serialize)]
pub struct KillRun {
    /// How the victim failed.
    pub failure: Failure,
    /// The node that failed (index in [`NODES`]).
    pub victim: usize,
    /// The delay added to the warm-up, in ms: where in a heartbeat period the failure fell.
    pub delay_ms: f64,
    /// The victim's buckets, one UDP flow and one stream of TCP connections in each.
    pub buckets: usize,
    /// Of the UDP flows, those the victim answered before the failure.
    pub udp_by_victim_before: usize,
    /// Of the buckets, those where the victim answered a TCP connection before the failure.
    pub tcp_by_victim_before: usize,
    /// Answers before the failure by another node than the victim (0 on a settled farm).
    pub stray_before: usize,
    /// Until every UDP flow was answered by its new owner; `None`: not within the bound.
    pub udp_ms: Option<f64>,
    /// Until a TCP connection in every bucket was answered by its new owner.
    pub tcp_ms: Option<f64>,
    /// The victim's last answer (UDP or TCP), while its pinned program still accepted (after a
    /// kill; none is expected after a cut link).
    pub victim_last_ms: Option<f64>,
    /// A survivor's first `peer dead` line.
    pub detected_ms: Option<f64>,
    /// The last survivor's install of its whole new share.
    pub installed_ms: Option<f64>,
    /// UDP requests sent and answered (by anyone) over the run.
    pub udp_sent: u64,
    /// UDP answers received over the run.
    pub udp_answers: u64,
    /// TCP connections opened and failed (refused, reset or timed out) over the run.
    pub tcp_opened: u64,
    /// TCP connections that failed.
    pub tcp_failed: u64,
}

/// The delay run `run` adds to the warm-up before its failure. The nodes send their heartbeats in
/// step from the moment the farm agrees on its view, and a run's farm is settled when they
/// have: after a fixed warm-up, every failure would fall at the same point of the heartbeat period,
/// right after a heartbeat, and every failover would take the longest. The delays spread the
/// kills evenly over the period (a golden-ratio sequence: any few consecutive runs cover it).
pub fn kill_delay(run: usize, heartbeat: Duration) -> Duration {
    const GOLDEN: f64 = 0.618_033_988_749_895;
    heartbeat.mul_f64((run as f64 * GOLDEN).fract())
}

/// Runs failover run `serial`, failing node `victim` as `failure` says `delay` after the
/// warm-up.
pub fn run_once(
    serial: usize,
    spec: &FarmSpec,
    failure: Failure,
    victim: usize,
    delay: Duration,
    settings: &Settings,
    interrupted: &Arc<AtomicBool>,
) -> anyhow::Result<KillRun> {
    let mut farm = Farm::start(serial, spec)?;
    let span = WARM_UP + delay + RECOVERY_BOUND + Duration::from_secs(1);
    let mut load = VictimLoad::start(&farm, victim, span, settings)?;

    let cut = match failure {
        Failure::Kill => None,
        Failure::Link => Some(LinkCut::prepare(&farm.bed, victim)?),
    };
    pause(WARM_UP + delay, interrupted)?;
    let marks = farm.marks();
    let kill_at = Instant::now();
    load.failed_at(kill_at);
    match cut {
        Some(cut) => cut.cut()?,
        None => kill(&mut farm, victim)?,
    }
    let records = load.finish(interrupted)?;

    // A cut-off victim runs on and logs its own `peer dead` lines about the others.
    let detected = farm
        .herds()
        .filter(|&(node, _)| node != victim)
        .filter_map(|(node, herd)| {
            herd.lines_since(marks[node], |line| line.contains("peer dead"))
                .first()
                .map(|line| line.at)
        })
        .min();
    // The survivors have installed their new shares by now, unless the run did not recover.
    let installed = farm.settle(&marks, without(victim)).ok().and_then(|when| {
        when.iter()
            .enumerate()
            .filter(|&(node, _)| node != victim)
            .map(|(_, at)| *at)
            .collect::<Option<Vec<Instant>>>()
            .and_then(|all| all.into_iter().max())
    });
    let moments = Moments {
        kill: kill_at,
        detected,
        installed,
    };
    Ok(summarise(
        failure,
        victim,
        delay,
        &load.buckets,
        &records,
        &load.new_owners,
        &moments,
    ))
}

/// Kills node `victim`'s herd with SIGKILL and waits for its end.
fn kill(farm: &mut Farm, victim: usize) -> anyhow::Result<()> {
    farm.herd(victim)?.signal(Signal::SIGKILL)?;
    if farm
        .herd_mut(victim)?
        .wait_timeout(Duration::from_secs(5))?
        .is_none()
    {
        bail!("{}'s herd outlived SIGKILL by 5 s", NODES[victim]);
    }
    farm.forget_herd(victim);
    Ok(())
}

/// The moments the herds' logs and the failure give.
struct Moments {
    /// The failure.
    kill: Instant,
    /// A survivor's first `peer dead` line.
    detected: Option<Instant>,
    /// The last survivor's install of its whole new share.
    installed: Option<Instant>,
}

/// The figures of a run from what the load saw.
fn summarise(
    failure: Failure,
    victim: usize,
    delay: Duration,
    buckets: &[u32],
    records: &Records,
    new_owners: &[usize],
    moments: &Moments,
) -> KillRun {
    let kill_at = moments.kill;
    let ms = |at: Instant| at.saturating_duration_since(kill_at).as_secs_f64() * 1e3;
    let stray_before = records
        .udp
        .iter()
        .chain(&records.tcp)
        .flatten()
        .filter(|a| a.node != victim && a.at < kill_at)
        .count();
    KillRun {
        failure,
        victim,
        delay_ms: delay.as_secs_f64() * 1e3,
        buckets: buckets.len(),
        udp_by_victim_before: served_before(&records.udp, victim, kill_at),
        tcp_by_victim_before: served_before(&records.tcp, victim, kill_at),
        stray_before,
        udp_ms: recovered(&records.udp, new_owners, kill_at).map(ms),
        tcp_ms: recovered(&records.tcp, new_owners, kill_at).map(ms),
        victim_last_ms: last_answer(records, victim, kill_at).map(ms),
        detected_ms: moments.detected.map(ms),
        installed_ms: moments.installed.map(ms),
        udp_sent: records.udp_sent,
        udp_answers: records.udp.iter().map(|flow| flow.len() as u64).sum(),
        tcp_opened: records.tcp_opened,
        tcp_failed: records.tcp_failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kill_delays_spread_over_the_heartbeat_period() {
        let period = Duration::from_millis(100);
        let mut tenths = [0; 10];
        for run in 0..20 {
            let delay = kill_delay(run, period);
            assert!(delay < period);
            tenths[(delay.as_millis() / 10) as usize] += 1;
        }
        assert!(tenths.iter().all(|&n| n >= 1), "{tenths:?}");
    }
}
