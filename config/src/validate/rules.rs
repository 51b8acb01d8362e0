//! The `[[rule]]` entries.

use crate::keyword::Keyword;
use std::ops::Range;

use toml::Spanned;

use super::{invalid, required};
use crate::locate::Source;
use crate::raw::RawRule;
use crate::{Affinity, ConfigError, PortRange, Protocol, Rule, ValueError};

/// A validated rule, with where each of its port ranges is written for overlap errors.
struct CheckedRule {
    rule: Rule,
    /// Span and key of each of `rule.ports`.
    places: Vec<(Range<usize>, String)>,
    /// Span of the `[[rule]]` entry.
    span: Range<usize>,
}

pub(super) fn check_rules(
    rules: Option<&Spanned<Vec<Spanned<RawRule>>>>,
    source: &Source<'_>,
) -> Result<Vec<Rule>, ConfigError> {
    const EXPECTED: &str = "at least one [[rule]] entry, as VIP traffic no rule matches is dropped";
    let Some(rules) = rules else {
        return Err(
            source.error_at_start("rule", format!("the farm has no rule; expected {EXPECTED}"))
        );
    };
    if rules.get_ref().is_empty() {
        return Err(invalid(
            source,
            rules.span(),
            "rule",
            ValueError::new("the farm has no rule", EXPECTED),
        ));
    }
    let mut checked: Vec<CheckedRule> = Vec::with_capacity(rules.get_ref().len());
    for (index, rule) in rules.get_ref().iter().enumerate() {
        let rule = check_rule(index, rule, source)?;
        check_overlaps(&rule, &checked, source)?;
        checked.push(rule);
    }
    Ok(checked.into_iter().map(|checked| checked.rule).collect())
}

fn check_rule(
    index: usize,
    rule: &Spanned<RawRule>,
    source: &Source<'_>,
) -> Result<CheckedRule, ConfigError> {
    let raw = rule.get_ref();
    let key = |field: &str| format!("rule[{index}].{field}");

    let protocol = required(
        &raw.protocol,
        rule,
        &key("protocol"),
        &Protocol::expected(),
        source,
    )?;
    let protocol = protocol.get_ref().parse::<Protocol>().map_err(|error| {
        let error = error.suggesting(protocol.get_ref(), Protocol::NAMES);
        invalid(source, protocol.span(), &key("protocol"), error)
    })?;

    let mut ports = Vec::new();
    let mut places = Vec::new();
    match &raw.ports {
        None => {
            ports.push(PortRange::ALL);
            places.push((rule.span(), key("ports")));
        }
        Some(list) if list.get_ref().is_empty() => {
            let error = ValueError::new(
                "the list of ports is empty",
                "at least one entry, or no `ports` key for every port",
            );
            return Err(invalid(source, list.span(), &key("ports"), error));
        }
        Some(list) => {
            for (position, entry) in list.get_ref().iter().enumerate() {
                let entry_key = format!("{}[{position}]", key("ports"));
                let text = &entry.get_ref().0;
                if protocol == Protocol::Icmp && (text != "*" || position > 0) {
                    let error = ValueError::new(
                        format!(
                            "`{}` is a port entry, but {} has no ports",
                            text.escape_debug(),
                            Protocol::Icmp
                        ),
                        "[\"*\"] alone, or no `ports` key",
                    );
                    return Err(invalid(source, entry.span(), &entry_key, error));
                }
                let range = text
                    .parse::<PortRange>()
                    .map_err(|error| invalid(source, entry.span(), &entry_key, error))?;
                ports.push(range);
                places.push((entry.span(), entry_key));
            }
        }
    }

    let affinity = match &raw.affinity {
        Some(affinity) => affinity.get_ref().parse::<Affinity>().map_err(|error| {
            let error = error.suggesting(affinity.get_ref(), Affinity::NAMES);
            invalid(source, affinity.span(), &key("affinity"), error)
        })?,
        None => Affinity::ClientIp,
    };

    Ok(CheckedRule {
        rule: Rule {
            protocol,
            ports,
            affinity,
        },
        places,
        span: rule.span(),
    })
}

/// Rejects `rule` if it shares a port with an `earlier` rule of its protocol that hashes by a
/// different affinity: the earlier rule would silently win on the shared ports.
fn check_overlaps(
    rule: &CheckedRule,
    earlier: &[CheckedRule],
    source: &Source<'_>,
) -> Result<(), ConfigError> {
    let this = &rule.rule;
    for (index, other) in earlier.iter().enumerate() {
        if other.rule.protocol != this.protocol || other.rule.affinity == this.affinity {
            continue;
        }
        for (range, (span, key)) in this.ports.iter().zip(&rule.places) {
            if let Some(shared) = other
                .rule
                .ports
                .iter()
                .find(|theirs| range.overlaps(theirs))
            {
                let error = ValueError::new(
                    format!(
                        "`{range}` overlaps `{shared}` of rule[{index}] (line {}), a {} rule with affinity {} \
                         while this one has {}",
                        source.line(other.span.clone()),
                        this.protocol,
                        other.rule.affinity,
                        this.affinity
                    ),
                    "disjoint ports for rules of one protocol with different affinities \
                     (overlapping rules with the same affinity are allowed)",
                );
                return Err(invalid(source, span.clone(), key, error));
            }
        }
    }
    Ok(())
}
