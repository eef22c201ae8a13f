#!/bin/sh
# shellcheck shell=dash
# /init of the tcpkit test initramfs (busybox ash, PID 1). Packed by tests/vm/run-matrix.sh.
#
# Mounts what tcpkit and its tests need, prints kernel facts, runs every test binary in /opt/tcpkit/tests once
# per backend, prints one marker line per run, and powers off. Everything goes to the serial console: the host
# parses the lines that start with "@@TCPKIT". Settings come from the kernel command line (tcpkit.backends=,
# tcpkit.test_timeout=, tcpkit.threads=), because an initramfs is shared by all kernels and all runs.

export PATH=/opt/tcpkit:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root TMPDIR=/tmp LANG=C.UTF-8 RUST_BACKTRACE=1

# PID 1 must never exit (the kernel would panic with a less useful message): whatever happens, power off.
die() { echo "@@TCPKIT-ERROR $*"; poweroff -f; sleep 5; exit 1; }

mnt() { # mnt TYPE DIR [OPTS]: mount, and say so if it fails (a missing mount is a fact worth seeing)
    mkdir -p "$2"
    mount -t "$1" ${3:+-o "$3"} "$1" "$2" 2>/dev/null || echo "@@TCPKIT-WARN mount $1 on $2 failed"
}

mnt proc /proc
mnt sysfs /sys
mnt devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mnt devpts /dev/pts
mnt tmpfs /dev/shm
mnt tmpfs /tmp mode=1777
mnt tmpfs /run mode=0755
mnt debugfs /sys/kernel/debug
mnt tracefs /sys/kernel/tracing   # 5.10 also exposes it under debugfs/tracing; libbpf looks here first
mnt bpf /sys/fs/bpf
mnt cgroup2 /sys/fs/cgroup
ln -sf /proc/self/fd /dev/fd 2>/dev/null
ip link set lo up || echo "@@TCPKIT-WARN ip link set lo up failed"
hostname -F /etc/hostname 2>/dev/null || true

cmdline=$(cat /proc/cmdline)
arg() { # arg NAME DEFAULT: value of tcpkit.NAME= on the kernel command line
    for w in $cmdline; do case "$w" in "tcpkit.$1="*) echo "${w#*=}"; return;; esac; done
    echo "$2"
}
BACKENDS=$(arg backends fentry,kprobe,tracepoint,auto | tr , ' ')
TEST_TIMEOUT=$(arg test_timeout 600)
THREADS=$(arg threads 2)
KREL=$(uname -r)

now() { cut -d' ' -f1 /proc/uptime; }           # seconds since boot, 1/100 s resolution
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }

# Modules the host put in /lib/modules (only those our tests need and the cloud kernels build as modules).
for ko in /lib/modules/*.ko; do
    [ -e "$ko" ] || continue
    insmod "$ko" 2>/dev/null || echo "@@TCPKIT-WARN insmod $(basename "$ko") failed"
done

fact() { echo "@@TCPKIT-FACT kernel=$KREL $1=$2"; }
yesno() { if "$@" >/dev/null 2>&1; then echo yes; else echo no; fi; }
T=/sys/kernel/tracing
facts() {
    fact boot_secs "$(now)"
    fact btf_vmlinux "$(yesno test -e /sys/kernel/btf/vmlinux)"
    fact kprobe_pmu "$(yesno test -e /sys/bus/event_source/devices/kprobe/type)"
    fact kprobe_events "$(yesno test -e $T/kprobe_events)"
    fact tp_sys_exit_accept4 "$(yesno test -d $T/events/syscalls/sys_exit_accept4)"
    fact tp_inet_sock_set_state "$(yesno test -d $T/events/sock/inet_sock_set_state)"
    fact tp_tcp_destroy_sock "$(yesno test -d $T/events/tcp/tcp_destroy_sock)"
    # The type name is in BTF's string section: a byte search is enough, no bpftool needed.
    fact btf_proto_accept_arg "$(yesno grep -q proto_accept_arg /sys/kernel/btf/vmlinux)"
    fact ipv6_lo "$(yesno ping6 -c 1 -W 2 ::1)"
    fact netns "$(yesno unshare -n ip link set lo up)"
    fact cgroup2 "$(yesno test -e /sys/fs/cgroup/cgroup.controllers)"
    fact bpffs "$(yesno test -d /sys/fs/bpf)"
    fact mptcp "$(yesno test -d /proc/sys/net/mptcp)"
    fact sctp "$(yesno test -d /proc/net/sctp)"
}
facts

# Protocols the tests must exercise here rather than skip with a notice: SCTP's module is shipped, and
# MPTCP is there whenever the kernel was built with it.
REQUIRE=sctp
[ -d /proc/sys/net/mptcp ] && REQUIRE="$REQUIRE mptcp"

# One run of one test binary: print its output, then the marker. libtest's summary line looks like
# "test result: ok. 12 passed; 0 failed; 0 ignored; ..." (FAILED instead of ok on failure).
run_one() { # run_one BACKEND BINARY
    local b="$1" bin="$2" name out=/tmp/out.$$ t0 rc passed failed
    name=$(basename "$bin") t0=$(now)
    echo "@@TCPKIT-START kernel=$KREL backend=$b bin=$name"
    # Output goes to the console as it comes (a hang shows where) and to a file for counting.
    { env TCPKIT_BIN=/opt/tcpkit/tcpkit TCPKIT_PEER_BIN=/opt/tcpkit/tcpkit-peer \
          TCPKIT_TEST_BACKEND="$b" TCPKIT_EXPECT_AUTO_BACKEND=fentry TCPKIT_REQUIRE_PROTOCOLS="$REQUIRE" \
          timeout -s TERM -k 10 "$TEST_TIMEOUT" "$bin" --test-threads="$THREADS" 2>&1
      echo "rc=$?" > /tmp/rc.$$; } | tee "$out"
    rc=$(sed -n 's/^rc=//p' /tmp/rc.$$); rm -f /tmp/rc.$$
    passed=$(sed -n 's/^test result: .* \([0-9][0-9]*\) passed; \([0-9][0-9]*\) failed.*/\1/p' "$out" \
             | awk '{ s += $1 } END { print s + 0 }')
    failed=$(sed -n 's/^test result: .* \([0-9][0-9]*\) passed; \([0-9][0-9]*\) failed.*/\2/p' "$out" \
             | awk '{ s += $1 } END { print s + 0 }')
    # Name the failed tests, so the host can list them without reading the whole log.
    sed -n 's/^test \(.*\) \.\.\. FAILED$/\1/p' "$out" | while read -r t; do
        echo "@@TCPKIT-FAILED kernel=$KREL backend=$b bin=$name test=$t"
    done
    rm -f "$out"
    echo "@@TCPKIT kernel=$KREL backend=$b bin=$name rc=${rc:-255} passed=$passed failed=$failed secs=$(since "$t0")"
}

t_all=$(now)
bins=$(ls /opt/tcpkit/tests/ 2>/dev/null)
[ -n "$bins" ] || echo "@@TCPKIT-WARN no test binaries in /opt/tcpkit/tests"
for b in $BACKENDS; do
    for name in $bins; do
        cd /tmp && run_one "$b" "/opt/tcpkit/tests/$name"
    done
done
echo "@@TCPKIT-DONE kernel=$KREL secs=$(since "$t_all") uptime=$(now)"
sync
poweroff -f
sleep 5
die "poweroff returned"
