//! The cost of computing a bucket table, which every node does on every membership change.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use herd_membership::{assign, Member};
use herd_packet::hash::HashKey;

/// `nodes` members with distinct names and weights from 1 to 100.
fn members(nodes: u16) -> Vec<Member> {
    (0..nodes)
        .map(|id| Member {
            id,
            name: format!("node-{id}"),
            weight: 1 + u32::from(id) * 37 % 100,
        })
        .collect()
}

fn bench_assign(c: &mut Criterion) {
    let key = HashKey::from_bytes(core::array::from_fn(|i| i as u8));
    let mut group = c.benchmark_group("assign");
    for (nodes, buckets) in [(3, 4096), (64, 4096), (64, 65536)] {
        let live = members(nodes);
        if buckets > 4096 {
            // About 50 ms an iteration: fewer samples keep the run short.
            group.sample_size(10);
        }
        group.bench_function(format!("{nodes}x{buckets}"), |b| {
            b.iter(|| assign(black_box(&key), buckets, black_box(&live)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_assign);
criterion_main!(benches);
