//! The count of the node's connections that still drain, made from its kernel's sockets
//! ([`Sockets::draining_connections`]) on a thread of its own: one dump costs about 1.5 µs a
//! TCP socket (0.4 to 0.5 s for 300,000 on a 2-core VM), which the membership thread,
//! real-time and sending the heartbeats, must not spend. The thread counts under the modes
//! installed last, at once and then again while some bucket drains, every [`MIN_INTERVAL`]
//! or, when the dumps are long, every [`SPAN`] of a dump's time; the membership thread reads
//! the last count made under the generation it asks about.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use herd_dataplane::sockets::Sockets;
use herd_packet::table::ModeTable;
use herd_packet::FarmRules;

/// How often, at most, the connections are counted again while some bucket drains: the
/// membership thread asks as often.
pub const MIN_INTERVAL: Duration = Duration::from_millis(250);

/// The interval between counts, in times the last count's duration, when that is longer: the
/// thread takes a fifth of a core at most.
pub const SPAN: u32 = 5;

/// What the counting thread and its users share.
#[derive(Default)]
struct State {
    /// The modes to count under while some bucket drains.
    modes: Option<Arc<ModeTable>>,
    /// The generation of the last count and the count.
    counted: Option<(u64, u64)>,
    stop: bool,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays whole whatever panicked while holding it: plain assignments.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The counting thread.
pub struct DrainCount {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl DrainCount {
    /// Starts counting the connections `rules` balance through `sockets` (opened in the
    /// namespace whose sockets count).
    pub fn start(mut sockets: Sockets, rules: Arc<FarmRules>) -> std::io::Result<Self> {
        let shared = Arc::new(Shared::default());
        let counting = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("herd-drain-count".into())
            .spawn(move || counting.run(&mut sockets, &rules))?;
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    /// Counts under `modes` from now on: at once when some bucket drains; when none does,
    /// nothing drains and the count is 0 without asking the kernel.
    pub fn install(&self, modes: ModeTable) {
        let mut state = self.shared.lock();
        if modes.drains() {
            state.modes = Some(Arc::new(modes));
        } else {
            state.counted = Some((modes.generation(), 0));
            state.modes = None;
        }
        self.shared.changed.notify_one();
    }

    /// The last count made under the modes of install `generation`; `None` while there is
    /// none yet.
    pub fn counted(&self, generation: u64) -> Option<u64> {
        match self.shared.lock().counted {
            Some((counted, count)) if counted == generation => Some(count),
            _ => None,
        }
    }
}

impl Drop for DrainCount {
    /// Stops the thread and waits for it (at most the end of a dump).
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.changed.notify_one();
        if let Some(thread) = self.thread.take() {
            thread
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        }
    }
}

impl Shared {
    /// Counts under each new draining table at once and again as the module says, until told
    /// to stop. A failed count is logged once per table and leaves the previous one (the
    /// drain then ends at `drain_s`).
    fn run(&self, sockets: &mut Sockets, rules: &FarmRules) {
        let mut failed_generation = None;
        let mut state = self.lock();
        loop {
            state = self
                .changed
                .wait_while(state, |state| !state.stop && state.modes.is_none())
                .unwrap_or_else(PoisonError::into_inner);
            let Some(modes) = state.modes.clone().filter(|_| !state.stop) else {
                return;
            };
            drop(state);
            let started = Instant::now();
            let result = sockets.draining_connections(rules, &modes);
            let interval = (started.elapsed() * SPAN).max(MIN_INTERVAL);
            state = self.lock();
            let generation = modes.generation();
            let current = state.modes.as_ref().map(|modes| modes.generation());
            match result {
                Ok(count) if current == Some(generation) => {
                    state.counted = Some((generation, count));
                }
                Ok(_) => continue,
                Err(error) if failed_generation != Some(generation) => {
                    failed_generation = Some(generation);
                    tracing::warn!("cannot count the connections that still drain: {error}; the drain ends at drain_s if this goes on");
                }
                Err(_) => {}
            }
            state = self
                .changed
                .wait_timeout_while(state, interval, |state| {
                    !state.stop
                        && state.modes.as_ref().map(|modes| modes.generation()) == Some(generation)
                })
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herd_packet::table::BucketMode;

    fn counter() -> DrainCount {
        let config = herd_packet::craft::farm_config(&[], 4, [0; 16], 1, Vec::new());
        DrainCount::start(
            Sockets::open().unwrap(),
            Arc::new(FarmRules::from_config(&config)),
        )
        .unwrap()
    }

    #[test]
    fn a_table_without_draining_buckets_counts_nothing_at_once() {
        let count = counter();
        assert_eq!(count.counted(1), None);
        count.install(ModeTable::new(1, vec![BucketMode::OWN; 4]).unwrap());
        assert_eq!(count.counted(1), Some(0));
        assert_eq!(count.counted(2), None);
    }

    #[test]
    fn a_draining_table_is_counted_by_the_thread() {
        let count = counter();
        count.install(ModeTable::new(7, vec![BucketMode::DRAIN; 4]).unwrap());
        let deadline = Instant::now() + Duration::from_secs(5);
        // No VIP: nothing of this process's namespace counts.
        while count.counted(7).is_none() {
            assert!(Instant::now() < deadline, "never counted");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(count.counted(7), Some(0));
    }
}
