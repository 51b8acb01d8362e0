//! From the file as read to a [`FarmConfig`], checking every rule of the schema.
//!
//! The first error found is returned, in file order as far as the checks allow: `[farm]`,
//! then the nodes, then the rules, then `[membership]`, then `[dataplane]`, then the checks,
//! then `[scripts]`, then `[admin]`.

mod admin;
mod checks;
mod dataplane;
mod farm;
mod membership;
mod nodes;
mod rules;
mod scripts;

use std::net::IpAddr;
use std::ops::{Range, RangeInclusive};

use toml::Spanned;

use crate::locate::Source;
use crate::raw::{RawConfig, RawInt};
use crate::{ConfigError, FarmConfig, ValueError};

/// Longest farm or node name, in characters; keeps log lines and metric labels short.
const NAME_MAX_LEN: usize = 63;
/// Longest interface name, in bytes: the Linux kernel's `IFNAMSIZ` less the terminating NUL.
const INTERFACE_MAX_LEN: usize = 15;

/// What a farm, node or check name may be.
pub(super) fn name_rule() -> String {
    format!("1 to {NAME_MAX_LEN} characters from A-Z, a-z, 0-9, `_`, `.` and `-`")
}

/// What an interface name may be: the rules of the Linux kernel's `dev_valid_name`.
fn interface_rule() -> String {
    format!(
        "a Linux interface name: 1 to {INTERFACE_MAX_LEN} bytes, not `.` or `..`, without `/`, `:`, \
         whitespace or control characters"
    )
}

/// What a VIP or node address may be.
pub(super) const ADDRESS: &str = "a unicast IPv4 or IPv6 address such as 198.18.0.1 or 2001:db8::1";

/// Checks `raw`, read from `source`, and builds the configuration.
pub(crate) fn validate(raw: RawConfig, source: &Source<'_>) -> Result<FarmConfig, ConfigError> {
    let Some(farm) = &raw.farm else {
        return Err(source.error_at_start(
            "farm",
            "required table [farm] is missing; expected a [farm] table with at least `name`, `vip` and `hash_key`",
        ));
    };
    let farm = farm::check_farm(farm, source)?;
    let nodes = nodes::check_nodes(raw.node.as_ref(), &farm, source)?;
    let rules = rules::check_rules(raw.rule.as_ref(), source)?;
    let membership = membership::check_membership(raw.membership.as_ref(), nodes.len(), source)?;
    let dataplane = dataplane::check_dataplane(raw.dataplane.as_ref(), source)?;
    let checks = checks::check_checks(raw.check.as_ref(), source)?;
    let scripts = scripts::check_scripts(raw.scripts.as_ref(), source)?;
    let admin = admin::check_admin(raw.admin.as_ref(), source)?;
    Ok(FarmConfig {
        farm,
        nodes,
        rules,
        membership,
        dataplane,
        checks,
        scripts,
        admin,
    })
}

/// The error for `error` about the value at `span`, whose key is `key`.
pub(super) fn invalid(
    source: &Source<'_>,
    span: Range<usize>,
    key: &str,
    error: ValueError,
) -> ConfigError {
    source.error(span, key, error.to_string())
}

/// The value of the required key `key` of `table`, or an error pointing at the table.
pub(super) fn required<'a, T, U>(
    value: &'a Option<Spanned<T>>,
    table: &Spanned<U>,
    key: &str,
    expected: &str,
    source: &Source<'_>,
) -> Result<&'a Spanned<T>, ConfigError> {
    value.as_ref().ok_or_else(|| {
        let name = key.rsplit('.').next().unwrap_or(key);
        source.error(
            table.span(),
            key,
            format!("required key `{name}` is missing; expected {expected}"),
        )
    })
}

/// `value` as a `T`, if it is in `range`.
pub(super) fn integer<T: TryFrom<i128>>(
    value: &Spanned<RawInt>,
    range: RangeInclusive<i128>,
    key: &str,
    source: &Source<'_>,
) -> Result<T, ConfigError> {
    let number = value.get_ref().0;
    match T::try_from(number) {
        Ok(converted) if range.contains(&number) => Ok(converted),
        _ => {
            let error = ValueError::new(
                format!("{number} is out of range"),
                format!("an integer from {} to {}", range.start(), range.end()),
            );
            Err(invalid(source, value.span(), key, error))
        }
    }
}

pub(super) fn check_name(
    name: &Spanned<String>,
    key: &str,
    source: &Source<'_>,
) -> Result<String, ConfigError> {
    let text = name.get_ref();
    let problem = if text.is_empty() {
        Some("the name is empty".to_owned())
    } else if let Some(bad) = text
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        Some(format!("`{}` contains {bad:?}", text.escape_debug()))
    } else if text.len() > NAME_MAX_LEN {
        Some(format!(
            "`{}` is {} characters long",
            text.escape_debug(),
            text.len()
        ))
    } else {
        None
    };
    match problem {
        Some(problem) => Err(invalid(
            source,
            name.span(),
            key,
            ValueError::new(problem, name_rule()),
        )),
        None => Ok(text.clone()),
    }
}

pub(super) fn check_interface(
    interface: &Spanned<String>,
    key: &str,
    source: &Source<'_>,
) -> Result<String, ConfigError> {
    let text = interface.get_ref();
    let problem = if text.is_empty() {
        Some("the interface name is empty".to_owned())
    } else if text.len() > INTERFACE_MAX_LEN {
        Some(format!(
            "`{}` is {} bytes long",
            text.escape_debug(),
            text.len()
        ))
    } else if text == "." || text == ".." {
        Some(format!("`{text}` is not allowed"))
    } else {
        text.chars()
            .find(|&c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
            .map(|bad| format!("`{}` contains {bad:?}", text.escape_debug()))
    };
    match problem {
        Some(problem) => Err(invalid(
            source,
            interface.span(),
            key,
            ValueError::new(problem, interface_rule()),
        )),
        None => Ok(text.clone()),
    }
}

/// A unicast address: one a node can own and answer for.
pub(super) fn unicast(text: &str) -> Result<IpAddr, ValueError> {
    let address: IpAddr = text.parse().map_err(|_| {
        ValueError::new(
            format!("`{}` is not an IP address", text.escape_debug()),
            ADDRESS,
        )
    })?;
    let problem = if address.is_unspecified() {
        "the unspecified address"
    } else if address.is_loopback() {
        "a loopback address"
    } else if address.is_multicast() {
        "a multicast address"
    } else if address == IpAddr::from([255, 255, 255, 255]) {
        "the broadcast address"
    } else {
        return match address {
            // Traffic arrives with the plain IPv4 address; the mapped form would never match.
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Err(ValueError::new(
                    format!("`{text}` is an IPv4-mapped IPv6 address"),
                    format!("{ADDRESS}; write it as {v4}"),
                )),
                None => Ok(address),
            },
            IpAddr::V4(_) => Ok(address),
        };
    };
    Err(ValueError::new(format!("`{text}` is {problem}"), ADDRESS))
}
