//! The `[membership]` table.

use toml::Spanned;

use super::{integer, invalid};
use crate::locate::Source;
use crate::raw::RawMembership;
use crate::{ConfigError, Membership, ValueError};

/// The heartbeat settings; [`Membership::default_for`] the farm's `nodes` where the file
/// leaves them out. `quorum` needs enough nodes too.
pub(super) fn check_membership(
    membership: Option<&Spanned<RawMembership>>,
    nodes: usize,
    source: &Source<'_>,
) -> Result<Membership, ConfigError> {
    let defaults = Membership::default_for(nodes);
    let Some(membership) = membership else {
        return Ok(defaults);
    };
    let raw = membership.get_ref();
    let heartbeat_ms = match &raw.heartbeat_ms {
        Some(heartbeat) => integer(
            heartbeat,
            i128::from(Membership::MIN_HEARTBEAT_MS)..=i128::from(Membership::MAX_HEARTBEAT_MS),
            "membership.heartbeat_ms",
            source,
        )?,
        None => defaults.heartbeat_ms,
    };
    let dead_after_ms = check_dead_after(raw, heartbeat_ms, defaults.dead_after_ms, source)?;
    let drain_s = match &raw.drain_s {
        Some(drain) => integer(
            drain,
            0..=i128::from(Membership::MAX_DRAIN_S),
            "membership.drain_s",
            source,
        )?,
        None => Membership::DEFAULT_DRAIN_S,
    };
    let quorum = match &raw.quorum {
        Some(quorum) if *quorum.get_ref() && nodes < Membership::QUORUM_MIN_NODES => {
            let error = ValueError::new(
                format!(
                    "`true` needs at least {} nodes, and the farm has {nodes}",
                    Membership::QUORUM_MIN_NODES
                ),
                format!(
                    "`false` for a farm of fewer than {} nodes, where the loss of one node could \
                     leave no side with a majority and stop the whole farm",
                    Membership::QUORUM_MIN_NODES
                ),
            );
            return Err(invalid(source, quorum.span(), "membership.quorum", error));
        }
        Some(quorum) => *quorum.get_ref(),
        None => false,
    };
    Ok(Membership {
        heartbeat_ms,
        dead_after_ms,
        drain_s,
        quorum,
    })
}

/// Why `dead_after_ms` spans several heartbeats, for messages.
fn missed_heartbeats() -> String {
    format!(
        "so that a node is declared dead only after {} heartbeats are missed",
        Membership::DEAD_AFTER_HEARTBEATS
    )
}

/// `dead_after_ms`, which must span [`Membership::DEAD_AFTER_HEARTBEATS`] heartbeats of
/// `heartbeat_ms` (already checked), and is `default` when not given. The error is on the key
/// the file sets: `dead_after_ms` when it is given, else `heartbeat_ms`, whose period is too
/// long for the default.
fn check_dead_after(
    raw: &RawMembership,
    heartbeat_ms: u32,
    default: u32,
    source: &Source<'_>,
) -> Result<u32, ConfigError> {
    const KEY: &str = "membership.dead_after_ms";
    let heartbeats = Membership::DEAD_AFTER_HEARTBEATS;
    // At most 3 × 10000: no overflow.
    let shortest = heartbeats * heartbeat_ms;
    match (&raw.dead_after_ms, &raw.heartbeat_ms) {
        (Some(dead_after), heartbeat) if dead_after.get_ref().0 < i128::from(shortest) => {
            let default = if heartbeat.is_none() {
                " (the default)"
            } else {
                ""
            };
            let error = ValueError::new(
                format!(
                    "{} is less than {heartbeats} × heartbeat_ms = {heartbeats} × {heartbeat_ms}{default} = {shortest}",
                    dead_after.get_ref().0
                ),
                format!(
                    "an integer from {shortest} to {}, {}",
                    Membership::MAX_DEAD_AFTER_MS,
                    missed_heartbeats()
                ),
            );
            Err(invalid(source, dead_after.span(), KEY, error))
        }
        (Some(dead_after), _) => integer(
            dead_after,
            i128::from(shortest)..=i128::from(Membership::MAX_DEAD_AFTER_MS),
            KEY,
            source,
        ),
        (None, Some(heartbeat)) if default < shortest => {
            let error = ValueError::new(
                format!(
                    "{heartbeats} × {heartbeat_ms} = {shortest} is more than dead_after_ms = \
                     {default} (the default)"
                ),
                format!(
                    "an integer from {} to {}, or dead_after_ms set to at least {shortest}, {}",
                    Membership::MIN_HEARTBEAT_MS,
                    default / heartbeats,
                    missed_heartbeats()
                ),
            );
            Err(invalid(
                source,
                heartbeat.span(),
                "membership.heartbeat_ms",
                error,
            ))
        }
        (None, _) => Ok(default),
    }
}
