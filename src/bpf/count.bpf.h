/* SPDX-License-Identifier: GPL-2.0 */
/*
 * `tcpkit metrics`: the tracer's programs, built with TCPKIT_METRICS, count their events here instead of
 * sending them through the ring. Every path that decides what an event is (filters, owners, how a
 * connection ended, the stats) stays the tracer's own; only where a record would go changes. A record is
 * filled in a per-CPU scratch slot and added, when submitted, to the counters of its series in `series`.
 * User space sums nothing per event: it reads this map when scraped.
 */
#ifndef __COUNT_BPF_H
#define __COUNT_BPF_H

/* Upper bounds of a histogram's buckets, in ns; the bucket past the last is the count's. */
#define HIST_BOUNDS 16

/* The histograms, by what they time: their bounds are rodata written by user space, its one copy. */
enum hist_kind {
	HIST_HANDSHAKE = 0,
	HIST_QUEUE = 1,
	HIST_DURATION = 2,
	HIST_KINDS = 3,
};

const volatile __u64 hist_bounds[HIST_KINDS][HIST_BOUNDS] = {};

/* What a series counts: each event adds to one, its kind's. */
enum series_kind {
	SERIES_CONNECT = 1, /* connects established: a handshake histogram */
	SERIES_ACCEPT = 2,  /* accepts: an accept-queue histogram */
	SERIES_FAIL = 3,    /* failed connects, by errno (code) */
	SERIES_CLOSE = 4,   /* ends, by enum end_kind (code): a duration histogram, bytes, retransmits */
};

/* A series: one workload's events of one kind, one direction and one port. */
struct series_key {
	__u64 cgroup_id;
	__u16 port;      /* the local port of an accepted connection, the remote one of a connect */
	__u8 kind;       /* enum series_kind */
	__u8 direction;  /* enum direction; DIRECTION_UNKNOWN for the end of a connection tcpkit did not see open */
	__u16 code;      /* the errno of a failure, the enum end_kind of an end */
	__u16 unused;
};

struct series_value {
	__u64 count;
	__u64 sum_ns;                  /* of what the histogram times, over the events it has */
	__u64 timed;                   /* events in the histogram (a connect from before tcpkit has no handshake) */
	__u64 bytes_sent;
	__u64 bytes_received;
	__u64 retransmits;
	__u64 buckets[HIST_BOUNDS];    /* events at most the bound, and above the one before: not cumulative */
};

/*
 * One shared hash, added to with atomic adds: a per-CPU map would cost its size times the CPUs (a 64-CPU
 * node, 64 times), and an event adds to its series once per connection, not per packet. Sized from user
 * space (--max-series); a series the map has no room for is counted in series_dropped.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct series_key);
	__type(value, struct series_value);
} series SEC(".maps");

__u64 series_dropped = 0;

/* A series' first value: all zero, and in a global rather than on the stack, which it would overflow. */
const struct series_value new_series = {};

/*
 * Where records are filled: two slots per CPU, as a program can be interrupted once by another on the
 * same CPU (a softirq's state change in a task's), each reserving a record of its own. Programs run with
 * preemption off, so what uses a slot finishes before another use can start below it.
 */
struct scratch {
	__u32 depth;
	__u32 unused;
	struct event slots[2];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch);
} scratches SEC(".maps");

static __always_inline struct event *reserve_event(void)
{
	__u32 zero = 0;
	struct scratch *s = bpf_map_lookup_elem(&scratches, &zero);
	__u32 depth;

	if (!s)
		return NULL;
	depth = s->depth;
	if (depth >= 2) {
		__sync_fetch_and_add(&lost_events, 1);
		return NULL;
	}
	s->depth = depth + 1;
	return &s->slots[depth & 1];
}

static __always_inline void observe(struct series_value *v, enum hist_kind hist, __u64 ns)
{
	__u32 i;

	__sync_fetch_and_add(&v->timed, 1);
	__sync_fetch_and_add(&v->sum_ns, ns);
	for (i = 0; i < HIST_BOUNDS; i++) {
		if (ns <= hist_bounds[hist][i]) {
			__sync_fetch_and_add(&v->buckets[i], 1);
			return;
		}
	}
}

/* The series an event adds to, and its key; false for what no series counts. */
static __always_inline bool series_of(const struct event *e, struct series_key *key)
{
	key->cgroup_id = e->task.cgroup_id;
	switch (e->type) {
	case EVENT_CONNECT:
		key->kind = SERIES_CONNECT;
		key->direction = DIRECTION_OUT;
		key->port = e->dport;
		return true;
	case EVENT_ACCEPT:
		key->kind = SERIES_ACCEPT;
		key->direction = DIRECTION_IN;
		key->port = e->sport;
		return true;
	case EVENT_FAIL:
		key->kind = SERIES_FAIL;
		key->direction = DIRECTION_OUT;
		key->port = e->dport;
		key->code = e->error;
		return true;
	case EVENT_CLOSE:
		key->kind = SERIES_CLOSE;
		key->direction = e->stats.direction;
		/* Not seen open: its service's port is most likely the lower one (the other is ephemeral). */
		if (key->direction == DIRECTION_IN)
			key->port = e->sport;
		else if (key->direction == DIRECTION_OUT || e->dport < e->sport)
			key->port = e->dport;
		else
			key->port = e->sport;
		key->code = e->end;
		return true;
	}
	return false;
}

static __always_inline void count_event(const struct event *e)
{
	struct series_key key = {};
	struct series_value *v;

	if (!series_of(e, &key))
		return;
	v = bpf_map_lookup_elem(&series, &key);
	if (!v) {
		int err = map_result(bpf_map_update_elem(&series, &key, &new_series, BPF_NOEXIST));

		if (err && err != -EEXIST) {
			__sync_fetch_and_add(&series_dropped, 1);
			return;
		}
		v = bpf_map_lookup_elem(&series, &key);
		if (!v)
			return;
	}
	__sync_fetch_and_add(&v->count, 1);
	switch (e->type) {
	case EVENT_CONNECT:
		if (e->stats.present & STAT_HANDSHAKE)
			observe(v, HIST_HANDSHAKE, e->stats.handshake_ns);
		break;
	case EVENT_ACCEPT:
		if (e->stats.present & STAT_QUEUE)
			observe(v, HIST_QUEUE, e->stats.queue_ns);
		break;
	case EVENT_CLOSE:
		if (e->duration_ns != DURATION_UNKNOWN)
			observe(v, HIST_DURATION, e->duration_ns);
		__sync_fetch_and_add(&v->bytes_sent, e->bytes_sent);
		__sync_fetch_and_add(&v->bytes_received, e->bytes_received);
		if (e->stats.present & STAT_TRANSFER)
			__sync_fetch_and_add(&v->retransmits, e->stats.retransmits);
		break;
	}
}

static __always_inline void submit_event(struct event *e)
{
	__u32 zero = 0;
	struct scratch *s;

	count_event(e);
	s = bpf_map_lookup_elem(&scratches, &zero);
	if (s && s->depth)
		s->depth--;
}

#endif /* __COUNT_BPF_H */
