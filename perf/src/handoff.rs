//! The AF_XDP mode's way back to the stack, on its own: one thread on the receiver's core
//! writes owned UDP frames to the VIP into a TAP device, then into a veth pair (through a
//! packet socket), as a worker hands them off, while a UDP socket on the VIP on the other core
//! counts what the stack delivers. What each costs the writing thread per frame decided which
//! one `herd run` uses; nothing else runs on the receiver's core meanwhile.

use std::ffi::CString;
use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use herd_dataplane::handoff::Port;
use herd_packet::craft::{self, Fragment, MAC_B};
use herd_packet::wire::{ethernet::ethertype, ip_proto};
use herd_testbed::address::VIP4;
use herd_testbed::link;
use herd_testbed::Netns;
use serde::Serialize;

use crate::farm::PORT;
use crate::sched;

/// The device the worker writes into: the TAP device, or the writing end of the veth pair.
const HANDOFF: &str = "herdperf0";
/// The end of the veth pair where the stack receives the frames.
const STACK_END: &str = "herdperf1";
/// Frames written per way: enough for a stable rate, few enough to take a second or two.
const FRAMES: u64 = 300_000;
/// How long the reader waits for the last frames once the writer is done.
const DRAIN: Duration = Duration::from_millis(300);

/// The ways back to the stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Handoff {
    /// A TAP device, written with `write(2)`, as `herd run` does.
    Tap,
    /// A veth pair, written through a packet socket bound to one end.
    Veth,
}

impl Handoff {
    /// Its name in the report.
    pub fn label(self) -> &'static str {
        match self {
            Handoff::Tap => "TAP device",
            Handoff::Veth => "veth pair",
        }
    }

    /// Creates the device in `netns`, ready to take frames addressed to the receiver's MAC
    /// to the stack, and returns a port that writes into it.
    pub fn port(self, netns: &Netns) -> anyhow::Result<Port> {
        match self {
            Handoff::Tap => {
                let port = netns.run(|| Port::tap(HANDOFF, 1))??;
                prepare_stack_device(netns, HANDOFF)?;
                port.into_iter().next().context("no TAP queue")
            }
            Handoff::Veth => {
                netns.exec(
                    &[
                        "ip", "link", "add", HANDOFF, "type", "veth", "peer", "name", STACK_END,
                    ],
                    None,
                )?;
                netns.exec(&["ip", "link", "set", HANDOFF, "up"], None)?;
                prepare_stack_device(netns, STACK_END)?;
                netns
                    .run(|| -> anyhow::Result<_> {
                        let name = CString::new(HANDOFF)?;
                        // SAFETY: `name` is a NUL-terminated string.
                        let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
                        if index == 0 {
                            bail!("{HANDOFF}: {}", std::io::Error::last_os_error());
                        }
                        Ok(Port::packet(index, 1)?)
                    })??
                    .into_iter()
                    .next()
                    .context("no packet socket")
            }
        }
    }

    /// Removes what [`Handoff::port`] created and its port does not remove by closing.
    pub fn remove(self, netns: &Netns) -> anyhow::Result<()> {
        if self == Handoff::Veth {
            netns.exec(&["ip", "link", "del", HANDOFF], None)?;
        }
        Ok(())
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

/// What one way back to the stack cost.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HandoffCost {
    /// The way.
    pub handoff: Handoff,
    /// Frames written per second by one thread.
    pub frames_per_second: f64,
    /// The writing thread's CPU time per frame, ns: what a worker pays per accepted packet.
    pub writer_ns: f64,
    /// The share of the frames the UDP socket on the VIP received.
    pub delivered: f64,
}

/// Measures both ways in the receiver's namespace, the writer pinned to `writer_core` and the
/// reader to `reader_core`.
pub fn measure(
    netns: &Netns,
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
            // A zero UDP checksum: none to verify, the same work for both ways.
            &craft::udp(40000, PORT, &[0; 18]),
        ),
    );
    [Handoff::Tap, Handoff::Veth]
        .into_iter()
        .map(|handoff| {
            let port = handoff.port(netns)?;
            let cost = time(handoff, netns, &port, &frame, (writer_core, reader_core));
            drop(port);
            handoff.remove(netns)?;
            cost
        })
        .collect()
}

/// Writes [`FRAMES`] copies of `frame` through `handoff`'s `port` while a socket on the VIP
/// counts them.
fn time(
    handoff: Handoff,
    netns: &Netns,
    port: &Port,
    frame: &[u8],
    (writer_core, reader_core): (usize, usize),
) -> anyhow::Result<HandoffCost> {
    let received = AtomicU64::new(0);
    let done = AtomicBool::new(false);
    let socket = netns.run(|| -> anyhow::Result<_> {
        let socket = UdpSocket::bind((VIP4, PORT)).context("cannot bind the VIP")?;
        socket.set_read_timeout(Some(DRAIN))?;
        Ok(socket)
    })??;
    let (elapsed, cpu) = std::thread::scope(|scope| {
        scope.spawn(|| {
            let _ = sched::pin(sched::current(), reader_core);
            let mut buf = [0u8; 64];
            loop {
                match socket.recv(&mut buf) {
                    Ok(_) => {
                        received.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) if done.load(Ordering::Relaxed) => break,
                    Err(_) => {}
                }
            }
        });
        let writer = scope.spawn(|| -> anyhow::Result<(Duration, Duration)> {
            let tid = sched::current();
            sched::pin(tid, writer_core)?;
            sched::favour(tid)?;
            let cpu = sched::runtime(tid)?;
            let start = Instant::now();
            for _ in 0..FRAMES {
                // A full backlog refuses a frame now and then; the delivered share shows it.
                let _ = port.send(frame);
            }
            Ok((start.elapsed(), sched::runtime(tid)?.saturating_sub(cpu)))
        });
        let timed = writer.join();
        done.store(true, Ordering::Relaxed);
        timed.map_err(|_| anyhow::anyhow!("the handoff writer panicked"))?
    })?;
    Ok(HandoffCost {
        handoff,
        frames_per_second: FRAMES as f64 / elapsed.as_secs_f64(),
        writer_ns: cpu.as_nanos() as f64 / FRAMES as f64,
        delivered: received.load(Ordering::Relaxed) as f64 / FRAMES as f64,
    })
}
