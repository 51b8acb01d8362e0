//! What killed runs left behind: a bed dropped normally removes what it made, but a process
//! killed with SIGKILL cannot. Beds whose prefix is `TAG-PID-...` can be found again and
//! removed once process `PID` is gone.

use std::fs;
use std::path::Path;

use anyhow::Context;

use crate::bpffs;
use crate::netns::NETNS_DIR;

/// Removes the namespaces and scratch directories of beds named `TAG-PID-...` whose process
/// `PID` no longer exists.
pub fn remove(tag: &str) -> anyhow::Result<()> {
    if let Ok(entries) = fs::read_dir(NETNS_DIR) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(pid) = dead_pid(tag, &name) {
                crate::command::run("ip", &["netns", "del", &name], None).with_context(|| {
                    format!("cannot remove network namespace {name}, left by process {pid}")
                })?;
            }
        }
    }
    for entry in fs::read_dir(std::env::temp_dir())
        .context("cannot list the temporary directory")?
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if dead_pid(tag, &name).is_some() {
            let bpf = entry.path().join("bpf");
            // Not mounted any more is the usual case; the removal below says what is wrong.
            let _ = bpffs::unmount(&bpf);
            fs::remove_dir_all(entry.path())
                .with_context(|| format!("cannot remove {}", entry.path().display()))?;
        }
    }
    Ok(())
}

/// The process id in `name`, if `name` is `TAG-PID-...` and process `PID` is gone.
fn dead_pid(tag: &str, name: &str) -> Option<u32> {
    let rest = name.strip_prefix(tag)?.strip_prefix('-')?;
    let pid: u32 = rest.split('-').next()?.parse().ok()?;
    (!Path::new("/proc").join(pid.to_string()).exists()).then_some(pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_names_are_recognised_by_their_dead_process() {
        // Process ids are below 2^22; this one cannot exist.
        assert_eq!(dead_pid("herd-perf", "herd-perf-99999999"), Some(99999999));
        assert_eq!(
            dead_pid("herd-perf", "herd-perf-99999999-farm3-hub"),
            Some(99999999)
        );
        let live = std::process::id();
        assert_eq!(
            dead_pid("herd-perf", &format!("herd-perf-{live}-bench")),
            None
        );
        assert_eq!(dead_pid("herd-perf", "herd-perf-x-99999999"), None);
        assert_eq!(dead_pid("herd-perf", "herd-perfx-99999999"), None);
        assert_eq!(dead_pid("herd-perf", "other-99999999"), None);
    }
}
