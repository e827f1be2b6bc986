/* Refused execs: an execve or execveat the kernel refused with EACCES (landlock's execute
 * right, a file's mode, another LSM) or EPERM (seccomp, BPF-LSM), reported from the syscall
 * hooks (syscalls.h) with the path the process asked for, read from its own memory at the
 * syscall's exit (a refused exec leaves the caller's image, and that memory, in place). A
 * successful exec is reported by sched_process_exec (monitor.bpf.c), and every other result
 * (ENOENT of a PATH search, say) is not reported: the result is tested before anything else.
 * Included by syscalls.h, after report_event. */

/* The results of an exec the kernel refused. */
static __always_inline bool exec_refused(long ret)
{
	return ret == -EACCES || ret == -EPERM;
}

/* The event of a refused execve or execveat (report_event reads the path: execve's first
 * argument, execveat's second, relative to its first when it does not start with '/');
 * nothing for any other result. */
static __always_inline int report_exec_refusal(struct container_info *ci, __u64 cg, __u32 sys,
					       long ret, const __u64 *args)
{
	if (!exec_refused(ret))
		return 0;
	return report_event(ci, cg, sys, ret, args, -1, 0);
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
