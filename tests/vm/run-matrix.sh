#!/usr/bin/env bash
# Run tcpkit's integration tests on real Debian kernels under qemu (TCG), one guest per kernel and architecture,
# every backend the kernel allows.
#
#   tests/vm/run-matrix.sh [--arch x86_64|arm64|all] [--kernels "5.10 6.1 6.12"]
#                          [--backends "fentry kprobe tracepoint auto"] [--timeout SECS] [--jobs N] [--build]
#                          [--repeat N]
#
# Run it from anywhere inside the project, as root (it installs host packages with apt when missing).
# See tests/vm/README.md for what it needs, what it caches, and how long it takes.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
# shellcheck source=scripts/arch.sh
. "$ROOT/scripts/arch.sh"

CACHE=${TCPKIT_VM_CACHE:-/var/cache/tcpkit-vm}
OUT=${TCPKIT_VM_OUT:-$ROOT/target/vm}
TIMEOUT=${TCPKIT_VM_TIMEOUT:-1500}          # per guest, host side: qemu is killed after this
TEST_TIMEOUT=${TCPKIT_VM_TEST_TIMEOUT:-600} # per test binary run, guest side: a hang costs one cell, not a kernel
JOBS=${TCPKIT_VM_JOBS:-2}                   # guests at once: each is one host thread (thread=single)
# .ko files to insmod in the guest, in dependency order: veth, and SCTP (with what 6.x's sctp.ko needs) so
# that the tracer's "SCTP never shows as TCP" case runs on every kernel.
MODULES=${TCPKIT_VM_MODULES-veth libcrc32c udp_tunnel ip6_udp_tunnel sctp}
KERNELS="5.10 6.1 6.12"
# Debian's names of the architectures to test (--arch); this machine's own is built natively, the other one
# cross-built static (see build_bins). arm64 first: its guests take longest, and starting the longest guests
# first packs the --jobs queue best.
DEBARCHES="arm64 amd64"
HOST_DEBARCH=$(dpkg --print-architecture)
# Test binaries that run on the host only: manpages and completions check files, not the kernel; container
# runs podman, which the guests do not have (the guests check the identity fields with real cgroups instead).
HOST_ONLY_TESTS="manpages completions container shaped prometheus rules"
BACKENDS="fentry kprobe tracepoint auto"
BUILD=0
REPEAT=1

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

usage() { sed -n '2,10s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; exit "${1:-0}"; }

parse_args() {
    while (($#)); do
        case "$1" in
            --arch)
                case "${2:?--arch needs a value}" in
                    all) DEBARCHES="arm64 amd64" ;;
                    *) set_arch run-matrix "$2"; DEBARCHES=$debarch ;;
                esac
                shift 2 ;;
            --kernels) KERNELS=${2:?--kernels needs a value}; shift 2 ;;
            --backends) BACKENDS=${2:?--backends needs a value}; shift 2 ;;
            --timeout) TIMEOUT=${2:?--timeout needs a value}; shift 2 ;;
            --jobs) JOBS=${2:?--jobs needs a value}; shift 2 ;;
            --build) BUILD=1; shift ;;
            --repeat) REPEAT=${2:?--repeat needs a value}; shift 2 ;;
            -h|--help) usage 0 ;;
            *) printf 'run-matrix: unknown argument: %s\n' "$1" >&2; usage 2 ;;
        esac
    done
    [[ $TIMEOUT =~ ^[0-9]+$ ]] || die "--timeout must be whole seconds, got '$TIMEOUT'"
    [[ $JOBS =~ ^[1-9][0-9]*$ ]] || die "--jobs must be a positive number, got '$JOBS'"
    [[ $REPEAT =~ ^[1-9][0-9]*$ ]] || die "--repeat must be a positive number, got '$REPEAT'"
    local k b
    for k in $KERNELS; do suite_of "$k" >/dev/null || die "unknown kernel '$k' (known: 5.10 6.1 6.12)"; done
    for b in $BACKENDS; do
        case "$b" in fentry|kprobe|tracepoint|auto) ;; *) die "unknown backend '$b'" ;; esac
    done
    GUESTS=""
    for a in $DEBARCHES; do for k in $KERNELS; do GUESTS+="${GUESTS:+ }$a-$k"; done; done
}

# A guest is named by Debian's architecture and the kernel series: amd64-6.1, arm64-5.10.
debarch_of() { echo "${1%%-*}"; }
series_of() { echo "${1#*-}"; }
uname_arch_of() { case "$1" in amd64) echo x86_64 ;; arm64) echo aarch64 ;; esac; }

# Stage timer: `t0=$(now)` ... `elapsed $t0` prints seconds with one decimal.
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# ---------------------------------------------------------------------------------------------------------------
# Host packages

ensure_packages() {
    # busybox-static: this machine's, for the applet list (and the x86-64 guests' busybox itself).
    local want=(busybox-static cpio jq xz-utils gzip file) missing=() p
    [[ " $DEBARCHES " == *" amd64 "* ]] && want+=(qemu-system-x86)
    [[ " $DEBARCHES " == *" arm64 "* ]] && want+=(qemu-system-arm)
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
# Kernels: Debian cloud images, cached as $CACHE/kernels/<guest>/{vmlinuz,config,release,package,kernel.deb}

suite_of() {
    case "$1" in 5.10) echo bullseye ;; 6.1) echo bookworm ;; 6.12) echo trixie ;; *) return 1 ;; esac
}

host_codename() { (. /etc/os-release && echo "${VERSION_CODENAME:-}"); }

# The machine's own Debian mirror, so that the temporary lists use the same one: the first URI of an
# enabled apt source (a deb822 .sources stanza, or a one-line .list entry) of type deb whose suites include
# the machine's own codename. Nothing else: with no such source, say so and stop.
host_mirror() {
    local codename m f
    codename=$(host_codename)
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -r $f ]] || continue
        # Stanzas are separated by blank lines; keys are case-insensitive (sources.list(5)).
        m=$(awk -v want="$codename" '
            function flush() { if (deb && suite && !off && uri != "" && !found) { print uri; found = 1 }
                               deb = 0; suite = 0; off = 0; uri = "" }
            /^[ \t]*$/ { flush(); next }
            /^[ \t]*#/ { next }
            { key = tolower($1) }
            key == "types:" { for (i = 2; i <= NF; i++) if ($i == "deb") deb = 1 }
            key == "suites:" { for (i = 2; i <= NF; i++) if ($i == want) suite = 1 }
            key == "uris:" { uri = $2 }
            key == "enabled:" && tolower($2) == "no" { off = 1 }
            END { flush() }' "$f")
        [[ -n $m ]] && { echo "$m"; return; }
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -r $f ]] || continue
        # deb [options] URI SUITE COMPONENT...
        m=$(awk -v want="$codename" '{ sub(/#.*/, ""); gsub(/\[[^]]*\]/, "") }
                                     $1 == "deb" && $3 == want { print $2; exit }' "$f")
        [[ -n $m ]] && { echo "$m"; return; }
    done
    die "no apt source of this machine serves its own suite ('$codename'), so there is no mirror to fetch the other suites' kernels from: add one to /etc/apt/sources.list.d"
}

# Fills the global array APT_OPTS with the options that point apt at SUITE for DEBARCH. The host's own suite
# and architecture use the host's configuration untouched. Another suite gets a private sources list (the
# machine's mirror, that suite) and another architecture its own package lists: both live under $CACHE/apt,
# so the machine's apt configuration is never modified. The host's suite for another architecture keeps the
# host's sources (updates and security included, as for the host's own kernels).
APT_OPTS=()
apt_setup_suite() { # apt_setup_suite SUITE DEBARCH
    local suite=$1 debarch=$2
    APT_OPTS=(-o APT::Sandbox::User=root)   # downloads land in root-owned dirs: no _apt sandbox warning
    if [[ $suite == "$(host_codename)" && $debarch == "$HOST_DEBARCH" ]]; then
        # A fresh machine may have no lists yet: update only if the package is not known.
        if ! apt-cache search --names-only "^linux-image-.*-cloud-$debarch" | grep -q .; then
            apt-get -q update >/dev/null
        fi
        return
    fi
    local dir=$CACHE/apt/$suite-$debarch
    mkdir -p "$dir/lists/partial"
    if [[ $suite != "$(host_codename)" ]]; then
        local mirror
        mirror=$(host_mirror) || exit 2   # it said why
        echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $suite main" > "$dir/sources.list"
        APT_OPTS+=(-o "Dir::Etc::SourceList=$dir/sources.list" -o Dir::Etc::SourceParts=/dev/null)
    fi
    APT_OPTS+=(-o "Dir::State::Lists=$dir/lists")
    [[ $debarch == "$HOST_DEBARCH" ]] || APT_OPTS+=(-o "APT::Architecture=$debarch" -o "APT::Architectures=$debarch")
    # Once per run and list: the kernel and busybox of one suite share it.
    if [[ ! -e $dir/updated.$$ ]]; then
        apt-get "${APT_OPTS[@]}" -q update >/dev/null || die "apt-get update failed for $suite ($debarch)"
        rm -f "$dir"/updated.*; : > "$dir/updated.$$"
    fi
}

# Newest cloud image of a series for DEBARCH: the -unsigned one if the suite has it, else the signed one (both
# hold /boot/vmlinuz-*-cloud-DEBARCH).
pick_kernel_pkg() { # pick_kernel_pkg SERIES DEBARCH
    local series=$1 debarch=$2 re pkg suffix
    re="^linux-image-${series//./\\.}\\.[^ ]*-cloud-$debarch"
    for suffix in -unsigned ""; do
        pkg=$(apt-cache "${APT_OPTS[@]}" search --names-only "${re}${suffix}\$" | awk '{ print $1 }' \
              | grep -E -- "-cloud-$debarch${suffix}\$" | sort -V | tail -n1)
        [[ -n $pkg ]] && { echo "$pkg"; return; }
    done
    return 1
}

fetch_kernel() { # fetch_kernel GUEST
    local guest=$1 dir=$CACHE/kernels/$1 series debarch
    series=$(series_of "$guest") debarch=$(debarch_of "$guest")
    if [[ -s $dir/vmlinuz && -s $dir/release && -s $dir/kernel.deb ]]; then
        log "kernel $guest: cached ($(cat "$dir/release"))"
        return
    fi
    local suite pkg tmp t0
    t0=$(now)
    suite=$(suite_of "$series")
    apt_setup_suite "$suite" "$debarch"
    pkg=$(pick_kernel_pkg "$series" "$debarch") || die "no linux-image-$series.*-cloud-$debarch package in $suite"
    log "kernel $guest: downloading $pkg from $suite"
    tmp=$(mktemp -d "$CACHE/tmp.XXXXXX"); TMPS+=("$tmp")
    (cd "$tmp" && apt-get "${APT_OPTS[@]}" -q download "$pkg" >/dev/null) || die "apt-get download $pkg failed"
    mv "$tmp"/*.deb "$tmp/kernel.deb"
    dpkg-deb --fsys-tarfile "$tmp/kernel.deb" | tar -x -C "$tmp" --wildcards './boot/*' \
        || die "cannot unpack $pkg"
    local vmlinuz
    vmlinuz=$(find "$tmp/boot" -name "vmlinuz-*-cloud-$debarch" | head -n1)
    [[ -n $vmlinuz ]] || die "$pkg has no /boot/vmlinuz-*-cloud-$debarch"
    mv "$vmlinuz" "$tmp/vmlinuz"
    mv "$tmp"/boot/config-* "$tmp/config"
    basename "$vmlinuz" | sed 's/^vmlinuz-//' > "$tmp/release"
    dpkg-deb -f "$tmp/kernel.deb" Package Version | paste -sd' ' > "$tmp/package"
    rm -rf "${tmp:?}/boot"
    rm -rf "$dir"; mkdir -p "$(dirname "$dir")"; mv "$tmp" "$dir"
    log "kernel $guest: $(cat "$dir/release") in $(elapsed "$t0")s"
}

# The busybox of a foreign architecture's guests: Debian's busybox-static for it, from the host's suite,
# cached as $CACHE/busybox-DEBARCH. (The host's own architecture uses the host's /bin/busybox.)
busybox_for() { # busybox_for DEBARCH: prints the path
    local debarch=$1 out=$CACHE/busybox-$1 tmp
    if [[ $debarch == "$HOST_DEBARCH" ]]; then echo /bin/busybox; return; fi
    if [[ ! -s $out ]]; then
        apt_setup_suite "$(host_codename)" "$debarch"
        tmp=$(mktemp -d "$CACHE/tmp.XXXXXX"); TMPS+=("$tmp")
        (cd "$tmp" && apt-get "${APT_OPTS[@]}" -q download busybox-static >/dev/null) \
            || die "apt-get download busybox-static ($debarch) failed"
        dpkg-deb -x "$tmp"/busybox-static_*.deb "$tmp/root"
        mv "$tmp/root/bin/busybox" "$out"
    fi
    echo "$out"
}

# Copies module NAME.ko of a cached kernel to the file DEST (uncompressed: busybox insmod takes plain .ko
# only), caching it next to the kernel: reading the .deb takes seconds.
extract_module() { # extract_module GUEST NAME DEST
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
# Binaries to ship, per architecture: tcpkit and tcpkit-peer from bin_dir, and the integration tests
# ("name<TAB>path" lines) recorded in $OUT/bins-DEBARCH.tsv.

# Where cargo puts an architecture's binaries: this machine's are native builds; the other architecture's are
# cross-built static (no libraries of that architecture to ship), as scripts/build-static.sh builds them.
bin_dir() {
    if [[ $1 == "$HOST_DEBARCH" ]]; then echo "$ROOT/target/release"
    else echo "$ROOT/target/$(uname_arch_of "$1")-unknown-linux-gnu/release"; fi
}

build_bins() { # build_bins DEBARCH
    local debarch=$1 t0 json
    command -v cargo >/dev/null || die "cargo not found (needed to build the test binaries)"
    t0=$(now)
    if [[ $debarch == "$HOST_DEBARCH" ]]; then
        log "building ($debarch): cargo build --release --bins; cargo test --release --no-run"
        (cd "$ROOT" && cargo build --release --bins) || die "cargo build --release --bins failed"
        json=$(cd "$ROOT" && cargo test --release --no-run --message-format=json) || die "cargo test --no-run failed"
    else
        # As scripts/build-static.sh: the cross tools, Debian's static libelf and zlib of the target, and a
        # static glibc (+crt-static applies to the --target binaries only, not to build scripts).
        log "building ($debarch): static, cross: cargo build/test --release --features static --target …"
        json=$(cd "$ROOT" && set_arch run-matrix "$debarch" && scripts/setup-cross.sh "$arch" >&2 \
               && export_libbpf_library_paths && export RUSTFLAGS="-C target-feature=+crt-static" \
               && cargo build --release --features static --target "$triple" --bins >&2 \
               && cargo test --release --no-run --features static --target "$triple" --message-format=json) \
            || die "the static $debarch build failed"
    fi
    # Integration tests only (target kind "test"): unit-test harnesses do not touch the kernel and run on the
    # host, and so do the test binaries in HOST_ONLY_TESTS (they need man and bash, which the guests lack).
    jq -r --arg host_only "$HOST_ONLY_TESTS" \
          'select(.reason == "compiler-artifact" and .profile.test and .executable != null
                  and (.target.kind | index("test"))
                  and ((.target.name) as $n | $host_only | split(" ") | index($n) | not))
           | "\(.target.name)\t\(.executable)"' <<<"$json" | sort -u > "$OUT/bins-$debarch.tsv"
    log "built ($debarch) in $(elapsed "$t0")s: $(cut -f1 "$OUT/bins-$debarch.tsv" | paste -sd' ')"
}

# Dies unless FILE is a statically linked executable for DEBARCH (what `file` says: "ELF 64-bit LSB
# executable, ARM aarch64, ..., statically linked").
check_static() { # check_static FILE DEBARCH
    local what machine
    case "$2" in amd64) machine=x86-64 ;; arm64) machine="ARM aarch64" ;; esac
    what=$(file -b "$1")
    [[ $what == *"$machine"* && $what =~ (statically|static-pie)\ linked ]] || die "$1 is not a static $2 executable: $what"
}

# TCPKIT_VM_BINS="path ..." ships those test binaries instead of cargo's (for developing this script; the
# host's architecture only).
select_bins() { # select_bins DEBARCH
    local debarch=$1
    mkdir -p "$OUT"
    if [[ -n ${TCPKIT_VM_BINS:-} && $debarch == "$HOST_DEBARCH" ]]; then
        local p
        : > "$OUT/bins-$debarch.tsv"
        for p in $TCPKIT_VM_BINS; do
            [[ -x $p ]] || die "TCPKIT_VM_BINS: $p is not an executable"
            printf '%s\t%s\n' "$(basename "$p" | sed 's/-[0-9a-f]\{16\}$//')" "$p" >> "$OUT/bins-$debarch.tsv"
        done
    elif ((BUILD)) || ! bins_recorded "$debarch"; then
        build_bins "$debarch"
    else
        log "using the $debarch binaries of the last build (pass --build to rebuild)"
    fi
    [[ -s $OUT/bins-$debarch.tsv ]] || die "no $debarch integration test binaries found"
    if [[ $debarch != "$HOST_DEBARCH" ]]; then   # shipped without libraries: they must need none
        local p
        for p in "$(bin_dir "$debarch")"/tcpkit "$(bin_dir "$debarch")"/tcpkit-peer $(cut -f2 "$OUT/bins-$debarch.tsv"); do
            check_static "$p" "$debarch"
        done
    fi
}

bins_recorded() { # bins_recorded DEBARCH
    local list=$OUT/bins-$1.tsv name path
    [[ -s $list && -x $(bin_dir "$1")/tcpkit && -x $(bin_dir "$1")/tcpkit-peer ]] || return 1
    while IFS=$'\t' read -r name path; do [[ -x $path ]] || return 1; done < "$list"
}

# ---------------------------------------------------------------------------------------------------------------
# Initramfs: one common archive per architecture (busybox, /init, binaries, their libraries) plus a small
# per-kernel one with the kernel's config and modules; the kernel unpacks concatenated gzip'd cpio archives in
# order.

# copy_with_libs SRC DEST_IN_ROOT ROOT: the ELF file and, for a dynamic one, every shared library it needs
# (DT_NEEDED, transitively, from Debian's multiarch directories of its architecture) and its loader, each at
# its path on this machine. Read with readelf, not ldd, so that it works for another architecture's binaries.
copy_with_libs() {
    local src=$1 dest=$2 root=$3
    mkdir -p "$root/$(dirname "$dest")"
    cp -L "$src" "$root/$dest"
    copy_needed "$src" "$root"
}

copy_needed() { # copy_needed ELF ROOT
    local elf=$1 root=$2 interp multiarch lib dir found
    interp=$(readelf -lW "$elf" | sed -n 's/.*Requesting program interpreter: \(.*\)]$/\1/p')
    [[ -n $interp ]] || return 0   # static: needs nothing
    case "$(readelf -hW "$elf" | sed -n 's/^ *Machine: *//p')" in
        *X86-64*) multiarch=x86_64-linux-gnu ;;
        *AArch64*) multiarch=aarch64-linux-gnu ;;
        *) die "$elf: no multiarch directory known for its machine" ;;
    esac
    if [[ ! -e $root/$interp ]]; then
        mkdir -p "$root/$(dirname "$interp")"; cp -L "$interp" "$root/$interp"
    fi
    for lib in $(readelf -dW "$elf" | sed -n 's/.*(NEEDED).*\[\(.*\)\]$/\1/p'); do
        found=""
        for dir in "/lib/$multiarch" "/usr/lib/$multiarch"; do
            [[ -e $dir/$lib ]] && { found=$dir/$lib; break; }
        done
        [[ -n $found ]] || die "$elf needs $lib, which is not in /lib/$multiarch or /usr/lib/$multiarch"
        [[ -e $root/$found ]] && continue
        mkdir -p "$root/$(dirname "$found")"
        cp -L "$found" "$root/$found"
        copy_needed "$found" "$root"
    done
}

# The packages scripts/package.sh left in target/pkg for DEBARCH, if any: their tcpkit binaries go to
# /opt/tcpkit/pkg/{deb,static}/tcpkit (with the libraries the .deb's needs), and the guest runs each once:
# --version and a short trace (its @@TCPKIT-PKG markers; scripts/check-packages.sh reads $OUT/packages-ran.tsv).
ship_packages() { # ship_packages DEBARCH ROOT
    local debarch=$1 root=$2 arch deb tarball tmp a
    arch=$(uname_arch_of "$debarch")
    rm -f "$OUT/shipped-$debarch.tsv"
    deb=$(compgen -G "$ROOT/target/pkg/tcpkit_*_$debarch.deb" | head -n1 || true)
    tarball=$(compgen -G "$ROOT/target/pkg/tcpkit-*-$arch-static.tar.gz" | head -n1 || true)
    if [[ -z $deb && -z $tarball ]]; then
        log "no $debarch packages in target/pkg (scripts/package.sh): the guests run the test builds only"
        return
    fi
    tmp=$(mktemp -d); TMPS+=("$tmp")
    if [[ -n $deb ]]; then
        dpkg-deb -x "$deb" "$tmp/deb"
        copy_with_libs "$tmp/deb/usr/sbin/tcpkit" /opt/tcpkit/pkg/deb/tcpkit "$root"
    fi
    if [[ -n $tarball ]]; then
        tar -C "$tmp" -xzf "$tarball"
        copy_with_libs "$(compgen -G "$tmp/tcpkit-*-static/tcpkit" | head -n1)" /opt/tcpkit/pkg/static/tcpkit "$root"
    fi
    for a in deb static; do   # "artifact sha256" lines: what each guest of this architecture must have run
        [[ -e $root/opt/tcpkit/pkg/$a/tcpkit ]] || continue
        printf '%s %s\n' "$a" "$(sha256sum "$root/opt/tcpkit/pkg/$a/tcpkit" | cut -d' ' -f1)" >> "$OUT/shipped-$debarch.tsv"
    done
    log "shipping $debarch packages to run in the guests: $(basename "${deb:-}") $(basename "${tarball:-}")"
}

pack_common() { # pack_common DEBARCH: $OUT/common-DEBARCH.cpio.gz
    local debarch=$1 root=$OUT/initramfs-$1 t0 name path applet busybox dir
    t0=$(now)
    busybox=$(busybox_for "$debarch")
    rm -rf "$root"; mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,root,tmp,proc,sys,dev,run,boot,lib/modules,opt/tcpkit/tests}
    cp "$busybox" "$root/bin/busybox"
    # Applet links where Debian puts them (bin/sh, sbin/ip, usr/bin/env ...), so scripts with absolute paths
    # work. The list is this machine's busybox's: the same Debian version as the foreign one (both from the
    # host's suite), and a link to an applet a busybox lacks would only fail when called.
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
    dir=$(bin_dir "$debarch")
    for b in "$dir/tcpkit" "$dir/tcpkit-peer"; do
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
    done < "$OUT/bins-$debarch.tsv"
    ship_packages "$debarch" "$root"

    (cd "$root" && find . -print0 | cpio --null -o -H newc --owner 0:0 --quiet) | gzip -1 > "$OUT/common-$debarch.cpio.gz"
    rm -rf "$root"
    log "initramfs ($debarch): $(du -h "$OUT/common-$debarch.cpio.gz" | cut -f1) packed in $(elapsed "$t0")s"
}

pack_kernel() { # pack_kernel GUEST: $OUT/initrd-GUEST.gz = common + this kernel's config and modules
    local guest=$1 root=$OUT/initramfs-$1 m
    rm -rf "$root"; mkdir -p "$root/lib/modules" "$root/boot"
    # The guest reads what its kernel was built with (CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS: can fexit attach).
    cp "$CACHE/kernels/$guest/config" "$root/boot/config-$(cat "$CACHE/kernels/$guest/release")"
    local i=0
    # Numbered, because the guest loads /lib/modules/*.ko in name order and that must be dependency order.
    for m in $MODULES; do
        i=$((i + 1))
        extract_module "$guest" "$m" "$root/lib/modules/$(printf '%02d' "$i")-$m.ko"
    done
    (cd "$root" && find . -print0 | cpio --null -o -H newc --owner 0:0 --quiet) | gzip -1 > "$OUT/modules-$guest.cpio.gz"
    cat "$OUT/common-$(debarch_of "$guest").cpio.gz" "$OUT/modules-$guest.cpio.gz" > "$OUT/initrd-$guest.gz"
    rm -rf "$root"
}

# ---------------------------------------------------------------------------------------------------------------
# Guests

# Starts a guest in the background; its pid is appended to QEMU_PIDS and recorded in $OUT/GUEST.pid.
start_guest() {
    local guest=$1 kdir=$CACHE/kernels/$1 console qemu
    case "$(debarch_of "$guest")" in
        amd64)
            console=ttyS0
            # TCG only: KVM guests hang on this machine. Two workarounds for qemu 7.2 TCG bugs that crash these
            # guests in roughly 1 boot out of 8 (measured, see README):
            #  - cpu max without cx16: TCG's cmpxchg16b (SLUB's per-cpu fast path) sometimes corrupts EFLAGS,
            #    and the kernel double-faults in __kmalloc; without CX16 the kernel uses its own emulation.
            #  - thread=single: with one host thread per vCPU (MTTCG), a vCPU sometimes runs stale code while
            #    another patches kernel text (static keys flip when BPF programs attach), and hits a stray int3.
            #    Round-robin vCPUs on one thread do not; run two guests at once instead (--jobs) to use both
            #    host cores.
            qemu=(qemu-system-x86_64 -machine q35 -accel "tcg,thread=single" -cpu "max,-cx16") ;;
        arm64)
            console=ttyAMA0
            # The virt board, the emulator's most capable CPU, one host thread as for x86-64. pauth-impdef:
            # pointer authentication with qemu's cheap hash instead of the architected QARMA (the kernel signs
            # every return address; QARMA under TCG costs a large share of the guest's time, see README).
            qemu=(qemu-system-aarch64 -machine virt -accel "tcg,thread=single" -cpu "max,pauth-impdef=on") ;;
    esac
    local append="console=$console panic=-1 quiet tcpkit.backends=${BACKENDS// /,} tcpkit.test_timeout=$TEST_TIMEOUT"
    now > "$OUT/$guest.start"
    # timeout forwards our TERM to qemu (trap) and kills it hard 10 s after the limit.
    timeout -k 10 "$TIMEOUT" "${qemu[@]}" -smp 2 -m 2G -nographic -no-reboot -nic none \
        -kernel "$kdir/vmlinuz" -initrd "$OUT/initrd-$guest.gz" -append "$append" \
        </dev/null >"$OUT/$guest.log" 2>&1 &
    QEMU_PIDS+=($!)
    echo $! > "$OUT/$guest.pid"
    log "guest $guest: booting $(cat "$kdir/release") (log: $OUT/$guest.log)"
}

# Waits for a guest; records its exit code and wall time.
finish_guest() {
    local guest=$1 pid rc=0
    pid=$(cat "$OUT/$guest.pid")
    wait "$pid" || rc=$?
    echo "$rc" > "$OUT/$guest.rc"
    elapsed "$(cat "$OUT/$guest.start")" > "$OUT/$guest.wall"
    log "guest $guest: ended (rc=$rc) after $(cat "$OUT/$guest.wall")s"
}

run_guests() {
    local queue running=() next s still
    read -r -a queue <<<"$GUESTS"
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
    l=$(tr -d '\r' < "$OUT/$1.log" | grep -a -m1 -E 'Kernel panic|Oops|BUG:|double fault|general protection|Internal error' || true)
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
# The value of one @@TCPKIT-FACT of a guest.
fact_of() { markers "$1" '@@TCPKIT-FACT ' | sed -n "s/.* $2=\\([^ ]*\\).*/\\1/p" | tail -n1; }

print_facts() {
    local g
    echo
    echo "Kernel facts:"
    for g in $GUESTS; do
        markers "$g" '@@TCPKIT-FACT ' | while read -r _ k kv; do echo "  ${k#kernel=} $kv"; done
    done | awk '{ split($2, kv, "="); v[$1, kv[1]] = kv[2]; if (!($1 in seen)) { seen[$1] = 1; ks[++nk] = $1 }
                  if (!(kv[1] in fs)) { fs[kv[1]] = 1; f[++nf] = kv[1] } }
                END { printf "  %-24s", "fact"; for (i = 1; i <= nk; i++) printf " %-26s", ks[i]; print ""
                      for (j = 1; j <= nf; j++) { printf "  %-24s", f[j]
                          for (i = 1; i <= nk; i++) printf " %-26s", v[ks[i], f[j]]; print "" } }'
}

problem() { echo "$*" >> "$OUT/problems"; }

# One backend's cell of a guest: "passed/failed secs", or "n/a" when the guest found the kernel cannot do that
# backend. Sets cellbad=1 (and writes the problems) for a failed or missing run, a refusal that is not
# tcpkit's one-line error, and an availability that contradicts the kernel's own facts.
CELL=""
cell_of() { # cell_of GUEST KREL BACKEND
    local g=$1 krel=$2 b=$3 line rc passed=0 failed=0 secs=0 name avail expect
    cellbad=0
    if [[ $b != auto ]]; then
        line=$(markers "$g" '@@TCPKIT-BACKEND ' | grep " backend=$b " | tail -n1 || true)
        expect=$(fact_of "$g" "expect_$b")
        avail=$(field available "$line")
        if [[ -z $line ]]; then
            cellbad=1; problem "$krel $b: no availability marker"
        elif [[ $avail != "$expect" ]]; then
            cellbad=1; problem "$krel $b: available=$avail, but the kernel's facts say expect_$b=$expect"
        fi
        if [[ $avail == no ]]; then
            # A forced backend the kernel cannot do is one line on stderr and exit 1 (tcpkit's contract).
            if [[ $(field rc "$line") != 1 || $(field lines "$line") != 1 \
                  || ${line#* reason=} != "tcpkit: the $b backend is not available on this kernel ("* ]]; then
                cellbad=1; problem "$krel $b: refused, but not with tcpkit's one-line error: $line"
            fi
            echo "$krel $b: ${line#* reason=}" >> "$OUT/unavailable"
            CELL="n/a"; ((cellbad)) && CELL="FAIL n/a"
            return 0
        fi
    fi
    for name in "${names[@]}"; do
        line=$(markers "$g" '@@TCPKIT ' | grep " backend=$b bin=$name " | tail -n1 || true)
        if [[ -z $line ]]; then
            cellbad=1; problem "$krel $b $name: no result marker"; continue
        fi
        rc=$(field rc "$line")
        passed=$((passed + $(field passed "$line"))); failed=$((failed + $(field failed "$line")))
        secs=$(awk -v a="$secs" -v b="$(field secs "$line")" 'BEGIN { print a + b }')
        if [[ $rc != 0 || $(field failed "$line") != 0 ]]; then
            cellbad=1
            problem "$krel $b $name: rc=$rc failed=$(field failed "$line")$(failed_tests "$g" "$b" "$name")"
        fi
    done
    CELL="$passed/$failed ${secs}s"; ((cellbad)) && CELL="FAIL $CELL"
    return 0
}

# What auto picked in a guest, checked against the backend the kernel's facts call its best, and against
# the fentry cell: auto picks fentry exactly where fentry is available.
PICKED=""
auto_of() { # auto_of GUEST KREL: sets PICKED, and cellbad=1 on a contradiction
    local g=$1 krel=$2 picked expect fentry fentry_yes=no picked_fentry=no
    picked=$(fact_of "$g" auto_picks) expect=$(fact_of "$g" expect_auto)
    cellbad=0
    if [[ -z $picked || $picked != "$expect" ]]; then
        cellbad=1; problem "$krel: auto picked '${picked:-nothing}', the kernel's facts say '$expect'"
    fi
    fentry=$(markers "$g" '@@TCPKIT-BACKEND ' | grep " backend=fentry " | tail -n1 || true)
    [[ $(field available "$fentry") == yes ]] && fentry_yes=yes
    [[ $picked == fentry ]] && picked_fentry=yes
    if [[ -n $fentry && $fentry_yes != "$picked_fentry" ]]; then
        cellbad=1; problem "$krel: fentry available=$(field available "$fentry"), yet auto picked '$picked'"
    fi
    PICKED=${picked:-?}; ((cellbad)) && PICKED="FAIL $PICKED"
    return 0
}

# The packaged binaries a guest ran (@@TCPKIT-PKG), appended to $OUT/packages-ran.tsv; every one shipped must
# have printed its version and traced a connection there.
check_packages_ran() { # check_packages_ran GUEST KREL
    local g=$1 krel=$2 artifact sha line
    [[ -s $OUT/shipped-$(debarch_of "$g").tsv ]] || return 0
    while read -r artifact sha; do
        line=$(markers "$g" '@@TCPKIT-PKG ' | grep " artifact=$artifact " | tail -n1 || true)
        if [[ $(field sha256 "$line") != "$sha" || $(field version "$line") != ok || $(field trace "$line") != ok ]]; then
            problem "$krel: the packaged $artifact binary did not run as expected: ${line:-no @@TCPKIT-PKG marker}"
            bad=1; continue
        fi
        printf '%s\t%s\t%s\t%s\n' "$(debarch_of "$g")" "$krel" "$artifact" "$sha" >> "$OUT/packages-ran.tsv"
    done < "$OUT/shipped-$(debarch_of "$g").tsv"
}

# Every test's own time in every cell (the guests' @@TCPKIT-TEST markers) into $OUT/test-times.tsv, and the
# slowest printed: summed over the cells that ran them, with their number and the slowest cell.
test_times() {
    local g table=$OUT/test-times.tsv
    printf 'arch\tkernel\tbackend\tbin\ttest\tresult\tsecs\n' > "$table"
    for g in $GUESTS; do
        markers "$g" '@@TCPKIT-TEST ' | awk -v arch="$(debarch_of "$g")" '
            { for (i = 2; i <= NF; i++) { k = substr($i, 1, index($i, "=") - 1); v[k] = substr($i, length(k) + 2) }
              printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", arch, v["kernel"], v["backend"], v["bin"], v["test"],
                     v["result"], v["secs"] }' >> "$table"
    done
    echo
    echo "Slowest tests (seconds summed over the cells that ran them; every test's time in every cell: $table):"
    awk -F'\t' 'NR > 1 { t = $4 "::" $5; sum[t] += $7; n[t]++; all += $7; runs++
                          if ($7 + 0 > max[t] + 0) { max[t] = $7; match($2, /^[0-9]+\.[0-9]+/)
                                                     at[t] = $1 "-" substr($2, 1, RLENGTH) " " $3 } }
                 END { for (t in sum) printf "%.1f\t%d\t%.1f\t%s\t%s\n", sum[t], n[t], max[t], at[t], t
                       printf "%.1f\t%d\n", all, runs > "/dev/stderr" }' "$table" 2> "$OUT/test-times.total" \
        | sort -t$'\t' -k1,1nr | head -n 25 \
        | awk -F'\t' 'BEGIN { printf "  %8s %5s %8s  %-22s %s\n", "summed", "cells", "slowest", "in", "test" }
                      { printf "  %7ss %5s %7ss  %-22s %s\n", $1, $2, $3, $4, $5 }'
    awk -F'\t' '{ printf "  %7ss %5s test runs in all\n", $1, $2 }' "$OUT/test-times.total"
    rm -f "$OUT/test-times.total"
}

# Prints the matrix and returns non-zero if any cell failed or is missing, or a guest timed out.
report() {
    local g b name path bad=0 rc krel cellbad wall names
    echo
    printf '%-30s' "kernel"; for b in $BACKENDS; do printf ' %-20s' "$b"; done; printf ' %-10s %s\n' "auto picks" "wall"
    for g in $GUESTS; do
        names=(); while IFS=$'\t' read -r name path; do names+=("$name"); done < "$OUT/bins-$(debarch_of "$g").tsv"
        krel=$(cat "$CACHE/kernels/$g/release")
        printf '%s\t%s\n' "$(debarch_of "$g")" "$krel" >> "$OUT/guests.tsv"
        printf '%-30s' "$krel"
        for b in $BACKENDS; do
            cell_of "$g" "$krel" "$b"
            ((cellbad)) && bad=1
            printf ' %-20s' "$CELL"
        done
        auto_of "$g" "$krel"
        ((cellbad)) && bad=1
        printf ' %-10s' "$PICKED"
        check_packages_ran "$g" "$krel"
        wall=$(cat "$OUT/$g.wall" 2>/dev/null || echo '?')
        rc=$(cat "$OUT/$g.rc" 2>/dev/null || echo '?')
        case "$rc" in
            0) printf ' %ss' "$wall" ;;
            124|137) printf ' %ss TIMEOUT' "$wall"; bad=1; problem "$krel: guest timed out after ${TIMEOUT}s" ;;
            *) printf ' %ss qemu rc=%s' "$wall" "$rc"; bad=1; problem "$krel: qemu exited with $rc" ;;
        esac
        # With panic=-1 and -no-reboot a kernel crash ends qemu with 0 too: only the last marker proves the
        # guest got through its list.
        if [[ -z $(markers "$g" '@@TCPKIT-DONE ') ]]; then
            printf ' INCOMPLETE'; bad=1
            problem "$krel: guest did not finish its runs (no @@TCPKIT-DONE)$(crash_line "$g")"
        fi
        echo
    done
    echo "(cells: passed/failed, summed seconds of the test binaries; n/a: the kernel cannot do that backend,"
    echo " nothing run, see below; wall: host time from qemu start to power-off)"
    if [[ -s $OUT/unavailable ]]; then
        echo; echo "Not available (tcpkit --backend B, as the guest's kernel refused it):"; sed 's/^/  /' "$OUT/unavailable"
    fi
    if [[ -s $OUT/packages-ran.tsv ]]; then
        echo; echo "Packaged binaries that ran in the guests (--version and a traced accept):"
        awk -F'\t' '{ printf "  %-6s %-8s %s  %s\n", $1, $3, substr($4, 1, 16), $2 }' "$OUT/packages-ran.tsv"
    fi
    print_facts
    test_times
    if ((bad)); then
        echo; echo "FAILED:"; sed 's/^/  /' "$OUT/problems"
        for g in $GUESTS; do
            if grep -q "^$(cat "$CACHE/kernels/$g/release")[ :]" "$OUT/problems"; then
                # The panics first: a busy cell's last lines are often other binaries' passing runs.
                echo; echo "---- failed tests' output in $OUT/$g.log ----"
                tr -d '\r' < "$OUT/$g.log" | grep -A 30 '^---- .* stdout ----$' | head -n 150 || true
                echo; echo "---- last 40 lines of $OUT/$g.log ----"; tr -d '\r' < "$OUT/$g.log" | tail -n 40
            fi
        done
        return 1
    fi
    echo; echo "vm matrix: all passed"
}

# One run of every guest, its table and its checks; returns non-zero if anything failed.
run_once() {
    local t0
    rm -f "$OUT/problems" "$OUT/unavailable" "$OUT/packages-ran.tsv" "$OUT/guests.tsv" "$OUT"/*.rc "$OUT"/*.wall \
        "$OUT"/*.log
    t0=$(now)
    run_guests
    log "guests done in $(elapsed "$t0")s"
    report
}

main() {
    parse_args "$@"
    local t_all t0 g a r rc=0 runs=()
    t_all=$(now)
    mkdir -p "$CACHE" "$OUT"
    ensure_packages
    t0=$(now)
    for g in $GUESTS; do fetch_kernel "$g"; done
    log "kernels ready in $(elapsed "$t0")s"
    for a in $DEBARCHES; do select_bins "$a"; done
    t0=$(now)
    for a in $DEBARCHES; do pack_common "$a"; done
    for g in $GUESTS; do pack_kernel "$g"; done
    log "initrds ready in $(elapsed "$t0")s"
    if ((REPEAT == 1)); then
        run_once || rc=1
        log "total $(elapsed "$t_all")s"
        return "$rc"
    fi
    # --repeat: the same guests again, each run reported in full and its logs kept in $OUT/run-R/.
    for ((r = 1; r <= REPEAT; r++)); do
        echo; echo "==== run $r of $REPEAT ===="
        t0=$(now)
        if run_once; then runs+=("run $r: passed in $(elapsed "$t0")s"); else runs+=("run $r: FAILED after $(elapsed "$t0")s"); rc=1; fi
        rm -rf "$OUT/run-$r"; mkdir -p "$OUT/run-$r"
        cp "$OUT"/*.log "$OUT/test-times.tsv" "$OUT/run-$r/"
        [[ -e $OUT/problems ]] && cp "$OUT/problems" "$OUT/run-$r/"
    done
    echo; echo "==== $REPEAT runs (logs and per-test times of each in $OUT/run-R/) ===="
    printf '  %s\n' "${runs[@]}"
    log "total $(elapsed "$t_all")s"
    return "$rc"
}

main "$@"
