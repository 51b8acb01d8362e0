//! The flow table: the TCP connections a node answered the SYN of while another node drained
//! the same bucket (mode `GAIN`, see [`crate::table::BucketMode`]), so that the ACK completing
//! a handshake it answered with a SYN cookie, which leaves no socket behind, is still its own.
//! Everything else step 6 knows of a connection comes from the node's kernel
//! ([`crate::kernel`]): nothing is recorded for a SYN of a bucket owned outright.
//!
//! Each AF_XDP worker has a [`Flows`] of its own (no sharing, no lock); the in-kernel mode keeps
//! the same records in the program's `flows` map, a kernel LRU hash with the same key and
//! value. Both evict the least recently seen connections when full, so neither ever refuses
//! one; a connection evicted by a flood of SYNs during a handover is still known by its socket.
//!
//! [`Flows`] is set-associative: `2^k` sets of [`WAYS`] slots, allocated once, so a packet
//! never allocates and never waits for a rehash; a lookup reads one set's tags, then the one
//! slot whose tag matches. A full set evicts its least recently seen slot. The set is chosen
//! by a hash keyed with a random seed per table, so that clients cannot aim their connections
//! at one set to evict others.

use std::hash::{BuildHasher, RandomState};

/// The connections a flow table holds: per AF_XDP worker, and in the in-kernel program's map
/// (`FLOWS` in herd.bpf.c). About 14 MiB per worker, 25 MiB in the kernel.
pub const FLOWS: usize = 262_144;

/// Slots per set.
pub const WAYS: usize = 8;

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

/// One slot: a connection and when its last packet was seen.
#[derive(Clone, Copy, Default)]
struct Slot {
    key: Connection,
    last_seen: u64,
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

    /// When a connection's last packet was seen (`CLOCK_MONOTONIC_COARSE`, ns), if the table
    /// holds it.
    #[inline]
    pub fn get(&self, key: &Connection) -> Option<u64> {
        let (index, _, way) = self.find(key);
        way.map(|way| self.sets[index].slots[way].last_seen)
    }

    /// Whether the table holds a connection; if so, it is seen at `now`.
    #[inline]
    pub fn touch(&mut self, key: &Connection, now: u64) -> bool {
        let (index, _, way) = self.find(key);
        if let Some(way) = way {
            self.sets[index].slots[way].last_seen = now;
        }
        way.is_some()
    }

    /// Records a connection seen at `now`, replacing what the table held for it. In a full
    /// set, the connection replaces the least recently seen one.
    #[inline]
    pub fn insert(&mut self, key: Connection, now: u64) {
        let (index, tag, way) = self.find(&key);
        let set = &mut self.sets[index];
        let way = way
            .or_else(|| set.tags.iter().position(|&tag| tag == 0))
            .unwrap_or_else(|| {
                let seen = |way: &usize| set.slots[*way].last_seen;
                (0..WAYS).min_by_key(seen).unwrap_or(0)
            });
        set.tags[way] = tag;
        set.slots[way] = Slot {
            key,
            last_seen: now,
        };
    }

    /// Forgets a connection, if the table holds it.
    #[inline]
    pub fn remove(&mut self, key: &Connection) {
        if let (index, _, Some(way)) = self.find(key) {
            self.sets[index].tags[way] = 0;
        }
    }

    /// Every connection the table holds, with when it was last seen.
    pub fn iter(&self) -> impl Iterator<Item = (&Connection, u64)> {
        self.sets.iter().flat_map(|set| {
            set.tags
                .iter()
                .zip(&set.slots)
                .filter(|(&tag, _)| tag != 0)
                .map(|(_, slot)| (&slot.key, slot.last_seen))
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connection(i: u16) -> Connection {
        Connection::v4([198, 19, (i >> 8) as u8, i as u8], [198, 18, 0, 100], i, 80)
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
    fn a_set_is_seven_cache_lines_and_the_table_14_mib() {
        assert_eq!(std::mem::size_of::<Set>(), 448);
        assert_eq!(FLOWS / WAYS * std::mem::size_of::<Set>(), 14 << 20);
    }

    #[test]
    fn inserted_connections_are_found_and_others_are_not() {
        // Few enough for their sets (about 0.5 of 8 slots taken on average) that none fills.
        let mut flows = Flows::with_capacity(8192);
        assert!(flows.is_empty());
        for i in 0..500 {
            flows.insert(connection(i), u64::from(i));
        }
        assert_eq!(flows.len(), 500);
        for i in 0..500 {
            assert_eq!(flows.get(&connection(i)), Some(u64::from(i)));
        }
        assert_eq!(flows.get(&connection(500)), None);
        let other_port = Connection::v4([198, 19, 0, 1], [198, 18, 0, 100], 1, 81);
        assert_eq!(flows.get(&other_port), None);
    }

    #[test]
    fn inserting_again_overwrites() {
        let mut flows = Flows::with_capacity(64);
        flows.insert(connection(1), 5);
        assert!(flows.touch(&connection(1), 7));
        assert_eq!(flows.get(&connection(1)), Some(7));
        flows.insert(connection(1), 9);
        assert_eq!(flows.get(&connection(1)), Some(9));
        assert_eq!(flows.len(), 1);
        assert!(!flows.touch(&connection(2), 9), "not held");
        assert_eq!(flows.len(), 1);
    }

    #[test]
    fn a_removed_connection_is_gone_and_its_slot_reused() {
        // One set, full: a removal makes room without evicting anyone.
        let mut flows = Flows::with_capacity(WAYS);
        for i in 0..WAYS as u16 {
            flows.insert(connection(i), u64::from(i));
        }
        flows.remove(&connection(5));
        flows.remove(&connection(500));
        assert_eq!(flows.get(&connection(5)), None);
        assert_eq!(flows.len(), WAYS - 1);
        flows.insert(connection(100), 0);
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
            flows.insert(connection(i), seen);
        }
        assert!(flows.touch(&connection(0), 2));
        flows.insert(connection(100), 200);
        assert_eq!(flows.len(), WAYS);
        assert_eq!(flows.get(&connection(3)), None, "evicted");
        assert!(flows.get(&connection(0)).is_some());
        assert!(flows.get(&connection(100)).is_some());
        flows.insert(connection(101), 201);
        assert_eq!(flows.get(&connection(0)), None, "the next least recent");
    }
}
