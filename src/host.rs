//! What `herd run` changes on the host, each change recorded so that it is put back when herd
//! stops, even by the herd after one that was killed: the VIP addresses, sysctls and
//! promiscuous mode of the interface. Also the host's facts herd reads (the interface's index
//! and MAC), and sending one raw frame. Links and addresses are read and changed through
//! netlink ([`route_socket`]); the settings as herd found them are kept in the state
//! directory ([`originals`]).

mod groups;
mod originals;
pub mod route_socket;

use std::fs;
use std::io;
use std::net::{IpAddr, Ipv6Addr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use herd_dataplane::handoff::packet_socket;
use herd_packet::neighbor::{holder, probe};

pub use groups::Groups;
use originals::Originals;
use route_socket::RouteSocket;

/// One interface as herd found it, and the changes made to it since.
pub struct Host {
    interface: String,
    index: u32,
    mac: [u8; 6],
    netlink: RouteSocket,
    /// Where the settings as herd found them are kept (see [`originals`]).
    originals_file: PathBuf,
    /// The settings as herd found them: `None` until the first change, which reads them from
    /// [`Host::originals_file`] (left by a herd that was killed) or starts a new record. A
    /// herd that stops before changing anything leaves the interface, and a record it did not
    /// take over, alone.
    originals: Option<Originals>,
}

impl Host {
    /// The interface named `interface`, which must exist, run as node `node`, whose original
    /// settings are kept in `state_dir`.
    pub fn open(interface: &str, state_dir: &Path, node: &str) -> anyhow::Result<Self> {
        let mut netlink = RouteSocket::open().context("cannot open a routing netlink socket")?;
        let link = netlink
            .link(interface)
            .map_err(|error| match error.raw_os_error() {
                Some(libc::ENODEV) => anyhow::anyhow!("interface {interface} not found"),
                _ => anyhow::anyhow!("cannot read interface {interface}: {error}"),
            })?;
        let mac = <[u8; 6]>::try_from(link.address.as_slice()).map_err(|_| {
            anyhow::anyhow!(
                "{interface} has no Ethernet address (its hardware address is {} bytes long)",
                link.address.len()
            )
        })?;
        check_bond(interface)?;
        Ok(Self {
            interface: interface.to_owned(),
            index: link.index,
            mac,
            netlink,
            originals_file: originals::file(state_dir, node, interface),
            originals: None,
        })
    }

    /// The node's own IPv6 address on the interface that neighbour solicitations from an IPv6
    /// VIP leave from instead (see [`herd_dataplane::egress`]): its link-local address, else
    /// another that is not one of `vips`; `None` when it has neither.
    pub fn solicitation_source(&mut self, vips: &[IpAddr]) -> anyhow::Result<Option<Ipv6Addr>> {
        let interface = &self.interface;
        let own: Vec<Ipv6Addr> = self
            .netlink
            .addresses(self.index)
            .with_context(|| format!("cannot list the addresses of {interface}"))?
            .into_iter()
            .filter(|address| !vips.contains(address))
            .filter_map(|address| match address {
                IpAddr::V6(address) => Some(address),
                IpAddr::V4(_) => None,
            })
            .collect();
        Ok(own
            .iter()
            .find(|address| address.is_unicast_link_local())
            .or(own.first())
            .copied())
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
    pub fn prepare_stack_device(&mut self, device: &str) -> anyhow::Result<()> {
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
        // Before it is up, which would give it a link-local address.
        self.netlink
            .generate_no_ipv6_address(device)
            .with_context(|| format!("cannot turn off the IPv6 addresses of {device}"))?;
        self.netlink
            .set_address_and_up(device, self.mac)
            .with_context(|| {
                format!(
                    "cannot give {device} the MAC {} and set it up",
                    format_mac(self.mac)
                )
            })
    }

    /// The record of the settings as herd found them, read or started by the first change.
    fn originals(&mut self) -> anyhow::Result<&mut Originals> {
        let originals = match self.originals.take() {
            Some(originals) => originals,
            None => {
                let found = Originals::load(&self.originals_file, &self.interface)?;
                if let Some(found) = &found {
                    tracing::warn!(
                        interface = %self.interface,
                        file = %self.originals_file.display(),
                        originals = %found.describe(),
                        "found the settings a herd that did not exit cleanly (killed?) recorded \
                         as the interface's originals; they are put back when herd stops"
                    );
                }
                found.unwrap_or_else(|| Originals::new(&self.interface))
            }
        };
        Ok(self.originals.insert(originals))
    }

    /// Keeps the record in the state directory, before the change it records is made.
    fn keep_originals(&mut self) -> anyhow::Result<()> {
        let originals = self.originals()?.clone();
        originals.store(&self.originals_file)
    }

    /// Adds a VIP to the interface, so the kernel takes the packets herd accepts for it (a
    /// /32 or /128: no route comes with it; IPv6 without duplicate address detection, which the
    /// other nodes, holding the same address, would fail). An address a killed herd added is
    /// taken over; one the interface had before herd is left there when herd stops.
    pub fn add_vip(&mut self, vip: IpAddr) -> anyhow::Result<()> {
        let interface = self.interface.clone();
        let present = self
            .netlink
            .addresses(self.index)
            .with_context(|| format!("cannot list the addresses of {interface}"))?
            .contains(&vip);
        let added_by_herd = self.originals()?.vips_added.contains(&vip);
        match (present, added_by_herd) {
            (true, true) => {
                tracing::warn!(%vip, %interface, "VIP address left by a herd that did not exit cleanly (killed?); taking it over");
            }
            (true, false) => {
                tracing::warn!(%vip, %interface, "VIP address already on the interface before herd started; it stays there when herd stops");
            }
            (false, _) => {
                if !added_by_herd {
                    self.originals()?.vips_added.push(vip);
                    self.keep_originals()?;
                }
                self.netlink
                    .add_address(self.index, vip)
                    .with_context(|| format!("cannot add VIP address {vip} to {interface}"))?;
                tracing::info!(%vip, %interface, "added VIP address");
            }
        }
        Ok(())
    }

    /// Sets a sysctl of the interface (`net/ipv4/conf/<interface>/<name>`), to be put back.
    pub fn set_ipv4_conf(&mut self, name: &str, value: &str) -> anyhow::Result<()> {
        let path = format!("/proc/sys/net/ipv4/conf/{}/{name}", self.interface);
        let old = fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
        let old = old.trim();
        let original = match self.originals()?.ipv4_conf.get(name) {
            Some(original) => original.clone(),
            None => {
                self.originals()?
                    .ipv4_conf
                    .insert(name.to_owned(), old.to_owned());
                self.keep_originals()?;
                old.to_owned()
            }
        };
        fs::write(&path, value).with_context(|| format!("cannot write {value} to {path}"))?;
        tracing::info!(sysctl = %path, old, new = value, %original, "set sysctl");
        Ok(())
    }

    /// Sets one of the interface's own settings (`/sys/class/net/<interface>/<name>`), to be
    /// put back.
    pub fn set_device(&mut self, name: &str, value: &str) -> anyhow::Result<()> {
        let path = format!("/sys/class/net/{}/{name}", self.interface);
        let old = fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
        let old = old.trim();
        if !self.originals()?.device.contains_key(name) {
            self.originals()?
                .device
                .insert(name.to_owned(), old.to_owned());
            self.keep_originals()?;
        }
        fs::write(&path, value).with_context(|| format!("cannot write {value} to {path}"))?;
        tracing::info!(setting = %path, old, new = value, "set the interface's setting");
        Ok(())
    }

    /// Turns promiscuous mode on, so the interface takes frames for the VIPs' virtual MACs.
    pub fn promiscuous(&mut self) -> anyhow::Result<()> {
        let interface = self.interface.clone();
        let on = self
            .netlink
            .link(&interface)
            .with_context(|| format!("cannot read interface {interface}"))?
            .promiscuous;
        if self.originals()?.promiscuous.is_none() {
            self.originals()?.promiscuous = Some(on);
            self.keep_originals()?;
        }
        if on {
            return Ok(());
        }
        self.netlink
            .set_promiscuous(self.index, true)
            .with_context(|| format!("cannot turn promiscuous mode of {interface} on"))?;
        tracing::info!(%interface, "promiscuous mode on");
        Ok(())
    }

    /// Joins the multicast `groups` on the interface until the [`Groups`] returned is dropped.
    pub fn join_groups(&self, groups: &[IpAddr]) -> anyhow::Result<Groups> {
        Groups::join(self.index, groups).with_context(|| {
            let listed: Vec<String> = groups.iter().map(IpAddr::to_string).collect();
            format!(
                "cannot join the multicast groups {} on {}",
                listed.join(", "),
                self.interface
            )
        })
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

    /// Puts back the settings as herd found them, the VIPs first, then removes their record;
    /// failures are logged, not fatal, so that one failure does not leave the rest changed,
    /// and keep the record for the next herd.
    pub fn restore(&mut self) {
        let Some(originals) = self.originals.take() else {
            return;
        };
        let interface = &self.interface;
        let mut failures = 0;
        let mut failed = |error: anyhow::Error| {
            tracing::error!("{error:#}");
            failures += 1;
        };
        for &vip in originals.vips_added.iter().rev() {
            match self.netlink.remove_address(self.index, vip) {
                Ok(()) => tracing::info!(%vip, %interface, "removed VIP address"),
                Err(error) if error.kind() == io::ErrorKind::AddrNotAvailable => {
                    tracing::info!(%vip, %interface, "VIP address already gone")
                }
                Err(error) => failed(anyhow::anyhow!(
                    "cannot remove VIP address {vip} from {interface}: {error}"
                )),
            }
        }
        if originals.promiscuous == Some(false) {
            match self.netlink.set_promiscuous(self.index, false) {
                Ok(()) => tracing::info!(%interface, "promiscuous mode off"),
                Err(error) => failed(anyhow::anyhow!(
                    "cannot turn promiscuous mode of {interface} off: {error}"
                )),
            }
        }
        for (name, value) in &originals.ipv4_conf {
            let path = format!("/proc/sys/net/ipv4/conf/{interface}/{name}");
            match fs::write(&path, value) {
                Ok(()) => tracing::info!(sysctl = %path, %value, "restored sysctl"),
                Err(error) => failed(anyhow::anyhow!("cannot restore {path}: {error}")),
            }
        }
        for (name, value) in &originals.device {
            let path = format!("/sys/class/net/{interface}/{name}");
            match fs::write(&path, value) {
                Ok(()) => {
                    tracing::info!(setting = %path, %value, "restored the interface's setting")
                }
                Err(error) => failed(anyhow::anyhow!("cannot restore {path}: {error}")),
            }
        }
        let file = self.originals_file.display();
        if failures > 0 {
            tracing::error!(%interface, %file, "kept the record of the interface's original settings: the next herd run puts back what is left");
            return;
        }
        match Originals::remove(&self.originals_file) {
            Ok(()) => {
                tracing::info!(%interface, %file, originals = %originals.describe(), "the interface's original settings are back; removed their record")
            }
            Err(error) => tracing::error!("{error:#}"),
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.restore();
    }
}

/// Refuses a bond that would undo the farm's virtual MAC: in `balance-alb` mode it rewrites
/// the sender MAC of the ARP packets it sends (herd's answers for a VIP included) to one of its
/// links' MACs, and teaches the clients those MACs for its addresses; with `fail_over_mac`
/// `active` its own MAC becomes the new active link's at every failover, while the XDP
/// program hands the stack frames addressed to the MAC herd found at its start. Any other bond
/// (active-backup, 802.3ad...), or another kind of interface, passes.
fn check_bond(interface: &str) -> anyhow::Result<()> {
    let dir = Path::new("/sys/class/net").join(interface).join("bonding");
    if !dir.is_dir() {
        return Ok(());
    }
    let setting = |name: &str| -> anyhow::Result<String> {
        let path = dir.join(name);
        let text =
            fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        // `active-backup 1`: the setting's name, then its number.
        Ok(text
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_owned())
    };
    let mode = setting("mode")?;
    if mode == "balance-alb" {
        bail!(
            "bond {interface} is in mode balance-alb, which rewrites the MAC in herd's ARP answers \
             for the VIPs and announces its links' own MACs for its addresses: use \
             active-backup, 802.3ad or another mode"
        );
    }
    if setting("fail_over_mac")? == "active" {
        bail!(
            "bond {interface} has fail_over_mac active: its MAC changes at every failover, and \
             herd, which reads the MAC once at its start, would hand the stack frames for the \
             old one; set fail_over_mac to none (the default) or follow"
        );
    }
    Ok(())
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

/// A MAC address as `ip` and the logs write it: `02:00:00:00:00:0a`.
pub fn format_mac(mac: [u8; 6]) -> String {
    mac.map(|byte| format!("{byte:02x}")).join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_are_written_as_the_logs_write_them() {
        assert_eq!(format_mac([2, 0, 0, 0, 0, 0x0a]), "02:00:00:00:00:0a");
    }

    #[test]
    fn a_missing_interface_is_named_in_the_error() {
        let error = Host::open("herd-no-such-if", Path::new("/nonexistent"), "alpha")
            .err()
            .unwrap();
        let message = format!("{error:#}");
        assert!(
            message.contains("interface herd-no-such-if not found"),
            "{message}"
        );
    }
}
