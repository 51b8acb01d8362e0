//! When an AF_XDP worker is behind. A worker that takes full batches one after another, with
//! no smaller one between them, is handed frames faster than it serves them: the interface's
//! queue holds more than a NAPI budget each time. It then asks the redirect program to drop the frames of the buckets this
//! node does not serve at all ([`crate::xdp::BehindSwitch`]), which it would only drop itself:
//! the kernel sheds them at the in-kernel mode's cost, early, and the worker spends itself on
//! the frames it may accept. Being behind lasts a lease, renewed by each full batch: once the
//! lease runs out the worker sees every frame again, so that it learns when the flood is over
//! even while the kernel drops everything it would have seen.

/// Full batches in a row that make a worker behind: a few times the ring's worth of a burst.
pub const FULL_BATCHES_TO_BEHIND: u32 = 32;

/// How long a worker stays behind after its last full batch, in ns.
pub const BEHIND_LEASE_NS: u64 = 100_000_000;

/// Whether a worker is behind, from the sizes of its batches. Time is passed in.
#[derive(Debug, Default)]
pub struct Overload {
    /// Full batches since the last one that was not.
    full_in_a_row: u32,
    /// Until when the worker is behind, if it is.
    behind_until: Option<u64>,
}

impl Overload {
    /// Takes the size of a batch (`received` frames of at most `capacity`, at least 1; 0 when
    /// the worker found its ring empty) at `now`, in ns, and says whether the worker is behind.
    pub fn observe(&mut self, received: usize, capacity: usize, now: u64) -> bool {
        // A worker woken for each batch finds its ring empty after each: only a batch that is
        // not full says the worker keeps up.
        if received >= capacity {
            self.full_in_a_row = self.full_in_a_row.saturating_add(1);
        } else if received > 0 {
            self.full_in_a_row = 0;
        }
        if self.full_in_a_row >= FULL_BATCHES_TO_BEHIND {
            self.behind_until = Some(now.saturating_add(BEHIND_LEASE_NS));
        }
        if self.behind_until.is_some_and(|until| now >= until) {
            self.behind_until = None;
        }
        self.behind_until.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BATCH: usize = 64;

    #[test]
    fn full_batches_in_a_row_make_a_worker_behind() {
        let mut overload = Overload::default();
        for batch in 1..FULL_BATCHES_TO_BEHIND {
            assert!(!overload.observe(BATCH, BATCH, u64::from(batch)));
        }
        assert!(overload.observe(BATCH, BATCH, 100));
    }

    #[test]
    fn a_batch_that_is_not_full_starts_the_count_again() {
        let mut overload = Overload::default();
        for now in 0..u64::from(FULL_BATCHES_TO_BEHIND) * 4 {
            let received = if now % 16 == 15 { BATCH - 1 } else { BATCH };
            assert!(!overload.observe(received, BATCH, now), "at {now}");
        }
        assert!(!overload.observe(0, BATCH, 1_000));
    }

    #[test]
    fn an_empty_ring_between_full_batches_does_not_break_the_run() {
        let mut overload = Overload::default();
        for batch in 1..FULL_BATCHES_TO_BEHIND {
            let now = u64::from(batch) * 2;
            assert!(!overload.observe(BATCH, BATCH, now));
            assert!(!overload.observe(0, BATCH, now + 1));
        }
        assert!(overload.observe(BATCH, BATCH, 1_000));
    }

    #[test]
    fn being_behind_lasts_a_lease_renewed_by_full_batches() {
        let mut overload = Overload::default();
        for now in 0..u64::from(FULL_BATCHES_TO_BEHIND) {
            overload.observe(BATCH, BATCH, now);
        }
        let start = u64::from(FULL_BATCHES_TO_BEHIND) - 1;
        // The kernel now drops most frames: small batches, or none, keep the worker behind
        // until the lease runs out.
        assert!(overload.observe(3, BATCH, start + BEHIND_LEASE_NS / 2));
        assert!(overload.observe(0, BATCH, start + BEHIND_LEASE_NS - 1));
        assert!(!overload.observe(0, BATCH, start + BEHIND_LEASE_NS));
        // Still flooded: behind again after as many full batches, renewed by each.
        let again = start + BEHIND_LEASE_NS + 1;
        for batch in 0..u64::from(FULL_BATCHES_TO_BEHIND) - 1 {
            assert!(!overload.observe(BATCH, BATCH, again + batch));
        }
        assert!(overload.observe(BATCH, BATCH, again + 100));
        assert!(overload.observe(BATCH, BATCH, again + 100 + BEHIND_LEASE_NS - 1));
        assert!(overload.observe(1, BATCH, again + 100 + 2 * BEHIND_LEASE_NS - 2));
    }

    #[test]
    fn a_batch_smaller_than_the_ring_counts_as_full_when_it_fills_its_capacity() {
        let mut overload = Overload::default();
        for now in 0..u64::from(FULL_BATCHES_TO_BEHIND) {
            overload.observe(8, 8, now);
        }
        assert!(overload.observe(8, 8, 1_000));
    }
}
