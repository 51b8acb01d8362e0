//! The limit on failed logins: [`FAILURES`] per client source within [`WINDOW`], after which
//! the source is told to wait. A source is an IPv4 address or an IPv6 /64: one host on an IPv6
//! link holds a whole /64, so counting its addresses one by one would multiply its tries.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The failed logins an address may make within [`WINDOW`].
pub const FAILURES: usize = 5;

/// How long a failed login counts against its address.
pub const WINDOW: Duration = Duration::from_secs(60);

/// The most addresses tracked: past it, the addresses not tracked share one count, so that
/// many addresses cannot grow the table without bound nor escape the limit.
const MAX_ADDRESSES: usize = 1024;

/// Where the addresses not tracked are counted.
const OTHERS: IpAddr = IpAddr::V6(Ipv6Addr::UNSPECIFIED);

/// The recent failed logins, by client address.
#[derive(Default)]
pub struct LoginLimit {
    failures: Mutex<HashMap<IpAddr, VecDeque<Instant>>>,
}

impl LoginLimit {
    /// `Err` with how long `address` must wait before its next login, when it has failed
    /// [`FAILURES`] times within the last [`WINDOW`].
    pub fn check(&self, address: IpAddr) -> Result<(), Duration> {
        let address = source(address);
        let now = Instant::now();
        let mut failures = self.lock();
        let key = Self::key(&failures, address);
        let Some(times) = failures.get_mut(&key) else {
            return Ok(());
        };
        times.retain(|&at| now.duration_since(at) < WINDOW);
        match times.front() {
            Some(&oldest) if times.len() >= FAILURES => {
                Err(WINDOW.saturating_sub(now.duration_since(oldest)))
            }
            _ => Ok(()),
        }
    }

    /// Counts a failed login of `address`.
    pub fn failed(&self, address: IpAddr) {
        let address = source(address);
        let now = Instant::now();
        let mut failures = self.lock();
        if failures.len() >= MAX_ADDRESSES && !failures.contains_key(&address) {
            failures.retain(|_, times| {
                times
                    .back()
                    .is_some_and(|&at| now.duration_since(at) < WINDOW)
            });
        }
        let key = Self::key(&failures, address);
        let times = failures.entry(key).or_default();
        if times.len() == FAILURES {
            times.pop_front();
        }
        times.push_back(now);
    }

    /// Forgets the failures of `address`, which has just logged in.
    pub fn forget(&self, address: IpAddr) {
        self.lock().remove(&source(address));
    }

    /// Where the failures of `address` are counted.
    fn key(failures: &HashMap<IpAddr, VecDeque<Instant>>, address: IpAddr) -> IpAddr {
        if failures.contains_key(&address) || failures.len() < MAX_ADDRESSES {
            address
        } else {
            OTHERS
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, VecDeque<Instant>>> {
        self.failures
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

/// Where the failures of `address` count: itself for IPv4 (an IPv4-mapped IPv6 address is
/// its IPv4 address), its /64 for IPv6.
fn source(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & !u128::from(u64::MAX))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_failures_then_wait() {
        let limit = LoginLimit::default();
        let address: IpAddr = "198.18.0.9".parse().unwrap();
        let other: IpAddr = "198.18.0.10".parse().unwrap();
        for _ in 0..FAILURES {
            assert_eq!(limit.check(address), Ok(()));
            limit.failed(address);
        }
        let wait = limit.check(address).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= WINDOW, "{wait:?}");
        assert_eq!(limit.check(other), Ok(()));
        limit.forget(address);
        assert_eq!(limit.check(address), Ok(()));
    }

    #[test]
    fn addresses_past_the_bound_share_a_count() {
        let limit = LoginLimit::default();
        for n in 0..MAX_ADDRESSES as u32 {
            limit.failed(IpAddr::from(u32::to_be_bytes(0xc612_0000 + n)));
        }
        let late: IpAddr = "2001:db8::1".parse().unwrap();
        let later: IpAddr = "2001:db8:1::2".parse().unwrap();
        for _ in 0..FAILURES {
            limit.failed(late);
        }
        assert!(limit.check(later).is_err());
        assert!(limit.lock().len() <= MAX_ADDRESSES + 1);
    }

    #[test]
    fn the_addresses_of_one_ipv6_64_share_a_count() {
        let limit = LoginLimit::default();
        for n in 0..FAILURES {
            limit.failed(format!("2001:db8:7:7::{n:x}").parse().unwrap());
        }
        let same_64: IpAddr = "2001:db8:7:7:ffff::1".parse().unwrap();
        let next_64: IpAddr = "2001:db8:7:8::1".parse().unwrap();
        assert!(limit.check(same_64).is_err());
        assert_eq!(limit.check(next_64), Ok(()));
        let mapped: IpAddr = "::ffff:198.18.0.9".parse().unwrap();
        for _ in 0..FAILURES {
            limit.failed(mapped);
        }
        assert!(limit.check("198.18.0.9".parse().unwrap()).is_err());
    }
}
