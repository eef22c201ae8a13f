//! Flags beyond bcc's, for both subcommands, against real sockets and real BPF: -o json, lost-event
//! accounting with --ring-size, -u and -U, --cgroup, -c and -d.
mod common;

use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

/// One connection from the test to a fresh listening peer; returns the peer and the client port.
fn connection() -> (Peer, u16) {
    let mut server = Peer::listen(&[], &[]);
    let (c, cport) = connect(v4(server.port));
    server.expect_accepted(cport);
    drop(c);
    (server, cport)
}

fn json_lines(lines: &[String]) -> Vec<Value> {
    lines.iter().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect()
}

/// The JSON record of type `kind` for the socket with these local and remote ports.
fn record<'a>(records: &'a [Value], kind: &str, lport: u16, rport: u16) -> Option<&'a Value> {
    records.iter().find(|r| r["type"] == kind && r["lport"] == lport && r["rport"] == rport)
}

#[test]
fn json_lines_parse_and_carry_every_field_typed() {
    for sub in ["accept", "tracer"] {
        let mut tcpkit = Tcpkit::start_json(&[sub]);
        let (server, cport) = connection();
        let sport = server.port;
        let (accept, connect, close) = (
            json_event("accept", sport, cport),
            json_event("connect", cport, sport),
            json_event("close", cport, sport),
        );
        match sub {
            "tracer" => tcpkit.expect_all("the accept, the connect and its close", &[&accept, &connect, &close]),
            _ => tcpkit.expect_all("the accept", &[&accept]),
        };
        let records = json_lines(&tcpkit.stop_and_collect());
        let accept = record(&records, "accept", sport, cport).unwrap_or_else(|| panic!("{sub}: {records:#?}"));
        let numbers = ["time_ns", "pid", "tid", "uid", "ip", "lport", "rport", "netns", "mntns", "cgroup_id"];
        for field in numbers {
            assert!(accept[field].is_number(), "{sub}: {field} is not a number in {accept}");
        }
        for field in ["type", "time", "comm", "laddr", "raddr", "task", "backend"] {
            assert!(accept[field].is_string(), "{sub}: {field} is not a string in {accept}");
        }
        assert_eq!(accept["pid"], server.pid);
        assert_eq!(accept["comm"], "tcpkit-peer");
        assert_eq!((accept["laddr"].as_str(), accept["raddr"].as_str()), (Some("127.0.0.1"), Some("127.0.0.1")));
        assert_eq!(accept["ip"], 4);
        assert_eq!(accept["netns"], server.netns);
        assert_eq!(accept["mntns"], server.mntns);
        assert_eq!(accept["task"], "current");
        let backend = test_backend();
        if backend != "auto" {
            assert_eq!(accept["backend"], backend.as_str());
        }
        // RFC 3339 with nanoseconds, and the same instant as time_ns.
        let time = accept["time"].as_str().unwrap();
        let parsed = chrono::DateTime::parse_from_rfc3339(time).unwrap_or_else(|e| panic!("{time}: {e}"));
        assert_eq!(parsed.timestamp_nanos_opt().map(i128::from), accept["time_ns"].as_i64().map(i128::from));
        if sub == "tracer" {
            let c = record(&records, "connect", cport, sport).unwrap_or_else(|| panic!("no connect: {records:#?}"));
            assert_eq!((c["pid"].as_u64(), c["task"].as_str()), (Some(std::process::id() as u64), Some("owner")));
            assert!(record(&records, "close", cport, sport).is_some(), "no close: {records:#?}");
        }
    }
}

#[test]
fn lost_events_plus_printed_lines_equal_events_generated() {
    // A 4 KiB ring holds a few dozen events; tcpkit is stopped (SIGSTOP) while 300 accepts happen.
    const N: usize = 300;
    for json in [false, true] {
        let mut server = Peer::listen(&[], &["--count", &N.to_string()]);
        let pid = server.pid.to_string();
        let args = ["accept", "--ring-size", "4K", "-p", &pid];
        let tcpkit = if json { Tcpkit::start_json(&args) } else { Tcpkit::start(&args) };
        let tpid = Pid::from_raw(tcpkit.pid() as i32);
        kill(tpid, Signal::SIGSTOP).unwrap();
        let target = v4(server.port).to_string();
        let mut client = Peer::spawn(&[], "connect", &["--addr", &target, "--count", &N.to_string()]);
        client.wait_done();
        server.wait_done();
        kill(tpid, Signal::SIGCONT).unwrap();
        let (status, lines, stderr) = tcpkit.stop();
        assert_eq!(status.code(), Some(0), "{stderr}");
        let seen = lines;
        let total: usize = stderr
            .lines()
            .find_map(|l| l.strip_prefix("tcpkit: ")?.split(" events lost in total").next()?.parse().ok())
            .unwrap_or_else(|| panic!("no final count of lost events: {stderr}"));
        let (printed, lost_records) = if json {
            let records = json_lines(&seen);
            let lost: u64 = records.iter().filter(|r| r["type"] == "lost").map(|r| r["count"].as_u64().unwrap()).sum();
            (records.iter().filter(|r| r["type"] == "accept").count(), lost as usize)
        } else {
            (seen.iter().filter(|l| !l.starts_with("PID")).count(), total)
        };
        assert!(total > 0, "a 4 KiB ring lost nothing of {N} events; the test proves nothing");
        assert_eq!(lost_records, total, "JSON lost records do not add up to the final count: {stderr}");
        assert_eq!(printed + total, N, "printed {printed} + lost {total} != {N} generated (json: {json})");
    }
}

#[test]
fn uid_filter_and_uid_column() {
    let mut server = Peer::listen(&[], &["--count", "2"]);
    let target = v4(server.port).to_string();
    let mut nobody = Peer::spawn(&["--setuid", "65534", "--wait"], "connect", &["--addr", &target]);
    let mut root = Peer::spawn(&["--wait"], "connect", &["--addr", &target]);
    let mut tcpkit = Tcpkit::start_with_header_lines(&["tracer", "-u", "65534", "-U"], 2);
    assert!(tcpkit
        .header
        .ends_with("\nT  UID    PID    COMM             IP SADDR            DADDR            SPORT  DPORT "));
    root.go();
    root.wait_done();
    nobody.go();
    nobody.wait_done();
    let port = server.port.to_string();
    let line = tcpkit.expect_line("nobody's connect", |l| l.starts_with("C ") && l.contains(&port));
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(&cols[..4], ["C", "65534", &nobody.pid.to_string(), "tcpkit-peer"], "{line}");
    server.wait_done();
    let all = tcpkit.stop_and_collect();
    assert!(all.iter().all(|l| l.split_whitespace().nth(1) == Some("65534")), "another UID: {all:#?}");
}

#[test]
fn cgroup_flag_keeps_tasks_in_the_directory_and_below() {
    let parent = Cgroup::new();
    let child = parent.child("inner");
    let mut server = Peer::listen(&[], &["--count", "2"]);
    let target = v4(server.port).to_string();
    let mut inside = Peer::spawn(&["--wait"], "connect", &["--addr", &target]);
    let mut outside = Peer::spawn(&["--wait"], "connect", &["--addr", &target]);
    child.add(inside.pid);
    let dir = parent.path().to_str().unwrap().to_string();
    let mut tcpkit = Tcpkit::start_with_header_lines(&["tracer", "--cgroup", &dir], 2);
    outside.go();
    outside.wait_done();
    inside.go();
    inside.wait_done();
    let pid = inside.pid.to_string();
    tcpkit.expect_line("the connect from the child cgroup", |l| l.starts_with("C ") && l.contains(&format!(" {pid} ")));
    server.wait_done();
    inside.wait_exit(); // the cgroups must be empty to be removed
    let all = tcpkit.stop_and_collect();
    assert!(all.iter().all(|l| col_from_end(l, 6) == pid), "a task outside {dir}: {all:#?}");
    drop(child);
}

#[test]
fn count_flag_exits_after_that_many_events() {
    let mut tcpkit = Tcpkit::start(&["accept", "-c", "2"]);
    for _ in 0..3 {
        connection();
    }
    assert!(wait_with_deadline(&mut tcpkit.child, DEADLINE).is_some_and(|s| s.success()), "did not exit 0 by itself");
    let lines = tcpkit.stdout.rest(DEADLINE);
    assert_eq!(lines.len(), 2, "{lines:#?}");
}

#[test]
fn json_names_the_container_pod_and_unit_from_the_cgroup_path() {
    // Real cgroups named as docker, containerd under kubelet, podman and systemd name them, each with a
    // real listening peer moved into it: the accept record of each connection says who it is.
    const ID: &str = "4f1c2b3a5d6e7f804f1c2b3a5d6e7f804f1c2b3a5d6e7f804f1c2b3a5d6e7f80";
    const UID: &str = "0b7e3a52-41d6-4c8e-9f21-6a5b4c3d2e1f";
    let uid_ = UID.replace('-', "_");
    let layouts: Vec<(String, Option<&str>, bool, Option<String>)> = vec![
        (format!("system.slice/docker-{ID}.scope"), Some("docker"), false, Some(format!("docker-{ID}.scope"))),
        (
            format!(
                "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_}.slice/cri-containerd-{ID}.scope"
            ),
            Some("containerd"),
            true,
            Some(format!("cri-containerd-{ID}.scope")),
        ),
        (format!("kubepods/besteffort/pod{UID}/{ID}"), None, true, None),
        (format!("libpod_parent/libpod-{ID}"), Some("podman"), false, None),
        ("system.slice/tcpkit-test.service".into(), None, false, Some("tcpkit-test.service".into())),
    ];
    let base = Cgroup::new();
    let root = cgroup2_root();
    // A listening peer in each layout's leaf, and one tcpkit for all of them (its start is the costly part
    // under emulation), kept to their ports.
    let cases: Vec<_> = layouts
        .into_iter()
        .map(|(layout, runtime, pod, unit)| {
            let leaf = base.child(&format!("identity/{layout}"));
            let server = Peer::listen(&[], &[]);
            leaf.add(server.pid);
            (layout, runtime, pod, unit, leaf, server)
        })
        .collect();
    let ports: Vec<String> = cases.iter().map(|case| case.5.port.to_string()).collect();
    let mut tcpkit = Tcpkit::start_json(&["accept", "-P", &ports.join(",")]);
    for (layout, runtime, pod, unit, leaf, mut server) in cases {
        let (c, cport) = connect(v4(server.port));
        server.expect_accepted(cport);
        drop(c);
        let line = tcpkit.expect_line(&format!("for the accept in {layout}"), json_event("accept", server.port, cport));
        let accept: Value = serde_json::from_str(&line).unwrap();
        let path = format!("/{}", leaf.path().strip_prefix(&root).unwrap().display());
        assert_eq!(accept["cgroup"], path.as_str(), "{layout}");
        let container = runtime.is_some() || layout.contains("pod");
        assert_eq!(accept["container_id"].as_str(), container.then_some(ID), "{layout}: {accept}");
        assert_eq!(accept["container_runtime"].as_str(), runtime, "{layout}: {accept}");
        assert_eq!(accept["pod_uid"].as_str(), pod.then_some(UID), "{layout}: {accept}");
        assert_eq!(accept["unit"].as_str(), unit.as_deref(), "{layout}: {accept}");
        drop(server);
        // Empty again once the peer is gone: remove the layout's directories, deepest first.
        wait_until_empty(leaf.path());
        let mut dir = leaf.path().to_path_buf();
        while dir != base.path() {
            let _ = std::fs::remove_dir(&dir);
            dir.pop();
        }
    }
    drop(tcpkit);
}

#[test]
fn container_flag_keeps_one_container_and_the_column_names_it() {
    // Two docker containers whose IDs share their first 12 hex digits: 13 tell them apart, 12 are ambiguous.
    const A: &str = "c0ffee123456a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f607182930";
    const B: &str = "c0ffee123456b1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f607182930";
    let base = Cgroup::new();
    let a = base.child(&format!("docker/{A}"));
    let b = base.child(&format!("system.slice/docker-{B}.scope"));
    let unit = base.child("system.slice/tcpkit-column.service");
    // The server in a container of kubelet's cgroupfs layout, which names no runtime.
    const C: &str = "5eed5eed5eed0123456789abcdef0123456789abcdef0123456789abcdef0123";
    let c = base.child(&format!("kubepods/besteffort/pod0b7e3a52-41d6-4c8e-9f21-6a5b4c3d2e1f/{C}"));
    let mut server = Peer::listen(&[], &["--count", "42"]);
    c.add(server.pid);
    let target = v4(server.port).to_string();
    let mut in_a = Peer::spawn(&["--wait"], "connect", &["--addr", &target]);
    let mut in_b = Peer::spawn(&["--wait"], "connect", &["--addr", &target, "--count", "40"]);
    let mut in_unit = Peer::spawn(&["--wait"], "connect", &["--addr", &target]);
    a.add(in_a.pid);
    b.add(in_b.pid);
    unit.add(in_unit.pid);

    assert_usage_error(&["tracer", "--container", &A[..12]], "ambiguous, 2 containers");
    assert_usage_error(&["tracer", "--container", "c0ffee"], "no docker or podman container under / has that name");
    assert_usage_error(&["accept", "--container", "not/a name"], "neither a container ID (12 to 64 hex digits");
    assert_usage_error(&["tracer", "--container", "0123456789abcdef"], "no container's cgroup has an ID starting");
    assert_usage_error(&["tracer", "--container", A, "--cgroup", "/sys/fs/cgroup"], "cannot be used with");

    // The filter: only A's connect, while B makes 40 and the unit's task one.
    let mut only_a = Tcpkit::start_with_header_lines(&["tracer", "-C", "--container", &A[..13]], 2);
    assert!(only_a.header.ends_with(" DPORT  CONTAINER   "), "{:?}", only_a.header);
    let port = server.port.to_string();
    let all = Tcpkit::start_with_header_lines(&["tracer", "-C", "-P", &port], 2);
    let accepts = Tcpkit::start(&["accept", "-C", "-P", &port]);
    assert!(accepts.header.ends_with(" LPORT CONTAINER   "), "{:?}", accepts.header);
    for peer in [&mut in_b, &mut in_unit, &mut in_a] {
        peer.go();
        peer.wait_done();
    }
    let a_pid = format!(" {} ", in_a.pid);
    only_a.expect_line("container A's connect", |l| l.starts_with("C ") && l.contains(&a_pid));
    server.wait_done();
    let kept = only_a.stop_and_collect();
    assert!(kept.iter().all(|l| l.contains(&a_pid) && l.trim_end().ends_with(&A[..12])), "{kept:#?}");

    // The column: A's, B's and C's short IDs, the unit's name.
    let rows = all.stop_and_collect();
    let last_of = |pid: u32, kind: &str| -> Vec<String> {
        let pid = format!(" {pid} ");
        rows.iter()
            .filter(|l| l.starts_with(kind) && l.contains(&pid))
            .map(|l| l.split_whitespace().last().unwrap().to_string())
            .collect()
    };
    assert_eq!(last_of(in_a.pid, "C "), [&A[..12]], "{rows:#?}");
    assert_eq!(last_of(in_b.pid, "C ").len(), 40, "{rows:#?}");
    assert!(last_of(in_b.pid, "C ").iter().all(|c| c == &B[..12]), "{rows:#?}");
    assert_eq!(last_of(in_unit.pid, "C "), ["tcpkit-column.service"], "{rows:#?}");
    let server_rows = last_of(server.pid, "A ");
    assert_eq!(server_rows.len(), 42, "{rows:#?}");
    assert!(server_rows.iter().all(|c| c == &C[..12]), "{rows:#?}");
    let accept_rows = accepts.stop_and_collect();
    assert_eq!(accept_rows.len(), 42, "{accept_rows:#?}");
    assert!(accept_rows.iter().all(|l| l.trim_end().ends_with(&C[..12])), "{accept_rows:#?}");
    drop(server);
    for (peer, cgroup) in [(&mut in_a, &a), (&mut in_b, &b), (&mut in_unit, &unit)] {
        peer.wait_exit();
        wait_until_empty(cgroup.path());
    }
    wait_until_empty(c.path());
    drop((a, b, unit));
    let mut dir = c.path().to_path_buf();
    drop(c);
    while dir.pop() && dir != base.path() {
        let _ = std::fs::remove_dir(&dir);
    }
    for dir in ["docker", "system.slice"] {
        let _ = std::fs::remove_dir(base.path().join(dir));
    }
}

/// Tests whose outcome cannot depend on the backend, so the qemu guests run them once per kernel, under auto
/// (tests/vm/README.md): argument parsing, and a duration that ends tcpkit with no event at all. Every test
/// above them checks accepts, or filters that the accept hooks apply: those run once per backend.
mod any_backend {
    use super::*;

    #[test]
    fn duration_flag_exits_after_that_many_seconds() {
        let started = Instant::now();
        let mut tcpkit = Tcpkit::start_with_header_lines(&["tracer", "-d", "1"], 2);
        let status = wait_with_deadline(&mut tcpkit.child, DEADLINE).expect("did not exit by itself");
        assert!(status.success(), "{status}");
        assert!(started.elapsed() >= Duration::from_secs(1), "exited before its duration");
    }

    #[test]
    fn bad_values_of_the_new_flags_are_usage_errors() {
        assert_usage_error(&["accept", "-c", "0"], "positive whole number");
        assert_usage_error(&["tracer", "-c", "x"], "positive whole number");
        assert_usage_error(&["accept", "-d", "0"], "positive number of seconds");
        assert_usage_error(&["tracer", "-d", "-1"], "");
        assert_usage_error(&["accept", "--ring-size", "3000"], "power of two");
        assert_usage_error(&["tracer", "--ring-size", "1G"], "power of two");
        assert_usage_error(&["accept", "-u", "abc"], "whole number from 0");
        assert_usage_error(&["tracer", "-u", "4294967295"], "whole number from 0");
        assert_usage_error(&["accept", "-o", "yaml"], "invalid value 'yaml'");
        assert_usage_error(&["tracer", "--json", "-o", "text"], "cannot be used with");
        assert_usage_error(&["accept", "--cgroup", "/nonexistent-cgroup"], "--cgroup /nonexistent-cgroup");
        assert_usage_error(&["tracer", "--cgroup", "/tmp"], "not a cgroup v2 directory");
    }
}
