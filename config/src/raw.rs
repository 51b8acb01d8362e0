//! The file as serde reads it, before validation.
//!
//! Every value is `Spanned` so that validation, which runs after deserialization, can point
//! at the offending text. Every key is optional here so that validation, not serde, reports a
//! missing key, with what was expected. Integers are [`RawInt`], which takes any integer toml
//! reads, so that range errors come from validation too, in the schema's terms rather than
//! Rust's.

use crate::keyword::Keyword;
use std::fmt;
use std::ops::Range;

use serde::de::{Deserializer, Error, Unexpected, Visitor};
use serde::Deserialize;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

use crate::locate::Source;
use crate::{ConfigError, ZeroCopy};

/// Rejects a document whose `farm`, `membership`, `dataplane`, `scripts`,
/// `scripts.restart_limit`, `admin`, `node`, `rule` or `check` are not the tables the schema
/// has.
///
/// Checked on the tree, before serde, because serde_derive also accepts a struct written as an
/// array of its field values: `[[farm]]` would otherwise be read field by field and yield
/// confusing messages about `farm[0]`, and `restart_limit = [3, 86400]` would be taken for
/// `{ count = 3, within_s = 86400 }`.
pub(crate) fn check_tables(tree: &DeTable<'_>, source: &Source<'_>) -> Result<(), ConfigError> {
    let wrong = |span: Range<usize>, key: String, value: &DeValue<'_>, expected: &str| {
        source.error(
            span,
            key,
            format!("invalid type: {}, expected {expected}", value.type_str()),
        )
    };
    for (key, value) in tree.iter() {
        match (key.get_ref().as_ref(), value.get_ref()) {
            ("scripts", DeValue::Table(scripts)) => {
                for (key, value) in scripts.iter() {
                    if key.get_ref() == "restart_limit" && !value.get_ref().is_table() {
                        return Err(wrong(
                            value.span(),
                            "scripts.restart_limit".to_owned(),
                            value.get_ref(),
                            "a table: restart_limit = { count = N, within_s = S }",
                        ));
                    }
                }
            }
            ("farm" | "membership" | "dataplane" | "admin", DeValue::Table(_)) => {}
            (name @ ("farm" | "membership" | "dataplane" | "scripts" | "admin"), other) => {
                let expected = format!("a table: [{name}]");
                return Err(wrong(value.span(), name.to_owned(), other, &expected));
            }
            (name @ ("node" | "rule" | "check"), DeValue::Array(entries)) => {
                for (index, entry) in entries.iter().enumerate() {
                    if !entry.get_ref().is_table() {
                        let expected = format!("a table: a [[{name}]] entry");
                        return Err(wrong(
                            entry.span(),
                            format!("{name}[{index}]"),
                            entry.get_ref(),
                            &expected,
                        ));
                    }
                }
            }
            (name @ ("node" | "rule" | "check"), other) => {
                let expected = format!("an array of tables: [[{name}]] entries");
                return Err(wrong(value.span(), name.to_owned(), other, &expected));
            }
            // Other keys are unknown; serde reports them with the keys it knows.
            _ => {}
        }
    }
    Ok(())
}

/// The whole file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(crate) struct RawConfig {
    pub farm: Option<Spanned<RawFarm>>,
    pub node: Option<Spanned<Vec<Spanned<RawNode>>>>,
    pub rule: Option<Spanned<Vec<Spanned<RawRule>>>>,
    pub membership: Option<Spanned<RawMembership>>,
    pub dataplane: Option<Spanned<RawDataplane>>,
    pub check: Option<Spanned<Vec<Spanned<RawCheck>>>>,
    pub scripts: Option<Spanned<RawScripts>>,
    pub admin: Option<Spanned<RawAdmin>>,
}

/// The `[farm]` table.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(crate) struct RawFarm {
    pub name: Option<Spanned<String>>,
    pub vip: Option<Spanned<Vec<Spanned<String>>>>,
    pub interface: Option<Spanned<String>>,
    pub buckets: Option<Spanned<RawInt>>,
    pub hash_key: Option<Spanned<RawSecret>>,
    pub port: Option<Spanned<RawInt>>,
    pub announce_interval_s: Option<Spanned<RawInt>>,
    pub auth_key_file: Option<Spanned<String>>,
    pub mac: Option<Spanned<String>>,
}

/// A `[[node]]` entry.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(crate) struct RawNode {
    pub name: Option<Spanned<String>>,
    pub address: Option<Spanned<String>>,
    pub weight: Option<Spanned<RawInt>>,
    pub interface: Option<Spanned<String>>,
}

/// A `[[rule]]` entry.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(crate) struct RawRule {
    pub protocol: Option<Spanned<String>>,
    pub ports: Option<Spanned<Vec<Spanned<RawPort>>>>,
    pub affinity: Option<Spanned<String>>,
}

/// The `[membership]` table.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(crate) struct RawMembership {
    pub heartbeat_ms: Option<Spanned<RawInt>>,
    pub dead_after_ms: Option<Spanned<RawInt>>,
    pub drain_s: Option<Spanned<RawInt>>,
    pub quorum: Option<Spanned<bool>>,
}

/// The `[dataplane]` table.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(crate) struct RawDataplane {
    pub mode: Option<Spanned<String>>,
    pub cores: Option<Spanned<Vec<Spanned<RawInt>>>>,
    pub zero_copy: Option<Spanned<RawZeroCopy>>,
    pub batch: Option<Spanned<RawInt>>,
}

/// A `[[check]]` entry: the keys of every check, then those of each kind, which validation
/// matches to the entry's `kind`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(crate) struct RawCheck {
    pub name: Option<Spanned<String>>,
    pub kind: Option<Spanned<String>>,
    pub interval_ms: Option<Spanned<RawInt>>,
    pub timeout_ms: Option<Spanned<RawInt>>,
    pub fall: Option<Spanned<RawInt>>,
    pub rise: Option<Spanned<RawInt>>,
    pub action: Option<Spanned<String>>,
    // tcp
    pub host: Option<Spanned<String>>,
    pub port: Option<Spanned<RawInt>>,
    // http
    pub url: Option<Spanned<String>>,
    pub status: Option<Spanned<RawStatus>>,
    pub body: Option<Spanned<String>>,
    // process
    pub process: Option<Spanned<String>>,
    pub command: Option<Spanned<String>>,
    pub at_least: Option<Spanned<RawInt>>,
    pub at_most: Option<Spanned<RawInt>>,
    // ping
    pub address: Option<Spanned<String>>,
    // interface
    pub interface: Option<Spanned<String>>,
    // command
    pub run: Option<Spanned<String>>,
}

/// The `[scripts]` table.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(crate) struct RawScripts {
    pub start: Option<Spanned<String>>,
    pub stop: Option<Spanned<String>>,
    pub timeout_s: Option<Spanned<RawInt>>,
    pub restart_limit: Option<Spanned<RawRestartLimit>>,
}

/// The `[admin]` table.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(crate) struct RawAdmin {
    pub metrics: Option<Spanned<RawSocketAddr>>,
    pub console: Option<Spanned<RawSocketAddr>>,
    pub console_secret_file: Option<Spanned<String>>,
}

/// The `restart_limit` of `[scripts]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(crate) struct RawRestartLimit {
    pub count: Option<Spanned<RawInt>>,
    pub within_s: Option<Spanned<RawInt>>,
}

/// An integer, checked later by validation.
///
/// TOML's integers are `i64`, but toml also reads larger ones (as `u64`, `i128` or `u128`);
/// taking them all here, rather than letting serde reject them in Rust's terms, lets
/// validation say they are out of range like any other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RawInt(pub i128);

impl<'de> Deserialize<'de> for RawInt {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_i128(IntVisitor)
    }
}

struct IntVisitor;

impl Visitor<'_> for IntVisitor {
    type Value = RawInt;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an integer")
    }

    fn visit_i64<E: Error>(self, value: i64) -> Result<RawInt, E> {
        Ok(RawInt(value.into()))
    }

    fn visit_u64<E: Error>(self, value: u64) -> Result<RawInt, E> {
        Ok(RawInt(value.into()))
    }

    fn visit_i128<E: Error>(self, value: i128) -> Result<RawInt, E> {
        Ok(RawInt(value))
    }

    fn visit_u128<E: Error>(self, value: u128) -> Result<RawInt, E> {
        // Above i128::MAX there is no range left to name; the value as written is quoted.
        i128::try_from(value).map(RawInt).map_err(|_| {
            E::custom(format!(
                "{value} is out of range; expected an integer from {} to {}",
                i64::MIN,
                i64::MAX
            ))
        })
    }
}

/// One entry of `ports`: a string, parsed later by validation.
///
/// Its own type only to say what a port entry looks like when it is not a string at all:
/// `ports = [80]` is a likely mistake.
pub(crate) struct RawPort(pub String);

impl<'de> Deserialize<'de> for RawPort {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(PortVisitor)
    }
}

struct PortVisitor;

impl Visitor<'_> for PortVisitor {
    type Value = RawPort;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string such as \"80\", \"8000-8099\" or \"*\"")
    }

    fn visit_str<E: Error>(self, text: &str) -> Result<RawPort, E> {
        Ok(RawPort(text.to_owned()))
    }
}

/// The `status` of an HTTP check: a string, parsed later by validation.
///
/// Its own type only to say what a status looks like when it is not a string at all:
/// `status = 200` is a likely mistake.
pub(crate) struct RawStatus(pub String);

impl<'de> Deserialize<'de> for RawStatus {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(StatusVisitor)
    }
}

struct StatusVisitor;

impl Visitor<'_> for StatusVisitor {
    type Value = RawStatus;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string such as \"200\" or \"200-399\"")
    }

    fn visit_str<E: Error>(self, text: &str) -> Result<RawStatus, E> {
        Ok(RawStatus(text.to_owned()))
    }
}

/// An address and port to listen on, such as `metrics` or `console` of `[admin]`: a string,
/// parsed later by validation.
///
/// Its own type only to say what it looks like when it is not a string at all: `metrics = 9477`
/// (the port alone) is a likely mistake.
pub(crate) struct RawSocketAddr(pub String);

impl<'de> Deserialize<'de> for RawSocketAddr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(SocketAddrVisitor)
    }
}

struct SocketAddrVisitor;

impl Visitor<'_> for SocketAddrVisitor {
    type Value = RawSocketAddr;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string such as \"127.0.0.1:9477\" or \"[::1]:9477\"")
    }

    fn visit_str<E: Error>(self, text: &str) -> Result<RawSocketAddr, E> {
        Ok(RawSocketAddr(text.to_owned()))
    }
}

/// The value of `zero_copy`: a string, parsed later by validation.
///
/// Its own type only to list the accepted strings when the value is not a string at all:
/// `zero_copy = true` is a likely mistake for an on/off setting.
pub(crate) struct RawZeroCopy(pub String);

impl<'de> Deserialize<'de> for RawZeroCopy {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(ZeroCopyVisitor)
    }
}

struct ZeroCopyVisitor;

impl Visitor<'_> for ZeroCopyVisitor {
    type Value = RawZeroCopy;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a string: {}", ZeroCopy::expected())
    }

    fn visit_str<E: Error>(self, text: &str) -> Result<RawZeroCopy, E> {
        Ok(RawZeroCopy(text.to_owned()))
    }
}

/// The hash key: a string, checked later by validation.
///
/// Its own type because the key is a secret: serde's messages quote a value of the wrong type
/// (`hash_key = 0x0011…` would come back as a number), this one only names its type.
pub(crate) struct RawSecret(pub String);

impl<'de> Deserialize<'de> for RawSecret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(SecretVisitor)
    }
}

struct SecretVisitor;

impl SecretVisitor {
    fn wrong<E: Error>(&self, kind: &str) -> Result<RawSecret, E> {
        Err(E::invalid_type(Unexpected::Other(kind), self))
    }
}

impl Visitor<'_> for SecretVisitor {
    type Value = RawSecret;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string of 32 hex digits")
    }

    fn visit_str<E: Error>(self, text: &str) -> Result<RawSecret, E> {
        Ok(RawSecret(text.to_owned()))
    }

    fn visit_bool<E: Error>(self, _: bool) -> Result<RawSecret, E> {
        self.wrong("boolean")
    }

    fn visit_i64<E: Error>(self, _: i64) -> Result<RawSecret, E> {
        self.wrong("integer")
    }

    fn visit_i128<E: Error>(self, _: i128) -> Result<RawSecret, E> {
        self.wrong("integer")
    }

    fn visit_u64<E: Error>(self, _: u64) -> Result<RawSecret, E> {
        self.wrong("integer")
    }

    fn visit_u128<E: Error>(self, _: u128) -> Result<RawSecret, E> {
        self.wrong("integer")
    }

    fn visit_f64<E: Error>(self, _: f64) -> Result<RawSecret, E> {
        self.wrong("floating point")
    }
}
