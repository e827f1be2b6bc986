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

/* The open file behind descriptor `fd` of the current process, or 0. */
static __always_inline struct file *fd_file(struct task_struct *t, long fd)
{
	struct fdtable *fdt = BPF_CORE_READ(t, files, fdt);
	struct file **fds = BPF_CORE_READ(fdt, fd);
	struct file *f = 0;

	if (fd < 0 || (__u64)fd >= BPF_CORE_READ(fdt, max_fds))
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
	__u32 dev = BPF_CORE_READ(root, d_sb, s_dev);
	__u64 ino = BPF_CORE_READ(root, d_inode, i_ino);

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
