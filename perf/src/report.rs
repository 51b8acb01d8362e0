//! The results: one row per contender and traffic, the eBPF program's cost, and the issue's
//! goals as ratios within the same run; as a markdown table or as JSON.

use std::fmt::Write;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::bench::Measurement;
use crate::contender::Kind;
use crate::cost::Cost;
use crate::handoff::HandoffCost;
use crate::mix::Traffic;

/// Everything one run measured.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The command line that produced it.
    pub command: String,
    /// How the run was set up.
    pub setup: Setup,
    /// One row per contender and traffic.
    pub rows: Vec<Row>,
    /// The eBPF program's cost per frame kind.
    pub costs: Vec<Cost>,
    /// The AF_XDP mode's ways back to the stack, each on its own (empty when the afxdp mode
    /// is not measured).
    pub handoffs: Vec<HandoffCost>,
    /// The goals, each met or short.
    pub goals: Vec<Goal>,
}

/// How the run was set up.
#[derive(Debug, Serialize)]
pub struct Setup {
    /// The window of each row, in seconds.
    pub seconds: f64,
    /// The generator's core.
    pub generator_core: usize,
    /// The core of the receiver's NAPI thread and latency readers.
    pub receiver_core: usize,
    /// Distinct clients.
    pub flows: u32,
    /// The share of IPv6 packets.
    pub ipv6_share: f64,
    /// The frame sizes, in equal shares.
    pub sizes: Vec<u16>,
    /// The share of the mix's packets node 0 owns.
    pub owned_share: f64,
}

/// One contender on one traffic. Rates are in millions of packets per second.
#[derive(Debug, Serialize)]
pub struct Row {
    /// The contender.
    pub contender: Kind,
    /// Its name in the table.
    pub name: &'static str,
    /// The traffic.
    pub traffic: Traffic,
    /// The window, in seconds.
    pub seconds: f64,
    /// What the generator sent.
    pub sent_mpps: f64,
    /// What the contender's counters saw.
    pub received_mpps: f64,
    /// What it dropped.
    pub dropped_mpps: f64,
    /// What it let through to the node.
    pub accepted_mpps: f64,
    /// Accepted over received.
    pub accepted_share: f64,
    /// The share it should accept.
    pub expected_share: f64,
    /// The CPU the receiver's threads used (the veth NAPI thread, and the latency readers
    /// when packets are accepted), in percent of one core.
    pub cpu_percent: f64,
    /// That CPU time per received packet, in nanoseconds.
    pub cpu_ns_per_packet: Option<f64>,
    /// What one receiver core would take at that cost, fully busy: 1000 / ns per packet.
    pub mpps_per_core: Option<f64>,
    /// The latency of accepted packets read by the latency sockets, in microseconds.
    pub latency_us: Option<Latency>,
    /// The rate per core over the baseline's.
    pub vs_baseline: Option<f64>,
    /// The received rate over the baseline's.
    pub received_vs_baseline: Option<f64>,
}

/// A latency distribution, in microseconds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Latency {
    /// How many packets were timed.
    pub samples: u64,
    /// The median.
    pub p50: f64,
    /// The 99th percentile.
    pub p99: f64,
    /// The largest.
    pub max: f64,
}

impl Latency {
    /// The summary of a histogram of nanoseconds.
    pub fn of(histogram: &Histogram<u64>) -> Self {
        let us = |ns: u64| ns as f64 / 1000.0;
        Self {
            samples: histogram.len(),
            p50: us(histogram.value_at_quantile(0.5)),
            p99: us(histogram.value_at_quantile(0.99)),
            max: us(histogram.max()),
        }
    }
}

/// One of the goals.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Goal {
    /// What is compared.
    pub goal: String,
    /// The measured value: for rates, the ratio of the rates one receiver core reaches.
    pub measured: f64,
    /// For rates, the ratio of the rates received in this run, which the generator may have
    /// capped.
    pub received_ratio: Option<f64>,
    /// The target.
    pub target: f64,
    /// Whether the target is a ceiling (else a floor).
    pub at_most: bool,
    /// The unit of both: `×` for ratios, `Mpps`, `ns`.
    pub unit: &'static str,
    /// Whether the goal is met.
    pub met: bool,
}

impl Goal {
    fn at_least(
        goal: String,
        (measured, received_ratio): (f64, Option<f64>),
        target: f64,
        unit: &'static str,
    ) -> Self {
        Self {
            goal,
            measured,
            received_ratio,
            target,
            at_most: false,
            unit,
            met: measured >= target,
        }
    }

    fn at_most(goal: String, measured: f64, target: f64, unit: &'static str) -> Self {
        Self {
            goal,
            measured,
            received_ratio: None,
            target,
            at_most: true,
            unit,
            met: measured <= target,
        }
    }
}

impl Row {
    /// The row of a measurement; the ratios to the baseline are filled by [`Report::new`].
    fn new(m: &Measurement) -> Self {
        let seconds = m.elapsed.as_secs_f64();
        let mpps = |packets: u64| {
            if seconds > 0.0 {
                packets as f64 / seconds / 1e6
            } else {
                0.0
            }
        };
        let received = m.counts.received;
        let ns_per_packet = ratio(m.receiver_cpu.as_nanos() as f64, received as f64);
        Row {
            contender: m.kind,
            name: m.kind.label(),
            traffic: m.traffic,
            seconds,
            sent_mpps: mpps(m.sent),
            received_mpps: mpps(received),
            dropped_mpps: mpps(m.counts.dropped),
            accepted_mpps: mpps(m.counts.accepted),
            accepted_share: ratio(m.counts.accepted as f64, received as f64).unwrap_or(0.0),
            expected_share: m.expected_share,
            cpu_percent: ratio(m.receiver_cpu.as_secs_f64() * 100.0, seconds).unwrap_or(0.0),
            cpu_ns_per_packet: ns_per_packet,
            mpps_per_core: ns_per_packet.and_then(|ns| ratio(1000.0, ns)),
            latency_us: m.latency.as_ref().map(Latency::of),
            vs_baseline: None,
            received_vs_baseline: None,
        }
    }
}

/// `a / b`, unless `b` is zero.
fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0).then(|| a / b)
}

impl Report {
    /// The report of a run's measurements and costs.
    pub fn new(
        command: String,
        setup: Setup,
        measurements: &[Measurement],
        costs: Vec<Cost>,
    ) -> Self {
        let mut rows: Vec<Row> = measurements.iter().map(Row::new).collect();
        let baseline = rows
            .iter()
            .find(|r| r.contender == Kind::Baseline)
            .map(|r| (r.mpps_per_core, r.received_mpps));
        if let Some((per_core, received)) = baseline {
            for row in &mut rows {
                row.vs_baseline = row
                    .mpps_per_core
                    .zip(per_core)
                    .and_then(|(row, base)| ratio(row, base));
                row.received_vs_baseline = ratio(row.received_mpps, received);
            }
        }
        let goals = goals(&rows, &costs);
        Self {
            command,
            setup,
            rows,
            costs,
            handoffs: Vec::new(),
            goals,
        }
    }

    /// The report as markdown.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let s = &self.setup;
        let sizes: Vec<String> = s.sizes.iter().map(u16::to_string).collect();
        // Writing to a String cannot fail.
        let _ = writeln!(
            out,
            "`{}`: {} s per row after a 0.5 s warm-up; generator on core {}, receiver (veth NAPI \
             thread, latency sockets) on core {}; {} flows, {:.0} % IPv6, {}-byte frames; node 0 \
             of 3 owns {:.1} % of the mix.\n",
            self.command,
            s.seconds,
            s.generator_core,
            s.receiver_core,
            s.flows,
            s.ipv6_share * 100.0,
            sizes.join("/"),
            s.owned_share * 100.0
        );
        out.push_str(
            "| contender | traffic | sent Mpps | received Mpps | dropped Mpps | accepted Mpps \
             (share) | receiver CPU | ns/packet | Mpps per core | vs baseline | accepted \
             latency p50 / p99 / max µs |\n\
             | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
        );
        let or_dash = |value: Option<f64>, digits: usize| {
            value.map_or("—".to_owned(), |v| format!("{v:.digits$}"))
        };
        for r in &self.rows {
            let latency = r.latency_us.map_or("—".to_owned(), |l| {
                format!("{:.0} / {:.0} / {:.0}", l.p50, l.p99, l.max)
            });
            let _ = writeln!(
                out,
                "| {} | {} | {:.2} | {:.2} | {:.2} | {:.2} ({:.1} %) | {:.0} % | {} | {} | {} | {} |",
                r.name,
                r.traffic.label(),
                r.sent_mpps,
                r.received_mpps,
                r.dropped_mpps,
                r.accepted_mpps,
                r.accepted_share * 100.0,
                r.cpu_percent,
                or_dash(r.cpu_ns_per_packet, 0),
                or_dash(r.mpps_per_core, 2),
                or_dash(r.vs_baseline, 2),
                latency,
            );
        }
        out.push_str(
            "\nsent: what the generator transmitted; received: what the contender's counters \
             saw (the rest was lost in the veth ring while the receiver was busy or waking). \
             receiver CPU: the CPU time, over the window, of the receiver's threads on its core: \
             the veth NAPI thread (XDP, nftables, the stack) and, where packets are accepted, \
             the latency sockets' readers; ns/packet: that time over the packets received; Mpps \
             per core: what that cost allows on one busy core (a receiver that is not busy also \
             pays for waking up, so its cost is a little overstated); vs baseline: Mpps per \
             core over the bare XDP_DROP's. latency: from the generator's stamp to the read by a \
             UDP socket on the VIP, with the readers at real-time priority.\n",
        );
        if !self.costs.is_empty() {
            out.push_str(
                "\neBPF program cost, BPF_PROG_TEST_RUN, median ns per packet:\n\n\
                 | frame | herd | empty program | herd − empty |\n\
                 | --- | ---: | ---: | ---: |\n",
            );
            for c in &self.costs {
                let _ = writeln!(
                    out,
                    "| {} | {:.0} | {:.0} | {:.0} |",
                    c.frame,
                    c.herd_ns,
                    c.empty_ns,
                    c.added_ns()
                );
            }
        }
        if !self.handoffs.is_empty() {
            out.push_str(
                "\nThe AF_XDP mode's way back to the stack, one thread writing owned UDP frames \
                 alone on the receiver's core, a socket on the VIP reading on the other:\n\n",
            );
            out.push_str(&crate::handoff::markdown(&self.handoffs));
        }
        if !self.goals.is_empty() {
            out.push_str("\n| goal | measured | target | |\n| --- | ---: | ---: | --- |\n");
            for g in &self.goals {
                let (bound, value) = match g.unit {
                    "ns" | "µs" => (
                        format!("{:.0} {}", g.target, g.unit),
                        format!("{:.0} {}", g.measured, g.unit),
                    ),
                    unit => {
                        let received = g
                            .received_ratio
                            .map_or(String::new(), |r| format!(" (received: {r:.2} {unit})"));
                        (
                            format!("{} {unit}", g.target),
                            format!("{:.2} {unit} per core{received}", g.measured),
                        )
                    }
                };
                let _ = writeln!(
                    out,
                    "| {} | {value} | {} {bound} | {} |",
                    g.goal,
                    if g.at_most { "≤" } else { "≥" },
                    if g.met { "PASS" } else { "SHORT" }
                );
            }
        }
        out
    }
}

/// The goals that the rows and costs of this run allow to judge. Rates are compared
/// per receiver core: the generator, one core, cannot always send more than a receiver core
/// takes, and then the received rates only say that both kept up.
fn goals(rows: &[Row], costs: &[Cost]) -> Vec<Goal> {
    let row = |kind: Kind, traffic: Traffic| {
        rows.iter()
            .find(|r| r.contender == kind && r.traffic == traffic)
    };
    let compare = |goal: &str, a: Option<&Row>, b: Option<&Row>, target: f64| {
        let (a, b) = (a?, b?);
        let per_core = ratio(a.mpps_per_core?, b.mpps_per_core?)?;
        let received = ratio(a.received_mpps, b.received_mpps);
        Some(Goal::at_least(
            goal.to_owned(),
            (per_core, received),
            target,
            "×",
        ))
    };
    let herd_drops = row(Kind::Xdp, Traffic::DropPath);
    let mut goals: Vec<Goal> = [
        compare(
            "herd xdp drop path / bare XDP_DROP",
            herd_drops,
            row(Kind::Baseline, Traffic::Mix),
            0.9,
        ),
        compare(
            "herd xdp / nftables jhash, drop path",
            herd_drops,
            row(Kind::Nftables, Traffic::DropPath),
            3.0,
        ),
        compare(
            "herd afxdp / herd xdp, mix",
            row(Kind::Afxdp, Traffic::Mix),
            row(Kind::Xdp, Traffic::Mix),
            0.5,
        ),
        compare(
            "herd afxdp / herd xdp, drop path",
            row(Kind::Afxdp, Traffic::DropPath),
            herd_drops,
            0.8,
        ),
    ]
    .into_iter()
    .flatten()
    .collect();
    if let Some(afxdp) = row(Kind::Afxdp, Traffic::DropPath) {
        if let Some(per_core) = afxdp.mpps_per_core {
            goals.push(Goal::at_least(
                "herd afxdp drop path, one worker (copy mode)".to_owned(),
                (per_core, Some(afxdp.received_mpps)),
                2.0,
                "Mpps",
            ));
        }
    }
    if let Some(latency) = row(Kind::Afxdp, Traffic::Mix).and_then(|r| r.latency_us.as_ref()) {
        goals.push(Goal::at_most(
            "herd afxdp accepted-packet latency p99, mix".to_owned(),
            latency.p99,
            1000.0,
            "µs",
        ));
    }
    if let Some(worst) = costs
        .iter()
        .max_by(|a, b| a.added_ns().total_cmp(&b.added_ns()))
    {
        goals.push(Goal::at_most(
            format!(
                "eBPF program above an empty one (worst frame: {})",
                worst.frame
            ),
            worst.added_ns(),
            20.0,
            "ns",
        ));
    }
    goals
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::contender::Counts;

    /// A 2-second window with `received` packets, `accepted` of them accepted, and the
    /// receiver busy for `busy_ms`.
    fn measurement(
        kind: Kind,
        traffic: Traffic,
        received: u64,
        accepted: u64,
        busy_ms: u64,
    ) -> Measurement {
        let mut latency = crate::latency::histogram().unwrap();
        latency.record(20_000).unwrap();
        latency.record(40_000).unwrap();
        Measurement {
            kind,
            traffic,
            elapsed: Duration::from_secs(2),
            sent: 10_000_000,
            counts: Counts {
                received,
                dropped: received - accepted,
                accepted,
            },
            receiver_cpu: Duration::from_millis(busy_ms),
            expected_share: if accepted > 0 { 1.0 / 3.0 } else { 0.0 },
            latency: (accepted > 0).then_some(latency),
            stack: None,
            program_runs: None,
        }
    }

    fn setup() -> Setup {
        Setup {
            seconds: 2.0,
            generator_core: 0,
            receiver_core: 1,
            flows: 1024,
            ipv6_share: 0.25,
            sizes: vec![64],
            owned_share: 1.0 / 3.0,
        }
    }

    fn report() -> Report {
        // Per packet: baseline 50 ns, nftables 500 ns (drop path), herd 60 ns (drop path).
        let measurements = [
            measurement(Kind::Baseline, Traffic::Mix, 10_000_000, 0, 500),
            measurement(Kind::Nftables, Traffic::Mix, 3_000_000, 1_000_000, 1800),
            measurement(Kind::Nftables, Traffic::DropPath, 4_000_000, 0, 2000),
            measurement(Kind::Xdp, Traffic::Mix, 6_000_000, 2_000_000, 1800),
            measurement(Kind::Xdp, Traffic::DropPath, 9_600_000, 0, 576),
        ];
        let costs = vec![
            Cost {
                frame: "IPv4 UDP, owned",
                herd_ns: 40.0,
                empty_ns: 25.0,
            },
            Cost {
                frame: "IPv6 UDP, owned",
                herd_ns: 60.0,
                empty_ns: 25.0,
            },
        ];
        Report::new("herd-perf".into(), setup(), &measurements, costs)
    }

    #[test]
    fn rows_hold_rates_shares_and_cpu_cost() {
        let report = report();
        let xdp = &report.rows[3];
        assert_eq!(xdp.received_mpps, 3.0);
        assert_eq!(xdp.accepted_mpps, 1.0);
        assert!((xdp.accepted_share - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(xdp.cpu_percent, 90.0);
        // 1.8 s busy over 6 million packets.
        assert!((xdp.cpu_ns_per_packet.unwrap() - 300.0).abs() < 1e-9);
        assert!((xdp.mpps_per_core.unwrap() - 1000.0 / 300.0).abs() < 1e-9);
        assert!((xdp.vs_baseline.unwrap() - 50.0 / 300.0).abs() < 1e-9);
        assert_eq!(xdp.received_vs_baseline, Some(0.6));
        let latency = xdp.latency_us.unwrap();
        assert_eq!(latency.samples, 2);
        assert!((latency.p50 - 20.0).abs() < 0.1);
        assert!((latency.max - 40.0).abs() < 0.1);
        assert_eq!(report.rows[0].latency_us, None);
        assert_eq!(report.rows[0].vs_baseline, Some(1.0));
    }

    #[test]
    fn goals_compare_rows_of_the_same_run_per_core() {
        let goals = report().goals;
        let found: Vec<(&str, bool)> = goals.iter().map(|g| (g.goal.as_str(), g.met)).collect();
        assert_eq!(
            found,
            [
                ("herd xdp drop path / bare XDP_DROP", false),
                ("herd xdp / nftables jhash, drop path", true),
                (
                    "eBPF program above an empty one (worst frame: IPv6 UDP, owned)",
                    false
                ),
            ]
        );
        assert!((goals[0].measured - 50.0 / 60.0).abs() < 1e-9);
        assert_eq!(goals[0].received_ratio, Some(0.96));
        assert!((goals[1].measured - 500.0 / 60.0).abs() < 1e-9);
        assert_eq!(goals[2].measured, 35.0);
        assert_eq!(goals[2].received_ratio, None);
    }

    #[test]
    fn the_afxdp_mode_is_compared_with_the_xdp_mode_of_the_same_run() {
        // Per packet: xdp 300 ns on the mix and 60 ns on the drop path; afxdp 500 ns and
        // 100 ns.
        let measurements = [
            measurement(Kind::Xdp, Traffic::Mix, 6_000_000, 2_000_000, 1800),
            measurement(Kind::Xdp, Traffic::DropPath, 9_600_000, 0, 576),
            measurement(Kind::Afxdp, Traffic::Mix, 3_000_000, 1_000_000, 1500),
            measurement(Kind::Afxdp, Traffic::DropPath, 6_000_000, 0, 600),
        ];
        let goals = Report::new("herd-perf".into(), setup(), &measurements, Vec::new()).goals;
        let found: Vec<(&str, bool)> = goals.iter().map(|g| (g.goal.as_str(), g.met)).collect();
        assert_eq!(
            found,
            [
                ("herd afxdp / herd xdp, mix", true),
                ("herd afxdp / herd xdp, drop path", false),
                ("herd afxdp drop path, one worker (copy mode)", true),
                ("herd afxdp accepted-packet latency p99, mix", true),
            ]
        );
        assert!((goals[0].measured - 300.0 / 500.0).abs() < 1e-9);
        assert!((goals[1].measured - 60.0 / 100.0).abs() < 1e-9);
        assert_eq!(goals[3].unit, "µs");
        assert!(
            (goals[3].measured - 40.0).abs() < 0.1,
            "{}",
            goals[3].measured
        );
    }

    #[test]
    fn goals_need_their_rows() {
        let measurements = [measurement(Kind::Xdp, Traffic::DropPath, 100, 0, 1)];
        let report = Report::new("herd-perf".into(), setup(), &measurements, Vec::new());
        assert!(report.goals.is_empty());
        assert_eq!(report.rows[0].vs_baseline, None);
    }

    #[test]
    fn an_idle_receiver_has_no_cost_per_packet() {
        let measurements = [measurement(Kind::Baseline, Traffic::Mix, 0, 0, 0)];
        let report = Report::new("herd-perf".into(), setup(), &measurements, Vec::new());
        assert_eq!(report.rows[0].cpu_ns_per_packet, None);
        assert_eq!(report.rows[0].mpps_per_core, None);
        assert!(report.markdown().contains("| 0 % | — | — | — | — |"));
    }

    #[test]
    fn markdown_has_the_handoff_table_only_when_measured() {
        let mut report = report();
        assert!(!report.markdown().contains("way back to the stack"));
        report.handoffs = vec![HandoffCost {
            handoff: crate::handoff::Handoff::TapWrite,
            frames_per_second: 700_000.0,
            writer_ns: 1431.2,
            helpers_ns: 0.4,
            delivered: 0.983,
            read: 0.5,
        }];
        assert!(report
            .markdown()
            .contains("| TAP, write(2) per frame | 0.70 M | 1431 ns | 0 ns | 98.3 % | 50.0 % |"));
    }

    #[test]
    fn markdown_has_a_row_per_measurement_and_a_verdict_per_goal() {
        let text = report().markdown();
        assert!(text.starts_with("`herd-perf`: 2 s per row"));
        assert!(text.contains(
            "| herd xdp | mix | 5.00 | 3.00 | 2.00 | 1.00 (33.3 %) | 90 % | 300 | 3.33 | 0.17 | \
             20 / 40 / 40 |"
        ));
        assert!(text.contains(
            "| bare XDP_DROP | mix | 5.00 | 5.00 | 5.00 | 0.00 (0.0 %) | 25 % | 50 | 20.00 | \
             1.00 | — |"
        ));
        assert!(text.contains("| IPv6 UDP, owned | 60 | 25 | 35 |"));
        assert!(text.contains(
            "| herd xdp drop path / bare XDP_DROP | 0.83 × per core (received: 0.96 ×) | ≥ 0.9 × \
             | SHORT |"
        ));
        assert!(text.contains(
            "| eBPF program above an empty one (worst frame: IPv6 UDP, owned) | 35 ns | ≤ 20 ns \
             | SHORT |"
        ));
        assert_eq!(text.matches("SHORT").count(), 2);
        assert_eq!(text.matches("PASS").count(), 1);
    }

    #[test]
    fn json_names_every_field() {
        let json = serde_json::to_value(report()).unwrap();
        assert_eq!(json["rows"][3]["contender"], "xdp");
        assert_eq!(json["rows"][4]["traffic"], "drop-path");
        assert_eq!(json["goals"][1]["met"], true);
        assert_eq!(json["costs"][1]["frame"], "IPv6 UDP, owned");
        assert!(json["rows"][0]["latency_us"].is_null());
    }
}
