//! The bucket tables: which node owns each bucket ([`BucketTable`], what membership computes),
//! what this node accepts in each bucket ([`ModeTable`], what the dataplane reads), and their
//! lock-free publication to the workers.
//!
//! The dataplane reads modes rather than owners so that a bucket can move between two live
//! nodes without breaking connections: for a while the old owner keeps the connections it
//! knows (`DRAIN`) while the new one takes the new ones (`GAIN`).

use std::sync::Arc;

use arc_swap::ArcSwap;

/// A node's index in the farm configuration's `[[node]]` list.
pub type NodeId = u16;

/// The owner of a bucket that no live node owns (no node alive, or not yet acquired).
pub const NO_OWNER: NodeId = NodeId::MAX;

/// The most buckets a table holds (the configuration's limit).
pub const MAX_BUCKETS: usize = 65536;

/// One owner per bucket, stamped with the generation of the install it belongs to (0 where
/// nothing is installed from it, as in `herd table` and `herd whois`).
///
/// The layout, one `NodeId` per bucket in bucket order, is the value layout of the BPF array map
/// that mirrors it in the in-kernel mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BucketTable {
    generation: u64,
    owners: Box<[NodeId]>,
    mask: u32,
}

/// A bucket table that cannot be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSizeError(pub usize);

impl std::fmt::Display for TableSizeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "a bucket table needs a power-of-two number of buckets from 1 to {MAX_BUCKETS}, not {}",
            self.0
        )
    }
}

impl std::error::Error for TableSizeError {}

impl BucketTable {
    /// A table with the given owners; their count must be a power of two up to
    /// [`MAX_BUCKETS`].
    pub fn new(generation: u64, owners: Vec<NodeId>) -> Result<Self, TableSizeError> {
        let len = owners.len();
        if !len.is_power_of_two() || len > MAX_BUCKETS {
            return Err(TableSizeError(len));
        }
        Ok(Self {
            generation,
            owners: owners.into_boxed_slice(),
            mask: (len - 1) as u32,
        })
    }

    /// A table of `buckets` buckets that nobody owns: what a node installs before it has a view.
    pub fn unowned(buckets: usize) -> Result<Self, TableSizeError> {
        Self::new(0, vec![NO_OWNER; buckets])
    }

    /// The generation of the install this table belongs to.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The number of buckets.
    pub fn len(&self) -> usize {
        self.owners.len()
    }

    /// Whether the table has no bucket (never true for a table built by [`BucketTable::new`]).
    pub fn is_empty(&self) -> bool {
        self.owners.is_empty()
    }

    /// The bucket a flow hash falls in: the hash modulo the (power-of-two) bucket count.
    #[inline(always)]
    pub fn bucket_of(&self, hash: u64) -> u32 {
        (hash as u32) & self.mask
    }

    /// The owner of a bucket; buckets past the end wrap, as [`BucketTable::bucket_of`] does.
    #[inline(always)]
    pub fn owner(&self, bucket: u32) -> NodeId {
        let index = (bucket & self.mask) as usize;
        debug_assert!(index < self.owners.len());
        // SAFETY: `new` is the only constructor and sets `mask` to the length minus one, a
        // power of two minus one, so the masked index is always in bounds. (The compiler cannot
        // see that, and the bounds check it would add costs on every packet.)
        unsafe { *self.owners.get_unchecked(index) }
    }

    /// Every owner, in bucket order.
    pub fn owners(&self) -> &[NodeId] {
        &self.owners
    }

    /// How many buckets each node owns, indexed by `NodeId` up to `nodes`.
    pub fn counts(&self, nodes: usize) -> Vec<usize> {
        let mut counts = vec![0; nodes];
        for &owner in self.owners.iter() {
            if let Some(count) = counts.get_mut(owner as usize) {
                *count += 1;
            }
        }
        counts
    }
}

/// What this node accepts in one bucket: a set of the bits below (see [`mod@crate::classify`] for
/// how the verdict reads them).
///
/// One byte, the value of the BPF array map that mirrors a [`ModeTable`] in the in-kernel mode.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct BucketMode(pub u8);

impl BucketMode {
    /// Accepts nothing.
    pub const NONE: BucketMode = BucketMode(0);
    /// Accepts a TCP SYN without ACK (a new connection); with [`BucketMode::KNOWN`] too, also
    /// records the connection in the flow table.
    pub const SYN: BucketMode = BucketMode(1);
    /// Accepts any other TCP packet of a connection this node serves: one recorded in the flow
    /// table, or one its kernel has a socket (or, without [`BucketMode::SYN`], a SYN cookie)
    /// for (see [`crate::kernel`]).
    pub const KNOWN: BucketMode = BucketMode(2);
    /// Accepts any other TCP packet without looking it up.
    pub const TCP_ANY: BucketMode = BucketMode(4);
    /// Accepts every VIP packet that is not TCP (UDP, ICMP and ICMP errors, fragments).
    pub const OTHER: BucketMode = BucketMode(8);
    /// A bucket this node owns outright.
    pub const OWN: BucketMode = BucketMode(Self::SYN.0 | Self::TCP_ANY.0 | Self::OTHER.0);
    /// A bucket this node is giving up: the connections its kernel still serves, and (still)
    /// everything but TCP.
    pub const DRAIN: BucketMode = BucketMode(Self::KNOWN.0 | Self::OTHER.0);
    /// A bucket this node is taking while another drains it: new connections, and those it
    /// has taken since (its kernel's sockets, and the handshakes it recorded).
    pub const GAIN: BucketMode = BucketMode(Self::SYN.0 | Self::KNOWN.0);

    /// Whether every bit of `bits` is set.
    #[inline(always)]
    pub const fn contains(self, bits: BucketMode) -> bool {
        self.0 & bits.0 == bits.0
    }

    /// Whether the bucket's connections are draining away from this node: it keeps the ones
    /// it knows ([`BucketMode::KNOWN`]) and takes no new one ([`BucketMode::SYN`]).
    #[inline]
    pub const fn drains(self) -> bool {
        self.contains(Self::KNOWN) && !self.contains(Self::SYN)
    }
}

impl std::ops::BitOr for BucketMode {
    type Output = BucketMode;

    fn bitor(self, other: BucketMode) -> BucketMode {
        BucketMode(self.0 | other.0)
    }
}

/// One [`BucketMode`] per bucket, stamped with the generation of the install that produced it:
/// what the dataplane of one node reads.
///
/// The layout, one byte per bucket in bucket order, is the value layout of the BPF array map
/// that mirrors it in the in-kernel mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModeTable {
    generation: u64,
    modes: Box<[BucketMode]>,
    mask: u32,
    /// Whether some bucket [`BucketMode::drains`]: when none does, no flow is draining and nothing
    /// needs counting.
    drains: bool,
}

impl ModeTable {
    /// A table with the given modes; their count must be a power of two up to
    /// [`MAX_BUCKETS`].
    pub fn new(generation: u64, modes: Vec<BucketMode>) -> Result<Self, TableSizeError> {
        let len = modes.len();
        if !len.is_power_of_two() || len > MAX_BUCKETS {
            return Err(TableSizeError(len));
        }
        Ok(Self {
            generation,
            drains: modes.iter().any(|mode| mode.drains()),
            modes: modes.into_boxed_slice(),
            mask: (len - 1) as u32,
        })
    }

    /// The modes of node `local` when buckets simply have owners: [`BucketMode::OWN`] where it owns
    /// the bucket, [`BucketMode::NONE`] elsewhere (everywhere for [`NO_OWNER`], a machine outside
    /// the farm). The generation is the owners'.
    pub fn of_owner(owners: &BucketTable, local: NodeId) -> Self {
        let modes = owners
            .owners()
            .iter()
            .map(|&owner| {
                if owner == local && local != NO_OWNER {
                    BucketMode::OWN
                } else {
                    BucketMode::NONE
                }
            })
            .collect();
        Self {
            generation: owners.generation,
            modes,
            mask: owners.mask,
            drains: false,
        }
    }

    /// A table of `buckets` buckets that accepts nothing: what a node installs before it has a
    /// view.
    pub fn none(buckets: usize) -> Result<Self, TableSizeError> {
        Self::new(0, vec![BucketMode::NONE; buckets])
    }

    /// The generation of the install this table belongs to.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The number of buckets.
    pub fn len(&self) -> usize {
        self.modes.len()
    }

    /// Whether the table has no bucket (never true for a table built by [`ModeTable::new`]).
    pub fn is_empty(&self) -> bool {
        self.modes.is_empty()
    }

    /// The bucket a flow hash falls in: the hash modulo the (power-of-two) bucket count, as
    /// [`BucketTable::bucket_of`].
    #[inline(always)]
    pub fn bucket_of(&self, hash: u64) -> u32 {
        (hash as u32) & self.mask
    }

    /// The mode of a bucket; buckets past the end wrap, as [`ModeTable::bucket_of`] does.
    #[inline(always)]
    pub fn mode(&self, bucket: u32) -> BucketMode {
        let index = (bucket & self.mask) as usize;
        debug_assert!(index < self.modes.len());
        // SAFETY: the constructors set `mask` to the length minus one (`of_owner` copies it
        // from a `BucketTable` of the same length, built with the same rule), a power of two
        // minus one, so the masked index is always in bounds. (The compiler cannot see that,
        // and the bounds check it would add costs on every packet.)
        unsafe { *self.modes.get_unchecked(index) }
    }

    /// Every mode, in bucket order.
    pub fn modes(&self) -> &[BucketMode] {
        &self.modes
    }

    /// Whether some bucket [`BucketMode::drains`].
    pub fn drains(&self) -> bool {
        self.drains
    }
}

/// The table the packet workers read and the membership thread replaces.
///
/// Readers take no lock and allocate nothing (`arc-swap`'s debt slots); a writer publishes a
/// whole new table at once, so a packet sees either the old table or the new one, never a mix.
#[derive(Debug)]
pub struct SharedTable<T> {
    current: ArcSwap<T>,
}

impl<T> SharedTable<T> {
    /// A shared cell holding `initial`.
    pub fn new(initial: T) -> Self {
        Self {
            current: ArcSwap::from_pointee(initial),
        }
    }

    /// The current value, held for as long as the guard lives (one batch of packets).
    #[inline]
    pub fn load(&self) -> arc_swap::Guard<Arc<T>> {
        self.current.load()
    }

    /// Replaces the value; readers that still hold the old one finish with it.
    pub fn publish(&self, next: T) {
        self.current.store(Arc::new(next));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_must_be_powers_of_two() {
        assert!(BucketTable::new(0, vec![0; 64]).is_ok());
        assert_eq!(BucketTable::new(0, vec![0; 100]), Err(TableSizeError(100)));
        assert_eq!(BucketTable::new(0, vec![]), Err(TableSizeError(0)));
        assert!(BucketTable::new(0, vec![0; 131072]).is_err());
    }

    #[test]
    fn the_configuration_allows_no_more_buckets_than_a_table_holds() {
        assert_eq!(herd_config::Farm::MAX_BUCKETS as usize, MAX_BUCKETS);
        assert!(BucketTable::unowned(MAX_BUCKETS).is_ok());
    }

    #[test]
    fn bucket_of_is_the_hash_modulo_the_size() {
        let table = BucketTable::unowned(4096).unwrap();
        for hash in [0u64, 1, 4095, 4096, 123_456_789, u64::MAX] {
            assert_eq!(table.bucket_of(hash) as u64, hash % 4096);
        }
    }

    #[test]
    fn counts_ignore_unowned_buckets() {
        let table = BucketTable::new(3, vec![0, 1, 1, NO_OWNER]).unwrap();
        assert_eq!(table.counts(2), vec![1, 2]);
        assert_eq!(table.generation(), 3);
    }

    #[test]
    fn mode_tables_have_the_sizes_of_bucket_tables() {
        assert!(ModeTable::new(0, vec![BucketMode::OWN; 64]).is_ok());
        assert_eq!(
            ModeTable::new(0, vec![BucketMode::NONE; 100]),
            Err(TableSizeError(100))
        );
        assert_eq!(ModeTable::new(0, vec![]), Err(TableSizeError(0)));
        assert!(ModeTable::none(MAX_BUCKETS).is_ok());
        assert!(ModeTable::none(2 * MAX_BUCKETS).is_err());
    }

    #[test]
    fn the_named_modes_are_their_bits() {
        assert_eq!(
            BucketMode::OWN,
            BucketMode::SYN | BucketMode::TCP_ANY | BucketMode::OTHER
        );
        assert_eq!(BucketMode::DRAIN, BucketMode::KNOWN | BucketMode::OTHER);
        assert_eq!(BucketMode::GAIN, BucketMode::SYN | BucketMode::KNOWN);
        assert!(
            BucketMode::OWN.contains(BucketMode::SYN)
                && !BucketMode::OWN.contains(BucketMode::KNOWN)
        );
        assert!(BucketMode::NONE.contains(BucketMode::NONE));
        let draining: Vec<u8> = (0..16).filter(|&bits| BucketMode(bits).drains()).collect();
        assert_eq!(draining, [2, 6, 10, 14], "KNOWN without SYN");
    }

    #[test]
    fn a_node_owns_outright_the_buckets_it_owns() {
        let owners = BucketTable::new(9, vec![0, 1, NO_OWNER, 0]).unwrap();
        let modes = ModeTable::of_owner(&owners, 0);
        assert_eq!(
            modes.modes(),
            [
                BucketMode::OWN,
                BucketMode::NONE,
                BucketMode::NONE,
                BucketMode::OWN
            ]
        );
        assert_eq!(modes.generation(), 9);
        assert_eq!(modes.len(), 4);
        assert!(!modes.drains());
        assert_eq!(modes.mode(5), BucketMode::NONE, "wraps");
        assert_eq!(modes.bucket_of(7), 3);
        let outsider = ModeTable::of_owner(&owners, NO_OWNER);
        assert!(outsider
            .modes()
            .iter()
            .all(|&mode| mode == BucketMode::NONE));
        let draining = ModeTable::new(1, vec![BucketMode::OWN, BucketMode::DRAIN]).unwrap();
        assert!(draining.drains());
    }

    #[test]
    fn readers_see_whole_tables_while_a_writer_publishes() {
        let shared = Arc::new(SharedTable::new(
            BucketTable::new(0, vec![0; 1024]).unwrap(),
        ));
        let writer = {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || {
                for generation in 1..=200u64 {
                    let owner = (generation % 7) as NodeId;
                    shared.publish(BucketTable::new(generation, vec![owner; 1024]).unwrap());
                }
            })
        };
        let mut last_generation = 0;
        while !writer.is_finished() || last_generation < 200 {
            let table = shared.load();
            let first = table.owner(0);
            assert!(table.owners().iter().all(|&o| o == first), "a torn table");
            assert!(
                table.generation() >= last_generation,
                "generations go backwards"
            );
            last_generation = table.generation();
        }
        writer.join().unwrap();
    }
}
