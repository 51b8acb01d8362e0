//! `herd demo`: a farm of `herd run` processes in network namespaces on this machine, traffic
//! from a client namespace, a node killed and brought back, the failover measured; everything
//! removed at the end. The parts are in [`crate::demo`].

use std::path::Path;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::ValueEnum;

use crate::demo::bed::Made;
use crate::demo::layout::NAMES;
use crate::demo::scenario::{self, Settings};
use crate::demo::screen::Screen;

/// The tools the demo runs, with the Debian package of each.
const TOOLS: [(&str, &str); 1] = [("ip", "iproute2")];

/// `herd demo`'s options.
#[derive(clap::Args)]
pub struct Options {
    /// The dataplane mode of every node; by default the configuration's default, the mode
    /// that measured faster on this machine (README, Performance).
    #[arg(long, value_name = "MODE", default_value = "xdp")]
    mode: Mode,
    /// How many nodes, 2 to 8: at least two, so that one can take over from another; at most
    /// eight, as each is a herd process with a responder on this one machine.
    #[arg(long, value_name = "N", default_value_t = 3,
          value_parser = clap::value_parser!(u8).range(2..=NAMES.len() as i64))]
    nodes: u8,
    /// Traffic time in seconds, 10 to 600, shared by the phases: a quarter steady, a quarter
    /// with a node down, the rest for its rejoin and steady traffic again. Under 10 s the
    /// phases are too short to show the failover and the rejoin; the demo is no soak test.
    #[arg(long, value_name = "SECONDS", default_value_t = 20,
          value_parser = clap::value_parser!(u64).range(10..=600))]
    duration: u64,
    /// Print the summary as JSON on standard output; the live table and the text summary go
    /// to standard error.
    #[arg(long)]
    json: bool,
}

/// The dataplane modes, as `[dataplane] mode` names them.
#[derive(Clone, Copy, ValueEnum)]
enum Mode {
    /// The whole verdict in the kernel's XDP hook.
    Xdp,
    /// AF_XDP sockets served by poll-mode worker threads.
    Afxdp,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Xdp => "xdp",
            Mode::Afxdp => "afxdp",
        }
    }
}

/// Runs the demo as `options` say.
pub fn run(options: &Options) -> anyhow::Result<()> {
    // SAFETY: setting a signal's disposition to "ignore" has no preconditions. A closed
    // output (`herd demo | head`) must end the demo through its error path, which removes
    // what it made, rather than kill it on the spot.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    preflight()?;
    // A flag the demo's loops look at, so that a signal ends it through the same path as an
    // error, undoing everything.
    let signal = Arc::new(AtomicUsize::new(0));
    for number in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        signal_hook::flag::register_usize(number, Arc::clone(&signal), number as usize)
            .context("cannot install the signal handlers")?;
    }
    let settings = Settings {
        mode: options.mode.name(),
        nodes: usize::from(options.nodes),
        duration: Duration::from_secs(options.duration),
        exe: std::env::current_exe().context("cannot find herd's own executable")?,
    };
    let mut screen = Screen::new(options.json);
    let mut summary = scenario::run(&settings, &signal, &mut screen)?;
    summary.problems.extend(leftovers(&summary.made));
    screen
        .print(&summary.text())
        .context("cannot write the summary")?;
    if options.json {
        let mut text = serde_json::to_string_pretty(&summary)?;
        text.push('\n');
        std::io::Write::write_all(&mut std::io::stdout(), text.as_bytes())
            .context("cannot write the summary")?;
    }
    if !summary.problems.is_empty() {
        bail!(
            "the demo did not go as designed: {} problems, listed in the summary",
            summary.problems.len()
        );
    }
    Ok(())
}

/// Fails unless the demo can run: root, and the tools it needs.
fn preflight() -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!("herd demo needs root: it creates network namespaces");
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for (tool, package) in TOOLS {
        let found = std::env::split_paths(&path).any(|dir| is_executable(&dir.join(tool)));
        if !found {
            bail!(
                "herd demo needs `{tool}`, which is not installed (or not on the PATH): \
                 install it, e.g. `apt-get install {package}` on Debian"
            );
        }
    }
    Ok(())
}

/// Whether `path` is a file someone may execute.
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// What the demo made that is still there, as problems.
fn leftovers(made: &Made) -> Vec<String> {
    let mut left: Vec<String> = made
        .namespaces
        .iter()
        .filter(|name| Path::new("/run/netns").join(name).exists())
        .map(|name| format!("network namespace {name} is left behind"))
        .collect();
    if made.scratch_dir.exists() {
        left.push(format!(
            "the scratch directory {} is left behind",
            made.scratch_dir.display()
        ));
    }
    left
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Demo {
        #[command(flatten)]
        options: Options,
    }

    #[test]
    fn the_demo_runs_the_mode_a_configuration_gets_by_default() {
        let demo = Demo::try_parse_from(["demo"]).unwrap();
        assert_eq!(
            demo.options.mode.name(),
            herd_config::DataplaneMode::default().to_string()
        );
    }
}
