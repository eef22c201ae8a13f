/* SPDX-License-Identifier: GPL-2.0 */
/*
 * In-kernel filters and event plumbing shared by every tcpkit program. Scalar filters are rodata set
 * before load, so a disabled filter is pruned by the verifier and costs nothing; sets are maps or a bitmap.
 * Every filter runs before ring-buffer space is reserved.
 */
#ifndef __FILTER_BPF_H
#define __FILTER_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>
#include "tcpkit.h"

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define SOCK_STREAM 1
#define PF_IO_WORKER 0x00000010

/* errno values (asm-generic, the same on x86-64 and arm64). */
#define ENOENT 2
#define EBUSY 16
#define EEXIST 17
#define EPIPE 32
#define ECONNABORTED 103
#define ECONNRESET 104
#define EINPROGRESS 115
#define ECANCELED 125

const volatile __u32 targ_tgid = 0;        /* 0: any process */
const volatile bool filter_uid = false;
const volatile __u32 targ_uid = 0;
const volatile __u32 targ_netns = 0;       /* 0: any network namespace */
const volatile __u16 targ_family = 0;      /* 0: both families */
const volatile bool filter_ports = false;
const volatile bool ports_either_end = false; /* -P matches the remote port too (tracer), not only the local */
const volatile bool filter_cgroup = false; /* task's cgroup id must be a key of the --cgroupmap map */
const volatile bool filter_mntns = false;  /* task's mount ns must be a key of the --mntnsmap map */
/* Slots of cgroup_dir to check: 0, no filter; 1, --cgroup or --container; CGROUP_DIRS, --pod or --namespace. */
const volatile __u32 cgroup_dirs = 0;
/* One bit per port: a port list or range costs one load, whatever its length. */
const volatile __u64 targ_ports[PORT_BITMAP_WORDS] = {};

/*
 * Wake the reader only once this many bytes wait in the ring (user space sets a quarter of the ring);
 * otherwise it finds them at its next poll timeout, a few tens of milliseconds later. Waking it for
 * every event cost a context switch per event, which was most of tcpkit's overhead (measured: 0.95 wake-ups
 * and 9 us of CPU per accept). 0 wakes it for every event.
 */
const volatile __u64 wakeup_bytes = 0;

/* -S and JSON: records carry how good each connection was (struct conn_stats, conn.bpf.h). */
const volatile bool stats = false;

/* Events that found the ring buffer full; read by user space from .bss. */
__u64 lost_events = 0;

/*
 * Cgroup records that found it full: not events (a filter does not keep them out, so counting them as events
 * would make lost plus printed exceed what happened), but names that may be missing.
 */
__u64 lost_cgroups = 0;

/*
 * Entries the kernel refused to store in tcpkit's own maps (remember()): the events of those connections
 * may be missing or name no process. Read by user space from .bss, and reported as lost events are.
 */
__u64 unremembered = 0;

/* The errno of the last update so refused (negative), for the report to say why. */
__s64 unremembered_error = 0;

/* Keeps struct event in BTF so that the skeleton generates its Rust type. */
const struct event *unused_event __attribute__((unused));

/* Sized from user space (--ring-size); 256 KiB holds about 2000 events of 128 bytes (with the header; 200 with stats). */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} events SEC(".maps");

/*
 * The user's pinned maps (--cgroupmap, --mntnsmap, as in bcc: cgroup v2 id or mount namespace inode ->
 * anything) sit in slot 0 of a one-slot array of maps. Holding them this way, rather than replacing a map
 * of ours, keeps their names and lets the user change their contents while tcpkit runs.
 */
struct id_set {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__type(key, __u64);
	__type(value, __u64);
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, __u32);
	__array(values, struct id_set);
} cgroup_set SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, __u32);
	__array(values, struct id_set);
} mntns_set SEC(".maps");

/*
 * --cgroup and --container: slot 0 holds the directory. --pod and --namespace: each pod's directory, from
 * slot 0 on, kept by user space as pods come and go. The first empty slot ends the set. A kubelet node runs
 * 110 pods at most by default.
 */
#define CGROUP_DIRS 128

struct {
	__uint(type, BPF_MAP_TYPE_CGROUP_ARRAY);
	__uint(max_entries, CGROUP_DIRS);
	__type(key, __u32);
	__type(value, __u32);
} cgroup_dir SEC(".maps");

static __always_inline bool in_set(void *outer, __u64 id)
{
	__u32 zero = 0;
	void *set = bpf_map_lookup_elem(outer, &zero);

	return set && bpf_map_lookup_elem(set, &id);
}

/*
 * Since 5.11 the current task is a BTF pointer, read with plain loads; 5.10 reads it through
 * bpf_probe_read_kernel, a helper call per field. The test is a CO-RE relocation: on 5.10 the verifier
 * never reaches the newer helper.
 */
static __always_inline bool have_task_btf(void)
{
	return bpf_core_enum_value_exists(enum bpf_func_id, BPF_FUNC_get_current_task_btf);
}

static __always_inline __u32 current_mntns(void)
{
	struct task_struct *task;

	if (have_task_btf())
		return bpf_get_current_task_btf()->nsproxy->mnt_ns->ns.inum;
	task = (struct task_struct *)bpf_get_current_task();
	return BPF_CORE_READ(task, nsproxy, mnt_ns, ns.inum);
}

/* Whether the current task is in one of the cgroup_dir directories or below one. */
static __always_inline bool in_cgroup_dirs(void)
{
#pragma clang loop unroll(disable)
	for (__u32 i = 0; i < CGROUP_DIRS && i < cgroup_dirs; i++) {
		long under = bpf_current_task_under_cgroup(&cgroup_dir, i);

		if (under == 1)
			return true;
		if (under < 0) /* -EAGAIN: an empty slot, the end of the set */
			return false;
	}
	return false;
}

/*
 * Filters that depend only on the current task; call them first, they are the cheapest. A task that a
 * tracer remembers (the owner of a connection) is remembered only if it passed them then.
 */
static __always_inline bool task_wanted(__u64 pid_tgid)
{
	if (targ_tgid && (__u32)(pid_tgid >> 32) != targ_tgid)
		return false;
	if (filter_uid && (__u32)bpf_get_current_uid_gid() != targ_uid)
		return false;
	if (filter_cgroup && !in_set(&cgroup_set, bpf_get_current_cgroup_id()))
		return false;
	if (cgroup_dirs && !in_cgroup_dirs())
		return false;
	if (filter_mntns && !in_set(&mntns_set, current_mntns()))
		return false;
	return true;
}

/* True when some filter is about the task: then an event whose task is unknown cannot be shown. */
static __always_inline bool any_task_filter(void)
{
	return targ_tgid || filter_uid || filter_cgroup || cgroup_dirs || filter_mntns;
}

static __always_inline void current_task_info(struct task_info *t, __u64 pid_tgid)
{
	t->cgroup_id = bpf_get_current_cgroup_id();
	t->pid = pid_tgid >> 32;
	t->tid = (__u32)pid_tgid;
	t->uid = (__u32)bpf_get_current_uid_gid();
	t->mntns = current_mntns();
	if (have_task_btf()) {
		struct task_struct *task = bpf_get_current_task_btf();

		/* An io_uring worker thread (iou-wrk-N) works for its process: name the process. */
		if (task->flags & PF_IO_WORKER)
			task = task->group_leader;
		__builtin_memcpy(t->comm, task->comm, sizeof(t->comm));
	} else {
		bpf_get_current_comm(t->comm, sizeof(t->comm));
	}
}

static __always_inline bool port_in_set(__u16 port)
{
	return targ_ports[port / 64] & (1ULL << (port % 64));
}

/* The parts of a TCP socket that filters look at, read once. */
struct sock_key {
	__u32 netns;
	__u16 family;
	__u16 lport;
	__u16 rport;
};

/*
 * How a program reads a struct sock: the `btf` argument of what follows, a constant at every call site, so
 * each inlined copy keeps one way.
 *   SK_PROBED  any sk (from a syscall's fd table, a kretprobe) on any kernel: bpf_probe_read_kernel, a
 *              helper call per field, several times slower than a load;
 *   SK_BTF     a BTF pointer (a tp_btf or fexit argument): plain loads;
 *   SK_CAST    any sk made a read-only BTF pointer by bpf_rdonly_cast (6.2+, any program): plain loads
 *              too, which the kernel guards against a bad address as it does a probe.
 */
#define SK_PROBED 0
#define SK_BTF 1
#define SK_CAST 2

#define SK_READ(btf, sk, field) ((btf) ? (sk)->field : BPF_CORE_READ(sk, field))

/* Whether this kernel has bpf_rdonly_cast (SK_CAST); false is a constant the verifier prunes with. */
static __always_inline bool can_cast(void)
{
	return bpf_ksym_exists(bpf_rdonly_cast);
}

/*
 * The TCP socket around sk, read the way `btf` says: the verifier bounds a BTF pointer by its type, so the
 * fields beyond struct sock (inet_sport, is_mptcp, the byte counters) are plain loads only through a
 * tcp_sock pointer: bpf_skc_to_tcp_sock's (tracing programs; NULL for what is not a full TCP socket), or
 * a cast. NULL when reading through probes.
 */
static __always_inline const struct tcp_sock *tcp_of(const struct sock *sk, int btf)
{
	if (btf == SK_BTF)
		return (const struct tcp_sock *)bpf_skc_to_tcp_sock((void *)sk);
	if (btf == SK_CAST)
		return bpf_core_cast(sk, struct tcp_sock);
	return NULL;
}

/* An MPTCP subflow is a TCP socket inside the kernel; the application asked for MPTCP, not TCP. `tp` is a
 * BTF pointer from tcp_of(), or NULL to read sk through probes. */
static __always_inline bool is_mptcp_subflow(const struct sock *sk, const struct tcp_sock *tp)
{
	const struct tcp_sock *probed = (const struct tcp_sock *)sk;

	if (!bpf_core_field_exists(probed->is_mptcp))
		return false;
	if (tp)
		return BPF_CORE_READ_BITFIELD(tp, is_mptcp);
	return BPF_CORE_READ_BITFIELD_PROBED(probed, is_mptcp);
}

/* Reads the socket's identity; false if it is not a plain IPv4/IPv6 TCP stream socket. */
static __always_inline bool read_sock_key(const struct sock *sk, struct sock_key *key, int btf)
{
	const struct tcp_sock *tp = NULL;

	if (!sk)
		return false;
	if (SK_READ(btf, sk, sk_protocol) != IPPROTO_TCP || SK_READ(btf, sk, sk_type) != SOCK_STREAM)
		return false;
	if (btf) {
		tp = tcp_of(sk, btf);
		if (!tp)
			return false;
	}
	if (is_mptcp_subflow(sk, tp))
		return false;
	key->family = SK_READ(btf, sk, __sk_common.skc_family);
	if (key->family != AF_INET && key->family != AF_INET6)
		return false;
	/* Not skc_num: a socket going to CLOSE gives its port back (skc_num = 0) before the state change. */
	if (tp)
		key->lport = bpf_ntohs(((const struct inet_sock *)tp)->inet_sport);
	else
		key->lport = bpf_ntohs(BPF_CORE_READ((const struct inet_sock *)sk, inet_sport));
	key->rport = bpf_ntohs(SK_READ(btf, sk, __sk_common.skc_dport));
	if (btf)
		key->netns = sk->__sk_common.skc_net.net->ns.inum;
	else
		key->netns = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
	return true;
}

/* The filters about the socket: family, network namespace, ports. */
static __always_inline bool sock_wanted(const struct sock_key *key)
{
	if (targ_family && key->family != targ_family)
		return false;
	if (targ_netns && key->netns != targ_netns)
		return false;
	if (filter_ports && !port_in_set(key->lport) && !(ports_either_end && port_in_set(key->rport)))
		return false;
	return true;
}

/*
 * A record carries its connection's stats only when they are asked for: without them the ring holds as
 * many events as before they existed, and the reader copies no more. A constant on each path the verifier
 * walks, as the ring wants, since `stats` is.
 */
#define EVENT_SIZE (stats ? sizeof(struct event) : __builtin_offsetof(struct event, stats))

/* What one event takes in the ring: the kernel's 8-byte record header, then the event rounded up to 8. */
#define EVENT_FOOTPRINT (8 + ((EVENT_SIZE + 7) / 8) * 8)

/*
 * Wakes the reader once, with the event that takes the waiting data past wakeup_bytes, rather than with
 * every event from there until the reader has run: each wake-up interrupts this CPU (irq_work), a trap to
 * the hypervisor in a VM, and at 80,000 events/s a few events a time slipped in before the reader drained.
 * Two events reserved at once on two CPUs can both step over that window; from half the ring on, every
 * event wakes the reader, so a missed wake-up costs nothing but those interrupts.
 */
static __always_inline __u64 ring_wakeup_flag(void)
{
	__u64 waiting;

	if (!wakeup_bytes)
		return 0;
	waiting = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA);
	if (waiting >= 2 * wakeup_bytes || (waiting >= wakeup_bytes && waiting < wakeup_bytes + EVENT_FOOTPRINT))
		return BPF_RB_FORCE_WAKEUP;
	return BPF_RB_NO_WAKEUP;
}

/*
 * bpf_map_update_elem, counted when it fails: a full map refuses an entry, and so can a hash map's bucket
 * lock (busy on this CPU, or, with the kernel's resilient spin locks, a deadlock or a timeout); what tcpkit
 * could not remember costs events later: never silently. BPF_NOEXIST's -EEXIST is an answer, not a failure.
 */
/*
 * A map helper's result as the int the kernel's function returned: 5.10 and 6.1 hand it back zero-extended
 * (-EEXIST reads 4294967279), so a 64-bit compare with -EEXIST fails there. Seen in the qemu matrix, as
 * BPF_NOEXIST's answers counted as refused updates.
 */
static __always_inline int map_result(long ret)
{
	return (int)ret;
}

static __always_inline void not_remembered(int err)
{
	unremembered_error = err;
	__sync_fetch_and_add(&unremembered, 1);
}

#define remember(map, key, value, flags)                                                                 \
	({                                                                                               \
		int __err = map_result(bpf_map_update_elem(map, key, value, flags));                     \
		if (__err && __err != -EEXIST)                                                           \
			not_remembered(__err);                                                           \
		__err;                                                                                   \
	})

/* A ring-buffer slot of `size` bytes, or NULL (counted in `lost`) when the ring is full. */
static __always_inline void *reserve_record(__u64 size, __u64 *lost)
{
	void *r = bpf_ringbuf_reserve(&events, size, 0);

	if (!r)
		__sync_fetch_and_add(lost, 1);
	return r;
}

/* Fills every field of e for sk; the close and fail fields are zero, for the caller to set. */
static __always_inline void fill_sock_event(struct event *e, const struct sock *sk, const struct sock_key *key,
					    const struct task_info *task, __u8 task_source, __u8 type, __u8 hook,
					    int btf)
{
	e->ts_ns = bpf_ktime_get_ns();
	e->task = *task;
	e->netns = key->netns;
	e->sport = key->lport;
	e->dport = key->rport;
	e->family = key->family;
	e->type = type;
	e->hook = hook;
	e->task_source = task_source;
	e->end = 0;
	e->error = 0;
	e->duration_ns = DURATION_UNKNOWN;
	e->bytes_sent = 0;
	e->bytes_received = 0;
	if (stats)
		__builtin_memset(&e->stats, 0, sizeof(e->stats));
	if (key->family == AF_INET) {
		__builtin_memset(e->saddr, 0, sizeof(e->saddr));
		__builtin_memset(e->daddr, 0, sizeof(e->daddr));
		*(__u32 *)e->saddr = SK_READ(btf, sk, __sk_common.skc_rcv_saddr);
		*(__u32 *)e->daddr = SK_READ(btf, sk, __sk_common.skc_daddr);
	} else if (btf) {
		__builtin_memcpy(e->saddr, &sk->__sk_common.skc_v6_rcv_saddr, sizeof(e->saddr));
		__builtin_memcpy(e->daddr, &sk->__sk_common.skc_v6_daddr, sizeof(e->daddr));
	} else {
		/* Sized by the destination: BPF_CORE_READ_INTO on an array would copy one byte. */
		bpf_core_read(e->saddr, sizeof(e->saddr), &sk->__sk_common.skc_v6_rcv_saddr);
		bpf_core_read(e->daddr, sizeof(e->daddr), &sk->__sk_common.skc_v6_daddr);
	}
}

static __always_inline void submit_record(void *r)
{
	bpf_ringbuf_submit(r, ring_wakeup_flag());
}

#ifdef TCPKIT_METRICS
#include "count.bpf.h"
#else
/* A connection's event: a record in the ring, printed by user space. */
static __always_inline struct event *reserve_event(void)
{
	return reserve_record(EVENT_SIZE, &lost_events);
}

static __always_inline void submit_event(struct event *e)
{
	submit_record(e);
}
#endif

/* A cgroup record (EVENT_CGROUP): the record's head up to its stats, then the cgroup's path and its NUL. */
#define CGROUP_PATH_MAX 512
#define CGROUP_RECORD_SIZE (__builtin_offsetof(struct event, stats) + CGROUP_PATH_MAX)

/*
 * A cgroup made in the v2 hierarchy (hierarchy 0, whose ids events carry) while tcpkit runs: its id and
 * path, in the ring ahead of any event of a task in it. User space names a cgroup by its id when it prints
 * an event, and a container that has ended by then (`podman run --rm`, a Kubernetes Job) has no cgroup left
 * to look at: this record names it anyway. Rare (one per cgroup made), so unfiltered; loaded only when
 * records name cgroups (JSON, -C).
 */
SEC("tp_btf/cgroup_mkdir")
int BPF_PROG(cgroup_made, struct cgroup *cgrp, const char *path)
{
	struct event *e;

	if (BPF_CORE_READ(cgrp, root, hierarchy_id) != 0)
		return 0;
	e = reserve_record(CGROUP_RECORD_SIZE, &lost_cgroups);
	if (!e)
		return 0;
	e->type = EVENT_CGROUP;
	e->task.cgroup_id = BPF_CORE_READ(cgrp, kn, id);
	bpf_probe_read_kernel_str((char *)e + __builtin_offsetof(struct event, stats), CGROUP_PATH_MAX, path);
	submit_record(e);
	return 0;
}

/*
 * A v2 cgroup removed: user space may forget it once the events that can still name it are printed (a close
 * that waited for CLOSE can come after the owner's cgroup is gone), so that a node making cgroups all day
 * does not grow tcpkit's cache. The record's head only, type EVENT_CGROUP_GONE and the id.
 */
SEC("tp_btf/cgroup_rmdir")
int BPF_PROG(cgroup_removed, struct cgroup *cgrp, const char *path)
{
	struct event *e;

	if (BPF_CORE_READ(cgrp, root, hierarchy_id) != 0)
		return 0;
	e = reserve_record(__builtin_offsetof(struct event, stats), &lost_cgroups);
	if (!e)
		return 0;
	e->type = EVENT_CGROUP_GONE;
	e->task.cgroup_id = BPF_CORE_READ(cgrp, kn, id);
	submit_record(e);
	return 0;
}

/*
 * The kernel runs a tracing program at most once at a time on a CPU: a state change that comes while the
 * program is running there (a softirq, handling packets or a TCP timer, that interrupted it in a task) is
 * skipped, counted only in the program's recursion_misses, and its event is lost. Measured on 6.18: 468
 * state changes skipped while orphaned connections retransmitted from timers beside connect() and close()
 * in tasks, and a close record lost in CI. So every state change has a second program, attached after the
 * first, which takes exactly the changes the first was skipped for. Softirqs do not nest, and hard
 * interrupts change no TCP state, so a change interrupts at most one run: the second program takes it when
 * the first is mid-run below it (`first_running`), or when the first's last finished change is not this one
 * (it was skipped before setting or after clearing the flag). The first records each change it finishes in
 * `done`, which the second program's run for that change clears; a second slot holds a change finished
 * above a lower one whose second run has not come yet.
 */
struct change_id {
	__u64 sk;
	__u32 change; /* old << 8 | new */
};

struct change_guard {
	__u64 first_running;
	struct change_id done[2];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct change_guard);
} change_guards SEC(".maps");

static __always_inline struct change_guard *change_guard(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&change_guards, &zero);
}

static __always_inline void first_begins(struct change_guard *g)
{
	if (g)
		g->first_running = 1;
}

static __always_inline void first_ends(struct change_guard *g, const struct sock *sk, int old, int new)
{
	struct change_id me = { .sk = (__u64)sk, .change = (__u32)(old << 8 | new) };

	if (!g)
		return;
	if (!g->done[0].sk) {
		g->done[0] = me;
		g->done[1].sk = 0; /* left by a second run the kernel skipped: stale now */
	} else {
		g->done[1] = me;
	}
	g->first_running = 0;
}

/* Whether the second program takes this change: the first program was skipped for it. */
static __always_inline bool second_takes(struct change_guard *g, const struct sock *sk, int old, int new)
{
	__u32 change = old << 8 | new;

	if (!g)
		return false;
	if (g->first_running)
		return true;
	if (g->done[1].sk == (__u64)sk && g->done[1].change == change) {
		g->done[1].sk = 0;
		return false;
	}
	if (g->done[0].sk == (__u64)sk && g->done[0].change == change) {
		g->done[0].sk = 0;
		return false;
	}
	return true;
}

/*
 * The pair of programs for a state change: NAME runs HANDLER(sk, old, new) for every change it is not skipped
 * for; NESTED for the ones it is.
 */
#define STATE_CHANGE_PROGRAMS(name, nested, handler)                                                     \
	SEC("tp_btf/inet_sock_set_state")                                                                \
	int BPF_PROG(name, const struct sock *sk, int old, int new)                                      \
	{                                                                                                \
		struct change_guard *g = change_guard();                                                 \
                                                                                                         \
		first_begins(g);                                                                         \
		handler(sk, old, new);                                                                   \
		first_ends(g, sk, old, new);                                                             \
		return 0;                                                                                \
	}                                                                                                \
	SEC("tp_btf/inet_sock_set_state")                                                                \
	int BPF_PROG(nested, const struct sock *sk, int old, int new)                                    \
	{                                                                                                \
		if (second_takes(change_guard(), sk, old, new))                                          \
			handler(sk, old, new);                                                           \
		return 0;                                                                                \
	}

#ifdef TCPKIT_FLOOR
/*
 * The benchmark's floor (cargo feature bench-floor, scripts/bench.sh --floor; never in a package): each hook
 * that prints reserves, zeroes and submits a record of its type, with no map, no read of the socket or the
 * task. What is left is the cost of the hooks themselves, the ring and the reader: what no tracer built
 * on these hooks can go below.
 */
static __always_inline int floor_event(__u8 type)
{
	struct event *e = reserve_event();

	if (!e)
		return 0;
	__builtin_memset(e, 0, __builtin_offsetof(struct event, stats));
	e->type = type;
	e->family = AF_INET;
	submit_event(e);
	return 0;
}
#endif

#endif /* __FILTER_BPF_H */
