//! `herd-perf console`: the web console's cost and its page's update latency, on a 3-node
//! farm of `herd run` processes in network namespaces, every node serving `[admin] metrics`
//! and the first the console too. The CPU time of the console's node and of another is
//! measured over phases of equal length (no page open, one page, five pages, `/metrics`
//! scraped once a second); then a node is drained through the page's own button, again and
//! again, timing how long the page takes to show it.

mod cpu;
mod page;
mod report;
mod sse;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use herd_config::DataplaneMode;
use herd_testbed::config::{quoted, FarmToml, KEY};
use herd_testbed::process::START;
use herd_testbed::{stale, FarmBed, FarmPlan, Herd, HerdRun, HubKind, Offload, Uplink};

use self::cpu::{cpu_time, CpuTime};
use self::page::{EventStream, Session};
pub use self::report::ConsoleReport;
use self::report::{Latency, Phase};
use crate::cli::ConsoleArgs;
use crate::failover::{check, herd_exe, pause};
use crate::topology::TAG;

/// The nodes; the first serves the console, the last is the one drained.
const NODES: [&str; 3] = ["alpha", "bravo", "charlie"];
/// The node serving the console.
const CONSOLE_NODE: usize = 0;
/// The other node measured.
const OTHER_NODE: usize = 1;
/// The node drained for the latency.
const DRAINED: usize = 2;
/// The metrics' port on every node.
const METRICS_PORT: u16 = 9477;
/// The console's port.
const CONSOLE_PORT: u16 = 9480;
/// The console's secret: any line of 16 characters or more.
const SECRET: &str = "herd-perf console secret";
/// herd's web threads: the event loop (`herd-web`) and its blocking threads.
const WEB_THREADS: &str = "herd-web";
/// How long a node's change may take to reach a page.
const SHOWN: Duration = Duration::from_secs(30);
/// How long a started node may take to be up again.
const BACK_UP: Duration = Duration::from_secs(60);
/// How often the console samples the farm while a page is open: the drains are spread evenly
/// over this period, as they would otherwise follow the sampling in step.
const SAMPLE_PERIOD: Duration = Duration::from_millis(500);
/// The pages of the busiest phase.
const MANY_PAGES: usize = 5;

/// A running farm; dropped, its herds are killed and its bed removed.
struct Farm {
    bed: FarmBed,
    herds: Vec<Herd>,
}

impl Drop for Farm {
    fn drop(&mut self) {
        herd_testbed::process::stop_all(&mut self.herds, Duration::from_secs(5));
    }
}

/// Runs the measurement as `args` say; `interrupted` is raised by SIGINT or SIGTERM.
pub fn run(args: &ConsoleArgs, interrupted: &AtomicBool) -> anyhow::Result<ConsoleReport> {
    let herd = herd_exe(args.herd.as_deref())?;
    stale::remove(TAG)?;
    let farm = start(&herd)?;
    let console = SocketAddr::new(
        IpAddr::V4(farm.bed.nodes[CONSOLE_NODE].address),
        CONSOLE_PORT,
    );
    let client = &farm.bed.client.netns;
    let session = Session::login(client, console, SECRET)?;
    tracing::info!("waiting for every node to be up");
    session.events()?.wait_for(BACK_UP, |event| {
        event.states.len() == NODES.len() && event.states.iter().all(|state| state == "up")
    })?;
    let length = Duration::from_secs(args.phase_seconds.into());
    let mut phases = Vec::new();
    tracing::info!("phase: no page open");
    phases.push(measure(&farm, "no page open", length, interrupted)?);
    {
        let _page = session.events()?;
        tracing::info!("phase: one page open");
        phases.push(measure(&farm, "1 page open", length, interrupted)?);
        let _more = (1..MANY_PAGES)
            .map(|_| Session::login(client, console, SECRET)?.events())
            .collect::<anyhow::Result<Vec<EventStream>>>()?;
        tracing::info!("phase: {MANY_PAGES} pages open");
        phases.push(measure(
            &farm,
            &format!("{MANY_PAGES} pages open"),
            length,
            interrupted,
        )?);
    }
    if !args.skip_scrapes {
        tracing::info!("phase: /metrics scraped every second, no page open");
        let scraping = Scraper::start(&farm)?;
        phases.push(measure(
            &farm,
            "no page, /metrics scraped every second on each node",
            length,
            interrupted,
        )?);
        scraping.stop()?;
    }
    let mut latencies = Vec::new();
    let page = session.events()?;
    let drained = NODES[DRAINED];
    for run in 1..=args.runs {
        check(interrupted)?;
        tracing::info!("drain {run} of {}", args.runs);
        pause(SAMPLE_PERIOD * (run - 1) / args.runs, interrupted)?;
        session.command(drained, "drain")?;
        let answered = Instant::now();
        let shown = page
            .wait_for(SHOWN, |event| {
                event.at >= answered && event.state_of(drained).is_some_and(|state| state != "up")
            })
            .with_context(|| format!("the page did not show {drained} drained"))?;
        latencies.push(shown.at - answered);
        session.command(drained, "start")?;
        let started = Instant::now();
        page.wait_for(BACK_UP, |event| {
            event.at >= started && event.state_of(drained) == Some("up")
        })
        .with_context(|| format!("{drained} was not up again within {BACK_UP:?}"))?;
    }
    Ok(ConsoleReport {
        command: crate::command_line(),
        phase_seconds: args.phase_seconds,
        phases,
        latency: Latency::of(&latencies),
    })
}

/// Builds the bed and starts every node's herd, each with its own `[admin]` table, and waits
/// until each says that it runs, and the console's node that it serves the console.
fn start(herd: &std::path::Path) -> anyhow::Result<Farm> {
    let bed = FarmBed::create(&FarmPlan {
        prefix: format!("{TAG}-{}-console", std::process::id()),
        nodes: &NODES,
        hub: HubKind::Learning,
        uplink: Uplink::Veth,
        sources: 0,
        client_offload: Offload::Default,
    })?;
    let key = bed.bed().write_private("farm.key", KEY)?;
    let secret = bed
        .bed()
        .write_private("console.secret", &format!("{SECRET}\n"))?;
    let mut farm = Farm {
        herds: Vec::new(),
        bed,
    };
    let configs = (0..NODES.len())
        .map(|node| {
            let text = config(
                &farm.bed,
                &key,
                node,
                (node == CONSOLE_NODE).then_some(&secret),
            );
            farm.bed
                .bed()
                .write_private(&format!("{}.toml", NODES[node]), &text)
        })
        .collect::<anyhow::Result<Vec<PathBuf>>>()?;
    // Started together: each waits for the others' heartbeats anyway.
    for (node, config) in configs.iter().enumerate() {
        let run = HerdRun {
            exe: herd,
            config,
            log_file: None,
            echo: false,
        };
        farm.herds.push(farm.bed.spawn_herd(node, &run)?);
    }
    for (node, herd) in farm.herds.iter().enumerate() {
        // The console's listener may come after the node says that it runs.
        let (what, said) = if node == CONSOLE_NODE {
            ("that it serves the console", "serving the console")
        } else {
            ("that it runs", "running:")
        };
        if herd
            .wait_for(0, |line| line.contains(said), START)
            .is_none()
        {
            bail!(
                "{}'s herd did not say {what} within {START:?}; its last lines: {:?}",
                NODES[node],
                herd.tail(5)
            );
        }
    }
    Ok(farm)
}

/// Node `node`'s configuration: the farm's, then `[admin]` with the metrics on its own
/// address, and the console when it has the console's `secret`.
fn config(bed: &FarmBed, key: &std::path::Path, node: usize, secret: Option<&PathBuf>) -> String {
    let farm = bed
        .nodes
        .iter()
        .fold(
            FarmToml::new("herd-perf", DataplaneMode::Xdp),
            |farm, host| farm.node(&host.name, host.address),
        )
        .key_file(key)
        .rule(herd_config::Protocol::Tcp, &[80], None);
    let address = bed.nodes[node].address;
    let mut admin = format!(
        "[admin]\nmetrics = {}\n",
        quoted(&format!("{address}:{METRICS_PORT}"))
    );
    if let Some(secret) = secret {
        admin.push_str(&format!(
            "console = {}\nconsole_secret_file = {}\n",
            quoted(&format!("{address}:{CONSOLE_PORT}")),
            quoted(&secret.display().to_string())
        ));
    }
    farm.tables(&admin).text()
}

/// Measures the CPU time of the console's node and of another over `length`.
fn measure(
    farm: &Farm,
    name: &str,
    length: Duration,
    interrupted: &AtomicBool,
) -> anyhow::Result<Phase> {
    let pids = [CONSOLE_NODE, OTHER_NODE].map(|node| farm.herds[node].pid());
    let before = pids.map(|pid| cpu_time(pid, WEB_THREADS));
    let start = Instant::now();
    pause(length, interrupted)?;
    let after = pids.map(|pid| cpu_time(pid, WEB_THREADS));
    let wall = start.elapsed();
    let used = |index: usize| -> anyhow::Result<CpuTime> {
        let before = before[index]
            .as_ref()
            .map_err(|error| anyhow::anyhow!("{error:#}"))?;
        let after = after[index]
            .as_ref()
            .map_err(|error| anyhow::anyhow!("{error:#}"))?;
        Ok(after.since(*before))
    };
    Ok(Phase {
        name: name.to_owned(),
        wall,
        console: used(0)?,
        other: used(1)?,
        load: load_average()?,
    })
}

/// The 1-minute load average.
fn load_average() -> anyhow::Result<f64> {
    let text = std::fs::read_to_string("/proc/loadavg").context("cannot read /proc/loadavg")?;
    text.split_whitespace()
        .next()
        .and_then(|field| field.parse().ok())
        .with_context(|| format!("/proc/loadavg says `{}`", text.trim_end()))
}

/// A thread in the client's namespace that asks every node for `/metrics` once a second.
struct Scraper {
    stop: std::sync::Arc<AtomicBool>,
    thread: std::thread::JoinHandle<anyhow::Result<()>>,
}

impl Scraper {
    /// Starts scraping.
    fn start(farm: &Farm) -> anyhow::Result<Self> {
        let netns = farm.bed.client.netns.clone();
        let urls: Vec<String> = farm
            .bed
            .nodes
            .iter()
            .map(|node| format!("http://{}:{METRICS_PORT}/metrics", node.address))
            .collect();
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let stopped = std::sync::Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("scraper".to_owned())
            .spawn(move || -> anyhow::Result<()> {
                netns.enter()?;
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .timeout_global(Some(Duration::from_secs(1)))
                    .build()
                    .into();
                while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                    let next = Instant::now() + Duration::from_secs(1);
                    for url in &urls {
                        agent
                            .get(url)
                            .call()
                            .and_then(|mut response| response.body_mut().read_to_string())
                            .with_context(|| format!("GET {url}"))?;
                    }
                    std::thread::sleep(next.saturating_duration_since(Instant::now()));
                }
                Ok(())
            })
            .context("cannot start the scraper thread")?;
        Ok(Scraper { stop, thread })
    }

    /// Stops scraping; fails if a scrape did.
    fn stop(self) -> anyhow::Result<()> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread
            .join()
            .map_err(|_| anyhow::anyhow!("the scraper thread panicked"))?
    }
}
