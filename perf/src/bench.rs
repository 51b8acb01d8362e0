//! The measurements: for each contender and traffic, the contender set up on the receiver,
//! the generator sending, a warm-up, then a window over which the contender's counters, the
//! CPU time of the receiver's threads and the latency of accepted packets (or, under a SYN
//! flood, the receiver's TCP counters) are taken.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::{self, ScopedJoinHandle};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use hdrhistogram::Histogram;
use herd_testbed::address::{VIP4, VIP6};

use crate::contender::{Contender, Counts, Kind, Receiver};
use crate::farm::{BenchFarm, PORT, SYN_PORT};
use crate::generator::{self, Generator};
use crate::latency::{self, Listen};
use crate::mix::{self, Clients, MixSpec, Template, Traffic};
use crate::runtime::{Runs, Timing};
use crate::sched;
use crate::stack::{self, StackCounts};
use crate::topology::Topology;

/// Sending before the window opens: the receiver's rings and caches reach a steady state.
const WARM_UP: Duration = Duration::from_millis(500);
/// How often waits look at the interrupt flag and the generator.
const TICK: Duration = Duration::from_millis(50);
/// How long a latency reader may take to listen.
const READER_START: Duration = Duration::from_secs(2);
/// How long the generator may outlive its window if the harness fails to stop it.
const GENERATOR_GRACE: Duration = Duration::from_secs(10);

/// What to measure and where.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The window of each measurement.
    pub window: Duration,
    /// The traffic.
    pub spec: MixSpec,
    /// The contenders, in order.
    pub contenders: Vec<Kind>,
    /// The core the generator is pinned to.
    pub generator_core: usize,
    /// The core of the receiver's NAPI thread and latency readers.
    pub receiver_core: usize,
}

/// One contender on one traffic.
#[derive(Debug)]
pub struct Measurement {
    /// The contender.
    pub kind: Kind,
    /// The traffic.
    pub traffic: Traffic,
    /// The window's length.
    pub elapsed: Duration,
    /// Packets the generator sent in the window.
    pub sent: u64,
    /// Packets the contender counted in the window.
    pub counts: Counts,
    /// The CPU time of the receiver's threads over the window: the veth NAPI thread (XDP,
    /// nftables, the stack) and the latency readers (the application).
    pub receiver_cpu: Duration,
    /// The share of the packets the contender should accept.
    pub expected_share: f64,
    /// The latencies of accepted packets read by the latency sockets (ns), if any was read.
    pub latency: Option<Histogram<u64>>,
    /// Under a SYN flood, what the receiver's TCP stack counted in the window.
    pub stack: Option<StackCounts>,
    /// Under a SYN flood, the kernel's timing of herd's eBPF program over the window.
    pub program_runs: Option<Runs>,
}

/// The clients and templates of one traffic.
struct Prepared {
    clients: Clients,
    templates: Vec<Template>,
    owned_share: f64,
}

impl Prepared {
    /// Chooses clients that herd and the nftables rule both keep, or both drop, so that every
    /// contender sees the same owned share.
    fn new(spec: &MixSpec, owned_share: f64, farm: &BenchFarm) -> anyhow::Result<Self> {
        let keeps = |addr, port| {
            let herd = farm.herd_keeps(addr, port);
            (herd == BenchFarm::nft_keeps(addr)).then_some(herd)
        };
        let clients = Clients::choose(spec, owned_share, keeps)?;
        Ok(Self {
            templates: mix::templates(spec, &clients),
            owned_share: clients.owned_share(spec.ipv6_share),
            clients,
        })
    }

    /// A SYN flood with `owned_share` of its SYNs in node 0's buckets. Only herd is measured on
    /// it, so only herd's view of the owner matters.
    fn syn_flood(spec: &MixSpec, owned_share: f64, farm: &BenchFarm) -> anyhow::Result<Self> {
        let keeps = |addr: IpAddr, _port| Some(farm.herd_keeps_syn(addr));
        let clients = Clients::choose(spec, owned_share, keeps)?;
        Ok(Self {
            templates: mix::syn_templates(spec.ipv6_share, &clients),
            owned_share: clients.owned_share(spec.ipv6_share),
            clients,
        })
    }
}

/// The traffics of one run; each contender is measured on those of its traffics that are
/// here.
pub struct Traffics {
    prepared: Vec<(Traffic, Prepared)>,
}

impl Traffics {
    /// The dataplane comparison's: the mix `spec` describes, and the same mix with nothing
    /// owned.
    pub fn new(spec: &MixSpec, farm: &BenchFarm) -> anyhow::Result<Self> {
        Ok(Self {
            prepared: vec![
                (Traffic::Mix, Prepared::new(spec, spec.owned_share, farm)?),
                (Traffic::DropPath, Prepared::new(spec, 0.0, farm)?),
            ],
        })
    }

    /// The SYN flood's: every SYN owned by node 0, and `spec.owned_share` of them owned.
    pub fn syn_flood(spec: &MixSpec, farm: &BenchFarm) -> anyhow::Result<Self> {
        Ok(Self {
            prepared: vec![
                (Traffic::OwnedSyns, Prepared::syn_flood(spec, 1.0, farm)?),
                (
                    Traffic::MixedSyns,
                    Prepared::syn_flood(spec, spec.owned_share, farm)?,
                ),
            ],
        })
    }

    /// The share of `traffic`'s packets node 0 owns, after rounding to whole clients.
    pub fn owned_share(&self, traffic: Traffic) -> Option<f64> {
        self.get(traffic).map(|p| p.owned_share)
    }

    fn get(&self, traffic: Traffic) -> Option<&Prepared> {
        self.prepared
            .iter()
            .find(|(t, _)| *t == traffic)
            .map(|(_, p)| p)
    }
}

/// The harness: the test bed, the generator and the traffics.
pub struct Bench<'a> {
    topology: &'a Topology,
    farm: &'a BenchFarm,
    settings: &'a Settings,
    traffics: &'a Traffics,
    interrupted: &'a AtomicBool,
    generator: Generator,
}

/// What one window measured.
struct Window {
    elapsed: Duration,
    sent: u64,
    counts: Counts,
    receiver_cpu: Duration,
    latency: Option<Histogram<u64>>,
    stack: Option<StackCounts>,
    program_runs: Option<Runs>,
}

/// How a wait ended.
#[derive(PartialEq, Eq)]
enum Waited {
    /// It lasted as long as asked.
    Full,
    /// The generator stopped first.
    GeneratorStopped,
}

/// What is read at each end of the window.
struct Snapshot {
    at: Instant,
    counts: Counts,
    receiver_cpu: Duration,
    sent: u64,
    stack: Option<StackCounts>,
    program_runs: Option<Runs>,
}

/// Sets a flag when dropped, so that the threads of a window stop whatever path leaves it.
struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl<'a> Bench<'a> {
    /// Loads the generator. `interrupted` is set by the signal handler.
    pub fn new(
        topology: &'a Topology,
        farm: &'a BenchFarm,
        settings: &'a Settings,
        traffics: &'a Traffics,
        interrupted: &'a AtomicBool,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            topology,
            farm,
            settings,
            traffics,
            interrupted,
            generator: Generator::new()?,
        })
    }

    /// Measures every contender on each of its traffics, in order.
    pub fn run(&mut self) -> anyhow::Result<Vec<Measurement>> {
        let mut measurements = Vec::new();
        for kind in self.settings.contenders.clone() {
            for &traffic in kind.traffics() {
                if self.traffics.get(traffic).is_none() {
                    continue;
                }
                tracing::info!("measuring {} on the {}", kind.label(), traffic.label());
                let measurement = self
                    .measure(kind, traffic)
                    .with_context(|| format!("{} on the {}", kind.label(), traffic.label()))?;
                check_share(&measurement);
                measurements.push(measurement);
            }
        }
        Ok(measurements)
    }

    fn measure(&mut self, kind: Kind, traffic: Traffic) -> anyhow::Result<Measurement> {
        let prepared = self
            .traffics
            .get(traffic)
            .context("the traffic was not prepared")?;
        self.generator
            .prepare(&prepared.clients, prepared.templates.clone())?;
        let expected_share = if kind.keeps_owned() {
            prepared.owned_share
        } else {
            0.0
        };
        let syn_flood = traffic.is_syn_flood();
        let listen = if expected_share > 0.0 && !syn_flood {
            listen_addrs(&prepared.clients, PORT)
        } else {
            Vec::new()
        };
        // Kept open over the window: the flood's SYNs are answered by these.
        let _listeners = if syn_flood {
            stack::listen(
                &self.topology.receiver,
                &listen_addrs(&prepared.clients, SYN_PORT),
            )?
        } else {
            Vec::new()
        };
        let mut contender = kind.build();
        let receiver = Receiver {
            netns: &self.topology.receiver,
            interface: &self.topology.receiver_if,
            bpf_dir: self.topology.bpf_dir(),
            farm: self.farm,
            core: self.settings.receiver_core,
        };
        let measured = contender
            .setup(&receiver)
            .and_then(|()| self.window(&*contender, &listen, syn_flood));
        let torn_down = contender.teardown();
        let window = measured?;
        torn_down.context("cannot take the contender off the receiver")?;
        Ok(Measurement {
            kind,
            traffic,
            elapsed: window.elapsed,
            sent: window.sent,
            counts: window.counts,
            receiver_cpu: window.receiver_cpu,
            expected_share,
            latency: window.latency,
            stack: window.stack,
            program_runs: window.program_runs,
        })
    }

    /// One window with the generator sending and, on `listen`, latency readers; with the
    /// receiver's TCP counters and the kernel's timing of herd's program read at each end
    /// when `count_stack`.
    fn window(
        &self,
        contender: &dyn Contender,
        listen: &[SocketAddr],
        count_stack: bool,
    ) -> anyhow::Result<Window> {
        let settings = self.settings;
        let topology = self.topology;
        let generator = &self.generator;
        let napi = topology.thread_receiver_napi(settings.receiver_core)?;
        if napi.is_empty() {
            bail!(
                "no NAPI thread of {} found after threaded NAPI was switched on",
                topology.receiver_if
            );
        }
        let program = contender.program_id().filter(|_| count_stack);
        let _timing = program.map(|_| Timing::start()).transpose()?;
        let done = AtomicBool::new(false);
        let recording = AtomicBool::new(false);
        thread::scope(|scope| {
            let _stop_threads = SetOnDrop(&done);
            let (started, starts) = mpsc::channel();
            let readers: Vec<_> = listen
                .iter()
                .map(|&addr| {
                    let listen = Listen {
                        netns: &topology.receiver,
                        addr,
                        core: settings.receiver_core,
                        recording: &recording,
                        done: &done,
                        started: started.clone(),
                    };
                    scope.spawn(move || latency::read(listen))
                })
                .collect();
            drop(started);
            let mut receiver_threads = napi.clone();
            receiver_threads.extend(contender.threads()?);
            for _ in &readers {
                match starts.recv_timeout(READER_START) {
                    Ok(tid) => receiver_threads.push(tid),
                    Err(_) => return Err(failed_reader(readers, &done)),
                }
            }
            let sender = scope.spawn(|| {
                generator.run(generator::Run {
                    netns: &topology.sender,
                    interface: &topology.sender_if,
                    core: settings.generator_core,
                    stop: &done,
                    until: Instant::now() + WARM_UP + settings.window + GENERATOR_GRACE,
                })
            });
            let snapshot = || -> anyhow::Result<Snapshot> {
                // Reading the nftables counters starts a process: the middle of the read is
                // the time.
                let start = Instant::now();
                let counts = contender.counts()?;
                let at = start + start.elapsed() / 2;
                let mut receiver_cpu = Duration::ZERO;
                for &tid in &receiver_threads {
                    receiver_cpu += sched::runtime(tid)?;
                }
                let stack = if count_stack {
                    Some(StackCounts::read(&topology.receiver)?)
                } else {
                    None
                };
                Ok(Snapshot {
                    at,
                    counts,
                    receiver_cpu,
                    sent: generator.sent()?,
                    stack,
                    program_runs: program.map(Runs::of).transpose()?,
                })
            };
            if pause(WARM_UP, self.interrupted, &sender)? == Waited::GeneratorStopped {
                return Err(stopped(sender));
            }
            let before = snapshot()?;
            recording.store(true, Ordering::Relaxed);
            if pause(settings.window, self.interrupted, &sender)? == Waited::GeneratorStopped {
                return Err(stopped(sender));
            }
            let after = snapshot()?;
            done.store(true, Ordering::Relaxed);
            joined(sender)?;
            let mut latency: Option<Histogram<u64>> = None;
            for reader in readers {
                let read = joined(reader)?;
                match latency.as_mut() {
                    Some(all) => all.add(&read).context("cannot merge latency histograms")?,
                    None => latency = Some(read),
                }
            }
            Ok(Window {
                elapsed: after.at.duration_since(before.at),
                sent: after.sent.saturating_sub(before.sent),
                counts: after.counts.since(&before.counts),
                receiver_cpu: after.receiver_cpu.saturating_sub(before.receiver_cpu),
                latency: latency.filter(|h| !h.is_empty()),
                stack: after.stack.zip(before.stack).map(|(a, b)| a.since(&b)),
                program_runs: after
                    .program_runs
                    .zip(before.program_runs)
                    .map(|(a, b)| a.since(&b)),
            })
        })
    }
}

/// The sockets a traffic reaches: `port` on the VIP of each family that sends.
fn listen_addrs(clients: &Clients, port: u16) -> Vec<SocketAddr> {
    let mut addrs = Vec::new();
    if !clients.v4.is_empty() {
        addrs.push(SocketAddr::new(VIP4.into(), port));
    }
    if !clients.v6.is_empty() {
        addrs.push(SocketAddr::new(VIP6.into(), port));
    }
    addrs
}

/// Waits `duration`, unless the generator stops first; fails if interrupted.
fn pause(
    duration: Duration,
    interrupted: &AtomicBool,
    sender: &ScopedJoinHandle<'_, anyhow::Result<()>>,
) -> anyhow::Result<Waited> {
    let end = Instant::now() + duration;
    loop {
        if interrupted.load(Ordering::Relaxed) {
            bail!("interrupted");
        }
        if sender.is_finished() {
            return Ok(Waited::GeneratorStopped);
        }
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(Waited::Full);
        }
        thread::sleep(left.min(TICK));
    }
}

/// Why the generator stopped before its time.
fn stopped(sender: ScopedJoinHandle<'_, anyhow::Result<()>>) -> anyhow::Error {
    match joined(sender) {
        Ok(()) => anyhow!("the generator stopped before the window ended"),
        Err(error) => error.context("the generator failed"),
    }
}

/// Why a latency reader did not start: the error of the first that failed, once `done` has
/// stopped the others.
fn failed_reader(
    readers: Vec<ScopedJoinHandle<'_, anyhow::Result<Histogram<u64>>>>,
    done: &AtomicBool,
) -> anyhow::Error {
    done.store(true, Ordering::Relaxed);
    readers
        .into_iter()
        .find_map(|reader| joined(reader).err())
        .unwrap_or_else(|| anyhow!("a latency reader did not start within {READER_START:?}"))
}

/// The result of a finished thread of the window.
fn joined<T>(handle: ScopedJoinHandle<'_, anyhow::Result<T>>) -> anyhow::Result<T> {
    handle
        .join()
        .map_err(|_| anyhow!("a measurement thread panicked"))?
}

/// Warns when a contender did not accept the share of packets the traffic was built for.
fn check_share(m: &Measurement) {
    if m.counts.received == 0 {
        tracing::warn!("{} counted no packet", m.kind.label());
        return;
    }
    let share = m.counts.accepted as f64 / m.counts.received as f64;
    if (share - m.expected_share).abs() > 0.01 {
        tracing::warn!(
            "{} on the {} accepted {:.1} % of the packets, not {:.1} %",
            m.kind.label(),
            m.traffic.label(),
            share * 100.0,
            m.expected_share * 100.0
        );
    }
}

#[cfg(test)]
mod tests {
    use herd_config::Protocol;

    use super::*;
    use crate::farm::LOCAL;
    use crate::mix::tests::syn_of;
    use herd_packet::wire::tcp;

    /// Whether the farm's table gives node 0 the bucket of a SYN from `addr`, from a port of
    /// its own: the farm's view, not the one the traffic was chosen by.
    fn owned(farm: &BenchFarm, addr: IpAddr, port: u16) -> bool {
        let hash = farm
            .rules()
            .client_flow_hash(Protocol::Tcp, SYN_PORT, addr, port)
            .unwrap();
        farm.table().owner(farm.table().bucket_of(hash)) == LOCAL
    }

    #[test]
    fn the_syn_floods_own_the_share_the_farm_table_gives_node_0() {
        let farm = BenchFarm::new().unwrap();
        let spec = MixSpec {
            flows: 1200,
            ipv6_share: 0.25,
            sizes: Vec::new(),
            owned_share: 1.0 / 3.0,
        };
        let traffics = Traffics::syn_flood(&spec, &farm).unwrap();
        for (traffic, share) in [(Traffic::OwnedSyns, 1.0), (Traffic::MixedSyns, 1.0 / 3.0)] {
            let prepared = traffics.get(traffic).unwrap();
            for (family, count) in [(&prepared.clients.v4, 900.0), (&prepared.clients.v6, 300.0)] {
                assert_eq!(family.len() as f64, count);
                // The generator gives each SYN a random port: any port must do.
                let kept = family
                    .iter()
                    .enumerate()
                    .filter(|(i, c)| owned(&farm, c.addr, 1024 + *i as u16))
                    .count();
                assert_eq!(kept as f64, count * share, "{}", traffic.label());
            }
            assert!((traffics.owned_share(traffic).unwrap() - share).abs() < 1e-9);
            for template in &prepared.templates {
                let (_, _, port, flags) = syn_of(&template.frame);
                assert_eq!((port, flags), (SYN_PORT, tcp::SYN));
            }
        }
        assert_eq!(traffics.owned_share(Traffic::Mix), None);
    }
}
