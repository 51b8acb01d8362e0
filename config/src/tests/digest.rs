//! The digest covers exactly the farm-wide values.

use super::{base_with, parse, BASE};
use crate::{Admin, Dataplane, FarmDigest, Membership, Scripts};

fn digest(text: &str) -> FarmDigest {
    parse(text)
        .unwrap_or_else(|error| panic!("{error}\n{text}"))
        .digest()
}

#[test]
fn layout_comments_key_order_and_spelling_do_not_matter() {
    let reformatted = r#"
        # The same farm, written differently.
        [[node]]
        address = "198.18.0.1"   # alpha
        name    = 'alpha'
        weight  = 1
        [[node]]
        weight = 2
        address = "198.18.0.2"
        name = "bravo"

        [farm]
        port = 7400
        hash_key = "00112233445566778899AABBCCDDEEFF"
        buckets = 4_096
        interface = "eth0"
        vip = [ "198.18.0.100", "2001:0db8:0000::0100" ]
        name = "web"
        auth_key_file = "/etc/herd/farm.key"

        [[rule]]
        ports = ["80-80", "443", "8000-8099"]
        protocol = "tcp"
        affinity = "client-ip"
        [[rule]]
        affinity = "client-ip-port"
        protocol = "udp"
        ports = ["*"]
    "#;
    assert_eq!(digest(reformatted), digest(BASE));
}

#[test]
fn every_farm_wide_value_changes_it() {
    let changes = [
        ("name = \"web\"", "name = \"web2\""),
        (
            "\"198.18.0.100\", \"2001:db8::100\"",
            "\"2001:db8::100\", \"198.18.0.100\"",
        ),
        (
            "\"198.18.0.100\", \"2001:db8::100\"",
            "\"198.18.0.100\", \"2001:db8::101\"",
        ),
        ("\"198.18.0.100\", \"2001:db8::100\"", "\"198.18.0.100\""),
        ("buckets = 4096", "buckets = 1024"),
        ("aabbccddeeff\"", "aabbccddeefe\""),
        ("port = 7400", "port = 7401"),
        ("name = \"alpha\"", "name = \"alpha2\""),
        ("address = \"198.18.0.1\"", "address = \"198.18.0.3\""),
        ("address = \"198.18.0.1\"", "address = \"2001:db8::1\""),
        ("weight = 2", "weight = 3"),
        ("weight = 2", ""),
        ("protocol = \"udp\"", "protocol = \"icmp\""),
        ("\"8000-8099\"", "\"8000-8098\""),
        ("\"443\", \"8000-8099\"", "\"8000-8099\", \"443\""),
        ("affinity = \"client-ip-port\"", "affinity = \"client-ip\""),
        ("port = 7400", "port = 7400\nmac = \"multicast\""),
    ];
    let base = digest(BASE);
    for (from, to) in changes {
        assert_ne!(digest(&base_with(from, to)), base, "{from} -> {to}");
    }
    let swapped = BASE
        .replacen("name = \"alpha\"\naddress = \"198.18.0.1\"", "NODE", 1)
        .replacen(
            "name = \"bravo\"\naddress = \"198.18.0.2\"",
            "name = \"alpha\"\naddress = \"198.18.0.1\"",
            1,
        )
        .replacen("NODE", "name = \"bravo\"\naddress = \"198.18.0.2\"", 1);
    assert_ne!(digest(&swapped), base, "node order matters");
    let extra_node = format!("{BASE}\n[[node]]\nname = \"charlie\"\naddress = \"198.18.0.3\"\n");
    assert_ne!(digest(&extra_node), base);
    let extra_rule = format!("{BASE}\n[[rule]]\nprotocol = \"icmp\"\n");
    assert_ne!(digest(&extra_rule), base);
}

#[test]
fn host_local_values_do_not_change_it() {
    let base = digest(BASE);
    assert_eq!(
        digest(&base_with("interface = \"eth0\"", "interface = \"ens3\"")),
        base
    );
    let own_interface = base_with("weight = 2", "weight = 2\ninterface = \"eth7\"");
    assert_eq!(digest(&own_interface), base);
    let key_file = base_with(
        "port = 7400",
        "port = 7400\nauth_key_file = \"/run/herd.key\"",
    );
    assert_eq!(digest(&key_file), base);
    let unicast = base_with("port = 7400", "port = 7400\nmac = \"unicast\"");
    assert_eq!(digest(&unicast), base, "the default mode written out");
}

#[test]
fn the_dataplane_table_does_not_change_it() {
    let base = digest(BASE);
    let tables = [
        "[dataplane]\n",
        "[dataplane]\nmode = \"afxdp\"\n",
        "[dataplane]\ncores = [2, 3]\n",
        "[dataplane]\nzero_copy = \"on\"\n",
        "[dataplane]\nbatch = 512\n",
        "[dataplane]\nmode = \"afxdp\"\ncores = [7, 0]\nzero_copy = \"off\"\nbatch = 1\n",
    ];
    for table in tables {
        let text = format!("{BASE}\n{table}");
        let config = parse(&text).unwrap_or_else(|error| panic!("{error}\n{text}"));
        // The table must have been read, or equal digests would prove nothing.
        if table != "[dataplane]\n" {
            assert_ne!(config.dataplane, Dataplane::default(), "{table}");
        }
        assert_eq!(config.digest(), base, "{table}");
    }
}

#[test]
fn checks_and_scripts_do_not_change_it() {
    let additions = [
        "[[check]]\nname = \"vips\"\nkind = \"address\"\n",
        "[[check]]\nname = \"web\"\nkind = \"http\"\nurl = \"http://127.0.0.1/\"\n\
         [[check]]\nname = \"gw\"\nkind = \"ping\"\naddress = \"198.18.0.254\"\naction = \"wait\"\n",
        "[scripts]\nstart = \"systemctl start nginx\"\n",
        "[scripts]\ntimeout_s = 5\nrestart_limit = { count = 0, within_s = 60 }\n",
        "[[check]]\nname = \"nginx\"\nkind = \"process\"\nprocess = \"nginx\"\ninterval_ms = 200\n\
         timeout_ms = 100\nfall = 1\nrise = 1\naction = \"stop\"\n\
         [scripts]\nstart = \"nginx\"\nstop = \"nginx -s quit\"\n",
    ];
    for addition in additions {
        let text = format!("{BASE}\n{addition}");
        let config = parse(&text).unwrap_or_else(|error| panic!("{error}\n{text}"));
        // They must have been read, or equal digests would prove nothing.
        assert!(
            !config.checks.is_empty() || config.scripts != Scripts::default(),
            "{addition}"
        );
        assert_eq!(config.digest().to_string(), BASE_DIGEST, "{addition}");
    }
}

#[test]
fn the_admin_table_does_not_change_it() {
    for table in [
        "[admin]\n",
        "[admin]\nmetrics = \"127.0.0.1:9477\"\n",
        "[admin]\nmetrics = \"[::]:80\"\n",
        "[admin]\nconsole = \"127.0.0.1:9480\"\nconsole_secret_file = \"/etc/herd/console.secret\"\n",
    ] {
        let text = format!("{BASE}\n{table}");
        let config = parse(&text).unwrap_or_else(|error| panic!("{error}\n{text}"));
        // The table must have been read, or equal digests would prove nothing.
        if table != "[admin]\n" {
            assert_ne!(config.admin, Admin::default(), "{table}");
        }
        assert_eq!(config.digest().to_string(), BASE_DIGEST, "{table}");
    }
}

/// The digest of `BASE`, whose membership settings are today's defaults.
const BASE_DIGEST: &str = "04cfef49fa202dc65fc7ee89b506faf8ab5c5df686aae66236718e9c46baadfd";

/// The digest of `BASE` as computed before the `[membership]` table existed, when its defaults
/// were a heartbeat of 100 ms and a node dead after 500 ms.
const FIRST_DIGEST: &str = "5b862c844c6f0f10020032b2942275feea9d863b974b3781f5aa205014db69d0";

#[test]
fn a_file_without_a_membership_table_runs_and_hashes_the_defaults_of_today() {
    assert_eq!(digest(BASE).to_string(), BASE_DIGEST);
    assert_ne!(BASE_DIGEST, FIRST_DIGEST);
}

#[test]
fn a_file_with_the_first_defaults_written_out_keeps_its_first_digest() {
    for table in [
        "[membership]\nheartbeat_ms = 100\ndead_after_ms = 500\n",
        "[membership]\nheartbeat_ms = 100\ndead_after_ms = 500\ndrain_s = 30\nquorum = false\n",
    ] {
        let text = format!("{BASE}\n{table}");
        assert_eq!(digest(&text).to_string(), FIRST_DIGEST, "{table}");
    }
}

#[test]
fn a_membership_table_of_defaults_is_the_same_as_none() {
    let tables = [
        "[membership]\n",
        "[membership]\nheartbeat_ms = 40\n",
        "[membership]\ndead_after_ms = 160\n",
        "[membership]\ndrain_s = 30\n",
        "[membership]\nquorum = false\n",
        "[membership]\nheartbeat_ms = 40\ndead_after_ms = 160\ndrain_s = 30\nquorum = false\n",
    ];
    for table in tables {
        let text = format!("{BASE}\n{table}");
        assert_eq!(digest(&text).to_string(), BASE_DIGEST, "{table}");
    }
    let inline = format!("membership = {{ drain_s = 30, quorum = false }}\n{BASE}");
    assert_eq!(digest(&inline).to_string(), BASE_DIGEST);
}

#[test]
fn every_membership_value_changes_it() {
    // Three nodes, so that quorum may be set.
    let farm = format!("{BASE}\n[[node]]\nname = \"charlie\"\naddress = \"198.18.0.3\"\n");
    let tables = [
        "",
        "[membership]\nheartbeat_ms = 51\n",
        "[membership]\nheartbeat_ms = 10\n",
        "[membership]\ndead_after_ms = 201\n",
        "[membership]\ndrain_s = 31\n",
        "[membership]\ndrain_s = 0\n",
        "[membership]\nquorum = true\n",
        // The same values in other keys must not collide.
        "[membership]\nheartbeat_ms = 200\ndead_after_ms = 600\n",
        "[membership]\nheartbeat_ms = 100\ndead_after_ms = 600\n",
        "[membership]\nheartbeat_ms = 100\ndead_after_ms = 600\ndrain_s = 200\n",
        "[membership]\nheartbeat_ms = 10\ndead_after_ms = 30\ndrain_s = 0\nquorum = true\n",
    ];
    let digests: Vec<FarmDigest> = tables
        .iter()
        .map(|table| {
            let text = format!("{farm}\n{table}");
            let config = parse(&text).unwrap_or_else(|error| panic!("{error}\n{text}"));
            // The table must have been read, or different digests would prove nothing.
            assert_eq!(
                table.is_empty(),
                config.membership == Membership::default(),
                "{table}"
            );
            config.digest()
        })
        .collect();
    for (i, (first, a)) in tables.iter().zip(&digests).enumerate() {
        for (second, b) in tables.iter().zip(&digests).skip(i + 1) {
            assert_ne!(a, b, "{first:?} and {second:?}");
        }
    }
}

#[test]
fn displays_as_lowercase_hex_and_shortens_to_twelve_digits() {
    let digest = FarmDigest([0xAB; 32]);
    assert_eq!(digest.to_string(), "ab".repeat(32));
    assert_eq!(digest.short(), "abababababab");
    // Distinct leading bytes show the byte order of both forms.
    let mut bytes = [0; 32];
    for (byte, value) in bytes.iter_mut().zip(0u8..) {
        *byte = value;
    }
    let ordered = FarmDigest(bytes);
    assert_eq!(
        ordered.to_string(),
        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
    );
    assert_eq!(ordered.short(), "000102030405");
}
