/* File helpers of monitor.bpf.c: the file behind a descriptor, and where an opened file lies
 * (on a secret mount, below a system directory), decided on the kernel's own objects. Included
 * by monitor.bpf.c once, after its maps and struct container_info. */
#ifndef PALISADE_FILES_H
#define PALISADE_FILES_H

static __always_inline bool has_name(const char *s, const char *want, int n)
{
	for (int i = 0; i < n; i++)
		if (s[i] != want[i])
			return false;
	return true;
}

/* The open file behind descriptor `fd` of the current process, or 0. Where the task is a BTF
 * pointer (task_btf), the descriptor table is reached by direct loads and only its slot, in an
 * array of pointers the verifier has no type for, is read with a helper: one helper call
 * instead of five on each open whose file a test needs. */
static __always_inline struct file *fd_file(long fd)
{
	struct fdtable *fdt;
	struct file **fds;
	__u32 max;
	struct file *f = 0;

	if (fd < 0)
		return 0;
	if (task_btf) {
		struct task_struct *t = bpf_get_current_task_btf();

		fdt = t->files->fdt;
		fds = fdt->fd;
		max = fdt->max_fds;
	} else {
		struct task_struct *t = (struct task_struct *)bpf_get_current_task();

		fdt = BPF_CORE_READ(t, files, fdt);
		fds = BPF_CORE_READ(fdt, fd);
		max = BPF_CORE_READ(fdt, max_fds);
	}
	if ((__u64)fd >= max)
		return 0;
	if (bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]))
		return 0;
	return f;
}

/* Whether `f` is on one of the container's secret mounts: the mount it was opened through has
 * the root a secret mount names. Decided on the kernel's own objects, so no spelling of the
 * path (`//`, `..`, relative to a directory, through /proc/self/root) escapes it. */
static __always_inline bool on_secret_mount(struct container_info *ci, struct file *f)
{
	struct dentry *root = BPF_CORE_READ(f, f_path.mnt, mnt_root);
	__u64 ino = BPF_CORE_READ(root, d_inode, i_ino);
	bool named = false;
	__u32 dev;

	/* the inode first: the device is read only when a secret mount's root has this inode */
	for (int i = 0; i < MAX_SECRET_MOUNTS; i++)
		if (ci->secrets[i].dev && ci->secrets[i].ino == ino)
			named = true;
	if (!named)
		return false;
	dev = BPF_CORE_READ(root, d_sb, s_dev);
	for (int i = 0; i < MAX_SECRET_MOUNTS; i++)
		if (ci->secrets[i].dev && ci->secrets[i].dev == dev && ci->secrets[i].ino == ino)
			return true;
	return false;
}

/* How deep below the root a file may be for below_system_dir to find its top directory. */
#define MAX_DEPTH 32

/* Whether `f` lies below /etc, /bin, /sbin or /usr of the process's own root filesystem:
 * found by walking the file's parents up to the process's root, so a relative path or an odd
 * spelling is judged like the plain one. A file on another mount (a bind-mounted /etc/hosts,
 * say) is not judged here. */
static __always_inline bool below_system_dir(struct task_struct *t, struct file *f)
{
	struct dentry *root = BPF_CORE_READ(t, fs, root.dentry);
	struct dentry *d = BPF_CORE_READ(f, f_path.dentry);
	struct dentry *top = 0, *p;
	char name[8] = {};

	if (BPF_CORE_READ(f, f_path.mnt) != BPF_CORE_READ(t, fs, root.mnt))
		return false;
	for (int i = 0; i < MAX_DEPTH; i++) {
		p = BPF_CORE_READ(d, d_parent);
		if (p == root) {
			top = d;
			break;
		}
		if (!p || p == d)
			return false;
		d = p;
	}
	if (!top)
		return false;
	if (bpf_probe_read_kernel_str(name, sizeof(name), BPF_CORE_READ(top, d_name.name)) < 0)
		return false;
	/* the NUL is compared too: "etcx" is not "etc" */
	return has_name(name, "etc", 4) || has_name(name, "bin", 4) || has_name(name, "sbin", 5) ||
	       has_name(name, "usr", 4);
}

#endif /* PALISADE_FILES_H */
