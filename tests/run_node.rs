//! `herd run` on one node, end to end, in network namespaces built for the test: a client
//! reaches a VIP through its virtual MAC, herd stopped with SIGTERM leaves the host as it found
//! it (even when it was started after a herd that was killed), and a node whose herd is frozen
//! or killed stops accepting VIP traffic (fail closed). Each
//! test takes the dataplane mode; the `xdp` and `afxdp` modules run them in each.
//!
//! Needs root (namespaces, XDP); `scripts/test` runs it as root, as CI does.

mod common;

use std::net::UdpSocket;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{
    complete_checksums, ip, ip_show, needs_root, status_json, veth, BpfFs, Herd, HerdFiles, Netns,
    ScratchDir, KEY,
};
use herd_config::DataplaneMode;

const VIP: &str = "198.18.1.100";
const PORT: u16 = 7;

/// A node namespace and a client namespace joined by a veth pair, a BPF file system for the
/// pin, and the herd process; all removed on drop, whether the test passed or not. Fields are
/// dropped in this order: herd is killed, the namespaces go (with the veth pair and the
/// program attached to it), then the BPF file system and the scratch directory.
struct Topology {
    herd: Option<Herd>,
    node: Netns,
    client: Netns,
    _bpf: BpfFs,
    pins: PathBuf,
    dir: ScratchDir,
}

impl Topology {
    /// A topology for a node in `mode`, whose names hold the process id, `tag` and the mode, so
    /// that runs and tests do not collide.
    fn new(tag: &str, mode: DataplaneMode) -> Self {
        Self::with(tag, mode, |_| String::new())
    }

    /// As [`Topology::new`], with more configuration after the rest: `extra` is given the
    /// scratch directory.
    fn with(tag: &str, mode: DataplaneMode, extra: impl Fn(&std::path::Path) -> String) -> Self {
        let id = std::process::id();
        let dir = ScratchDir::new(&format!("run-{tag}-{mode}"));
        let node = Netns::new(format!("herd-n{tag}-{mode}-{id}"));
        let client = Netns::new(format!("herd-c{tag}-{mode}-{id}"));
        veth(&node, "vn", &client, "vc");
        for (ns, dev, addr) in [
            (&node, "vn", "198.18.1.1/24"),
            (&client, "vc", "198.18.1.50/24"),
        ] {
            ip(&["-n", ns.name(), "addr", "add", addr, "dev", dev]);
            ip(&["-n", ns.name(), "link", "set", dev, "up"]);
        }
        complete_checksums(&client, "vc");
        let bpf = BpfFs::mount(dir.path().join("bpf"));
        let pins = bpf.dir("alpha");
        let key = dir.path().join("farm.key");
        let key = key.display();
        std::fs::write(
            dir.path().join("farm.toml"),
            format!(
                r#"
[farm]
name = "e2e"
vip = ["{VIP}"]
interface = "vn"
buckets = 64
hash_key = "00112233445566778899aabbccddeeff"
auth_key_file = "{key}"

[[node]]
name = "alpha"
address = "198.18.1.1"

[[rule]]
protocol = "udp"
ports = ["{PORT}"]

[dataplane]
mode = "{mode}"
{extra}"#,
                extra = extra(dir.path())
            ),
        )
        .unwrap();
        std::fs::write(dir.path().join("farm.key"), KEY).unwrap();
        Topology {
            herd: None,
            node,
            client,
            _bpf: bpf,
            pins,
            dir,
        }
    }

    /// Starts `herd run` in the node namespace and waits for it to take every bucket: alone
    /// in its farm, it is up once `dead_after` has passed without word from another node.
    fn start_herd(&mut self) {
        let state = self.dir.path().join("state");
        let files = HerdFiles {
            config: &self.dir.path().join("farm.toml"),
            bpf_dir: &self.pins,
            state_dir: &state,
        };
        let herd = Herd::start(&self.node, &files, None);
        let owns_all = herd.wait_for(
            0,
            |line| line.contains("all_tcp=64 non_tcp=64"),
            Duration::from_secs(10),
        );
        self.herd = Some(herd);
        assert!(owns_all.is_some(), "the lone node takes every bucket");
    }

    /// Sends herd a signal (`STOP`, `CONT`, `KILL`, ...).
    fn signal_herd(&self, signal: &str) {
        self.herd.as_ref().expect("herd runs").signal(signal);
    }
}

/// A UDP echo server on the VIP in the node namespace that answers `count` requests (or
/// stops after `for_at_most`), prefixing them with the node's name. Returns once it listens.
fn echo_server(topology: &Topology, count: usize, for_at_most: Duration) {
    let (listening, wait) = mpsc::channel();
    topology.node.spawn(move || {
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
    });
    wait.recv().expect("the server listens");
}

/// One request from a new client port: whether the node answered it within `wait`.
fn request(client: &Netns, text: &str, wait: Duration) -> bool {
    let text = text.to_owned();
    client.run(move || {
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

fn a_client_reaches_the_vip_through_its_virtual_mac_and_herd_cleans_up(mode: DataplaneMode) {
    needs_root();
    let mut topology = Topology::new("a", mode);
    topology.start_herd();
    echo_server(&topology, 1000, Duration::from_secs(30));

    // The first request also resolves the VIP: the answer must carry the virtual MAC.
    let answered = (0..30)
        .filter(|i| request(&topology.client, &format!("r{i}"), Duration::from_secs(1)))
        .count();
    assert_eq!(answered, 30, "every request to the VIP is answered");
    let neighbours = ip_show(&["-n", topology.client.name(), "neigh", "show", VIP]);
    assert!(
        neighbours.contains("02:68:c6:12:01:64"),
        "the client learnt the VIP's virtual MAC: {neighbours}"
    );

    // SIGTERM: herd stops and leaves the host as it found it.
    topology.signal_herd("TERM");
    let exit = topology.herd.take().unwrap().wait();
    assert!(exit.success(), "herd exits cleanly on SIGTERM: {exit}");
    let link = ip_show(&["-n", topology.node.name(), "link", "show", "vn"]);
    assert!(
        !link.contains("prog/xdp"),
        "the program is detached: {link}"
    );
    assert!(!link.contains("PROMISC"), "promiscuous mode is off: {link}");
    // Lines read "3: herd2: <BROADCAST,...": the second field is the device's name.
    let links = ip_show(&["-n", topology.node.name(), "-o", "link", "show"]);
    assert!(
        !links.lines().any(|line| line
            .split(": ")
            .nth(1)
            .is_some_and(|name| name.starts_with("herd"))),
        "no device of herd's is left: {links}"
    );
    let addresses = ip_show(&["-n", topology.node.name(), "addr", "show", "vn"]);
    assert!(!addresses.contains(VIP), "the VIP is removed: {addresses}");
    assert!(!topology.pins.join("vn").exists(), "the pin is removed");
    // A thread reads the sysctls of the namespace it is in.
    let arp_announce = topology
        .node
        .run(|| std::fs::read_to_string("/proc/sys/net/ipv4/conf/vn/arp_announce").unwrap());
    assert_eq!(arp_announce.trim(), "0", "arp_announce restored");
    assert!(
        !request(&topology.client, "after", Duration::from_millis(300)),
        "a stopped node answers nothing"
    );
}

/// The settings of the node's interface that herd changes while it runs, as `ip` and the
/// node's sysctls show them.
#[derive(Debug, PartialEq)]
struct InterfaceSettings {
    promiscuous: bool,
    arp_announce: String,
    vip: bool,
    xdp_attached: bool,
}

impl InterfaceSettings {
    /// The interface of the node as the test made it, before any herd.
    fn untouched() -> Self {
        InterfaceSettings {
            promiscuous: false,
            arp_announce: "0".to_owned(),
            vip: false,
            xdp_attached: false,
        }
    }

    /// The interface of a running node.
    fn running() -> Self {
        InterfaceSettings {
            promiscuous: true,
            arp_announce: "2".to_owned(),
            vip: true,
            xdp_attached: true,
        }
    }

    /// The settings of `topology`'s node interface now.
    fn of(topology: &Topology) -> Self {
        let link = ip_show(&["-n", topology.node.name(), "link", "show", "vn"]);
        let addresses = ip_show(&["-n", topology.node.name(), "addr", "show", "vn"]);
        // A thread reads the sysctls of the namespace it is in.
        let arp_announce = topology
            .node
            .run(|| std::fs::read_to_string("/proc/sys/net/ipv4/conf/vn/arp_announce").unwrap());
        InterfaceSettings {
            promiscuous: link.contains("PROMISC"),
            arp_announce: arp_announce.trim().to_owned(),
            vip: addresses.contains(&format!("{VIP}/32")),
            xdp_attached: link.contains("prog/xdp"),
        }
    }
}

/// Where herd keeps the settings of the node's interface as it found them.
fn originals_record(topology: &Topology) -> PathBuf {
    topology
        .dir
        .path()
        .join("state")
        .join("alpha.vn.originals.json")
}

fn a_herd_started_after_a_kill_puts_back_the_settings_from_before_the_killed_one(
    mode: DataplaneMode,
) {
    needs_root();
    let mut topology = Topology::new("r", mode);
    let record = originals_record(&topology);
    assert_eq!(
        InterfaceSettings::of(&topology),
        InterfaceSettings::untouched()
    );
    topology.start_herd();
    assert_eq!(
        InterfaceSettings::of(&topology),
        InterfaceSettings::running()
    );
    let recorded = std::fs::read_to_string(&record).expect("herd records the originals");
    assert!(recorded.contains("\"arp_announce\": \"0\""), "{recorded}");

    topology.signal_herd("KILL");
    topology.herd.take().unwrap().wait();
    assert_eq!(
        InterfaceSettings::of(&topology),
        InterfaceSettings::running(),
        "a killed herd puts nothing back"
    );
    assert!(record.exists(), "the record outlives a killed herd");

    // The second herd finds the interface as the killed one left it, and the record.
    topology.start_herd();
    let herd = topology.herd.as_ref().unwrap();
    assert!(herd.has_logged(0, |line| line.contains(
        "found the settings a herd that did not exit cleanly (killed?) recorded"
    )));
    assert!(herd.has_logged(0, |line| line.contains("taking it over")));
    topology.signal_herd("TERM");
    let exit = topology.herd.take().unwrap().wait();
    assert!(exit.success(), "herd exits cleanly on SIGTERM: {exit}");
    assert_eq!(
        InterfaceSettings::of(&topology),
        InterfaceSettings::untouched(),
        "the interface is as it was before the first herd"
    );
    assert!(
        !record.exists(),
        "the record goes once the settings are back"
    );
}

/// A VIP address the interface had before herd started is not herd's to remove.
#[test]
fn a_vip_address_the_interface_had_before_herd_stays_when_it_stops() {
    needs_root();
    let mut topology = Topology::new("v", DataplaneMode::Xdp);
    let address = format!("{VIP}/32");
    ip(&[
        "-n",
        topology.node.name(),
        "addr",
        "add",
        &address,
        "dev",
        "vn",
    ]);
    topology.start_herd();
    let herd = topology.herd.as_ref().unwrap();
    assert!(herd.has_logged(0, |line| line
        .contains("VIP address already on the interface before herd started")));
    topology.signal_herd("TERM");
    let exit = topology.herd.take().unwrap().wait();
    assert!(exit.success(), "herd exits cleanly on SIGTERM: {exit}");
    assert_eq!(
        InterfaceSettings::of(&topology),
        InterfaceSettings {
            vip: true,
            ..InterfaceSettings::untouched()
        },
        "only the VIP, which was there before, is left"
    );
}

/// A record of the originals herd cannot read stops it, naming the file, before it changes
/// the interface: restoring from a guess could leave the interface as a killed herd set it.
#[test]
fn a_corrupt_record_of_the_originals_stops_herd_before_it_changes_the_interface() {
    needs_root();
    let topology = Topology::new("c", DataplaneMode::Xdp);
    let record = originals_record(&topology);
    std::fs::create_dir_all(record.parent().unwrap()).unwrap();
    std::fs::write(&record, "{\"interface\": \"vn\", \"promiscuous\": ").unwrap();
    let files = HerdFiles {
        config: &topology.dir.path().join("farm.toml"),
        bpf_dir: &topology.pins,
        state_dir: &topology.dir.path().join("state"),
    };
    let mut herd = Herd::spawn(&topology.node, &files, None);
    let exit = herd
        .wait_timeout(Duration::from_secs(20))
        .expect("herd refuses to run");
    assert!(!exit.success(), "{exit}");
    let message = format!(
        "{}: not a record of vn's original settings",
        record.display()
    );
    // The process has exited; its last lines may still be on their way to the test.
    assert!(herd
        .wait_for(0, |line| line.contains(&message), Duration::from_secs(5))
        .is_some());
    assert_eq!(
        InterfaceSettings::of(&topology),
        InterfaceSettings::untouched()
    );
    assert!(record.exists(), "the file is left for the operator");
}

/// A running node whose echo server outlasts the test, so that only the node can stop the
/// answers; one request has been answered.
fn serving_node(tag: &str, mode: DataplaneMode) -> Topology {
    needs_root();
    let mut topology = Topology::new(tag, mode);
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

fn a_node_whose_herd_is_frozen_closes_and_reopens_when_it_resumes(mode: DataplaneMode) {
    let topology = serving_node("s", mode);
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

fn a_node_whose_herd_is_killed_accepts_no_vip_traffic(mode: DataplaneMode) {
    let mut topology = serving_node("k", mode);
    topology.signal_herd("KILL");
    topology.herd.take().unwrap().wait();
    // The program stays attached (pinned) and stops accepting once the last liveness deadline
    // has passed.
    closes_within_the_deadline(&topology, "killed");
    let link = ip_show(&["-n", topology.node.name(), "link", "show", "vn"]);
    assert!(
        link.contains("prog/xdp"),
        "the program outlives herd, closed"
    );
    // The server still answers from inside the node: the program, not the server, refuses.
    let answered = topology.node.run(|| {
        let socket = UdpSocket::bind(("198.18.1.1", 0)).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(1)))
            .unwrap();
        socket.send_to(b"inside", (VIP, PORT)).unwrap();
        socket.recv_from(&mut [0u8; 64]).is_ok()
    });
    assert!(answered, "the server is alive");
}

/// A second `herd run` of a running node, started as an operator would start one by hand
/// beside a service manager's (with state and control directories of its own), refuses before
/// it changes anything, naming the first; the first keeps its VIP and its attachment, and
/// serves on.
fn a_second_herd_of_a_running_node_refuses_without_touching_it(mode: DataplaneMode) {
    let topology = serving_node("d", mode);
    let state = topology.dir.path().join("state");
    let pid = status_json(&state, "alpha")["pid"].as_u64().unwrap();
    let other = topology.dir.path().join("other");
    let files = HerdFiles {
        config: &topology.dir.path().join("farm.toml"),
        bpf_dir: &topology.pins,
        state_dir: &other,
    };
    let mut second = Herd::spawn(&topology.node, &files, None);
    let exit = second
        .wait_timeout(Duration::from_secs(20))
        .expect("the second herd exits");
    assert_eq!(exit.code(), Some(1), "the second herd fails");
    let refusal = format!(
        "another herd already runs on vn (pid {pid}, node alpha, control socket {}",
        state.join("alpha.sock").display()
    );
    assert!(
        second
            .wait_for(0, |line| line.contains(&refusal), Duration::from_secs(5))
            .is_some(),
        "the refusal names the first herd"
    );
    assert!(
        !other.join("alpha.incarnation").exists(),
        "the second wrote nothing"
    );
    assert_eq!(
        InterfaceSettings::of(&topology),
        InterfaceSettings::running(),
        "the first keeps its VIP and its attachment"
    );
    let answered = (0..20)
        .filter(|i| {
            request(
                &topology.client,
                &format!("after{i}"),
                Duration::from_secs(1),
            )
        })
        .count();
    assert_eq!(answered, 20, "the first serves on");
    assert_eq!(status_json(&state, "alpha")["state"], "up");
}

/// A VIP removed by hand under a running node: herd notices within seconds, says so, takes
/// the node out of the farm (its status and /healthz say why), and brings it back once the
/// VIP is there again.
#[test]
fn a_vip_removed_under_a_running_node_makes_it_report_not_healthy() {
    needs_root();
    let mut topology = Topology::with("h", DataplaneMode::Xdp, |_| {
        "\n[admin]\nmetrics = \"127.0.0.1:9477\"\n".into()
    });
    topology.start_herd();
    let state = topology.dir.path().join("state");
    let herd = topology.herd.as_ref().unwrap();
    let (healthz, _) = get(&topology.node, "/healthz");
    assert!(healthz.contains(" 200 "), "{healthz}");

    let mark = herd.logged();
    let removed = Instant::now();
    let vip = format!("{VIP}/32");
    ip(&["-n", topology.node.name(), "addr", "del", &vip, "dev", "vn"]);
    let noticed = herd.wait_for(
        mark,
        |line| line.contains("check failed") && line.contains(VIP),
        Duration::from_secs(5),
    );
    assert!(noticed.is_some(), "herd logs the missing VIP");
    eprintln!("noticed after {:?}", removed.elapsed());
    let status = status_json(&state, "alpha");
    assert_ne!(status["state"], "up", "{status}");
    let reason = status["reason"].as_str().unwrap_or_default();
    assert!(reason.contains(VIP), "{reason}");
    let (healthz, body) = get(&topology.node, "/healthz");
    assert!(healthz.contains(" 503 "), "{healthz}");
    assert!(body.contains(VIP), "{body}");

    let mark = herd.logged();
    ip(&["-n", topology.node.name(), "addr", "add", &vip, "dev", "vn"]);
    let back = herd.wait_for(
        mark,
        |line| line.contains("all_tcp=64 non_tcp=64"),
        Duration::from_secs(10),
    );
    assert!(back.is_some(), "the node takes its share again");
    assert_eq!(status_json(&state, "alpha")["state"], "up");
}

/// `herd` run as an operator would, against the node's control socket in `state`.
fn operate(state: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_herd"))
        .args(args)
        .arg("--control-dir")
        .arg(state)
        .output()
        .unwrap()
}

/// `GET path` from the node's metrics server, in the node's namespace: the status line and
/// the body.
fn get(node: &Netns, path: &'static str) -> (String, String) {
    use std::io::{Read, Write};
    node.run(move || {
        let mut stream = std::net::TcpStream::connect("127.0.0.1:9477").unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: herd\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        (head.lines().next().unwrap().to_owned(), body.to_owned())
    })
}

/// The lines the application's scripts wrote.
fn app_log(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("app.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The node's lifecycle, driven by its checks and by an operator through the control socket:
/// the start script and a healthy check bring it up; `herd drain` takes it out with its
/// application running and `herd start` brings it back without the start script; a failed
/// check restarts the application (stop script, start script) and the node rejoins; `herd
/// stop` runs the stop script and leaves herd running, stopped; SIGTERM then ends herd.
#[test]
fn checks_and_operators_drive_the_node_through_its_states() {
    needs_root();
    let mut topology = Topology::with("l", DataplaneMode::Xdp, |dir| {
        let dir = dir.display();
        format!(
            r#"
[[check]]
name = "app"
kind = "command"
run = "test -f {dir}/healthy"
interval_ms = 200
timeout_ms = 200
fall = 2
rise = 2

[scripts]
start = "echo start $HERD_REASON >> {dir}/app.log; touch {dir}/healthy"
stop = "echo stop $HERD_REASON >> {dir}/app.log; rm -f {dir}/healthy"

[admin]
metrics = "127.0.0.1:9477"
"#
        )
    });
    topology.start_herd();
    let dir = topology.dir.path().to_owned();
    let state = dir.join("state");
    let herd = topology.herd.as_ref().unwrap();
    let wait = |from: usize, what: &str| {
        let what = what.to_owned();
        herd.wait_for(from, |line| line.contains(&what), Duration::from_secs(10))
            .unwrap_or_else(|| panic!("herd logs {what:?}"))
    };
    let up = status_json(&state, "alpha");
    assert_eq!(up["state"], "up");
    assert_eq!(up["membership"]["state"], "up");
    assert_eq!(up["checks"][0]["health"], "healthy");
    assert_eq!(up["membership"]["nodes"][0]["buckets"], 64);
    assert_eq!(app_log(&dir), ["start start"]);
    let (healthz, _) = get(&topology.node, "/healthz");
    assert!(healthz.contains(" 200 "), "{healthz}");
    let (_, metrics) = get(&topology.node, "/metrics");
    assert!(metrics.contains("herd_owned_buckets 64\n"), "{metrics}");
    assert!(
        metrics.contains("herd_check_healthy{check=\"app\",kind=\"command\"} 1\n"),
        "{metrics}"
    );

    let mark = herd.logged();
    let drained = operate(&state, &["drain"]);
    assert!(drained.status.success(), "{drained:?}");
    wait(mark, "node stopped");
    let stopped = status_json(&state, "alpha");
    assert_eq!(stopped["state"], "stopped");
    assert_eq!(stopped["membership"]["state"], "withdrawn");
    assert_eq!(stopped["membership"]["nodes"][0]["buckets"], 0);
    assert!(stopped["reason"].as_str().unwrap().contains("drained"));
    assert_eq!(
        app_log(&dir),
        ["start start"],
        "a drain stops no application"
    );
    let (healthz, body) = get(&topology.node, "/healthz");
    assert!(healthz.contains(" 503 "), "{healthz}");
    assert!(body.starts_with("stopped: drained"), "{body}");

    let mark = herd.logged();
    assert!(operate(&state, &["start"]).status.success());
    wait(mark, "all_tcp=64 non_tcp=64");
    assert_eq!(
        app_log(&dir),
        ["start start"],
        "it still ran: no start script"
    );

    // The application dies: the check fails, and herd restarts it.
    let mark = herd.logged();
    std::fs::remove_file(dir.join("healthy")).unwrap();
    wait(mark, "check failed");
    let rejoined = wait(mark, "all_tcp=64 non_tcp=64");
    assert!(herd.has_logged(mark, |line| line.contains("node withdrawing")));
    assert_eq!(
        app_log(&dir),
        ["start start", "stop restart", "start restart"]
    );
    assert_eq!(status_json(&state, "alpha")["restarts"]["total"], 1);

    let stop = operate(&state, &["stop"]);
    assert!(stop.status.success(), "{stop:?}");
    wait(rejoined, "node stopped");
    assert_eq!(app_log(&dir).last().unwrap(), "stop stop");
    let again = operate(&state, &["stop"]);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already stopped"),
        "{again:?}"
    );

    topology.signal_herd("TERM");
    let exit = topology.herd.take().unwrap().wait();
    assert!(
        exit.success(),
        "a stopped node's herd exits on SIGTERM: {exit}"
    );
    let gone = operate(&state, &["status"]);
    assert!(
        String::from_utf8_lossy(&gone.stderr).contains("herd is not running"),
        "{gone:?}"
    );
}

/// Generates, for each mode, a module of `#[test]` wrappers around the tests above.
macro_rules! in_mode {
    ($($module:ident: $mode:expr),*) => {$(
        mod $module {
            use super::*;

            #[test]
            fn a_client_reaches_the_vip_through_its_virtual_mac_and_herd_cleans_up() {
                super::a_client_reaches_the_vip_through_its_virtual_mac_and_herd_cleans_up($mode);
            }

            #[test]
            fn a_node_whose_herd_is_frozen_closes_and_reopens_when_it_resumes() {
                super::a_node_whose_herd_is_frozen_closes_and_reopens_when_it_resumes($mode);
            }

            #[test]
            fn a_node_whose_herd_is_killed_accepts_no_vip_traffic() {
                super::a_node_whose_herd_is_killed_accepts_no_vip_traffic($mode);
            }

            #[test]
            fn a_second_herd_of_a_running_node_refuses_without_touching_it() {
                super::a_second_herd_of_a_running_node_refuses_without_touching_it($mode);
            }

            #[test]
            fn a_herd_started_after_a_kill_puts_back_the_settings_from_before_the_killed_one() {
                super::a_herd_started_after_a_kill_puts_back_the_settings_from_before_the_killed_one($mode);
            }
        }
    )*};
}

in_mode!(xdp: DataplaneMode::Xdp, afxdp: DataplaneMode::Afxdp);
