//! What `herd run` changes on the host, each change recorded so that it is put back when herd
//! stops: the VIP addresses, sysctls and promiscuous mode of the interface. Also the host's
//! facts herd reads (the interface's index and MAC), and sending one raw frame.

use std::fs;
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use herd_dataplane::handoff::packet_socket;
use herd_packet::neighbor::{holder, probe};

/// One interface as herd found it, and the changes made to the host since.
pub struct Host {
    interface: String,
    index: u32,
    mac: [u8; 6],
    undo: Vec<Undo>,
}

/// A change to put back.
enum Undo {
    /// A VIP address herd added.
    Address(IpAddr),
    /// A sysctl and the value it had.
    Sysctl { path: String, old: String },
    /// Promiscuous mode, which was off.
    Promiscuous,
}

impl Host {
    /// The interface named `interface`, which must exist.
    pub fn open(interface: &str) -> anyhow::Result<Self> {
        let sys = format!("/sys/class/net/{interface}");
        let index = fs::read_to_string(format!("{sys}/ifindex"))
            .with_context(|| format!("interface {interface} not found (no {sys})"))?;
        let mac = fs::read_to_string(format!("{sys}/address"))
            .with_context(|| format!("cannot read the MAC address of {interface}"))?;
        Ok(Self {
            interface: interface.to_owned(),
            index: index
                .trim()
                .parse()
                .with_context(|| format!("{sys}/ifindex: not an index"))?,
            mac: parse_mac(mac.trim())
                .with_context(|| format!("{interface} has no Ethernet address ({mac:?})"))?,
            undo: Vec::new(),
        })
    }

    /// Whether the interface is virtual (veth, tap, bridge...): it has no device behind it.
    pub fn is_virtual(&self) -> bool {
        !Path::new(&format!("/sys/class/net/{}/device", self.interface)).exists()
    }

    /// The interface's own MAC.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// The interface's name.
    pub fn name(&self) -> &str {
        &self.interface
    }

    /// The interface's index.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// How many RX queues the interface has (one AF_XDP socket serves each).
    pub fn rx_queues(&self) -> anyhow::Result<u32> {
        let dir = format!("/sys/class/net/{}/queues", self.interface);
        let entries = fs::read_dir(&dir).with_context(|| format!("cannot list {dir}"))?;
        let mut queues = 0;
        for entry in entries {
            let entry = entry.with_context(|| format!("cannot list {dir}"))?;
            if entry.file_name().to_string_lossy().starts_with("rx-") {
                queues += 1;
            }
        }
        if queues == 0 {
            bail!("{dir} lists no RX queue");
        }
        Ok(queues)
    }

    /// Makes `device`, which herd created to hand accepted frames to the stack, take them:
    /// the interface's MAC as its own (the frames are addressed to it), no IPv6 address of its
    /// own (it would send neighbour discovery nobody reads), no reverse-path filter (the
    /// clients are routed through the interface, not through it), and up. Nothing to undo: the
    /// device goes with herd.
    pub fn prepare_stack_device(&self, device: &str) -> anyhow::Result<()> {
        let strict = fs::read_to_string("/proc/sys/net/ipv4/conf/all/rp_filter")
            .is_ok_and(|value| value.trim() == "1");
        if strict {
            bail!(
                "net.ipv4.conf.all.rp_filter is 1 (strict): the kernel would drop every packet herd \
                 hands it through {device}, since the clients are routed through {}; set it to 2 \
                 (loose) or 0, or run [dataplane] mode = \"xdp\"",
                self.interface
            );
        }
        let path = format!("/proc/sys/net/ipv4/conf/{device}/rp_filter");
        fs::write(&path, "0").with_context(|| format!("cannot write 0 to {path}"))?;
        ip(&["link", "set", "dev", device, "addrgenmode", "none"])?;
        let mac = self.mac.map(|byte| format!("{byte:02x}")).join(":");
        ip(&["link", "set", "dev", device, "address", &mac, "up"])
    }

    /// Adds a VIP to the interface, so the kernel takes the packets herd accepts for it (a
    /// /32 or /128: no route comes with it; IPv6 without duplicate address detection, which the
    /// other nodes, holding the same address, would fail). An address already there, left by a
    /// herd that was killed, is taken over.
    pub fn add_vip(&mut self, vip: IpAddr) -> anyhow::Result<()> {
        let address = match vip {
            IpAddr::V4(_) => format!("{vip}/32"),
            IpAddr::V6(_) => format!("{vip}/128"),
        };
        let mut args = vec!["addr", "add", &address, "dev", &self.interface];
        if vip.is_ipv6() {
            args.push("nodad");
        }
        if self.has_address(vip)? {
            tracing::warn!(%vip, interface = %self.interface, "VIP address already present (left by a herd that was killed?); taking it over");
        } else {
            ip(&args)?;
            tracing::info!(%vip, interface = %self.interface, "added VIP address");
        }
        self.undo.push(Undo::Address(vip));
        Ok(())
    }

    /// Whether `address` is configured on the interface.
    fn has_address(&self, address: IpAddr) -> anyhow::Result<bool> {
        let output = Command::new("ip")
            .args(["-o", "addr", "show", "dev", &self.interface])
            .output()
            .context("cannot run `ip` (iproute2; scripts/deps installs it)")?;
        let listing = String::from_utf8_lossy(&output.stdout);
        // Lines read "2: vn    inet 198.18.0.100/32 scope global vn ...".
        Ok(listing.lines().any(|line| {
            line.split_whitespace()
                .skip_while(|word| !matches!(*word, "inet" | "inet6"))
                .nth(1)
                .and_then(|cidr| cidr.split('/').next())
                .and_then(|addr| addr.parse::<IpAddr>().ok())
                == Some(address)
        }))
    }

    /// Sets a sysctl of the interface (`net/ipv4/conf/<interface>/<name>`), to be put back.
    pub fn set_ipv4_conf(&mut self, name: &str, value: &str) -> anyhow::Result<()> {
        let path = format!("/proc/sys/net/ipv4/conf/{}/{name}", self.interface);
        let old = fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
        fs::write(&path, value).with_context(|| format!("cannot write {value} to {path}"))?;
        tracing::info!(sysctl = %path, old = old.trim(), new = value, "set sysctl");
        self.undo.push(Undo::Sysctl {
            path,
            old: old.trim().to_owned(),
        });
        Ok(())
    }

    /// Turns promiscuous mode on, so the interface takes frames for the VIPs' virtual MACs.
    pub fn promiscuous(&mut self) -> anyhow::Result<()> {
        let flags = fs::read_to_string(format!("/sys/class/net/{}/flags", self.interface))?;
        let flags = u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16)?;
        const IFF_PROMISC: u32 = 0x100;
        if flags & IFF_PROMISC != 0 {
            return Ok(());
        }
        ip(&["link", "set", "dev", &self.interface, "promisc", "on"])?;
        tracing::info!(interface = %self.interface, "promiscuous mode on");
        self.undo.push(Undo::Promiscuous);
        Ok(())
    }

    /// Sends one frame, as it is, out of the interface.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        // Protocol 0: the socket only sends.
        send_on(&packet_socket(self.index, 0)?, frame)
    }

    /// The hosts of the link, other than the farm, that answer for one of `vips` within
    /// `wait`, with the MAC they answered from: each VIP is probed (see
    /// [`herd_packet::neighbor::probe`]) and the answers read until `wait` has passed.
    pub fn vip_holders(
        &self,
        vips: &[IpAddr],
        wait: Duration,
    ) -> io::Result<Vec<(IpAddr, [u8; 6])>> {
        let socket = packet_socket(self.index, (libc::ETH_P_ALL as u16).to_be())?;
        for &vip in vips {
            send_on(&socket, &probe(self.mac, vip))?;
        }
        let deadline = Instant::now() + wait;
        let mut holders: Vec<(IpAddr, [u8; 6])> = Vec::new();
        let mut buf = [0u8; 2048];
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let timeout = libc::timeval {
                tv_sec: left.as_secs() as libc::time_t,
                tv_usec: left.subsec_micros().max(1) as libc::suseconds_t,
            };
            // SAFETY: `timeout` is a valid timeval of the length passed.
            let set = unsafe {
                libc::setsockopt(
                    socket.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    (&timeout as *const libc::timeval).cast(),
                    std::mem::size_of::<libc::timeval>() as u32,
                )
            };
            if set < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: `buf` is valid for writes of its length.
            let len =
                unsafe { libc::recv(socket.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if len < 0 {
                let error = io::Error::last_os_error();
                match error.kind() {
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => continue,
                    _ => return Err(error),
                }
            }
            let frame = &buf[..len as usize];
            for &vip in vips {
                if let Some(mac) = holder(frame, vip) {
                    if !holders.contains(&(vip, mac)) {
                        holders.push((vip, mac));
                    }
                }
            }
        }
        Ok(holders)
    }

    /// Puts back everything changed, newest first; failures are logged, not fatal, so that
    /// one failure does not leave the rest changed.
    pub fn restore(&mut self) {
        while let Some(undo) = self.undo.pop() {
            let result = match &undo {
                Undo::Address(vip) => {
                    let suffix = if vip.is_ipv4() { 32 } else { 128 };
                    ip(&[
                        "addr",
                        "del",
                        &format!("{vip}/{suffix}"),
                        "dev",
                        &self.interface,
                    ])
                    .map(|()| tracing::info!(%vip, "removed VIP address"))
                }
                Undo::Sysctl { path, old } => fs::write(path, old)
                    .map(|()| tracing::info!(sysctl = %path, value = %old, "restored sysctl"))
                    .with_context(|| format!("cannot restore {path}")),
                Undo::Promiscuous => ip(&["link", "set", "dev", &self.interface, "promisc", "off"])
                    .map(|()| tracing::info!(interface = %self.interface, "promiscuous mode off")),
            };
            if let Err(error) = result {
                tracing::error!("{error:#}");
            }
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.restore();
    }
}

/// Sends `frame` on a packet socket bound to an interface.
fn send_on(socket: &OwnedFd, frame: &[u8]) -> io::Result<()> {
    // SAFETY: `frame` is valid for reads of its length.
    let sent = unsafe { libc::send(socket.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Runs `ip` (iproute2) with `args`; its error output becomes the error.
fn ip(args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .context("cannot run `ip` (iproute2; scripts/deps installs it)")?;
    if !output.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// A MAC address as `ip` and the logs write it: `02:00:00:00:00:0a`.
pub fn format_mac(mac: [u8; 6]) -> String {
    mac.map(|byte| format!("{byte:02x}")).join(":")
}

/// A MAC address written `02:00:00:00:00:0a`.
fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let bytes: Vec<u8> = text
        .split(':')
        .map(|byte| u8::from_str_radix(byte, 16).ok())
        .collect::<Option<_>>()?;
    bytes.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_are_read_as_sysfs_writes_them() {
        assert_eq!(parse_mac("02:00:00:00:00:0a"), Some([2, 0, 0, 0, 0, 0x0a]));
        assert_eq!(format_mac([2, 0, 0, 0, 0, 0x0a]), "02:00:00:00:00:0a");
        assert_eq!(parse_mac("02:00:00:00:00"), None, "too short");
        assert_eq!(
            parse_mac("00:00:00:00:00:00:00:00:00:00"),
            None,
            "not Ethernet"
        );
        assert_eq!(parse_mac("zz:00:00:00:00:00"), None);
    }

    #[test]
    fn a_missing_interface_is_named_in_the_error() {
        let error = Host::open("herd-no-such-if").err().unwrap();
        assert!(format!("{error:#}").contains("interface herd-no-such-if not found"));
    }
}
