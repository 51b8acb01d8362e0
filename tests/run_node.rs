//! `herd run` on one node, end to end, in network namespaces built for the test: a client
//! reaches a VIP through its virtual MAC, herd stopped with SIGTERM leaves the host as it found
//! it (even when it was started after a herd that was killed), and a node whose herd is frozen
//! or killed stops accepting VIP traffic (fail closed). Each test takes the dataplane mode; the
//! `xdp` and `afxdp` modules run them in each.
//!
//! Needs root (namespaces, XDP); `scripts/test` runs it as root, as CI does.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use herd_config::{DataplaneMode, Protocol};
use herd_testbed::address::{node4, CLIENT4, VIP4 as VIP};
use herd_testbed::config::{FarmToml, KEY};
use herd_testbed::responder::{Kind, On, Responders, Service, Settings};
use herd_testbed::{FarmBed, FarmPlan, Herd, HerdSpec, HubKind, Netns, Offload, Signal, Uplink};

const PORT: u16 = 7;
/// The node's interface, plugged into the bridge.
const INTERFACE: &str = "eth0";
/// Where the node's interface keeps its `arp_announce`, which herd changes and restores.
const ARP_ANNOUNCE: &str = "net/ipv4/conf/eth0/arp_announce";
/// The `arp_announce` a new interface of the namespace gets: the namespace's default, which
/// comes from the machine's and so need not be 0.
const DEFAULT_ARP_ANNOUNCE: &str = "net/ipv4/conf/default/arp_announce";

/// A node namespace and a client namespace on a learning bridge, and the herd process; all removed on
/// drop, whether the test passed or not. Fields are dropped in this order: the echo server
/// stops, herd is killed, then the bed goes (the namespaces with the interfaces and the program
/// attached to them, the BPF file system and the scratch directory).
struct Topology {
    echo: Option<Responders>,
    herd: Option<Herd>,
    bed: FarmBed,
    /// The node's pin directory.
    pins: PathBuf,
    /// The node's state directory, which holds its control socket too.
    state: PathBuf,
}

impl Topology {
    /// A topology for a node in `mode`, whose names hold the process id, `tag` and the mode, so
    /// that runs and tests do not collide.
    fn new(tag: &str, mode: DataplaneMode) -> Self {
        Self::with(tag, mode, |_| String::new())
    }

    /// As [`Topology::new`], with more configuration after the rest: `extra` is given the
    /// scratch directory.
    fn with(tag: &str, mode: DataplaneMode, extra: impl Fn(&Path) -> String) -> Self {
        let bed = FarmBed::create(&FarmPlan {
            prefix: format!("herd-run{tag}-{mode}-{}", std::process::id()),
            nodes: &["alpha"],
            hub: HubKind::Learning,
            uplink: Uplink::Veth,
            sources: 0,
            client_offload: Offload::Default,
        })
        .expect("builds the node's bed");
        let key = bed.bed().write_private("farm.key", KEY).unwrap();
        let text = FarmToml::new("e2e", mode)
            .buckets(64)
            .key_file(&key)
            .node("alpha", node4(0))
            .rule(Protocol::Udp, &[PORT], None)
            .tables(&extra(bed.bed().scratch()))
            .text();
        bed.bed().write_private("farm.toml", &text).unwrap();
        Topology {
            echo: None,
            herd: None,
            pins: bed.bpf_dir(0).unwrap(),
            state: bed.state_dir(0).unwrap(),
            bed,
        }
    }

    /// The node's namespace.
    fn node(&self) -> &Netns {
        &self.bed.nodes[0].netns
    }

    /// The client's namespace.
    fn client(&self) -> &Netns {
        &self.bed.client.netns
    }

    /// The scratch directory.
    fn dir(&self) -> &Path {
        self.bed.bed().scratch()
    }

    /// Starts `herd run` in the node namespace, which finds its node by its address, and
    /// waits for it to take every bucket: alone in its farm, it is up once `dead_after` has
    /// passed without word from another node.
    fn start_herd(&mut self) {
        let config = self.dir().join("farm.toml");
        let spec = HerdSpec {
            exe: Path::new(env!("CARGO_BIN_EXE_herd")),
            node: None,
            config: &config,
            bpf_dir: &self.pins,
            state_dir: &self.state,
            log_file: None,
            echo: true,
        };
        let herd = Herd::start(self.bed.bed(), self.node(), &spec).expect("herd runs");
        let owns_all = herd.wait_for(
            0,
            |line| line.contains("all_tcp=64 non_tcp=64"),
            Duration::from_secs(10),
        );
        self.herd = Some(herd);
        assert!(owns_all.is_some(), "the lone node takes every bucket");
    }

    /// Sends herd a signal.
    fn signal_herd(&self, signal: Signal) {
        self.herd
            .as_ref()
            .expect("herd runs")
            .signal(signal)
            .unwrap();
    }

    /// Waits for herd to exit.
    fn wait_herd(&mut self) -> std::process::ExitStatus {
        self.herd.take().expect("herd runs").wait().unwrap()
    }

    /// Starts a UDP echo server on the VIP in the node namespace, which prefixes the requests
    /// with the node's name until the topology goes. The VIP must be on the node (herd adds
    /// it).
    fn start_echo(&mut self) {
        let service = Service {
            kind: Kind::Udp,
            on: On::Vip,
            port: PORT,
        };
        let settings = Settings {
            vip: VIP.into(),
            line_wait: Duration::ZERO,
            record: false,
        };
        let echo = Responders::start(&self.bed.nodes, &[service], &settings);
        self.echo = Some(echo.expect("the server listens"));
    }
}

/// One request from a new client port: whether the node answered it within `wait`.
fn request(client: &Netns, text: &str, wait: Duration) -> bool {
    let text = text.to_owned();
    client
        .run(move || {
            let socket = UdpSocket::bind(SocketAddr::from((CLIENT4, 0))).unwrap();
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
        .expect("enters the client's namespace")
}

/// How many of `count` requests, `PREFIX0`, `PREFIX1`..., the node answered, each within
/// `wait`.
fn answered(client: &Netns, prefix: &str, count: usize, wait: Duration) -> usize {
    (0..count)
        .filter(|i| request(client, &format!("{prefix}{i}"), wait))
        .count()
}

fn a_client_reaches_the_vip_through_its_virtual_mac_and_herd_cleans_up(mode: DataplaneMode) {
    let mut topology = Topology::new("a", mode);
    // What herd must leave as it found it: the namespace's default, whatever the machine's.
    let arp_announce = topology.node().read_sysctl(ARP_ANNOUNCE).unwrap();
    topology.start_herd();
    topology.start_echo();

    // The first request also resolves the VIP: the answer must carry the virtual MAC.
    let answered = answered(topology.client(), "r", 30, Duration::from_secs(1));
    assert_eq!(answered, 30, "every request to the VIP is answered");
    let neighbours = topology
        .client()
        .ip_output(&["neigh", "show", &VIP.to_string()])
        .unwrap();
    assert!(
        neighbours.contains("02:68:c6:12:00:64"),
        "the client learnt the VIP's virtual MAC: {neighbours}"
    );

    // SIGTERM: herd stops and leaves the host as it found it.
    topology.signal_herd(Signal::SIGTERM);
    let exit = topology.wait_herd();
    assert!(exit.success(), "herd exits cleanly on SIGTERM: {exit}");
    let link = topology
        .node()
        .ip_output(&["link", "show", INTERFACE])
        .unwrap();
    assert!(
        !link.contains("prog/xdp"),
        "the program is detached: {link}"
    );
    assert!(!link.contains("PROMISC"), "promiscuous mode is off: {link}");
    // Lines read "3: herd2: <BROADCAST,...": the second field is the device's name.
    let links = topology.node().ip_output(&["-o", "link", "show"]).unwrap();
    assert!(
        !links.lines().any(|line| line
            .split(": ")
            .nth(1)
            .is_some_and(|name| name.starts_with("herd"))),
        "no device of herd's is left: {links}"
    );
    let addresses = topology
        .node()
        .ip_output(&["addr", "show", INTERFACE])
        .unwrap();
    assert!(
        !addresses.contains(&VIP.to_string()),
        "the VIP is removed: {addresses}"
    );
    let pins: Vec<_> = std::fs::read_dir(&topology.pins)
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert!(
        pins.is_empty(),
        "the pins of the XDP program and the egress guard are removed: {pins:?}"
    );
    assert_eq!(
        topology.node().read_sysctl(ARP_ANNOUNCE).unwrap(),
        arp_announce,
        "arp_announce restored"
    );
    assert!(
        !request(topology.client(), "after", Duration::from_millis(300)),
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
    fn untouched(topology: &Topology) -> Self {
        InterfaceSettings {
            promiscuous: false,
            arp_announce: topology.node().read_sysctl(DEFAULT_ARP_ANNOUNCE).unwrap(),
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
        let node = topology.node();
        let link = node.ip_output(&["link", "show", INTERFACE]).unwrap();
        let addresses = node.ip_output(&["addr", "show", INTERFACE]).unwrap();
        InterfaceSettings {
            promiscuous: link.contains("PROMISC"),
            arp_announce: node.read_sysctl(ARP_ANNOUNCE).unwrap(),
            vip: addresses.contains(&format!("{VIP}/32")),
            xdp_attached: link.contains("prog/xdp"),
        }
    }
}

/// Where herd keeps the settings of the node's interface as it found them.
fn originals_record(topology: &Topology) -> PathBuf {
    topology.state.join("alpha.eth0.originals.json")
}

fn a_herd_started_after_a_kill_puts_back_the_settings_from_before_the_killed_one(
    mode: DataplaneMode,
) {
    let mut topology = Topology::new("r", mode);
    let record = originals_record(&topology);
    let untouched = InterfaceSettings::untouched(&topology);
    assert_eq!(InterfaceSettings::of(&topology), untouched);
    topology.start_herd();
    assert_eq!(
        InterfaceSettings::of(&topology),
        InterfaceSettings::running()
    );
    let recorded = std::fs::read_to_string(&record).expect("herd records the originals");
    let original = format!("\"arp_announce\": \"{}\"", untouched.arp_announce);
    assert!(recorded.contains(&original), "{recorded}");

    topology.signal_herd(Signal::SIGKILL);
    topology.wait_herd();
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
    topology.signal_herd(Signal::SIGTERM);
    let exit = topology.wait_herd();
    assert!(exit.success(), "herd exits cleanly on SIGTERM: {exit}");
    assert_eq!(
        InterfaceSettings::of(&topology),
        untouched,
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
    let mut topology = Topology::new("v", DataplaneMode::Xdp);
    let address = format!("{VIP}/32");
    topology
        .node()
        .ip(&["addr", "add", &address, "dev", INTERFACE])
        .unwrap();
    topology.start_herd();
    let herd = topology.herd.as_ref().unwrap();
    assert!(herd.has_logged(0, |line| line
        .contains("VIP address already on the interface before herd started")));
    topology.signal_herd(Signal::SIGTERM);
    let exit = topology.wait_herd();
    assert!(exit.success(), "herd exits cleanly on SIGTERM: {exit}");
    assert_eq!(
        InterfaceSettings::of(&topology),
        InterfaceSettings {
            vip: true,
            ..InterfaceSettings::untouched(&topology)
        },
        "only the VIP, which was there before, is left"
    );
}

/// A record of the originals herd cannot read stops it, naming the file, before it changes
/// the interface: restoring from a guess could leave the interface as a killed herd set it.
#[test]
fn a_corrupt_record_of_the_originals_stops_herd_before_it_changes_the_interface() {
    let topology = Topology::new("c", DataplaneMode::Xdp);
    let record = originals_record(&topology);
    std::fs::write(&record, "{\"interface\": \"eth0\", \"promiscuous\": ").unwrap();
    let config = topology.dir().join("farm.toml");
    let spec = HerdSpec {
        exe: Path::new(env!("CARGO_BIN_EXE_herd")),
        node: None,
        config: &config,
        bpf_dir: &topology.pins,
        state_dir: &topology.state,
        log_file: None,
        echo: true,
    };
    let mut herd = Herd::spawn(topology.bed.bed(), topology.node(), &spec).unwrap();
    let exit = herd
        .wait_timeout(Duration::from_secs(20))
        .unwrap()
        .expect("herd refuses to run");
    assert!(!exit.success(), "{exit}");
    let message = format!(
        "{}: not a record of eth0's original settings",
        record.display()
    );
    // The process has exited; its last lines may still be on their way to the test.
    assert!(herd
        .wait_for(0, |line| line.contains(&message), Duration::from_secs(5))
        .is_some());
    assert_eq!(
        InterfaceSettings::of(&topology),
        InterfaceSettings::untouched(&topology)
    );
    assert!(record.exists(), "the file is left for the operator");
}

/// A running node whose echo server outlasts the test, so that only the node can stop the
/// answers; one request has been answered.
fn serving_node(tag: &str, mode: DataplaneMode) -> Topology {
    let mut topology = Topology::new(tag, mode);
    topology.start_herd();
    topology.start_echo();
    assert!(request(topology.client(), "alive", Duration::from_secs(1)));
    topology
}

/// Sends requests until one is not answered, which must come within the liveness deadline
/// (renewed with every heartbeat, `dead_after_ms − heartbeat_ms` ahead) and some slack; then
/// none may be answered.
fn closes_within_the_deadline(topology: &Topology, what: &str) {
    let since = Instant::now();
    let mut first_refused = None;
    let mut i = 0;
    while first_refused.is_none() && since.elapsed() < Duration::from_secs(5) {
        if !request(
            topology.client(),
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
    let late = answered(topology.client(), "late", 20, Duration::from_millis(200));
    assert_eq!(late, 0, "no VIP packet is accepted once herd is {what}");
}

fn a_node_whose_herd_is_frozen_closes_and_reopens_when_it_resumes(mode: DataplaneMode) {
    let topology = serving_node("s", mode);
    topology.signal_herd(Signal::SIGSTOP);
    closes_within_the_deadline(&topology, "frozen");
    topology.signal_herd(Signal::SIGCONT);
    // Resumed, herd renews the deadline within a heartbeat period: wait for the first answer.
    let resumed = Instant::now();
    let mut answered = false;
    while !answered && resumed.elapsed() < Duration::from_secs(5) {
        answered = request(topology.client(), "again", Duration::from_millis(100));
    }
    assert!(answered, "a resumed node takes its traffic again");
}

fn a_node_whose_herd_is_killed_accepts_no_vip_traffic(mode: DataplaneMode) {
    let mut topology = serving_node("k", mode);
    topology.signal_herd(Signal::SIGKILL);
    topology.wait_herd();
    // The program stays attached (pinned) and stops accepting once the last liveness deadline
    // has passed.
    closes_within_the_deadline(&topology, "killed");
    let link = topology
        .node()
        .ip_output(&["link", "show", INTERFACE])
        .unwrap();
    assert!(
        link.contains("prog/xdp"),
        "the program outlives herd, closed"
    );
    // The server still answers from inside the node: the program, not the server, refuses.
    let answered = topology.node().run(|| {
        let socket = UdpSocket::bind(SocketAddr::from((node4(0), 0))).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(1)))
            .unwrap();
        socket.send_to(b"inside", (VIP, PORT)).unwrap();
        socket.recv_from(&mut [0u8; 64]).is_ok()
    });
    let answered = answered.expect("enters the node's namespace");
    assert!(answered, "the server is alive");
}

/// A second `herd run` of a running node, started as an operator would start one by hand
/// beside a service manager's (with state and control directories of its own), refuses before
/// it changes anything, naming the first; the first keeps its VIP and its attachment, and
/// serves on.
fn a_second_herd_of_a_running_node_refuses_without_touching_it(mode: DataplaneMode) {
    let topology = serving_node("d", mode);
    let first = topology.herd.as_ref().unwrap();
    let pid = first.status().unwrap()["pid"].as_u64().unwrap();
    let other = topology.dir().join("other");
    let config = topology.dir().join("farm.toml");
    let spec = HerdSpec {
        exe: Path::new(env!("CARGO_BIN_EXE_herd")),
        node: None,
        config: &config,
        bpf_dir: &topology.pins,
        state_dir: &other,
        log_file: None,
        echo: true,
    };
    let mut second = Herd::spawn(topology.bed.bed(), topology.node(), &spec).unwrap();
    let exit = second
        .wait_timeout(Duration::from_secs(20))
        .unwrap()
        .expect("the second herd exits");
    assert_eq!(exit.code(), Some(1), "the second herd fails");
    let refusal = format!(
        "another herd already runs on {INTERFACE} (pid {pid}, node alpha, control socket {}",
        topology.state.join("alpha.sock").display()
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
    let answered = answered(topology.client(), "after", 20, Duration::from_secs(1));
    assert_eq!(answered, 20, "the first serves on");
    assert_eq!(first.status().unwrap()["state"], "up");
}

/// A VIP removed by hand under a running node: herd notices within seconds, says so, takes
/// the node out of the farm (its status and /healthz say why), and brings it back once the
/// VIP is there again.
#[test]
fn a_vip_removed_under_a_running_node_makes_it_report_not_healthy() {
    let mut topology = Topology::with("h", DataplaneMode::Xdp, |_| {
        "\n[admin]\nmetrics = \"127.0.0.1:9477\"\n".into()
    });
    topology.start_herd();
    let herd = topology.herd.as_ref().unwrap();
    let (healthz, _) = get(topology.node(), "/healthz");
    assert!(healthz.contains(" 200 "), "{healthz}");

    let mark = herd.logged();
    let removed = Instant::now();
    let (vip, vip_text) = (format!("{VIP}/32"), VIP.to_string());
    topology
        .node()
        .ip(&["addr", "del", &vip, "dev", INTERFACE])
        .unwrap();
    let noticed = herd.wait_for(
        mark,
        |line| line.contains("check failed") && line.contains(&vip_text),
        Duration::from_secs(5),
    );
    assert!(noticed.is_some(), "herd logs the missing VIP");
    eprintln!("noticed after {:?}", removed.elapsed());
    let status = herd.status().unwrap();
    assert_ne!(status["state"], "up", "{status}");
    let reason = status["reason"].as_str().unwrap_or_default();
    assert!(reason.contains(&vip_text), "{reason}");
    let (healthz, body) = get(topology.node(), "/healthz");
    assert!(healthz.contains(" 503 "), "{healthz}");
    assert!(body.contains(&vip_text), "{body}");

    let mark = herd.logged();
    topology
        .node()
        .ip(&["addr", "add", &vip, "dev", INTERFACE])
        .unwrap();
    let back = herd.wait_for(
        mark,
        |line| line.contains("all_tcp=64 non_tcp=64"),
        Duration::from_secs(10),
    );
    assert!(back.is_some(), "the node takes its share again");
    assert_eq!(herd.status().unwrap()["state"], "up");
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
    .expect("enters the node's namespace")
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

[[rule]]
protocol = "tcp"
ports = ["8080"]
"#
        )
    });
    topology.start_herd();
    let dir = topology.dir().to_owned();
    let state = topology.state.clone();
    let herd = topology.herd.as_ref().unwrap();
    let wait = |from: usize, what: &str| {
        let what = what.to_owned();
        herd.wait_for(from, |line| line.contains(&what), Duration::from_secs(10))
            .unwrap_or_else(|| panic!("herd logs {what:?}"))
            .index
    };
    let up = herd.status().unwrap();
    assert_eq!(up["state"], "up");
    assert_eq!(up["membership"]["state"], "up");
    assert_eq!(up["checks"][0]["health"], "healthy");
    assert_eq!(up["membership"]["nodes"][0]["buckets"], 64);
    assert_eq!(app_log(&dir), ["start start"]);
    let (healthz, _) = get(topology.node(), "/healthz");
    assert!(healthz.contains(" 200 "), "{healthz}");
    let (_, metrics) = get(topology.node(), "/metrics");
    assert!(metrics.contains("herd_owned_buckets 64\n"), "{metrics}");
    assert!(
        metrics.contains("herd_check_healthy{check=\"app\",kind=\"command\"} 1\n"),
        "{metrics}"
    );
    // Nothing listens on the TCP rule's port: as if the application ran in a container.
    wait(0, "no listening socket in herd's network namespace");
    assert_eq!(
        herd.status().unwrap()["unseen_listeners"],
        serde_json::json!([format!("{VIP}:8080")])
    );
    let (_, metrics) = get(topology.node(), "/metrics");
    assert!(
        metrics.contains("herd_vip_ports_without_listener 1\n"),
        "{metrics}"
    );

    let mark = herd.logged();
    let drained = operate(&state, &["drain"]);
    assert!(drained.status.success(), "{drained:?}");
    wait(mark, "node stopped");
    let stopped = herd.status().unwrap();
    assert_eq!(stopped["state"], "stopped");
    assert_eq!(stopped["membership"]["state"], "withdrawn");
    assert_eq!(stopped["membership"]["nodes"][0]["buckets"], 0);
    assert!(stopped["reason"].as_str().unwrap().contains("drained"));
    assert_eq!(
        app_log(&dir),
        ["start start"],
        "a drain stops no application"
    );
    let (healthz, body) = get(topology.node(), "/healthz");
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
    assert_eq!(herd.status().unwrap()["restarts"]["total"], 1);

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

    topology.signal_herd(Signal::SIGTERM);
    let exit = topology.wait_herd();
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
