//! SIGINT and SIGTERM as events: a thread of its own takes them from signal-hook's iterator
//! and sends each to the supervisor, until the shutdown.

use std::thread::JoinHandle;

use anyhow::Context;
use crossbeam_channel::Sender;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use super::shutdown::Shutdown;

/// A signal that asks the node to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stop {
    /// The signal's number.
    pub signal: i32,
}

/// Installs the handlers and starts the thread that sends each signal to `stops`; it ends at
/// the shutdown. Installed before the setup, so that a signal then lets the setup finish and
/// be undone rather than kill herd halfway.
pub fn listen(stops: Sender<Stop>, shutdown: &Shutdown) -> anyhow::Result<JoinHandle<()>> {
    let mut signals =
        Signals::new([SIGINT, SIGTERM]).context("cannot install the signal handlers")?;
    let handle = signals.handle();
    shutdown.on_trigger(move || handle.close());
    std::thread::Builder::new()
        .name("herd-signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                if stops.send(Stop { signal }).is_err() {
                    return;
                }
            }
        })
        .context("cannot start the signal thread")
}
