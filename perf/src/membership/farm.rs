//! A farm of real membership threads in one process: each node's [`Driver`] on a thread of its
//! own, with its own address in the farm's namespace, over a dataplane that only counts the
//! heartbeats (the driver renews its liveness deadline once per heartbeat it sends). Dropped,
//! the farm stops every thread and waits for it.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{bail, Context};
use herd_membership::auth::Keyring;
use herd_membership::driver::{wall_ms, Command, Dataplane, DataplaneError, Driver, Handle, Start};
use herd_membership::protocol::FarmNode;
use herd_membership::snapshot::Snapshot;
use herd_membership::wire::State;
use herd_membership::{Farm, Settings};
use herd_packet::counts::Traffic;
use herd_packet::hash::HashKey;
use herd_packet::table::BucketMode;
use herd_testbed::address::node4;
use herd_testbed::Netns;
use tracing::Level;

use super::thread_cpu::ThreadClock;

/// The key every node signs its heartbeats with.
const KEY: &str = "1 000102030405060708090a0b0c0d0e0f";
/// How long a thread may take to bind its farm port.
const BIND: Duration = Duration::from_secs(10);

/// A dataplane that counts the heartbeats its node sends and does nothing else.
struct Counting {
    heartbeats: Arc<AtomicU64>,
}

impl Dataplane for Counting {
    fn install(&mut self, _generation: u64, _modes: &[BucketMode]) -> Result<(), DataplaneError> {
        Ok(())
    }

    fn keep_alive(&mut self, _ttl: Duration) -> Result<(), DataplaneError> {
        self.heartbeats.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn draining_flows(&mut self, _generation: u64) -> Result<Option<u64>, DataplaneError> {
        Ok(Some(0))
    }

    fn traffic(&mut self) -> Result<Traffic, DataplaneError> {
        Ok(Traffic::default())
    }
}

/// One node's membership thread.
struct Node {
    handle: Handle,
    heartbeats: Arc<AtomicU64>,
    clock: ThreadClock,
    thread: Option<JoinHandle<anyhow::Result<()>>>,
}

/// What every node has done so far.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    /// Each node's thread's CPU time.
    pub cpu: Vec<Duration>,
    /// Each node's heartbeats sent.
    pub heartbeats: Vec<u64>,
    /// Each node's deaths declared (of other nodes).
    pub deaths: Vec<u64>,
    /// Each node's views.
    pub views: Vec<u64>,
}

impl Sample {
    /// What was done between `earlier` and `self`.
    pub fn since(&self, earlier: &Sample) -> Sample {
        fn each<T: Copy + std::ops::Sub<Output = T> + Ord>(later: &[T], earlier: &[T]) -> Vec<T> {
            later
                .iter()
                .zip(earlier)
                .map(|(&later, &earlier)| later.max(earlier) - earlier)
                .collect()
        }
        Sample {
            cpu: each(&self.cpu, &earlier.cpu),
            heartbeats: each(&self.heartbeats, &earlier.heartbeats),
            deaths: each(&self.deaths, &earlier.deaths),
            views: each(&self.views, &earlier.views),
        }
    }
}

/// The membership threads of a farm of `nodes` nodes.
pub struct MemberFarm {
    nodes: Vec<Node>,
}

impl MemberFarm {
    /// Starts a farm of `size` nodes in `netns`, node `i` on address [`node4`]`(i)` (which the
    /// namespace must have) and the default farm port, every node joining at once.
    pub fn start(netns: &Netns, size: usize, settings: Settings) -> anyhow::Result<Self> {
        let port = herd_config::Farm::DEFAULT_PORT;
        let addresses: Vec<SocketAddr> = (0..size)
            .map(|node| SocketAddr::new(IpAddr::V4(node4(node)), port))
            .collect();
        let farm = Farm {
            digest: [0x18; 32],
            key: HashKey::from_bytes([0x42; 16]),
            buckets: herd_config::Farm::DEFAULT_BUCKETS as usize,
            nodes: (0..size)
                .map(|node| FarmNode {
                    name: name(node),
                    weight: 1,
                })
                .collect(),
        };
        let keys = Keyring::parse(KEY).context("the farm's key")?;
        let mut started = MemberFarm { nodes: Vec::new() };
        for local in 0..size {
            let start = Start {
                farm: farm.clone(),
                local,
                keys: keys.clone(),
                incarnation: wall_ms(),
                settings,
                addresses: addresses.clone(),
            };
            started.nodes.push(spawn(netns, start)?);
        }
        Ok(started)
    }

    /// Each node's snapshot.
    pub fn snapshots(&self) -> Vec<Arc<Snapshot>> {
        self.nodes
            .iter()
            .map(|node| node.handle.snapshot.load_full())
            .collect()
    }

    /// Whether every node is up, sees every other alive and has agreed on the view of them
    /// all.
    pub fn settled(&self) -> bool {
        self.snapshots().iter().all(|snapshot| {
            snapshot.state == State::Up
                && snapshot.agreed
                && snapshot.nodes.iter().all(|node| node.alive)
                && snapshot.owned() > 0
        })
    }

    /// What every node has done so far.
    pub fn sample(&self) -> anyhow::Result<Sample> {
        let mut sample = Sample::default();
        for (node, snapshot) in self.nodes.iter().zip(self.snapshots()) {
            sample.cpu.push(node.clock.used()?);
            sample
                .heartbeats
                .push(node.heartbeats.load(Ordering::Relaxed));
            sample.deaths.push(snapshot.stats.deaths);
            sample.views.push(snapshot.stats.views);
        }
        Ok(sample)
    }

    /// Stops every thread and waits for it; fails if one had failed.
    pub fn stop(mut self) -> anyhow::Result<()> {
        self.stop_all()
    }

    fn stop_all(&mut self) -> anyhow::Result<()> {
        // Told all at once, so that none waits for the others' heartbeats while they stop.
        for node in &self.nodes {
            // A thread that has stopped already says why when joined.
            let _ = node.handle.send(Command::Exit);
        }
        let mut outcome = Ok(());
        for (index, node) in self.nodes.iter_mut().enumerate() {
            let Some(thread) = node.thread.take() else {
                continue;
            };
            let result = thread
                .join()
                .map_err(|_| anyhow::anyhow!("{}'s membership thread panicked", name(index)))
                .and_then(|result| {
                    result.with_context(|| format!("{}'s membership thread failed", name(index)))
                });
            if outcome.is_ok() {
                outcome = result;
            }
        }
        outcome
    }
}

impl Drop for MemberFarm {
    fn drop(&mut self) {
        if let Err(error) = self.stop_all() {
            tracing::warn!("{error:#}");
        }
    }
}

/// Node `index`'s name.
pub fn name(index: usize) -> String {
    format!("node-{:02}", index + 1)
}

/// Starts node `start.local`'s thread in `netns`: it binds the node's farm port there and
/// runs the driver, logging warnings only (with its name) so that `peer alive` and the views
/// of a whole farm do not flood the output.
fn spawn(netns: &Netns, start: Start) -> anyhow::Result<Node> {
    let heartbeats = Arc::new(AtomicU64::new(0));
    let dataplane = Counting {
        heartbeats: Arc::clone(&heartbeats),
    };
    let netns = netns.clone();
    let name = name(start.local);
    let (bound, handle) = std::sync::mpsc::sync_channel(1);
    let thread = std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || -> anyhow::Result<()> {
            let warnings = tracing_subscriber::fmt()
                .with_writer(std::io::stderr)
                .with_max_level(Level::WARN)
                .with_thread_names(true)
                .finish();
            let _warnings = tracing::subscriber::set_default(warnings);
            let driver = netns
                .enter()
                .and_then(|()| Driver::new(start, dataplane, true).map_err(Into::into));
            match driver {
                Ok((driver, handle)) => {
                    let _ = bound.send(Ok(handle));
                    driver.run().map(drop).map_err(Into::into)
                }
                Err(error) => {
                    let _ = bound.send(Err(error));
                    Ok(())
                }
            }
        })
        .with_context(|| format!("cannot start {name}'s membership thread"))?;
    let clock = ThreadClock::of(&thread)?;
    let handle = match handle.recv_timeout(BIND) {
        Ok(Ok(handle)) => handle,
        Ok(Err(error)) => {
            let _ = thread.join();
            return Err(error.context(format!("cannot start {name}'s membership")));
        }
        Err(_) => bail!("{name}'s membership thread did not bind its port within {BIND:?}"),
    };
    Ok(Node {
        handle,
        heartbeats,
        clock,
        thread: Some(thread),
    })
}
