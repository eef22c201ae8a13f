// SPDX-License-Identifier: GPL-2.0
/*
 * tcpkit tracer: connect (C), accept (A) and close (X) of established TCP connections.
 *
 * sock:inet_sock_set_state is the one source of connection state, on every kernel and backend: it is a
 * stable tracepoint, cheaper than a probe, and it sees every way a connection ends (close, shutdown, reset,
 * timeout), which a tcp_close hook does not. What a state change cannot say is who: it runs in softirq
 * for SYN_SENT -> ESTABLISHED and for resets. So the task is remembered per socket (the owners map) where it
 * is certain, and never taken from whatever task softirq interrupted:
 *   C  CLOSE -> SYN_SENT runs inside connect(), in the connecting task, with the socket locked: remember
 *      it; report at SYN_SENT -> ESTABLISHED with that task. A connect that fails never gets there and its
 *      owner is forgotten at -> CLOSE. Keyed by socket, so an AF_INET6 socket connecting to an IPv4-mapped
 *      address (tcp_v6_connect calling tcp_v4_connect) is one connect like any other.
 *   A  the accept hooks of accept.bpf.h, in the accepting task; the task is remembered as the owner.
 *   X  the change out of ESTABLISHED or CLOSE_WAIT into FIN_WAIT1, LAST_ACK or CLOSE: exactly once per
 *      connection. If a task holds the socket lock, that task is closing it (close(), shutdown(), exit, or
 *      socket-destroy) and is reported; otherwise the network ended it (reset, timeout) and the owner is.
 *      A connection reset while it waits in a listener's queue has no process yet: its accept reports
 *      it, right after the A, with the accepting task.
 *   F  (--failed) a connect that failed. After the SYN the network says so: SYN_SENT -> CLOSE, with the error
 *      the kernel wrote into sk_err just before (refused, timed out, unreachable), and the owner remembered
 *      at connect(). Before any SYN (no route, no free local port) only connect()'s return value says so:
 *      the syscall tracepoints remember each connect() call of a TCP socket and report its error.
 * With lifespan on (-L, or JSON), an X also says how the connection ended (from the state it left and
 * sk_err), how long it lived (the owner's start: connect(), or the completed handshake of an accepted
 * connection) and the bytes it carried (the kernel's own per-socket counters).
 */
#include "conn.bpf.h"

char LICENSE[] SEC("license") = "GPL";

#define TCP_ESTABLISHED 1
#define TCP_SYN_SENT 2
#define TCP_SYN_RECV 3
#define TCP_FIN_WAIT1 4
#define TCP_FIN_WAIT2 5
#define TCP_CLOSE 7
#define TCP_CLOSE_WAIT 8
#define TCP_LAST_ACK 9
#define TCP_CLOSING 11

const volatile bool report_failures = false; /* --failed */
const volatile bool lifespan = false;        /* -L or JSON: how, when and with how many bytes X ended */

/* Whether what happens from a connection's start on is remembered: its lifespan or its stats need it. */
static __always_inline bool track_start(void)
{
	return lifespan || stats;
}

/*
 * A connect() call in progress on a TCP socket (--failed): where it asked to go, and what became of it. The
 * address stays in the caller's memory until the call fails: nearly every call succeeds, and reading it at
 * every entry cost two reads of user memory per connect.
 */
struct connect_call {
	__u64 sk;
	__u64 uaddr;           /* the caller's struct sockaddr */
	__u16 family;          /* the socket's */
	bool reached_syn_sent; /* its SYN went out: from here on the state change reports a failure */
	bool failed_inside;    /* it reached SYN_SENT, then failed inside connect() (no free local port) */
};

/* Where a failed connect() asked to go. */
struct connect_target {
	__u8 daddr[16];        /* as the socket's family spells it: IPv4 in the first 4 bytes, or IPv4-mapped */
	__u16 dport;
};

/*
 * Thread -> its connect() call in progress; an entry lives from the syscall's entry to its exit. Not an LRU
 * map, whose early evictions would drop other threads' calls (see owners).
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct connect_call);
} connect_calls SEC(".maps");

static __always_inline bool is_plain_tcp(const struct sock *sk)
{
	const struct tcp_sock *tp = tcp_of(sk, SK_BTF);

	return sk->sk_type == SOCK_STREAM && tp && !is_mptcp_subflow(sk, tp);
}

/* The connect() call of the current thread, if it is on this socket. */
static __always_inline struct connect_call *current_connect_call(const struct sock *sk)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct connect_call *call = bpf_map_lookup_elem(&connect_calls, &tid);

	return call && call->sk == (__u64)sk ? call : NULL;
}

/* CLOSE -> SYN_SENT: inside connect(), in the connecting task. */
static __always_inline void connect_started(const struct sock *sk)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct owner owner = { .has_task = true };
	__u64 id = (__u64)sk;

	if (!task_wanted(pid_tgid) || !is_plain_tcp(sk))
		return;
	current_task_info(&owner.task, pid_tgid);
	if (track_start())
		owner.start_ns = bpf_ktime_get_ns();
	remember_owner(id, &owner, BPF_ANY);
	if (report_failures) {
		struct connect_call *call = current_connect_call(sk);

		if (call)
			call->reached_syn_sent = true;
	}
}

/* Bytes the peer acknowledged; 0 for what tcp_of() does not see as a TCP socket. */
static __always_inline __u64 bytes_acked(const struct sock *sk)
{
	const struct tcp_sock *tp = tcp_of(sk, SK_BTF);

	return tp ? tp->bytes_acked : 0;
}

/* SYN_SENT -> ESTABLISHED: usually in softirq, so the task is the one remembered at connect(). */
static __always_inline void connect_established(const struct sock *sk)
{
	__u64 id = (__u64)sk;
	struct owner *owner = bpf_map_lookup_elem(&owners, &id);
	struct sock_key key = {};
	struct event *e;

	if (!owner || !owner->has_task) /* filtered out, or connect() began before tcpkit started */
		return;
	if (lifespan)
		owner->acked_base = bytes_acked(sk);
	if (!read_sock_key(sk, &key, true) || !sock_wanted(&key))
		return;
	e = reserve_event();
	if (!e)
		return;
	fill_sock_event(e, sk, &key, &owner->task, TASK_OWNER, EVENT_CONNECT, HOOK_TRACEPOINT, SK_BTF);
	fill_handshake(e, sk, SK_BTF, owner);
	submit_event(e);
	owner->direction = DIRECTION_OUT;
}

/*
 * SYN_SENT -> CLOSE (--failed): the connect failed, or was given up. A reset, a timeout or an ICMP error
 * writes sk_err before the change; with none, either connect() itself failed after making the socket
 * SYN_SENT (no free local port: its syscall exit reports that, with the errno it returns) or the
 * application closed the socket while connecting, which is reported as ECANCELED.
 */
static __always_inline void connect_failed(const struct sock *sk)
{
	struct task_info unknown = {};
	struct sock_key key = {};
	__u64 id = (__u64)sk;
	struct owner *owner;
	struct event *e;
	int err = sk->sk_err;

	if (!err) {
		struct connect_call *call = current_connect_call(sk);

		if (call) {
			call->failed_inside = true;
			return;
		}
		err = ECANCELED;
	}
	if (!read_sock_key(sk, &key, true) || !sock_wanted(&key))
		return;
	owner = bpf_map_lookup_elem(&owners, &id);
	if ((!owner || !owner->has_task) && any_task_filter())
		return;
	e = reserve_event();
	if (!e)
		return;
	if (owner && owner->has_task)
		fill_sock_event(e, sk, &key, &owner->task, TASK_OWNER, EVENT_FAIL, HOOK_TRACEPOINT, SK_BTF);
	else
		fill_sock_event(e, sk, &key, &unknown, TASK_UNKNOWN, EVENT_FAIL, HOOK_TRACEPOINT, SK_BTF);
	e->error = err;
	fill_handshake(e, sk, SK_BTF, owner);
	submit_event(e);
}

static __always_inline bool held_by_a_task(const struct sock *sk)
{
	return sk->sk_lock.owned;
}

/* How a connection ended, from the state it went to and the error the kernel set on the way. */
static __always_inline __u8 end_kind(int new, int err)
{
	if (new == TCP_FIN_WAIT1)
		return END_CLOSE;
	if (new == TCP_LAST_ACK)
		return END_PEER;
	switch (err) { /* to CLOSE: tcp_reset, tcp_write_err and tcp_abort write it first */
	case 0:
	case ECONNABORTED:
		return END_ABORT;
	case ECONNRESET:
	case EPIPE:
		return END_RESET;
	default:
		return END_TIMEOUT;
	}
}

/* Whether the peer's FIN has arrived: tcp_fin() sets SOCK_DONE, and rcv_nxt counted the FIN like a byte. */
static __always_inline bool peer_fin_arrived(const struct sock *sk, int btf)
{
	unsigned long flags = SK_READ(btf, sk, __sk_common.skc_flags);

	return flags & (1UL << bpf_core_enum_value(enum sock_flags, SOCK_DONE));
}

/* Whether this end's FIN went out and was acknowledged: snd_una reached write_seq, the FIN's end. */
static __always_inline bool own_fin_acked(const struct sock *sk, int btf, int old)
{
	const struct tcp_sock *tp = tcp_of(sk, btf);

	if (old != TCP_FIN_WAIT1 && old != TCP_FIN_WAIT2 && old != TCP_CLOSING && old != TCP_LAST_ACK)
		return false;
	return TCP_READ(tp, sk, snd_una) == TCP_READ(tp, sk, write_seq);
}

/*
 * The lifespan fields of a close event that ended as `end` at ended_ns, out of state `old`; sk read the
 * way `btf` says. A FIN counts one in bytes_received and (acknowledged) in bytes_acked, as the SYN does in
 * a connecting end's bytes_acked: none of them is data.
 */
static __always_inline void fill_lifespan(struct event *e, const struct sock *sk, int btf,
					  const struct owner *owner, __u8 end, int old, __u64 ended_ns)
{
	const struct tcp_sock *tp = tcp_of(sk, btf);
	__u64 received = TCP_READ(tp, sk, bytes_received);
	__u64 acked = TCP_READ(tp, sk, bytes_acked);

	e->end = end;
	if (owner && owner->start_ns)
		e->duration_ns = ended_ns - owner->start_ns;
	if (owner && acked >= owner->acked_base)
		acked -= owner->acked_base;
	if (acked && own_fin_acked(sk, btf, old))
		acked--;
	if (received && peer_fin_arrived(sk, btf))
		received--;
	e->bytes_sent = acked;
	e->bytes_received = received;
}

/*
 * The X of a connection that ended before its accept (see connection_ended), reported by the accept: the
 * network ended it, so its task is the owner the accept makes.
 */
static __always_inline void ended_before_accept(const struct sock *sk, const struct sock_key *key,
						const struct task_info *task, const struct owner *before, __u8 hook,
						int btf)
{
	struct event *e = reserve_event();

	if (!e)
		return;
	fill_sock_event(e, sk, key, task, TASK_OWNER, EVENT_CLOSE, hook, btf);
	if (stats)
		e->stats.direction = DIRECTION_IN;
	if (lifespan)
		fill_lifespan(e, sk, btf, before, end_kind(TCP_CLOSE, SK_READ(btf, sk, sk_err)), before->ended_from,
			      before->ended_ns);
	fill_transfer(e, sk, btf);
	submit_event(e);
}

/*
 * A connection the network ended (a reset) while it waited in a listener's queue: no process has it yet,
 * but one may accept it still, and that accept reports its X (ended_before_accept). A listener that closes
 * with connections in its queue ends them with no error set: those are never accepted, and not kept.
 * True when the entry is kept for the accept.
 */
static __always_inline bool keep_end_for_accept(const struct sock *sk, struct owner *owner, int old)
{
	struct owner ended = { .ended_ns = bpf_ktime_get_ns(), .ended_from = old };
	__u64 id = (__u64)sk;

	if (!sk->sk_err)
		return false;
	if (owner) { /* lifespan: the handshake's entry, with the connection's start */
		owner->ended_ns = ended.ended_ns;
		owner->ended_from = old;
		return true;
	}
	return remember_owner(id, &ended, BPF_ANY) == 0;
}

/*
 * Stats on: a close() or shutdown() sends a FIN, and the connection goes on until the peer has acknowledged
 * it, retransmitting what is still in flight (a server that closes with its response unacknowledged does so
 * on every response). Its X waits for CLOSE (connection_closed), so that its counters are the connection's
 * last; the entry keeps what the close knew: the task to name, and how it ended.
 */
static __always_inline void close_waits_for_end(const struct sock *sk, struct owner *owner,
						const struct task_info *who, __u8 source, __u8 end)
{
	struct owner closed = { .closed_end = end, .closed_source = source };
	__u64 id = (__u64)sk;

	if (owner) {
		if (who != &owner->task)
			owner->task = *who;
		owner->closed_end = end;
		owner->closed_source = source;
		return;
	}
	closed.task = *who;
	remember_owner(id, &closed, BPF_ANY);
}

/* Stats on: a connection closed earlier (close_waits_for_end) reaches CLOSE, out of `old`: its X, now. */
static __always_inline void connection_closed(const struct sock *sk, int old)
{
	struct owner *owner;
	struct sock_key key = {};
	__u64 id = (__u64)sk;
	struct event *e;

	owner = bpf_map_lookup_elem(&owners, &id);
	if (!owner || !owner->closed_source)
		return;
	if (!read_sock_key(sk, &key, true) || !sock_wanted(&key))
		return;
	e = reserve_event();
	if (!e)
		return;
	fill_sock_event(e, sk, &key, &owner->task, owner->closed_source, EVENT_CLOSE, HOOK_TRACEPOINT, SK_BTF);
	e->stats.direction = owner->direction;
	if (lifespan)
		fill_lifespan(e, sk, SK_BTF, owner, owner->closed_end, old, e->ts_ns);
	fill_transfer(e, sk, SK_BTF);
	submit_event(e);
}

/* Out of ESTABLISHED or CLOSE_WAIT for good: the connection ends. True when its entry is to be kept. */
static __always_inline bool connection_ended(const struct sock *sk, int old, int new)
{
	struct sock_key key = {};
	struct task_info task = {};
	struct owner *owner = NULL;
	const struct task_info *who;
	__u64 id = (__u64)sk;
	__u8 source;
	struct event *e;

	if (!read_sock_key(sk, &key, true) || !sock_wanted(&key))
		return false;
	if (track_start() || !held_by_a_task(sk))
		owner = bpf_map_lookup_elem(&owners, &id);
	if (held_by_a_task(sk)) {
		__u64 pid_tgid = bpf_get_current_pid_tgid();

		/*
		 * The closing task need not be the owner: whoever drops the last reference to the socket closes
		 * it (a descriptor passed to another process, or a tool that held the file a moment, reading
		 * /proc or iterating files). Its X is shown if the closer or the owner passes the task filters.
		 */
		if (!task_wanted(pid_tgid)) {
			if (!owner)
				owner = bpf_map_lookup_elem(&owners, &id);
			if (!owner || !owner->has_task)
				return false;
		}
		current_task_info(&task, pid_tgid);
		who = &task;
		source = TASK_CURRENT;
	} else if (owner && owner->has_task) {
		who = &owner->task;
		source = TASK_OWNER;
	} else {
		/*
		 * No owner. With no socket, no process has had it yet: it waited in a listener's queue. Otherwise
		 * it is a connection from before tcpkit started, ended by the network: shown with no task, unless
		 * a task filter asks for tasks it cannot be matched against.
		 */
		if (!sk->sk_socket)
			return keep_end_for_accept(sk, owner, old);
		if (any_task_filter())
			return false;
		who = &task;
		source = TASK_UNKNOWN;
	}
	if (stats && new != TCP_CLOSE) {
		close_waits_for_end(sk, owner, who, source, end_kind(new, sk->sk_err));
		return false;
	}
	e = reserve_event();
	if (!e)
		return false;
	fill_sock_event(e, sk, &key, who, source, EVENT_CLOSE, HOOK_TRACEPOINT, SK_BTF);
	if (stats && owner)
		e->stats.direction = owner->direction;
	if (lifespan)
		fill_lifespan(e, sk, SK_BTF, owner, end_kind(new, sk->sk_err), old, e->ts_ns);
	fill_transfer(e, sk, SK_BTF);
	submit_event(e);
	return false;
}

/*
 * An accept. A socket already closed when accepted ended while it waited in the listener's queue (the
 * client reset it): if its end was kept for this accept, the X follows the A, with the accepting task; a
 * closed socket's entry would outlive it, so none is made. A kernel hook runs before the socket is
 * grafted, so a reset between its reading of the state and its entry kept its end in the entry this
 * accept replaced: still there once the state reads CLOSE (had the reset come after, it would have found
 * this accept's entry, reported itself and deleted it). Its lifespan then ends now, from ESTABLISHED.
 */
static __always_inline void accepted(const struct sock *sk, const struct sock_key *key,
				     const struct task_info *task, __u8 hook, int btf, const struct backlog *queue)
{
	struct owner owner = { .task = *task, .has_task = true, .direction = DIRECTION_IN };
	struct owner meanwhile = { .ended_from = TCP_ESTABLISHED };
	bool closed = SK_READ(btf, sk, __sk_common.skc_state) == TCP_CLOSE;
	const struct owner *ended = NULL;
	struct owner *before = NULL;
	__u64 established = 0;
	__u64 id = (__u64)sk;
	struct event *e;

	if (track_start() || closed)
		before = bpf_map_lookup_elem(&owners, &id);
	if (before) {
		owner.start_ns = before->start_ns;
		if (!before->has_task) /* the handshake's entry (handshake_done) */
			established = before->start_ns;
	}
	if (closed) {
		if (before && before->ended_from)
			ended = before;
	} else {
		remember_owner(id, &owner, BPF_ANY);
		if (hook != HOOK_TRACEPOINT && SK_READ(btf, sk, __sk_common.skc_state) == TCP_CLOSE &&
		    bpf_map_lookup_elem(&owners, &id)) {
			meanwhile.start_ns = owner.start_ns;
			meanwhile.ended_ns = bpf_ktime_get_ns();
			ended = &meanwhile;
			closed = true;
		}
	}
	e = reserve_event();
	if (e) {
		fill_sock_event(e, sk, key, task, TASK_CURRENT, EVENT_ACCEPT, hook, btf);
		fill_accept(e, established, queue);
		submit_event(e);
	}
	if (ended)
		ended_before_accept(sk, key, task, ended, hook, btf);
	if (closed && (before || ended))
		forget_owner(id);
}

#include "accept.bpf.h"

/*
 * A BTF tracepoint: the kernel calls the program with the tracepoint's arguments, and sk is a BTF pointer
 * read with plain loads. The classic tracepoint first built its whole record, addresses included, for
 * of the ten state changes of a loopback connection, most of which tcpkit ignores, and the program then
 * read the socket through bpf_probe_read_kernel: 4.7 µs of BPF per connection on 6.18 (bpf_stats), 2.6 µs
 * now. tp_btf needs BTF, which CO-RE needs anyway.
 */
static __noinline int on_state_change(const struct sock *sk, int old, int new)
{
	__u64 id = (__u64)sk;
	bool keep = false;

	if (!sk)
		return 0;

#ifdef TCPKIT_FLOOR
	if (old == TCP_SYN_SENT && new == TCP_ESTABLISHED)
		return floor_event(EVENT_CONNECT);
	if ((old == TCP_ESTABLISHED || old == TCP_CLOSE_WAIT) && new != TCP_CLOSE_WAIT)
		return floor_event(EVENT_CLOSE);
	return 0;
#endif
	if (sk->sk_protocol != IPPROTO_TCP)
		return 0;
	if (old == TCP_CLOSE && new == TCP_SYN_SENT)
		connect_started(sk);
	else if (old == TCP_SYN_SENT && new == TCP_ESTABLISHED)
		connect_established(sk);
	else if (old == TCP_SYN_SENT && new == TCP_CLOSE) {
		if (report_failures)
			connect_failed(sk);
	} else if (old == TCP_SYN_RECV && new == TCP_ESTABLISHED) {
		if (track_start())
			handshake_done(sk);
	} else if ((old == TCP_ESTABLISHED || old == TCP_CLOSE_WAIT) && new != TCP_CLOSE_WAIT) {
		keep = connection_ended(sk, old, new);
	} else if (stats && new == TCP_CLOSE &&
		   (old == TCP_FIN_WAIT1 || old == TCP_FIN_WAIT2 || old == TCP_CLOSING || old == TCP_LAST_ACK)) {
		connection_closed(sk, old);
	}
	if (new == TCP_CLOSE && !keep)
		forget_owner(id);
	return 0;
}

/* Every state change, in whichever of the pair the kernel runs for it (STATE_CHANGE_PROGRAMS says why). */
STATE_CHANGE_PROGRAMS(inet_sock_set_state, nested_state_change, on_state_change)

/* --- connect() calls (--failed): failures before any SYN, which no state change shows --- */

/* The address connect() was asked for, in the socket's family; false for what is not a TCP connect. */
static __always_inline bool read_connect_target(const void *uaddr, __u16 sock_family, struct connect_target *target)
{
	__u16 family = 0;

	bpf_probe_read_user(&family, sizeof(family), uaddr);
	if (family == AF_INET) {
		struct sockaddr_in sin = {};

		bpf_probe_read_user(&sin, sizeof(sin), uaddr);
		target->dport = bpf_ntohs(sin.sin_port);
		if (sock_family == AF_INET6) { /* as the kernel keeps it on a dual-stack socket */
			target->daddr[10] = 0xff;
			target->daddr[11] = 0xff;
			__builtin_memcpy(&target->daddr[12], &sin.sin_addr, 4);
		} else {
			__builtin_memcpy(target->daddr, &sin.sin_addr, 4);
		}
		return true;
	}
	if (family == AF_INET6) {
		struct sockaddr_in6 sin6 = {};

		bpf_probe_read_user(&sin6, sizeof(sin6), uaddr);
		target->dport = bpf_ntohs(sin6.sin6_port);
		if (sock_family == AF_INET6)
			__builtin_memcpy(target->daddr, sin6.sin6_addr, 16);
		return true;
	}
	return false; /* AF_UNSPEC is a disconnect, not a connect */
}

/*
 * Whether sk is a plain TCP socket on its first connect(), read the way `btf` says: a second call on a
 * connecting or failed socket (EALREADY, EISCONN, the error of an attempt already reported) is no attempt
 * of its own.
 */
static __always_inline bool first_tcp_connect(const struct sock *sk, int btf)
{
	const struct socket *sock;
	int sock_state;

	if (SK_READ(btf, sk, sk_protocol) != IPPROTO_TCP || SK_READ(btf, sk, sk_type) != SOCK_STREAM)
		return false;
	if (SK_READ(btf, sk, __sk_common.skc_state) != TCP_CLOSE)
		return false;
	sock = SK_READ(btf, sk, sk_socket);
	sock_state = btf ? bpf_core_cast(sock, struct socket)->state : BPF_CORE_READ(sock, state);
	return sock_state == SS_UNCONNECTED && !is_mptcp_subflow(sk, tcp_of(sk, btf));
}

SEC("tracepoint/syscalls/sys_enter_connect")
int tp_sys_enter_connect(struct syscall_enter_ctx *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)pid_tgid;
	struct connect_call call = { .uaddr = ctx->args[1] };
	struct sock *sk;

	if (!task_wanted(pid_tgid))
		return 0;
	sk = sock_of_fd(ctx->args[0]);
	if (!sk)
		return 0;
	if (can_cast()) {
		const struct sock *cast = bpf_core_cast(sk, struct sock);

		if (!first_tcp_connect(cast, SK_CAST))
			return 0;
		call.family = cast->__sk_common.skc_family;
	} else {
		if (!first_tcp_connect(sk, SK_PROBED))
			return 0;
		call.family = BPF_CORE_READ(sk, __sk_common.skc_family);
	}
	call.sk = (__u64)sk;
	remember(&connect_calls, &tid, &call, BPF_ANY);
	return 0;
}

/* A connect() that failed before its SYN went out (or inside connect() after it): the errno it returns. */
static __always_inline void connect_call_failed(const struct connect_call *call, int err, __u64 pid_tgid)
{
	const struct sock *sk = (const struct sock *)call->sk;
	struct connect_target target = {};
	struct sock_key key = {};
	struct task_info task;
	struct event *e;

	if (!read_connect_target((const void *)call->uaddr, call->family, &target))
		return;
	if (!read_sock_key(sk, &key, false))
		return;
	key.rport = target.dport;
	if (!sock_wanted(&key))
		return;
	e = reserve_event();
	if (!e)
		return;
	current_task_info(&task, pid_tgid);
	fill_sock_event(e, sk, &key, &task, TASK_CURRENT, EVENT_FAIL, HOOK_TRACEPOINT, false);
	__builtin_memcpy(e->daddr, target.daddr, sizeof(e->daddr));
	e->error = err;
	submit_event(e);
}

SEC("tracepoint/syscalls/sys_exit_connect")
int tp_sys_exit_connect(struct syscall_exit_ctx *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)pid_tgid;
	struct connect_call *call;
	long ret = ctx->ret;

	/* A call that succeeded, or goes on in the kernel, has nothing to report: one hash operation, not two. */
	if (ret >= 0 || ret == -EINPROGRESS) {
		bpf_map_delete_elem(&connect_calls, &tid);
		return 0;
	}
	call = bpf_map_lookup_elem(&connect_calls, &tid);
	if (!call)
		return 0;
	/* After the SYN, the state change reports the outcome (an interrupted connect goes on in the kernel). */
	if (!call->reached_syn_sent || call->failed_inside)
		connect_call_failed(call, -ret, pid_tgid);
	bpf_map_delete_elem(&connect_calls, &tid);
	return 0;
}
