//! The fixed words some keys take (`protocol = "tcp"`, `mode = "xdp"`, ...): one definition of
//! how such values are spelled, shown and parsed.

use crate::error::{self, ValueError};

/// A type whose values are written as one of a fixed list of words.
pub(crate) trait Keyword: Copy + PartialEq + 'static {
    /// Every value.
    const ALL: &'static [Self];
    /// The spellings accepted in the file, in the order of [`Keyword::ALL`].
    const NAMES: &'static [&'static str];
    /// What a value is, for messages: "an affinity".
    const WHAT: &'static str;

    /// How the value is written.
    fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .zip(Self::NAMES)
            .find_map(|(value, name)| (*value == self).then_some(*name))
            .unwrap_or_default()
    }

    /// The accepted spellings as messages list them: "`tcp`, `udp` or `icmp`".
    fn expected() -> String {
        error::one_of(Self::NAMES)
    }

    /// The value spelled `s`.
    fn parse(s: &str) -> Result<Self, ValueError> {
        Self::ALL
            .iter()
            .zip(Self::NAMES)
            .find_map(|(value, name)| (*name == s).then_some(*value))
            .ok_or_else(|| {
                ValueError::new(
                    format!("`{}` is not {}", s.escape_debug(), Self::WHAT),
                    Self::expected(),
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Affinity, CheckAction, DataplaneMode, KindName, MacMode, Protocol, ZeroCopy};

    fn round_trips<T: Keyword + std::fmt::Debug>() {
        assert_eq!(T::ALL.len(), T::NAMES.len(), "{}", T::WHAT);
        for (&value, &name) in T::ALL.iter().zip(T::NAMES) {
            assert_eq!(value.name(), name);
            assert_eq!(T::parse(name), Ok(value));
        }
    }

    #[test]
    fn every_value_has_one_spelling_that_parses_back() {
        round_trips::<Protocol>();
        round_trips::<Affinity>();
        round_trips::<DataplaneMode>();
        round_trips::<ZeroCopy>();
        round_trips::<MacMode>();
        round_trips::<CheckAction>();
        round_trips::<KindName>();
    }

    #[test]
    fn other_words_are_refused_with_the_list() {
        let error = DataplaneMode::parse("dpdk").unwrap_err().to_string();
        assert!(error.contains("`dpdk` is not a dataplane mode"), "{error}");
        assert!(error.contains("`afxdp` or `xdp`"), "{error}");
    }
}
