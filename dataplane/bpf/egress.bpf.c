// SPDX-License-Identifier: Apache-2.0
//
// herd's egress guard: a TC program on the interface's egress that keeps every frame the
// node's kernel sends from teaching the link that a VIP lives at the node's own MAC. The farm
// answers for a VIP with its virtual MAC; once a client or a switch maps a VIP to one node's
// MAC, that node alone receives the VIP's traffic and drops the buckets it does not own.
//
// IPv4 is safe with arp_announce = 2, which IPv6 has no equivalent of: to answer a client
// whose address it has not resolved, the kernel solicits it from the address of the packet
// it answers, the VIP, with its own MAC as the source link-layer address, and the client takes
// that as the VIP's new MAC (RFC 4861, 7.2.3). The guard, in the order of the rules below:
//
// 1. A neighbour solicitation from a VIP leaves from the node's own address instead (its
//    link-local address, chosen by herd run), the ICMPv6 checksum mended: RFC 4861, 7.2.2
//    allows any address of the interface, and the answer comes back to the node all the same.
// 2. A neighbour advertisement for a VIP leaves only if it carries a target link-layer address
//    that is not the node's MAC: herd's own announcements (the virtual MAC) go, the kernel's
//    (unsolicited ones after a bond fails over, say) are dropped.
// 3. An ARP packet whose sender is a VIP leaves only if its sender MAC is not the node's:
//    herd's gratuitous ARP goes, the kernel's (a VIP chosen as the address to announce) is
//    dropped.
// 4. Everything else leaves untouched.
//
// XDP_TX answers do not pass through here: they carry the virtual MAC already.

#include <linux/bpf.h>
#include <linux/types.h>
#include <bpf/bpf_helpers.h>

#define MAX_VIPS 16

#define ETH_P_IP 0x0800
#define ETH_P_ARP 0x0806
#define ETH_P_IPV6 0x86dd
#define ETH_P_8021Q 0x8100
#define ETH_P_8021AD 0x88a8

#define PROTO_ICMPV6 58
#define NEIGHBOR_SOLICITATION 135
#define NEIGHBOR_ADVERTISEMENT 136
#define OPTION_TARGET_LINK_LAYER 2
// Options of an advertisement the guard looks through for the target link-layer address.
#define MAX_OPTIONS 4

// tcx verdicts: let the frame go on (to the next program, then out), or drop it.
#define TCX_NEXT -1
#define TCX_DROP 2

// What the guard knows (one entry), written by userspace before it is attached. The layout is
// `GuardSettings` in dataplane/src/egress.rs.
struct guard {
	__u8 if_mac[6];  // the interface's own MAC
	__u8 vips_v4;
	__u8 vips_v6;
	__u8 source[16]; // the address solicitations from a VIP leave from instead
	__u8 vip4[MAX_VIPS][4];
	__u8 vip6[MAX_VIPS][16];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct guard);
} guard SEC(".maps");

// What the guard did, per CPU (`Guarded` in dataplane/src/egress.rs).
enum action {
	A_SOLICITATION_READDRESSED,
	A_ADVERTISEMENT_DROPPED,
	A_ARP_DROPPED,
	A_COUNT,
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, A_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} actions SEC(".maps");

static __always_inline void count(enum action a)
{
	__u32 index = a;
	__u64 *n = bpf_map_lookup_elem(&actions, &index);
	if (n)
		*n += 1;
}

static __always_inline int same(const __u8 *a, const __u8 *b, int len)
{
	for (int i = 0; i < len; i++)
		if (a[i] != b[i])
			return 0;
	return 1;
}

static __always_inline int is_vip4(const struct guard *g, const __u8 *addr)
{
#pragma unroll
	for (int i = 0; i < MAX_VIPS; i++) {
		if (i >= g->vips_v4)
			return 0;
		if (same(g->vip4[i], addr, 4))
			return 1;
	}
	return 0;
}

static __always_inline int is_vip6(const struct guard *g, const __u8 *addr)
{
#pragma unroll
	for (int i = 0; i < MAX_VIPS; i++) {
		if (i >= g->vips_v6)
			return 0;
		if (same(g->vip6[i], addr, 16))
			return 1;
	}
	return 0;
}

// Rule 3: an ARP packet at `l3`.
static __always_inline int arp(struct __sk_buff *skb, const struct guard *g, __u32 l3)
{
	__u8 a[28];
	if (bpf_skb_load_bytes(skb, l3, a, sizeof(a)))
		return TCX_NEXT;
	// Ethernet and IPv4 (hardware type 1, protocol 0x0800, lengths 6 and 4).
	if (a[0] != 0 || a[1] != 1 || a[2] != 0x08 || a[3] != 0 || a[4] != 6 || a[5] != 4)
		return TCX_NEXT;
	if (!is_vip4(g, a + 14) || !same(a + 8, g->if_mac, 6))
		return TCX_NEXT;
	count(A_ARP_DROPPED);
	return TCX_DROP;
}

// Rule 1: a solicitation from a VIP at `l3` leaves from the guard's source address.
static __always_inline int readdress(struct __sk_buff *skb, const struct guard *g, __u32 l3,
				     const __u8 *vip)
{
	__u8 source[16];
	__builtin_memcpy(source, g->source, 16);
	__s64 diff = bpf_csum_diff((__be32 *)vip, 16, (__be32 *)source, 16, 0);
	if (diff < 0)
		return TCX_NEXT;
	// The checksum covers the source through the pseudo-header.
	if (bpf_l4_csum_replace(skb, l3 + 40 + 2, 0, diff, BPF_F_PSEUDO_HDR))
		return TCX_NEXT;
	if (bpf_skb_store_bytes(skb, l3 + 8, source, 16, 0))
		return TCX_NEXT;
	count(A_SOLICITATION_READDRESSED);
	return TCX_NEXT;
}

// Rule 2: whether the advertisement whose options start at `options` carries a target
// link-layer address that is not the node's MAC.
static __always_inline int names_another_mac(struct __sk_buff *skb, const struct guard *g,
					     __u32 options)
{
#pragma unroll
	for (int i = 0; i < MAX_OPTIONS; i++) {
		__u8 option[8];
		if (bpf_skb_load_bytes(skb, options, option, sizeof(option)))
			return 0;
		if (option[1] == 0)
			return 0;
		if (option[0] == OPTION_TARGET_LINK_LAYER && option[1] == 1)
			return !same(option + 2, g->if_mac, 6);
		options += option[1] * 8;
	}
	return 0;
}

// Rules 1 and 2: an IPv6 packet at `l3`.
static __always_inline int ipv6(struct __sk_buff *skb, const struct guard *g, __u32 l3)
{
	__u8 ip[40 + 24]; // the header, then an NDP message up to its target address
	if (bpf_skb_load_bytes(skb, l3, ip, sizeof(ip)))
		return TCX_NEXT;
	if (ip[6] != PROTO_ICMPV6 || ip[7] != 255)
		return TCX_NEXT;
	const __u8 *icmp = ip + 40;
	if (icmp[0] == NEIGHBOR_SOLICITATION && is_vip6(g, ip + 8))
		return readdress(skb, g, l3, ip + 8);
	if (icmp[0] == NEIGHBOR_ADVERTISEMENT && is_vip6(g, icmp + 8) &&
	    !names_another_mac(skb, g, l3 + 40 + 24)) {
		count(A_ADVERTISEMENT_DROPPED);
		return TCX_DROP;
	}
	return TCX_NEXT;
}

SEC("classifier")
int herd_egress(struct __sk_buff *skb)
{
	__u32 zero = 0;
	const struct guard *g = bpf_map_lookup_elem(&guard, &zero);
	if (!g)
		return TCX_NEXT;
	__u8 eth[14];
	if (bpf_skb_load_bytes(skb, 0, eth, sizeof(eth)))
		return TCX_NEXT;
	__u16 ethertype = ((__u16)eth[12] << 8) | eth[13];
	__u32 l3 = 14;
#pragma unroll
	for (int tags = 0; tags < 2; tags++) {
		if (ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD)
			break;
		__u8 tag[4];
		if (bpf_skb_load_bytes(skb, l3, tag, sizeof(tag)))
			return TCX_NEXT;
		ethertype = ((__u16)tag[2] << 8) | tag[3];
		l3 += 4;
	}
	switch (ethertype) {
	case ETH_P_IPV6:
		return ipv6(skb, g, l3);
	case ETH_P_ARP:
		return arp(skb, g, l3);
	default:
		return TCX_NEXT;
	}
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
