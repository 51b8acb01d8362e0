//! One check's health from its results: `fall` consecutive failures make it failed, `rise`
//! consecutive successes healthy again (as HAProxy's checks do), so that one lost probe does not
//! withdraw a node and one lucky probe does not bring it back.

/// What a check says of the application.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Not enough results yet: a check starts here and must rise to be healthy.
    Unknown,
    /// `rise` successes in a row (and no `fall` failures since).
    Healthy,
    /// `fall` failures in a row (and no `rise` successes since).
    Failed,
}

impl Health {
    /// Every health, in the order they are declared.
    pub const ALL: [Health; 3] = [Health::Unknown, Health::Healthy, Health::Failed];
}

impl std::fmt::Display for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Health::Unknown => "unknown",
            Health::Healthy => "healthy",
            Health::Failed => "failed",
        })
    }
}

/// The health of one check.
#[derive(Clone, Debug)]
pub struct Tracker {
    fall: u32,
    rise: u32,
    health: Health,
    /// Consecutive results of the same kind as the last one.
    streak: u32,
    last_ok: bool,
}

impl Tracker {
    /// A check that fails after `fall` failures in a row and recovers after `rise` successes
    /// (each at least 1).
    pub fn new(fall: u32, rise: u32) -> Self {
        Self {
            fall: fall.max(1),
            rise: rise.max(1),
            health: Health::Unknown,
            streak: 0,
            last_ok: false,
        }
    }

    /// The same check, its results forgotten: after the application restarts, it must rise
    /// again.
    pub fn restarted(&self) -> Self {
        Self::new(self.fall, self.rise)
    }

    /// The health now.
    pub fn health(&self) -> Health {
        self.health
    }

    /// Records one result; returns the new health when it changed.
    pub fn record(&mut self, ok: bool) -> Option<Health> {
        if ok == self.last_ok {
            self.streak = self.streak.saturating_add(1);
        } else {
            self.last_ok = ok;
            self.streak = 1;
        }
        let next = match (ok, self.health) {
            (true, Health::Healthy) | (false, Health::Failed) => return None,
            (true, _) if self.streak >= self.rise => Health::Healthy,
            (false, _) if self.streak >= self.fall => Health::Failed,
            _ => return None,
        };
        self.health = next;
        Some(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(tracker: &mut Tracker, results: &str) -> Vec<Option<Health>> {
        results.chars().map(|c| tracker.record(c == '+')).collect()
    }

    #[test]
    fn a_check_rises_then_falls_then_rises() {
        let mut tracker = Tracker::new(3, 2);
        assert_eq!(tracker.health(), Health::Unknown);
        let changes = run(&mut tracker, "++-+---++");
        assert_eq!(
            changes,
            [
                None,
                Some(Health::Healthy),
                None,
                None,
                None,
                None,
                Some(Health::Failed),
                None,
                Some(Health::Healthy),
            ]
        );
    }

    #[test]
    fn isolated_results_change_nothing() {
        let mut tracker = Tracker::new(3, 2);
        run(&mut tracker, "++");
        assert!(run(&mut tracker, "--+--+--+").iter().all(Option::is_none));
        assert_eq!(tracker.health(), Health::Healthy);
        run(&mut tracker, "---");
        assert!(run(&mut tracker, "+-+-+-").iter().all(Option::is_none));
        assert_eq!(tracker.health(), Health::Failed);
    }

    #[test]
    fn a_check_that_never_succeeds_fails_from_unknown() {
        let mut tracker = Tracker::new(2, 5);
        assert_eq!(run(&mut tracker, "--"), [None, Some(Health::Failed)]);
    }

    #[test]
    fn zero_thresholds_count_as_one() {
        let mut tracker = Tracker::new(0, 0);
        assert_eq!(tracker.record(true), Some(Health::Healthy));
        assert_eq!(tracker.record(false), Some(Health::Failed));
    }
}
