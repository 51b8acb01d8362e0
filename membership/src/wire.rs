//! The heartbeat datagram: what a node tells every other node every `heartbeat_ms`, and its
//! byte layout. Decoding checks the authentication tag before it reads a single field, and
//! refuses anything malformed with an error that says what; it never panics.
//!
//! ```text
//! offset  size  field
//!      0     4  magic "HERD"
//!      4     1  version (1)
//!      5     1  key id: which farm key made the tag
//!      6    32  farm digest: SHA-256 of the configuration every node must share
//!     38     1  name length n (1-63)
//!     39     n  sender's node name ([A-Za-z0-9_.-])
//!              then, big-endian:
//!              8  incarnation: raised at every start of herd (its start time, ms)
//!              8  sequence number, from 1 in each incarnation
//!              8  send time, ms since the Unix epoch (freshness)
//!              1  state: 0 joining, 1 up, 2 leaving, 3 withdrawn, 4 stopped
//!              2  weight
//!              8  epoch of the sender's view
//!              8  released: the epoch up to which the sender has let go of the buckets its
//!                 view no longer gives it
//!              8  agreed: the members of the last view the sender saw every live node agree
//!                 on (bit i: node i), on which the buckets it holds rest
//!             16  view digest: SHA-256 of the view's members, truncated
//!              1  drain count d (0-8)
//!          8 × d  drains: for each earlier view whose buckets the sender still drains, the
//!                 set of its members (bit i: node i)
//!              1  member count m (0-64)
//!          9 × m  members: node index (u8) and incarnation (u64)
//!             16  tag: HMAC-SHA256 of everything above, truncated
//! ```

use sha2::{Digest, Sha256};

use crate::auth::{Keyring, TAG_LEN};

/// The first bytes of every heartbeat.
pub const MAGIC: [u8; 4] = *b"HERD";
/// The layout's version.
pub const VERSION: u8 = 1;
/// The largest heartbeat: every field at its largest fits in 1024 bytes, well under any MTU.
pub const MAX_DATAGRAM: usize = 1024;
/// The most members a view holds: the most nodes a farm has.
pub const MAX_MEMBERS: usize = 64;
/// The longest node name.
pub const MAX_NAME: usize = 63;
/// The most drains a heartbeat lists.
pub const MAX_DRAINS: usize = 8;

/// Bytes before the name: magic, version, key id, farm digest, name length.
const HEAD_LEN: usize = 4 + 1 + 1 + 32 + 1;
/// Bytes of the fixed fields after the name: up to and including the drain count, and the
/// member count.
const FIXED_LEN: usize = 8 + 8 + 8 + 1 + 2 + 8 + 8 + 8 + 16 + 1 + 1;
/// Bytes of one drain.
const DRAIN_LEN: usize = 8;
/// Bytes of one member.
const MEMBER_LEN: usize = 1 + 8;

/// Where a node stands in the farm, as its heartbeats say.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Starting: it owns nothing yet.
    Joining,
    /// A full member that owns its share.
    Up,
    /// Leaving on purpose: draining its buckets.
    Leaving,
    /// Taken out of the farm (by a checker or an operator), owning nothing, and still
    /// following the views: it may join again at any moment.
    Withdrawn,
    /// Withdrawn, and herd is stopping: it falls silent, so nobody waits for it.
    Stopped,
}

impl State {
    /// Every state, in the order of their wire bytes.
    pub const ALL: [State; 5] = [
        State::Joining,
        State::Up,
        State::Leaving,
        State::Withdrawn,
        State::Stopped,
    ];

    fn byte(self) -> u8 {
        match self {
            State::Joining => 0,
            State::Up => 1,
            State::Leaving => 2,
            State::Withdrawn => 3,
            State::Stopped => 4,
        }
    }

    fn from_byte(byte: u8) -> Option<Self> {
        State::ALL.into_iter().find(|state| state.byte() == byte)
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            State::Joining => "joining",
            State::Up => "up",
            State::Leaving => "leaving",
            State::Withdrawn => "withdrawn",
            State::Stopped => "stopped",
        })
    }
}

/// A member of a view: a node (its index in the configuration) in one incarnation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ViewMember {
    /// The node's index among the configuration's `[[node]]` entries.
    pub node: u8,
    /// The incarnation the view knows it in.
    pub incarnation: u64,
}

/// One heartbeat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Heartbeat {
    /// The farm digest of the sender's configuration.
    pub farm: [u8; 32],
    /// The sender's node name.
    pub name: String,
    /// The sender's incarnation.
    pub incarnation: u64,
    /// The heartbeat's number in that incarnation.
    pub sequence: u64,
    /// When it was sent, ms since the Unix epoch by the sender's clock.
    pub sent_ms: u64,
    /// The sender's state.
    pub state: State,
    /// The sender's weight.
    pub weight: u16,
    /// The epoch of the sender's view.
    pub epoch: u64,
    /// The epoch up to which the sender has released the buckets it is losing.
    pub released: u64,
    /// The members of the last view the sender saw every live node agree on (bit `i`: node
    /// `i`): the buckets it holds rest on that view.
    pub agreed: u64,
    /// The members the sender considers alive, sorted by node.
    pub view: Vec<ViewMember>,
    /// The earlier views whose buckets the sender still drains, as sets of members (bit `i`:
    /// node `i`): it may still accept packets of its own connections in every bucket such a
    /// view gave it.
    pub drains: Vec<u64>,
}

/// Why a datagram is not a heartbeat to act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Shorter than the smallest heartbeat.
    #[error("{0} bytes: shorter than any heartbeat")]
    TooShort(usize),
    /// Longer than the largest heartbeat.
    #[error("{0} bytes: longer than any heartbeat ({MAX_DATAGRAM})")]
    TooLong(usize),
    /// Not a herd heartbeat.
    #[error("not a herd heartbeat (no HERD magic)")]
    Magic,
    /// A layout this node does not know.
    #[error("heartbeat version {0}; this herd reads version {VERSION}")]
    Version(u8),
    /// Made with a key this node does not have.
    #[error("made with key id {0}, which is not in this node's key file")]
    UnknownKey(u8),
    /// The tag does not match: a wrong key, or altered on the way.
    #[error("authentication failed (a different key, or altered on the way)")]
    Tag,
    /// The fields do not add up to the datagram's length.
    #[error("the fields do not fit the datagram")]
    Length,
    /// A node name that breaks the configuration's rules.
    #[error("invalid node name")]
    Name,
    /// An unknown state.
    #[error("unknown state {0}")]
    State(u8),
    /// More drains than a heartbeat lists.
    #[error("{0} drains; a heartbeat lists at most {MAX_DRAINS}")]
    TooManyDrains(usize),
    /// More members than a farm has nodes.
    #[error("{0} members; a farm has at most {MAX_MEMBERS} nodes")]
    TooManyMembers(usize),
    /// A member index past the largest farm.
    #[error("member index {0} is past the largest farm")]
    MemberIndex(u8),
    /// Members out of order or repeated.
    #[error("the view's members are not sorted and unique")]
    MemberOrder,
    /// The view digest does not match the members.
    #[error("the view digest does not match its members")]
    ViewDigest,
}

impl Heartbeat {
    /// The digest of the view: SHA-256 of the members in order, truncated to 16 bytes. Two
    /// nodes with the same digest agree on who is alive.
    pub fn view_digest(&self) -> [u8; 16] {
        view_digest(&self.view)
    }

    /// The datagram, tagged with `keys`' signing key. `None` if a field breaks the layout's
    /// limits (a name or a view too long), which a node built from a valid configuration never
    /// produces.
    pub fn encode(&self, keys: &Keyring) -> Option<Vec<u8>> {
        if self.name.is_empty()
            || self.name.len() > MAX_NAME
            || self.view.len() > MAX_MEMBERS
            || self.drains.len() > MAX_DRAINS
        {
            return None;
        }
        let key = keys.signing();
        let mut out = Vec::with_capacity(
            HEAD_LEN
                + self.name.len()
                + FIXED_LEN
                + DRAIN_LEN * self.drains.len()
                + MEMBER_LEN * self.view.len()
                + TAG_LEN,
        );
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        out.push(key.id);
        out.extend_from_slice(&self.farm);
        out.push(self.name.len() as u8);
        out.extend_from_slice(self.name.as_bytes());
        for word in [self.incarnation, self.sequence, self.sent_ms] {
            out.extend_from_slice(&word.to_be_bytes());
        }
        out.push(self.state.byte());
        out.extend_from_slice(&self.weight.to_be_bytes());
        out.extend_from_slice(&self.epoch.to_be_bytes());
        out.extend_from_slice(&self.released.to_be_bytes());
        out.extend_from_slice(&self.agreed.to_be_bytes());
        out.extend_from_slice(&self.view_digest());
        out.push(self.drains.len() as u8);
        for drain in &self.drains {
            out.extend_from_slice(&drain.to_be_bytes());
        }
        out.push(self.view.len() as u8);
        for member in &self.view {
            out.push(member.node);
            out.extend_from_slice(&member.incarnation.to_be_bytes());
        }
        let tag = key.tag(&out);
        out.extend_from_slice(&tag);
        Some(out)
    }

    /// Reads a datagram: the tag is checked with the key it names before any field is read.
    pub fn decode(datagram: &[u8], keys: &Keyring) -> Result<Self, WireError> {
        let smallest = HEAD_LEN + 1 + FIXED_LEN + TAG_LEN;
        if datagram.len() < smallest {
            return Err(WireError::TooShort(datagram.len()));
        }
        if datagram.len() > MAX_DATAGRAM {
            return Err(WireError::TooLong(datagram.len()));
        }
        if datagram[..4] != MAGIC {
            return Err(WireError::Magic);
        }
        if datagram[4] != VERSION {
            return Err(WireError::Version(datagram[4]));
        }
        let key = keys
            .key(datagram[5])
            .ok_or(WireError::UnknownKey(datagram[5]))?;
        let (signed, tag) = datagram.split_at(datagram.len() - TAG_LEN);
        if !key.verify(signed, tag) {
            return Err(WireError::Tag);
        }
        Reader {
            bytes: signed,
            at: 6,
        }
        .heartbeat()
    }
}

fn view_digest(view: &[ViewMember]) -> [u8; 16] {
    // Laid out as the datagram has them, and hashed a farm's worth at a time: hashing field
    // by field costs more than the hash itself.
    let mut hash = Sha256::new();
    let mut bytes = [0; MEMBER_LEN * MAX_MEMBERS];
    for members in view.chunks(MAX_MEMBERS) {
        for (member, out) in members.iter().zip(bytes.chunks_exact_mut(MEMBER_LEN)) {
            out[0] = member.node;
            out[1..].copy_from_slice(&member.incarnation.to_be_bytes());
        }
        hash.update(&bytes[..members.len() * MEMBER_LEN]);
    }
    truncated(hash)
}

/// The digest of the members as a datagram lays them out, `MEMBER_LEN` bytes each.
fn members_digest(members: &[u8]) -> [u8; 16] {
    truncated(Sha256::new_with_prefix(members))
}

/// The first 16 bytes of `hash`'s digest.
fn truncated(hash: Sha256) -> [u8; 16] {
    let full = hash.finalize();
    let mut digest = [0; 16];
    digest.copy_from_slice(&full[..16]);
    digest
}

/// Reads the fields of an authenticated datagram in order.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let end = self.at.checked_add(N).ok_or(WireError::Length)?;
        let bytes = self.bytes.get(self.at..end).ok_or(WireError::Length)?;
        self.at = end;
        Ok(bytes.try_into().expect("the slice has N bytes"))
    }

    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take::<1>()?[0])
    }

    fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(self.take()?))
    }

    fn heartbeat(mut self) -> Result<Heartbeat, WireError> {
        let farm = self.take::<32>()?;
        let name_len = usize::from(self.u8()?);
        let name = self
            .bytes
            .get(self.at..self.at + name_len)
            .ok_or(WireError::Length)?;
        self.at += name_len;
        let valid = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-');
        if name.is_empty() || name.len() > MAX_NAME || !name.iter().all(valid) {
            return Err(WireError::Name);
        }
        let name = String::from_utf8(name.to_vec()).map_err(|_| WireError::Name)?;
        let incarnation = self.u64()?;
        let sequence = self.u64()?;
        let sent_ms = self.u64()?;
        let state_byte = self.u8()?;
        let state = State::from_byte(state_byte).ok_or(WireError::State(state_byte))?;
        let weight = u16::from_be_bytes(self.take()?);
        let epoch = self.u64()?;
        let released = self.u64()?;
        let agreed = self.u64()?;
        let digest = self.take::<16>()?;
        let drain_count = usize::from(self.u8()?);
        if drain_count > MAX_DRAINS {
            return Err(WireError::TooManyDrains(drain_count));
        }
        let drains = (0..drain_count)
            .map(|_| self.u64())
            .collect::<Result<Vec<_>, _>>()?;
        let count = usize::from(self.u8()?);
        if count > MAX_MEMBERS {
            return Err(WireError::TooManyMembers(count));
        }
        if self.bytes.len() - self.at != count * MEMBER_LEN {
            return Err(WireError::Length);
        }
        let members = &self.bytes[self.at..];
        let mut view = Vec::with_capacity(count);
        for _ in 0..count {
            let node = self.u8()?;
            if usize::from(node) >= MAX_MEMBERS {
                return Err(WireError::MemberIndex(node));
            }
            let member = ViewMember {
                node,
                incarnation: self.u64()?,
            };
            if view
                .last()
                .is_some_and(|last: &ViewMember| last.node >= node)
            {
                return Err(WireError::MemberOrder);
            }
            view.push(member);
        }
        if members_digest(members) != digest {
            return Err(WireError::ViewDigest);
        }
        Ok(Heartbeat {
            farm,
            name,
            incarnation,
            sequence,
            sent_ms,
            state,
            weight,
            epoch,
            released,
            agreed,
            view,
            drains,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEYS: &str = "1 000102030405060708090a0b0c0d0e0f\n";

    fn keys() -> Keyring {
        Keyring::parse(KEYS).unwrap()
    }

    fn heartbeat() -> Heartbeat {
        Heartbeat {
            farm: [7; 32],
            name: "bravo".into(),
            incarnation: 1_790_000_000_000,
            sequence: 42,
            sent_ms: 1_790_000_004_200,
            state: State::Up,
            weight: 2,
            epoch: 9,
            released: 8,
            agreed: 0b11,
            view: vec![
                ViewMember {
                    node: 0,
                    incarnation: 5,
                },
                ViewMember {
                    node: 1,
                    incarnation: 1_790_000_000_000,
                },
                ViewMember {
                    node: 63,
                    incarnation: 1,
                },
            ],
            drains: vec![0b111, 1 << 63],
        }
    }

    #[test]
    fn a_heartbeat_round_trips() {
        let sent = heartbeat();
        let datagram = sent.encode(&keys()).unwrap();
        assert_eq!(
            datagram.len(),
            HEAD_LEN + 5 + FIXED_LEN + 2 * DRAIN_LEN + 3 * MEMBER_LEN + TAG_LEN
        );
        assert_eq!(Heartbeat::decode(&datagram, &keys()), Ok(sent));
    }

    #[test]
    fn every_state_round_trips() {
        for state in State::ALL {
            let sent = Heartbeat {
                state,
                ..heartbeat()
            };
            let datagram = sent.encode(&keys()).unwrap();
            assert_eq!(Heartbeat::decode(&datagram, &keys()), Ok(sent));
        }
    }

    #[test]
    fn the_largest_heartbeat_fits() {
        let mut largest = heartbeat();
        largest.name = "n".repeat(MAX_NAME);
        largest.view = (0..MAX_MEMBERS as u8)
            .map(|node| ViewMember {
                node,
                incarnation: u64::MAX,
            })
            .collect();
        largest.drains = vec![u64::MAX; MAX_DRAINS];
        let datagram = largest.encode(&keys()).unwrap();
        assert!(datagram.len() <= MAX_DATAGRAM, "{}", datagram.len());
        assert_eq!(Heartbeat::decode(&datagram, &keys()), Ok(largest));
        let mut too_long = heartbeat();
        too_long.name = "n".repeat(MAX_NAME + 1);
        assert_eq!(too_long.encode(&keys()), None);
    }

    #[test]
    fn the_view_digest_is_sha256_of_the_members_as_laid_out() {
        // Member by member, as the layout describes it, for views up to past the largest.
        let by_field = |view: &[ViewMember]| {
            let mut hash = Sha256::new();
            for member in view {
                hash.update([member.node]);
                hash.update(member.incarnation.to_be_bytes());
            }
            hash.finalize()[..16].to_vec()
        };
        for size in [
            0,
            1,
            3,
            MAX_MEMBERS - 1,
            MAX_MEMBERS,
            MAX_MEMBERS + 1,
            3 * MAX_MEMBERS,
        ] {
            let view: Vec<ViewMember> = (0..size)
                .map(|i| ViewMember {
                    node: i as u8,
                    incarnation: 1_790_000_000_000 + i as u64 * 7919,
                })
                .collect();
            assert_eq!(
                view_digest(&view).to_vec(),
                by_field(&view),
                "{size} members"
            );
        }
        let sent = heartbeat();
        let datagram = sent.encode(&keys()).unwrap();
        let end = datagram.len() - TAG_LEN;
        let members = &datagram[end - MEMBER_LEN * sent.view.len()..end];
        assert_eq!(members_digest(members), sent.view_digest());
    }

    #[test]
    fn every_altered_byte_fails_authentication_or_framing() {
        let datagram = heartbeat().encode(&keys()).unwrap();
        for at in 0..datagram.len() {
            let mut altered = datagram.clone();
            altered[at] ^= 0x20;
            let error = Heartbeat::decode(&altered, &keys()).unwrap_err();
            let expected = match at {
                0..4 => WireError::Magic,
                4 => WireError::Version(VERSION ^ 0x20),
                5 => WireError::UnknownKey(1 ^ 0x20),
                _ => WireError::Tag,
            };
            assert_eq!(error, expected, "byte {at}");
        }
    }

    #[test]
    fn another_key_is_refused_and_a_second_key_is_accepted() {
        let datagram = heartbeat().encode(&keys()).unwrap();
        let other = Keyring::parse("1 ffffffffffffffffffffffffffffffff").unwrap();
        assert_eq!(Heartbeat::decode(&datagram, &other), Err(WireError::Tag));
        let rotating = Keyring::parse(&format!("2 {}\n{KEYS}", "ab".repeat(16))).unwrap();
        assert_eq!(
            Heartbeat::decode(&datagram, &rotating),
            Ok(heartbeat()),
            "the old key is still accepted during a rotation"
        );
        let signed_with_new = heartbeat().encode(&rotating).unwrap();
        assert_eq!(signed_with_new[5], 2);
        assert_eq!(
            Heartbeat::decode(&signed_with_new, &keys()),
            Err(WireError::UnknownKey(2))
        );
    }

    #[test]
    fn lengths_are_checked_first() {
        let datagram = heartbeat().encode(&keys()).unwrap();
        for len in 0..HEAD_LEN + 1 + FIXED_LEN + TAG_LEN {
            assert_eq!(
                Heartbeat::decode(&datagram[..len.min(datagram.len())], &keys()),
                Err(WireError::TooShort(len.min(datagram.len())))
            );
        }
        let mut long = datagram.clone();
        long.resize(MAX_DATAGRAM + 1, 0);
        assert_eq!(
            Heartbeat::decode(&long, &keys()),
            Err(WireError::TooLong(MAX_DATAGRAM + 1))
        );
    }

    /// `datagram` with its body rewritten by `change` and tagged again, as a sender holding the
    /// key but building a broken heartbeat would send it.
    fn resigned(change: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut datagram = heartbeat().encode(&keys()).unwrap();
        datagram.truncate(datagram.len() - TAG_LEN);
        change(&mut datagram);
        let tag = keys().signing().tag(&datagram);
        datagram.extend_from_slice(&tag);
        datagram
    }

    #[test]
    fn authenticated_but_broken_heartbeats_are_refused() {
        let name_at = HEAD_LEN;
        let state_at = HEAD_LEN + 5 + 24;
        let drains_at = HEAD_LEN + 5 + FIXED_LEN - 2;
        let count_at = drains_at + 1 + 2 * DRAIN_LEN;
        let first_member = count_at + 1;
        let cases: Vec<(Vec<u8>, WireError)> = vec![
            (resigned(|d| d[name_at] = b'!'), WireError::Name),
            (resigned(|d| d[name_at - 1] = 0), WireError::Name),
            (resigned(|d| d[name_at - 1] = 200), WireError::Length),
            (resigned(|d| d[state_at] = 5), WireError::State(5)),
            (resigned(|d| d[drains_at] = 9), WireError::TooManyDrains(9)),
            (resigned(|d| d[drains_at] = 3), WireError::Length),
            (
                resigned(|d| d[count_at] = 65),
                WireError::TooManyMembers(65),
            ),
            (resigned(|d| d[count_at] = 2), WireError::Length),
            (resigned(|d| d.push(0)), WireError::Length),
            (
                resigned(|d| d[first_member] = 64),
                WireError::MemberIndex(64),
            ),
            (resigned(|d| d[first_member] = 1), WireError::MemberOrder),
            (
                resigned(|d| d[first_member + 1] ^= 1),
                WireError::ViewDigest,
            ),
        ];
        for (datagram, expected) in cases {
            assert_eq!(Heartbeat::decode(&datagram, &keys()), Err(expected));
        }
    }

    #[test]
    fn any_bytes_decode_without_panicking() {
        let datagram = heartbeat().encode(&keys()).unwrap();
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let len = (state % (MAX_DATAGRAM as u64 + 64)) as usize;
            let mut bytes: Vec<u8> = datagram.iter().copied().cycle().take(len).collect();
            if let Some(byte) = bytes.get_mut((state >> 20) as usize % len.max(1)) {
                *byte = (state >> 40) as u8;
            }
            let _ = Heartbeat::decode(&bytes, &keys());
        }
    }
}
