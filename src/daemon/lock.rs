//! One herd per interface: an exclusive lock, taken before the host is changed, on a file per
//! interface in a fixed directory, whatever the other paths `herd run` is given. The file holds
//! what tells the holder apart (its pid, node and control socket), for the refusal to name it.
//! The kernel releases the lock when the holder ends, however it ends; a holder that ends
//! cleanly also removes the file, and a herd that starts removes the files nobody holds (those
//! of killed herds), so that no files pile up. Takers hold a lock on the directory itself while
//! they look, so that one herd's sweep never holds, for a moment, the lock another herd takes.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

/// Where the locks are.
pub const LOCK_DIR: &str = "/run/herd/lock";

/// The lock of one interface, held until dropped.
#[derive(Debug)]
pub struct InterfaceLock {
    /// Open for as long as the lock is held.
    _file: File,
    /// The lock file, removed when the lock is let go.
    path: PathBuf,
}

/// Who holds a lock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    /// The daemon's process id.
    pub pid: u32,
    /// The node it runs.
    pub node: String,
    /// Its control socket.
    pub control: PathBuf,
}

impl Holder {
    /// The holder's line in the lock file.
    fn line(&self) -> String {
        format!(
            "pid {} node {} control {}\n",
            self.pid,
            self.node,
            self.control.display()
        )
    }

    /// The holder written in a lock file, if it can be read.
    fn parse(text: &str) -> Option<Self> {
        let mut words = text.trim_end().splitn(6, ' ');
        let (Some("pid"), Some(pid), Some("node"), Some(node), Some("control"), Some(control)) = (
            words.next(),
            words.next(),
            words.next(),
            words.next(),
            words.next(),
            words.next(),
        ) else {
            return None;
        };
        Some(Self {
            pid: pid.parse().ok()?,
            node: node.to_owned(),
            control: PathBuf::from(control),
        })
    }
}

impl InterfaceLock {
    /// Takes the lock of `interface` in `dir` for `holder`, or says who holds it. Interfaces
    /// are told apart by network namespace too: each namespace has its own.
    pub fn take(dir: &Path, interface: &str, holder: &Holder) -> anyhow::Result<Self> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create the lock directory {}", dir.display()))?;
        let namespace = std::fs::metadata("/proc/self/ns/net")
            .context("cannot tell this process's network namespace (/proc/self/ns/net)")?
            .ino();
        let path = dir.join(format!("{interface}@net{namespace}"));
        let _sweeping = lock_directory(dir)?;
        remove_unheld(dir, &path);
        let mut file = loop {
            let file = lock_file(&path, interface)?;
            // The holder before may have removed the file between our open and our lock: the
            // lock is then on a file nobody else can find, so take the one now at the path.
            let locked = file
                .metadata()
                .with_context(|| format!("cannot read the lock file {}", path.display()))?
                .ino();
            if std::fs::metadata(&path).is_ok_and(|current| current.ino() == locked) {
                break file;
            }
        };
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| file.write_all(holder.line().as_bytes()))
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(Self { _file: file, path })
    }
}

impl Drop for InterfaceLock {
    fn drop(&mut self) {
        // Removed while still locked, so that no other herd can hold it meanwhile.
        if let Err(error) = std::fs::remove_file(&self.path) {
            tracing::warn!(file = %self.path.display(), "cannot remove the lock file: {error}");
        }
    }
}

/// The lock on `dir` itself, held while a taker sweeps it and takes its own file: herds that
/// start together (one per interface or namespace, at boot) then never see each other's
/// sweep as a holder. Held for the time of a few file operations, so waiting for it is brief.
fn lock_directory(dir: &Path) -> anyhow::Result<File> {
    let directory = File::open(dir)
        .with_context(|| format!("cannot open the lock directory {}", dir.display()))?;
    // SAFETY: flock takes an open descriptor, which `directory` holds, and no memory.
    if unsafe { libc::flock(directory.as_raw_fd(), libc::LOCK_EX) } != 0 {
        let error = std::io::Error::last_os_error();
        bail!("cannot lock the lock directory {}: {error}", dir.display());
    }
    Ok(directory)
}

/// Removes the lock files in `dir` but `own` that nobody holds: those left by killed herds.
/// Each is locked before it is removed, so a held one is left alone.
fn remove_unheld(dir: &Path, own: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for path in entries.flatten().map(|entry| entry.path()) {
        if path == own {
            continue;
        }
        let Ok(file) = File::open(&path) else {
            continue;
        };
        // SAFETY: flock takes an open descriptor, which `file` holds, and no memory.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// Opens the lock file at `path` and locks it, or says who holds it.
fn lock_file(path: &Path, interface: &str) -> anyhow::Result<File> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot open the lock file {}", path.display()))?;
    // SAFETY: flock takes an open descriptor, which `file` holds, and no memory.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(file);
    }
    let error = std::io::Error::last_os_error();
    if error.kind() != ErrorKind::WouldBlock {
        bail!("cannot lock {}: {error}", path.display());
    }
    let mut text = String::new();
    let _ = file.read_to_string(&mut text);
    let who = match Holder::parse(&text) {
        Some(other) => format!(
            "pid {}, node {}, control socket {}",
            other.pid,
            other.node,
            other.control.display()
        ),
        None => "its lock file says no more".into(),
    };
    bail!(
        "another herd already runs on {interface} ({who}; lock {}): one herd per \
         interface; stop that one first (`herd stop`, then SIGTERM or `systemctl stop \
         herd`)",
        path.display()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_taker_is_refused_with_the_holder_named_until_the_first_lets_go() {
        let dir = std::env::temp_dir().join(format!("herd-lock-test-{}", std::process::id()));
        let holder = |node: &str| Holder {
            pid: 4242,
            node: node.into(),
            control: PathBuf::from(format!("/run/herd/{node}.sock")),
        };
        let first = InterfaceLock::take(&dir, "vn0", &holder("alpha")).unwrap();
        let error = InterfaceLock::take(&dir, "vn0", &holder("bravo")).unwrap_err();
        let message = error.to_string();
        assert!(
            message.starts_with(
                "another herd already runs on vn0 (pid 4242, node alpha, control socket /run/herd/alpha.sock; lock "
            ),
            "{message}"
        );
        let other = InterfaceLock::take(&dir, "vn1", &holder("bravo"));
        assert!(other.is_ok(), "another interface has its own lock");
        drop(first);
        assert!(
            !dir.join(format!("vn0@net{}", namespace())).exists(),
            "a lock let go leaves no file"
        );
        let again = InterfaceLock::take(&dir, "vn0", &holder("bravo"));
        assert!(again.is_ok(), "free once the first is gone");
        drop((again, other));
        std::fs::remove_dir(&dir).expect("the lock directory is left empty");
    }

    #[test]
    fn a_lock_file_nobody_holds_is_removed_by_the_next_taker_and_a_held_one_kept() {
        let dir = std::env::temp_dir().join(format!("herd-lock-stale-{}", std::process::id()));
        let holder = Holder {
            pid: 4242,
            node: "alpha".into(),
            control: PathBuf::from("/run/herd/alpha.sock"),
        };
        let held = InterfaceLock::take(&dir, "vn0", &holder).unwrap();
        let stale = dir.join("vn9@net1");
        std::fs::write(&stale, holder.line()).unwrap();
        let other = InterfaceLock::take(&dir, "vn1", &holder).unwrap();
        assert!(!stale.exists(), "the file a killed herd left is removed");
        assert!(held.path.exists(), "a held lock's file is kept");
        assert!(
            InterfaceLock::take(&dir, "vn0", &holder).is_err(),
            "and still refuses"
        );
        drop((held, other));
        std::fs::remove_dir(&dir).expect("the lock directory is left empty");
    }

    #[test]
    fn herds_that_start_together_never_take_each_other_s_sweep_for_a_holder() {
        let dir = std::env::temp_dir().join(format!("herd-lock-race-{}", std::process::id()));
        let holder = Holder {
            pid: 4242,
            node: "alpha".into(),
            control: PathBuf::from("/run/herd/alpha.sock"),
        };
        for round in 0..200 {
            // Each round, a killed herd's file for every interface, then one taker per interface
            // at once: every taker sweeps the files of the others.
            let interfaces: Vec<String> = (0..4).map(|i| format!("vn{i}")).collect();
            std::fs::create_dir_all(&dir).unwrap();
            for interface in &interfaces {
                let stale = dir.join(format!("{interface}@net{}", namespace()));
                std::fs::write(stale, holder.line()).unwrap();
            }
            let taken: Vec<anyhow::Result<InterfaceLock>> = std::thread::scope(|scope| {
                let takers: Vec<_> = interfaces
                    .iter()
                    .map(|interface| scope.spawn(|| InterfaceLock::take(&dir, interface, &holder)))
                    .collect();
                takers.into_iter().map(|t| t.join().unwrap()).collect()
            });
            for (interface, lock) in interfaces.iter().zip(&taken) {
                if let Err(error) = lock {
                    panic!("round {round}: {interface} refused: {error:#}");
                }
            }
        }
        std::fs::remove_dir(&dir).expect("the lock directory is left empty");
    }

    fn namespace() -> u64 {
        std::fs::metadata("/proc/self/ns/net").unwrap().ino()
    }

    #[test]
    fn a_holder_line_reads_back() {
        let holder = Holder {
            pid: 7,
            node: "alpha".into(),
            control: PathBuf::from("/run/my herd/alpha.sock"),
        };
        assert_eq!(Holder::parse(&holder.line()), Some(holder));
        assert_eq!(Holder::parse("garbage"), None);
    }
}
