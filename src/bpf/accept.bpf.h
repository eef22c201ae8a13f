/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Seeing accepts, shared by `tcpkit accept` and `tcpkit tracer`. Three ways, one set loaded per backend:
 *   fentry:     fexit on inet_csk_accept
 *   kprobe:     kretprobe on inet_csk_accept
 *   tracepoint: syscalls:sys_exit_accept and sys_exit_accept4, returned fd -> socket -> sock, and
 *               io_uring:io_uring_complete for accepts made through io_uring, which make no syscall
 * The syscall-exit programs are loaded with every backend. With fexit or kretprobe they report only the
 * accepts that the kernel hook did not see: accept() calls already blocked when tcpkit attached (a
 * trampoline or return probe only catches calls that start after it) and kretprobes dropped by their
 * maxactive limit when many threads block in accept(). The kernel hook, in turn, is what sees io_uring
 * and in-kernel accepts, which make no accept syscall.
 *
 * With stats on, the syscall-entry programs remember each accept() call's listener, and every accept reads
 * the listener's queue; fexit has it as its first argument.
 *
 * The object that includes this file defines, before including it,
 *   static __always_inline void accepted(const struct sock *sk, const struct sock_key *key,
 *                                        const struct task_info *task, __u8 hook, int btf,
 *                                        const struct backlog *queue);
 * called once per accept that passed every filter, in the accepting task; btf as in SK_READ.
 */
#ifndef __ACCEPT_BPF_H
#define __ACCEPT_BPF_H

#include "conn.bpf.h"

/* True when a kernel hook (fexit or kretprobe) is loaded beside the syscall-exit programs. */
const volatile bool kernel_hook = false;

/* An accept() call of one thread, from its entry (stats) or its kernel hook to its exit. */
struct accept_call {
	__u64 listener; /* stats: the listening socket, from the syscall's entry */
	__u64 seen;     /* the sock the kernel hook saw this call return */
};

/*
 * Thread -> its accept() call in progress, from the syscall's entry or kernel hook to its exit, which every
 * call reaches (a thread killed in accept() leaves through it too). Not an LRU map (see owners).
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct accept_call);
} accept_calls SEC(".maps");

/* The listener's queue now, read the way `btf` says; it no longer counts the connection just taken. */
static __always_inline void read_backlog(const struct sock *listener, int btf, struct backlog *queue)
{
	if (!stats || !listener)
		return;
	queue->len = SK_READ(btf, listener, sk_ack_backlog) + 1;
	queue->max = SK_READ(btf, listener, sk_max_ack_backlog);
	queue->known = true;
}

/* The listener of the current thread's accept() call (stats), read with plain loads where the kernel can cast. */
static __always_inline void call_backlog(const struct accept_call *call, struct backlog *queue)
{
	const struct sock *listener = call ? (const struct sock *)call->listener : NULL;

	if (!listener) /* read_backlog checks stats */
		return;
	if (can_cast())
		read_backlog(bpf_core_cast(listener, struct sock), SK_CAST, queue);
	else
		read_backlog(listener, SK_PROBED, queue);
}

static __always_inline void report_accept(const struct sock *sk, __u64 pid_tgid, __u8 hook, int btf,
					  const struct backlog *queue)
{
	struct sock_key key = {};
	struct task_info task;

	if (!read_sock_key(sk, &key, btf) || !sock_wanted(&key))
		return;
	current_task_info(&task, pid_tgid);
	accepted(sk, &key, &task, hook, btf, queue);
}

/* listener: fexit's first argument, or NULL (kretprobe) for the one the syscall's entry remembered. */
static __always_inline int on_kernel_accept(struct sock *newsk, const struct sock *listener, __u8 hook, int btf)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct accept_call fresh = { .seen = (__u64)newsk };
	struct backlog queue = {};
	__u32 tid = (__u32)pid_tgid;
	struct accept_call *call;

	if (!newsk)
		return 0;
#ifdef TCPKIT_FLOOR
	return floor_event(EVENT_ACCEPT);
#endif
	/* Remember even filtered accepts: the syscall-exit program must not report them either. */
	call = stats ? bpf_map_lookup_elem(&accept_calls, &tid) : NULL;
	if (call)
		call->seen = (__u64)newsk;
	else
		remember(&accept_calls, &tid, &fresh, BPF_ANY);
	if (!task_wanted(pid_tgid))
		return 0;
	if (listener)
		read_backlog(listener, btf, &queue);
	else
		call_backlog(call, &queue);
	report_accept(newsk, pid_tgid, hook, btf, &queue);
	return 0;
}

/*
 * 6.10 changed inet_csk_accept(sk, flags, err, kern) to inet_csk_accept(sk, arg), and struct
 * proto_accept_arg came with it. An fexit program finds the return value after the arguments, so its slot
 * is chosen by CO-RE; the verifier checks only the slot this kernel's branch reads. One program, where two
 * (one per signature) needed a parse of the kernel's BTF in user space to choose.
 */
SEC("fexit/inet_csk_accept")
int fexit_inet_csk_accept(unsigned long long *ctx)
{
	struct sock *newsk;

	/*
	 * Loaded in asm: from plain C, clang loads through ctx plus an offset chosen at run time, which the
	 * verifier refuses (it wants a constant offset into ctx), even with volatile.
	 */
	if (bpf_core_type_exists(struct proto_accept_arg))
		asm volatile("%0 = *(u64 *)(%1 + 16)" : "=r"(newsk) : "r"(ctx)); /* ctx[2] */
	else
		asm volatile("%0 = *(u64 *)(%1 + 32)" : "=r"(newsk) : "r"(ctx)); /* ctx[4] */
	return on_kernel_accept(newsk, (const struct sock *)ctx[0], HOOK_FENTRY, SK_BTF);
}

SEC("kretprobe/inet_csk_accept")
int BPF_KRETPROBE(kretprobe_inet_csk_accept, struct sock *newsk)
{
	return on_kernel_accept(newsk, NULL, HOOK_KPROBE, SK_PROBED);
}

/* The current task's open files, and how many slots the array has. */
static __always_inline struct file **current_fd_array(unsigned int *max_fds)
{
	struct fdtable *fdt;

	if (have_task_btf()) {
		fdt = bpf_get_current_task_btf()->files->fdt;
		*max_fds = fdt->max_fds;
		return fdt->fd;
	}
	fdt = BPF_CORE_READ((struct task_struct *)bpf_get_current_task(), files, fdt);
	*max_fds = BPF_CORE_READ(fdt, max_fds);
	return BPF_CORE_READ(fdt, fd);
}

/*
 * The sock behind a file descriptor of the current task, or NULL if fd is not a socket. The verifier does
 * not follow `struct file **`, so the file is read with bpf_probe_read_kernel; from there on, with plain
 * loads where the kernel can cast (SK_CAST), else with probes.
 */
static __always_inline struct sock *sock_of_fd(long fd)
{
	unsigned int max_fds = 0;
	struct file **fds = current_fd_array(&max_fds);
	struct file *file = NULL;
	struct socket *sock;
	struct sock *sk;

	if (fd < 0 || fd >= max_fds)
		return NULL;
	bpf_core_read(&file, sizeof(file), &fds[fd]);
	if (!file)
		return NULL;
	/* Another thread may have closed and reused the fd: accept only a socket that points back at it. */
	if (can_cast()) {
		const struct socket *s;

		sock = bpf_core_cast(file, struct file)->private_data;
		s = bpf_core_cast(sock, struct socket);
		if (!sock || s->file != file)
			return NULL;
		sk = s->sk;
		if (!sk || bpf_core_cast(sk, struct sock)->sk_socket != sock)
			return NULL;
		return sk;
	}
	sock = BPF_CORE_READ(file, private_data);
	if (!sock || BPF_CORE_READ(sock, file) != file)
		return NULL;
	sk = BPF_CORE_READ(sock, sk);
	if (!sk || BPF_CORE_READ(sk, sk_socket) != sock)
		return NULL;
	return sk;
}

/* An accept found through an fd: its sock read with plain loads where the kernel can cast it (6.2+). */
static __always_inline void report_fd_accept(struct sock *sk, __u64 pid_tgid, const struct backlog *queue)
{
	if (can_cast())
		report_accept(bpf_core_cast(sk, struct sock), pid_tgid, HOOK_TRACEPOINT, SK_CAST, queue);
	else
		report_accept(sk, pid_tgid, HOOK_TRACEPOINT, SK_PROBED, queue);
}

/* Stats on: an accept() call begins; its listener is remembered for the queue its accept will find. */
static __always_inline int on_accept_enter(struct syscall_enter_ctx *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct accept_call call = {};
	__u32 tid = (__u32)pid_tgid;

	if (!task_wanted(pid_tgid))
		return 0;
	call.listener = (__u64)sock_of_fd(ctx->args[0]);
	if (call.listener)
		remember(&accept_calls, &tid, &call, BPF_ANY);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_accept4")
int tp_sys_enter_accept4(struct syscall_enter_ctx *ctx)
{
	return on_accept_enter(ctx);
}

SEC("tracepoint/syscalls/sys_enter_accept")
int tp_sys_enter_accept(struct syscall_enter_ctx *ctx)
{
	return on_accept_enter(ctx);
}

static __always_inline int on_accept_exit(struct syscall_exit_ctx *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct accept_call *call = NULL;
	struct backlog queue = {};
	__u32 tid = (__u32)pid_tgid;
	bool reported = false;
	struct sock *sk;

	if (ctx->ret < 0) {
		if (stats)
			bpf_map_delete_elem(&accept_calls, &tid);
		return 0;
	}
	if (!kernel_hook && !task_wanted(pid_tgid))
		return 0;
	sk = sock_of_fd(ctx->ret);
#ifdef TCPKIT_FLOOR
	return kernel_hook || !sk ? 0 : floor_event(EVENT_ACCEPT);
#endif
	if (kernel_hook || stats)
		call = bpf_map_lookup_elem(&accept_calls, &tid);
	if (call) {
		reported = call->seen == (__u64)sk; /* a NULL sk returns below either way */
		call_backlog(call, &queue);
		bpf_map_delete_elem(&accept_calls, &tid);
	}
	if (!sk || reported || !task_wanted(pid_tgid))
		return 0;
	report_fd_accept(sk, pid_tgid, &queue);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_accept4")
int tp_sys_exit_accept4(struct syscall_exit_ctx *ctx)
{
	return on_accept_exit(ctx);
}

SEC("tracepoint/syscalls/sys_exit_accept")
int tp_sys_exit_accept(struct syscall_exit_ctx *ctx)
{
	return on_accept_exit(ctx);
}

/*
 * io_uring (tracepoint backend only: the kernel hooks see these accepts themselves). IORING_OP_ACCEPT
 * completes in the submitting process (inline, from task work, or in one of its io worker threads), whose
 * file table holds the new fd: the same walk as at a syscall's exit. Since 5.19 the completion record
 * names the request, and so its opcode; before, io_uring_submit_sqe and io_uring_task_add (a request woken
 * to run again) pair (ring, user_data) with it.
 */
#define IORING_OP_ACCEPT 13

struct uring_request {
	__u64 ctx;
	__u64 user_data;
};

/* (ring, user_data) of accepts submitted and not yet completed, on kernels whose completions name no request. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct uring_request);
	__type(value, __u8);
} uring_accepts SEC(".maps");

static __always_inline void remember_uring_accept(void *ring, __u8 opcode, __u64 user_data)
{
	struct uring_request key = { .ctx = (__u64)ring, .user_data = user_data };
	__u8 one = 1;

	if (opcode == IORING_OP_ACCEPT)
		remember(&uring_accepts, &key, &one, BPF_ANY);
}

SEC("tracepoint/io_uring/io_uring_submit_sqe")
int tp_io_uring_submit_sqe(struct trace_event_raw_io_uring_submit_sqe *ctx)
{
	remember_uring_accept(BPF_CORE_READ(ctx, ctx), BPF_CORE_READ(ctx, opcode), BPF_CORE_READ(ctx, user_data));
	return 0;
}

/*
 * A request woken to run again (an accept whose listener got a connection) passes here: this also pairs
 * an accept submitted before tcpkit started, whose submission it never saw.
 */
SEC("tracepoint/io_uring/io_uring_task_add")
int tp_io_uring_task_add(struct trace_event_raw_io_uring_task_add *ctx)
{
	remember_uring_accept(BPF_CORE_READ(ctx, ctx), BPF_CORE_READ(ctx, opcode), BPF_CORE_READ(ctx, user_data));
	return 0;
}

/* Whether a completed request was an accept into an ordinary fd (a direct descriptor is no fd). */
static __always_inline bool uring_accept_completed(struct trace_event_raw_io_uring_complete *ctx)
{
	if (bpf_core_field_exists(ctx->req)) {
		void *req = BPF_CORE_READ(ctx, req);

		if (BPF_CORE_READ((struct io_kiocb *)req, opcode) != IORING_OP_ACCEPT)
			return false;
		/* The request begins with its command's data, struct io_accept for an accept. */
		return !bpf_core_field_exists(((struct io_accept *)req)->file_slot) ||
		       !BPF_CORE_READ((struct io_accept *)req, file_slot);
	} else {
		struct uring_request key = { .ctx = (__u64)BPF_CORE_READ(ctx, ctx), .user_data = BPF_CORE_READ(ctx, user_data) };

		if (!bpf_map_lookup_elem(&uring_accepts, &key))
			return false;
		bpf_map_delete_elem(&uring_accepts, &key);
		return true;
	}
}

SEC("tracepoint/io_uring/io_uring_complete")
int tp_io_uring_complete(struct trace_event_raw_io_uring_complete *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct sock *sk;
	int res = 0;

	if (!uring_accept_completed(ctx))
		return 0;
	bpf_core_read(&res, sizeof(res), &ctx->res); /* an int since 5.16, a long before: the low half either way */
	if (res < 0 || !task_wanted(pid_tgid))
		return 0;
	sk = sock_of_fd(res);
	if (sk)
		report_fd_accept(sk, pid_tgid, NULL);
	return 0;
}

#endif /* __ACCEPT_BPF_H */
