//! The AF_XDP mode's way back to the stack, on its own: one thread on the receiver's core
//! writes owned UDP frames to the VIP in batches, as a worker hands off the accepted frames of
//! a batch, through each way in turn (a TAP device written several ways, a veth pair written
//! through a packet socket several ways), while a UDP socket on the VIP on the other core
//! counts what the stack delivers. What each costs the writing thread per frame decided which
//! one `herd run` uses ([`Handoff::HERD`]); nothing else runs on the receiver's core meanwhile.

use std::ffi::CString;
use std::fmt::Write as _;
use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::ValueEnum;
use herd_dataplane::handoff::{Port, Sent, Submit, TapReceive};
use herd_packet::craft::{self, Fragment, MAC_B};
use herd_packet::wire::{ethernet::ethertype, ip_proto};
use herd_testbed::address::VIP4;
use herd_testbed::link;
use herd_testbed::Netns;
use serde::Serialize;

use crate::farm::PORT;
use crate::xsk_tx::XskTx;
use crate::{sched, stack};

/// The device the worker writes into: the TAP device, or the writing end of the veth pair.
const HANDOFF: &str = "herdperf0";
/// The end of the veth pair where the stack receives the frames.
const STACK_END: &str = "herdperf1";
/// Frames written per way: enough for a stable rate, few enough to take a second or two.
const FRAMES: u64 = 300_000;
/// Frames handed off at once: the default of `[dataplane] batch`, the most a worker hands off
/// after one batch.
const BATCH: u64 = 64;
/// How long the reader goes on finding its socket empty, once the writer is done, before it
/// takes the last frame to have come.
const DRAIN: Duration = Duration::from_millis(50);

/// The ways back to the stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Handoff {
    /// A TAP queue, one `write(2)` per frame.
    TapWrite,
    /// A TAP queue with `IFF_NAPI`, one `write(2)` per frame.
    TapNapi,
    /// A TAP queue with `IFF_NAPI | IFF_NAPI_FRAGS`, one `write(2)` per frame.
    TapNapiFrags,
    /// A TAP queue, each batch's writes submitted through io_uring with one system call.
    TapUring,
    /// A TAP queue with `IFF_NAPI`, each batch's writes submitted through io_uring.
    TapNapiUring,
    /// A veth pair, one `send(2)` per frame on a packet socket bound to one end.
    VethSend,
    /// A veth pair, each batch in one `sendmmsg(2)` on the packet socket.
    VethMmsg,
    /// As [`Handoff::VethMmsg`], the socket bypassing the queueing discipline
    /// (`PACKET_QDISC_BYPASS`).
    VethMmsgBypass,
    /// A veth pair, each batch copied into an AF_XDP socket's memory and sent from its TX
    /// ring (copy mode).
    VethXsk,
}

impl Handoff {
    /// Every way, in the order they are measured.
    pub const ALL: [Handoff; 9] = [
        Handoff::TapWrite,
        Handoff::TapNapi,
        Handoff::TapNapiFrags,
        Handoff::TapUring,
        Handoff::TapNapiUring,
        Handoff::VethSend,
        Handoff::VethMmsg,
        Handoff::VethMmsgBypass,
        Handoff::VethXsk,
    ];

    /// The way `herd run` uses.
    pub const HERD: Handoff = Handoff::TapUring;

    /// The cheapest way through a veth pair that a worker's [`Port`] can take (the AF_XDP TX
    /// ring, cheaper still, is herd-perf's own).
    pub const VETH: Handoff = Handoff::VethMmsg;

    /// Its name in the report.
    pub fn label(self) -> &'static str {
        match self {
            Handoff::TapWrite => "TAP, write(2) per frame",
            Handoff::TapNapi => "TAP with IFF_NAPI, write(2) per frame",
            Handoff::TapNapiFrags => "TAP with IFF_NAPI_FRAGS, write(2) per frame",
            Handoff::TapUring => "TAP, io_uring per batch",
            Handoff::TapNapiUring => "TAP with IFF_NAPI, io_uring per batch",
            Handoff::VethSend => "veth, AF_PACKET send(2) per frame",
            Handoff::VethMmsg => "veth, AF_PACKET sendmmsg(2) per batch",
            Handoff::VethMmsgBypass => "veth, sendmmsg(2) with PACKET_QDISC_BYPASS",
            Handoff::VethXsk => "veth, AF_XDP TX ring (copy mode) per batch",
        }
    }

    /// The TAP device's receive path and writes, or `None` for a veth pair.
    fn tap(self) -> Option<(TapReceive, Submit)> {
        match self {
            Handoff::TapWrite => Some((TapReceive::Direct, Submit::Each)),
            Handoff::TapNapi => Some((TapReceive::Napi, Submit::Each)),
            Handoff::TapNapiFrags => Some((TapReceive::NapiFrags, Submit::Each)),
            Handoff::TapUring => Some((TapReceive::Direct, Submit::Batch)),
            Handoff::TapNapiUring => Some((TapReceive::Napi, Submit::Batch)),
            Handoff::VethSend | Handoff::VethMmsg | Handoff::VethMmsgBypass | Handoff::VethXsk => {
                None
            }
        }
    }

    /// Creates the device in `netns`, ready to take frames addressed to the receiver's MAC
    /// to the stack, and returns a port that writes into it, as a worker's.
    pub fn port(self, netns: &Netns) -> anyhow::Result<Port> {
        match self.writer(netns)? {
            Writer::Port(port) => Ok(port),
            Writer::Xsk(_) => bail!("{}: not a way herd's workers hand off", self.label()),
        }
    }

    /// Creates the device in `netns` as [`Handoff::port`] does, and returns what writes into
    /// it.
    fn writer(self, netns: &Netns) -> anyhow::Result<Writer> {
        if let Some((receive, submit)) = self.tap() {
            let port = netns.run(|| Port::tap(HANDOFF, 1, receive, submit))??;
            prepare_stack_device(netns, HANDOFF)?;
            return Ok(Writer::Port(
                port.into_iter().next().context("no TAP queue")?,
            ));
        }
        netns.exec(
            &[
                "ip", "link", "add", HANDOFF, "type", "veth", "peer", "name", STACK_END,
            ],
            None,
        )?;
        netns.exec(&["ip", "link", "set", HANDOFF, "up"], None)?;
        prepare_stack_device(netns, STACK_END)?;
        wait_for_carrier(netns, HANDOFF)?;
        let (submit, bypass) = match self {
            Handoff::VethSend => (Submit::Each, false),
            Handoff::VethMmsgBypass => (Submit::Batch, true),
            Handoff::VethXsk => {
                return Ok(Writer::Xsk(Box::new(netns.run(|| XskTx::open(HANDOFF))??)))
            }
            _ => (Submit::Batch, false),
        };
        let port = netns.run(|| -> anyhow::Result<_> {
            let name = CString::new(HANDOFF)?;
            // SAFETY: `name` is a NUL-terminated string.
            let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
            if index == 0 {
                bail!("{HANDOFF}: {}", std::io::Error::last_os_error());
            }
            Ok(Port::packet(index, 1, submit, bypass)?)
        })??;
        Ok(Writer::Port(
            port.into_iter().next().context("no packet socket")?,
        ))
    }

    /// Removes what [`Handoff::port`] created and its port does not remove by closing.
    pub fn remove(self, netns: &Netns) -> anyhow::Result<()> {
        if self.tap().is_none() {
            netns.exec(&["ip", "link", "del", HANDOFF], None)?;
        }
        Ok(())
    }
}

/// What writes a way's frames: a worker's port, or the AF_XDP socket only herd-perf has.
enum Writer {
    Port(Port),
    Xsk(Box<XskTx>),
}

impl Writer {
    fn send_batch<'f>(&mut self, frames: impl IntoIterator<Item = &'f [u8]>) -> Sent {
        match self {
            Writer::Port(port) => port.send_batch(frames),
            Writer::Xsk(socket) => socket.send_batch(frames),
        }
    }
}

/// Makes `device` take the frames addressed to the receiver's MAC and give them to the stack,
/// as `herd run` prepares its TAP device.
fn prepare_stack_device(netns: &Netns, device: &str) -> anyhow::Result<()> {
    let mac = link::mac_text(MAC_B);
    netns.exec(
        &["ip", "link", "set", "dev", device, "addrgenmode", "none"],
        None,
    )?;
    netns.exec(
        &["ip", "link", "set", "dev", device, "address", &mac, "up"],
        None,
    )?;
    netns.write_sysctl(&format!("net/ipv4/conf/{device}/rp_filter"), "0")
}

/// Waits until `device` of `netns` has its carrier and its queueing discipline: until then it
/// has the `noop` one, which drops what a packet socket sends through it without an error.
fn wait_for_carrier(netns: &Netns, device: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !netns
        .exec(&["ip", "-o", "link", "show", device], None)?
        .contains("qdisc noqueue")
    {
        if Instant::now() > deadline {
            bail!("{device} has no carrier after 5 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// What one way back to the stack cost.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HandoffCost {
    /// The way.
    pub handoff: Handoff,
    /// Frames written per second by one thread.
    pub frames_per_second: f64,
    /// The writing thread's CPU time per frame, ns: what a worker pays per accepted packet.
    pub writer_ns: f64,
    /// The CPU time per frame, ns, of herd-perf's threads other than the writer and the
    /// reader: the kernel's io_uring workers, had it handed them the writes.
    pub helpers_ns: f64,
    /// The share of the frames the stack brought to the UDP socket on the VIP (queued, or
    /// refused by its full buffer): what the hand-off delivered.
    pub delivered: f64,
    /// The share of the frames the socket's reader read.
    pub read: f64,
}

/// Measures `ways` in the receiver's namespace, the writer pinned to `writer_core` and the
/// reader to `reader_core`.
pub fn measure(
    netns: &Netns,
    ways: &[Handoff],
    writer_core: usize,
    reader_core: usize,
) -> anyhow::Result<Vec<HandoffCost>> {
    let frame = craft::ethernet(
        &[],
        ethertype::IPV4,
        &craft::ipv4(
            [198, 19, 0, 7],
            VIP4.octets(),
            ip_proto::UDP,
            Fragment::default(),
            // A zero UDP checksum: none to verify, the same work for every way.
            &craft::udp(40000, PORT, &[0; 18]),
        ),
    );
    ways.iter()
        .map(|&handoff| {
            let mut port = handoff.writer(netns)?;
            let cost = time(
                handoff,
                netns,
                &mut port,
                &frame,
                (writer_core, reader_core),
            );
            drop(port);
            handoff.remove(netns)?;
            cost
        })
        .collect()
}

/// Writes [`FRAMES`] copies of `frame` through `handoff`'s `port`, [`BATCH`] at a time, while
/// a socket on the VIP counts them.
fn time(
    handoff: Handoff,
    netns: &Netns,
    port: &mut Writer,
    frame: &[u8],
    (writer_core, reader_core): (usize, usize),
) -> anyhow::Result<HandoffCost> {
    let received = AtomicU64::new(0);
    let done = AtomicBool::new(false);
    let socket = netns.run(|| -> anyhow::Result<_> {
        let socket = UdpSocket::bind((VIP4, PORT)).context("cannot bind the VIP")?;
        // The reader spins, so that it never sleeps: a sleeping reader makes every frame
        // wake it (an interrupt to the other core), a slow one lets its socket fill and the
        // stack drop frames early; either would change the writer's cost from run to run.
        socket.set_nonblocking(true)?;
        Ok(socket)
    })??;
    let arrivals_before = stack::udp_arrivals(netns)?;
    let process_before = sched::process_runtime()?;
    let (elapsed, writer, reader) = std::thread::scope(|scope| {
        let reader = scope.spawn(|| -> anyhow::Result<Duration> {
            let tid = sched::current();
            sched::pin(tid, reader_core)?;
            sched::favour(tid)?;
            let cpu = sched::runtime(tid)?;
            let mut buf = [0u8; 64];
            let mut empty_since = None;
            loop {
                match socket.recv(&mut buf) {
                    Ok(_) => {
                        received.fetch_add(1, Ordering::Relaxed);
                        empty_since = None;
                    }
                    Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                        if done.load(Ordering::Relaxed)
                            && empty_since.get_or_insert_with(Instant::now).elapsed() > DRAIN
                        {
                            break;
                        }
                        std::hint::spin_loop();
                    }
                    Err(error) => return Err(error).context("the VIP's socket"),
                }
            }
            Ok(sched::runtime(tid)?.saturating_sub(cpu))
        });
        let writer = scope.spawn(|| -> anyhow::Result<(Duration, Duration)> {
            let tid = sched::current();
            sched::pin(tid, writer_core)?;
            sched::favour(tid)?;
            let cpu = sched::runtime(tid)?;
            let start = Instant::now();
            for _ in 0..FRAMES / BATCH {
                // A full backlog refuses a frame now and then; the delivered share shows it.
                port.send_batch(std::iter::repeat_n(frame, BATCH as usize));
            }
            Ok((start.elapsed(), sched::runtime(tid)?.saturating_sub(cpu)))
        });
        let timed = writer.join();
        done.store(true, Ordering::Relaxed);
        let (elapsed, writer) =
            timed.map_err(|_| anyhow::anyhow!("the handoff writer panicked"))??;
        let reader = reader
            .join()
            .map_err(|_| anyhow::anyhow!("the handoff reader panicked"))??;
        anyhow::Ok((elapsed, writer, reader))
    })?;
    let process = sched::process_runtime()?.saturating_sub(process_before);
    let arrivals = stack::udp_arrivals(netns)?.saturating_sub(arrivals_before);
    let frames = (FRAMES / BATCH * BATCH) as f64;
    let per_frame = |cpu: Duration| cpu.as_nanos() as f64 / frames;
    Ok(HandoffCost {
        handoff,
        frames_per_second: frames / elapsed.as_secs_f64(),
        writer_ns: per_frame(writer),
        helpers_ns: per_frame(process.saturating_sub(writer + reader)),
        delivered: arrivals as f64 / frames,
        read: received.load(Ordering::Relaxed) as f64 / frames,
    })
}

/// The table of `costs`, a row per way, in markdown.
pub fn markdown(costs: &[HandoffCost]) -> String {
    let mut out = String::from(
        "| way | frames per second | writer CPU per frame | other threads' CPU per frame | \
         delivered | read |\n| --- | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for h in costs {
        // Writing to a String cannot fail.
        let _ = writeln!(
            out,
            "| {} | {:.2} M | {:.0} ns | {:.0} ns | {:.1} % | {:.1} % |",
            h.handoff.label(),
            h.frames_per_second / 1e6,
            h.writer_ns,
            h.helpers_ns,
            h.delivered * 100.0,
            h.read * 100.0
        );
    }
    out
}

/// Every round of `herd-perf handoff`, and the range of each way over them.
#[derive(Debug, Serialize)]
pub struct HandoffReport {
    /// The command line that made it.
    pub command: String,
    /// Each round's costs, every way once, in the order measured.
    pub rounds: Vec<Vec<HandoffCost>>,
}

impl HandoffReport {
    /// The report of `rounds`.
    pub fn new(command: String, rounds: Vec<Vec<HandoffCost>>) -> Self {
        Self { command, rounds }
    }

    /// The report as markdown: each way's median and range over the rounds, then each round.
    pub fn markdown(&self) -> String {
        let mut out = format!(
            "`{}`: {} rounds; in each, every way writes {FRAMES} frames in batches of {BATCH}, \
             in turn. Median (range):\n\n\
             | way | frames per second | writer CPU per frame | other threads' CPU per frame | \
             delivered |\n| --- | ---: | ---: | ---: | ---: |\n",
            self.command,
            self.rounds.len()
        );
        let ways: Vec<Handoff> = self
            .rounds
            .first()
            .map(|round| round.iter().map(|cost| cost.handoff).collect())
            .unwrap_or_default();
        for way in ways {
            let costs: Vec<&HandoffCost> = self
                .rounds
                .iter()
                .flatten()
                .filter(|cost| cost.handoff == way)
                .collect();
            let spread = |of: fn(&HandoffCost) -> f64| {
                let mut values: Vec<f64> = costs.iter().map(|&cost| of(cost)).collect();
                values.sort_by(f64::total_cmp);
                (
                    values[values.len() / 2],
                    values[0],
                    values[values.len() - 1],
                )
            };
            let (rate, rate_low, rate_high) = spread(|c| c.frames_per_second / 1e6);
            let (writer, writer_low, writer_high) = spread(|c| c.writer_ns);
            let (helpers, _, helpers_high) = spread(|c| c.helpers_ns);
            let (delivered, delivered_low, _) = spread(|c| c.delivered * 100.0);
            // Writing to a String cannot fail.
            let _ = writeln!(
                out,
                "| {} | {rate:.2} M ({rate_low:.2}-{rate_high:.2}) | {writer:.0} ns \
                 ({writer_low:.0}-{writer_high:.0}) | {helpers:.0} ns (max {helpers_high:.0}) | \
                 {delivered:.1} % (min {delivered_low:.1}) |",
                way.label()
            );
        }
        for (index, round) in self.rounds.iter().enumerate() {
            let _ = write!(out, "\nRound {}:\n\n{}", index + 1, markdown(round));
        }
        out
    }
}
