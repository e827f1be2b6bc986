// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* Feature probes, each loaded alone (user space turns the other's autoload off), attached, and
 * then triggered by the probing process opening a file:
 * - probe_lsm, a BPF-LSM program that allows everything: a kernel may load and attach a BPF-LSM
 *   program and never call it (Debian 11's 5.10, whose LSM list leaves `bpf` out), so BPF-LSM
 *   counts only once the program has been seen to run;
 * - probe_fexit, an fexit program on the openat entry point: whether BPF trampolines attach
 *   and run here, which the monitor's fexit syscall programs need (a kernel without a usable
 *   ftrace refuses the attach). */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Set by user space before the trigger: the probing process. */
__u32 probe_tgid = 0;
/* File opens of probe_tgid the LSM program saw. */
__u64 probe_hits = 0;
/* openat calls of probe_tgid the fexit program saw. */
__u64 probe_fexit_hits = 0;

static __always_inline bool is_prober(void)
{
	return probe_tgid && (bpf_get_current_pid_tgid() >> 32) == probe_tgid;
}

SEC("lsm/file_open")
int BPF_PROG(probe_lsm, struct file *file, int ret)
{
	if (is_prober())
		__sync_fetch_and_add(&probe_hits, 1);
	return ret;
}

#if defined(__TARGET_ARCH_x86)
SEC("fexit/__x64_sys_openat")
#else
SEC("fexit/__arm64_sys_openat")
#endif
int probe_fexit(unsigned long long *ctx)
{
	/* the argument is not read: 5.10's BTF types some entry points' as a pointer to a
	 * forward declaration, which its verifier refuses to read (syscalls.h) */
	if (is_prober())
		__sync_fetch_and_add(&probe_fexit_hits, 1);
	return 0;
}
