//! The node's timeline: what happened to the farm as this node saw it (views, deaths, joins,
//! leaves, drains, check failures, restarts), with wall-clock times, kept for the console.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// How many events a timeline keeps: the oldest go first.
pub const CAPACITY: usize = 200;

/// What kind of thing happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A new view of the farm: who is a member.
    View,
    /// A node stopped being heard and was declared dead.
    Death,
    /// A node joined the view.
    Join,
    /// A node left the view on purpose.
    Leave,
    /// A drain began or ended.
    Drain,
    /// A check failed.
    CheckFailed,
    /// A failed check recovered.
    CheckRecovered,
    /// The application was restarted.
    Restart,
    /// The node's own state changed.
    State,
}

/// One thing that happened.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// When, in ms since the Unix epoch.
    pub at_ms: u64,
    /// The node it happened to.
    pub node: String,
    /// What kind of thing.
    pub kind: EventKind,
    /// What happened, in words.
    pub text: String,
}

/// The latest [`CAPACITY`] events, shared between the thread that records them and the servers
/// that show them.
#[derive(Debug, Default)]
pub struct Timeline {
    events: Mutex<VecDeque<Event>>,
}

impl Timeline {
    /// Adds `event`, forgetting the oldest when full.
    pub fn record(&self, event: Event) {
        let mut events = self
            .events
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if events.len() == CAPACITY {
            events.pop_front();
        }
        events.push_back(event);
    }

    /// The events kept, oldest first.
    pub fn recent(&self) -> Vec<Event> {
        let events = self
            .events
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        events.iter().cloned().collect()
    }
}
