//! One failover run: a fresh farm, steady load in the victim's buckets, `kill -9` of the
//! victim's herd, and the time until the survivors answer for every one of its buckets.
//!
//! After the kill, the victim's XDP program stays attached (herd pins it) and, in xdp mode,
//! keeps accepting the victim's buckets until its liveness deadline (dead_after minus one
//! heartbeat, 400 ms by default); its servers, threads of herd-perf, keep answering. So only
//! answers by each bucket's new owner count.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use herd_config::Protocol;
use herd_testbed::address::flows;
use herd_testbed::Signal;
use serde::Serialize;

use super::farm::{without, Farm, FarmSpec, ALL_UP};
use super::layout::{NODES, SHORT_PORT, SOURCES, UDP_PORT};
use super::load::{self, Answer, Control, Goal, Plan, Records};
use super::{pause, Settings};

/// How long the load runs before the kill, so that the victim is seen answering; each run adds
/// its own delay within a heartbeat period (see [`kill_delay`]).
const WARM_UP: Duration = Duration::from_secs(1);
/// How long after the kill the survivors have to answer for every bucket; a run that takes
/// longer counts as not recovered.
pub const RECOVERY_BOUND: Duration = Duration::from_secs(10);
/// How long the load goes on once every bucket has answered.
const LINGER: Duration = Duration::from_millis(100);

/// What one run measured. Times are in milliseconds after the kill.
#[derive(Clone, Debug, Serialize)]
pub struct KillRun {
    /// The node killed (index in [`NODES`]).
    pub victim: usize,
    /// The delay added to the warm-up, in ms: where in a heartbeat period the kill fell.
    pub delay_ms: f64,
    /// The victim's buckets, one UDP flow and one stream of TCP connections in each.
    pub buckets: usize,
    /// Of the UDP flows, those the victim answered before the kill.
    pub udp_by_victim_before: usize,
    /// Of the buckets, those where the victim answered a TCP connection before the kill.
    pub tcp_by_victim_before: usize,
    /// Answers before the kill by another node than the victim (0 on a settled farm).
    pub stray_before: usize,
    /// Until every UDP flow was answered by its new owner; `None`: not within the bound.
    pub udp_ms: Option<f64>,
    /// Until a TCP connection in every bucket was answered by its new owner.
    pub tcp_ms: Option<f64>,
    /// The victim's last answer (UDP or TCP), while its pinned program still accepted.
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

/// The delay run `run` adds to the warm-up before its kill. The nodes send their heartbeats in
/// step from the moment the farm agrees on its view, and a run's farm is settled when they
/// have: after a fixed warm-up, every kill would fall at the same point of the heartbeat period,
/// right after a heartbeat, and every failover would take the longest. The delays spread the
/// kills evenly over the period (a golden-ratio sequence: any few consecutive runs cover it).
pub fn kill_delay(run: usize, heartbeat: Duration) -> Duration {
    const GOLDEN: f64 = 0.618_033_988_749_895;
    heartbeat.mul_f64((run as f64 * GOLDEN).fract())
}

/// Runs failover run `serial`, killing node `victim` `delay` after the warm-up.
pub fn run_once(
    serial: usize,
    spec: &FarmSpec,
    victim: usize,
    delay: Duration,
    settings: &Settings,
    interrupted: &Arc<AtomicBool>,
) -> anyhow::Result<KillRun> {
    let mut farm = Farm::start(serial, spec)?;
    let before = farm.owners(ALL_UP)?;
    let after = farm.owners(without(victim))?;
    let buckets = before.buckets_of(victim);
    let udp = before
        .flows_in(
            Protocol::Udp,
            UDP_PORT,
            &buckets,
            1,
            flows(30000..40000, SOURCES),
        )?
        .into_iter()
        .filter_map(|flows| flows.into_iter().next())
        .collect::<Vec<_>>();
    // Enough addresses and ports for a connection every interval until the bound.
    let per_bucket = ((WARM_UP + delay + RECOVERY_BOUND + Duration::from_secs(1)).as_secs_f64()
        / settings.tcp_interval.as_secs_f64())
    .ceil() as usize;
    let tcp = before.flows_in(
        Protocol::Tcp,
        SHORT_PORT,
        &buckets,
        per_bucket,
        flows(40000..65000, SOURCES),
    )?;
    let new_owners: Vec<usize> = buckets.iter().map(|&b| after.owner(b)).collect();
    if new_owners.contains(&victim) {
        bail!("the table without the victim still gives it a bucket");
    }
    let goal_owners = new_owners.clone();
    let plan = Plan {
        udp,
        tcp,
        udp_interval: settings.udp_interval,
        tcp_interval: settings.tcp_interval,
        tcp_timeout: settings.tcp_timeout,
        goal: Some(Goal {
            udp: new_owners.clone(),
            tcp: new_owners,
            linger: LINGER,
        }),
    };
    let control = Arc::new(Control::default());
    let until = Instant::now() + WARM_UP + delay + RECOVERY_BOUND + Duration::from_secs(1);
    let client = farm.bed.client.netns.clone();
    let thread_control = Arc::clone(&control);
    let load = std::thread::Builder::new()
        .name("load".into())
        .spawn(move || {
            client.enter()?;
            load::run(&plan, &thread_control, until)
        })
        .context("cannot start the load thread")?;
    // The load stops on every way out of here, or at its bound.
    let stop = StopOnDrop(&control);

    pause(WARM_UP + delay, interrupted)?;
    let marks = farm.marks();
    let kill_at = Instant::now();
    let _ = control.kill_at.set(kill_at);
    farm.herd(victim)?.signal(Signal::SIGKILL)?;
    if farm
        .herd_mut(victim)?
        .wait_timeout(Duration::from_secs(5))?
        .is_none()
    {
        bail!("{}'s herd outlived SIGKILL by 5 s", NODES[victim]);
    }
    farm.forget_herd(victim);
    while !load.is_finished() {
        if interrupted.load(Ordering::Relaxed) {
            bail!("interrupted");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(stop);
    let records = load
        .join()
        .map_err(|_| anyhow!("the load thread panicked"))??;

    let detected = farm
        .herds()
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
        victim,
        delay,
        &buckets,
        &records,
        &goal_owners,
        &moments,
    ))
}

/// The moments the herds' logs and the kill give.
struct Moments {
    /// The kill.
    kill: Instant,
    /// A survivor's first `peer dead` line.
    detected: Option<Instant>,
    /// The last survivor's install of its whole new share.
    installed: Option<Instant>,
}

/// The figures of a run from what the load saw.
fn summarise(
    victim: usize,
    delay: Duration,
    buckets: &[u32],
    records: &Records,
    new_owners: &[usize],
    moments: &Moments,
) -> KillRun {
    let kill_at = moments.kill;
    let ms = |at: Instant| at.saturating_duration_since(kill_at).as_secs_f64() * 1e3;
    let by_victim_before = |answers: &[Vec<Answer>]| {
        answers
            .iter()
            .filter(|flow| flow.iter().any(|a| a.node == victim && a.at < kill_at))
            .count()
    };
    let stray_before = records
        .udp
        .iter()
        .chain(&records.tcp)
        .flatten()
        .filter(|a| a.node != victim && a.at < kill_at)
        .count();
    // The moment every flow (or bucket) had been answered by its new owner: the latest of
    // each one's first such answer after the kill.
    let recovered = |answers: &[Vec<Answer>]| -> Option<f64> {
        answers
            .iter()
            .zip(new_owners)
            .map(|(flow, &owner)| {
                flow.iter()
                    .find(|a| a.node == owner && a.at > kill_at)
                    .map(|a| a.at)
            })
            .collect::<Option<Vec<Instant>>>()
            .and_then(|firsts| firsts.into_iter().max())
            .map(ms)
    };
    let victim_last = records
        .udp
        .iter()
        .chain(&records.tcp)
        .flatten()
        .filter(|a| a.node == victim && a.at > kill_at)
        .map(|a| a.at)
        .max();
    KillRun {
        victim,
        delay_ms: delay.as_secs_f64() * 1e3,
        buckets: buckets.len(),
        udp_by_victim_before: by_victim_before(&records.udp),
        tcp_by_victim_before: by_victim_before(&records.tcp),
        stray_before,
        udp_ms: recovered(&records.udp),
        tcp_ms: recovered(&records.tcp),
        victim_last_ms: victim_last.map(ms),
        detected_ms: moments.detected.map(ms),
        installed_ms: moments.installed.map(ms),
        udp_sent: records.udp_sent,
        udp_answers: records.udp.iter().map(|flow| flow.len() as u64).sum(),
        tcp_opened: records.tcp_opened,
        tcp_failed: records.tcp_failed,
    }
}

/// Tells the load to stop when dropped.
struct StopOnDrop<'a>(&'a Control);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.stop.store(true, Ordering::Relaxed);
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
