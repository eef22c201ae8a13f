// SPDX-License-Identifier: GPL-2.0
/* tcpkit accept: one event per successful accept of a TCP connection, from the accepting task. */
#include "filter.bpf.h"

char LICENSE[] SEC("license") = "GPL";

static __always_inline void accepted(const struct sock *sk, const struct sock_key *key,
				     const struct task_info *task, __u8 hook, int btf)
{
	submit_sock_event(sk, key, task, TASK_CURRENT, EVENT_ACCEPT, hook, btf);
}

#include "accept.bpf.h"
