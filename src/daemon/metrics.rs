//! The node's [`Status`] in the Prometheus text format, which `GET /metrics` answers with
//! ([`crate::web::metrics`] serves it).

use std::fmt::Display;

use herd_checkers::health::Health;
use herd_checkers::lifecycle::NodeState;
use herd_membership::wire::State;

use crate::status::Status;

/// The node's `status` in the Prometheus text exposition format 0.0.4: each metric family with
/// its `# HELP` and `# TYPE` lines, then its samples. Families without samples (no checks, no
/// other node heard) are left out.
pub fn render(status: &Status) -> String {
    let mut out = String::new();
    let snapshot = &status.membership;
    let traffic = &snapshot.traffic;
    let stats = &snapshot.stats;
    let refused = &snapshot.refused;
    let peers: Vec<_> = snapshot.nodes.iter().filter(|node| !node.local).collect();

    family(
        &mut out,
        "herd_info",
        "gauge",
        "The node, its farm and its dataplane mode; always 1.",
        vec![Sample::new(
            &[
                ("node", &status.node),
                ("farm", &status.farm),
                ("mode", &status.mode),
            ],
            1,
        )],
    );
    family(
        &mut out,
        "herd_node_state",
        "gauge",
        "The node's state: 1 for the state it is in, 0 for the others.",
        one_hot(&[], "state", &NodeState::ALL, status.state),
    );
    family(
        &mut out,
        "herd_node_state_seconds",
        "gauge",
        "How long ago the node entered its state, in seconds.",
        vec![Sample::new(&[], seconds(status.since_ms_ago.into()))],
    );
    family(
        &mut out,
        "herd_membership_state",
        "gauge",
        "The node's state in the farm, as its heartbeats say: 1 for the state it is in, 0 for \
         the others.",
        one_hot(&[], "state", &State::ALL, snapshot.state),
    );
    family(
        &mut out,
        "herd_serving",
        "gauge",
        "1 when the node serves its share (up, a member of the farm, owning buckets, its side \
         of the farm holding quorum), what /healthz answers 200 for; 0 otherwise.",
        vec![Sample::new(&[], u8::from(status.serving()))],
    );
    family(
        &mut out,
        "herd_packets_total",
        "counter",
        "Packets the dataplane saw: accepted (VIP traffic of this node's buckets), dropped (VIP \
         traffic of other nodes' buckets, or malformed), passed (not for a VIP).",
        traffic
            .by_outcome()
            .map(|(outcome, count)| Sample::new(&[("outcome", outcome)], count.packets))
            .into(),
    );
    family(
        &mut out,
        "herd_bytes_total",
        "counter",
        "Bytes of the packets the dataplane saw, whole frames, by outcome as herd_packets_total.",
        traffic
            .by_outcome()
            .map(|(outcome, count)| Sample::new(&[("outcome", outcome)], count.bytes))
            .into(),
    );
    family(
        &mut out,
        "herd_packets_shed_total",
        "counter",
        "VIP packets the kernel dropped before an AF_XDP worker saw them, its ring being full: \
         the worker could not keep up (always 0 in xdp mode).",
        vec![Sample::new(&[], traffic.shed)],
    );
    family(
        &mut out,
        "herd_checksums_completed_total",
        "counter",
        "Accepted packets whose TCP or UDP checksum the AF_XDP workers finished before handing \
         them to the stack: the sender's transmit checksum offload had left it unfinished, as a \
         veth's does by default (always 0 in the xdp mode).",
        vec![Sample::new(&[], traffic.checksums_completed)],
    );
    family(
        &mut out,
        "herd_buckets",
        "gauge",
        "The farm's bucket count.",
        vec![Sample::new(&[], snapshot.buckets)],
    );
    family(
        &mut out,
        "herd_owned_buckets",
        "gauge",
        "The buckets the current view gives this node.",
        vec![Sample::new(&[], snapshot.owned())],
    );
    family(
        &mut out,
        "herd_view_epoch",
        "gauge",
        "The epoch of the current view of the farm.",
        vec![Sample::new(&[], snapshot.epoch)],
    );
    family(
        &mut out,
        "herd_view_agreed",
        "gauge",
        "1 when every live node agreed on the current view, 0 while they do not yet.",
        vec![Sample::new(&[], u8::from(snapshot.agreed))],
    );
    family(
        &mut out,
        "herd_quorum",
        "gauge",
        "1 when this node's side holds a majority of the farm's weight (always without quorum), \
         0 when it lost it and serves nothing.",
        vec![Sample::new(&[], u8::from(snapshot.quorum))],
    );
    family(
        &mut out,
        "herd_peer_alive",
        "gauge",
        "1 when this node considers the other node alive, 0 when dead or never heard.",
        peers
            .iter()
            .map(|peer| Sample::new(&[("peer", &peer.name)], u8::from(peer.alive)))
            .collect(),
    );
    family(
        &mut out,
        "herd_peer_buckets",
        "gauge",
        "The buckets the current view gives the other node.",
        peers
            .iter()
            .map(|peer| Sample::new(&[("peer", &peer.name)], peer.buckets))
            .collect(),
    );
    family(
        &mut out,
        "herd_heartbeat_age_seconds",
        "gauge",
        "How long ago the other node's latest heartbeat arrived, in seconds; absent for a node \
         never heard.",
        peers
            .iter()
            .filter_map(|peer| {
                let ago = peer.heard_ms_ago?;
                Some(Sample::new(&[("peer", &peer.name)], seconds(ago.into())))
            })
            .collect(),
    );
    family(
        &mut out,
        "herd_heartbeat_delay_seconds",
        "gauge",
        "How long the other node's latest heartbeat took on the way, in seconds: this node's \
         wall clock at arrival less the sender's at sending, so the offset between the two \
         clocks is in it too (it may be negative).",
        peers
            .iter()
            .filter_map(|peer| {
                let delay = peer.delay_ms?;
                Some(Sample::new(&[("peer", &peer.name)], seconds(delay.into())))
            })
            .collect(),
    );
    family(
        &mut out,
        "herd_views_total",
        "counter",
        "Views of the farm this node installed.",
        vec![Sample::new(&[], stats.views)],
    );
    family(
        &mut out,
        "herd_peer_deaths_total",
        "counter",
        "Failovers: other nodes this node declared dead, their buckets taken over by the \
         survivors.",
        vec![Sample::new(&[], stats.deaths)],
    );
    family(
        &mut out,
        "herd_peer_returns_total",
        "counter",
        "Nodes declared dead that came back in the same incarnation: partitions or freezes.",
        vec![Sample::new(&[], stats.returns)],
    );
    family(
        &mut out,
        "herd_pauses_total",
        "counter",
        "Times this node found itself paused past the point of being declared dead.",
        vec![Sample::new(&[], stats.pauses)],
    );
    family(
        &mut out,
        "herd_heartbeats_sent_total",
        "counter",
        "Heartbeats this node sent.",
        vec![Sample::new(&[], stats.sent)],
    );
    family(
        &mut out,
        "herd_datagrams_refused_total",
        "counter",
        "Datagrams refused on the farm port, by reason.",
        refused
            .by_reason()
            .map(|(reason, count)| Sample::new(&[("reason", reason)], count))
            .into(),
    );
    let drain = snapshot.drain.as_ref();
    family(
        &mut out,
        "herd_draining_views",
        "gauge",
        "Views whose buckets this node still serves established connections in; 0 when it \
         drains nothing.",
        vec![Sample::new(&[], drain.map_or(0, |drain| drain.views))],
    );
    family(
        &mut out,
        "herd_drain_connections",
        "gauge",
        "Connections left in the views this node drains, at the last count; 0 when it drains \
         nothing or has not counted yet.",
        vec![Sample::new(
            &[],
            drain.and_then(|drain| drain.connections).unwrap_or(0),
        )],
    );
    family(
        &mut out,
        "herd_vip_ports_without_listener",
        "gauge",
        "VIP ports of TCP rules (one per VIP and rule) without a listening socket in herd's \
         network namespace at the last look, in the first minute after the node came up: an \
         application in another namespace, whose connections break at every join, leave or \
         drain.",
        vec![Sample::new(&[], status.unseen_listeners.len())],
    );
    family(
        &mut out,
        "herd_check_healthy",
        "gauge",
        "1 when the check is healthy, 0 when it failed or has not risen yet.",
        status
            .checks
            .iter()
            .map(|check| {
                Sample::new(
                    &[("check", &check.name), ("kind", &check.kind)],
                    u8::from(check.health == Health::Healthy),
                )
            })
            .collect(),
    );
    family(
        &mut out,
        "herd_check_health",
        "gauge",
        "The check's health: 1 for the one it is in, 0 for the others.",
        status
            .checks
            .iter()
            .flat_map(|check| {
                one_hot(
                    &[("check", &check.name)],
                    "health",
                    &Health::ALL,
                    check.health,
                )
            })
            .collect(),
    );
    family(
        &mut out,
        "herd_check_probes_total",
        "counter",
        "Probes the check made.",
        status
            .checks
            .iter()
            .map(|check| Sample::new(&[("check", &check.name)], check.probes))
            .collect(),
    );
    family(
        &mut out,
        "herd_check_failures_total",
        "counter",
        "Probes of the check that failed.",
        status
            .checks
            .iter()
            .map(|check| Sample::new(&[("check", &check.name)], check.failures))
            .collect(),
    );
    family(
        &mut out,
        "herd_check_duration_seconds",
        "gauge",
        "How long the check's last probe took, in seconds; absent before the first.",
        status
            .checks
            .iter()
            .filter_map(|check| {
                let last = check.last.as_ref()?;
                Some(Sample::new(
                    &[("check", &check.name)],
                    seconds(last.took_ms.into()),
                ))
            })
            .collect(),
    );
    family(
        &mut out,
        "herd_restarts_total",
        "counter",
        "Restarts of the application since herd started, the checks' and the operators'.",
        vec![Sample::new(&[], status.restarts.total)],
    );
    family(
        &mut out,
        "herd_restarts_recent",
        "gauge",
        "Restarts the checks caused within the restart limit's window.",
        vec![Sample::new(&[], status.restarts.recent)],
    );
    family(
        &mut out,
        "herd_restart_limit",
        "gauge",
        "The most restarts allowed within the window; one more stops the node instead.",
        vec![Sample::new(&[], status.restarts.limit)],
    );
    family(
        &mut out,
        "herd_farm_commands_total",
        "counter",
        "Farm commands (status, drain, stop, start, restart) this node received, verified and \
         carried out.",
        vec![Sample::new(&[], status.farm_commands.executed)],
    );
    family(
        &mut out,
        "herd_farm_commands_refused_total",
        "counter",
        "Farm commands this node refused unexecuted, by reason: malformed, forged (a wrong key \
         or altered), wrong_farm (another configuration), unknown_node, wrong_target, stale \
         (clocks apart or an old recording), replayed.",
        status
            .farm_commands
            .refused
            .by_reason()
            .map(|(reason, count)| Sample::new(&[("reason", reason)], count))
            .into(),
    );
    out
}

/// One sample of a metric family: its labels (`{a="x",b="y"}`, or nothing) and its value, as
/// written.
struct Sample {
    labels: String,
    value: String,
}

impl Sample {
    fn new(labels: &[(&str, &str)], value: impl Display) -> Self {
        let labels = if labels.is_empty() {
            String::new()
        } else {
            let pairs: Vec<String> = labels
                .iter()
                .map(|(name, value)| format!("{name}=\"{}\"", escape_label(value)))
                .collect();
            format!("{{{}}}", pairs.join(","))
        };
        Self {
            labels,
            value: value.to_string(),
        }
    }
}

/// A one-hot encoding of `current` among `values`: a sample each, labelled `labels` and
/// `label` with the value's name, 1 for `current` and 0 for the others.
fn one_hot<T: Copy + PartialEq + Display>(
    labels: &[(&str, &str)],
    label: &str,
    values: &[T],
    current: T,
) -> Vec<Sample> {
    values
        .iter()
        .map(|&value| {
            let name = value.to_string();
            let mut all = labels.to_vec();
            all.push((label, &name));
            Sample::new(&all, u8::from(value == current))
        })
        .collect()
}

/// Writes the family `name` of type `kind` to `out`, with its help and its samples; nothing
/// when it has no sample.
fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: Vec<Sample>) {
    if samples.is_empty() {
        return;
    }
    out.push_str(&format!("# HELP {name} {}\n", escape_help(help)));
    out.push_str(&format!("# TYPE {name} {kind}\n"));
    for sample in samples {
        out.push_str(&format!("{name}{} {}\n", sample.labels, sample.value));
    }
}

/// A label value as the format writes it: backslash, double quote and line feed escaped.
fn escape_label(value: &str) -> String {
    value
        .replace('\\', r"\\")
        .replace('"', r#"\""#)
        .replace('\n', r"\n")
}

/// A help text as the format writes it: backslash and line feed escaped.
fn escape_help(help: &str) -> String {
    help.replace('\\', r"\\").replace('\n', r"\n")
}

/// `ms` milliseconds as seconds, exactly: `1.234`, `-0.005`.
fn seconds(ms: i128) -> String {
    let sign = if ms < 0 { "-" } else { "" };
    let ms = ms.unsigned_abs();
    format!("{sign}{}.{:03}", ms / 1000, ms % 1000)
}

#[cfg(test)]
pub(crate) mod tests {
    use herd_checkers::lifecycle::Action;
    use herd_membership::inbox::Refused;
    use herd_membership::protocol::Stats;
    use herd_membership::snapshot::{DrainSnapshot, NodeSnapshot, Snapshot};
    use herd_packet::counts::{Count, Traffic};

    use super::*;
    use crate::status::{CheckStatus, FarmCommands, ProbeStatus, Restarts};

    /// A node `alpha` up and owning 40 of 64 buckets, with a peer `bravo` heard, a peer
    /// `charlie` never heard, and two checks.
    pub(crate) fn status() -> Status {
        let node = |name: &str, local: bool, alive: bool, buckets: usize| NodeSnapshot {
            name: name.into(),
            local,
            alive,
            state: alive.then_some(State::Up),
            incarnation: alive.then_some(3),
            buckets,
            heard_ms_ago: None,
            delay_ms: None,
        };
        Status {
            node: "alpha".into(),
            farm: "web".into(),
            mode: "xdp".into(),
            pid: 4242,
            state: NodeState::Up,
            reason: None,
            since_ms_ago: 61_500,
            restarts: Restarts {
                recent: 1,
                limit: 3,
                within_s: 86_400,
                total: 2,
            },
            checks: vec![
                CheckStatus {
                    name: "web".into(),
                    kind: "http".into(),
                    action: Action::Restart,
                    health: Health::Healthy,
                    last: Some(ProbeStatus {
                        ok: true,
                        error: None,
                        ms_ago: 300,
                        took_ms: 12,
                    }),
                    probes: 120,
                    failures: 3,
                },
                CheckStatus {
                    name: "gateway".into(),
                    kind: "ping".into(),
                    action: Action::Wait,
                    health: Health::Unknown,
                    last: None,
                    probes: 0,
                    failures: 0,
                },
            ],
            unseen_listeners: vec!["198.18.0.100:80".into()],
            drained: false,
            farm_commands: FarmCommands {
                executed: 6,
                refused: herd_membership::command::Refused {
                    forged: 2,
                    replayed: 1,
                    ..Default::default()
                },
            },
            membership: Snapshot {
                state: State::Up,
                incarnation: 3,
                epoch: 17,
                agreed: true,
                quorum: true,
                buckets: 64,
                nodes: vec![
                    node("alpha", true, true, 40),
                    NodeSnapshot {
                        heard_ms_ago: Some(85),
                        delay_ms: Some(-3),
                        ..node("bravo", false, true, 24)
                    },
                    node("charlie", false, false, 0),
                ],
                drain: None,
                stats: Stats {
                    views: 5,
                    deaths: 1,
                    returns: 0,
                    pauses: 0,
                    sent: 9000,
                },
                refused: Refused {
                    unauthenticated: 7,
                    ..Refused::default()
                },
                join_held: None,
                traffic: Traffic {
                    accepted: Count {
                        packets: 42,
                        bytes: 4200,
                    },
                    dropped: Count {
                        packets: 21,
                        bytes: 2100,
                    },
                    passed: Count {
                        packets: 5,
                        bytes: 300,
                    },
                    shed: 3,
                    checksums_completed: 12,
                },
                bucket_owners: Default::default(),
                draining_buckets: Default::default(),
            },
        }
    }

    /// The samples of `text`, its lines that are not comments.
    pub(crate) fn samples(text: &str) -> Vec<&str> {
        text.lines().filter(|line| !line.starts_with('#')).collect()
    }

    #[test]
    fn every_value_of_the_status_is_a_sample() {
        let text = render(&status());
        let expected = [
            r#"herd_info{node="alpha",farm="web",mode="xdp"} 1"#,
            r#"herd_node_state{state="stopped"} 0"#,
            r#"herd_node_state{state="starting"} 0"#,
            r#"herd_node_state{state="up"} 1"#,
            r#"herd_node_state{state="withdrawing"} 0"#,
            r#"herd_node_state{state="failed"} 0"#,
            "herd_node_state_seconds 61.500",
            r#"herd_membership_state{state="joining"} 0"#,
            r#"herd_membership_state{state="up"} 1"#,
            r#"herd_membership_state{state="leaving"} 0"#,
            r#"herd_membership_state{state="withdrawn"} 0"#,
            r#"herd_membership_state{state="stopped"} 0"#,
            "herd_serving 1",
            r#"herd_packets_total{outcome="accepted"} 42"#,
            r#"herd_packets_total{outcome="dropped"} 21"#,
            r#"herd_packets_total{outcome="passed"} 5"#,
            r#"herd_bytes_total{outcome="accepted"} 4200"#,
            r#"herd_bytes_total{outcome="dropped"} 2100"#,
            r#"herd_bytes_total{outcome="passed"} 300"#,
            "herd_packets_shed_total 3",
            "herd_checksums_completed_total 12",
            "herd_buckets 64",
            "herd_owned_buckets 40",
            "herd_view_epoch 17",
            "herd_view_agreed 1",
            "herd_quorum 1",
            r#"herd_peer_alive{peer="bravo"} 1"#,
            r#"herd_peer_alive{peer="charlie"} 0"#,
            r#"herd_peer_buckets{peer="bravo"} 24"#,
            r#"herd_peer_buckets{peer="charlie"} 0"#,
            r#"herd_heartbeat_age_seconds{peer="bravo"} 0.085"#,
            r#"herd_heartbeat_delay_seconds{peer="bravo"} -0.003"#,
            "herd_views_total 5",
            "herd_peer_deaths_total 1",
            "herd_peer_returns_total 0",
            "herd_pauses_total 0",
            "herd_heartbeats_sent_total 9000",
            r#"herd_datagrams_refused_total{reason="malformed"} 0"#,
            r#"herd_datagrams_refused_total{reason="unauthenticated"} 7"#,
            r#"herd_datagrams_refused_total{reason="wrong_farm"} 0"#,
            r#"herd_datagrams_refused_total{reason="unknown_node"} 0"#,
            r#"herd_datagrams_refused_total{reason="stale"} 0"#,
            r#"herd_datagrams_refused_total{reason="replayed"} 0"#,
            "herd_draining_views 0",
            "herd_drain_connections 0",
            "herd_vip_ports_without_listener 1",
            r#"herd_check_healthy{check="web",kind="http"} 1"#,
            r#"herd_check_healthy{check="gateway",kind="ping"} 0"#,
            r#"herd_check_health{check="web",health="unknown"} 0"#,
            r#"herd_check_health{check="web",health="healthy"} 1"#,
            r#"herd_check_health{check="web",health="failed"} 0"#,
            r#"herd_check_health{check="gateway",health="unknown"} 1"#,
            r#"herd_check_health{check="gateway",health="healthy"} 0"#,
            r#"herd_check_health{check="gateway",health="failed"} 0"#,
            r#"herd_check_probes_total{check="web"} 120"#,
            r#"herd_check_probes_total{check="gateway"} 0"#,
            r#"herd_check_failures_total{check="web"} 3"#,
            r#"herd_check_failures_total{check="gateway"} 0"#,
            r#"herd_check_duration_seconds{check="web"} 0.012"#,
            "herd_restarts_total 2",
            "herd_restarts_recent 1",
            "herd_restart_limit 3",
            "herd_farm_commands_total 6",
            r#"herd_farm_commands_refused_total{reason="malformed"} 0"#,
            r#"herd_farm_commands_refused_total{reason="forged"} 2"#,
            r#"herd_farm_commands_refused_total{reason="wrong_farm"} 0"#,
            r#"herd_farm_commands_refused_total{reason="unknown_node"} 0"#,
            r#"herd_farm_commands_refused_total{reason="wrong_target"} 0"#,
            r#"herd_farm_commands_refused_total{reason="stale"} 0"#,
            r#"herd_farm_commands_refused_total{reason="replayed"} 1"#,
        ];
        assert_eq!(samples(&text), expected, "{text}");
    }

    /// The names of `T`'s variants as its derived `Deserialize` has them, in declaration
    /// order: the compiler's own list of the variants, which a hand-written one can be held to.
    fn variant_names<T: serde::de::DeserializeOwned>() -> &'static [&'static str] {
        /// A deserializer that only notes the variants an enum offers it.
        struct Variants(&'static [&'static str]);

        impl<'de> serde::Deserializer<'de> for &mut Variants {
            type Error = serde::de::value::Error;

            fn deserialize_any<V: serde::de::Visitor<'de>>(
                self,
                _: V,
            ) -> Result<V::Value, Self::Error> {
                Err(serde::de::Error::custom("not an enum"))
            }

            fn deserialize_enum<V: serde::de::Visitor<'de>>(
                self,
                _: &'static str,
                variants: &'static [&'static str],
                _: V,
            ) -> Result<V::Value, Self::Error> {
                self.0 = variants;
                Err(serde::de::Error::custom("only the variants were wanted"))
            }

            serde::forward_to_deserialize_any! {
                bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
                byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map struct
                identifier ignored_any
            }
        }

        let mut variants = Variants(&[]);
        // Always an error: the deserializer gives no value.
        let _ = T::deserialize(&mut variants);
        variants.0
    }

    /// The names `values` are shown by.
    fn names<T: Display>(values: &[T]) -> Vec<String> {
        values.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn the_one_hot_families_offer_every_state_and_health() {
        assert_eq!(names(&NodeState::ALL), variant_names::<NodeState>());
        assert_eq!(names(&State::ALL), variant_names::<State>());
        assert_eq!(names(&Health::ALL), variant_names::<Health>());
    }

    #[test]
    fn every_family_has_its_help_and_type_once_before_its_samples() {
        let text = render(&status());
        let mut families: Vec<&str> = Vec::new();
        let mut lines = text.lines().peekable();
        while let Some(line) = lines.next() {
            let help = line.strip_prefix("# HELP ").unwrap_or_else(|| {
                panic!("{line:?} is not a # HELP line where a family starts\n{text}")
            });
            let (name, help) = help.split_once(' ').expect("a name and a help text");
            assert!(!help.is_empty(), "{line}");
            assert!(!families.contains(&name), "{name} twice\n{text}");
            families.push(name);
            let kind = lines.next().and_then(|line| {
                line.strip_prefix(&format!("# TYPE {name} ") as &str)
                    .map(str::to_owned)
            });
            let kind = kind.unwrap_or_else(|| panic!("no # TYPE after {line:?}"));
            assert!(kind == "counter" || kind == "gauge", "{name}: {kind}");
            // Counters, and only they, are named as such.
            assert_eq!(kind == "counter", name.ends_with("_total"), "{name}");
            let mut count = 0;
            while let Some(sample) = lines.next_if(|line| !line.starts_with('#')) {
                let rest = sample.strip_prefix(name).expect("the family's name");
                assert!(rest.starts_with(' ') || rest.starts_with('{'), "{sample}");
                count += 1;
            }
            assert!(count > 0, "{name} has no sample");
        }
        assert!(families.contains(&"herd_packets_total"));
        assert!(text.contains(
            "# HELP herd_heartbeat_delay_seconds How long the other node's latest heartbeat \
             took on the way, in seconds: this node's wall clock at arrival less the sender's at \
             sending, so the offset between the two clocks is in it too (it may be negative).\n\
             # TYPE herd_heartbeat_delay_seconds gauge\n"
        ));
        assert!(text.contains("# TYPE herd_packets_total counter\n"));
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn what_is_absent_or_under_way_shows() {
        let mut status = status();
        status.state = NodeState::Withdrawing;
        status.checks.clear();
        status.membership.nodes.truncate(1);
        status.membership.drain = Some(DrainSnapshot {
            views: 2,
            connections: Some(31),
        });
        let text = render(&status);
        for line in [
            "herd_serving 0",
            r#"herd_node_state{state="up"} 0"#,
            r#"herd_node_state{state="withdrawing"} 1"#,
            "herd_draining_views 2",
            "herd_drain_connections 31",
        ] {
            assert!(samples(&text).contains(&line), "no {line:?} in\n{text}");
        }
        // Families without samples are left out whole, their HELP and TYPE too.
        for family in [
            "herd_peer_alive",
            "herd_heartbeat_age_seconds",
            "herd_check_",
        ] {
            assert!(!text.contains(family), "{family} in\n{text}");
        }
        status.membership.drain = Some(DrainSnapshot {
            views: 1,
            connections: None,
        });
        assert!(samples(&render(&status)).contains(&"herd_drain_connections 0"));
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        let mut status = status();
        status.node = "a\\b".into();
        status.farm = "say \"hi\"".into();
        status.mode = "two\nlines".into();
        let text = render(&status);
        assert!(
            text.contains(r#"herd_info{node="a\\b",farm="say \"hi\"",mode="two\nlines"} 1"#),
            "{text}"
        );
        assert_eq!(escape_label(r#"\"" "#), r#"\\\"\" "#);
        assert_eq!(escape_help("a\\b\nc\"d"), "a\\\\b\\nc\"d");
    }

    #[test]
    fn milliseconds_are_written_as_exact_seconds() {
        assert_eq!(seconds(0), "0.000");
        assert_eq!(seconds(5), "0.005");
        assert_eq!(seconds(-5), "-0.005");
        assert_eq!(seconds(61_500), "61.500");
        assert_eq!(seconds(-1_234), "-1.234");
        assert_eq!(
            seconds(u64::MAX.into()),
            format!("{}.{:03}", u64::MAX / 1000, u64::MAX % 1000)
        );
    }
}
