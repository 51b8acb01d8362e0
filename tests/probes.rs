//! herd's checker probes against real targets: a listener, an HTTP server, a process, and
//! interfaces and addresses in network namespaces built for the test.
//!
//! Needs root (namespaces, raw sockets); `scripts/test` runs it as root, as CI does.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::process::Command;
use std::time::Duration;

use herd_checkers::probe::{self, Expect, Matcher};
use herd_testbed::address::{self, node4, twin, CLIENT4};
use herd_testbed::link::{self, End};
use herd_testbed::{Bed, Netns};
use regex::Regex;

/// The node's addresses, from the test bed's plan; the peer has the client's.
const NODE: Ipv4Addr = node4(0);
const NODE6: Ipv6Addr = twin(NODE);
const TIMEOUT: Duration = Duration::from_millis(500);

/// A node namespace and a peer namespace joined by a veth pair (`vn` and `vp`), addressed
/// in IPv4 and IPv6; the bed removes them on drop.
struct Pair {
    node: Netns,
    peer: Netns,
    _bed: Bed,
}

impl Pair {
    fn new(tag: &str) -> Self {
        let mut bed = Bed::create(&format!("herd-probe{tag}-{}", std::process::id()))
            .expect("builds the test bed");
        let node = bed.netns("node").unwrap();
        let peer = bed.netns("peer").unwrap();
        link::veth(End::new(&node, "vn"), End::new(&peer, "vp")).unwrap();
        for (netns, device, own) in [(&node, "vn", NODE), (&peer, "vp", CLIENT4)] {
            address::assign(netns, device, &[own]).unwrap();
            netns.ip(&["link", "set", device, "up"]).unwrap();
        }
        let pair = Pair {
            node,
            peer,
            _bed: bed,
        };
        // Until the carrier is up, veth's queue drops what is sent (a first SYN, retried only
        // after the probes' timeout).
        assert_eq!(pair.interface_once("vn", Result::is_ok), Ok(()));
        assert_eq!(pair.interface_once("vp", Result::is_ok), Ok(()));
        pair
    }

    /// The probe's answer for `device` (the node's `vn` or the peer's `vp`) once it holds
    /// `settled`. The kernel passes carrier changes on asynchronously (linkwatch, within a
    /// second) and tells no one but netlink listeners, both when a link comes up and when it
    /// goes down: the probe is asked until then.
    fn interface_once(
        &self,
        device: &'static str,
        settled: impl Fn(&probe::Probed) -> bool,
    ) -> probe::Probed {
        let ask = || {
            let netns = if device == "vn" {
                &self.node
            } else {
                &self.peer
            };
            netns
                .run(|| probe::interface(device))
                .expect("enters the namespace")
        };
        let mut answer = ask();
        for _ in 0..60 {
            if settled(&answer) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
            answer = ask();
        }
        answer
    }

    /// What `f` returns, run in the node's namespace.
    fn on_node<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        self.node.run(f).expect("enters the node's namespace")
    }

    /// What `f` returns, run in the peer's namespace.
    fn on_peer<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        self.peer.run(f).expect("enters the peer's namespace")
    }
}

fn address(ip: impl Into<IpAddr>, port: u16) -> SocketAddr {
    SocketAddr::new(ip.into(), port)
}

#[test]
fn tcp_probes_a_real_listener() {
    let pair = Pair::new("t");
    let listener = pair.on_node(|| TcpListener::bind(address(NODE, 8080)).unwrap());
    assert_eq!(
        pair.on_peer(|| probe::tcp(address(NODE, 8080), TIMEOUT)),
        Ok(())
    );
    drop(listener);
    let refused = pair.on_peer(|| probe::tcp(address(NODE, 8080), TIMEOUT));
    assert!(refused
        .unwrap_err()
        .0
        .starts_with(&format!("cannot connect to {NODE}:8080")));
}

/// An HTTP server on the node that answers each request with `answer`.
fn serve(pair: &Pair, answer: &'static str) -> SocketAddr {
    let listener = pair.on_node(|| TcpListener::bind(address(NODE, 0)).unwrap());
    let bound = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().map_while(Result::ok) {
            let mut request = [0u8; 1024];
            let _ = stream.read(&mut request);
            let _ = stream.write_all(answer.as_bytes());
        }
    });
    bound
}

#[test]
fn http_probes_a_real_server() {
    let pair = Pair::new("h");
    let healthy = serve(
        &pair,
        "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nall is well\n",
    );
    let busy = serve(&pair, "HTTP/1.0 503 Service Unavailable\r\n\r\nbusy\n");
    let expect = |body: Option<&str>| Expect {
        status: (200, 399),
        body: body.map(str::to_owned),
    };
    let get = |at: SocketAddr, expect: Expect| {
        pair.on_peer(move || probe::http(&format!("http://{at}/health"), &expect, TIMEOUT))
    };
    assert_eq!(get(healthy, expect(Some("well"))), Ok(()));
    assert!(get(healthy, expect(Some("sick")))
        .unwrap_err()
        .0
        .contains("does not hold"));
    assert!(get(busy, expect(None))
        .unwrap_err()
        .0
        .contains("status 503"));
}

#[test]
fn interface_sees_the_link_go_down_and_lose_its_carrier() {
    let pair = Pair::new("i");
    assert_eq!(pair.on_node(|| probe::interface("vn")), Ok(()));
    pair.peer.ip(&["link", "set", "vp", "down"]).unwrap();
    let no_carrier = pair.interface_once("vn", Result::is_err);
    assert_eq!(no_carrier.unwrap_err().0, "interface vn: no carrier");
    pair.node.ip(&["link", "set", "vn", "down"]).unwrap();
    let down = pair.on_node(|| probe::interface("vn"));
    assert_eq!(down.unwrap_err().0, "interface vn: down");
    let missing = pair.on_node(|| probe::interface("eth9"));
    assert!(missing.unwrap_err().0.starts_with("interface eth9:"));
}

#[test]
fn addresses_sees_an_address_removed() {
    let pair = Pair::new("a");
    let expected: Vec<IpAddr> = vec![NODE.into(), NODE6.into()];
    let check = |expected: Vec<IpAddr>| pair.on_node(move || probe::addresses("vn", &expected));
    assert_eq!(check(expected.clone()), Ok(()));
    let prefix = address::PREFIX4;
    pair.node
        .ip(&["addr", "del", &format!("{NODE}/{prefix}"), "dev", "vn"])
        .unwrap();
    assert_eq!(
        check(expected).unwrap_err().0,
        format!("{NODE} missing from interface vn")
    );
}

#[test]
fn ping_is_answered_by_a_live_address_only() {
    let pair = Pair::new("p");
    for target in [IpAddr::from(NODE), IpAddr::from(NODE6)] {
        assert_eq!(
            pair.on_peer(move || probe::ping(target, TIMEOUT)),
            Ok(()),
            "{target}"
        );
    }
    // An address of the plan that neither namespace has.
    let nobody = IpAddr::from(node4(76));
    let silent = pair.on_peer(move || probe::ping(nobody, Duration::from_millis(300)));
    assert!(silent.unwrap_err().0.contains("no answer"));
}

#[test]
fn process_counts_the_matching_processes() {
    // A command line no other process has.
    let mut child = Command::new("sleep")
        .arg(format!("{}.5", 30 + std::process::id() % 1000))
        .spawn()
        .unwrap();
    // spawn returns once the child has begun to execute, but the kernel sets up its new
    // command line a little later, and announces it to no one: it is read until it shows.
    let cmdline = format!("/proc/{}/cmdline", child.id());
    let ready = (0..2000).any(|_| {
        let started = std::fs::read(&cmdline).is_ok_and(|bytes| bytes.starts_with(b"sleep\0"));
        if !started {
            std::thread::sleep(Duration::from_millis(1));
        }
        started
    });
    assert!(ready, "the child runs sleep within 2 s");
    let line = format!("^sleep {}\\.5$", 30 + std::process::id() % 1000);
    let matcher = Matcher::Command(Regex::new(&line).unwrap());
    assert_eq!(probe::process(&matcher, 1, Some(1)), Ok(()));
    assert!(probe::process(&matcher, 2, None)
        .unwrap_err()
        .0
        .contains("fewer than 2"));
    assert!(probe::process(&matcher, 0, Some(0))
        .unwrap_err()
        .0
        .contains("more than 0"));
    assert_eq!(
        probe::process(&Matcher::Name("sleep".into()), 1, None),
        Ok(())
    );
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(probe::process(&matcher, 1, None).is_err(), "gone");
}
