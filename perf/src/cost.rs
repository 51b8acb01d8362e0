//! The eBPF program's own cost per packet: herd's program and an empty one run on the same
//! frames with BPF_PROG_TEST_RUN, many times over, as the kernel times them. The difference is
//! what herd adds to every packet in XDP, without the driver, the generator or the stack.

use anyhow::Context;
use aya::programs::{TestRun, TestRunOptions};
use herd_dataplane::xdp::XdpProgram;
use herd_packet::craft::MAC_B;
use herd_packet::table::ModeTable;
use serde::Serialize;

use crate::farm::{BenchFarm, LOCAL};
use crate::mix::{self, Client};
use crate::programs::{self, Program};

/// Runs per timing: long enough that the kernel's per-run mean is stable to a nanosecond.
const REPEAT: u32 = 200_000;
/// Timings per frame and program; the median is kept.
const TRIALS: usize = 5;
/// The frames' size: the mix's default.
const SIZE: usize = 64;

/// The cost of one kind of frame.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Cost {
    /// What the frame is.
    pub frame: &'static str,
    /// herd's program, ns per packet.
    pub herd_ns: f64,
    /// The empty program, ns per packet.
    pub empty_ns: f64,
}

impl Cost {
    /// What herd's program adds to an empty one, ns per packet.
    pub fn added_ns(&self) -> f64 {
        self.herd_ns - self.empty_ns
    }
}

/// Representative frames: owned and not, both families, and traffic that is not for a VIP.
fn frames(farm: &BenchFarm) -> anyhow::Result<Vec<(&'static str, Vec<u8>)>> {
    let find = |v6: bool, owned: bool| -> anyhow::Result<Client> {
        (0..u32::from(u16::MAX))
            .map(|i| Client {
                addr: if v6 {
                    mix::v6_candidate(i)
                } else {
                    mix::v4_candidate(i)
                },
                port: 40000,
            })
            .find(|c| farm.herd_keeps(c.addr, c.port) == owned)
            .context("no client of the wanted owner among 65535")
    };
    let mut not_vip = mix::frame(find(false, true)?, SIZE);
    // The destination address (bytes 30-33): the receiver's own, not a VIP.
    not_vip[30..34].copy_from_slice(&[198, 18, 0, 1]);
    let sum = ipv4_header_checksum(&not_vip[14..34]);
    not_vip[24..26].copy_from_slice(&sum.to_be_bytes());
    Ok(vec![
        ("IPv4 UDP, owned", mix::frame(find(false, true)?, SIZE)),
        (
            "IPv4 UDP, other node's",
            mix::frame(find(false, false)?, SIZE),
        ),
        ("IPv6 UDP, owned", mix::frame(find(true, true)?, SIZE)),
        (
            "IPv6 UDP, other node's",
            mix::frame(find(true, false)?, SIZE),
        ),
        ("IPv4 UDP, not for a VIP", not_vip),
    ])
}

/// The IPv4 header checksum of `header`, its checksum field counted as zero.
fn ipv4_header_checksum(header: &[u8]) -> u16 {
    let mut copy = header.to_vec();
    copy[10..12].fill(0);
    herd_packet::wire::checksum(&copy)
}

/// Times herd's program (node 0 of `farm`, alive) and the empty one on each frame.
pub fn measure(farm: &BenchFarm) -> anyhow::Result<Vec<Cost>> {
    let modes = ModeTable::of_owner(farm.table(), LOCAL);
    let mut herd = XdpProgram::load(farm.rules(), &modes, MAC_B)?;
    herd.keep_alive(std::time::Duration::from_secs(3600))?;
    let mut empty = programs::load(Program::Pass)?;
    let empty = programs::xdp(&mut empty, Program::Pass)?;
    let mut costs = Vec::new();
    for (frame, bytes) in frames(farm)? {
        let herd_ns = median(TRIALS, || {
            Ok(herd.time_per_run(&bytes, REPEAT)?.as_nanos() as f64)
        })?;
        let empty_ns = median(TRIALS, || {
            let result = empty.test_run(TestRunOptions {
                data_in: Some(&bytes),
                repeat: REPEAT,
                ..TestRunOptions::default()
            })?;
            Ok(result.duration.as_nanos() as f64)
        })?;
        costs.push(Cost {
            frame,
            herd_ns,
            empty_ns,
        });
    }
    Ok(costs)
}

/// The median of `trials` results of `time`.
fn median(trials: usize, mut time: impl FnMut() -> anyhow::Result<f64>) -> anyhow::Result<f64> {
    let mut times = (0..trials)
        .map(|_| time())
        .collect::<anyhow::Result<Vec<f64>>>()?;
    times.sort_by(f64::total_cmp);
    times
        .get(times.len() / 2)
        .copied()
        .context("no timing to take the median of")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_is_the_middle_timing() {
        let mut values = [5.0, 1.0, 3.0, 9.0, 2.0].into_iter();
        assert_eq!(median(5, || Ok(values.next().unwrap())).unwrap(), 3.0);
        assert!(median(0, || Ok(1.0)).is_err());
    }

    #[test]
    fn the_frames_are_what_they_say() {
        let farm = BenchFarm::new().unwrap();
        let frames = frames(&farm).unwrap();
        assert_eq!(frames.len(), 5);
        let (_, not_vip) = &frames[4];
        assert_eq!(herd_packet::wire::checksum(&not_vip[14..34]), 0);
        assert_eq!(not_vip[30..34], [198, 18, 0, 1]);
    }
}
