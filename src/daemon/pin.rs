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

/// Where `interface`'s XDP attachment is pinned in `dir`: a file named after the interface
/// (see [`pin_name`]).
pub fn xdp_pin(dir: &Path, interface: &str) -> PathBuf {
    dir.join(pin_name(interface))
}

/// Where `interface`'s egress guard is pinned in `dir`: the XDP attachment's name and
/// `:egress`.
pub fn egress_pin(dir: &Path, interface: &str) -> PathBuf {
    dir.join(format!("{}:egress", pin_name(interface)))
}

/// `interface` as a pin's name: each dot written as two colons. The BPF file system refuses
/// names with a dot (it keeps them for itself), which a VLAN sub-interface (`eth0.42`) has,
/// and no interface name has a colon: the colons of a name come in pairs, the egress guard's
/// one stands alone, so no two interfaces, nor an XDP attachment and a guard, share a pin.
fn pin_name(interface: &str) -> String {
    interface.replace('.', "::")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vlan_sub_interface_is_pinned_without_its_dot() {
        let dir = Path::new("/sys/fs/bpf/herd");
        assert_eq!(xdp_pin(dir, "eth0"), dir.join("eth0"));
        assert_eq!(egress_pin(dir, "eth0"), dir.join("eth0:egress"));
        assert_eq!(xdp_pin(dir, "eth0.42"), dir.join("eth0::42"));
        assert_eq!(egress_pin(dir, "eth0.42"), dir.join("eth0::42:egress"));
    }

    #[test]
    fn no_two_pins_share_a_name() {
        let dir = Path::new("/sys/fs/bpf/herd");
        let interfaces = [
            "eth0",
            "eth0.egress",
            "eth0.",
            "eth0..egress",
            "eth0.42",
            "eth0.42.",
        ];
        let pins: Vec<PathBuf> = interfaces
            .iter()
            .flat_map(|interface| [xdp_pin(dir, interface), egress_pin(dir, interface)])
            .collect();
        let distinct: std::collections::HashSet<&PathBuf> = pins.iter().collect();
        assert_eq!(distinct.len(), pins.len(), "{pins:?}");
    }
}
