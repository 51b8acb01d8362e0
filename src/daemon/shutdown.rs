//! The daemon's one shutdown signal. Every thread of the daemon watches it, each in the way
//! that suits what it waits on: a wait that ends early (for the threads that probe now and
//! then), a flag (for the packet workers, which never wait), hooks run once when it comes (for
//! threads blocked in something else: the membership thread's event loop, the signal
//! iterator), and [`Shutdown::watch`] for the threads that accept connections.

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};

/// Nothing is ever sent on the shutdown channel: it only closes.
pub enum Never {}

/// What is run once when the shutdown comes.
type Hook = Box<dyn FnOnce() + Send>;

/// The shutdown signal, shared by cloning.
#[derive(Clone)]
pub struct Shutdown {
    inner: Arc<Inner>,
}

struct Inner {
    flag: Arc<AtomicBool>,
    closed: Receiver<Never>,
    /// Dropped when the shutdown comes, which closes `closed`.
    sender: Mutex<Option<Sender<Never>>>,
    /// `None` once run.
    hooks: Mutex<Option<Vec<Hook>>>,
}

impl Default for Shutdown {
    fn default() -> Self {
        let (sender, closed) = crossbeam_channel::bounded(0);
        Self {
            inner: Arc::new(Inner {
                flag: Arc::new(AtomicBool::new(false)),
                closed,
                sender: Mutex::new(Some(sender)),
                hooks: Mutex::new(Some(Vec::new())),
            }),
        }
    }
}

impl Shutdown {
    /// Signals the shutdown to every thread; later calls do nothing.
    pub fn trigger(&self) {
        self.inner.flag.store(true, Ordering::Release);
        drop(lock(&self.inner.sender).take());
        let hooks = lock(&self.inner.hooks).take();
        for hook in hooks.into_iter().flatten() {
            hook();
        }
    }

    /// Whether the shutdown has come.
    pub fn triggered(&self) -> bool {
        self.inner.flag.load(Ordering::Acquire)
    }

    /// A flag raised at the shutdown, for loops that never wait.
    pub fn flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.inner.flag)
    }

    /// Waits `timeout`, or less if the shutdown comes; returns whether it has come.
    pub fn wait(&self, timeout: Duration) -> bool {
        match self.inner.closed.recv_timeout(timeout) {
            Ok(never) => match never {},
            Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => true,
        }
    }

    /// Runs `hook` when the shutdown comes, or now if it has come.
    pub fn on_trigger(&self, hook: impl FnOnce() + Send + 'static) {
        let mut hooks = lock(&self.inner.hooks);
        match hooks.as_mut() {
            Some(hooks) => hooks.push(Box::new(hook)),
            None => {
                drop(hooks);
                hook();
            }
        }
    }

    /// A guard that signals the shutdown when dropped, however its scope is left.
    pub fn guard(&self) -> Guard<'_> {
        Guard(self)
    }

    /// Watches a listening socket `fd` for connections until the shutdown.
    pub fn watch(&self, fd: RawFd) -> io::Result<Readiness> {
        const LISTENER: Token = Token(0);
        const WAKER: Token = Token(1);
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut SourceFd(&fd), LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let wake = Arc::clone(&waker);
        self.on_trigger(move || {
            // The poll is gone when its thread has already ended.
            let _ = wake.wake();
        });
        Ok(Readiness {
            poll,
            _waker: waker,
            events: Events::with_capacity(4),
            shutdown: self.clone(),
        })
    }
}

/// Signals the shutdown when dropped; see [`Shutdown::guard`].
pub struct Guard<'a>(&'a Shutdown);

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        self.0.trigger();
    }
}

/// How long an accepting thread rests after a failed accept, rather than spin on the error.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// A listening socket watched until the shutdown; see [`Shutdown::watch`].
pub struct Readiness {
    poll: Poll,
    /// Kept open as long as the poll: closing it would take back a wake-up not yet seen.
    _waker: Arc<Waker>,
    events: Events,
    shutdown: Shutdown,
}

impl Readiness {
    /// The next connection `accept` takes from the watched (non-blocking) socket, waiting for
    /// one; `None` once the shutdown has come. A failed accept (out of file descriptors, for
    /// one) is logged as `what`'s and rested on for [`ACCEPT_BACKOFF`] rather than spun on.
    pub fn accept<S>(
        &mut self,
        what: &str,
        mut accept: impl FnMut() -> io::Result<S>,
    ) -> io::Result<Option<S>> {
        loop {
            if self.shutdown.triggered() {
                return Ok(None);
            }
            match accept() {
                Ok(stream) => return Ok(Some(stream)),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                // Every waiting connection taken: the poll, edge-triggered, wakes at the next.
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    if !self.wait()? {
                        return Ok(None);
                    }
                }
                Err(error) => {
                    tracing::warn!("{what}: cannot accept a connection: {error}");
                    if self.shutdown.wait(ACCEPT_BACKOFF) {
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// Waits until the socket may have a connection to accept (`true`) or the shutdown has
    /// come (`false`).
    fn wait(&mut self) -> io::Result<bool> {
        loop {
            if self.shutdown.triggered() {
                return Ok(false);
            }
            match self.poll.poll(&mut self.events, None) {
                Ok(()) => {}
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(error),
            }
            if self.shutdown.triggered() {
                return Ok(false);
            }
            if !self.events.is_empty() {
                return Ok(true);
            }
        }
    }
}

/// Locks `mutex`, whose data a panicking thread cannot leave half-changed (an `Option`
/// taken whole).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::os::fd::AsRawFd;
    use std::time::Instant;

    use super::*;

    #[test]
    fn every_way_of_watching_sees_the_shutdown_once() {
        let shutdown = Shutdown::default();
        let flag = shutdown.flag();
        let (ran, hooks) = crossbeam_channel::unbounded();
        let first = ran.clone();
        shutdown.on_trigger(move || first.send("before").unwrap());
        assert!(!shutdown.wait(Duration::from_millis(1)));
        let waiter = {
            let shutdown = shutdown.clone();
            std::thread::spawn(move || shutdown.wait(Duration::from_secs(60)))
        };
        shutdown.trigger();
        shutdown.trigger();
        assert!(waiter.join().unwrap(), "a waiter wakes at once");
        assert!(flag.load(Ordering::Acquire));
        assert!(shutdown.triggered());
        shutdown.on_trigger(move || ran.send("after").unwrap());
        assert_eq!(hooks.try_iter().collect::<Vec<_>>(), ["before", "after"]);
    }

    #[test]
    fn a_watched_listener_wakes_for_a_connection_and_for_the_shutdown() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let shutdown = Shutdown::default();
        let mut readiness = shutdown.watch(listener.as_raw_fd()).unwrap();
        let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        assert!(readiness.wait().unwrap(), "a connection waits");
        listener.accept().unwrap();
        let started = Instant::now();
        let trigger = {
            let shutdown = shutdown.clone();
            std::thread::spawn(move || shutdown.trigger())
        };
        assert!(!readiness.wait().unwrap(), "the shutdown ends the wait");
        assert!(started.elapsed() < Duration::from_secs(5));
        trigger.join().unwrap();
    }
}
