//! The Linux kernel's `jhash` (Bob Jenkins' lookup3 `hashlittle`), as nftables' `jhash`
//! expression computes it, so that herd-perf can choose clients that the nftables contender
//! keeps or drops exactly as herd does.

/// The value lookup3 starts from, before the length and the seed are added.
const INITVAL: u32 = 0xdead_beef;

fn mix(a: &mut u32, b: &mut u32, c: &mut u32) {
    *a = a.wrapping_sub(*c);
    *a ^= c.rotate_left(4);
    *c = c.wrapping_add(*b);
    *b = b.wrapping_sub(*a);
    *b ^= a.rotate_left(6);
    *a = a.wrapping_add(*c);
    *c = c.wrapping_sub(*b);
    *c ^= b.rotate_left(8);
    *b = b.wrapping_add(*a);
    *a = a.wrapping_sub(*c);
    *a ^= c.rotate_left(16);
    *c = c.wrapping_add(*b);
    *b = b.wrapping_sub(*a);
    *b ^= a.rotate_left(19);
    *a = a.wrapping_add(*c);
    *c = c.wrapping_sub(*b);
    *c ^= b.rotate_left(4);
    *b = b.wrapping_add(*a);
}

fn finish(a: u32, b: u32, mut c: u32) -> u32 {
    let (mut a, mut b) = (a, b);
    c ^= b;
    c = c.wrapping_sub(b.rotate_left(14));
    a ^= c;
    a = a.wrapping_sub(c.rotate_left(11));
    b ^= a;
    b = b.wrapping_sub(a.rotate_left(25));
    c ^= b;
    c = c.wrapping_sub(b.rotate_left(16));
    a ^= c;
    a = a.wrapping_sub(c.rotate_left(4));
    b ^= a;
    b = b.wrapping_sub(a.rotate_left(14));
    c ^= b;
    c.wrapping_sub(b.rotate_left(24))
}

/// The kernel's `jhash(key, length, initval)` on a little-endian machine.
pub fn jhash(key: &[u8], seed: u32) -> u32 {
    // The kernel takes the length as a u32; keys here are addresses of 4 or 16 bytes.
    let start = INITVAL.wrapping_add(key.len() as u32).wrapping_add(seed);
    let (mut a, mut b, mut c) = (start, start, start);
    let mut rest = key;
    // Whole 12-byte blocks are mixed, except the last block, which `finish` takes even when
    // whole: lookup3's loop runs while more than 12 bytes are left.
    while rest.len() > 12 {
        a = a.wrapping_add(word(&rest[0..4]));
        b = b.wrapping_add(word(&rest[4..8]));
        c = c.wrapping_add(word(&rest[8..12]));
        mix(&mut a, &mut b, &mut c);
        rest = &rest[12..];
    }
    if rest.is_empty() {
        return c;
    }
    // The tail's missing bytes count as zeros, which is what lookup3's fall-through adds.
    let mut tail = [0u8; 12];
    tail[..rest.len()].copy_from_slice(rest);
    a = a.wrapping_add(word(&tail[0..4]));
    b = b.wrapping_add(word(&tail[4..8]));
    c = c.wrapping_add(word(&tail[8..12]));
    finish(a, b, c)
}

/// The bucket nftables' `jhash ... mod modulus seed seed` gives `key`: the kernel scales the
/// hash into the range (`reciprocal_scale`) instead of taking a remainder.
pub fn nft_bucket(key: &[u8], seed: u32, modulus: u32) -> u32 {
    ((u64::from(jhash(key, seed)) * u64::from(modulus)) >> 32) as u32
}

fn word(bytes: &[u8]) -> u32 {
    u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    // The values printed by the test driver of Bob Jenkins' lookup3.c.
    #[test]
    fn matches_the_published_lookup3_values() {
        assert_eq!(jhash(b"", 0), 0xdead_beef);
        let text = b"Four score and seven years ago";
        assert_eq!(jhash(text, 0), 0x1777_0551);
        assert_eq!(jhash(text, 1), 0xcd62_8161);
    }

    #[test]
    fn buckets_stay_in_range_and_spread() {
        let mut seen = [0u32; 3];
        for i in 0..3000u32 {
            let bucket = nft_bucket(&i.to_be_bytes(), 0x6865_7264, 3);
            seen[bucket as usize] += 1;
        }
        assert!(seen.iter().all(|&n| (900..1100).contains(&n)), "{seen:?}");
    }
}
