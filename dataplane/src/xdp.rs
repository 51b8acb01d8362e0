//! The eBPF programs of `bpf/herd.bpf.c`, loaded with aya, and the maps that carry the farm
//! into them: `herd_classify`, which makes the whole verdict of [`herd_packet::classify()`] in XDP (the
//! in-kernel mode), and `herd_redirect`, which hands the VIP flows to the AF_XDP sockets of the
//! workers instead of looking up their bucket (the AF_XDP mode). The classifier's flow table is
//! the program's `flows` map, a kernel LRU hash with the key and value of [`herd_packet::flows`];
//! what the kernel says of a connection ([`herd_packet::kernel`]) the program asks it itself.

use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

use aya::maps::{Array, HashMap, Map, MapData, PerCpuArray, XskMap};
use aya::programs::links::FdLink;
use aya::programs::{ProgramError, TestRun, TestRunOptions, Xdp, XdpMode};
use aya::{Ebpf, EbpfError, EbpfLoader, Pod};
use herd_config::{Affinity, MacMode, Protocol};

use herd_packet::classify::Verdict;
use herd_packet::clock::coarse_monotonic_ns;
use herd_packet::counts::{Count, Traffic};
use herd_packet::flows::{Connection, FLOWS};
use herd_packet::rules::{DropReason, FarmRules};
use herd_packet::table::{ModeTable, MAX_BUCKETS};

use crate::pin::{Pin, PinError};

/// The program object, built by `build.rs`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/herd.bpf.o"));

/// The programs' names in the object (their function names).
const CLASSIFY: &str = "herd_classify";
const REDIRECT: &str = "herd_redirect";

/// The most RX queues the AF_XDP mode serves (`MAX_QUEUES` in herd.bpf.c).
pub const MAX_QUEUES: u32 = 64;

/// The most VIPs of each family the program holds (the configuration's limit).
const MAX_VIPS: usize = herd_config::Farm::MAX_VIPS;

/// The farm settings as the program's `farm` map holds them: `struct farm` in herd.bpf.c.
#[repr(C)]
#[derive(Clone, Copy)]
struct FarmSettings {
    sip: [u64; 4],
    mask: u32,
    covered: [u8; 3],
    vips_v4: u8,
    vips_v6: u8,
    if_mac: [u8; 6],
    mac_mode: u8,
    lookups: u8,
    pad: [u8; 7],
    vip4: [[u8; 4]; MAX_VIPS],
    vip6: [[u8; 16]; MAX_VIPS],
}

// SAFETY: `FarmSettings` is `repr(C)` plain data whose fields leave no padding (the explicit
// `pad` fills the only gap), so every byte pattern is a valid value.
unsafe impl Pod for FarmSettings {}

/// A key of the program's `flows` map: a [`Connection`], which aya may copy from and to the
/// kernel (the orphan rule keeps `Pod` off `herd_packet`'s own type).
#[repr(transparent)]
#[derive(Clone, Copy)]
struct FlowKey(Connection);

// SAFETY: `Connection` is `repr(C)` byte arrays, 40 bytes with no padding (its alignment, 8,
// divides its size), so every byte pattern is a valid value; `FlowKey` is transparent over it.
unsafe impl Pod for FlowKey {}

/// A `struct count` of herd.bpf.c as the `counters` map holds it: packets, then bytes.
type CountValue = [u64; 2];

fn to_count(value: CountValue) -> Count {
    Count {
        packets: value[0],
        bytes: value[1],
    }
}

/// The counters of the program's verdicts (packets and bytes), in the order of `enum verdict`
/// in herd.bpf.c, which has one more: `V_REDIRECTED`, the frames the redirect program hands to
/// the sockets.
const VERDICTS: [Verdict; 6] = [
    Verdict::Pass,
    Verdict::Accept,
    Verdict::Drop(DropReason::NotOwner),
    Verdict::Drop(DropReason::NoRule),
    Verdict::Drop(DropReason::Malformed),
    Verdict::AnswerNeighbor,
];

/// What can go wrong with the in-kernel program.
#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    /// The object could not be loaded (the verifier's log is in the message).
    #[error("cannot load the eBPF program: {0} (loading eBPF programs needs root or CAP_BPF)")]
    Load(#[from] EbpfError),
    /// The program could not be loaded, run or attached.
    #[error("eBPF program: {0}")]
    Program(#[from] ProgramError),
    /// A map could not be read or written.
    #[error("eBPF map: {0}")]
    Map(#[from] aya::maps::MapError),
    /// The object lacks a program or map this code expects (a build mismatch).
    #[error("the eBPF object has no {0}")]
    Missing(&'static str),
    /// The farm has more VIPs of a family than the program holds.
    #[error("the eBPF program holds at most {MAX_VIPS} VIPs of each family")]
    TooManyVips,
    /// The attachment could not be pinned to, or unpinned from, the BPF file system.
    #[error("XDP program: {0}")]
    Pin(#[from] PinError),
    /// The program could not be attached as a link (the kernel is too old for XDP links).
    #[error("XDP link: {0}")]
    Link(#[from] aya::programs::links::LinkError),
    /// A mode table of another size than the one the program was loaded with.
    #[error("a table of {got} buckets, but the program was loaded for {expected}")]
    TableSize {
        /// The loaded size.
        expected: usize,
        /// The offered size.
        got: usize,
    },
    /// Flows asked of the redirect program, which has none (the workers do), or lookups or a
    /// worker's switch asked of the classifier, which has no workers.
    #[error("the AF_XDP redirect program holds no flow, and only it is told when to ask the kernel and which worker is behind")]
    NoTable,
    /// A socket for an RX queue past [`MAX_QUEUES`].
    #[error("RX queue {0}: the AF_XDP mode serves at most {MAX_QUEUES} queues")]
    Queue(u32),
    /// A test run did not count exactly one verdict.
    #[error("a test run counted {0} verdicts instead of one")]
    Uncounted(u64),
}

/// What one test run of the program did.
#[derive(Debug)]
pub struct TestOutcome {
    /// The verdict it counted; `None` when the redirect program handed the frame to an AF_XDP
    /// socket (or, with none on the queue, dropped it).
    pub verdict: Option<Verdict>,
    /// The XDP action it returned (`XDP_DROP` 1, `XDP_PASS` 2, `XDP_TX` 3, `XDP_REDIRECT` 4).
    pub action: u32,
    /// The frame as the program left it.
    pub frame: Vec<u8>,
}

/// How a worker tells the redirect program whether it is behind: while it is, the program
/// drops the frames of buckets this node does not serve at all, instead of handing them to
/// the worker to drop.
pub struct BehindSwitch {
    behind: Array<MapData, u32>,
    queue: u32,
    /// What the program was told last.
    on: bool,
}

impl BehindSwitch {
    /// Tells the program whether the worker is behind; a system call only when it changes.
    pub fn set(&mut self, behind: bool) -> Result<(), XdpError> {
        if behind != self.on {
            self.behind.set(self.queue, u32::from(behind), 0)?;
            self.on = behind;
        }
        Ok(())
    }
}

/// The object's XDP program `name`.
fn xdp_program<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut Xdp, XdpError> {
    let program = ebpf.program_mut(name).ok_or(XdpError::Missing(name))?;
    Ok(program.try_into()?)
}

/// One of the programs, loaded and filled with one farm's settings, not yet attached: the
/// in-kernel classifier ([`XdpProgram::load`]) or the AF_XDP redirect
/// ([`XdpProgram::load_redirect`]).
pub struct XdpProgram {
    ebpf: Ebpf,
    /// Which program of the object this is.
    program: &'static str,
    /// Which half of the `buckets` map packets read.
    active: u32,
    /// The mode table packets read; every table installed must have its bucket count.
    modes: Option<ModeTable>,
    /// The attachment, pinned so that it outlives a killed herd (see [`XdpProgram::attach`]).
    attached: Option<Pin>,
}

impl XdpProgram {
    /// Loads the program (the kernel verifies it here) and fills its maps with the farm's
    /// rules and the modes of `table`, on an interface whose MAC is `if_mac`. Its flow table
    /// starts empty.
    ///
    /// The program is loaded alive until [`XdpProgram::keep_alive`] first sets a deadline.
    pub fn load(rules: &FarmRules, table: &ModeTable, if_mac: [u8; 6]) -> Result<Self, XdpError> {
        let mut classifier = Self::load_program(CLASSIFY, FLOWS as u32)?;
        classifier.write_rules(rules, (table.len() - 1) as u32, if_mac)?;
        // The size every table installed must have.
        classifier.modes = Some(table.clone());
        classifier.install(table)?;
        Ok(classifier)
    }

    /// Loads the AF_XDP mode's redirect program for a farm with `rules` and the modes of
    /// `table` on an interface whose MAC is `if_mac`; [`XdpProgram::add_socket`] gives it the
    /// sockets. It reads the table only for a worker that is behind ([`BehindSwitch`]): the
    /// workers classify under theirs. Alive until [`XdpProgram::keep_alive`] first sets a
    /// deadline.
    pub fn load_redirect(
        rules: &FarmRules,
        table: &ModeTable,
        if_mac: [u8; 6],
    ) -> Result<Self, XdpError> {
        // The redirect program keeps no flow: a one-entry map spares the kernel the memory.
        let mut redirect = Self::load_program(REDIRECT, 1)?;
        redirect.write_rules(rules, (table.len() - 1) as u32, if_mac)?;
        redirect.modes = Some(table.clone());
        redirect.install(table)?;
        Ok(redirect)
    }

    /// The switch with which the worker of RX queue `queue` tells the redirect program it is
    /// behind; a handle of its own on the program's `behind` map, for the worker's thread.
    pub fn behind_switch(&self, queue: u32) -> Result<BehindSwitch, XdpError> {
        if self.program != REDIRECT {
            return Err(XdpError::NoTable);
        }
        if queue >= MAX_QUEUES {
            return Err(XdpError::Queue(queue));
        }
        let map = self.ebpf.map("behind").ok_or(XdpError::Missing("behind"))?;
        let Map::Array(data) = map else {
            return Err(XdpError::Missing("behind"));
        };
        let own = MapData::from_id(data.info()?.id())?;
        Ok(BehindSwitch {
            behind: Map::Array(own).try_into()?,
            queue,
            on: false,
        })
    }

    /// Loads `program` with a `flows` map of `flows` entries.
    fn load_program(program: &'static str, flows: u32) -> Result<Self, XdpError> {
        let mut ebpf = EbpfLoader::new()
            .map_max_entries("flows", flows)
            .load(OBJECT)?;
        xdp_program(&mut ebpf, program)?.load()?;
        let mut loaded = Self {
            ebpf,
            program,
            active: 0,
            modes: None,
            attached: None,
        };
        loaded.array::<u64>("liveness")?.set(0, u64::MAX, 0)?;
        Ok(loaded)
    }

    /// Makes `socket`, an AF_XDP socket bound to RX queue `queue` of the interface, the one
    /// the redirect program hands that queue's VIP flows to.
    pub fn add_socket(&mut self, queue: u32, socket: &impl AsRawFd) -> Result<(), XdpError> {
        if queue >= MAX_QUEUES {
            return Err(XdpError::Queue(queue));
        }
        let map = self
            .ebpf
            .map_mut("sockets")
            .ok_or(XdpError::Missing("sockets"))?;
        XskMap::try_from(map)?.set(queue, socket.as_raw_fd(), 0)?;
        Ok(())
    }

    /// How many frames the redirect program has handed to the sockets, summed over the CPUs.
    pub fn redirected(&self) -> Result<u64, XdpError> {
        Ok(self.verdict_counts()?[VERDICTS.len()].packets)
    }

    fn write_rules(
        &mut self,
        rules: &FarmRules,
        mask: u32,
        if_mac: [u8; 6],
    ) -> Result<(), XdpError> {
        let (v4, v6) = (rules.vips_v4(), rules.vips_v6());
        if v4.len() > MAX_VIPS || v6.len() > MAX_VIPS {
            return Err(XdpError::TooManyVips);
        }
        let mut settings = FarmSettings {
            sip: rules.key().primed_state(),
            mask,
            covered: [Protocol::Tcp, Protocol::Udp, Protocol::Icmp]
                .map(|protocol| u8::from(rules.covers(protocol))),
            vips_v4: v4.len() as u8,
            vips_v6: v6.len() as u8,
            if_mac,
            mac_mode: match rules.mac_mode() {
                MacMode::Unicast => 0,
                MacMode::Multicast => 1,
            },
            lookups: 0,
            pad: [0; 7],
            vip4: [[0; 4]; MAX_VIPS],
            vip6: [[0; 16]; MAX_VIPS],
        };
        settings.vip4[..v4.len()].copy_from_slice(v4);
        settings.vip6[..v6.len()].copy_from_slice(v6);
        self.array::<FarmSettings>("farm")?.set(0, settings, 0)?;
        let mut ports = self.array::<u8>("ports")?;
        for (block, protocol) in [Protocol::Tcp, Protocol::Udp].into_iter().enumerate() {
            for port in 0..=u16::MAX {
                let rule = match rules.affinity(protocol, port) {
                    None => continue,
                    Some(Affinity::ClientIp) => 1,
                    Some(Affinity::ClientIpPort) => 2,
                };
                ports.set(block as u32 * 65536 + u32::from(port), rule, 0)?;
            }
        }
        Ok(())
    }

    /// Installs a new mode table without stopping traffic: it is written into the half of the
    /// `buckets` map that packets do not read, then one 4-byte write switches them to it. The
    /// table must have the bucket count the classifier was loaded with. The flow table is
    /// kept: connections survive a change of modes.
    pub fn install(&mut self, table: &ModeTable) -> Result<(), XdpError> {
        let expected = self.modes.as_ref().ok_or(XdpError::NoTable)?.len();
        if table.len() != expected {
            return Err(XdpError::TableSize {
                expected,
                got: table.len(),
            });
        }
        let next = self.active ^ 1;
        let mut buckets = self.array::<u8>("buckets")?;
        for (bucket, &mode) in table.modes().iter().enumerate() {
            buckets.set(next * MAX_BUCKETS as u32 + bucket as u32, mode.0, 0)?;
        }
        self.array::<u32>("active")?.set(0, next, 0)?;
        self.active = next;
        self.modes = Some(table.clone());
        Ok(())
    }

    /// The connections in the program's flow table, with when each was last seen
    /// (`CLOCK_MONOTONIC_COARSE`, ns). For diagnostics and tests: it reads the map one entry at
    /// a time (two system calls each), and while packets flow, connections added or evicted
    /// meanwhile may be missed or seen twice.
    pub fn flows(&self) -> Result<Vec<(Connection, u64)>, XdpError> {
        self.flow_map()?
            .iter()
            .map(|entry| Ok(entry.map(|(key, seen)| (key.0, seen))?))
            .collect()
    }

    /// Makes the redirect program ask the kernel about the connection of every TCP segment but
    /// a SYN that it hands the workers (`lookups`), or stop: it should while some bucket of the
    /// workers' table keeps known connections ([`herd_packet::table::BucketMode::KNOWN`]), and
    /// only then, since a lookup costs every such segment a socket lookup.
    pub fn set_lookups(&mut self, lookups: bool) -> Result<(), XdpError> {
        if self.program != REDIRECT {
            return Err(XdpError::NoTable);
        }
        let mut farm = self.array::<FarmSettings>("farm")?;
        let mut settings = farm.get(&0, 0)?;
        settings.lookups = u8::from(lookups);
        farm.set(0, settings, 0)?;
        Ok(())
    }

    /// The program's flow table; the redirect program has none.
    fn flow_map(&self) -> Result<HashMap<&MapData, FlowKey, u64>, XdpError> {
        if self.program == REDIRECT {
            return Err(XdpError::NoTable);
        }
        let map = self.ebpf.map("flows").ok_or(XdpError::Missing("flows"))?;
        Ok(HashMap::try_from(map)?)
    }

    /// Keeps the node owning its buckets for `ttl` from now. Called regularly by a live herd:
    /// once the last deadline has passed (herd killed or frozen), the program owns no bucket
    /// and the node accepts no VIP packet, so a dead node cannot take the traffic the others
    /// took over.
    pub fn keep_alive(&mut self, ttl: Duration) -> Result<(), XdpError> {
        let deadline =
            coarse_monotonic_ns().saturating_add(ttl.as_nanos().try_into().unwrap_or(u64::MAX));
        self.array::<u64>("liveness")?.set(0, deadline, 0)?;
        Ok(())
    }

    /// Attaches the program to `interface` and pins the attachment at `pin` (on a BPF file
    /// system), so that it stays attached if herd is killed: then the liveness deadline passes
    /// and the node accepts no VIP packet (fail closed), where a detached program would let the
    /// kernel accept them all. [`XdpProgram::detach`] removes it.
    ///
    /// `generic` attaches in the kernel's generic XDP mode instead of the driver's: for virtual
    /// interfaces, where the driver mode of veth cannot send answers (`XDP_TX`) to a peer that
    /// has no XDP program of its own.
    pub fn attach(&mut self, interface: &str, pin: &Path, generic: bool) -> Result<(), XdpError> {
        let program = xdp_program(&mut self.ebpf, self.program)?;
        let mode = if generic {
            XdpMode::Skb
        } else {
            XdpMode::Driver
        };
        let id = program.attach(interface, mode)?;
        let link: FdLink = program.take_link(id)?.try_into()?;
        self.attached = Some(Pin::new(link, pin)?);
        Ok(())
    }

    /// The kernel's id of the program, which the interface it is attached to shows.
    pub fn id(&mut self) -> Result<u32, XdpError> {
        Ok(xdp_program(&mut self.ebpf, self.program)?.info()?.id())
    }

    /// Detaches the program, if attached, and removes its pin.
    pub fn detach(&mut self) -> Result<(), XdpError> {
        if let Some(pin) = self.attached.take() {
            pin.remove()?;
        }
        Ok(())
    }

    /// Detaches a program a previous herd left pinned at `pin` (it was killed); whether there
    /// was one.
    pub fn remove_stale(pin: &Path) -> Result<bool, XdpError> {
        Ok(Pin::remove_stale(pin)?)
    }

    /// How many packets met each verdict since the program was loaded, summed over the CPUs.
    pub fn counts(&self) -> Result<Vec<(Verdict, u64)>, XdpError> {
        let counts = self.verdict_counts()?;
        Ok(VERDICTS
            .into_iter()
            .zip(counts.map(|c| c.packets))
            .collect())
    }

    /// The packets and bytes the program accepted, dropped and passed since it was loaded,
    /// summed over the CPUs. Neighbour answers are in none of them: they are the node's own
    /// traffic, not the farm's.
    ///
    /// The redirect program accepts nothing and counts only what it keeps from the workers:
    /// the traffic it passes to the kernel, and what it drops itself (VIP traffic no rule
    /// balances, malformed, or arriving while herd is dead). The AF_XDP mode's traffic is
    /// this plus every worker's [`crate::afxdp::Counters::traffic`].
    pub fn traffic(&self) -> Result<Traffic, XdpError> {
        let mut traffic = Traffic::default();
        // The zip leaves out the redirected frames, which the workers count.
        for (verdict, count) in VERDICTS.into_iter().zip(self.verdict_counts()?) {
            let outcome = match verdict {
                Verdict::Accept => &mut traffic.accepted,
                Verdict::Drop(_) => &mut traffic.dropped,
                Verdict::Pass => &mut traffic.passed,
                Verdict::AnswerNeighbor => continue,
            };
            *outcome = *outcome + count;
        }
        Ok(traffic)
    }

    /// The program's mean time per run on `frame`, over `repeat` runs in the kernel with
    /// `BPF_PROG_TEST_RUN`, as the kernel measures it.
    pub fn time_per_run(&self, frame: &[u8], repeat: u32) -> Result<Duration, XdpError> {
        let result = self.program()?.test_run(TestRunOptions {
            data_in: Some(frame),
            repeat,
            ..TestRunOptions::default()
        })?;
        Ok(result.duration)
    }

    /// The packets and bytes of each verdict, summed over the CPUs, in the order of
    /// `VERDICTS`, then those redirected.
    fn verdict_counts(&self) -> Result<[Count; VERDICTS.len() + 1], XdpError> {
        let counters = self.per_cpu_counters()?;
        let mut counts = [Count::default(); VERDICTS.len() + 1];
        for (index, count) in counts.iter_mut().enumerate() {
            *count = counters
                .get(&(index as u32), 0)?
                .iter()
                .fold(Count::default(), |sum, &cpu| sum + to_count(cpu));
        }
        Ok(counts)
    }

    /// Runs the program on one frame in the kernel with `BPF_PROG_TEST_RUN` (which refuses
    /// frames shorter than an Ethernet header): its verdict, its XDP action and the frame as it
    /// left the program (an answer, or a rewritten header). For tests: each call reads every
    /// counter twice.
    pub fn test_run(&self, frame: &[u8]) -> Result<TestOutcome, XdpError> {
        let before = self.verdict_counts()?;
        // Room for an answer longer than the question.
        let mut out = vec![0; frame.len() + 256];
        let result = self.program()?.test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ..TestRunOptions::default()
        })?;
        out.truncate(result.data_size_out as usize);
        let after = self.verdict_counts()?;
        let decisions = VERDICTS.into_iter().map(Some).chain([None]);
        let mut counted =
            decisions
                .zip(before.iter().zip(after))
                .filter_map(|(verdict, (before, after))| {
                    (after.packets != before.packets)
                        .then_some((verdict, after.packets - before.packets))
                });
        match (counted.next(), counted.next()) {
            (Some((verdict, 1)), None) => Ok(TestOutcome {
                verdict,
                action: result.return_value,
                frame: out,
            }),
            (Some((_, n)), None) => Err(XdpError::Uncounted(n)),
            (None, _) => Err(XdpError::Uncounted(0)),
            (Some(_), Some(_)) => Err(XdpError::Uncounted(2)),
        }
    }

    fn per_cpu_counters(&self) -> Result<PerCpuArray<&MapData, CountValue>, XdpError> {
        let map = self
            .ebpf
            .map("counters")
            .ok_or(XdpError::Missing("counters map"))?;
        Ok(PerCpuArray::try_from(map)?)
    }

    fn program(&self) -> Result<&Xdp, XdpError> {
        let program = self
            .ebpf
            .program(self.program)
            .ok_or(XdpError::Missing(self.program))?;
        Ok(program.try_into()?)
    }

    fn array<V: Pod>(&mut self, name: &'static str) -> Result<Array<&mut MapData, V>, XdpError> {
        let map = self.ebpf.map_mut(name).ok_or(XdpError::Missing(name))?;
        Ok(Array::try_from(map)?)
    }
}
