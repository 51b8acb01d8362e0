//! Where the XDP attachment and the egress guard are pinned, so that they outlive a killed
//! herd (fail closed, and no VIP mapped to the node's MAC).

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

/// Where the BPF file system is mounted, and where herd pins its programs.
const BPF_FS: &str = "/sys/fs/bpf";

/// The directory the XDP attachment is pinned in: `dir`, which must be on a BPF file system,
/// or `/sys/fs/bpf/herd`, mounting the BPF file system at `/sys/fs/bpf` if it is not (it stays
/// mounted: the pin must outlive herd).
pub fn pin_dir(dir: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(dir) = dir {
        if !on_bpf_fs(dir) {
            bail!(
                "--bpf-dir {}: not a directory on a BPF file system (mount -t bpf bpf {0})",
                dir.display()
            );
        }
        return Ok(dir.to_owned());
    }
    if !on_bpf_fs(Path::new(BPF_FS)) {
        mount_bpf_fs().with_context(|| format!("cannot mount the BPF file system at {BPF_FS}"))?;
        tracing::info!("mounted the BPF file system at {BPF_FS}");
    }
    let dir = Path::new(BPF_FS).join("herd");
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

/// Mounts a BPF file system at [`BPF_FS`], as `mount -t bpf bpf /sys/fs/bpf` would.
fn mount_bpf_fs() -> std::io::Result<()> {
    // SAFETY: every argument is a NUL-terminated string literal, and no data is passed.
    let result = unsafe {
        libc::mount(
            c"bpf".as_ptr(),
            c"/sys/fs/bpf".as_ptr(),
            c"bpf".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Whether `dir` is on a BPF file system.
fn on_bpf_fs(dir: &Path) -> bool {
    const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs is plain data, valid when zeroed.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a NUL-terminated string and `stat` a valid statfs to write to.
    let result = unsafe { libc::statfs(path.as_ptr(), &mut stat) };
    result == 0 && stat.f_type as i64 == BPF_FS_MAGIC
}
