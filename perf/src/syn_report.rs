//! The SYN flood's results: per herd mode and flood, the SYNs received and absorbed, what the
//! receiver's TCP stack did with them and the receiver's CPU per SYN; as markdown or JSON.

use std::fmt::Write;

use serde::Serialize;

use crate::bench::Measurement;
use crate::contender::Kind;
use crate::mix::Traffic;

/// Everything one SYN flood run measured.
#[derive(Debug, Serialize)]
pub struct SynFloodReport {
    /// The command line that produced it.
    pub command: String,
    /// How the run was set up.
    pub setup: SynSetup,
    /// One row per herd mode and flood.
    pub rows: Vec<SynRow>,
}

/// How the run was set up.
#[derive(Debug, Serialize)]
pub struct SynSetup {
    /// The window of each row, in seconds.
    pub seconds: f64,
    /// The generator's core.
    pub generator_core: usize,
    /// The core of the receiver's NAPI thread and AF_XDP worker.
    pub receiver_core: usize,
    /// Spoofed client addresses.
    pub flows: u32,
    /// The share of IPv6 SYNs.
    pub ipv6_share: f64,
    /// The share of the mixed flood node 0 owns.
    pub owned_share: f64,
}

/// One herd mode under one flood. Rates are in thousands of SYNs (or segments) per second.
#[derive(Debug, Serialize)]
pub struct SynRow {
    /// The mode.
    pub contender: Kind,
    /// Its name in the table.
    pub name: &'static str,
    /// The flood.
    pub traffic: Traffic,
    /// The window, in seconds.
    pub seconds: f64,
    /// What the generator sent.
    pub sent_kps: f64,
    /// What herd's counters saw.
    pub received_kps: f64,
    /// What herd accepted and handed to the stack: the SYNs of owned buckets absorbed.
    pub absorbed_kps: f64,
    /// Absorbed over received.
    pub absorbed_share: f64,
    /// The share of the SYNs node 0 owns.
    pub expected_share: f64,
    /// Segments the receiver's TCP stack took in.
    pub stack_in_kps: f64,
    /// Segments it sent: its SYN-ACKs.
    pub syn_acks_kps: f64,
    /// Of those, SYN-ACKs carrying a SYN cookie.
    pub cookies_kps: f64,
    /// SYNs its listeners dropped.
    pub listen_drops_kps: f64,
    /// Segments with a bad checksum (a broken generator, if any).
    pub checksum_errors: u64,
    /// The CPU time of the receiver's threads (the veth NAPI thread: XDP and the stack; in
    /// afxdp mode also herd's worker, which hands SYNs to the stack), in percent of one core.
    pub cpu_percent: f64,
    /// That CPU time per received SYN, in nanoseconds.
    pub cpu_ns_per_syn: Option<f64>,
    /// The time herd's eBPF program took per packet, as the kernel timed it (the classifier
    /// in xdp mode, the redirect program in afxdp mode), in nanoseconds.
    pub program_ns: Option<f64>,
    /// What one receiver core would take at that cost, fully busy, in thousands of SYNs per
    /// second.
    pub kps_per_core: Option<f64>,
}

/// `a / b`, unless `b` is zero.
fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0).then(|| a / b)
}

impl SynRow {
    fn new(m: &Measurement) -> Self {
        let seconds = m.elapsed.as_secs_f64();
        let kps = |count: u64| ratio(count as f64 / 1e3, seconds).unwrap_or(0.0);
        let stack = m.stack.unwrap_or_default();
        let received = m.counts.received;
        let ns_per_syn = ratio(m.receiver_cpu.as_nanos() as f64, received as f64);
        Self {
            contender: m.kind,
            name: m.kind.label(),
            traffic: m.traffic,
            seconds,
            sent_kps: kps(m.sent),
            received_kps: kps(received),
            absorbed_kps: kps(m.counts.accepted),
            absorbed_share: ratio(m.counts.accepted as f64, received as f64).unwrap_or(0.0),
            expected_share: m.expected_share,
            stack_in_kps: kps(stack.segments_in),
            syn_acks_kps: kps(stack.segments_out),
            cookies_kps: kps(stack.cookies_sent),
            listen_drops_kps: kps(stack.listen_drops),
            checksum_errors: stack.checksum_errors,
            cpu_percent: ratio(m.receiver_cpu.as_secs_f64() * 100.0, seconds).unwrap_or(0.0),
            cpu_ns_per_syn: ns_per_syn,
            program_ns: m.program_runs.and_then(|runs| runs.ns_per_run()),
            kps_per_core: ns_per_syn.and_then(|ns| ratio(1e6, ns)),
        }
    }
}

impl SynFloodReport {
    /// The report of a run's measurements.
    pub fn new(command: String, setup: SynSetup, measurements: &[Measurement]) -> Self {
        Self {
            command,
            setup,
            rows: measurements.iter().map(SynRow::new).collect(),
        }
    }

    /// The report as markdown.
    pub fn markdown(&self) -> String {
        let s = &self.setup;
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = writeln!(
            out,
            "`{}`: {} s per row after a 0.5 s warm-up; generator on core {}, receiver (veth NAPI \
             thread, AF_XDP worker) on core {}; TCP SYNs from {} spoofed addresses with random \
             source ports, {:.0} % IPv6; node 0 of 3 owns every SYN of the owned flood and \
             {:.1} % of the mixed one.\n",
            self.command,
            s.seconds,
            s.generator_core,
            s.receiver_core,
            s.flows,
            s.ipv6_share * 100.0,
            s.owned_share * 100.0
        );
        out.push_str(
            "| mode | flood | sent k/s | received k/s | absorbed k/s (share) | stack took k/s | \
             SYN-ACKs k/s (cookies) | listen drops k/s | receiver CPU | ns/SYN | k/s per core | eBPF ns/SYN |\n\
             | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
        );
        let or_dash = |value: Option<f64>| value.map_or("—".to_owned(), |v| format!("{v:.0}"));
        for r in &self.rows {
            let _ = writeln!(
                out,
                "| {} | {} | {:.0} | {:.0} | {:.0} ({:.1} %) | {:.0} | {:.0} ({:.0}) | {:.0} | \
                 {:.0} % | {} | {} | {} |",
                r.name,
                r.traffic.label(),
                r.sent_kps,
                r.received_kps,
                r.absorbed_kps,
                r.absorbed_share * 100.0,
                r.stack_in_kps,
                r.syn_acks_kps,
                r.cookies_kps,
                r.listen_drops_kps,
                r.cpu_percent,
                or_dash(r.cpu_ns_per_syn),
                or_dash(r.kps_per_core),
                or_dash(r.program_ns),
            );
        }
        out.push_str(
            "\nsent: what the generator transmitted; received: what herd's counters saw (the \
             rest was lost in the veth ring while the receiver was busy); absorbed: the SYNs \
             herd accepted and handed to the stack. stack took, SYN-ACKs, cookies, listen \
             drops: the receiver's kernel counters (Tcp InSegs, OutSegs, TcpExt SyncookiesSent, \
             ListenDrops) over the window, listeners on the VIPs answering. receiver CPU: the \
             CPU time, over the window, of the receiver's threads on its core (the veth NAPI \
             thread, which runs XDP and the stack, and in afxdp mode herd's worker, which hands \
             the SYNs to the stack); ns/SYN: that time over the SYNs received. eBPF ns/SYN: the \
             time herd's XDP program (xdp mode: the classifier; afxdp mode: the redirect \
             program) took per SYN, as the kernel's run-time statistics (BPF_ENABLE_STATS, on \
             for the window) count it.\n",
        );
        let errors: u64 = self.rows.iter().map(|r| r.checksum_errors).sum();
        if errors > 0 {
            let _ = writeln!(
                out,
                "\n**{errors} SYNs had a bad TCP checksum**: the generator is broken; the stack's \
                 figures are not to be trusted."
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::contender::Counts;
    use crate::runtime::Runs;
    use crate::stack::StackCounts;

    fn measurement(kind: Kind, traffic: Traffic, accepted: u64, cookies: u64) -> Measurement {
        Measurement {
            kind,
            traffic,
            elapsed: Duration::from_secs(2),
            sent: 3_000_000,
            counts: Counts {
                received: 2_000_000,
                dropped: 2_000_000 - accepted,
                accepted,
            },
            receiver_cpu: Duration::from_millis(1500),
            expected_share: accepted as f64 / 2e6,
            latency: None,
            program_runs: Some(Runs {
                time: Duration::from_millis(300),
                count: 2_000_000,
            }),
            stack: Some(StackCounts {
                segments_in: accepted,
                segments_out: accepted - 1000,
                cookies_sent: cookies,
                listen_drops: 1000,
                checksum_errors: 0,
            }),
        }
    }

    fn setup() -> SynSetup {
        SynSetup {
            seconds: 2.0,
            generator_core: 0,
            receiver_core: 1,
            flows: 1024,
            ipv6_share: 0.25,
            owned_share: 1.0 / 3.0,
        }
    }

    #[test]
    fn rows_hold_the_rates_the_stack_and_the_cost_per_syn() {
        let measurements = [
            measurement(Kind::Xdp, Traffic::OwnedSyns, 2_000_000, 1_900_000),
            measurement(Kind::Afxdp, Traffic::MixedSyns, 600_000, 590_000),
        ];
        let report = SynFloodReport::new("herd-perf syn-flood".into(), setup(), &measurements);
        let owned = &report.rows[0];
        assert_eq!((owned.sent_kps, owned.received_kps), (1500.0, 1000.0));
        assert_eq!((owned.absorbed_kps, owned.absorbed_share), (1000.0, 1.0));
        assert_eq!((owned.syn_acks_kps, owned.cookies_kps), (999.5, 950.0));
        assert_eq!(owned.listen_drops_kps, 0.5);
        assert_eq!(owned.cpu_percent, 75.0);
        // 1.5 s over 2 million SYNs.
        assert_eq!(owned.cpu_ns_per_syn, Some(750.0));
        assert!((owned.kps_per_core.unwrap() - 1e6 / 750.0).abs() < 1e-9);
        let text = report.markdown();
        assert!(text.starts_with("`herd-perf syn-flood`: 2 s per row"));
        assert!(text.contains(
            "| herd xdp | owned SYNs | 1500 | 1000 | 1000 (100.0 %) | 1000 | 1000 (950) | 0 | \
             75 % | 750 | 1333 | 150 |"
        ));
        assert!(text.contains(
            "| herd afxdp (TAP) | mixed SYNs | 1500 | 1000 | 300 (30.0 %) | 300 | 300 (295) |"
        ));
        assert!(!text.contains("bad TCP checksum"));
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["rows"][1]["traffic"], "mixed-syns");
        assert_eq!(json["rows"][0]["contender"], "xdp");
    }

    #[test]
    fn bad_checksums_are_called_out() {
        let mut m = measurement(Kind::Xdp, Traffic::OwnedSyns, 2_000_000, 0);
        m.stack.as_mut().unwrap().checksum_errors = 12;
        let report = SynFloodReport::new("herd-perf syn-flood".into(), setup(), &[m]);
        assert!(report
            .markdown()
            .contains("**12 SYNs had a bad TCP checksum**"));
    }
}
