//! The bucket table: which node owns each bucket, and its lock-free publication to the workers.

use std::sync::Arc;

use arc_swap::ArcSwap;

/// A node's index in the farm configuration's `[[node]]` list.
pub type NodeId = u16;

/// The owner of a bucket that no live node owns (no node alive, or not yet acquired).
pub const NO_OWNER: NodeId = NodeId::MAX;

/// The most buckets a table holds (the configuration's limit).
pub const MAX_BUCKETS: usize = 65536;

/// One owner per bucket, stamped with the epoch of the membership view that produced it.
///
/// The layout, one `NodeId` per bucket in bucket order, is the value layout of the BPF array map
/// that mirrors it in the in-kernel mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BucketTable {
    epoch: u64,
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
    pub fn new(epoch: u64, owners: Vec<NodeId>) -> Result<Self, TableSizeError> {
        let len = owners.len();
        if !len.is_power_of_two() || len > MAX_BUCKETS {
            return Err(TableSizeError(len));
        }
        Ok(Self {
            epoch,
            owners: owners.into_boxed_slice(),
            mask: (len - 1) as u32,
        })
    }

    /// A table of `buckets` buckets that nobody owns: what a node installs before it has a view.
    pub fn unowned(buckets: usize) -> Result<Self, TableSizeError> {
        Self::new(0, vec![NO_OWNER; buckets])
    }

    /// The epoch of the membership view this table was computed from.
    pub fn epoch(&self) -> u64 {
        self.epoch
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
        assert_eq!(table.epoch(), 3);
    }

    #[test]
    fn readers_see_whole_tables_while_a_writer_publishes() {
        let shared = Arc::new(SharedTable::new(
            BucketTable::new(0, vec![0; 1024]).unwrap(),
        ));
        let writer = {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || {
                for epoch in 1..=200u64 {
                    let owner = (epoch % 7) as NodeId;
                    shared.publish(BucketTable::new(epoch, vec![owner; 1024]).unwrap());
                }
            })
        };
        let mut last_epoch = 0;
        while !writer.is_finished() || last_epoch < 200 {
            let table = shared.load();
            let first = table.owner(0);
            assert!(table.owners().iter().all(|&o| o == first), "a torn table");
            assert!(table.epoch() >= last_epoch, "epochs go backwards");
            last_epoch = table.epoch();
        }
        writer.join().unwrap();
    }
}
