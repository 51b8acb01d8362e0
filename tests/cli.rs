//! End-to-end tests of the `herd` binary's configuration commands.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use herd_config::FarmConfig;
use herd_membership::assign::{assign, Member};
use herd_packet::craft::{self, Fragment};
use herd_packet::kernel::NoSockets;
use herd_packet::table::{BucketTable, ModeTable, NodeId};
use herd_packet::wire::{ethernet::ethertype, ip_proto};
use herd_packet::{classify, FarmRules, FarmTable, Flows, Verdict};
use serde_json::Value;

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/farm.toml")
}

fn herd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_herd"))
        .args(args)
        .output()
        .expect("herd runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn json(output: &Output) -> Value {
    assert!(output.status.success(), "herd failed: {}", stderr(output));
    serde_json::from_slice(&output.stdout).expect("JSON output")
}

fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("farm.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Writes a key file as an operator must: its owner's only (mode 0600), or herd refuses it.
fn write_key(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("herd-cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A key file's text: one key, id 1.
const KEY: &str = "1 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n";

/// The example farm written in `dir` as this machine can hold it: its key file in `dir`
/// holding `key`, and its interface the loopback.
fn example_here(dir: &Path, key: &str) -> PathBuf {
    let key_file = dir.join("farm.key");
    write_key(&key_file, key);
    let text = std::fs::read_to_string(example())
        .unwrap()
        .replace("/etc/herd/farm.key", key_file.to_str().unwrap())
        .replace("interface = \"eth0\"", "interface = \"lo\"");
    write_config(dir, &text)
}

#[test]
fn check_config_accepts_the_example_and_shows_the_farm() {
    let dir = temp_dir("example");
    let path = example_here(&dir, KEY);
    let out = herd(&["check-config", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for expected in [
        "alpha",
        "bravo",
        "charlie",
        "198.18.0.100",
        "2001:db8::100",
        "client-ip-port",
        "virtual MACs (unicast):",
        "02:68:c6:12:00:64",
        "announcements   at start, after each new view and every 10 s",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    let report = json(&herd(&[
        "check-config",
        "--config",
        path.to_str().unwrap(),
        "--node",
        "bravo",
        "--json",
    ]));
    assert_eq!(report["this_node"], "bravo");
    assert_eq!(report["announce_interval_s"], 10);
    let shares: u64 = report["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["buckets"].as_u64().unwrap())
        .sum();
    assert_eq!(
        shares,
        report["buckets"].as_u64().unwrap(),
        "every bucket has an owner"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn check_config_shows_the_metrics_and_console_addresses() {
    let dir = temp_dir("admin");
    let path = example_here(&dir, KEY);
    let text = stdout(&herd(&["check-config", path.to_str().unwrap()]));
    assert!(text.contains("  metrics  off\n  console  off\n"), "{text}");
    let mut config = std::fs::read_to_string(&path).unwrap();
    config.push_str(
        "[admin]\nmetrics = \"127.0.0.1:9477\"\nconsole = \"[::1]:9480\"\n\
         console_secret_file = \"/etc/herd/console.secret\"\n",
    );
    std::fs::write(&path, config).unwrap();
    let out = herd(&["check-config", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for expected in [
        "  metrics  127.0.0.1:9477: /metrics and /healthz, without a login\n",
        "  console  [::1]:9480: the farm's web console, secret in /etc/herd/console.secret\n",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    let report = json(&herd(&["check-config", path.to_str().unwrap(), "--json"]));
    assert_eq!(report["admin"]["metrics"], "127.0.0.1:9477");
    assert_eq!(report["admin"]["console"], "[::1]:9480");
    assert_eq!(
        report["admin"]["console_secret_file"],
        "/etc/herd/console.secret"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn check_config_shows_the_multicast_macs_and_their_groups() {
    let dir = temp_dir("multicast");
    let path = example_here(&dir, KEY);
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("mac = \"unicast\"", "mac = \"multicast\"");
    let path = write_config(&dir, &text);
    let report = json(&herd(&["check-config", path.to_str().unwrap(), "--json"]));
    assert_eq!(report["mac"], "multicast");
    assert_eq!(
        report["virtual_macs"],
        serde_json::json!([
            {"vip": "198.18.0.100", "mac": "01:00:5e:7f:00:64", "group": "239.255.0.100"},
            {"vip": "2001:db8::100", "mac": "33:33:ff:00:01:00", "group": "ff02::1:ff00:100"},
        ])
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// What `herd run` would refuse beyond the file is refused by check-config too: the key
/// file unreadable, empty, not hex or without its id, and this node's interface missing.
#[test]
fn check_config_refuses_a_bad_key_file_and_a_missing_interface() {
    let dir = temp_dir("host-side");
    let config = example_here(&dir, KEY);
    let config = config.to_str().unwrap();
    let key = dir.join("farm.key");
    let check = |node: &str| herd(&["check-config", config, "--node", node]);
    assert!(
        check("alpha").status.success(),
        "{}",
        stderr(&check("alpha"))
    );
    for (text, expected) in [
        ("", "no key"),
        ("1 not-hex-at-all-not-hex-at-all\n", "not hexadecimal"),
        ("000102030405060708090a0b0c0d0e0f\n", "expected `ID HEX`"),
    ] {
        write_key(&key, text);
        let out = check("alpha");
        assert_eq!(out.status.code(), Some(1), "{text:?}");
        let message = stderr(&out);
        assert!(
            message.contains("auth_key_file") && message.contains(key.to_str().unwrap()),
            "{text:?}: {message}"
        );
        assert!(message.contains(expected), "{text:?}: {message}");
    }
    std::fs::remove_file(&key).unwrap();
    let message = stderr(&check("alpha"));
    assert!(message.contains(key.to_str().unwrap()), "{message}");
    write_key(&key, KEY);
    // Readable by its group: refused, saying how to fix it.
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o640)).unwrap();
    let out = check("alpha");
    assert_eq!(out.status.code(), Some(1));
    let message = stderr(&out);
    assert!(
        message.contains("mode 0640") && message.contains(&format!("chmod 600 {}", key.display())),
        "{message}"
    );
    write_key(&key, KEY);

    let missing = std::fs::read_to_string(config)
        .unwrap()
        .replace("interface = \"lo\"", "interface = \"herd-nosuch0\"");
    let config = write_config(&dir, &missing);
    let out = herd(&["check-config", config.to_str().unwrap(), "--node", "bravo"]);
    assert_eq!(out.status.code(), Some(1));
    let message = stderr(&out);
    assert!(
        message.contains(&format!(
            "{}: node bravo's interface herd-nosuch0 does not exist on this machine",
            config.display()
        )),
        "{message}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// `herd run` without root says that it needs root, before it reads the root-only key file.
#[test]
fn run_without_root_says_it_needs_root() {
    use std::os::unix::process::CommandExt;
    let out = Command::new(env!("CARGO_BIN_EXE_herd"))
        .args(["run", "-c", "/nonexistent/farm.toml"])
        // nobody
        .uid(65534)
        .output()
        .expect("herd runs");
    assert_eq!(out.status.code(), Some(1));
    let message = stderr(&out);
    assert!(message.contains("herd run needs root"), "{message}");
}

#[test]
fn a_typo_fails_with_file_line_and_column() {
    let dir = temp_dir("typo");
    let text = std::fs::read_to_string(example())
        .unwrap()
        .replacen("buckets = ", "bucket = ", 1);
    let line = text
        .lines()
        .position(|l| l.starts_with("bucket = "))
        .unwrap()
        + 1;
    let path = write_config(&dir, &text);
    let out = herd(&["check-config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let message = stderr(&out);
    let location = format!("{}:{line}:1:", path.display());
    assert!(message.contains(&location), "no {location} in {message}");
    assert!(message.contains("did you mean `buckets`"), "{message}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn usage_errors_and_missing_files_have_their_exit_codes() {
    assert_eq!(herd(&["check-config", "--bogus"]).status.code(), Some(2));
    let out = herd(&["check-config", "/nonexistent/farm.toml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("/nonexistent/farm.toml"),
        "{}",
        stderr(&out)
    );
    let out = herd(&[
        "check-config",
        example().to_str().unwrap(),
        "--node",
        "zulu",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("zulu"));
}

#[test]
fn table_moves_only_the_buckets_of_a_node_that_is_down() {
    let path = example();
    let config = path.to_str().unwrap();
    let all = json(&herd(&["table", "--config", config, "--json"]));
    let down = json(&herd(&[
        "table", "--config", config, "--down", "bravo", "--json",
    ]));
    let bravo = &all["nodes"][1];
    assert_eq!(bravo["name"], "bravo");
    assert_eq!(down["nodes"][1]["live"], false);
    assert_eq!(down["nodes"][1]["buckets"], 0);
    assert_eq!(down["unowned"], 0);
    let moved = down["moved_from_all_up"].as_u64().unwrap();
    assert!(
        moved >= bravo["buckets"].as_u64().unwrap(),
        "at least bravo's buckets move"
    );
    let out = herd(&["table", "--config", config, "--down", "zulu"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("alpha, bravo, charlie"),
        "{}",
        stderr(&out)
    );
}

/// What the dataplane of each node decides for a UDP packet from `client` to the first VIP:
/// the index of the node that accepts it.
fn dataplane_owner(
    config: &FarmConfig,
    down: &[usize],
    client: [u8; 4],
    port: u16,
    vip_port: u16,
) -> usize {
    let members: Vec<Member> = config
        .nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| !down.contains(i))
        .map(|(i, n)| Member {
            id: i as NodeId,
            name: n.name.clone(),
            weight: n.weight,
        })
        .collect();
    let key = herd_packet::hash::HashKey::from_bytes(config.farm.hash_key);
    let owners = assign(&key, config.farm.buckets as usize, &members);
    let buckets = BucketTable::new(1, owners).unwrap();
    let rules = Arc::new(FarmRules::from_config(config));
    let IpAddr::V4(vip) = config.farm.vips[0] else {
        panic!("the example's first VIP is IPv4")
    };
    let frame = craft::ethernet(
        &[],
        ethertype::IPV4,
        &craft::ipv4(
            client,
            vip.octets(),
            ip_proto::UDP,
            Fragment::default(),
            &craft::udp(port, vip_port, b"hi"),
        ),
    );
    let accepting: Vec<usize> = (0..config.nodes.len())
        .filter(|&n| {
            let modes = ModeTable::of_owner(&buckets, n as NodeId);
            let table = FarmTable::new(Arc::clone(&rules), modes);
            classify(&frame, &table, &mut Flows::with_capacity(8), &NoSockets, 0) == Verdict::Accept
        })
        .collect();
    assert_eq!(accepting.len(), 1);
    accepting[0]
}

#[test]
fn whois_names_the_node_whose_dataplane_accepts_the_client() {
    let path = example();
    let config = FarmConfig::load(&path).unwrap();
    let udp_port = config
        .rules
        .iter()
        .find(|r| r.protocol == herd_config::Protocol::Udp)
        .unwrap()
        .ports[0]
        .first;
    for (i, down) in [vec![], vec![0usize], vec![2]].iter().enumerate() {
        for c in 0..12u8 {
            let client = [198, 19, i as u8, c * 17];
            let client_port = 10000 + u16::from(c) * 911;
            let mut args = vec![
                "whois".to_string(),
                format!(
                    "{}.{}.{}.{}:{client_port}",
                    client[0], client[1], client[2], client[3]
                ),
                "--config".into(),
                path.display().to_string(),
                "--proto".into(),
                "udp".into(),
                "--port".into(),
                udp_port.to_string(),
                "--json".into(),
            ];
            for d in down {
                args.push("--down".into());
                args.push(config.nodes[*d].name.clone());
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let answer = json(&herd(&args));
            let expected = dataplane_owner(&config, down, client, client_port, udp_port);
            assert_eq!(
                answer["owner"],
                config.nodes[expected].name.as_str(),
                "client {client:?}"
            );
        }
    }
}

#[test]
fn whois_explains_what_it_cannot_answer() {
    let path = example();
    let config = path.to_str().unwrap();
    let out = herd(&["whois", "198.19.0.1", "--config", config, "--port", "8080"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no rule balances tcp port 8080"),
        "{}",
        stderr(&out)
    );
    let out = herd(&["whois", "198.19.0.1", "--config", config, "--proto", "udp"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("give the client's port"),
        "{}",
        stderr(&out)
    );
    let out = herd(&["whois", "not-an-ip", "--config", config]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("not a client address"),
        "{}",
        stderr(&out)
    );
    let ok = herd(&["whois", "198.19.0.1", "--config", config]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert!(stdout(&ok).contains("owner: "));
}

#[test]
fn run_names_a_missing_or_bad_key_file() {
    let dir = temp_dir("key");
    let key = dir.join("farm.key");
    let text = std::fs::read_to_string(example())
        .unwrap()
        .replace("/etc/herd/farm.key", key.to_str().unwrap());
    let config = write_config(&dir, &text);
    let run = || {
        herd(&[
            "run",
            "-c",
            config.to_str().unwrap(),
            "--node",
            "alpha",
            "--state-dir",
            dir.to_str().unwrap(),
        ])
    };
    let out = run();
    assert_eq!(out.status.code(), Some(1));
    let message = stderr(&out);
    assert!(
        message.contains("auth_key_file") && message.contains(key.to_str().unwrap()),
        "{message}"
    );
    write_key(&key, "1 00112233\n");
    let out = run();
    assert_eq!(out.status.code(), Some(1));
    let message = stderr(&out);
    assert!(
        message.contains("line 1: the key has 4 bytes; it needs at least 16"),
        "{message}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// After kill -9, `herd status` tells the control sockets the killed herds left from running
/// nodes: none runs, and it says so, naming them.
#[test]
fn status_tells_sockets_left_by_killed_herds_from_running_nodes() {
    let dir = temp_dir("stale");
    // A listener dropped leaves its file behind, as a killed herd does.
    for node in ["a", "b"] {
        drop(std::os::unix::net::UnixListener::bind(dir.join(format!("{node}.sock"))).unwrap());
    }
    let out = herd(&["status", "--control-dir", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let message = stderr(&out);
    assert!(
        !message.contains("several herd nodes run here"),
        "{message}"
    );
    assert!(
        message.contains("(a, b) were left by herds that did not exit cleanly"),
        "{message}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// A daemon of node alpha on a control socket in `dir` that answers `connections` requests
/// with `answer(request)`, and returns the requests it read.
fn fake_daemon(
    dir: &Path,
    connections: usize,
    answer: fn(&Value) -> String,
) -> std::thread::JoinHandle<Vec<Value>> {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::os::unix::net::UnixListener::bind(dir.join("alpha.sock")).unwrap();
    std::thread::spawn(move || {
        let mut requests = Vec::new();
        for stream in listener.incoming().take(connections) {
            let mut stream = stream.unwrap();
            let mut line = String::new();
            BufReader::new(&stream).read_line(&mut line).unwrap();
            let request: Value = serde_json::from_str(&line).unwrap();
            stream
                .write_all(format!("{}\n", answer(&request)).as_bytes())
                .unwrap();
            requests.push(request);
        }
        requests
    })
}

/// `herd drain bravo` asks this host's daemon (picked by --node among several) to carry the
/// drain to node bravo, prints what bravo does, and says why when the daemon refuses.
#[test]
fn a_command_for_another_node_is_relayed_by_this_host_s_daemon() {
    let dir = temp_dir("relay");
    let daemon = fake_daemon(&dir, 2, |request| {
        if request["node"] == "bravo" {
            r#"{"done":"draining: the node takes no new connection"}"#.into()
        } else {
            r#"{"refused":"no node zulu in farm web: its nodes are alpha, bravo"}"#.into()
        }
    });
    let control = dir.to_str().unwrap();
    let out = herd(&[
        "drain",
        "bravo",
        "--node",
        "alpha",
        "--control-dir",
        control,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "bravo: draining: the node takes no new connection\n"
    );
    let out = herd(&["drain", "zulu", "--node", "alpha", "--control-dir", control]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "herd: no node zulu in farm web: its nodes are alpha, bravo\n"
    );
    let requests = daemon.join().unwrap();
    assert_eq!(
        requests[0],
        serde_json::json!({"command": "farm", "node": "bravo", "action": "drain"})
    );
    assert_eq!(requests[1]["node"], "zulu");
    std::fs::remove_dir_all(dir).unwrap();
}

/// `herd status --farm` shows every node the daemon gathered, a node that did not answer
/// marked with why; --json gives the report whole.
#[test]
fn status_of_the_farm_marks_a_node_that_did_not_answer() {
    let dir = temp_dir("farm-status");
    let daemon = fake_daemon(&dir, 2, |_| {
        r#"{"farm":{"gathered_by":"alpha","at_ms":1,"nodes":[{"name":"bravo",
            "address":"198.18.0.2:7946","status":null,"timeline":[],"error":"timed out"}]}}"#
            .replace('\n', "")
    });
    let control = dir.to_str().unwrap();
    let out = herd(&[
        "status",
        "--farm",
        "--control-dir",
        control,
        "--node",
        "alpha",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("1 did NOT ANSWER"), "{text}");
    assert!(
        text.contains("bravo: NO ANSWER from 198.18.0.2:7946: timed out"),
        "{text}"
    );
    let report = json(&herd(&[
        "status",
        "--farm",
        "--json",
        "--control-dir",
        control,
        "--node",
        "alpha",
    ]));
    assert_eq!(report["nodes"][0]["error"], "timed out");
    let requests = daemon.join().unwrap();
    assert!(requests
        .iter()
        .all(|request| *request == serde_json::json!({"command": "farmstatus"})));
    std::fs::remove_dir_all(dir).unwrap();
}

/// NODE and --all do not go together; without a daemon here, the farm commands say so; the
/// help tells NODE (the node to act on) from --node (which herd of this host).
#[test]
fn farm_commands_explain_their_arguments_and_errors() {
    let out = herd(&["restart", "bravo", "--all"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("cannot be used with"),
        "{}",
        stderr(&out)
    );
    for args in [
        &["restart", "--all"][..],
        &["drain", "bravo"],
        &["status", "--farm"],
    ] {
        let mut args = args.to_vec();
        args.extend(["--control-dir", "/nonexistent/herd"]);
        let out = herd(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert_eq!(
            stderr(&out),
            "herd: herd is not running (/nonexistent/herd does not exist)\n",
            "{args:?}"
        );
    }
    let help = stdout(&herd(&["drain", "--help"]));
    for said in [
        "[NODE]",
        "The node of the farm to act on",
        "--all",
        "Which herd of this host to talk to",
        "over the farm's authenticated channel",
    ] {
        assert!(help.contains(said), "{said:?} not in {help}");
    }
}
