//! The application's start and stop scripts, run with what they need to know in their
//! environment: `HERD_NODE`, `HERD_FARM`, `HERD_VIPS` (space-separated), `HERD_SCRIPT` (`start`
//! or `stop`) and `HERD_REASON` (`start`, `restart` or `stop`). A script that is not configured
//! succeeds at once.

use std::net::IpAddr;
use std::time::Duration;

use crate::lifecycle::{Reason, Script};
use crate::probe::{self, Finished};

/// The node's scripts.
#[derive(Clone, Debug)]
pub struct Scripts {
    start: Option<String>,
    stop: Option<String>,
    timeout: Duration,
    env: Vec<(&'static str, String)>,
}

impl Scripts {
    /// The scripts of `config`, for node `node` of farm `farm` with these VIPs.
    pub fn new(config: &herd_config::Scripts, node: &str, farm: &str, vips: &[IpAddr]) -> Self {
        let vips: Vec<String> = vips.iter().map(IpAddr::to_string).collect();
        Self {
            start: config.start.clone(),
            stop: config.stop.clone(),
            timeout: Duration::from_secs(config.timeout_s.into()),
            env: vec![
                ("HERD_NODE", node.to_owned()),
                ("HERD_FARM", farm.to_owned()),
                ("HERD_VIPS", vips.join(" ")),
            ],
        }
    }

    /// Runs `script` for `reason`, handing each line of its output to `line`; the whole
    /// process group is killed at the timeout, which counts as a failure.
    pub fn run(
        &self,
        script: Script,
        reason: Reason,
        line: impl FnMut(&str),
    ) -> std::io::Result<Finished> {
        let command = match script {
            Script::Start => &self.start,
            Script::Stop => &self.stop,
        };
        let Some(command) = command else {
            return Ok(Finished {
                success: true,
                how: format!("no {script} script"),
            });
        };
        let (name, reason) = (script.to_string(), reason.to_string());
        let mut env: Vec<(&str, &str)> = self.env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        env.extend([
            ("HERD_SCRIPT", name.as_str()),
            ("HERD_REASON", reason.as_str()),
        ]);
        probe::run(command, &env, self.timeout, line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scripts(start: Option<&str>, timeout_s: u32) -> Scripts {
        let config = herd_config::Scripts {
            start: start.map(str::to_owned),
            stop: None,
            timeout_s,
            restart_limit: Default::default(),
        };
        let vips = [
            "198.18.0.100".parse().unwrap(),
            "2001:2::100".parse().unwrap(),
        ];
        Scripts::new(&config, "alpha", "web", &vips)
    }

    #[test]
    fn a_script_sees_the_node_the_farm_the_vips_and_the_reason() {
        let scripts = scripts(
            Some("echo \"$HERD_NODE $HERD_FARM $HERD_SCRIPT $HERD_REASON [$HERD_VIPS]\""),
            5,
        );
        let mut lines = Vec::new();
        let finished = scripts
            .run(Script::Start, Reason::Restart, |l| lines.push(l.to_owned()))
            .unwrap();
        assert!(finished.success);
        assert_eq!(
            lines,
            ["alpha web start restart [198.18.0.100 2001:2::100]"]
        );
    }

    #[test]
    fn a_missing_script_succeeds_and_a_slow_one_fails() {
        let none = scripts(None, 5)
            .run(Script::Stop, Reason::Stop, |_| {})
            .unwrap();
        assert!(none.success);
        assert_eq!(none.how, "no stop script");
        let slow = scripts(Some("sleep 30"), 1)
            .run(Script::Start, Reason::Start, |_| {})
            .unwrap();
        assert!(!slow.success);
        assert!(slow.how.starts_with("timed out"), "{}", slow.how);
    }
}
