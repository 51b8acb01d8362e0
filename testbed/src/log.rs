//! A process's log, kept line by line with the moment each line was read, so that a caller
//! can wait, with a deadline, for a line it expects, and time log events against its own.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A line of the log.
#[derive(Clone, Debug)]
pub struct Line {
    /// Its index in the log: where to look on from.
    pub index: usize,
    /// When the line was read (a few microseconds after it was written).
    pub at: Instant,
    /// The line, without its end.
    pub text: String,
}

/// The lines logged so far, and a signal for each new one.
#[derive(Debug, Default)]
pub struct Log {
    lines: Mutex<Vec<Line>>,
    grew: Condvar,
}

impl Log {
    fn lock(&self) -> MutexGuard<'_, Vec<Line>> {
        // A reader that panicked cannot leave the list half-written: pushes are whole.
        self.lines
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds a line, read now.
    pub fn push(&self, text: String) {
        let mut lines = self.lock();
        let index = lines.len();
        lines.push(Line {
            index,
            at: Instant::now(),
            text,
        });
        self.grew.notify_all();
    }

    /// How many lines there are so far: a starting point for [`Log::wait_for`].
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether nothing was logged yet.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Waits up to `timeout` for a line, from the `from`th one on, that `matches`; returns it.
    pub fn wait_for(
        &self,
        from: usize,
        matches: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> Option<Line> {
        let deadline = Instant::now() + timeout;
        let mut lines = self.lock();
        let mut next = from;
        loop {
            let start = next.min(lines.len());
            if let Some(line) = lines[start..].iter().find(|line| matches(&line.text)) {
                return Some(line.clone());
            }
            next = lines.len();
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            lines = self
                .grew
                .wait_timeout(lines, left)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
    }

    /// The lines from the `from`th one on that `matches`, without waiting.
    pub fn lines_since(&self, from: usize, matches: impl Fn(&str) -> bool) -> Vec<Line> {
        let lines = self.lock();
        lines[from.min(lines.len())..]
            .iter()
            .filter(|line| matches(&line.text))
            .cloned()
            .collect()
    }

    /// The last `count` lines' text.
    pub fn tail(&self, count: usize) -> Vec<String> {
        let lines = self.lock();
        lines[lines.len().saturating_sub(count)..]
            .iter()
            .map(|line| line.text.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_line_logged_later_is_awaited_and_an_earlier_one_is_skipped() {
        let log = Arc::new(Log::default());
        log.push("running: one".to_owned());
        let from = log.len();
        let writer = Arc::clone(&log);
        let thread = std::thread::spawn(move || {
            writer.push("other".to_owned());
            writer.push("running: two".to_owned());
        });
        let line = log
            .wait_for(from, |l| l.starts_with("running:"), Duration::from_secs(10))
            .expect("the second line comes");
        thread.join().unwrap();
        assert_eq!((line.index, line.text.as_str()), (2, "running: two"));
        assert_eq!(log.lines_since(0, |l| l.contains("running")).len(), 2);
        assert_eq!(log.tail(2), ["other", "running: two"]);
    }

    #[test]
    fn waiting_gives_up_at_the_deadline() {
        let log = Log::default();
        let started = Instant::now();
        assert!(log
            .wait_for(0, |_| true, Duration::from_millis(50))
            .is_none());
        assert!(started.elapsed() >= Duration::from_millis(50));
        assert!(log.is_empty());
    }
}
