//! `herd demo` end to end: a short demo in each dataplane mode, its JSON summary checked (every
//! node answered, the failover measured and quick, the killed node back and answering, no
//! request answered twice), and nothing of the run left behind. Also its options' bounds.
//!
//! The demos need root (namespaces, XDP); `scripts/test` runs them as root, as CI does.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use herd_testbed::command;
use serde_json::Value;

/// How long a 10 s demo may take in all: starting the nodes, the traffic, the cleanup.
const DEMO_BOUND: Duration = Duration::from_secs(120);
/// The slowest failover accepted; the default membership settings give under 200 ms.
const FAILOVER_BOUND_MS: f64 = 3000.0;

/// Runs `herd demo --duration 10 --json --mode <mode>` and checks its summary and its
/// cleanup.
fn demo_fails_over_and_cleans_up(mode: &str) {
    herd_testbed::require_root("the demo's test").unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_herd"))
        .args(["demo", "--duration", "10", "--json", "--mode", mode])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts herd demo");
    let pid = child.id();
    let output = wait_bounded(child, DEMO_BOUND);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("{stderr}");
    assert!(
        output.status.success(),
        "herd demo --mode {mode} failed ({}): {stderr}",
        output.status
    );
    let summary: Value = serde_json::from_slice(&output.stdout).expect("a JSON summary");

    assert_eq!(summary["mode"], mode);
    let nodes = summary["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 3, "three nodes by default");
    for node in nodes {
        assert!(
            node["before_kill"].as_u64().unwrap() > 0,
            "{} answered requests before the kill",
            node["name"]
        );
    }
    let victim = nodes.last().unwrap();
    assert_eq!(summary["victim"], victim["name"], "the last node is killed");
    assert!(
        summary["victim_flows"].as_u64().unwrap() > 0,
        "it answered flows"
    );
    let failover = summary["failover_ms"].as_f64().expect("a failover time");
    assert!(
        failover > 0.0 && failover < FAILOVER_BOUND_MS,
        "failover in {failover} ms"
    );
    assert!(summary["rejoin_ms"].as_f64().is_some(), "a rejoin time");
    assert!(
        victim["after_rejoin"].as_u64().unwrap() > 0,
        "the node came back and answered again"
    );
    assert_eq!(
        summary["total"]["duplicates"], 0,
        "no request answered twice"
    );
    assert_eq!(summary["problems"], Value::Array(Vec::new()));

    let made = &summary["made"];
    let prefix = format!("herd-demo-{pid}");
    let namespaces: Vec<&str> = made["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|name| name.as_str().unwrap())
        .collect();
    assert_eq!(namespaces.len(), 5, "a hub, three nodes, a client");
    assert!(namespaces.iter().all(|name| name.starts_with(&prefix)));
    let listed = command::run("ip", &["netns", "list"], None).unwrap();
    assert!(
        !listed.contains(&format!("{prefix}-")),
        "no namespace of the run is left: {listed}"
    );
    let links = command::run("ip", &["link", "show"], None).unwrap();
    assert!(
        !links.contains(&prefix),
        "no interface of the run is left: {links}"
    );
    let scratch = made["scratch_dir"].as_str().unwrap();
    assert!(!Path::new(scratch).exists(), "{scratch} is removed");
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    assert!(
        !mounts.contains(scratch),
        "the BPF file system is unmounted"
    );
}

/// Waits for `child` to exit, reading its output; past `bound`, interrupts it (it then
/// removes what it made) and fails.
fn wait_bounded(mut child: Child, bound: Duration) -> Output {
    // Read in threads: a full pipe would stall the demo.
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let err = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        buf
    });
    let deadline = Instant::now() + bound;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let pid = libc::pid_t::try_from(child.id()).unwrap();
            // SAFETY: kill takes no pointers; the child is not reaped, so the id is its own.
            unsafe { libc::kill(pid, libc::SIGINT) };
            std::thread::sleep(Duration::from_secs(15));
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "herd demo did not end within {bound:?}: {}",
                String::from_utf8_lossy(&err.join().unwrap())
            );
        }
        // A child's exit cannot be waited for with a time-out (short of a pidfd); polling
        // every 50 ms bounds the delay.
        std::thread::sleep(Duration::from_millis(50));
    };
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

#[test]
fn xdp_demo_fails_over_and_cleans_up() {
    demo_fails_over_and_cleans_up("xdp");
}

#[test]
fn afxdp_demo_fails_over_and_cleans_up() {
    demo_fails_over_and_cleans_up("afxdp");
}

/// Out-of-bounds options are usage errors, refused before anything is made (no root needed).
#[test]
fn out_of_bounds_options_are_refused() {
    for args in [
        ["--nodes", "1"],
        ["--nodes", "9"],
        ["--duration", "9"],
        ["--duration", "601"],
        ["--mode", "dpdk"],
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_herd"))
            .arg("demo")
            .args(args)
            .output()
            .expect("runs herd demo");
        assert_eq!(output.status.code(), Some(2), "herd demo {args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(args[0]), "herd demo {args:?}: {stderr}");
    }
}
