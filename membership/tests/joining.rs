//! A node that joins while a node it cannot agree with talks (another farm configuration, or
//! another key) holds its join, and joins once that node is gone.

use herd_membership::auth::Keyring;
use herd_membership::protocol::{Event, FarmNode, Output};
use herd_membership::wire::State;
use herd_membership::{Farm, Membership, Now, Settings};
use herd_packet::hash::HashKey;
use herd_packet::table::BucketMode;

const SETTINGS: Settings = Settings {
    heartbeat_ms: 100,
    dead_after_ms: 500,
    drain_ms: 30_000,
    quorum: false,
};

const KEY: &str = "1 000102030405060708090a0b0c0d0e0f";

fn farm(digest: u8) -> Farm {
    Farm {
        digest: [digest; 32],
        key: HashKey::from_bytes([7; 16]),
        buckets: 64,
        nodes: ["alpha", "bravo"]
            .into_iter()
            .map(|name| FarmNode {
                name: name.into(),
                weight: 1,
            })
            .collect(),
    }
}

fn at(ms: u64) -> Now {
    Now {
        mono_ms: ms,
        wall_ms: 1_800_000_000_000 + ms,
    }
}

/// Node `local` of `farm`, signing with `key`, started at time 0.
fn node(farm: Farm, local: usize, key: &str) -> Membership {
    let keys = Keyring::parse(key).unwrap();
    Membership::new(farm, local, keys, 1, SETTINGS, at(0), true)
}

/// Runs `node` to `ms` and returns its heartbeats and whether it said it held its join.
fn advance(node: &mut Membership, ms: u64) -> (Vec<Vec<u8>>, bool) {
    node.handle_timeout(at(ms));
    let mut heartbeats = Vec::new();
    let mut held = false;
    while let Some(output) = node.poll_output() {
        match output {
            Output::Heartbeat(datagram) => heartbeats.push(datagram),
            Output::Event(Event::JoinHeld { .. }) => held = true,
            _ => {}
        }
    }
    (heartbeats, held)
}

/// Alpha joins while `bravo` talks, for two seconds, then falls silent: alpha holds its join
/// meanwhile, and joins `dead_after` after bravo's last heartbeat.
fn holds_its_join_while(mut bravo: Membership) {
    let mut alpha = node(farm(1), 0, KEY);
    let mut held = false;
    for ms in (0..2000).step_by(100) {
        let (heartbeats, _) = advance(&mut bravo, ms);
        for heartbeat in heartbeats {
            alpha.handle_datagram(&heartbeat, at(ms));
        }
        held |= advance(&mut alpha, ms).1;
        assert_eq!(alpha.state(), State::Joining, "at {ms} ms");
        if ms > 0 {
            let why = alpha
                .join_held(ms)
                .expect("alpha says why it does not join");
            assert!(why.disputes_the_farm(), "{why}");
        }
        assert!(
            alpha.modes().iter().all(|mode| mode.0 == 0),
            "alpha takes nothing"
        );
    }
    assert!(held, "alpha says why it does not join");
    // Bravo's last heartbeat came at 1900 ms.
    advance(&mut alpha, 2400);
    assert_eq!(alpha.state(), State::Joining, "within dead_after of it");
    assert!(alpha.join_held(2400).is_some());
    advance(&mut alpha, 2401);
    assert_eq!(alpha.state(), State::Up, "then alpha joins alone");
    assert!(alpha.join_held(2401).is_none());
}

#[test]
fn a_node_holds_its_join_while_another_farm_configuration_talks() {
    holds_its_join_while(node(farm(2), 1, KEY));
}

#[test]
fn a_node_holds_its_join_while_another_key_talks() {
    holds_its_join_while(node(farm(1), 1, "1 ff0102030405060708090a0b0c0d0e0f"));
}

#[test]
fn a_node_joins_with_a_node_of_its_own_farm() {
    let mut bravo = node(farm(1), 1, KEY);
    let mut alpha = node(farm(1), 0, KEY);
    let (heartbeats, _) = advance(&mut bravo, 0);
    for heartbeat in heartbeats {
        alpha.handle_datagram(&heartbeat, at(0));
    }
    let (_, held) = advance(&mut alpha, 0);
    assert!(!held);
    assert_eq!(alpha.state(), State::Up, "alpha heard every node: it joins");
}

/// Runs both nodes from `from` to `to` ms, each heartbeat delivered at once and every drain
/// finding no connection when `drains_end` (else keeping its connections), and returns how
/// many buckets each takes new connections in at the end.
fn exchange(nodes: &mut [Membership; 2], from: u64, to: u64, drains_end: bool) -> [usize; 2] {
    let mut generations = [0; 2];
    for ms in (from..=to).step_by(50) {
        for sender in 0..2 {
            nodes[sender].handle_timeout(at(ms));
            if drains_end && nodes[sender].draining() > 0 {
                nodes[sender].flows_drained(generations[sender], at(ms));
            }
            while let Some(output) = nodes[sender].poll_output() {
                match output {
                    Output::Heartbeat(datagram) => {
                        nodes[1 - sender].handle_datagram(&datagram, at(ms))
                    }
                    Output::Install { generation, .. } => generations[sender] = generation,
                    Output::Event(_) => {}
                }
            }
        }
    }
    [0, 1].map(|n| {
        let modes = nodes[n].modes();
        modes
            .iter()
            .filter(|mode| mode.contains(BucketMode::SYN))
            .count()
    })
}

#[test]
fn a_withdrawn_node_is_heard_but_takes_nothing_until_it_joins_and_can_join_again() {
    let keys = || Keyring::parse(KEY).unwrap();
    let standby = Membership::new(farm(1), 0, keys(), 1, SETTINGS, at(0), false);
    let mut nodes = [standby, node(farm(1), 1, KEY)];
    assert_eq!(nodes[0].state(), State::Withdrawn);
    assert_eq!(
        exchange(&mut nodes, 0, 2000, true),
        [0, 64],
        "bravo alone takes all"
    );
    assert!(nodes[1].is_alive(0), "alpha's heartbeats say it lives");
    assert_eq!(nodes[1].view().len(), 1, "but it is no member");

    nodes[0].join(at(2001));
    assert_eq!(
        exchange(&mut nodes, 2050, 4000, true),
        [32, 32],
        "the two share"
    );
    assert_eq!(nodes[0].state(), State::Up);

    nodes[0].leave(at(4001));
    let shares = exchange(&mut nodes, 4050, 6000, true);
    assert_eq!(shares, [0, 64], "alpha gave everything back");
    assert!(nodes[0].finished());

    nodes[0].join(at(6001));
    assert_eq!(
        exchange(&mut nodes, 6050, 8000, true),
        [32, 32],
        "and joins again"
    );
    assert_eq!(nodes[1].view().len(), 2);
}

#[test]
fn a_leaving_node_told_to_join_joins_again_keeping_its_connections() {
    let mut nodes = [node(farm(1), 0, KEY), node(farm(1), 1, KEY)];
    assert_eq!(exchange(&mut nodes, 0, 2000, true), [32, 32]);
    let owned: Vec<usize> = (0..64)
        .filter(|&bucket| nodes[0].modes()[bucket].contains(BucketMode::SYN))
        .collect();
    let keeps_its_connections = |alpha: &Membership| {
        owned
            .iter()
            .all(|&bucket| alpha.modes()[bucket].contains(BucketMode::KNOWN))
    };

    nodes[0].leave(at(2001));
    assert_eq!(
        exchange(&mut nodes, 2050, 3000, false),
        [0, 64],
        "bravo takes the new connections"
    );
    assert_eq!(nodes[0].state(), State::Leaving, "alpha still drains");
    assert!(keeps_its_connections(&nodes[0]));

    nodes[0].join(at(3001));
    assert!(
        matches!(nodes[0].state(), State::Joining | State::Up),
        "the leave is called off: {}",
        nodes[0].state()
    );
    assert!(keeps_its_connections(&nodes[0]));
    assert_eq!(
        exchange(&mut nodes, 3050, 5000, false),
        [32, 32],
        "the two share again"
    );
    assert_eq!(nodes[0].state(), State::Up);
    assert!(keeps_its_connections(&nodes[0]));
}
