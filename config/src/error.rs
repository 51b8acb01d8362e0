//! Errors: [`ConfigError`] for a bad file, [`IdentifyError`] for a host that is no node,
//! [`ValueError`] for a bad value, and the translation of toml's errors into [`ConfigError`].

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use toml::de::DeTable;

use crate::locate::{self, Source};

/// What is wrong with a configuration file, and where.
///
/// Displayed as `{file}:{line}:{column}: {key}: {message}`, or `{file}: {message}` when the
/// file could not be read at all or is too large.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The file, as given to [`crate::FarmConfig::load`] or [`crate::FarmConfig::parse`].
    pub file: PathBuf,
    /// 1-based line and column (counted in characters) of the offending text; `None` only when
    /// the file could not be read or is too large.
    pub location: Option<(usize, usize)>,
    /// Path of the offending key, such as `farm.buckets`, `node[2].address`, `check[1].port` or
    /// `rule[1].ports[0]` (array indices are 0-based, in file order); empty when the file could
    /// not be read or is too large.
    pub key: String,
    /// What is wrong, then what was expected.
    pub message: String,
}

impl ConfigError {
    /// The file could not be read.
    pub(crate) fn unreadable(file: &Path, error: &std::io::Error) -> ConfigError {
        ConfigError {
            file: file.to_owned(),
            location: None,
            key: String::new(),
            message: format!("cannot read: {error}"),
        }
    }

    /// The file is larger than `limit` bytes.
    pub(crate) fn too_large(file: &Path, limit: u64) -> ConfigError {
        ConfigError {
            file: file.to_owned(),
            location: None,
            key: String::new(),
            message: format!(
                "the file is larger than {limit} bytes; expected a configuration file of at most {limit} bytes"
            ),
        }
    }

    /// The file was read but is not text.
    pub(crate) fn not_utf8(file: &Path, bytes: &[u8], error: std::str::Utf8Error) -> ConfigError {
        ConfigError {
            file: file.to_owned(),
            location: Some(locate::position(bytes, error.valid_up_to())),
            key: locate::TOP_LEVEL.to_owned(),
            message: "invalid UTF-8; expected a UTF-8 text file".to_owned(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((line, column)) = self.location {
            write!(f, ":{line}:{column}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// A rejected value: what is wrong with it and what was expected instead.
///
/// The error of the `FromStr` impls of [`crate::Protocol`], [`crate::Affinity`],
/// [`crate::PortRange`], [`crate::DataplaneMode`], [`crate::ZeroCopy`] and [`crate::CheckAction`];
/// validation turns it into a [`ConfigError`] message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{problem}; expected {expected}")]
pub struct ValueError {
    /// What is wrong, such as "`90-80` is reversed (90 > 80)".
    pub problem: String,
    /// What would have been accepted.
    pub expected: String,
}

impl ValueError {
    pub(crate) fn new(problem: impl Into<String>, expected: impl Into<String>) -> ValueError {
        ValueError {
            problem: problem.into(),
            expected: expected.into(),
        }
    }

    /// Adds "(did you mean `x`?)" to the problem when `found` is a likely typo of a candidate.
    pub(crate) fn suggesting(mut self, found: &str, candidates: &[&str]) -> ValueError {
        if let Some(guess) = did_you_mean(found, candidates) {
            self.problem = format!("{} (did you mean `{guess}`?)", self.problem);
        }
        self
    }
}

/// Why this host could not tell which node of the farm it is.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdentifyError {
    /// The node name given (by `--node`) is not in the configuration.
    #[error(
        "no node named `{name}` in the farm configuration (configured: {}); pass --node with one of these names",
        list(known)
    )]
    UnknownName {
        /// The name asked for.
        name: String,
        /// The names of the configured nodes, in file order.
        known: Vec<String>,
    },
    /// No node's address is one of this host's addresses.
    #[error(
        "none of this host's addresses ({}) is the address of a node in the farm configuration; \
         assign this node's configured address to an interface, or pass --node NAME",
        list(addresses)
    )]
    NoLocalMatch {
        /// This host's addresses that were compared with the node addresses.
        addresses: Vec<IpAddr>,
    },
    /// This host has the addresses of several nodes.
    #[error(
        "this host has the addresses of several nodes ({}); pass --node NAME to say which one it is",
        list(names)
    )]
    Ambiguous {
        /// The nodes whose addresses are local, in file order.
        names: Vec<String>,
    },
}

/// `a, b, c`, or `none` for an empty list.
fn list<T: fmt::Display>(items: &[T]) -> String {
    if items.is_empty() {
        return "none".to_owned();
    }
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `names` backquoted, as a message lists alternatives: "`a`", "`a` or `b`", "`a`, `b` or `c`".
pub(crate) fn one_of(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|name| format!("`{name}`")).collect();
    match quoted.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

/// `names` backquoted, as a message lists what all goes together: "`a`", "`a` and `b`",
/// "`a`, `b` and `c`".
pub(crate) fn all_of(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|name| format!("`{name}`")).collect();
    match quoted.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
        None => String::new(),
    }
}

/// The candidate `found` is most likely a typo of, if any is close enough: within an edit
/// distance of a third of its length (at least 1), ignoring case.
pub(crate) fn did_you_mean<'a>(found: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let found_lower = found.to_lowercase();
    candidates
        .iter()
        .filter(|&&candidate| candidate != found)
        .map(|&candidate| {
            (
                strsim::damerau_levenshtein(&found_lower, &candidate.to_lowercase()),
                candidate,
            )
        })
        .filter(|&(distance, candidate)| distance <= (candidate.chars().count() / 3).max(1))
        .min_by_key(|&(distance, _)| distance)
        .map(|(_, candidate)| candidate)
}

/// Turns an error of toml (a syntax error, or a type or unknown-key error from deserializing)
/// into a [`ConfigError`]. `tree` is the document as far as it could be parsed; it maps the
/// error's byte span back to a key path.
pub(crate) fn from_toml(
    source: &Source<'_>,
    tree: &DeTable<'_>,
    error: &toml::de::Error,
) -> ConfigError {
    let span = error.span().unwrap_or(0..0);
    let message = error.message();
    if let Some(message) = unknown_key(message) {
        return source.error(
            span.clone(),
            locate::key_path(tree, source.text, &span),
            message,
        );
    }
    if message == "duplicate key" {
        let (key, message) = locate::duplicate_key(tree, source.text, &span);
        return source.error(span, key, message);
    }
    // serde sees a datetime as a map, so only the document can tell it from a table.
    let datetime = locate::is_datetime(tree, &span);
    let written = source.text.get(span.clone()).unwrap_or_default();
    source.error(
        span.clone(),
        locate::key_path(tree, source.text, &span),
        with_expected(&in_toml_terms(message, datetime), written),
    )
}

/// Largest nesting of arrays, inline tables and dotted keys toml accepts.
const TOML_MAX_DEPTH: usize = 80;

/// Gives the messages of toml that lack one a clause saying what was expected, replacing
/// toml's "expected nothing" (meaning: remove it). `written` is the text at the error's span.
fn with_expected(message: &str, written: &str) -> String {
    if let Some(problem) = message.strip_suffix(", expected nothing") {
        let expected = match problem {
            "unexpected leading zero" => {
                "a decimal integer without leading zeros (or one with a 0x, 0o or 0b prefix)"
            }
            "integers with a radix cannot be signed" => {
                "an unsigned 0x, 0o or 0b integer, or a signed decimal one"
            }
            "redundant integer number prefix" => "at most one 0x, 0o or 0b prefix",
            "redundant numeric sign" => "at most one sign",
            "extra `=`" => "a single `=` between key and value",
            _ => "the value without it",
        };
        return format!("{problem}; expected {expected}");
    }
    if message.contains("expected") {
        return message.to_owned();
    }
    let expected = match message {
        "integer number overflowed" => {
            return format!(
                "{written} is out of range; expected an integer from {} to {}",
                i64::MIN,
                i64::MAX
            )
        }
        "floating-point number overflowed" => "a finite floating-point number".to_owned(),
        "cannot recurse further; max recursion depth met" | "recursion limit" => format!(
            "arrays, inline tables and dotted keys nested at most {TOML_MAX_DEPTH} levels deep"
        ),
        _ => "valid TOML, see https://toml.io".to_owned(),
    };
    format!("{message}; expected {expected}")
}

/// Rewrites serde_derive's `deny_unknown_fields` message, adding a suggestion.
///
/// That message is the only place the accepted keys are available at runtime, so its text is
/// read back: "unknown field `x`, expected one of `a`, `b`", "… expected `a` or `b`",
/// "… expected `a`" or "… there are no fields". The candidates are the backquoted words after
/// the name. `None` when `message` is not of that form.
fn unknown_key(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    let (name, rest) = rest.split_once('`')?;
    let candidates: Vec<&str> = rest.split('`').skip(1).step_by(2).collect();
    let expected = match candidates.as_slice() {
        [] => "no key here".to_owned(),
        [one] => format!("`{one}`"),
        several => format!(
            "one of {}",
            several
                .iter()
                .map(|c| format!("`{c}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    Some(
        ValueError::new(format!("unknown key `{name}`"), expected)
            .suggesting(name, &candidates)
            .to_string(),
    )
}

/// Replaces serde's data-model words in a type error by the TOML ones a user knows; a map is
/// a datetime when `datetime` is set, else a table.
fn in_toml_terms(message: &str, datetime: bool) -> String {
    let map = if datetime {
        "invalid type: datetime"
    } else {
        "invalid type: table"
    };
    message
        .replace("expected a sequence", "expected an array")
        .replace("invalid type: sequence", "invalid type: array")
        .replace("invalid type: map", map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_only_close_candidates() {
        let keys = [
            "name",
            "vip",
            "interface",
            "buckets",
            "hash_key",
            "port",
            "auth_key_file",
        ];
        assert_eq!(did_you_mean("bucket", &keys), Some("buckets"));
        assert_eq!(did_you_mean("vips", &keys), Some("vip"));
        assert_eq!(did_you_mean("hashkey", &keys), Some("hash_key"));
        assert_eq!(did_you_mean("interfcae", &keys), Some("interface"));
        assert_eq!(did_you_mean("Port", &keys), Some("port"));
        assert_eq!(did_you_mean("colour", &keys), None);
        assert_eq!(did_you_mean("name", &keys), None);
    }

    #[test]
    fn reads_every_form_of_serde_unknown_field_message() {
        assert_eq!(
            unknown_key("unknown field `bucket`, expected one of `name`, `buckets`").as_deref(),
            Some(
                "unknown key `bucket` (did you mean `buckets`?); expected one of `name`, `buckets`"
            )
        );
        assert_eq!(
            unknown_key("unknown field `nodes`, expected `farm` or `node`").as_deref(),
            Some("unknown key `nodes` (did you mean `node`?); expected one of `farm`, `node`")
        );
        assert_eq!(
            unknown_key("unknown field `x`, expected `farm`").as_deref(),
            Some("unknown key `x`; expected `farm`")
        );
        assert_eq!(
            unknown_key("unknown field `x`, there are no fields").as_deref(),
            Some("unknown key `x`; expected no key here")
        );
        assert_eq!(
            unknown_key("invalid type: integer `3`, expected a string"),
            None
        );
    }

    #[test]
    fn displays_with_and_without_location() {
        let error = ConfigError {
            file: "farm.toml".into(),
            location: Some((4, 11)),
            key: "farm.buckets".to_owned(),
            message: "100 is not a power of two".to_owned(),
        };
        assert_eq!(
            error.to_string(),
            "farm.toml:4:11: farm.buckets: 100 is not a power of two"
        );
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "gone");
        assert_eq!(
            ConfigError::unreadable(Path::new("farm.toml"), &io).to_string(),
            "farm.toml: cannot read: gone"
        );
    }

    #[test]
    fn identify_errors_say_what_to_do() {
        let unknown = IdentifyError::UnknownName {
            name: "delta".to_owned(),
            known: vec!["alpha".to_owned(), "bravo".to_owned()],
        };
        assert_eq!(
            unknown.to_string(),
            "no node named `delta` in the farm configuration (configured: alpha, bravo); \
             pass --node with one of these names"
        );
        let none = IdentifyError::NoLocalMatch { addresses: vec![] };
        assert!(none.to_string().contains("(none)"), "{none}");
        assert!(none.to_string().contains("pass --node NAME"), "{none}");
        let several = IdentifyError::Ambiguous {
            names: vec!["alpha".to_owned(), "bravo".to_owned()],
        };
        assert!(
            several
                .to_string()
                .contains("(alpha, bravo); pass --node NAME"),
            "{several}"
        );
    }
}
