//! The membership cost's report: a row per farm size, as a markdown section.

use std::fmt::Write as _;
use std::time::Duration;

use super::counts::Counts;
use super::farm::Sample;
use super::timing::Timing;

/// The goal: a node's membership thread under 1 % of a core in a farm this large.
pub const GOAL_NODES: usize = 64;
/// The goal's share of a core, in %.
pub const GOAL_PERCENT: f64 = 1.0;
/// Bytes the loopback counts before a UDP payload: an (empty) Ethernet header, IPv4 and UDP.
const HEADERS: f64 = 14.0 + 20.0 + 8.0;

/// What one farm did over its window.
#[derive(Clone, Debug)]
pub struct FarmCost {
    /// Its nodes.
    pub nodes: usize,
    /// The heartbeat settings it ran at.
    pub timing: Timing,
    /// How long it was measured.
    pub wall: Duration,
    /// How long it took to settle (every node up, agreed on the view of them all).
    pub settled_in: Duration,
    /// What each node did in the window.
    pub used: Sample,
    /// What the kernel counted in the window.
    pub counts: Counts,
    /// Whether every node was still up, seeing every other alive, at the window's end.
    pub settled_at_end: bool,
}

impl FarmCost {
    fn per_node_per_second(&self, total: u64) -> f64 {
        total as f64 / self.nodes as f64 / self.wall.as_secs_f64()
    }

    /// Heartbeats a node sent per second, on average.
    pub fn heartbeats(&self) -> f64 {
        self.per_node_per_second(self.used.heartbeats.iter().sum())
    }

    /// Datagrams a node sent per second, on average, as the kernel counted them.
    pub fn sent(&self) -> f64 {
        self.per_node_per_second(self.counts.udp_out)
    }

    /// Datagrams a node received per second, on average, as the kernel counted them.
    pub fn received(&self) -> f64 {
        self.per_node_per_second(self.counts.udp_in)
    }

    /// The UDP payload of a datagram, on average; `None` without traffic.
    pub fn payload(&self) -> Option<f64> {
        (self.counts.loopback_packets > 0).then(|| {
            self.counts.loopback_bytes as f64 / self.counts.loopback_packets as f64 - HEADERS
        })
    }

    /// Each node's membership thread's CPU time, in % of a core.
    fn percents(&self) -> impl Iterator<Item = f64> + '_ {
        let wall = self.wall.as_secs_f64();
        self.used
            .cpu
            .iter()
            .map(move |cpu| cpu.as_secs_f64() * 100.0 / wall)
    }

    /// A node's membership thread's CPU, in % of a core: the mean and the largest.
    pub fn cpu(&self) -> (f64, f64) {
        let total: f64 = self.percents().sum();
        let max = self.percents().fold(0.0, f64::max);
        (total / self.nodes.max(1) as f64, max)
    }

    /// Every membership thread's CPU together, in % of a core.
    pub fn cpu_total(&self) -> f64 {
        self.percents().sum()
    }

    /// Peers declared dead in the window, over every node.
    pub fn deaths(&self) -> u64 {
        self.used.deaths.iter().sum()
    }

    /// Whether the farm stayed as it was: no peer dead, no new view, every node still up
    /// with every other alive.
    pub fn stable(&self) -> bool {
        self.deaths() == 0 && self.used.views.iter().all(|&views| views == 0) && self.settled_at_end
    }
}

/// What `herd-perf membership` measured.
#[derive(Clone, Debug)]
pub struct MembershipReport {
    /// The command line that reproduces it.
    pub command: String,
    /// The machine, in a sentence.
    pub machine: String,
    /// The window asked for, in seconds.
    pub seconds: u32,
    /// A row per farm size, in the order asked.
    pub farms: Vec<FarmCost>,
}

impl MembershipReport {
    /// The report as a markdown section.
    pub fn markdown(&self) -> String {
        let mut text = String::new();
        let _ = writeln!(
            text,
            "## Membership cost\n\n`{}`\n\n{}\n",
            self.command, self.machine
        );
        let _ = writeln!(
            text,
            "Each farm: that many real membership threads (herd's driver, SCHED_FIFO as in \
             `herd run`) in one process, each with its own UDP socket on its own address \
             (198.18.0.x on the loopback of one network namespace), over a dataplane that does \
             nothing; {} buckets; measured for {} s once every node was up and the farm had \
             agreed on the view of them all. Each farm runs at the heartbeat settings its \
             configuration file would give it: the farm's default for its size ({} / {} ms in \
             a small farm, a longer period in a larger one, so that a node receives at most {} \
             heartbeats a second), with the keys --heartbeat-ms and --dead-after-ms set in its \
             place. Datagrams are the kernel's UDP counts in the namespace, per node; the \
             payload is the loopback's bytes per packet less 42 bytes of headers (an Ethernet \
             frame carries the same 42). CPU is each membership thread's own CPU clock (user + \
             system): on a loopback, the kernel's delivery of a datagram to its receiver runs in \
             the sender's system call and is counted to the sender, which a NIC's receive \
             interrupt would take on a real farm. The nodes share this machine's cores: a farm \
             whose threads together need most of them (the column of all nodes together) \
             starves itself, sends fewer heartbeats than asked and declares its own nodes dead, \
             which a real farm of one node per host does not. \
             Stable: no peer declared dead, no new view, every node still up.\n",
            herd_config::Farm::DEFAULT_BUCKETS,
            self.seconds,
            herd_config::Membership::DEFAULT_HEARTBEAT_MS,
            herd_config::Membership::DEFAULT_DEAD_AFTER_MS,
            herd_config::Membership::DEFAULT_HEARTBEATS_PER_S
        );
        let _ = writeln!(
            text,
            "| nodes | heartbeat / dead_after, ms | the farm's default | heartbeats / node / s | \
             datagrams sent / node / s | datagrams received / node / s | UDP payload, bytes / datagram | membership thread, % of a core: mean | \
             max | all nodes together, % of a core | dropped datagrams | settled in | stable |"
        );
        let _ = writeln!(
            text,
            "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
        );
        for farm in &self.farms {
            let (mean, max) = farm.cpu();
            let _ = writeln!(
                text,
                "| {} | {} / {} | {} | {:.1} | {:.0} | {:.0} | {} | {:.3} | {:.3} | {:.2} | {} | \
                 {:.1} s | {} |",
                farm.nodes,
                farm.timing.membership.heartbeat_ms,
                farm.timing.membership.dead_after_ms,
                if farm.timing.default { "yes" } else { "no" },
                farm.heartbeats(),
                farm.sent(),
                farm.received(),
                farm.payload()
                    .map_or("-".to_owned(), |bytes| format!("{bytes:.0}")),
                mean,
                max,
                farm.cpu_total(),
                farm.counts.udp_dropped,
                farm.settled_in.as_secs_f64(),
                stability(farm)
            );
        }
        if let Some(farm) = self.farms.iter().find(|farm| farm.nodes == GOAL_NODES) {
            let (mean, max) = farm.cpu();
            let met = max < GOAL_PERCENT && farm.stable();
            let _ =
                writeln!(
                text,
                "\nGoal: a farm of {GOAL_NODES} nodes stays stable with each node's membership \
                 under {GOAL_PERCENT} % of a core, at heartbeat {} ms, dead_after {} ms \
                 ({}): mean {mean:.3} %, max {max:.3} %, {}: **{}**.",
                farm.timing.membership.heartbeat_ms,
                farm.timing.membership.dead_after_ms,
                if farm.timing.default {
                    "the farm's default"
                } else {
                    "not the farm's default"
                },
                if farm.stable() { "stable" } else { "not stable" },
                if met { "met" } else { "not met" }
            );
        }
        text
    }
}

/// The stable column: `yes`, or what went wrong.
fn stability(farm: &FarmCost) -> String {
    if farm.stable() {
        return "yes".to_owned();
    }
    let views: u64 = farm.used.views.iter().sum();
    let mut what = vec![format!("{} peer dead", farm.deaths())];
    if views > 0 {
        what.push(format!("{views} new views"));
    }
    if !farm.settled_at_end {
        what.push("not all up at the end".to_owned());
    }
    format!("**no**: {}", what.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn farm(nodes: usize, cpu_ms: &[u64], deaths: u64) -> FarmCost {
        FarmCost {
            nodes,
            timing: Timing::resolve(nodes, None, None).unwrap(),
            wall: Duration::from_secs(10),
            settled_in: Duration::from_millis(1500),
            used: Sample {
                cpu: cpu_ms.iter().map(|&ms| Duration::from_millis(ms)).collect(),
                heartbeats: vec![200; nodes],
                deaths: std::iter::once(deaths)
                    .chain(std::iter::repeat(0))
                    .take(nodes)
                    .collect(),
                views: vec![0; nodes],
            },
            counts: Counts {
                udp_in: 200 * nodes as u64 * (nodes as u64 - 1),
                udp_out: 200 * nodes as u64 * (nodes as u64 - 1),
                udp_dropped: 0,
                loopback_packets: 1000,
                loopback_bytes: 1000 * (42 + 300),
            },
            settled_at_end: deaths == 0,
        }
    }

    #[test]
    fn figures_are_per_node_and_per_second() {
        let farm = farm(3, &[10, 20, 60], 0);
        assert_eq!(farm.heartbeats(), 20.0);
        assert_eq!(farm.sent(), 40.0);
        assert_eq!(farm.received(), 40.0);
        assert_eq!(farm.payload(), Some(300.0));
        let (mean, max) = farm.cpu();
        assert!((mean - 0.3).abs() < 1e-9, "{mean}");
        assert!((max - 0.6).abs() < 1e-9, "{max}");
        assert!((farm.cpu_total() - 0.9).abs() < 1e-9);
        assert!(farm.stable());
    }

    #[test]
    fn the_goal_is_judged_on_the_largest_node_of_a_stable_64_node_farm() {
        let report = |farms| MembershipReport {
            command: "herd-perf membership".to_owned(),
            machine: "Machine: test.".to_owned(),
            seconds: 10,
            farms,
        };
        let text = report(vec![farm(3, &[10, 10, 10], 0)]).markdown();
        assert!(
            text.contains(
                "| 3 | 40 / 160 | yes | 20.0 | 40 | 40 | 300 | 0.100 | 0.100 | 0.30 | 0 | 1.5 s \
                 | yes |"
            ),
            "{text}"
        );
        assert!(!text.contains("Goal"), "{text}");
        let text = report(vec![farm(64, &[50; 64], 0)]).markdown();
        assert!(text.contains("| 64 | 200 / 800 | yes | "), "{text}");
        assert!(
            text.contains(
                "at heartbeat 200 ms, dead_after 800 ms (the farm's default): mean 0.500 %, \
                 max 0.500 %, stable: **met**"
            ),
            "{text}"
        );
        let mut busy = vec![50; 64];
        busy[7] = 120;
        let text = report(vec![farm(64, &busy, 0)]).markdown();
        assert!(text.contains("max 1.200 %, stable: **not met**"), "{text}");
        let mut given = farm(64, &[50; 64], 0);
        given.timing = Timing::resolve(64, Some(50), None).unwrap();
        let text = report(vec![given]).markdown();
        assert!(text.contains("| 64 | 50 / 800 | no | "), "{text}");
        assert!(
            text.contains("at heartbeat 50 ms, dead_after 800 ms (not the farm's default)"),
            "{text}"
        );
        let text = report(vec![farm(64, &[50; 64], 2)]).markdown();
        assert!(text.contains("not stable: **not met**"), "{text}");
        assert!(
            text.contains("**no**: 2 peer dead, not all up at the end"),
            "{text}"
        );
    }
}
