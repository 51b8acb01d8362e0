//! A configured `[[check]]` made ready to probe: its regular expression compiled, and what it
//! looks at resolved against this node (its interface, its addresses).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use herd_config::{Check, CheckAction, CheckKind, ProcessMatcher};
use regex::Regex;

use crate::health::Tracker;
use crate::lifecycle::Action;
use crate::probe::{self, Expect, Matcher, ProbeError, Probed};

/// What a check needs to know of the node it runs on.
#[derive(Clone, Debug)]
pub struct Host {
    /// The node's interface.
    pub interface: String,
    /// The addresses that must be on it: the VIPs and the node's own.
    pub addresses: Vec<IpAddr>,
}

/// What one probe of a check does.
#[derive(Clone, Debug)]
enum Target {
    Tcp(SocketAddr),
    Http {
        url: String,
        expect: Expect,
    },
    Process {
        matcher: Matcher,
        at_least: u32,
        at_most: Option<u32>,
    },
    Ping(IpAddr),
    Interface(String),
    Addresses {
        interface: String,
        expected: Vec<IpAddr>,
    },
    Command(String),
}

/// A check ready to probe.
#[derive(Clone, Debug)]
pub struct Prepared {
    /// Its name, for the log.
    pub name: String,
    /// How often it is probed.
    pub interval: Duration,
    /// How long a probe may take.
    pub timeout: Duration,
    target: Target,
}

impl Prepared {
    /// `check` on `host`. Fails only on a regular expression the configuration's validation
    /// would have refused.
    pub fn new(check: &Check, host: &Host) -> Result<Self, regex::Error> {
        let target = match &check.kind {
            CheckKind::Tcp { host, port } => Target::Tcp(SocketAddr::new(*host, *port)),
            CheckKind::Http { url, status, body } => Target::Http {
                url: url.clone(),
                expect: Expect {
                    status: *status,
                    body: body.clone(),
                },
            },
            CheckKind::Process {
                matcher,
                at_least,
                at_most,
            } => Target::Process {
                matcher: match matcher {
                    ProcessMatcher::Name(name) => Matcher::Name(name.clone()),
                    ProcessMatcher::Command(source) => Matcher::Command(Regex::new(source)?),
                },
                at_least: *at_least,
                at_most: *at_most,
            },
            CheckKind::Ping { address } => Target::Ping(*address),
            CheckKind::Interface { interface } => {
                Target::Interface(interface.clone().unwrap_or_else(|| host.interface.clone()))
            }
            CheckKind::Address => Target::Addresses {
                interface: host.interface.clone(),
                expected: host.addresses.clone(),
            },
            CheckKind::Command { run } => Target::Command(run.clone()),
        };
        Ok(Self {
            name: check.name.clone(),
            interval: Duration::from_millis(check.interval_ms.into()),
            timeout: Duration::from_millis(check.timeout_ms.into()),
            target,
        })
    }

    /// Probes once; a `command` check hands each line of its output to `line`.
    pub fn probe(&self, line: impl FnMut(&str)) -> Probed {
        let timeout = self.timeout;
        match &self.target {
            Target::Tcp(address) => probe::tcp(*address, timeout),
            Target::Http { url, expect } => probe::http(url, expect, timeout),
            Target::Process {
                matcher,
                at_least,
                at_most,
            } => probe::process(matcher, *at_least, *at_most),
            Target::Ping(address) => probe::ping(*address, timeout),
            Target::Interface(name) => probe::interface(name),
            Target::Addresses {
                interface,
                expected,
            } => probe::addresses(interface, expected),
            Target::Command(run) => probe::run(run, &[], timeout, line)
                .map_err(|error| ProbeError(format!("cannot run `{run}`: {error}")))?
                .probed(),
        }
    }
}

/// The lifecycle's view of a configured check: its action and its health's thresholds.
pub fn tracked(check: &Check) -> (Action, Tracker) {
    let action = match check.action {
        CheckAction::Restart => Action::Restart,
        CheckAction::Stop => Action::Stop,
        CheckAction::Wait => Action::Wait,
        CheckAction::Log => Action::Log,
    };
    (action, Tracker::new(check.fall, check.rise))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(kind: CheckKind) -> Check {
        Check {
            name: "c".into(),
            kind,
            interval_ms: 1000,
            timeout_ms: 2000,
            fall: 3,
            rise: 2,
            action: CheckAction::Wait,
        }
    }

    fn host() -> Host {
        Host {
            interface: "lo".into(),
            addresses: vec!["127.0.0.1".parse().unwrap()],
        }
    }

    fn probe(kind: CheckKind) -> Probed {
        Prepared::new(&check(kind), &host()).unwrap().probe(|_| {})
    }

    #[test]
    fn each_kind_reaches_its_probe() {
        assert_eq!(probe(CheckKind::Command { run: "true".into() }), Ok(()));
        assert!(probe(CheckKind::Command {
            run: "exit 4".into()
        })
        .is_err());
        assert_eq!(
            probe(CheckKind::Interface { interface: None }),
            Ok(()),
            "lo, the host's"
        );
        assert!(probe(CheckKind::Interface {
            interface: Some("herd-nosuch0".into())
        })
        .is_err());
        assert_eq!(probe(CheckKind::Address), Ok(()), "127.0.0.1 is on lo");
        // This test's own process.
        let name = std::fs::read_to_string("/proc/self/comm").unwrap();
        let process = |at_most| CheckKind::Process {
            matcher: ProcessMatcher::Name(name.trim().into()),
            at_least: 1,
            at_most,
        };
        assert_eq!(probe(process(None)), Ok(()));
        assert!(probe(process(Some(0))).is_err());
    }

    #[test]
    fn a_command_check_hands_its_output_over() {
        let prepared = Prepared::new(
            &check(CheckKind::Command {
                run: "echo fine".into(),
            }),
            &host(),
        )
        .unwrap();
        let mut lines = Vec::new();
        assert_eq!(prepared.probe(|line| lines.push(line.to_owned())), Ok(()));
        assert_eq!(lines, ["fine"]);
        assert_eq!(prepared.interval, Duration::from_secs(1));
        assert_eq!(prepared.timeout, Duration::from_secs(2));
    }

    #[test]
    fn the_action_and_thresholds_go_to_the_lifecycle() {
        let (action, tracker) = tracked(&check(CheckKind::Address));
        assert_eq!(action, Action::Wait);
        assert_eq!(tracker.health(), crate::health::Health::Unknown);
    }
}
