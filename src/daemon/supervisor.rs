//! The node's supervisor: the lifecycle of [`herd_checkers::lifecycle`] driven by the checks'
//! probes, the application's scripts, the operator's requests and the signals, steering the
//! membership thread. Probes and scripts block, so each check probes on a thread of its own
//! and each script runs on one; their results come back over channels, and the supervisor
//! itself only waits for them, decides and logs.

use std::sync::Arc;
use std::thread::Scope;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use crossbeam_channel::{select, Receiver, Sender};
use herd_checkers::check::{self, Host, Prepared};
use herd_checkers::health::{Health, Tracker};
use herd_checkers::lifecycle::{Action, Event, Lifecycle, NodeState, Output, Reason, Script};
use herd_checkers::limit::RestartLimit;
use herd_checkers::scripts::Scripts;
use herd_config::FarmConfig;
use herd_membership::driver::{Command, Handle, Notice};

use super::farm_server;
use super::host_watch::{self, HostWatch};
use super::listener_watch::{self, ListenerWatch};
use super::shutdown::Shutdown;
use super::signals::Stop;
use crate::control::{Incoming, Reply, Request};
use crate::status::{CheckStatus, ProbeStatus, Restarts, Status};

/// A probe's result, from a check's thread.
struct Probed {
    check: usize,
    result: Result<(), String>,
    took: Duration,
}

/// A script's end, from its thread.
struct ScriptEnded {
    script: Script,
    success: bool,
    how: String,
}

/// What a check's thread probes.
enum Probe {
    /// A configured `[[check]]`.
    Configured(Prepared),
    /// herd's own look at what it set up on the host.
    Host(HostWatch),
}

impl Probe {
    /// How often it probes.
    fn interval(&self) -> Duration {
        match self {
            Probe::Configured(prepared) => prepared.interval,
            Probe::Host(_) => host_watch::INTERVAL,
        }
    }

    /// Probes once; a `command` check's output is logged as check `name`'s.
    fn probe(&mut self, name: &str) -> Result<(), String> {
        match self {
            Probe::Configured(prepared) => prepared
                .probe(|line| tracing::info!(check = %name, "{line}"))
                .map_err(|error| error.0),
            Probe::Host(watch) => watch.probe(),
        }
    }
}

/// One check, as the supervisor keeps it.
struct Watched {
    name: String,
    /// Handed to the check's thread when the supervisor runs.
    probe: Option<Probe>,
    kind: &'static str,
    action: Action,
    last: Option<(Result<(), String>, Instant, Duration)>,
    probes: u64,
    failures: u64,
}

/// How the supervisor ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// The node was stopped (a signal): it left the farm and its stop script ran.
    Stopped,
    /// A second signal: the node stops at once, whatever still drains or runs.
    Forced,
}

/// What the supervisor needs to know of the node it runs.
pub struct Identity {
    /// The node's name.
    pub node: String,
    /// The farm's name.
    pub farm: String,
    /// The dataplane mode, as `herd status` shows it.
    pub mode: &'static str,
}

/// The supervisor of one node.
pub struct Supervisor {
    identity: Identity,
    lifecycle: Lifecycle,
    checks: Vec<Watched>,
    scripts: Arc<Scripts>,
    restarts: u64,
    state_since: Instant,
    reason: Option<String>,
    /// A signal asked the node to stop.
    stopping: bool,
    started: Instant,
    /// The look for the application's listeners after the node comes up.
    listeners: ListenerWatch,
    /// The farm commands the farm server received.
    farm_commands: Arc<farm_server::Counts>,
}

impl Supervisor {
    /// The supervisor of node `identity` configured by `config`, whose checks look at `host`,
    /// with herd's own check of the host, `watch`, after them: its first failure withdraws the
    /// node, which comes back once it passes again. Its status shows `farm_commands`.
    pub fn new(
        config: &FarmConfig,
        identity: Identity,
        host: &Host,
        watch: HostWatch,
        farm_commands: Arc<farm_server::Counts>,
    ) -> anyhow::Result<Self> {
        let mut checks = Vec::with_capacity(config.checks.len() + 1);
        let mut tracked = Vec::with_capacity(config.checks.len() + 1);
        for configured in &config.checks {
            let prepared = Prepared::new(configured, host).map_err(|error| {
                anyhow::anyhow!("check {}: bad regular expression: {error}", configured.name)
            })?;
            let (action, tracker) = check::tracked(configured);
            tracked.push((action, tracker));
            checks.push(Watched {
                name: configured.name.clone(),
                probe: Some(Probe::Configured(prepared)),
                kind: configured.kind.name(),
                action,
                last: None,
                probes: 0,
                failures: 0,
            });
        }
        tracked.push((Action::Wait, Tracker::new(1, 1)));
        checks.push(Watched {
            name: host_watch::NAME.into(),
            probe: Some(Probe::Host(watch)),
            kind: host_watch::KIND,
            action: Action::Wait,
            last: None,
            probes: 0,
            failures: 0,
        });
        let limit = config.scripts.restart_limit;
        let within_ms = u64::from(limit.within_s) * 1000;
        let scripts = Scripts::new(
            &config.scripts,
            &identity.node,
            &identity.farm,
            &config.farm.vips,
        );
        let listeners = ListenerWatch::new(config)
            .context("cannot open a socket to look for the application's listeners")?;
        let now = Instant::now();
        Ok(Self {
            identity,
            lifecycle: Lifecycle::new(tracked, RestartLimit::new(limit.count, within_ms)),
            checks,
            scripts: Arc::new(scripts),
            restarts: 0,
            state_since: now,
            reason: Some("starting".into()),
            stopping: false,
            started: now,
            farm_commands,
            listeners,
        })
    }

    /// Starts the node and runs it until a signal stops it: the first one with a leave and
    /// the stop script, a second one at once. `membership` is the membership thread's handle,
    /// `requests` the operator's and `stops` the signals; the checks probe on threads of
    /// `scope` until the shutdown. Fails when the membership thread stops on its own (its
    /// error is its thread's result).
    pub fn run<'scope>(
        mut self,
        scope: &'scope Scope<'scope, '_>,
        membership: &Handle,
        requests: Receiver<Incoming>,
        stops: &Receiver<Stop>,
        shutdown: &'scope Shutdown,
    ) -> anyhow::Result<Ending> {
        if let Ok(stop) = stops.try_recv() {
            tracing::info!(
                signal = stop.signal,
                "stopping on a signal received during the setup: the node does not start"
            );
            return Ok(Ending::Stopped);
        }
        let (probed_tx, probed) = crossbeam_channel::unbounded();
        let (ended_tx, ended) = crossbeam_channel::unbounded();
        for (index, watched) in self.checks.iter_mut().enumerate() {
            if let Some(probe) = watched.probe.take() {
                let name = watched.name.clone();
                spawn_check(scope, index, name, probe, probed_tx.clone(), shutdown)?;
            }
        }
        let looks = crossbeam_channel::tick(listener_watch::INTERVAL);
        self.lifecycle.start();
        loop {
            self.act(membership, &ended_tx)?;
            if self.stopping && !self.lifecycle.script_running() && self.at_rest() {
                return Ok(Ending::Stopped);
            }
            select! {
                recv(probed) -> probed => {
                    if let Ok(probed) = probed {
                        self.probed(probed);
                    }
                }
                recv(ended) -> ended => {
                    if let Ok(ended) = ended {
                        self.script_ended(ended);
                    }
                }
                recv(membership.notices) -> notice => match notice {
                    Ok(Notice::Left) => self.lifecycle.left(),
                    Ok(Notice::Up) => tracing::info!("this node owns its share of the farm now"),
                    Err(_) => bail!("the membership thread stopped"),
                },
                recv(requests) -> incoming => {
                    if let Ok((request, reply)) = incoming {
                        let answer = self.request(request, membership);
                        // The asker may have given up waiting.
                        let _ = reply.send(answer);
                    }
                }
                recv(stops) -> stop => {
                    if let Ok(stop) = stop {
                        if self.signalled(stop) {
                            return Ok(Ending::Forced);
                        }
                    }
                }
                recv(looks) -> _ => {
                    let up_for = self.state_since.elapsed();
                    if self.lifecycle.state() == NodeState::Up && up_for <= listener_watch::WINDOW {
                        self.listeners.look();
                    }
                }
            }
        }
    }

    /// Whether the node rests: stopped or failed.
    fn at_rest(&self) -> bool {
        matches!(
            self.lifecycle.state(),
            NodeState::Stopped | NodeState::Failed
        )
    }

    /// Reacts to a signal: the first stops the node (a leave with a drain, then the stop
    /// script), the next makes it stop at once; returns whether it must.
    fn signalled(&mut self, stop: Stop) -> bool {
        if !self.stopping {
            tracing::info!(signal = stop.signal, "stopping on a signal: leaving the farm with a drain, then the stop script (signal again to stop at once)");
            self.stopping = true;
            self.reason = Some("stopping on a signal".into());
            self.lifecycle.stop();
            false
        } else {
            tracing::warn!(
                signal = stop.signal,
                "stopping at once on a second signal: the connections still draining break"
            );
            true
        }
    }

    /// Records a probe's result and hands it to the lifecycle.
    fn probed(&mut self, probed: Probed) {
        let now_ms = self.started.elapsed().as_millis() as u64;
        let watched = &mut self.checks[probed.check];
        watched.probes += 1;
        let ok = probed.result.is_ok();
        if let Err(error) = &probed.result {
            watched.failures += 1;
            tracing::debug!(check = %watched.name, "probe failed: {error}");
        }
        watched.last = Some((probed.result, Instant::now(), probed.took));
        self.lifecycle.check_result(probed.check, ok, now_ms);
    }

    fn script_ended(&mut self, ended: ScriptEnded) {
        let script = ended.script;
        if ended.success {
            tracing::info!(%script, "the {script} script ended: {}", ended.how);
        } else {
            tracing::error!(%script, "the {script} script failed: {}", ended.how);
        }
        self.lifecycle.script_done(ended.success);
    }

    /// Does what the lifecycle asks.
    fn act(&mut self, membership: &Handle, ended: &Sender<ScriptEnded>) -> anyhow::Result<()> {
        while let Some(output) = self.lifecycle.poll_output() {
            match output {
                Output::Run { script, reason } => {
                    if reason == Reason::Restart && script == Script::Stop {
                        self.restarts += 1;
                    }
                    spawn_script(Arc::clone(&self.scripts), script, reason, ended.clone())?;
                }
                Output::Join => membership.send(Command::Join)?,
                Output::Leave => membership.send(Command::Leave)?,
                Output::Event(event) => self.event(event),
            }
        }
        Ok(())
    }

    /// Logs what the lifecycle did and keeps why the node is where it is.
    fn event(&mut self, event: Event) {
        match event {
            Event::State { from, to } => {
                self.state_since = Instant::now();
                match to {
                    NodeState::Up => self.reason = None,
                    NodeState::Stopped if self.lifecycle.held() => {
                        self.reason =
                            Some("drained by an operator: the application still runs".into())
                    }
                    _ => {}
                }
                tracing::info!(%from, %to, "node {to}");
            }
            Event::Check {
                check,
                health,
                action,
            } => {
                let watched = &self.checks[check];
                let name = &watched.name;
                let error = match &watched.last {
                    Some((Err(error), ..)) => error.as_str(),
                    _ => "",
                };
                match health {
                    Health::Failed => {
                        tracing::warn!(check = %name, %action, "check failed: {error}");
                        // Only when it takes the node out: a stopped node's application is
                        // expected to fail its checks.
                        let acted = matches!(
                            self.lifecycle.state(),
                            NodeState::Withdrawing | NodeState::Starting
                        );
                        if action != Action::Log && acted {
                            self.reason = Some(format!("check {name} failed: {error}"));
                        }
                    }
                    Health::Healthy => tracing::info!(check = %name, "check healthy"),
                    Health::Unknown => {}
                }
            }
            Event::ScriptFailed { script } => {
                self.reason = Some(format!("the {script} script failed"));
            }
            Event::RestartLimit { count, within_ms } => {
                let text = format!(
                    "restart limit hit: {count} restarts within {} s already; the node stays failed until `herd start`",
                    within_ms / 1000
                );
                tracing::error!("{text}");
                self.reason = Some(text);
            }
        }
    }

    /// Carries out an operator's request.
    fn request(&mut self, request: Request, membership: &Handle) -> Reply {
        let state = self.lifecycle.state();
        let refused = |why: String| Reply::Refused(why);
        match request {
            Request::Status => Reply::Status(Box::new(self.status(membership))),
            Request::Stop if state == NodeState::Stopped && !self.lifecycle.held() => {
                refused("the node is already stopped".into())
            }
            Request::Stop if state == NodeState::Failed => refused(
                "the node has failed: it is out of the farm and its stop script has run".into(),
            ),
            Request::Stop => {
                tracing::info!("stopping on an operator's request");
                self.reason = Some("stopped by an operator".into());
                self.lifecycle.stop();
                Reply::Done(
                    "stopping: the node leaves the farm with a drain, then the stop script runs"
                        .into(),
                )
            }
            Request::Start if self.stopping => refused("herd is stopping on a signal".into()),
            Request::Start if self.lifecycle.draining() => {
                tracing::info!("the drain is called off on an operator's request");
                self.lifecycle.start();
                Reply::Done("the drain is called off: the node joins again once its checks are healthy, keeping its connections".into())
            }
            Request::Start if matches!(state, NodeState::Stopped | NodeState::Failed) => {
                tracing::info!("starting on an operator's request");
                self.lifecycle.start();
                Reply::Done("starting: the start script, then the checks, then the join".into())
            }
            Request::Start => refused(format!("the node is {state}, not stopped")),
            Request::Restart if matches!(state, NodeState::Stopped | NodeState::Failed) => {
                refused(format!("the node is {state}: start it with `herd start`"))
            }
            Request::Restart => {
                tracing::info!("restarting on an operator's request");
                self.lifecycle.restart();
                Reply::Done("restarting: the node leaves the farm with a drain, the stop script runs, then the start script".into())
            }
            Request::Drain if state == NodeState::Up => {
                tracing::info!("draining on an operator's request");
                self.lifecycle.drain();
                Reply::Done("draining: the node takes no new connection and keeps its own until they end; `herd start` brings it back".into())
            }
            Request::Drain => refused(format!("the node is {state}, not up")),
            // The control server relays these to the farm itself: the supervisor's loop does
            // not wait on the network.
            Request::Farm { .. } | Request::FarmStatus => {
                refused("a farm request is the control server's to relay".into())
            }
        }
    }

    /// Where the node stands now.
    fn status(&self, membership: &Handle) -> Status {
        let now = Instant::now();
        let ms = |duration: Duration| duration.as_millis() as u64;
        let checks = self
            .checks
            .iter()
            .enumerate()
            .map(|(index, watched)| CheckStatus {
                name: watched.name.clone(),
                kind: watched.kind.into(),
                action: watched.action,
                health: self.lifecycle.health(index).unwrap_or(Health::Unknown),
                last: watched.last.as_ref().map(|(result, at, took)| ProbeStatus {
                    ok: result.is_ok(),
                    error: result.clone().err(),
                    ms_ago: ms(now.duration_since(*at)),
                    took_ms: ms(*took),
                }),
                probes: watched.probes,
                failures: watched.failures,
            })
            .collect();
        let (limit, within_ms) = self.lifecycle.restart_limit();
        Status {
            node: self.identity.node.clone(),
            farm: self.identity.farm.clone(),
            mode: self.identity.mode.into(),
            pid: std::process::id(),
            state: self.lifecycle.state(),
            reason: self.reason.clone(),
            since_ms_ago: ms(now.duration_since(self.state_since)),
            restarts: Restarts {
                recent: self.lifecycle.recent_restarts(),
                limit,
                within_s: within_ms / 1000,
                total: self.restarts,
            },
            checks,
            unseen_listeners: self.listeners.unseen().to_vec(),
            drained: self.lifecycle.state() == NodeState::Stopped && self.lifecycle.held(),
            membership: (**membership.snapshot.load()).clone(),
            farm_commands: self.farm_commands.get(),
        }
    }
}

/// Probes with `probe` every interval on a thread of `scope`, as check `name`, until the
/// shutdown.
fn spawn_check<'scope>(
    scope: &'scope Scope<'scope, '_>,
    index: usize,
    name: String,
    mut probe: Probe,
    results: Sender<Probed>,
    shutdown: &'scope Shutdown,
) -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name(format!("herd-check{index}"))
        .spawn_scoped(scope, move || loop {
            let started = Instant::now();
            let probed = Probed {
                check: index,
                result: probe.probe(&name),
                took: started.elapsed(),
            };
            if results.send(probed).is_err() {
                return;
            }
            if shutdown.wait(probe.interval().saturating_sub(started.elapsed())) {
                return;
            }
        })?;
    Ok(())
}

/// Runs `script` for `reason` on a thread of its own, its output logged line by line.
fn spawn_script(
    scripts: Arc<Scripts>,
    script: Script,
    reason: Reason,
    ended: Sender<ScriptEnded>,
) -> anyhow::Result<()> {
    tracing::info!(%script, %reason, "running the {script} script");
    std::thread::Builder::new()
        .name(format!("herd-{script}"))
        .spawn(move || {
            let result = scripts.run(script, reason, |line| tracing::info!(%script, "{line}"));
            let (success, how) = match result {
                Ok(finished) => (finished.success, finished.how),
                Err(error) => (false, format!("cannot run it: {error}")),
            };
            let _ = ended.send(ScriptEnded {
                script,
                success,
                how,
            });
        })?;
    Ok(())
}
