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

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Set by user space before load: 0 turns every kill and refusal into audit only. */
const volatile __u32 enforce = 1;
/* Set when this kernel lets cgroup sock_addr programs read the current task (fromSource);
 * with 0 the verifier never sees that code, so the object still loads on older kernels. */
const volatile __u32 source_check = 1;

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

struct inflight {
	__u32 sys;
	__u32 pad;
	__u64 args[6];
};

/* Arguments saved at syscall entry for the exit hook, keyed by thread id. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct inflight);
} inflight SEC(".maps");

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

/* Syscall tracepoint records: fixed ABI of the syscalls event class, not relocated. */
struct sys_enter_ctx {
	__u64 common;
	__s64 nr;
	__u64 args[6];
};

struct sys_exit_ctx {
	__u64 common;
	__s64 nr;
	__s64 ret;
};

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

static __always_inline void *reserve(struct container_info *ci, __u64 size)
{
	__u32 idx = ci->ring;
	void *rb = bpf_map_lookup_elem(&rings, &idx);
	void *e;

	if (!rb) {
		__sync_fetch_and_add(&ci->drops, 1);
		return 0;
	}
	e = bpf_ringbuf_reserve(rb, size, 0);
	if (!e)
		__sync_fetch_and_add(&ci->drops, 1);
	return e;
}

/* Waking the reader for every record costs a context switch per event. Records wait for the
 * reader's next poll (it polls every 50 ms) unless they are urgent or the ring is a quarter
 * full. */
static __always_inline void submit(struct container_info *ci, void *e, bool urgent)
{
	__u32 idx = ci->ring;
	void *rb = bpf_map_lookup_elem(&rings, &idx);
	__u64 flags = BPF_RB_NO_WAKEUP;

	__sync_fetch_and_add(&ci->events, 1);
	if (urgent || !rb ||
	    bpf_ringbuf_query(rb, BPF_RB_AVAIL_DATA) >= bpf_ringbuf_query(rb, BPF_RB_RING_SIZE) / 4)
		flags = BPF_RB_FORCE_WAKEUP;
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

static __always_inline void fill_header(struct event_header *h, __u32 kind,
					struct container_info *ci, __u64 cg)
{
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
	__u64 pt = bpf_get_current_pid_tgid();
	__u64 ug = bpf_get_current_uid_gid();

	h->kind = kind;
	h->slot = ci->slot;
	h->cgroup_id = cg;
	h->ktime = bpf_ktime_get_ns();
	h->pid = pt >> 32;
	h->tid = (__u32)pt;
	h->ppid = BPF_CORE_READ(t, real_parent, tgid);
	h->uid = (__u32)ug;
	h->gid = ug >> 32;
	h->pad = 0;
	bpf_get_current_comm(h->comm, sizeof(h->comm));
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(on_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
	struct container_info *ci;
	struct deny_value *deny;
	struct exec_event *e;
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

	e = reserve(ci, sizeof(*e));
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
	/* The mask restates the bound where the verifier can see it. */
	bpf_probe_read_user(e->args, len & (ARGS_LEN - 1), (void *)start);

	pid = e->h.pid;
	bpf_map_update_elem(&procs, &pid, fname, BPF_ANY);
	submit(ci, e, rule != 0);
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

	e = reserve(ci, sizeof(*e));
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
		submit(ci, e, true);
	}
	return -EPERM;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(on_exit, struct task_struct *p)
{
	struct container_info *ci;
	struct exit_event *e;
	__u32 pid;
	__u64 cg;

	if (BPF_CORE_READ(p, pid) != BPF_CORE_READ(p, tgid))
		return 0;
	ci = current_container(&cg);
	if (!ci)
		return 0;
	pid = BPF_CORE_READ(p, tgid);
	bpf_map_delete_elem(&procs, &pid);
	e = reserve(ci, sizeof(*e));
	if (!e)
		return 0;
	fill_header(&e->h, EV_EXIT, ci, cg);
	e->exit_code = BPF_CORE_READ(p, exit_code);
	e->pad = 0;
	submit(ci, e, false);
	return 0;
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(on_fork, struct task_struct *parent, struct task_struct *child)
{
	struct container_info *ci;
	struct fork_event *e;
	__u64 cg;

	/* New threads are not new processes. */
	if (BPF_CORE_READ(child, pid) != BPF_CORE_READ(child, tgid))
		return 0;
	ci = current_container(&cg);
	if (!ci)
		return 0;
	e = reserve(ci, sizeof(*e));
	if (!e)
		return 0;
	fill_header(&e->h, EV_FORK, ci, cg);
	e->child_pid = BPF_CORE_READ(child, tgid);
	e->pad = 0;
	submit(ci, e, false);
	return 0;
}

/* Only the syscall's own arguments may be read: the kernel refuses to attach a program that
 * reads past the end of the tracepoint's record. */
static __always_inline int sys_enter(struct sys_enter_ctx *ctx, __u32 sys, int nargs)
{
	struct inflight in = {};
	__u32 tid;
	__u64 cg;

	if (!current_container(&cg))
		return 0;
	in.sys = sys;
	if (nargs > 0)
		in.args[0] = ctx->args[0];
	if (nargs > 1)
		in.args[1] = ctx->args[1];
	if (nargs > 2)
		in.args[2] = ctx->args[2];
	if (nargs > 3)
		in.args[3] = ctx->args[3];
	if (nargs > 4)
		in.args[4] = ctx->args[4];
	if (nargs > 5)
		in.args[5] = ctx->args[5];
	tid = (__u32)bpf_get_current_pid_tgid();
	bpf_map_update_elem(&inflight, &tid, &in, BPF_ANY);
	return 0;
}

static __always_inline bool has_prefix(const char *s, const char *prefix, int n)
{
	for (int i = 0; i < n; i++)
		if (s[i] != prefix[i])
			return false;
	return true;
}


/* Without CF_ALL_OPENS only the opens a detection can use are reported: writes, denials and
 * the Kubernetes secret mounts. */
static __always_inline bool open_is_interesting(__u64 flags, __s64 ret, const char *path)
{
	if (flags & (O_WRONLY | O_RDWR | O_CREAT | O_TRUNC))
		return true;
	if (ret == -EACCES || ret == -EPERM)
		return true;
	if (has_prefix(path, "/var/run/secrets/", 17))
		return true;
	if (has_prefix(path, "/run/secrets/", 13))
		return true;
	return false;
}

static __always_inline void read_sockaddr(struct syscall_event *e, __u64 ptr, __u64 len)
{
	if (!ptr)
		return;
	if (len > SOCKADDR_LEN)
		len = SOCKADDR_LEN;
	e->addr_len = len;
	bpf_probe_read_user(e->addr, len & 0x1f, (void *)ptr);
}

static __always_inline int sys_exit(struct sys_exit_ctx *ctx, __u32 sys)
{
	struct container_info *ci;
	struct syscall_event *e;
	struct inflight *saved;
	bool had_entry = false;
	struct path_buf *pb = 0;
	struct inflight in;
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	__u32 zero = 0;
	__u64 cg;
	int alen = 0;

	saved = bpf_map_lookup_elem(&inflight, &tid);
	if (saved) {
		in = *saved;
		had_entry = true;
		bpf_map_delete_elem(&inflight, &tid);
	} else if (ctx->ret == -EPERM || ctx->ret == -EACCES) {
		/* seccomp refused it before sys_enter ran: no arguments, but the denial is reported */
		__builtin_memset(&in, 0, sizeof(in));
		in.sys = sys;
	} else {
		return 0;
	}
	ci = current_container(&cg);
	if (!ci)
		return 0;
	if ((in.sys == SYS_OPENAT || in.sys == SYS_MOUNT) && had_entry) {
		pb = bpf_map_lookup_elem(&scratch, &zero);
		if (!pb)
			return 0;
		bpf_probe_read_user_str(pb->s, sizeof(pb->s), (void *)in.args[1]);
		if (in.sys == SYS_OPENAT && !(ci->flags & CF_ALL_OPENS) &&
		    !open_is_interesting(in.args[2], ctx->ret, pb->s))
			return 0;
	}

	e = reserve(ci, sizeof(*e));
	if (!e)
		return 0;
	fill_header(&e->h, EV_SYSCALL, ci, cg);
	e->sys = in.sys;
	e->ret = ctx->ret;
	e->addr_len = 0;
	e->pad = 0;
	for (int i = 0; i < 6; i++)
		e->args[i] = in.args[i];
	if (pb)
		__builtin_memcpy(e->path, pb->s, sizeof(e->path));
	else
		e->path[0] = 0;

	switch (in.sys) {
	case SYS_CONNECT:
	case SYS_BIND:
		read_sockaddr(e, in.args[1], in.args[2]);
		break;
	case SYS_ACCEPT:
	case SYS_ACCEPT4:
		if (e->ret >= 0 && in.args[1] && in.args[2]) {
			bpf_probe_read_user(&alen, sizeof(alen), (void *)in.args[2]);
			read_sockaddr(e, in.args[1], (__u64)(__u32)alen);
		}
		break;
	}
	submit(ci, e, false);
	return 0;
}

#define SYSCALL_PAIR(name, kind, nargs)                                       \
	SEC("tracepoint/syscalls/sys_enter_" #name)                           \
	int enter_##name(struct sys_enter_ctx *ctx) { return sys_enter(ctx, kind, nargs); } \
	SEC("tracepoint/syscalls/sys_exit_" #name)                            \
	int exit_##name(struct sys_exit_ctx *ctx) { return sys_exit(ctx, kind); }

SYSCALL_PAIR(openat, SYS_OPENAT, 4)
SYSCALL_PAIR(connect, SYS_CONNECT, 3)
SYSCALL_PAIR(bind, SYS_BIND, 3)
SYSCALL_PAIR(listen, SYS_LISTEN, 2)
SYSCALL_PAIR(accept, SYS_ACCEPT, 3)
SYSCALL_PAIR(accept4, SYS_ACCEPT4, 4)
SYSCALL_PAIR(socket, SYS_SOCKET, 3)
SYSCALL_PAIR(setuid, SYS_SETUID, 1)
SYSCALL_PAIR(setgid, SYS_SETGID, 1)
SYSCALL_PAIR(setreuid, SYS_SETREUID, 2)
SYSCALL_PAIR(setregid, SYS_SETREGID, 2)
SYSCALL_PAIR(setresuid, SYS_SETRESUID, 3)
SYSCALL_PAIR(setresgid, SYS_SETRESGID, 3)
SYSCALL_PAIR(capset, SYS_CAPSET, 2)
SYSCALL_PAIR(setns, SYS_SETNS, 2)
SYSCALL_PAIR(unshare, SYS_UNSHARE, 1)
SYSCALL_PAIR(ptrace, SYS_PTRACE, 4)
SYSCALL_PAIR(mount, SYS_MOUNT, 5)
SYSCALL_PAIR(init_module, SYS_INIT_MODULE, 3)
SYSCALL_PAIR(finit_module, SYS_FINIT_MODULE, 3)
SYSCALL_PAIR(bpf, SYS_BPF, 3)

/* cgroup sock_addr hooks: attached per container cgroup by user space, refusing (EPERM)
 * destinations in the container's deny trie. Port 0 in the trie means any port. */
static __always_inline int sock_check(struct bpf_sock_addr *ctx, bool v6)
{
	struct container_info *ci;
	struct deny_value *d;
	struct net_key key = {};
	__u16 port;
	__u32 a;
	__u64 cg;

	ci = current_container(&cg);
	if (!ci)
		return 1;
	port = (__u16)ctx->user_port;
	__builtin_memcpy(&key.data[0], &ci->slot, 4);
	__builtin_memcpy(&key.data[4], &port, 2);
	if (v6) {
		a = ctx->user_ip6[0];
		__builtin_memcpy(&key.data[6], &a, 4);
		a = ctx->user_ip6[1];
		__builtin_memcpy(&key.data[10], &a, 4);
		a = ctx->user_ip6[2];
		__builtin_memcpy(&key.data[14], &a, 4);
		a = ctx->user_ip6[3];
		__builtin_memcpy(&key.data[18], &a, 4);
	} else {
		key.data[16] = 0xff;
		key.data[17] = 0xff;
		a = ctx->user_ip4;
		__builtin_memcpy(&key.data[18], &a, 4);
	}
	key.prefixlen = 22 * 8;
	d = bpf_map_lookup_elem(&deny_connect, &key);
	if (!d) {
		key.data[4] = 0;
		key.data[5] = 0;
		d = bpf_map_lookup_elem(&deny_connect, &key);
	}
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
	return sock_check(ctx, false);
}

SEC("cgroup/connect6")
int connect6(struct bpf_sock_addr *ctx)
{
	return sock_check(ctx, true);
}

SEC("cgroup/sendmsg4")
int sendmsg4(struct bpf_sock_addr *ctx)
{
	return sock_check(ctx, false);
}

SEC("cgroup/sendmsg6")
int sendmsg6(struct bpf_sock_addr *ctx)
{
	return sock_check(ctx, true);
}
