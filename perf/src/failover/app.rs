//! The application's failure: every node of a fresh farm runs an application (Debian's nginx,
//! in the foreground, one process, in the node's namespace on 127.0.0.1) that a `tcp` or an
//! `http` check of herd watches; the victim's application is killed with SIGKILL while the load
//! runs in its buckets, and the figures are the time until the victim logs that its check
//! failed and that it withdraws, and until its buckets are answered by their new owners.
//!
//! A withdrawing node releases its buckets at once for new TCP connections, which the new
//! owners take once the farm agrees on the view without it; it keeps the connections it serves
//! and every non-TCP packet of those buckets until its drain ends, which is when its kernel
//! counts none of those connections left (the crashed application holds none; the load's short
//! connections close within milliseconds), or `drain_s` at the latest. So the UDP figure
//! includes the drain's first count, and the report shows when the drain ended.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use herd_config::Check;
use herd_testbed::process::dies_with_its_parent;
use herd_testbed::FarmBed;
use serde::Serialize;

use super::farm::{without, Farm, FarmSpec};
use super::kill::{kill_delay, RECOVERY_BOUND, WARM_UP};
use super::layout::NODES;
use super::report::{optional_ms, verdict, Spread};
use super::victim::{last_answer, recovered, served_before, VictimLoad};
use super::{check, pause, Settings};

/// The port the application listens on, on 127.0.0.1 in each node's namespace.
const APP_PORT: u16 = 8080;
/// The goal for the p99 of the time until the victim's buckets are answered by their new
/// owners, with the recommended check settings, in milliseconds.
const GOAL_P99_MS: f64 = 500.0;
/// Consecutive runs that may fail to start before the series gives up.
const FAILURES_IN_A_ROW: usize = 3;

/// What the check probes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Probe {
    /// `kind = "tcp"`: a connection to the application's port.
    Tcp,
    /// `kind = "http"`: a `GET /` answered with a success.
    Http,
}

/// The check's timing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Timing {
    /// The README's recommended settings: interval 100 ms, timeout 100 ms, fall 2, rise 2.
    Recommended,
    /// No timing keys: the check's defaults.
    Defaults,
}

/// The recommended settings' keys: `interval_ms`, `timeout_ms`, `fall`, `rise`.
const RECOMMENDED: (u32, u32, u32, u32) = (100, 100, 2, 2);

impl Timing {
    /// `interval_ms`, `timeout_ms`, `fall` and `rise` as the node runs them.
    fn keys(self) -> (u32, u32, u32, u32) {
        match self {
            Timing::Recommended => RECOMMENDED,
            Timing::Defaults => (
                Check::DEFAULT_INTERVAL_MS,
                Check::DEFAULT_TIMEOUT_MS,
                Check::DEFAULT_FALL,
                Check::DEFAULT_RISE,
            ),
        }
    }

    /// The probe period.
    fn interval(self) -> Duration {
        Duration::from_millis(self.keys().0.into())
    }
}

/// The application and its check, as every node of a farm runs them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct App {
    /// What the check probes.
    pub probe: Probe,
    /// Its timing.
    pub timing: Timing,
}

impl App {
    /// The `[[check]]` table: the default action, `restart` (the node withdraws, and with
    /// no scripts waits out of the farm until the check passes again).
    pub fn table(self) -> String {
        let target = match self.probe {
            Probe::Tcp => format!("kind = \"tcp\"\nhost = \"127.0.0.1\"\nport = {APP_PORT}\n"),
            Probe::Http => format!("kind = \"http\"\nurl = \"http://127.0.0.1:{APP_PORT}/\"\n"),
        };
        let timing = match self.timing {
            Timing::Recommended => {
                let (interval, timeout, fall, rise) = RECOMMENDED;
                format!(
                    "interval_ms = {interval}\ntimeout_ms = {timeout}\nfall = {fall}\nrise = {rise}\n"
                )
            }
            Timing::Defaults => String::new(),
        };
        format!("[[check]]\nname = \"app\"\n{target}{timing}")
    }

    /// The check in words, for the report.
    fn words(self) -> String {
        let (interval, timeout, fall, rise) = self.timing.keys();
        let which = match self.timing {
            Timing::Recommended => "recommended",
            Timing::Defaults => "defaults",
        };
        format!(
            "`{}`, {which} (interval {interval} ms, timeout {timeout} ms, fall {fall}, rise {rise})",
            match self.probe {
                Probe::Tcp => "tcp",
                Probe::Http => "http",
            }
        )
    }
}

/// The application of every node: an nginx process each, killed on drop.
pub struct Apps {
    processes: Vec<Option<Child>>,
}

impl Apps {
    /// Starts the application in every node's namespace of `bed`, without waiting: the farm
    /// waits for the nodes to take their shares, which they do once their checks pass.
    pub fn start(bed: &FarmBed) -> anyhow::Result<Self> {
        let mut apps = Apps {
            processes: Vec::new(),
        };
        for host in &bed.nodes {
            let dir = bed.bed().dir(&format!("app/{}", host.name))?;
            let conf = dir.join("nginx.conf");
            std::fs::write(&conf, nginx_conf(&dir, &host.name))
                .with_context(|| format!("cannot write {}", conf.display()))?;
            let mut command = Command::new("ip");
            command
                .args(["netns", "exec", host.netns.name(), "nginx", "-p"])
                .arg(&dir)
                .arg("-c")
                .arg(&conf)
                .arg("-e")
                .arg(dir.join("error.log"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0);
            dies_with_its_parent(&mut command);
            // `ip netns exec` runs nginx in its own place: the child is nginx.
            let child = command
                .spawn()
                .with_context(|| format!("cannot start nginx on {}", host.name))?;
            apps.processes.push(Some(child));
        }
        Ok(apps)
    }

    /// Kills node `node`'s application with SIGKILL and waits until it is gone; returns the
    /// moment of the kill.
    pub fn kill(&mut self, node: usize) -> anyhow::Result<Instant> {
        let name = NODES[node];
        let Some(child) = self.processes.get_mut(node).and_then(Option::as_mut) else {
            bail!("{name} runs no application");
        };
        if let Some(status) = child.try_wait().context("cannot look at nginx")? {
            bail!("{name}'s nginx had already exited before the kill ({status})");
        }
        let at = Instant::now();
        child
            .kill()
            .with_context(|| format!("cannot kill {name}'s nginx"))?;
        child
            .wait()
            .with_context(|| format!("cannot wait for {name}'s nginx"))?;
        self.processes[node] = None;
        Ok(at)
    }
}

impl Drop for Apps {
    fn drop(&mut self) {
        for child in self.processes.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// nginx's configuration for node `name`: in the foreground and one process (so that one
/// SIGKILL kills the application), on 127.0.0.1, answering every request with the node's
/// name; every file it writes under `dir`.
fn nginx_conf(dir: &Path, name: &str) -> String {
    let dir = dir.display();
    format!(
        r#"daemon off;
master_process off;
pid {dir}/nginx.pid;
error_log {dir}/error.log;
events {{
    worker_connections 64;
}}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen 127.0.0.1:{APP_PORT};
        location / {{
            return 200 "{name}\n";
        }}
    }}
}}
"#
    )
}

/// What one run measured. Times are in milliseconds after the application's kill.
#[derive(Clone, Debug, Serialize)]
pub struct AppRun {
    /// The node whose application was killed (index in [`NODES`]).
    pub victim: usize,
    /// The delay added to the warm-up, in ms: where in a probe period the kill fell.
    pub delay_ms: f64,
    /// The victim's buckets, one UDP flow and one stream of TCP connections in each.
    pub buckets: usize,
    /// Of the UDP flows, those the victim answered before the kill.
    pub udp_by_victim_before: usize,
    /// The victim logs that its check failed.
    pub check_failed_ms: Option<f64>,
    /// The victim logs that it withdraws.
    pub withdrawing_ms: Option<f64>,
    /// The victim logs that its drain is over.
    pub drain_over_ms: Option<f64>,
    /// Until every UDP flow was answered by its new owner; `None`: not within the bound.
    pub udp_ms: Option<f64>,
    /// Until a TCP connection in every bucket was answered by its new owner.
    pub tcp_ms: Option<f64>,
    /// The last survivor's install of its whole new share.
    pub installed_ms: Option<f64>,
    /// The victim's last answer (UDP or TCP).
    pub victim_last_ms: Option<f64>,
    /// UDP requests sent over the run.
    pub udp_sent: u64,
    /// UDP answers received over the run.
    pub udp_answers: u64,
    /// TCP connections opened over the run.
    pub tcp_opened: u64,
    /// TCP connections that failed (refused, reset or timed out).
    pub tcp_failed: u64,
}

/// The runs of one check and timing.
#[derive(Debug, Serialize)]
pub struct Series {
    /// The check.
    pub app: App,
    /// The runs measured.
    pub runs: Vec<AppRun>,
    /// Runs that could not be measured, with why.
    pub failed_runs: Vec<String>,
}

/// Every series of the application's failure.
#[derive(Debug, Serialize)]
pub struct AppFailure {
    /// How the farm, the application and the load were set up, in a sentence.
    pub setup: String,
    /// The series, recommended settings first.
    pub series: Vec<Series>,
}

/// Runs `runs` runs of each check at the recommended settings and half as many (at least
/// one) at the check defaults, each on a fresh farm built from `spec`; `serial` counts the
/// farms built.
pub fn run<'a>(
    serial: &mut usize,
    spec: &dyn Fn(String) -> FarmSpec<'a>,
    runs: u32,
    settings: &Settings,
    interrupted: &Arc<AtomicBool>,
) -> anyhow::Result<AppFailure> {
    let plans = [
        (Probe::Tcp, Timing::Recommended, runs),
        (Probe::Http, Timing::Recommended, runs),
        (Probe::Tcp, Timing::Defaults, runs.div_ceil(2)),
        (Probe::Http, Timing::Defaults, runs.div_ceil(2)),
    ];
    let mut series = Vec::new();
    for (probe, timing, count) in plans {
        let app = App { probe, timing };
        let mut done = Series {
            app,
            runs: Vec::new(),
            failed_runs: Vec::new(),
        };
        let mut in_a_row = 0;
        for run in 0..count as usize {
            check(interrupted)?;
            let victim = run % NODES.len();
            let tag = format!("app-{}-{:?}-{}", probe_name(probe), timing, run + 1);
            tracing::info!(
                "application failure, {}, run {} of {count}: killing {}'s application",
                app.words(),
                run + 1,
                NODES[victim]
            );
            *serial += 1;
            let delay = kill_delay(run, timing.interval());
            let farm_spec = FarmSpec {
                app: Some(app),
                ..spec(tag.to_lowercase())
            };
            match run_once(*serial, &farm_spec, victim, delay, settings, interrupted) {
                Ok(result) => {
                    tracing::info!(
                        "run {}: check failed {:?} ms, withdrawing {:?} ms, UDP {:?} ms, TCP {:?} ms",
                        run + 1,
                        result.check_failed_ms.map(f64::round),
                        result.withdrawing_ms.map(f64::round),
                        result.udp_ms.map(f64::round),
                        result.tcp_ms.map(f64::round),
                    );
                    done.runs.push(result);
                    in_a_row = 0;
                }
                Err(error) => {
                    check(interrupted)?;
                    tracing::warn!("run {} failed: {error:#}", run + 1);
                    done.failed_runs.push(format!("run {}: {error:#}", run + 1));
                    in_a_row += 1;
                    if in_a_row == FAILURES_IN_A_ROW {
                        bail!("{FAILURES_IN_A_ROW} runs in a row failed; the last: {error:#}");
                    }
                }
            }
        }
        series.push(done);
    }
    Ok(AppFailure {
        setup: format!(
            "Each node runs an application, Debian's nginx in the foreground as one process, \
             on 127.0.0.1:{APP_PORT} in its namespace, which a `[[check]]` of herd probes \
             (`tcp`: a connection; `http`: `GET /`), with the default action, `restart`, and \
             no scripts; each run on a fresh farm, the same load as the failover runs, and \
             the victim's nginx killed with SIGKILL 1 s into the load plus a delay that spreads \
             the kills over the probe period. Only answers by a bucket's new owner count: the \
             victim's herd runs on and its test servers answer until its buckets move. A \
             withdrawing node stops taking new TCP connections at once, and the new owners \
             take them once the farm agrees; it keeps the non-TCP traffic (the UDP flows) of \
             its buckets until its drain ends, when its kernel counts none of the connections \
             it serves there (counted every 250 ms): here the load's short connections to its \
             test servers, which outlive the application, so the UDP time includes that drain."
        ),
        series,
    })
}

/// The check kind as the configuration writes it.
fn probe_name(probe: Probe) -> &'static str {
    match probe {
        Probe::Tcp => "tcp",
        Probe::Http => "http",
    }
}

/// One run: a fresh farm whose nodes run the application, the load on node `victim`'s
/// buckets, and the kill of its application `delay` after the warm-up.
fn run_once(
    serial: usize,
    spec: &FarmSpec,
    victim: usize,
    delay: Duration,
    settings: &Settings,
    interrupted: &Arc<AtomicBool>,
) -> anyhow::Result<AppRun> {
    let mut farm = Farm::start(serial, spec)?;
    let span = WARM_UP + delay + RECOVERY_BOUND + Duration::from_secs(1);
    let mut load = VictimLoad::start(&farm, victim, span, settings)?;
    pause(WARM_UP + delay, interrupted)?;
    let marks = farm.marks();
    let kill_at = farm.kill_app(victim)?;
    load.failed_at(kill_at);
    let records = load.finish(interrupted)?;

    let ms = |at: Instant| at.saturating_duration_since(kill_at).as_secs_f64() * 1e3;
    let victim_line = |text: &str| -> anyhow::Result<Option<f64>> {
        Ok(farm
            .herd(victim)?
            .lines_since(marks[victim], |line| line.contains(text))
            .first()
            .map(|line| ms(line.at)))
    };
    let installed = farm.settle(&marks, without(victim)).ok().and_then(|when| {
        when.iter()
            .enumerate()
            .filter(|&(node, _)| node != victim)
            .map(|(_, at)| *at)
            .collect::<Option<Vec<Instant>>>()
            .and_then(|all| all.into_iter().max())
    });
    Ok(AppRun {
        victim,
        delay_ms: delay.as_secs_f64() * 1e3,
        buckets: load.buckets.len(),
        udp_by_victim_before: served_before(&records.udp, victim, kill_at),
        check_failed_ms: victim_line("check failed")?,
        withdrawing_ms: victim_line("node withdrawing")?,
        drain_over_ms: victim_line("drain over")?,
        udp_ms: recovered(&records.udp, &load.new_owners, kill_at).map(ms),
        tcp_ms: recovered(&records.tcp, &load.new_owners, kill_at).map(ms),
        installed_ms: installed.map(ms),
        victim_last_ms: last_answer(&records, victim, kill_at).map(ms),
        udp_sent: records.udp_sent,
        udp_answers: records.udp.iter().map(|flow| flow.len() as u64).sum(),
        tcp_opened: records.tcp_opened,
        tcp_failed: records.tcp_failed,
    })
}

/// A row of the table: what it times, how to read it from a run, and whether the goal
/// applies to it (at the recommended settings).
type Timed = (&'static str, fn(&AppRun) -> Option<f64>, bool);

impl AppFailure {
    /// Writes the section into `out`.
    pub fn write(&self, out: &mut String) -> std::fmt::Result {
        use std::fmt::Write;
        writeln!(out, "### The application's failure\n")?;
        writeln!(out, "{}\n", self.setup)?;
        let rows: [Timed; 7] = [
            (
                "the victim logs `check failed`",
                |r| r.check_failed_ms,
                false,
            ),
            (
                "the victim logs `node withdrawing`",
                |r| r.withdrawing_ms,
                false,
            ),
            (
                "a new TCP connection in each of the victim's buckets answered by its new owner",
                |r| r.tcp_ms,
                true,
            ),
            ("the victim logs `drain over`", |r| r.drain_over_ms, false),
            (
                "every UDP flow of the victim's buckets answered by its new owner",
                |r| r.udp_ms,
                true,
            ),
            (
                "the last survivor installs its whole new share",
                |r| r.installed_ms,
                false,
            ),
            ("the victim's last answer", |r| r.victim_last_ms, false),
        ];
        writeln!(
            out,
            "| check | from the kill of the application until | p50 | p99 | max | goal | verdict |"
        )?;
        writeln!(out, "| --- | --- | --- | --- | --- | --- | --- |")?;
        for series in self.series.iter().filter(|s| !s.runs.is_empty()) {
            let check = format!("{}, {} runs", series.app.words(), series.runs.len());
            for (what, value, goal) in rows {
                let goal = goal && series.app.timing == Timing::Recommended;
                let spread = if goal {
                    Spread::of(series.runs.iter().map(value))
                } else {
                    Spread::of(series.runs.iter().map(value).filter(Option::is_some))
                };
                let Some(spread) = spread else {
                    continue;
                };
                let (goal, verdict) = if goal {
                    (
                        format!("p99 ≤ {GOAL_P99_MS:.0} ms"),
                        verdict(spread.missing == 0 && spread.p99 <= GOAL_P99_MS),
                    )
                } else {
                    (String::new(), "")
                };
                let seen = if spread.count < series.runs.len() {
                    format!(" (seen in {} of {} runs)", spread.count, series.runs.len())
                } else if spread.missing > 0 {
                    format!(
                        " ({} runs not within {} s)",
                        spread.missing,
                        RECOVERY_BOUND.as_secs()
                    )
                } else {
                    String::new()
                };
                writeln!(
                    out,
                    "| {check} | {what}{seen} | {} | {} | {} | {goal} | {verdict} |",
                    spread.cell(spread.p50),
                    spread.cell(spread.p99),
                    spread.cell(spread.max),
                )?;
            }
        }
        writeln!(out)?;
        for series in &self.series {
            if series.failed_runs.is_empty() {
                continue;
            }
            writeln!(
                out,
                "Runs that could not be measured, {}:\n",
                series.app.words()
            )?;
            for failure in &series.failed_runs {
                writeln!(out, "- {failure}")?;
            }
            writeln!(out)?;
        }
        self.write_runs(out)
    }

    fn write_runs(&self, out: &mut String) -> std::fmt::Result {
        use std::fmt::Write;
        writeln!(
            out,
            "<details><summary>Every run of the application's failure</summary>\n"
        )?;
        writeln!(
            out,
            "| check | victim | kill delay | buckets | UDP flows answered by the victim before | \
             `check failed` | `node withdrawing` | TCP | `drain over` | UDP | installed | \
             victim's last answer | UDP answered | TCP failed |"
        )?;
        writeln!(
            out,
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
        )?;
        for series in &self.series {
            for run in &series.runs {
                writeln!(
                    out,
                    "| {} | {} | {:.0} ms | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} of {} | {} of {} |",
                    series.app.words(),
                    NODES[run.victim],
                    run.delay_ms,
                    run.buckets,
                    run.udp_by_victim_before,
                    optional_ms(run.check_failed_ms),
                    optional_ms(run.withdrawing_ms),
                    optional_ms(run.tcp_ms),
                    optional_ms(run.drain_over_ms),
                    optional_ms(run.udp_ms),
                    optional_ms(run.installed_ms),
                    optional_ms(run.victim_last_ms),
                    run.udp_answers,
                    run.udp_sent,
                    run.tcp_failed,
                    run.tcp_opened,
                )?;
            }
        }
        writeln!(out, "\n</details>\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herd_config::{CheckKind, DataplaneMode, FarmConfig};
    use herd_testbed::config::FarmToml;

    /// The checks as a node reads them from a configuration with `app`'s table.
    fn parsed(app: App) -> Check {
        let text = FarmToml::new("app", DataplaneMode::Xdp)
            .node("alpha", herd_testbed::address::node4(0))
            .rule(herd_config::Protocol::Tcp, &[80], None)
            .tables(&app.table())
            .text();
        let config = FarmConfig::parse(&text, Path::new("farm.toml")).unwrap();
        assert_eq!(config.checks.len(), 1);
        config.checks[0].clone()
    }

    #[test]
    fn the_checks_are_valid_and_have_the_timing_asked_for() {
        let tcp = parsed(App {
            probe: Probe::Tcp,
            timing: Timing::Recommended,
        });
        assert!(matches!(tcp.kind, CheckKind::Tcp { port: APP_PORT, .. }));
        assert_eq!(
            (tcp.interval_ms, tcp.timeout_ms, tcp.fall, tcp.rise),
            RECOMMENDED
        );
        let http = parsed(App {
            probe: Probe::Http,
            timing: Timing::Defaults,
        });
        assert!(matches!(http.kind, CheckKind::Http { .. }));
        assert_eq!(
            (http.interval_ms, http.timeout_ms, http.fall, http.rise),
            Timing::Defaults.keys()
        );
        assert_eq!(Timing::Defaults.interval(), Duration::from_secs(1));
    }
}
