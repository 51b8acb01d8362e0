//! Running the system tools the test bed drives (`ip`, `ethtool`, `nft`...), with errors that
//! say what failed.

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
             the test bed needs"
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_command_is_named_with_its_message() {
        let error = run("sh", &["-c", "echo oops >&2; exit 3"], None).unwrap_err();
        let text = format!("{error:#}");
        assert!(
            text.contains("`sh -c echo oops >&2; exit 3` failed"),
            "{text}"
        );
        assert!(text.contains("oops"), "{text}");
    }

    #[test]
    fn standard_input_reaches_the_program() {
        assert_eq!(run("cat", &[], Some("fed\n")).unwrap(), "fed\n");
    }

    #[test]
    fn a_missing_program_says_so() {
        let error = run("herd-no-such-tool", &[], None).unwrap_err();
        assert!(format!("{error:#}").contains("is not installed"));
    }
}
