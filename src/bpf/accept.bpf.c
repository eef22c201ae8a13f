// SPDX-License-Identifier: GPL-2.0
/*
 * tcpkit accept: one event per successful accept of a TCP connection, from the accepting task. With stats on
 * (-S, JSON), the completed handshake of each connection is remembered until its accept, for the queue wait.
 */
#include "conn.bpf.h"

char LICENSE[] SEC("license") = "GPL";

#define TCP_ESTABLISHED 1
#define TCP_SYN_RECV 3
#define TCP_CLOSE 7
#define TCP_CLOSE_WAIT 8

static __always_inline void accepted(const struct sock *sk, const struct sock_key *key,
				     const struct task_info *task, __u8 hook, int btf, const struct backlog *queue)
{
	__u64 established = 0;
	__u64 id = (__u64)sk;
	struct event *e;

	if (stats) {
		struct owner *handshake = bpf_map_lookup_elem(&owners, &id);

		if (handshake) {
			established = handshake->start_ns;
			forget_owner(id);
		}
	}
	/* Reserved last and tested at once: 6.1's verifier loses a reservation's null check across branches. */
	e = reserve_event();
	if (!e)
		return;
	fill_sock_event(e, sk, key, task, TASK_CURRENT, EVENT_ACCEPT, hook, btf);
	fill_accept(e, established, queue);
	submit_event(e);
}

/*
 * Stats only: a connection's handshake completes (remembered until its accept), or a connection that no
 * one accepted ends (forgotten).
 */
static __noinline int on_state_change(const struct sock *sk, int old, int new)
{
	__u64 id = (__u64)sk;

	if (!sk || sk->sk_protocol != IPPROTO_TCP)
		return 0;
	if (old == TCP_SYN_RECV && new == TCP_ESTABLISHED)
		handshake_done(sk);
	else if ((old == TCP_ESTABLISHED || old == TCP_CLOSE_WAIT) && new == TCP_CLOSE) /* as a queue is dropped */
		forget_owner(id);
	return 0;
}

/* Every state change, in whichever of the pair the kernel runs for it (STATE_CHANGE_PROGRAMS says why). */
STATE_CHANGE_PROGRAMS(inet_sock_set_state_handshake, nested_handshake, on_state_change)

#include "accept.bpf.h"
