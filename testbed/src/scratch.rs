//! A scratch directory of the bed's own under the system's temporary directory: the farm's
//! configuration and key, the nodes' state and logs, the BPF file system's mount point.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::config::random_hex;

/// A directory readable by root only, removed with its contents on drop unless kept.
#[derive(Debug)]
pub struct Scratch {
    path: PathBuf,
    keep: bool,
}

impl Scratch {
    /// A new, empty directory named `PREFIX-RANDOM`. The random part means that a directory of
    /// this name cannot be there already, made by an earlier run or by another user of the
    /// temporary directory.
    pub fn create(prefix: &str) -> anyhow::Result<Self> {
        let path = std::env::temp_dir().join(format!("{prefix}-{}", random_hex(4)?));
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .with_context(|| format!("cannot create the scratch directory {}", path.display()))?;
        Ok(Scratch { path, keep: false })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The subdirectory `name`, created if it is not there.
    pub fn dir(&self, name: &str) -> anyhow::Result<PathBuf> {
        let dir = self.path.join(name);
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(dir)
    }

    /// Writes `text` to file `name`, readable by root only (a key is a secret); returns its
    /// path.
    pub fn write_private(&self, name: &str, text: &str) -> anyhow::Result<PathBuf> {
        let path = self.path.join(name);
        fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .and_then(|mut file| file.write_all(text.as_bytes()))
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(path)
    }

    /// Leaves the directory in place when dropped: something mounted in it could not be
    /// unmounted, and removing the directory would take that file system's contents with it.
    pub fn keep(&mut self) {
        self.keep = true;
    }

    /// Removes the directory now, saying why it cannot.
    pub fn remove(mut self) -> anyhow::Result<()> {
        self.keep = true;
        fs::remove_dir_all(&self.path)
            .with_context(|| format!("cannot remove {}", self.path.display()))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !self.keep {
            // Nothing to tell the error to; a caller that cares removes it with `remove`.
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_scratch_directory_is_private_and_removed_on_drop() {
        let scratch = Scratch::create("herd-testbed-scratch").unwrap();
        let path = scratch.path().to_owned();
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        let key = scratch.write_private("farm.key", "secret").unwrap();
        assert_eq!(
            fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(fs::read_to_string(&key).unwrap(), "secret");
        scratch.dir("state/alpha").unwrap();
        drop(scratch);
        assert!(!path.exists());
    }

    #[test]
    fn a_kept_directory_stays() {
        let mut scratch = Scratch::create("herd-testbed-kept").unwrap();
        let path = scratch.path().to_owned();
        scratch.keep();
        drop(scratch);
        assert!(path.exists());
        fs::remove_dir(&path).unwrap();
    }
}
