//! herd's look for the application's listeners. herd sees the sockets of its own network
//! namespace only: the eBPF socket lookup that keeps a draining bucket's connections and the
//! count that ends the drain both miss an application that listens in another one (a
//! container reached through forwarding). Its connections then break at every join, leave
//! or drain. For [`WINDOW`] after the node comes up (its checks healthy, so the application
//! listens), the supervisor looks every [`INTERVAL`] for a listener of each TCP rule on each
//! VIP; those it cannot see are logged once and shown by `herd status` and the metrics.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use herd_config::{FarmConfig, PortRange, Protocol};
use herd_dataplane::sockets::{Sockets, SocketsError};
use herd_packet::FarmRules;

/// How long after the node comes up it looks.
pub const WINDOW: Duration = Duration::from_secs(60);

/// How often it looks meanwhile.
pub const INTERVAL: Duration = Duration::from_secs(5);

/// One VIP and the ports of one TCP rule.
struct Wanted {
    vip: IpAddr,
    ports: Vec<PortRange>,
}

/// What changed at a look.
#[derive(Debug, PartialEq, Eq)]
enum Change {
    /// Nothing to say.
    None,
    /// Some VIP ports are unseen, and not the same as when last said.
    Unseen,
    /// Every VIP port has a listener again.
    Seen,
}

/// The look and what it found last.
pub struct ListenerWatch {
    sockets: Sockets,
    rules: FarmRules,
    wanted: Vec<Wanted>,
    /// The VIP ports without a visible listener at the last look, as written for people.
    unseen: Vec<String>,
    /// Those last warned about.
    warned: Vec<String>,
    /// Whether the last look failed, so that a failure is logged once.
    failed: bool,
}

impl ListenerWatch {
    /// Looks for the listeners of `config`'s TCP rules on its VIPs, in this thread's network
    /// namespace (herd's).
    pub fn new(config: &FarmConfig) -> Result<Self, SocketsError> {
        let wanted = config
            .farm
            .vips
            .iter()
            .flat_map(|&vip| {
                config
                    .rules
                    .iter()
                    .filter(|rule| rule.protocol == Protocol::Tcp)
                    .map(move |rule| Wanted {
                        vip,
                        ports: rule.ports.clone(),
                    })
            })
            .collect();
        Ok(Self {
            sockets: Sockets::open()?,
            rules: FarmRules::from_config(config),
            wanted,
            unseen: Vec::new(),
            warned: Vec::new(),
            failed: false,
        })
    }

    /// The VIP ports without a visible listener at the last look (`198.18.0.100:80`,
    /// `[fd00::100]:8000-8100`).
    pub fn unseen(&self) -> &[String] {
        &self.unseen
    }

    /// Looks once, and logs what changed.
    pub fn look(&mut self) {
        let listened = match self.sockets.listeners(&self.rules) {
            Ok(listened) => listened,
            Err(error) => {
                if !self.failed {
                    tracing::warn!("cannot look for the application's listeners: {error}");
                }
                self.failed = true;
                return;
            }
        };
        self.failed = false;
        match self.update(unseen(&self.wanted, &listened)) {
            Change::Unseen => tracing::warn!(
                unseen = %self.unseen.join(", "),
                "no listening socket in herd's network namespace for these VIP ports: if the \
                 application runs in another namespace (a container), herd cannot see its \
                 connections, a draining bucket keeps none of them, and a join, a leave or a \
                 drain breaks them; run herd in the application's network namespace"
            ),
            Change::Seen => {
                tracing::info!("every VIP port has a listener in herd's network namespace now")
            }
            Change::None => {}
        }
    }

    /// Keeps the look's result and says what changed.
    fn update(&mut self, unseen: Vec<String>) -> Change {
        let was_unseen = !self.unseen.is_empty();
        self.unseen = unseen;
        if self.unseen.is_empty() {
            self.warned.clear();
            return if was_unseen {
                Change::Seen
            } else {
                Change::None
            };
        }
        if self.unseen == self.warned {
            return Change::None;
        }
        self.warned = self.unseen.clone();
        Change::Unseen
    }
}

/// Each VIP and TCP rule of `wanted` none of whose ports is in `listened`, written for people.
fn unseen(wanted: &[Wanted], listened: &[SocketAddr]) -> Vec<String> {
    wanted
        .iter()
        .filter(|wanted| {
            !listened.iter().any(|address| {
                address.ip() == wanted.vip
                    && wanted
                        .ports
                        .iter()
                        .any(|range| (range.first..=range.last).contains(&address.port()))
            })
        })
        .map(|wanted| {
            let ports: Vec<String> = wanted
                .ports
                .iter()
                .map(|range| {
                    if range.first == range.last {
                        range.first.to_string()
                    } else {
                        format!("{}-{}", range.first, range.last)
                    }
                })
                .collect();
            let vip = match wanted.vip {
                IpAddr::V4(vip) => vip.to_string(),
                IpAddr::V6(vip) => format!("[{vip}]"),
            };
            format!("{vip}:{}", ports.join(","))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wanted() -> Vec<Wanted> {
        let range = |first, last| PortRange { first, last };
        vec![
            Wanted {
                vip: "198.18.0.100".parse().unwrap(),
                ports: vec![range(80, 80)],
            },
            Wanted {
                vip: "198.18.0.100".parse().unwrap(),
                ports: vec![range(8000, 8100), range(9000, 9000)],
            },
            Wanted {
                vip: "fd00:198:18::100".parse().unwrap(),
                ports: vec![range(80, 80)],
            },
        ]
    }

    fn listened(addresses: &[&str]) -> Vec<SocketAddr> {
        addresses
            .iter()
            .map(|address| address.parse().unwrap())
            .collect()
    }

    #[test]
    fn a_rule_is_seen_through_any_of_its_ports_on_its_vip() {
        assert_eq!(
            unseen(&wanted(), &[]),
            [
                "198.18.0.100:80",
                "198.18.0.100:8000-8100,9000",
                "[fd00:198:18::100]:80"
            ]
        );
        let some = listened(&[
            "198.18.0.100:9000",
            "198.18.0.101:80",
            "[fd00:198:18::100]:80",
        ]);
        assert_eq!(unseen(&wanted(), &some), ["198.18.0.100:80"]);
        let all = listened(&[
            "198.18.0.100:80",
            "198.18.0.100:8050",
            "[fd00:198:18::100]:80",
        ]);
        assert!(unseen(&wanted(), &all).is_empty());
    }

    #[test]
    fn unseen_ports_are_warned_about_once_and_their_return_said() {
        let config = herd_packet::craft::farm_config(&[], 4, [0; 16], 1, Vec::new());
        let mut watch = ListenerWatch::new(&config).unwrap();
        let ports = |list: &[&str]| list.iter().map(ToString::to_string).collect::<Vec<_>>();
        assert_eq!(watch.update(Vec::new()), Change::None);
        assert_eq!(watch.update(ports(&["198.18.0.100:80"])), Change::Unseen);
        assert_eq!(watch.update(ports(&["198.18.0.100:80"])), Change::None);
        assert_eq!(watch.unseen(), ["198.18.0.100:80"]);
        assert_eq!(
            watch.update(ports(&["198.18.0.100:80", "198.18.0.100:443"])),
            Change::Unseen
        );
        assert_eq!(watch.update(Vec::new()), Change::Seen);
        assert!(watch.unseen().is_empty());
        // The same ports missing again after their return: said again.
        assert_eq!(
            watch.update(ports(&["198.18.0.100:80", "198.18.0.100:443"])),
            Change::Unseen
        );
    }
}
