//! The console's secret: one line of at least [`MIN_CHARS`] characters in a file only its
//! owner may read.

use std::path::Path;

use anyhow::{bail, Context};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The shortest secret accepted.
pub const MIN_CHARS: usize = 16;

/// The largest secret file read: a line of a passphrase is far shorter.
const MAX_BYTES: u64 = 4096;

/// The secret an operator logs in with. Its `Debug` shows nothing of it.
pub struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    /// Reads the secret from `path`, refusing a file that its group or others may read
    /// (anyone who reads it may operate the farm), more than one line, or a short secret.
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text = herd_config::secret::read(path, MAX_BYTES)
            .context("cannot use the console secret file")?;
        Self::parse(&text).with_context(|| format!("the console secret file {}", path.display()))
    }

    /// The secret in `text`: one line, its line feed optional.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let line = text
            .strip_suffix('\n')
            .map(|line| line.strip_suffix('\r').unwrap_or(line))
            .unwrap_or(text);
        if line.contains(['\n', '\r']) {
            bail!("holds more than one line: the secret is one line");
        }
        let chars = line.chars().count();
        if chars < MIN_CHARS {
            bail!("holds a secret of {chars} characters: at least {MIN_CHARS} are needed");
        }
        Ok(Self(line.to_owned()))
    }

    /// Whether `given` is the secret. The time taken depends on neither (their digests are
    /// compared in constant time), so that it teaches a guesser nothing.
    pub fn matches(&self, given: &str) -> bool {
        let expected = Sha256::digest(self.0.as_bytes());
        let given = Sha256::digest(given.as_bytes());
        expected.as_slice().ct_eq(given.as_slice()).into()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn one_line_of_sixteen_characters() {
        assert!(Secret::parse("0123456789abcdef\n").is_ok());
        assert!(Secret::parse("0123456789abcdef\r\n").is_ok());
        assert!(Secret::parse("0123456789abcdef").is_ok());
        let short = Secret::parse("0123456789abcde\n").unwrap_err().to_string();
        assert!(short.contains("15 characters"), "{short}");
        let two = Secret::parse("0123456789abcdef\nsecond line\n")
            .unwrap_err()
            .to_string();
        assert!(two.contains("more than one line"), "{two}");
    }

    #[test]
    fn matches_only_the_secret() {
        let secret = Secret::parse("0123456789abcdef\n").unwrap();
        assert!(secret.matches("0123456789abcdef"));
        assert!(!secret.matches("0123456789abcdeF"));
        assert!(!secret.matches("0123456789abcdef\n"));
        assert!(!secret.matches(""));
        assert_eq!(format!("{secret:?}"), "Secret(..)");
    }

    #[test]
    fn a_file_others_may_read_is_refused() {
        let dir = std::env::temp_dir().join(format!("herd-console-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("secret");
        std::fs::File::create(&path)
            .unwrap()
            .write_all(b"0123456789abcdef\n")
            .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let refused = format!("{:#}", Secret::read(&path).unwrap_err());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let read = Secret::read(&path);
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            refused.contains("mode 0640") && refused.contains("chmod 600"),
            "{refused}"
        );
        assert!(read.unwrap().matches("0123456789abcdef"));
    }
}
