//! `tcpkit metrics` (issue 26), scraped directly: what the kernel counts for a known workload, exactly,
//! with its pod's names; counters that never go down when a workload's container restarts, and series that
//! go some time after their workload; the HTTP endpoint as an attacker would try it; a bad --listen. The
//! workload runs in real cgroups laid out as containerd (systemd driver) lays out a pod's container, named by
//! its CRI spec under the test's own --host-root (tests/common/node.rs: containerd does not run here).
//! Runs on every kernel of the qemu matrix too; tests/prometheus.rs has a real Prometheus scrape the same.
mod common;

use std::io::Write;
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

use common::metrics::*;
use common::node::{Cri, HostRoot};
use common::*;
use nix::sys::signal::Signal;

#[test]
fn a_known_workload_is_counted_exactly_under_its_pods_names() {
    let root = HostRoot::new("metrics-known");
    let id = "4d".repeat(32);
    root.cri_spec(Cri::Containerd, &id, "shop", "web-0", Some("api"));
    let base = Cgroup::new();
    let pod = pod_cgroup(&base, &id);
    let base_path = base.path().to_str().unwrap().to_string();
    let (tcpkit, port) = start_metrics(&["--host-root", root.path(), "--cgroup", &base_path]);
    let server_port = known_workload(&pod);
    let body = scrape(port);
    for (family, labels, value) in known_workload_series(server_port) {
        let labels = format!("{POD_LABELS},{labels}");
        let got = sample(&body, family, &labels);
        if family.ends_with("_seconds_count") && family != "tcpkit_connection_duration_seconds_count" {
            // Timed where the kernel gave the start: once in an emulated 5.10 guest, one accept of nine had
            // no queue wait (issue 26's note); every connection is still counted, as opened_total shows.
            let got = got.unwrap_or_else(|| panic!("{family}{{{labels}}} missing: {body}"));
            assert!(got >= value - 1.0 && got <= value, "{family}{{{labels}}} {got}: {}\n{body}", tcpkit.stderr());
            continue;
        }
        assert_eq!(got, Some(value), "{family}{{{labels}}}: {}\n{body}", tcpkit.stderr());
    }
    // Every handshake is in a bucket (+Inf counts them all); retransmits are counted, however many the
    // kernel made (an emulated guest's stalls make some): the same as each connection's close reports.
    let le = format!(r#"{POD_LABELS},port="{server_port}",le="+Inf""#);
    assert_eq!(sample(&body, "tcpkit_handshake_seconds_bucket", &le), Some(f64::from(OK + RESETS)), "{body}");
    let retransmits = format!(r#"{POD_LABELS},direction="out",port="{server_port}""#);
    assert!(sample(&body, "tcpkit_retransmits_total", &retransmits).is_some(), "{body}");
    assert_eq!(sample(&body, "tcpkit_events_lost_total", ""), Some(0.0));
    assert_eq!(sample(&body, "tcpkit_series_dropped_total", ""), Some(0.0));
    // Only the cgroup's tasks: the scrapes themselves (this test's process) are not counted.
    assert!(!body.lines().any(|l| l.starts_with("tcpkit_connections_opened_total") && !l.contains(POD_LABELS)));
    assert_clean_stop(tcpkit, Signal::SIGTERM);
    drop(pod);
}

#[test]
fn counters_go_on_when_a_container_restarts_and_series_go_after_their_workload() {
    // A container that restarts gets a new cgroup under the same names: the old cgroup's series are
    // deleted some time after it goes (--forget-after), and the workload's counters must not go down then.
    let root = HostRoot::new("metrics-restart");
    let (first, second) = ("5e".repeat(32), "6f".repeat(32));
    root.cri_spec(Cri::Containerd, &first, "shop", "web-0", Some("api"));
    root.cri_spec(Cri::Containerd, &second, "shop", "web-0", Some("api"));
    let base = Cgroup::new();
    let base_path = base.path().to_str().unwrap().to_string();
    let (tcpkit, port) = start_metrics(&["--host-root", root.path(), "--cgroup", &base_path, "--forget-after", "1"]);
    let mut server = Peer::listen(&[], &["--count", "5"]);
    let server_port = server.port;
    let opened = |body: &str| {
        let labels = format!(r#"{POD_LABELS},direction="out",port="{server_port}""#);
        sample(body, "tcpkit_connections_opened_total", &labels)
    };
    let connect_from = |cgroup: &Cgroup, count: u32| {
        let addr = format!("127.0.0.1:{server_port}");
        let mut client = Peer::spawn(&["--wait"], "connect", &["--addr", &addr, "--count", &count.to_string()]);
        cgroup.add(client.pid);
        client.go();
        client.wait_done();
        client.wait_exit();
    };
    let before = pod_cgroup(&base, &first);
    connect_from(&before, 2);
    assert_eq!(opened(&scrape(port)), Some(2.0));
    let old = before.path().to_path_buf();
    drop(before);
    let _ = std::fs::remove_dir(&old); // the container's end: its cgroup goes
    let after = pod_cgroup(&base, &second);
    connect_from(&after, 3);
    // Past --forget-after, with the old cgroup's series deleted from the kernel's table: 2 + 3 still.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(opened(&scrape(port)), Some(5.0), "the restarted workload's counter went down");
    server.wait_done();
    // The workload gone for good: its series go --forget-after later.
    let last = after.path().to_path_buf();
    drop(after);
    wait_until_empty(&last);
    let _ = std::fs::remove_dir(&last);
    let deadline = Instant::now() + DEADLINE;
    while opened(&scrape(port)).is_some() {
        assert!(Instant::now() < deadline, "the gone workload's series stayed: {}", scrape(port));
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_clean_stop(tcpkit, Signal::SIGINT);
}

#[test]
fn the_endpoint_answers_only_what_it_serves_and_a_bad_listen_is_one_line() {
    let (tcpkit, port) = start_metrics(&["-P", "1"]);
    let asked = b"GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text;version=1.0.0\r\n\r\n";
    let (status, head, body) = http(port, asked);
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(head.contains("application/openmetrics-text; version=1.0.0"), "{head}");
    assert!(String::from_utf8(body).unwrap().ends_with("# EOF\n"), "OpenMetrics ends with # EOF");
    assert!(http(port, b"GET /other HTTP/1.1\r\n\r\n").0.starts_with("HTTP/1.1 404"));
    assert!(http(port, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n").0.starts_with("HTTP/1.1 405"));
    assert!(http(port, b"\x16\x03\x01garbage\r\n\r\n").0.starts_with("HTTP/1.1 400"));
    let huge = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(10_000));
    assert!(http(port, huge.as_bytes()).0.starts_with("HTTP/1.1 431"));
    // Slow clients that never finish their request, more than tcpkit keeps, do not stop a scrape.
    let stalled: Vec<TcpStream> = (0..64)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.write_all(b"G").unwrap();
            s
        })
        .collect();
    let started = Instant::now();
    assert!(scrape(port).contains("tcpkit_build_info"));
    assert!(started.elapsed() < Duration::from_secs(5), "a scrape behind 64 stalled clients: {:?}", started.elapsed());
    drop(stalled);
    assert_clean_stop(tcpkit, Signal::SIGINT);

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let in_use = taken.local_addr().unwrap().to_string();
    for (listen, code, says) in [
        ("127.0.0.1", 2, "invalid --listen address"),
        ("localhost:99999", 2, "invalid --listen address"),
        (&in_use as &str, 1, "choose another --listen port"),
        ("192.0.2.1:9981", 1, "cannot listen on 192.0.2.1:9981"),
    ] {
        let (status, out, err) = run_tcpkit(&["metrics", "--listen", listen]);
        assert_eq!(status.code(), Some(code), "{listen}: {err}");
        assert_eq!(err.lines().count(), 1, "{listen}: one line: {err}");
        assert!(err.contains(says) && err.contains(listen), "{listen}: {err}");
        assert!(out.is_empty());
    }
    let (status, _, err) = run_tcpkit(&["metrics", "-c", "1"]);
    assert_eq!((status.code(), err.lines().count()), (Some(2), 1), "{err}");
    // A port below 1024 for a user who may not bind one: said before anything else is tried.
    let anyone = RunnableByAnyone::new();
    let mut cmd = std::process::Command::new(&anyone.bin);
    cmd.args(["metrics", "--listen", "127.0.0.1:80"]).uid(65534).gid(65534);
    let (status, _, err) = run_tcpkit_cmd(&mut cmd);
    assert_eq!((status.code(), err.lines().count()), (Some(1), 1), "{err}");
    assert!(err.contains("cannot listen on 127.0.0.1:80") && err.contains("above 1023"), "{err}");
}
