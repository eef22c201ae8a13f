// SPDX-License-Identifier: GPL-2.0
/*
 * `tcpkit metrics`: the tracer's object, counting its events in the kernel (count.bpf.h) rather than
 * sending them to user space. One source of truth for what an event is: a fix to the tracer is a fix here.
 */
#define TCPKIT_METRICS
#include "tracer.bpf.c"
