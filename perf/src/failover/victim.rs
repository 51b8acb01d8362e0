//! The load on one node's buckets through its failure, shared by the failover runs (its herd
//! killed) and the application's failure (its application killed): a UDP flow and a stream of
//! short TCP connections in each of the victim's buckets, from a thread in the client's
//! namespace, until every one has been answered by the bucket's new owner.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use herd_config::Protocol;
use herd_testbed::address::flows;

use super::farm::{without, Farm, ALL_UP};
use super::layout::{SHORT_PORT, SOURCES, UDP_PORT};
use super::load::{self, Answer, Control, Goal, Plan, Records};
use super::Settings;

/// How long the load goes on once every bucket has answered.
const LINGER: Duration = Duration::from_millis(100);

/// The load on a victim's buckets, running; told to stop when dropped.
pub struct VictimLoad {
    /// The victim's buckets.
    pub buckets: Vec<u32>,
    /// Each bucket's owner once the victim is out.
    pub new_owners: Vec<usize>,
    control: Arc<Control>,
    thread: Option<JoinHandle<anyhow::Result<Records>>>,
}

impl VictimLoad {
    /// Starts the load on node `victim`'s buckets of `farm`, for `span` at most.
    pub fn start(
        farm: &Farm,
        victim: usize,
        span: Duration,
        settings: &Settings,
    ) -> anyhow::Result<Self> {
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
        // Enough addresses and ports for a connection every interval until the end.
        let per_bucket = (span.as_secs_f64() / settings.tcp_interval.as_secs_f64()).ceil() as usize;
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
        let plan = Plan {
            udp,
            tcp,
            udp_interval: settings.udp_interval,
            tcp_interval: settings.tcp_interval,
            tcp_timeout: settings.tcp_timeout,
            goal: Some(Goal {
                udp: new_owners.clone(),
                tcp: new_owners.clone(),
                linger: LINGER,
            }),
        };
        let control = Arc::new(Control::default());
        let until = Instant::now() + span;
        let client = farm.bed.client.netns.clone();
        let thread_control = Arc::clone(&control);
        let thread = std::thread::Builder::new()
            .name("load".into())
            .spawn(move || {
                client.enter()?;
                load::run(&plan, &thread_control, until)
            })
            .context("cannot start the load thread")?;
        Ok(VictimLoad {
            buckets,
            new_owners,
            control,
            thread: Some(thread),
        })
    }

    /// Marks the moment of the failure: from then on the load watches for its goal.
    pub fn failed_at(&self, at: Instant) {
        let _ = self.control.kill_at.set(at);
    }

    /// Waits until the load ends (its goal met, or its bound) and returns what it saw; fails
    /// early if the run is interrupted.
    pub fn finish(&mut self, interrupted: &AtomicBool) -> anyhow::Result<Records> {
        let thread = self
            .thread
            .take()
            .context("the load has already finished")?;
        while !thread.is_finished() {
            if interrupted.load(Ordering::Relaxed) {
                bail!("interrupted");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        thread
            .join()
            .map_err(|_| anyhow!("the load thread panicked"))?
    }
}

impl Drop for VictimLoad {
    fn drop(&mut self) {
        self.control.stop.store(true, Ordering::Relaxed);
    }
}

/// The moment every flow (or bucket) of `answers` had been answered by its new owner in
/// `new_owners`: the latest of each one's first such answer after `since`.
pub fn recovered(answers: &[Vec<Answer>], new_owners: &[usize], since: Instant) -> Option<Instant> {
    answers
        .iter()
        .zip(new_owners)
        .map(|(flow, &owner)| {
            flow.iter()
                .find(|a| a.node == owner && a.at > since)
                .map(|a| a.at)
        })
        .collect::<Option<Vec<Instant>>>()
        .and_then(|firsts| firsts.into_iter().max())
}

/// Node `node`'s last answer (UDP or TCP) after `since`.
pub fn last_answer(records: &Records, node: usize, since: Instant) -> Option<Instant> {
    records
        .udp
        .iter()
        .chain(&records.tcp)
        .flatten()
        .filter(|a| a.node == node && a.at > since)
        .map(|a| a.at)
        .max()
}

/// Of `answers`' flows (or buckets), those node `node` answered before `until`.
pub fn served_before(answers: &[Vec<Answer>], node: usize, until: Instant) -> usize {
    answers
        .iter()
        .filter(|flow| flow.iter().any(|a| a.node == node && a.at < until))
        .count()
}
