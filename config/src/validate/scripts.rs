//! The `[scripts]` table.

use toml::Spanned;

use super::checks::command_line;
use super::integer;
use crate::locate::Source;
use crate::raw::RawScripts;
use crate::{ConfigError, RestartLimit, Scripts};

/// The application's scripts; [`Scripts::default`] when the file has no `[scripts]`.
pub(super) fn check_scripts(
    scripts: Option<&Spanned<RawScripts>>,
    source: &Source<'_>,
) -> Result<Scripts, ConfigError> {
    let Some(scripts) = scripts else {
        return Ok(Scripts::default());
    };
    let raw = scripts.get_ref();
    let script = |line: &Option<Spanned<String>>, name: &str| match line {
        Some(line) => command_line(
            line,
            &format!("scripts.{name}"),
            &format!("a shell command line, run with `sh -c`, or no `{name}` key"),
            source,
        )
        .map(Some),
        None => Ok(None),
    };
    let start = script(&raw.start, "start")?;
    let stop = script(&raw.stop, "stop")?;
    let timeout_s = match &raw.timeout_s {
        Some(timeout) => integer(
            timeout,
            1..=i128::from(Scripts::MAX_TIMEOUT_S),
            "scripts.timeout_s",
            source,
        )?,
        None => Scripts::DEFAULT_TIMEOUT_S,
    };
    let restart_limit = match &raw.restart_limit {
        Some(limit) => {
            let limit = limit.get_ref();
            RestartLimit {
                count: match &limit.count {
                    Some(count) => integer(
                        count,
                        0..=i128::from(RestartLimit::MAX_COUNT),
                        "scripts.restart_limit.count",
                        source,
                    )?,
                    None => RestartLimit::DEFAULT_COUNT,
                },
                within_s: match &limit.within_s {
                    Some(within) => integer(
                        within,
                        1..=i128::from(RestartLimit::MAX_WITHIN_S),
                        "scripts.restart_limit.within_s",
                        source,
                    )?,
                    None => RestartLimit::DEFAULT_WITHIN_S,
                },
            }
        }
        None => RestartLimit::default(),
    };
    Ok(Scripts {
        start,
        stop,
        timeout_s,
        restart_limit,
    })
}
