//! The egress guard run on crafted frames with `BPF_PROG_TEST_RUN`: what the node's kernel
//! sends that would map a VIP to the node's MAC is readdressed or dropped, herd's own
//! announcements and every other frame leave untouched, whatever their bytes.
//!
//! Needs root (loading eBPF programs); `scripts/test` runs it as root, as CI does.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use herd_config::MacMode;
use herd_dataplane::egress::{Egress, EgressGuard, Guarded};
use herd_packet::craft;
use herd_packet::neighbor::{announcement, virtual_mac};
use herd_packet::wire::{checksum, ethernet::ethertype, ip_proto};

const VIP4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
const VIP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x198, 0x18, 0, 0, 0, 0, 0x100);
const NODE4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x198, 0x18, 0, 0, 0, 0, 0x20);
/// The node's link-local address, which solicitations leave from instead of a VIP.
const LINK_LOCAL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0xff, 0xfe00, 0x99);
/// The MAC of the node's interface.
const IF_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x99];

fn needs_root() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test loads eBPF programs and needs root: run it through scripts/test as root"
    );
}

fn guard() -> EgressGuard {
    needs_root();
    EgressGuard::load(&[VIP4.into(), VIP6.into()], IF_MAC, Some(LINK_LOCAL)).unwrap()
}

/// An ICMPv6 `message` from `src` to `dst` with hop limit 255, its checksum filled in, in a
/// frame from the node's MAC with `vlans` tags.
fn icmpv6(vlans: &[u16], src: Ipv6Addr, dst: [u8; 16], mut message: Vec<u8>) -> Vec<u8> {
    let sum = checksum(&pseudo_header_and(src.octets(), dst, &message));
    message[2..4].copy_from_slice(&sum.to_be_bytes());
    let ip = craft::ipv6(src.octets(), dst, ip_proto::ICMPV6, 255, &message);
    let mut frame = craft::ethernet(vlans, ethertype::IPV6, &ip);
    frame[6..12].copy_from_slice(&IF_MAC);
    frame
}

fn pseudo_header_and(src: [u8; 16], dst: [u8; 16], message: &[u8]) -> Vec<u8> {
    let mut pseudo = src.to_vec();
    pseudo.extend_from_slice(&dst);
    pseudo.extend_from_slice(&(message.len() as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, ip_proto::ICMPV6]);
    pseudo.extend_from_slice(message);
    pseudo
}

/// The kernel's solicitation for the client, from `src`, with the node's MAC as its source
/// link-layer address.
fn solicitation(vlans: &[u16], src: Ipv6Addr) -> Vec<u8> {
    let target = CLIENT6.octets();
    let mut message = craft::icmp(135, 0, [0; 4], &target);
    message.extend_from_slice(&[1, 1]);
    message.extend_from_slice(&IF_MAC);
    icmpv6(vlans, src, craft::solicited_node(target), message)
}

/// An advertisement of `target` from it, with these options.
fn advertisement(target: Ipv6Addr, options: &[u8]) -> Vec<u8> {
    let mut message = craft::icmp(136, 0, [0x20, 0, 0, 0], &target.octets());
    message.extend_from_slice(options);
    let all_nodes = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1).octets();
    icmpv6(&[], target, all_nodes, message)
}

/// A target link-layer address option.
fn target_mac(mac: [u8; 6]) -> Vec<u8> {
    let mut option = vec![2, 1];
    option.extend_from_slice(&mac);
    option
}

/// A gratuitous ARP request that says `sender` is at `mac`.
fn arp(sender: Ipv4Addr, mac: [u8; 6]) -> Vec<u8> {
    let mut payload = craft::arp_request(sender.octets(), sender.octets());
    payload[8..14].copy_from_slice(&mac);
    let mut frame = craft::ethernet(&[], ethertype::ARP, &payload);
    frame[..6].copy_from_slice(&[0xff; 6]);
    frame[6..12].copy_from_slice(&IF_MAC);
    frame
}

fn leaves(guard: &EgressGuard, frame: &[u8]) -> Vec<u8> {
    match guard.test_run(frame).unwrap() {
        Egress::Leaves(out) => out,
        Egress::Dropped => panic!("dropped: {frame:02x?}"),
    }
}

#[test]
fn a_solicitation_from_a_vip_leaves_from_the_node_s_own_address_with_a_valid_checksum() {
    let guard = guard();
    for vlans in [&[][..], &[100], &[100, 200]] {
        let frame = solicitation(vlans, VIP6);
        let out = leaves(&guard, &frame);
        let l3 = 14 + 4 * vlans.len();
        assert_eq!(out[l3 + 8..l3 + 24], LINK_LOCAL.octets(), "source replaced");
        assert_eq!(out[..l3 + 8], frame[..l3 + 8], "all else as it was");
        assert_eq!(out[l3 + 24..l3 + 42], frame[l3 + 24..l3 + 42]);
        assert_eq!(out[l3 + 44..], frame[l3 + 44..]);
        let dst: [u8; 16] = out[l3 + 24..l3 + 40].try_into().unwrap();
        let pseudo = pseudo_header_and(LINK_LOCAL.octets(), dst, &out[l3 + 40..]);
        assert_eq!(checksum(&pseudo), 0, "the checksum is mended ({vlans:?})");
    }
    assert_eq!(
        guard.guarded().unwrap(),
        Guarded {
            solicitations_readdressed: 3,
            ..Guarded::default()
        }
    );
}

#[test]
fn the_kernel_s_advertisements_and_arp_for_a_vip_with_the_node_s_mac_are_dropped() {
    let guard = guard();
    let with_own_mac = advertisement(VIP6, &target_mac(IF_MAC));
    assert_eq!(guard.test_run(&with_own_mac).unwrap(), Egress::Dropped);
    let without_option = advertisement(VIP6, &[]);
    assert_eq!(guard.test_run(&without_option).unwrap(), Egress::Dropped);
    let mut nonce_first = vec![14, 1, 1, 2, 3, 4, 5, 6];
    nonce_first.extend_from_slice(&target_mac(IF_MAC));
    assert_eq!(
        guard.test_run(&advertisement(VIP6, &nonce_first)).unwrap(),
        Egress::Dropped,
        "the option found behind another"
    );
    assert_eq!(guard.test_run(&arp(VIP4, IF_MAC)).unwrap(), Egress::Dropped);
    assert_eq!(
        guard.guarded().unwrap(),
        Guarded {
            advertisements_dropped: 3,
            arp_dropped: 1,
            ..Guarded::default()
        }
    );
}

#[test]
fn herd_s_announcements_and_the_node_s_own_neighbour_discovery_leave_untouched() {
    let guard = guard();
    let mut untouched = vec![
        solicitation(&[], LINK_LOCAL),
        solicitation(&[], CLIENT6),
        advertisement(LINK_LOCAL, &target_mac(IF_MAC)),
        arp(NODE4, IF_MAC),
    ];
    for mode in [MacMode::Unicast, MacMode::Multicast] {
        untouched.extend([
            announcement(IF_MAC, VIP4.into(), mode),
            announcement(IF_MAC, VIP6.into(), mode),
            advertisement(VIP6, &target_mac(virtual_mac(VIP6.into(), mode))),
            arp(VIP4, virtual_mac(VIP4.into(), mode)),
        ]);
    }
    for frame in &untouched {
        assert_eq!(&leaves(&guard, frame), frame);
    }
    assert_eq!(guard.guarded().unwrap(), Guarded::default());
}

#[test]
fn any_bytes_leave_untouched_unless_they_are_a_vip_s_neighbour_discovery() {
    let guard = guard();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let shapes = [
        solicitation(&[], VIP6),
        advertisement(VIP6, &target_mac(IF_MAC)),
        arp(VIP4, IF_MAC),
    ];
    for round in 0..3000 {
        let mut frame = shapes[round % shapes.len()].clone();
        for _ in 0..1 + next() % 4 {
            let at = (next() % frame.len() as u64) as usize;
            frame[at] = next() as u8;
        }
        // The kernel refuses to test-run an IPv6 frame shorter than its fixed header.
        let shortest = frame.len().min(14 + 40);
        frame.truncate(shortest + (next() % (frame.len() - shortest + 1) as u64) as usize);
        match guard.test_run(&frame).unwrap() {
            Egress::Leaves(out) if out == frame => {}
            outcome => {
                let readdressed = matches!(&outcome, Egress::Leaves(_))
                    && frame.len() >= 14 + 40 + 24
                    && frame[14 + 40] == 135
                    && frame[14 + 8..14 + 24] == VIP6.octets();
                let dropped = outcome == Egress::Dropped
                    && ((frame.len() >= 14 + 40 + 24
                        && frame[14 + 40] == 136
                        && frame[14 + 40 + 8..14 + 40 + 24] == VIP6.octets())
                        || (frame.len() >= 14 + 28 && frame[14 + 14..14 + 18] == VIP4.octets()));
                assert!(
                    readdressed || dropped,
                    "{outcome:02x?} for a frame that is no VIP's neighbour discovery: {frame:02x?}"
                );
            }
        }
    }
}

#[test]
fn ipv6_vips_need_an_address_to_solicit_from() {
    needs_root();
    let vips = [IpAddr::from(VIP6)];
    assert!(EgressGuard::load(&vips, IF_MAC, None).is_err());
    assert!(EgressGuard::load(&[VIP4.into()], IF_MAC, None).is_ok());
}

#[test]
fn the_guard_is_listed_on_the_interface_from_its_attachment_to_its_detachment() {
    needs_root();
    let attachment = std::thread::spawn(|| {
        // A BPF file system of the test's own for the pin, none being assumed at /sys/fs/bpf.
        let bed = herd_testbed::Bed::create(&format!("herd-egress-{}", std::process::id()))
            .expect("mounts a BPF file system");
        // SAFETY: unshare takes no pointers; it moves this thread alone to a new network
        // namespace, whose loopback interface the guard is attached to.
        let unshared = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(unshared, 0, "unshare: {}", std::io::Error::last_os_error());
        let pin = bed.bpf_dir("egress").unwrap().join("lo:egress");
        let mut guard = guard();
        let id = guard.id().unwrap();
        let listed = || EgressGuard::attached_to("lo").unwrap().contains(&id);
        assert!(!listed(), "not attached yet");
        guard.attach("lo", &pin).unwrap();
        assert!(listed(), "attached");
        assert!(pin.exists(), "pinned");
        guard.detach().unwrap();
        assert!(!listed(), "detached");
        assert!(!pin.exists(), "unpinned");
    });
    if let Err(panic) = attachment.join() {
        std::panic::resume_unwind(panic);
    }
}
