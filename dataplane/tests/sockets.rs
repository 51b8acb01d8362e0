//! The node's TCP sockets read through sock_diag, against real sockets: listeners and
//! connections on VIP addresses in a network namespace of the test's own (both families, and
//! IPv4 through a dual-stack socket), some in buckets that drain and some not, closed ones
//! in TIME_WAIT and CLOSE_WAIT, a half-open one before and after its SYN-ACK is sent again.
//! The count must be what the test computes from its own bucket of each connection.
//!
//! Needs root (namespaces); `scripts/test` runs it as root, as CI does.

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use herd_config::{Affinity, Protocol};
use herd_dataplane::sockets::Sockets;
use herd_packet::craft;
use herd_packet::table::{BucketMode, ModeTable};
use herd_packet::wire::{ip_proto, transport_checksum};
use herd_packet::FarmRules;
use herd_testbed::{Bed, Netns};

const VIP4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
const VIP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x198, 0x18, 0, 0, 0, 0, 0x100);
/// The node's own address: connections to it are not the farm's.
const NODE4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const CLIENT4: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x198, 0x18, 0, 0, 0, 1, 1);
/// Where the half-open connection's client is: routed to a veth whose peer drops the SYN-ACKs
/// (they are sent to a MAC that is not its own).
const UNANSWERED4: Ipv4Addr = Ipv4Addr::new(198, 19, 5, 1);
const BUCKETS: usize = 64;
/// Balanced on the client's address and port.
const PORT_BY_CONNECTION: u16 = 80;
/// Balanced on the client's address alone.
const PORT_BY_CLIENT: u16 = 81;
/// A VIP port without a rule.
const NO_RULE: u16 = 90;
/// How long a socket may take to reach the state the test waits for.
const SETTLE: Duration = Duration::from_secs(5);

/// A bed with one namespace, `sockets`, whose loopback holds the VIPs and the clients'
/// addresses.
fn bed(test: &str) -> (Bed, Netns) {
    let mut bed = Bed::create(&format!("herd-sk{}-{test}", std::process::id())).unwrap();
    let netns = bed.netns("sockets").unwrap();
    netns
        .ip_batch(&format!(
            "addr add {VIP4}/32 dev lo\n\
             addr add {NODE4}/32 dev lo\n\
             addr add {CLIENT4}/32 dev lo\n\
             addr add {VIP6}/128 dev lo nodad\n\
             addr add {CLIENT6}/128 dev lo nodad\n"
        ))
        .unwrap();
    (bed, netns)
}

fn rules() -> FarmRules {
    let config = craft::farm_config(
        &[VIP4.into(), VIP6.into()],
        BUCKETS as u32,
        *b"sock_diag test k",
        2,
        vec![
            craft::rule(
                Protocol::Tcp,
                PORT_BY_CONNECTION,
                PORT_BY_CONNECTION,
                Affinity::ClientIpPort,
            ),
            craft::rule(
                Protocol::Tcp,
                PORT_BY_CLIENT,
                PORT_BY_CLIENT,
                Affinity::ClientIp,
            ),
        ],
    );
    FarmRules::from_config(&config)
}

/// Every other bucket drains; the others are owned, taken or not this node's.
fn half_draining() -> ModeTable {
    let others = [BucketMode::OWN, BucketMode::GAIN, BucketMode::NONE];
    let modes = (0..BUCKETS)
        .map(|bucket| {
            if bucket % 2 == 0 {
                BucketMode::DRAIN
            } else {
                others[bucket / 2 % others.len()]
            }
        })
        .collect();
    ModeTable::new(1, modes).unwrap()
}

/// Whether the test's own computation puts connection `client` → `vip` in a draining bucket.
fn in_draining_bucket(
    rules: &FarmRules,
    modes: &ModeTable,
    client: SocketAddr,
    vip: SocketAddr,
) -> bool {
    rules
        .client_flow_hash(Protocol::Tcp, vip.port(), client.ip(), client.port())
        .is_ok_and(|hash| modes.mode(modes.bucket_of(hash)).drains())
}

/// One connection: the client's end and the server's, accepted.
struct Connection {
    client: TcpStream,
    server: TcpStream,
    drains: bool,
}

/// Opens `count` connections from `client` to `vip` through `listener`.
fn connect(
    listener: &TcpListener,
    client: IpAddr,
    vip: SocketAddr,
    count: usize,
    rules: &FarmRules,
    modes: &ModeTable,
) -> Vec<Connection> {
    (0..count)
        .map(|_| {
            let socket = socket2::Socket::new(
                socket2::Domain::for_address(vip),
                socket2::Type::STREAM,
                None,
            )
            .unwrap();
            socket.bind(&SocketAddr::new(client, 0).into()).unwrap();
            socket.connect(&vip.into()).unwrap();
            let client: TcpStream = socket.into();
            let (server, _) = listener.accept().unwrap();
            let from = client.local_addr().unwrap();
            Connection {
                drains: in_draining_bucket(rules, modes, from, vip),
                client,
                server,
            }
        })
        .collect()
}

/// Waits until the count is `expected`, or fails with the last count seen.
fn await_count(sockets: &mut Sockets, rules: &FarmRules, modes: &ModeTable, expected: u64) {
    let deadline = Instant::now() + SETTLE;
    loop {
        let count = sockets.draining_connections(rules, modes).unwrap();
        if count == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the kernel's sockets counted {count} draining connections, not {expected}, after {SETTLE:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn draining(connections: &[Connection]) -> u64 {
    connections.iter().filter(|c| c.drains).count() as u64
}

#[test]
fn the_draining_connections_are_counted_from_the_kernel() {
    let (_bed, netns) = bed("count");
    netns
        .run(|| {
            let (rules, modes) = (rules(), half_draining());
            let mut sockets = Sockets::open().unwrap();
            let by_connection4 = SocketAddr::new(VIP4.into(), PORT_BY_CONNECTION);
            let by_connection6 = SocketAddr::new(VIP6.into(), PORT_BY_CONNECTION);
            // IPv4 connections to the dual-stack listener show IPv4-mapped addresses.
            let by_client_mapped = SocketAddr::new(VIP4.into(), PORT_BY_CLIENT);
            let listeners = [
                TcpListener::bind(by_connection4).unwrap(),
                TcpListener::bind(by_connection6).unwrap(),
                TcpListener::bind((Ipv6Addr::UNSPECIFIED, PORT_BY_CLIENT)).unwrap(),
                TcpListener::bind((NODE4, PORT_BY_CONNECTION)).unwrap(),
                TcpListener::bind((VIP4, NO_RULE)).unwrap(),
            ];
            let mut v4 = connect(
                &listeners[0],
                CLIENT4.into(),
                by_connection4,
                40,
                &rules,
                &modes,
            );
            let v6 = connect(
                &listeners[1],
                CLIENT6.into(),
                by_connection6,
                40,
                &rules,
                &modes,
            );
            let mapped = connect(
                &listeners[2],
                CLIENT4.into(),
                by_client_mapped,
                4,
                &rules,
                &modes,
            );
            // Neither counts, whatever their bucket: not a VIP, and a VIP port without a rule.
            let _node = connect(
                &listeners[3],
                CLIENT4.into(),
                SocketAddr::new(NODE4.into(), PORT_BY_CONNECTION),
                10,
                &rules,
                &modes,
            );
            let _no_rule = connect(
                &listeners[4],
                CLIENT4.into(),
                SocketAddr::new(VIP4.into(), NO_RULE),
                10,
                &rules,
                &modes,
            );

            let expected = draining(&v4) + draining(&v6) + draining(&mapped);
            let all = (v4.len() + v6.len() + mapped.len()) as u64;
            assert!(
                draining(&v4) > 0 && draining(&v4) < v4.len() as u64 && draining(&v6) > 0,
                "the client ports must fall on both sides: {} of {} IPv4 connections drain",
                draining(&v4),
                v4.len()
            );
            assert_eq!(
                sockets.draining_connections(&rules, &modes).unwrap(),
                expected
            );
            // The same connections, with no bucket draining: nothing, and no dump.
            let owned = ModeTable::new(2, vec![BucketMode::OWN; BUCKETS]).unwrap();
            assert_eq!(sockets.draining_connections(&rules, &owned).unwrap(), 0);
            // Every bucket draining: every VIP connection on a rule's port.
            let all_drain = ModeTable::new(3, vec![BucketMode::DRAIN; BUCKETS]).unwrap();
            assert_eq!(
                sockets.draining_connections(&rules, &all_drain).unwrap(),
                all
            );

            // The server closes first: its socket ends in TIME_WAIT, which holds nothing.
            let mut left = expected;
            let closing: Vec<Connection> = take_draining(&mut v4, 3);
            for connection in closing {
                drop(connection.server);
                let mut client = connection.client;
                assert_eq!(client.read(&mut [0; 1]).unwrap(), 0, "the server's FIN");
                drop(client);
                left -= 1;
            }
            await_count(&mut sockets, &rules, &modes, left);
            let time_wait =
                herd_testbed::socket::time_wait_sockets().expect("reads the socket tables");
            assert!(
                time_wait >= 3,
                "{time_wait} sockets in TIME_WAIT, not the 3 closed"
            );

            // The client closes first: the server's socket in CLOSE_WAIT still holds the drain
            // (the application may still send), until the server closes it too.
            let mut half_closed = take_draining(&mut v4, 2);
            for connection in &mut half_closed {
                connection
                    .client
                    .shutdown(std::net::Shutdown::Write)
                    .unwrap();
                assert_eq!(
                    connection.server.read(&mut [0; 1]).unwrap(),
                    0,
                    "the client's FIN"
                );
            }
            assert_eq!(sockets.draining_connections(&rules, &modes).unwrap(), left);
            drop(half_closed);
            left -= 2;
            await_count(&mut sockets, &rules, &modes, left);

            // Connections in buckets that do not drain change nothing when they close.
            v4.retain(|connection| connection.drains);
            assert_eq!(sockets.draining_connections(&rules, &modes).unwrap(), left);
            drop((v4, v6, mapped));
            await_count(&mut sockets, &rules, &modes, 0);
        })
        .unwrap();
}

/// Removes `count` connections in draining buckets from `connections`.
fn take_draining(connections: &mut Vec<Connection>, count: usize) -> Vec<Connection> {
    let mut taken = Vec::new();
    while taken.len() < count {
        let index = connections
            .iter()
            .position(|connection| connection.drains)
            .expect("enough draining connections");
        taken.push(connections.remove(index));
    }
    taken
}

/// A SYN from `client` to `vip`, its checksums filled in, as a raw socket sends it.
fn syn(client: SocketAddrV4, vip: SocketAddrV4) -> Vec<u8> {
    let mut segment = craft::tcp(client.port(), vip.port(), 0x02, &[]);
    let (src, dst) = (client.ip().octets(), vip.ip().octets());
    let sum = transport_checksum(&src, &dst, ip_proto::TCP, &segment);
    segment[16..18].copy_from_slice(&sum.to_be_bytes());
    craft::ipv4(
        client.ip().octets(),
        vip.ip().octets(),
        ip_proto::TCP,
        craft::Fragment::default(),
        &segment,
    )
}

#[test]
fn a_half_open_connection_holds_the_drain_until_its_syn_ack_is_sent_again() {
    let (_bed, netns) = bed("synrecv");
    netns
        .ip_batch(&format!(
            "link add swallow type veth peer name swallowed\n\
             link set swallow up\n\
             link set swallowed up\n\
             route add {UNANSWERED4}/32 dev swallow\n\
             neigh add {UNANSWERED4} lladdr 02:00:00:00:00:01 dev swallow\n"
        ))
        .unwrap();
    netns
        .run(|| {
            let (rules, modes) = (rules(), half_draining());
            let vip = SocketAddrV4::new(VIP4, PORT_BY_CONNECTION);
            let _listener = TcpListener::bind(vip).unwrap();
            let mut sockets = Sockets::open().unwrap();
            assert_eq!(sockets.draining_connections(&rules, &modes).unwrap(), 0);
            let port = (20_000..)
                .find(|&port| {
                    let client = SocketAddr::new(UNANSWERED4.into(), port);
                    in_draining_bucket(&rules, &modes, client, vip.into())
                })
                .unwrap();
            let raw = socket2::Socket::new(
                socket2::Domain::IPV4,
                socket2::Type::RAW,
                Some(socket2::Protocol::from(libc::IPPROTO_RAW)),
            )
            .unwrap();
            let sent = Instant::now();
            raw.send_to(
                &syn(SocketAddrV4::new(UNANSWERED4, port), vip),
                &SocketAddr::from(vip).into(),
            )
            .unwrap();
            await_count(&mut sockets, &rules, &modes, 1);
            // The kernel sends the SYN-ACK again after a second (TCP_TIMEOUT_INIT): from then
            // on the client is taken to have given up.
            await_count(&mut sockets, &rules, &modes, 0);
            assert!(
                sent.elapsed() >= Duration::from_millis(900),
                "the half-open connection stopped counting after {:?}, before its SYN-ACK was sent again",
                sent.elapsed()
            );
        })
        .unwrap();
}

#[test]
fn the_vip_ports_with_a_listener_are_listed() {
    let (_bed, netns) = bed("listen");
    netns
        .run(|| {
            let rules = rules();
            let mut sockets = Sockets::open().unwrap();
            assert_eq!(sockets.listeners(&rules).unwrap(), []);
            // Neither the node's own address nor a port without a rule is the farm's.
            let node = TcpListener::bind((NODE4, PORT_BY_CONNECTION)).unwrap();
            let _no_rule = TcpListener::bind((Ipv4Addr::UNSPECIFIED, NO_RULE)).unwrap();
            assert_eq!(sockets.listeners(&rules).unwrap(), []);
            drop(node);

            let v6_only =
                socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None).unwrap();
            v6_only.set_only_v6(true).unwrap();
            v6_only
                .bind(&SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), PORT_BY_CONNECTION).into())
                .unwrap();
            v6_only.listen(8).unwrap();
            assert_eq!(
                sockets.listeners(&rules).unwrap(),
                [SocketAddr::new(VIP6.into(), PORT_BY_CONNECTION)]
            );
            let wildcard4 = TcpListener::bind((Ipv4Addr::UNSPECIFIED, PORT_BY_CONNECTION)).unwrap();
            let dual_stack = TcpListener::bind((Ipv6Addr::UNSPECIFIED, PORT_BY_CLIENT)).unwrap();
            let listed = |addresses: &[(IpAddr, u16)]| {
                let mut listed: Vec<SocketAddr> = addresses
                    .iter()
                    .map(|&(address, port)| SocketAddr::new(address, port))
                    .collect();
                listed.sort_unstable();
                listed
            };
            assert_eq!(
                sockets.listeners(&rules).unwrap(),
                listed(&[
                    (VIP4.into(), PORT_BY_CONNECTION),
                    (VIP6.into(), PORT_BY_CONNECTION),
                    (VIP4.into(), PORT_BY_CLIENT),
                    (VIP6.into(), PORT_BY_CLIENT),
                ])
            );
            drop((wildcard4, dual_stack, v6_only));
            let _vip4 = TcpListener::bind((VIP4, PORT_BY_CLIENT)).unwrap();
            assert_eq!(
                sockets.listeners(&rules).unwrap(),
                [SocketAddr::new(VIP4.into(), PORT_BY_CLIENT)]
            );
        })
        .unwrap();
}

/// Where a process started by [`a_count_of_many_sockets_is_timed`] connects, how many times
/// and from which address: `ADDRESS COUNT SOURCE`.
const HOLD: &str = "HERD_SOCKETS_HOLD";

/// What one count costs with many sockets: `HERD_SOCKETS_CONNECTIONS` connections (150,000
/// when unset: 300,000 sockets, both ends in the namespace) to two VIP listeners. The
/// servers' ends wait in the listeners' queues (they hold no file); the clients' ends are
/// held by copies of this test binary (see [`holds_connections`]), each within the open
/// files limit. Then timed dumps. Run by hand: `cargo test --release -p herd-dataplane --test
/// sockets -- --ignored --nocapture a_count`.
#[test]
#[ignore = "a measurement: opens hundreds of thousands of sockets"]
fn a_count_of_many_sockets_is_timed() {
    let connections: usize = std::env::var("HERD_SOCKETS_CONNECTIONS").map_or(150_000, |count| {
        count.parse().expect("a number of connections")
    });
    let mut files = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct passed, which lives across the call.
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut files) },
        0
    );
    let per_process = (files.rlim_cur as usize).saturating_sub(100);
    let (_bed, netns) = bed("many");
    netns
        .write_sysctl("net/ipv4/ip_local_port_range", "1024 65535")
        .unwrap();
    netns.write_sysctl("net/core/somaxconn", "262144").unwrap();
    // One source address per holder: the kernel's search for a free port slows down as a
    // source's ports fill up.
    let holders = connections.div_ceil(per_process);
    let sources: Vec<Ipv4Addr> = (0..holders)
        .map(|holder| Ipv4Addr::new(198, 19, 1 + (holder / 250) as u8, 1 + (holder % 250) as u8))
        .collect();
    let batch: String = sources
        .iter()
        .map(|source| format!("addr add {source}/32 dev lo\n"))
        .collect();
    netns.ip_batch(&batch).unwrap();
    netns
        .run(|| {
            let (rules, modes) = (rules(), half_draining());
            let vips = [
                SocketAddr::new(VIP4.into(), PORT_BY_CONNECTION),
                SocketAddr::new(VIP4.into(), PORT_BY_CLIENT),
            ];
            let _listeners: Vec<socket2::Socket> = vips
                .iter()
                .map(|&vip| {
                    let listener = socket2::Socket::new(
                        socket2::Domain::for_address(vip),
                        socket2::Type::STREAM,
                        None,
                    )
                    .unwrap();
                    listener.bind(&vip.into()).unwrap();
                    listener.listen(262_144).unwrap();
                    listener
                })
                .collect();
            let started = Instant::now();
            let mut holders = Vec::new();
            let mut left = connections;
            let mut index = 0;
            while left > 0 {
                let count = left.min(per_process);
                let (vip, source) = (vips[index % vips.len()], sources[index]);
                index += 1;
                left -= count;
                // Started from this thread, the copy is in the namespace too.
                let mut holder = std::process::Command::new(std::env::current_exe().unwrap())
                    .args(["--ignored", "--exact", "holds_connections", "--nocapture"])
                    .env(HOLD, format!("{vip} {count} {source}"))
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::piped())
                    .spawn()
                    .unwrap();
                let mut out = std::io::BufReader::new(holder.stdout.take().unwrap());
                let mut line = String::new();
                while !line.starts_with("held") {
                    line.clear();
                    let read = std::io::BufRead::read_line(&mut out, &mut line).unwrap();
                    assert!(read > 0, "a holder ended before holding its connections");
                }
                // Kept open: the copy writes its test result at the end.
                holders.push((holder, out));
            }
            println!(
                "opened {connections} connections ({} sockets) in {:?}",
                2 * connections,
                started.elapsed()
            );
            let mut sockets = Sockets::open().unwrap();
            let all_drain = ModeTable::new(2, vec![BucketMode::DRAIN; BUCKETS]).unwrap();
            // The server's ends on a rule's port (the clients' ends are on the VIPs too, from
            // ports without a rule).
            assert_eq!(
                sockets.draining_connections(&rules, &all_drain).unwrap(),
                connections as u64
            );
            let mut times = Vec::new();
            for _ in 0..9 {
                let started = Instant::now();
                let count = sockets.draining_connections(&rules, &modes).unwrap();
                times.push(started.elapsed());
                assert!(count > 0 && count < connections as u64, "{count} draining");
            }
            times.sort_unstable();
            let median = times[times.len() / 2];
            println!(
                "a count among {} sockets: median {median:?} (min {:?}, max {:?}), {:.0} ns a socket",
                2 * connections,
                times[0],
                times[times.len() - 1],
                median.as_nanos() as f64 / (2 * connections) as f64
            );
            let started = Instant::now();
            let listed = sockets.listeners(&rules).unwrap();
            println!("listeners: {listed:?} in {:?}", started.elapsed());
            for (mut holder, _out) in holders {
                drop(holder.stdin.take());
                assert!(holder.wait().unwrap().success());
            }
        })
        .unwrap();
}

/// Run by [`a_count_of_many_sockets_is_timed`] in a copy of this binary: opens the
/// connections [`HOLD`] says, prints `held`, and holds them until its standard input closes.
/// Does nothing when run otherwise.
#[test]
#[ignore = "a helper of a_count_of_many_sockets_is_timed"]
fn holds_connections() {
    let Ok(hold) = std::env::var(HOLD) else {
        return;
    };
    let [address, count, source] = hold.split(' ').collect::<Vec<_>>()[..] else {
        panic!("{HOLD} is not ADDRESS COUNT SOURCE: {hold}");
    };
    let address: SocketAddr = address.parse().unwrap();
    let source = SocketAddr::new(source.parse().unwrap(), 0);
    let held: Vec<TcpStream> = (0..count.parse::<usize>().unwrap())
        .map(|_| {
            let socket =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            socket.bind(&source.into()).unwrap();
            socket.connect(&address.into()).unwrap();
            TcpStream::from(socket)
        })
        .collect();
    println!("held {}", held.len());
    std::io::stdin().read_to_end(&mut Vec::new()).unwrap();
}
