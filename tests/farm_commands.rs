//! The farm channel end to end: three nodes running `herd run` on a learning bridge, and
//! command frames made by the test (with `herd_membership::command`) sent from the client's
//! namespace to one node's address and farm port. A command signed with another key, one
//! from another farm configuration and the replay of a valid one get no answer, are counted
//! by reason in that node's `herd status --json` and change nothing; the valid one is
//! answered with a signed reply and drains the node.
//!
//! Each test takes a [`Family`] (IPv4 and IPv6 farms, in the modules `v4` and `v6`).
//!
//! Needs root (namespaces, XDP); `scripts/test` runs it as root, as CI does.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use herd_config::{DataplaneMode, FarmConfig, Protocol};
use herd_membership::auth::Keyring;
use herd_membership::command::{Action, Command, Outcome, Reply, MAX_REPLY};
use herd_testbed::address::Family;
use herd_testbed::config::{FarmToml, KEY};
use herd_testbed::owner::Owners;
use herd_testbed::{FarmBed, FarmPlan, Herd, HerdRun, HubKind, Offload, Uplink};
use serde_json::Value;

/// The nodes.
const NODES: [&str; 3] = ["alpha", "bravo", "charlie"];
/// The node the commands are sent to.
const TARGET: usize = 1;
/// How long the farm may take to settle.
const SETTLE: Duration = Duration::from_secs(10);

/// The farm's configuration in `family`, signed with the key in `key_file`.
fn config(family: Family, key_file: &Path) -> FarmToml {
    NODES
        .iter()
        .enumerate()
        .fold(
            FarmToml::new("commands", DataplaneMode::Xdp).vips(&[family.vip()]),
            |farm, (node, name)| farm.node(name, family.node(node)),
        )
        .key_file(key_file)
        .rule(Protocol::Udp, &[7], None)
}

/// Now, in ms since the Unix epoch.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is past 1970")
        .as_millis() as u64
}

/// Sends `frame`, length-prefixed as the farm channel carries it, to `to` from the client's
/// namespace of `bed`, and returns the reply frame, or `None` when the node closed the
/// connection without one.
fn send(bed: &FarmBed, to: SocketAddr, frame: &[u8]) -> Option<Vec<u8>> {
    bed.client
        .netns
        .run(|| {
            let mut stream = TcpStream::connect_timeout(&to, Duration::from_secs(5))
                .unwrap_or_else(|error| panic!("cannot reach {to}: {error}"));
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut bytes = (frame.len() as u32).to_be_bytes().to_vec();
            bytes.extend_from_slice(frame);
            stream.write_all(&bytes).unwrap();
            let mut answer = Vec::new();
            stream.read_to_end(&mut answer).expect("the node closes");
            if answer.is_empty() {
                return None;
            }
            let len = u32::from_be_bytes(answer[..4].try_into().unwrap()) as usize;
            assert!(
                len <= MAX_REPLY && answer.len() == 4 + len,
                "one whole frame"
            );
            Some(answer[4..].to_vec())
        })
        .expect("enters the client's namespace")
}

/// The farm command counts of `herd`'s node, from `herd status --json`.
fn farm_commands(herd: &Herd) -> Value {
    herd.status().expect("the node still runs")["farm_commands"].clone()
}

fn forged_replayed_and_other_farm_commands_are_refused_and_a_valid_one_drains(family: Family) {
    let bed = FarmBed::create(&FarmPlan {
        prefix: format!("herd-cmd-{family}-{}", std::process::id()),
        nodes: &NODES,
        hub: HubKind::Learning,
        uplink: Uplink::Veth,
        sources: 0,
        client_offload: Offload::Default,
    })
    .expect("builds the farm's bed");
    let key = bed.bed().write_private("farm.key", KEY).unwrap();
    let config = bed
        .bed()
        .write_private("farm.toml", &config(family, &key).text())
        .unwrap();
    let exe = Path::new(env!("CARGO_BIN_EXE_herd"));
    let herds: Vec<Herd> = (0..NODES.len())
        .map(|node| {
            bed.start_herd(node, &HerdRun::echoed(exe, &config))
                .expect("herd runs")
        })
        .collect();
    let shares = Owners::load(&config, &[true; NODES.len()])
        .unwrap()
        .shares();
    for (node, herd) in herds.iter().enumerate() {
        let whole = format!("all_tcp={0} non_tcp={0}", shares[node]);
        assert!(
            herd.wait_for(0, |line| line.contains(&whole), SETTLE)
                .is_some(),
            "{} takes its share within {SETTLE:?}",
            NODES[node]
        );
    }

    let loaded = FarmConfig::load(&config).unwrap();
    let keys = Keyring::parse(KEY).unwrap();
    let target = SocketAddr::new(family.node(TARGET), loaded.farm.port);
    let command = Command {
        farm: loaded.digest().0,
        sender: NODES[0].into(),
        incarnation: now_ms(),
        sequence: 1,
        sent_ms: now_ms(),
        target: NODES[TARGET].into(),
        action: Action::Drain,
        origin: "the farm_commands test".into(),
    };
    let other_key = Keyring::parse(&KEY.replace("1 00", "1 ff")).unwrap();
    let forged = command.encode(&other_key).unwrap();
    let other_farm = Command {
        farm: [0xaa; 32],
        ..command.clone()
    }
    .encode(&keys)
    .unwrap();
    let valid = command.encode(&keys).unwrap();

    let herd = &herds[TARGET];
    assert_eq!(send(&bed, target, &forged), None, "a forged command");
    assert_eq!(send(&bed, target, &other_farm), None, "another farm's");
    let refused = farm_commands(herd);
    assert_eq!(refused["executed"], 0, "{refused}");
    assert_eq!(refused["refused"]["forged"], 1, "{refused}");
    assert_eq!(refused["refused"]["wrong_farm"], 1, "{refused}");
    assert_eq!(
        herd.status().unwrap()["state"],
        "up",
        "refused commands change nothing"
    );

    let mark = herd.logged();
    let reply = send(&bed, target, &valid).expect("a valid command is answered");
    let reply = Reply::decode(&reply, &keys).expect("the reply is signed with the farm key");
    assert_eq!(reply.sender, NODES[TARGET]);
    assert_eq!(
        (reply.incarnation, reply.sequence),
        (command.incarnation, 1)
    );
    assert_eq!(reply.outcome, Outcome::Done);
    let body: Value = serde_json::from_str(&reply.body).unwrap();
    assert!(
        body["done"].as_str().unwrap().starts_with("draining"),
        "{body}"
    );
    assert!(
        herd.wait_for(mark, |line| line.contains("node stopped"), SETTLE)
            .is_some(),
        "the drain takes the node out"
    );
    assert!(herd.has_logged(mark, |line| line.contains("the farm_commands test")));

    assert_eq!(send(&bed, target, &valid), None, "its replay");
    let counts = farm_commands(herd);
    assert_eq!(counts["executed"], 1, "{counts}");
    assert_eq!(counts["refused"]["replayed"], 1, "{counts}");
    for node in [0, 2] {
        let others = farm_commands(&herds[node]);
        assert_eq!(others["executed"], 0, "{}: {others}", NODES[node]);
    }
}

macro_rules! families {
    ($($module:ident: $family:expr;)*) => {$(
        mod $module {
            use super::*;

            #[test]
            fn forged_replayed_and_other_farm_commands_are_refused_and_a_valid_one_drains() {
                super::forged_replayed_and_other_farm_commands_are_refused_and_a_valid_one_drains(
                    $family,
                );
            }
        }
    )*};
}

families! {
    v4: Family::V4;
    v6: Family::V6;
}
