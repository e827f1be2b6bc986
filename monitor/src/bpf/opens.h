/* The note an open leaves for its syscall's report: the BPF-LSM file_open program, which holds
 * the opened file as a typed pointer, decides there with direct loads what the open path of
 * report_syscall would otherwise find out again after the call with probe reads (the file
 * behind the new descriptor, its inode, its mount), and leaves it in a per-CPU note. The
 * openat fexit program takes the note when the file at the descriptor the call returned is
 * the noted file and the noting thread is the current one; a plain read of an ordinary file
 * by a container that reports no plain reads (the bulk of all opens) then costs it no
 * container lookup either. Without BPF-LSM no note is written and every open is judged after
 * the call as before. Included by monitor.bpf.c once, after its maps and helpers and before
 * the LSM and syscall sections. */
#ifndef PALISADE_OPENS_H
#define PALISADE_OPENS_H

#include "files.h"
#include "creds.h"

/* open_note.flags, beside SE_SECRET and SE_CREDENTIAL: the container does not report plain
 * reads (no CF_ALL_OPENS), the file is neither a secret nor a credential file, and the open
 * asked for no write, creation or truncation: nothing the openat report would send */
#define ON_QUIET 0x100u

/* The open flags that make an open worth a report whatever the file (open_is_interesting). */
#define OPEN_WRITE_FLAGS (O_WRONLY | O_RDWR | O_CREAT | O_TRUNC)

struct open_note {
	/* the struct file judged, as a number (never dereferenced from here) */
	__u64 file;
	/* pid_tgid of the thread that opened it */
	__u64 tid;
	__u32 flags;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct open_note);
} open_notes SEC(".maps");

/* The SE_SECRET and SE_CREDENTIAL flags of `file`, opened in container `ci`, read with direct
 * loads from the LSM hook's typed pointer (the same tests as on_secret_mount and
 * credential_file). */
static __always_inline __u32 open_flags_direct(struct container_info *ci, struct file *file)
{
	struct inode *inode = file->f_inode;
	__u32 flags = 0;

	if (ci->secrets[0].dev) {
		struct dentry *root = file->f_path.mnt->mnt_root;
		__u64 ino = root->d_inode->i_ino;
		__u32 dev = root->d_sb->s_dev;

		for (int i = 0; i < MAX_SECRET_MOUNTS; i++)
			if (ci->secrets[i].dev && ci->secrets[i].dev == dev &&
			    ci->secrets[i].ino == ino)
				flags |= SE_SECRET;
	}
	if (ci->flags & CF_CREDENTIALS) {
		struct cred_key key = {
			.slot = ci->slot,
			.ino = inode->i_ino,
		};

		if (ci->cred_bits & cred_bit(key.ino)) {
			key.dev = inode->i_sb->s_dev;
			if (bpf_map_lookup_elem(&cred_files, &key))
				flags |= SE_CREDENTIAL;
		}
	}
	return flags;
}

/* Called by the file_open program for every open of a watched container that the LSMs let
 * through. The open's flags are the file's own: do_dentry_open clears O_CREAT and O_TRUNC from
 * f_flags only after security_file_open, so here they are still the flags the call passed
 * (less O_CLOEXEC), and a quiet note is final: the openat program returns on it without
 * reading the call's registers. */
static __always_inline void note_open(struct container_info *ci, struct file *file)
{
	__u32 zero = 0;
	struct open_note *n = bpf_map_lookup_elem(&open_notes, &zero);
	__u32 flags;

	if (!n)
		return;
	flags = open_flags_direct(ci, file);
	if (!flags && !(ci->flags & CF_ALL_OPENS) && !(file->f_flags & OPEN_WRITE_FLAGS))
		flags = ON_QUIET;
	n->file = (__u64)file;
	n->tid = bpf_get_current_pid_tgid();
	n->flags = flags;
}

/* The note of the open that returned descriptor `fd` to the current thread, taken (cleared),
 * with the file it names into *f: its flags, or -1 when there is none for this open (no
 * BPF-LSM, an open that failed, an O_PATH open, which skips file_open, or a thread that moved
 * to another CPU between the hook and the return). One case passes the checks wrongly: a
 * note this thread left on this CPU through another call (open, openat2, a failed exec),
 * whose file was freed and whose address the thread's next openat, an O_PATH one, gets again;
 * that O_PATH open is then judged as the freed file was. */
static __always_inline long take_open_note(long fd, struct file **f)
{
	__u32 zero = 0;
	struct open_note *n;

	*f = 0;
	if (fd < 0)
		return -1;
	n = bpf_map_lookup_elem(&open_notes, &zero);
	if (!n || !n->file || n->tid != bpf_get_current_pid_tgid())
		return -1;
	*f = fd_file(fd);
	if (!*f || (__u64)*f != n->file)
		return -1;
	n->file = 0;
	return n->flags;
}

#endif /* PALISADE_OPENS_H */
