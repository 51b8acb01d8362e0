//! The incarnation a node runs in: raised at every start, so that the others tell a restarted
//! node from a recording of its old heartbeats and from a node that was only frozen.
//!
//! It is the wall clock in milliseconds, or one more than the last one when the clock has gone
//! back (or two starts fall in one millisecond); the last one is kept in a file so that this
//! holds across reboots.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Why the incarnation could not be raised.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {what}: {source}")]
pub struct IncarnationError {
    /// The file that keeps it.
    pub path: PathBuf,
    /// What was being done.
    pub what: &'static str,
    /// Why it failed.
    pub source: std::io::Error,
}

/// The incarnation of a start at `wall_ms`, higher than the one kept in `path` (if any), and
/// kept there before it is returned. The directory is created if needed.
pub fn next(path: &Path, wall_ms: u64) -> Result<u64, IncarnationError> {
    let error = |what, source| IncarnationError {
        path: path.to_owned(),
        what,
        source,
    };
    let last = match std::fs::read_to_string(path) {
        Ok(text) => text.trim().parse::<u64>().map_err(|_| {
            error(
                "not an incarnation (one decimal number); remove the file to start afresh",
                std::io::Error::from(std::io::ErrorKind::InvalidData),
            )
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(error("cannot read", e)),
    };
    let incarnation = wall_ms.max(last.saturating_add(1));
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| error("cannot create its directory", e))?;
    }
    // Written beside it and renamed over it, so that a crash leaves the old or the new number,
    // never a torn one.
    let temporary = path.with_extension("new");
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::File::create(&temporary)?;
        writeln!(file, "{incarnation}")?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
    };
    write().map_err(|e| error("cannot write", e))?;
    Ok(incarnation)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("herd-incarnation-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn every_start_is_higher_than_the_last_even_when_the_clock_goes_back() {
        let dir = scratch("back");
        let path = dir.join("state").join("alpha.incarnation");
        assert_eq!(next(&path, 5_000).unwrap(), 5_000, "a first start");
        assert_eq!(next(&path, 6_000).unwrap(), 6_000, "the clock moved on");
        assert_eq!(next(&path, 6_000).unwrap(), 6_001, "the same millisecond");
        assert_eq!(next(&path, 1_000).unwrap(), 6_002, "the clock went back");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_damaged_file_is_named() {
        let dir = scratch("damaged");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("alpha.incarnation");
        std::fs::write(&path, "twelve\n").unwrap();
        let message = next(&path, 5_000).unwrap_err().to_string();
        assert!(
            message.starts_with(&format!("{}: not an incarnation", path.display())),
            "{message}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
