//! The `[[check]]` entries.

use std::collections::HashMap;
use std::net::IpAddr;
use std::ops::Range;

use toml::Spanned;

use super::{check_interface, check_name, integer, invalid, name_rule, required};
use crate::error::all_of;
use crate::keyword::Keyword;
use crate::locate::Source;
use crate::raw::RawCheck;
use crate::{
    Check, CheckAction, CheckKind, ConfigError, FarmConfig, KindName, ProcessMatcher, ValueError,
};

/// What the address of a `tcp` or `ping` check may be.
const TARGET: &str = "an IP address such as 127.0.0.1 or 2001:db8::1 (host names are not resolved)";
/// What the URL of an `http` check may be.
const URL: &str = "a URL starting with http://, such as http://127.0.0.1:8080/health";
/// What the status of an `http` check may be.
const STATUS: &str = "\"N\" or \"N-M\" (100 <= N <= M <= 599), such as \"200-399\"";
/// What selects the processes of a `process` check.
const MATCHER: &str = "exactly one of `process`, the process name (as in /proc/PID/comm), or \
                       `command`, a regular expression matched against the full command line";
/// What the regular expression of a `process` check may be.
const REGEX: &str =
    "a regular expression (of the Rust `regex` crate) matched against the full command line, \
     such as \"^/usr/sbin/nginx\"";
/// What the command line of a `command` check may be.
const RUN: &str = "a shell command line, run with `sh -c`";

/// Every key that only some kinds of check take, with its kind and, when the entry has it, the
/// span of its value.
fn kind_keys(raw: &RawCheck) -> [(&'static str, KindName, Option<Range<usize>>); 12] {
    fn span<T>(value: &Option<Spanned<T>>) -> Option<Range<usize>> {
        value.as_ref().map(Spanned::span)
    }
    [
        ("host", KindName::Tcp, span(&raw.host)),
        ("port", KindName::Tcp, span(&raw.port)),
        ("url", KindName::Http, span(&raw.url)),
        ("status", KindName::Http, span(&raw.status)),
        ("body", KindName::Http, span(&raw.body)),
        ("process", KindName::Process, span(&raw.process)),
        ("command", KindName::Process, span(&raw.command)),
        ("at_least", KindName::Process, span(&raw.at_least)),
        ("at_most", KindName::Process, span(&raw.at_most)),
        ("address", KindName::Ping, span(&raw.address)),
        ("interface", KindName::Interface, span(&raw.interface)),
        ("run", KindName::Command, span(&raw.run)),
    ]
}

/// The checks, in file order; none when the file has no `[[check]]`.
pub(super) fn check_checks(
    checks: Option<&Spanned<Vec<Spanned<RawCheck>>>>,
    source: &Source<'_>,
) -> Result<Vec<Check>, ConfigError> {
    let Some(checks) = checks else {
        return Ok(Vec::new());
    };
    let list = checks.get_ref();
    if let Some(extra) = list.get(FarmConfig::MAX_CHECKS) {
        let error = ValueError::new(
            format!("{} checks are too many", list.len()),
            format!("at most {} [[check]] entries", FarmConfig::MAX_CHECKS),
        );
        return Err(invalid(
            source,
            extra.span(),
            &format!("check[{}]", FarmConfig::MAX_CHECKS),
            error,
        ));
    }
    let mut names: HashMap<String, Range<usize>> = HashMap::new();
    let mut checked = Vec::with_capacity(list.len());
    for (index, check) in list.iter().enumerate() {
        let checked_check = check_check(index, check, &mut names, source)?;
        checked.push(checked_check);
    }
    Ok(checked)
}

/// Entry `index`; `names` maps the names of the entries before it to their spans.
fn check_check(
    index: usize,
    check: &Spanned<RawCheck>,
    names: &mut HashMap<String, Range<usize>>,
    source: &Source<'_>,
) -> Result<Check, ConfigError> {
    let raw = check.get_ref();
    let key = |field: &str| format!("check[{index}].{field}");

    let name = required(&raw.name, check, &key("name"), &name_rule(), source)?;
    let name_span = name.span();
    let name = check_name(name, &key("name"), source)?;
    if let Some(first) = names.get(&name) {
        let error = ValueError::new(
            format!(
                "`{name}` is already the name of a check (line {})",
                source.line(first.clone())
            ),
            "a name no other check has",
        );
        return Err(invalid(source, name_span, &key("name"), error));
    }
    names.insert(name.clone(), name_span);

    let kind = required(
        &raw.kind,
        check,
        &key("kind"),
        &KindName::expected(),
        source,
    )?;
    let kind = KindName::parse(kind.get_ref()).map_err(|error| {
        let error = error.suggesting(kind.get_ref(), KindName::NAMES);
        invalid(source, kind.span(), &key("kind"), error)
    })?;
    check_kind_keys(raw, kind, &key, source)?;

    let interval_ms = match &raw.interval_ms {
        Some(interval) => integer(
            interval,
            i128::from(Check::MIN_INTERVAL_MS)..=i128::from(Check::MAX_INTERVAL_MS),
            &key("interval_ms"),
            source,
        )?,
        None => Check::DEFAULT_INTERVAL_MS,
    };
    let timeout_ms = check_timeout(raw, interval_ms, &key, source)?;
    let fall = match &raw.fall {
        Some(fall) => integer(fall, 1..=i128::from(Check::MAX_FALL), &key("fall"), source)?,
        None => Check::DEFAULT_FALL,
    };
    let rise = match &raw.rise {
        Some(rise) => integer(rise, 1..=i128::from(Check::MAX_RISE), &key("rise"), source)?,
        None => Check::DEFAULT_RISE,
    };
    let action = match &raw.action {
        Some(action) => action.get_ref().parse::<CheckAction>().map_err(|error| {
            let error = error.suggesting(action.get_ref(), CheckAction::NAMES);
            invalid(source, action.span(), &key("action"), error)
        })?,
        None => CheckAction::default(),
    };

    let kind = match kind {
        KindName::Tcp => check_tcp(raw, check, &key, source)?,
        KindName::Http => check_http(raw, check, &key, source)?,
        KindName::Process => check_process(raw, check, &key, source)?,
        KindName::Ping => {
            let address = required(&raw.address, check, &key("address"), TARGET, source)?;
            CheckKind::Ping {
                address: target(address, &key("address"), source)?,
            }
        }
        KindName::Interface => CheckKind::Interface {
            interface: match &raw.interface {
                Some(interface) => Some(check_interface(interface, &key("interface"), source)?),
                None => None,
            },
        },
        KindName::Address => CheckKind::Address,
        KindName::Command => {
            let run = required(&raw.run, check, &key("run"), RUN, source)?;
            CheckKind::Command {
                run: command_line(run, &key("run"), RUN, source)?,
            }
        }
    };
    Ok(Check {
        name,
        kind,
        interval_ms,
        timeout_ms,
        fall,
        rise,
        action,
    })
}

/// Rejects the first key, in file order, that belongs to another kind of check than `kind`.
fn check_kind_keys(
    raw: &RawCheck,
    kind: KindName,
    key: &dyn Fn(&str) -> String,
    source: &Source<'_>,
) -> Result<(), ConfigError> {
    let keys = kind_keys(raw);
    let foreign = keys
        .iter()
        .filter(|(_, owner, _)| *owner != kind)
        .filter_map(|(name, owner, span)| Some((*name, *owner, span.clone()?)))
        .min_by_key(|(_, _, span)| span.start);
    let Some((name, owner, span)) = foreign else {
        return Ok(());
    };
    let own: Vec<&str> = keys
        .iter()
        .filter(|(_, owner, _)| *owner == kind)
        .map(|(name, _, _)| *name)
        .collect();
    let kind = kind.name();
    let expected = if own.is_empty() {
        format!("only the keys of every check, as `{kind}` checks have none of their own")
    } else {
        format!(
            "only the keys of every check and those of `{kind}` checks: {}",
            all_of(&own)
        )
    };
    let error = ValueError::new(
        format!(
            "`{name}` belongs to `{}` checks, not to `{kind}` checks",
            owner.name()
        ),
        expected,
    );
    Err(invalid(source, span, &key(name), error))
}

/// `timeout_ms`, which must not exceed `interval_ms` (already checked). The error is on the key
/// the file sets: `timeout_ms` when it is given, else `interval_ms`, too short for the default.
fn check_timeout(
    raw: &RawCheck,
    interval_ms: u32,
    key: &dyn Fn(&str) -> String,
    source: &Source<'_>,
) -> Result<u32, ConfigError> {
    const WHY: &str = "as a probe's timeout must not exceed interval_ms";
    match (&raw.timeout_ms, &raw.interval_ms) {
        (Some(timeout), interval) if timeout.get_ref().0 > i128::from(interval_ms) => {
            let default = if interval.is_none() {
                " (the default)"
            } else {
                ""
            };
            let error = ValueError::new(
                format!(
                    "{} is more than interval_ms = {interval_ms}{default}",
                    timeout.get_ref().0
                ),
                format!(
                    "an integer from {} to {interval_ms}, {WHY}",
                    Check::MIN_TIMEOUT_MS
                ),
            );
            Err(invalid(source, timeout.span(), &key("timeout_ms"), error))
        }
        (Some(timeout), _) => integer(
            timeout,
            i128::from(Check::MIN_TIMEOUT_MS)..=i128::from(interval_ms),
            &key("timeout_ms"),
            source,
        ),
        (None, Some(interval)) if interval_ms < Check::DEFAULT_TIMEOUT_MS => {
            let default = Check::DEFAULT_TIMEOUT_MS;
            let error = ValueError::new(
                format!("{interval_ms} is less than timeout_ms = {default} (the default)"),
                format!(
                    "an integer from {default} to {}, or timeout_ms set to at most {interval_ms}, {WHY}",
                    Check::MAX_INTERVAL_MS
                ),
            );
            Err(invalid(source, interval.span(), &key("interval_ms"), error))
        }
        (None, _) => Ok(Check::DEFAULT_TIMEOUT_MS),
    }
}

fn check_tcp(
    raw: &RawCheck,
    check: &Spanned<RawCheck>,
    key: &dyn Fn(&str) -> String,
    source: &Source<'_>,
) -> Result<CheckKind, ConfigError> {
    let host = required(&raw.host, check, &key("host"), TARGET, source)?;
    let host = target(host, &key("host"), source)?;
    let port = required(
        &raw.port,
        check,
        &key("port"),
        "an integer from 1 to 65535",
        source,
    )?;
    let port = integer(port, 1..=i128::from(u16::MAX), &key("port"), source)?;
    Ok(CheckKind::Tcp { host, port })
}

fn check_http(
    raw: &RawCheck,
    check: &Spanned<RawCheck>,
    key: &dyn Fn(&str) -> String,
    source: &Source<'_>,
) -> Result<CheckKind, ConfigError> {
    let url = required(&raw.url, check, &key("url"), URL, source)?;
    check_url(url.get_ref()).map_err(|error| invalid(source, url.span(), &key("url"), error))?;
    let status = match &raw.status {
        Some(status) => parse_status(&status.get_ref().0)
            .map_err(|error| invalid(source, status.span(), &key("status"), error))?,
        None => CheckKind::DEFAULT_STATUS,
    };
    let body = match &raw.body {
        Some(body) if body.get_ref().is_empty() => {
            let error = ValueError::new(
                "the text is empty, and every body contains it",
                "text the body must contain, or no `body` key",
            );
            return Err(invalid(source, body.span(), &key("body"), error));
        }
        Some(body) => Some(body.get_ref().clone()),
        None => None,
    };
    Ok(CheckKind::Http {
        url: url.get_ref().clone(),
        status,
        body,
    })
}

/// Checks that `text` is a plain-HTTP URL with a host and, if it has one, a valid port.
fn check_url(text: &str) -> Result<(), ValueError> {
    let shown = text.escape_debug();
    if text
        .get(..8)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"))
    {
        return Err(ValueError::new(
            format!("`{shown}` is an HTTPS URL, and HTTPS is not supported"),
            format!(
                "{URL}; check the application over plain HTTP, or with a `command` check such \
                 as `curl -fsS https://...`"
            ),
        ));
    }
    let Some(rest) = text.strip_prefix("http://") else {
        return Err(ValueError::new(
            format!("`{shown}` does not start with http://"),
            URL,
        ));
    };
    if let Some(bad) = text.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(ValueError::new(format!("`{shown}` contains {bad:?}"), URL));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let (host, port) = match authority.strip_prefix('[') {
        // An IPv6 address, in brackets.
        Some(bracketed) => match bracketed.split_once(']') {
            Some((host, "")) => (host, None),
            Some((host, after)) => match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => ("", None),
            },
            None => ("", None),
        },
        None => match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    if host.is_empty() {
        return Err(ValueError::new(format!("`{shown}` has no valid host"), URL));
    }
    if !authority.starts_with('[') && host.contains(':') {
        return Err(ValueError::new(
            format!("`{shown}` has an IPv6 address that is not in brackets"),
            "a URL such as http://[2001:db8::1]:8080/health",
        ));
    }
    if let Some(port) = port {
        let valid = !port.is_empty()
            && port.bytes().all(|b| b.is_ascii_digit())
            && port.parse::<u16>().is_ok_and(|port| port > 0);
        if !valid {
            return Err(ValueError::new(
                format!("`{}` in `{shown}` is not a port", port.escape_debug()),
                format!("{URL}, with a port from 1 to 65535 if any"),
            ));
        }
    }
    Ok(())
}

/// The statuses `text` writes: `"N"` or `"N-M"`.
fn parse_status(text: &str) -> Result<(u16, u16), ValueError> {
    let (first, last) = text.split_once('-').unwrap_or((text, text));
    let range = (status_code(first, text)?, status_code(last, text)?);
    if range.0 > range.1 {
        return Err(ValueError::new(
            format!(
                "`{}` is reversed ({} > {})",
                text.escape_debug(),
                range.0,
                range.1
            ),
            STATUS,
        ));
    }
    Ok(range)
}

/// One status `text` of the entry `entry`.
fn status_code(text: &str, entry: &str) -> Result<u16, ValueError> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ValueError::new(
            format!(
                "`{}` is not an HTTP status or status range",
                entry.escape_debug()
            ),
            STATUS,
        ));
    }
    match text.parse::<u16>() {
        Ok(code) if (CheckKind::MIN_STATUS..=CheckKind::MAX_STATUS).contains(&code) => Ok(code),
        // Only digits, so a failed parse means too large.
        _ => Err(ValueError::new(
            format!(
                "status {text} in `{}` is out of range",
                entry.escape_debug()
            ),
            STATUS,
        )),
    }
}

fn check_process(
    raw: &RawCheck,
    check: &Spanned<RawCheck>,
    key: &dyn Fn(&str) -> String,
    source: &Source<'_>,
) -> Result<CheckKind, ConfigError> {
    let matcher = match (&raw.process, &raw.command) {
        (Some(name), None) => ProcessMatcher::Name(process_name(name, &key("process"), source)?),
        (None, Some(command)) => {
            ProcessMatcher::Command(process_regex(command, &key("command"), source)?)
        }
        (Some(name), Some(command)) => {
            // On the second of the two, in file order.
            let (span, second) = if name.span().start > command.span().start {
                (name.span(), "process")
            } else {
                (command.span(), "command")
            };
            let error = ValueError::new("both `process` and `command` are set", MATCHER);
            return Err(invalid(source, span, &key(second), error));
        }
        (None, None) => {
            return Err(source.error(
                check.span(),
                key("process"),
                format!("neither `process` nor `command` is set; expected {MATCHER}"),
            ));
        }
    };
    let most = i128::from(CheckKind::MAX_PROCESSES);
    let at_least = match &raw.at_least {
        Some(at_least) => integer(at_least, 0..=most, &key("at_least"), source)?,
        None => CheckKind::DEFAULT_AT_LEAST,
    };
    let at_most = match &raw.at_most {
        Some(at_most) if at_most.get_ref().0 < i128::from(at_least) => {
            let default = if raw.at_least.is_none() {
                " (the default)"
            } else {
                ""
            };
            let error = ValueError::new(
                format!(
                    "{} is less than at_least = {at_least}{default}",
                    at_most.get_ref().0
                ),
                format!("an integer from {at_least} to {most}"),
            );
            return Err(invalid(source, at_most.span(), &key("at_most"), error));
        }
        Some(at_most) => Some(integer(
            at_most,
            i128::from(at_least)..=most,
            &key("at_most"),
            source,
        )?),
        None => match &raw.at_least {
            Some(zero) if at_least == 0 => {
                let error = ValueError::new(
                    "0 without `at_most` holds whatever runs, so the check could never fail",
                    format!("an integer from 1 to {most}, or an `at_most` key"),
                );
                return Err(invalid(source, zero.span(), &key("at_least"), error));
            }
            _ => None,
        },
    };
    Ok(CheckKind::Process {
        matcher,
        at_least,
        at_most,
    })
}

/// A process name as the kernel keeps it in `/proc/PID/comm`.
fn process_name(
    name: &Spanned<String>,
    key: &str,
    source: &Source<'_>,
) -> Result<String, ConfigError> {
    let text = name.get_ref();
    let max = ProcessMatcher::MAX_NAME_LEN;
    let expected =
        format!("a process name as in /proc/PID/comm: 1 to {max} bytes without control characters");
    let error = if text.is_empty() {
        ValueError::new("the process name is empty", expected)
    } else if let Some(bad) = text.chars().find(|c| c.is_control()) {
        ValueError::new(
            format!("`{}` contains {bad:?}", text.escape_debug()),
            expected,
        )
    } else if text.len() > max {
        // The longest prefix of whole characters within the limit: what the kernel shows.
        let cut = (0..=max)
            .rev()
            .find(|&at| text.is_char_boundary(at))
            .unwrap_or_default();
        ValueError::new(
            format!(
                "`{}` is {} bytes long, and the kernel keeps only the first {max} bytes of a \
                 process name",
                text.escape_debug(),
                text.len()
            ),
            format!(
                "{expected}, such as `{}`, or a `command` regular expression",
                text[..cut].escape_debug()
            ),
        )
    } else {
        return Ok(text.clone());
    };
    Err(invalid(source, name.span(), key, error))
}

/// The source of a regular expression that compiles and is not empty.
fn process_regex(
    command: &Spanned<String>,
    key: &str,
    source: &Source<'_>,
) -> Result<String, ConfigError> {
    let text = command.get_ref();
    if text.is_empty() {
        let error = ValueError::new(
            "the regular expression is empty, and would match every process",
            REGEX,
        );
        return Err(invalid(source, command.span(), key, error));
    }
    match regex::Regex::new(text) {
        Ok(_) => Ok(text.clone()),
        Err(error) => {
            // A syntax error is several lines: the expression, a caret under the fault, then
            // "error: " and the reason. The caret is lost on one line, so only the reason is
            // kept.
            let reason = match &error {
                regex::Error::Syntax(message) => message
                    .lines()
                    .rev()
                    .find_map(|line| line.strip_prefix("error: "))
                    .unwrap_or(message)
                    .to_owned(),
                other => other.to_string(),
            };
            // Other errors are a sentence of their own: "Compiled regex exceeds ... bytes."
            let reason = reason.trim_end_matches('.');
            let mut chars = reason.chars();
            let reason: String = chars
                .next()
                .map(|first| first.to_lowercase().chain(chars).collect())
                .unwrap_or_default();
            let error = ValueError::new(
                format!(
                    "`{}` is not a valid regular expression: {reason}",
                    text.escape_debug()
                ),
                REGEX,
            );
            Err(invalid(source, command.span(), key, error))
        }
    }
}

/// An address a probe can be sent to.
fn target(
    address: &Spanned<String>,
    key: &str,
    source: &Source<'_>,
) -> Result<IpAddr, ConfigError> {
    let text = address.get_ref();
    let problem = match text.parse::<IpAddr>() {
        Err(_) => "is not an IP address",
        Ok(ip) if ip.is_unspecified() => "is the unspecified address",
        Ok(ip) if ip.is_multicast() => "is a multicast address",
        Ok(ip) if ip == IpAddr::from([255, 255, 255, 255]) => "is the broadcast address",
        Ok(ip) => return Ok(ip),
    };
    let error = ValueError::new(format!("`{}` {problem}", text.escape_debug()), TARGET);
    Err(invalid(source, address.span(), key, error))
}

/// A shell command line: not empty nor only blanks. `expected` says what it may be.
pub(super) fn command_line(
    line: &Spanned<String>,
    key: &str,
    expected: &str,
    source: &Source<'_>,
) -> Result<String, ConfigError> {
    if line.get_ref().trim().is_empty() {
        let error = ValueError::new("the command line is empty", expected);
        return Err(invalid(source, line.span(), key, error));
    }
    Ok(line.get_ref().clone())
}
