//! Cost of the packet path: `classify` per packet on a realistic mix, on one kind of segment in
//! a bucket owned outright or not at all, and the flow hash alone.
//!
//! Run: `cargo bench -p herd-packet --bench classify`. Criterion reports the time per batch
//! of `MIX` frames and, through `Throughput::Elements`, packets per second; the time per packet
//! is the batch time divided by `MIX`.

use std::hint::black_box;
use std::net::IpAddr;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use herd_config::{Affinity, Protocol};
use herd_packet::craft::{self, Fragment};
use herd_packet::hash::{client_hash, HashKey};
use herd_packet::kernel::NoSockets;
use herd_packet::table::{BucketMode, ModeTable};
use herd_packet::wire::{ethernet::ethertype, ip_proto};
use herd_packet::{classify, FarmRules, FarmTable, Flows};

const MIX: usize = 1024;
const VIP4: [u8; 4] = [198, 18, 0, 100];
const VIP6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x00,
];

/// A three-node farm balancing web traffic on client-ip and a UDP service on client-ip-port.
fn config() -> herd_config::FarmConfig {
    let rules = vec![
        craft::rule(Protocol::Tcp, 80, 80, Affinity::ClientIp),
        craft::rule(Protocol::Tcp, 443, 443, Affinity::ClientIp),
        craft::rule(Protocol::Udp, 5000, 5099, Affinity::ClientIpPort),
    ];
    craft::farm_config(
        &[VIP4.into(), VIP6.into()],
        4096,
        *b"herd-bench-key-!",
        3,
        rules,
    )
}

/// Node 0 of the farm.
fn table() -> FarmTable {
    craft::round_robin_tables(&config()).swap_remove(0)
}

/// The farm's rules with every bucket in `mode`.
fn every_bucket(mode: BucketMode) -> FarmTable {
    let rules = Arc::new(FarmRules::from_config(&config()));
    FarmTable::new(
        rules,
        ModeTable::new(1, vec![mode; 4096]).expect("4096 buckets"),
    )
}

/// A deterministic mix: 80% VIP traffic (of which 70% TCP, 30% UDP), 20% traffic to the node
/// itself; a quarter IPv6; one frame in eight VLAN-tagged; many clients and ports. `uniform`
/// makes every frame an untagged IPv4 TCP segment (ACK, no SYN, FIN or RST) to the VIP from a
/// different client: the same work per packet without the branch mispredictions of a mix.
fn mix(uniform: bool) -> Vec<Vec<u8>> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    (0..MIX)
        .map(|_| {
            let r = next();
            let client = r.to_be_bytes();
            let to_vip = uniform || r % 10 < 8;
            let tcp = uniform || (r >> 8) % 10 < 7;
            let v6 = !uniform && (r >> 16) % 4 == 0;
            let vlans: &[u16] = if !uniform && (r >> 24) % 8 == 0 {
                &[100]
            } else {
                &[]
            };
            let src_port = 1024 + (r >> 32) as u16 % 60000;
            let (protocol, l4) = if tcp {
                let port = if (r >> 48) % 2 == 0 { 80 } else { 443 };
                (ip_proto::TCP, craft::tcp(src_port, port, 0x10, &[0; 32]))
            } else {
                (
                    ip_proto::UDP,
                    craft::udp(src_port, 5000 + (r >> 40) as u16 % 100, &[0; 64]),
                )
            };
            if v6 {
                let mut src = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
                src[8..].copy_from_slice(&client);
                let mut dst = VIP6;
                if !to_vip {
                    dst[15] = 1;
                }
                craft::ethernet(
                    vlans,
                    ethertype::IPV6,
                    &craft::ipv6(src, dst, protocol, 64, &l4),
                )
            } else {
                let src = [198, 19, client[6], client[7]];
                let dst = if to_vip { VIP4 } else { [198, 18, 0, 1] };
                let ip = craft::ipv4(src, dst, protocol, Fragment::default(), &l4);
                craft::ethernet(vlans, ethertype::IPV4, &ip)
            }
        })
        .collect()
}

fn bench_classify(c: &mut Criterion) {
    let mut flows = Flows::new();
    let mut group = c.benchmark_group("classify");
    group.throughput(Throughput::Elements(MIX as u64));
    let cases = [
        ("mix_1024", false, table()),
        ("v4_tcp_vip_1024", true, table()),
        ("v4_tcp_own_1024", true, every_bucket(BucketMode::OWN)),
        ("v4_tcp_none_1024", true, every_bucket(BucketMode::NONE)),
    ];
    for (name, uniform, table) in cases {
        let frames = mix(uniform);
        group.bench_function(name, |b| {
            b.iter(|| {
                // The frames are data built at run time, so nothing is folded away without a
                // `black_box` on them; one there made every slice go through the stack and
                // back, a store-forwarding delay per frame that a worker reading descriptors
                // does not have. The verdicts go through `black_box` so none is skipped.
                for frame in &frames {
                    black_box(classify(frame, &table, &mut flows, &NoSockets, 0));
                }
            })
        });
    }
    group.finish();
}

fn bench_hash(c: &mut Criterion) {
    let key = HashKey::from_bytes(*b"herd-bench-key-!");
    let mut group = c.benchmark_group("hash");
    group.throughput(Throughput::Elements(1));
    for (name, base) in [
        ("client_hash_v4", IpAddr::from([198, 19, 0, 0])),
        (
            "client_hash_v6",
            IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0]),
        ),
    ] {
        group.bench_function(name, |b| {
            let mut port = 0u16;
            b.iter(|| {
                port = port.wrapping_add(1);
                black_box(client_hash(&key, black_box(base), black_box(port)))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_classify, bench_hash);
criterion_main!(benches);
