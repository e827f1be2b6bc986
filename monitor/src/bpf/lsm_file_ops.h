/* File Block rules beyond the open: the changes to a covered file that open nothing. Removing
 * it (unlink, rmdir), renaming it or renaming over it, giving it another name (link), changing its
 * mode, owner, size or times, and creating anything (a file, a directory, a device node, a
 * symlink, a link, a rename's new name) in a covered directory are refused with EACCES,
 * under the same keys as the opens (device and inode of the file, or of a directory above it).
 * Every one of them is a write, so readOnly rules refuse them too; ownerOnly compares the
 * caller with the owner of the file changed (of its directory, for a name not yet created);
 * fromSource with the caller's executable. Included by lsm_files.h once, after its map and
 * helpers; loaded with the other LSM programs (where BPF-LSM is in force). */
#ifndef PALISADE_LSM_FILE_OPS_H
#define PALISADE_LSM_FILE_OPS_H

/* The write-like `op` of the current task on dentry `d`: refused with EACCES and reported
 * when a file rule of its container covers `d` (in audit mode, reported only). `new_name`:
 * `d` is a name being made (created, linked or renamed to), which globs are matched on too
 * (lsm_globs.h); the other ops act on an existing name, which a glob covers through the
 * files it matched at start (keyed by user space): a matching file the host made later is
 * covered at its opens only. */
static __always_inline int file_op_check(struct dentry *d, __u32 op, bool new_name)
{
	struct container_info *ci;
	struct file_rule *r;
	struct file_key key = {};
	struct inode *self;
	__u32 depth, owner;
	__u64 cg;

	ci = current_container(&cg);
	if (!ci || !(ci->flags & CF_FILE_RULES))
		return 0;
	self = BPF_CORE_READ(d, d_inode);
	r = dentry_rule(d, self, ci->slot, &key, &depth);
	if (!r && new_name)
		r = glob_rule_of(d, ci->slot, &key, &depth);
	if (!r)
		return 0;
	/* a name not yet created belongs to its directory's owner */
	if (self)
		owner = BPF_CORE_READ(self, i_uid.val);
	else
		owner = BPF_CORE_READ(d, d_parent, d_inode, i_uid.val);
	if (!file_rule_holds(r, owner))
		return 0;
	return file_refusal(ci, cg, r, &key, depth, FMODE_WRITE, owner, op,
			    BPF_CORE_READ(d, d_name.name));
}

SEC("lsm/inode_unlink")
int BPF_PROG(lsm_unlink, struct inode *dir, struct dentry *dentry, int ret)
{
	if (ret)
		return ret;
	return file_op_check(dentry, FOP_UNLINK, false);
}

SEC("lsm/inode_rmdir")
int BPF_PROG(lsm_rmdir, struct inode *dir, struct dentry *dentry, int ret)
{
	if (ret)
		return ret;
	return file_op_check(dentry, FOP_RMDIR, false);
}

/* Both ends: moving a covered file away (then opening it under the new name, outside the
 * directory rule), and moving anything over a covered file or into a covered directory. */
SEC("lsm/inode_rename")
int BPF_PROG(lsm_rename, struct inode *old_dir, struct dentry *old_dentry, struct inode *new_dir,
	     struct dentry *new_dentry, int ret)
{
	int rc;

	if (ret)
		return ret;
	rc = file_op_check(old_dentry, FOP_RENAME, false);
	if (rc)
		return rc;
	return file_op_check(new_dentry, FOP_RENAME, true);
}

/* A hard link keeps the inode, so its opens stay refused by a rule on the file itself; not by
 * a directory rule, which the new name may lie outside: the link is refused, as is a new name
 * in a covered directory. */
SEC("lsm/inode_link")
int BPF_PROG(lsm_link, struct dentry *old_dentry, struct inode *dir, struct dentry *new_dentry,
	     int ret)
{
	int rc;

	if (ret)
		return ret;
	rc = file_op_check(old_dentry, FOP_LINK, false);
	if (rc)
		return rc;
	return file_op_check(new_dentry, FOP_LINK, true);
}

SEC("lsm/inode_create")
int BPF_PROG(lsm_create, struct inode *dir, struct dentry *dentry, unsigned short mode, int ret)
{
	if (ret)
		return ret;
	return file_op_check(dentry, FOP_CREATE, true);
}

SEC("lsm/inode_mkdir")
int BPF_PROG(lsm_mkdir, struct inode *dir, struct dentry *dentry, unsigned short mode, int ret)
{
	if (ret)
		return ret;
	return file_op_check(dentry, FOP_MKDIR, true);
}

SEC("lsm/inode_mknod")
int BPF_PROG(lsm_mknod, struct inode *dir, struct dentry *dentry, unsigned short mode,
	     unsigned int dev, int ret)
{
	if (ret)
		return ret;
	return file_op_check(dentry, FOP_MKNOD, true);
}

SEC("lsm/inode_symlink")
int BPF_PROG(lsm_symlink, struct inode *dir, struct dentry *dentry, const char *old_name, int ret)
{
	if (ret)
		return ret;
	return file_op_check(dentry, FOP_SYMLINK, true);
}

/* A change of the file's attributes: its mode, owner, size (truncate(2), ftruncate(2) and an
 * open with O_TRUNC, which lsm_file_open refuses first) or times, by path or through a
 * descriptor. Until 6.10 the hook has no mnt_idmap argument; user space loads the variant that
 * matches the kernel's (kernel.rs inode_setattr_params). */
SEC("lsm/inode_setattr")
int BPF_PROG(lsm_setattr, struct dentry *dentry, void *attr, int ret)
{
	if (ret)
		return ret;
	return file_op_check(dentry, FOP_SETATTR, false);
}

SEC("lsm/inode_setattr")
int BPF_PROG(lsm_setattr_idmap, void *idmap, struct dentry *dentry, void *attr, int ret)
{
	if (ret)
		return ret;
	return file_op_check(dentry, FOP_SETATTR, false);
}

#endif /* PALISADE_LSM_FILE_OPS_H */
