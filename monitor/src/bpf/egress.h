/* Egress allow-lists, checked by the cgroup sock_addr programs (connect4/6, sendmsg4/6) of
 * monitor.bpf.c, which includes this after reserve() and submit(). A container whose
 * `containers` entry carries CF_EGRESS may connect (TCP, connected UDP) and send (unconnected
 * UDP sendmsg) only to the peers of its allow keys; any other destination is refused with EPERM
 * (only reported with CF_EGRESS_AUDIT, or when the node does not enforce) and reported as an
 * egress_event. Containers without CF_EGRESS pay one flag test.
 *
 * The allow keys live in the `deny_connect` trie beside the deny keys, with the same layout:
 * slot word, port (0: any), address as IPv6 (IPv4 mapped into ::ffff:0:0/96, so an
 * IPv4-mapped IPv6 destination is its IPv4 peer). Slots use 24 bits: an allow key's slot word
 * carries EGRESS_MARK and the IP protocol number in its top byte, so it never matches a deny
 * lookup and a peer learned over TCP does not open UDP to it.
 *
 * A learning container (CF_EGRESS_LEARN, with CF_EGRESS and CF_EGRESS_AUDIT, no allow keys)
 * has every connect and unconnected send let through and reported once per destination: the
 * first one to each (cgroup, protocol, port, address) inserts it into `egress_seen` and is
 * reported (not refused), the next ones find it there and are not. Deduplicating here
 * costs one hash update per send of a learning container and keeps a chatty sender (a
 * resolver, statsd) from filling the ring, whose drops would make the recording lossy. */
#ifndef PALISADE_EGRESS_H
#define PALISADE_EGRESS_H

/* container_info.flags: the container has an egress allow-list; with CF_EGRESS_AUDIT, what it
 * does not list is reported, not refused. */
#define CF_EGRESS 8u
#define CF_EGRESS_AUDIT 16u
/* container_info.flags: the container learns: every destination is reported once, none refused. */
#define CF_EGRESS_LEARN 32u

#define EV_EGRESS 7

/* Top byte of an allow key's slot word: the mark, and the protocol in the low 7 bits (tcp 6,
 * udp 17, icmp 1, icmpv6 58; any other protocol has no key and is refused). */
#define EGRESS_MARK 0x80u

/* egress_event.flags */
#define EGRESS_REFUSED 1u
#define EGRESS_SENDMSG 2u

struct egress_event {
	struct event_header h;
	__u8 addr[16]; /* IPv6, or IPv4 mapped into ::ffff:0:0/96 */
	__u16 port;    /* network order, as the socket address holds it */
	__u16 family;  /* AF_INET or AF_INET6: the socket's */
	__u32 protocol;
	__u32 flags;
	__u32 pad;
};

struct egress_event _egress_event = {};

struct egress_seen_key {
	__u64 cgroup;
	__u8 addr[16];
	__u16 port;
	__u16 protocol;
	__u32 pad;
};

/* The destinations each learning container's cgroup already reported. Keyed by cgroup id,
 * which the kernel never reuses while it runs: a container gone leaves entries nothing looks
 * up again, which the LRU evicts; an entry evicted while its container still learns only
 * costs one more report of that destination. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct egress_seen_key);
	__type(value, __u8);
} egress_seen SEC(".maps");

/* Whether this learning container's destination was reported before (and if not, it now is
 * recorded as reported). Looked up first, then inserted: an insert with BPF_NOEXIST into this
 * LRU map did not fail for a present key on 6.1 and 5.10 (the matrix's learning test saw every
 * send reported there). Two threads racing on one new destination both report it; a failed
 * insert reports it again next time. */
static __always_inline bool egress_seen_before(__u64 cg, const __u8 *addr, __u16 port,
					       __u32 proto)
{
	struct egress_seen_key k = {};
	__u8 one = 1;

	k.cgroup = cg;
	__builtin_memcpy(k.addr, addr, 16);
	k.port = port;
	k.protocol = (__u16)proto;
	if (bpf_map_lookup_elem(&egress_seen, &k))
		return true;
	bpf_map_update_elem(&egress_seen, &k, &one, BPF_ANY);
	return false;
}

/* The destination of a connect or sendmsg as IPv6 (IPv4 mapped), network order. */
static __always_inline void peer_addr(struct bpf_sock_addr *ctx, bool v6, __u8 *out)
{
	__u32 a;

	if (v6) {
		a = ctx->user_ip6[0];
		__builtin_memcpy(&out[0], &a, 4);
		a = ctx->user_ip6[1];
		__builtin_memcpy(&out[4], &a, 4);
		a = ctx->user_ip6[2];
		__builtin_memcpy(&out[8], &a, 4);
		a = ctx->user_ip6[3];
		__builtin_memcpy(&out[12], &a, 4);
	} else {
		__builtin_memset(out, 0, 10);
		out[10] = 0xff;
		out[11] = 0xff;
		a = ctx->user_ip4;
		__builtin_memcpy(&out[12], &a, 4);
	}
}

/* The `deny_connect` value for slot word `word`, the destination's port (network order) and
 * address: the key of that port first, then the key of every port (port 0). */
static __always_inline struct deny_value *trie_lookup(__u32 word, __u16 port, const __u8 *addr)
{
	struct net_key key = {};
	struct deny_value *v;

	__builtin_memcpy(&key.data[0], &word, 4);
	__builtin_memcpy(&key.data[4], &port, 2);
	__builtin_memcpy(&key.data[6], addr, 16);
	key.prefixlen = 22 * 8;
	v = bpf_map_lookup_elem(&deny_connect, &key);
	if (v)
		return v;
	key.data[4] = 0;
	key.data[5] = 0;
	return bpf_map_lookup_elem(&deny_connect, &key);
}

/* Returns 1 to let the connect or send through, 0 to refuse it (EPERM). The record is built
 * with the helpers every kernel gives sock_addr programs (the task is read only where
 * source_check says this kernel allows it: elsewhere pid and comm stay zero). */
static __always_inline int egress_check(struct bpf_sock_addr *ctx, struct container_info *ci,
					__u64 cg, const __u8 *addr, __u16 port, bool sendmsg)
{
	struct deny_value *v;
	struct egress_event *e;
	__u32 proto = ctx->protocol;
	__u64 ug;
	void *rb;
	bool refuse, learn = ci->flags & CF_EGRESS_LEARN;

	if (learn && egress_seen_before(cg, addr, port, proto))
		return 1;
	v = trie_lookup(ci->slot | ((EGRESS_MARK | (proto & 0x7f)) << 24), port, addr);
	if (v && proto < 0x80) {
		__sync_fetch_and_add(&v->hits, 1);
		return 1;
	}
	refuse = enforce && !(ci->flags & CF_EGRESS_AUDIT) && !learn;
	e = reserve(ci, sizeof(*e), &rb);
	if (e) {
		ug = bpf_get_current_uid_gid();
		e->h.kind = EV_EGRESS;
		e->h.slot = ci->slot;
		e->h.cgroup_id = cg;
		e->h.ktime = bpf_ktime_get_ns();
		e->h.uid = (__u32)ug;
		e->h.gid = ug >> 32;
		e->h.pad = 0;
		e->h.pid = 0;
		e->h.tid = 0;
		e->h.ppid = 0;
		__builtin_memset(e->h.comm, 0, sizeof(e->h.comm));
		if (source_check) {
			struct task_struct *t = (struct task_struct *)bpf_get_current_task();

			e->h.pid = BPF_CORE_READ(t, tgid);
			e->h.tid = BPF_CORE_READ(t, pid);
			e->h.ppid = BPF_CORE_READ(t, real_parent, tgid);
			BPF_CORE_READ_INTO(&e->h.comm, t, comm);
		}
		__builtin_memcpy(e->addr, addr, 16);
		e->port = port;
		e->family = ctx->user_family;
		e->protocol = proto;
		e->flags = (refuse ? EGRESS_REFUSED : 0) | (sendmsg ? EGRESS_SENDMSG : 0);
		e->pad = 0;
		/* an observation of a learning container waits for the reader's next poll */
		submit(ci, rb, e, sizeof(*e), !learn);
	}
	return refuse ? 0 : 1;
}

#endif
