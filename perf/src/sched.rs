//! Threads: which core they run on, at what priority, and how much CPU they used. The
//! machine may be shared (other builds, other benchmarks), so herd-perf measures the CPU time
//! of its own threads rather than the load of a core, and raises their priority for the short
//! time they run.

use std::fs;
use std::io;
use std::time::Duration;

use anyhow::{bail, Context};

/// The nice value of the generator and the receiver's NAPI thread: the highest, so that a
/// compiler on the same core takes about 1 % of it instead of half.
const NICE: libc::c_int = -20;

/// The calling thread's id.
pub fn current() -> libc::pid_t {
    // SAFETY: gettid has no preconditions and cannot fail.
    unsafe { libc::gettid() }
}

/// Pins thread `tid` (of any process, or a kernel thread) to `core`.
pub fn pin(tid: libc::pid_t, core: usize) -> anyhow::Result<()> {
    if core >= libc::CPU_SETSIZE as usize {
        bail!("core {core} is beyond what the kernel's CPU sets hold");
    }
    // SAFETY: cpu_set_t is plain data for which all zeros is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `core` is below CPU_SETSIZE, checked above, so CPU_SET stays inside `set`.
    unsafe { libc::CPU_SET(core, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the size passed.
    if unsafe { libc::sched_setaffinity(tid, std::mem::size_of_val(&set), &set) } != 0 {
        return Err(io::Error::last_os_error())
            .with_context(|| format!("cannot pin thread {tid} to core {core}"));
    }
    Ok(())
}

/// Gives thread `tid` the highest priority of normal scheduling (nice -20). Not real-time
/// scheduling, which would starve the latency readers sharing the receiver's core.
pub fn favour(tid: libc::pid_t) -> anyhow::Result<()> {
    // SAFETY: setpriority only reads its arguments; on Linux PRIO_PROCESS with a thread id
    // changes that one thread.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, NICE) } != 0 {
        return Err(io::Error::last_os_error())
            .with_context(|| format!("cannot raise the priority of thread {tid}"));
    }
    Ok(())
}

/// Gives the calling thread the lowest real-time priority (SCHED_FIFO 1), so that it runs as
/// soon as it wakes. For the latency readers: they share the receiver's core with the NAPI
/// thread, which under load would otherwise keep the core for a whole time slice (milliseconds)
/// before a woken reader runs. A reader cannot starve the NAPI thread: it sleeps as soon as its
/// socket is empty, and only the NAPI thread fills the socket.
pub fn prompt() -> anyhow::Result<()> {
    let param = libc::sched_param { sched_priority: 1 };
    // SAFETY: `param` is a valid sched_param that outlives the call; pid 0 is the calling
    // thread.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) } != 0 {
        return Err(io::Error::last_os_error())
            .context("cannot give the latency reader a real-time priority");
    }
    Ok(())
}

/// The CPU time thread `tid` has run for, to the nanosecond (`/proc/<tid>/schedstat`).
pub fn runtime(tid: libc::pid_t) -> anyhow::Result<Duration> {
    let path = format!("/proc/{tid}/schedstat");
    let text = fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    parse_schedstat(&text).with_context(|| format!("{path} does not start with a run time"))
}

/// The CPU time this whole process has run for, every thread counted, those that ended too
/// (the kernel's io_uring workers among them).
pub fn process_runtime() -> anyhow::Result<Duration> {
    // SAFETY: timespec is plain data, valid when zeroed.
    let mut now: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: `now` is a valid timespec for the call to write.
    if unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut now) } != 0 {
        return Err(io::Error::last_os_error()).context("cannot read the process's CPU time");
    }
    Ok(Duration::new(now.tv_sec as u64, now.tv_nsec as u32))
}

/// The first field of a schedstat line: nanoseconds spent on a CPU.
fn parse_schedstat(text: &str) -> Option<Duration> {
    let ns = text.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedstat_starts_with_the_run_time() {
        assert_eq!(
            parse_schedstat("227308298 35659502 865\n"),
            Some(Duration::from_nanos(227_308_298))
        );
        assert_eq!(parse_schedstat(""), None);
        assert_eq!(parse_schedstat("x 1 2"), None);
    }

    #[test]
    fn this_threads_run_time_is_readable() {
        assert!(runtime(current()).is_ok());
        assert!(runtime(-1).is_err());
    }
}
