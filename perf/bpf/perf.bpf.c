// SPDX-License-Identifier: Apache-2.0
//
// The helper programs of herd-perf, none of which is part of herd:
//
// - `perf_generate`, the traffic generator. herd-perf runs it with BPF_PROG_RUN in live-frames
//   mode on the sender's veth: the kernel hands it a template frame, it gives the frame a
//   client from the `clients4`/`clients6` maps (a per-CPU sequence number picks which, so the
//   receiver sees every flow in turn), stamps the send time into the payload and returns
//   XDP_TX, which live-frames mode turns into a transmission out of the sender's veth, that is
//   into the receiver. A TCP template is a SYN of the SYN flood: it gets the client's address
//   but a random source port and sequence number, so that every SYN opens a new connection,
//   as a flood from spoofed sources does, and no send time.
// - `perf_drop`, the baseline: counts the frame and drops it, the least any XDP filter does.
// - `perf_drop_read`, the same after reading a byte of the addresses: the least any
//   filter that looks at a header does, since the first read of a frame the generator wrote
//   on another core brings its cache line over.
// - `perf_pass`, an empty program: the reference herd's cost per packet is measured against,
//   and what makes the receiver's veth take XDP frames for the nftables contender (veth only
//   receives frames sent by XDP when its peer has an XDP program or GRO on).
//
// The templates are built by herd-perf (src/mix.rs): Ethernet, IPv4 without options or IPv6
// without extension headers, then UDP and a payload that starts with the 8-byte send time, or
// a TCP SYN (its header, options included, and no payload).

#include <linux/bpf.h>
#include <linux/types.h>
#include <bpf/bpf_helpers.h>

#define MAX_CLIENTS 65536
#define ETH_LEN 14
#define IPV4_LEN 20
#define IPV6_LEN 40
#define UDP_LEN 8
#define TCP_LEN 20
#define PROTO_TCP 6
// The SYN flood's source ports: the unprivileged range, 1024 to 65535.
#define FIRST_PORT 1024
#define PORTS (65536 - FIRST_PORT)
#define STAMP_LEN 8

// A client of each family: its address, then its UDP port in network order, then padding, as
// `client_entry` in src/generator.rs writes it.
struct client4 {
	__u8 addr[4];
	__u8 port[2];
	__u8 pad[2];
};

struct client6 {
	__u8 addr[16];
	__u8 port[2];
	__u8 pad[2];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_CLIENTS);
	__type(key, __u32);
	__type(value, struct client4);
} clients4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_CLIENTS);
	__type(key, __u32);
	__type(value, struct client6);
} clients6 SEC(".maps");

// How many entries of `clients4` (index 0) and `clients6` (index 1) are in use.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u32);
} client_count SEC(".maps");

// The generator's sequence number, per CPU so that it needs no atomic operation.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} sequence SEC(".maps");

// The frames `perf_drop` dropped.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} dropped SEC(".maps");

// The header byte `perf_drop_read` last read: where it goes so that the read stays.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} header_byte SEC(".maps");

// Adds the change of one 16-bit word from `old` to `new` to a ones'-complement sum (RFC 1624,
// equation 3). The words are loaded and stored in the same byte order, so the sum is right in
// either order.
static __always_inline __u32 csum_replace(__u32 sum, __u16 old, __u16 new)
{
	return sum + (__u16)~old + new;
}

static __always_inline __u16 csum_fold(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)sum;
}

static __always_inline __u16 load16(const __u8 *p)
{
	__u16 v;
	__builtin_memcpy(&v, p, 2);
	return v;
}

static __always_inline void store16(__u8 *p, __u16 v)
{
	__builtin_memcpy(p, &v, 2);
}

// Writes `n` bytes (a multiple of 2) of `from` over `to`, adding each word's change to `sum`.
static __always_inline __u32 rewrite(__u8 *to, const __u8 *from, int n, __u32 sum)
{
#pragma unroll
	for (int i = 0; i < n; i += 2) {
		sum = csum_replace(sum, load16(to + i), load16(from + i));
		store16(to + i, load16(from + i));
	}
	return sum;
}

// Adds the change of `n` bytes (a multiple of 2) from `old` to `new` to `sum`, writing nothing:
// for a checksum that covers bytes another checksum also covers.
static __always_inline __u32 add_change(__u32 sum, const __u8 *old, const __u8 *new, int n)
{
#pragma unroll
	for (int i = 0; i < n; i += 2)
		sum = csum_replace(sum, load16(old + i), load16(new + i));
	return sum;
}

// A SYN's random source port and sequence number, in network order, as the TCP header holds
// them.
struct syn_fields {
	__u8 port[2];
	__u8 seq[4];
};

static __always_inline void random_syn_fields(struct syn_fields *f)
{
	__u16 port = FIRST_PORT + bpf_get_prandom_u32() % PORTS;
	__u32 seq = bpf_get_prandom_u32();
	f->port[0] = port >> 8;
	f->port[1] = port;
	__builtin_memcpy(f->seq, &seq, 4);
}

// Gives the SYN at `tcp` its random port and sequence number; `sum` already holds the change of
// the addresses its checksum covers.
static __always_inline void rewrite_syn(__u8 *tcp, __u32 sum)
{
	struct syn_fields f;
	random_syn_fields(&f);
	sum = rewrite(tcp, f.port, 2, sum);
	sum = rewrite(tcp + 4, f.seq, 4, sum);
	store16(tcp + 16, ~csum_fold(sum));
}

static __always_inline __u64 next_sequence(void)
{
	__u32 zero = 0;
	__u64 *seq = bpf_map_lookup_elem(&sequence, &zero);
	if (!seq)
		return 0;
	return (*seq)++;
}

static __always_inline __u32 clients(__u32 family)
{
	const __u32 *count = bpf_map_lookup_elem(&client_count, &family);
	return count ? *count : 0;
}

// An IPv4 SYN: the client's address into the source; the header and TCP checksums follow.
static __always_inline int generate_syn_v4(__u8 *ip, const void *end)
{
	__u8 *tcp = ip + IPV4_LEN;
	if ((void *)(tcp + TCP_LEN) > end)
		return XDP_DROP;
	__u32 n = clients(0);
	if (!n)
		return XDP_DROP;
	__u32 index = next_sequence() % n;
	const struct client4 *c = bpf_map_lookup_elem(&clients4, &index);
	if (!c)
		return XDP_DROP;
	__u32 tcp_sum = add_change((__u16)~load16(tcp + 16), ip + 12, c->addr, 4);
	__u32 sum = (__u16)~load16(ip + 10);
	sum = rewrite(ip + 12, c->addr, 4, sum);
	store16(ip + 10, ~csum_fold(sum));
	rewrite_syn(tcp, tcp_sum);
	return XDP_TX;
}

// IPv6: the same, the address covered by the TCP checksum alone.
static __always_inline int generate_syn_v6(__u8 *ip, const void *end)
{
	__u8 *tcp = ip + IPV6_LEN;
	if ((void *)(tcp + TCP_LEN) > end)
		return XDP_DROP;
	__u32 n = clients(1);
	if (!n)
		return XDP_DROP;
	__u32 index = next_sequence() % n;
	const struct client6 *c = bpf_map_lookup_elem(&clients6, &index);
	if (!c)
		return XDP_DROP;
	__u32 sum = (__u16)~load16(tcp + 16);
	sum = rewrite(ip + 8, c->addr, 16, sum);
	rewrite_syn(tcp, sum);
	return XDP_TX;
}

// IPv4: the client's address into the source (the header checksum follows), its port into the
// UDP source port and the send time into the payload. The UDP checksum stays 0 ("none"), which
// IPv4 allows.
static __always_inline int generate_v4(__u8 *data, const void *end)
{
	__u8 *ip = data + ETH_LEN;
	__u8 *udp = ip + IPV4_LEN;
	if ((void *)(ip + IPV4_LEN) > end)
		return XDP_DROP;
	if (ip[9] == PROTO_TCP)
		return generate_syn_v4(ip, end);
	if ((void *)(udp + UDP_LEN + STAMP_LEN) > end)
		return XDP_DROP;
	__u32 n = clients(0);
	if (!n)
		return XDP_DROP;
	__u32 index = next_sequence() % n;
	const struct client4 *c = bpf_map_lookup_elem(&clients4, &index);
	if (!c)
		return XDP_DROP;
	__u32 sum = (__u16)~load16(ip + 10);
	sum = rewrite(ip + 12, c->addr, 4, sum);
	store16(ip + 10, ~csum_fold(sum));
	__builtin_memcpy(udp, c->port, 2);
	__u64 now = bpf_ktime_get_ns();
	__builtin_memcpy(udp + UDP_LEN, &now, STAMP_LEN);
	return XDP_TX;
}

// IPv6: the same, but the UDP checksum is mandatory, so every rewritten word updates it.
static __always_inline int generate_v6(__u8 *data, const void *end)
{
	__u8 *ip = data + ETH_LEN;
	__u8 *udp = ip + IPV6_LEN;
	if ((void *)(ip + IPV6_LEN) > end)
		return XDP_DROP;
	if (ip[6] == PROTO_TCP)
		return generate_syn_v6(ip, end);
	if ((void *)(udp + UDP_LEN + STAMP_LEN) > end)
		return XDP_DROP;
	__u32 n = clients(1);
	if (!n)
		return XDP_DROP;
	__u32 index = next_sequence() % n;
	const struct client6 *c = bpf_map_lookup_elem(&clients6, &index);
	if (!c)
		return XDP_DROP;
	__u32 sum = (__u16)~load16(udp + 6);
	sum = rewrite(ip + 8, c->addr, 16, sum);
	sum = rewrite(udp, c->port, 2, sum);
	__u64 now = bpf_ktime_get_ns();
	sum = rewrite(udp + UDP_LEN, (const __u8 *)&now, STAMP_LEN, sum);
	__u16 checksum = ~csum_fold(sum);
	// 0 means "no checksum", which IPv6 forbids; 0xffff is the same value in ones' complement.
	store16(udp + 6, checksum ? checksum : 0xffff);
	return XDP_TX;
}

SEC("xdp")
int perf_generate(struct xdp_md *ctx)
{
	__u8 *data = (void *)(long)ctx->data;
	const void *end = (void *)(long)ctx->data_end;
	if ((void *)(data + ETH_LEN) > end)
		return XDP_DROP;
	__u16 ethertype = ((__u16)data[12] << 8) | data[13];
	if (ethertype == 0x0800)
		return generate_v4(data, end);
	if (ethertype == 0x86dd)
		return generate_v6(data, end);
	return XDP_DROP;
}

SEC("xdp")
int perf_drop(struct xdp_md *ctx)
{
	__u32 zero = 0;
	__u64 *count = bpf_map_lookup_elem(&dropped, &zero);
	if (count)
		*count += 1;
	return XDP_DROP;
}

SEC("xdp")
int perf_drop_read(struct xdp_md *ctx)
{
	__u32 zero = 0;
	const __u8 *data = (void *)(long)ctx->data;
	const void *end = (void *)(long)ctx->data_end;
	// Byte 33: the last byte of an IPv4 destination, inside an IPv6 source; either way on the
	// cache line the generator last wrote (the addresses, the checksum), as a real filter's
	// header reads are on lines the NIC just wrote.
	if ((void *)(data + ETH_LEN + 20) > end)
		return XDP_PASS;
	__u64 *last = bpf_map_lookup_elem(&header_byte, &zero);
	if (last)
		*last = data[ETH_LEN + 19];
	__u64 *count = bpf_map_lookup_elem(&dropped, &zero);
	if (count)
		*count += 1;
	return XDP_DROP;
}

SEC("xdp")
int perf_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
