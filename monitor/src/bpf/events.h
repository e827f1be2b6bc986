/* Layouts shared by the BPF programs and user space. The Rust side reads these structs from the
 * skeleton's generated types; anything it copies by hand is checked by a size/offset test. */
#ifndef PALISADE_EVENTS_H
#define PALISADE_EVENTS_H

#define TASK_COMM_LEN 16
#define PATH_LEN 256
#define ARGS_LEN 256
#define SOCKADDR_LEN 28

/* Shims (ring owners) per node and containers per node. */
#define MAX_RINGS 256
#define MAX_CONTAINERS 8192

/* Entries of the syscall number -> sys_kind table (every watched number is below this on
 * x86_64 and arm64). */
#define SYS_TABLE 512

enum event_kind {
	EV_EXEC = 1,
	EV_EXIT = 2,
	EV_FORK = 3,
	EV_SYSCALL = 4,
};

enum sys_kind {
	SYS_OPENAT = 1,
	SYS_CONNECT = 2,
	SYS_BIND = 3,
	SYS_LISTEN = 4,
	SYS_ACCEPT = 5,
	SYS_ACCEPT4 = 6,
	SYS_SOCKET = 7,
	SYS_SETUID = 8,
	SYS_SETGID = 9,
	SYS_SETREUID = 10,
	SYS_SETREGID = 11,
	SYS_SETRESUID = 12,
	SYS_SETRESGID = 13,
	SYS_CAPSET = 14,
	SYS_SETNS = 15,
	SYS_UNSHARE = 16,
	SYS_PTRACE = 17,
	SYS_MOUNT = 18,
	SYS_INIT_MODULE = 19,
	SYS_FINIT_MODULE = 20,
	SYS_BPF = 21,
	/* reported only when refused (EACCES, EPERM): execs.h */
	SYS_EXECVE = 22,
	SYS_EXECVEAT = 23,
};

/* container_info.flags */
#define CF_ALL_OPENS 1u
/* The container has file deny rules: without it the BPF-LSM file programs return right after
 * the container lookup, before any walk of the file's parents (lsm_files.h). */
#define CF_FILE_RULES 4u

/* exec_event.flags */
#define EXEC_KILLED 1u
#define EXEC_PARENT_FROM_EXEC 2u
#define EXEC_REFUSED 4u

/* Value of the `containers` map, keyed by the cgroup v2 id. */
/* A mount whose files are secrets (a service account token volume): the device (kernel
 * encoding) and inode of the directory mounted, i.e. of the mount's root. dev 0: unused. */
#define MAX_SECRET_MOUNTS 4
struct secret_mount {
	__u32 dev;
	__u32 pad;
	__u64 ino;
};

struct container_info {
	__u32 slot;
	__u32 ring;
	__u32 flags;
	/* one bit per credential file, at cred_bit(its inode) (creds.h): an opened file whose bit
	 * is clear is no credential file, and costs no cred_files lookup */
	__u32 cred_bits;
	__u64 events;
	__u64 drops;
	struct secret_mount secrets[MAX_SECRET_MOUNTS];
};

/* Key of `deny_exec`: the executable's inode and device (kernel encoding) per container. */
struct exec_key {
	__u32 slot;
	__u32 dev;
	__u64 ino;
};

/* Key of the `deny_connect` LPM trie: slot, port (0 = any) and the address as IPv6
 * (IPv4 mapped into ::ffff:0:0/96), all in network order so that prefixes work. */
struct net_key {
	__u32 prefixlen;
	__u8 data[24]; /* 22 used; the last 2 stay zero so the key has no implicit padding */
};

/* src_ino/src_dev, fromSource (zero: the rule applies to every process). Connect rules: the
 * executable that alone may still connect. Exec rules: the rule applies only when the parent
 * process runs this executable. */
struct deny_value {
	__u32 rule;
	__u32 src_dev;
	__u64 src_ino;
	__u64 hits;
};

struct event_header {
	__u32 kind;
	__u32 slot;
	__u64 cgroup_id;
	__u64 ktime;
	__u32 pid;
	__u32 tid;
	__u32 ppid;
	__u32 uid;
	__u32 gid;
	__u32 pad;
	char comm[TASK_COMM_LEN];
};

struct exec_event {
	struct event_header h;
	__u64 ino;
	__u32 dev;
	__u32 flags;
	__u32 rule;
	__u32 args_len;
	char filename[PATH_LEN];
	char parent[PATH_LEN];
	char args[ARGS_LEN];
};

struct exit_event {
	struct event_header h;
	__s32 exit_code;
	__u32 pad;
};

struct fork_event {
	struct event_header h;
	__u32 child_pid;
	__u32 pad;
};

/* syscall_event.flags */
#define SE_SECRET 1u /* an open that returned a file on one of the container's secret mounts */
#define SE_SYSTEM_DIR 2u /* a write open of a file below /etc, /bin, /sbin or /usr of the root */

struct syscall_event {
	struct event_header h;
	__u32 sys;
	__u32 addr_len;
	__s64 ret;
	__u64 args[6];
	__u8 addr[SOCKADDR_LEN];
	__u32 flags;
	char path[PATH_LEN];
};

/* Socket creation rules (cgroup/sock_create), per container slot and protocol class. */
#define EV_SOCK 5
#define SOCK_MAX_SOURCES 4

/* sock_key.class: KubeArmor's protocols over AF_INET/AF_INET6 */
#define SC_TCP 1
#define SC_UDP 2
#define SC_ICMP 3
#define SC_RAW 4

/* sock_rule.flags */
#define SR_AUDIT 1u /* what the rule covers is reported, not refused */
#define SR_LISTED 2u /* a block list: the listed binaries are covered, the others pass */

/* sock_event.flags */
#define SOCK_REFUSED 1u

struct sock_key {
	__u32 slot;
	__u32 class;
};

struct sock_source {
	__u32 dev;
	__u32 pad;
	__u64 ino;
};

/* An allow-list: count == 0, the class is refused to every process; otherwise only the
 * executables in allow[0..count) create such sockets, the others are refused (or reported
 * with SR_AUDIT). With SR_LISTED, a block list: the executables in allow[0..count) are
 * refused (or reported), the others pass. */
struct sock_rule {
	__u32 rule;
	__u32 flags;
	__u32 count;
	__u32 pad;
	__u64 hits;
	struct sock_source allow[SOCK_MAX_SOURCES];
};

struct sock_event {
	struct event_header h;
	__u32 family;
	__u32 type;
	__u32 protocol;
	__u32 class;
	__u32 rule;
	__u32 flags;
	__u32 dev;
	__u32 pad;
	__u64 ino;
};

#endif
