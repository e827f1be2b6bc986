// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* Feature probe: a BPF-LSM program that allows everything and counts the file opens of one
 * process. It is loaded, attached, and then triggered by that process opening a file: a
 * kernel may load and attach a BPF-LSM program and never call it (Debian 11's 5.10, whose LSM
 * list leaves `bpf` out), so BPF-LSM counts only once the program has been seen to run. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Set by user space before the trigger: the probing process. */
__u32 probe_tgid = 0;
/* File opens of probe_tgid the program saw. */
__u64 probe_hits = 0;

SEC("lsm/file_open")
int BPF_PROG(probe_lsm, struct file *file, int ret)
{
	if (probe_tgid && (bpf_get_current_pid_tgid() >> 32) == probe_tgid)
		__sync_fetch_and_add(&probe_hits, 1);
	return ret;
}
