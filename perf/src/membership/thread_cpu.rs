//! The CPU time of one thread of this process, read from another thread: the kernel's
//! per-thread CPU clock, in nanoseconds, user and system time together (on this kernel,
//! without IRQ time accounting, the softirq work a thread's sends cause, such as delivering
//! a datagram on the loopback, is counted to it too).

use std::os::unix::thread::JoinHandleExt;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::bail;

/// The CPU clock of a live thread.
#[derive(Clone, Copy, Debug)]
pub struct ThreadClock(libc::clockid_t);

impl ThreadClock {
    /// The clock of `thread`, which must still run when the clock is read.
    pub fn of<T>(thread: &JoinHandle<T>) -> anyhow::Result<Self> {
        let mut clock: libc::clockid_t = 0;
        // SAFETY: the thread has not been joined (the handle is borrowed), so its pthread_t
        // is valid; `clock` is a valid place for the result.
        let error = unsafe { libc::pthread_getcpuclockid(thread.as_pthread_t(), &mut clock) };
        if error != 0 {
            bail!(
                "cannot get a thread's CPU clock: {}",
                std::io::Error::from_raw_os_error(error)
            );
        }
        Ok(ThreadClock(clock))
    }

    /// The CPU time the thread has used so far; fails once it has ended.
    pub fn used(self) -> anyhow::Result<Duration> {
        let mut time = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `time` is a valid timespec to write to; an invalid clock is an error return.
        if unsafe { libc::clock_gettime(self.0, &mut time) } != 0 {
            bail!(
                "cannot read a thread's CPU clock (has it ended?): {}",
                std::io::Error::last_os_error()
            );
        }
        Ok(Duration::new(
            u64::try_from(time.tv_sec).unwrap_or(0),
            u32::try_from(time.tv_nsec).unwrap_or(0),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_thread_uses_cpu_time_and_an_ended_one_has_no_clock() {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let mut spins: u64 = 0;
            while stopped.try_recv().is_err() {
                spins = spins.wrapping_add(1);
                std::hint::black_box(spins);
            }
        });
        let clock = ThreadClock::of(&thread).unwrap();
        let first = clock.used().unwrap();
        let start = std::time::Instant::now();
        while clock.used().unwrap() < first + Duration::from_millis(20) {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "a spinning thread used no CPU time in 10 s"
            );
            std::thread::yield_now();
        }
        stop.send(()).unwrap();
        thread.join().unwrap();
        assert!(clock.used().is_err(), "the thread has ended");
    }
}
