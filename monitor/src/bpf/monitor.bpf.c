// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* Node-wide monitor: one copy of these programs serves every watched container on the node.
 * Each hook starts with one hash lookup of the current cgroup v2 id in `containers`; a miss
 * returns at once, so processes outside watched containers cost one lookup and emit nothing. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "events.h"

#define EPERM 1
#define EACCES 13
#define SIGKILL 9
#define O_WRONLY 01
#define O_RDWR 02
#define O_CREAT 0100
#define O_TRUNC 01000
/* x86_64 user code segment selector (__USER_CS) */
#define USER64_CS 0x33

/* A length about to be masked for a helper's size argument: the empty asm makes clang forget
 * the earlier clamp, so it keeps the mask, and keeps the value in a register. Without it clang
 * drops the mask as redundant, and 6.1's verifier, which loses the clamp's bound when the value
 * is spilled to the stack and reloaded, rejects the helper call (`R2 min value is negative`). */
#define keep_in_register(v) asm volatile("" : "+r"(v))

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Set by user space before load: 0 turns every kill and refusal into audit only. */
const volatile __u32 enforce = 1;
/* Set when this kernel lets cgroup sock_addr programs read the current task (fromSource);
 * with 0 the verifier never sees that code, so the object still loads on older kernels. */
const volatile __u32 source_check = 1;
/* Set when the kernel has bpf_get_current_task_btf (5.11) and bpf_task_pt_regs (5.15): the
 * exit-tracepoint program needs them, the fexit ones use them where they load; with 0 those
 * helpers are never verified, so the object still loads on 5.10. */
const volatile __u32 task_btf = 1;
/* The syscall hook user space loaded (kernel.rs SyscallHook: 1 raw sys_exit, 2 exit
 * tracepoints, 3 fexit), pinned with this configuration for the holders that join. */
const volatile __u32 syscall_hook = 0;
/* Watched syscalls by number (enum sys_kind, 0: not watched), filled by user space with the
 * running architecture's numbers before load. */
const volatile __u8 sys_kinds[SYS_TABLE] = {};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_CONTAINERS);
	__type(key, __u64);
	__type(value, struct container_info);
} containers SEC(".maps");

/* Template of the per-shim ring buffers; each shim inserts its own ring at its index. */
struct ring {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, MAX_RINGS);
	__type(key, __u32);
	__array(values, struct ring);
} rings SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct exec_key);
	__type(value, struct deny_value);
} deny_exec SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct net_key);
	__type(value, struct deny_value);
} deny_connect SEC(".maps");

struct path_buf {
	char s[PATH_LEN];
};

/* Last executable of each watched process, so a child's exec event names its parent's binary. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct path_buf);
} procs SEC(".maps");

/* Path scratch per CPU: an open is judged before any ring space is reserved, so the many
 * uninteresting opens never touch the ring (nor wake its reader); the exec hook stores the
 * filename from here, as map updates take their value from map or stack memory on every
 * kernel, not from ring memory. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct path_buf);
} scratch SEC(".maps");

/* Holder table: which process owns which ring index (see the Rust `pins` module). */
struct holder {
	__u32 pid;
	__u32 pad;
	__u64 start_time;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_RINGS);
	__type(key, __u32);
	__type(value, struct holder);
} holders SEC(".maps");

/* Referenced so the skeleton generator emits Rust types for every record user space decodes. */
struct exec_event _exec_event = {};
struct exit_event _exit_event = {};
struct fork_event _fork_event = {};
struct syscall_event _syscall_event = {};
struct holder _holder = {};

static __always_inline struct container_info *current_container(__u64 *cg)
{
	*cg = bpf_get_current_cgroup_id();
	return bpf_map_lookup_elem(&containers, cg);
}

/* The container's ring is looked up once per record and handed on to submit(). */
static __always_inline void *reserve(struct container_info *ci, __u64 size, void **ring)
{
	__u32 idx = ci->ring;
	void *rb = bpf_map_lookup_elem(&rings, &idx);
	void *e;

	*ring = rb;
	if (!rb) {
		__sync_fetch_and_add(&ci->drops, 1);
		return 0;
	}
	e = bpf_ringbuf_reserve(rb, size, 0);
	if (!e)
		__sync_fetch_and_add(&ci->drops, 1);
	return e;
}

/* Waking the reader costs the producer an irq_work and a wake-up, and the reader a context
 * switch. Records wait for the reader's next poll (it polls every 50 ms) unless they are
 * urgent or this record is the one that fills the ring past a quarter: only that one wakes the
 * reader, which then drains everything (waking it again for every record until it gets a CPU
 * would cost the producer a wake-up per event on a busy node). */
static __always_inline void submit(struct container_info *ci, void *rb, void *e, __u64 size,
				   bool urgent)
{
	__u64 flags = BPF_RB_NO_WAKEUP, avail, mark;
	/* what this record adds to the ring: an 8-byte header, the record rounded up to 8 */
	__u64 rec = 8 + ((size + 7) & ~7ULL);

	__sync_fetch_and_add(&ci->events, 1);
	if (urgent || !rb) {
		flags = BPF_RB_FORCE_WAKEUP;
	} else {
		avail = bpf_ringbuf_query(rb, BPF_RB_AVAIL_DATA);
		mark = bpf_ringbuf_query(rb, BPF_RB_RING_SIZE) / 4;
		if (avail >= mark && avail < mark + rec)
			flags = BPF_RB_FORCE_WAKEUP;
	}
	bpf_ringbuf_submit(e, flags);
}

/* fromSource for exec rules: a rule with a source applies only when the parent process runs
 * that executable. */
static __always_inline bool source_matches(struct deny_value *d)
{
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
	struct file *exe;

	if (!d->src_ino)
		return true;
	exe = BPF_CORE_READ(t, real_parent, mm, exe_file);
	return BPF_CORE_READ(exe, f_inode, i_ino) == d->src_ino &&
	       BPF_CORE_READ(exe, f_inode, i_sb, s_dev) == d->src_dev;
}

/* Where the task is a BTF pointer (task_btf), the header's fields are direct loads from it and
 * its credentials: one helper call (the clock) instead of five on every record. */
static __always_inline void fill_header(struct event_header *h, __u32 kind,
					struct container_info *ci, __u64 cg)
{
	h->kind = kind;
	h->slot = ci->slot;
	h->cgroup_id = cg;
	h->ktime = bpf_ktime_get_ns();
	h->pad = 0;
	if (task_btf) {
		struct task_struct *t = bpf_get_current_task_btf();
		const struct cred *c = t->cred;

		h->pid = t->tgid;
		h->tid = t->pid;
		h->ppid = t->real_parent->tgid;
		h->uid = c->uid.val;
		h->gid = c->gid.val;
		/* the kernel keeps the name NUL-padded (__set_task_comm), as bpf_get_current_comm
		 * copies it */
		__builtin_memcpy(h->comm, t->comm, sizeof(h->comm));
	} else {
		struct task_struct *t = (struct task_struct *)bpf_get_current_task();
		__u64 pt = bpf_get_current_pid_tgid();
		__u64 ug = bpf_get_current_uid_gid();

		h->pid = pt >> 32;
		h->tid = (__u32)pt;
		h->ppid = BPF_CORE_READ(t, real_parent, tgid);
		h->uid = (__u32)ug;
		h->gid = ug >> 32;
		bpf_get_current_comm(h->comm, sizeof(h->comm));
	}
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(on_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
	struct container_info *ci;
	struct deny_value *deny;
	struct exec_event *e;
	void *rb;
	struct path_buf *pb, *fname;
	struct exec_key key = {};
	unsigned long start, end;
	__u32 flags = 0, rule = 0, len, ppid, pid, zero = 0;
	const unsigned char *name;
	__u64 cg;

	ci = current_container(&cg);
	if (!ci)
		return 0;

	key.slot = ci->slot;
	key.dev = BPF_CORE_READ(bprm, file, f_inode, i_sb, s_dev);
	key.ino = BPF_CORE_READ(bprm, file, f_inode, i_ino);
	deny = bpf_map_lookup_elem(&deny_exec, &key);
	if (deny && source_matches(deny)) {
		__sync_fetch_and_add(&deny->hits, 1);
		rule = deny->rule;
		/* The signal is pending before the new image returns to user space, so not one
		 * instruction of the forbidden binary runs. */
		if (enforce) {
			bpf_send_signal(SIGKILL);
			flags |= EXEC_KILLED;
		}
	}

	e = reserve(ci, sizeof(*e), &rb);
	if (!e)
		return 0;
	fill_header(&e->h, EV_EXEC, ci, cg);
	e->ino = key.ino;
	e->dev = key.dev;
	e->rule = rule;
	fname = bpf_map_lookup_elem(&scratch, &zero);
	if (!fname) {
		bpf_ringbuf_discard(e, BPF_RB_NO_WAKEUP);
		return 0;
	}
	bpf_probe_read_kernel_str(fname->s, sizeof(fname->s), BPF_CORE_READ(bprm, filename));
	__builtin_memcpy(e->filename, fname->s, sizeof(e->filename));

	ppid = e->h.ppid;
	pb = bpf_map_lookup_elem(&procs, &ppid);
	if (pb) {
		bpf_probe_read_kernel(e->parent, sizeof(e->parent), pb->s);
		flags |= EXEC_PARENT_FROM_EXEC;
	} else {
		name = BPF_CORE_READ(t, real_parent, mm, exe_file, f_path.dentry, d_name.name);
		bpf_probe_read_kernel_str(e->parent, sizeof(e->parent), name);
	}
	e->flags = flags;

	start = BPF_CORE_READ(t, mm, arg_start);
	end = BPF_CORE_READ(t, mm, arg_end);
	len = end > start ? end - start : 0;
	if (len > ARGS_LEN - 1)
		len = ARGS_LEN - 1;
	e->args_len = len;
	/* The mask restates the bound where the verifier can see it; the barrier keeps clang
	 * from dropping it (see keep_in_register). */
	keep_in_register(len);
	bpf_probe_read_user(e->args, len & (ARGS_LEN - 1), (void *)start);

	pid = e->h.pid;
	bpf_map_update_elem(&procs, &pid, fname, BPF_ANY);
	submit(ci, rb, e, sizeof(*e), rule != 0);
	return 0;
}

/* Exec deny through BPF-LSM where the kernel allows it (user space loads this program only
 * after a probe succeeded): the exec fails with EPERM and the caller keeps running. The kill
 * at sched_process_exec stays as the fallback and never sees a refused exec. */
SEC("lsm/bprm_check_security")
int BPF_PROG(lsm_exec, struct linux_binprm *bprm, int ret)
{
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
	struct container_info *ci;
	struct deny_value *deny;
	struct exec_event *e;
	void *rb;
	struct exec_key key = {};
	const unsigned char *name;
	__u64 cg;

	if (ret)
		return ret;
	if (!enforce)
		return 0;
	ci = current_container(&cg);
	if (!ci)
		return 0;
	key.slot = ci->slot;
	key.dev = BPF_CORE_READ(bprm, file, f_inode, i_sb, s_dev);
	key.ino = BPF_CORE_READ(bprm, file, f_inode, i_ino);
	deny = bpf_map_lookup_elem(&deny_exec, &key);
	if (!deny || !source_matches(deny))
		return 0;
	__sync_fetch_and_add(&deny->hits, 1);

	e = reserve(ci, sizeof(*e), &rb);
	if (e) {
		fill_header(&e->h, EV_EXEC, ci, cg);
		e->ino = key.ino;
		e->dev = key.dev;
		e->rule = deny->rule;
		e->flags = EXEC_REFUSED;
		e->args_len = 0;
		e->args[0] = 0;
		bpf_probe_read_kernel_str(e->filename, sizeof(e->filename),
					  BPF_CORE_READ(bprm, filename));
		/* The caller is still its old image: it is the parent of the refused exec. */
		name = BPF_CORE_READ(t, mm, exe_file, f_path.dentry, d_name.name);
		bpf_probe_read_kernel_str(e->parent, sizeof(e->parent), name);
		submit(ci, rb, e, sizeof(*e), true);
	}
	return -EPERM;
}

#include "opens.h"
#include "lsm_files.h"

SEC("tp_btf/sched_process_exit")
int BPF_PROG(on_exit, struct task_struct *p)
{
	struct container_info *ci;
	struct exit_event *e;
	void *rb;
	__u32 pid;
	__u64 cg;

	if (BPF_CORE_READ(p, pid) != BPF_CORE_READ(p, tgid))
		return 0;
	ci = current_container(&cg);
	if (!ci)
		return 0;
	pid = BPF_CORE_READ(p, tgid);
	bpf_map_delete_elem(&procs, &pid);
	e = reserve(ci, sizeof(*e), &rb);
	if (!e)
		return 0;
	fill_header(&e->h, EV_EXIT, ci, cg);
	e->exit_code = BPF_CORE_READ(p, exit_code);
	e->pad = 0;
	submit(ci, rb, e, sizeof(*e), false);
	return 0;
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(on_fork, struct task_struct *parent, struct task_struct *child)
{
	struct container_info *ci;
	struct fork_event *e;
	void *rb;
	__u64 cg;

	/* New threads are not new processes. */
	if (BPF_CORE_READ(child, pid) != BPF_CORE_READ(child, tgid))
		return 0;
	ci = current_container(&cg);
	if (!ci)
		return 0;
	e = reserve(ci, sizeof(*e), &rb);
	if (!e)
		return 0;
	fill_header(&e->h, EV_FORK, ci, cg);
	e->child_pid = BPF_CORE_READ(child, tgid);
	e->pad = 0;
	submit(ci, rb, e, sizeof(*e), false);
	return 0;
}

#include "syscalls.h"
#include "learn.h"

#include "egress.h"

/* cgroup sock_addr hooks: attached per container cgroup by user space, refusing (EPERM)
 * destinations in the container's deny trie, and, for a container with an egress allow-list
 * (egress.h), every destination the list does not name. Port 0 in the trie means any port. */
static __always_inline int sock_check(struct bpf_sock_addr *ctx, bool v6, bool sendmsg)
{
	struct container_info *ci;
	struct deny_value *d;
	__u8 addr[16];
	__u16 port;
	__u64 cg;

	ci = current_container(&cg);
	if (!ci)
		return 1;
	port = (__u16)ctx->user_port;
	peer_addr(ctx, v6, addr);
	if ((ci->flags & CF_EGRESS) && !egress_check(ctx, ci, cg, addr, port, sendmsg))
		return 0;
	d = trie_lookup(ci->slot, port, addr);
	if (!d)
		return 1;
	if (source_check && d->src_ino) {
		struct task_struct *t = (struct task_struct *)bpf_get_current_task();
		struct file *exe = BPF_CORE_READ(t, mm, exe_file);

		if (BPF_CORE_READ(exe, f_inode, i_ino) == d->src_ino &&
		    BPF_CORE_READ(exe, f_inode, i_sb, s_dev) == d->src_dev)
			return 1;
	}
	__sync_fetch_and_add(&d->hits, 1);
	return enforce ? 0 : 1;
}

SEC("cgroup/connect4")
int connect4(struct bpf_sock_addr *ctx)
{
	return sock_check(ctx, false, false);
}

SEC("cgroup/connect6")
int connect6(struct bpf_sock_addr *ctx)
{
	return sock_check(ctx, true, false);
}

SEC("cgroup/sendmsg4")
int sendmsg4(struct bpf_sock_addr *ctx)
{
	return sock_check(ctx, false, true);
}

SEC("cgroup/sendmsg6")
int sendmsg6(struct bpf_sock_addr *ctx)
{
	return sock_check(ctx, true, true);
}

/* Socket creation allow-lists (cgroup/sock_create), attached per container cgroup by user space
 * when the container has socket rules. The hook runs in inet_create/inet6_create for sockets
 * made by user space, so it sees AF_INET and AF_INET6 only (AF_PACKET stays with seccomp). */
#define AF_INET 2
#define AF_INET6 10
#define SOCK_STREAM 1
#define SOCK_DGRAM 2
#define SOCK_RAW 3
#define IPPROTO_ICMP 1
#define IPPROTO_ICMPV6 58

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4 * MAX_CONTAINERS);
	__type(key, struct sock_key);
	__type(value, struct sock_rule);
} sock_rules SEC(".maps");

struct sock_event _sock_event = {};

/* Returns 1 to let the socket be created, 0 to refuse it (EPERM). */
static __always_inline int sock_class_check(struct bpf_sock *ctx, struct container_info *ci,
					    __u64 cg, __u32 class)
{
	struct sock_key key = { .slot = ci->slot, .class = class };
	struct sock_rule *r;
	struct sock_event *e;
	void *rb;
	__u32 dev = 0, refuse, listed = 0;
	__u64 ino = 0, pt, ug;

	r = bpf_map_lookup_elem(&sock_rules, &key);
	if (!r)
		return 1;
	/* User space installs lists of binaries only when source_check is set: without it the
	 * executable cannot be read here and every process counts as unlisted. */
	if (source_check) {
		struct task_struct *t = (struct task_struct *)bpf_get_current_task();
		struct file *exe = BPF_CORE_READ(t, mm, exe_file);

		ino = BPF_CORE_READ(exe, f_inode, i_ino);
		dev = BPF_CORE_READ(exe, f_inode, i_sb, s_dev);
		for (int i = 0; i < SOCK_MAX_SOURCES; i++) {
			if (i < r->count && r->allow[i].ino == ino && r->allow[i].dev == dev)
				listed = 1;
		}
	}
	/* An allow-list lets its binaries through, a block list every other one. */
	if (listed != !!(r->flags & SR_LISTED))
		return 1;
	__sync_fetch_and_add(&r->hits, 1);
	refuse = enforce && !(r->flags & SR_AUDIT);

	e = reserve(ci, sizeof(*e), &rb);
	if (e) {
		pt = bpf_get_current_pid_tgid();
		ug = bpf_get_current_uid_gid();
		e->h.kind = EV_SOCK;
		e->h.slot = ci->slot;
		e->h.cgroup_id = cg;
		e->h.ktime = bpf_ktime_get_ns();
		e->h.pid = pt >> 32;
		e->h.tid = (__u32)pt;
		e->h.ppid = 0;
		if (source_check) {
			struct task_struct *t = (struct task_struct *)bpf_get_current_task();

			e->h.ppid = BPF_CORE_READ(t, real_parent, tgid);
		}
		e->h.uid = (__u32)ug;
		e->h.gid = ug >> 32;
		e->h.pad = 0;
		bpf_get_current_comm(e->h.comm, sizeof(e->h.comm));
		e->family = ctx->family;
		e->type = ctx->type;
		e->protocol = ctx->protocol;
		e->class = class;
		e->rule = r->rule;
		e->flags = refuse ? SOCK_REFUSED : 0;
		e->dev = dev;
		e->pad = 0;
		e->ino = ino;
		submit(ci, rb, e, sizeof(*e), true);
	}
	return refuse ? 0 : 1;
}

SEC("cgroup/sock_create")
int sock_create(struct bpf_sock *ctx)
{
	struct container_info *ci;
	__u32 family, type, protocol, class, also = 0;
	bool icmp;
	__u64 cg;

	ci = current_container(&cg);
	if (!ci)
		return 1;
	family = ctx->family;
	type = ctx->type;
	protocol = ctx->protocol;
	if (family != AF_INET && family != AF_INET6)
		return 1;
	icmp = (family == AF_INET && protocol == IPPROTO_ICMP) ||
	       (family == AF_INET6 && protocol == IPPROTO_ICMPV6);
	if (type == SOCK_STREAM) {
		class = SC_TCP;
	} else if (type == SOCK_DGRAM) {
		class = icmp ? SC_ICMP : SC_UDP;
	} else if (type == SOCK_RAW) {
		/* A raw ICMP socket is both raw and ICMP: either class may refuse it. */
		class = SC_RAW;
		if (icmp)
			also = SC_ICMP;
	} else {
		return 1;
	}
	if (!sock_class_check(ctx, ci, cg, class))
		return 0;
	if (also && !sock_class_check(ctx, ci, cg, also))
		return 0;
	return 1;
}
