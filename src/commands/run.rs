//! `herd run`: runs this node as a member of its farm, in the foreground, until SIGINT or
//! SIGTERM makes it leave; the work is [`crate::daemon`]'s.

use std::path::Path;

use crate::daemon::{self, Paths};

/// Runs the daemon as node `node` (found by its addresses when not given), with its files
/// where the command line says.
pub fn run(
    config: &Path,
    node: Option<&str>,
    bpf_dir: Option<&Path>,
    state_dir: &Path,
    control_dir: &Path,
) -> anyhow::Result<()> {
    daemon::run(
        &Paths {
            config,
            bpf_dir,
            state_dir,
            control_dir,
        },
        node,
    )
}
