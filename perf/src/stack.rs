//! The receiver's TCP stack under the SYN flood: listeners on the VIPs that the flood's SYNs
//! reach, and the kernel's TCP counters of the receiver's namespace (`/proc/net/snmp` and
//! `/proc/net/netstat`), which say what the stack did with the SYNs a contender let through.
//! herd itself never reads these; the harness may.

use std::collections::HashMap;
use std::fs;
use std::net::{SocketAddr, TcpListener};

use anyhow::{bail, Context};
use herd_testbed::Netns;
use serde::Serialize;

/// What the receiver's TCP stack counted, over both address families.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StackCounts {
    /// Segments the stack took in (`Tcp: InSegs`): the SYNs that reached TCP.
    pub segments_in: u64,
    /// Segments it sent (`Tcp: OutSegs`): under the flood, its SYN-ACKs.
    pub segments_out: u64,
    /// SYN-ACKs that carried a SYN cookie because the listener's queue was full
    /// (`TcpExt: SyncookiesSent`).
    pub cookies_sent: u64,
    /// SYNs a listener dropped (`TcpExt: ListenDrops`).
    pub listen_drops: u64,
    /// Segments with a bad checksum (`Tcp: InCsumErrors`): none, if the generator is right.
    pub checksum_errors: u64,
}

impl StackCounts {
    /// What was counted between `earlier` and `self`.
    pub fn since(&self, earlier: &StackCounts) -> StackCounts {
        StackCounts {
            segments_in: self.segments_in.saturating_sub(earlier.segments_in),
            segments_out: self.segments_out.saturating_sub(earlier.segments_out),
            cookies_sent: self.cookies_sent.saturating_sub(earlier.cookies_sent),
            listen_drops: self.listen_drops.saturating_sub(earlier.listen_drops),
            checksum_errors: self.checksum_errors.saturating_sub(earlier.checksum_errors),
        }
    }

    /// The counters out of the text of `/proc/net/snmp` and `/proc/net/netstat`.
    pub fn parse(snmp: &str, netstat: &str) -> anyhow::Result<Self> {
        let mut all = counters(snmp)?;
        all.extend(counters(netstat)?);
        let get = |name: &str| {
            all.get(name)
                .copied()
                .with_context(|| format!("the kernel's counters have no {name}"))
        };
        Ok(Self {
            segments_in: get("Tcp:InSegs")?,
            segments_out: get("Tcp:OutSegs")?,
            cookies_sent: get("TcpExt:SyncookiesSent")?,
            listen_drops: get("TcpExt:ListenDrops")?,
            checksum_errors: get("Tcp:InCsumErrors")?,
        })
    }

    /// The counters of `netns` now.
    pub fn read(netns: &Netns) -> anyhow::Result<Self> {
        // /proc/net follows the process's first thread; thread-self, the namespace this
        // thread entered.
        let (snmp, netstat) = netns.run(|| {
            let read =
                |path| fs::read_to_string(path).with_context(|| format!("cannot read {path}"));
            Ok::<_, anyhow::Error>((
                read("/proc/thread-self/net/snmp")?,
                read("/proc/thread-self/net/netstat")?,
            ))
        })??;
        Self::parse(&snmp, &netstat)
    }
}

/// The UDP datagrams the stack of `netns` has brought to a socket so far, IPv4 and IPv6
/// together: those read from a socket (`InDatagrams`, counted as they are read) and those a
/// full buffer refused (`RcvbufErrors`). Datagrams still queued are in neither.
pub fn udp_arrivals(netns: &Netns) -> anyhow::Result<u64> {
    let (snmp, snmp6) = netns.run(|| {
        let read = |path| fs::read_to_string(path).with_context(|| format!("cannot read {path}"));
        Ok::<_, anyhow::Error>((
            read("/proc/thread-self/net/snmp")?,
            read("/proc/thread-self/net/snmp6")?,
        ))
    })??;
    let v4 = counters(&snmp)?;
    let get = |name: &str| {
        v4.get(name)
            .copied()
            .with_context(|| format!("the kernel's counters have no {name}"))
    };
    // snmp6 is a name and a value per line.
    let v6: HashMap<&str, u64> = snmp6
        .lines()
        .filter_map(|line| {
            let (name, value) = line.split_once(char::is_whitespace)?;
            Some((name, value.trim().parse().ok()?))
        })
        .collect();
    let get6 = |name: &str| v6.get(name).copied().unwrap_or(0);
    Ok(get("Udp:InDatagrams")?
        + get("Udp:RcvbufErrors")?
        + get6("Udp6InDatagrams")
        + get6("Udp6RcvbufErrors"))
}

/// The counters of a `/proc/net/snmp` or `/proc/net/netstat` text, named `Group:Name`: each
/// group is a line of names followed by a line of values. Negative values (`Tcp: MaxConn` is
/// -1) are left out.
fn counters(text: &str) -> anyhow::Result<HashMap<String, u64>> {
    let mut out = HashMap::new();
    let mut lines = text.lines();
    while let Some(names) = lines.next() {
        let Some(values) = lines.next() else {
            bail!("the counter names `{names}` have no line of values");
        };
        let (Some((group, names)), Some((value_group, values))) =
            (names.split_once(':'), values.split_once(':'))
        else {
            bail!("`{names}` is not a line of counters");
        };
        if group != value_group {
            bail!("the names of {group} are followed by the values of {value_group}");
        }
        let (names, values): (Vec<&str>, Vec<&str>) = (
            names.split_whitespace().collect(),
            values.split_whitespace().collect(),
        );
        if names.len() != values.len() {
            bail!(
                "{group} has {} names but {} values",
                names.len(),
                values.len()
            );
        }
        for (name, value) in names.into_iter().zip(values) {
            let value: i64 = value
                .parse()
                .with_context(|| format!("{group}:{name} is `{value}`, not a number"))?;
            if let Ok(value) = u64::try_from(value) {
                out.insert(format!("{group}:{name}"), value);
            }
        }
    }
    Ok(out)
}

/// Listening sockets on `addrs` in `netns`, which answer the flood's SYNs (with SYN-ACKs, then
/// SYN cookies once their queue is full) until they are dropped.
pub fn listen(netns: &Netns, addrs: &[SocketAddr]) -> anyhow::Result<Vec<TcpListener>> {
    netns.run(|| {
        addrs
            .iter()
            .map(|&addr| {
                TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr}"))
            })
            .collect()
    })?
}

#[cfg(test)]
mod tests {
    use super::*;

    const SNMP: &str = "Ip: Forwarding DefaultTTL\nIp: 2 64\n\
        Tcp: RtoAlgorithm MaxConn ActiveOpens InSegs OutSegs InCsumErrors\n\
        Tcp: 1 -1 0 1500 1400 0\n";
    const NETSTAT: &str = "TcpExt: SyncookiesSent ListenOverflows ListenDrops\n\
        TcpExt: 1200 7 9\n\
        IpExt: InNoRoutes\nIpExt: 0\n";

    #[test]
    fn counters_are_read_by_group_and_name() {
        let counts = StackCounts::parse(SNMP, NETSTAT).unwrap();
        assert_eq!(
            counts,
            StackCounts {
                segments_in: 1500,
                segments_out: 1400,
                cookies_sent: 1200,
                listen_drops: 9,
                checksum_errors: 0,
            }
        );
        let earlier = StackCounts {
            segments_in: 500,
            listen_drops: 10,
            ..StackCounts::default()
        };
        let since = counts.since(&earlier);
        assert_eq!((since.segments_in, since.listen_drops), (1000, 0));
    }

    #[test]
    fn damaged_counters_are_errors_naming_what_is_wrong() {
        let error = |snmp: &str| StackCounts::parse(snmp, NETSTAT).unwrap_err().to_string();
        assert!(error("Tcp: InSegs OutSegs\n").contains("no line of values"));
        assert!(error("Tcp: InSegs OutSegs\nTcp: 1\n").contains("2 names but 1 values"));
        assert!(error("Tcp: InSegs\nUdp: 1\n").contains("values of Udp"));
        assert!(error("Tcp: InSegs\nTcp: x\n").contains("Tcp:InSegs is `x`"));
        assert!(error("Ip: Forwarding\nIp: 2\n").contains("no Tcp:InSegs"));
        assert!(error("garbage\nmore\n").contains("not a line of counters"));
    }
}
