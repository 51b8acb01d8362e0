//! `herd run` in the in-kernel mode, end to end, in network namespaces built for the test: a
//! client reaches a VIP through its virtual MAC, herd stopped with SIGTERM leaves the host as it
//! found it, and a node whose herd is killed stops accepting VIP traffic (fail closed).
//!
//! Needs root (namespaces, XDP); `scripts/test` runs it as root, as CI does.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const VIP: &str = "198.18.1.100";
const PORT: u16 = 7;

/// Runs `ip` with `args`, panicking with its message on failure.
fn ip(args: &[&str]) {
    let output = Command::new("ip").args(args).output().expect("runs ip");
    assert!(
        output.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A node namespace and a client namespace joined by a veth pair, a BPF file system for the
/// pin, and the herd process; all removed on drop, whether the test passed or not.
struct Topology {
    node: String,
    client: String,
    dir: PathBuf,
    herd: Option<Child>,
}

impl Topology {
    /// A topology whose names hold the process id and `tag`, so that runs and tests do not
    /// collide.
    fn new(tag: &str) -> Self {
        let id = std::process::id();
        let topology = Topology {
            node: format!("herd-n{tag}-{id}"),
            client: format!("herd-c{tag}-{id}"),
            dir: std::env::temp_dir().join(format!("herd-run-xdp-{tag}-{id}")),
            herd: None,
        };
        ip(&["netns", "add", &topology.node]);
        ip(&["netns", "add", &topology.client]);
        ip(&[
            "link",
            "add",
            "vn",
            "netns",
            &topology.node,
            "type",
            "veth",
            "peer",
            "name",
            "vc",
            "netns",
            &topology.client,
        ]);
        for (ns, dev, addr) in [
            (&topology.node, "vn", "198.18.1.1/24"),
            (&topology.client, "vc", "198.18.1.50/24"),
        ] {
            ip(&["-n", ns, "addr", "add", addr, "dev", dev]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        let bpf = topology.dir.join("bpf");
        std::fs::create_dir_all(&bpf).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "bpf", "bpf"])
            .arg(&bpf)
            .status()
            .unwrap();
        assert!(mounted.success(), "mounts a BPF file system");
        std::fs::write(
            topology.dir.join("farm.toml"),
            format!(
                r#"
[farm]
name = "e2e"
vip = ["{VIP}"]
interface = "vn"
buckets = 64
hash_key = "00112233445566778899aabbccddeeff"

[[node]]
name = "alpha"
address = "198.18.1.1"

[[rule]]
protocol = "udp"
ports = ["{PORT}"]

[dataplane]
mode = "xdp"
"#
            ),
        )
        .unwrap();
        topology
    }

    /// Starts `herd run` in the node namespace and waits for it to say it is attached.
    fn start_herd(&mut self) {
        let mut child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.node,
                env!("CARGO_BIN_EXE_herd"),
                "run",
                "-c",
            ])
            .arg(self.dir.join("farm.toml"))
            .arg("--bpf-dir")
            .arg(self.dir.join("bpf"))
            .stderr(Stdio::piped())
            .spawn()
            .expect("starts herd");
        let stderr = child.stderr.take().unwrap();
        let (ready, wait) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("herd: {line}");
                if line.contains("running:") {
                    let _ = ready.send(());
                }
            }
        });
        self.herd = Some(child);
        wait.recv_timeout(Duration::from_secs(20))
            .expect("herd reports that it runs");
    }

    /// Sends herd a signal (`STOP`, `CONT`, `KILL`, ...). `ip netns exec` runs herd in place
    /// (exec), so the child's pid is herd's.
    fn signal_herd(&self, signal: &str) {
        let pid = self.herd.as_ref().expect("herd runs").id().to_string();
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -{signal} {pid}");
    }

    /// Runs `f` in a thread that has entered namespace `ns`.
    fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
        let file = File::open(format!("/run/netns/{ns}")).expect("the namespace exists");
        std::thread::spawn(move || {
            // SAFETY: `file` is an open namespace file; setns only changes this thread.
            let entered = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(entered, 0, "enters the namespace");
            f()
        })
        .join()
        .unwrap()
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        if let Some(mut child) = self.herd.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Deleting the namespaces deletes the veth pair and the program attached to it.
        for ns in [&self.node, &self.client] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let bpf = self.dir.join("bpf");
        let _ = std::fs::remove_file(bpf.join("vn"));
        let _ = Command::new("umount").arg(&bpf).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A UDP echo server on the VIP in the node namespace that answers `count` requests (or
/// stops after `for_at_most`), prefixing them with the node's name. Returns once it listens.
fn echo_server(topology: &Topology, count: usize, for_at_most: Duration) {
    let node = topology.node.clone();
    let (listening, wait) = mpsc::channel();
    std::thread::spawn(move || {
        Topology::in_netns(&node, move || {
            let socket = UdpSocket::bind((VIP, PORT)).expect("binds the VIP");
            listening.send(()).unwrap();
            let end = Instant::now() + for_at_most;
            let mut buf = [0u8; 64];
            for _ in 0..count {
                let left = end.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                socket.set_read_timeout(Some(left)).unwrap();
                let Ok((n, from)) = socket.recv_from(&mut buf) else {
                    break;
                };
                let mut answer = b"alpha:".to_vec();
                answer.extend_from_slice(&buf[..n]);
                let _ = socket.send_to(&answer, from);
            }
        })
    });
    wait.recv().expect("the server listens");
}

/// One request from a new client port: whether the node answered it within `wait`.
fn request(client: &str, text: &str, wait: Duration) -> bool {
    let text = text.to_owned();
    Topology::in_netns(client, move || {
        let socket = UdpSocket::bind(("198.18.1.50", 0)).unwrap();
        socket.set_read_timeout(Some(wait)).unwrap();
        socket.send_to(text.as_bytes(), (VIP, PORT)).unwrap();
        let mut buf = [0u8; 64];
        match socket.recv_from(&mut buf) {
            Ok((n, _)) => {
                assert_eq!(&buf[..n], format!("alpha:{text}").as_bytes());
                true
            }
            Err(_) => false,
        }
    })
}

fn needs_root() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test builds network namespaces and needs root: run it through scripts/test as root"
    );
}

#[test]
fn a_client_reaches_the_vip_through_its_virtual_mac_and_herd_cleans_up() {
    needs_root();
    let mut topology = Topology::new("a");
    topology.start_herd();
    echo_server(&topology, 1000, Duration::from_secs(30));

    // The first request also resolves the VIP: the answer must carry the virtual MAC.
    let answered = (0..30)
        .filter(|i| request(&topology.client, &format!("r{i}"), Duration::from_secs(1)))
        .count();
    assert_eq!(answered, 30, "every request to the VIP is answered");
    let neighbours = Command::new("ip")
        .args(["-n", &topology.client, "neigh", "show", VIP])
        .output()
        .unwrap();
    let neighbours = String::from_utf8_lossy(&neighbours.stdout);
    assert!(
        neighbours.contains("02:68:c6:12:01:64"),
        "the client learnt the VIP's virtual MAC: {neighbours}"
    );

    // SIGTERM: herd stops and leaves the host as it found it.
    topology.signal_herd("TERM");
    let exit = topology.herd.take().unwrap().wait().unwrap();
    assert!(exit.success(), "herd exits cleanly on SIGTERM: {exit}");
    let show = |args: &[&str]| {
        let output = Command::new("ip").args(args).output().unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let link = show(&["-n", &topology.node, "link", "show", "vn"]);
    assert!(
        !link.contains("prog/xdp"),
        "the program is detached: {link}"
    );
    assert!(!link.contains("PROMISC"), "promiscuous mode is off: {link}");
    let addresses = show(&["-n", &topology.node, "addr", "show", "vn"]);
    assert!(!addresses.contains(VIP), "the VIP is removed: {addresses}");
    assert!(!topology.dir.join("bpf/vn").exists(), "the pin is removed");
    let arp_announce = Command::new("ip")
        .args([
            "netns",
            "exec",
            &topology.node,
            "cat",
            "/proc/sys/net/ipv4/conf/vn/arp_announce",
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&arp_announce.stdout).trim(),
        "0",
        "arp_announce restored"
    );
    assert!(
        !request(&topology.client, "after", Duration::from_millis(300)),
        "a stopped node answers nothing"
    );
}

/// A running node whose echo server outlasts the test, so that only the node can stop the
/// answers; one request has been answered.
fn serving_node(tag: &str) -> Topology {
    needs_root();
    let mut topology = Topology::new(tag);
    topology.start_herd();
    echo_server(&topology, usize::MAX, Duration::from_secs(20));
    assert!(request(&topology.client, "alive", Duration::from_secs(1)));
    topology
}

/// Sends requests until one is not answered, which must come within the liveness deadline
/// (renewed every 100 ms, 500 ms ahead) and some slack; then none may be answered.
fn closes_within_the_deadline(topology: &Topology, what: &str) {
    let since = Instant::now();
    let mut first_refused = None;
    let mut i = 0;
    while first_refused.is_none() && since.elapsed() < Duration::from_secs(5) {
        if !request(
            &topology.client,
            &format!("{what}{i}"),
            Duration::from_millis(100),
        ) {
            first_refused = Some(since.elapsed());
        }
        i += 1;
    }
    let first_refused = first_refused.expect("the node stops answering");
    eprintln!("{what}: first request refused after {first_refused:?}, {i} requests in");
    assert!(
        first_refused < Duration::from_secs(2),
        "stopped after {first_refused:?}"
    );
    let late = (0..20)
        .filter(|i| {
            request(
                &topology.client,
                &format!("late{i}"),
                Duration::from_millis(200),
            )
        })
        .count();
    assert_eq!(late, 0, "no VIP packet is accepted once herd is {what}");
}

#[test]
fn a_node_whose_herd_is_frozen_closes_and_reopens_when_it_resumes() {
    let topology = serving_node("s");
    topology.signal_herd("STOP");
    closes_within_the_deadline(&topology, "frozen");
    topology.signal_herd("CONT");
    // Resumed, herd renews the deadline within 100 ms: wait for the first answer.
    let resumed = Instant::now();
    let mut answered = false;
    while !answered && resumed.elapsed() < Duration::from_secs(5) {
        answered = request(&topology.client, "again", Duration::from_millis(100));
    }
    assert!(answered, "a resumed node takes its traffic again");
}

#[test]
fn a_node_whose_herd_is_killed_accepts_no_vip_traffic() {
    let mut topology = serving_node("k");
    topology.signal_herd("KILL");
    topology.herd.take().unwrap().wait().unwrap();
    // The program stays attached (pinned) and stops accepting once the last liveness deadline
    // has passed.
    closes_within_the_deadline(&topology, "killed");
    let link = Command::new("ip")
        .args(["-n", &topology.node, "link", "show", "vn"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&link.stdout).contains("prog/xdp"),
        "the program outlives herd, closed"
    );
    // The server still answers from inside the node: the program, not the server, refuses.
    let node = topology.node.clone();
    let answered = Topology::in_netns(&node, || {
        let socket = UdpSocket::bind(("198.18.1.1", 0)).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(1)))
            .unwrap();
        socket.send_to(b"inside", (VIP, PORT)).unwrap();
        socket.recv_from(&mut [0u8; 64]).is_ok()
    });
    assert!(answered, "the server is alive");
}
