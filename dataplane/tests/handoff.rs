//! The batch hand-off to the stack: every way a [`Port`] can be made, in a network namespace
//! of the test's own, takes a batch of frames to a UDP socket on a local address, counts each
//! frame it refuses, and goes on with the rest of the batch.
//!
//! Needs root (creating TAP devices and veth pairs); `scripts/test` runs it as root, as CI
//! does.

use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use herd_dataplane::handoff::{Port, Sent, Submit, TapReceive};
use herd_packet::craft::{self, Fragment, MAC_B};
use herd_packet::wire::{ethernet::ethertype, ip_proto};
use herd_testbed::netns::in_a_namespace_of_its_own;

/// The local address the frames go to, and its port.
const VIP: [u8; 4] = [198, 18, 0, 100];
const PORT: u16 = 5000;
/// Frames per batch: more than a port writes with one system call, so that a batch takes
/// several.
const FRAMES: u16 = 300;

/// How each port under test is made, with its name in failures.
#[derive(Clone, Copy, Debug)]
enum Way {
    Tap(TapReceive, Submit),
    Veth(Submit, bool),
}

const WAYS: [Way; 8] = [
    Way::Tap(TapReceive::Direct, Submit::Each),
    Way::Tap(TapReceive::Direct, Submit::Batch),
    Way::Tap(TapReceive::Napi, Submit::Each),
    Way::Tap(TapReceive::Napi, Submit::Batch),
    Way::Tap(TapReceive::NapiFrags, Submit::Each),
    Way::Veth(Submit::Each, false),
    Way::Veth(Submit::Batch, false),
    Way::Veth(Submit::Batch, true),
];

#[test]
fn a_batch_reaches_the_stack_whole_by_every_way() {
    needs_root();
    for way in WAYS {
        in_a_namespace_of_its_own(move || {
            let (mut port, socket) = port_and_socket(way);
            let frames: Vec<Vec<u8>> = (0..FRAMES).map(frame).collect();
            let sent = port.send_batch(frames.iter().map(Vec::as_slice));
            assert_eq!(
                sent,
                Sent {
                    handed_off: u64::from(FRAMES),
                    refused: 0
                },
                "{way:?}"
            );
            let mut seen = vec![false; usize::from(FRAMES)];
            let mut buf = [0u8; 64];
            for _ in 0..FRAMES {
                let len = socket
                    .recv(&mut buf)
                    .unwrap_or_else(|error| panic!("{way:?}: a datagram is missing: {error}"));
                assert_eq!(len, 2, "{way:?}");
                seen[usize::from(u16::from_be_bytes([buf[0], buf[1]]))] = true;
            }
            assert!(
                seen.iter().all(|&seen| seen),
                "{way:?}: a datagram came twice"
            );
        });
    }
}

#[test]
fn refused_frames_are_counted_and_the_rest_of_the_batch_goes_on() {
    needs_root();
    for way in WAYS {
        in_a_namespace_of_its_own(move || {
            let (mut port, socket) = port_and_socket(way);
            // Too short for an Ethernet header: every way refuses it.
            let runt = [0u8; 4];
            let (first, last) = (frame(1), frame(2));
            let sent = port.send_batch([&first[..], &runt, &runt, &last]);
            assert_eq!(
                sent,
                Sent {
                    handed_off: 2,
                    refused: 2
                },
                "{way:?}"
            );
            let mut buf = [0u8; 64];
            for expected in [1u16, 2] {
                let len = socket
                    .recv(&mut buf)
                    .unwrap_or_else(|error| panic!("{way:?}: a datagram is missing: {error}"));
                assert_eq!(&buf[..len], expected.to_be_bytes(), "{way:?}");
            }
        });
    }
}

#[test]
fn a_tap_device_goes_with_its_last_port() {
    needs_root();
    for way in WAYS {
        let Way::Tap(receive, submit) = way else {
            continue;
        };
        in_a_namespace_of_its_own(move || {
            let mut ports = Port::tap("herd-t", 2, receive, submit).expect("creates a TAP device");
            ip(&["link", "set", "herd-t", "up"]);
            for port in &mut ports {
                let sent = port.send_batch([&frame(1)[..]]);
                assert_eq!(sent.handed_off, 1, "{way:?}");
            }
            drop(ports);
            // A process another test forks holds copies of the descriptors until it execs.
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let links = herd_testbed::command::run("ip", &["-o", "link", "show"], None)
                    .unwrap_or_else(|error| panic!("{error:#}"));
                if !links.contains("herd-t") {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{way:?}: the TAP device is left: {links}"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
        });
    }
}

/// A port of `way` in the current namespace and a UDP socket on [`VIP`] that its frames reach.
fn port_and_socket(way: Way) -> (Port, UdpSocket) {
    let mac = herd_testbed::link::mac_text(MAC_B);
    ip(&["link", "set", "lo", "up"]);
    ip(&["addr", "add", "198.18.0.100/32", "dev", "lo"]);
    let port = match way {
        Way::Tap(receive, submit) => {
            let port = Port::tap("herd-t", 1, receive, submit)
                .expect("creates a TAP device")
                .remove(0);
            ip(&["link", "set", "herd-t", "address", &mac, "up"]);
            port
        }
        Way::Veth(submit, bypass) => {
            ip(&[
                "link", "add", "herd-a", "type", "veth", "peer", "name", "herd-b",
            ]);
            ip(&["link", "set", "herd-a", "up"]);
            ip(&["link", "set", "herd-b", "address", &mac, "up"]);
            // Until the kernel sees the carrier, herd-a's queueing discipline is `noop`, which
            // drops what it is given and reports no error.
            let deadline = Instant::now() + Duration::from_secs(10);
            while !herd_testbed::command::run("ip", &["-o", "link", "show", "herd-a"], None)
                .unwrap_or_else(|error| panic!("{error:#}"))
                .contains("qdisc noqueue")
            {
                assert!(Instant::now() < deadline, "herd-a has no carrier");
                std::thread::sleep(Duration::from_millis(5));
            }
            // SAFETY: the name is a NUL-terminated string that outlives the call.
            let index = unsafe { libc::if_nametoindex(c"herd-a".as_ptr()) };
            assert_ne!(index, 0, "herd-a has an index");
            Port::packet(index, 1, submit, bypass)
                .expect("opens a packet socket")
                .remove(0)
        }
    };
    let socket = UdpSocket::bind((Ipv4Addr::from(VIP), PORT)).expect("binds the local address");
    // Room for a whole batch, beyond net.core.rmem_max.
    let room: libc::c_int = 4 << 20;
    // SAFETY: `room` is a c_int that outlives the call, of the length passed.
    let set = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&room as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(
        set,
        0,
        "SO_RCVBUFFORCE: {}",
        std::io::Error::last_os_error()
    );
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    (port, socket)
}

/// A UDP frame to [`VIP`] addressed to [`MAC_B`], whose two bytes of data are `number`.
fn frame(number: u16) -> Vec<u8> {
    craft::ethernet(
        &[],
        ethertype::IPV4,
        &craft::ipv4(
            [198, 18, 0, 7],
            VIP,
            ip_proto::UDP,
            Fragment::default(),
            &craft::udp(40000, PORT, &number.to_be_bytes()),
        ),
    )
}

fn ip(args: &[&str]) {
    herd_testbed::command::run("ip", args, None).unwrap_or_else(|error| panic!("{error:#}"));
}

fn needs_root() {
    herd_testbed::require_root("the hand-off tests").unwrap_or_else(|error| panic!("{error:#}"));
}
