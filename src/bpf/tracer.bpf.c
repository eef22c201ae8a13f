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
 */
#include "filter.bpf.h"

char LICENSE[] SEC("license") = "GPL";

#define TCP_ESTABLISHED 1
#define TCP_SYN_SENT 2
#define TCP_FIN_WAIT1 4
#define TCP_CLOSE 7
#define TCP_CLOSE_WAIT 8
#define TCP_LAST_ACK 9

/*
 * Socket -> the task that connected or accepted it, for connections that pass the task filters. An entry
 * lives from connect()/accept() to the change to CLOSE; LRU, so sockets that vanish without one (and a
 * server with more open connections than entries) cost old entries, never new events.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct task_info);
} owners SEC(".maps");

static __always_inline void accepted(const struct sock *sk, const struct sock_key *key,
				     const struct task_info *task, __u8 hook, bool btf)
{
	__u64 id = (__u64)sk;

	bpf_map_update_elem(&owners, &id, task, BPF_ANY);
	submit_sock_event(sk, key, task, TASK_CURRENT, EVENT_ACCEPT, hook, btf);
}

#include "accept.bpf.h"

static __always_inline bool is_plain_tcp(const struct sock *sk)
{
	return sk->sk_type == SOCK_STREAM && !is_mptcp_subflow(sk);
}

/* CLOSE -> SYN_SENT: inside connect(), in the connecting task. */
static __always_inline void connect_started(const struct sock *sk)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u64 id = (__u64)sk;
	struct task_info task;

	if (!task_wanted(pid_tgid) || !is_plain_tcp(sk))
		return;
	current_task_info(&task, pid_tgid);
	bpf_map_update_elem(&owners, &id, &task, BPF_ANY);
}

/* SYN_SENT -> ESTABLISHED: usually in softirq, so the task is the one remembered at connect(). */
static __always_inline void connect_established(const struct sock *sk)
{
	__u64 id = (__u64)sk;
	struct task_info *owner = bpf_map_lookup_elem(&owners, &id);
	struct sock_key key = {};

	if (!owner) /* filtered out, or connect() began before tcpkit started */
		return;
	if (!read_sock_key(sk, &key, true) || !sock_wanted(&key))
		return;
	submit_sock_event(sk, &key, owner, TASK_OWNER, EVENT_CONNECT, HOOK_TRACEPOINT, true);
}

static __always_inline bool held_by_a_task(const struct sock *sk)
{
	return sk->sk_lock.owned;
}

/* Out of ESTABLISHED or CLOSE_WAIT for good: the connection ends. */
static __always_inline void connection_ended(const struct sock *sk)
{
	struct sock_key key = {};
	struct task_info task = {};
	struct task_info *owner;
	__u64 id = (__u64)sk;

	if (!read_sock_key(sk, &key, true) || !sock_wanted(&key))
		return;
	if (held_by_a_task(sk)) {
		__u64 pid_tgid = bpf_get_current_pid_tgid();

		if (!task_wanted(pid_tgid))
			return;
		current_task_info(&task, pid_tgid);
		submit_sock_event(sk, &key, &task, TASK_CURRENT, EVENT_CLOSE, HOOK_TRACEPOINT, true);
		return;
	}
	owner = bpf_map_lookup_elem(&owners, &id);
	if (owner) {
		submit_sock_event(sk, &key, owner, TASK_OWNER, EVENT_CLOSE, HOOK_TRACEPOINT, true);
		return;
	}
	/*
	 * No owner: a connection from before tcpkit started, ended by the network. It is shown, with no task,
	 * unless a task filter asks for tasks it cannot be matched against, or no process ever had it (a
	 * connection that waited in a listener's queue and was never accepted has no socket).
	 */
	if (any_task_filter() || !sk->sk_socket)
		return;
	submit_sock_event(sk, &key, &task, TASK_UNKNOWN, EVENT_CLOSE, HOOK_TRACEPOINT, true);
}

/*
 * A BTF tracepoint: the kernel calls the program with the tracepoint's arguments, and sk is a BTF pointer
 * read with plain loads. The classic tracepoint first built its whole record, addresses included, for
 * of the ten state changes of a loopback connection, most of which tcpkit ignores, and the program then
 * read the socket through bpf_probe_read_kernel: 4.7 µs of BPF per connection on 6.18 (bpf_stats), 2.6 µs
 * now. tp_btf needs BTF, which CO-RE needs anyway.
 */
SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(inet_sock_set_state, const struct sock *sk, int old, int new)
{
	__u64 id = (__u64)sk;

	if (sk->sk_protocol != IPPROTO_TCP)
		return 0;
	if (old == TCP_CLOSE && new == TCP_SYN_SENT)
		connect_started(sk);
	else if (old == TCP_SYN_SENT && new == TCP_ESTABLISHED)
		connect_established(sk);
	else if ((old == TCP_ESTABLISHED || old == TCP_CLOSE_WAIT) && new != TCP_CLOSE_WAIT)
		connection_ended(sk);
	if (new == TCP_CLOSE)
		bpf_map_delete_elem(&owners, &id);
	return 0;
}
