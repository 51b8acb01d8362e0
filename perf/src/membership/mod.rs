//! `herd-perf membership`: what the membership costs a node as the farm grows. For each farm
//! size, that many real membership threads ([`herd_membership::driver`]) run in this process,
//! each on its own address in one network namespace, at the heartbeat settings its
//! configuration would give it (the farm's default for its size, or the keys asked for); once
//! every node is up and the farm has agreed, a window measures the heartbeats and datagrams
//! per node, their size, each membership thread's CPU time, and whether the farm stayed as it
//! was.

mod counts;
mod farm;
mod report;
mod thread_cpu;
mod timing;

use std::fmt::Write as _;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use herd_membership::Settings;
use herd_testbed::address::node4;
use herd_testbed::{stale, Bed, Netns};

use self::counts::Counts;
use self::farm::MemberFarm;
use self::report::FarmCost;
pub use self::report::MembershipReport;
pub use self::timing::Timing;
use crate::cli::MembershipArgs;
use crate::failover::{check, pause};
use crate::topology::TAG;

/// How long a farm may take until every node is up and agreed.
const SETTLE: Duration = Duration::from_secs(60);
/// How often the farm is looked at while it settles.
const SETTLE_POLL: Duration = Duration::from_millis(20);

/// Runs the measurement as `args` say; `interrupted` is raised by SIGINT or SIGTERM.
pub fn run(args: &MembershipArgs, interrupted: &AtomicBool) -> anyhow::Result<MembershipReport> {
    // Every size's settings are checked before any farm is built.
    let timings = args
        .nodes
        .iter()
        .map(|&nodes| Timing::resolve(nodes.into(), args.heartbeat_ms, args.dead_after_ms))
        .collect::<anyhow::Result<Vec<Timing>>>()?;
    stale::remove(TAG)?;
    let mut bed = Bed::create(&format!("{TAG}-{}-membership", std::process::id()))?;
    let netns = bed.netns("farm")?;
    let largest = args.nodes.iter().copied().max().map_or(0, usize::from);
    address(&netns, largest)?;
    let window = Duration::from_secs(args.seconds.into());
    let mut farms = Vec::new();
    for (nodes, timing) in args.nodes.iter().copied().map(usize::from).zip(timings) {
        check(interrupted)?;
        tracing::info!(
            "{nodes} nodes: starting at heartbeat {} ms, dead_after {} ms, then measuring for {} s",
            timing.membership.heartbeat_ms,
            timing.membership.dead_after_ms,
            args.seconds
        );
        let farm = measure(&netns, nodes, timing, window, interrupted)?;
        let (mean, max) = farm.cpu();
        tracing::info!(
            "{nodes} nodes: {:.0} datagrams sent / node / s, CPU {mean:.3} % mean, {max:.3} % max, stable: {}",
            farm.sent(),
            farm.stable()
        );
        farms.push(farm);
    }
    Ok(MembershipReport {
        command: crate::command_line(),
        machine: crate::failover::machine(),
        seconds: args.seconds,
        farms,
    })
}

/// Gives the namespace's loopback the addresses of `nodes` nodes.
fn address(netns: &Netns, nodes: usize) -> anyhow::Result<()> {
    let mut batch = String::new();
    for node in 0..nodes {
        let _ = writeln!(batch, "addr add {}/32 dev lo", node4(node));
    }
    netns
        .ip_batch(&batch)
        .with_context(|| format!("cannot address the loopback of {}", netns.name()))
}

/// Starts a farm of `nodes` at `timing` in `netns`, waits until it has settled, and measures
/// it for `window`.
fn measure(
    netns: &Netns,
    nodes: usize,
    timing: Timing,
    window: Duration,
    interrupted: &AtomicBool,
) -> anyhow::Result<FarmCost> {
    let started = Instant::now();
    let farm = MemberFarm::start(netns, nodes, Settings::from_config(&timing.membership))?;
    while !farm.settled() {
        check(interrupted)?;
        if started.elapsed() > SETTLE {
            bail!(
                "a farm of {nodes} nodes did not settle within {SETTLE:?} (every node up and \
                 agreed on the view of them all): {}",
                unsettled(&farm)
            );
        }
        std::thread::sleep(SETTLE_POLL);
    }
    let settled_in = started.elapsed();
    let before = (farm.sample()?, Counts::of(netns)?, Instant::now());
    pause(window, interrupted)?;
    let after = (farm.sample()?, Counts::of(netns)?, Instant::now());
    let settled_at_end = farm.settled();
    farm.stop()?;
    Ok(FarmCost {
        nodes,
        timing,
        wall: after.2 - before.2,
        settled_in,
        used: after.0.since(&before.0),
        counts: after.1.since(before.1),
        settled_at_end,
    })
}

/// What keeps a farm from settling: the first node that is not up, agreed, and seeing every
/// other alive.
fn unsettled(farm: &MemberFarm) -> String {
    farm.snapshots()
        .iter()
        .enumerate()
        .find_map(|(index, snapshot)| {
            let dead: Vec<&str> = snapshot
                .nodes
                .iter()
                .filter(|node| !node.alive)
                .map(|node| node.name.as_str())
                .collect();
            let agreed = if snapshot.agreed {
                "agreed"
            } else {
                "not agreed"
            };
            (snapshot.state != herd_membership::wire::State::Up
                || !snapshot.agreed
                || !dead.is_empty())
            .then(|| {
                format!(
                    "{} is {}, {agreed}, sees as dead: {dead:?}",
                    farm::name(index),
                    snapshot.state
                )
            })
        })
        .unwrap_or_else(|| "every node is up and agreed now".to_owned())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use super::*;

    #[test]
    fn a_small_farm_is_measured_stable_with_every_heartbeat_counted() {
        let mut bed = Bed::create(&format!("{TAG}-{}-membership-test", std::process::id()))
            .expect("a bed (the test runs as root)");
        let netns = bed.netns("farm").unwrap();
        address(&netns, 3).unwrap();
        let farm = measure(
            &netns,
            3,
            Timing::resolve(3, Some(20), Some(100)).unwrap(),
            Duration::from_secs(1),
            &AtomicBool::new(false),
        )
        .unwrap();
        assert!(farm.stable(), "{farm:?}");
        // 50 heartbeats a second, give or take a tick at each end of the window and a
        // loaded machine's lateness.
        let heartbeats = farm.heartbeats();
        assert!((40.0..=55.0).contains(&heartbeats), "{heartbeats}");
        // Each heartbeat goes to both other nodes, and every datagram sent arrives; the
        // threads are not sampled at the very moment the kernel's counters are, so a
        // heartbeat per node may fall between the two at either end of the window.
        let sent = farm.used.heartbeats.iter().sum::<u64>() * 2;
        let slack = 2 * 3 * 2;
        assert!(farm.counts.udp_out.abs_diff(sent) <= slack, "{farm:?}");
        assert!(
            farm.counts.udp_in.abs_diff(farm.counts.udp_out) <= slack,
            "{farm:?}"
        );
        assert!(
            farm.payload().is_some_and(|bytes| bytes > 100.0),
            "{farm:?}"
        );
        let (mean, max) = farm.cpu();
        assert!(mean > 0.0 && max < 50.0, "{mean} {max}");
    }
}
