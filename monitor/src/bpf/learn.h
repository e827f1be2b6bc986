/* The learning section of monitor.bpf.c: every system call a learning container's processes
 * make, and every capability the kernel checks for them, as a table per cgroup. Small programs
 * attached only while something on the node learns (by the node's first learning container,
 * detached with its last one): a node where nothing learns never runs them, and they return at
 * once for cgroups that do not learn.
 *
 * System calls: one program on the sys_enter tracepoint. It sees every syscall at entry,
 * before seccomp, so a call the filter refuses is seen too, and the runtime's own calls in the
 * container's cgroup (runc init after the watch began, palisade-init) are among them.
 *
 * Capabilities: one program on the capability check, `cap_capable` (every check a capable()
 * or ns_capable() call makes ends there), with the check's result: fexit where BPF trampolines
 * work (any kernel from 5.10), else the `capability:cap_capable` tracepoint where the kernel
 * has it (recent kernels); the loader picks the one the kernel takes, or none, and user space then
 * says capabilities were not recorded. A check granted to the runtime (a task named as runc's
 * init names itself, `runc:[...`, or as palisade-init runs, `palisade-init`: neither has executed
 * the workload's program yet) goes to its own table, `cap_runtime`, not to `cap_granted`: runc's
 * init holds every capability of the container's sets while it sets up the process (set*id,
 * the bounding set's cut need setuid, setgid, setpcap), for its first process and for every CRI
 * exec. A name is the task's to set: a workload naming itself so only hides its own use (its
 * export is then narrower than what it does, never wider).
 *
 * One byte per syscall or capability number rather than one bit: setting a byte is a plain
 * store, safe against another CPU setting its neighbour without the atomic or that 5.10 lacks,
 * and a byte already set is only read, so a hot call does not dirty the cache line again.
 * Included by monitor.bpf.c after its maps and helpers. */

/* Capability numbers a table holds (CAP_LAST_CAP is 40 in 6.x). */
#define LEARN_CAPS 64

/* The table of one learning cgroup (SYS_TABLE entries: every number of x86_64 and arm64). */
struct learn_table {
	__u8 seen[SYS_TABLE];
	/* capabilities checked and granted, and checked and refused, by number */
	__u8 cap_granted[LEARN_CAPS];
	__u8 cap_refused[LEARN_CAPS];
	/* checked and granted to the runtime (runc's init, palisade-init), by number */
	__u8 cap_runtime[LEARN_CAPS];
	/* the holder (ring index) whose container this is: its tables go when it dies */
	__u32 ring;
	__u32 pad;
};

/* Learning cgroups by cgroup v2 id; user space inserts a zeroed table when a container starts
 * learning, reads it at each merge and deletes it at detach. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_CONTAINERS);
	__type(key, __u64);
	__type(value, struct learn_table);
} learn_syscalls SEC(".maps");

struct learn_table _learn_table = {};

SEC("tp_btf/sys_enter")
int BPF_PROG(learn_sys_enter, struct pt_regs *regs, long id)
{
	__u64 cg = bpf_get_current_cgroup_id();
	struct learn_table *t = bpf_map_lookup_elem(&learn_syscalls, &cg);

	if (!t)
		return 0;
#if defined(__TARGET_ARCH_x86)
	/* a 32-bit call's numbers name other calls: not recorded (the hardened filter kills
	 * them, and a learned profile lists the native architecture only) */
	if (regs->cs != USER64_CS)
		return 0;
#endif
	if (id < 0 || id >= SYS_TABLE)
		return 0;
	if (!t->seen[id])
		t->seen[id] = 1;
	return 0;
}

/* Whether the current task carries the runtime's name: runc's init (`runc:[2:INIT]`, the
 * stage that enters the container's cgroup) or palisade-init (the kernel names a task after the
 * file it executes). */
static __always_inline bool learn_runtime_task(void)
{
	char comm[16] = {};

	if (bpf_get_current_comm(comm, sizeof(comm)))
		return false;
	if (comm[0] == 'r' && comm[1] == 'u' && comm[2] == 'n' && comm[3] == 'c' &&
	    comm[4] == ':' && comm[5] == '[')
		return true;
	return comm[0] == 'p' && comm[1] == 'a' && comm[2] == 'l' && comm[3] == 'i' &&
	       comm[4] == 's' && comm[5] == 'a' && comm[6] == 'd' && comm[7] == 'e' &&
	       comm[8] == '-' && comm[9] == 'i' && comm[10] == 'n' && comm[11] == 'i' &&
	       comm[12] == 't' && comm[13] == 0;
}

/* A capability check of the current task: `ret` is 0 when granted. */
static __always_inline int learn_cap(int cap, int ret)
{
	__u64 cg = bpf_get_current_cgroup_id();
	struct learn_table *t = bpf_map_lookup_elem(&learn_syscalls, &cg);
	__u32 nr = (__u32)cap;

	if (!t || nr >= LEARN_CAPS)
		return 0;
	/* the verifier loses the check above once the compiler folds it into a mask test:
	 * bound the index again where it cannot be folded away */
	barrier_var(nr);
	nr &= LEARN_CAPS - 1;
	if (ret == 0 && learn_runtime_task()) {
		if (!t->cap_runtime[nr])
			t->cap_runtime[nr] = 1;
	} else if (ret == 0) {
		if (!t->cap_granted[nr])
			t->cap_granted[nr] = 1;
	} else if (!t->cap_refused[nr]) {
		t->cap_refused[nr] = 1;
	}
	return 0;
}

/* int cap_capable(const struct cred *cred, struct user_namespace *ns, int cap,
 *                 unsigned int opts), 5.10 to this day */
SEC("fexit/cap_capable")
int BPF_PROG(learn_cap_fexit, const void *cred, const void *ns, int cap, unsigned int opts,
	     int ret)
{
	return learn_cap(cap, ret);
}

/* TP_PROTO(const struct cred *cred, struct user_namespace *target_ns,
 *          const struct user_namespace *capable_ns, int cap, int ret) */
SEC("tp_btf/cap_capable")
int BPF_PROG(learn_cap_tp, const void *cred, const void *target_ns, const void *capable_ns,
	     int cap, int ret)
{
	return learn_cap(cap, ret);
}
