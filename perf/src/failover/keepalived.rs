//! The reference rows of `herd-perf failover`: keepalived (VRRPv3, active-passive) holding the
//! VIP for two nodes on the same kind of bed as herd's farm (a learning bridge, the same
//! address plan), probed with the same UDP flows to the VIP, each answered by the responder of
//! the node that holds it. The master's link to the bridge is cut; the failover time is until
//! every flow has been answered by the backup.
//!
//! The responders bind the VIP before either node holds it (`ip_nonlocal_bind` in each node's
//! namespace), so that the backup's responder answers as soon as keepalived adds the VIP there.
//! Who holds the VIP is learnt from who answers, never from keepalived's log.

use std::fmt::Write;
use std::fs::File;
use std::net::{SocketAddrV4, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use herd_testbed::address::{flows, CLIENT4};
use herd_testbed::farm::INTERFACE;
use herd_testbed::process::dies_with_its_parent;
use herd_testbed::responder::{Kind, On, Responders, Service, Settings as ResponderSettings};
use herd_testbed::{command, FarmBed, FarmPlan, HubKind, Offload, Uplink};
use serde::Serialize;

use super::cut::LinkCut;
use super::kill::{kill_delay, RECOVERY_BOUND};
use super::layout::{NODES, SOURCES, UDP_PORT, VIP};
use super::load::{self, Control, Goal, Plan};
use super::report::Spread;
use super::{check, pause, Settings, FAILURES_IN_A_ROW};
use crate::topology::TAG;

/// The master (index in [`NODES`]), whose link is cut.
const MASTER: usize = 0;
/// The backup, which must take the VIP over.
const BACKUP: usize = 1;
/// The VRRP priorities of the master and the backup: the backup's skew time, (256 - priority)
/// / 256 of an advert interval, is added to its three intervals of silence.
const PRIORITIES: [u8; 2] = [200, 100];
/// The virtual router's id, the same on both nodes.
const ROUTER_ID: u8 = 18;
/// The advert intervals VRRPv3 can carry (in centiseconds, 12 bits) that a run can also wait
/// out: three of them and the skew stay well within [`RECOVERY_BOUND`].
const ADVERT_MS: std::ops::RangeInclusive<u32> = 10..=2000;
/// How long the master may take to be answering every flow once keepalived has started.
const ELECTION: Duration = Duration::from_secs(15);
/// How often the start-up probe asks the VIP who holds it.
const PROBE_EVERY: Duration = Duration::from_millis(20);
/// How long the load runs once the master answers, so that the backup has heard adverts for a
/// while (each run adds its own delay within an advert interval, see [`kill_delay`]).
const WARM_UP: Duration = Duration::from_secs(1);
/// How long the load goes on once every flow has been answered by the backup.
const LINGER: Duration = Duration::from_millis(100);
/// How long keepalived has to stop after SIGTERM before its process group is killed.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// What one run measured. Times are in milliseconds after the cut.
#[derive(Clone, Debug, Serialize)]
pub struct VrrpRun {
    /// The delay added to the warm-up, in ms: where in an advert interval the cut fell.
    pub delay_ms: f64,
    /// How long the cut (one `ioctl` taking the master's hub port down, as herd's link cuts)
    /// took: counted in the times, which start when it is started.
    pub cut_ms: f64,
    /// Until every UDP flow was answered by the backup; `None`: not within the bound.
    pub udp_ms: Option<f64>,
    /// Until the first UDP flow was answered by the backup: the takeover, before the client
    /// and the bridge have all learnt where the VIP went.
    pub first_ms: Option<f64>,
    /// Of the UDP flows, those the master answered before the cut.
    pub by_master_before: usize,
    /// Answers before the cut by the backup (0 when the master held the VIP throughout).
    pub stray_before: usize,
    /// UDP requests sent over the run.
    pub udp_sent: u64,
    /// UDP answers received over the run.
    pub udp_answers: u64,
}

/// The runs at one advert interval.
#[derive(Clone, Debug, Serialize)]
pub struct VrrpSet {
    /// keepalived's `advert_int`, in ms.
    pub advert_ms: u32,
    /// The runs measured.
    pub runs: Vec<VrrpRun>,
    /// Runs that could not be measured, with why.
    pub failed_runs: Vec<String>,
}

/// What the reference runs are given.
pub struct Reference<'a> {
    /// The advert intervals, in ms, each measured in turn.
    pub advert_ms: &'a [u32],
    /// Runs per advert interval.
    pub runs: u32,
    /// UDP flows to the VIP: as many as a herd run's victim has buckets.
    pub flows: usize,
    /// The load.
    pub settings: &'a Settings,
    /// Where keepalived's logs are kept (`vrrp-ADVERTms-run-N-NODE.log`), if anywhere; by
    /// default in the bed's scratch directory, which goes with the bed.
    pub keep_logs: Option<&'a Path>,
}

/// Fails, before anything is built, on an advert interval keepalived's VRRPv3 cannot carry or
/// a run cannot wait out, or when keepalived is missing.
pub fn validate(advert_ms: &[u32]) -> anyhow::Result<()> {
    if advert_ms.is_empty() {
        bail!("--keepalived-advert-ms needs at least one interval");
    }
    for &ms in advert_ms {
        if !ADVERT_MS.contains(&ms) || ms % 10 != 0 {
            bail!(
                "--keepalived-advert-ms {ms}: VRRPv3's advert interval is in centiseconds; give \
                 a multiple of 10 from {} to {} ms",
                ADVERT_MS.start(),
                ADVERT_MS.end()
            );
        }
    }
    command::run("keepalived", &["--version"], None).context(
        "the reference rows need keepalived (scripts/deps installs it; or pass \
         --skip-keepalived)",
    )?;
    Ok(())
}

/// Runs the reference: `reference.runs` runs at each advert interval, each on a fresh bed
/// numbered from `serial` on.
pub fn run(
    serial: &mut usize,
    reference: &Reference,
    interrupted: &Arc<AtomicBool>,
) -> anyhow::Result<Vec<VrrpSet>> {
    let mut sets = Vec::new();
    for &advert_ms in reference.advert_ms {
        let advert = Duration::from_millis(advert_ms.into());
        let mut set = VrrpSet {
            advert_ms,
            runs: Vec::new(),
            failed_runs: Vec::new(),
        };
        let mut in_a_row = 0;
        for run in 0..reference.runs as usize {
            check(interrupted)?;
            tracing::info!(
                "keepalived at advert_int {advert_ms} ms, run {} of {}: cutting {}'s link",
                run + 1,
                reference.runs,
                NODES[MASTER]
            );
            *serial += 1;
            let tag = format!("vrrp-{advert_ms}ms-run-{}", run + 1);
            match run_once(
                *serial,
                (advert, kill_delay(run, advert)),
                &tag,
                reference,
                interrupted,
            ) {
                Ok(result) => {
                    tracing::info!(
                        "run {}: UDP {:?} ms",
                        run + 1,
                        result.udp_ms.map(f64::round)
                    );
                    set.runs.push(result);
                    in_a_row = 0;
                }
                Err(error) => {
                    check(interrupted)?;
                    tracing::warn!("keepalived run {} failed: {error:#}", run + 1);
                    set.failed_runs.push(format!("run {}: {error:#}", run + 1));
                    in_a_row += 1;
                    if in_a_row == FAILURES_IN_A_ROW {
                        bail!(
                            "{FAILURES_IN_A_ROW} keepalived runs in a row failed; the last: \
                             {error:#}"
                        );
                    }
                }
            }
        }
        sets.push(set);
    }
    Ok(sets)
}

/// Two nodes with keepalived and the UDP responder. Dropped in order: keepalived stops, the
/// responders stop, then the bed goes.
struct Pair {
    keepaliveds: Vec<Keepalived>,
    responders: Option<Responders>,
    bed: FarmBed,
}

/// Runs reference run `serial` (`tag` in log file names) at an advert interval, cutting the
/// master's link a delay after the warm-up.
fn run_once(
    serial: usize,
    (advert, delay): (Duration, Duration),
    tag: &str,
    reference: &Reference,
    interrupted: &Arc<AtomicBool>,
) -> anyhow::Result<VrrpRun> {
    let nodes = &NODES[..PRIORITIES.len()];
    let bed = FarmBed::create(&FarmPlan {
        prefix: format!("{TAG}-{}-vrrp{serial}", std::process::id()),
        nodes,
        hub: HubKind::Learning,
        uplink: Uplink::Veth,
        sources: SOURCES,
        client_offload: Offload::Default,
    })?;
    let mut pair = Pair {
        keepaliveds: Vec::new(),
        responders: None,
        bed,
    };
    for node in &pair.bed.nodes {
        // The responder binds the VIP on the backup too, before keepalived adds it there.
        node.netns.write_sysctl("net/ipv4/ip_nonlocal_bind", "1")?;
    }
    pair.responders = Some(Responders::start(
        &pair.bed.nodes,
        &[Service {
            kind: Kind::Udp,
            on: On::Vip,
            port: UDP_PORT,
        }],
        &ResponderSettings {
            vip: VIP.into(),
            line_wait: Duration::from_millis(100),
            record: false,
        },
    )?);
    for (node, name) in nodes.iter().enumerate() {
        let log = match reference.keep_logs {
            Some(dir) => dir.join(format!("{tag}-{name}.log")),
            None => pair
                .bed
                .bed()
                .dir("keepalived")?
                .join(format!("{name}.log")),
        };
        let keepalived = Keepalived::start(&pair.bed, node, advert, log)?;
        pair.keepaliveds.push(keepalived);
    }
    let client = pair.bed.client.netns.clone();
    let keepaliveds = &mut pair.keepaliveds;
    client
        .run(|| wait_for_master(keepaliveds, interrupted))?
        .context("keepalived did not give the master the VIP")?;

    let udp: Vec<SocketAddrV4> = flows(30000..40000, SOURCES).take(reference.flows).collect();
    let plan = Plan {
        goal: Some(Goal {
            udp: vec![BACKUP; udp.len()],
            tcp: Vec::new(),
            linger: LINGER,
        }),
        udp,
        tcp: Vec::new(),
        udp_interval: reference.settings.udp_interval,
        tcp_interval: reference.settings.tcp_interval,
        tcp_timeout: reference.settings.tcp_timeout,
    };
    let control = Arc::new(Control::default());
    let until = Instant::now() + WARM_UP + delay + RECOVERY_BOUND + Duration::from_secs(1);
    let thread_control = Arc::clone(&control);
    let load = std::thread::Builder::new()
        .name("load".into())
        .spawn(move || {
            client.enter()?;
            load::run(&plan, &thread_control, until)
        })
        .context("cannot start the load thread")?;
    // The load stops on every way out of here, or at its bound.
    let stop = StopOnDrop(&control);

    let link = LinkCut::prepare(&pair.bed, MASTER)?;
    pause(WARM_UP + delay, interrupted)?;
    let cut_at = Instant::now();
    let _ = control.kill_at.set(cut_at);
    link.cut()?;
    let cut_ms = ms(cut_at, Instant::now());
    while !load.is_finished() {
        check(interrupted)?;
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(stop);
    let records = load
        .join()
        .map_err(|_| anyhow!("the load thread panicked"))??;
    for keepalived in &mut pair.keepaliveds {
        keepalived.check_running()?;
    }

    let by_master_before = records
        .udp
        .iter()
        .filter(|flow| flow.iter().any(|a| a.node == MASTER && a.at < cut_at))
        .count();
    let stray_before = records
        .udp
        .iter()
        .flatten()
        .filter(|a| a.node != MASTER && a.at < cut_at)
        .count();
    // Each flow's first answer by the backup after the cut.
    let firsts: Vec<Option<Instant>> = records
        .udp
        .iter()
        .map(|flow| {
            flow.iter()
                .find(|a| a.node == BACKUP && a.at > cut_at)
                .map(|a| a.at)
        })
        .collect();
    let udp_ms = firsts
        .iter()
        .copied()
        .collect::<Option<Vec<Instant>>>()
        .and_then(|firsts| firsts.into_iter().max())
        .map(|at| ms(cut_at, at));
    let first_ms = firsts.iter().flatten().min().map(|&at| ms(cut_at, at));
    Ok(VrrpRun {
        delay_ms: delay.as_secs_f64() * 1e3,
        cut_ms,
        udp_ms,
        first_ms,
        by_master_before,
        stray_before,
        udp_sent: records.udp_sent,
        udp_answers: records.udp.iter().map(|flow| flow.len() as u64).sum(),
    })
}

/// The milliseconds from `from` to `to`.
fn ms(from: Instant, to: Instant) -> f64 {
    to.saturating_duration_since(from).as_secs_f64() * 1e3
}

/// Asks the VIP, from the calling thread's namespace (the client's), who holds it until the
/// master answers; fails if it does not within [`ELECTION`] or a keepalived exits.
fn wait_for_master(keepaliveds: &mut [Keepalived], interrupted: &AtomicBool) -> anyhow::Result<()> {
    let socket =
        UdpSocket::bind(SocketAddrV4::new(CLIENT4, 0)).context("cannot bind the start-up probe")?;
    socket
        .connect((VIP, UDP_PORT))
        .context("cannot connect the start-up probe to the VIP")?;
    socket
        .set_read_timeout(Some(PROBE_EVERY))
        .context("cannot give the start-up probe a timeout")?;
    let deadline = Instant::now() + ELECTION;
    let mut buf = [0u8; 64];
    while Instant::now() < deadline {
        check(interrupted)?;
        for keepalived in keepaliveds.iter_mut() {
            keepalived.check_running()?;
        }
        // A lost request or an ICMP error is asked again.
        let _ = socket.send(b"who");
        if let Ok(n) = socket.recv(&mut buf) {
            if buf[..n].starts_with(format!("{}:", NODES[MASTER]).as_bytes()) {
                return Ok(());
            }
        }
    }
    bail!(
        "{} did not answer on the VIP within {ELECTION:?}",
        NODES[MASTER]
    )
}

/// keepalived's configuration for node `node`: one VRRPv3 instance on its interface, the VIP
/// its only address.
fn config(node: usize, advert: Duration) -> String {
    let (state, priority) = if node == MASTER {
        ("MASTER", PRIORITIES[MASTER])
    } else {
        ("BACKUP", PRIORITIES[node])
    };
    format!(
        "global_defs {{\n\
         \x20   router_id {TAG}-{name}\n\
         \x20   vrrp_version 3\n\
         }}\n\
         vrrp_instance herd_perf {{\n\
         \x20   state {state}\n\
         \x20   interface {INTERFACE}\n\
         \x20   virtual_router_id {ROUTER_ID}\n\
         \x20   priority {priority}\n\
         \x20   advert_int {advert:.2}\n\
         \x20   virtual_ipaddress {{\n\
         \x20       {VIP}/32 dev {INTERFACE}\n\
         \x20   }}\n\
         }}\n",
        name = NODES[node],
        advert = advert.as_secs_f64(),
    )
}

/// A keepalived in the foreground in a node's namespace, in a process group of its own with
/// its VRRP child; stopped on drop.
struct Keepalived {
    child: Child,
    log: PathBuf,
}

impl Keepalived {
    /// Starts node `node`'s keepalived, its configuration and pid files in the bed's scratch
    /// directory, its log in `log`.
    fn start(bed: &FarmBed, node: usize, advert: Duration, log: PathBuf) -> anyhow::Result<Self> {
        let name = NODES[node];
        let dir = bed.bed().dir(&format!("keepalived/{name}"))?;
        let conf = dir.join("keepalived.conf");
        std::fs::write(&conf, config(node, advert))
            .with_context(|| format!("cannot write {}", conf.display()))?;
        let log_file =
            File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", bed.node(node)?.netns.name(), "keepalived"])
            // In the foreground, VRRP only, logging to the console (the log file) only.
            .args([
                "--dont-fork",
                "--vrrp",
                "--no_bfd",
                "--log-console",
                "--log-detail",
            ])
            .arg("--no-syslog")
            .arg("--use-file")
            .arg(&conf)
            .arg("--pid")
            .arg(dir.join("keepalived.pid"))
            .arg("--vrrp_pid")
            .arg(dir.join("vrrp.pid"))
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .process_group(0);
        // Should herd-perf die without dropping it, keepalived goes with it.
        dies_with_its_parent(&mut command);
        let child = command
            .spawn()
            .with_context(|| format!("cannot start keepalived on {name}"))?;
        Ok(Keepalived { child, log })
    }

    /// Fails if keepalived has exited: a run it did not last through measures nothing.
    fn check_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "keepalived exited ({status}); its log, {}",
                log_tail(&self.log)
            );
        }
        Ok(())
    }
}

impl Drop for Keepalived {
    fn drop(&mut self) {
        // Its group: the process started it, in a group of its own.
        let group = -(self.child.id() as libc::pid_t);
        // SIGTERM lets it remove the VIP and stop its VRRP child; SIGKILL to the whole group
        // ends whatever is left.
        // SAFETY: kill takes no pointers; the group is keepalived's alone.
        unsafe { libc::kill(group, libc::SIGTERM) };
        let deadline = Instant::now() + STOP_GRACE;
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        // SAFETY: as above.
        unsafe { libc::kill(group, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// The last lines of keepalived's log at `path`, or why it cannot be read.
fn log_tail(path: &Path) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(10)..].join(" | ");
            format!("{}: {tail}", path.display())
        }
        Err(error) => format!("{} cannot be read: {error}", path.display()),
    }
}

/// A row of the reference table: what it times, and how to read it from a run.
type Row = (&'static str, fn(&VrrpRun) -> Option<f64>);

/// The reference rows as a markdown table, with the runs that could not be measured; nothing
/// when there are no sets.
pub fn write_markdown(out: &mut String, sets: &[VrrpSet]) -> std::fmt::Result {
    if sets.is_empty() {
        return Ok(());
    }
    writeln!(
        out,
        "Reference: keepalived (VRRPv3, active-passive) holding the VIP for 2 nodes on the same \
         kind of bed (learning bridge, same address plan), master priority {}, backup {}; the \
         same UDP flows to the VIP, answered by a responder on each node; the master's link to \
         the bridge cut (its hub port down) {} s after the master answers on the VIP plus a \
         delay that spreads the cuts over the advert interval, each run on a fresh bed:\n",
        PRIORITIES[MASTER],
        PRIORITIES[BACKUP],
        WARM_UP.as_secs()
    )?;
    writeln!(
        out,
        "| from the master's link cut until | runs | p50 | p99 | max |"
    )?;
    writeln!(out, "| --- | --- | --- | --- | --- |")?;
    let rows: [Row; 2] = [
        ("every UDP flow is answered by the backup", |run| run.udp_ms),
        ("the first UDP flow is answered by the backup", |run| {
            run.first_ms
        }),
    ];
    for set in sets {
        let stray: usize = set.runs.iter().map(|run| run.stray_before).sum();
        let stray = if stray > 0 {
            format!(" ({stray} answers by the backup before the cut)")
        } else {
            String::new()
        };
        for (what, value) in rows {
            let Some(spread) = Spread::of(set.runs.iter().map(value)) else {
                continue;
            };
            let missing = if spread.missing > 0 {
                format!(
                    " ({} not within {} s)",
                    spread.missing,
                    RECOVERY_BOUND.as_secs()
                )
            } else {
                String::new()
            };
            writeln!(
                out,
                "| {what}: keepalived, advert_int {} ms{stray} | {}{missing} | {} | {} | {} |",
                set.advert_ms,
                set.runs.len(),
                spread.cell(spread.p50),
                spread.cell(spread.p99),
                spread.cell(spread.max),
            )?;
        }
    }
    writeln!(out)?;
    let longest_cut = sets
        .iter()
        .flat_map(|set| &set.runs)
        .map(|run| run.cut_ms)
        .fold(0.0, f64::max);
    writeln!(
        out,
        "The times start when the cut (the master's hub port taken down by one `ioctl`, as for \
         herd's link cuts) is started; it took at most {longest_cut:.0} ms.\n"
    )?;
    let failed: Vec<String> = sets
        .iter()
        .flat_map(|set| {
            set.failed_runs
                .iter()
                .map(move |failure| format!("advert_int {} ms, {failure}", set.advert_ms))
        })
        .collect();
    if !failed.is_empty() {
        writeln!(out, "keepalived runs that could not be measured:\n")?;
        for failure in failed {
            writeln!(out, "- {failure}")?;
        }
        writeln!(out)?;
    }
    Ok(())
}

/// Tells the load to stop when dropped.
struct StopOnDrop<'a>(&'a Control);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.stop.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_carry_the_advert_interval_in_seconds() {
        let master = config(MASTER, Duration::from_millis(100));
        assert!(master.contains("advert_int 0.10\n"), "{master}");
        assert!(master.contains("state MASTER\n"));
        assert!(master.contains("priority 200\n"));
        assert!(master.contains("198.18.0.100/32 dev eth0\n"), "{master}");
        let backup = config(BACKUP, Duration::from_secs(1));
        assert!(backup.contains("advert_int 1.00\n"), "{backup}");
        assert!(backup.contains("state BACKUP\n"));
        assert!(backup.contains("priority 100\n"));
    }

    #[test]
    fn reference_rows_give_each_interval_its_spread() {
        let run = |udp_ms| VrrpRun {
            delay_ms: 0.0,
            cut_ms: 2.0,
            udp_ms,
            first_ms: udp_ms.map(|ms| ms - 200.0),
            by_master_before: 86,
            stray_before: 0,
            udp_sent: 100,
            udp_answers: 90,
        };
        let sets = [
            VrrpSet {
                advert_ms: 1000,
                runs: vec![run(Some(3000.0)), run(Some(3600.0)), run(None)],
                failed_runs: vec!["run 4: no bed".to_owned()],
            },
            VrrpSet {
                advert_ms: 100,
                runs: vec![run(Some(300.0))],
                failed_runs: Vec::new(),
            },
        ];
        let mut out = String::new();
        write_markdown(&mut out, &sets).unwrap();
        assert!(
            out.contains(
                "| every UDP flow is answered by the backup: keepalived, advert_int 1000 ms | 3 \
                 (1 not within 10 s) | 3600 ms | > 10 s | > 10 s |"
            ),
            "{out}"
        );
        assert!(
            out.contains(
                "| the first UDP flow is answered by the backup: keepalived, advert_int 100 ms | \
                 1 | 100 ms | 100 ms | 100 ms |"
            ),
            "{out}"
        );
        assert!(out.contains("- advert_int 1000 ms, run 4: no bed"), "{out}");
        assert!(out.contains("it took at most 2 ms"), "{out}");
        let mut none = String::new();
        write_markdown(&mut none, &[]).unwrap();
        assert!(none.is_empty());
    }

    #[test]
    fn advert_intervals_are_checked_before_anything_runs() {
        assert!(validate(&[]).is_err());
        let odd = validate(&[105]).unwrap_err().to_string();
        assert!(odd.contains("105"), "{odd}");
        assert!(validate(&[5000]).is_err());
    }
}
