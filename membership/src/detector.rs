//! Failure detection: a node not heard from for `dead_after` is dead, unless this node itself
//! is the one that was not running. Time is passed in (milliseconds of a monotonic clock), so
//! the detector is tested by simulation.
//!
//! Local health awareness, after Lifeguard (Dadgar et al., 2018): the protocol loop ticks every
//! heartbeat period. A tick that comes late means this node was starved or frozen, and could
//! not have heard anyone meanwhile, so the silence it did not listen to is not held against the
//! others: their last-heard times move forward by the lateness. Each late tick also raises a
//! health penalty that stretches the timeout (by one more `dead_after` per point, up to
//! [`MAX_PENALTY`]), since a node that ran late once is likely to run late again; on-time ticks
//! pay the penalty back one point per [`RECOVERY_TICKS`].

/// The most the timeout is stretched: up to `(1 + MAX_PENALTY) × dead_after`.
pub const MAX_PENALTY: u32 = 8;

/// On-time ticks that pay back one point of penalty.
pub const RECOVERY_TICKS: u32 = 10;

/// How late a tick must be, in heartbeat periods past its time, to count as late.
const LATE_PERIODS: u64 = 1;

/// One node's failure detector over the other configured nodes.
#[derive(Clone, Debug)]
pub struct Detector {
    heartbeat_ms: u64,
    dead_after_ms: u64,
    /// When each node was last heard from; `None`: never (since this node started).
    heard: Vec<Option<u64>>,
    last_tick: Option<u64>,
    penalty: u32,
    on_time: u32,
}

impl Detector {
    /// A detector for `nodes` nodes, none heard yet.
    pub fn new(nodes: usize, heartbeat_ms: u64, dead_after_ms: u64) -> Self {
        Self {
            heartbeat_ms,
            dead_after_ms,
            heard: vec![None; nodes],
            last_tick: None,
            penalty: 0,
            on_time: 0,
        }
    }

    /// Records a heartbeat (already let through by the inbox) from `node` at `now`.
    pub fn heard(&mut self, node: usize, now: u64) {
        if let Some(heard) = self.heard.get_mut(node) {
            *heard = Some(heard.map_or(now, |before| before.max(now)));
        }
    }

    /// The protocol loop's tick at `now`: notices whether it came late. Returns how late it
    /// was in ms (0 when on time).
    pub fn tick(&mut self, now: u64) -> u64 {
        let late = match self.last_tick {
            Some(last) => now.saturating_sub(last).saturating_sub(self.heartbeat_ms),
            None => 0,
        };
        self.last_tick = Some(self.last_tick.map_or(now, |last| last.max(now)));
        if late > self.heartbeat_ms * LATE_PERIODS {
            // The others were not heard because this node was not listening.
            for heard in self.heard.iter_mut().flatten() {
                *heard = (*heard + late).min(now);
            }
            self.penalty = (self.penalty + 1).min(MAX_PENALTY);
            self.on_time = 0;
            return late;
        }
        self.on_time += 1;
        if self.on_time >= RECOVERY_TICKS {
            self.penalty = self.penalty.saturating_sub(1);
            self.on_time = 0;
        }
        0
    }

    /// How long a node may be silent now before it is dead.
    pub fn timeout_ms(&self) -> u64 {
        self.dead_after_ms * (1 + u64::from(self.penalty))
    }

    /// The health penalty: 0 when this node has run on time lately.
    pub fn penalty(&self) -> u32 {
        self.penalty
    }

    /// When `node` will be dead if it stays silent: the first moment [`Detector::alive`] says
    /// no. `None` for a node never heard from.
    pub fn dies_at(&self, node: usize) -> Option<u64> {
        let heard = self.heard.get(node).copied().flatten()?;
        Some(heard.saturating_add(self.timeout_ms()).saturating_add(1))
    }

    /// When the loop last ticked.
    pub fn last_tick(&self) -> Option<u64> {
        self.last_tick
    }

    /// Whether `node` is alive at `now`: heard from within the timeout.
    pub fn alive(&self, node: usize, now: u64) -> bool {
        self.heard
            .get(node)
            .copied()
            .flatten()
            .is_some_and(|heard| now.saturating_sub(heard) <= self.timeout_ms())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEAT: u64 = 100;
    const DEAD: u64 = 500;

    /// Ticks every heartbeat from `from` to `to`, hearing the nodes in `talking` at each.
    fn run(detector: &mut Detector, from: u64, to: u64, talking: &[usize]) {
        let mut now = from;
        while now <= to {
            for &node in talking {
                detector.heard(node, now);
            }
            detector.tick(now);
            now += BEAT;
        }
    }

    #[test]
    fn a_silent_node_dies_after_dead_after() {
        let mut detector = Detector::new(3, BEAT, DEAD);
        run(&mut detector, 0, 1000, &[1, 2]);
        run(&mut detector, 1100, 1500, &[2]);
        assert!(detector.alive(1, 1500), "last heard at 1000: 500 ms ago");
        run(&mut detector, 1600, 1600, &[2]);
        assert!(!detector.alive(1, 1600), "601 ms of silence");
        assert!(detector.alive(2, 1600));
        assert!(!detector.alive(0, 1600), "never heard");
        assert!(!detector.alive(7, 1600), "not a node");
    }

    #[test]
    fn a_frozen_node_does_not_declare_the_others_dead_when_it_resumes() {
        let mut detector = Detector::new(3, BEAT, DEAD);
        run(&mut detector, 0, 1000, &[1, 2]);
        // Frozen (SIGSTOP, or starved) for 5 s: the next tick comes at 6000.
        assert_eq!(detector.tick(6000), 4900);
        assert!(detector.alive(1, 6000) && detector.alive(2, 6000));
        assert_eq!(detector.penalty(), 1);
        assert_eq!(detector.timeout_ms(), 2 * DEAD);
        // Node 2 speaks again; node 1 stays silent and dies, later than usual.
        run(&mut detector, 6100, 6900, &[2]);
        assert!(detector.alive(1, 6900));
        run(&mut detector, 7000, 7000, &[2]);
        assert!(!detector.alive(1, 7000));
        assert!(detector.alive(2, 7000));
    }

    #[test]
    fn the_penalty_is_paid_back_by_ticks_on_time() {
        let mut detector = Detector::new(2, BEAT, DEAD);
        let mut now = 0;
        for _ in 0..20 {
            detector.tick(now);
            now += 3 * BEAT;
        }
        assert_eq!(
            detector.penalty(),
            MAX_PENALTY,
            "late every time, up to the cap"
        );
        assert_eq!(detector.timeout_ms(), (1 + u64::from(MAX_PENALTY)) * DEAD);
        run(
            &mut detector,
            now,
            now + BEAT * u64::from(RECOVERY_TICKS * MAX_PENALTY),
            &[],
        );
        assert_eq!(detector.penalty(), 0);
        assert_eq!(detector.timeout_ms(), DEAD);
    }

    #[test]
    fn a_tick_slightly_late_is_on_time() {
        let mut detector = Detector::new(2, BEAT, DEAD);
        detector.tick(0);
        assert_eq!(detector.tick(150), 0, "half a period of jitter");
        assert_eq!(
            detector.tick(451),
            201,
            "two periods and a bit after the last"
        );
        assert_eq!(detector.penalty(), 1);
    }

    #[test]
    fn a_clock_that_goes_back_changes_nothing() {
        let mut detector = Detector::new(2, BEAT, DEAD);
        run(&mut detector, 0, 1000, &[1]);
        assert_eq!(detector.tick(500), 0);
        detector.heard(1, 400);
        assert!(detector.alive(1, 1000), "the later time is kept");
        assert_eq!(detector.penalty(), 0);
    }
}
