//! herd's checker probes against real targets: a listener, an HTTP server, a process, and
//! interfaces and addresses in network namespaces built for the test.
//!
//! Needs root (namespaces, raw sockets); `scripts/test` runs it as root, as CI does.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::process::Command;
use std::time::Duration;

use common::{ip, needs_root, veth, Netns};
use herd_checkers::probe::{self, Expect, Matcher};
use regex::Regex;

const NODE: &str = "198.18.3.1";
const PEER: &str = "198.18.3.2";
const NODE6: &str = "2001:2:0:3::1";
const TIMEOUT: Duration = Duration::from_millis(500);

/// A node namespace and a peer namespace joined by a veth pair (`vn` and `vp`), addressed
/// in IPv4 and IPv6; removed on drop.
struct Pair {
    node: Netns,
    peer: Netns,
}

impl Pair {
    fn new(tag: &str) -> Self {
        needs_root();
        let id = std::process::id();
        let node = Netns::new(format!("herd-pn{tag}-{id}"));
        let peer = Netns::new(format!("herd-pp{tag}-{id}"));
        veth(&node, "vn", &peer, "vp");
        for (ns, dev, v4, v6) in [
            (&node, "vn", NODE, NODE6),
            (&peer, "vp", PEER, "2001:2:0:3::2"),
        ] {
            ip(&[
                "-n",
                ns.name(),
                "addr",
                "add",
                &format!("{v4}/24"),
                "dev",
                dev,
            ]);
            ip(&[
                "-n",
                ns.name(),
                "addr",
                "add",
                &format!("{v6}/64"),
                "dev",
                dev,
                "nodad",
            ]);
            ip(&["-n", ns.name(), "link", "set", dev, "up"]);
        }
        Pair { node, peer }
    }
}

fn address(text: &str, port: u16) -> SocketAddr {
    SocketAddr::new(text.parse().unwrap(), port)
}

#[test]
fn tcp_probes_a_real_listener() {
    let pair = Pair::new("t");
    let listener = pair
        .node
        .run(|| TcpListener::bind(address(NODE, 8080)).unwrap());
    assert_eq!(
        pair.peer.run(|| probe::tcp(address(NODE, 8080), TIMEOUT)),
        Ok(())
    );
    drop(listener);
    let refused = pair.peer.run(|| probe::tcp(address(NODE, 8080), TIMEOUT));
    assert!(refused
        .unwrap_err()
        .0
        .starts_with("cannot connect to 198.18.3.1:8080"));
}

/// An HTTP server on the node that answers each request with `answer`.
fn serve(pair: &Pair, answer: &'static str) -> SocketAddr {
    let listener = pair
        .node
        .run(|| TcpListener::bind(address(NODE, 0)).unwrap());
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
        pair.peer
            .run(move || probe::http(&format!("http://{at}/health"), &expect, TIMEOUT))
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
    assert_eq!(pair.node.run(|| probe::interface("vn")), Ok(()));
    ip(&["-n", pair.peer.name(), "link", "set", "vp", "down"]);
    // The kernel passes carrier changes on asynchronously (linkwatch, within a second) and
    // tells no one but netlink listeners: the probe is asked until it sees it.
    let no_carrier = (0..60)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(50));
            pair.node.run(|| probe::interface("vn"))
        })
        .find(Result::is_err)
        .expect("the carrier loss is seen within 3 s");
    assert_eq!(no_carrier.unwrap_err().0, "interface vn: no carrier");
    ip(&["-n", pair.node.name(), "link", "set", "vn", "down"]);
    let down = pair.node.run(|| probe::interface("vn"));
    assert_eq!(down.unwrap_err().0, "interface vn: down");
    let missing = pair.node.run(|| probe::interface("eth9"));
    assert!(missing.unwrap_err().0.starts_with("interface eth9:"));
}

#[test]
fn addresses_sees_an_address_removed() {
    let pair = Pair::new("a");
    let expected: Vec<IpAddr> = vec![NODE.parse().unwrap(), NODE6.parse().unwrap()];
    let check = |expected: Vec<IpAddr>| pair.node.run(move || probe::addresses("vn", &expected));
    assert_eq!(check(expected.clone()), Ok(()));
    ip(&[
        "-n",
        pair.node.name(),
        "addr",
        "del",
        &format!("{NODE}/24"),
        "dev",
        "vn",
    ]);
    assert_eq!(
        check(expected).unwrap_err().0,
        "198.18.3.1 missing from interface vn"
    );
}

#[test]
fn ping_is_answered_by_a_live_address_only() {
    let pair = Pair::new("p");
    for target in [NODE, NODE6] {
        let target: IpAddr = target.parse().unwrap();
        assert_eq!(
            pair.peer.run(move || probe::ping(target, TIMEOUT)),
            Ok(()),
            "{target}"
        );
    }
    let nobody: IpAddr = "198.18.3.77".parse().unwrap();
    let silent = pair
        .peer
        .run(move || probe::ping(nobody, Duration::from_millis(300)));
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
