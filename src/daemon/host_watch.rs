//! herd's own check of what it set up on the host: the VIPs on the interface, its XDP
//! program and its egress guard attached there. Someone may take any of them away under a
//! running node (`ip addr del`, a second herd's cleanup, a detached program): the node then
//! loses its share of the traffic, serves every VIP packet, or lets its kernel map a VIP to
//! its own MAC. The supervisor treats this check as a configured one
//! whose failure withdraws the node until it passes again (`wait`), so that the node says so
//! and reports itself not healthy.

use std::net::IpAddr;
use std::time::Duration;

use herd_checkers::probe;
use herd_dataplane::egress::EgressGuard;

use crate::host::route_socket::RouteSocket;

/// The check's name, as `herd status` and the metrics show it.
pub const NAME: &str = "herd-host";

/// Its kind.
pub const KIND: &str = "host";

/// How often it looks.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// What herd set up on the host, to be found there at every look.
pub struct HostWatch {
    interface: String,
    vips: Vec<IpAddr>,
    /// The kernel's id of herd's XDP program.
    program: u32,
    /// The kernel's id of herd's egress guard.
    guard: u32,
    netlink: RouteSocket,
}

impl HostWatch {
    /// Watches `vips` on `interface`, XDP program `program` and egress guard `guard` attached
    /// to it.
    pub fn new(
        interface: &str,
        vips: &[IpAddr],
        program: u32,
        guard: u32,
    ) -> std::io::Result<Self> {
        Ok(Self {
            interface: interface.to_owned(),
            vips: vips.to_vec(),
            program,
            guard,
            netlink: RouteSocket::open()?,
        })
    }

    /// Looks once: what is missing, if anything.
    pub fn probe(&mut self) -> Result<(), String> {
        let interface = &self.interface;
        probe::addresses(interface, &self.vips).map_err(|missing| {
            format!(
                "VIP {} (removed by hand, or by another herd?); the node is out until it is back",
                missing.0
            )
        })?;
        let attached = self
            .netlink
            .link(interface)
            .map_err(|error| format!("cannot read interface {interface}: {error}"))?
            .xdp_program;
        match attached {
            Some(program) if program == self.program => {}
            Some(other) => {
                return Err(format!(
                    "another XDP program (id {other}) replaced herd's on {interface}: the node's \
                     share is not enforced; stop herd"
                ))
            }
            None => {
                return Err(format!(
                    "herd's XDP program is no longer attached to {interface} (detached by \
                     hand?): the node's share is not enforced; stop herd"
                ))
            }
        }
        let guards = EgressGuard::attached_to(interface)
            .map_err(|error| format!("cannot list the egress programs of {interface}: {error}"))?;
        if !guards.contains(&self.guard) {
            return Err(format!(
                "herd's egress guard is no longer attached to {interface} (detached by hand?): \
                 the node's kernel may map a VIP to its own MAC; stop herd"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_vip_and_a_missing_program_are_named() {
        let missing: IpAddr = "198.18.255.254".parse().unwrap();
        let mut watch = HostWatch::new("lo", &[missing], 1, 2).unwrap();
        let error = watch.probe().unwrap_err();
        assert!(
            error.starts_with("VIP 198.18.255.254 missing from interface lo"),
            "{error}"
        );
        let mut watch = HostWatch::new("lo", &["127.0.0.1".parse().unwrap()], 1, 2).unwrap();
        let error = watch.probe().unwrap_err();
        assert!(
            error.starts_with("herd's XDP program is no longer attached to lo"),
            "{error}"
        );
    }
}
