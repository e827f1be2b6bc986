// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* Empty programs on the monitor's syscall hooks: what the kernel charges for a hook before the
 * monitor's own code runs (the cost floor of watching syscalls this way). Measurement only. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* attached to syscalls:sys_exit_* of every watched syscall, like on_sys_exit */
SEC("tracepoint")
int floor_sys_exit(void *ctx)
{
	return 0;
}

/* attached to the raw sys_exit tracepoint, like on_sys_exit_raw */
SEC("tp_btf/sys_exit")
int BPF_PROG(floor_sys_exit_raw, struct pt_regs *regs, long ret)
{
	return 0;
}
