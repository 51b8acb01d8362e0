//! The farm commands end to end on a three-node farm (`herd run` in three node namespaces
//! joined by a learning bridge, a client namespace with many source addresses, a UDP echo
//! server on every node answering with the node's name): `herd restart --all` from one node
//! restarts every node in turn while clients keep asking, never two nodes out at once and no
//! request of the other nodes' clients lost, then the same under a SYN flood from spoofed
//! sources to a TCP service of the VIP; `herd drain NODE` from another node drains it;
//! `herd status --farm` shows every node and marks one whose herd was killed, and a rolling
//! restart then refuses to take any node out.
//!
//! The modules `xdp_v4` and `xdp_v6` run each test in each family. Needs root (namespaces,
//! XDP); `scripts/test` runs it as root, as CI does.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use herd_config::{Affinity, DataplaneMode, MacMode, Protocol};
use herd_packet::neighbor::virtual_mac;
use herd_testbed::address::Family;
use herd_testbed::config::{FarmToml, KEY};
use herd_testbed::flood::{self, SynFlood};
use herd_testbed::owner::Owners;
use herd_testbed::responder::{Kind, On, Responders, Service, Settings};
use herd_testbed::{client, FarmBed, FarmPlan, Herd, HerdRun, HubKind, Offload, Uplink};
use serde_json::Value;

/// The UDP echo service on the VIP, balanced per client address and port.
const UDP_PORT: u16 = 7;
/// The TCP service on the VIP that the SYN flood aims at: every node listens, so each SYN
/// costs its owner a SYN-ACK (a cookie once the queue is full), as a real flood would.
const FLOOD_PORT: u16 = 80;
/// SYNs a second: a modest flood, leaving most of the machine's two cores to the farm.
const FLOOD_RATE: u64 = 50_000;
/// The SYNs the flood sends before the roll starts: half a second of it.
const FLOOD_BEFORE: u64 = FLOOD_RATE / 2;
/// The SYNs the flood must have sent by the roll's end for the test to prove anything: a
/// second of it, where a roll takes two or more.
const FLOOD_SYNS: u64 = FLOOD_RATE;
/// How long a flood lasts at most: longer than a roll may take, so that a flood that lasted
/// this long was not stopped after the roll but ran out before it ended.
const FLOOD_TIME: Duration = Duration::from_secs(ROLL.as_secs() + SETTLE.as_secs());
/// How long the flood may take to send its SYNs before the roll.
const FLOOD_WAIT: Duration = Duration::from_secs(30);
/// The nodes, in configuration order.
const NODES: [&str; 3] = ["alpha", "bravo", "charlie"];
/// How many more addresses the client has: one flow from each per round.
const SOURCES: u8 = 64;
/// How long the farm may take to have every node serving.
const SETTLE: Duration = Duration::from_secs(30);
/// How long a whole rolling restart may take here: three nodes, each out for a drain of no
/// connection and a join.
const ROLL: Duration = Duration::from_secs(180);
/// What a node logs when it leaves the farm, and when it owns its share again.
const LEFT: &str = "leaving the farm: releasing every bucket";
const BACK: &str = "this node owns its share of the farm now";
/// How long a round's requests wait for their answers.
const ROUND_WAIT: Duration = Duration::from_millis(500);
/// How long after a node owns its share again a loss of its own clients is still its doing:
/// the other nodes hand its buckets back at the same view, each on its own time.
const HANDOVER: Duration = Duration::from_millis(300);

/// The farm: servers, herds, then the bed, dropped in that order.
struct Farm {
    /// The UDP echo servers, kept until the farm goes.
    _servers: Responders,
    herds: Vec<Option<Herd>>,
    bed: FarmBed,
    /// Each node's control directory.
    control: Vec<PathBuf>,
    /// The owners when every node is up.
    owners: Owners,
}

impl Farm {
    /// Builds the farm for test `tag` and waits until every node serves.
    fn start(tag: &str, family: Family) -> Self {
        let mode = DataplaneMode::Xdp;
        let bed = FarmBed::create(&FarmPlan {
            prefix: format!("herd-{tag}-{family}-{}", std::process::id()),
            nodes: &NODES,
            hub: HubKind::Learning,
            uplink: Uplink::Veth,
            sources: SOURCES,
            client_offload: Offload::Default,
        })
        .expect("builds the farm's bed");
        let key = bed.bed().write_private("farm.key", KEY).unwrap();
        let toml = NODES.iter().enumerate().fold(
            FarmToml::new("roll", mode).vips(&[family.vip()]),
            |farm, (node, name)| farm.node(name, family.node(node)),
        );
        let toml = toml
            .key_file(&key)
            .rule(Protocol::Udp, &[UDP_PORT], Some(Affinity::ClientIpPort))
            .rule(Protocol::Tcp, &[FLOOD_PORT], Some(Affinity::ClientIpPort));
        let config = bed.bed().write_private("farm.toml", &toml.text()).unwrap();
        // The nodes answer the flood's spoofed sources through the client, which drops it.
        flood::sink_replies(&bed.nodes, &bed.client, family).unwrap();
        let owners = Owners::load(&config, &[true; NODES.len()]).unwrap();
        let run = HerdRun::echoed(Path::new(env!("CARGO_BIN_EXE_herd")), &config);
        let herds = (0..NODES.len())
            .map(|node| Some(bed.start_herd(node, &run).expect("herd runs")))
            .collect();
        let control = (0..NODES.len())
            .map(|node| bed.state_dir(node).unwrap())
            .collect();
        let settings = Settings {
            vip: family.vip(),
            line_wait: Duration::from_secs(2),
            record: false,
        };
        let services = [
            Service {
                kind: Kind::Udp,
                on: On::Vip,
                port: UDP_PORT,
            },
            Service {
                kind: Kind::TcpAccept,
                on: On::Vip,
                port: FLOOD_PORT,
            },
        ];
        let servers = Responders::start(&bed.nodes, &services, &settings).expect("servers listen");
        let farm = Farm {
            _servers: servers,
            herds,
            bed,
            control,
            owners,
        };
        farm.wait_until("every node serves", SETTLE, |farm| {
            (0..NODES.len()).all(|node| farm.serving(node) == Some(true))
        });
        farm
    }

    /// Runs `herd ARGS` through node `node`'s daemon, in the node's namespace.
    fn herd(&self, node: usize, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", self.bed.nodes[node].netns.name()])
            .arg(env!("CARGO_BIN_EXE_herd"))
            .args(args)
            .arg("--control-dir")
            .arg(&self.control[node])
            .output()
            .expect("herd runs")
    }

    /// A flood of spoofed SYNs from the client to the VIP's TCP service, paced and bounded.
    fn flood(&self, family: Family) -> SynFlood {
        let client = &self.bed.client;
        SynFlood {
            netns: client.netns.clone(),
            interface: client.interface.clone(),
            from_mac: client.mac().unwrap(),
            to_mac: virtual_mac(family.vip(), MacMode::Unicast),
            to: SocketAddr::new(family.vip(), FLOOD_PORT),
            count: FLOOD_RATE * FLOOD_TIME.as_secs(),
            within: FLOOD_TIME,
            rate: Some(FLOOD_RATE),
        }
    }

    /// Node `node`'s own status, or `None` when its herd does not answer.
    fn status(&self, node: usize) -> Option<Value> {
        let output = Command::new(env!("CARGO_BIN_EXE_herd"))
            .args(["status", "--json", "--control-dir"])
            .arg(&self.control[node])
            .output()
            .expect("herd runs");
        output
            .status
            .success()
            .then(|| serde_json::from_slice(&output.stdout).expect("JSON"))
    }

    /// Whether node `node` serves its share, as `Status::serving` says; `None` when its herd
    /// does not answer.
    fn serving(&self, node: usize) -> Option<bool> {
        self.status(node).map(|status| serving(&status))
    }

    /// Waits up to `limit` until `done` holds, or fails saying `what`.
    fn wait_until(&self, what: &str, limit: Duration, done: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + limit;
        while !done(self) {
            assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Whether a node's `herd status --json` says it serves: up, a member with quorum, owning
/// buckets.
fn serving(status: &Value) -> bool {
    let owned = status["membership"]["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|node| node["local"] == true)
        .and_then(|node| node["buckets"].as_u64())
        .unwrap_or(0);
    status["state"] == "up"
        && status["membership"]["state"] == "up"
        && status["membership"]["quorum"] == true
        && owned > 0
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// When each node was seen out, from polling every node while something runs.
#[derive(Default)]
struct Watch {
    /// Each poll: when, and which nodes were out.
    polls: Mutex<Vec<(Instant, Vec<usize>)>>,
}

impl Watch {
    /// Polls every node until `stop`, recording which are out.
    fn run(&self, farm: &Farm, stop: &AtomicBool) {
        while !stop.load(Ordering::Acquire) {
            // Last node first, against the roll's order: a poll that saw a node out and then
            // one the roll took earlier out too saw both out at once, not one after the other.
            let out: Vec<usize> = (0..NODES.len())
                .rev()
                .filter(|&node| farm.serving(node) != Some(true))
                .collect();
            self.polls.lock().unwrap().push((Instant::now(), out));
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// `herd restart --all`, run from alpha's namespace, restarts alpha, bravo and charlie in
/// that order while the client sends a request from 64 flows every round: never two nodes
/// out at once (as the nodes' logs and the polls of their states tell it), every node out once
/// and back up, and every request lost is of a node's client while that node was out. With
/// `flood`, the client also floods the VIP with spoofed SYNs from before the roll to its end.
fn a_rolling_restart_loses_no_other_node_s_client(family: Family, flood: bool) {
    let farm = Farm::start(if flood { "rollflood" } else { "roll" }, family);
    let vip = SocketAddr::new(family.vip(), UDP_PORT);
    let flows: Vec<SocketAddr> = family.flows(30000..30001, SOURCES).collect();
    let owner = |flow: &SocketAddr| farm.owners.of(Protocol::Udp, UDP_PORT, *flow).unwrap();
    let marks: Vec<usize> = farm.herds.iter().flatten().map(Herd::logged).collect();
    let watch = Watch::default();
    let stop = AtomicBool::new(false);
    let mut rounds = Vec::new();
    let flooding = flood.then(|| {
        let flooding = farm.flood(family).start().unwrap();
        assert!(
            flooding.wait_sent(FLOOD_BEFORE, FLOOD_WAIT),
            "the flood sends {FLOOD_BEFORE} SYNs within {FLOOD_WAIT:?}"
        );
        flooding
    });
    let roll = std::thread::scope(|scope| {
        let watching = scope.spawn(|| watch.run(&farm, &stop));
        let rolling = scope.spawn(|| {
            let started = Instant::now();
            let output = farm.herd(0, &["restart", "--all"]);
            stop.store(true, Ordering::Release);
            (output, started.elapsed())
        });
        let deadline = Instant::now() + ROLL;
        while !stop.load(Ordering::Acquire) && Instant::now() < deadline {
            let sent = Instant::now();
            let answers = client::udp_exchange(&farm.bed.client.netns, vip, &flows, ROUND_WAIT)
                .unwrap_or_else(|error| panic!("{error:#}"));
            rounds.push((sent, Instant::now(), answers));
        }
        stop.store(true, Ordering::Release);
        watching.join().unwrap();
        rolling.join().unwrap()
    });
    let (output, took) = roll;
    let flooded = flooding.map(|flooding| flooding.stop().expect("the flood runs"));
    eprintln!(
        "herd restart --all took {took:?}:\n{}",
        text(&output.stdout)
    );
    if let Some(flooded) = flooded {
        eprintln!(
            "{} SYNs flooded in {:?} ({:.0}/s)",
            flooded.sent,
            flooded.took,
            flooded.rate()
        );
        assert!(
            flooded.sent >= FLOOD_SYNS,
            "the flood sent {} SYNs, fewer than {FLOOD_SYNS}",
            flooded.sent
        );
        // Paced, it cannot send its count before its time is up: short of that time, it ran
        // until stopped, after the roll.
        assert!(
            flooded.took < FLOOD_TIME,
            "the flood ran out of time before the roll ended"
        );
    }
    assert!(
        output.status.success(),
        "herd restart --all: {}{}",
        text(&output.stdout),
        text(&output.stderr)
    );
    let said = text(&output.stdout);
    for name in NODES {
        assert!(said.contains(&format!("{name} is back up")), "{said}");
    }

    // As the nodes' logs tell it: each node out once, from its leaving to its owning its
    // share again, in configuration order, each back before the next leaves.
    let spans: Vec<(Instant, Instant)> = NODES
        .iter()
        .enumerate()
        .map(|(node, name)| {
            let herd = farm.herds[node].as_ref().unwrap();
            let left = herd.lines_since(marks[node], |line| line.contains(LEFT));
            let back = herd.lines_since(marks[node], |line| line.contains(BACK));
            assert_eq!(left.len(), 1, "{name} left once");
            assert_eq!(back.len(), 1, "{name} came back once");
            assert!(left[0].at < back[0].at, "{name} came back after it left");
            (left[0].at, back[0].at)
        })
        .collect();
    for (pair, names) in spans.windows(2).zip(NODES.windows(2)) {
        assert!(
            pair[0].1 < pair[1].0,
            "{} left before {} was back",
            names[1],
            names[0]
        );
    }
    // As the polls saw it, against the roll's order.
    let polls = watch.polls.lock().unwrap();
    assert!(polls.len() > 10, "only {} polls of the nodes", polls.len());
    for (at, out) in polls.iter() {
        assert!(out.len() <= 1, "two nodes out at once: {out:?} at {at:?}");
    }
    drop(polls);
    for (node, name) in NODES.iter().enumerate() {
        assert_eq!(farm.serving(node), Some(true), "{name} is back up");
    }

    let mut lost = [0usize; NODES.len()];
    for (sent, ended, answers) in &rounds {
        for (i, (flow, answers)) in flows.iter().zip(answers).enumerate() {
            assert!(
                answers.len() <= 1,
                "flow {flow} answered twice: {answers:?}"
            );
            if answers.is_empty() {
                let node = owner(flow);
                lost[node] += 1;
                assert!(
                    spans[node].0 <= *ended && *sent <= spans[node].1 + HANDOVER,
                    "request u{i} of flow {flow}, a client of {}, lost while {} was up",
                    NODES[node],
                    NODES[node]
                );
            }
        }
    }
    eprintln!(
        "{} rounds of {} requests; lost, by owner: {lost:?}",
        rounds.len(),
        flows.len()
    );
    assert!(
        rounds.len() >= 3,
        "only {} rounds of requests",
        rounds.len()
    );
    drop(farm);
}

/// `herd drain charlie` from bravo drains charlie, with who asked in bravo's log, and a second
/// drain is refused by charlie, saying why; an unknown node is refused naming the farm's
/// nodes; `herd status --farm` from alpha shows the three nodes, then marks charlie as not
/// answering once its herd is killed, and `herd restart --all` then restarts no node.
fn farm_commands_reach_the_node_named(family: Family) {
    let mut farm = Farm::start("farmcmd", family);
    let out = farm.herd(1, &["drain", "charlie"]);
    assert!(
        out.status.success(),
        "herd drain charlie: {}",
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).starts_with("charlie: draining"),
        "{}",
        text(&out.stdout)
    );
    // Stopped: the drain over, the application left running.
    farm.wait_until("charlie is out after the drain", SETTLE, |farm| {
        farm.status(2)
            .is_some_and(|status| status["state"] == "stopped")
    });
    let asked = farm.herds[1].as_ref().unwrap().has_logged(0, |line| {
        line.contains("asking charlie to drain, for uid 0 (pid ")
    });
    assert!(
        asked,
        "bravo logs that it asked charlie to drain, and for whom"
    );
    assert_eq!(farm.serving(0), Some(true), "alpha still serves");

    let out = farm.herd(1, &["drain", "charlie"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "herd: charlie refused to drain: the node is stopped, not up\n"
    );

    let out = farm.herd(1, &["drain", "zulu"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "herd: no node zulu in farm roll: its nodes are alpha, bravo, charlie\n"
    );

    let out = farm.herd(1, &["start", "charlie"]);
    assert!(
        out.status.success(),
        "herd start charlie: {}",
        text(&out.stderr)
    );
    farm.wait_until("charlie serves again", SETTLE, |farm| {
        farm.serving(2) == Some(true)
    });

    let out = farm.herd(0, &["status", "--farm", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = report["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|node| node["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, NODES);
    for node in report["nodes"].as_array().unwrap() {
        assert!(serving(&node["status"]), "{node:#}");
    }

    farm.herds[2].take().unwrap().kill().unwrap();
    let out = farm.herd(0, &["status", "--farm"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    eprintln!("herd status --farm with charlie's herd killed:\n{said}");
    assert!(said.contains("1 did NOT ANSWER"), "{said}");
    assert!(said.contains("charlie: NO ANSWER from "), "{said}");

    // No node is taken out while charlie is down: the roll stops before asking any.
    let marks: Vec<usize> = (0..2)
        .map(|node| farm.herds[node].as_ref().unwrap().logged())
        .collect();
    let out = farm.herd(0, &["restart", "--all"]);
    assert_eq!(out.status.code(), Some(1));
    let said = text(&out.stderr);
    assert!(
        said.starts_with("herd: not taking alpha out: charlie is not serving (no answer: "),
        "{said}"
    );
    for (node, mark) in marks.into_iter().enumerate() {
        let herd = farm.herds[node].as_ref().unwrap();
        assert!(
            !herd.has_logged(mark, |line| line
                .contains("restarting on an operator's request")),
            "{} was restarted",
            NODES[node]
        );
        assert_eq!(farm.serving(node), Some(true), "{} serves", NODES[node]);
    }
    drop(farm);
}

macro_rules! families {
    ($($module:ident: $family:expr;)*) => {$(
        mod $module {
            #[test]
            fn a_rolling_restart_loses_no_other_node_s_client() {
                super::a_rolling_restart_loses_no_other_node_s_client($family, false);
            }

            #[test]
            fn a_rolling_restart_under_a_syn_flood_loses_no_other_node_s_client() {
                super::a_rolling_restart_loses_no_other_node_s_client($family, true);
            }

            #[test]
            fn farm_commands_reach_the_node_named() {
                super::farm_commands_reach_the_node_named($family);
            }
        }
    )*};
}

families! {
    xdp_v4: herd_testbed::address::Family::V4;
    xdp_v6: herd_testbed::address::Family::V6;
}
