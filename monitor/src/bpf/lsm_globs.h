/* File Block rules on a glob (matchPatterns) that also cover names made after the container
 * started. A glob the kernel can match is keyed on the device and inode of its literal
 * directory: one whose wildcards all lie in its last segment (ssh_host_*_key, secret?: a name
 * directly in the directory), or whose wildcard part is `**` then a segment's end (a name at
 * any depth below that ends so), or `**`, a slash, then a last segment (that name at depth two
 * or more: the slash after `**` is in the path). Its last
 * segment is a head, at most one `*`, and a tail, each up to GLOB_PART bytes, `?` standing for
 * any one character; user space turns head and tail into bytes and masks (lsm_globs.h's
 * glob_rule), so a match is a few word compares and no loop over the characters. Other globs
 * are expanded by user space to the files present at start instead.
 *
 * The match runs only where a name appears or is opened (file_open, and create, mkdir, mknod,
 * symlink, link and rename's new name in lsm_file_ops.h), in one global BPF function,
 * palisade_glob_match(), which the verifier checks once per program whatever the caller's
 * state: inlined into each hook, the loops made loading the monitor take minutes on 5.10.
 * Included by lsm_files.h once, after its maps and dentry_rule(). */
#ifndef PALISADE_LSM_GLOBS_H
#define PALISADE_LSM_GLOBS_H

#define GLOB_PART 32
#define GLOB_WORDS (GLOB_PART / 8)
/* globs per literal directory and container */
#define GLOBS_PER_DIR 2

struct glob_key {
	__u32 slot;
	__u32 dev;
	__u64 ino;
	__u32 idx;
	__u32 pad;
};

/* r.flags has FR_RECURSIVE for a glob with `**`: at min_depth or deeper below the directory,
 * else at min_depth exactly. head: the segment's first bytes, head_mask 0xff where the name
 * must have that byte (0 for `?` and past head_len); tail and tail_mask likewise, aligned on
 * the end of the GLOB_PART bytes (the name's last bytes). */
struct glob_rule {
	struct file_rule r;
	__u32 min_depth;
	/* the segment has a `*` between head and tail: a name of at least head_len + tail_len
	 * bytes; without one a name of exactly head_len bytes */
	__u32 star;
	__u32 head_len;
	__u32 tail_len;
	__u64 head[GLOB_WORDS];
	__u64 head_mask[GLOB_WORDS];
	__u64 tail[GLOB_WORDS];
	__u64 tail_mask[GLOB_WORDS];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct glob_key);
	__type(value, struct glob_rule);
} deny_glob SEC(".maps");

/* The slots of the containers with globs: the others skip the name matching. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_CONTAINERS);
	__type(key, __u32);
	__type(value, __u32);
} glob_slots SEC(".maps");

/* The key of the glob palisade_glob_match() found last on this CPU (a global function returns
 * only a number). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct glob_key);
} glob_hit SEC(".maps");

/* The kernel's struct qstr with its length (in an anonymous union there). */
struct qstr___glob {
	union {
		struct {
			__u32 hash;
			__u32 len;
		};
		__u64 hash_len;
	};
	const unsigned char *name;
} __attribute__((preserve_access_index));

struct dentry___glob {
	struct qstr___glob d_name;
} __attribute__((preserve_access_index));

struct glob_key _glob_key = {};
struct glob_rule _glob_rule = {};

/* Whether the masked bytes of `name` are those of `pat`. */
static __always_inline bool words_match(const __u64 *name, const __u64 *pat, const __u64 *mask)
{
	__u64 diff = 0;

	for (int k = 0; k < GLOB_WORDS; k++)
		diff |= (name[k] ^ pat[k]) & mask[k];
	return diff == 0;
}

/* The depth (1 for the direct parent) of the directory a glob of container `slot` is keyed on,
 * when the glob matches the name `name` (`len` bytes) whose parent is `parent`; 0 when none
 * does. The glob's key is left in glob_hit. Global and not inlined, with scalar arguments
 * only (pointers the caller read with bpf_probe_read_kernel), so that the verifier checks it
 * once per program (5.10 accepts no other argument in a global function). */
__noinline int palisade_glob_match(__u32 slot, __u64 parent, __u64 name, __u32 len)
{
	struct dentry *p = (struct dentry *)parent, *up;
	const unsigned char *s = (const unsigned char *)name;
	__u64 head[GLOB_WORDS] = {}, tail[GLOB_WORDS] = {};
	struct glob_key gk = {}, *hit;
	struct glob_rule *g;
	__u32 zero = 0;

	if (!bpf_map_lookup_elem(&glob_slots, &slot))
		return 0;
	if (len > 255)
		return 0;
	/* The name's first and last GLOB_PART bytes. A shorter name reads on past its end, and
	 * its tail from before its start (inside its dentry, where a name that short is kept):
	 * no byte outside the name is compared, as the lengths are checked first. */
	bpf_probe_read_kernel(head, GLOB_PART, s);
	bpf_probe_read_kernel(tail, GLOB_PART, s + len - GLOB_PART);
	gk.slot = slot;
	for (int i = 1; i <= FILE_DEPTH; i++) {
		if (!p)
			return 0;
		gk.dev = BPF_CORE_READ(p, d_sb, s_dev);
		gk.ino = BPF_CORE_READ(p, d_inode, i_ino);
		for (int j = 0; j < GLOBS_PER_DIR; j++) {
			gk.idx = j;
			g = bpf_map_lookup_elem(&deny_glob, &gk);
			if (!g)
				break;
			if (i < g->min_depth ||
			    (i > g->min_depth && !(g->r.flags & FR_RECURSIVE)))
				continue;
			if (g->star ? len < g->head_len + g->tail_len : len != g->head_len)
				continue;
			if (!words_match(head, g->head, g->head_mask) ||
			    !words_match(tail, g->tail, g->tail_mask))
				continue;
			hit = bpf_map_lookup_elem(&glob_hit, &zero);
			if (!hit)
				return 0;
			*hit = gk;
			return i;
		}
		up = BPF_CORE_READ(p, d_parent);
		if (up == p)
			return 0;
		p = up;
	}
	return 0;
}

/* The glob rule of the container in `slot` that the name of dentry `d` (a file, or a name not
 * yet made) matches, with the key and depth of the glob's directory. */
static __always_inline struct file_rule *glob_rule_of(struct dentry *d, __u32 slot,
						      struct file_key *key, __u32 *depth)
{
	struct dentry___glob *n = (struct dentry___glob *)d;
	struct glob_key *hit;
	struct glob_rule *g;
	__u32 zero = 0;
	int i;

	i = palisade_glob_match(slot, (__u64)BPF_CORE_READ(d, d_parent),
				(__u64)BPF_CORE_READ(n, d_name.name), BPF_CORE_READ(n, d_name.len));
	if (i <= 0)
		return 0;
	hit = bpf_map_lookup_elem(&glob_hit, &zero);
	if (!hit)
		return 0;
	g = bpf_map_lookup_elem(&deny_glob, hit);
	if (!g)
		return 0;
	key->dev = hit->dev;
	key->ino = hit->ino;
	*depth = i;
	return &g->r;
}

#endif /* PALISADE_LSM_GLOBS_H */
