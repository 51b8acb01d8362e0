//! The bed: the owner of everything a test, the demo or herd-perf builds, and the one place
//! that removes it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use crate::bpffs::BpfFs;
use crate::netns::Netns;
use crate::scratch::Scratch;

/// A process started in the bed, shared with the handle its starter holds.
pub(crate) type SharedChild = Arc<Mutex<Child>>;

/// A scratch directory with a BPF file system mounted in it (`bpf/`), the network namespaces
/// made so far and the processes started in them. Dropped, whether its user succeeded, failed
/// or panicked, it removes them in this order: it kills the processes still running, deletes
/// the namespaces (with their interfaces and the programs attached to them) last made first,
/// unmounts the BPF file system (releasing what is pinned there), and removes the scratch
/// directory, unless the unmount failed: the directory would take the file system's contents
/// with it.
#[derive(Debug)]
pub struct Bed {
    prefix: String,
    made: Vec<Netns>,
    processes: Mutex<Vec<Weak<Mutex<Child>>>>,
    bpffs: Option<BpfFs>,
    scratch: Option<Scratch>,
}

impl Bed {
    /// A bed whose namespaces are named `PREFIX-HOST` and whose scratch directory is
    /// `PREFIX-RANDOM` in the temporary directory. `prefix` must be unique on the machine
    /// while the bed lives: it holds the process id, and whatever tells apart the beds of one
    /// process (a test's name, a serial number).
    pub fn create(prefix: &str) -> anyhow::Result<Self> {
        crate::require_root("the test bed")?;
        let mut bed = Bed {
            prefix: prefix.to_owned(),
            made: Vec::new(),
            processes: Mutex::new(Vec::new()),
            bpffs: None,
            scratch: Some(Scratch::create(prefix)?),
        };
        // Filled in after the scratch directory exists, so that a failure removes it.
        bed.bpffs = Some(BpfFs::mount(&bed.scratch().join("bpf"))?);
        Ok(bed)
    }

    /// Creates namespace `PREFIX-HOST` with its loopback up, recorded for removal as soon as
    /// it exists.
    pub fn netns(&mut self, host: &str) -> anyhow::Result<Netns> {
        let netns = Netns::create(format!("{}-{host}", self.prefix))?;
        self.made.push(netns.clone());
        Ok(netns)
    }

    /// The names of the namespaces made so far, in order.
    pub fn namespaces(&self) -> Vec<String> {
        self.made
            .iter()
            .map(|netns| netns.name().to_owned())
            .collect()
    }

    /// The scratch directory.
    pub fn scratch(&self) -> &Path {
        self.scratch
            .as_ref()
            .map_or_else(|| Path::new(""), Scratch::path)
    }

    /// The scratch directory's subdirectory `name`, created.
    pub fn dir(&self, name: &str) -> anyhow::Result<PathBuf> {
        self.scratch_dir()?.dir(name)
    }

    /// Writes `text` to the scratch directory's file `name`, readable by root only; returns
    /// its path.
    pub fn write_private(&self, name: &str, text: &str) -> anyhow::Result<PathBuf> {
        self.scratch_dir()?.write_private(name, text)
    }

    /// A directory `name` for pins (a node's `--bpf-dir`), created on the bed's BPF file
    /// system.
    pub fn bpf_dir(&self, name: &str) -> anyhow::Result<PathBuf> {
        self.bpffs
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("the bed's BPF file system is not mounted"))?
            .dir(name)
    }

    fn scratch_dir(&self) -> anyhow::Result<&Scratch> {
        self.scratch
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("the bed's scratch directory is gone"))
    }

    /// Records a process started in the bed, which drop kills if it still runs then.
    pub(crate) fn adopt(&self, child: &SharedChild) {
        self.processes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Arc::downgrade(child));
    }

    /// Says on standard error what the cleanup could not undo; a closed standard error loses
    /// the message rather than stop the cleanup.
    fn warn(&self, message: std::fmt::Arguments) {
        let _ = writeln!(std::io::stderr(), "test bed {}: {message}", self.prefix);
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        let processes = std::mem::take(
            self.processes
                .get_mut()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for child in processes.iter().filter_map(Weak::upgrade) {
            let mut child = child.lock().unwrap_or_else(PoisonError::into_inner);
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        for netns in self.made.iter().rev() {
            if let Err(error) = netns.delete() {
                self.warn(format_args!(
                    "cannot remove network namespace {}: {error:#}",
                    netns.name()
                ));
            }
        }
        if let Some(bpffs) = self.bpffs.take() {
            if let Err(error) = bpffs.unmount() {
                self.warn(format_args!(
                    "{error:#}; keeping {}",
                    self.scratch().display()
                ));
                if let Some(scratch) = &mut self.scratch {
                    scratch.keep();
                }
                return;
            }
        }
        if let Some(scratch) = self.scratch.take() {
            if let Err(error) = scratch.remove() {
                self.warn(format_args!("{error:#}"));
            }
        }
    }
}
