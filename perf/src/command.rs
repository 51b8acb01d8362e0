//! Running the system tools herd-perf drives (`ip`, `nft`), with errors that say what failed.

use std::io::{ErrorKind, Write};
use std::process::{Command, Stdio};

use anyhow::{bail, Context};

/// Runs `program` with `args`, feeding it `stdin` if given, and returns its standard output.
/// Fails with the command line and its standard error when it fails, and with a hint when the
/// program is not installed.
pub fn run(program: &str, args: &[&str], stdin: Option<&str>) -> anyhow::Result<String> {
    let line = format!("{program} {}", args.join(" "));
    let mut child = match Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(error) if error.kind() == ErrorKind::NotFound => bail!(
            "`{program}` is not installed (needed for `{line}`); scripts/deps installs what \
             herd-perf needs"
        ),
        Err(error) => return Err(error).with_context(|| format!("cannot run `{line}`")),
    };
    if let (Some(text), Some(mut input)) = (stdin, child.stdin.take()) {
        input
            .write_all(text.as_bytes())
            .with_context(|| format!("cannot write to `{line}`"))?;
    }
    let output = child
        .wait_with_output()
        .with_context(|| format!("cannot run `{line}`"))?;
    if !output.status.success() {
        bail!(
            "`{line}` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
