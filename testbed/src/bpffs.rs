//! A BPF file system of the bed's own, where herd pins its attachments (`--bpf-dir`): the
//! pins of one bed neither meet another's nor outlive it, and nothing assumes that
//! `/sys/fs/bpf` is mounted.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context;
use nix::mount::{mount, umount2, MntFlags, MsFlags};

/// A mounted BPF file system, unmounted on drop (which releases what is still pinned there).
#[derive(Debug)]
pub struct BpfFs {
    path: PathBuf,
    mounted: bool,
}

impl BpfFs {
    /// Mounts a BPF file system on `path`, which is created.
    pub fn mount(path: &Path) -> anyhow::Result<Self> {
        fs::create_dir_all(path).with_context(|| format!("cannot create {}", path.display()))?;
        mount(
            Some("bpf"),
            path,
            Some("bpf"),
            MsFlags::empty(),
            None::<&str>,
        )
        .with_context(|| format!("cannot mount a BPF file system on {}", path.display()))?;
        Ok(BpfFs {
            path: path.to_owned(),
            mounted: true,
        })
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A directory for one user's pins (a node's `--bpf-dir`), created.
    pub fn dir(&self, name: &str) -> anyhow::Result<PathBuf> {
        let dir = self.path.join(name);
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(dir)
    }

    /// Unmounts it, lazily: what is still pinned there is released once unused.
    pub fn unmount(mut self) -> anyhow::Result<()> {
        self.mounted = false;
        unmount(&self.path)
    }
}

impl Drop for BpfFs {
    fn drop(&mut self) {
        if self.mounted {
            // Nothing to tell the error to; a caller that cares unmounts with `unmount`.
            let _ = unmount(&self.path);
        }
    }
}

/// Unmounts `path` lazily.
pub fn unmount(path: &Path) -> anyhow::Result<()> {
    umount2(path, MntFlags::MNT_DETACH)
        .with_context(|| format!("cannot unmount {}", path.display()))
}
