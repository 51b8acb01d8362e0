//! The keyed flow hash: SipHash-1-3 with the farm's 128-bit `hash_key`.
//!
//! SipHash-1-3 is what the Linux kernel uses for `hsiphash` on 64-bit machines: cheap (one
//! compression round per 8-byte word), keyed so that a client cannot choose source addresses
//! that all land on one node, and made only of 64-bit add/rotate/xor, which an eBPF program
//! reproduces exactly. The round counts are const parameters so the published SipHash-2-4
//! vectors (see `tests/hash_vectors.rs`) check the very code the packet path runs.

use std::net::IpAddr;

/// A 128-bit SipHash key, as the two little-endian 64-bit halves of the 16 key bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HashKey {
    /// SipHash's initial state for this key, computed once rather than for every packet.
    initial: [u64; 4],
    /// `v0` and `v1` after the first half of the first round, which reads neither the message
    /// nor the other two words: also computed once per key.
    primed: [u64; 2],
}

impl HashKey {
    /// The key from its 16 bytes, in the order they are written in the config's hex string.
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        let mut lo = [0u8; 8];
        let mut hi = [0u8; 8];
        let mut i = 0;
        while i < 8 {
            lo[i] = bytes[i];
            hi[i] = bytes[i + 8];
            i += 1;
        }
        let (k0, k1) = (u64::from_le_bytes(lo), u64::from_le_bytes(hi));
        // "somepseudorandomlygeneratedbytes", xored with the key.
        let initial = [
            k0 ^ 0x736f_6d65_7073_6575,
            k1 ^ 0x646f_7261_6e64_6f6d,
            k0 ^ 0x6c79_6765_6e65_7261,
            k1 ^ 0x7465_6462_7974_6573,
        ];
        let mut primed = initial;
        half_round_01(&mut primed);
        Self {
            initial,
            primed: [primed[0], primed[1]],
        }
    }

    /// The state every hash with this key starts from, the first half of the first round
    /// done (`v0`, `v1` primed; `v2`, `v3` initial): what the eBPF program receives in its map,
    /// so that it too skips that work for every packet.
    pub const fn primed_state(&self) -> [u64; 4] {
        [
            self.primed[0],
            self.primed[1],
            self.initial[2],
            self.initial[3],
        ]
    }
}

/// The first four steps of a SipRound: they read and write only `v0` and `v1`.
#[inline(always)]
const fn half_round_01(v: &mut [u64; 4]) {
    v[0] = v[0].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(13);
    v[1] ^= v[0];
    v[0] = v[0].rotate_left(32);
}

#[inline(always)]
fn sip_round(v: &mut [u64; 4]) {
    half_round_01(v);
    rest_of_round(v);
}

/// A SipRound after [`half_round_01`].
#[inline(always)]
fn rest_of_round(v: &mut [u64; 4]) {
    v[2] = v[2].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(16);
    v[3] ^= v[2];
    v[0] = v[0].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(21);
    v[3] ^= v[0];
    v[2] = v[2].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(17);
    v[1] ^= v[2];
    v[2] = v[2].rotate_left(32);
}

/// The SipHash-C-D state, fed one little-endian 64-bit message word at a time.
struct SipState<const C: usize, const D: usize> {
    v: [u64; 4],
}

impl<const C: usize, const D: usize> SipState<C, D> {
    /// The state after compressing the message's first word `m` (every message has one: the
    /// last word carries the length). The first half-round comes precomputed with the key.
    #[inline(always)]
    fn start(key: &HashKey, m: u64) -> Self {
        let [v0, v1] = key.primed;
        let [_, _, v2, v3] = key.initial;
        let mut v = [v0, v1, v2, v3 ^ m];
        rest_of_round(&mut v);
        for _ in 1..C {
            sip_round(&mut v);
        }
        v[0] ^= m;
        Self { v }
    }

    #[inline(always)]
    fn compress(&mut self, m: u64) {
        self.v[3] ^= m;
        for _ in 0..C {
            sip_round(&mut self.v);
        }
        self.v[0] ^= m;
    }

    /// Finalises, once the last word (the message's tail bytes with the length modulo 256 in
    /// its top byte) has been compressed.
    #[inline(always)]
    fn finish(mut self) -> u64 {
        self.v[2] ^= 0xff;
        for _ in 0..D {
            sip_round(&mut self.v);
        }
        self.v[0] ^ self.v[1] ^ self.v[2] ^ self.v[3]
    }
}

/// SipHash-C-D of `data` under `key`, 64-bit output. `C` must be at least 1, as in every
/// SipHash variant.
#[inline(always)]
pub fn siphash<const C: usize, const D: usize>(key: &HashKey, data: &[u8]) -> u64 {
    let full = data.len() / 8;
    let word = |i: usize| {
        let mut w = [0u8; 8];
        if i < full {
            w.copy_from_slice(&data[8 * i..8 * i + 8]);
        } else {
            let tail = &data[8 * full..];
            w[..tail.len()].copy_from_slice(tail);
            w[7] = data.len() as u8;
        }
        u64::from_le_bytes(w)
    };
    let mut state = SipState::<C, D>::start(key, word(0));
    for i in 1..=full {
        state.compress(word(i));
    }
    state.finish()
}

/// SipHash-1-3, the flow hash of the packet path.
#[inline(always)]
pub fn siphash13(key: &HashKey, data: &[u8]) -> u64 {
    siphash::<1, 3>(key, data)
}

/// The flow hash of a client: SipHash-1-3 of its identity bytes, which are the client address
/// (4 bytes for IPv4, 16 for IPv6) followed by the client port in network byte order (0 when
/// the affinity is the client address alone).
///
/// IPv4 identities are 6 bytes, so they hash in a single compression round; SipHash mixes the
/// message length into the last word, so the two families never share an identity. The words
/// are assembled directly rather than through [`siphash13`] over a byte buffer, which measured
/// a third of the packet path's instructions; a test holds the two together.
#[inline(always)]
pub fn client_hash(key: &HashKey, client: IpAddr, port: u16) -> u64 {
    // The port's two bytes in network order, as they sit after the address in a word.
    let port = u64::from(port.swap_bytes());
    match client {
        IpAddr::V4(addr) => {
            let addr = u64::from(u32::from_le_bytes(addr.octets()));
            SipState::<1, 3>::start(key, addr | port << 32 | 6 << 56).finish()
        }
        IpAddr::V6(addr) => {
            let addr = u128::from_le_bytes(addr.octets());
            let mut state = SipState::<1, 3>::start(key, addr as u64);
            state.compress((addr >> 64) as u64);
            state.compress(port | 18 << 56);
            state.finish()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::Hasher;

    fn key() -> HashKey {
        HashKey::from_bytes(core::array::from_fn(|i| i as u8))
    }

    #[test]
    fn siphash13_matches_the_siphasher_crate_for_every_length() {
        let data: Vec<u8> = (0..64u8).collect();
        let bytes: [u8; 16] = core::array::from_fn(|i| i as u8);
        for len in 0..=data.len() {
            let mut reference = siphasher::sip::SipHasher13::new_with_key(&bytes);
            reference.write(&data[..len]);
            assert_eq!(
                siphash13(&key(), &data[..len]),
                reference.finish(),
                "len {len}"
            );
        }
    }

    #[test]
    fn identities_are_the_address_bytes_then_the_port() {
        let v4 = client_hash(&key(), "198.18.0.1".parse().unwrap(), 0x1f90);
        assert_eq!(v4, siphash13(&key(), &[198, 18, 0, 1, 0x1f, 0x90]));
        let v6: std::net::Ipv6Addr = "2001:db8::1:2:3".parse().unwrap();
        let mut msg = [0u8; 18];
        msg[..16].copy_from_slice(&v6.octets());
        msg[16..].copy_from_slice(&[0xab, 0xcd]);
        assert_eq!(
            client_hash(&key(), v6.into(), 0xabcd),
            siphash13(&key(), &msg)
        );
    }

    #[test]
    fn an_ipv4_client_and_its_mapped_ipv6_form_differ() {
        let v4 = client_hash(&key(), "198.18.0.1".parse().unwrap(), 0);
        let mapped = client_hash(&key(), "::ffff:198.18.0.1".parse().unwrap(), 0);
        assert_ne!(v4, mapped);
    }

    #[test]
    fn the_port_changes_the_hash() {
        let ip = "198.18.0.1".parse().unwrap();
        assert_ne!(client_hash(&key(), ip, 0), client_hash(&key(), ip, 1));
    }
}
