//! The heartbeat settings each farm size runs at, as its configuration file would give them:
//! the keys asked for in its `[membership]` table, the farm's default for the others. The
//! configuration crate resolves and checks them itself, so that the measurement cannot drift
//! from what `herd run` would do with the same file.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::anyhow;
use herd_config::{DataplaneMode, FarmConfig, Membership, Protocol};
use herd_testbed::address::node4;
use herd_testbed::config::FarmToml;

use super::farm;

/// The membership settings of one farm size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// The settings, as the configuration gives them.
    pub membership: Membership,
    /// Whether they are the default of a farm of this size ([`Membership::default_for`]).
    pub default: bool,
}

impl Timing {
    /// The settings of a farm of `nodes` nodes whose `[membership]` table holds only the keys
    /// given: parsed and checked by the configuration crate. A value it refuses gives its
    /// error, after the options that set it.
    pub fn resolve(
        nodes: usize,
        heartbeat_ms: Option<u32>,
        dead_after_ms: Option<u32>,
    ) -> anyhow::Result<Timing> {
        let mut table = String::new();
        let mut options = Vec::new();
        if let Some(heartbeat_ms) = heartbeat_ms {
            let _ = writeln!(table, "heartbeat_ms = {heartbeat_ms}");
            options.push(format!("--heartbeat-ms {heartbeat_ms}"));
        }
        if let Some(dead_after_ms) = dead_after_ms {
            let _ = writeln!(table, "dead_after_ms = {dead_after_ms}");
            options.push(format!("--dead-after-ms {dead_after_ms}"));
        }
        let mut config = (0..nodes)
            .fold(
                FarmToml::new("herd-perf-membership", DataplaneMode::Xdp),
                |config, node| config.node(&farm::name(node), node4(node)),
            )
            .buckets(herd_config::Farm::DEFAULT_BUCKETS)
            // A farm's file must balance something; which rule does not touch the membership.
            .rule(Protocol::Udp, &[7], None);
        if !table.is_empty() {
            config = config.tables(&format!("[membership]\n{table}"));
        }
        let file = format!("the configuration of a farm of {nodes} nodes");
        let membership = FarmConfig::parse(&config.text(), Path::new(&file))
            .map_err(|error| {
                if options.is_empty() {
                    anyhow!("{error}")
                } else {
                    anyhow!("{}: {error}", options.join(" "))
                }
            })?
            .membership;
        Ok(Timing {
            membership,
            default: membership == Membership::default_for(nodes),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The heartbeat period and dead_after a farm of `nodes` resolves to, and whether that is
    /// its default.
    fn resolved(
        nodes: usize,
        heartbeat_ms: Option<u32>,
        dead_after_ms: Option<u32>,
    ) -> (u32, u32, bool) {
        let timing = Timing::resolve(nodes, heartbeat_ms, dead_after_ms)
            .unwrap_or_else(|error| panic!("{nodes} nodes: {error:#}"));
        (
            timing.membership.heartbeat_ms,
            timing.membership.dead_after_ms,
            timing.default,
        )
    }

    #[test]
    fn each_farm_size_defaults_to_its_own_settings() {
        assert_eq!(resolved(3, None, None), (40, 160, true));
        assert_eq!(resolved(16, None, None), (50, 200, true));
        assert_eq!(resolved(64, None, None), (200, 800, true));
        let timing = Timing::resolve(64, None, None).unwrap();
        assert_eq!(timing.membership, Membership::default_for(64));
    }

    #[test]
    fn a_key_given_is_kept_and_the_other_is_the_farms_default() {
        assert_eq!(resolved(3, Some(20), Some(80)), (20, 80, false));
        assert_eq!(resolved(64, Some(20), Some(80)), (20, 80, false));
        assert_eq!(resolved(64, Some(50), None), (50, 800, false));
        assert_eq!(resolved(64, None, Some(600)), (200, 600, false));
        assert_eq!(resolved(3, None, Some(600)), (40, 600, false));
        // The farm's own default, given in full, is still its default.
        assert_eq!(resolved(64, Some(200), Some(800)), (200, 800, true));
    }

    #[test]
    fn a_bad_value_is_refused_with_the_options_that_set_it() {
        let error = |nodes, heartbeat_ms, dead_after_ms| {
            format!(
                "{:#}",
                Timing::resolve(nodes, heartbeat_ms, dead_after_ms).unwrap_err()
            )
        };
        let text = error(3, Some(20), Some(59));
        assert!(
            text.starts_with("--heartbeat-ms 20 --dead-after-ms 59: ") && text.contains("3 × 20"),
            "{text}"
        );
        let text = error(3, Some(5), None);
        assert!(
            text.starts_with("--heartbeat-ms 5: ") && text.contains("heartbeat_ms"),
            "{text}"
        );
        let text = error(3, None, Some(600_001));
        assert!(
            text.starts_with("--dead-after-ms 600001: ") && text.contains("600000"),
            "{text}"
        );
        // 500 ms is enough at 3 nodes' 40 ms period, not at 64 nodes' 200 ms.
        assert_eq!(resolved(3, None, Some(500)), (40, 500, false));
        let text = error(64, None, Some(500));
        assert!(
            text.starts_with("--dead-after-ms 500: ") && text.contains("64 nodes"),
            "{text}"
        );
    }
}
