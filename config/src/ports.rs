//! Port ranges of rules: `"N"`, `"N-M"` or `"*"`.

use std::fmt;
use std::str::FromStr;

use crate::ValueError;

/// An inclusive range of destination ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    /// First port of the range.
    pub first: u16,
    /// Last port of the range, included.
    pub last: u16,
}

/// What a port entry may look like, for error messages.
const EXPECTED: &str = "\"N\", \"N-M\" (1 <= N <= M <= 65535) or \"*\"";

impl PortRange {
    /// Every port, written `"*"`. It includes port 0 so that traffic without ports (ICMP)
    /// matches it too.
    pub const ALL: PortRange = PortRange {
        first: 0,
        last: u16::MAX,
    };

    /// Whether `port` is in the range.
    pub fn contains(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }

    /// Whether the two ranges share at least one port.
    pub fn overlaps(&self, other: &PortRange) -> bool {
        self.first <= other.last && other.first <= self.last
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == PortRange::ALL {
            f.write_str("*")
        } else if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

impl FromStr for PortRange {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, ValueError> {
        if s == "*" {
            return Ok(PortRange::ALL);
        }
        let range = match s.split_once('-') {
            Some((first, last)) => PortRange {
                first: port(first, s)?,
                last: port(last, s)?,
            },
            None => {
                let single = port(s, s)?;
                PortRange {
                    first: single,
                    last: single,
                }
            }
        };
        if range.first > range.last {
            return Err(ValueError::new(
                format!(
                    "`{}` is reversed ({} > {})",
                    s.escape_debug(),
                    range.first,
                    range.last
                ),
                EXPECTED,
            ));
        }
        Ok(range)
    }
}

/// Parses one port number `text` of the entry `entry`.
fn port(text: &str, entry: &str) -> Result<u16, ValueError> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ValueError::new(
            format!("`{}` is not a port or port range", entry.escape_debug()),
            EXPECTED,
        ));
    }
    match text.parse::<u16>() {
        Ok(0) => Err(ValueError::new(
            format!("port 0 in `{}` is not a port", entry.escape_debug()),
            format!("{EXPECTED}; \"*\" already covers every port"),
        )),
        Ok(port) => Ok(port),
        // Only digits, so the parse failed because the number does not fit in 16 bits.
        Err(_) => Err(ValueError::new(
            format!("port {text} in `{}` is out of range", entry.escape_debug()),
            EXPECTED,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(first: u16, last: u16) -> PortRange {
        PortRange { first, last }
    }

    #[test]
    fn parses_the_three_forms() {
        assert_eq!("*".parse(), Ok(PortRange::ALL));
        assert_eq!("80".parse(), Ok(range(80, 80)));
        assert_eq!("8000-8099".parse(), Ok(range(8000, 8099)));
        assert_eq!("1-65535".parse(), Ok(range(1, 65535)));
        assert_eq!("443-443".parse(), Ok(range(443, 443)));
    }

    #[test]
    fn rejects_bad_entries_saying_what_is_expected() {
        for (bad, problem) in [
            ("", "`` is not a port or port range"),
            ("http", "`http` is not a port or port range"),
            ("-80", "`-80` is not a port or port range"),
            ("80-", "`80-` is not a port or port range"),
            ("+80", "`+80` is not a port or port range"),
            (" 80", "` 80` is not a port or port range"),
            ("1-2-3", "`1-2-3` is not a port or port range"),
            ("**", "`**` is not a port or port range"),
            ("0", "port 0 in `0` is not a port"),
            ("0-80", "port 0 in `0-80` is not a port"),
            ("65536", "port 65536 in `65536` is out of range"),
            (
                "80-99999999999999999999",
                "port 99999999999999999999 in `80-99999999999999999999` is out of range",
            ),
            ("90-80", "`90-80` is reversed (90 > 80)"),
        ] {
            let error = bad.parse::<PortRange>().expect_err(bad);
            assert_eq!(error.problem, problem, "{bad}");
            assert!(
                error.to_string().contains("expected \"N\", \"N-M\""),
                "{error}"
            );
        }
    }

    #[test]
    fn displays_as_written() {
        for text in ["*", "80", "8000-8099", "1-65535"] {
            assert_eq!(
                text.parse::<PortRange>().map(|r| r.to_string()),
                Ok(text.to_owned())
            );
        }
    }

    #[test]
    fn contains_and_overlaps_are_inclusive() {
        let r = range(8000, 8099);
        assert!(r.contains(8000) && r.contains(8099));
        assert!(!r.contains(7999) && !r.contains(8100));
        assert!(PortRange::ALL.contains(0) && PortRange::ALL.contains(65535));
        assert!(r.overlaps(&range(8099, 9000)) && r.overlaps(&range(1, 8000)));
        assert!(r.overlaps(&range(8050, 8050)) && range(8050, 8050).overlaps(&r));
        assert!(!r.overlaps(&range(8100, 9000)) && !r.overlaps(&range(1, 7999)));
    }
}
