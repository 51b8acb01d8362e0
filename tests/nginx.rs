//! A real web server behind herd, end to end: three node namespaces behind a learning bridge,
//! each running `herd run` and Debian's nginx, which herd starts and stops with its `[scripts]`
//! and watches with an `http` check (`action = "restart"`); a client namespace sends a steady
//! load of HTTP requests with curl from a dozen source addresses, each request on a new
//! connection, and every request's outcome is recorded.
//!
//! While the farm is healthy every request succeeds, each answered by the node `herd whois`
//! names. Then nginx is killed on one node from outside herd (SIGKILL of its process group, a
//! crash): its check fails, the node withdraws, its clients are answered by the survivors, herd
//! runs the stop and start scripts, and the node rejoins and answers its clients again. The
//! requests that failed over the whole sequence are counted and printed, with the times of each
//! step; the only failures allowed are requests from the node's own clients that were in flight
//! at the kill or sent between the kill and the node's withdrawal.
//!
//! The node must be up again within 5 s of the crash: nothing holds its drain, since the
//! crashed nginx's connections are gone.
//!
//! Runs in both dataplane modes and both families (modules `xdp` and `afxdp` in IPv4,
//! `xdp_v6` and `afxdp_v6`), one after the other. Needs root
//! (namespaces, XDP), nginx (`scripts/deps` installs it) and curl 7.84 or later; `scripts/test`
//! runs it as root, as CI does.

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use herd_config::{Affinity, DataplaneMode, Protocol};
use herd_testbed::address::Family;
use herd_testbed::config::{FarmToml, KEY};
use herd_testbed::{FarmBed, FarmPlan, Herd, HerdRun, HubKind, Netns, Offload, Uplink};
use serde_json::Value;

/// The nodes' names; node `i`'s own address is the plan's [`Family::node`]`(i)`.
const NODES: [&str; 3] = ["alpha", "bravo", "charlie"];
/// The node whose nginx is killed.
const VICTIM: usize = 1;

/// The `http` check's probe period, in milliseconds.
const INTERVAL_MS: u64 = 200;
/// The probe's time-out, in milliseconds.
const TIMEOUT_MS: u64 = 200;
/// Failed probes in a row that fail the check.
const FALL: u64 = 3;
/// Successful probes in a row that make it healthy again.
const RISE: u64 = 2;

/// Client source addresses per node: the load comes from this many clients that each node
/// owns (`client-ip` affinity: all of a client's connections reach one node).
const CLIENTS_PER_NODE: usize = 4;
/// Requests a second from each client.
const RATE: u32 = 20;
/// The most requests a client sends, which bounds the load in time too (`RATE` a second):
/// the test stops it long before.
const REQUESTS_PER_CLIENT: u32 = RATE * 180;
/// How long one request may take. Longer than a SYN's first retransmission (1 s), so that a
/// connection whose SYN was dropped while its bucket changed hands is not counted as failed.
const REQUEST_TIME: Duration = Duration::from_secs(3);
/// Successes each client must have in a phase (healthy, rejoined) before the test goes on.
const PER_PHASE: usize = 10;

/// How long the farm may take to start: herd, the start scripts, the checks, the agreement.
const SETTLE: Duration = Duration::from_secs(20);
/// How long the test waits for each step from the kill to the rejoin, so that the times of the
/// steps are printed even when they are too slow: a drain alone may last the default `drain_s`,
/// 30 s.
const REJOIN: Duration = Duration::from_secs(60);
/// How long the node may take from the kill until it is up again: detection, a drain of the
/// connections the crashed nginx still has (none), the scripts, the checks rising, the
/// agreement (issue 15; 30.8 s when the drain waited for a table of SYNs).
const UP_AGAIN: Duration = Duration::from_secs(5);
/// Slack on top of the check's own detection time (`FALL` probes, the last one taking up to
/// `TIMEOUT_MS`), for scheduling.
const DETECTION_SLACK: Duration = Duration::from_millis(300);
/// How long after the node logs that it withdraws it may still refuse connections: it
/// installs the table that releases its buckets right after.
const RELEASE_SLACK: Duration = Duration::from_millis(200);

/// How late the end of a request may be read (the reader thread waits for a core): its start,
/// computed from its end and its duration, is as late.
const LATE_READ: Duration = Duration::from_millis(250);

/// The two modes' tests share the machine's cores with the load: run one at a time, so that
/// neither slows the other's probes.
static SERIAL: Mutex<()> = Mutex::new(());

/// How many source addresses the client has to pick its clients from.
const SOURCES: u8 = 250;

/// Node `node`'s nginx directory: its configuration, prefix, pid file, logs and temp files.
fn nginx_dir(dir: &Path, node: usize) -> PathBuf {
    dir.join(NODES[node])
}

/// nginx's configuration for node `node`: a daemon listening on the VIP and on the node's own
/// address (where its check looks), answering every request with the node's name in an
/// `X-Node` header and in the body; every file it writes under its own directory.
fn nginx_conf(family: Family, dir: &Path, node: usize) -> String {
    let (name, address) = (NODES[node], http(family.node(node)));
    let vip = http(family.vip());
    let own = nginx_dir(dir, node);
    let own = own.display();
    format!(
        r#"daemon on;
worker_processes 1;
pid {own}/nginx.pid;
error_log {own}/error.log;
events {{
    worker_connections 512;
}}
http {{
    access_log off;
    client_body_temp_path {own}/body;
    proxy_temp_path {own}/proxy;
    fastcgi_temp_path {own}/fastcgi;
    uwsgi_temp_path {own}/uwsgi;
    scgi_temp_path {own}/scgi;
    server {{
        listen {vip};
        listen {address};
        location / {{
            add_header X-Node {name};
            return 200 "{name}\n";
        }}
    }}
}}
"#
    )
}

/// Node `node`'s farm configuration: the farm is the same for every node; the check (on the
/// node's own address) is the node's own. The scripts are the same on every node, each finding
/// its nginx by `$HERD_NODE`. The stop script asks nginx to quit and waits until its master is
/// gone or a zombie, then removes the pid file if it is left: a crashed master leaves its pid
/// file, and may still be a zombie, which takes the quit signal without error, when the stop
/// script runs a moment after the crash.
fn farm_conf(mode: DataplaneMode, family: Family, dir: &Path, node: usize) -> String {
    let (name, address) = (NODES[node], http(family.node(node)));
    let root = dir.display();
    let nginx = format!("nginx -p {root}/$HERD_NODE -c {root}/$HERD_NODE/nginx.conf");
    let farm = NODES.iter().enumerate().fold(
        FarmToml::new("web", mode).vips(&[family.vip()]),
        |farm, (node, name)| farm.node(name, family.node(node)),
    );
    let checks_and_scripts = format!(
        r#"[[check]]
name = "web"
kind = "http"
url = "http://{address}/"
body = "{name}"
interval_ms = {INTERVAL_MS}
timeout_ms = {TIMEOUT_MS}
fall = {FALL}
rise = {RISE}
action = "restart"

[scripts]
start = '{nginx}'
stop = 'pid=$(cat {root}/$HERD_NODE/nginx.pid 2>/dev/null); {nginx} -s quit 2>/dev/null; while [ -n "$pid" ] && grep -qs "^State:[[:space:]]*[^Z]" /proc/$pid/status; do sleep 0.05; done; rm -f {root}/$HERD_NODE/nginx.pid'
timeout_s = 10
"#
    );
    farm.key_file(&dir.join("farm.key"))
        .rule(Protocol::Tcp, &[80], Some(Affinity::ClientIp))
        .tables(&checks_and_scripts)
        .text()
}

/// `address` and the HTTP port as a URL and nginx's `listen` write them: `[` `]` around an
/// IPv6 address.
fn http(address: IpAddr) -> String {
    SocketAddr::new(address, 80).to_string()
}

/// The nginx of every node, which herd started: killed on drop, since a killed herd cannot
/// stop them.
struct Nginxes {
    dirs: Vec<PathBuf>,
}

impl Nginxes {
    /// The master process of node `node`'s nginx, from its pid file, if it runs (and is this
    /// test's: its command line names the node's directory).
    fn master(&self, node: usize) -> Option<libc::pid_t> {
        let dir = &self.dirs[node];
        let pid: libc::pid_t = std::fs::read_to_string(dir.join("nginx.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let command = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        String::from_utf8_lossy(&command)
            .contains(dir.to_str()?)
            .then_some(pid)
    }

    /// Kills node `node`'s nginx, master and workers, with SIGKILL: a crash. nginx's daemon
    /// leads a session of its own, so its process group is its master's pid.
    fn crash(&self, node: usize) {
        let pid = self.master(node).expect("the node's nginx runs");
        // SAFETY: kill takes no pointers; the group is nginx's alone.
        let killed = unsafe { libc::kill(-pid, libc::SIGKILL) };
        assert_eq!(killed, 0, "kill -KILL -{pid}");
    }
}

impl Drop for Nginxes {
    fn drop(&mut self) {
        for node in 0..self.dirs.len() {
            if let Some(pid) = self.master(node) {
                // SAFETY: as in `crash`.
                unsafe { libc::kill(-pid, libc::SIGKILL) };
            }
        }
    }
}

/// The test bed. Fields are dropped in this order: the herds are killed (so that none starts
/// nginx again), then the nginxes, then the farm's bed (the namespaces with the interfaces and
/// programs, the BPF file system and the scratch directory).
struct Bed {
    herds: Vec<Herd>,
    nginx: Nginxes,
    farm: FarmBed,
    /// The clients of the load, each with the node that owns it when all are up and when
    /// [`VICTIM`] is down.
    clients: Vec<Client>,
    /// Each node's share of the buckets, all up.
    shares: [usize; 3],
    /// Each node's share of the buckets with [`VICTIM`] down.
    shares_without_victim: [usize; 3],
}

/// A source address of the load and its owners.
#[derive(Clone, Copy, Debug)]
struct Client {
    address: IpAddr,
    owner: usize,
    owner_without_victim: usize,
}

impl Bed {
    /// Builds the farm in `mode` and `family` and waits until every node is up, owning its
    /// share.
    fn start(mode: DataplaneMode, family: Family) -> Self {
        let farm = FarmBed::create(&FarmPlan {
            prefix: format!("herd-web-{mode}-{family}-{}", std::process::id()),
            nodes: &NODES,
            hub: HubKind::Learning,
            uplink: Uplink::Veth,
            sources: SOURCES,
            client_offload: Offload::Default,
        })
        .expect("builds the farm's bed");
        let dir = farm.bed().scratch().to_owned();
        farm.bed().write_private("farm.key", KEY).unwrap();
        let configs: Vec<PathBuf> = (0..NODES.len())
            .map(|node| {
                let own = nginx_dir(&dir, node);
                std::fs::create_dir_all(&own).unwrap();
                std::fs::write(own.join("nginx.conf"), nginx_conf(family, &dir, node)).unwrap();
                let text = farm_conf(mode, family, &dir, node);
                farm.bed()
                    .write_private(&format!("{}.toml", NODES[node]), &text)
                    .unwrap()
            })
            .collect();
        let clients = pick_clients(family, &configs[0]);
        let shares = table_shares(&configs[0], None);
        let shares_without_victim = table_shares(&configs[0], Some(NODES[VICTIM]));

        let nginx = Nginxes {
            dirs: (0..NODES.len()).map(|node| nginx_dir(&dir, node)).collect(),
        };
        let herds = (0..NODES.len())
            .map(|node| {
                let run = HerdRun::echoed(Path::new(env!("CARGO_BIN_EXE_herd")), &configs[node]);
                farm.start_herd(node, &run).expect("herd runs")
            })
            .collect();
        let bed = Bed {
            herds,
            nginx,
            farm,
            clients,
            shares,
            shares_without_victim,
        };
        bed.settle(&[0; 3], SETTLE);
        for node in 0..NODES.len() {
            bed.assert_up(node, 0);
        }
        bed
    }

    /// Waits up to `timeout` until every node has installed, since `marks`, the table that gives
    /// it its whole share of the farm with every node up: each bucket is then wholly its owner's.
    fn settle(&self, marks: &[usize], timeout: Duration) {
        for (node, herd) in self.herds.iter().enumerate() {
            let whole = format!("all_tcp={0} non_tcp={0}", self.shares[node]);
            assert!(
                herd.wait_for(marks[node], |line| line.contains(&whole), timeout)
                    .is_some(),
                "{} takes its share of {} buckets within {timeout:?}",
                NODES[node],
                self.shares[node]
            );
        }
    }

    /// How many lines each herd has logged so far.
    fn marks(&self) -> Vec<usize> {
        self.herds.iter().map(Herd::logged).collect()
    }

    /// Asserts, from `herd status --json`, that node `node` is up, owns its share, has a
    /// healthy check and has restarted its application `restarts` times.
    fn assert_up(&self, node: usize, restarts: u64) {
        let name = NODES[node];
        let status = self.herds[node].status().unwrap();
        assert_eq!(status["state"], "up", "{name}: {status:#}");
        assert_eq!(status["membership"]["state"], "up", "{name}: {status:#}");
        assert_eq!(owned(&status), self.shares[node], "{name}'s buckets");
        assert_eq!(status["checks"][0]["health"], "healthy", "{name}'s check");
        assert_eq!(
            status["restarts"]["total"], restarts,
            "{name}'s restarts: {:#}",
            status["restarts"]
        );
    }
}

/// The buckets a node's status says it owns.
fn owned(status: &Value) -> usize {
    let nodes = status["membership"]["nodes"].as_array().expect("nodes");
    let local = nodes
        .iter()
        .find(|n| n["local"] == true)
        .expect("this node");
    local["buckets"].as_u64().expect("a count") as usize
}

/// Each node's share of the buckets of the farm in `config`, with node `down` down.
fn table_shares(config: &Path, down: Option<&str>) -> [usize; 3] {
    let mut command = Command::new(env!("CARGO_BIN_EXE_herd"));
    command.args(["table", "--json", "-c"]).arg(config);
    if let Some(down) = down {
        command.args(["--down", down]);
    }
    let output = command.output().expect("runs herd table");
    assert!(output.status.success(), "herd table");
    let table: Value = serde_json::from_slice(&output.stdout).unwrap();
    std::array::from_fn(|node| {
        assert_eq!(table["nodes"][node]["name"], NODES[node]);
        table["nodes"][node]["buckets"].as_u64().unwrap() as usize
    })
}

/// The node that `herd whois` names for HTTP from `client`, with node `down` down.
fn whois(config: &Path, client: IpAddr, down: Option<&str>) -> usize {
    let mut command = Command::new(env!("CARGO_BIN_EXE_herd"));
    command
        .args(["whois", &client.to_string(), "--port", "80", "--json", "-c"])
        .arg(config);
    if let Some(down) = down {
        command.args(["--down", down]);
    }
    let output = command.output().expect("runs herd whois");
    assert!(output.status.success(), "herd whois {client}");
    let answer: Value = serde_json::from_slice(&output.stdout).unwrap();
    NODES
        .iter()
        .position(|name| answer["owner"] == *name)
        .expect("a node of the farm")
}

/// The first [`CLIENTS_PER_NODE`] source addresses each node owns, as `herd whois` says.
fn pick_clients(family: Family, config: &Path) -> Vec<Client> {
    let mut clients = Vec::new();
    let mut per_node = [0; 3];
    for i in 1..=SOURCES {
        if per_node.iter().all(|&n| n == CLIENTS_PER_NODE) {
            break;
        }
        let address = family.source(i);
        let owner = whois(config, address, None);
        if per_node[owner] < CLIENTS_PER_NODE {
            per_node[owner] += 1;
            clients.push(Client {
                address,
                owner,
                owner_without_victim: whois(config, address, Some(NODES[VICTIM])),
            });
        }
    }
    assert_eq!(per_node, [CLIENTS_PER_NODE; 3], "enough clients per node");
    clients
}

/// One request of the load, as curl reported it.
#[derive(Clone, Debug)]
struct Request {
    /// The client's index in [`Bed::clients`].
    client: usize,
    started: Instant,
    ended: Instant,
    /// The node that answered, or why the request failed.
    outcome: Result<usize, String>,
}

/// What the load's readers record, and a signal for each new record.
#[derive(Default)]
struct Records {
    requests: Mutex<Vec<Request>>,
    grew: Condvar,
}

/// The load: one curl per client in the client namespace, each sending [`RATE`] requests a
/// second to the VIP, each on a new connection, and reporting each request's outcome on its
/// standard error, which a thread reads and records (`--rate` and `%header{}` need curl 7.84 or
/// later). The curls are killed on drop.
struct Load {
    curls: Vec<Child>,
    readers: Vec<JoinHandle<()>>,
    records: Arc<Records>,
}

impl Load {
    /// Starts the load from `clients` in namespace `client`.
    fn start(client: &Netns, vip: IpAddr, clients: &[Client]) -> Self {
        let vip = http(vip);
        let records = Arc::new(Records::default());
        let mut curls = Vec::new();
        let mut readers = Vec::new();
        for (index, c) in clients.iter().enumerate() {
            let address = c.address.to_string();
            let vip = vip.clone();
            // A process started from a thread in the namespace is in the namespace.
            let mut curl = client
                .run(move || {
                    Command::new("curl")
                        .args(["--silent", "--output", "/dev/null", "--interface"])
                        .arg(address)
                        .args(["--rate", &format!("{RATE}/s")])
                        .args(["--max-time", &REQUEST_TIME.as_secs().to_string()])
                        // Every request on a connection of its own, as from a new client.
                        .args(["--header", "Connection: close"])
                        // Standard error is not buffered: each line comes as its request ends.
                        .args([
                            "--write-out",
                            "%{stderr}%{time_total}\t%{http_code}\t%{exitcode}\t%header{x-node}\t%{errormsg}\n",
                        ])
                        .arg(format!("http://{vip}/[1-{REQUESTS_PER_CLIENT}]"))
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(Stdio::piped())
                        .spawn()
                })
                .expect("enters the client's namespace")
                .expect("runs curl");
            let stderr = curl.stderr.take().unwrap();
            curls.push(curl);
            let records = Arc::clone(&records);
            readers.push(std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    let ended = Instant::now();
                    let request = parse(index, &line, ended);
                    records.requests.lock().unwrap().push(request);
                    records.grew.notify_all();
                }
            }));
        }
        Load {
            curls,
            readers,
            records,
        }
    }

    /// Every request that has ended so far.
    fn requests(&self) -> Vec<Request> {
        self.records.requests.lock().unwrap().clone()
    }

    /// Waits up to `timeout` until the requests so far satisfy `done`.
    fn wait_until(&self, what: &str, done: impl Fn(&[Request]) -> bool, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut requests = self.records.requests.lock().unwrap();
        while !done(&requests) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "{what} within {timeout:?}");
            requests = self.records.grew.wait_timeout(requests, left).unwrap().0;
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        for curl in &mut self.curls {
            let _ = curl.kill();
            let _ = curl.wait();
        }
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
    }
}

/// A line of curl's `--write-out` (time, status, exit code, `X-Node`, error) for client
/// `client`'s request that ended at `ended`.
fn parse(client: usize, line: &str, ended: Instant) -> Request {
    let fields: Vec<&str> = line.splitn(5, '\t').collect();
    let [took, status, exit, node, error] = fields[..] else {
        panic!("curl wrote {line:?}");
    };
    let took = Duration::from_secs_f64(took.parse().expect("a time in seconds"));
    let node = NODES.iter().position(|name| *name == node);
    let outcome = match (status, exit, node) {
        ("200", "0", Some(node)) => Ok(node),
        _ => Err(format!("status {status}, curl exit {exit}: {error}")),
    };
    Request {
        client,
        started: ended - took,
        ended,
        outcome,
    }
}

/// Waits for `herd`'s first line from the `from`th on that holds `needle`, and returns its
/// index and when it was seen: the log is read as it is written, so a line is seen within a
/// moment of being logged if the test waits for it then.
fn seen(
    herd: &Herd,
    node: usize,
    from: usize,
    needle: &str,
    timeout: Duration,
) -> (usize, Instant) {
    let index = herd
        .wait_for(from, |line| line.contains(needle), timeout)
        .unwrap_or_else(|| panic!("{} logs {needle:?} within {timeout:?}", NODES[node]))
        .index;
    (index, Instant::now())
}

/// How many requests of each client succeeded, answered by `node(client)`, since `since`.
fn answered_since(
    requests: &[Request],
    clients: &[Client],
    since: Instant,
    node: impl Fn(&Client) -> usize,
) -> Vec<usize> {
    let mut counts = vec![0; clients.len()];
    for request in requests.iter().filter(|r| r.started >= since) {
        if request.outcome == Ok(node(&clients[request.client])) {
            counts[request.client] += 1;
        }
    }
    counts
}

/// nginx crashes on one node while curl loads the farm: herd's check withdraws the node, the
/// survivors take its clients, herd restarts nginx with the scripts and the node rejoins; the
/// only requests that fail are the node's own, in flight at the crash or sent before it
/// withdrew.
fn a_crashed_nginx_is_withdrawn_restarted_and_rejoins(mode: DataplaneMode, family: Family) {
    let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let began = Instant::now();
    let bed = Bed::start(mode, family);
    let clients = bed.clients.clone();
    let victim = &bed.herds[VICTIM];

    let load = Load::start(&bed.farm.client.netns, family.vip(), &clients);
    let loaded = Instant::now();
    // The healthy farm: every client answered by its owner, again and again.
    load.wait_until(
        "every client answered by its owner while the farm is healthy",
        |requests| {
            answered_since(requests, &clients, loaded, |c| c.owner)
                .iter()
                .all(|&n| n >= PER_PHASE)
        },
        SETTLE,
    );

    let marks = bed.marks();
    bed.nginx.crash(VICTIM);
    let killed = Instant::now();

    // The victim's lifecycle, step by step, each seen as it is logged.
    let (at, check_failed) = seen(victim, VICTIM, marks[VICTIM], "check failed", REJOIN);
    let (at, withdrawing) = seen(victim, VICTIM, at, "node withdrawing", REJOIN);
    let mut moved = withdrawing;
    for node in [0, 2] {
        let takes = format!("new_connections={} ", bed.shares_without_victim[node]);
        moved = moved.max(seen(&bed.herds[node], node, marks[node], &takes, REJOIN).1);
    }
    // Out of the farm, the node owns nothing, and its status says why.
    let out = victim.status().unwrap();
    assert_eq!(owned(&out), 0, "the withdrawn node's buckets: {out:#}");
    assert_ne!(out["state"], "up", "the withdrawn node's state");
    assert!(
        out["reason"]
            .as_str()
            .is_some_and(|r| r.contains("check web failed")),
        "the withdrawn node says why: {}",
        out["reason"]
    );
    let (at, left) = seen(victim, VICTIM, at, "left the farm", REJOIN);
    let (at, stop_script) = seen(victim, VICTIM, at, "running the stop script", REJOIN);
    let (at, _) = seen(victim, VICTIM, at, "the stop script ended", REJOIN);
    let (at, start_script) = seen(victim, VICTIM, at, "running the start script", REJOIN);
    let (at, _) = seen(victim, VICTIM, at, "the start script ended", REJOIN);
    let (at, healthy) = seen(victim, VICTIM, at, "check healthy", REJOIN);
    let (_, up) = seen(victim, VICTIM, at, "node up", REJOIN);
    let rejoin_marks = bed.marks();
    bed.settle(&rejoin_marks, REJOIN);
    let settled = Instant::now();
    for node in 0..NODES.len() {
        bed.assert_up(node, u64::from(node == VICTIM));
    }
    assert!(
        !victim.has_logged(marks[VICTIM], |line| line.contains("script failed")),
        "the scripts succeed"
    );

    // The rejoined node answers its clients again.
    load.wait_until(
        "the restarted node answers its clients again",
        |requests| {
            answered_since(requests, &clients, settled, |c| c.owner)
                .iter()
                .all(|&n| n >= PER_PHASE)
        },
        SETTLE,
    );
    let requests = load.requests();
    drop(load);

    // Requests that may fail: the node's own clients', in flight at the kill or sent until it
    // withdrew.
    let allowed = |request: &Request| {
        clients[request.client].owner == VICTIM
            && request.ended >= killed
            && request.started <= withdrawing + RELEASE_SLACK + LATE_READ
    };
    let failed: Vec<&Request> = requests.iter().filter(|r| r.outcome.is_err()).collect();
    let unexpected: Vec<&Request> = failed.iter().copied().filter(|r| !allowed(r)).collect();
    let in_flight = failed.iter().filter(|r| r.started < killed).count();
    let after = |at: Instant| at.saturating_duration_since(killed);
    let detection = Duration::from_millis(FALL * INTERVAL_MS + TIMEOUT_MS) + DETECTION_SLACK;
    eprintln!(
        "nginx behind herd, {mode} mode, {family}: {} requests from {} clients in {:?}; {} failed: \
         {in_flight} in flight on {} at the kill, {} sent to it before it withdrew, {} others\n  \
         after the kill: check failed {:?}, node withdrawing {:?} (at most {detection:?}), \
         survivors take its new connections {:?}, drain over {:?}, stop script {:?}, \
         start script {:?}, check healthy {:?}, node up {:?}, farm settled {:?}; \
         the whole test {:?}",
        requests.len(),
        clients.len(),
        requests.last().map_or(Duration::ZERO, |r| r.ended - loaded),
        failed.len(),
        NODES[VICTIM],
        failed.len() - in_flight - unexpected.len(),
        unexpected.len(),
        after(check_failed),
        after(withdrawing),
        after(moved),
        after(left),
        after(stop_script),
        after(start_script),
        after(healthy),
        after(up),
        after(settled),
        began.elapsed(),
    );
    for request in &unexpected {
        eprintln!(
            "  unexpected failure: {} (a client of {}), sent {:?} after the kill: {}",
            clients[request.client].address,
            NODES[clients[request.client].owner],
            request.started.checked_duration_since(killed),
            request.outcome.as_ref().unwrap_err()
        );
    }

    assert!(
        withdrawing - killed <= detection,
        "the node withdraws within {FALL} probes {INTERVAL_MS} ms apart: {:?}",
        withdrawing - killed
    );
    assert!(
        up - killed < UP_AGAIN,
        "the node is withdrawn, restarted and up again within {UP_AGAIN:?} of the crash, not {:?}",
        up - killed
    );
    assert!(
        unexpected.is_empty(),
        "{} requests failed besides those sent to the crashed node before it withdrew",
        unexpected.len()
    );
    for request in &requests {
        let Ok(node) = request.outcome else { continue };
        let client = clients[request.client];
        let sent = request.started.checked_duration_since(killed);
        if request.started < killed || request.started > settled + LATE_READ {
            assert_eq!(
                node, client.owner,
                "a request from {} sent {sent:?} after the kill, the farm settled",
                client.address
            );
        } else {
            // While the node is out its clients move to the survivors, whose own clients may
            // move between them too (the shares must come out exact); while it rejoins, a
            // client is with it or still with a survivor.
            assert!(
                [client.owner, client.owner_without_victim].contains(&node),
                "a request from {} sent {sent:?} after the kill was answered by {}",
                client.address,
                NODES[node]
            );
            // From the kill until its nginx is started again, the node answers nobody.
            assert!(
                node != VICTIM
                    || request.started <= killed + LATE_READ
                    || request.started >= start_script,
                "{} answered a request from {} sent {sent:?} after the kill",
                NODES[VICTIM],
                client.address
            );
        }
    }
    let moved_answers =
        answered_since(&requests, &clients, withdrawing, |c| c.owner_without_victim);
    for (client, answers) in clients.iter().zip(moved_answers) {
        if client.owner == VICTIM {
            assert!(
                answers > 0,
                "{}, a client of {}, is answered by {} while it is out",
                client.address,
                NODES[VICTIM],
                NODES[client.owner_without_victim]
            );
        }
    }
}

/// Generates, for each dataplane mode and family, a module with the test in it.
macro_rules! variants {
    ($($module:ident: $mode:expr, $family:expr;)*) => {$(
        mod $module {
            use super::*;

            #[test]
            fn a_crashed_nginx_is_withdrawn_restarted_and_rejoins() {
                super::a_crashed_nginx_is_withdrawn_restarted_and_rejoins($mode, $family);
            }
        }
    )*};
}

variants! {
    xdp: DataplaneMode::Xdp, Family::V4;
    afxdp: DataplaneMode::Afxdp, Family::V4;
    xdp_v6: DataplaneMode::Xdp, Family::V6;
    afxdp_v6: DataplaneMode::Afxdp, Family::V6;
}
