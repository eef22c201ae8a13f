#!/bin/sh
# shellcheck shell=dash
# /init of the tcpkit test initramfs (busybox ash, PID 1). Packed by tests/vm/run-matrix.sh.
#
# Mounts what tcpkit and its tests need, prints kernel facts (what the kernel can do, from its own config and
# files, and which backends tcpkit can attach here), runs every test binary in /opt/tcpkit/tests once per
# backend the kernel allows, runs the packaged binaries in /opt/tcpkit/pkg once, prints one marker line per
# run, and powers off. Everything goes to the serial console: the host
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

# What the kernel was built with (the host ships the package's /boot/config-*): y, m, or n when unset.
CONFIG=/boot/config-$KREL
[ -r "$CONFIG" ] || echo "@@TCPKIT-WARN no $CONFIG: every option reads as unset"
cfg() { v=$(sed -n "s/^CONFIG_$1=//p" "$CONFIG" 2>/dev/null); echo "${v:-n}"; }
fact arch "$(uname -m)"
fact config_bpf_jit "$(cfg BPF_JIT)"
fact config_direct_calls "$(cfg DYNAMIC_FTRACE_WITH_DIRECT_CALLS)"

# The backends this kernel should allow, from its facts alone (not from tcpkit), best first; auto must pick
# the first. fentry: an fexit program on an ordinary kernel function (inet_csk_accept) runs from a BPF
# trampoline (JITed code, typed by BTF) that the function's entry must call. x86-64 patches that call into
# the function's fentry nop; arm64's trampoline (6.0) could at first be called from BPF programs only, and
# reaches kernel functions through ftrace direct calls (DYNAMIC_FTRACE_WITH_DIRECT_CALLS, later on arm64).
# kprobe: kprobe events (the perf kprobe PMU comes with them). tracepoint: syscall tracepoints and BPF on them.
expect_fentry=no
if [ "$(cfg DEBUG_INFO_BTF)" = y ] && [ "$(cfg BPF_JIT)" = y ]; then
    case "$(uname -m)" in
        x86_64) expect_fentry=yes ;;
        aarch64) [ "$(cfg DYNAMIC_FTRACE_WITH_DIRECT_CALLS)" = y ] && expect_fentry=yes ;;
    esac
fi
expect_kprobe=no
[ "$(cfg KPROBE_EVENTS)" = y ] && expect_kprobe=yes
expect_tracepoint=no
[ "$(cfg FTRACE_SYSCALLS)" = y ] && [ "$(cfg BPF_EVENTS)" = y ] && expect_tracepoint=yes
EXPECT_AUTO=none
for b in tracepoint kprobe fentry; do eval "[ \$expect_$b = yes ]" && EXPECT_AUTO=$b; done
fact expect_fentry $expect_fentry
fact expect_kprobe $expect_kprobe
fact expect_tracepoint $expect_tracepoint
fact expect_auto $EXPECT_AUTO

# Which backends tcpkit can use here, asked as a user would: tcpkit accept --backend B for a moment. A
# refusal is tcpkit's one-line error (exit 1); the host checks its form and that it matches the facts above.
UNAVAILABLE=" "
for b in fentry kprobe tracepoint; do
    case " $BACKENDS " in *" $b "*) ;; *) continue ;; esac
    err=$(/opt/tcpkit/tcpkit accept --backend "$b" -d 0.2 2>&1 >/dev/null); rc=$?
    if [ "$rc" = 0 ]; then
        echo "@@TCPKIT-BACKEND kernel=$KREL backend=$b available=yes rc=0 lines=0 reason=-"
    else
        UNAVAILABLE="$UNAVAILABLE$b "
        echo "@@TCPKIT-BACKEND kernel=$KREL backend=$b available=no rc=$rc lines=$(echo "$err" | wc -l)" \
             "reason=$(echo "$err" | head -n1)"
    fi
done
fact auto_picks "$(/opt/tcpkit/tcpkit accept --debug -d 0.2 2>&1 >/dev/null \
                   | sed -n 's/^tcpkit: using the \(.*\) backend$/\1/p' | head -n1)"

# Protocols the tests must exercise here rather than skip with a notice: SCTP's module is shipped, and
# MPTCP is there whenever the kernel was built with it.
REQUIRE=sctp
[ -d /proc/sys/net/mptcp ] && REQUIRE="$REQUIRE mptcp"

# Which tests a cell runs. A test whose outcome cannot depend on the backend lives in a module named
# any_backend (tests/vm/README.md, "Which tests run on which backend"): it runs once per kernel, in the auto
# cell, where tcpkit picks its backend as a user's would. Every other test exercises what the backends do
# differently (the accept hooks, and the owner they give a server's connection) and runs once per backend
# the kernel allows, forced with --backend; auto, which picks one of those same backends, does not run them
# again.
cell_filter() { # cell_filter BACKEND: libtest arguments
    case "$1" in
        auto) echo "any_backend::" ;;
        *) echo "--skip any_backend::" ;;
    esac
}

# One run of one test binary: print its output, then the marker. libtest's summary line looks like
# "test result: ok. 12 passed; 0 failed; 0 ignored; ..." (FAILED instead of ok on failure). --report-time
# (libtest's, unstable on a stable toolchain, hence RUSTC_BOOTSTRAP for the test harness only) ends each
# result line with the test's own time, "test name ... ok <1.234s>": one @@TCPKIT-TEST marker per test.
run_one() { # run_one BACKEND BINARY
    local b="$1" bin="$2" name out=/tmp/out.$$ t0 rc passed failed
    name=$(basename "$bin") t0=$(now)
    echo "@@TCPKIT-START kernel=$KREL backend=$b bin=$name"
    # Output goes to the console as it comes (a hang shows where) and to a file for counting.
    # shellcheck disable=SC2046 # cell_filter's words are separate arguments
    { env TCPKIT_BIN=/opt/tcpkit/tcpkit TCPKIT_PEER_BIN=/opt/tcpkit/tcpkit-peer \
          TCPKIT_TEST_BACKEND="$b" TCPKIT_EXPECT_AUTO_BACKEND="$EXPECT_AUTO" TCPKIT_REQUIRE_PROTOCOLS="$REQUIRE" \
          TCPKIT_TEST_REFUSED=5000 RUSTC_BOOTSTRAP=1 \
          timeout -s TERM -k 10 "$TEST_TIMEOUT" "$bin" --test-threads="$THREADS" -Z unstable-options --report-time \
          $(cell_filter "$b") 2>&1
      echo "rc=$?" > /tmp/rc.$$; } | tee "$out"
    rc=$(sed -n 's/^rc=//p' /tmp/rc.$$); rm -f /tmp/rc.$$
    passed=$(sed -n 's/^test result: .* \([0-9][0-9]*\) passed; \([0-9][0-9]*\) failed.*/\1/p' "$out" \
             | awk '{ s += $1 } END { print s + 0 }')
    failed=$(sed -n 's/^test result: .* \([0-9][0-9]*\) passed; \([0-9][0-9]*\) failed.*/\2/p' "$out" \
             | awk '{ s += $1 } END { print s + 0 }')
    # Name the failed tests, so the host can list them without reading the whole log.
    sed -n 's/^test \(.*\) \.\.\. FAILED\( <.*>\)\{0,1\}$/\1/p' "$out" | while read -r t; do
        echo "@@TCPKIT-FAILED kernel=$KREL backend=$b bin=$name test=$t"
    done
    sed -n 's/^test \([^ ]*\) \.\.\. \([a-zA-Z]*\) <\([0-9.]*\)s>$/\1 \2 \3/p' "$out" | while read -r t r s; do
        echo "@@TCPKIT-TEST kernel=$KREL backend=$b bin=$name test=$t result=$r secs=$s"
    done
    rm -f "$out"
    echo "@@TCPKIT kernel=$KREL backend=$b bin=$name rc=${rc:-255} passed=$passed failed=$failed secs=$(since "$t0")"
}

# One short trace with the tcpkit binary BIN: the test peer accepts one loopback connection, and BIN must
# print it (as scripts/check-packages.sh does on the host with the installed package).
trace_once() { # trace_once BIN
    local port tk rc i
    rm -f /tmp/peer.out /tmp/trace.out
    /opt/tcpkit/tcpkit-peer listen --count 1 > /tmp/peer.out 2>&1 &
    i=0; while [ $i -lt 100 ] && ! grep -q '^port ' /tmp/peer.out; do sleep 0.1; i=$((i + 1)); done
    port=$(sed -n 's/^port //p' /tmp/peer.out)
    [ -n "$port" ] || { echo "trace_once: the peer did not listen"; return 1; }
    "$1" accept -P "$port" -c 1 -d 60 > /tmp/trace.out &
    tk=$!
    i=0; while [ $i -lt 600 ] && ! grep -q '^PID' /tmp/trace.out; do sleep 0.1; i=$((i + 1)); done
    /opt/tcpkit/tcpkit-peer connect --addr "127.0.0.1:$port" >/dev/null
    wait "$tk"; rc=$?
    wait
    cat /tmp/trace.out
    [ "$rc" = 0 ] && grep -q " $port *\$" /tmp/trace.out
}

# The packaged binaries (the host put them here when target/pkg had them): the version, and a real trace.
for p in /opt/tcpkit/pkg/*/tcpkit; do
    [ -x "$p" ] || continue
    version=fail trace=fail
    "$p" --version | grep -q '^tcpkit [0-9]' && version=ok
    trace_once "$p" && trace=ok
    echo "@@TCPKIT-PKG kernel=$KREL artifact=$(basename "$(dirname "$p")") sha256=$(sha256sum "$p" | cut -d' ' -f1)" \
         "version=$version trace=$trace"
done

t_all=$(now)
bins=$(ls /opt/tcpkit/tests/ 2>/dev/null)
[ -n "$bins" ] || echo "@@TCPKIT-WARN no test binaries in /opt/tcpkit/tests"
for b in $BACKENDS; do
    case "$UNAVAILABLE" in *" $b "*) continue ;; esac   # nothing to run: the host reports it as n/a
    for name in $bins; do
        cd /tmp && run_one "$b" "/opt/tcpkit/tests/$name"
    done
done
echo "@@TCPKIT-DONE kernel=$KREL secs=$(since "$t_all") uptime=$(now)"
sync
poweroff -f
sleep 5
die "poweroff returned"
