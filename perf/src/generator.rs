//! The traffic generator: the kernel's BPF_PROG_RUN in live-frames mode runs `perf_generate`
//! on template frames in the sender's namespace; the program gives each frame the next client
//! and the send time and returns XDP_TX, which live-frames mode turns into a transmission out
//! of the sender's veth, that is into the receiver. No packet crosses user space, which is
//! what lets one core send millions of packets per second (trafgen manages 0.2 Mpps here).

use std::ffi::CString;
use std::io::ErrorKind;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{bail, Context};
use aya::maps::{Array, MapData, PerCpuArray};
use aya::programs::{ProgramError, TestRun, TestRunAttrs, TestRunOptions, Xdp};
use aya::sys::SyscallError;
use aya::{Ebpf, Pod};
use core_affinity::CoreId;
use herd_testbed::Netns;

use crate::mix::{Client, Clients, Schedule, Template};
use crate::programs::{self, Program};
use crate::sched;

/// Packets per BPF_PROG_RUN call. Each call also spends about 25 ms in the kernel setting up
/// and tearing down live-frames mode (measured here: 1024-packet calls send 0.04 Mpps), during
/// which nothing is sent, so calls are long: a quarter of a second at 4 Mpps. The templates of
/// the mix alternate between calls.
const CHUNK: u32 = 1 << 20;
/// Frames the kernel runs through the program before transmitting them together (its most).
const BATCH: u32 = 256;

/// The generator program and the traffic it sends.
pub struct Generator {
    ebpf: Ebpf,
    /// The program's per-CPU sequence number: the packets it has sent.
    sequence: PerCpuArray<MapData, u64>,
    templates: Vec<Template>,
}

/// Where and for how long [`Generator::run`] sends.
pub struct Run<'a> {
    /// The sender's namespace.
    pub netns: &'a Netns,
    /// The sender's veth, out of which frames leave.
    pub interface: &'a str,
    /// The core the generator is pinned to.
    pub core: usize,
    /// Set to stop sending.
    pub stop: &'a AtomicBool,
    /// When to stop in any case.
    pub until: Instant,
}

impl Generator {
    /// Loads the generator program.
    pub fn new() -> anyhow::Result<Self> {
        let mut ebpf = programs::load(Program::Generate)?;
        let sequence = ebpf
            .take_map("sequence")
            .context("the generator has no sequence map")?;
        Ok(Self {
            sequence: PerCpuArray::try_from(sequence)?,
            ebpf,
            templates: Vec::new(),
        })
    }

    /// The packets sent since the generator was loaded: every run of the program sends one.
    pub fn sent(&self) -> anyhow::Result<u64> {
        Ok(self.sequence.get(&0, 0)?.iter().sum())
    }

    /// Makes the next run send from `clients`, starting from `templates`.
    pub fn prepare(&mut self, clients: &Clients, templates: Vec<Template>) -> anyhow::Result<()> {
        let v4 = clients.v4.iter().map(client_entry::<8>);
        self.fill("clients4", v4)?;
        let v6 = clients.v6.iter().map(client_entry::<20>);
        self.fill("clients6", v6)?;
        let mut counts = self.array::<u32>("client_count")?;
        counts.set(0, clients.v4.len() as u32, 0)?;
        counts.set(1, clients.v6.len() as u32, 0)?;
        self.templates = templates;
        Ok(())
    }

    fn fill<V: Pod>(
        &mut self,
        map: &'static str,
        values: impl Iterator<Item = V>,
    ) -> anyhow::Result<()> {
        let mut array = self.array::<V>(map)?;
        for (index, value) in values.enumerate() {
            array
                .set(index as u32, value, 0)
                .with_context(|| format!("cannot write entry {index} of {map}"))?;
        }
        Ok(())
    }

    fn array<V: Pod>(&mut self, name: &'static str) -> anyhow::Result<Array<&mut MapData, V>> {
        let map = self
            .ebpf
            .map_mut(name)
            .with_context(|| format!("the generator has no map {name}"))?;
        Ok(Array::try_from(map)?)
    }

    /// Sends until `run.stop` is set or `run.until` passes, from the calling thread, which it
    /// moves into the sender's namespace, pins to `run.core` and favours.
    pub fn run(&self, run: Run<'_>) -> anyhow::Result<()> {
        run.netns.enter()?;
        if !core_affinity::set_for_current(CoreId { id: run.core }) {
            bail!("cannot pin the generator to core {}", run.core);
        }
        sched::favour(sched::current())?;
        // Live frames leave through the device the context names as the one they came in on.
        let ifindex = ifindex(run.interface)?;
        let contexts: Vec<[u8; 24]> = self
            .templates
            .iter()
            .map(|t| xdp_md(t.frame.len() as u32, ifindex))
            .collect();
        let mut schedule = Schedule::new(self.templates.iter().map(|t| t.share).collect());
        let program: &Xdp = self
            .ebpf
            .program(Program::Generate.name())
            .context("the generator program is missing")?
            .try_into()?;
        while !run.stop.load(Ordering::Relaxed) && Instant::now() < run.until {
            let Some(next) = schedule.next(u64::from(CHUNK)) else {
                bail!("the mix has no frame to send");
            };
            let sent = program.test_run(TestRunOptions {
                data_in: Some(&self.templates[next].frame),
                ctx_in: Some(&contexts[next]),
                repeat: CHUNK,
                attrs: TestRunAttrs::new().xdp_live_frames(BATCH),
                ..TestRunOptions::default()
            });
            match sent {
                Ok(_) => {}
                // The kernel stops a run when a signal is pending (it returns what it sent so
                // far to no one: the sequence number counts it); the loop decides whether to
                // go on.
                Err(ProgramError::SyscallError(SyscallError { io_error, .. }))
                    if io_error.kind() == ErrorKind::Interrupted => {}
                Err(error) => {
                    return Err(error)
                        .context("BPF_PROG_RUN in live-frames mode (kernel 5.18 or later)")
                }
            }
        }
        Ok(())
    }
}

/// A client as the generator's maps hold it (`struct client4`/`client6` in perf.bpf.c): the
/// address, the port in network order, zero padding.
fn client_entry<const N: usize>(client: &Client) -> [u8; N] {
    let address = match client.addr {
        IpAddr::V4(addr) => addr.octets().to_vec(),
        IpAddr::V6(addr) => addr.octets().to_vec(),
    };
    let mut entry = [0; N];
    let bytes = address.into_iter().chain(client.port.to_be_bytes());
    for (slot, byte) in entry.iter_mut().zip(bytes) {
        *slot = byte;
    }
    entry
}

/// The `struct xdp_md` BPF_PROG_RUN takes as context: the frame's extent, and the device and
/// queue the frame is taken to have arrived on.
fn xdp_md(len: u32, ifindex: u32) -> [u8; 24] {
    let fields = [0, len, 0, ifindex, 0, 0];
    let mut bytes = [0; 24];
    for (chunk, field) in bytes.chunks_exact_mut(4).zip(fields) {
        chunk.copy_from_slice(&field.to_ne_bytes());
    }
    bytes
}

/// The index of `interface` in the calling thread's namespace.
fn ifindex(interface: &str) -> anyhow::Result<u32> {
    let name = CString::new(interface).context("an interface name holds a NUL byte")?;
    // SAFETY: `name` is a NUL-terminated string that outlives the call.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("no interface {interface}"));
    }
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::farm::SYN_PORT;
    use crate::mix::tests::syn_of;
    use crate::mix::{self, MixSpec};
    use herd_packet::wire::tcp;
    use herd_testbed::address::{VIP4, VIP6};

    /// Needs root, as every test that loads an eBPF program.
    #[test]
    fn syns_leave_with_their_client_a_random_port_and_valid_checksums() {
        let spec = MixSpec {
            flows: 4,
            ipv6_share: 0.5,
            sizes: Vec::new(),
            owned_share: 1.0,
        };
        let clients = Clients::choose(&spec, 1.0, |_, _| Some(true)).unwrap();
        // The templates come from each family's first client, the generator sends from its
        // second: every address word changes, and both checksums with it.
        let templates = mix::syn_templates(spec.ipv6_share, &clients);
        let mut sending = clients.clone();
        sending.v4.remove(0);
        sending.v6.remove(0);
        let mut generator = Generator::new().unwrap();
        generator.prepare(&sending, templates.clone()).unwrap();
        let program: &Xdp = generator
            .ebpf
            .program(Program::Generate.name())
            .unwrap()
            .try_into()
            .unwrap();
        for (template, (client, vip)) in templates.iter().zip([
            (sending.v4[0], IpAddr::V4(VIP4)),
            (sending.v6[0], IpAddr::V6(VIP6)),
        ]) {
            let mut ports = Vec::new();
            for _ in 0..3 {
                let mut out = vec![0; template.frame.len()];
                let run = program
                    .test_run(TestRunOptions {
                        data_in: Some(&template.frame),
                        data_out: Some(&mut out),
                        repeat: 1,
                        ..TestRunOptions::default()
                    })
                    .unwrap();
                assert_eq!(run.return_value, 3, "XDP_TX");
                let (from, to, port, flags) = syn_of(&out);
                assert_eq!(
                    (from.addr, to, port, flags),
                    (client.addr, vip, SYN_PORT, tcp::SYN)
                );
                assert!(from.port >= 1024);
                ports.push(from.port);
            }
            assert!(ports.iter().any(|&p| p != ports[0]), "ports {ports:?}");
        }
    }

    #[test]
    fn client_entries_follow_the_c_layout() {
        let v4 = Client {
            addr: IpAddr::from([198, 19, 1, 2]),
            port: 0x1234,
        };
        assert_eq!(client_entry::<8>(&v4), [198, 19, 1, 2, 0x12, 0x34, 0, 0]);
        let v6 = Client {
            addr: IpAddr::from([0x20, 1, 0, 2, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 9]),
            port: 80,
        };
        let entry = client_entry::<20>(&v6);
        assert_eq!(entry[15], 9);
        assert_eq!(entry[16..], [0, 80, 0, 0]);
    }

    #[test]
    fn the_context_names_the_frame_and_the_device() {
        let md = xdp_md(64, 7);
        assert_eq!(md[4..8], 64u32.to_ne_bytes());
        assert_eq!(md[12..16], 7u32.to_ne_bytes());
        assert_eq!(md.iter().filter(|&&b| b != 0).count(), 2);
    }
}
