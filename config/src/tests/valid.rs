//! Valid configurations: values, defaults and the lookup API.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use super::{ip, parse, BASE};
use crate::{Affinity, Farm, FarmConfig, Node, PortRange, Protocol, Rule};

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
            auth_key_file: PathBuf::from("/etc/herd/farm.key"),
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
    assert_eq!(Protocol::Tcp.to_string(), "tcp");
    assert_eq!(Affinity::ClientIpPort.to_string(), "client-ip-port");
    let error = "TCP".parse::<Protocol>().expect_err("case matters");
    assert_eq!(
        error.to_string(),
        "`TCP` is not a protocol; expected `tcp`, `udp` or `icmp`"
    );
    assert!("sticky".parse::<Affinity>().is_err());
}
