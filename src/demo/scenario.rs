//! The demo's course: build the bed, start every node and wait until the farm agrees, start
//! the responders and the load, then steady traffic, `kill -9` of the last node, its failover,
//! its restart and rejoin, steady traffic again; the screen redrawn all along. Whatever
//! happens, what was made is removed on the way out: the [`Demo`]'s fields are dropped in
//! order (load, responders, herds, bed).

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use herd_testbed::address::VIP4;
use herd_testbed::responder::{Kind, On, Responders, Service, Settings as ResponderSettings};

use super::bed::{Bed, Made};
use super::herd::{self, Herds};
use super::layout::{BUCKETS, NAMES, PORT};
use super::load::{Load, Phase, Want, Watched};
use super::screen::{self, Progress, Row, Screen, Shown};
use super::summary::{self, Measured, NodeLog, Summary};
use crate::status::Status;

/// How long the nodes have to start and agree on a view with every bucket owned.
const START_BOUND: Duration = Duration::from_secs(30);
/// How long every flow has to be answered once, before the steady traffic begins.
const WARM_UP_BOUND: Duration = Duration::from_secs(5);
/// How long after the kill the survivors have to answer every flow of the killed node.
pub const FAILOVER_BOUND: Duration = Duration::from_secs(10);
/// How long after its restart the node has to answer every one of its flows again.
pub const REJOIN_BOUND: Duration = Duration::from_secs(30);
/// The shortest steady traffic after the rejoin, should the rejoin end late.
const MIN_FINAL: Duration = Duration::from_secs(2);
/// How often the demo looks at its nodes, its load and the signals.
const TICK: Duration = Duration::from_millis(100);
/// How often the table is redrawn.
const REDRAW: Duration = Duration::from_secs(1);
/// How many lines of a failed node's log an error shows.
const LOG_LINES: usize = 15;

/// What the demo is asked for.
pub struct Settings {
    /// The dataplane mode: `xdp` or `afxdp`.
    pub mode: &'static str,
    /// How many nodes.
    pub nodes: usize,
    /// The traffic time planned.
    pub duration: Duration,
    /// The herd executable the nodes run.
    pub exe: PathBuf,
}

/// Runs the demo; `signal` is set to the number of a signal that asks it to stop. Returns
/// what it measured once everything it made is removed.
pub fn run(
    settings: &Settings,
    signal: &AtomicUsize,
    screen: &mut Screen,
) -> anyhow::Result<Summary> {
    screen.event(&format!(
        "Building a farm of {} nodes ({} mode) in network namespaces...",
        settings.nodes, settings.mode
    ))?;
    let bed = match Bed::create(settings.nodes, settings.mode) {
        Ok(bed) => bed,
        Err(error) => {
            // A signal from the terminal reaches the commands that build the bed too: they
            // failed because of it.
            check_signal(signal)?;
            return Err(error);
        }
    };
    let made = bed.made();
    let result = {
        let mut demo = Demo {
            load: None,
            responders: None,
            herds: Herds {
                running: (0..settings.nodes).map(|_| None).collect(),
            },
            bed,
            settings,
            names: NAMES[..settings.nodes].to_vec(),
            signal,
            screen: &mut *screen,
            statuses: vec![None; settings.nodes],
            killed: None,
            phase: "starting",
            traffic_start: None,
            last_draw: None,
            last_answers: vec![0; settings.nodes],
        };
        demo.course(made)
        // `demo` is dropped here, which removes everything it made.
    };
    let summary = result?;
    screen.event(
        "Stopped the nodes; removed the namespaces, the bridge and the scratch directory.",
    )?;
    Ok(summary)
}

/// The demo under way. The fields are dropped in order: the load stops, the responders stop,
/// the herds stop, the bed goes.
struct Demo<'a> {
    load: Option<Load>,
    responders: Option<Responders>,
    herds: Herds,
    bed: Bed,
    settings: &'a Settings,
    names: Vec<&'static str>,
    signal: &'a AtomicUsize,
    screen: &'a mut Screen,
    /// Each node's status at the last look, `None` when it did not answer.
    statuses: Vec<Option<Status>>,
    /// The node killed, while it is down.
    killed: Option<usize>,
    /// The phase, as the progress line shows it.
    phase: &'static str,
    /// When the steady traffic began.
    traffic_start: Option<Instant>,
    /// When the table was last drawn.
    last_draw: Option<Instant>,
    /// Each node's answers at the last draw, for its rate.
    last_answers: Vec<u64>,
}

impl Demo<'_> {
    /// The whole course, up to the summary.
    fn course(&mut self, made: Made) -> anyhow::Result<Summary> {
        self.start_farm()?;
        self.responders = Some(start_responders(&self.bed)?);
        let bound = self.settings.duration
            + WARM_UP_BOUND
            + FAILOVER_BOUND
            + REJOIN_BOUND
            + MIN_FINAL
            + Duration::from_secs(10);
        self.load = Some(Load::start(
            &self.bed.farm.client.netns,
            &self.names,
            bound,
        )?);
        let warm_up = Instant::now();
        self.warm_up()?;

        let total = self.settings.duration;
        self.enter(Phase::Steady)?;
        let start = Instant::now();
        self.traffic_start = Some(start);
        self.wait_until(|_| Ok(start.elapsed() >= total / 4))?;

        let (node, flows) = self.kill_last()?;
        let killed = Instant::now();
        let mut failover = Watched::default();
        self.wait_until(|demo| {
            failover = demo.load()?.watched();
            Ok(failover.done.is_some() && start.elapsed() >= total / 2
                || killed.elapsed() >= FAILOVER_BOUND.max(total / 4))
        })?;

        let restarted = self.restart(node, &flows)?;
        let mut rejoin = Watched::default();
        self.wait_until(|demo| {
            rejoin = demo.load()?.watched();
            Ok(rejoin.done.is_some() || restarted.elapsed() >= REJOIN_BOUND)
        })?;
        let rejoined = Instant::now();
        self.enter(Phase::Final)?;
        self.wait_until(|_| Ok(start.elapsed() >= total && rejoined.elapsed() >= MIN_FINAL))?;
        self.phase = "finishing";
        self.screen
            .event("Stopping the load and waiting for the last answers...")?;
        let traffic = start.elapsed();
        let load = self.load.take().context("the load is not running")?;
        let all_flows = load.flows();
        let tally = load.finish()?;
        let mut summary = Summary::new(Measured {
            mode: self.settings.mode,
            duration: total,
            names: &self.names,
            tally: &tally,
            flows: all_flows,
            victim: node,
            victim_flows: flows.len(),
            failover,
            rejoin,
            lengths: [
                (Phase::WarmUp, start.duration_since(warm_up)),
                (Phase::Steady, killed.duration_since(start)),
                (Phase::Down, restarted.duration_since(killed)),
                (Phase::Rejoining, rejoined.duration_since(restarted)),
                (
                    Phase::Final,
                    traffic.saturating_sub(rejoined.duration_since(start)),
                ),
            ],
            made,
        });
        // The logs go with the scratch directory: the last lines of those of the nodes that
        // did not do their part say what they did.
        let mut involved = Vec::new();
        if summary.failover_ms.is_none() {
            involved.extend((0..self.names.len()).filter(|&other| other != node));
        }
        if summary.rejoin_ms.is_none() {
            involved.push(node);
        }
        summary.logs = involved
            .into_iter()
            .map(|node| NodeLog {
                name: self.names[node].to_owned(),
                last_lines: herd::log_tail(&self.bed.log(self.names[node]), LOG_LINES),
            })
            .collect();
        Ok(summary)
    }

    /// Starts every node's herd and waits until each is up and they agree on a view in which
    /// every bucket is owned.
    fn start_farm(&mut self) -> anyhow::Result<()> {
        for node in 0..self.names.len() {
            let herd = herd::spawn(&self.settings.exe, &self.bed, node, self.names[node])?;
            self.herds.running[node] = Some(herd);
        }
        self.screen.event(&format!(
            "Started herd on {} nodes; waiting until they agree on a view with every bucket \
             owned...",
            self.names.len()
        ))?;
        let started = Instant::now();
        self.wait_until(|demo| {
            if demo.farm_agreed() {
                return Ok(true);
            }
            if started.elapsed() < START_BOUND {
                return Ok(false);
            }
            let mut message = format!("the farm did not agree within {START_BOUND:?}");
            for (node, status) in demo.statuses.iter().enumerate() {
                let name = demo.names[node];
                let state = status.as_ref().map_or("no answer".to_owned(), |status| {
                    let view = &status.membership;
                    let shares: Vec<usize> = view.nodes.iter().map(|node| node.buckets).collect();
                    let agreed = if view.agreed { "agreed" } else { "not agreed" };
                    let state = screen::state_of(status);
                    format!("{state}, its view ({agreed}) gives the nodes {shares:?} buckets")
                });
                message.push_str(&format!("\n  {name}: {state}"));
                if !status.as_ref().is_some_and(Status::serving) {
                    message.push_str(&format!(
                        "; the last lines of its log:\n{}",
                        herd::log_tail(&demo.bed.log(name), LOG_LINES)
                    ));
                }
            }
            bail!("{message}")
        })?;
        self.screen.event(&format!(
            "The farm agreed in {:.1} s: every node is up and the {BUCKETS} buckets are shared \
             out.",
            started.elapsed().as_secs_f64()
        ))?;
        Ok(())
    }

    /// Whether, at the last look, every node served and agreed on a view of every node alive
    /// in which every bucket is owned.
    fn farm_agreed(&self) -> bool {
        let Some(statuses) = self
            .statuses
            .iter()
            .cloned()
            .collect::<Option<Vec<Status>>>()
        else {
            return false;
        };
        // Epochs are each node's own count of views: the nodes agree when they give every
        // node the same share.
        let shares = |status: &Status| -> Vec<usize> {
            status
                .membership
                .nodes
                .iter()
                .map(|node| node.buckets)
                .collect()
        };
        statuses.iter().all(|status| {
            status.serving()
                && status.membership.agreed
                && shares(status) == shares(&statuses[0])
                && status.membership.nodes.iter().all(|node| node.alive)
        }) && statuses
            .iter()
            .map(|status| status.membership.owned())
            .sum::<usize>()
            == BUCKETS as usize
    }

    /// Sends traffic until every flow has been answered once: the client has learnt the
    /// VIP's address, and every node answers.
    fn warm_up(&mut self) -> anyhow::Result<()> {
        self.enter(Phase::WarmUp)?;
        let started = Instant::now();
        self.wait_until(|demo| {
            let load = demo.load()?;
            if load.all_answered() {
                return Ok(true);
            }
            if started.elapsed() >= WARM_UP_BOUND {
                bail!(
                    "some of the {} client flows got no answer within {WARM_UP_BOUND:?} although \
                     every node is up",
                    load.flows()
                );
            }
            Ok(false)
        })
    }

    /// Kills the last node's herd with SIGKILL, having noted the flows it answers; returns it
    /// and those flows.
    fn kill_last(&mut self) -> anyhow::Result<(usize, Vec<usize>)> {
        let node = self.names.len() - 1;
        let name = self.names[node];
        let flows = self.load()?.flows_of(node);
        if flows.is_empty() {
            bail!("{name} answers none of the client flows: there is nothing to fail over");
        }
        // Just before the signal: the time measured includes the kill itself, and the
        // requests in flight when it lands count as sent with the node down. Those of the
        // steady phase are answered first: one still queued in the node (an AF_XDP worker's
        // ring, the hand-off device) when it dies would be counted lost while all was up.
        self.enter(Phase::Down)?;
        if !self.load()?.settle(Phase::Steady) {
            bail!("the steady phase's requests were neither answered nor lost in time");
        }
        self.load()?.watch(&flows, Want::AnyBut(node));
        let herd = self.herds.running[node]
            .as_mut()
            .with_context(|| format!("{name}'s herd does not run"))?;
        let pid = herd.pid();
        herd.kill()?;
        self.herds.running[node] = None;
        self.killed = Some(node);
        self.statuses[node] = None;
        self.screen.event(&format!(
            "kill -9 {pid}: {name}'s herd is dead; it answered {} of the {} flows. Waiting for \
             the survivors to take them over...",
            flows.len(),
            self.load()?.flows()
        ))?;
        Ok((node, flows))
    }

    /// Starts node `node`'s herd again, watching for it to answer its `flows` again.
    fn restart(&mut self, node: usize, flows: &[usize]) -> anyhow::Result<Instant> {
        let name = self.names[node];
        let watched = self.load()?.watched();
        match watched.done {
            Some(done) => self.screen.event(&format!(
                "Failover: every flow {name} answered was answered by a survivor {:.0} ms after \
                 the kill.",
                summary::ms(done)
            ))?,
            None => self.screen.event(&format!(
                "Failover: not every flow {name} answered was answered by a survivor within \
                 {FAILOVER_BOUND:?}."
            ))?,
        }
        self.load()?.watch(flows, Want::Only(node));
        let restarted = Instant::now();
        self.herds.running[node] = Some(herd::spawn(&self.settings.exe, &self.bed, node, name)?);
        self.killed = None;
        self.enter(Phase::Rejoining)?;
        self.screen.event(&format!(
            "Restarted {name}'s herd; waiting for it to rejoin and answer its flows again..."
        ))?;
        Ok(restarted)
    }

    /// Starts `phase`: the requests sent from now on count in it.
    fn enter(&mut self, phase: Phase) -> anyhow::Result<()> {
        self.load()?.set_phase(phase);
        self.phase = phase.label();
        Ok(())
    }

    /// The load.
    fn load(&self) -> anyhow::Result<&Load> {
        self.load.as_ref().context("the load is not running")
    }

    /// Ticks until `done` says so, redrawing the screen, and fails on a signal, a herd that
    /// exited or a load that stopped.
    fn wait_until(
        &mut self,
        mut done: impl FnMut(&mut Self) -> anyhow::Result<bool>,
    ) -> anyhow::Result<()> {
        loop {
            self.look()?;
            if done(self)? {
                return Ok(());
            }
            std::thread::sleep(TICK);
        }
    }

    /// Looks at the signals, the herds, the load and the nodes' statuses, and redraws the
    /// table when it is time.
    fn look(&mut self) -> anyhow::Result<()> {
        check_signal(self.signal)?;
        for node in 0..self.names.len() {
            let Some(herd) = self.herds.running[node].as_mut() else {
                continue;
            };
            if let Some(exit) = herd.exited()? {
                bail!(
                    "node {}'s herd exited unexpectedly ({exit}); the last lines of its log:\n{}",
                    self.names[node],
                    herd::log_tail(&self.bed.log(self.names[node]), LOG_LINES)
                );
            }
        }
        if let Some(load) = self.load.as_mut() {
            load.check()?;
        }
        for node in 0..self.names.len() {
            self.statuses[node] = match self.herds.running[node] {
                Some(_) => {
                    let dir = self.bed.farm.state_dir(node)?;
                    herd::status(&dir, self.names[node]).ok()
                }
                None => None,
            };
        }
        if self.last_draw.is_none_or(|at| at.elapsed() >= REDRAW) {
            self.draw()?;
        }
        Ok(())
    }

    /// Draws the table.
    fn draw(&mut self) -> anyhow::Result<()> {
        let tally = self.load.as_ref().map(Load::tally);
        let period = self.last_draw.map_or(REDRAW, |at| at.elapsed());
        self.last_draw = Some(Instant::now());
        let answers = tally
            .as_ref()
            .map_or(vec![0; self.names.len()], |t| t.by_node.clone());
        let delta: Vec<u64> = answers
            .iter()
            .zip(&self.last_answers)
            .map(|(now, before)| now.saturating_sub(*before))
            .collect();
        self.last_answers = answers;
        let all: u64 = delta.iter().sum();
        let rows: Vec<Row> = (0..self.names.len())
            .map(|node| Row {
                name: self.names[node],
                node: match (self.killed == Some(node), &self.statuses[node]) {
                    (true, _) => Shown::Killed,
                    (false, Some(status)) => Shown::Status(status),
                    (false, None) => Shown::Starting,
                },
                answers: delta[node],
                all,
                period,
            })
            .collect();
        let total = tally.map(|tally| tally.total()).unwrap_or_default();
        let progress = Progress {
            phase: self.phase,
            elapsed: self.traffic_start.map_or(Duration::ZERO, |at| at.elapsed()),
            total: self.settings.duration,
            sent: total.sent,
            answered: total.answered,
            lost: total.lost,
        };
        self.screen
            .draw(&rows, &progress)
            .context("cannot write to the screen")
    }
}

/// Starts the service every node runs on the VIP, standing for the application: a UDP
/// responder that answers each datagram with `NAME:DATAGRAM`, so that the client sees which
/// node served it. The VIP must be on the nodes already (herd adds it when it starts).
fn start_responders(bed: &Bed) -> anyhow::Result<Responders> {
    let service = Service {
        kind: Kind::Udp,
        on: On::Vip,
        port: PORT,
    };
    let settings = ResponderSettings {
        vip: VIP4.into(),
        line_wait: Duration::ZERO,
        record: false,
    };
    Responders::start(&bed.farm.nodes, &[service], &settings)
}

/// Fails once a signal has asked the demo to stop.
fn check_signal(signal: &AtomicUsize) -> anyhow::Result<()> {
    let name = match i32::try_from(signal.load(Ordering::Relaxed)) {
        Ok(0) => return Ok(()),
        Ok(libc::SIGINT) => "SIGINT (Ctrl-C)".to_owned(),
        Ok(libc::SIGTERM) => "SIGTERM".to_owned(),
        Ok(libc::SIGHUP) => "SIGHUP".to_owned(),
        number => format!("signal {number:?}"),
    };
    bail!("interrupted by {name}; removed what the demo made")
}
