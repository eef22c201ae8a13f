/* SPDX-License-Identifier: GPL-2.0 */
/*
 * What tcpkit remembers per connection (the owners map), and what it reads from a socket about how good the
 * connection was (-S and JSON: the stats rodata switch). Shared by the tracer, which keeps an entry for each
 * connection it follows, and by `tcpkit accept`, which with stats on keeps one from a connection's completed
 * handshake to its accept, for the queue wait.
 */
#ifndef __CONN_BPF_H
#define __CONN_BPF_H

#include "filter.bpf.h"

/* What tcpkit knows of a connection it saw begin: the value of the owners map. */
struct owner {
	struct task_info task; /* the owner; once closed with stats on, the task its X names */
	__u64 start_ns;     /* connect(), or the completed handshake of an accepted connection; 0: not seen */
	__u64 acked_base;   /* bytes_acked once established: the SYN that a connecting end's count includes */
	__u64 ended_ns;     /* when it ended, if it ended before any process accepted it */
	bool has_task;      /* false: a handshake seen (lifespan, stats) that no wanted task has accepted yet */
	__u8 ended_from;    /* the state it ended from, if it ended before its accept; 0 otherwise */
	__u8 closed_end;    /* stats: closed, its X waits for CLOSE: enum end_kind, as the close made it */
	__u8 closed_source; /* stats: enum task_source of `task` for that X */
	__u8 direction;     /* enum direction, once its C or A was reported: its X says it */
};

/*
 * Socket -> what is known of its connection, for connections that pass the task filters. An entry lives
 * from connect()/accept() (with lifespan or stats on: from the completed handshake) to the change to CLOSE,
 * or, for a connection reset while it waited to be accepted, to its accept. A plain hash, not an LRU one:
 * the kernel's LRU evicts entries long before it is full when entries come and go fast on some CPUs (its
 * free nodes wait in other CPUs' lists, and a CPU short of them takes live ones), and an entry evicted is
 * a connection's events lost without a trace: seen in CI as a close record missing while 100,000 refused
 * connects ran beside it. A full map refuses the update instead, which remember() counts and tcpkit reports.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct owner);
} owners SEC(".maps");

/*
 * A hash map's update or delete marks the map busy on its CPU while it runs (map_locked, 5.9+), and one
 * that comes then, from a program that interrupted it there (a softirq's state change, say, in the midst
 * of a task's accept), fails with EBUSY: measured in the qemu matrix on 5.10 and 6.1, a handful per run.
 * Such an update or delete is kept here instead, one per CPU, and done by the interrupted one as soon as
 * its own is done: it is the only thing that can hold the map busy on that CPU, and it always comes back.
 */
enum owner_op {
	OWNER_NONE = 0,
	OWNER_UPDATE = 1,
	OWNER_DELETE = 2,
};

struct deferred_owner {
	__u64 id;
	struct owner value;
	__u64 flags;
	__u32 op; /* enum owner_op */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct deferred_owner);
} deferred_owners SEC(".maps");

/* Keeps an operation that found the map busy; false when the CPU's slot is taken (it is counted then). */
static __always_inline bool defer_owner(__u32 op, __u64 id, const struct owner *value, __u64 flags)
{
	__u32 zero = 0;
	struct deferred_owner *d = bpf_map_lookup_elem(&deferred_owners, &zero);

	if (!d || d->op != OWNER_NONE)
		return false;
	d->id = id;
	if (value)
		d->value = *value;
	d->flags = flags;
	d->op = op;
	return true;
}

/* Does the operation kept on this CPU, if any: the map is no longer busy here once ours is done. */
static __always_inline void apply_deferred_owner(void)
{
	__u32 zero = 0;
	struct deferred_owner *d = bpf_map_lookup_elem(&deferred_owners, &zero);
	__u32 op;

	int err;

	if (!d || d->op == OWNER_NONE)
		return;
	op = d->op;
	d->op = OWNER_NONE; /* free for what interrupts this one */
	if (op == OWNER_UPDATE)
		err = map_result(bpf_map_update_elem(&owners, &d->id, &d->value, d->flags));
	else
		err = map_result(bpf_map_delete_elem(&owners, &d->id));
	if (err == -EBUSY && d->op == OWNER_NONE) {
		d->op = op; /* still busy (another part of the map, held below this one): the next one does it */
		return;
	}
	if (err && err != -EEXIST && !(op == OWNER_DELETE && err == -ENOENT))
		not_remembered(err);
}

/* remember() for owners: an update that finds the map busy is done later (deferred_owners). */
static __always_inline int remember_owner(__u64 id, const struct owner *value, __u64 flags)
{
	int err = map_result(bpf_map_update_elem(&owners, &id, value, flags));

	if (err == -EBUSY && defer_owner(OWNER_UPDATE, id, value, flags))
		return 0;
	if (err && err != -EEXIST)
		not_remembered(err);
	else
		apply_deferred_owner();
	return err;
}

/* A connection forgotten; if the map is busy, as soon as it is not (an entry left would never go). */
static __always_inline void forget_owner(__u64 id)
{
	if (map_result(bpf_map_delete_elem(&owners, &id)) == -EBUSY) {
		if (!defer_owner(OWNER_DELETE, id, NULL, 0))
			not_remembered(-EBUSY);
		return;
	}
	apply_deferred_owner();
}

/* SYN_RECV -> ESTABLISHED: an accepted connection's life, and its wait in the accept queue, start here. */
static __always_inline void handshake_done(const struct sock *sk)
{
	struct owner owner = { .start_ns = bpf_ktime_get_ns() };
	struct sock_key key = {};
	__u64 id = (__u64)sk;

	if (!read_sock_key(sk, &key, true) || !sock_wanted(&key))
		return;
	remember_owner(id, &owner, BPF_NOEXIST);
}

/* A tcp_sock field, read as tcp_of() allows: a plain load through tp, else through a probe. */
#define TCP_READ(tp, sk, field) ((tp) ? (tp)->field : BPF_CORE_READ((const struct tcp_sock *)(sk), field))

/* The listener's accept queue, as an accept found it. */
struct backlog {
	__u32 len;     /* connections waiting, the accepted one included */
	__u32 max;
	bool known;    /* false: the listener was not seen (an accept() that began before tcpkit, io_uring) */
};

/* The handshake of a connect that ended it (established or failed) now: from its connect() call. */
static __always_inline void fill_handshake(struct event *e, const struct sock *sk, int btf, const struct owner *owner)
{
	const struct tcp_sock *tp = tcp_of(sk, btf);

	if (!stats || !owner || !owner->start_ns)
		return;
	e->stats.handshake_ns = e->ts_ns - owner->start_ns;
	/* Before ESTABLISHED, the only segment a connecting socket sends again is its SYN. */
	e->stats.syn_retransmits = TCP_READ(tp, sk, total_retrans);
	e->stats.present |= STAT_HANDSHAKE;
}

/*
 * An accept: how long the connection waited complete in the queue (since established_ns, from
 * handshake_done's entry; 0 when tcpkit did not see the handshake), and how full the queue was.
 */
static __always_inline void fill_accept(struct event *e, __u64 established_ns, const struct backlog *queue)
{
	if (!stats)
		return;
	if (established_ns && established_ns <= e->ts_ns) {
		e->stats.queue_ns = e->ts_ns - established_ns;
		e->stats.present |= STAT_QUEUE;
	}
	if (queue && queue->known) {
		e->stats.backlog = queue->len;
		e->stats.backlog_max = queue->max;
		e->stats.present |= STAT_BACKLOG;
	}
}

/* The transfer counters of a connection as the kernel keeps them on its socket (a close). */
static __always_inline void fill_transfer(struct event *e, const struct sock *sk, int btf)
{
	const struct tcp_sock *tp = tcp_of(sk, btf);
	const struct tcp_sock *probed = (const struct tcp_sock *)sk;
	struct conn_stats *s = &e->stats;

	if (!stats)
		return;
	s->rtt_us = TCP_READ(tp, sk, srtt_us) >> 3;
	s->rtt_var_us = TCP_READ(tp, sk, mdev_us) >> 2;
	s->min_rtt_us = TCP_READ(tp, sk, rtt_min.s[0].v);
	s->retransmits = TCP_READ(tp, sk, total_retrans);
	s->segs_out = TCP_READ(tp, sk, segs_out);
	s->segs_in = TCP_READ(tp, sk, segs_in);
	s->present |= STAT_TRANSFER;
	if (bpf_core_field_exists(probed->bytes_retrans)) {
		s->retransmitted_bytes = TCP_READ(tp, sk, bytes_retrans);
		s->present |= STAT_RETRANS_BYTES;
	}
	if (bpf_core_field_exists(probed->total_rto)) {
		s->rto_count = TCP_READ(tp, sk, total_rto);
		s->present |= STAT_RTO;
	}
}

#endif /* __CONN_BPF_H */
