//! The kernel clocks the dataplane and the eBPF programs share, in nanoseconds.

/// The time of `clock` in nanoseconds.
pub fn now_ns(clock: libc::clockid_t) -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec to write to. A clock Linux lacks leaves it zero.
    unsafe { libc::clock_gettime(clock, &mut now) };
    (now.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(now.tv_nsec as u64)
}

/// The time of `CLOCK_MONOTONIC_COARSE` (the time of the last tick): the clock of the flow
/// tables' `last_seen` in both dataplane modes and of the in-kernel liveness check
/// (`bpf_ktime_get_coarse_ns`).
pub fn coarse_monotonic_ns() -> u64 {
    now_ns(libc::CLOCK_MONOTONIC_COARSE)
}
