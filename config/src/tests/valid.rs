//! Valid configurations: values, defaults and the lookup API.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use super::{ip, parse, BASE};
use crate::{
    Admin, Affinity, Check, CheckAction, CheckKind, Console, Dataplane, DataplaneMode, Farm,
    FarmConfig, MacMode, Membership, Node, PortRange, ProcessMatcher, Protocol, RestartLimit, Rule,
    Scripts, ZeroCopy,
};

fn ports(list: &[(u16, u16)]) -> Vec<PortRange> {
    list.iter()
        .map(|&(first, last)| PortRange { first, last })
        .collect()
}

#[test]
fn example_file_parses_to_what_it_says() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/farm.toml");
    let config = FarmConfig::load(&path).unwrap_or_else(|error| panic!("{error}"));
    let expected = FarmConfig {
        farm: Farm {
            name: "web".to_owned(),
            vips: vec![ip("198.18.0.100"), ip("2001:db8::100")],
            interface: Some("eth0".to_owned()),
            buckets: 4096,
            hash_key: [
                0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd,
                0xee, 0xff,
            ],
            port: 7400,
            announce_interval_s: 10,
            auth_key_file: PathBuf::from("/etc/herd/farm.key"),
            mac: MacMode::Unicast,
        },
        nodes: ["alpha", "bravo", "charlie"]
            .iter()
            .zip(1..)
            .map(|(name, last)| Node {
                name: (*name).to_owned(),
                address: IpAddr::from([198, 18, 0, last]),
                weight: 1,
                interface: None,
            })
            .collect(),
        rules: vec![
            Rule {
                protocol: Protocol::Tcp,
                ports: ports(&[(80, 80), (443, 443)]),
                affinity: Affinity::ClientIp,
            },
            Rule {
                protocol: Protocol::Udp,
                ports: ports(&[(5000, 5099)]),
                affinity: Affinity::ClientIpPort,
            },
            Rule {
                protocol: Protocol::Icmp,
                ports: vec![PortRange::ALL],
                affinity: Affinity::ClientIp,
            },
        ],
        membership: Membership {
            heartbeat_ms: 40,
            dead_after_ms: 160,
            drain_s: 30,
            quorum: false,
        },
        dataplane: Dataplane {
            mode: DataplaneMode::Xdp,
            cores: vec![],
            zero_copy: ZeroCopy::Auto,
            batch: 64,
        },
        // The example's checks and scripts are commented out.
        checks: vec![],
        scripts: Scripts::default(),
        admin: Admin {
            metrics: None,
            console: None,
        },
    };
    assert_eq!(config, expected);
}

#[test]
fn optional_keys_take_their_defaults() {
    let text = r#"
        [farm]
        name = "web"
        vip = ["198.18.0.100"]
        hash_key = "00112233445566778899AABBCCDDEEFF"

        [[node]]
        name = "alpha"
        address = "198.18.0.1"
        interface = "eth1"

        [[rule]]
        protocol = "tcp"
    "#;
    let config = parse(text).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(config.farm.interface, None);
    assert_eq!(config.farm.buckets, 4096);
    assert_eq!(config.farm.port, 7400);
    assert_eq!(config.farm.auth_key_file, Path::new("/etc/herd/farm.key"));
    assert_eq!(config.farm.hash_key[15], 0xff, "upper-case hex is accepted");
    assert_eq!(config.nodes[0].weight, 1);
    assert_eq!(
        config.rules,
        vec![Rule {
            protocol: Protocol::Tcp,
            ports: vec![PortRange::ALL],
            affinity: Affinity::ClientIp,
        }]
    );
}

#[test]
fn without_a_membership_table_the_defaults_apply() {
    let defaults = Membership {
        heartbeat_ms: 40,
        dead_after_ms: 160,
        drain_s: 30,
        quorum: false,
    };
    assert_eq!(Membership::default(), defaults);
    let config = parse(BASE).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(config.membership, defaults);
    for table in ["[membership]\n", "membership = {}\n"] {
        // Before BASE, where an inline table is at the top level.
        let config = parse(&format!("{table}{BASE}")).unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(config.membership, defaults, "{table}");
    }
}

/// `BASE` with a third node, enough for `quorum`.
fn with_charlie() -> String {
    format!("{BASE}\n[[node]]\nname = \"charlie\"\naddress = \"198.18.0.3\"\n")
}

#[test]
fn every_membership_key_is_read() {
    let text = format!(
        "{}\n[membership]\nheartbeat_ms = 50\ndead_after_ms = 1000\ndrain_s = 0\nquorum = true\n",
        with_charlie()
    );
    let config = parse(&text).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(
        config.membership,
        Membership {
            heartbeat_ms: 50,
            dead_after_ms: 1000,
            drain_s: 0,
            quorum: true,
        }
    );
    let text = format!(
        "membership = {{ heartbeat_ms = 200, dead_after_ms = 600, drain_s = 3600, quorum = false }}\n{BASE}"
    );
    let config = parse(&text).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(
        config.membership,
        Membership {
            heartbeat_ms: 200,
            dead_after_ms: 600,
            drain_s: 3600,
            quorum: false,
        }
    );
    // Each key alone leaves the others at their defaults.
    for (body, expected) in [
        (
            "heartbeat_ms = 20",
            Membership {
                heartbeat_ms: 20,
                ..Membership::default()
            },
        ),
        (
            "dead_after_ms = 2000",
            Membership {
                dead_after_ms: 2000,
                ..Membership::default()
            },
        ),
        (
            "drain_s = 5",
            Membership {
                drain_s: 5,
                ..Membership::default()
            },
        ),
    ] {
        let config = parse(&format!("{BASE}\n[membership]\n{body}\n"))
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(config.membership, expected, "{body}");
    }
}

/// BASE with `extra` more nodes (charlie-1, charlie-2, ...) and then `table`.
fn with_nodes(extra: usize, table: &str) -> String {
    let nodes: String = (1..=extra)
        .map(|n| format!("[[node]]\nname = \"charlie-{n}\"\naddress = \"198.19.0.{n}\"\n"))
        .collect();
    format!("{BASE}\n{nodes}\n{table}")
}

#[test]
fn a_larger_farm_defaults_to_a_longer_heartbeat_period() {
    // BASE has two nodes.
    for (nodes, expected) in [
        (2, (40, 160)),
        (13, (40, 160)),
        (14, (50, 200)),
        (64, (200, 800)),
    ] {
        let config = parse(&with_nodes(nodes - 2, "")).unwrap_or_else(|error| panic!("{error}"));
        let membership = config.membership;
        assert_eq!(
            (membership.heartbeat_ms, membership.dead_after_ms),
            expected,
            "{nodes} nodes"
        );
        assert_eq!(membership, Membership::default_for(nodes));
        let peers = u32::try_from(nodes - 1).unwrap();
        assert!(
            peers * 1000 / membership.heartbeat_ms <= Membership::DEFAULT_HEARTBEATS_PER_S,
            "{nodes} nodes"
        );
    }
    // A key left out takes the farm's default; one given is kept.
    let config = parse(&with_nodes(62, "[membership]\nheartbeat_ms = 50\n")).unwrap();
    assert_eq!(
        (
            config.membership.heartbeat_ms,
            config.membership.dead_after_ms
        ),
        (50, 800)
    );
    let config = parse(&with_nodes(62, "[membership]\ndead_after_ms = 600\n")).unwrap();
    assert_eq!(
        (
            config.membership.heartbeat_ms,
            config.membership.dead_after_ms
        ),
        (200, 600)
    );
    let error = parse(&with_nodes(62, "[membership]\ndead_after_ms = 500\n")).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("500 is less than 3 × heartbeat_ms = 3 × 200 (the default) = 600"),
        "{error}"
    );
}

#[test]
fn membership_limits_are_accepted() {
    let cases = [
        // The shortest heartbeat, and a node dead after exactly three of them.
        ("heartbeat_ms = 10\ndead_after_ms = 30", (10, 30)),
        (
            "heartbeat_ms = 10000\ndead_after_ms = 30000",
            (10_000, 30_000),
        ),
        (
            "heartbeat_ms = 10000\ndead_after_ms = 600000",
            (10_000, 600_000),
        ),
        ("dead_after_ms = 300", (40, 300)),
        // The longest heartbeat the default dead_after_ms allows: 3 × 53 = 159.
        ("heartbeat_ms = 53", (53, 160)),
    ];
    for (body, (heartbeat_ms, dead_after_ms)) in cases {
        let config = parse(&format!("{BASE}\n[membership]\n{body}\n"))
            .unwrap_or_else(|error| panic!("{error}\n{body}"));
        assert_eq!(
            (
                config.membership.heartbeat_ms,
                config.membership.dead_after_ms
            ),
            (heartbeat_ms, dead_after_ms),
            "{body}"
        );
    }
    // quorum = false needs no particular number of nodes; true needs three.
    let config = parse(&format!("{BASE}\n[membership]\nquorum = false\n"))
        .unwrap_or_else(|error| panic!("{error}"));
    assert!(!config.membership.quorum);
    let config = parse(&format!(
        "{}\n[membership]\nquorum = true\n",
        with_charlie()
    ))
    .unwrap_or_else(|error| panic!("{error}"));
    assert!(config.membership.quorum);
    assert_eq!(config.nodes.len(), Membership::QUORUM_MIN_NODES);
}

#[test]
fn without_a_dataplane_table_the_defaults_apply() {
    let defaults = Dataplane {
        mode: DataplaneMode::Xdp,
        cores: vec![],
        zero_copy: ZeroCopy::Auto,
        batch: 64,
    };
    assert_eq!(Dataplane::default(), defaults);
    let config = parse(BASE).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(config.dataplane, defaults);
    for table in [
        "[dataplane]\n",
        "dataplane = {}\n",
        "[dataplane]\ncores = []\n",
    ] {
        // Before BASE, where an inline table is at the top level.
        let config = parse(&format!("{table}{BASE}")).unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(config.dataplane, defaults, "{table}");
    }
}

#[test]
fn every_dataplane_key_is_read() {
    let text = format!(
        "{BASE}\n[dataplane]\nmode = \"xdp\"\ncores = [3, 1, 1023, 0]\nzero_copy = \"off\"\nbatch = 1024\n"
    );
    let config = parse(&text).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(
        config.dataplane,
        Dataplane {
            mode: DataplaneMode::Xdp,
            cores: vec![3, 1, 1023, 0],
            zero_copy: ZeroCopy::Off,
            batch: 1024,
        },
        "cores keep their file order"
    );
    let text = format!("dataplane = {{ mode = \"afxdp\", zero_copy = \"on\", batch = 1 }}\n{BASE}");
    let config = parse(&text).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(
        config.dataplane,
        Dataplane {
            mode: DataplaneMode::Afxdp,
            cores: vec![],
            zero_copy: ZeroCopy::On,
            batch: 1,
        }
    );
    // Each key alone leaves the others at their defaults.
    let config = parse(&format!("{BASE}\n[dataplane]\nbatch = 256\n"))
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(
        config.dataplane,
        Dataplane {
            batch: 256,
            ..Dataplane::default()
        }
    );
}

#[test]
fn inline_tables_and_limits_are_accepted() {
    let mut text = String::from(
        "farm = { name = \"a.B_9-z\", vip = [\"2001:db8::1\"], hash_key = \"00112233445566778899aabbccddeeff\", \
         buckets = 65536, port = 65535, auth_key_file = \"farm.key\", interface = \"bond0.100\" }\n\
         rule = [{ protocol = \"udp\", ports = [\"1-65535\", \"*\"], affinity = \"client-ip-port\" }]\n",
    );
    for i in 0..64 {
        text.push_str(&format!(
            "[[node]]\nname = \"n{i}\"\naddress = \"10.0.0.{i}\"\nweight = {}\n",
            i * 15
        ));
    }
    let config = parse(&text).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(config.farm.buckets, 65536);
    assert_eq!(config.farm.port, 65535);
    assert_eq!(config.nodes.len(), 64);
    assert_eq!(config.nodes[0].weight, 0);
    assert_eq!(config.nodes[63].weight, 945);
    assert_eq!(config.interface_of(63), "bond0.100");
}

#[test]
fn overlapping_rules_with_the_same_affinity_are_allowed() {
    let text = format!("{BASE}\n[[rule]]\nprotocol = \"tcp\"\nports = [\"443-500\"]\n");
    let config = parse(&text).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(config.rules.len(), 3);
    // Other protocols, and disjoint ports with another affinity, do not conflict either.
    let text = format!(
        "{BASE}\n[[rule]]\nprotocol = \"tcp\"\nports = [\"444-7999\"]\naffinity = \"client-ip-port\"\n\
         [[rule]]\nprotocol = \"icmp\"\nports = [\"*\"]\naffinity = \"client-ip-port\"\n"
    );
    assert!(parse(&text).is_ok(), "{:?}", parse(&text));
}

#[test]
fn lookups() {
    let config = parse(&BASE.replacen(
        "address = \"198.18.0.2\"",
        "address = \"198.18.0.2\"\ninterface = \"eth1\"",
        1,
    ))
    .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(config.node_index("alpha"), Some(0));
    assert_eq!(config.node_index("bravo"), Some(1));
    assert_eq!(config.node_index("charlie"), None);
    assert_eq!(config.interface_of(0), "eth0");
    assert_eq!(config.interface_of(1), "eth1");

    let tcp = &config.rules[0];
    assert_eq!(config.rule_for(Protocol::Tcp, 443), Some(tcp));
    assert_eq!(config.rule_for(Protocol::Tcp, 8050), Some(tcp));
    assert_eq!(config.rule_for(Protocol::Tcp, 22), None);
    assert_eq!(config.rule_for(Protocol::Udp, 22), Some(&config.rules[1]));
    assert_eq!(config.rule_for(Protocol::Icmp, 0), None);
    assert!(tcp.matches(Protocol::Tcp, 80) && !tcp.matches(Protocol::Udp, 80));
}

#[test]
fn first_matching_rule_wins() {
    let text = format!("{BASE}\n[[rule]]\nprotocol = \"tcp\"\nports = [\"22\", \"80\"]\n");
    let config = parse(&text).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(config.rule_for(Protocol::Tcp, 80), Some(&config.rules[0]));
    assert_eq!(config.rule_for(Protocol::Tcp, 22), Some(&config.rules[2]));
}

#[test]
fn enums_display_and_parse_their_file_spelling() {
    for protocol in [Protocol::Tcp, Protocol::Udp, Protocol::Icmp] {
        assert_eq!(protocol.to_string().parse(), Ok(protocol));
    }
    for affinity in [Affinity::ClientIp, Affinity::ClientIpPort] {
        assert_eq!(affinity.to_string().parse(), Ok(affinity));
    }
    for mode in [DataplaneMode::Afxdp, DataplaneMode::Xdp] {
        assert_eq!(mode.to_string().parse(), Ok(mode));
    }
    for zero_copy in [ZeroCopy::Auto, ZeroCopy::On, ZeroCopy::Off] {
        assert_eq!(zero_copy.to_string().parse(), Ok(zero_copy));
    }
    for action in [
        CheckAction::Restart,
        CheckAction::Stop,
        CheckAction::Wait,
        CheckAction::Log,
    ] {
        assert_eq!(action.to_string().parse(), Ok(action));
    }
    assert_eq!(CheckAction::default(), CheckAction::Restart);
    assert_eq!(CheckAction::Wait.to_string(), "wait");
    assert_eq!(
        "Restart"
            .parse::<CheckAction>()
            .map_err(|error| error.to_string()),
        Err(
            "`Restart` is not a check action; expected `restart`, `stop`, `wait` or `log`"
                .to_owned()
        )
    );
    assert_eq!(Protocol::Tcp.to_string(), "tcp");
    assert_eq!(DataplaneMode::Afxdp.to_string(), "afxdp");
    assert_eq!(ZeroCopy::Off.to_string(), "off");
    assert_eq!(
        "AFXDP"
            .parse::<DataplaneMode>()
            .map_err(|error| error.to_string()),
        Err("`AFXDP` is not a dataplane mode; expected `afxdp` or `xdp`".to_owned())
    );
    assert_eq!(
        "yes".parse::<ZeroCopy>().map_err(|error| error.to_string()),
        Err("`yes` is not a zero-copy setting; expected `auto`, `on` or `off`".to_owned())
    );
    assert_eq!(Affinity::ClientIpPort.to_string(), "client-ip-port");
    let error = "TCP".parse::<Protocol>().expect_err("case matters");
    assert_eq!(
        error.to_string(),
        "`TCP` is not a protocol; expected `tcp`, `udp` or `icmp`"
    );
    assert!("sticky".parse::<Affinity>().is_err());
}

// Checks and scripts.

/// `BASE` followed by `text` (`[[check]]` entries, a `[scripts]` table), parsed.
fn with(text: &str) -> FarmConfig {
    let text = format!("{BASE}\n{text}");
    parse(&text).unwrap_or_else(|error| panic!("{error}\n{text}"))
}

#[test]
fn without_checks_or_scripts_there_are_none_and_the_defaults_apply() {
    let config = parse(BASE).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(config.checks, vec![]);
    let defaults = Scripts {
        start: None,
        stop: None,
        timeout_s: 60,
        restart_limit: RestartLimit {
            count: 3,
            within_s: 86400,
        },
    };
    assert_eq!(Scripts::default(), defaults);
    assert_eq!(RestartLimit::default(), defaults.restart_limit);
    assert_eq!(config.scripts, defaults);
    for text in [
        "[scripts]\n",
        "scripts = {}\n",
        "[scripts]\nrestart_limit = {}\n",
        "[scripts.restart_limit]\n",
        "check = []\n",
    ] {
        let config = parse(&format!("{text}{BASE}")).unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(config.scripts, defaults, "{text}");
        assert_eq!(config.checks, vec![], "{text}");
    }
}

#[test]
fn a_check_takes_the_defaults_of_every_key_it_does_not_set() {
    let config = with("[[check]]\nname = \"up\"\nkind = \"address\"\n");
    assert_eq!(
        config.checks,
        vec![Check {
            name: "up".to_owned(),
            kind: CheckKind::Address,
            interval_ms: 1000,
            timeout_ms: 1000,
            fall: 3,
            rise: 2,
            action: CheckAction::Restart,
        }]
    );
    assert_eq!(
        (
            Check::DEFAULT_INTERVAL_MS,
            Check::DEFAULT_TIMEOUT_MS,
            Check::DEFAULT_FALL,
            Check::DEFAULT_RISE
        ),
        (1000, 1000, 3, 2)
    );
    let config = with(
        "[[check]]\nname = \"web\"\nkind = \"http\"\nurl = \"http://127.0.0.1/\"\n\
         [[check]]\nname = \"nginx\"\nkind = \"process\"\nprocess = \"nginx\"\n\
         [[check]]\nname = \"link\"\nkind = \"interface\"\n",
    );
    let kinds: Vec<&CheckKind> = config.checks.iter().map(|check| &check.kind).collect();
    assert_eq!(
        kinds,
        [
            &CheckKind::Http {
                url: "http://127.0.0.1/".to_owned(),
                status: (200, 399),
                body: None,
            },
            &CheckKind::Process {
                matcher: ProcessMatcher::Name("nginx".to_owned()),
                at_least: 1,
                at_most: None,
            },
            &CheckKind::Interface { interface: None },
        ]
    );
}

/// One check of every kind, every key set, with what it parses to.
const EVERY_KIND: &str = r#"
[[check]]
name = "port"
kind = "tcp"
host = "127.0.0.1"
port = 8080
interval_ms = 500
timeout_ms = 200
fall = 5
rise = 4
action = "stop"

[[check]]
name = "health"
kind = "http"
url = "http://[::1]:8080/health?deep=1"
status = "200"
body = "OK"
action = "restart"

[[check]]
name = "workers"
kind = "process"
command = "^php-fpm: pool (www|api)$"
at_least = 2
at_most = 64
action = "log"

[[check]]
name = "master"
kind = "process"
process = "php-fpm"

[[check]]
name = "gateway"
kind = "ping"
address = "2001:db8::ffff"
action = "wait"

[[check]]
name = "uplink"
kind = "interface"
interface = "bond0.100"
action = "wait"

[[check]]
name = "vips"
kind = "address"

[[check]]
name = "db"
kind = "command"
run = "pg_isready -q -h /run/postgresql"
interval_ms = 3600000
timeout_ms = 3600000
"#;

#[test]
fn every_kind_of_check_is_read() {
    let config = with(EVERY_KIND);
    let check = |name: &str, kind: CheckKind, action: CheckAction| Check {
        name: name.to_owned(),
        kind,
        interval_ms: 1000,
        timeout_ms: 1000,
        fall: 3,
        rise: 2,
        action,
    };
    let expected = vec![
        Check {
            interval_ms: 500,
            timeout_ms: 200,
            fall: 5,
            rise: 4,
            ..check(
                "port",
                CheckKind::Tcp {
                    host: ip("127.0.0.1"),
                    port: 8080,
                },
                CheckAction::Stop,
            )
        },
        check(
            "health",
            CheckKind::Http {
                url: "http://[::1]:8080/health?deep=1".to_owned(),
                status: (200, 200),
                body: Some("OK".to_owned()),
            },
            CheckAction::Restart,
        ),
        check(
            "workers",
            CheckKind::Process {
                matcher: ProcessMatcher::Command("^php-fpm: pool (www|api)$".to_owned()),
                at_least: 2,
                at_most: Some(64),
            },
            CheckAction::Log,
        ),
        check(
            "master",
            CheckKind::Process {
                matcher: ProcessMatcher::Name("php-fpm".to_owned()),
                at_least: 1,
                at_most: None,
            },
            CheckAction::Restart,
        ),
        check(
            "gateway",
            CheckKind::Ping {
                address: ip("2001:db8::ffff"),
            },
            CheckAction::Wait,
        ),
        check(
            "uplink",
            CheckKind::Interface {
                interface: Some("bond0.100".to_owned()),
            },
            CheckAction::Wait,
        ),
        check("vips", CheckKind::Address, CheckAction::Restart),
        Check {
            interval_ms: 3_600_000,
            timeout_ms: 3_600_000,
            ..check(
                "db",
                CheckKind::Command {
                    run: "pg_isready -q -h /run/postgresql".to_owned(),
                },
                CheckAction::Restart,
            )
        },
    ];
    assert_eq!(config.checks, expected);
    let names: Vec<&str> = config
        .checks
        .iter()
        .map(|check| check.kind.name())
        .collect();
    assert_eq!(
        names,
        [
            "tcp",
            "http",
            "process",
            "process",
            "ping",
            "interface",
            "address",
            "command"
        ]
    );
}

#[test]
fn checks_accept_their_limits() {
    let config = with(
        "[[check]]\nname = \"a\"\nkind = \"command\"\nrun = \"true\"\ninterval_ms = 100\n\
         timeout_ms = 10\nfall = 1\nrise = 100\n\
         [[check]]\nname = \"b\"\nkind = \"tcp\"\nhost = \"::1\"\nport = 65535\nfall = 100\nrise = 1\n\
         [[check]]\nname = \"c\"\nkind = \"http\"\nurl = \"http://localhost\"\nstatus = \"100-599\"\n\
         [[check]]\nname = \"d\"\nkind = \"process\"\nprocess = \"abcdefghijklmno\"\nat_least = 0\n\
         at_most = 0\n\
         [[check]]\nname = \"e\"\nkind = \"process\"\nprocess = \"x\"\nat_least = 100000\n\
         at_most = 100000\n",
    );
    let check = &config.checks[0];
    assert_eq!(
        (check.interval_ms, check.timeout_ms, check.fall, check.rise),
        (100, 10, 1, 100)
    );
    let check = &config.checks[1];
    assert_eq!((check.fall, check.rise), (100, 1));
    assert_eq!(
        check.kind,
        CheckKind::Tcp {
            host: ip("::1"),
            port: 65535
        }
    );
    assert!(matches!(
        config.checks[2].kind,
        CheckKind::Http {
            status: (100, 599),
            ..
        }
    ));
    assert!(matches!(
        &config.checks[3].kind,
        CheckKind::Process { matcher: ProcessMatcher::Name(name), at_least: 0, at_most: Some(0) }
            if name.len() == ProcessMatcher::MAX_NAME_LEN
    ));
    assert!(matches!(
        config.checks[4].kind,
        CheckKind::Process {
            at_least: 100_000,
            at_most: Some(100_000),
            ..
        }
    ));
    // Inline entries, and the largest number of checks.
    let entries: Vec<String> = (0..FarmConfig::MAX_CHECKS)
        .map(|i| format!("{{ name = \"c{i}\", kind = \"address\" }}"))
        .collect();
    let text = format!("check = [{}]\n{BASE}", entries.join(", "));
    let config = parse(&text).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(config.checks.len(), 64);
    assert_eq!(config.checks[63].name, "c63");
}

#[test]
fn every_scripts_key_is_read() {
    let expected = Scripts {
        start: Some("systemctl start nginx".to_owned()),
        stop: Some("systemctl stop nginx && sleep 1".to_owned()),
        timeout_s: 3600,
        restart_limit: RestartLimit {
            count: 0,
            within_s: 31_536_000,
        },
    };
    for table in [
        "[scripts]\nstart = \"systemctl start nginx\"\nstop = \"systemctl stop nginx && sleep 1\"\n\
         timeout_s = 3600\nrestart_limit = { count = 0, within_s = 31536000 }\n",
        "[scripts]\nstart = \"systemctl start nginx\"\nstop = \"systemctl stop nginx && sleep 1\"\n\
         timeout_s = 3600\n[scripts.restart_limit]\ncount = 0\nwithin_s = 31536000\n",
    ] {
        assert_eq!(with(table).scripts, expected, "{table}");
    }
    let config = with("[scripts]\nstop = \"kill $(cat /run/app.pid)\"\ntimeout_s = 1\nrestart_limit = { count = 1000 }\n");
    assert_eq!(
        config.scripts,
        Scripts {
            start: None,
            stop: Some("kill $(cat /run/app.pid)".to_owned()),
            timeout_s: 1,
            restart_limit: RestartLimit {
                count: 1000,
                within_s: 86400,
            },
        }
    );
    let config = with("[scripts]\nrestart_limit = { within_s = 1 }\n");
    assert_eq!(
        config.scripts.restart_limit,
        RestartLimit {
            count: 3,
            within_s: 1
        }
    );
}

#[test]
fn the_examples_commented_out_checks_and_scripts_are_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/farm.toml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{error}"));
    let start = text
        .find("# [[check]]")
        .expect("the example has commented-out checks");
    let uncommented: String = text[start..]
        .lines()
        .map(|line| match line {
            "#" => "\n".to_owned(),
            line => format!("{}\n", line.strip_prefix("# ").unwrap_or(line)),
        })
        .collect();
    let text = format!("{}{uncommented}", &text[..start]);
    let config = FarmConfig::parse(&text, &path).unwrap_or_else(|error| panic!("{error}"));
    let names: Vec<(&str, &str, CheckAction)> = config
        .checks
        .iter()
        .map(|check| (check.name.as_str(), check.kind.name(), check.action))
        .collect();
    assert_eq!(
        names,
        [
            ("web", "http", CheckAction::Restart),
            ("nginx", "process", CheckAction::Restart),
            ("gateway", "ping", CheckAction::Wait),
        ]
    );
    assert_eq!(
        config.scripts,
        Scripts {
            start: Some("systemctl start nginx".to_owned()),
            stop: Some("systemctl stop nginx".to_owned()),
            ..Scripts::default()
        }
    );
    // Checks and scripts are not part of the digest.
    let example = FarmConfig::load(&path).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(config.digest(), example.digest());
}

// The [admin] table.

#[test]
fn without_an_admin_table_or_its_keys_there_is_no_metrics_server_nor_console() {
    assert_eq!(
        Admin::default(),
        Admin {
            metrics: None,
            console: None
        }
    );
    assert_eq!(parse(BASE).map(|config| config.admin), Ok(Admin::default()));
    for text in ["[admin]\n", "admin = {}\n"] {
        let config = parse(&format!("{text}{BASE}")).unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(config.admin, Admin::default(), "{text}");
    }
}

#[test]
fn the_metrics_address_is_read() {
    let cases = [
        ("127.0.0.1:9477", "127.0.0.1:9477"),
        ("0.0.0.0:9477", "0.0.0.0:9477"),
        ("198.18.0.1:80", "198.18.0.1:80"),
        ("[::1]:9477", "[::1]:9477"),
        ("[::]:65535", "[::]:65535"),
        ("[2001:db8::1]:1", "[2001:db8::1]:1"),
    ];
    for (written, address) in cases {
        let config = with(&format!("[admin]\nmetrics = \"{written}\"\n"));
        assert_eq!(
            config.admin.metrics,
            Some(address.parse().expect("test address")),
            "{written}"
        );
    }
}

#[test]
fn the_console_address_and_secret_file_are_read() {
    let cases = [
        ("127.0.0.1:9480", "127.0.0.1:9480"),
        ("0.0.0.0:9480", "0.0.0.0:9480"),
        ("[::1]:9480", "[::1]:9480"),
        ("[2001:db8::1]:443", "[2001:db8::1]:443"),
    ];
    for (written, address) in cases {
        let config = with(&format!(
            "[admin]\nconsole = \"{written}\"\nconsole_secret_file = \"/etc/herd/console.secret\"\n"
        ));
        assert_eq!(
            config.admin,
            Admin {
                metrics: None,
                console: Some(Console {
                    address: address.parse().expect("test address"),
                    secret_file: PathBuf::from("/etc/herd/console.secret"),
                }),
            },
            "{written}"
        );
    }
    // Both servers at once, and a relative path kept as written: `herd run` reads it.
    let config = with(
        "[admin]\nmetrics = \"127.0.0.1:9477\"\nconsole = \"198.18.0.1:9480\"\n\
         console_secret_file = \"console.secret\"\n",
    );
    assert_eq!(
        config.admin.metrics,
        Some("127.0.0.1:9477".parse().expect("address"))
    );
    let console = config.admin.console.expect("a console");
    assert_eq!(console.address, "198.18.0.1:9480".parse().expect("address"));
    assert_eq!(console.secret_file, PathBuf::from("console.secret"));
}

#[test]
fn a_secret_file_without_a_console_serves_nothing() {
    let config = with("[admin]\nconsole_secret_file = \"/etc/herd/console.secret\"\n");
    assert_eq!(config.admin, Admin::default());
}
