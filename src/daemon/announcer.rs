//! The announcements of the VIPs' virtual MACs: a gratuitous ARP for each IPv4 VIP and an
//! unsolicited neighbour advertisement for each IPv6 VIP
//! ([`herd_packet::neighbor::announcement`]), sent when the node starts, after every change of
//! view and every `[farm] announce_interval_s`. A neighbour cache that took another MAC for a
//! VIP (a stray ARP answer, a host that held the address before, a node's kernel before the
//! egress guard was attached) makes a learning switch deliver the VIP's traffic to one node, which drops the
//! buckets it does not own; the next announcement puts the virtual MAC back (a Linux neighbour
//! takes it over an entry it holds: the gratuitous ARP and the override flag of the
//! advertisement replace the address, whatever `arp_accept` says).
//!
//! The membership thread signals each new view ([`herd_membership::driver::Handle::views`]);
//! the announcer waits on that signal, or the period, on a thread of its own, so that neither
//! the protocol nor the supervisor sends frames.

use std::net::IpAddr;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError};
use herd_config::{Farm, MacMode};
use herd_packet::neighbor::announcement;

use crate::host::Host;

/// Sends the announcements of one node's VIPs.
pub struct Announcer<'a> {
    host: &'a Host,
    vips: &'a [IpAddr],
    /// The kind of virtual MAC announced.
    mac: MacMode,
    /// The period of the announcements; `None` for none but those at start and after a view.
    every: Option<Duration>,
    /// Whether the last announcement failed, so that a lasting failure is logged once.
    failing: bool,
}

impl<'a> Announcer<'a> {
    /// The announcer of `farm`'s VIPs on `host`'s interface, with the farm's kind of virtual
    /// MAC, every `announce_interval_s` (0 for never but at start and after a view).
    pub fn new(host: &'a Host, farm: &'a Farm) -> Self {
        let interval_s = farm.announce_interval_s;
        Self {
            host,
            vips: &farm.vips,
            mac: farm.mac,
            every: (interval_s > 0).then(|| Duration::from_secs(interval_s.into())),
            failing: false,
        }
    }

    /// Announces every VIP once.
    pub fn announce(&mut self) {
        let mut failed = false;
        for &vip in self.vips {
            if let Err(error) = self
                .host
                .send(&announcement(self.host.mac(), vip, self.mac))
            {
                failed = true;
                if !self.failing {
                    tracing::warn!(%vip, "cannot announce the VIP's virtual MAC: {error}");
                }
            }
        }
        if self.failing && !failed {
            tracing::info!("the VIPs' virtual MACs are announced again");
        }
        self.failing = failed;
    }

    /// Announces every VIP after each view `views` signals and every period, until `views`
    /// closes (the membership thread has stopped).
    pub fn run(mut self, views: &Receiver<u64>) {
        loop {
            let signal = match self.every {
                Some(every) => views.recv_timeout(every),
                None => views.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            let view = match signal {
                Ok(epoch) => Some(epoch),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return,
            };
            self.announce();
            // The periodic ones are not logged: one line every few seconds says nothing.
            if let Some(epoch) = view {
                tracing::info!(epoch, "announced the VIPs' virtual MACs after a new view");
            }
        }
    }
}
