//! What the kernel counted in the farm's namespace: its UDP counters (`/proc/net/snmp`) and
//! its loopback's traffic (`/proc/net/dev`), which carries every heartbeat there, since every
//! node's address is local to the namespace.

use anyhow::Context;
use herd_testbed::Netns;

/// The kernel's counts in one namespace at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// UDP datagrams delivered to a socket.
    pub udp_in: u64,
    /// UDP datagrams sent.
    pub udp_out: u64,
    /// UDP datagrams dropped on arrival: a full receive buffer, or another receive error.
    pub udp_dropped: u64,
    /// Packets the loopback carried.
    pub loopback_packets: u64,
    /// Their bytes, from the (empty) Ethernet header on.
    pub loopback_bytes: u64,
}

impl Counts {
    /// The counts of `netns` now.
    pub fn of(netns: &Netns) -> anyhow::Result<Self> {
        // /proc/thread-self/net shows the namespace of the thread that reads it.
        let (snmp, dev) = netns.run(|| {
            (
                std::fs::read_to_string("/proc/thread-self/net/snmp"),
                std::fs::read_to_string("/proc/thread-self/net/dev"),
            )
        })?;
        let snmp = snmp.context("cannot read /proc/net/snmp")?;
        let dev = dev.context("cannot read /proc/net/dev")?;
        Self::parse(&snmp, &dev).with_context(|| format!("in namespace {}", netns.name()))
    }

    /// The counts in the text of `/proc/net/snmp` and `/proc/net/dev`.
    fn parse(snmp: &str, dev: &str) -> anyhow::Result<Self> {
        let udp = |field: &str| udp_counter(snmp, field);
        let (loopback_bytes, loopback_packets) = loopback(dev)?;
        Ok(Counts {
            udp_in: udp("InDatagrams")?,
            udp_out: udp("OutDatagrams")?,
            udp_dropped: udp("InErrors")?,
            loopback_packets,
            loopback_bytes,
        })
    }

    /// What was counted between `earlier` and `self`.
    pub fn since(self, earlier: Counts) -> Counts {
        Counts {
            udp_in: self.udp_in.saturating_sub(earlier.udp_in),
            udp_out: self.udp_out.saturating_sub(earlier.udp_out),
            udp_dropped: self.udp_dropped.saturating_sub(earlier.udp_dropped),
            loopback_packets: self
                .loopback_packets
                .saturating_sub(earlier.loopback_packets),
            loopback_bytes: self.loopback_bytes.saturating_sub(earlier.loopback_bytes),
        }
    }
}

/// The UDP counter `field` of `/proc/net/snmp`: a `Udp:` line of names, then one of values.
fn udp_counter(snmp: &str, field: &str) -> anyhow::Result<u64> {
    let mut lines = snmp.lines().filter_map(|line| line.strip_prefix("Udp:"));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
        anyhow::bail!("/proc/net/snmp has no UDP counters");
    };
    let index = names
        .split_whitespace()
        .position(|name| name == field)
        .with_context(|| format!("/proc/net/snmp has no UDP counter {field}"))?;
    let value = values
        .split_whitespace()
        .nth(index)
        .with_context(|| format!("/proc/net/snmp has no value for UDP counter {field}"))?;
    value
        .parse()
        .with_context(|| format!("/proc/net/snmp's UDP {field} is `{value}`"))
}

/// The bytes and packets the loopback received, from `/proc/net/dev`: `lo:` and its receive
/// counters, bytes first.
fn loopback(dev: &str) -> anyhow::Result<(u64, u64)> {
    let counters = dev
        .lines()
        .find_map(|line| line.trim_start().strip_prefix("lo:"))
        .context("/proc/net/dev has no loopback")?;
    let mut fields = counters.split_whitespace().map(str::parse::<u64>);
    match (fields.next(), fields.next()) {
        (Some(Ok(bytes)), Some(Ok(packets))) => Ok((bytes, packets)),
        _ => anyhow::bail!("/proc/net/dev's loopback line is `{}`", counters.trim()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SNMP: &str = "\
Ip: Forwarding DefaultTTL
Ip: 1 64
Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors
Udp: 1200 3 7 1210 7 0
UdpLite: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors
UdpLite: 0 0 0 0 0 0
";
    const DEV: &str = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets
    lo:  840000    1210    0    0    0     0          0         0   840000    1210
";

    #[test]
    fn the_counters_are_read_by_name() {
        let counts = Counts::parse(SNMP, DEV).unwrap();
        assert_eq!(
            counts,
            Counts {
                udp_in: 1200,
                udp_out: 1210,
                udp_dropped: 7,
                loopback_packets: 1210,
                loopback_bytes: 840_000,
            }
        );
        let later = Counts {
            udp_in: 1300,
            ..counts
        };
        assert_eq!(later.since(counts).udp_in, 100);
        assert_eq!(later.since(counts).udp_out, 0);
    }

    #[test]
    fn missing_counters_are_named() {
        let error = Counts::parse("Ip: a\nIp: 1\n", DEV).unwrap_err();
        assert!(error.to_string().contains("no UDP counters"), "{error:#}");
        let error = Counts::parse(SNMP, "Inter-|\n eth0: 1 2\n").unwrap_err();
        assert!(error.to_string().contains("no loopback"), "{error:#}");
        let error = Counts::parse(&SNMP.replace("InErrors", "Other"), DEV).unwrap_err();
        assert!(error.to_string().contains("InErrors"), "{error:#}");
        let error = Counts::parse(SNMP, "    lo: x 1\n").unwrap_err();
        assert!(error.to_string().contains("`x 1`"), "{error:#}");
    }
}
