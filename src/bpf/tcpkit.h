/* SPDX-License-Identifier: GPL-2.0 */
/* The one event record, shared by the BPF programs and (through the generated skeleton types) by Rust. */
#ifndef __TCPKIT_H
#define __TCPKIT_H

#define TASK_COMM_LEN 16
#define PORT_BITMAP_WORDS (65536 / 64)

enum event_type {
	EVENT_CONNECT = 1,
	EVENT_ACCEPT = 2,
	EVENT_CLOSE = 3,
	EVENT_FAIL = 4,       /* a connect that failed (--failed) */
	EVENT_CGROUP = 5,     /* not a connection's: a cgroup made (filter.bpf.h, cgroup_made) */
	EVENT_CGROUP_GONE = 6, /* not a connection's: a cgroup removed (filter.bpf.h, cgroup_removed) */
};

/* How a connection ended (close events, with lifespan on); 0 when not known. */
enum end_kind {
	END_CLOSE = 1,        /* this end closed or shut down first: its FIN went first */
	END_PEER = 2,         /* the peer closed first; this end closed after, out of CLOSE_WAIT */
	END_ABORT = 3,        /* this end sent a reset: SO_LINGER 0, unread data, socket destroy */
	END_RESET = 4,        /* the peer's reset */
	END_TIMEOUT = 5,      /* retransmission, keepalive or TCP_USER_TIMEOUT gave up */
};

/* Which end of a connection the traced host is: it connected (out) or accepted (in). */
enum direction {
	DIRECTION_UNKNOWN = 0, /* a connection tcpkit did not see open */
	DIRECTION_OUT = 1,
	DIRECTION_IN = 2,
};

/* duration_ns of a connection whose start tcpkit did not see. */
#define DURATION_UNKNOWN (~0ULL)

/* Which kind of hook produced an event: fentry/fexit, kprobe/kretprobe, or tracepoints only. */
enum hook_kind {
	HOOK_FENTRY = 1,
	HOOK_KPROBE = 2,
	HOOK_TRACEPOINT = 3,
};

/* Whose task_info an event carries. */
enum task_source {
	TASK_CURRENT = 1, /* the task the hook ran in: it accepted, or closed, the socket */
	TASK_OWNER = 2,   /* remembered from connect() or accept(): C events, and X when the network ended it */
	TASK_UNKNOWN = 3, /* X of a connection made before tcpkit started and ended by the network */
};

/* Which conn_stats fields the kernel filled; the others are unknown (JSON null). */
enum stat_bits {
	STAT_HANDSHAKE = 1 << 0,      /* handshake_ns, syn_retransmits */
	STAT_QUEUE = 1 << 1,          /* queue_ns */
	STAT_BACKLOG = 1 << 2,        /* backlog, backlog_max */
	STAT_TRANSFER = 1 << 3,       /* rtt_us, rtt_var_us, min_rtt_us, retransmits, segs_out, segs_in */
	STAT_RETRANS_BYTES = 1 << 4,  /* retransmitted_bytes (tcp_sock.bytes_retrans, 4.19+) */
	STAT_RTO = 1 << 5,            /* rto_count (tcp_sock.total_rto, 6.7+) */
};

/*
 * How good a connection was (-S, and JSON): read only when asked. C and F carry the handshake, A the
 * accept queue, X the transfer counters, read when the socket reaches CLOSE.
 */
struct conn_stats {
	__u32 present;             /* enum stat_bits; first, in the cache line the other fields share */
	__u32 syn_retransmits;
	__u32 backlog;             /* the listener's accept queue at that accept, this connection included */
	__u32 backlog_max;
	__u32 rtt_us;              /* smoothed RTT (srtt_us >> 3), as ss and TCP_INFO show it */
	__u32 rtt_var_us;          /* mdev_us >> 2 */
	__u32 min_rtt_us;
	__u32 retransmits;         /* segments sent again over the connection's life (total_retrans) */
	__u32 rto_count;           /* retransmission timeouts */
	__u32 segs_out;
	__u32 segs_in;
	__u8 direction;            /* close events: enum direction, as the connection's open was reported */
	__u8 unused[3];
	__u64 handshake_ns;        /* connect() to ESTABLISHED, or to the failure */
	__u64 queue_ns;            /* the completed handshake to the accept() that took it */
	__u64 retransmitted_bytes;
};

/* A task as filters and events see it; also the value of the tracer's socket -> owner map. */
struct task_info {
	__u64 cgroup_id;      /* cgroup v2 id */
	__u32 pid;            /* thread group id: what users call the PID */
	__u32 tid;
	__u32 uid;
	__u32 mntns;          /* inode number of the mount namespace */
	__u8 comm[TASK_COMM_LEN];
};

struct event {
	__u64 ts_ns;          /* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
	struct task_info task;
	__u32 netns;          /* inode number of the socket's network namespace */
	__u8 saddr[16];       /* local address; IPv4 uses the first 4 bytes */
	__u8 daddr[16];       /* remote address */
	__u16 sport;          /* local port, host order */
	__u16 dport;          /* remote port, host order */
	__u16 family;         /* AF_INET or AF_INET6 */
	__u8 type;            /* enum event_type */
	__u8 hook;            /* enum hook_kind */
	__u8 task_source;     /* enum task_source */
	__u8 end;             /* close events with lifespan on: enum end_kind */
	__u16 error;          /* fail events: the errno */
	__u64 duration_ns;    /* close events with lifespan on; DURATION_UNKNOWN */
	__u64 bytes_sent;     /* close events with lifespan on: bytes the peer acknowledged */
	__u64 bytes_received; /* close events with lifespan on: bytes that arrived in order */
	struct conn_stats stats; /* only with stats on: without, the record ends here (EVENT_SIZE) */
};

#endif /* __TCPKIT_H */
