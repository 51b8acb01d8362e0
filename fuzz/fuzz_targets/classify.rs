//! Any bytes given to the classifier yield a verdict, never a panic; at most one node of a farm
//! accepts them; and a node with every bucket mode, whose flow table (small, so that it evicts)
//! has kept the connections of earlier inputs, differs from a node owning every bucket only in
//! accepting or dropping as not its own.
#![no_main]

use std::sync::{Arc, Mutex, OnceLock};

use herd_config::{Affinity, Protocol};
use herd_packet::kernel::{NoSockets, Served};
use herd_packet::table::{BucketMode, ModeTable};
use herd_packet::{classify, craft, DropReason, FarmRules, FarmTable, Flows, Verdict};
use libfuzzer_sys::fuzz_target;

const BUCKETS: u32 = 64;

struct State {
    /// The three nodes of a farm, each with its flow table.
    farm: Vec<(FarmTable, Flows)>,
    /// Bucket `b` in mode `b % 16`.
    every_mode: (FarmTable, Flows),
    /// Every bucket owned outright, and none.
    own: (FarmTable, Flows),
    none: (FarmTable, Flows),
    /// The time given to the classifier: one tick per input.
    now: u64,
}

fn state() -> &'static Mutex<State> {
    static STATE: OnceLock<Mutex<State>> = OnceLock::new();
    STATE.get_or_init(|| {
        let all_ports = |protocol, affinity| craft::rule(protocol, 0, 65535, affinity);
        let rules = vec![
            all_ports(Protocol::Tcp, Affinity::ClientIp),
            all_ports(Protocol::Udp, Affinity::ClientIpPort),
            all_ports(Protocol::Icmp, Affinity::ClientIp),
        ];
        // Small addresses so that random bytes hit a VIP now and then.
        let vips = [[0, 0, 0, 0x0a].into(), "::a".parse().unwrap()];
        let config = craft::farm_config(&vips, BUCKETS, [7; 16], 3, rules);
        let rules = Arc::new(FarmRules::from_config(&config));
        let node = |modes: Vec<BucketMode>| {
            let modes = ModeTable::new(1, modes).expect("a power of two");
            (
                FarmTable::new(Arc::clone(&rules), modes),
                Flows::with_capacity(256),
            )
        };
        Mutex::new(State {
            farm: craft::round_robin_tables(&config)
                .into_iter()
                .map(|table| (table, Flows::with_capacity(256)))
                .collect(),
            every_mode: node((0..BUCKETS).map(|b| BucketMode((b % 16) as u8)).collect()),
            own: node(vec![BucketMode::OWN; BUCKETS as usize]),
            none: node(vec![BucketMode::NONE; BUCKETS as usize]),
            now: 0,
        })
    })
}

fuzz_target!(|frame: &[u8]| {
    let mut state = state()
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    state.now += 1;
    let State {
        farm,
        every_mode,
        own,
        none,
        now,
    } = &mut *state;
    let accepted = farm
        .iter_mut()
        .map(|(table, flows)| classify(frame, table, flows, &NoSockets, *now))
        .filter(|verdict| *verdict == Verdict::Accept)
        .count();
    assert!(accepted <= 1);
    // A kernel serving every connection, so that the modes with KNOWN take the lookup's path.
    let everything = Served::SOCKET | Served::COOKIE;
    let mode = classify(frame, &every_mode.0, &mut every_mode.1, &everything, *now);
    let owned = classify(frame, &own.0, &mut own.1, &NoSockets, *now);
    let unowned = classify(frame, &none.0, &mut none.1, &NoSockets, *now);
    let not_owner = Verdict::Drop(DropReason::NotOwner);
    if owned == Verdict::Accept {
        assert_eq!(unowned, not_owner);
        assert!(mode == Verdict::Accept || mode == not_owner);
    } else {
        assert_eq!((mode, unowned), (owned, owned));
    }
});
