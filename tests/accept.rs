//! `tcpkit accept` against real sockets and real BPF: each test reads like the man page example it checks.
mod common;

use std::os::unix::process::CommandExt;
use std::process::Command;

use common::*;
use libbpf_rs::MapType;
use nix::sys::signal::Signal;

const PEER: &str = "tcpkit-peer";

#[test]
fn accept_reports_acceptor_pid_comm_and_both_ends_ipv4() {
    let mut tcpkit = Tcpkit::start(&["accept"]);
    assert_eq!(tcpkit.header, "PID     COMM         IP RADDR            RPORT LADDR            LPORT");
    let mut peer = Peer::listen(&[], &[]);
    let (_c, cport) = connect(v4(peer.port));
    peer.expect_accepted(cport);
    let line = tcpkit.expect_line("for the IPv4 accept", |l| is_accept_of(l, peer.port, cport));
    assert_eq!(line, accept_row(peer.pid, PEER, 4, "127.0.0.1", cport, "127.0.0.1", peer.port));
}

#[test]
fn accept_reports_ipv6_peer() {
    let mut tcpkit = Tcpkit::start(&["accept"]);
    let mut peer = Peer::listen(&[], &["--addr", "[::1]:0"]);
    let (_c, cport) = connect(v6(peer.port));
    peer.expect_accepted(cport);
    let line = tcpkit.expect_line("for the IPv6 accept", |l| is_accept_of(l, peer.port, cport));
    assert_eq!(line, accept_row(peer.pid, PEER, 6, "::1", cport, "::1", peer.port));
}

#[test]
fn accept_reports_ipv4_mapped_peer_on_dual_stack_listener() {
    let mut tcpkit = Tcpkit::start(&["accept"]);
    let mut peer = Peer::listen(&[], &["--addr", "[::]:0"]);
    let (_c, cport) = connect(v4(peer.port));
    peer.expect_accepted(cport);
    let line = tcpkit.expect_line("for the IPv4-mapped accept", |l| is_accept_of(l, peer.port, cport));
    assert_eq!(line, accept_row(peer.pid, PEER, 6, "::ffff:127.0.0.1", cport, "::ffff:127.0.0.1", peer.port));
}

#[test]
fn plain_accept_syscall_is_reported() {
    let mut tcpkit = Tcpkit::start(&["accept"]);
    let mut peer = Peer::listen(&[], &["--syscall", "accept"]);
    let (_c, cport) = connect(v4(peer.port));
    peer.expect_accepted(cport);
    let line = tcpkit.expect_line("for accept(2)", |l| is_accept_of(l, peer.port, cport));
    assert_eq!(line, accept_row(peer.pid, PEER, 4, "127.0.0.1", cport, "127.0.0.1", peer.port));
}

#[test]
fn nonblocking_accept_is_reported_once() {
    let mut tcpkit = Tcpkit::start(&["accept"]);
    let mut peer = Peer::listen(&[], &["--nonblock", "--count", "2"]);
    let (_a, first) = connect(v4(peer.port));
    let (_b, second) = connect(v4(peer.port));
    peer.wait_done();
    // Accepted in the queue's order, which need not be the order of the connects.
    let port = peer.port;
    tcpkit.expect_all(
        "both non-blocking accepts",
        &[&|l: &str| is_accept_of(l, port, first), &|l: &str| is_accept_of(l, port, second)],
    );
    let (status, rest, _) = tcpkit.stop();
    assert!(status.success());
    let all: Vec<&String> = rest.iter().filter(|l| col_from_end(l, 0) == peer.port.to_string()).collect();
    assert!(all.is_empty(), "duplicate lines after stop: {all:?}");
}

#[test]
fn port_filter_keeps_only_listed_ports() {
    let mut wanted = Peer::listen(&[], &[]);
    let mut other = Peer::listen(&[], &[]);
    let ports = format!("{},{}-{}", wanted.port, 1, 1); // a list and a range, neither matching `other`
    let mut tcpkit = Tcpkit::start(&["accept", "-P", &ports]);
    // The unwanted accept happens first: once the wanted line is out, an unwanted one would already be too.
    let (_o, oport) = connect(v4(other.port));
    other.expect_accepted(oport);
    let (_w, wport) = connect(v4(wanted.port));
    wanted.expect_accepted(wport);
    tcpkit.expect_line("for the listed port", |l| is_accept_of(l, wanted.port, wport));
    let leaked: Vec<&String> = tcpkit.stdout.seen.iter().filter(|l| is_accept_of(l, other.port, oport)).collect();
    assert!(leaked.is_empty(), "-P {ports} let through {leaked:?}");
}

#[test]
fn port_range_filter_matches_ports_inside_it() {
    let mut peer = Peer::listen(&[], &[]);
    let range = format!("{}-{}", peer.port.saturating_sub(1).max(1), peer.port.saturating_add(1));
    let mut tcpkit = Tcpkit::start(&["accept", "--port", &range]);
    let (_c, cport) = connect(v4(peer.port));
    peer.expect_accepted(cport);
    tcpkit.expect_line("for a port inside the range", |l| is_accept_of(l, peer.port, cport));
}

#[test]
fn pid_filter_keeps_only_that_process() {
    let mut wanted = Peer::listen(&[], &[]);
    let mut other = Peer::listen(&[], &[]);
    let pid = wanted.pid.to_string();
    let mut tcpkit = Tcpkit::start(&["accept", "-p", &pid]);
    let (_o, oport) = connect(v4(other.port));
    other.expect_accepted(oport);
    let (_w, wport) = connect(v4(wanted.port));
    wanted.expect_accepted(wport);
    let line = tcpkit.expect_line("for the wanted PID", |l| is_accept_of(l, wanted.port, wport));
    assert!(line.starts_with(&format!("{pid:<7} ")));
    assert!(!tcpkit.stdout.seen.iter().any(|l| is_accept_of(l, other.port, oport)), "-p {pid} let another PID through");
}

#[test]
fn ipv4_flag_drops_ipv6_accepts() {
    let mut p6 = Peer::listen(&[], &["--addr", "[::1]:0"]);
    let mut p4 = Peer::listen(&[], &[]);
    let mut tcpkit = Tcpkit::start(&["accept", "-4"]);
    let (_a, port6) = connect(v6(p6.port));
    p6.expect_accepted(port6);
    let (_b, port4) = connect(v4(p4.port));
    p4.expect_accepted(port4);
    tcpkit.expect_line("for the IPv4 accept", |l| is_accept_of(l, p4.port, port4));
    assert!(!tcpkit.stdout.seen.iter().any(|l| is_accept_of(l, p6.port, port6)), "-4 let an IPv6 accept through");
}

#[test]
fn ipv6_flag_drops_ipv4_accepts() {
    let mut p4 = Peer::listen(&[], &[]);
    let mut p6 = Peer::listen(&[], &["--addr", "[::1]:0"]);
    let mut tcpkit = Tcpkit::start(&["accept", "--ipv6"]);
    let (_a, port4) = connect(v4(p4.port));
    p4.expect_accepted(port4);
    let (_b, port6) = connect(v6(p6.port));
    p6.expect_accepted(port6);
    tcpkit.expect_line("for the IPv6 accept", |l| is_accept_of(l, p6.port, port6));
    assert!(!tcpkit.stdout.seen.iter().any(|l| is_accept_of(l, p4.port, port4)), "-6 let an IPv4 accept through");
}

#[test]
fn timestamp_flag_prints_seconds_since_first_event() {
    let mut tcpkit = Tcpkit::start(&["accept", "-t"]);
    assert!(tcpkit.header.starts_with("TIME(s)  PID     COMM"), "{}", tcpkit.header);
    let mut peer = Peer::listen(&[], &[]);
    let (_c, cport) = connect(v4(peer.port));
    peer.expect_accepted(cport);
    let line = tcpkit.expect_line("with -t", |l| is_accept_of(l, peer.port, cport));
    let (stamp, row) = line.split_at(9);
    let secs: f64 = stamp.trim().parse().unwrap_or_else(|_| panic!("bad TIME(s) column in {line:?}"));
    assert!(secs >= 0.0 && stamp.trim().split('.').nth(1).map(str::len) == Some(3), "{line:?}");
    assert_eq!(row, accept_row(peer.pid, PEER, 4, "127.0.0.1", cport, "127.0.0.1", peer.port));
}

#[test]
fn time_flag_prints_wall_clock_and_both_flags_put_time_first() {
    let mut tcpkit = Tcpkit::start(&["accept", "-T", "-t"]);
    assert!(tcpkit.header.starts_with("TIME     TIME(s)  PID     COMM"), "{}", tcpkit.header);
    let mut peer = Peer::listen(&[], &[]);
    let (_c, cport) = connect(v4(peer.port));
    peer.expect_accepted(cport);
    let line = tcpkit.expect_line("with -T -t", |l| is_accept_of(l, peer.port, cport));
    let hms = &line[..9];
    let ok = hms.len() == 9
        && hms.ends_with(' ')
        && hms[..8].split(':').map(|f| f.len() == 2 && f.bytes().all(|b| b.is_ascii_digit())).filter(|b| *b).count()
            == 3;
    assert!(ok, "TIME column is not HH:MM:SS in {line:?}");
    let now = chrono::Local::now().format("%H:%M").to_string();
    let earlier = (chrono::Local::now() - chrono::Duration::minutes(1)).format("%H:%M").to_string();
    assert!(hms.starts_with(&now) || hms.starts_with(&earlier), "TIME {hms} is not the local time {now}");
    assert_eq!(&line[18..], accept_row(peer.pid, PEER, 4, "127.0.0.1", cport, "127.0.0.1", peer.port));
}

#[test]
fn sixty_four_threads_blocked_in_accept_all_reported() {
    let mut peer = Peer::listen(&[], &["--threads", "64", "--count", "64"]);
    let mut tcpkit = Tcpkit::start(&["accept", "-P", &peer.port.to_string()]);
    let clients: Vec<_> = (0..64).map(|_| connect(v4(peer.port))).collect();
    peer.wait_done();
    // Lines come in accept order, not connect order: take each as it comes and tick its client off.
    let mut waiting: std::collections::HashSet<u16> = clients.iter().map(|(_, p)| *p).collect();
    while !waiting.is_empty() {
        let line = tcpkit.expect_line(&format!("for the {} clients left", waiting.len()), |l| {
            col_from_end(l, 0) == peer.port.to_string()
                && col_from_end(l, 2).parse().is_ok_and(|p| waiting.contains(&p))
        });
        let cport: u16 = col_from_end(&line, 2).parse().unwrap();
        assert_eq!(line, accept_row(peer.pid, PEER, 4, "127.0.0.1", cport, "127.0.0.1", peer.port));
        waiting.remove(&cport);
    }
    let (status, rest, _) = tcpkit.stop();
    assert!(status.success());
    assert!(rest.is_empty(), "more than 64 lines: {rest:?}");
}

#[test]
fn accept_blocked_before_tcpkit_started_is_reported() {
    // The peer is in accept() before tcpkit attaches: a return probe or fexit attached later cannot see it.
    let mut peer = Peer::listen(&[], &[]);
    wait_blocked_in_accept(peer.pid);
    let mut tcpkit = Tcpkit::start(&["accept"]);
    let (_c, cport) = connect(v4(peer.port));
    peer.expect_accepted(cport);
    let line = tcpkit.expect_line("for the accept blocked before start", |l| is_accept_of(l, peer.port, cport));
    assert_eq!(line, accept_row(peer.pid, PEER, 4, "127.0.0.1", cport, "127.0.0.1", peer.port));
}

#[test]
fn cgroupmap_keeps_only_tasks_in_listed_cgroups() {
    let cgroup = Cgroup::new();
    let map = pinned_hash("cgroups", 8, 8, &[cgroup.id()]);
    let mut inside = Peer::listen(&[], &[]);
    let mut outside = Peer::listen(&[], &[]);
    cgroup.add(inside.pid);
    let mut tcpkit = Tcpkit::start(&["accept", "--cgroupmap", map.to_str().unwrap()]);
    let (_o, oport) = connect(v4(outside.port));
    outside.expect_accepted(oport);
    let (_i, iport) = connect(v4(inside.port));
    inside.expect_accepted(iport);
    let line = tcpkit.expect_line("for the task in the cgroup", |l| is_accept_of(l, inside.port, iport));
    assert_eq!(line, accept_row(inside.pid, PEER, 4, "127.0.0.1", iport, "127.0.0.1", inside.port));
    assert!(!tcpkit.stdout.seen.iter().any(|l| is_accept_of(l, outside.port, oport)), "a task outside the cgroup");
    drop(inside); // leaves the cgroup empty so that it can be removed
    let _ = std::fs::remove_file(map);
}

#[test]
fn mntnsmap_keeps_only_tasks_in_listed_mount_namespaces() {
    let mut inside = Peer::listen(&["--new-mntns"], &[]);
    let mut outside = Peer::listen(&[], &[]);
    assert_ne!(inside.mntns, outside.mntns);
    let map = pinned_hash("mntns", 8, 4, &[inside.mntns]);
    let mut tcpkit = Tcpkit::start(&["accept", "--mntnsmap", map.to_str().unwrap()]);
    let (_o, oport) = connect(v4(outside.port));
    outside.expect_accepted(oport);
    let (_i, iport) = connect(v4(inside.port));
    inside.expect_accepted(iport);
    let line = tcpkit.expect_line("for the task in the mount namespace", |l| is_accept_of(l, inside.port, iport));
    assert_eq!(line, accept_row(inside.pid, PEER, 4, "127.0.0.1", iport, "127.0.0.1", inside.port));
    assert!(!tcpkit.stdout.seen.iter().any(|l| is_accept_of(l, outside.port, oport)), "a task outside the mount ns");
    let _ = std::fs::remove_file(map);
}

#[test]
fn sigterm_and_sigint_exit_zero_and_leave_nothing_attached() {
    for signal in [Signal::SIGINT, Signal::SIGTERM] {
        Tcpkit::start(&["accept"]).assert_clean_stop(signal, 1);
    }
}

#[test]
fn pipe_to_head_ends_quietly_with_success() {
    // `tcpkit accept | head -1`: the reader takes the header and goes away; tcpkit must notice and exit 0
    // without a word, whether or not another event comes.
    require_root();
    for event_after_close in [false, true] {
        let mut child = Command::new(tcpkit_bin())
            .args(["accept", "--backend", &test_backend()])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut reader = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut header = String::new();
        std::io::BufRead::read_line(&mut reader, &mut header).unwrap();
        assert!(header.starts_with("PID "), "{header:?}");
        drop(reader);
        if event_after_close {
            let mut peer = Peer::listen(&[], &[]);
            let (_c, cport) = connect(v4(peer.port));
            peer.expect_accepted(cport);
        }
        let status = wait_with_deadline(&mut child, DEADLINE).expect("tcpkit kept running after its reader left");
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
        assert_eq!(status.code(), Some(0), "stderr: {err}");
        assert!(err.is_empty(), "stderr: {err}");
    }
}

/// Tests whose outcome cannot depend on the backend, so the qemu guests run them once per kernel, under auto
/// (tests/vm/README.md): usage and runtime errors that stop tcpkit before anything loads, the version, and the
/// choice of backend, whose tests try every backend themselves whatever TCPKIT_TEST_BACKEND says. Every test
/// above them sees accepts, which each backend hooks its own way: those run once per backend.
mod any_backend {
    use super::*;

    #[test]
    fn bad_ports_are_usage_errors() {
        assert_usage_error(&["accept", "-P", "0"], "port 0 is out of range");
        assert_usage_error(&["accept", "-P", "65536"], "port 65536 is out of range");
        assert_usage_error(&["accept", "-P", "abc"], "'abc' is not a port number");
        assert_usage_error(&["accept", "-P", ""], "empty port");
        assert_usage_error(&["accept", "-P", "80,"], "empty port");
        assert_usage_error(&["accept", "-P", "90-80"], "backwards");
    }

    #[test]
    fn bad_pids_are_usage_errors() {
        assert_usage_error(&["accept", "-p", "0"], "positive whole number");
        assert_usage_error(&["accept", "-p", "-5"], "");
        assert_usage_error(&["accept", "-p", "abc"], "positive whole number");
        assert_usage_error(&["accept", "-p", "2147483647"], "no process has PID 2147483647");
    }

    #[test]
    fn unknown_flags_and_conflicts_are_usage_errors() {
        assert_usage_error(&["accept", "--frobnicate"], "unexpected argument '--frobnicate'");
        assert_usage_error(&["accept", "-4", "-6"], "cannot be used with");
        assert_usage_error(&["accept", "--backend", "magic"], "invalid value 'magic'");
        assert_usage_error(&["nosuchcommand"], "unrecognized subcommand");
    }

    #[test]
    fn missing_or_wrong_pinned_maps_are_runtime_errors() {
        require_root();
        ensure_bpffs();
        assert_runtime_error(&["accept", "--cgroupmap", "/sys/fs/bpf/tcpkit-no-such-map"], "no such pinned map");
        assert_runtime_error(&["accept", "--mntnsmap", "/proc/version"], "not a pinned BPF map");
        let narrow = pinned_hash("narrowkey", 4, 8, &[]);
        assert_runtime_error(&["accept", "--cgroupmap", narrow.to_str().unwrap()], "keys are 4 bytes");
        let _ = std::fs::remove_file(narrow);
        let array = pinned_map(MapType::Array, "arr", 4, 8, &[]);
        assert_runtime_error(&["accept", "--mntnsmap", array.to_str().unwrap()], "not a hash map");
        let _ = std::fs::remove_file(array);
    }

    #[test]
    fn not_root_is_a_runtime_error_naming_the_fix() {
        require_root();
        let tcpkit = RunnableByAnyone::new();
        let (status, out, err) = run_tcpkit_cmd(Command::new(&tcpkit.bin).args(["accept"]).uid(65534).gid(65534));
        assert_eq!(status.code(), Some(1), "{err}");
        assert!(out.is_empty());
        assert_eq!(
            err.trim_end(),
            "tcpkit: tcpkit needs root (or CAP_BPF and CAP_PERFMON) to load BPF programs: run it with sudo"
        );
    }

    #[test]
    fn missing_btf_is_a_runtime_error_naming_the_fix() {
        require_root();
        // Hide the kernel's BTF in a private mount namespace of the tcpkit process only.
        let mut cmd = Command::new(tcpkit_bin());
        cmd.args(["accept"]);
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                use nix::mount::{mount, MsFlags};
                nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)?;
                mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>)?;
                mount(Some("tmpfs"), "/sys/kernel/btf", Some("tmpfs"), MsFlags::empty(), None::<&str>)?;
                Ok(())
            });
        }
        let (status, _, err) = run_tcpkit_cmd(&mut cmd);
        assert_eq!(status.code(), Some(1), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("no BTF") && err.contains("CONFIG_DEBUG_INFO_BTF"), "{err}");
    }

    #[test]
    fn forced_backend_the_kernel_cannot_do_is_a_clear_error() {
        require_root();
        let mut refused = Vec::new();
        for backend in ["fentry", "kprobe"] {
            match Tcpkit::try_start(&["accept"], backend, 1) {
                Ok(tcpkit) => drop(tcpkit.stop()), // works here: a tracer that runs until stopped
                Err(why) => {
                    assert!(
                        why.contains("exit Some(ExitStatus(unix_wait_status(256)))"),
                        "{backend}: not exit 1: {why}"
                    );
                    let msg = format!("stderr: tcpkit: the {backend} backend is not available on this kernel (");
                    assert!(why.contains(&msg), "{backend}: {why}");
                    refused.push(backend);
                }
            }
        }
        if refused.is_empty() {
            // Every backend works on this kernel (the qemu guests): there is nothing to refuse here.
            eprintln!("NOTICE: fentry and kprobe both work on this kernel; the refusal path is proved on the host");
        }
    }

    #[test]
    fn auto_picks_the_best_backend_that_attaches() {
        require_root();
        let started = |backend: &str| match Tcpkit::try_start(&["accept", "--debug"], backend, 1) {
            Ok(tcpkit) => {
                let (_, _, stderr) = tcpkit.stop();
                (true, stderr)
            }
            Err(why) => (false, why),
        };
        let best =
            ["fentry", "kprobe", "tracepoint"].into_iter().find(|b| started(b).0).expect("no backend works at all");
        let (ok, err) = started("auto");
        assert!(ok, "auto did not start: {err}");
        assert!(err.contains(&format!("using the {best} backend")), "auto chose otherwise than {best}: {err}");
        if let Ok(expected) = std::env::var("TCPKIT_EXPECT_AUTO_BACKEND") {
            assert_eq!(best, expected, "this kernel's best backend");
        }
    }

    #[test]
    fn version_names_the_commit() {
        let (status, out, _) = run_tcpkit(&["--version"]);
        assert!(status.success());
        assert!(out.starts_with(&format!("tcpkit {} (", env!("CARGO_PKG_VERSION"))), "{out}");
        for sub in ["accept", "tracer"] {
            let (status, out, _) = run_tcpkit(&[sub, "-V"]);
            assert!(status.success(), "{sub} -V");
            assert!(out.starts_with(&format!("tcpkit-{sub} {} (", env!("CARGO_PKG_VERSION"))), "{out}");
        }
    }
}
