/* Credential files (/etc/shadow, SSH host keys, cloud credentials, kubeconfigs): the device
 * and inode of each one found in a container's root filesystem at registration, keyed per
 * container, so that a read of one is reported whatever path the process spelled (relative,
 * through a link, through /proc/self/root). Reads of other files are never reported unless
 * asked (CF_ALL_OPENS): without this set the kernel could not tell a read of /etc/shadow from a
 * read of /etc/passwd before copying a path. Included by monitor.bpf.c once, after files.h. */
#ifndef PALISADE_CREDS_H
#define PALISADE_CREDS_H

/* container_info.flags: the container has keys in cred_files */
#define CF_CREDENTIALS 2u
/* syscall_event.flags: an open that returned one of the container's credential files */
#define SE_CREDENTIAL 4u

struct cred_key {
	__u32 slot;
	__u32 dev;
	__u64 ino;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct cred_key);
	__type(value, __u32);
} cred_files SEC(".maps");

struct cred_key _cred_key = {};

/* The bit of container_info.cred_bits an inode number sets (credfiles.rs computes the same):
 * a filter in front of the cred_files lookup, which most opens (of no credential file) then
 * skip; a set bit is confirmed by the lookup. */
static __always_inline __u32 cred_bit(__u64 ino)
{
	return 1u << ((ino ^ (ino >> 5) ^ (ino >> 10)) & 31);
}

/* Whether `f` is one of the credential files of the container in slot `slot`: its inode (as
 * stat shows it in the container's root) is in the set. */
static __always_inline bool credential_file(struct container_info *ci, struct file *f)
{
	/* the inode is read once for both fields: four reads where two chains from `f` are five */
	struct inode *inode = BPF_CORE_READ(f, f_inode);
	struct cred_key key = {
		.slot = ci->slot,
		.ino = BPF_CORE_READ(inode, i_ino),
	};

	if (!(ci->cred_bits & cred_bit(key.ino)))
		return false;
	key.dev = BPF_CORE_READ(inode, i_sb, s_dev);
	return bpf_map_lookup_elem(&cred_files, &key) != 0;
}

#endif /* PALISADE_CREDS_H */
