#!/usr/bin/env bash
# Run tcpkit's integration tests on real Debian kernels under qemu (TCG), one guest per kernel, every backend.
#
#   tests/vm/run-matrix.sh [--kernels "5.10 6.1 6.12"] [--backends "fentry kprobe tracepoint auto"]
#                          [--timeout SECS] [--jobs N] [--build]
#
# Run it from anywhere inside the project, as root (it installs host packages with apt when missing).
# See tests/vm/README.md for what it needs, what it caches, and how long it takes.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

CACHE=${TCPKIT_VM_CACHE:-/var/cache/tcpkit-vm}
OUT=${TCPKIT_VM_OUT:-$ROOT/target/vm}
TIMEOUT=${TCPKIT_VM_TIMEOUT:-900}           # per guest, host side: qemu is killed after this
TEST_TIMEOUT=${TCPKIT_VM_TEST_TIMEOUT:-600} # per test binary run, guest side: a hang costs one cell, not a kernel
JOBS=${TCPKIT_VM_JOBS:-2}                   # guests at once: each is one host thread (thread=single)
# .ko files to insmod in the guest, in dependency order: veth, and SCTP (with what 6.x's sctp.ko needs) so
# that the tracer's "SCTP never shows as TCP" case runs on every kernel.
MODULES=${TCPKIT_VM_MODULES-veth libcrc32c udp_tunnel ip6_udp_tunnel sctp}
KERNELS="5.10 6.1 6.12"
# Test binaries that run on the host only: manpages and completions check files, not the kernel; container
# runs podman, which the guests do not have (the guests check the identity fields with real cgroups instead).
HOST_ONLY_TESTS="manpages completions container"
BACKENDS="fentry kprobe tracepoint auto"
BUILD=0

QEMU_PIDS=()
TMPS=()

log() { printf '[vm %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf 'run-matrix: error: %s\n' "$*" >&2; exit 2; }

cleanup() {
    local p
    for p in "${QEMU_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${TMPS[@]}"; do rm -rf "$p"; done
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

usage() { sed -n '2,8s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; exit "${1:-0}"; }

parse_args() {
    while (($#)); do
        case "$1" in
            --kernels) KERNELS=${2:?--kernels needs a value}; shift 2 ;;
            --backends) BACKENDS=${2:?--backends needs a value}; shift 2 ;;
            --timeout) TIMEOUT=${2:?--timeout needs a value}; shift 2 ;;
            --jobs) JOBS=${2:?--jobs needs a value}; shift 2 ;;
            --build) BUILD=1; shift ;;
            -h|--help) usage 0 ;;
            *) printf 'run-matrix: unknown argument: %s\n' "$1" >&2; usage 2 ;;
        esac
    done
    [[ $TIMEOUT =~ ^[0-9]+$ ]] || die "--timeout must be whole seconds, got '$TIMEOUT'"
    [[ $JOBS =~ ^[1-9][0-9]*$ ]] || die "--jobs must be a positive number, got '$JOBS'"
    local k b
    for k in $KERNELS; do suite_of "$k" >/dev/null || die "unknown kernel '$k' (known: 5.10 6.1 6.12)"; done
    for b in $BACKENDS; do
        case "$b" in fentry|kprobe|tracepoint|auto) ;; *) die "unknown backend '$b'" ;; esac
    done
}

# Stage timer: `t0=$(now)` ... `elapsed $t0` prints seconds with one decimal.
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# ---------------------------------------------------------------------------------------------------------------
# Host packages

ensure_packages() {
    local want=(qemu-system-x86 busybox-static cpio jq xz-utils gzip) missing=() p
    for p in "${want[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    ((${#missing[@]})) || return 0
    [[ $(id -u) == 0 ]] || die "missing host packages (${missing[*]}) and not root to install them"
    log "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get -q update >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get -q install -y --no-install-recommends "${missing[@]}" >/dev/null
}

# ---------------------------------------------------------------------------------------------------------------
# Kernels: Debian cloud images, cached as $CACHE/kernels/<series>/{vmlinuz,config,release,package,kernel.deb}

suite_of() {
    case "$1" in 5.10) echo bullseye ;; 6.1) echo bookworm ;; 6.12) echo trixie ;; *) return 1 ;; esac
}

host_codename() { (. /etc/os-release && echo "${VERSION_CODENAME:-}"); }

# The machine's own Debian mirror (first URIs: line of a deb822 source, else the classic list), so that the
# temporary lists use the same one.
host_mirror() {
    local m=""
    if [[ -r /etc/apt/sources.list.d/debian.sources ]]; then
        m=$(sed -n 's/^URIs:[[:space:]]*\([^[:space:]]*\).*/\1/p' /etc/apt/sources.list.d/debian.sources \
            | grep -v -- '-security' | head -n1)
    fi
    if [[ -z $m && -r /etc/apt/sources.list ]]; then
        m=$(awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) { print $i; exit } }' \
            /etc/apt/sources.list)
    fi
    echo "${m:-http://deb.debian.org/debian}"
}

# Fills the global array APT_OPTS with the options that point apt at SUITE. The host's own suite uses the host's
# configuration untouched; any other suite gets a private sources list and lists directory under $CACHE/apt,
# so the machine's apt configuration is never modified.
APT_OPTS=()
apt_setup_suite() {
    local suite=$1
    APT_OPTS=(-o APT::Sandbox::User=root)   # downloads land in root-owned dirs: no _apt sandbox warning
    if [[ $suite == "$(host_codename)" ]]; then
        # A fresh machine may have no lists yet: update only if the package is not known.
        if ! apt-cache search --names-only '^linux-image-.*-cloud-amd64' | grep -q .; then
            apt-get -q update >/dev/null
        fi
        return
    fi
    local dir=$CACHE/apt/$suite
    mkdir -p "$dir/lists/partial"
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $(host_mirror) $suite main" \
        > "$dir/sources.list"
    APT_OPTS+=(-o "Dir::Etc::SourceList=$dir/sources.list" -o Dir::Etc::SourceParts=/dev/null
               -o "Dir::State::Lists=$dir/lists")
    apt-get "${APT_OPTS[@]}" -q update >/dev/null || die "apt-get update failed for suite $suite"
}

# Newest cloud-amd64 image of a series: the -unsigned one if the suite has it, else the signed one (both hold
# /boot/vmlinuz-*-cloud-amd64).
pick_kernel_pkg() {
    local series=$1 re pkg suffix
    re="^linux-image-${series//./\\.}\\.[^ ]*-cloud-amd64"
    for suffix in -unsigned ""; do
        pkg=$(apt-cache "${APT_OPTS[@]}" search --names-only "${re}${suffix}\$" | awk '{ print $1 }' \
              | grep -E -- "-cloud-amd64${suffix}\$" | sort -V | tail -n1)
        [[ -n $pkg ]] && { echo "$pkg"; return; }
    done
    return 1
}

fetch_kernel() {
    local series=$1 dir=$CACHE/kernels/$1
    if [[ -s $dir/vmlinuz && -s $dir/release && -s $dir/kernel.deb ]]; then
        log "kernel $series: cached ($(cat "$dir/release"))"
        return
    fi
    local suite pkg tmp t0
    t0=$(now)
    suite=$(suite_of "$series")
    apt_setup_suite "$suite"
    pkg=$(pick_kernel_pkg "$series") || die "no linux-image-$series.*-cloud-amd64 package in $suite"
    log "kernel $series: downloading $pkg from $suite"
    tmp=$(mktemp -d "$CACHE/tmp.XXXXXX"); TMPS+=("$tmp")
    (cd "$tmp" && apt-get "${APT_OPTS[@]}" -q download "$pkg" >/dev/null) || die "apt-get download $pkg failed"
    mv "$tmp"/*.deb "$tmp/kernel.deb"
    dpkg-deb --fsys-tarfile "$tmp/kernel.deb" | tar -x -C "$tmp" --wildcards './boot/*' \
        || die "cannot unpack $pkg"
    local vmlinuz
    vmlinuz=$(find "$tmp/boot" -name 'vmlinuz-*-cloud-amd64' | head -n1)
    [[ -n $vmlinuz ]] || die "$pkg has no /boot/vmlinuz-*-cloud-amd64"
    mv "$vmlinuz" "$tmp/vmlinuz"
    mv "$tmp"/boot/config-* "$tmp/config"
    basename "$vmlinuz" | sed 's/^vmlinuz-//' > "$tmp/release"
    dpkg-deb -f "$tmp/kernel.deb" Package Version | paste -sd' ' > "$tmp/package"
    rm -rf "${tmp:?}/boot"
    rm -rf "$dir"; mkdir -p "$(dirname "$dir")"; mv "$tmp" "$dir"
    log "kernel $series: $(cat "$dir/release") in $(elapsed "$t0")s"
}

# Copies module NAME.ko of a cached kernel to the file DEST (uncompressed: busybox insmod takes plain .ko
# only), caching it next to the kernel: reading the .deb takes seconds.
extract_module() {
    local series=$1 name=$2 dest=$3 deb=$CACHE/kernels/$1/kernel.deb
    local cached=$CACHE/kernels/$1/modules/$name.ko
    if [[ ! -s $cached ]]; then
        mkdir -p "$(dirname "$cached")"
        extract_module_from_deb "$series" "$name" "$deb" "$cached.tmp" && mv "$cached.tmp" "$cached"
    fi
    cp "$cached" "$dest"
}

extract_module_from_deb() { # SERIES NAME DEB OUTFILE
    local series=$1 name=$2 deb=$3 out=$4 path tmp
    path=$(dpkg-deb --fsys-tarfile "$deb" | tar -t | grep -E "/${name}\\.ko(\\.xz|\\.zst)?\$" | head -n1) \
        || die "kernel $series has no module $name"
    tmp=$(mktemp -d); TMPS+=("$tmp")
    dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$tmp" "$path"
    case "$path" in
        *.xz) xz -dc "$tmp/$path" > "$out" ;;
        *.zst) command -v zstd >/dev/null || die "zstd needed to unpack $path"; zstd -qdc "$tmp/$path" > "$out" ;;
        *) cp "$tmp/$path" "$out" ;;
    esac
}

# ---------------------------------------------------------------------------------------------------------------
# Binaries to ship: BIN_TCPKIT, BIN_PEER, and TEST_BINS ("name<TAB>path" lines), recorded in $OUT/bins.tsv.

BIN_TCPKIT=$ROOT/target/release/tcpkit
BIN_PEER=$ROOT/target/release/tcpkit-peer

build_bins() {
    command -v cargo >/dev/null || die "cargo not found (needed to build the test binaries)"
    local t0 json
    t0=$(now)
    log "building: cargo build --release --bins; cargo test --release --no-run"
    (cd "$ROOT" && cargo build --release --bins) || die "cargo build --release --bins failed"
    json=$(cd "$ROOT" && cargo test --release --no-run --message-format=json) || die "cargo test --no-run failed"
    # Integration tests only (target kind "test"): unit-test harnesses do not touch the kernel and run on the
    # host, and so do the test binaries in HOST_ONLY_TESTS (they need man and bash, which the guests lack).
    jq -r --arg host_only "$HOST_ONLY_TESTS" \
          'select(.reason == "compiler-artifact" and .profile.test and .executable != null
                  and (.target.kind | index("test"))
                  and ((.target.name) as $n | $host_only | split(" ") | index($n) | not))
           | "\(.target.name)\t\(.executable)"' <<<"$json" | sort -u > "$OUT/bins.tsv"
    log "built in $(elapsed "$t0")s: $(cut -f1 "$OUT/bins.tsv" | paste -sd' ')"
}

# TCPKIT_VM_BINS="path ..." ships those test binaries instead of cargo's (for developing this script).
select_bins() {
    mkdir -p "$OUT"
    if [[ -n ${TCPKIT_VM_BINS:-} ]]; then
        local p
        : > "$OUT/bins.tsv"
        for p in $TCPKIT_VM_BINS; do
            [[ -x $p ]] || die "TCPKIT_VM_BINS: $p is not an executable"
            printf '%s\t%s\n' "$(basename "$p" | sed 's/-[0-9a-f]\{16\}$//')" "$p" >> "$OUT/bins.tsv"
        done
    elif ((BUILD)) || ! bins_recorded; then
        build_bins
    else
        log "using the binaries of the last build (pass --build to rebuild)"
    fi
    [[ -s $OUT/bins.tsv ]] || die "no integration test binaries found"
}

bins_recorded() {
    [[ -s $OUT/bins.tsv && -x $BIN_TCPKIT && -x $BIN_PEER ]] || return 1
    local name path
    while IFS=$'\t' read -r name path; do [[ -x $path ]] || return 1; done < "$OUT/bins.tsv"
}

# ---------------------------------------------------------------------------------------------------------------
# Initramfs: one common archive (busybox, /init, binaries, their libraries) plus a small per-kernel one with the
# modules; the kernel unpacks concatenated gzip'd cpio archives in order.

copy_with_libs() { # copy_with_libs SRC DEST_IN_ROOT ROOT: the file and every shared library ldd lists for it
    local src=$1 dest=$2 root=$3 lib
    mkdir -p "$root/$(dirname "$dest")"
    cp -L "$src" "$root/$dest"
    # "libx.so => /path (0x..)" and the loader's "/lib64/ld-linux-x86-64.so.2 (0x..)"; static binaries print
    # "not a dynamic executable" or "statically linked" and need nothing.
    if ldd "$src" 2>/dev/null | grep -q 'not found'; then
        die "$src: $(ldd "$src" | grep 'not found' | head -n1 | xargs)"
    fi
    for lib in $(ldd "$src" 2>/dev/null | sed -n 's/.*=> \(\/[^ ]*\) (0x.*/\1/p; s/^[[:space:]]*\(\/[^ ]*\) (0x.*/\1/p'); do
        [[ -e $root/$lib ]] && continue
        mkdir -p "$root/$(dirname "$lib")"
        cp -L "$lib" "$root/$lib"
    done
}

pack_common() {
    local root=$OUT/initramfs t0 name path applet
    t0=$(now)
    rm -rf "$root"; mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,root,tmp,proc,sys,dev,run,lib/modules,opt/tcpkit/tests}
    cp /bin/busybox "$root/bin/busybox"
    # Applet links where Debian puts them (bin/sh, sbin/ip, usr/bin/env ...), so scripts with absolute paths work.
    for applet in $(/bin/busybox --list-full); do
        [[ -e $root/$applet ]] || ln -s /bin/busybox "$root/$applet"
    done
    install -m 0755 "$HERE/init.sh" "$root/init"
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' > "$root/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' > "$root/etc/group"
    printf '127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n' > "$root/etc/hosts"
    printf 'passwd: files\ngroup: files\nhosts: files\n' > "$root/etc/nsswitch.conf"
    echo tcpkit-vm > "$root/etc/hostname"   # tests use it as "a regular file that exists"

    local b
    for b in "$BIN_TCPKIT" "$BIN_PEER"; do
        if [[ -x $b ]]; then
            copy_with_libs "$b" "/opt/tcpkit/$(basename "$b")" "$root"
            # Tests built with env!("CARGO_BIN_EXE_…") carry the host path: make it resolve in the guest too.
            mkdir -p "$root/$(dirname "$b")"; ln -sf "/opt/tcpkit/$(basename "$b")" "$root/$b"
        else
            log "warning: $b not built: not shipped"
        fi
    done
    while IFS=$'\t' read -r name path; do
        copy_with_libs "$path" "/opt/tcpkit/tests/$name" "$root"
    done < "$OUT/bins.tsv"

    (cd "$root" && find . -print0 | cpio --null -o -H newc --owner 0:0 --quiet) | gzip -1 > "$OUT/common.cpio.gz"
    log "initramfs: $(du -h "$OUT/common.cpio.gz" | cut -f1) packed in $(elapsed "$t0")s"
}

pack_kernel() { # pack_kernel SERIES: $OUT/initrd-SERIES.gz = common + this kernel's modules
    local series=$1 root=$OUT/initramfs-$1 m
    rm -rf "$root"; mkdir -p "$root/lib/modules"
    local i=0
    # Numbered, because the guest loads /lib/modules/*.ko in name order and that must be dependency order.
    for m in $MODULES; do
        i=$((i + 1))
        extract_module "$series" "$m" "$root/lib/modules/$(printf '%02d' "$i")-$m.ko"
    done
    (cd "$root" && find . -print0 | cpio --null -o -H newc --owner 0:0 --quiet) | gzip -1 > "$OUT/modules-$series.cpio.gz"
    cat "$OUT/common.cpio.gz" "$OUT/modules-$series.cpio.gz" > "$OUT/initrd-$series.gz"
    rm -rf "$root"
}

# ---------------------------------------------------------------------------------------------------------------
# Guests

# Starts a guest in the background; its pid is appended to QEMU_PIDS and recorded in $OUT/SERIES.pid.
start_guest() {
    local series=$1 kdir=$CACHE/kernels/$1
    local append="console=ttyS0 panic=-1 quiet tcpkit.backends=${BACKENDS// /,} tcpkit.test_timeout=$TEST_TIMEOUT"
    now > "$OUT/$series.start"
    # TCG only: KVM guests hang on this machine. Two workarounds for qemu 7.2 TCG bugs that crash these guests
    # in roughly 1 boot out of 8 (measured, see README):
    #  - cpu max without cx16: TCG's cmpxchg16b (SLUB's per-cpu fast path) sometimes corrupts EFLAGS, and the
    #    kernel double-faults in __kmalloc; without CX16 the kernel uses its own cmpxchg16b emulation.
    #  - thread=single: with one host thread per vCPU (MTTCG), a vCPU sometimes runs stale code while another
    #    patches kernel text (static keys flip when BPF programs attach), and hits a stray int3. Round-robin
    #    vCPUs on one thread do not; run two guests at once instead (--jobs) to use both host cores.
    # timeout forwards our TERM to qemu (trap) and kills it hard 10 s after the limit.
    timeout -k 10 "$TIMEOUT" qemu-system-x86_64 -machine q35 -accel tcg,thread=single -cpu max,-cx16 \
        -smp 2 -m 2G -nographic -no-reboot -nic none \
        -kernel "$kdir/vmlinuz" -initrd "$OUT/initrd-$series.gz" -append "$append" \
        </dev/null >"$OUT/$series.log" 2>&1 &
    QEMU_PIDS+=($!)
    echo $! > "$OUT/$series.pid"
    log "kernel $series: booting $(cat "$kdir/release") (log: $OUT/$series.log)"
}

# Waits for a guest; records its exit code and wall time.
finish_guest() {
    local series=$1 pid rc=0
    pid=$(cat "$OUT/$series.pid")
    wait "$pid" || rc=$?
    echo "$rc" > "$OUT/$series.rc"
    elapsed "$(cat "$OUT/$series.start")" > "$OUT/$series.wall"
    log "kernel $series: guest ended (rc=$rc) after $(cat "$OUT/$series.wall")s"
}

run_guests() {
    local queue running=() next s still
    read -r -a queue <<<"$KERNELS"
    while ((${#queue[@]} || ${#running[@]})); do
        while ((${#running[@]} < JOBS && ${#queue[@]})); do
            next=${queue[0]}; queue=("${queue[@]:1}")
            start_guest "$next"; running+=("$next")
        done
        # Bounded: every guest ends by itself or by timeout(1) within TIMEOUT+10 s.
        sleep 1
        still=()
        for s in "${running[@]}"; do
            if kill -0 "$(cat "$OUT/$s.pid")" 2>/dev/null; then still+=("$s"); else finish_guest "$s"; fi
        done
        running=("${still[@]}")
    done
}

# ---------------------------------------------------------------------------------------------------------------
# Results

# Markers of one guest log, one per line, carriage returns and console noise around them removed.
markers() { tr -d '\r' < "$OUT/$1.log" | grep -a -o "$2.*" || true; }
# ": kernel said: <first oops/panic line>" if the guest's kernel crashed, else nothing.
crash_line() {
    local l
    l=$(tr -d '\r' < "$OUT/$1.log" | grep -a -m1 -E 'Kernel panic|Oops|BUG:|double fault|general protection' || true)
    [[ -n $l ]] && printf ': kernel said: %s' "$l"
    return 0
}
# ": test1 test2 ..." the tests that failed in one run (from the guest's @@TCPKIT-FAILED lines).
failed_tests() {
    local t
    t=$(markers "$1" '@@TCPKIT-FAILED ' | grep -F " backend=$2 bin=$3 " | sed 's/.* test=//' | paste -sd' ' || true)
    [[ -n $t ]] && printf ': %s' "$t"
    return 0
}
field() { sed -n "s/.* $1=\\([^ ]*\\).*/\\1/p" <<<" $2"; }

print_facts() {
    local s line
    echo
    echo "Kernel facts:"
    for s in $KERNELS; do
        markers "$s" '@@TCPKIT-FACT ' | while read -r _ k kv; do echo "  ${k#kernel=} $kv"; done
    done | awk '{ split($2, kv, "="); v[$1, kv[1]] = kv[2]; if (!($1 in seen)) { seen[$1] = 1; ks[++nk] = $1 }
                  if (!(kv[1] in fs)) { fs[kv[1]] = 1; f[++nf] = kv[1] } }
                END { printf "  %-24s", "fact"; for (i = 1; i <= nk; i++) printf " %-26s", ks[i]; print ""
                      for (j = 1; j <= nf; j++) { printf "  %-24s", f[j]
                          for (i = 1; i <= nk; i++) printf " %-26s", v[ks[i], f[j]]; print "" } }'
}

# Prints the matrix and returns non-zero if any cell failed or is missing, or a guest timed out.
report() {
    local s b name path bad=0 line rc passed failed secs cell krel cellbad wall
    local names=() ; while IFS=$'\t' read -r name path; do names+=("$name"); done < "$OUT/bins.tsv"
    echo
    printf '%-30s' "kernel"; for b in $BACKENDS; do printf ' %-20s' "$b"; done; printf ' %s\n' "wall"
    for s in $KERNELS; do
        krel=$(cat "$CACHE/kernels/$s/release")
        printf '%-30s' "$krel"
        for b in $BACKENDS; do
            passed=0 failed=0 secs=0 cellbad=0
            for name in "${names[@]}"; do
                line=$(markers "$s" '@@TCPKIT ' | grep " backend=$b bin=$name " | tail -n1 || true)
                if [[ -z $line ]]; then
                    cellbad=1; echo "$krel $b $name: no result marker" >> "$OUT/problems"; continue
                fi
                rc=$(field rc "$line")
                passed=$((passed + $(field passed "$line"))); failed=$((failed + $(field failed "$line")))
                secs=$(awk -v a="$secs" -v b="$(field secs "$line")" 'BEGIN { print a + b }')
                if [[ $rc != 0 || $(field failed "$line") != 0 ]]; then
                    cellbad=1
                    echo "$krel $b $name: rc=$rc failed=$(field failed "$line")$(failed_tests "$s" "$b" "$name")" \
                        >> "$OUT/problems"
                fi
            done
            cell="$passed/$failed ${secs}s"; ((cellbad)) && { cell="FAIL $cell"; bad=1; }
            printf ' %-20s' "$cell"
        done
        wall=$(cat "$OUT/$s.wall" 2>/dev/null || echo '?')
        rc=$(cat "$OUT/$s.rc" 2>/dev/null || echo '?')
        case "$rc" in
            0) printf ' %ss' "$wall" ;;
            124|137) printf ' %ss TIMEOUT' "$wall"; bad=1; echo "$krel: guest timed out after ${TIMEOUT}s" >> "$OUT/problems" ;;
            *) printf ' %ss qemu rc=%s' "$wall" "$rc"; bad=1; echo "$krel: qemu exited with $rc" >> "$OUT/problems" ;;
        esac
        # With panic=-1 and -no-reboot a kernel crash ends qemu with 0 too: only the last marker proves the
        # guest got through its list.
        if [[ -z $(markers "$s" '@@TCPKIT-DONE ') ]]; then
            printf ' INCOMPLETE'; bad=1
            echo "$krel: guest did not finish its runs (no @@TCPKIT-DONE)$(crash_line "$s")" >> "$OUT/problems"
        fi
        echo
    done
    echo "(cells: passed/failed, summed seconds of the test binaries; wall: host time from qemu start to power-off)"
    print_facts
    if ((bad)); then
        echo; echo "FAILED:"; sed 's/^/  /' "$OUT/problems"
        for s in $KERNELS; do
            if grep -q "^$(cat "$CACHE/kernels/$s/release") " "$OUT/problems"; then
                echo; echo "---- last 40 lines of $OUT/$s.log ----"; tr -d '\r' < "$OUT/$s.log" | tail -n 40
            fi
        done
        return 1
    fi
    echo; echo "vm matrix: all passed"
}

main() {
    parse_args "$@"
    local t_all t0 s
    t_all=$(now)
    mkdir -p "$CACHE" "$OUT"; rm -f "$OUT/problems" "$OUT"/*.rc "$OUT"/*.wall "$OUT"/*.log
    ensure_packages
    t0=$(now)
    for s in $KERNELS; do fetch_kernel "$s"; done
    log "kernels ready in $(elapsed "$t0")s"
    select_bins
    t0=$(now)
    pack_common
    for s in $KERNELS; do pack_kernel "$s"; done
    log "initrds ready in $(elapsed "$t0")s"
    t0=$(now)
    run_guests
    log "guests done in $(elapsed "$t0")s; total $(elapsed "$t_all")s"
    report
}

main "$@"
