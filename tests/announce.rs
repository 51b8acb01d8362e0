//! The VIPs' announcements heal a neighbour cache that took a node's own MAC for a VIP (on a
//! learning switch, that client's traffic then reaches that node alone): a client's entries
//! for the IPv4 and the IPv6 VIP are poisoned by hand, and the next announcement, periodic or
//! after a change of view, puts the virtual MACs back in the client's kernel. The client sends
//! nothing to the VIPs meanwhile, so that its own neighbour discovery cannot be what heals them.
//!
//! One node on a learning bridge, in xdp mode: the announcements do not depend on the
//! dataplane mode. The periodic announcements are tested with both kinds of virtual MAC,
//! unicast and multicast.
//! Needs root (namespaces, XDP); `scripts/test` runs it as root, as CI does.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use herd_config::{DataplaneMode, MacMode, Protocol};
use herd_packet::neighbor::virtual_mac;
use herd_testbed::address::{node4, VIP4, VIP6};
use herd_testbed::config::{FarmToml, KEY};
use herd_testbed::link::mac_text;
use herd_testbed::{FarmBed, FarmPlan, Herd, HerdRun, HubKind, Netns, Offload, Uplink};

/// The client's and the node's interface.
const INTERFACE: &str = "eth0";
/// How long a poisoned entry may take to heal: the announcement due, with room for a loaded
/// machine.
const HEAL_WAIT: Duration = Duration::from_secs(5);
/// What herd logs once it has sent the announcements of a new view.
const VIEW_ANNOUNCED: &str = "announced the VIPs' virtual MACs after a new view";
/// How often the client's neighbour cache is read while it heals.
const POLL: Duration = Duration::from_millis(20);

/// A one-node farm with both VIPs and its running herd, removed on drop whether the test
/// passed or not: herd is killed first, then the bed goes.
struct Farm {
    herd: Herd,
    bed: FarmBed,
    /// The node's state directory, which holds its control socket.
    state: PathBuf,
    /// The farm's kind of virtual MAC.
    mac: MacMode,
}

impl Farm {
    /// Starts the farm with virtual MACs of kind `mac`, announcing every `interval_s`
    /// seconds, and waits for the node to own every bucket and to have announced its view, so
    /// that no announcement of the start comes after a test's poisoning. `tag` keeps the names
    /// of the tests' beds apart.
    fn start(tag: &str, mac: MacMode, interval_s: u32) -> Self {
        let bed = FarmBed::create(&FarmPlan {
            prefix: format!("herd-announce{tag}-{mac}-{}", std::process::id()),
            nodes: &["alpha"],
            hub: HubKind::Learning,
            uplink: Uplink::Veth,
            sources: 0,
            client_offload: Offload::Default,
        })
        .expect("builds the bed");
        let key = bed.bed().write_private("farm.key", KEY).unwrap();
        let text = FarmToml::new("announce", DataplaneMode::Xdp)
            .vips(&[VIP4.into(), VIP6.into()])
            .buckets(64)
            .key_file(&key)
            .mac(mac)
            .announce_interval_s(interval_s)
            .node("alpha", node4(0))
            .rule(Protocol::Udp, &[7], None)
            .text();
        let config = bed.bed().write_private("farm.toml", &text).unwrap();
        let herd = bed
            .start_herd(
                0,
                &HerdRun::echoed(Path::new(env!("CARGO_BIN_EXE_herd")), &config),
            )
            .expect("herd runs");
        let owns_all = herd.wait_for(
            0,
            |line| line.contains("all_tcp=64 non_tcp=64"),
            Duration::from_secs(10),
        );
        assert!(owns_all.is_some(), "the lone node takes every bucket");
        let announced = herd.wait_for(0, |line| line.contains(VIEW_ANNOUNCED), HEAL_WAIT);
        assert!(announced.is_some(), "herd announces its first view");
        Farm {
            herd,
            state: bed.state_dir(0).unwrap(),
            bed,
            mac,
        }
    }

    fn client(&self) -> &Netns {
        &self.bed.client.netns
    }

    /// The node's own MAC, which the client's entries are poisoned with.
    fn node_mac(&self) -> String {
        let link = self.bed.nodes[0]
            .netns
            .ip_output(&["-j", "link", "show", "dev", INTERFACE])
            .unwrap();
        let link: serde_json::Value = serde_json::from_str(&link).unwrap();
        link[0]["address"].as_str().unwrap().to_owned()
    }

    /// Makes the client's kernel map both VIPs to `mac`, as a reachable entry learnt from the
    /// link would (a permanent entry, which only an administrator changes, is not healed by
    /// anything herd sends).
    fn poison(&self, mac: &str) {
        for vip in vips() {
            self.client()
                .ip(&[
                    "neigh",
                    "replace",
                    &vip.to_string(),
                    "lladdr",
                    mac,
                    "nud",
                    "reachable",
                    "dev",
                    INTERFACE,
                ])
                .unwrap();
        }
    }

    /// The MAC the client's neighbour cache holds for `vip`, if any.
    fn cached(&self, vip: IpAddr) -> Option<String> {
        let entries = self
            .client()
            .ip_output(&[
                "-j",
                "neigh",
                "show",
                "to",
                &vip.to_string(),
                "dev",
                INTERFACE,
            ])
            .unwrap();
        let entries: serde_json::Value = serde_json::from_str(&entries).unwrap();
        entries[0]["lladdr"].as_str().map(str::to_owned)
    }

    /// Waits until the client's cache maps every VIP to its virtual MAC again, and says how
    /// long that took; panics after [`HEAL_WAIT`] with what the cache holds.
    fn await_healed(&self) -> Duration {
        let start = Instant::now();
        loop {
            let wrong: Vec<(IpAddr, Option<String>)> = vips()
                .into_iter()
                .map(|vip| (vip, self.cached(vip)))
                .filter(|(vip, cached)| {
                    cached.as_deref() != Some(&mac_text(virtual_mac(*vip, self.mac)))
                })
                .collect();
            if wrong.is_empty() {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < HEAL_WAIT,
                "the client still maps {wrong:?} after {HEAL_WAIT:?}"
            );
            std::thread::sleep(POLL);
        }
    }
}

fn vips() -> [IpAddr; 2] {
    [VIP4.into(), VIP6.into()]
}

#[test]
fn a_poisoned_neighbour_entry_heals_at_the_next_periodic_announcement() {
    heals_at_the_next_periodic_announcement(MacMode::Unicast);
}

#[test]
fn a_poisoned_neighbour_entry_heals_at_the_next_periodic_announcement_of_a_multicast_mac() {
    heals_at_the_next_periodic_announcement(MacMode::Multicast);
}

/// Poisons the client's entries three times; each heals at the next periodic announcement of
/// the virtual MACs of kind `mac`.
fn heals_at_the_next_periodic_announcement(mac: MacMode) {
    let farm = Farm::start("p", mac, 1);
    let node_mac = farm.node_mac();
    for round in 0..3 {
        farm.poison(&node_mac);
        let took = farm.await_healed();
        eprintln!("round {round}: healed in {took:?}");
    }
}

#[test]
fn a_poisoned_neighbour_entry_heals_at_the_next_change_of_view() {
    // No periodic announcement: only the views can heal the entries.
    let farm = Farm::start("v", MacMode::Unicast, 0);
    let node_mac = farm.node_mac();
    let control = |command: &str| {
        let mark = farm.herd.logged();
        let done = std::process::Command::new(env!("CARGO_BIN_EXE_herd"))
            .arg(command)
            .arg("--control-dir")
            .arg(&farm.state)
            .output()
            .unwrap();
        assert!(done.status.success(), "herd {command}: {done:?}");
        mark
    };
    for command in ["drain", "start"] {
        farm.poison(&node_mac);
        for vip in vips() {
            assert_eq!(
                farm.cached(vip),
                Some(node_mac.clone()),
                "{vip} is poisoned"
            );
        }
        let mark = control(command);
        let view = farm
            .herd
            .wait_for(mark, |line| line.contains(VIEW_ANNOUNCED), HEAL_WAIT);
        assert!(view.is_some(), "herd {command} makes a new view, announced");
        let took = farm.await_healed();
        eprintln!("after herd {command}: healed in {took:?}");
    }
}
