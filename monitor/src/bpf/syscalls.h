/* The syscall section of monitor.bpf.c: one report per watched syscall, from its arguments (the
 * registers it entered with) and its result, by one of three hooks user space chooses per
 * kernel (monitor/src/set/load.rs):
 * - fexit programs on each watched syscall's own entry point (`__x64_sys_<name>`), plus one on
 *   `__secure_computing` for the calls seccomp refused before they ran: BPF trampolines, so
 *   no syscall tracepoint is attached and other syscalls, and other processes' unwatched
 *   syscalls, pay nothing;
 * - one program on the raw sys_exit tracepoint, where the kernel refuses trampolines;
 * - one program on each watched syscall's exit tracepoint (asked for by name only).
 * Every one of them ends in report_syscall(), so the events, and so the detections, are the
 * same whichever runs. Included by monitor.bpf.c after its maps and helpers. */

/* Record of the syscalls:sys_exit_* tracepoints: fixed ABI of the event class, not relocated. */
struct sys_exit_ctx {
	__u64 common;
	__s32 nr;
	__u32 pad; /* not zeroed by the kernel */
	__s64 ret;
};

/* The arguments, from the registers the syscall entered with (the ABI preserves them across the
 * syscall; the tracepoint runs before they are restored to user space). */
#if defined(__TARGET_ARCH_x86)
static __always_inline void syscall_args(struct pt_regs *regs, __u64 *a)
{
	a[0] = regs->di;
	a[1] = regs->si;
	a[2] = regs->dx;
	a[3] = regs->r10;
	a[4] = regs->r8;
	a[5] = regs->r9;
}
#elif defined(__TARGET_ARCH_arm64)
/* x0 holds the return value by now; the first argument is kept in orig_x0. */
static __always_inline void syscall_args(struct pt_regs *regs, __u64 *a)
{
	a[0] = regs->orig_x0;
	a[1] = regs->regs[1];
	a[2] = regs->regs[2];
	a[3] = regs->regs[3];
	a[4] = regs->regs[4];
	a[5] = regs->regs[5];
}
#else
#error "syscall arguments are read from pt_regs on x86_64 and arm64 only"
#endif

/* The syscall number a task entered with, or -1 for a 32-bit syscall on x86_64, whose numbers
 * mean other calls (the per-syscall tracepoints and the __x64_sys_ entry points skip those). */
static __always_inline long syscall_nr(struct pt_regs *regs)
{
#if defined(__TARGET_ARCH_x86)
	if (regs->cs != USER64_CS)
		return -1;
	return regs->orig_ax;
#else
	return regs->syscallno;
#endif
}

/* The result a syscall returns, as the saved registers hold it (for a call seccomp skipped). */
static __always_inline long syscall_ret(struct pt_regs *regs)
{
#if defined(__TARGET_ARCH_x86)
	return regs->ax;
#else
	return regs->regs[0];
#endif
}

#include "opens.h"

/* Without CF_ALL_OPENS only the opens a detection can use are reported: writes, denials and
 * reads of secrets and credential files. Decided before the path is read: a read of an ordinary file, the bulk of
 * all opens, costs no copy from user memory. */
static __always_inline bool open_is_interesting(__u64 flags, __s64 ret, bool secret)
{
	if (flags & (O_WRONLY | O_RDWR | O_CREAT | O_TRUNC))
		return true;
	if (ret == -EACCES || ret == -EPERM)
		return true;
	return secret;
}

static __always_inline void read_sockaddr(struct syscall_event *e, __u64 ptr, __u64 len)
{
	if (!ptr)
		return;
	if (len > SOCKADDR_LEN)
		len = SOCKADDR_LEN;
	e->addr_len = len;
	keep_in_register(len);
	bpf_probe_read_user(e->addr, len & 0x1f, (void *)ptr);
}

/* The event of one watched syscall, once its container is known. For an open, `noted` is the
 * flags its file_open note gave (opens.h), -1 without one, and `f` the file behind the
 * descriptor when the caller already has it. */
static __always_inline int report_event(struct container_info *ci, __u64 cg, __u32 sys,
					long ret, const __u64 *args, long noted, struct file *f)
{
	struct syscall_event *e;
	void *rb;
	struct path_buf *pb = 0;
	__u32 zero = 0;
	int alen = 0;
	__u32 oflags = 0;

	if (sys == SYS_OPENAT) {
		bool write = args[2] & (O_WRONLY | O_RDWR | O_CREAT | O_TRUNC);
		bool secrets = ci->secrets[0].dev != 0;
		bool creds = ci->flags & CF_CREDENTIALS;

		if (noted >= 0) {
			/* file_open judged this file already (and f is set) */
			oflags = noted & (SE_SECRET | SE_CREDENTIAL);
		} else {
			/* the opened file is looked up only when a test needs it: a read in a
			 * container without secret mounts or credential files costs nothing more */
			if (!f && ret >= 0 && (secrets || creds || write))
				f = fd_file(ret);
			if (f && secrets && on_secret_mount(ci, f))
				oflags |= SE_SECRET;
			if (f && creds && credential_file(ci, f))
				oflags |= SE_CREDENTIAL;
		}
		if (!(ci->flags & CF_ALL_OPENS) &&
		    !open_is_interesting(args[2], ret, oflags & (SE_SECRET | SE_CREDENTIAL)))
			return 0;
		if (f && write && below_system_dir((struct task_struct *)bpf_get_current_task(), f))
			oflags |= SE_SYSTEM_DIR;
	}
	if (sys == SYS_OPENAT || sys == SYS_MOUNT || sys == SYS_EXECVE || sys == SYS_EXECVEAT) {
		pb = bpf_map_lookup_elem(&scratch, &zero);
		if (!pb)
			return 0;
		/* execve's path is its first argument; the others' their second */
		bpf_probe_read_user_str(pb->s, sizeof(pb->s),
					(void *)args[sys == SYS_EXECVE ? 0 : 1]);
	}

	e = reserve(ci, sizeof(*e), &rb);
	if (!e)
		return 0;
	fill_header(&e->h, EV_SYSCALL, ci, cg);
	e->sys = sys;
	e->ret = ret;
	e->addr_len = 0;
	e->flags = oflags;
	for (int i = 0; i < 6; i++)
		e->args[i] = args[i];
	if (pb)
		__builtin_memcpy(e->path, pb->s, sizeof(e->path));
	else
		e->path[0] = 0;

	switch (sys) {
	case SYS_CONNECT:
	case SYS_BIND:
		read_sockaddr(e, args[1], args[2]);
		break;
	case SYS_ACCEPT:
	case SYS_ACCEPT4:
		if (e->ret >= 0 && args[1] && args[2]) {
			bpf_probe_read_user(&alen, sizeof(alen), (void *)args[2]);
			read_sockaddr(e, args[1], (__u64)(__u32)alen);
		}
		break;
	}
	submit(ci, rb, e, sizeof(*e), false);
	return 0;
}

#include "execs.h"

/* The event of one watched syscall other than an open judged at file_open. */
static __always_inline int report_syscall(struct container_info *ci, __u64 cg, __u32 sys,
					  long ret, const __u64 *args)
{
	if (sys == SYS_EXECVE || sys == SYS_EXECVEAT)
		return report_exec_refusal(ci, cg, sys, ret, args);
	return report_event(ci, cg, sys, ret, args, -1, 0);
}

/* The watched kind of syscall `nr` (into *sys) and the container of the current process, when
 * both exist: the one lookup every syscall program makes before anything else. The registers
 * are left to the caller, so the raw variant never touches bpf_task_pt_regs. */
static __always_inline struct container_info *watched_syscall(long nr, __u32 *sys, __u64 *cg)
{
	if (nr < 0 || nr >= SYS_TABLE)
		return 0;
	*sys = sys_kinds[nr];
	if (!*sys)
		return 0;
	return current_container(cg);
}

/* One program, attached by user space to the sys_exit tracepoint of every watched syscall (the
 * kernel only runs it for those: other syscalls pay nothing), and verified once. Everything
 * is done on the way out, from the saved registers: no entry hook, no per-thread map, and a
 * syscall seccomp refused before it ran (no entry tracepoint) reports its arguments too.
 * Needs 5.15 (bpf_task_pt_regs, and links of tracepoint programs that can be pinned). */
SEC("tracepoint")
int on_sys_exit(struct sys_exit_ctx *ctx)
{
	struct container_info *ci;
	__u64 cg, args[6];
	__u32 sys;

	ci = watched_syscall(ctx->nr, &sys, &cg);
	if (!ci)
		return 0;
	syscall_args((struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf()), args);
	return report_syscall(ci, cg, sys, ctx->ret, args);
}

/* The same events for kernels before 5.15, loaded instead of on_sys_exit: the raw sys_exit
 * tracepoint hands over the registers itself, and its link can be pinned (a per-syscall
 * tracepoint's cannot before 5.15). The price: it runs at the exit of every syscall on the
 * node, watched or not, for one table lookup. */
SEC("tp_btf/sys_exit")
int BPF_PROG(on_sys_exit_raw, struct pt_regs *regs, long ret)
{
	struct container_info *ci;
	__u64 cg, args[6];
	__u32 sys;

	ci = watched_syscall(syscall_nr(regs), &sys, &cg);
	if (!ci)
		return 0;
	syscall_args(regs, args);
	return report_syscall(ci, cg, sys, ret, args);
}


/* The kernel's stack size, from which 5.10 (no bpf_task_pt_regs) finds a task's saved
 * registers at the top of its stack: 16 KiB on x86_64 and arm64 without KASAN. */
#define THREAD_SIZE 16384

/* The registers the current task's syscall entered with: through bpf_task_pt_regs (5.15),
 * else at the top of the task's stack, read field by field. Into args, with the syscall's
 * number (-1 for a 32-bit one) and the result the registers hold. */
static __always_inline void current_syscall(__u64 *args, long *nr, long *ret)
{
	if (task_btf) {
		struct pt_regs *regs =
			(struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());

		syscall_args(regs, args);
		*nr = syscall_nr(regs);
		*ret = syscall_ret(regs);
		return;
	}
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
	struct pt_regs *regs = (struct pt_regs *)(BPF_CORE_READ(t, stack) + THREAD_SIZE -
						  bpf_core_type_size(struct pt_regs));
#if defined(__TARGET_ARCH_x86)
	*nr = BPF_CORE_READ(regs, cs) == USER64_CS ? (long)BPF_CORE_READ(regs, orig_ax) : -1;
	args[0] = BPF_CORE_READ(regs, di);
	args[1] = BPF_CORE_READ(regs, si);
	args[2] = BPF_CORE_READ(regs, dx);
	args[3] = BPF_CORE_READ(regs, r10);
	args[4] = BPF_CORE_READ(regs, r8);
	args[5] = BPF_CORE_READ(regs, r9);
	*ret = BPF_CORE_READ(regs, ax);
#else
	*nr = BPF_CORE_READ(regs, syscallno);
	args[0] = BPF_CORE_READ(regs, orig_x0);
	args[1] = BPF_CORE_READ(regs, regs[1]);
	args[2] = BPF_CORE_READ(regs, regs[2]);
	args[3] = BPF_CORE_READ(regs, regs[3]);
	args[4] = BPF_CORE_READ(regs, regs[4]);
	args[5] = BPF_CORE_READ(regs, regs[5]);
	*ret = BPF_CORE_READ(regs, regs[0]);
#endif
}

/* The fexit programs: one per watched syscall, on the entry point the syscall table calls
 * (`__x64_sys_<name>`), run as the entry point returns, with its result. The entry point's
 * one argument is the task's saved registers, but it is not read from the program's context:
 * 5.10's BTF types it, for some entry points (connect's), as a pointer to a forward
 * declaration, which the verifier refuses to read; the same registers are found through the
 * task (current_syscall). User space leaves out (autoload off) the programs whose entry point
 * this kernel's BTF lacks, and loads these only where a probe trampoline attached and ran
 * (kernel.rs). */
#if defined(__TARGET_ARCH_x86)
#define SYSCALL_ENTRY "__x64_sys_"
#else
#define SYSCALL_ENTRY "__arm64_sys_"
#endif

#define FEXIT_SYSCALL(name, kind)                                                          \
	SEC("fexit/" SYSCALL_ENTRY #name)                                                  \
	int fexit_##name(unsigned long long *ctx)                                          \
	{                                                                                  \
		struct container_info *ci;                                                 \
		__u64 cg, args[6];                                                         \
		long nr, saved;                                                            \
                                                                                           \
		ci = current_container(&cg);                                               \
		if (!ci)                                                                   \
			return 0;                                                          \
		current_syscall(args, &nr, &saved);                                        \
		/* ctx[1]: the entry point's return value */                              \
		return report_syscall(ci, cg, kind, (long)ctx[1], args);                   \
	}

FEXIT_SYSCALL(connect, SYS_CONNECT)
FEXIT_SYSCALL(bind, SYS_BIND)
FEXIT_SYSCALL(listen, SYS_LISTEN)
FEXIT_SYSCALL(accept, SYS_ACCEPT)
FEXIT_SYSCALL(accept4, SYS_ACCEPT4)
FEXIT_SYSCALL(socket, SYS_SOCKET)
FEXIT_SYSCALL(setuid, SYS_SETUID)
FEXIT_SYSCALL(setgid, SYS_SETGID)
FEXIT_SYSCALL(setreuid, SYS_SETREUID)
FEXIT_SYSCALL(setregid, SYS_SETREGID)
FEXIT_SYSCALL(setresuid, SYS_SETRESUID)
FEXIT_SYSCALL(setresgid, SYS_SETRESGID)
FEXIT_SYSCALL(capset, SYS_CAPSET)
FEXIT_SYSCALL(setns, SYS_SETNS)
FEXIT_SYSCALL(unshare, SYS_UNSHARE)
FEXIT_SYSCALL(ptrace, SYS_PTRACE)
FEXIT_SYSCALL(mount, SYS_MOUNT)
FEXIT_SYSCALL(init_module, SYS_INIT_MODULE)
FEXIT_SYSCALL(finit_module, SYS_FINIT_MODULE)
FEXIT_SYSCALL(bpf, SYS_BPF)
FEXIT_EXEC(execve, SYS_EXECVE)
FEXIT_EXEC(execveat, SYS_EXECVEAT)

/* openat's, with the note its file_open left (opens.h): a plain read of an ordinary file by a
 * container that reports no plain reads returns before the container lookup. */
SEC("fexit/" SYSCALL_ENTRY "openat")
int fexit_openat(unsigned long long *ctx)
{
	struct container_info *ci;
	struct file *f;
	__u64 cg, args[6];
	long nr, saved, ret = (long)ctx[1];
	long noted = take_open_note(ret, &f);

	if (noted >= 0 && (noted & ON_QUIET))
		return 0;
	ci = current_container(&cg);
	if (!ci)
		return 0;
	current_syscall(args, &nr, &saved);
	return report_event(ci, cg, SYS_OPENAT, ret, args, noted, f);
}

/* A syscall seccomp refused (SECCOMP_RET_ERRNO, a supervisor's error) never reaches its entry
 * point, so the fexit programs above do not see it; the raw and exit tracepoints do, and the
 * detections use it (a `block` naming seccomp). `__secure_computing` returns -1 for a call it
 * skips, having written the error into the saved registers: the same report is made from
 * there. Every syscall of a seccomp-filtered process passes this trampoline; the check of the
 * result comes first. Its argument is not read (see above). It took one argument (the
 * seccomp data) until 7.x, none since: the return value is the context's second or first
 * slot, so there are two programs, and user space loads the one the kernel's BTF matches. */
static __always_inline int report_seccomp_skip(int skipped)
{
	struct container_info *ci;
	__u64 cg, args[6];
	long nr, ret;
	__u32 sys;

	if (skipped != -1)
		return 0;
	current_syscall(args, &nr, &ret);
	ci = watched_syscall(nr, &sys, &cg);
	if (!ci)
		return 0;
	return report_syscall(ci, cg, sys, ret, args);
}

SEC("fexit/__secure_computing")
int fexit_seccomp(unsigned long long *ctx)
{
	return report_seccomp_skip((int)ctx[1]);
}

SEC("fexit/__secure_computing")
int fexit_seccomp_void(unsigned long long *ctx)
{
	return report_seccomp_skip((int)ctx[0]);
}
