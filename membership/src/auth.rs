//! What makes a heartbeat trustworthy: the farm's keys (HMAC-SHA256, truncated to 128 bits,
//! with a key id so that a new key can be rolled out while the old one is still accepted),
//! and, per sender, a replay guard that accepts each sequence number of an incarnation once.

use std::fmt;
use std::path::Path;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Bytes of the authentication tag: HMAC-SHA256 truncated to 128 bits (RFC 2104 allows
/// truncation to half the output).
pub const TAG_LEN: usize = 16;

/// The fewest bytes a key may have: 128 bits, the strength of the tag.
pub const MIN_KEY_LEN: usize = 16;

/// The most keys a key file may hold: the current one and the next (or the previous), so a
/// rotation never needs every node to switch at the same moment.
pub const MAX_KEYS: usize = 2;

/// The largest key file read: two keys of a few hundred hex digits and comments fit in far
/// less.
pub const MAX_KEY_FILE: u64 = 64 * 1024;

/// One shared key and its id.
#[derive(Clone)]
pub struct Key {
    /// The id heartbeats carry, so that the receiver knows which key to check them with.
    pub id: u8,
    /// The HMAC already keyed with the secret: keying it hashes two blocks, which every
    /// heartbeat would otherwise pay again.
    keyed: Hmac<Sha256>,
}

impl fmt::Debug for Key {
    // Never print the secret, even in a debug log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Key {
    /// Key `id` with secret `secret`.
    fn new(id: u8, secret: &[u8]) -> Self {
        // HMAC takes keys of any length; the length was checked when the key was read.
        let keyed = <Hmac<Sha256> as KeyInit>::new_from_slice(secret)
            .expect("HMAC accepts keys of every length");
        Key { id, keyed }
    }

    fn mac(&self) -> Hmac<Sha256> {
        self.keyed.clone()
    }

    /// The tag of `message`.
    pub fn tag(&self, message: &[u8]) -> [u8; TAG_LEN] {
        let mut mac = self.mac();
        mac.update(message);
        let full = mac.finalize().into_bytes();
        let mut tag = [0; TAG_LEN];
        tag.copy_from_slice(&full[..TAG_LEN]);
        tag
    }

    /// Whether `tag` is the tag of `message`, compared in constant time.
    pub fn verify(&self, message: &[u8], tag: &[u8]) -> bool {
        let mut mac = self.mac();
        mac.update(message);
        tag.len() == TAG_LEN && mac.verify_truncated_left(tag).is_ok()
    }
}

/// The farm's keys: the one this node signs with, and every one it accepts.
#[derive(Clone, Debug)]
pub struct Keyring {
    keys: Vec<Key>,
}

/// What is wrong with a key file.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    /// The file could not be read, or others than its owner may read it.
    #[error("{0}")]
    File(#[from] herd_config::secret::SecretError),
    /// No key in the file.
    #[error("no key: the file needs a line `ID HEX` (a key id 0-255 and at least {MIN_KEY_LEN} bytes in hex)")]
    Empty,
    /// More keys than a rotation needs.
    #[error("line {line}: at most {MAX_KEYS} keys (the current one and the next)")]
    TooMany {
        /// The line of the key too many.
        line: usize,
    },
    /// A line that is not `ID HEX`.
    #[error("line {line}: expected `ID HEX`, a key id 0-255 and the key in hex")]
    Syntax {
        /// The line.
        line: usize,
    },
    /// A key id outside 0-255.
    #[error("line {line}: key id `{id}` is not a number from 0 to 255")]
    Id {
        /// The line.
        line: usize,
        /// The id as written.
        id: String,
    },
    /// A key that is not hex.
    #[error("line {line}: the key is not hexadecimal")]
    Hex {
        /// The line.
        line: usize,
    },
    /// A key too short to be safe.
    #[error("line {line}: the key has {len} bytes; it needs at least {MIN_KEY_LEN} (openssl rand -hex 32)")]
    TooShort {
        /// The line.
        line: usize,
        /// Its length.
        len: usize,
    },
    /// Two keys with one id.
    #[error("line {line}: key id {id} is used twice")]
    DuplicateId {
        /// The line of the second.
        line: usize,
        /// The id.
        id: u8,
    },
}

impl Keyring {
    /// Reads a key file (see [`Keyring::parse`]), refusing one that its group or others may
    /// read: whoever reads the key can command every node of the farm.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        Self::parse(&herd_config::secret::read(path, MAX_KEY_FILE)?)
    }

    /// Parses a key file: one key per line, `ID HEX` (a key id from 0 to 255, then the key in
    /// hexadecimal, at least [`MIN_KEY_LEN`] bytes); `#` starts a comment. The first key signs
    /// this node's heartbeats; a second one is accepted too. To rotate: add the new key as the
    /// second line on every node, then make it the first everywhere, then remove the old one.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let mut keys: Vec<Key> = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line_no = index + 1;
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let mut words = line.split_whitespace();
            let (Some(id), Some(hex_key), None) = (words.next(), words.next(), words.next()) else {
                return Err(KeyError::Syntax { line: line_no });
            };
            let id: u8 = id.parse().map_err(|_| KeyError::Id {
                line: line_no,
                id: id.to_owned(),
            })?;
            let secret = hex::decode(hex_key).map_err(|_| KeyError::Hex { line: line_no })?;
            if secret.len() < MIN_KEY_LEN {
                return Err(KeyError::TooShort {
                    line: line_no,
                    len: secret.len(),
                });
            }
            if keys.len() == MAX_KEYS {
                return Err(KeyError::TooMany { line: line_no });
            }
            if keys.iter().any(|known| known.id == id) {
                return Err(KeyError::DuplicateId { line: line_no, id });
            }
            keys.push(Key::new(id, &secret));
        }
        if keys.is_empty() {
            return Err(KeyError::Empty);
        }
        Ok(Self { keys })
    }

    /// The key this node signs with.
    pub fn signing(&self) -> &Key {
        &self.keys[0]
    }

    /// The accepted key with id `id`, if any.
    pub fn key(&self, id: u8) -> Option<&Key> {
        self.keys.iter().find(|key| key.id == id)
    }
}

/// How many sequence numbers below the highest seen are still accepted once: heartbeats that
/// arrive out of order within this many are not lost.
pub const REPLAY_WINDOW: u64 = 64;

/// Why a heartbeat was taken for a replay.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Replay {
    /// From an incarnation older than the sender's latest.
    #[error("from an older incarnation ({got}, latest {latest})")]
    OldIncarnation {
        /// The message's.
        got: u64,
        /// The latest seen.
        latest: u64,
    },
    /// A sequence number seen before.
    #[error("sequence number {0} seen before")]
    Seen(u64),
    /// A sequence number too far below the highest seen to be told from a replay.
    #[error("sequence number {got} is more than {REPLAY_WINDOW} below the highest, {highest}")]
    TooOld {
        /// The message's.
        got: u64,
        /// The highest seen.
        highest: u64,
    },
}

/// One sender's replay guard: its latest incarnation, the highest sequence number seen in it,
/// and which of the [`REPLAY_WINDOW`] numbers below were seen (as IPsec's anti-replay window).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplayGuard {
    /// `None` until the first accepted heartbeat.
    latest: Option<Latest>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Latest {
    incarnation: u64,
    highest: u64,
    /// Bit `i` set: `highest - i` was seen (bit 0 is `highest` itself).
    seen: u64,
}

impl ReplayGuard {
    /// Accepts `(incarnation, sequence)` if it was not seen before and records it; call only
    /// for authenticated heartbeats. A newer incarnation (the sender restarted) starts afresh.
    pub fn accept(&mut self, incarnation: u64, sequence: u64) -> Result<(), Replay> {
        let latest = match self.latest {
            Some(latest) if incarnation < latest.incarnation => {
                return Err(Replay::OldIncarnation {
                    got: incarnation,
                    latest: latest.incarnation,
                })
            }
            Some(latest) if incarnation == latest.incarnation => latest,
            _ => {
                self.latest = Some(Latest {
                    incarnation,
                    highest: sequence,
                    seen: 1,
                });
                return Ok(());
            }
        };
        let next = if sequence > latest.highest {
            let shift = sequence - latest.highest;
            Latest {
                highest: sequence,
                seen: if shift >= REPLAY_WINDOW {
                    1
                } else {
                    (latest.seen << shift) | 1
                },
                ..latest
            }
        } else {
            let below = latest.highest - sequence;
            if below >= REPLAY_WINDOW {
                return Err(Replay::TooOld {
                    got: sequence,
                    highest: latest.highest,
                });
            }
            if latest.seen & (1 << below) != 0 {
                return Err(Replay::Seen(sequence));
            }
            Latest {
                seen: latest.seen | (1 << below),
                ..latest
            }
        };
        self.latest = Some(next);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str = "000102030405060708090a0b0c0d0e0f";

    #[test]
    fn the_tag_is_hmac_sha256_truncated_to_128_bits() {
        // RFC 4231, test case 2: key "Jefe", "what do ya want for nothing?". The key is too
        // short for a farm, so the test builds it past the length check.
        let key = Key::new(0, b"Jefe");
        let tag = key.tag(b"what do ya want for nothing?");
        assert_eq!(hex::encode(tag), "5bdcc146bf60754e6a042426089575c7");
        assert!(key.verify(b"what do ya want for nothing?", &tag));
        assert!(!key.verify(b"what do ya want for nothing!", &tag));
        assert!(
            !key.verify(b"what do ya want for nothing?", &tag[..15]),
            "a short tag"
        );
    }

    #[test]
    fn a_key_file_holds_the_signing_key_then_the_next() {
        let ring = Keyring::parse(&format!(
            "# herd farm key\n7 {KEY_A}  # current\n\n8 {KEY_A}ff\n"
        ))
        .unwrap();
        assert_eq!(ring.signing().id, 7);
        assert_eq!(ring.key(8).map(|key| key.id), Some(8));
        assert!(ring.key(9).is_none());
        assert_eq!(
            format!("{:?}", ring.signing()),
            "Key { id: 7, .. }",
            "no secret in logs"
        );
    }

    #[test]
    fn key_file_errors_name_the_line() {
        let cases = [
            ("", KeyError::Empty),
            ("# only a comment\n", KeyError::Empty),
            ("1\n", KeyError::Syntax { line: 1 }),
            (&format!("1 {KEY_A} extra"), KeyError::Syntax { line: 1 }),
            (
                &format!("\n256 {KEY_A}"),
                KeyError::Id {
                    line: 2,
                    id: "256".into(),
                },
            ),
            ("1 zz", KeyError::Hex { line: 1 }),
            ("1 0011", KeyError::TooShort { line: 1, len: 2 }),
            (
                &format!("1 {KEY_A}\n1 {KEY_A}"),
                KeyError::DuplicateId { line: 2, id: 1 },
            ),
            (
                &format!("1 {KEY_A}\n2 {KEY_A}\n3 {KEY_A}"),
                KeyError::TooMany { line: 3 },
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(Keyring::parse(text).unwrap_err(), expected, "{text:?}");
        }
        assert_eq!(
            KeyError::TooShort { line: 1, len: 2 }.to_string(),
            "line 1: the key has 2 bytes; it needs at least 16 (openssl rand -hex 32)"
        );
    }

    #[test]
    fn a_missing_key_file_is_named() {
        let error = Keyring::load(Path::new("/nonexistent/herd.key")).unwrap_err();
        assert!(error
            .to_string()
            .starts_with("cannot read /nonexistent/herd.key: "));
    }

    #[test]
    fn a_key_file_only_its_owner_may_read_is_loaded_and_another_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("herd-auth-mode-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("farm.key");
        std::fs::write(&path, format!("1 {KEY_A}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(Keyring::load(&path).unwrap().signing().id, 1);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let error = Keyring::load(&path).unwrap_err().to_string();
        assert!(
            error.contains("mode 0640")
                && error.ends_with(&format!("chmod 600 {}", path.display())),
            "{error}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn each_sequence_number_is_accepted_once() {
        let mut guard = ReplayGuard::default();
        assert_eq!(guard.accept(5, 10), Ok(()));
        assert_eq!(guard.accept(5, 10), Err(Replay::Seen(10)));
        assert_eq!(guard.accept(5, 12), Ok(()));
        assert_eq!(guard.accept(5, 11), Ok(()), "late, within the window");
        assert_eq!(guard.accept(5, 11), Err(Replay::Seen(11)));
        assert_eq!(guard.accept(5, 12), Err(Replay::Seen(12)));
        assert_eq!(guard.accept(5, 100), Ok(()));
        assert_eq!(
            guard.accept(5, 36),
            Err(Replay::TooOld {
                got: 36,
                highest: 100
            })
        );
        assert_eq!(guard.accept(5, 37), Ok(()), "the oldest the window holds");
    }

    #[test]
    fn a_restart_starts_afresh_and_older_incarnations_are_refused() {
        let mut guard = ReplayGuard::default();
        assert_eq!(guard.accept(5, 1000), Ok(()));
        assert_eq!(
            guard.accept(6, 1),
            Ok(()),
            "restarted: sequence numbers start again"
        );
        assert_eq!(guard.accept(6, 1), Err(Replay::Seen(1)));
        assert_eq!(
            guard.accept(5, 1001),
            Err(Replay::OldIncarnation { got: 5, latest: 6 })
        );
    }

    #[test]
    fn the_window_matches_a_set_of_every_number_seen() {
        // Against a model that remembers everything: within the window both agree, below it
        // the guard refuses.
        let mut guard = ReplayGuard::default();
        let mut seen = std::collections::BTreeSet::new();
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut highest = 0u64;
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let sequence = (highest + 8).saturating_sub(state % 80);
            let fresh = !seen.contains(&sequence);
            let in_window = highest < REPLAY_WINDOW || sequence > highest - REPLAY_WINDOW;
            let accepted = guard.accept(1, sequence).is_ok();
            assert_eq!(accepted, fresh && in_window, "{sequence} after {highest}");
            if accepted {
                seen.insert(sequence);
                highest = highest.max(sequence);
            }
        }
    }
}
