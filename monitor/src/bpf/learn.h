/* The learning section of monitor.bpf.c: every system call a learning container's processes
 * make, as a table of seen syscall numbers per cgroup. One small program on the sys_enter
 * tracepoint, attached by a holder only while it has a learning container (and detached with
 * its last one): a node where nothing learns never runs it. It sees every syscall at entry,
 * before seccomp, so a call the filter refuses is seen too, and the runtime's own calls in the
 * container's cgroup (runc init after the watch began, palisade-init) are among them.
 *
 * One byte per syscall number rather than one bit: setting a byte is a plain store, safe
 * against another CPU setting its neighbour without the atomic or that 5.10 lacks, and a byte
 * already set is only read, so a hot syscall does not dirty the cache line again. Included by
 * monitor.bpf.c after its maps and helpers. */

/* The table of one learning cgroup (SYS_TABLE entries: every number of x86_64 and arm64). */
struct learn_table {
	__u8 seen[SYS_TABLE];
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
