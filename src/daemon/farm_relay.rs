//! The daemon's way to the farm for its operators: the control socket's relayed requests
//! (`herd drain bravo`, `herd restart --all`, `herd status --farm`) and the console both go
//! through [`FarmRelay`], which asks the nodes over the farm's authenticated channel and runs
//! rolling commands on a thread of their own, one roll at a time.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use anyhow::bail;

use crate::control::Reply;
use crate::farm_access::{FarmAccess, FarmCommand, FarmReport};
use crate::farm_client::{Answer, Ask, FarmClient};
use crate::rolling::{self, Pace, SystemClock};

/// What the relay needs of the farm's channel: the daemon's farm client, or a fake in tests.
pub trait Channel: Send + Sync + 'static {
    /// Carries `command` to node `node` on behalf of `origin` and returns its reply.
    fn ask(&self, node: &str, command: FarmCommand, origin: &str) -> anyhow::Result<Reply>;
    /// Every node's status and timeline, asked on behalf of `origin`.
    fn report(&self, origin: &str) -> FarmReport;
}

impl Channel for FarmClient {
    fn ask(&self, node: &str, command: FarmCommand, origin: &str) -> anyhow::Result<Reply> {
        match FarmClient::ask(self, node, Ask::Command(command), origin) {
            Ok(Answer::Reply(reply)) => Ok(reply),
            Ok(Answer::Status(_)) => bail!("{node} answered its status to a command"),
            Err(error) => bail!("{node}: {error}"),
        }
    }

    fn report(&self, origin: &str) -> FarmReport {
        FarmClient::report(self, origin)
    }
}

/// The farm as this daemon's operators reach it.
pub struct FarmRelay {
    inner: Arc<Inner>,
}

struct Inner {
    channel: Arc<dyn Channel>,
    /// The farm's name, for messages.
    farm: String,
    /// This node's name, for messages.
    local: String,
    /// Every node's name, in configuration order.
    nodes: Vec<String>,
    /// The thread of the latest roll: a second one is refused while it runs.
    roll: Mutex<Option<JoinHandle<()>>>,
    /// How a roll is paced.
    pace: Pace,
}

impl FarmRelay {
    /// The relay of node `local` of farm `farm`, whose nodes are `nodes`, over `channel`.
    pub fn new(channel: Arc<dyn Channel>, farm: &str, local: &str, nodes: Vec<String>) -> Self {
        Self::paced(channel, farm, local, nodes, Pace::default())
    }

    fn paced(
        channel: Arc<dyn Channel>,
        farm: &str,
        local: &str,
        nodes: Vec<String>,
        pace: Pace,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                channel,
                farm: farm.into(),
                local: local.into(),
                nodes,
                roll: Mutex::default(),
                pace,
            }),
        }
    }
}

impl Inner {
    /// Refuses a name that is not one of the farm's nodes, listing them.
    fn known(&self, node: &str) -> anyhow::Result<()> {
        if !self.nodes.iter().any(|name| name == node) {
            bail!(
                "no node {node} in farm {}: its nodes are {}",
                self.farm,
                self.nodes.join(", ")
            );
        }
        Ok(())
    }

    fn command(&self, node: &str, command: FarmCommand, origin: &str) -> anyhow::Result<Reply> {
        self.known(node)?;
        let verb = rolling::verb(command);
        tracing::info!("asking {node} to {verb}, for {origin}");
        let reply = self.channel.ask(node, command, origin);
        match &reply {
            Ok(Reply::Done(what)) => tracing::info!("{node} does it: {what}"),
            Ok(Reply::Refused(why)) => tracing::info!("{node} refused to {verb}: {why}"),
            Ok(_) => tracing::warn!("{node} answered something else than a reply to {verb}"),
            Err(error) => tracing::warn!("cannot ask {node} to {verb}: {error:#}"),
        }
        reply
    }
}

/// One roll's way to the farm: every command on behalf of the roll's origin.
struct Rolling<'a> {
    inner: &'a Inner,
    origin: String,
}

impl rolling::Farm for Rolling<'_> {
    fn report(&self) -> anyhow::Result<FarmReport> {
        Ok(self.inner.channel.report(&self.origin))
    }

    fn command(&self, node: &str, command: FarmCommand) -> anyhow::Result<Reply> {
        self.inner.command(node, command, &self.origin)
    }
}

impl FarmAccess for FarmRelay {
    fn report(&self) -> FarmReport {
        self.inner
            .channel
            .report(&format!("an operator on {}", self.inner.local))
    }

    fn command(&self, node: &str, command: FarmCommand, origin: &str) -> anyhow::Result<Reply> {
        self.inner.command(node, command, origin)
    }

    fn roll(&self, command: FarmCommand, origin: &str) -> anyhow::Result<String> {
        let verb = rolling::verb(command);
        let mut roll = self
            .inner
            .roll
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if roll.as_ref().is_some_and(|thread| !thread.is_finished()) {
            bail!(
                "a roll is already under way on {}: wait until it ends",
                self.inner.local
            );
        }
        let inner = Arc::clone(&self.inner);
        let origin = origin.to_owned();
        let roll_origin = format!("{origin}, rolling {verb} over the farm");
        let spawned = std::thread::Builder::new()
            .name("herd-roll".into())
            .spawn(move || {
                let farm = Rolling {
                    inner: &inner,
                    origin: roll_origin,
                };
                tracing::info!("rolling {verb} over the farm, for {origin}");
                let result = rolling::roll(
                    &farm,
                    &SystemClock::default(),
                    command,
                    inner.pace,
                    &mut |step| tracing::info!("rolling {verb}: {step}"),
                );
                match result {
                    Ok(()) => tracing::info!("rolling {verb} done, for {origin}"),
                    Err(error) => tracing::warn!("rolling {verb} ended: {error:#}"),
                }
            });
        match spawned {
            Ok(thread) => *roll = Some(thread),
            Err(error) => bail!("cannot start the roll: {error}"),
        }
        Ok(format!(
            "rolling {verb} under way: {}, one after another",
            self.inner.nodes.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use crossbeam_channel::{Receiver, Sender};

    use super::*;

    /// A channel whose report waits for the test's word, so that a roll can be held running.
    struct HeldChannel {
        asked: Arc<Mutex<Vec<String>>>,
        release: Receiver<()>,
    }

    impl Channel for HeldChannel {
        fn ask(&self, node: &str, command: FarmCommand, origin: &str) -> anyhow::Result<Reply> {
            let asked = format!("{} {node} for {origin}", rolling::verb(command));
            self.asked.lock().unwrap().push(asked);
            Ok(Reply::Done("done".into()))
        }

        fn report(&self, _origin: &str) -> FarmReport {
            let _ = self.release.recv();
            FarmReport {
                gathered_by: "alpha".into(),
                at_ms: 0,
                nodes: Vec::new(),
            }
        }
    }

    fn relay() -> (FarmRelay, Sender<()>, Arc<Mutex<Vec<String>>>) {
        let (release, held) = crossbeam_channel::unbounded();
        let asked = Arc::default();
        let channel = HeldChannel {
            asked: Arc::clone(&asked),
            release: held,
        };
        let pace = Pace {
            limit: Duration::from_secs(5),
            poll: Duration::from_millis(1),
        };
        let nodes = vec!["alpha".into(), "bravo".into()];
        let relay = FarmRelay::paced(Arc::new(channel), "web", "alpha", nodes, pace);
        (relay, release, asked)
    }

    #[test]
    fn an_unknown_node_is_refused_with_the_farm_s_nodes() {
        let (relay, _release, asked) = relay();
        let error = relay
            .command("zulu", FarmCommand::Drain, "uid 0 (pid 1) on alpha")
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "no node zulu in farm web: its nodes are alpha, bravo"
        );
        assert!(asked.lock().unwrap().is_empty());
        let reply = relay
            .command("bravo", FarmCommand::Drain, "uid 0 (pid 1) on alpha")
            .unwrap();
        assert!(matches!(reply, Reply::Done(_)));
        assert_eq!(
            *asked.lock().unwrap(),
            ["drain bravo for uid 0 (pid 1) on alpha"]
        );
    }

    #[test]
    fn one_roll_at_a_time() {
        let (relay, release, _asked) = relay();
        let under_way = relay.roll(FarmCommand::Restart, "the console").unwrap();
        assert_eq!(
            under_way,
            "rolling restart under way: alpha, bravo, one after another"
        );
        let error = relay.roll(FarmCommand::Restart, "the console").unwrap_err();
        assert_eq!(
            error.to_string(),
            "a roll is already under way on alpha: wait until it ends"
        );
        // Released, the roll sees a farm of no nodes, and so ends at once.
        release.send(()).unwrap();
        let thread = relay.inner.roll.lock().unwrap().take().unwrap();
        thread.join().unwrap();
        relay.roll(FarmCommand::Restart, "the console").unwrap();
        release.send(()).unwrap();
    }
}
