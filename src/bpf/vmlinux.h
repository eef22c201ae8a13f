/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The kernel types tcpkit reads, and nothing else. Every record is marked preserve_access_index, so field
 * offsets here are only a starting point: libbpf relocates each access against the running kernel's BTF
 * (CO-RE). Fields are listed only when read; their order and the missing fields do not matter. A full
 * `bpftool btf dump` header would work too but is 3 MB and hides what the programs depend on.
 */
#ifndef __VMLINUX_H__
#define __VMLINUX_H__

typedef signed char __s8;
typedef unsigned char __u8;
typedef short __s16;
typedef unsigned short __u16;
typedef int __s32;
typedef unsigned int __u32;
typedef long long __s64;
typedef unsigned long long __u64;
typedef __u8 u8;
typedef __u16 u16;
typedef __u32 u32;
typedef __u64 u64;
typedef __s64 s64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum;
typedef _Bool bool;
enum { false = 0, true = 1 };

enum bpf_map_type {
	BPF_MAP_TYPE_HASH = 1,
	BPF_MAP_TYPE_ARRAY = 2,
	BPF_MAP_TYPE_PERCPU_ARRAY = 6,
	BPF_MAP_TYPE_CGROUP_ARRAY = 8,
	BPF_MAP_TYPE_LRU_HASH = 9,
	BPF_MAP_TYPE_ARRAY_OF_MAPS = 12,
	BPF_MAP_TYPE_RINGBUF = 27,
};

/* bpf_ringbuf_submit() flags and bpf_ringbuf_query() fields (uapi/linux/bpf.h). */
enum {
	BPF_RB_NO_WAKEUP = 1,
	BPF_RB_FORCE_WAKEUP = 2,
};

enum {
	BPF_RB_AVAIL_DATA = 0,
};

/* Only its existence is asked (CO-RE): bpf_get_current_task_btf() came in 5.11. */
enum bpf_func_id {
	BPF_FUNC_get_current_task_btf = 158,
};

enum {
	BPF_ANY = 0,
	BPF_NOEXIST = 1,
	BPF_EXIST = 2,
};

#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)

/*
 * The registers a kprobe program reads, as the kernel spells them for the architecture built for
 * (libbpf-cargo passes -D__TARGET_ARCH_x86 or _arm64 from cargo's target): bpf_tracing.h reads x86-64's
 * struct pt_regs, and arm64's struct user_pt_regs (the start of its pt_regs).
 */
#if defined(__TARGET_ARCH_x86)
struct pt_regs {
	unsigned long r15, r14, r13, r12, bp, bx, r11, r10, r9, r8, ax, cx, dx, si, di, orig_ax, ip, cs, flags, sp, ss;
};
#elif defined(__TARGET_ARCH_arm64)
struct user_pt_regs {
	__u64 regs[31];
	__u64 sp;
	__u64 pc;
	__u64 pstate;
};
#else
#error "tcpkit's BPF programs are built for x86-64 and arm64 only"
#endif

struct in6_addr {
	union {
		__u8 u6_addr8[16];
		__be16 u6_addr16[8];
		__be32 u6_addr32[4];
	} in6_u;
};

struct ns_common {
	unsigned int inum;
};

struct net {
	struct ns_common ns;
};

typedef struct {
	struct net *net;
} possible_net_t;

struct sock_common {
	union {
		struct {
			__be32 skc_daddr;
			__be32 skc_rcv_saddr;
		};
	};
	union {
		struct {
			__be16 skc_dport;
			__u16 skc_num;
		};
	};
	unsigned short skc_family;
	volatile unsigned char skc_state;
	unsigned long skc_flags; /* enum sock_flags bits */
	possible_net_t skc_net;
	struct in6_addr skc_v6_daddr;
	struct in6_addr skc_v6_rcv_saddr;
};

struct socket;

/* Set while a task holds the socket lock (lock_sock): state changes then run in that task, not in softirq. */
typedef struct {
	int owned;
} socket_lock_t;

struct sock {
	struct sock_common __sk_common;
	__u32 sk_ack_backlog;     /* a listener's accept queue: connections waiting */
	__u32 sk_max_ack_backlog; /* and its limit, from listen() and somaxconn */
	socket_lock_t sk_lock;
	int sk_err;           /* set by the kernel just before a reset or a timeout closes the socket */
	__u16 sk_type;
	__u16 sk_protocol;
	struct socket *sk_socket;
};

/* inet_sport outlives skc_num, which is zeroed when a closing socket gives its port back. */
struct inet_sock {
	__be16 inet_sport;
};

/* Only SOCK_DONE is read: tcp_fin() sets it when the peer's FIN arrives. */
enum sock_flags {
	SOCK_DEAD,
	SOCK_DONE,
};

struct minmax_sample {
	__u32 t;
	__u32 v;
};

/* A windowed minimum (lib/win_minmax.c): s[0] holds the current one. */
struct minmax {
	struct minmax_sample s[3];
};

/*
 * MPTCP subflows are TCP sockets underneath an MPTCP one; is_mptcp exists only with CONFIG_MPTCP. The
 * counters are those TCP_INFO and ss report (tcp_get_info), with the kernel's widths.
 */
struct tcp_sock {
	bool is_mptcp;
	__u64 bytes_acked;    /* RFC 4898 tcpEStatsAppHCThruOctetsAcked: every advance of snd_una */
	__u64 bytes_received; /* RFC 4898 tcpEStatsAppHCThruOctetsReceived: every advance of rcv_nxt */
	__u32 snd_una;
	__u32 write_seq;      /* the next sequence number to queue: snd_una reaches it when all, FIN too, is acked */
	__u32 srtt_us;        /* smoothed RTT << 3 */
	__u32 mdev_us;        /* RTT deviation << 2 */
	struct minmax rtt_min;
	__u32 total_retrans;  /* segments retransmitted, SYNs included */
	__u64 bytes_retrans;  /* 4.19+ */
	__u32 segs_in;
	__u32 segs_out;
	__u16 total_rto;      /* 6.7+: retransmission timeouts */
};

struct file;

typedef enum {
	SS_FREE = 0,
	SS_UNCONNECTED,
	SS_CONNECTING,
	SS_CONNECTED,
	SS_DISCONNECTING,
} socket_state;

struct socket {
	socket_state state;
	struct file *file;
	struct sock *sk;
};

struct file {
	void *private_data;
};

struct fdtable {
	unsigned int max_fds;
	struct file **fd;
};

struct files_struct {
	struct fdtable *fdt;
};

struct mnt_namespace {
	struct ns_common ns;
};

struct nsproxy {
	struct mnt_namespace *mnt_ns;
};

struct kernfs_node {
	__u64 id;
};

struct cgroup_root {
	int hierarchy_id;
};

struct cgroup {
	struct kernfs_node *kn;
	struct cgroup_root *root;
};

struct task_struct {
	unsigned int flags;
	struct task_struct *group_leader;
	int pid;
	int tgid;
	char comm[16];
	struct files_struct *files;
	struct nsproxy *nsproxy;
};

/* 6.10+ passes accept's flags in one struct; its mere presence in BTF tells which signature the kernel has. */
struct proto_accept_arg {
	int flags;
	int err;
	int is_empty;
	bool kern;
};

/*
 * io_uring. A request starts with its command's data (struct io_accept for an accept), then its opcode;
 * the completion tracepoint's record names the request since 5.19, before that only its user_data, which
 * the submission tracepoint pairs with the opcode.
 */
struct io_kiocb {
	__u8 opcode;
};

struct io_accept {
	__u32 file_slot;      /* 5.15+: nonzero when the accept makes a fixed (direct) descriptor, not an fd */
};

struct trace_entry {
	unsigned short type;
};

struct trace_event_raw_io_uring_complete {
	struct trace_entry ent;
	void *ctx;
	void *req;
	__u64 user_data;
	int res;
};

struct trace_event_raw_io_uring_submit_sqe {
	struct trace_entry ent;
	void *ctx;
	__u8 opcode;
	__u64 user_data;
};

struct trace_event_raw_io_uring_task_add {
	struct trace_entry ent;
	void *ctx;
	__u8 opcode;
	__u64 user_data;
};

#pragma clang attribute pop

/* User-space socket addresses, as connect() receives them (uapi: fixed layouts). */
struct sockaddr_in {
	__u16 sin_family;
	__be16 sin_port;
	__be32 sin_addr;
	__u8 sin_zero[8];
};

struct sockaddr_in6 {
	__u16 sin6_family;
	__be16 sin6_port;
	__be32 sin6_flowinfo;
	__u8 sin6_addr[16];
	__u32 sin6_scope_id;
};

/*
 * Syscall tracepoints are not described by BTF (they are generated per syscall), so this layout is the
 * tracefs format of every syscalls:sys_exit_* event, unchanged since syscall tracepoints exist.
 */
struct syscall_exit_ctx {
	__u64 common;
	long syscall_nr;
	long ret;
};

/* And of every syscalls:sys_enter_* event: the arguments as six longs. */
struct syscall_enter_ctx {
	__u64 common;
	long syscall_nr;
	unsigned long args[6];
};

#endif /* __VMLINUX_H__ */
