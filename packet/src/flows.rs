//! The flow table: the TCP connections a node has accepted the SYN of, so that a bucket can move
//! to another live node without breaking them (see [`crate::table::BucketMode`]).
//!
//! Each AF_XDP worker has a [`Flows`] of its own (no sharing, no lock); the in-kernel mode keeps
//! the same records in the program's `flows` map, a kernel LRU hash with the same key and
//! value. Both evict the least recently seen connections when full, so neither ever refuses
//! one, and a long-lived idle connection can be forgotten under a flood of new ones.
//!
//! [`Flows`] is set-associative: `2^k` sets of [`WAYS`] slots, allocated once, so a packet
//! never allocates and never waits for a rehash; a lookup reads one set's tags, then the one
//! slot whose tag matches. A full set evicts its least recently seen slot, which starts to
//! happen (to about one connection in a hundred) when the table is half full: its capacity
//! should be about twice the connections a worker holds. The set is chosen by a hash keyed
//! with a random seed per table, so that clients cannot aim their connections at one set to
//! evict others.

use std::hash::{BuildHasher, RandomState};
use std::ops::Range;

use crate::table::ModeTable;

/// The connections a flow table holds: per AF_XDP worker, and in the in-kernel program's map
/// (`FLOWS` in herd.bpf.c). About 16 MiB per worker, 27 MiB in the kernel.
pub const FLOWS: usize = 262_144;

/// Slots per set.
pub const WAYS: usize = 8;

/// How long a closed connection (FIN or RST seen) still counts as open: its last packets, and
/// the other side's answer to the FIN, are still on their way.
pub const LINGER_NS: u64 = 1_000_000_000;

/// How often a worker recounts its draining flows.
pub const RECOUNT_NS: u64 = 100_000_000;

/// A TCP connection as flow tables key it: family, client address, VIP address, client port,
/// VIP port. IPv4 addresses fill the first 4 bytes of their 16, the rest zero; ports are in
/// network byte order, as on the wire.
///
/// The layout is `struct flow_key` in herd.bpf.c, the key of the program's `flows` map.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Connection {
    client: [u8; 16],
    vip: [u8; 16],
    client_port: [u8; 2],
    vip_port: [u8; 2],
    /// 4 or 6.
    family: u8,
    pad: [u8; 3],
}

impl Connection {
    /// An IPv4 connection from `client`:`client_port` to `vip`:`vip_port`.
    #[inline(always)]
    pub fn v4(client: [u8; 4], vip: [u8; 4], client_port: u16, vip_port: u16) -> Self {
        let mut connection = Self {
            client_port: client_port.to_be_bytes(),
            vip_port: vip_port.to_be_bytes(),
            family: 4,
            ..Self::default()
        };
        connection.client[..4].copy_from_slice(&client);
        connection.vip[..4].copy_from_slice(&vip);
        connection
    }

    /// An IPv6 connection from `client`:`client_port` to `vip`:`vip_port`.
    #[inline(always)]
    pub fn v6(client: [u8; 16], vip: [u8; 16], client_port: u16, vip_port: u16) -> Self {
        Self {
            client,
            vip,
            client_port: client_port.to_be_bytes(),
            vip_port: vip_port.to_be_bytes(),
            family: 6,
            pad: [0; 3],
        }
    }

    /// The key as five 64-bit words, for hashing.
    #[inline(always)]
    fn words(&self) -> [u64; 5] {
        let word = |bytes: &[u8]| u64::from_le_bytes(bytes.try_into().expect("8 bytes"));
        [
            word(&self.client[..8]),
            word(&self.client[8..]),
            word(&self.vip[..8]),
            word(&self.vip[8..]),
            u64::from_le_bytes([
                self.client_port[0],
                self.client_port[1],
                self.vip_port[0],
                self.vip_port[1],
                self.family,
                0,
                0,
                0,
            ]),
        ]
    }
}

/// What a flow table records of a connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowState {
    /// When its last packet was seen (`CLOCK_MONOTONIC_COARSE`, ns).
    pub last_seen: u64,
    /// Its bucket.
    pub bucket: u32,
    /// Whether a FIN or RST has been seen.
    pub closed: bool,
}

impl FlowState {
    /// Whether the connection still counts as open at `now`: not closed, or closed less than
    /// [`LINGER_NS`] ago.
    #[inline]
    pub fn is_open(&self, now: u64) -> bool {
        !self.closed || now.saturating_sub(self.last_seen) < LINGER_NS
    }

    /// Whether the connection is open and draining away: its bucket's current mode in `modes`
    /// keeps known connections but takes no new one ([`crate::table::BucketMode::drains`]). The
    /// definition of both dataplane modes' count of draining flows.
    #[inline]
    pub fn is_draining(&self, modes: &ModeTable, now: u64) -> bool {
        self.is_open(now) && modes.mode(self.bucket).drains()
    }
}

/// One slot: a connection and its state.
#[derive(Clone, Copy, Default)]
struct Slot {
    key: Connection,
    state: FlowState,
}

/// [`WAYS`] slots and their tags: 0 for an empty slot, otherwise the high half of the key's
/// hash with the low bit set, so that a lookup compares keys only where tags match.
#[repr(C, align(64))]
#[derive(Clone, Copy, Default)]
struct Set {
    tags: [u32; WAYS],
    slots: [Slot; WAYS],
}

/// A fixed-capacity table of TCP connections, allocated once: see the module documentation.
pub struct Flows {
    sets: Box<[Set]>,
    /// The number of sets minus one (a power of two minus one).
    mask: usize,
    seed: u64,
}

impl Default for Flows {
    fn default() -> Self {
        Self::new()
    }
}

impl Flows {
    /// A table of [`FLOWS`] connections.
    pub fn new() -> Self {
        Self::with_capacity(FLOWS)
    }

    /// A table of at least `connections` connections (rounded up to a power-of-two number of
    /// sets of [`WAYS`] slots).
    pub fn with_capacity(connections: usize) -> Self {
        let sets = connections.div_ceil(WAYS).max(1).next_power_of_two();
        Self {
            sets: vec![Set::default(); sets].into_boxed_slice(),
            mask: sets - 1,
            seed: RandomState::new().hash_one(sets),
        }
    }

    /// How many connections the table holds when full.
    pub fn capacity(&self) -> usize {
        self.sets.len() * WAYS
    }

    /// The set and tag of a key.
    #[inline(always)]
    fn locate(&self, key: &Connection) -> (usize, u32) {
        let mut hash = self.seed;
        for word in key.words() {
            // A folded multiply: the 128-bit product's halves xored.
            let product = u128::from(hash ^ word) * u128::from(0x9e37_79b9_7f4a_7c15u64);
            hash = (product as u64) ^ ((product >> 64) as u64);
        }
        (hash as usize & self.mask, (hash >> 32) as u32 | 1)
    }

    /// The set and way holding `key`, if any.
    #[inline(always)]
    fn find(&self, key: &Connection) -> (usize, u32, Option<usize>) {
        let (index, tag) = self.locate(key);
        let set = &self.sets[index];
        let way = (0..WAYS).find(|&way| set.tags[way] == tag && set.slots[way].key == *key);
        (index, tag, way)
    }

    /// The state of a connection, if the table holds it.
    #[inline]
    pub fn get(&self, key: &Connection) -> Option<&FlowState> {
        let (index, _, way) = self.find(key);
        way.map(|way| &self.sets[index].slots[way].state)
    }

    /// The state of a connection, to update it in place, if the table holds it.
    #[inline]
    pub fn get_mut(&mut self, key: &Connection) -> Option<&mut FlowState> {
        let (index, _, way) = self.find(key);
        way.map(|way| &mut self.sets[index].slots[way].state)
    }

    /// Records a connection, replacing what the table held for it. In a full set, the
    /// connection replaces the least recently seen one.
    #[inline]
    pub fn insert(&mut self, key: Connection, state: FlowState) {
        let (index, tag, way) = self.find(&key);
        let set = &mut self.sets[index];
        let way = way
            .or_else(|| set.tags.iter().position(|&tag| tag == 0))
            .unwrap_or_else(|| {
                let seen = |way: &usize| set.slots[*way].state.last_seen;
                (0..WAYS).min_by_key(seen).unwrap_or(0)
            });
        set.tags[way] = tag;
        set.slots[way] = Slot { key, state };
    }

    /// Forgets a connection, if the table holds it.
    #[inline]
    pub fn remove(&mut self, key: &Connection) {
        if let (index, _, Some(way)) = self.find(key) {
            self.sets[index].tags[way] = 0;
        }
    }

    /// Every connection the table holds, with its state.
    pub fn iter(&self) -> impl Iterator<Item = (&Connection, &FlowState)> {
        self.sets.iter().flat_map(|set| {
            set.tags
                .iter()
                .zip(&set.slots)
                .filter(|(&tag, _)| tag != 0)
                .map(|(_, slot)| (&slot.key, &slot.state))
        })
    }

    /// How many connections the table holds.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// Whether the table holds no connection.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many connections are draining at `now` under `modes` ([`FlowState::is_draining`]).
    pub fn draining(&self, modes: &ModeTable, now: u64) -> usize {
        self.draining_in(0..self.sets.len(), modes, now)
    }

    /// The draining connections of the sets in `sets`.
    fn draining_in(&self, sets: Range<usize>, modes: &ModeTable, now: u64) -> usize {
        self.sets[sets]
            .iter()
            .map(|set| {
                (0..WAYS)
                    .filter(|&way| {
                        set.tags[way] != 0 && set.slots[way].state.is_draining(modes, now)
                    })
                    .count()
            })
            .sum()
    }
}

/// A worker's count of its draining flows, made a few sets at a time between batches so that a
/// pass over a large table never holds up the ring, and started at most every [`RECOUNT_NS`].
/// A pass counts under one mode table: one installed meanwhile starts the pass again, so that
/// a count always says which table it holds for.
#[derive(Debug, Default)]
pub struct DrainCount {
    /// The next set of the pass under way; 0 between passes.
    next: usize,
    /// The draining connections of the sets counted so far in this pass.
    partial: usize,
    /// The generation of the mode table of the pass under way.
    generation: u64,
    /// When the last pass started.
    started: Option<u64>,
}

/// A complete count of a worker's draining flows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Drained {
    /// The generation of the mode table counted under.
    pub generation: u64,
    /// The draining connections.
    pub flows: usize,
}

impl DrainCount {
    /// Sets counted per step: 2048 slots, 128 KiB of the table.
    pub const SETS_PER_STEP: usize = 256;

    /// Counts the next sets of `flows`; the total once a pass is complete. With no draining
    /// bucket in `modes`, a pass is complete at once, and 0.
    pub fn step(&mut self, flows: &Flows, modes: &ModeTable, now: u64) -> Option<Drained> {
        if self.next != 0 && modes.generation() != self.generation {
            self.next = 0;
            self.partial = 0;
            self.started = None;
        }
        if self.next == 0 {
            if self
                .started
                .is_some_and(|started| now.saturating_sub(started) < RECOUNT_NS)
            {
                return None;
            }
            self.started = Some(now);
            self.generation = modes.generation();
            if !modes.drains() {
                return Some(Drained {
                    generation: self.generation,
                    flows: 0,
                });
            }
        }
        let end = (self.next + Self::SETS_PER_STEP).min(flows.sets.len());
        self.partial += flows.draining_in(self.next..end, modes, now);
        if end == flows.sets.len() {
            self.next = 0;
            Some(Drained {
                generation: self.generation,
                flows: std::mem::take(&mut self.partial),
            })
        } else {
            self.next = end;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::BucketMode;

    fn connection(i: u16) -> Connection {
        Connection::v4([198, 19, (i >> 8) as u8, i as u8], [198, 18, 0, 100], i, 80)
    }

    fn state(last_seen: u64, bucket: u32) -> FlowState {
        FlowState {
            last_seen,
            bucket,
            closed: false,
        }
    }

    #[test]
    fn the_key_layout_is_the_programs() {
        assert_eq!(std::mem::size_of::<Connection>(), 40);
        let key = Connection::v4([1, 2, 3, 4], [5, 6, 7, 8], 0x1234, 80);
        // SAFETY: `Connection` is `repr(C)` plain bytes without padding: 40 initialised bytes.
        let bytes: [u8; 40] = unsafe { std::mem::transmute(key) };
        let mut expected = [0; 40];
        expected[..4].copy_from_slice(&[1, 2, 3, 4]);
        expected[16..20].copy_from_slice(&[5, 6, 7, 8]);
        expected[32..37].copy_from_slice(&[0x12, 0x34, 0, 80, 4]);
        assert_eq!(bytes, expected);
        let v6 = Connection::v6([1; 16], [2; 16], 1, 2);
        assert_ne!(v6, Connection::v4([1; 4], [2; 4], 1, 2));
    }

    #[test]
    fn a_set_is_eight_cache_lines_and_the_table_16_mib() {
        assert_eq!(std::mem::size_of::<Set>(), 512);
        assert_eq!(FLOWS / WAYS * std::mem::size_of::<Set>(), 16 << 20);
    }

    #[test]
    fn inserted_connections_are_found_and_others_are_not() {
        // Few enough for their sets (about 0.5 of 8 slots taken on average) that none fills.
        let mut flows = Flows::with_capacity(8192);
        assert!(flows.is_empty());
        for i in 0..500 {
            flows.insert(connection(i), state(u64::from(i), u32::from(i)));
        }
        assert_eq!(flows.len(), 500);
        for i in 0..500 {
            assert_eq!(
                flows.get(&connection(i)),
                Some(&state(u64::from(i), u32::from(i)))
            );
        }
        assert_eq!(flows.get(&connection(500)), None);
        let other_port = Connection::v4([198, 19, 0, 1], [198, 18, 0, 100], 1, 81);
        assert_eq!(flows.get(&other_port), None);
    }

    #[test]
    fn inserting_again_overwrites() {
        let mut flows = Flows::with_capacity(64);
        flows.insert(connection(1), state(5, 3));
        flows.get_mut(&connection(1)).unwrap().closed = true;
        flows.insert(connection(1), state(9, 4));
        assert_eq!(flows.get(&connection(1)), Some(&state(9, 4)));
        assert_eq!(flows.len(), 1);
    }

    #[test]
    fn a_removed_connection_is_gone_and_its_slot_reused() {
        // One set, full: a removal makes room without evicting anyone.
        let mut flows = Flows::with_capacity(WAYS);
        for i in 0..WAYS as u16 {
            flows.insert(connection(i), state(u64::from(i), 0));
        }
        flows.remove(&connection(5));
        flows.remove(&connection(500));
        assert_eq!(flows.get(&connection(5)), None);
        assert_eq!(flows.len(), WAYS - 1);
        flows.insert(connection(100), state(0, 0));
        assert_eq!(flows.len(), WAYS);
        assert!((0..WAYS as u16)
            .filter(|&i| i != 5)
            .all(|i| flows.get(&connection(i)).is_some()));
    }

    #[test]
    fn a_full_set_evicts_its_least_recently_seen_connection() {
        // One set: every connection lands in it.
        let mut flows = Flows::with_capacity(WAYS);
        assert_eq!(flows.capacity(), WAYS);
        for i in 0..WAYS as u16 {
            // Connection 3 is the least recently seen.
            let seen = if i == 3 { 1 } else { 100 + u64::from(i) };
            flows.insert(connection(i), state(seen, 0));
        }
        flows.get_mut(&connection(0)).unwrap().last_seen = 2;
        flows.insert(connection(100), state(200, 0));
        assert_eq!(flows.len(), WAYS);
        assert_eq!(flows.get(&connection(3)), None, "evicted");
        assert!(flows.get(&connection(0)).is_some());
        assert!(flows.get(&connection(100)).is_some());
        flows.insert(connection(101), state(201, 0));
        assert_eq!(flows.get(&connection(0)), None, "the next least recent");
    }

    #[test]
    fn closed_connections_linger_then_stop_draining() {
        let modes = ModeTable::new(
            1,
            vec![
                BucketMode::DRAIN,
                BucketMode::OWN,
                BucketMode::KNOWN,
                BucketMode::GAIN,
            ],
        )
        .unwrap();
        let mut flows = Flows::with_capacity(64);
        for bucket in 0..4 {
            flows.insert(connection(bucket as u16), state(1_000, bucket));
        }
        assert_eq!(flows.draining(&modes, 1_000), 2, "DRAIN and KNOWN buckets");
        let closed = flows.get_mut(&connection(0)).unwrap();
        closed.closed = true;
        assert!(closed.is_open(1_000 + LINGER_NS - 1));
        assert!(!closed.is_open(1_000 + LINGER_NS));
        assert_eq!(flows.draining(&modes, 1_000 + LINGER_NS - 1), 2);
        assert_eq!(flows.draining(&modes, 1_000 + LINGER_NS), 1);
    }

    #[test]
    fn a_drain_count_covers_the_table_in_steps_and_recounts_at_most_every_period() {
        let modes = ModeTable::new(1, vec![BucketMode::DRAIN, BucketMode::OWN]).unwrap();
        let mut flows = Flows::with_capacity(4 * DrainCount::SETS_PER_STEP * WAYS);
        for i in 0..1000 {
            flows.insert(connection(i), state(0, u32::from(i)));
        }
        let mut count = DrainCount::default();
        let steps: Vec<Option<usize>> = (0..4)
            .map(|_| count.step(&flows, &modes, 0).map(|drained| drained.flows))
            .collect();
        assert_eq!(steps, [None, None, None, Some(500)]);
        assert_eq!(count.step(&flows, &modes, RECOUNT_NS - 1), None, "too soon");
        assert_eq!(count.step(&flows, &modes, RECOUNT_NS), None, "a new pass");
        let owned = ModeTable::new(2, vec![BucketMode::OWN; 2]).unwrap();
        let mut count = DrainCount::default();
        let nothing = Drained {
            generation: 2,
            flows: 0,
        };
        assert_eq!(
            count.step(&flows, &owned, 0),
            Some(nothing),
            "nothing drains"
        );
    }

    #[test]
    fn a_table_installed_during_a_pass_starts_it_again() {
        let first = ModeTable::new(1, vec![BucketMode::DRAIN, BucketMode::OWN]).unwrap();
        let second = ModeTable::new(2, vec![BucketMode::DRAIN, BucketMode::DRAIN]).unwrap();
        let mut flows = Flows::with_capacity(2 * DrainCount::SETS_PER_STEP * WAYS);
        // Few enough for 512 sets of 8 never to overflow one (a set holding more would evict).
        for i in 0..200 {
            flows.insert(connection(i), state(0, u32::from(i)));
        }
        let mut count = DrainCount::default();
        assert_eq!(count.step(&flows, &first, 0), None);
        assert_eq!(
            count.step(&flows, &second, 0),
            None,
            "the pass starts again"
        );
        let drained = Drained {
            generation: 2,
            flows: 200,
        };
        assert_eq!(count.step(&flows, &second, 0), Some(drained));
    }
}
