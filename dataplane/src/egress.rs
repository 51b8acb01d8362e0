//! The egress guard of `bpf/egress.bpf.c`, loaded with aya: a TC program on the interface's
//! egress that keeps the node's kernel from teaching the link that a VIP lives at the node's
//! own MAC. A neighbour solicitation from a VIP leaves from the node's own address instead,
//! and the kernel's neighbour advertisements and ARP packets that map a VIP to the node's MAC
//! are dropped; herd's own announcements, which carry the virtual MAC, leave. It is attached
//! in both dataplane modes, through a tcx link pinned like the XDP program's, so that it keeps
//! guarding the VIPs a killed herd leaves on the interface.

use std::net::{IpAddr, Ipv6Addr};
use std::path::Path;

use aya::maps::{Array, PerCpuArray};
use aya::programs::links::{FdLink, LinkOrder};
use aya::programs::tc::TcAttachOptions;
use aya::programs::{ProgramError, SchedClassifier, TcAttachType, TestRun, TestRunOptions};
use aya::{Ebpf, EbpfError, Pod};

use crate::pin::{Pin, PinError};

/// The program object, built by `build.rs`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/egress.bpf.o"));

/// The program's name in the object (its function name).
const PROGRAM: &str = "herd_egress";

/// The most VIPs of each family the guard holds (the configuration's limit).
const MAX_VIPS: usize = herd_config::Farm::MAX_VIPS;

/// tcx's verdict for a frame that goes on (`TCX_NEXT`).
const TCX_NEXT: i32 = -1;
/// tcx's verdict for a frame dropped (`TCX_DROP`).
const TCX_DROP: i32 = 2;

/// What the guard knows, as its `guard` map holds it: `struct guard` in egress.bpf.c.
#[repr(C)]
#[derive(Clone, Copy)]
struct GuardSettings {
    if_mac: [u8; 6],
    vips_v4: u8,
    vips_v6: u8,
    source: [u8; 16],
    vip4: [[u8; 4]; MAX_VIPS],
    vip6: [[u8; 16]; MAX_VIPS],
}

// SAFETY: `GuardSettings` is `repr(C)` byte arrays and bytes, with no padding (its alignment is
// 1), so every byte pattern is a valid value.
unsafe impl Pod for GuardSettings {}

/// What can go wrong with the egress guard.
#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    /// The object could not be loaded (the verifier's log is in the message).
    #[error("cannot load the egress guard: {0} (loading eBPF programs needs root or CAP_BPF)")]
    Load(#[from] EbpfError),
    /// The program could not be loaded, run or attached.
    #[error("egress guard: {0}")]
    Program(#[from] ProgramError),
    /// A map could not be read or written.
    #[error("egress guard's map: {0}")]
    Map(#[from] aya::maps::MapError),
    /// The attachment could not be made a link that can be pinned.
    #[error("egress guard's link: {0}")]
    Link(#[from] aya::programs::links::LinkError),
    /// The attachment could not be pinned to, or unpinned from, the BPF file system.
    #[error("egress guard: {0}")]
    Pin(#[from] PinError),
    /// The object lacks a program or map this code expects (a build mismatch).
    #[error("the egress guard's object has no {0}")]
    Missing(&'static str),
    /// More VIPs of a family than the guard holds.
    #[error("the egress guard holds at most {MAX_VIPS} VIPs of each family")]
    TooManyVips,
    /// A test run returned neither `TCX_NEXT` nor `TCX_DROP`.
    #[error("the egress guard returned {0}, neither TCX_NEXT (-1) nor TCX_DROP (2)")]
    Verdict(i32),
    /// IPv6 VIPs, but no address of the node's own to solicit neighbours from.
    #[error("IPv6 VIPs need an IPv6 address of the node's own on the interface to solicit neighbours from")]
    NoSource,
}

/// What the guard has done since it was loaded, summed over the CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Guarded {
    /// Neighbour solicitations from a VIP sent from the node's own address instead.
    pub solicitations_readdressed: u64,
    /// The kernel's neighbour advertisements of a VIP with the node's MAC, dropped.
    pub advertisements_dropped: u64,
    /// The kernel's ARP packets from a VIP with the node's MAC, dropped.
    pub arp_dropped: u64,
}

/// What the guard did with one frame in a test run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Egress {
    /// The frame leaves, as the guard left it.
    Leaves(Vec<u8>),
    /// The frame is dropped.
    Dropped,
}

/// The egress guard, loaded with one farm's VIPs, attached or not.
pub struct EgressGuard {
    ebpf: Ebpf,
    /// The attachment, pinned so that it outlives a killed herd.
    attached: Option<Pin>,
}

impl EgressGuard {
    /// Loads the guard for `vips` on an interface whose MAC is `if_mac`; `source` is the
    /// node's own IPv6 address that solicitations from an IPv6 VIP leave from instead (its
    /// link-local address, preferably), needed when there is an IPv6 VIP.
    pub fn load(
        vips: &[IpAddr],
        if_mac: [u8; 6],
        source: Option<Ipv6Addr>,
    ) -> Result<Self, EgressError> {
        let mut settings = GuardSettings {
            if_mac,
            vips_v4: 0,
            vips_v6: 0,
            source: source.unwrap_or(Ipv6Addr::UNSPECIFIED).octets(),
            vip4: [[0; 4]; MAX_VIPS],
            vip6: [[0; 16]; MAX_VIPS],
        };
        for vip in vips {
            match vip {
                IpAddr::V4(vip) => {
                    let slot = settings.vip4.get_mut(usize::from(settings.vips_v4));
                    *slot.ok_or(EgressError::TooManyVips)? = vip.octets();
                    settings.vips_v4 += 1;
                }
                IpAddr::V6(vip) => {
                    let slot = settings.vip6.get_mut(usize::from(settings.vips_v6));
                    *slot.ok_or(EgressError::TooManyVips)? = vip.octets();
                    settings.vips_v6 += 1;
                }
            }
        }
        if settings.vips_v6 > 0 && source.is_none() {
            return Err(EgressError::NoSource);
        }
        let mut ebpf = Ebpf::load(OBJECT)?;
        program_mut(&mut ebpf)?.load()?;
        let map = ebpf.map_mut("guard").ok_or(EgressError::Missing("guard"))?;
        Array::<_, GuardSettings>::try_from(map)?.set(0, settings, 0)?;
        Ok(Self {
            ebpf,
            attached: None,
        })
    }

    /// Attaches the guard to `interface`'s egress, after any program already there, and pins
    /// the attachment at `pin` (on a BPF file system). [`EgressGuard::detach`] removes it.
    pub fn attach(&mut self, interface: &str, pin: &Path) -> Result<(), EgressError> {
        let program = program_mut(&mut self.ebpf)?;
        let id = program.attach_with_options(
            interface,
            TcAttachType::Egress,
            TcAttachOptions::TcxOrder(LinkOrder::default()),
        )?;
        let link: FdLink = program.take_link(id)?.try_into()?;
        self.attached = Some(Pin::new(link, pin)?);
        Ok(())
    }

    /// Detaches the guard, if attached, and removes its pin.
    pub fn detach(&mut self) -> Result<(), EgressError> {
        if let Some(pin) = self.attached.take() {
            pin.remove()?;
        }
        Ok(())
    }

    /// Detaches a guard a previous herd left pinned at `pin` (it was killed); whether there
    /// was one.
    pub fn remove_stale(pin: &Path) -> Result<bool, EgressError> {
        Ok(Pin::remove_stale(pin)?)
    }

    /// The kernel's id of the guard's program.
    pub fn id(&self) -> Result<u32, EgressError> {
        let program: &SchedClassifier = self
            .ebpf
            .program(PROGRAM)
            .ok_or(EgressError::Missing(PROGRAM))?
            .try_into()?;
        Ok(program.info()?.id())
    }

    /// The kernel's ids of the programs attached to `interface`'s egress through tcx, in
    /// order: what [`EgressGuard::id`] is looked for among.
    pub fn attached_to(interface: &str) -> Result<Vec<u32>, EgressError> {
        let (_revision, programs) = SchedClassifier::query_tcx(interface, TcAttachType::Egress)?;
        Ok(programs.iter().map(|program| program.id()).collect())
    }

    /// What the guard has done since it was loaded.
    pub fn guarded(&self) -> Result<Guarded, EgressError> {
        let map = self
            .ebpf
            .map("actions")
            .ok_or(EgressError::Missing("actions"))?;
        let actions = PerCpuArray::<_, u64>::try_from(map)?;
        let total =
            |index: u32| -> Result<u64, EgressError> { Ok(actions.get(&index, 0)?.iter().sum()) };
        Ok(Guarded {
            solicitations_readdressed: total(0)?,
            advertisements_dropped: total(1)?,
            arp_dropped: total(2)?,
        })
    }

    /// Runs the guard once on `frame` (`BPF_PROG_TEST_RUN`), without sending it anywhere.
    pub fn test_run(&self, frame: &[u8]) -> Result<Egress, EgressError> {
        let program: &SchedClassifier = self
            .ebpf
            .program(PROGRAM)
            .ok_or(EgressError::Missing(PROGRAM))?
            .try_into()?;
        let mut out = vec![0u8; frame.len()];
        let result = program.test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            repeat: 1,
            ..TestRunOptions::default()
        })?;
        out.truncate(result.data_size_out as usize);
        match result.return_value as i32 {
            TCX_DROP => Ok(Egress::Dropped),
            TCX_NEXT => Ok(Egress::Leaves(out)),
            other => Err(EgressError::Verdict(other)),
        }
    }
}

/// The object's program.
fn program_mut(ebpf: &mut Ebpf) -> Result<&mut SchedClassifier, EgressError> {
    let program = ebpf
        .program_mut(PROGRAM)
        .ok_or(EgressError::Missing(PROGRAM))?;
    Ok(program.try_into()?)
}
