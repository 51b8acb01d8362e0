// SPDX-License-Identifier: Apache-2.0
//
// herd's in-kernel mode: the whole verdict of `classify` (packet/src/classify.rs) in an XDP
// program. It follows the numbered rules at the top of that file, step for step; a differential
// test (dataplane/tests/xdp.rs) runs thousands of frames through both and requires the same
// verdict for each.
//
// Pass is XDP_PASS; Accept is XDP_PASS after the destination MAC is set to the interface's own
// (clients address a VIP's virtual MAC); every Drop is XDP_DROP. AnswerNeighbor turns the ARP
// request or neighbour solicitation into its answer in place, XDP_TX: the VIP's virtual MAC in
// the ARP or NDP payload, the interface's own MAC as the Ethernet source, so that no switch ever
// learns the virtual MAC and every node keeps receiving the VIP's traffic (in the multicast MAC
// mode, the virtual MAC is that of a group every node joins). A solicitation that
// cannot be answered in place (extension headers, the unspecified source of duplicate address
// detection) is dropped, so the kernel never answers for a VIP with its own MAC.
//
// Each bucket has a mode, the bits of `BucketMode` in packet/src/table.rs. A bucket moving
// between two live nodes keeps its connections (step 6 of the rules): the old owner keeps the
// segments its kernel has a socket for (bpf_skc_lookup_tcp), or that complete a handshake it
// answered with a SYN cookie (bpf_tcp_check_syncookie); the new owner records the SYNs it takes
// meanwhile in the `flows` map (an LRU hash: the least recently used go when it is full), for
// the cookies among them. Nothing is recorded for a SYN of a bucket owned outright.
//
// Fail closed: the `liveness` map holds a deadline (CLOCK_MONOTONIC_COARSE, ns) that herd keeps
// pushing forward. Once it has passed (herd killed or frozen), the node accepts no VIP packet.
//
// The AF_XDP mode loads `herd_redirect` from this file instead: the same rules up to the flow's
// identity, then, where `herd_classify` would look up the bucket, it redirects the frame to the
// AF_XDP socket of its RX queue, whose worker hashes it in userspace. Everything else (non-VIP
// traffic, neighbour answers, VIP traffic no rule balances, malformed VIP packets) is handled
// here exactly as `herd_classify` handles it, so the workers only see what needs the table.
// Every frame it hands a worker starts with 4 bytes of what the kernel says of its connection:
// while some bucket keeps known connections (`lookups` in `struct farm`), it asks the kernel
// about every TCP segment but a SYN; otherwise, and for other frames, the answer is nothing.
// A worker that cannot keep up says so in `behind`: the redirect program then drops itself the
// frames of the buckets this node does not serve at all (mode NONE), which the worker would
// only drop, so that the worker spends itself on the frames it may accept. It reads the same
// mode table as `herd_classify`, which the AF_XDP mode installs too.
// With no live socket on the queue (herd killed) or a stale deadline (herd frozen), VIP
// traffic is dropped. It counts the frames it keeps as `herd_classify` does, since no worker
// sees them (the traffic passed to the kernel above all), and those it redirects.

#include <linux/bpf.h>
#include <linux/types.h>
#include <bpf/bpf_helpers.h>

#define MAX_VIPS 16
#define MAX_BUCKETS 65536
#define PORTS 65536
// XDP frames fit in a page; bounding every offset by it lets the verifier check the packet
// accesses (any offset past the frame fails its length check first).
#define MAX_OFFSET 4096
#define MAX_EXTENSION_HEADERS 8
// RX queues the AF_XDP mode serves (`MAX_QUEUES` in dataplane/src/xdp.rs).
#define MAX_QUEUES 64
// Handshakes the flow table holds (`FLOWS` in packet/src/flows.rs; the redirect program is
// loaded with a one-entry map).
#define FLOWS 262144

#define ETH_P_IP 0x0800
#define ETH_P_ARP 0x0806
#define ETH_P_IPV6 0x86dd
#define ETH_P_8021Q 0x8100
#define ETH_P_8021AD 0x88a8

#define PROTO_HOP_BY_HOP 0
#define PROTO_ICMP 1
#define PROTO_TCP 6
#define PROTO_UDP 17
#define PROTO_ROUTING 43
#define PROTO_FRAGMENT 44
#define PROTO_AUTH 51
#define PROTO_ICMPV6 58
#define PROTO_DEST_OPTS 60

// The bits of a bucket's mode (`BucketMode` in packet/src/table.rs).
#define MODE_SYN 1     // a SYN without ACK (recorded in `flows` with MODE_KNOWN)
#define MODE_KNOWN 2   // any other TCP segment of a connection this node serves
#define MODE_TCP_ANY 4 // any other TCP segment, without lookup
#define MODE_OTHER 8   // every VIP packet that is not TCP

#define TCP_SYN 0x02
#define TCP_ACK 0x10

// The kernel's TCP states that serve no connection (include/net/tcp_states.h).
#define TCP_STATE_TIME_WAIT 6
#define TCP_STATE_LISTEN 10

// What the kernel says of a connection (`Served` in packet/src/kernel.rs).
#define SERVED_SOCKET 1
#define SERVED_COOKIE 2

// The kinds of virtual MAC (`MacMode` in config/src/lib.rs), as `struct farm` holds them.
#define MAC_UNICAST 0
#define MAC_MULTICAST 1

// What a port rule says, as the `ports` map holds it.
#define RULE_NONE 0
#define RULE_CLIENT_IP 1
#define RULE_CLIENT_IP_PORT 2

// Rule protocols, as indices of `covered` and blocks of the `ports` map.
#define RULE_TCP 0
#define RULE_UDP 1
#define RULE_ICMP 2

// The verdicts, which are also the indices of the per-CPU counters (packets and bytes).
enum verdict {
	V_PASS,
	V_ACCEPT,
	V_DROP_NOT_OWNER,
	V_DROP_NO_RULE,
	V_DROP_MALFORMED,
	V_ANSWER_NEIGHBOR,
	V_REDIRECTED, // herd_redirect only: handed to a worker's AF_XDP socket
	V_COUNT,
};

// The farm settings (one entry), written by userspace before the program is attached. The
// layout is `FarmSettings` in dataplane/src/xdp.rs.
struct farm {
	// SipHash's state for the farm's key, the first half of the first round done
	// (`HashKey::primed_state` in packet/src/hash.rs): every hash starts from it.
	__u64 sip[4];
	__u32 mask;
	__u8 covered[3];
	__u8 vips_v4;
	__u8 vips_v6;
	__u8 if_mac[6]; // the interface's own MAC
	__u8 mac_mode;  // MAC_UNICAST or MAC_MULTICAST: the kind of virtual MAC answers carry
	__u8 lookups;   // herd_redirect: some bucket keeps known connections, ask the kernel
	__u8 pad[7];
	__u8 vip4[MAX_VIPS][4];
	__u8 vip6[MAX_VIPS][16];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct farm);
} farm SEC(".maps");

// The rule of each port: TCP ports first, then UDP.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2 * PORTS);
	__type(key, __u32);
	__type(value, __u8);
} ports SEC(".maps");

// Two tables of bucket modes; `active` says which one packets read, so that userspace fills
// the other and switches with one aligned 4-byte write: no packet sees half a table.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2 * MAX_BUCKETS);
	__type(key, __u32);
	__type(value, __u8);
} buckets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} active SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} liveness SEC(".maps");

// A TCP connection (`Connection` in packet/src/flows.rs): IPv4 addresses in the first 4
// bytes of their 16, the rest zero; ports as on the wire; family 4 or 6.
struct flow_key {
	__u8 client[16];
	__u8 vip[16];
	__u8 client_port[2];
	__u8 vip_port[2];
	__u8 family;
	__u8 pad[3];
};

// The value of a recorded handshake: when its connection was last seen
// (CLOCK_MONOTONIC_COARSE, ns).
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, FLOWS);
	__type(key, struct flow_key);
	__type(value, __u64);
} flows SEC(".maps");

// The AF_XDP socket of each RX queue (herd_redirect).
struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, MAX_QUEUES);
	__type(key, __u32);
	__type(value, __u32);
} sockets SEC(".maps");

// Whether the worker of each RX queue is behind (herd_redirect; written by the worker).
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_QUEUES);
	__type(key, __u32);
	__type(value, __u32);
} behind SEC(".maps");

// The frames of one verdict and their bytes (`Count` in packet/src/counts.rs): one value,
// so that counting both takes one lookup.
struct count {
	__u64 packets;
	__u64 bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, V_COUNT);
	__type(key, __u32);
	__type(value, struct count);
} counters SEC(".maps");

// A client identity as SipHash message words (see `client_hash` in packet/src/hash.rs), or
// the verdict that made hashing unnecessary.
struct identity {
	enum verdict verdict; // V_ACCEPT while the identity is to be hashed
	__u8 words;           // 1 (IPv4) or 3 (IPv6)
	__u8 tcp;             // a TCP segment (not a fragment, not quoted by an ICMP error)
	__u8 flags;           // its flags
	__u32 l4;             // the offset of its TCP header
	__u64 word[3];
};

// A stretch of the frame: `off` from its start, `len` bytes long as the headers say (never past
// the frame's end).
struct span {
	__u32 off;
	__u32 len;
};

struct packet {
	void *data;
	void *end;
	__u32 len;
};

// `n` bytes at `off`, or NULL.
static __always_inline __u8 *at(const struct packet *pkt, __u32 off, __u32 n)
{
	if (off > MAX_OFFSET)
		return NULL;
	__u8 *p = pkt->data + off;
	// Makes `p` opaque to the compiler, which would otherwise recompute `data + off` for the
	// access after the check, a pointer the verifier has not seen checked.
	asm volatile("" : "+r"(p));
	if ((const void *)(p + n) > pkt->end)
		return NULL;
	return p;
}

static __always_inline __u16 be16(const __u8 *p)
{
	return ((__u16)p[0] << 8) | p[1];
}

static __always_inline __u64 le64(const __u8 *p)
{
	__u64 v;
	__builtin_memcpy(&v, p, 8);
	return v;
}

static __always_inline __u32 le32(const __u8 *p)
{
	__u32 v;
	__builtin_memcpy(&v, p, 4);
	return v;
}

static __always_inline int is_vip4(const struct farm *f, const __u8 *addr)
{
	__u32 a = le32(addr);
#pragma unroll
	for (int i = 0; i < MAX_VIPS; i++) {
		if (i >= f->vips_v4)
			break;
		if (le32(f->vip4[i]) == a)
			return 1;
	}
	return 0;
}

static __always_inline int is_vip6(const struct farm *f, const __u8 *addr)
{
	__u64 lo = le64(addr), hi = le64(addr + 8);
#pragma unroll
	for (int i = 0; i < MAX_VIPS; i++) {
		if (i >= f->vips_v6)
			break;
		if (le64(f->vip6[i]) == lo && le64(f->vip6[i] + 8) == hi)
			return 1;
	}
	return 0;
}

static __always_inline struct identity decided(enum verdict v)
{
	struct identity id = {.verdict = v};
	return id;
}

// The identity of a client (4 or 16 address bytes) with the port bytes as they sit on the wire
// (`port` holds them in memory order; 0 for the address alone).
static __always_inline struct identity client(const __u8 *addr, int v6, __u16 port)
{
	struct identity id = {.verdict = V_ACCEPT};
	if (v6) {
		id.words = 3;
		id.word[0] = le64(addr);
		id.word[1] = le64(addr + 8);
		id.word[2] = (__u64)port | (18ULL << 56);
	} else {
		id.words = 1;
		id.word[0] = (__u64)le32(addr) | ((__u64)port << 32) | (6ULL << 56);
	}
	return id;
}

static __always_inline int rule_protocol(__u8 number)
{
	switch (number) {
	case PROTO_TCP:
		return RULE_TCP;
	case PROTO_UDP:
		return RULE_UDP;
	case PROTO_ICMP:
	case PROTO_ICMPV6:
		return RULE_ICMP;
	default:
		return -1;
	}
}

// A flow identified by the client address alone: balanced when any rule covers its protocol.
static __always_inline struct identity address_only(const struct farm *f, __u8 number,
						    const __u8 *addr, int v6)
{
	int p = rule_protocol(number);
	if (p < 0 || !f->covered[p])
		return decided(V_DROP_NO_RULE);
	return client(addr, v6, 0);
}

// A TCP or UDP flow: the rule of the VIP port says whether the client port joins the address.
static __always_inline struct identity by_ports(int p, const __u8 *l4, const __u8 *addr, int v6)
{
	__u32 key = (__u32)p * PORTS + be16(l4 + 2);
	const __u8 *rule = bpf_map_lookup_elem(&ports, &key);
	if (!rule || *rule == RULE_NONE)
		return decided(V_DROP_NO_RULE);
	__u16 port = 0;
	if (*rule == RULE_CLIENT_IP_PORT)
		__builtin_memcpy(&port, l4, 2);
	return client(addr, v6, port);
}

static __always_inline struct identity transport(const struct packet *pkt, __u8 number,
						 struct span l4, const __u8 *addr, int v6)
{
	const __u8 *h;
	if (number == PROTO_TCP) {
		if (l4.len < 20 || !(h = at(pkt, l4.off, 20)))
			return decided(V_DROP_MALFORMED);
		__u32 data_offset = (h[12] >> 4) * 4;
		if (data_offset < 20 || data_offset > l4.len)
			return decided(V_DROP_MALFORMED);
		struct identity id = by_ports(RULE_TCP, h, addr, v6);
		id.tcp = 1;
		id.flags = h[13];
		id.l4 = l4.off;
		return id;
	}
	if (l4.len < 8 || !(h = at(pkt, l4.off, 8)))
		return decided(V_DROP_MALFORMED);
	return by_ports(RULE_UDP, h, addr, v6);
}

// The packet an ICMP error quotes was sent by the farm: its destination is the client and its
// source port the VIP port.
static __always_inline struct identity quoted(const struct packet *pkt, const struct farm *f,
					      __u8 number, struct span l4, int fragment,
					      const __u8 *addr, int v6)
{
	if (fragment || (number != PROTO_TCP && number != PROTO_UDP))
		return address_only(f, number, addr, v6);
	const __u8 *h;
	if (l4.len < 4 || !(h = at(pkt, l4.off, 4)))
		return decided(V_DROP_MALFORMED);
	__u8 ports_swapped[4] = {h[2], h[3], h[0], h[1]};
	return by_ports(number == PROTO_TCP ? RULE_TCP : RULE_UDP, ports_swapped, addr, v6);
}

static __always_inline struct identity ipv4(const struct packet *pkt, const struct farm *f,
					    __u32 off)
{
	const __u8 *ip = at(pkt, off, 20);
	if (!ip || (ip[0] >> 4) != 4 || !is_vip4(f, ip + 16))
		return decided(V_PASS);
	__u32 header_len = (ip[0] & 0x0f) * 4;
	__u32 total_len = be16(ip + 2);
	if (header_len < 20 || total_len < header_len || total_len > pkt->len - off)
		return decided(V_DROP_MALFORMED);
	struct span l4 = {off + header_len, total_len - header_len};
	if ((ip[6] & 0x20) || (be16(ip + 6) & 0x1fff))
		return address_only(f, ip[9], ip + 12, 0);
	switch (ip[9]) {
	case PROTO_TCP:
	case PROTO_UDP:
		return transport(pkt, ip[9], l4, ip + 12, 0);
	case PROTO_ICMP:
		break;
	default:
		return decided(V_DROP_NO_RULE);
	}
	const __u8 *icmp;
	if (l4.len < 8 || !(icmp = at(pkt, l4.off, 8)))
		return decided(V_DROP_MALFORMED);
	if (icmp[0] != 3 && icmp[0] != 11 && icmp[0] != 12)
		return address_only(f, PROTO_ICMP, ip + 12, 0);
	struct span q = {l4.off + 8, l4.len - 8};
	const __u8 *inner = at(pkt, q.off, 20);
	if (q.len < 20 || !inner || (inner[0] >> 4) != 4 || !is_vip4(f, inner + 12))
		return decided(V_DROP_MALFORMED);
	__u32 inner_header = (inner[0] & 0x0f) * 4;
	if (inner_header < 20 || inner_header > q.len)
		return decided(V_DROP_MALFORMED);
	struct span inner_l4 = {q.off + inner_header, q.len - inner_header};
	int fragment = (inner[6] & 0x20) || (be16(inner + 6) & 0x1fff);
	return quoted(pkt, f, inner[9], inner_l4, fragment, inner + 16, 0);
}

// What follows an IPv6 header's extension headers (see `upper_layer` in packet/src/wire/ipv6.rs).
struct upper {
	int ok;
	__u8 protocol;
	int fragment;
	struct span payload;
};

static __always_inline struct upper upper_layer(const struct packet *pkt, __u8 next,
						struct span bytes)
{
	struct upper u = {0};
#pragma unroll
	for (int i = 0; i <= MAX_EXTENSION_HEADERS; i++) {
		const __u8 *h;
		__u32 len;
		switch (next) {
		case PROTO_HOP_BY_HOP:
		case PROTO_ROUTING:
		case PROTO_DEST_OPTS:
			if (bytes.len < 2 || !(h = at(pkt, bytes.off, 2)))
				return u;
			len = ((__u32)h[1] + 1) * 8;
			break;
		case PROTO_AUTH:
			if (bytes.len < 2 || !(h = at(pkt, bytes.off, 2)))
				return u;
			len = ((__u32)h[1] + 2) * 4;
			break;
		case PROTO_FRAGMENT:
			len = 8;
			break;
		default:
			u.ok = 1;
			u.protocol = next;
			u.payload = bytes;
			return u;
		}
		if (bytes.len < len || !(h = at(pkt, bytes.off, 4)))
			return u;
		if (next == PROTO_FRAGMENT && ((be16(h + 2) >> 3) || (h[3] & 1))) {
			u.ok = 1;
			u.protocol = h[0];
			u.fragment = 1;
			u.payload.off = bytes.off + 8;
			u.payload.len = bytes.len - 8;
			return u;
		}
		next = h[0];
		bytes.off += len;
		bytes.len -= len;
	}
	return u;
}

// ff02::1:ffxx:xxxx, where solicitations for a VIP are sent.
static __always_inline int is_solicited_node(const __u8 *a)
{
	return le64(a) == 0x02ff && le32(a + 8) == 0x01000000 && a[12] == 0xff;
}

// Neighbour discovery and listener messages: answered (a solicitation for a VIP) or left to the
// kernel; -1 for any other packet.
static __always_inline int link_control(const struct packet *pkt, const struct farm *f,
					const __u8 *ip, const struct upper *u)
{
	const __u8 *icmp;
	if (u->protocol != PROTO_ICMPV6 || u->fragment || u->payload.len < 8 ||
	    !(icmp = at(pkt, u->payload.off, 8)))
		return -1;
	if (!((icmp[0] >= 130 && icmp[0] <= 137) || icmp[0] == 143))
		return -1;
	const __u8 *ns;
	if (ip[7] == 255 && icmp[0] == 135 && icmp[1] == 0 && u->payload.len >= 24 &&
	    (ns = at(pkt, u->payload.off, 24)) && is_vip6(f, ns + 8))
		return V_ANSWER_NEIGHBOR;
	return V_PASS;
}

static __always_inline struct identity ipv6(const struct packet *pkt, const struct farm *f,
					    __u32 off)
{
	const __u8 *ip = at(pkt, off, 40);
	if (!ip || (ip[0] >> 4) != 6)
		return decided(V_PASS);
	int for_vip = is_vip6(f, ip + 24);
	if (!for_vip && !is_solicited_node(ip + 24))
		return decided(V_PASS);
	struct upper u = {0};
	__u32 payload_len = be16(ip + 4);
	if (40 + payload_len <= pkt->len - off) {
		struct span payload = {off + 40, payload_len};
		u = upper_layer(pkt, ip[6], payload);
	}
	if (u.ok) {
		int control = link_control(pkt, f, ip, &u);
		if (control >= 0)
			return decided(control);
	}
	if (!for_vip)
		return decided(V_PASS);
	if (!u.ok)
		return decided(V_DROP_MALFORMED);
	if (u.fragment)
		return address_only(f, u.protocol, ip + 8, 1);
	switch (u.protocol) {
	case PROTO_TCP:
	case PROTO_UDP:
		return transport(pkt, u.protocol, u.payload, ip + 8, 1);
	case PROTO_ICMPV6:
		break;
	default:
		return decided(V_DROP_NO_RULE);
	}
	const __u8 *icmp;
	if (u.payload.len < 8 || !(icmp = at(pkt, u.payload.off, 8)))
		return decided(V_DROP_MALFORMED);
	if (icmp[0] < 1 || icmp[0] > 4)
		return address_only(f, PROTO_ICMPV6, ip + 8, 1);
	struct span q = {u.payload.off + 8, u.payload.len - 8};
	const __u8 *inner = at(pkt, q.off, 40);
	if (q.len < 40 || !inner || (inner[0] >> 4) != 6 || !is_vip6(f, inner + 8))
		return decided(V_DROP_MALFORMED);
	struct span rest = {q.off + 40, q.len - 40};
	struct upper iu = upper_layer(pkt, inner[6], rest);
	if (!iu.ok)
		return decided(V_DROP_MALFORMED);
	return quoted(pkt, f, iu.protocol, iu.payload, iu.fragment, inner + 24, 1);
}

static __always_inline enum verdict arp(const struct packet *pkt, const struct farm *f,
					__u32 off)
{
	const __u8 *a = at(pkt, off, 28);
	if (!a || be16(a) != 1 || be16(a + 2) != ETH_P_IP || a[4] != 6 || a[5] != 4)
		return V_PASS;
	if (be16(a + 6) == 1 && le32(a + 14) != le32(a + 24) && is_vip4(f, a + 24))
		return V_ANSWER_NEIGHBOR;
	return V_PASS;
}

#define ROTL(x, b) (((x) << (b)) | ((x) >> (64 - (b))))
// The second half of a SipRound (the first half reads only v0 and v1).
#define REST_OF_ROUND                                                                          \
	do {                                                                                   \
		v2 += v3;                                                                      \
		v3 = ROTL(v3, 16);                                                             \
		v3 ^= v2;                                                                      \
		v0 += v3;                                                                      \
		v3 = ROTL(v3, 21);                                                             \
		v3 ^= v0;                                                                      \
		v2 += v1;                                                                      \
		v1 = ROTL(v1, 17);                                                             \
		v1 ^= v2;                                                                      \
		v2 = ROTL(v2, 32);                                                             \
	} while (0)

#define SIPROUND                                                                               \
	do {                                                                                   \
		v0 += v1;                                                                      \
		v1 = ROTL(v1, 13);                                                             \
		v1 ^= v0;                                                                      \
		v0 = ROTL(v0, 32);                                                             \
		REST_OF_ROUND;                                                                 \
	} while (0)

// SipHash-1-3 of the identity's words (see packet/src/hash.rs). The first word's round
// starts halfway, from the primed state.
static __always_inline __u64 flow_hash(const struct farm *f, const struct identity *id)
{
	__u64 v0 = f->sip[0];
	__u64 v1 = f->sip[1];
	__u64 v2 = f->sip[2];
	__u64 v3 = f->sip[3] ^ id->word[0];
	REST_OF_ROUND;
	v0 ^= id->word[0];
#pragma unroll
	for (int i = 1; i < 3; i++) {
		if (i >= id->words)
			break;
		v3 ^= id->word[i];
		SIPROUND;
		v0 ^= id->word[i];
	}
	v2 ^= 0xff;
	SIPROUND;
	SIPROUND;
	SIPROUND;
	return v0 ^ v1 ^ v2 ^ v3;
}

static __always_inline struct packet packet_of(struct xdp_md *ctx)
{
	struct packet pkt = {
		.data = (void *)(long)ctx->data,
		.end = (void *)(long)ctx->data_end,
	};
	pkt.len = pkt.end - pkt.data;
	return pkt;
}

// Whether herd's last sign of life is recent enough for the node to accept VIP packets at
// `now`: the time of the last tick of CLOCK_MONOTONIC_COARSE, the clock herd writes the
// deadline in, exact enough for a deadline half a second ahead and about 30 ns cheaper per
// packet than the exact clock. A deadline set to now has passed.
static __always_inline int alive(__u64 now)
{
	__u32 zero = 0;
	const __u64 *deadline = bpf_map_lookup_elem(&liveness, &zero);
	return deadline && now < *deadline;
}

// The flow-table key of the TCP segment `id` describes, its IP header at `l3`; 0 when the
// headers cannot be read (never, once `identify` has read them).
static __always_inline int flow_key(const struct packet *pkt, const struct identity *id,
				    __u32 l3, struct flow_key *key)
{
	__builtin_memset(key, 0, sizeof(*key));
	const __u8 *ports = at(pkt, id->l4, 4);
	if (!ports)
		return 0;
	if (id->words == 3) {
		const __u8 *ip = at(pkt, l3, 40);
		if (!ip)
			return 0;
		__builtin_memcpy(key->client, ip + 8, 16);
		__builtin_memcpy(key->vip, ip + 24, 16);
		key->family = 6;
	} else {
		const __u8 *ip = at(pkt, l3, 20);
		if (!ip)
			return 0;
		__builtin_memcpy(key->client, ip + 12, 4);
		__builtin_memcpy(key->vip, ip + 16, 4);
		key->family = 4;
	}
	__builtin_memcpy(key->client_port, ports, 2);
	__builtin_memcpy(key->vip_port, ports + 2, 2);
	return 1;
}

// What the kernel of this node's namespace says of the connection of the TCP segment `id`
// describes, its IP header at `l3` (`Served` in packet/src/kernel.rs): SERVED_SOCKET when it
// has a socket for the 4-tuple in any state but LISTEN and TIME_WAIT (the lookup falls back to
// the listener when there is none); SERVED_COOKIE when the segment completes a SYN-cookie
// handshake of that listener.
static __always_inline __u32 served(struct xdp_md *ctx, const struct identity *id, __u32 l3)
{
	struct packet pkt = packet_of(ctx);
	struct bpf_sock_tuple tuple = {};
	const __u8 *th = at(&pkt, id->l4, 20);
	const __u8 *ip = at(&pkt, l3, id->words == 3 ? 40 : 20);
	if (!th || !ip)
		return 0;
	__u32 tuple_len;
	if (id->words == 3) {
		__builtin_memcpy(tuple.ipv6.saddr, ip + 8, 16);
		__builtin_memcpy(tuple.ipv6.daddr, ip + 24, 16);
		__builtin_memcpy(&tuple.ipv6.sport, th, 2);
		__builtin_memcpy(&tuple.ipv6.dport, th + 2, 2);
		tuple_len = sizeof(tuple.ipv6);
	} else {
		__builtin_memcpy(&tuple.ipv4.saddr, ip + 12, 4);
		__builtin_memcpy(&tuple.ipv4.daddr, ip + 16, 4);
		__builtin_memcpy(&tuple.ipv4.sport, th, 2);
		__builtin_memcpy(&tuple.ipv4.dport, th + 2, 2);
		tuple_len = sizeof(tuple.ipv4);
	}
	struct bpf_sock *sk = bpf_skc_lookup_tcp(ctx, &tuple, tuple_len, BPF_F_CURRENT_NETNS, 0);
	if (!sk)
		return 0;
	__u32 answer = 0;
	if (sk->state == TCP_STATE_LISTEN) {
		// The helper checks the flags, and that the listener sent cookies lately.
		long cookie = id->words == 3 ? bpf_tcp_check_syncookie(sk, (void *)ip, 40, (void *)th, 20)
					     : bpf_tcp_check_syncookie(sk, (void *)ip, 20, (void *)th, 20);
		if (cookie == 0)
			answer = SERVED_COOKIE;
	} else if (sk->state != TCP_STATE_TIME_WAIT) {
		answer = SERVED_SOCKET;
	}
	bpf_sk_release(sk);
	return answer;
}

// Whether a TCP segment whose bucket's mode has KNOWN is accepted, with the flow table kept as
// step 6 says: a SYN is recorded and accepted in a mode with SYN, and forgets its connection
// in a mode without; any other segment is accepted when recorded (and seen now), or when the
// kernel serves its connection: a socket, or, in a mode without SYN, a cookie.
static __always_inline int known_accepted(struct xdp_md *ctx, const struct identity *id,
					  __u32 l3, __u32 mode, __u64 now)
{
	struct packet pkt = packet_of(ctx);
	struct flow_key key;
	if (!flow_key(&pkt, id, l3, &key))
		return 0;
	if ((id->flags & (TCP_SYN | TCP_ACK)) == TCP_SYN) {
		if (!(mode & MODE_SYN)) {
			bpf_map_delete_elem(&flows, &key);
			return 0;
		}
		bpf_map_update_elem(&flows, &key, &now, BPF_ANY);
		return 1;
	}
	__u64 *seen = bpf_map_lookup_elem(&flows, &key);
	if (seen) {
		*seen = now;
		return 1;
	}
	__u32 answer = served(ctx, id, l3);
	return (answer & SERVED_SOCKET) || (!(mode & MODE_SYN) && (answer & SERVED_COOKIE));
}

// This node's mode of the bucket of `id`, or -1 when the table cannot be read.
static __always_inline int bucket_mode(const struct farm *f, const struct identity *id)
{
	__u32 zero = 0;
	const __u32 *table = bpf_map_lookup_elem(&active, &zero);
	if (!table)
		return -1;
	__u32 bucket = (__u32)flow_hash(f, id) & f->mask & (MAX_BUCKETS - 1);
	__u32 key = (*table & 1) * MAX_BUCKETS + bucket;
	const __u8 *entry = bpf_map_lookup_elem(&buckets, &key);
	if (!entry)
		return -1;
	return *entry;
}

// Step 6: what this node's mode of the packet's bucket says. The packets of a bucket owned
// outright (OWN) or not at all (NONE) never touch the flow table nor ask the kernel.
static __always_inline enum verdict mode_verdict(struct xdp_md *ctx, const struct farm *f,
						 const struct identity *id, __u32 l3)
{
	__u64 now = bpf_ktime_get_coarse_ns();
	if (!alive(now))
		return V_DROP_NOT_OWNER;
	int found = bucket_mode(f, id);
	if (found < 0)
		return V_DROP_NOT_OWNER;
	__u32 mode = found;
	int accepted;
	if (!id->tcp)
		accepted = mode & MODE_OTHER;
	else if (mode & MODE_KNOWN && ((id->flags & (TCP_SYN | TCP_ACK)) == TCP_SYN ||
				       !(mode & MODE_TCP_ANY)))
		accepted = known_accepted(ctx, id, l3, mode, now);
	else if ((id->flags & (TCP_SYN | TCP_ACK)) == TCP_SYN)
		accepted = mode & MODE_SYN;
	else
		accepted = mode & MODE_TCP_ANY;
	return accepted ? V_ACCEPT : V_DROP_NOT_OWNER;
}

// The frame's flow identity, or the verdict that needs none (V_ACCEPT in `verdict` means
// "a VIP flow to look up"); `*l3` is set to the offset of its network header.
static __always_inline struct identity identify(struct xdp_md *ctx, const struct farm *f,
						 __u32 *l3)
{
	struct packet pkt = packet_of(ctx);
	const __u8 *eth = at(&pkt, 0, 14);
	if (!eth)
		return decided(V_PASS);
	__u16 ethertype = be16(eth + 12);
	__u32 off = 14;
#pragma unroll
	for (int tags = 0; tags < 2; tags++) {
		if (ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD)
			break;
		const __u8 *tag = at(&pkt, off, 4);
		if (!tag)
			return decided(V_PASS);
		ethertype = be16(tag + 2);
		off += 4;
	}
	*l3 = off;
	switch (ethertype) {
	case ETH_P_IP:
		return ipv4(&pkt, f, off);
	case ETH_P_IPV6:
		return ipv6(&pkt, f, off);
	case ETH_P_ARP:
		return decided(arp(&pkt, f, off));
	default:
		// Other EtherTypes, and a third VLAN tag.
		return decided(V_PASS);
	}
}

// The virtual MAC of a VIP (`virtual_mac` in packet/src/neighbor.rs). Unicast: locally
// administered, 02:68 and the IPv4 address, or 06:68 and the last 4 bytes of the IPv6 address.
// Multicast: the MAC of the group the nodes join, 239.255.c.d for a.b.c.d (01:00:5e:7f:c:d),
// or the IPv6 address's solicited-node group (33:33:ff and its last 3 bytes).
static __always_inline void virtual_mac(__u8 *mac, const __u8 *vip, int v6, const struct farm *f)
{
	const __u8 *low = v6 ? vip + 12 : vip;
	if (f->mac_mode == MAC_MULTICAST) {
		mac[0] = v6 ? 0x33 : 0x01;
		mac[1] = v6 ? 0x33 : 0x00;
		mac[2] = v6 ? 0xff : 0x5e;
		mac[3] = v6 ? low[1] : 0x7f;
	} else {
		mac[0] = v6 ? 0x06 : 0x02;
		mac[1] = 0x68;
		mac[2] = low[0];
		mac[3] = low[1];
	}
	mac[4] = low[2];
	mac[5] = low[3];
}

// Ethernet: back to the sender, from the interface's own MAC.
static __always_inline void reply_ethernet(__u8 *eth, const struct farm *f)
{
	__builtin_memcpy(eth, eth + 6, 6);
	__builtin_memcpy(eth + 6, f->if_mac, 6);
}

static __always_inline int answer_arp(struct xdp_md *ctx, const struct farm *f, __u32 l3)
{
	struct packet pkt = packet_of(ctx);
	__u8 *eth = at(&pkt, 0, 14);
	__u8 *a = at(&pkt, l3, 28);
	if (!eth || !a)
		return XDP_DROP;
	__u8 requester[10]; // its MAC and address
	__builtin_memcpy(requester, a + 8, 10);
	__u8 vip[4];
	__builtin_memcpy(vip, a + 24, 4);
	reply_ethernet(eth, f);
	a[6] = 0;
	a[7] = 2; // reply
	virtual_mac(a + 8, vip, 0, f);
	__builtin_memcpy(a + 14, vip, 4);
	__builtin_memcpy(a + 18, requester, 10);
	return XDP_TX;
}

// The ICMPv6 checksum of a neighbour advertisement (32 bytes at `icmp`) from `src` to `dst`.
static __always_inline __u16 na_checksum(const __u8 *src, const __u8 *dst, const __u8 *icmp)
{
	__u32 sum = 32 + PROTO_ICMPV6;
#pragma unroll
	for (int i = 0; i < 16; i += 2)
		sum += be16(src + i) + be16(dst + i) + be16(icmp + i) + be16(icmp + 16 + i);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return ~sum & 0xffff;
}

// Turns a neighbour solicitation for a VIP into the solicited advertisement of its virtual
// MAC: 40 bytes of IPv6 header, then the 24-byte advertisement and a target link-layer address
// option.
static __always_inline int answer_solicitation(struct xdp_md *ctx, const struct farm *f,
					       __u32 l3)
{
	struct packet pkt = packet_of(ctx);
	const __u8 *ip = at(&pkt, l3, 40 + 24);
	if (!ip || ip[6] != PROTO_ICMPV6)
		return XDP_DROP;
	__u8 client[16], vip[16];
	__builtin_memcpy(client, ip + 8, 16);
	__builtin_memcpy(vip, ip + 40 + 8, 16);
	if (!(le64(client) | le64(client + 8)))
		return XDP_DROP;
	if (bpf_xdp_adjust_tail(ctx, (int)(l3 + 40 + 32) - (int)pkt.len))
		return XDP_DROP;
	pkt = packet_of(ctx);
	__u8 *eth = at(&pkt, 0, 14);
	__u8 *out = at(&pkt, l3, 40 + 32);
	if (!eth || !out)
		return XDP_DROP;
	reply_ethernet(eth, f);
	__u8 header[8] = {0x60, 0, 0, 0, 0, 32, PROTO_ICMPV6, 255};
	__builtin_memcpy(out, header, 8);
	__builtin_memcpy(out + 8, vip, 16);
	__builtin_memcpy(out + 24, client, 16);
	__u8 *na = out + 40;
	__u8 message[8] = {136, 0, 0, 0, 0x60, 0, 0, 0}; // solicited, override
	__builtin_memcpy(na, message, 8);
	__builtin_memcpy(na + 8, vip, 16);
	na[24] = 2; // target link-layer address option, 8 bytes
	na[25] = 1;
	virtual_mac(na + 26, vip, 1, f);
	__u16 checksum = na_checksum(vip, client, na);
	na[2] = checksum >> 8;
	na[3] = checksum & 0xff;
	return XDP_TX;
}

static __always_inline int to_stack(struct xdp_md *ctx, const struct farm *f)
{
	struct packet pkt = packet_of(ctx);
	__u8 *eth = at(&pkt, 0, 14);
	if (eth)
		__builtin_memcpy(eth, f->if_mac, 6);
	return XDP_PASS;
}

// Counts the frame under its verdict, with its length as it arrived: called before any action
// rewrites it. The entry is this CPU's own, so plain additions are exact.
static __always_inline void count(struct xdp_md *ctx, enum verdict v)
{
	__u32 index = v;
	struct count *c = bpf_map_lookup_elem(&counters, &index);
	if (c) {
		c->packets += 1;
		c->bytes += packet_of(ctx).len;
	}
}

// The action of every verdict but V_ACCEPT and V_REDIRECTED, which the programs take.
static __always_inline int act(struct xdp_md *ctx, const struct farm *f, enum verdict v,
			       __u32 l3)
{
	switch (v) {
	case V_ANSWER_NEIGHBOR: {
		struct packet pkt = packet_of(ctx);
		const __u8 *eth = at(&pkt, l3 - 2, 2);
		if (eth && be16(eth) == ETH_P_ARP)
			return answer_arp(ctx, f, l3);
		return answer_solicitation(ctx, f, l3);
	}
	case V_DROP_NOT_OWNER:
	case V_DROP_NO_RULE:
	case V_DROP_MALFORMED:
		return XDP_DROP;
	default:
		return XDP_PASS;
	}
}

SEC("xdp")
int herd_classify(struct xdp_md *ctx)
{
	__u32 zero = 0;
	const struct farm *f = bpf_map_lookup_elem(&farm, &zero);
	if (!f)
		return XDP_PASS;
	__u32 l3 = 0;
	struct identity id = identify(ctx, f, &l3);
	enum verdict v = id.verdict;
	if (v == V_ACCEPT)
		v = mode_verdict(ctx, f, &id, l3);
	count(ctx, v);
	if (v == V_ACCEPT)
		return to_stack(ctx, f);
	return act(ctx, f, v, l3);
}

// Puts the kernel's answer for a frame's connection in front of it, in the 4 bytes the worker
// reads first (`Served::from_prefix` in packet/src/kernel.rs). Fails only without headroom,
// which XDP always leaves.
static __always_inline int prepend_answer(struct xdp_md *ctx, __u32 answer)
{
	if (bpf_xdp_adjust_head(ctx, -(int)sizeof(answer)))
		return 0;
	struct packet pkt = packet_of(ctx);
	__u8 *head = at(&pkt, 0, sizeof(answer));
	if (!head)
		return 0;
	__builtin_memcpy(head, &answer, sizeof(answer));
	return 1;
}

SEC("xdp")
int herd_redirect(struct xdp_md *ctx)
{
	__u32 zero = 0;
	const struct farm *f = bpf_map_lookup_elem(&farm, &zero);
	if (!f)
		return XDP_PASS;
	__u32 l3 = 0;
	struct identity id = identify(ctx, f, &l3);
	enum verdict v = id.verdict;
	if (v == V_ACCEPT)
		v = alive(bpf_ktime_get_coarse_ns()) ? V_REDIRECTED : V_DROP_NOT_OWNER;
	__u32 queue = ctx->rx_queue_index;
	const __u32 *late = bpf_map_lookup_elem(&behind, &queue);
	if (v == V_REDIRECTED && late && *late && bucket_mode(f, &id) == 0)
		v = V_DROP_NOT_OWNER;
	count(ctx, v);
	if (v != V_REDIRECTED)
		return act(ctx, f, v, l3);
	__u32 answer = 0;
	if (f->lookups && id.tcp && (id.flags & (TCP_SYN | TCP_ACK)) != TCP_SYN)
		answer = served(ctx, &id, l3);
	if (!prepend_answer(ctx, answer))
		return XDP_DROP;
	return bpf_redirect_map(&sockets, queue, XDP_DROP);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
