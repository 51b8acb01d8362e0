//! `process`: enough (and not too many) processes match a name or a command line.

use std::path::Path;

use regex::Regex;

use super::{ProbeError, Probed};

/// Which processes count.
#[derive(Clone, Debug)]
pub enum Matcher {
    /// Those whose name (`/proc/PID/comm`, at most 15 bytes) is this.
    Name(String),
    /// Those whose whole command line (arguments joined by spaces) matches this.
    Command(Regex),
}

impl Matcher {
    fn matches(&self, proc: &Path) -> bool {
        match self {
            Matcher::Name(name) => std::fs::read_to_string(proc.join("comm"))
                .is_ok_and(|comm| comm.trim_end_matches('\n') == name),
            Matcher::Command(regex) => std::fs::read(proc.join("cmdline")).is_ok_and(|bytes| {
                let line: Vec<u8> = bytes
                    .strip_suffix(&[0])
                    .unwrap_or(&bytes)
                    .iter()
                    .map(|&b| if b == 0 { b' ' } else { b })
                    .collect();
                regex.is_match(&String::from_utf8_lossy(&line))
            }),
        }
    }
}

/// Whether at least `at_least` and at most `at_most` processes match `matcher`.
pub fn process(matcher: &Matcher, at_least: u32, at_most: Option<u32>) -> Probed {
    let count = count(Path::new("/proc"), matcher)?;
    let what = match matcher {
        Matcher::Name(name) => format!("named {name}"),
        Matcher::Command(regex) => format!("whose command line matches {}", regex.as_str()),
    };
    if count < at_least as usize {
        return Err(ProbeError::new(format!(
            "{count} processes {what}, fewer than {at_least}"
        )));
    }
    if let Some(at_most) = at_most.filter(|&most| count > most as usize) {
        return Err(ProbeError::new(format!(
            "{count} processes {what}, more than {at_most}"
        )));
    }
    Ok(())
}

fn count(proc: &Path, matcher: &Matcher) -> Result<usize, ProbeError> {
    let entries = std::fs::read_dir(proc)
        .map_err(|error| ProbeError::new(format!("cannot list {}: {error}", proc.display())))?;
    // A process that ends while it is looked at is simply not counted.
    Ok(entries
        .filter_map(Result::ok)
        .filter(|entry| {
            entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        })
        .filter(|entry| matcher.matches(&entry.path()))
        .count())
}
