/* File deny rules through BPF-LSM (file_open): a container's file Block rules, keyed on the
 * device and inode of the file or directory each rule names, resolved by user space at
 * registration (so every spelling of a path, `/var/run/x` and `/run/x` through a symlink
 * included, is one key). Loaded only where BPF-LSM is in force, with the exec LSM program.
 * Included by monitor.bpf.c once, after its maps, reserve(), submit() and fill_header(). */
#ifndef PALISADE_LSM_FILES_H
#define PALISADE_LSM_FILES_H

#define EV_FILE 6

/* file_rule.flags */
#define FR_WRITE_ONLY 1u /* readOnly: reads pass, opens for writing are refused */
#define FR_OWNER_ONLY 2u /* refused only to callers whose fsuid does not own the file */
#define FR_DIR 4u /* the key is a directory: the files directly in it are covered */
#define FR_RECURSIVE 8u /* with FR_DIR: everything below it too */

/* file_event.flags */
#define FILE_REFUSED 1u

/* file_event.op: what was refused (the ops other than an open: lsm_file_ops.h) */
#define FOP_OPEN 0u
#define FOP_UNLINK 1u
#define FOP_RMDIR 2u
#define FOP_RENAME 3u
#define FOP_LINK 4u
#define FOP_CREATE 5u
#define FOP_MKDIR 6u
#define FOP_MKNOD 7u
#define FOP_SYMLINK 8u
#define FOP_SETATTR 9u /* chmod, chown, truncate, utimes */

/* How many parents of an opened file are looked up for a directory rule. */
#define FILE_DEPTH 16

#define FMODE_WRITE 0x2

struct file_key {
	__u32 slot;
	__u32 dev;
	__u64 ino;
};

/* src_ino/src_dev: fromSource, the rule applies only to processes running that executable
 * (zero: to every process). */
struct file_rule {
	__u32 rule;
	__u32 flags;
	__u32 src_dev;
	__u32 pad;
	__u64 src_ino;
	__u64 hits;
};

struct file_event {
	struct event_header h;
	__u64 ino;
	__u32 dev;
	__u32 rule;
	__u32 flags;
	/* how many parents up the matched directory is (0: the rule names the file itself) */
	__u32 depth;
	__u32 mode;
	__u32 owner;
	/* FOP_*: an open, or a change of the file's name, contents or attributes */
	__u32 op;
	__u32 pad;
	char name[PATH_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct file_key);
	__type(value, struct file_rule);
} deny_file SEC(".maps");

struct file_event _file_event = {};
struct file_rule _file_rule = {};
struct file_key _file_key = {};

/* The rule covering dentry `d` (whose own inode is `self`, 0 for a name not yet created): one
 * on the file itself, else a directory rule on one of its parents within its filesystem (the
 * direct parent, or further up when recursive). */
static __always_inline struct file_rule *dentry_rule(struct dentry *d, struct inode *self,
						     __u32 slot, struct file_key *key,
						     __u32 *depth)
{
	struct dentry *p;
	struct file_rule *r;

	key->slot = slot;
	*depth = 0;
	if (self) {
		key->dev = BPF_CORE_READ(self, i_sb, s_dev);
		key->ino = BPF_CORE_READ(self, i_ino);
		r = bpf_map_lookup_elem(&deny_file, key);
		if (r)
			return r;
	}
	for (int i = 1; i <= FILE_DEPTH; i++) {
		p = BPF_CORE_READ(d, d_parent);
		if (!p || p == d)
			return 0;
		key->dev = BPF_CORE_READ(p, d_sb, s_dev);
		key->ino = BPF_CORE_READ(p, d_inode, i_ino);
		r = bpf_map_lookup_elem(&deny_file, key);
		if (r && (r->flags & FR_DIR) && (i == 1 || (r->flags & FR_RECURSIVE))) {
			*depth = i;
			return r;
		}
		d = p;
	}
	return 0;
}

/* The rule covering the opened file. */
static __always_inline struct file_rule *file_rule_of(struct file *file, __u32 slot,
						      struct file_key *key, __u32 *depth)
{
	return dentry_rule(BPF_CORE_READ(file, f_path.dentry), BPF_CORE_READ(file, f_inode), slot,
			   key, depth);
}

#include "lsm_globs.h"

/* fromSource and ownerOnly: whether the current task is one the rule applies to, for a file
 * owned by `owner`. */
static __always_inline bool file_rule_holds(struct file_rule *r, __u32 owner)
{
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();

	if ((r->flags & FR_OWNER_ONLY) && BPF_CORE_READ(t, cred, fsuid.val) == owner)
		return false;
	if (r->src_ino) {
		struct file *exe = BPF_CORE_READ(t, mm, exe_file);

		if (BPF_CORE_READ(exe, f_inode, i_ino) != r->src_ino ||
		    BPF_CORE_READ(exe, f_inode, i_sb, s_dev) != r->src_dev)
			return false;
	}
	return true;
}

/* Whether the rule's conditions hold for this open by the current task. */
static __always_inline bool file_rule_applies(struct file_rule *r, struct file *file,
					      __u32 *owner)
{
	*owner = BPF_CORE_READ(file, f_inode, i_uid.val);
	if ((r->flags & FR_WRITE_ONLY) && !(BPF_CORE_READ(file, f_mode) & FMODE_WRITE))
		return false;
	return file_rule_holds(r, *owner);
}

/* A file rule's refusal of `op` on the name `name` by the current task: counted on the rule,
 * reported as a file event (key and depth: what the rule is keyed on, and how many parents up
 * it is), and -EACCES (in audit mode, reported only: 0). */
static __always_inline int file_refusal(struct container_info *ci, __u64 cg, struct file_rule *r,
					struct file_key *key, __u32 depth, __u32 mode, __u32 owner,
					__u32 op, const unsigned char *name)
{
	struct file_event *e;
	void *rb;

	__sync_fetch_and_add(&r->hits, 1);
	e = reserve(ci, sizeof(*e), &rb);
	if (e) {
		fill_header(&e->h, EV_FILE, ci, cg);
		e->ino = key->ino;
		e->dev = key->dev;
		e->rule = r->rule;
		e->flags = enforce ? FILE_REFUSED : 0;
		e->depth = depth;
		e->mode = mode;
		e->owner = owner;
		e->op = op;
		e->pad = 0;
		bpf_probe_read_kernel_str(e->name, sizeof(e->name), name);
		submit(ci, rb, e, sizeof(*e), true);
	}
	return enforce ? -EACCES : 0;
}

/* File Block rules: the open fails with EACCES and is reported (in audit mode, reported only).
 * Every open of a watched container that reaches it also leaves its note for the openat
 * report (opens.h). */
SEC("lsm/file_open")
int BPF_PROG(lsm_file_open, struct file *file, int ret)
{
	struct container_info *ci;
	struct file_rule *r;
	struct file_key key = {};
	__u32 depth, owner = 0;
	__u64 cg;

	if (ret)
		return ret;
	ci = current_container(&cg);
	if (!ci)
		return 0;
	note_open(ci, file);
	if (!(ci->flags & CF_FILE_RULES))
		return 0;
	r = file_rule_of(file, ci->slot, &key, &depth);
	if (!r)
		r = glob_rule_of(BPF_CORE_READ(file, f_path.dentry), ci->slot, &key, &depth);
	if (!r || !file_rule_applies(r, file, &owner))
		return 0;
	return file_refusal(ci, cg, r, &key, depth, BPF_CORE_READ(file, f_mode), owner, FOP_OPEN,
			    BPF_CORE_READ(file, f_path.dentry, d_name.name));
}

#include "lsm_file_ops.h"

#endif /* PALISADE_LSM_FILES_H */
