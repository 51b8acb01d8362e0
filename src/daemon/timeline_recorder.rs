//! The thread that fills the node's timeline: it asks the supervisor for the node's status
//! every [`PERIOD`] and records what changed since the previous one.

use std::time::Duration;

use crossbeam_channel::Sender;
use herd_membership::driver;

use super::shutdown::Shutdown;
use crate::control::{Incoming, Reply, Request};
use crate::status::Status;
use crate::timeline::{self, Timeline};

/// How often the status is sampled: a state held for less may go unseen.
pub const PERIOD: Duration = Duration::from_millis(250);

/// How long a sample waits for the supervisor, which may be running a script.
const ANSWER_WAIT: Duration = Duration::from_secs(5);

/// Records into `timeline` the events between successive statuses asked of the supervisor
/// through `requests`, until the shutdown.
pub fn run(timeline: &Timeline, requests: &Sender<Incoming>, shutdown: &Shutdown) {
    let mut previous: Option<Status> = None;
    while !shutdown.wait(PERIOD) {
        let Some(status) = sample(requests) else {
            continue;
        };
        if let Some(previous) = &previous {
            for event in timeline::events_between(previous, &status, driver::wall_ms()) {
                timeline.record(event);
            }
        }
        previous = Some(status);
    }
}

/// The node's status now, if the supervisor answers in time.
fn sample(requests: &Sender<Incoming>) -> Option<Status> {
    let (reply, answer) = crossbeam_channel::bounded(1);
    requests.send((Request::Status, reply)).ok()?;
    match answer.recv_timeout(ANSWER_WAIT).ok()? {
        Reply::Status(status) => Some(*status),
        Reply::Done(_) | Reply::Refused(_) | Reply::Farm(_) => None,
    }
}
