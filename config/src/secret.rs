//! Reading a secret file (the farm key, the console's secret): refused when its group or
//! others may read it, as corosync refuses such an authkey, since whoever reads the farm key
//! can command every node of the farm.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The permission bits a secret file must not have: any access by its group or by others.
pub const EXPOSING_BITS: u32 = 0o077;

/// What is wrong with a secret file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// The file could not be opened or read.
    #[error("cannot read {}: {error}", file.display())]
    Read {
        /// The file.
        file: PathBuf,
        /// Why.
        error: String,
    },
    /// Its group or others may read or write it.
    #[error(
        "{} is open to its group or to others (mode {mode:04o}): a secret must be its owner's \
         only: chmod 600 {}",
        file.display(),
        file.display()
    )]
    Exposed {
        /// The file.
        file: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Larger than any secret of its kind.
    #[error("{} is larger than {limit} bytes: not a secret file", file.display())]
    TooLarge {
        /// The file.
        file: PathBuf,
        /// The most bytes accepted.
        limit: u64,
    },
    /// Not UTF-8 text.
    #[error("{} is not UTF-8 text", file.display())]
    NotText {
        /// The file.
        file: PathBuf,
    },
}

/// The text of the secret file `path`, of at most `limit` bytes. The mode is checked on the
/// open file, so that it is the mode of the file read.
pub fn read(path: &Path, limit: u64) -> Result<String, SecretError> {
    let unreadable = |error: std::io::Error| SecretError::Read {
        file: path.to_owned(),
        error: error.to_string(),
    };
    let file = File::open(path).map_err(unreadable)?;
    let mode = file.metadata().map_err(unreadable)?.mode() & 0o7777;
    if mode & EXPOSING_BITS != 0 {
        return Err(SecretError::Exposed {
            file: path.to_owned(),
            mode,
        });
    }
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(unreadable)?;
    if bytes.len() as u64 > limit {
        return Err(SecretError::TooLarge {
            file: path.to_owned(),
            limit,
        });
    }
    String::from_utf8(bytes).map_err(|_| SecretError::NotText {
        file: path.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use std::fs::{self, Permissions};
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("herd-secret-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn write(path: &Path, text: &[u8], mode: u32) {
        fs::write(path, text).unwrap();
        fs::set_permissions(path, Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn a_file_of_its_owner_only_is_read() {
        let dir = scratch("owner");
        let path = dir.join("farm.key");
        for mode in [0o600, 0o400, 0o700] {
            write(&path, b"1 00ff\n", mode);
            assert_eq!(read(&path, 64).as_deref(), Ok("1 00ff\n"), "{mode:o}");
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_file_its_group_or_others_may_read_is_refused_with_the_fix() {
        let dir = scratch("exposed");
        let path = dir.join("farm.key");
        for mode in [0o644, 0o640, 0o604, 0o620, 0o602, 0o660] {
            write(&path, b"1 00ff\n", mode);
            assert_eq!(
                read(&path, 64),
                Err(SecretError::Exposed {
                    file: path.clone(),
                    mode
                }),
                "{mode:o}"
            );
        }
        write(&path, b"1 00ff\n", 0o644);
        assert_eq!(
            read(&path, 64).unwrap_err().to_string(),
            format!(
                "{0} is open to its group or to others (mode 0644): a secret must be its \
                 owner's only: chmod 600 {0}",
                path.display()
            )
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_missing_large_or_binary_file_is_named() {
        let dir = scratch("bad");
        let path = dir.join("secret");
        let error = read(&path, 64).unwrap_err().to_string();
        assert!(
            error.starts_with(&format!("cannot read {}: ", path.display())),
            "{error}"
        );
        write(&path, &[b'a'; 65], 0o600);
        assert_eq!(
            read(&path, 64),
            Err(SecretError::TooLarge {
                file: path.clone(),
                limit: 64
            })
        );
        assert!(read(&path, 65).is_ok(), "the limit itself is accepted");
        write(&path, &[0xff, 0xfe], 0o600);
        assert_eq!(
            read(&path, 64),
            Err(SecretError::NotText { file: path.clone() })
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
