/* Refused execs: an execve or execveat the kernel refused with EACCES (landlock's execute
 * right, a file's mode, another LSM) or EPERM (seccomp, BPF-LSM), reported from the syscall
 * hooks (syscalls.h) with the path the process asked for, read from its own memory at the
 * syscall's exit (a refused exec leaves the caller's image, and that memory, in place). A
 * successful exec is reported by sched_process_exec (monitor.bpf.c), and every other result
 * (ENOENT of a PATH search, say) is not reported: the result is tested before anything else.
 * Included by syscalls.h. */

/* The results of an exec the kernel refused. */
static __always_inline bool exec_refused(long ret)
{
	return ret == -EACCES || ret == -EPERM;
}

/* The event of a refused execve (path: its first argument) or execveat (its second, relative
 * to the first when it does not start with '/'); nothing for any other result. */
static __always_inline int report_exec_refusal(struct container_info *ci, __u64 cg, __u32 sys,
					       long ret, const __u64 *args)
{
	struct syscall_event *e;
	void *rb;
	__u64 path = sys == SYS_EXECVE ? args[0] : args[1];

	if (!exec_refused(ret))
		return 0;
	e = reserve(ci, sizeof(*e), &rb);
	if (!e)
		return 0;
	fill_header(&e->h, EV_SYSCALL, ci, cg);
	e->sys = sys;
	e->ret = ret;
	e->addr_len = 0;
	e->flags = 0;
	for (int i = 0; i < 6; i++)
		e->args[i] = args[i];
	e->path[0] = 0;
	if (path)
		bpf_probe_read_user_str(e->path, sizeof(e->path), (void *)path);
	/* a refused attempt is worth the reader's wake-up, as a refused exec deny is */
	submit(ci, rb, e, sizeof(*e), true);
	return 0;
}

/* The fexit program of execve or execveat: the result is tested before the container lookup,
 * so the node's successful execs pay the trampoline and one comparison. Expanded in
 * syscalls.h, after current_syscall and SYSCALL_ENTRY. */
#define FEXIT_EXEC(name, kind)                                                             \
	SEC("fexit/" SYSCALL_ENTRY #name)                                                  \
	int fexit_##name(unsigned long long *ctx)                                          \
	{                                                                                  \
		struct container_info *ci;                                                 \
		__u64 cg, args[6];                                                         \
		long nr, saved, ret = (long)ctx[1];                                        \
                                                                                           \
		if (!exec_refused(ret))                                                    \
			return 0;                                                          \
		ci = current_container(&cg);                                               \
		if (!ci)                                                                   \
			return 0;                                                          \
		current_syscall(args, &nr, &saved);                                        \
		return report_exec_refusal(ci, cg, kind, ret, args);                       \
	}
