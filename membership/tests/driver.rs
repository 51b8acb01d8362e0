//! The membership thread steered through its handle, on a loopback farm port with a dataplane
//! that only records: it joins when told, tells when it is up, leaves when told and tells once
//! per leave when it is out, and stops when told.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use herd_membership::auth::Keyring;
use herd_membership::driver::{Command, Dataplane, DataplaneError, Driver, Notice, Start};
use herd_membership::protocol::FarmNode;
use herd_membership::wire::State;
use herd_membership::{Farm, Settings};
use herd_packet::counts::Traffic;
use herd_packet::hash::HashKey;
use herd_packet::table::BucketMode;

/// The buckets this node accepts new connections in, per install.
#[derive(Clone, Default)]
struct Recorder {
    installs: Arc<Mutex<Vec<usize>>>,
}

impl Dataplane for Recorder {
    fn install(&mut self, _generation: u64, modes: &[BucketMode]) -> Result<(), DataplaneError> {
        let taken = modes
            .iter()
            .filter(|mode| mode.contains(BucketMode::SYN))
            .count();
        self.installs.lock().unwrap().push(taken);
        Ok(())
    }

    fn keep_alive(&mut self, _ttl: Duration) -> Result<(), DataplaneError> {
        Ok(())
    }

    fn draining_flows(&mut self, _generation: u64) -> Result<Option<u64>, DataplaneError> {
        Ok(Some(0))
    }

    fn traffic(&mut self) -> Result<Traffic, DataplaneError> {
        Ok(Traffic::default())
    }
}

/// A one-node farm on a free loopback port.
fn start() -> Start {
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    Start {
        farm: Farm {
            digest: [1; 32],
            key: HashKey::from_bytes([7; 16]),
            buckets: 32,
            nodes: vec![FarmNode {
                name: "alpha".into(),
                weight: 1,
            }],
        },
        local: 0,
        keys: Keyring::parse("1 000102030405060708090a0b0c0d0e0f").unwrap(),
        incarnation: 1,
        settings: Settings {
            heartbeat_ms: 20,
            dead_after_ms: 100,
            drain_ms: 10_000,
            quorum: false,
        },
        addresses: vec![port],
    }
}

const WAIT: Duration = Duration::from_secs(5);

#[test]
fn the_thread_joins_and_leaves_when_told_and_tells_once_per_leave() {
    let recorder = Recorder::default();
    let (driver, handle) = Driver::new(start(), recorder.clone(), false).unwrap();
    let thread = std::thread::spawn(move || driver.run().map(|_| ()));
    assert_eq!(handle.snapshot.load().state, State::Withdrawn);

    handle.send(Command::Join).unwrap();
    assert_eq!(handle.notices.recv_timeout(WAIT), Ok(Notice::Up));
    handle.send(Command::Leave).unwrap();
    assert_eq!(handle.notices.recv_timeout(WAIT), Ok(Notice::Left));

    // Told to join and leave at once (it may be up in between, or not), its leave is over
    // once.
    handle.send(Command::Join).unwrap();
    handle.send(Command::Leave).unwrap();
    let mut notice = handle.notices.recv_timeout(WAIT);
    if notice == Ok(Notice::Up) {
        notice = handle.notices.recv_timeout(WAIT);
    }
    assert_eq!(notice, Ok(Notice::Left));
    assert!(
        handle
            .notices
            .recv_timeout(Duration::from_millis(300))
            .is_err(),
        "one notice per leave"
    );
    let snapshot = handle.snapshot.load();
    assert_eq!(snapshot.state, State::Withdrawn);
    assert_eq!(snapshot.nodes[0].name, "alpha");
    assert!(snapshot.stats.sent > 0, "it heartbeats while withdrawn");

    handle.send(Command::Exit).unwrap();
    thread.join().unwrap().unwrap();
    let installs = recorder.installs.lock().unwrap();
    assert!(
        installs.contains(&32),
        "it took every bucket while up: {installs:?}"
    );
    assert_eq!(installs.last(), Some(&0), "and gave them back");
    assert!(handle.send(Command::Join).is_err(), "the thread is gone");
}

#[test]
fn each_new_view_is_signalled_and_unread_ones_are_folded_into_one() {
    let (driver, handle) = Driver::new(start(), Recorder::default(), false).unwrap();
    let thread = std::thread::spawn(move || driver.run().map(|_| ()));

    handle.send(Command::Join).unwrap();
    let joined = handle
        .views
        .recv_timeout(WAIT)
        .expect("joining makes a view");
    assert_eq!(handle.notices.recv_timeout(WAIT), Ok(Notice::Up));
    handle.send(Command::Leave).unwrap();
    assert_eq!(handle.notices.recv_timeout(WAIT), Ok(Notice::Left));
    let left = handle
        .views
        .recv_timeout(WAIT)
        .expect("leaving makes a view");
    assert!(left > joined, "views {joined} then {left}");

    // Two views while nobody reads: one signal waits, not two.
    handle.send(Command::Join).unwrap();
    assert_eq!(handle.notices.recv_timeout(WAIT), Ok(Notice::Up));
    handle.send(Command::Leave).unwrap();
    assert_eq!(handle.notices.recv_timeout(WAIT), Ok(Notice::Left));
    assert!(handle.views.try_recv().is_ok(), "a view waits");
    assert!(handle.views.try_recv().is_err(), "and only one");

    handle.send(Command::Exit).unwrap();
    thread.join().unwrap().unwrap();
    assert_eq!(
        handle.views.recv_timeout(WAIT),
        Err(crossbeam_channel::RecvTimeoutError::Disconnected),
        "the signal closes when the thread stops"
    );
}
