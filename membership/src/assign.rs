//! Bucket assignment: which live node owns each bucket.
//!
//! Every node computes the table on its own from the same inputs (the farm's hash key, the bucket
//! count and the set of live members), so the nodes agree without exchanging tables. [`assign`]
//! is therefore a pure function of those inputs, in integer arithmetic only: no floating point
//! and no process-seeded hasher, whose results could differ between machines or builds.
//!
//! # Algorithm
//!
//! 1. **Eligible nodes.** Members with weight 0 are standbys: they own nothing while any member
//!    has a positive weight. If every member has weight 0 they all count as weight 1.
//! 2. **Quotas.** Node `i` owns exactly its largest-remainder share of `B*w_i/W` buckets (the
//!    floor, plus one for the nodes with the largest remainders, ties broken by a keyed hash of
//!    the name so that no name is favoured), hence within one bucket of its exact share.
//! 3. **Ranking.** Every bucket ranks the nodes by weighted rendezvous hashing (HRW): a keyed
//!    hash of (node, bucket) read as `u` in (0, 1) gives the cost `-log2(u) / w`, the cheapest
//!    node first. With the exact logarithm this is the exponential race in which node `i` comes
//!    first with probability `w_i/W`, so the first choices are already balanced up to binomial
//!    noise. The logarithm here is an integer fixed-point approximation (within 2e-7 of the real
//!    `log2`): every node computes the very same integers, so its error only tilts the odds by
//!    about that much.
//! 4. **Capacities.** The table is the stable matching of buckets to node slots (a node has as
//!    many slots as its quota) in which both sides rank a (node, bucket) pair by the same cost.
//!    It is found by deferred acceptance: every bucket proposes to its cheapest node; a node
//!    over quota rejects the bucket it holds at the highest cost, which proposes to its next
//!    node; and so on. As both sides rank pairs by one total order, the stable matching is
//!    unique (it is what a greedy scan of all pairs by increasing cost picks), so the result
//!    depends neither on the order of proposals nor on the order of `live`.
//!
//! # Movement
//!
//! A node that leaves takes no other node's costs with it, so before capacities only its own
//! buckets move, each to its next choice. Those arrive at the survivors in binomial numbers
//! rather than in exactly their quota increases; the rejection chains that settle the
//! difference (of order `sqrt(B)` buckets in total) move some survivors' buckets too. That
//! cannot be avoided: exact balance for every live set and no extra moves on every leave are
//! incompatible, because no extra moves for every leave forces plain rendezvous hashing, whose
//! counts are only statistically balanced. Measured over 3000 random cases (random key, 2 to 64
//! nodes, weights 0 to 100, 64 to 65536 buckets), the survivors' buckets that move on a leave
//! number `0.6*sqrt(B)` on average and at most `1.4*sqrt(B)`: for 4096 buckets 0.95 % of the
//! table on average and 1.8 % at most, for 65536 buckets 0.25 % and 0.5 % (the ignored
//! `movement_report` test in `tests/assignment.rs` prints these figures). A join is a leave run
//! backwards: the joiner takes exactly its quota and as many other buckets change hands. A
//! one-shot fix-up in which over-quota nodes shed their weakest-margin buckets to the best
//! under-quota node measured more extra moves: about 5 % more on large tables, up to 40 % more
//! on small ones.

use std::collections::BinaryHeap;

use herd_config::FarmConfig;
use herd_packet::hash::{siphash13, HashKey};
use herd_packet::table::{BucketTable, NodeId, TableSizeError, NO_OWNER};

pub use herd_packet::table::MAX_BUCKETS;

/// One live node as the assignment sees it.
///
/// The name, not the id or the position in `live`, seeds the node's rendezvous hashes, so a
/// node keeps its buckets when the configuration lists the nodes in another order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// The node's id, written into the table for the buckets it owns.
    pub id: NodeId,
    /// The node's unique name in the farm configuration.
    pub name: String,
    /// The node's share of the buckets relative to the others; 0 makes it a standby.
    pub weight: u32,
}

/// The owner of each of `buckets` buckets among the `live` members, as one `NodeId` per bucket.
///
/// Each eligible node owns its weighted share of the buckets to within one bucket, and few
/// buckets move beyond those of a node that leaves or joins (see the module documentation).
/// The result depends only on `key`, `buckets` and the set of members in `live`:
///
/// - an empty `live` (or one holding only members with the id [`NO_OWNER`], which are ignored
///   since the table cannot name them) leaves every bucket [`NO_OWNER`];
/// - members with weight 0 own nothing while any member has a positive weight; if all have
///   weight 0 they share the buckets equally;
/// - the farm uses powers of two from 64 to 65536 buckets and at most 64 members of weight at
///   most 1000, but any count up to [`MAX_BUCKETS`], any number of members and any `u32` weight
///   are served exactly (the cost grows with buckets times members); above [`MAX_BUCKETS`] the
///   result is empty, which `BucketTable::new` rejects like the size itself;
/// - members with the same name and id count once, with the smallest of their weights; names
///   are expected to be unique, and two members sharing a name get identical hashes, so ties
///   between them go to the lower id.
pub fn assign(key: &HashKey, buckets: usize, live: &[Member]) -> Vec<NodeId> {
    if buckets > MAX_BUCKETS {
        return Vec::new();
    }
    let nodes = eligible(key, live);
    let quotas = quotas(buckets, &nodes);
    match_buckets(key, &nodes, &quotas, buckets)
}

/// The bucket table of `config`'s farm when the nodes marked in `live` (indexed like
/// `config.nodes`) are alive: what every node computes from the same view. A valid
/// configuration always has a size the table takes.
pub fn farm_table(config: &FarmConfig, live: &[bool]) -> Result<BucketTable, TableSizeError> {
    let members: Vec<Member> = config
        .nodes
        .iter()
        .enumerate()
        .filter(|&(i, _)| live.get(i).copied().unwrap_or(false))
        .map(|(i, node)| Member {
            id: i as NodeId,
            name: node.name.clone(),
            weight: node.weight,
        })
        .collect();
    let key = HashKey::from_bytes(config.farm.hash_key);
    BucketTable::new(0, assign(&key, config.farm.buckets as usize, &members))
}

/// A node that may own buckets, as the matching uses it.
#[derive(Clone, Copy, Debug)]
struct Node {
    /// The id written into the table.
    id: NodeId,
    /// The keyed hash of the node's name, which seeds its per-bucket hashes.
    seed: u64,
    /// The effective weight, positive.
    weight: u64,
}

/// The members that may own buckets, in a canonical order (by name, then id) whatever the order
/// of `live`; a node's index in it is its rank in tie-breaks.
fn eligible(key: &HashKey, live: &[Member]) -> Vec<Node> {
    let mut members: Vec<&Member> = live.iter().filter(|m| m.id != NO_OWNER).collect();
    members.sort_by(|a, b| (&a.name, a.id, a.weight).cmp(&(&b.name, b.id, b.weight)));
    members.dedup_by(|a, b| a.name == b.name && a.id == b.id);
    let any_active = members.iter().any(|m| m.weight > 0);
    members
        .into_iter()
        .filter(|m| !any_active || m.weight > 0)
        .map(|m| Node {
            id: m.id,
            seed: siphash13(key, m.name.as_bytes()),
            weight: if any_active { u64::from(m.weight) } else { 1 },
        })
        .collect()
}

/// Each node's bucket count: `buckets * w / W` rounded by largest remainder.
///
/// The buckets left over after the floors go to the largest remainders; equal remainders (equal
/// weights, typically) are ordered by the name's keyed hash rather than by the name, so that the
/// extra bucket does not always go to the alphabetically first node.
fn quotas(buckets: usize, nodes: &[Node]) -> Vec<usize> {
    let total: u128 = nodes.iter().map(|n| u128::from(n.weight)).sum();
    if total == 0 {
        return Vec::new();
    }
    let share = |n: &Node| buckets as u128 * u128::from(n.weight);
    // Each floor is at most `buckets`, so the narrowing casts below are lossless.
    let mut quotas: Vec<usize> = nodes.iter().map(|n| (share(n) / total) as usize).collect();
    let left_over = buckets - quotas.iter().sum::<usize>();
    let mut by_remainder: Vec<usize> = (0..nodes.len()).collect();
    by_remainder.sort_by_key(|&i| {
        let remainder = share(&nodes[i]) % total;
        (
            std::cmp::Reverse(remainder),
            std::cmp::Reverse(nodes[i].seed),
            i,
        )
    });
    for &i in by_remainder.iter().take(left_over) {
        quotas[i] += 1;
    }
    quotas
}

/// A node's bid for one bucket: the node's index in the eligible list, its rendezvous cost
/// and its weight; the bucket ranks bids by `cost / weight`, the lowest first.
#[derive(Clone, Copy, Debug)]
struct Bid {
    node: usize,
    cost: u64,
    weight: u64,
}

impl Bid {
    /// Whether the bucket ranks `self` before `other`: a lower `cost / weight`, compared by
    /// cross-multiplying (exact in `u128`), or an equal one from a lower node index.
    fn beats(&self, other: &Bid) -> bool {
        let this = u128::from(self.cost) * u128::from(other.weight);
        let that = u128::from(other.cost) * u128::from(self.weight);
        this < that || (this == that && self.node < other.node)
    }
}

/// The best bid for `bucket` among those ranked strictly after `after` (all of them for
/// `None`); `None` once every node has been tried.
fn next_bid(key: &HashKey, nodes: &[Node], bucket: u32, after: Option<Bid>) -> Option<Bid> {
    let mut best: Option<Bid> = None;
    for (node, n) in nodes.iter().enumerate() {
        let bid = Bid {
            node,
            cost: cost(key, n.seed, bucket),
            weight: n.weight,
        };
        let untried = after.is_none_or(|prev| prev.beats(&bid));
        if untried && best.is_none_or(|b| bid.beats(&b)) {
            best = Some(bid);
        }
    }
    best
}

/// The buckets a node holds during the matching, the one it holds most weakly on top: its
/// highest cost, the higher bucket number among equal costs.
type Holding = BinaryHeap<(u64, u32)>;

/// The bucket-proposing deferred acceptance with node capacities `quotas`, as one owner per
/// bucket.
fn match_buckets(key: &HashKey, nodes: &[Node], quotas: &[usize], buckets: usize) -> Vec<NodeId> {
    let mut holdings: Vec<Holding> = quotas
        .iter()
        .map(|&q| Holding::with_capacity(q + 1))
        .collect();
    // `buckets` is at most MAX_BUCKETS here, so every bucket number fits in a u32. The order in
    // which buckets propose does not change the matching.
    let mut pending: Vec<(u32, Option<Bid>)> = (0..buckets as u32).map(|b| (b, None)).collect();
    while let Some((bucket, rejected)) = pending.pop() {
        // Every node's slots add up to `buckets`, so a bucket cannot be rejected by all nodes
        // (they would be holding `buckets` others); `None` happens only with no node at all.
        let Some(bid) = next_bid(key, nodes, bucket, rejected) else {
            continue;
        };
        let holding = &mut holdings[bid.node];
        holding.push((bid.cost, bucket));
        if holding.len() > quotas[bid.node] {
            if let Some((cost, weakest)) = holding.pop() {
                pending.push((weakest, Some(Bid { cost, ..bid })));
            }
        }
    }
    let mut owners = vec![NO_OWNER; buckets];
    for (node, holding) in holdings.iter().enumerate() {
        for &(_, bucket) in holding.iter() {
            owners[bucket as usize] = nodes[node].id;
        }
    }
    owners
}

/// Fraction bits of the fixed-point logarithms.
const FRAC_BITS: u32 = 32;
/// Mantissa bits that index [`LOG2_TABLE`]; the bits below them interpolate.
const TABLE_BITS: u32 = 10;
/// `log2(1 + i / 2^TABLE_BITS)` in fixed point with [`FRAC_BITS`] fraction bits, for `i` from 0
/// to `2^TABLE_BITS` inclusive (the last entry is 1.0, the end of the last interval).
static LOG2_TABLE: [u64; (1 << TABLE_BITS) + 1] = log2_table();

/// The node's rendezvous cost for a bucket before weighting: `-log2(u)` in fixed point, where
/// `u = h / 2^64` for the keyed hash `h` of (node seed, bucket), with `h = 0` read as 1 since
/// the logarithm needs a positive argument.
fn cost(key: &HashKey, seed: u64, bucket: u32) -> u64 {
    let mut message = [0u8; 12];
    message[..8].copy_from_slice(&seed.to_le_bytes());
    message[8..].copy_from_slice(&bucket.to_le_bytes());
    let h = siphash13(key, &message).max(1);
    // log2(h) < 64 for any u64, so the difference is positive.
    (64u64 << FRAC_BITS) - log2_fixed(h)
}

/// `log2(x)` for `x >= 1` in fixed point: the exponent from the leading zeros, the fraction from
/// [`LOG2_TABLE`] interpolated linearly on the mantissa bits below the table index.
fn log2_fixed(x: u64) -> u64 {
    let zeros = x.leading_zeros();
    let exponent = u64::from(63 - zeros);
    // The mantissa without its leading one, as a 64-bit fraction.
    let fraction = (x << zeros) << 1;
    let index = (fraction >> (64 - TABLE_BITS)) as usize;
    let between = (fraction << TABLE_BITS) >> (64 - FRAC_BITS);
    let low = LOG2_TABLE[index];
    let step = LOG2_TABLE[index + 1] - low;
    // `step` is below 2^23 and `between` below 2^32: the product fits.
    (exponent << FRAC_BITS) + low + ((step * between) >> FRAC_BITS)
}

/// Builds [`LOG2_TABLE`] at compile time.
const fn log2_table() -> [u64; (1 << TABLE_BITS) + 1] {
    let mut table = [0; (1 << TABLE_BITS) + 1];
    let mut i = 0;
    while i < table.len() {
        table[i] = log2_of_mantissa(i as u64);
        i += 1;
    }
    table
}

/// `log2(1 + i / 2^TABLE_BITS)` for `i <= 2^TABLE_BITS` by the bit-by-bit method, in integers:
/// with `m` in [1, 2), `m^2` is 2 or more exactly when the next bit of the logarithm is 1, in
/// which case it is halved back into [1, 2).
const fn log2_of_mantissa(i: u64) -> u64 {
    /// Fraction bits of the mantissa while squaring: `m^2 < 4` then fits a `u128`.
    const M_BITS: u32 = 62;
    let two: u128 = 2 << M_BITS;
    let mut m: u128 = (1 << M_BITS) + ((i as u128) << (M_BITS - TABLE_BITS));
    let mut log: u64 = 0;
    if m >= two {
        m >>= 1;
        log = 1 << FRAC_BITS;
    }
    let mut bit = FRAC_BITS;
    while bit > 0 {
        bit -= 1;
        m = (m * m) >> M_BITS;
        if m >= two {
            m >>= 1;
            log |= 1 << bit;
        }
    }
    log
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> HashKey {
        HashKey::from_bytes(core::array::from_fn(|i| (i * 7 + 3) as u8))
    }

    fn member(id: NodeId, name: &str, weight: u32) -> Member {
        Member {
            id,
            name: name.to_string(),
            weight,
        }
    }

    #[test]
    fn a_farm_table_holds_the_configured_live_nodes_by_index() {
        let config = FarmConfig::parse(
            "[farm]\nname = \"t\"\nvip = [\"198.18.0.100\"]\ninterface = \"eth0\"\nbuckets = 64\n\
             hash_key = \"00112233445566778899aabbccddeeff\"\n\
             [[node]]\nname = \"a\"\naddress = \"198.18.0.1\"\n\
             [[node]]\nname = \"b\"\naddress = \"198.18.0.2\"\nweight = 3\n\
             [[rule]]\nprotocol = \"udp\"\nports = [\"7\"]\n",
            std::path::Path::new("farm.toml"),
        )
        .unwrap();
        let key = HashKey::from_bytes(config.farm.hash_key);
        let both = farm_table(&config, &[true, true]).unwrap();
        let expected = assign(&key, 64, &[member(0, "a", 1), member(1, "b", 3)]);
        assert_eq!(both.owners(), &expected[..]);
        assert_eq!(both.counts(2), [16, 48]);
        let only_b = farm_table(&config, &[false, true]).unwrap();
        assert_eq!(only_b.counts(2), [0, 64]);
        let nobody = farm_table(&config, &[]).unwrap();
        assert!(nobody.owners().iter().all(|&owner| owner == NO_OWNER));
    }

    fn count(owners: &[NodeId], id: NodeId) -> usize {
        owners.iter().filter(|&&o| o == id).count()
    }

    #[test]
    fn no_live_member_leaves_every_bucket_unowned() {
        assert_eq!(assign(&key(), 64, &[]), vec![NO_OWNER; 64]);
        let unnameable = [member(NO_OWNER, "ghost", 5)];
        assert_eq!(assign(&key(), 64, &unnameable), vec![NO_OWNER; 64]);
    }

    #[test]
    fn a_single_node_owns_every_bucket() {
        assert_eq!(assign(&key(), 4096, &[member(3, "a", 7)]), vec![3; 4096]);
    }

    #[test]
    fn standbys_own_nothing_while_an_active_node_lives() {
        let live = [member(0, "a", 0), member(1, "b", 2), member(2, "c", 0)];
        assert_eq!(assign(&key(), 1024, &live), vec![1; 1024]);
    }

    #[test]
    fn standbys_alone_share_equally() {
        let live = [member(0, "a", 0), member(1, "b", 0), member(2, "c", 0)];
        let owners = assign(&key(), 1024, &live);
        for id in 0..3 {
            let n = count(&owners, id);
            assert!(n == 341 || n == 342, "node {id} owns {n}");
        }
    }

    #[test]
    fn weights_one_to_three_split_one_to_three() {
        let live = [member(0, "a", 1), member(1, "b", 3)];
        let owners = assign(&key(), 4096, &live);
        assert_eq!(count(&owners, 0), 1024);
        assert_eq!(count(&owners, 1), 3072);
        let owners = assign(&key(), 100, &live);
        assert_eq!(count(&owners, 0), 25);
        assert_eq!(count(&owners, 1), 75);
    }

    #[test]
    fn the_name_not_the_id_places_the_buckets() {
        let before = assign(&key(), 1024, &[member(0, "a", 1), member(1, "b", 1)]);
        let after = assign(&key(), 1024, &[member(0, "b", 1), member(1, "a", 1)]);
        let swapped: Vec<NodeId> = before.iter().map(|&o| 1 - o).collect();
        assert_eq!(after, swapped);
    }

    #[test]
    fn the_key_changes_the_table() {
        let live = [member(0, "a", 1), member(1, "b", 1)];
        let other = HashKey::from_bytes([9; 16]);
        assert_ne!(assign(&key(), 1024, &live), assign(&other, 1024, &live));
    }

    #[test]
    fn duplicate_members_count_once() {
        let live = [member(0, "a", 1), member(1, "b", 1), member(1, "b", 1)];
        assert_eq!(count(&assign(&key(), 1024, &live), 0), 512);
    }

    #[test]
    fn more_buckets_than_a_table_holds_give_no_table() {
        let live = [member(0, "a", 1), member(1, "b", 1)];
        assert!(assign(&key(), MAX_BUCKETS + 1, &live).is_empty());
        assert_eq!(assign(&key(), MAX_BUCKETS, &live).len(), MAX_BUCKETS);
    }

    #[test]
    fn huge_weights_are_exact() {
        let live = [member(0, "a", u32::MAX), member(1, "b", u32::MAX / 3)];
        let owners = assign(&key(), 4096, &live);
        assert!(count(&owners, 0).abs_diff(3072) <= 1);
    }

    #[test]
    fn quotas_follow_largest_remainders() {
        // Equal remainders: the spare bucket goes to the largest seed, wherever it is listed.
        let nodes = [10, 30, 20].map(|seed| Node {
            id: 0,
            seed,
            weight: 1,
        });
        assert_eq!(quotas(64, &nodes), vec![21, 22, 21]);
        let nodes = [30, 10, 20].map(|seed| Node {
            id: 0,
            seed,
            weight: 1,
        });
        assert_eq!(quotas(64, &nodes), vec![22, 21, 21]);
        let nodes = [5u64, 3, 2].map(|weight| Node {
            id: 0,
            seed: 0,
            weight,
        });
        // 100 buckets: 50, 30, 20 exactly; 64 buckets: 32, 19.2, 12.8 -> 32, 19, 13.
        assert_eq!(quotas(100, &nodes), vec![50, 30, 20]);
        assert_eq!(quotas(64, &nodes), vec![32, 19, 13]);
    }

    #[test]
    fn the_fixed_point_log2_is_close_to_the_real_one() {
        for shift in 0..64 {
            for x in [
                1u64 << shift,
                (1u64 << shift) | 0x5555_5555_5555_5555 >> (63 - shift),
            ] {
                let exact = (x as f64).log2();
                let fixed = log2_fixed(x) as f64 / (1u64 << FRAC_BITS) as f64;
                assert!(
                    (exact - fixed).abs() < 2e-7,
                    "log2({x}): {fixed} vs {exact}"
                );
            }
        }
        assert!(log2_fixed(u64::MAX) < 64 << FRAC_BITS);
    }

    #[test]
    fn the_log2_table_is_exact_at_its_ends() {
        assert_eq!(LOG2_TABLE[0], 0);
        assert_eq!(LOG2_TABLE[1 << TABLE_BITS], 1 << FRAC_BITS);
        assert!(LOG2_TABLE.windows(2).all(|w| w[0] < w[1]));
    }
}
