//! The live updates: one task samples the farm every [`SAMPLE_PERIOD`] while at least one
//! page listens, and every page gets each new sample as a server-sent `farm` event.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use tokio::sync::watch;

use super::Console;

/// How often the farm is sampled while a page listens.
pub const SAMPLE_PERIOD: Duration = Duration::from_millis(500);

/// How often a page that hears nothing new is sent a comment, so that no proxy or browser
/// takes the stream for dead.
const KEEP_ALIVE: Duration = Duration::from_secs(10);

/// The latest sample, and whether a task is sampling.
pub struct Updates {
    latest: watch::Sender<Option<Arc<str>>>,
    sampling: AtomicBool,
}

impl Default for Updates {
    fn default() -> Self {
        Self {
            latest: watch::Sender::new(None),
            sampling: AtomicBool::new(false),
        }
    }
}

/// The stream of `farm` events for the page of the session of `token`: the latest sample at
/// once if there is one, then each new one, until the session ends.
pub fn stream(
    console: Arc<Console>,
    token: String,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let mut updates = console.updates.latest.subscribe();
    updates.mark_changed();
    if !console.updates.sampling.swap(true, Ordering::SeqCst) {
        tokio::spawn(sample(Arc::clone(&console)));
    }
    let events = futures_util::stream::unfold(
        (updates, console, token),
        |(mut updates, console, token)| async move {
            loop {
                updates.changed().await.ok()?;
                // A session closed or expired hears no more.
                console.sessions.csrf(&token)?;
                let latest = updates.borrow_and_update().clone();
                if let Some(farm) = latest {
                    let event = Event::default().event("farm").data(farm.as_ref());
                    return Some((Ok(event), (updates, console, token)));
                }
            }
        },
    );
    Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
}

/// Samples the farm every [`SAMPLE_PERIOD`] and publishes what changed, until no page
/// listens.
async fn sample(console: Arc<Console>) {
    let mut ticks = tokio::time::interval(SAMPLE_PERIOD);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let updates = &console.updates;
        if updates.latest.receiver_count() == 0 {
            updates.sampling.store(false, Ordering::SeqCst);
            // A page that came in between saw the flag still raised and left the sampling to
            // this task.
            if updates.latest.receiver_count() == 0 || updates.sampling.swap(true, Ordering::SeqCst)
            {
                return;
            }
        }
        match console.farm_json().await {
            Ok(farm) => {
                updates.latest.send_if_modified(|latest| {
                    let changed = latest.as_deref() != Some(farm.as_str());
                    if changed {
                        *latest = Some(farm.into());
                    }
                    changed
                });
            }
            Err(error) => tracing::warn!("console: cannot sample the farm: {error:#}"),
        }
    }
}
