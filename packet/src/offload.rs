//! Transport checksums that a sender's transmit offload left for hardware that never came.
//!
//! A Linux sender whose interface offloads transmit checksums (a veth's default) sends TCP and
//! UDP segments whose checksum field holds only the pseudo-header's sum
//! ([`wire::partial_checksum`]), with a mark in the kernel's packet buffer (`CHECKSUM_PARTIAL`)
//! that tells every later hop the sum is still to be finished. Across veth devices nothing
//! finishes it, and nothing needs to while the mark travels with the packet. An AF_XDP socket
//! takes the bytes only: a frame a worker writes back into the stack has lost the mark, and the
//! stack drops it for its checksum (`InCsumErrors`). So the workers finish such checksums
//! themselves before the hand-off, as the hardware would have.
//!
//! The partial form is recognised by its value: a field equal to the pseudo-header's sum. A
//! frame with a right checksum is left as it is (and one whose right checksum happens to equal
//! that sum is rewritten to the same value). The residual risk: of the frames corrupted on the
//! way, 1 in 65536 has a field equal to that sum by chance and is given a checksum it should
//! not have; frames from a real NIC carry full checksums and only a corrupted one can match.

use crate::wire::ethernet::{ethertype, EthernetFrame};
use crate::wire::ipv4::Ipv4Packet;
use crate::wire::ipv6::{self, Ipv6Packet};
use crate::wire::{ip_proto, partial_checksum, tcp, transport_checksum, udp, Error};

/// Where the checksum field is in a TCP header.
const TCP_CHECKSUM_AT: usize = 16;
/// Where the checksum field is in a UDP header.
const UDP_CHECKSUM_AT: usize = 6;

/// What [`complete_partial_checksum`] did with a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Completion {
    /// The checksum field held the partial form; it now holds the full checksum.
    Completed,
    /// Nothing to do: the field holds something else (a full checksum, or none for UDP over
    /// IPv4), or the frame is not a whole TCP or UDP segment (another protocol, a fragment).
    Untouched,
}

/// Finishes the TCP or UDP checksum of the Ethernet frame `frame` (up to two VLAN tags, IPv4
/// or IPv6) when its field holds the partial form a transmit offload leaves (see the module's
/// documentation). Touches nothing but the checksum field and allocates nothing; a frame whose
/// headers are cut short or inconsistent is an error and is left as it is.
pub fn complete_partial_checksum(frame: &mut [u8]) -> Result<Completion, Error> {
    let Some(segment) = find_segment(frame)? else {
        return Ok(Completion::Untouched);
    };
    let Segment {
        addresses,
        address_len,
        protocol,
        start,
        end,
    } = segment;
    let (src, dst) = addresses.split_at(16);
    let (src, dst) = (&src[..address_len], &dst[..address_len]);
    let checksum_at = start
        + match protocol {
            ip_proto::TCP => TCP_CHECKSUM_AT,
            _ => UDP_CHECKSUM_AT,
        };
    let field = u16::from_be_bytes([frame[checksum_at], frame[checksum_at + 1]]);
    if field != partial_checksum(src, dst, protocol, end - start) {
        return Ok(Completion::Untouched);
    }
    frame[checksum_at..checksum_at + 2].fill(0);
    let mut checksum = transport_checksum(src, dst, protocol, &frame[start..end]);
    // A computed 0 goes out as its other form: 0 in a UDP field means no checksum (RFC 768).
    if protocol == ip_proto::UDP && checksum == 0 {
        checksum = 0xffff;
    }
    frame[checksum_at..checksum_at + 2].copy_from_slice(&checksum.to_be_bytes());
    Ok(Completion::Completed)
}

/// A whole TCP or UDP segment found in a frame: its addresses and where it lies.
struct Segment {
    /// The source address, then the destination address from byte 16; each `address_len`
    /// bytes long.
    addresses: [u8; 32],
    /// 4 or 16.
    address_len: usize,
    /// TCP or UDP.
    protocol: u8,
    /// The segment's first byte in the frame.
    start: usize,
    /// One past its last byte (Ethernet padding left out).
    end: usize,
}

/// The TCP or UDP segment `frame` carries, with its header present; `None` for any other
/// payload and for fragments, whose checksum covers bytes of other frames.
fn find_segment(frame: &[u8]) -> Result<Option<Segment>, Error> {
    let network = EthernetFrame::new_checked(frame)?.network()?;
    let ip_start = frame.len() - network.payload.len();
    let mut addresses = [0; 32];
    let (address_len, protocol, start, end) = match network.ethertype {
        ethertype::IPV4 => {
            let packet = Ipv4Packet::new_checked(network.payload)?;
            let payload = packet.payload()?;
            if packet.is_fragment() {
                return Ok(None);
            }
            addresses[..4].copy_from_slice(&packet.src());
            addresses[16..20].copy_from_slice(&packet.dst());
            let start = ip_start + packet.header_len();
            (4, packet.protocol(), start, start + payload.len())
        }
        ethertype::IPV6 => {
            let packet = Ipv6Packet::new_checked(network.payload)?;
            let upper = packet.upper_layer()?;
            if upper.is_fragment {
                return Ok(None);
            }
            addresses[..16].copy_from_slice(&packet.src());
            addresses[16..].copy_from_slice(&packet.dst());
            // The upper layer runs to the end of the payload.
            let end = ip_start + ipv6::HEADER_LEN + packet.payload_len();
            (16, upper.protocol, end - upper.payload.len(), end)
        }
        _ => return Ok(None),
    };
    let header_len = match protocol {
        ip_proto::TCP => tcp::MIN_HEADER_LEN,
        ip_proto::UDP => udp::HEADER_LEN,
        _ => return Ok(None),
    };
    if end - start < header_len {
        return Err(Error::Truncated);
    }
    if protocol == ip_proto::UDP {
        // The pseudo-header carries the UDP length; the sender's must be the IP payload's.
        let length = u16::from_be_bytes([frame[start + 4], frame[start + 5]]);
        if usize::from(length) != end - start {
            return Err(Error::Malformed);
        }
    }
    Ok(Some(Segment {
        addresses,
        address_len,
        protocol,
        start,
        end,
    }))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::craft::{self, Fragment};
    use crate::wire::checksum;

    const SRC4: [u8; 4] = [198, 19, 0, 7];
    const DST4: [u8; 4] = [198, 18, 0, 100];
    const SRC6: [u8; 16] = [0xfd, 0, 1, 0x98, 0, 0x18, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7];
    const DST6: [u8; 16] = [0xfd, 0, 1, 0x98, 0, 0x18, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x64];

    /// A TCP or UDP segment of `protocol` carrying `data`, its checksum field zero.
    fn segment(protocol: u8, data: &[u8]) -> Vec<u8> {
        match protocol {
            ip_proto::TCP => craft::tcp(40000, 80, tcp::ACK, data),
            _ => craft::udp(40000, 7, data),
        }
    }

    fn checksum_at(protocol: u8) -> usize {
        match protocol {
            ip_proto::TCP => TCP_CHECKSUM_AT,
            _ => UDP_CHECKSUM_AT,
        }
    }

    /// The Ethernet frame of `segment` from the test's source to its destination, under
    /// `vlans`, with `field` in the segment's checksum field; and where the segment starts.
    fn frame(
        v6: bool,
        vlans: &[u16],
        protocol: u8,
        segment: &[u8],
        field: u16,
    ) -> (Vec<u8>, usize) {
        let mut segment = segment.to_vec();
        let at = checksum_at(protocol);
        segment[at..at + 2].copy_from_slice(&field.to_be_bytes());
        let (ethertype, packet, header) = if v6 {
            (
                ethertype::IPV6,
                craft::ipv6(SRC6, DST6, protocol, 64, &segment),
                ipv6::HEADER_LEN,
            )
        } else {
            (
                ethertype::IPV4,
                craft::ipv4(SRC4, DST4, protocol, Fragment::default(), &segment),
                20,
            )
        };
        let frame = craft::ethernet(vlans, ethertype, &packet);
        let start = frame.len() - packet.len() + header;
        (frame, start)
    }

    /// The addresses of the test's frames in `v6` or not.
    fn addresses(v6: bool) -> (&'static [u8], &'static [u8]) {
        if v6 {
            (&SRC6, &DST6)
        } else {
            (&SRC4, &DST4)
        }
    }

    /// The full checksum of `segment` (its field zero), as a sender without offload writes it.
    fn full(v6: bool, protocol: u8, segment: &[u8]) -> u16 {
        let (src, dst) = addresses(v6);
        match transport_checksum(src, dst, protocol, segment) {
            0 if protocol == ip_proto::UDP => 0xffff,
            sum => sum,
        }
    }

    fn partial(v6: bool, protocol: u8, segment: &[u8]) -> u16 {
        let (src, dst) = addresses(v6);
        partial_checksum(src, dst, protocol, segment.len())
    }

    fn field(frame: &[u8], start: usize, protocol: u8) -> u16 {
        let at = start + checksum_at(protocol);
        u16::from_be_bytes([frame[at], frame[at + 1]])
    }

    const SHAPES: [(bool, u8); 4] = [
        (false, ip_proto::TCP),
        (false, ip_proto::UDP),
        (true, ip_proto::TCP),
        (true, ip_proto::UDP),
    ];

    #[test]
    fn a_partial_checksum_is_completed_to_the_full_one() {
        for (v6, protocol) in SHAPES {
            for vlans in [&[][..], &[7], &[7, 8]] {
                let data = b"herd:u1";
                let segment = segment(protocol, data);
                let partial = partial(v6, protocol, &segment);
                let (mut frame, start) = frame(v6, vlans, protocol, &segment, partial);
                assert_eq!(
                    complete_partial_checksum(&mut frame),
                    Ok(Completion::Completed),
                    "v6 {v6}, protocol {protocol}, vlans {vlans:?}"
                );
                let (expected, _) = frame_with_full(v6, vlans, protocol, &segment);
                assert_eq!(frame, expected, "v6 {v6}, protocol {protocol}");
                // The completed checksum is right: the sum over the pseudo-header and the
                // segment, field included, checks to 0.
                let (src, dst) = addresses(v6);
                assert_eq!(
                    transport_checksum(src, dst, protocol, &frame[start..]),
                    0,
                    "v6 {v6}, protocol {protocol}"
                );
            }
        }
    }

    /// `segment`'s frame with its full checksum, as a sender without offload sends it.
    fn frame_with_full(v6: bool, vlans: &[u16], protocol: u8, segment: &[u8]) -> (Vec<u8>, usize) {
        frame(v6, vlans, protocol, segment, full(v6, protocol, segment))
    }

    #[test]
    fn a_full_checksum_is_left_alone() {
        for (v6, protocol) in SHAPES {
            let segment = segment(protocol, b"herd:t3");
            let (mut frame, _) = frame_with_full(v6, &[], protocol, &segment);
            let sent = frame.clone();
            assert_eq!(
                complete_partial_checksum(&mut frame),
                Ok(Completion::Untouched)
            );
            assert_eq!(frame, sent, "v6 {v6}, protocol {protocol}");
        }
    }

    #[test]
    fn a_udp_datagram_without_checksum_over_ipv4_is_left_alone() {
        let segment = segment(ip_proto::UDP, b"no checksum");
        let (mut frame, _) = frame(false, &[], ip_proto::UDP, &segment, 0);
        let sent = frame.clone();
        assert_eq!(
            complete_partial_checksum(&mut frame),
            Ok(Completion::Untouched)
        );
        assert_eq!(frame, sent);
    }

    #[test]
    fn a_udp_checksum_that_computes_to_zero_is_written_as_ffff() {
        // Two data bytes holding the checksum of the datagram with zeros there bring the sum
        // to 0xffff, whose checksum is 0.
        let zeros = transport_checksum(
            &SRC4,
            &DST4,
            ip_proto::UDP,
            &segment(ip_proto::UDP, &[0, 0]),
        );
        let segment = segment(ip_proto::UDP, &zeros.to_be_bytes());
        assert_eq!(transport_checksum(&SRC4, &DST4, ip_proto::UDP, &segment), 0);
        let partial = partial(false, ip_proto::UDP, &segment);
        let (mut frame, start) = frame(false, &[], ip_proto::UDP, &segment, partial);
        assert_eq!(
            complete_partial_checksum(&mut frame),
            Ok(Completion::Completed)
        );
        assert_eq!(field(&frame, start, ip_proto::UDP), 0xffff);
    }

    #[test]
    fn ethernet_padding_is_not_summed() {
        let segment = segment(ip_proto::UDP, b"u");
        let partial = partial(false, ip_proto::UDP, &segment);
        let (mut frame, start) = frame(false, &[], ip_proto::UDP, &segment, partial);
        frame.resize(60, 0xaa);
        assert_eq!(
            complete_partial_checksum(&mut frame),
            Ok(Completion::Completed)
        );
        assert_eq!(
            field(&frame, start, ip_proto::UDP),
            full(false, ip_proto::UDP, &segment)
        );
    }

    #[test]
    fn fragments_and_other_protocols_are_left_alone() {
        let udp = segment(ip_proto::UDP, b"first fragment");
        let mut fragment = craft::ethernet(
            &[],
            ethertype::IPV4,
            &craft::ipv4(
                SRC4,
                DST4,
                ip_proto::UDP,
                Fragment {
                    offset: 0,
                    more: true,
                },
                &udp,
            ),
        );
        let ping = craft::icmp(8, 0, [0, 1, 0, 1], b"ping");
        let mut icmp = craft::ethernet(
            &[],
            ethertype::IPV4,
            &craft::ipv4(SRC4, DST4, ip_proto::ICMP, Fragment::default(), &ping),
        );
        let mut arp = craft::ethernet(&[], ethertype::ARP, &craft::arp_request(SRC4, DST4));
        for frame in [&mut fragment, &mut icmp, &mut arp] {
            let sent = frame.clone();
            assert_eq!(complete_partial_checksum(frame), Ok(Completion::Untouched));
            assert_eq!(*frame, sent);
        }
    }

    #[test]
    fn an_ipv6_segment_behind_extension_headers_is_completed() {
        let segment = segment(ip_proto::TCP, b"behind options");
        let mut tcp = segment.clone();
        let partial = partial(true, ip_proto::TCP, &segment);
        tcp[TCP_CHECKSUM_AT..TCP_CHECKSUM_AT + 2].copy_from_slice(&partial.to_be_bytes());
        let options = craft::ipv6_options(ip_proto::TCP, 1, &tcp);
        let packet = craft::ipv6(SRC6, DST6, ip_proto::HOP_BY_HOP, 64, &options);
        let mut frame = craft::ethernet(&[], ethertype::IPV6, &packet);
        assert_eq!(
            complete_partial_checksum(&mut frame),
            Ok(Completion::Completed)
        );
        let start = frame.len() - segment.len();
        assert_eq!(
            field(&frame, start, ip_proto::TCP),
            full(true, ip_proto::TCP, &segment)
        );
    }

    #[test]
    fn cut_or_inconsistent_frames_are_refused_untouched() {
        for (v6, protocol) in SHAPES {
            let segment = segment(protocol, b"herd");
            let partial = partial(v6, protocol, &segment);
            let (frame, start) = frame(v6, &[], protocol, &segment, partial);
            // Every cut: the IP header announces more than the frame holds.
            for len in 0..frame.len() {
                let mut cut = frame[..len].to_vec();
                let sent = cut.clone();
                assert!(complete_partial_checksum(&mut cut).is_err(), "cut at {len}");
                assert_eq!(cut, sent);
            }
            if protocol == ip_proto::UDP {
                // A UDP length that disagrees with the IP payload's.
                let mut wrong = frame.clone();
                wrong[start + 5] -= 1;
                assert_eq!(complete_partial_checksum(&mut wrong), Err(Error::Malformed));
            }
        }
    }

    proptest! {
        /// Any bytes at all: an answer, never a panic, and a frame changed only in a checksum
        /// field, and only when the answer says so.
        #[test]
        fn any_bytes_get_an_answer(mut bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let sent = bytes.clone();
            let answer = complete_partial_checksum(&mut bytes);
            if answer != Ok(Completion::Completed) {
                prop_assert_eq!(bytes, sent);
            } else {
                prop_assert_eq!(bytes.len(), sent.len());
                let changed = bytes.iter().zip(&sent).filter(|(a, b)| a != b).count();
                prop_assert!(changed <= 2);
            }
        }

        /// Any IPv4 or IPv6 TCP or UDP segment sent with a partial checksum comes out with
        /// exactly the checksum a sender without offload writes, and comes through a second
        /// pass untouched.
        #[test]
        fn any_partial_segment_is_completed_to_its_full_checksum(
            v6 in any::<bool>(),
            tcp in any::<bool>(),
            data in proptest::collection::vec(any::<u8>(), 0..1400),
            tagged in any::<bool>(),
        ) {
            let protocol = if tcp { ip_proto::TCP } else { ip_proto::UDP };
            let vlans: &[u16] = if tagged { &[42] } else { &[] };
            let segment = segment(protocol, &data);
            let partial = partial(v6, protocol, &segment);
            let (mut frame, _) = frame(v6, vlans, protocol, &segment, partial);
            prop_assert_eq!(complete_partial_checksum(&mut frame), Ok(Completion::Completed));
            let (expected, _) = frame_with_full(v6, vlans, protocol, &segment);
            prop_assert_eq!(&frame, &expected);
            let full = full(v6, protocol, &segment);
            let again = complete_partial_checksum(&mut frame);
            // Only a full checksum equal to the partial form is rewritten, to itself.
            if full == partial {
                prop_assert_eq!(again, Ok(Completion::Completed));
            } else {
                prop_assert_eq!(again, Ok(Completion::Untouched));
            }
            prop_assert_eq!(frame, expected);
        }
    }

    #[test]
    fn the_ipv4_header_checksum_is_not_touched() {
        let segment = segment(ip_proto::UDP, b"header");
        let partial = partial(false, ip_proto::UDP, &segment);
        let (mut frame, _) = frame(false, &[], ip_proto::UDP, &segment, partial);
        complete_partial_checksum(&mut frame).unwrap();
        assert_eq!(checksum(&frame[14..34]), 0);
    }
}
