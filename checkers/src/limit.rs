//! The restart loop limit (SafeKit's maxloop): at most `count` restarts within `within_ms`; one
//! more, and the node stops and says why, rather than restart a broken application forever.

use std::collections::VecDeque;

/// The restarts made lately.
#[derive(Clone, Debug)]
pub struct RestartLimit {
    count: u32,
    within_ms: u64,
    /// When the restarts of the window were made, oldest first.
    made: VecDeque<u64>,
}

impl RestartLimit {
    /// At most `count` restarts within `within_ms`.
    pub fn new(count: u32, within_ms: u64) -> Self {
        Self {
            count,
            within_ms,
            made: VecDeque::new(),
        }
    }

    /// Whether a restart may be made at `now`; if so, it is counted.
    pub fn try_restart(&mut self, now: u64) -> bool {
        while self
            .made
            .front()
            .is_some_and(|&at| now.saturating_sub(at) >= self.within_ms)
        {
            self.made.pop_front();
        }
        if self.made.len() >= self.count as usize {
            return false;
        }
        self.made.push_back(now);
        true
    }

    /// Forgets the restarts made: an operator started the node afresh.
    pub fn reset(&mut self) {
        self.made.clear();
    }

    /// Restarts counted in the window ending at the last one.
    pub fn recent(&self) -> usize {
        self.made.len()
    }

    /// The limit, for messages: `count` restarts within `within_ms`.
    pub fn limit(&self) -> (u32, u64) {
        (self.count, self.within_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400_000;

    #[test]
    fn three_restarts_a_day_then_no_more_until_the_first_is_a_day_old() {
        let mut limit = RestartLimit::new(3, DAY);
        assert!(limit.try_restart(0));
        assert!(limit.try_restart(1_000));
        assert!(limit.try_restart(2_000));
        assert!(!limit.try_restart(3_000), "a fourth within the day");
        assert_eq!(limit.recent(), 3);
        assert!(!limit.try_restart(DAY - 1));
        assert!(limit.try_restart(DAY), "the first is a day old");
        assert!(!limit.try_restart(DAY + 1));
    }

    #[test]
    fn a_limit_of_zero_allows_no_restart() {
        let mut limit = RestartLimit::new(0, DAY);
        assert!(!limit.try_restart(0));
    }
}
