//! Every rejection names the file, line, column and key, and says what was expected.

use std::path::Path;

use super::{base_with, parse, BASE};
use crate::FarmConfig;

/// Asserts that `text` is rejected at `at` (line, column) about `key`, with a message that has
/// every one of `fragments` and says what was expected.
#[track_caller]
fn assert_error(text: &str, at: (usize, usize), key: &str, fragments: &[&str]) {
    let error = parse(text).expect_err("the configuration should be rejected");
    let shown = error.to_string();
    assert_eq!(
        (error.location, error.key.as_str()),
        (Some(at), key),
        "{shown}"
    );
    assert_eq!(error.file, Path::new("farm.toml"));
    let prefix = format!("farm.toml:{}:{}: {key}: ", at.0, at.1);
    assert!(
        shown.starts_with(&prefix),
        "{shown}\ndoes not start with {prefix:?}"
    );
    for fragment in fragments {
        assert!(
            error.message.contains(fragment),
            "{shown}\ndoes not contain {fragment:?}"
        );
    }
    assert!(
        error.message.contains("expected"),
        "{shown}\ndoes not say what was expected"
    );
}

/// `BASE` up to its nodes, its nodes, and its rules.
fn base_parts() -> (&'static str, &'static str, &'static str) {
    let nodes = BASE.find("[[node]]").expect("BASE has nodes");
    let rules = BASE.find("[[rule]]").expect("BASE has rules");
    (&BASE[..nodes], &BASE[nodes..rules], &BASE[rules..])
}

/// 1-based column, in characters, of `needle` in line `line` of `text`.
fn column_of(text: &str, line: usize, needle: &str) -> usize {
    let line = text.lines().nth(line - 1).expect("the line is in the text");
    line[..line.find(needle).expect("the needle is on the line")]
        .chars()
        .count()
        + 1
}

/// `BASE` followed by a `[membership]` table (line 26) whose keys, `body`, start on line 27.
fn with_membership(body: &str) -> String {
    format!("{BASE}\n[membership]\n{body}")
}

/// `BASE` followed by a `[dataplane]` table (line 26) whose keys, `body`, start on line 27.
fn with_dataplane(body: &str) -> String {
    format!("{BASE}\n[dataplane]\n{body}")
}

#[test]
fn the_base_configuration_is_valid() {
    assert!(parse(BASE).is_ok(), "{:?}", parse(BASE));
}

// Unknown keys.

#[test]
fn a_typo_in_a_key_is_located_and_gets_a_suggestion() {
    let error = parse(&base_with("buckets = 4096", "bucket = 4096")).expect_err("typo");
    assert_eq!(
        error.to_string(),
        "farm.toml:5:1: farm.bucket: unknown key `bucket` (did you mean `buckets`?); expected one of \
         `name`, `vip`, `interface`, `buckets`, `hash_key`, `port`, `announce_interval_s`, \
         `auth_key_file`, `mac`"
    );
}

#[test]
fn unknown_keys_everywhere_are_rejected() {
    assert_error(
        &base_with("weight = 2", "wieght = 2"),
        (16, 1),
        "node[1].wieght",
        &["unknown key `wieght` (did you mean `weight`?)", "`address`"],
    );
    assert_error(
        &base_with("affinity =", "afinity ="),
        (24, 1),
        "rule[1].afinity",
        &["(did you mean `affinity`?)"],
    );
    assert_error(
        &base_with("[[node]]", "[[nodes]]"),
        (9, 3),
        "nodes",
        &["unknown key `nodes` (did you mean `node`?); expected one of `farm`, `node`, `rule`"],
    );
    assert_error(
        &base_with("port = 7400", "port = 7400\ncolour = \"red\""),
        (8, 1),
        "farm.colour",
        &["unknown key `colour`; expected one of `name`"],
    );
    assert_error(
        &base_with("[farm]", "[farm.extra]\nx = 1\n[farm]"),
        (1, 7),
        "farm.extra",
        &["unknown key `extra`"],
    );
}

// Wrong types.

#[test]
fn values_of_the_wrong_type_are_rejected() {
    let cases = [
        (
            "buckets = 4096",
            "buckets = \"4096\"",
            (5, 11),
            "farm.buckets",
            "invalid type: string \"4096\", expected an integer",
        ),
        (
            "name = \"web\"",
            "name = 5",
            (2, 8),
            "farm.name",
            "invalid type: integer `5`, expected a string",
        ),
        (
            "vip = [",
            "vip = \"198.18.0.99\"\nx = [",
            (3, 7),
            "farm.vip",
            "expected an array",
        ),
        (
            "weight = 2",
            "weight = 1.5",
            (16, 10),
            "node[1].weight",
            "invalid type: floating point `1.5`, expected an integer",
        ),
        (
            "protocol = \"tcp\"",
            "protocol = true",
            (19, 12),
            "rule[0].protocol",
            "invalid type: boolean `true`, expected a string",
        ),
        (
            "\"80\", \"443\"",
            "80, 443",
            (20, 10),
            "rule[0].ports[0]",
            "invalid type: integer `80`, expected a string such as \"80\"",
        ),
        (
            "[farm]",
            "[[farm]]",
            (1, 1),
            "farm",
            "invalid type: array, expected a table: [farm]",
        ),
        (
            "[farm]",
            "farm = 1\n[x]",
            (1, 8),
            "farm",
            "invalid type: integer, expected a table: [farm]",
        ),
        (
            "\"00112233445566778899aabbccddeeff\"",
            "0x00112233445566778899aabbccddeeff",
            (6, 12),
            "farm.hash_key",
            "invalid type: integer, expected a string of 32 hex digits",
        ),
        (
            "\"00112233445566778899aabbccddeeff\"",
            "1e9",
            (6, 12),
            "farm.hash_key",
            "invalid type: floating point, expected a string of 32 hex digits",
        ),
        (
            "address = \"198.18.0.1\"",
            "address = { ip = \"198.18.0.1\" }",
            (11, 11),
            "node[0].address",
            "invalid type: table, expected a string",
        ),
    ];
    for (from, to, at, key, fragment) in cases {
        assert_error(&base_with(from, to), at, key, &[fragment]);
    }
    let (farm, nodes, rules) = base_parts();
    assert_error(
        &format!("node = 1\n{farm}{rules}"),
        (1, 8),
        "node",
        &["invalid type: integer, expected an array of tables: [[node]] entries"],
    );
    assert_error(
        &format!("rule = [\"tcp\"]\n{farm}{nodes}"),
        (1, 9),
        "rule[0]",
        &["invalid type: string, expected a table: a [[rule]] entry"],
    );
}

// Missing keys and tables.

#[test]
fn missing_required_keys_point_at_their_table() {
    let cases = [
        (
            "name = \"web\"\n",
            (1, 1),
            "farm.name",
            "required key `name` is missing; expected 1 to 63 characters",
        ),
        (
            "vip = [\"198.18.0.100\", \"2001:db8::100\"]\n",
            (1, 1),
            "farm.vip",
            "required key `vip` is missing",
        ),
        (
            "hash_key = \"00112233445566778899aabbccddeeff\"\n",
            (1, 1),
            "farm.hash_key",
            "expected exactly 32 hex digits",
        ),
        (
            "name = \"alpha\"\n",
            (9, 1),
            "node[0].name",
            "required key `name` is missing",
        ),
        (
            "address = \"198.18.0.2\"\n",
            (13, 1),
            "node[1].address",
            "required key `address` is missing; expected a unicast",
        ),
        (
            "protocol = \"udp\"\n",
            (22, 1),
            "rule[1].protocol",
            "required key `protocol` is missing; expected `tcp`, `udp` or `icmp`",
        ),
    ];
    for (line, at, key, fragment) in cases {
        assert_error(&base_with(line, ""), at, key, &[fragment]);
    }
}

#[test]
fn missing_tables_are_reported_at_the_start_of_the_file() {
    let (farm, nodes, rules) = base_parts();
    assert_error(
        &format!("{nodes}{rules}"),
        (1, 1),
        "farm",
        &["required table [farm] is missing", "`hash_key`"],
    );
    assert_error(
        &format!("{farm}{rules}"),
        (1, 1),
        "node",
        &["the farm has no node; expected 1 to 64 [[node]] entries"],
    );
    assert_error(
        &format!("{farm}{nodes}"),
        (1, 1),
        "rule",
        &[
            "the farm has no rule",
            "VIP traffic no rule matches is dropped",
        ],
    );
    assert_error(
        &format!("node = []\n{farm}{rules}"),
        (1, 8),
        "node",
        &["the farm has no node"],
    );
    assert_error(
        &format!("rule = []\n{farm}{nodes}"),
        (1, 8),
        "rule",
        &["the farm has no rule"],
    );
}

// Duplicates.

#[test]
fn duplicate_node_names_and_addresses_are_rejected() {
    assert_error(
        &base_with("name = \"bravo\"", "name = \"alpha\""),
        (14, 8),
        "node[1].name",
        &["`alpha` is already the name of a node (line 10); expected a name no other node has"],
    );
    assert_error(
        &base_with("address = \"198.18.0.2\"", "address = \"198.18.0.1\""),
        (15, 11),
        "node[1].address",
        &["`198.18.0.1` is already the address of a node (line 11)"],
    );
}

#[test]
fn duplicate_vips_are_rejected_however_written() {
    assert_error(
        &base_with("\"2001:db8::100\"", "\"198.18.0.100\""),
        (3, 24),
        "farm.vip[1]",
        &["`198.18.0.100` is already farm.vip[0]; expected every VIP once"],
    );
    assert_error(
        &base_with("\"198.18.0.100\"", "\"2001:DB8:0::100\""),
        (3, 27),
        "farm.vip[1]",
        &["`2001:db8::100` is already farm.vip[0]"],
    );
}

#[test]
fn a_vip_cannot_be_a_node_address() {
    assert_error(
        &base_with("address = \"198.18.0.1\"", "address = \"2001:db8::100\""),
        (11, 11),
        "node[0].address",
        &[
            "`2001:db8::100` is also farm.vip[1]",
            "expected a node address that is not a VIP",
        ],
    );
}

// Addresses.

#[test]
fn vips_must_be_unicast_addresses() {
    let cases = [
        ("0.0.0.0", "is the unspecified address"),
        ("::", "is the unspecified address"),
        ("127.0.0.1", "is a loopback address"),
        ("::1", "is a loopback address"),
        ("224.0.0.1", "is a multicast address"),
        ("ff02::1", "is a multicast address"),
        ("255.255.255.255", "is the broadcast address"),
        ("198.18.0.100/24", "is not an IP address"),
        ("web.example.com", "is not an IP address"),
        ("", "is not an IP address"),
        ("::ffff:198.18.0.99", "is an IPv4-mapped IPv6 address; expected a unicast IPv4 or IPv6 address such as 198.18.0.1 or 2001:db8::1; write it as 198.18.0.99"),
    ];
    for (bad, fragment) in cases {
        assert_error(
            &base_with("\"198.18.0.100\"", &format!("\"{bad}\"")),
            (3, 8),
            "farm.vip[0]",
            &[
                &format!("`{bad}` {fragment}"),
                "expected a unicast IPv4 or IPv6 address",
            ],
        );
    }
}

#[test]
fn node_addresses_must_be_unicast_addresses() {
    for (bad, fragment) in [
        ("127.0.0.2", "loopback"),
        ("ff05::2", "multicast"),
        ("198.18.0", "not an IP address"),
    ] {
        assert_error(
            &base_with("\"198.18.0.2\"", &format!("\"{bad}\"")),
            (15, 11),
            "node[1].address",
            &[fragment, "expected a unicast IPv4 or IPv6 address"],
        );
    }
}

// Numbers.

#[test]
fn buckets_must_be_a_power_of_two_in_range() {
    let error = parse(&base_with("buckets = 4096", "buckets = 100")).expect_err("100 buckets");
    assert_eq!(
        error.to_string(),
        "farm.toml:5:11: farm.buckets: 100 is not a power of two; expected a power of two from 64 to 65536"
    );
    for (bad, problem) in [
        ("4095", "4095 is not a power of two"),
        ("32", "32 is out of range"),
        ("131072", "131072 is out of range"),
        ("0", "0 is out of range"),
        ("-4096", "-4096 is out of range"),
        ("9223372036854775807", "9223372036854775807 is out of range"),
    ] {
        assert_error(
            &base_with("buckets = 4096", &format!("buckets = {bad}")),
            (5, 11),
            "farm.buckets",
            &[&format!(
                "{problem}; expected a power of two from 64 to 65536"
            )],
        );
    }
}

#[test]
fn the_announce_interval_must_be_a_whole_number_of_seconds_up_to_an_hour() {
    for (bad, problem) in [
        (
            "3601",
            "3601 is out of range; expected an integer from 0 to 3600",
        ),
        (
            "-1",
            "-1 is out of range; expected an integer from 0 to 3600",
        ),
        (
            "0.5",
            "invalid type: floating point `0.5`, expected an integer",
        ),
        (
            "\"10s\"",
            "invalid type: string \"10s\", expected an integer",
        ),
    ] {
        assert_error(
            &base_with(
                "port = 7400",
                &format!("port = 7400\nannounce_interval_s = {bad}"),
            ),
            (8, 23),
            "farm.announce_interval_s",
            &[problem],
        );
    }
    let off = parse(&base_with(
        "port = 7400",
        "port = 7400\nannounce_interval_s = 0",
    ))
    .unwrap();
    assert_eq!(off.farm.announce_interval_s, 0);
    assert_eq!(parse(BASE).unwrap().farm.announce_interval_s, 10);
}

#[test]
fn port_and_weight_must_be_in_range() {
    for bad in ["0", "65536", "-1"] {
        assert_error(
            &base_with("port = 7400", &format!("port = {bad}")),
            (7, 8),
            "farm.port",
            &[&format!(
                "{bad} is out of range; expected an integer from 1 to 65535"
            )],
        );
    }
    for bad in ["1001", "-1"] {
        assert_error(
            &base_with("weight = 2", &format!("weight = {bad}")),
            (16, 10),
            "node[1].weight",
            &[&format!(
                "{bad} is out of range; expected an integer from 0 to 1000"
            )],
        );
    }
}

#[test]
fn the_hash_key_must_be_32_hex_digits_and_is_never_quoted() {
    let cases = [
        (
            "00112233445566778899aabbccddee",
            "the key has 30 hex digits, too few",
        ),
        (
            "00112233445566778899aabbccddeeff00",
            "the key has 34 hex digits, too many",
        ),
        ("", "the key has 0 hex digits, too few"),
        (
            "0x112233445566778899aabbccddeeff",
            "character 2 of the key, 'x', is not a hex digit",
        ),
        (
            "00112233445566778899aabbccddeefg",
            "character 32 of the key, 'g', is not a hex digit",
        ),
    ];
    for (bad, problem) in cases {
        let text = base_with(
            "\"00112233445566778899aabbccddeeff\"",
            &format!("\"{bad}\""),
        );
        assert_error(
            &text,
            (6, 12),
            "farm.hash_key",
            &[&format!("{problem}; expected exactly 32 hex digits")],
        );
        if let Err(error) = parse(&text) {
            assert!(
                bad.is_empty() || !error.message.contains(bad),
                "the secret leaks: {error}"
            );
        }
    }
}

// Ports and rules.

#[test]
fn bad_port_entries_are_rejected() {
    let cases = [
        ("90-80", "`90-80` is reversed (90 > 80)"),
        ("0", "port 0 in `0` is not a port"),
        ("65536", "port 65536 in `65536` is out of range"),
        ("1-70000", "port 70000 in `1-70000` is out of range"),
        ("https", "`https` is not a port or port range"),
        ("80 - 90", "`80 - 90` is not a port or port range"),
        ("", "`` is not a port or port range"),
    ];
    for (bad, problem) in cases {
        assert_error(
            &base_with("\"443\"", &format!("\"{bad}\"")),
            (20, 16),
            "rule[0].ports[1]",
            &[&format!(
                "{problem}; expected \"N\", \"N-M\" (1 <= N <= M <= 65535) or \"*\""
            )],
        );
    }
    assert_error(
        &base_with("ports = [\"80\", \"443\", \"8000-8099\"]", "ports = []"),
        (20, 9),
        "rule[0].ports",
        &["the list of ports is empty; expected at least one entry, or no `ports` key"],
    );
}

#[test]
fn icmp_rules_take_no_ports() {
    assert_error(
        &base_with("protocol = \"udp\"", "protocol = \"icmp\"\nports = [\"53\"]"),
        (24, 10),
        "rule[1].ports[0]",
        &["`53` is a port entry, but icmp has no ports; expected [\"*\"] alone, or no `ports` key"],
    );
    assert_error(
        &base_with(
            "protocol = \"udp\"",
            "protocol = \"icmp\"\nports = [\"*\", \"*\"]",
        ),
        (24, 15),
        "rule[1].ports[1]",
        &["icmp has no ports"],
    );
    assert!(parse(&base_with(
        "protocol = \"udp\"",
        "protocol = \"icmp\"\nports = [\"*\"]"
    ))
    .is_ok());
}

#[test]
fn protocol_and_affinity_must_be_known_with_suggestions() {
    assert_error(
        &base_with("\"tcp\"", "\"tpc\""),
        (19, 12),
        "rule[0].protocol",
        &["`tpc` is not a protocol (did you mean `tcp`?); expected `tcp`, `udp` or `icmp`"],
    );
    assert_error(
        &base_with("\"tcp\"", "\"TCP\""),
        (19, 12),
        "rule[0].protocol",
        &["(did you mean `tcp`?)"],
    );
    assert_error(
        &base_with("\"client-ip-port\"", "\"client_ip_port\""),
        (24, 12),
        "rule[1].affinity",
        &["`client_ip_port` is not an affinity (did you mean `client-ip-port`?); expected `client-ip` or `client-ip-port`"],
    );
    assert_error(
        &base_with("\"client-ip-port\"", "\"sticky\""),
        (24, 12),
        "rule[1].affinity",
        &["`sticky` is not an affinity; expected"],
    );
}

#[test]
fn overlapping_rules_with_different_affinities_are_rejected() {
    let text = format!("{BASE}\n[[rule]]\nprotocol = \"tcp\"\nports = [\"22\", \"400-500\"]\naffinity = \"client-ip-port\"\n");
    assert_error(
        &text,
        (28, 16),
        "rule[2].ports[1]",
        &[
            "`400-500` overlaps `443` of rule[0] (line 18), a tcp rule with affinity client-ip while this one has client-ip-port",
            "expected disjoint ports for rules of one protocol with different affinities",
        ],
    );
    // A rule without `ports` covers every port, and so overlaps from its header.
    let text = format!("{BASE}\n[[rule]]\nprotocol = \"udp\"\n");
    assert_error(
        &text,
        (26, 1),
        "rule[2].ports",
        &["`*` overlaps `*` of rule[1] (line 22), a udp rule"],
    );
    let text = format!("{BASE}\n[[rule]]\nprotocol = \"icmp\"\n[[rule]]\nprotocol = \"icmp\"\naffinity = \"client-ip-port\"\n");
    assert_error(
        &text,
        (28, 1),
        "rule[3].ports",
        &["of rule[2] (line 26), a icmp rule"],
    );
}

// Counts.

#[test]
fn at_most_64_nodes() {
    let (farm, _, rules) = base_parts();
    let nodes: String = (0..65)
        .map(|i| format!("[[node]]\nname = \"n{i}\"\naddress = \"10.0.1.{i}\"\n"))
        .collect();
    let text = format!("{farm}{nodes}{rules}");
    let line = farm.lines().count() + 1 + 64 * 3;
    assert_error(
        &text,
        (line, 1),
        "node[64]",
        &["65 nodes are too many; expected 1 to 64 [[node]] entries"],
    );
}

#[test]
fn at_most_16_vips() {
    let vips: Vec<String> = (1..=17).map(|i| format!("\"10.0.0.{i}\"")).collect();
    let text = base_with("\"198.18.0.100\", \"2001:db8::100\"", &vips.join(", "));
    assert_error(
        &text,
        (3, column_of(&text, 3, "\"10.0.0.17\"")),
        "farm.vip[16]",
        &["17 VIPs are too many; expected at most 16 VIPs"],
    );
    assert_error(
        &base_with("\"198.18.0.100\", \"2001:db8::100\"", ""),
        (3, 7),
        "farm.vip",
        &["no VIP; expected 1 to 16"],
    );
}

// Names and interfaces.

#[test]
fn names_must_be_short_and_plain() {
    let long = "x".repeat(64);
    let cases = [
        ("we b", "`we b` contains ' '"),
        ("", "the name is empty"),
        (long.as_str(), "is 64 characters long"),
        ("wéb", "`wéb` contains 'é'"),
        ("web/1", "`web/1` contains '/'"),
    ];
    for (bad, problem) in cases {
        assert_error(
            &base_with("\"web\"", &format!("\"{bad}\"")),
            (2, 8),
            "farm.name",
            &[&format!(
                "{problem}; expected 1 to 63 characters from A-Z, a-z, 0-9, `_`, `.` and `-`"
            )],
        );
    }
    assert_error(
        &base_with("\"alpha\"", "\"al pha\""),
        (10, 8),
        "node[0].name",
        &["`al pha` contains ' '"],
    );
    assert!(parse(&base_with("\"web\"", &format!("\"{}\"", "x".repeat(63)))).is_ok());
}

#[test]
fn every_node_needs_an_interface() {
    let no_default = base_with("interface = \"eth0\"", "# no default interface");
    assert_error(
        &no_default,
        (9, 1),
        "node[0].interface",
        &["node `alpha` has no `interface` and [farm] sets no default; expected an `interface` key in this [[node]] entry or in [farm]"],
    );
    let only_alpha = no_default.replacen(
        "address = \"198.18.0.1\"",
        "address = \"198.18.0.1\"\ninterface = \"eth1\"",
        1,
    );
    assert_error(
        &only_alpha,
        (14, 1),
        "node[1].interface",
        &["node `bravo` has no `interface`"],
    );
}

#[test]
fn interface_names_follow_linux_rules() {
    let cases = [
        ("eth0/1", "`eth0/1` contains '/'"),
        ("eth0:1", "`eth0:1` contains ':'"),
        ("eth 0", "`eth 0` contains ' '"),
        ("eth\\u00000", "`eth\\00` contains '\\0'"),
        ("averyverylongname", "`averyverylongname` is 17 bytes long"),
        ("", "the interface name is empty"),
        ("..", "`..` is not allowed"),
    ];
    for (bad, problem) in cases {
        assert_error(
            &base_with("\"eth0\"", &format!("\"{bad}\"")),
            (4, 13),
            "farm.interface",
            &[problem, "expected a Linux interface name: 1 to 15 bytes"],
        );
    }
    assert_error(
        &base_with("weight = 2", "weight = 2\ninterface = \"a:b\""),
        (17, 13),
        "node[1].interface",
        &["`a:b` contains ':'"],
    );
}

#[test]
fn the_auth_key_file_cannot_be_empty() {
    assert_error(
        &base_with("port = 7400", "port = 7400\nauth_key_file = \"\""),
        (8, 17),
        "farm.auth_key_file",
        &["the path is empty; expected the path of the heartbeat key file"],
    );
}

#[test]
fn columns_count_characters_not_bytes() {
    let (farm, _, rules) = base_parts();
    let text = format!(
        "node = [{{ name = \"n\", address = \"198.18.0.1\", interface = \"é0\", weight = 5000 }}]\n{farm}{rules}"
    );
    let column = column_of(&text, 1, "5000");
    assert_eq!(
        column,
        text.find("5000").expect("the weight is in the text"),
        "one two-byte character before"
    );
    assert_error(
        &text,
        (1, column),
        "node[0].weight",
        &["5000 is out of range"],
    );
}

// Syntax errors.

#[test]
fn syntax_errors_are_located() {
    assert_error(
        &base_with("buckets = 4096", "buckets = 40x96"),
        (5, 11),
        "farm.buckets",
        &["string values must be quoted"],
    );
    assert_error(
        &base_with("port = 7400", "port = 7400\nport = 7401"),
        (8, 1),
        "farm.port",
        &["duplicate key `port`; expected each key at most once per table"],
    );
    assert_error(
        &format!("{BASE}[farm]\n"),
        (25, 2),
        "farm",
        &["table [farm] is defined twice; expected each table once"],
    );
    assert_error(
        &base_with("[[node]]\nname = \"bravo\"", "[node]\nname = \"bravo\""),
        (13, 2),
        "node",
        &[
            "table [node] is defined twice",
            "expected [[node]] for every entry of an array of tables",
        ],
    );
    // Where the structure itself is broken, the key is only toml's best guess; the place is exact.
    let error = parse(&base_with("[farm]", "[farm")).expect_err("unclosed header");
    assert_eq!(error.location, Some((1, 6)), "{error}");
    assert!(
        error.message.contains("unclosed table, expected `]`"),
        "{error}"
    );
    let error = parse(&base_with("\"web\"", "\"web")).expect_err("unterminated string");
    assert_eq!(error.location, Some((2, 12)), "{error}");
    assert!(error.message.contains("expected"), "{error}");
}

// The [dataplane] table.

#[test]
fn unknown_dataplane_keys_are_located_and_get_a_suggestion() {
    let error = parse(&with_dataplane("bacth = 64\n")).expect_err("typo");
    assert_eq!(
        error.to_string(),
        "farm.toml:27:1: dataplane.bacth: unknown key `bacth` (did you mean `batch`?); \
         expected one of `mode`, `cores`, `zero_copy`, `batch`"
    );
    assert_error(
        &with_dataplane("mode = \"xdp\"\nzerocopy = \"on\"\n"),
        (28, 1),
        "dataplane.zerocopy",
        &["unknown key `zerocopy` (did you mean `zero_copy`?)"],
    );
    assert_error(
        &with_dataplane("core = [1]\n"),
        (27, 1),
        "dataplane.core",
        &["unknown key `core` (did you mean `cores`?)"],
    );
    assert_error(
        &with_dataplane("threads = 4\n"),
        (27, 1),
        "dataplane.threads",
        &["unknown key `threads`; expected one of `mode`, `cores`, `zero_copy`, `batch`"],
    );
    assert_error(
        &format!("{BASE}\n[dataplan]\nmode = \"xdp\"\n"),
        (26, 2),
        "dataplan",
        &["unknown key `dataplan` (did you mean `dataplane`?); expected one of `farm`, `node`, `rule`, `membership`, `dataplane`"],
    );
}

#[test]
fn the_dataplane_must_be_a_table_given_once() {
    assert_error(
        &format!("{BASE}\n[[dataplane]]\nmode = \"xdp\"\n"),
        (26, 1),
        "dataplane",
        &["invalid type: array, expected a table: [dataplane]"],
    );
    assert_error(
        &format!("dataplane = \"xdp\"\n{BASE}"),
        (1, 13),
        "dataplane",
        &["invalid type: string, expected a table: [dataplane]"],
    );
    assert_error(
        &format!("{}[dataplane]\n", with_dataplane("batch = 32\n")),
        (28, 2),
        "dataplane",
        &["table [dataplane] is defined twice; expected each table once"],
    );
}

#[test]
fn the_mac_mode_must_be_known_with_suggestions() {
    assert_error(
        &base_with("port = 7400", "port = 7400\nmac = \"broadcast\""),
        (8, 7),
        "farm.mac",
        &["`broadcast` is not a virtual MAC mode; expected `unicast` or `multicast`"],
    );
    assert_error(
        &base_with("port = 7400", "port = 7400\nmac = \"Multicast\""),
        (8, 7),
        "farm.mac",
        &["(did you mean `multicast`?)"],
    );
}

#[test]
fn the_dataplane_mode_must_be_known_with_suggestions() {
    let error = parse(&with_dataplane("mode = \"dpdk\"\n")).expect_err("unknown mode");
    assert_eq!(
        error.to_string(),
        "farm.toml:27:8: dataplane.mode: `dpdk` is not a dataplane mode; expected `afxdp` or `xdp`"
    );
    for (bad, guess) in [("af_xdp", "afxdp"), ("AF_XDP", "afxdp"), ("XDP", "xdp")] {
        assert_error(
            &with_dataplane(&format!("mode = \"{bad}\"\n")),
            (27, 8),
            "dataplane.mode",
            &[&format!(
                "`{bad}` is not a dataplane mode (did you mean `{guess}`?); expected `afxdp` or `xdp`"
            )],
        );
    }
    assert_error(
        &with_dataplane("mode = 1\n"),
        (27, 8),
        "dataplane.mode",
        &["invalid type: integer `1`, expected a string"],
    );
}

#[test]
fn zero_copy_must_be_auto_on_or_off() {
    let error = parse(&with_dataplane("zero_copy = \"yes\"\n")).expect_err("unknown setting");
    assert_eq!(
        error.to_string(),
        "farm.toml:27:13: dataplane.zero_copy: `yes` is not a zero-copy setting; expected `auto`, `on` or `off`"
    );
    assert_error(
        &with_dataplane("zero_copy = \"Off\"\n"),
        (27, 13),
        "dataplane.zero_copy",
        &["`Off` is not a zero-copy setting (did you mean `off`?); expected `auto`, `on` or `off`"],
    );
    // A boolean is the likely mistake for an on/off setting: the strings are listed.
    assert_error(
        &with_dataplane("zero_copy = true\n"),
        (27, 13),
        "dataplane.zero_copy",
        &["invalid type: boolean `true`, expected a string: `auto`, `on` or `off`"],
    );
}

#[test]
fn the_batch_must_be_from_1_to_1024() {
    for bad in ["0", "1025", "-1", "9223372036854775808"] {
        assert_error(
            &with_dataplane(&format!("batch = {bad}\n")),
            (27, 9),
            "dataplane.batch",
            &[&format!(
                "{bad} is out of range; expected an integer from 1 to 1024"
            )],
        );
    }
    assert_error(
        &with_dataplane("batch = \"64\"\n"),
        (27, 9),
        "dataplane.batch",
        &["invalid type: string \"64\", expected an integer"],
    );
}

#[test]
fn cores_must_be_distinct_indices_up_to_1023() {
    assert_error(
        &with_dataplane("cores = [0, 1024]\n"),
        (27, 13),
        "dataplane.cores[1]",
        &["1024 is out of range; expected an integer from 0 to 1023"],
    );
    assert_error(
        &with_dataplane("cores = [-1]\n"),
        (27, 10),
        "dataplane.cores[0]",
        &["-1 is out of range; expected an integer from 0 to 1023"],
    );
    let error = parse(&with_dataplane("cores = [0, 2, 0]\n")).expect_err("core 0 twice");
    assert_eq!(
        error.to_string(),
        "farm.toml:27:16: dataplane.cores[2]: core 0 is already dataplane.cores[0]; \
         expected every core once: each core runs one worker"
    );
    assert_error(
        &with_dataplane("cores = [5, 6, 7, 6]\n"),
        (27, 19),
        "dataplane.cores[3]",
        &["core 6 is already dataplane.cores[1]"],
    );
    assert_error(
        &with_dataplane("cores = 4\n"),
        (27, 9),
        "dataplane.cores",
        &["invalid type: integer `4`, expected an array"],
    );
    assert_error(
        &with_dataplane("cores = [\"0\"]\n"),
        (27, 10),
        "dataplane.cores[0]",
        &["invalid type: string \"0\", expected an integer"],
    );
}

// The [membership] table.

#[test]
fn unknown_membership_keys_are_located_and_get_a_suggestion() {
    let error = parse(&with_membership("heartbeat = 100\n")).expect_err("typo");
    assert_eq!(
        error.to_string(),
        "farm.toml:27:1: membership.heartbeat: unknown key `heartbeat` (did you mean `heartbeat_ms`?); \
         expected one of `heartbeat_ms`, `dead_after_ms`, `drain_s`, `quorum`"
    );
    for (body, at, key, guess) in [
        (
            "drain_s = 5\ndead_after = 900\n",
            (28, 1),
            "dead_after",
            "dead_after_ms",
        ),
        ("drain = 5\n", (27, 1), "drain", "drain_s"),
        ("quorom = true\n", (27, 1), "quorom", "quorum"),
    ] {
        assert_error(
            &with_membership(body),
            at,
            &format!("membership.{key}"),
            &[&format!("unknown key `{key}` (did you mean `{guess}`?)")],
        );
    }
    assert_error(
        &with_membership("timeout_ms = 5\n"),
        (27, 1),
        "membership.timeout_ms",
        &["unknown key `timeout_ms`; expected one of `heartbeat_ms`, `dead_after_ms`, `drain_s`, `quorum`"],
    );
    assert_error(
        &format!("{BASE}\n[membershp]\nquorum = true\n"),
        (26, 2),
        "membershp",
        &["unknown key `membershp` (did you mean `membership`?); expected one of `farm`, `node`, `rule`, `membership`, `dataplane`"],
    );
}

#[test]
fn the_membership_must_be_a_table_given_once() {
    assert_error(
        &format!("{BASE}\n[[membership]]\nquorum = false\n"),
        (26, 1),
        "membership",
        &["invalid type: array, expected a table: [membership]"],
    );
    assert_error(
        &format!("membership = 100\n{BASE}"),
        (1, 14),
        "membership",
        &["invalid type: integer, expected a table: [membership]"],
    );
    assert_error(
        &format!("{}[membership]\n", with_membership("drain_s = 5\n")),
        (28, 2),
        "membership",
        &["table [membership] is defined twice; expected each table once"],
    );
}

#[test]
fn membership_values_must_be_integers_and_a_boolean() {
    let cases = [
        (
            "heartbeat_ms = 1.5\n",
            (27, 16),
            "membership.heartbeat_ms",
            "invalid type: floating point `1.5`, expected an integer",
        ),
        (
            "dead_after_ms = \"500ms\"\n",
            (27, 17),
            "membership.dead_after_ms",
            "invalid type: string \"500ms\", expected an integer",
        ),
        (
            "drain_s = true\n",
            (27, 11),
            "membership.drain_s",
            "invalid type: boolean `true`, expected an integer",
        ),
        (
            "quorum = \"yes\"\n",
            (27, 10),
            "membership.quorum",
            "invalid type: string \"yes\", expected a boolean",
        ),
        (
            "quorum = 1\n",
            (27, 10),
            "membership.quorum",
            "invalid type: integer `1`, expected a boolean",
        ),
    ];
    for (body, at, key, fragment) in cases {
        assert_error(&with_membership(body), at, key, &[fragment]);
    }
}

#[test]
fn the_heartbeat_must_be_from_10_to_10000_ms() {
    let error = parse(&with_membership("heartbeat_ms = 5\n")).expect_err("too short");
    assert_eq!(
        error.to_string(),
        "farm.toml:27:16: membership.heartbeat_ms: 5 is out of range; expected an integer from 10 to 10000"
    );
    for bad in ["9", "10001", "0", "-100", "9223372036854775808"] {
        assert_error(
            &with_membership(&format!("heartbeat_ms = {bad}\ndead_after_ms = 600000\n")),
            (27, 16),
            "membership.heartbeat_ms",
            &[&format!(
                "{bad} is out of range; expected an integer from 10 to 10000"
            )],
        );
    }
}

#[test]
fn a_node_is_dead_after_at_least_three_heartbeats() {
    let error = parse(&with_membership(
        "heartbeat_ms = 100\ndead_after_ms = 250\n",
    ))
    .expect_err("less than three heartbeats");
    assert_eq!(
        error.to_string(),
        "farm.toml:28:17: membership.dead_after_ms: 250 is less than 3 × heartbeat_ms = 3 × 100 = 300; \
         expected an integer from 300 to 600000, so that a node is declared dead only after 3 \
         heartbeats are missed"
    );
    // Keys in any order: the error is still on dead_after_ms, and names the heartbeat.
    assert_error(
        &with_membership("dead_after_ms = 2999\nheartbeat_ms = 1000\n"),
        (27, 17),
        "membership.dead_after_ms",
        &["2999 is less than 3 × heartbeat_ms = 3 × 1000 = 3000; expected an integer from 3000 to 600000"],
    );
    // Without heartbeat_ms, its default counts and is said to be one.
    let error = parse(&with_membership("dead_after_ms = 100\n")).expect_err("default heartbeat");
    assert_eq!(
        error.to_string(),
        "farm.toml:27:17: membership.dead_after_ms: 100 is less than 3 × heartbeat_ms = 3 × 40 \
         (the default) = 120; expected an integer from 120 to 600000, so that a node is declared \
         dead only after 3 heartbeats are missed"
    );
    for bad in ["0", "-500"] {
        assert_error(
            &with_membership(&format!("dead_after_ms = {bad}\n")),
            (27, 17),
            "membership.dead_after_ms",
            &[&format!("{bad} is less than 3 × heartbeat_ms")],
        );
    }
}

#[test]
fn a_heartbeat_too_slow_for_the_default_dead_after_is_reported_on_the_heartbeat() {
    let error =
        parse(&with_membership("drain_s = 5\nheartbeat_ms = 100\n")).expect_err("3 × 100 > 160");
    assert_eq!(
        error.to_string(),
        "farm.toml:28:16: membership.heartbeat_ms: 3 × 100 = 300 is more than dead_after_ms = 160 \
         (the default); expected an integer from 10 to 53, or dead_after_ms set to at least 300, \
         so that a node is declared dead only after 3 heartbeats are missed"
    );
    assert_error(
        &with_membership("heartbeat_ms = 54\n"),
        (27, 16),
        "membership.heartbeat_ms",
        &["3 × 54 = 162 is more than dead_after_ms = 160 (the default)"],
    );
}

#[test]
fn a_node_is_dead_after_at_most_ten_minutes() {
    let error = parse(&with_membership("dead_after_ms = 600001\n")).expect_err("too long");
    assert_eq!(
        error.to_string(),
        "farm.toml:27:17: membership.dead_after_ms: 600001 is out of range; expected an integer from 120 to 600000"
    );
    assert_error(
        &with_membership("heartbeat_ms = 10\ndead_after_ms = 18446744073709551616\n"),
        (28, 17),
        "membership.dead_after_ms",
        &["18446744073709551616 is out of range; expected an integer from 30 to 600000"],
    );
}

#[test]
fn the_drain_must_be_from_0_to_3600_s() {
    let error = parse(&with_membership("drain_s = 3601\n")).expect_err("too long");
    assert_eq!(
        error.to_string(),
        "farm.toml:27:11: membership.drain_s: 3601 is out of range; expected an integer from 0 to 3600"
    );
    assert_error(
        &with_membership("drain_s = -1\n"),
        (27, 11),
        "membership.drain_s",
        &["-1 is out of range; expected an integer from 0 to 3600"],
    );
}

#[test]
fn a_quorum_needs_three_nodes() {
    let error = parse(&with_membership("quorum = true\n")).expect_err("two nodes");
    assert_eq!(
        error.to_string(),
        "farm.toml:27:10: membership.quorum: `true` needs at least 3 nodes, and the farm has 2; \
         expected `false` for a farm of fewer than 3 nodes, where the loss of one node could leave \
         no side with a majority and stop the whole farm"
    );
    let (farm, nodes, rules) = base_parts();
    let one_node = &nodes[..nodes.rfind("[[node]]").expect("BASE has two nodes")];
    let text = format!("membership = {{ drain_s = 0, quorum = true }}\n{farm}{one_node}{rules}");
    assert_error(
        &text,
        (1, column_of(&text, 1, "true")),
        "membership.quorum",
        &["`true` needs at least 3 nodes, and the farm has 1"],
    );
}

#[test]
fn membership_errors_come_after_those_of_the_nodes_and_rules() {
    // The nodes are checked before quorum, which counts them.
    assert_error(
        &format!(
            "{}quorum = true\n",
            with_membership("").replacen("weight = 2", "weight = -2", 1)
        ),
        (16, 10),
        "node[1].weight",
        &["-2 is out of range"],
    );
    // Within the table, the heartbeat comes first.
    assert_error(
        &with_membership("dead_after_ms = 1\nheartbeat_ms = 1\n"),
        (28, 16),
        "membership.heartbeat_ms",
        &["1 is out of range; expected an integer from 10 to 10000"],
    );
}

// Files.

#[test]
fn an_unreadable_file_is_named() {
    let path = Path::new("/nonexistent/herd/farm.toml");
    let error = FarmConfig::load(path).expect_err("no such file");
    assert_eq!(error.location, None);
    assert!(
        error
            .to_string()
            .starts_with("/nonexistent/herd/farm.toml: cannot read: "),
        "{error}"
    );
}

#[test]
fn a_file_that_is_not_utf8_is_located() {
    let path = std::env::temp_dir().join(format!("herd-config-test-{}.toml", std::process::id()));
    let mut bytes = BASE.as_bytes().to_vec();
    let at = BASE.find("web").expect("BASE names the farm");
    bytes[at + 1] = 0xff;
    std::fs::write(&path, &bytes).expect("write a temporary file");
    let error = FarmConfig::load(&path).expect_err("not UTF-8");
    std::fs::remove_file(&path).expect("remove the temporary file");
    assert_eq!(error.location, Some((2, 10)));
    assert_eq!(error.key, "(top level)");
    assert!(
        error.message.contains("expected a UTF-8 text file"),
        "{error}"
    );
}

#[test]
fn a_file_larger_than_the_limit_is_refused_unread() {
    let dir = std::env::temp_dir();
    let limit = usize::try_from(FarmConfig::MAX_FILE_SIZE).expect("the limit fits in memory");
    // Padded with a comment to exactly the limit: still read.
    let mut text = format!("{BASE}#");
    text.push_str(&" ".repeat(limit - text.len()));
    let at_limit = dir.join(format!("herd-config-limit-{}.toml", std::process::id()));
    std::fs::write(&at_limit, &text).expect("write a temporary file");
    let loaded = FarmConfig::load(&at_limit);
    text.push(' ');
    let over = dir.join(format!("herd-config-over-{}.toml", std::process::id()));
    std::fs::write(&over, &text).expect("write a temporary file");
    let refused = FarmConfig::load(&over);
    std::fs::remove_file(&at_limit).expect("remove the temporary file");
    std::fs::remove_file(&over).expect("remove the temporary file");
    assert!(loaded.is_ok(), "{loaded:?}");
    let error = refused.expect_err("one byte over the limit");
    assert_eq!((error.location, error.key.as_str()), (None, ""));
    assert_eq!(
        error.to_string(),
        format!(
            "{}: the file is larger than {limit} bytes; expected a configuration file of at most {limit} bytes",
            over.display()
        )
    );
}

#[test]
fn an_endless_file_is_refused() {
    let error = FarmConfig::load(Path::new("/dev/zero")).expect_err("endless");
    assert!(
        error.message.starts_with("the file is larger than"),
        "{error}"
    );
}

#[test]
fn integers_beyond_i64_are_out_of_range_like_any_other() {
    assert_error(
        &base_with("buckets = 4096", "buckets = 9223372036854775808"),
        (5, 11),
        "farm.buckets",
        &["9223372036854775808 is out of range; expected a power of two from 64 to 65536"],
    );
    assert_error(
        &base_with("port = 7400", "port = -9223372036854775809"),
        (7, 8),
        "farm.port",
        &["-9223372036854775809 is out of range; expected an integer from 1 to 65535"],
    );
    assert_error(
        &base_with("weight = 2", "weight = 0xffffffffffffffffffffffffffffffff"),
        (16, 10),
        "node[1].weight",
        &["340282366920938463463374607431768211455 is out of range; expected an integer from"],
    );
    assert_error(
        &base_with(
            "port = 7400",
            "port = 1000000000000000000000000000000000000000000",
        ),
        (7, 8),
        "farm.port",
        &["1000000000000000000000000000000000000000000 is out of range; expected an integer from"],
    );
}

#[test]
fn a_datetime_is_called_a_datetime() {
    assert_error(
        &base_with(
            "hash_key = \"00112233445566778899aabbccddeeff\"",
            "hash_key = 1979-05-27",
        ),
        (6, 12),
        "farm.hash_key",
        &["invalid type: datetime, expected a string of 32 hex digits"],
    );
    assert_error(
        &base_with("port = 7400", "port = 07:32:00"),
        (7, 8),
        "farm.port",
        &["invalid type: datetime, expected an integer"],
    );
    assert_error(
        &base_with("port = 7400", "port = { a = 1 }"),
        (7, 8),
        "farm.port",
        &["invalid type: table, expected an integer"],
    );
}

#[test]
fn syntax_errors_without_an_expectation_get_one() {
    assert_error(
        &base_with("port = 7400", "port = 07400"),
        (7, 8),
        "farm.port",
        &["unexpected leading zero; expected a decimal integer without leading zeros"],
    );
    assert_error(
        &base_with("port = 7400", "port = 1e999"),
        (7, 8),
        "farm.port",
        &["floating-point number overflowed; expected a finite floating-point number"],
    );
    let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
    let error =
        parse(&base_with("port = 7400", &format!("port = {deep}"))).expect_err("nested too deeply");
    assert!(
        error
            .message
            .contains("expected arrays, inline tables and dotted keys nested at most 80 levels"),
        "{error}"
    );
    for text in [
        "[farm]\nx = 1 2\n",
        "[farm]\nport = +-1\n",
        "[farm]\nport = 1__0\n",
    ] {
        let error = parse(text).expect_err("not TOML");
        assert!(!error.message.contains("expected nothing"), "{error}");
        assert!(error.message.contains("expected"), "{error}");
    }
}

#[test]
fn duplicate_keys_in_inline_tables_and_dotted_keys_have_their_full_path() {
    assert_error(
        &base_with(
            "port = 7400",
            "port = 7400
x = {a = 1, a = 2}",
        ),
        (8, 13),
        "farm.x.a",
        &["duplicate key `a`; expected each key at most once per table"],
    );
    assert_error(
        &base_with(
            "port = 7400",
            "port = 7400
a.b = 1
a . b = 2",
        ),
        (9, 5),
        "farm.a.b",
        &["duplicate key `b`"],
    );
    assert_error(
        &base_with(
            "weight = 2",
            "weight = 2
x = [{ y.z = 1, y.z = 2 }]",
        ),
        (17, 19),
        "node[1].x[0].y.z",
        &["duplicate key `z`"],
    );
}

#[test]
fn a_table_defined_two_ways_says_which() {
    let (farm, nodes, rules) = base_parts();
    let dotted = format!("farm.name = \"web\"\n{farm}{nodes}{rules}");
    let error = parse(&dotted).expect_err("[farm] after farm.name");
    assert_eq!((error.location, error.key.as_str()), (Some((2, 2)), "farm"));
    assert_eq!(
        error.message,
        "[farm] redefines table `farm`, already defined by dotted keys or an inline table; \
         expected either those keys or the [farm] table, not both"
    );
    let inline_array = format!("rule = []\n{farm}{nodes}{rules}");
    let error = parse(&inline_array).expect_err("[[rule]] after rule = []");
    assert_eq!(error.key, "rule", "{error}");
    assert!(
        error
            .message
            .starts_with("[[rule]] adds to the array `rule = [...]` written above"),
        "{error}"
    );
    assert!(!error.message.contains("write [[rule]]"), "{error}");
    assert_error(
        &format!("{farm}[farm.x]\n[farm.x]\n{nodes}{rules}"),
        (10, 7),
        "farm.x",
        &["table [farm.x] is defined twice; expected each table once"],
    );
}

#[test]
fn control_characters_in_values_are_escaped() {
    assert_error(
        &base_with("name = \"web\"", "name = \"w\\neb\""),
        (2, 8),
        "farm.name",
        &["`w\\neb` contains '\\n'"],
    );
    let long = format!("{}\\t", "a".repeat(70));
    assert_error(
        &base_with("interface = \"eth0\"", &format!("interface = \"{long}\"")),
        (4, 13),
        "farm.interface",
        &["\\t` is 71 bytes long"],
    );
    let error = parse(&base_with("address = \"198.18.0.1\"", "address = \"x\\r\""))
        .expect_err("not an address");
    assert!(
        error.message.starts_with("`x\\r` is not an IP address"),
        "{error}"
    );
    assert!(!error.message.contains('\r'), "{error}");
}

// The [[check]] entries.

/// `BASE` followed by `text` (`[[check]]` entries, a `[scripts]` table), which starts on
/// line 26.
fn with(text: &str) -> String {
    format!("{BASE}\n{text}")
}

/// The error `text` is rejected with, as shown.
#[track_caller]
fn shown(text: &str) -> String {
    parse(text)
        .expect_err("the configuration should be rejected")
        .to_string()
}

/// A valid `tcp` check of five lines: lines 26 to 30 when first, so that what follows it
/// starts on line 31.
const TCP: &str = "[[check]]\nname = \"port\"\nkind = \"tcp\"\nhost = \"127.0.0.1\"\nport = 80\n";

#[test]
fn check_entries_must_be_tables_given_as_an_array() {
    assert_eq!(
        shown(&with("[check]\nname = \"a\"\n")),
        "farm.toml:26:1: check: invalid type: table, expected an array of tables: [[check]] entries"
    );
    assert_eq!(
        shown(&format!("check = [1]\n{BASE}")),
        "farm.toml:1:10: check[0]: invalid type: integer, expected a table: a [[check]] entry"
    );
    assert_eq!(
        shown(&with("[check]\nname = \"a\"\n[check]\n")),
        "farm.toml:28:2: check: table [check] is defined twice; expected [[check]] for every \
         entry of an array of tables"
    );
}

#[test]
fn unknown_check_keys_are_located_and_get_a_suggestion() {
    assert_eq!(
        shown(&with(
            "[[check]]\nname = \"a\"\nkind = \"address\"\nintervall_ms = 500\n"
        )),
        "farm.toml:29:1: check[0].intervall_ms: unknown key `intervall_ms` (did you mean \
         `interval_ms`?); expected one of `name`, `kind`, `interval_ms`, `timeout_ms`, `fall`, \
         `rise`, `action`, `host`, `port`, `url`, `status`, `body`, `process`, `command`, \
         `at_least`, `at_most`, `address`, `interface`, `run`"
    );
    assert_error(
        &with(&format!(
            "{TCP}[[check]]\nname = \"b\"\nkind = \"ping\"\nadress = \"198.18.0.254\"\n"
        )),
        (34, 1),
        "check[1].adress",
        &["unknown key `adress` (did you mean `address`?)"],
    );
    assert_eq!(
        shown(&with("[[checks]]\nname = \"a\"\n")),
        "farm.toml:26:3: checks: unknown key `checks` (did you mean `check`?); expected one of \
         `farm`, `node`, `rule`, `membership`, `dataplane`, `check`, `scripts`, `admin`"
    );
}

#[test]
fn required_check_keys_are_reported_at_their_entry() {
    let cases = [
        (
            "[[check]]\nkind = \"tcp\"\n",
            "check[1].name: required key `name` is missing; expected 1 to 63 characters from \
             A-Z, a-z, 0-9, `_`, `.` and `-`",
        ),
        (
            "[[check]]\nname = \"a\"\n",
            "check[1].kind: required key `kind` is missing; expected `tcp`, `http`, `process`, \
             `ping`, `interface`, `address` or `command`",
        ),
        (
            "[[check]]\nname = \"a\"\nkind = \"tcp\"\nport = 80\n",
            "check[1].host: required key `host` is missing; expected an IP address such as \
             127.0.0.1 or 2001:db8::1 (host names are not resolved)",
        ),
        (
            "[[check]]\nname = \"a\"\nkind = \"tcp\"\nhost = \"::1\"\n",
            "check[1].port: required key `port` is missing; expected an integer from 1 to 65535",
        ),
        (
            "[[check]]\nname = \"a\"\nkind = \"http\"\n",
            "check[1].url: required key `url` is missing; expected a URL starting with http://, \
             such as http://127.0.0.1:8080/health",
        ),
        (
            "[[check]]\nname = \"a\"\nkind = \"ping\"\n",
            "check[1].address: required key `address` is missing; expected an IP address such \
             as 127.0.0.1 or 2001:db8::1 (host names are not resolved)",
        ),
        (
            "[[check]]\nname = \"a\"\nkind = \"command\"\n",
            "check[1].run: required key `run` is missing; expected a shell command line, run \
             with `sh -c`",
        ),
    ];
    for (entry, error) in cases {
        assert_eq!(
            shown(&with(&format!("{TCP}{entry}"))),
            format!("farm.toml:31:1: {error}")
        );
    }
}

#[test]
fn a_key_of_another_kind_names_its_kind() {
    assert_eq!(
        shown(&with(&format!(
            "{TCP}[[check]]\nname = \"web\"\nkind = \"http\"\nurl = \"http://127.0.0.1/\"\nport = 80\n"
        ))),
        "farm.toml:35:8: check[1].port: `port` belongs to `tcp` checks, not to `http` checks; \
         expected only the keys of every check and those of `http` checks: `url`, `status` and \
         `body`"
    );
    assert_eq!(
        shown(&with(
            "[[check]]\nname = \"a\"\nkind = \"address\"\ninterface = \"eth0\"\n"
        )),
        "farm.toml:29:13: check[0].interface: `interface` belongs to `interface` checks, not to \
         `address` checks; expected only the keys of every check, as `address` checks have none \
         of their own"
    );
    // The first such key in the file is reported, whatever the order of the schema.
    assert_eq!(
        shown(&with(
            "[[check]]\nname = \"a\"\nkind = \"command\"\nrun = \"true\"\nat_most = 3\nhost = \"::1\"\n"
        )),
        "farm.toml:30:11: check[0].at_most: `at_most` belongs to `process` checks, not to \
         `command` checks; expected only the keys of every check and those of `command` checks: \
         `run`"
    );
    assert_error(
        &with("[[check]]\nname = \"a\"\nkind = \"tcp\"\nhost = \"::1\"\nport = 1\nrun = \"x\"\n"),
        (31, 7),
        "check[0].run",
        &["`run` belongs to `command` checks, not to `tcp` checks; expected only the keys of every check and those of `tcp` checks: `host` and `port`"],
    );
}

#[test]
fn the_kind_and_action_must_be_known_with_suggestions() {
    assert_eq!(
        shown(&with("[[check]]\nname = \"a\"\nkind = \"tpc\"\n")),
        "farm.toml:28:8: check[0].kind: `tpc` is not a check kind (did you mean `tcp`?); \
         expected `tcp`, `http`, `process`, `ping`, `interface`, `address` or `command`"
    );
    assert_error(
        &with("[[check]]\nname = \"a\"\nkind = \"https\"\n"),
        (28, 8),
        "check[0].kind",
        &["`https` is not a check kind (did you mean `http`?)"],
    );
    assert_eq!(
        shown(&with(&format!("{TCP}action = \"restrat\"\n"))),
        "farm.toml:31:10: check[0].action: `restrat` is not a check action (did you mean \
         `restart`?); expected `restart`, `stop`, `wait` or `log`"
    );
    assert_eq!(
        shown(&with(&format!("{TCP}action = \"reboot\"\n"))),
        "farm.toml:31:10: check[0].action: `reboot` is not a check action; expected `restart`, \
         `stop`, `wait` or `log`"
    );
    assert_error(
        &with(&format!("{TCP}action = \"Log\"\n")),
        (31, 10),
        "check[0].action",
        &["`Log` is not a check action (did you mean `log`?)"],
    );
}

#[test]
fn duplicate_check_names_are_rejected() {
    assert_eq!(
        shown(&with(&format!(
            "{TCP}[[check]]\nname = \"port\"\nkind = \"address\"\n"
        ))),
        "farm.toml:32:8: check[1].name: `port` is already the name of a check (line 27); \
         expected a name no other check has"
    );
    assert_error(
        &with("[[check]]\nname = \"a b\"\nkind = \"address\"\n"),
        (27, 8),
        "check[0].name",
        &["`a b` contains ' '; expected 1 to 63 characters"],
    );
    // A check may have the name of a node.
    assert!(parse(&with("[[check]]\nname = \"alpha\"\nkind = \"address\"\n")).is_ok());
}

#[test]
fn check_numbers_must_be_in_range() {
    let cases = [
        ("interval_ms", "99", "100 to 3600000"),
        ("interval_ms", "3600001", "100 to 3600000"),
        ("timeout_ms", "9", "10 to 1000"),
        ("timeout_ms", "-1", "10 to 1000"),
        ("fall", "0", "1 to 100"),
        ("fall", "101", "1 to 100"),
        ("rise", "0", "1 to 100"),
        ("rise", "101", "1 to 100"),
    ];
    for (key, bad, range) in cases {
        // The key is on line 31, after TCP; its value after `{key} = `.
        assert_eq!(
            shown(&with(&format!("{TCP}{key} = {bad}\n"))),
            format!(
                "farm.toml:31:{}: check[0].{key}: {bad} is out of range; expected an integer \
                 from {range}",
                key.len() + 4
            ),
        );
    }
    for bad in ["0", "65536", "-80"] {
        assert_eq!(
            shown(&with(&TCP.replacen(
                "port = 80",
                &format!("port = {bad}"),
                1
            ))),
            format!(
                "farm.toml:30:8: check[0].port: {bad} is out of range; expected an integer from \
                 1 to 65535"
            ),
        );
    }
    assert_error(
        &with(&format!("{TCP}fall = \"3\"\n")),
        (31, 8),
        "check[0].fall",
        &["invalid type: string \"3\", expected an integer"],
    );
}

#[test]
fn the_timeout_must_not_exceed_the_interval() {
    assert_eq!(
        shown(&with(&format!(
            "{TCP}interval_ms = 1500\ntimeout_ms = 2000\n"
        ))),
        "farm.toml:32:14: check[0].timeout_ms: 2000 is more than interval_ms = 1500; expected an \
         integer from 10 to 1500, as a probe's timeout must not exceed interval_ms"
    );
    assert_eq!(
        shown(&with(&format!("{TCP}timeout_ms = 1001\n"))),
        "farm.toml:31:14: check[0].timeout_ms: 1001 is more than interval_ms = 1000 (the \
         default); expected an integer from 10 to 1000, as a probe's timeout must not exceed \
         interval_ms"
    );
    // Without timeout_ms, its default must fit the interval: the interval is at fault.
    assert_eq!(
        shown(&with(&format!("{TCP}interval_ms = 500\n"))),
        "farm.toml:31:15: check[0].interval_ms: 500 is less than timeout_ms = 1000 (the \
         default); expected an integer from 1000 to 3600000, or timeout_ms set to at most 500, \
         as a probe's timeout must not exceed interval_ms"
    );
    assert!(parse(&with(&format!(
        "{TCP}interval_ms = 500\ntimeout_ms = 500\n"
    )))
    .is_ok());
}

#[test]
fn tcp_and_ping_targets_must_be_ip_addresses() {
    assert_eq!(
        shown(&with(&TCP.replacen("\"127.0.0.1\"", "\"localhost\"", 1))),
        "farm.toml:29:8: check[0].host: `localhost` is not an IP address; expected an IP address \
         such as 127.0.0.1 or 2001:db8::1 (host names are not resolved)"
    );
    for (bad, problem) in [
        ("0.0.0.0", "is the unspecified address"),
        ("::", "is the unspecified address"),
        ("224.0.0.1", "is a multicast address"),
        ("255.255.255.255", "is the broadcast address"),
    ] {
        assert_error(
            &with(&format!(
                "[[check]]\nname = \"gw\"\nkind = \"ping\"\naddress = \"{bad}\"\n"
            )),
            (29, 11),
            "check[0].address",
            &[&format!("`{bad}` {problem}; expected an IP address")],
        );
    }
}

#[test]
fn http_urls_must_be_plain_http() {
    let http = |url: &str| {
        with(&format!(
            "[[check]]\nname = \"web\"\nkind = \"http\"\nurl = \"{url}\"\n"
        ))
    };
    assert_eq!(
        shown(&http("https://127.0.0.1/health")),
        "farm.toml:29:7: check[0].url: `https://127.0.0.1/health` is an HTTPS URL, and HTTPS is \
         not supported; expected a URL starting with http://, such as \
         http://127.0.0.1:8080/health; check the application over plain HTTP, or with a \
         `command` check such as `curl -fsS https://...`"
    );
    for (bad, problem) in [
        (
            "HTTPS://x/",
            "`HTTPS://x/` is an HTTPS URL, and HTTPS is not supported",
        ),
        (
            "127.0.0.1/health",
            "`127.0.0.1/health` does not start with http://",
        ),
        ("ftp://x/", "`ftp://x/` does not start with http://"),
        ("http://", "`http://` has no valid host"),
        ("http:///health", "`http:///health` has no valid host"),
        ("http://:80/", "`http://:80/` has no valid host"),
        ("http://[::1/", "`http://[::1/` has no valid host"),
        ("http://x/a b", "`http://x/a b` contains ' '"),
        ("http://x:0/", "`0` in `http://x:0/` is not a port"),
        (
            "http://x:65536/",
            "`65536` in `http://x:65536/` is not a port",
        ),
        ("http://x:/", "`` in `http://x:/` is not a port"),
        ("http://x:8o/", "`8o` in `http://x:8o/` is not a port"),
        (
            "http://::1:80/",
            "`http://::1:80/` has an IPv6 address that is not in brackets",
        ),
    ] {
        assert_error(
            &http(bad),
            (29, 7),
            "check[0].url",
            &[&format!("{problem}; expected")],
        );
    }
    for good in [
        "http://localhost",
        "http://10.0.0.1:8080",
        "http://[2001:db8::1]/",
        "http://x?a=b",
        "http://x#top",
    ] {
        assert!(parse(&http(good)).is_ok(), "{good}");
    }
}

#[test]
fn http_statuses_are_a_range_from_100_to_599() {
    let status = |status: &str| {
        with(&format!(
            "[[check]]\nname = \"web\"\nkind = \"http\"\nurl = \"http://x/\"\nstatus = {status}\n"
        ))
    };
    assert_eq!(
        shown(&status("\"399-200\"")),
        "farm.toml:30:10: check[0].status: `399-200` is reversed (399 > 200); expected \"N\" or \
         \"N-M\" (100 <= N <= M <= 599), such as \"200-399\""
    );
    for (bad, problem) in [
        ("200-600", "status 600 in `200-600` is out of range"),
        ("99", "status 99 in `99` is out of range"),
        (
            "99999999999999999999",
            "status 99999999999999999999 in `99999999999999999999` is out of range",
        ),
        ("2xx", "`2xx` is not an HTTP status or status range"),
        ("200-", "`200-` is not an HTTP status or status range"),
        (
            "200 - 399",
            "`200 - 399` is not an HTTP status or status range",
        ),
        ("", "`` is not an HTTP status or status range"),
    ] {
        assert_error(
            &status(&format!("\"{bad}\"")),
            (30, 10),
            "check[0].status",
            &[&format!(
                "{problem}; expected \"N\" or \"N-M\" (100 <= N <= M <= 599)"
            )],
        );
    }
    assert_eq!(
        shown(&status("200")),
        "farm.toml:30:10: check[0].status: invalid type: integer `200`, expected a string such \
         as \"200\" or \"200-399\""
    );
}

#[test]
fn an_http_body_cannot_be_empty() {
    assert_eq!(
        shown(&with(
            "[[check]]\nname = \"web\"\nkind = \"http\"\nurl = \"http://x/\"\nbody = \"\"\n"
        )),
        "farm.toml:30:8: check[0].body: the text is empty, and every body contains it; expected \
         text the body must contain, or no `body` key"
    );
}

/// A `process` check (lines 26 to 28) with `keys` from line 29.
fn process(keys: &str) -> String {
    with(&format!(
        "[[check]]\nname = \"app\"\nkind = \"process\"\n{keys}"
    ))
}

#[test]
fn a_process_check_takes_exactly_one_of_process_and_command() {
    assert_eq!(
        shown(&process(
            "process = \"nginx\"\ncommand = \"nginx: master\"\n"
        )),
        "farm.toml:30:11: check[0].command: both `process` and `command` are set; expected \
         exactly one of `process`, the process name (as in /proc/PID/comm), or `command`, a \
         regular expression matched against the full command line"
    );
    // On the second, in file order.
    assert_error(
        &process("command = \"nginx: master\"\nprocess = \"nginx\"\n"),
        (30, 11),
        "check[0].process",
        &["both `process` and `command` are set"],
    );
    assert_eq!(
        shown(&process("at_least = 2\n")),
        "farm.toml:26:1: check[0].process: neither `process` nor `command` is set; expected \
         exactly one of `process`, the process name (as in /proc/PID/comm), or `command`, a \
         regular expression matched against the full command line"
    );
}

#[test]
fn a_process_command_must_be_a_valid_regular_expression() {
    assert_eq!(
        shown(&process("command = \"nginx: (master\"\n")),
        "farm.toml:29:11: check[0].command: `nginx: (master` is not a valid regular expression: \
         unclosed group; expected a regular expression (of the Rust `regex` crate) matched \
         against the full command line, such as \"^/usr/sbin/nginx\""
    );
    for (bad, reason) in [
        ("[a-", "unclosed character class"),
        ("*nginx", "repetition operator missing expression"),
        (
            "a{99999999}",
            "compiled regex exceeds size limit of 10485760 bytes",
        ),
    ] {
        assert_error(
            &process(&format!("command = \"{bad}\"\n")),
            (29, 11),
            "check[0].command",
            &[&format!(
                "`{bad}` is not a valid regular expression: {reason}; expected a regular expression"
            )],
        );
    }
    assert_error(
        &process("command = '\\q'\n"),
        (29, 11),
        "check[0].command",
        &["`\\\\q` is not a valid regular expression: unrecognized escape sequence"],
    );
    assert_eq!(
        shown(&process("command = \"\"\n")),
        "farm.toml:29:11: check[0].command: the regular expression is empty, and would match \
         every process; expected a regular expression (of the Rust `regex` crate) matched \
         against the full command line, such as \"^/usr/sbin/nginx\""
    );
}

#[test]
fn a_process_name_is_at_most_15_bytes() {
    assert_eq!(
        shown(&process("process = \"php-fpm: master process\"\n")),
        "farm.toml:29:11: check[0].process: `php-fpm: master process` is 23 bytes long, and the \
         kernel keeps only the first 15 bytes of a process name; expected a process name as in \
         /proc/PID/comm: 1 to 15 bytes without control characters, such as `php-fpm: master`, \
         or a `command` regular expression"
    );
    // The suggestion cuts at a character boundary.
    assert_error(
        &process("process = \"abcdefghijklmné\"\n"),
        (29, 11),
        "check[0].process",
        &["is 16 bytes long", "such as `abcdefghijklmn`"],
    );
    assert_error(
        &process("process = \"\"\n"),
        (29, 11),
        "check[0].process",
        &["the process name is empty; expected a process name as in /proc/PID/comm"],
    );
    assert_error(
        &process("process = \"a\\tb\"\n"),
        (29, 11),
        "check[0].process",
        &["`a\\tb` contains '\\t'"],
    );
}

#[test]
fn process_counts_must_be_in_range_and_in_order() {
    for (bad, key) in [
        ("-1", "at_least"),
        ("100001", "at_least"),
        ("100001", "at_most"),
    ] {
        let range = if key == "at_least" { "0" } else { "1" };
        assert_eq!(
            shown(&process(&format!("process = \"x\"\n{key} = {bad}\n"))),
            format!(
                "farm.toml:30:{}: check[0].{key}: {bad} is out of range; expected an integer \
                 from {range} to 100000",
                key.len() + 4
            )
        );
    }
    assert_eq!(
        shown(&process("process = \"x\"\nat_least = 5\nat_most = 4\n")),
        "farm.toml:31:11: check[0].at_most: 4 is less than at_least = 5; expected an integer \
         from 5 to 100000"
    );
    assert_eq!(
        shown(&process("process = \"x\"\nat_most = 0\n")),
        "farm.toml:30:11: check[0].at_most: 0 is less than at_least = 1 (the default); expected \
         an integer from 1 to 100000"
    );
    assert_eq!(
        shown(&process("process = \"x\"\nat_least = 0\n")),
        "farm.toml:30:12: check[0].at_least: 0 without `at_most` holds whatever runs, so the \
         check could never fail; expected an integer from 1 to 100000, or an `at_most` key"
    );
}

#[test]
fn a_check_interface_follows_linux_rules_and_a_command_is_not_empty() {
    assert_error(
        &with("[[check]]\nname = \"link\"\nkind = \"interface\"\ninterface = \"eth0:1\"\n"),
        (29, 13),
        "check[0].interface",
        &["`eth0:1` contains ':'; expected a Linux interface name"],
    );
    assert_eq!(
        shown(&with(
            "[[check]]\nname = \"db\"\nkind = \"command\"\nrun = \" \"\n"
        )),
        "farm.toml:29:7: check[0].run: the command line is empty; expected a shell command line, \
         run with `sh -c`"
    );
}

#[test]
fn at_most_64_checks() {
    let entries: String = (0..65)
        .map(|i| format!("[[check]]\nname = \"c{i}\"\nkind = \"address\"\n"))
        .collect();
    assert_eq!(
        shown(&with(&entries)),
        format!(
            "farm.toml:{}:1: check[64]: 65 checks are too many; expected at most 64 [[check]] \
             entries",
            26 + 64 * 3
        )
    );
}

#[test]
fn check_errors_come_after_those_of_the_dataplane() {
    assert_error(
        &format!("[[check]]\nname = \"a\"\n{BASE}\n[dataplane]\nbatch = 0\n"),
        (29, 9),
        "dataplane.batch",
        &["0 is out of range"],
    );
}

// The [scripts] table.

#[test]
fn the_scripts_must_be_a_table_given_once() {
    assert_eq!(
        shown(&with("[[scripts]]\nstart = \"a\"\n")),
        "farm.toml:26:1: scripts: invalid type: array, expected a table: [scripts]"
    );
    assert_eq!(
        shown(&format!("scripts = \"start.sh\"\n{BASE}")),
        "farm.toml:1:11: scripts: invalid type: string, expected a table: [scripts]"
    );
    assert_error(
        &with("[scripts]\nstart = \"a\"\n[scripts]\n"),
        (28, 2),
        "scripts",
        &["table [scripts] is defined twice; expected each table once"],
    );
    assert_eq!(
        shown(&with("[scripts]\nrestart_limit = [3, 86400]\n")),
        "farm.toml:27:17: scripts.restart_limit: invalid type: array, expected a table: \
         restart_limit = { count = N, within_s = S }"
    );
    assert_error(
        &with("[scripts]\nrestart_limit = 3\n"),
        (27, 17),
        "scripts.restart_limit",
        &["invalid type: integer, expected a table: restart_limit = { count = N, within_s = S }"],
    );
}

#[test]
fn unknown_scripts_keys_are_located_and_get_a_suggestion() {
    assert_eq!(
        shown(&with("[scripts]\ntimeout = 5\n")),
        "farm.toml:27:1: scripts.timeout: unknown key `timeout` (did you mean `timeout_s`?); \
         expected one of `start`, `stop`, `timeout_s`, `restart_limit`"
    );
    assert_eq!(
        shown(&with(
            "[scripts]\nrestart_limit = { count = 1, within = 5 }\n"
        )),
        "farm.toml:27:30: scripts.restart_limit.within: unknown key `within` (did you mean \
         `within_s`?); expected one of `count`, `within_s`"
    );
    assert_error(
        &with("[script]\nstart = \"a\"\n"),
        (26, 2),
        "script",
        &["unknown key `script` (did you mean `scripts`?); expected one of `farm`, `node`, `rule`, `membership`, `dataplane`, `check`, `scripts`, `admin`"],
    );
}

#[test]
fn scripts_numbers_must_be_in_range() {
    let cases = [
        (
            "timeout_s = 0\n",
            (27, 13),
            "scripts.timeout_s",
            "0",
            "1 to 3600",
        ),
        (
            "timeout_s = 3601\n",
            (27, 13),
            "scripts.timeout_s",
            "3601",
            "1 to 3600",
        ),
        (
            "restart_limit = { count = -1 }\n",
            (27, 27),
            "scripts.restart_limit.count",
            "-1",
            "0 to 1000",
        ),
        (
            "restart_limit = { count = 1001 }\n",
            (27, 27),
            "scripts.restart_limit.count",
            "1001",
            "0 to 1000",
        ),
        (
            "restart_limit = { within_s = 0 }\n",
            (27, 30),
            "scripts.restart_limit.within_s",
            "0",
            "1 to 31536000",
        ),
        (
            "[scripts.restart_limit]\nwithin_s = 31536001\n",
            (28, 12),
            "scripts.restart_limit.within_s",
            "31536001",
            "1 to 31536000",
        ),
    ];
    for (body, (line, column), key, bad, range) in cases {
        assert_eq!(
            shown(&with(&format!("[scripts]\n{body}"))),
            format!(
                "farm.toml:{line}:{column}: {key}: {bad} is out of range; expected an integer from {range}"
            ),
            "{body}"
        );
    }
}

#[test]
fn scripts_cannot_be_empty_command_lines() {
    assert_eq!(
        shown(&with("[scripts]\nstart = \"\"\n")),
        "farm.toml:27:9: scripts.start: the command line is empty; expected a shell command \
         line, run with `sh -c`, or no `start` key"
    );
    assert_error(
        &with("[scripts]\nstart = \"a\"\nstop = \"\\t\"\n"),
        (28, 8),
        "scripts.stop",
        &["the command line is empty; expected a shell command line, run with `sh -c`, or no `stop` key"],
    );
    assert_error(
        &with("[scripts]\nstart = true\n"),
        (27, 9),
        "scripts.start",
        &["invalid type: boolean `true`, expected a string"],
    );
}

// The [admin] table.

#[test]
fn the_admin_must_be_a_table_given_once() {
    assert_eq!(
        shown(&with("[[admin]]\nmetrics = \"127.0.0.1:9477\"\n")),
        "farm.toml:26:1: admin: invalid type: array, expected a table: [admin]"
    );
    assert_eq!(
        shown(&format!("admin = \"127.0.0.1:9477\"\n{BASE}")),
        "farm.toml:1:9: admin: invalid type: string, expected a table: [admin]"
    );
    assert_error(
        &with("[admin]\nmetrics = \"127.0.0.1:9477\"\n[admin]\n"),
        (28, 2),
        "admin",
        &["table [admin] is defined twice; expected each table once"],
    );
}

#[test]
fn unknown_admin_keys_are_located_and_get_a_suggestion() {
    assert_eq!(
        shown(&with("[admin]\nmetric = \"127.0.0.1:9477\"\n")),
        "farm.toml:27:1: admin.metric: unknown key `metric` (did you mean `metrics`?); \
         expected one of `metrics`, `console`, `console_secret_file`"
    );
    assert_error(
        &with("[admin]\nmetrics = \"127.0.0.1:9477\"\nhealthz = \"/healthz\"\n"),
        (28, 1),
        "admin.healthz",
        &["unknown key `healthz`; expected one of `metrics`, `console`, `console_secret_file`"],
    );
    assert_error(
        &with("[admn]\nmetrics = \"127.0.0.1:9477\"\n"),
        (26, 2),
        "admn",
        &[
            "unknown key `admn` (did you mean `admin`?); expected one of `farm`, `node`, `rule`, \
           `membership`, `dataplane`, `check`, `scripts`, `admin`",
        ],
    );
}

#[test]
fn the_metrics_address_must_be_an_address_and_a_port() {
    let expected =
        "expected an IP address and a port from 1 to 65535, such as \"127.0.0.1:9477\", \
                    \"0.0.0.0:9477\" or \"[::1]:9477\" (host names are not resolved)";
    assert_eq!(
        shown(&with("[admin]\nmetrics = \"127.0.0.1:99999\"\n")),
        format!(
            "farm.toml:27:11: admin.metrics: `127.0.0.1:99999` is not an IP address and port; \
             {expected}"
        )
    );
    let cases = [
        (
            "localhost:9477",
            "`localhost:9477` is not an IP address and port",
        ),
        ("", "`` is not an IP address and port"),
        ("9477", "`9477` is not an IP address and port"),
        (":9477", "`:9477` is not an IP address and port"),
        ("::1:9477", "`::1:9477` has no port"),
        ("127.0.0.1", "`127.0.0.1` has no port"),
        ("127.0.0.1:0", "`127.0.0.1:0` has port 0"),
        ("[::1]:0", "`[::1]:0` has port 0"),
        ("224.0.0.1:9477", "`224.0.0.1:9477` is a multicast address"),
        ("[ff02::1]:9477", "`[ff02::1]:9477` is a multicast address"),
        (
            "127.0.0.1:9477\\n",
            "`127.0.0.1:9477\\n` is not an IP address and port",
        ),
    ];
    for (written, problem) in cases {
        assert_error(
            &with(&format!("[admin]\nmetrics = \"{written}\"\n")),
            (27, 11),
            "admin.metrics",
            &[&format!("{problem}; {expected}")],
        );
    }
    for value in ["9477", "true", "[\"127.0.0.1:9477\"]", "{ port = 9477 }"] {
        assert_error(
            &with(&format!("[admin]\nmetrics = {value}\n")),
            (27, 11),
            "admin.metrics",
            &["expected a string such as \"127.0.0.1:9477\" or \"[::1]:9477\""],
        );
    }
}

#[test]
fn the_console_address_is_checked_as_the_metrics_one() {
    let expected =
        "expected an IP address and a port from 1 to 65535, such as \"127.0.0.1:9477\", \
                    \"0.0.0.0:9477\" or \"[::1]:9477\" (host names are not resolved)";
    let secret = "console_secret_file = \"/etc/herd/console.secret\"\n";
    let cases = [
        (
            "localhost:9480",
            "`localhost:9480` is not an IP address and port",
        ),
        ("127.0.0.1", "`127.0.0.1` has no port"),
        ("127.0.0.1:0", "`127.0.0.1:0` has port 0"),
        ("224.0.0.1:9480", "`224.0.0.1:9480` is a multicast address"),
    ];
    for (written, problem) in cases {
        assert_error(
            &with(&format!("[admin]\nconsole = \"{written}\"\n{secret}")),
            (27, 11),
            "admin.console",
            &[&format!("{problem}; {expected}")],
        );
    }
    assert_error(
        &with(&format!("[admin]\nconsole = 9480\n{secret}")),
        (27, 11),
        "admin.console",
        &["expected a string such as \"127.0.0.1:9477\" or \"[::1]:9477\""],
    );
}

#[test]
fn the_console_needs_its_secret_file() {
    assert_eq!(
        shown(&with("[admin]\nconsole = \"127.0.0.1:9480\"\n")),
        "farm.toml:26:1: admin.console_secret_file: required key `console_secret_file` is \
         missing; expected the path of the console's secret file, which the console needs"
    );
    assert_error(
        &with("[admin]\nconsole = \"127.0.0.1:9480\"\nconsole_secret_file = \"\"\n"),
        (28, 23),
        "admin.console_secret_file",
        &["the path is empty; expected the path of the console's secret file"],
    );
    assert_error(
        &with("[admin]\nconsole = \"127.0.0.1:9480\"\nconsole_secret_file = 600\n"),
        (28, 23),
        "admin.console_secret_file",
        &["invalid type: integer `600`, expected a string"],
    );
}

#[test]
fn admin_errors_come_after_those_of_the_scripts() {
    assert_error(
        &with("[admin]\nmetrics = \"nowhere\"\n[scripts]\ntimeout_s = 0\n"),
        (29, 13),
        "scripts.timeout_s",
        &["0 is out of range"],
    );
}
