//! Helpers for the tests of `tcpkit metrics`: start it on a port of its own, ask its endpoint, read the
//! series it serves, and run a workload whose every count is known.
use std::io::{Read, Write};
use std::net::TcpStream;

use nix::sys::signal::Signal;

use super::node::POD_UID;
use super::*;

/// `tcpkit metrics --listen 127.0.0.1:0 ARGS`, once attached, and the port it serves on (from its stderr).
pub fn start_metrics(args: &[&str]) -> (Tcpkit, u16) {
    let mut cmd = std::process::Command::new(tcpkit_bin());
    cmd.args(["metrics", "--listen", "127.0.0.1:0", "--debug", "--backend", &test_backend()]).args(args);
    let tcpkit = Tcpkit::start_json_command(cmd);
    let stderr = tcpkit.stderr();
    let port = stderr
        .lines()
        .find_map(|l| l.strip_prefix("tcpkit: serving metrics at http://127.0.0.1:"))
        .and_then(|rest| rest.strip_suffix("/metrics"))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("tcpkit metrics said nowhere where it serves: {stderr}"));
    (tcpkit, port)
}

/// Stops tcpkit with `signal`: exit 0, nothing more said (its start, with --debug, said plenty), and none
/// of its BPF programs left loaded.
pub fn assert_clean_stop(tcpkit: Tcpkit, signal: Signal) {
    let ids = bpf_prog_ids_of(tcpkit.pid());
    assert!(!ids.is_empty(), "tcpkit metrics holds no BPF program");
    let before = tcpkit.stderr();
    let (status, _, stderr) = tcpkit.stop_with(signal);
    assert_eq!(status.code(), Some(0), "{signal}: {stderr}");
    assert_eq!(stderr.strip_prefix(&before), Some(""), "{signal} made tcpkit say more");
    let alive: Vec<u32> =
        libbpf_rs::query::ProgInfoIter::default().map(|p| p.id).filter(|id| ids.contains(id)).collect();
    assert!(alive.is_empty(), "programs {alive:?} still loaded after {signal}");
}

/// One HTTP request to tcpkit; (status line, head, body).
pub fn http(port: u16, request: &[u8]) -> (String, String, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connecting to tcpkit metrics");
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.write_all(request).unwrap();
    let mut response = Vec::new();
    s.read_to_end(&mut response).expect("reading tcpkit's answer");
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").expect("an HTTP head");
    let head = String::from_utf8_lossy(&response[..split]).to_string();
    let status = head.lines().next().unwrap_or_default().to_string();
    (status, head, response[split + 4..].to_vec())
}

/// A scrape in Prometheus's text format.
pub fn scrape(port: u16) -> String {
    let (status, _, body) = http(port, b"GET /metrics HTTP/1.1\r\nHost: tcpkit\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 200 OK");
    String::from_utf8(body).expect("a UTF-8 exposition")
}

/// The value of the sample `name{labels}` (labels exactly as served, in their order), if served.
pub fn sample(body: &str, name: &str, labels: &str) -> Option<f64> {
    let prefix = if labels.is_empty() { format!("{name} ") } else { format!("{name}{{{labels}}} ") };
    body.lines().find_map(|l| l.strip_prefix(&prefix)).map(|v| v.parse().expect("a sample value"))
}

/// A pod's container cgroup below `base`, for container `id`, as containerd's systemd driver names it.
pub fn pod_cgroup(base: &Cgroup, id: &str) -> Cgroup {
    let uid_ = POD_UID.replace('-', "_");
    base.child(&format!(
        "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid_}.slice/cri-containerd-{id}.scope"
    ))
}

/// The workload labels of the known workload's pod, as every series carries them.
pub const POD_LABELS: &str = r#"namespace="shop",pod="web-0",container="api",unit="""#;

/// The known workload's counts.
pub const OK: u32 = 6; // connects that send 1000 bytes and close
pub const RESETS: u32 = 3; // connects ended by a reset (SO_LINGER 0)
pub const REFUSED: u32 = 4; // connects to a port where nothing listens (127.0.0.1:1)

/// Runs the known workload with every process in `pod` (a cgroup): a server that reads each connection to
/// its end (so that its end is the peer's close or its reset), OK connects that send 1000 bytes and close,
/// RESETS connects ended by a reset, REFUSED connects refused. Returns the server's port once all ended.
pub fn known_workload(pod: &Cgroup) -> u16 {
    let total = (OK + RESETS).to_string();
    let mut server = Peer::spawn(&["--wait"], "listen", &["--count", &total, "--end", "drain"]);
    pod.add(server.pid);
    server.go();
    let addr = format!("127.0.0.1:{}", server.port);
    let (ok, resets, refused) = (OK.to_string(), RESETS.to_string(), REFUSED.to_string());
    let mut clients = [
        Peer::spawn(
            &["--wait"],
            "connect",
            &["--addr", &addr, "--count", &ok, "--send", "1000", "--refused", &refused],
        ),
        Peer::spawn(&["--wait"], "connect", &["--addr", &addr, "--count", &resets, "--end", "reset"]),
    ];
    for client in &mut clients {
        pod.add(client.pid);
        client.go();
    }
    for client in &mut clients {
        client.wait_done();
    }
    server.wait_done();
    for peer in clients.iter_mut().chain([&mut server]) {
        peer.wait_exit();
    }
    server.port
}

/// Every series the known workload makes on `port`, with its value: (family, labels after the pod's, value).
pub fn known_workload_series(port: u16) -> Vec<(&'static str, String, f64)> {
    let n = f64::from;
    let mut series = vec![
        ("tcpkit_connections_opened_total", format!(r#"direction="out",port="{port}""#), n(OK + RESETS)),
        ("tcpkit_connections_opened_total", format!(r#"direction="in",port="{port}""#), n(OK + RESETS)),
        ("tcpkit_connect_failures_total", r#"port="1",reason="ECONNREFUSED""#.to_string(), n(REFUSED)),
        ("tcpkit_sent_bytes_total", format!(r#"direction="out",port="{port}""#), n(OK * 1000)),
        ("tcpkit_received_bytes_total", format!(r#"direction="in",port="{port}""#), n(OK * 1000)),
        ("tcpkit_handshake_seconds_count", format!(r#"port="{port}""#), n(OK + RESETS)),
        ("tcpkit_accept_queue_seconds_count", format!(r#"port="{port}""#), n(OK + RESETS)),
    ];
    for (direction, end, count) in
        [("out", "close", OK), ("out", "abort", RESETS), ("in", "peer", OK), ("in", "reset", RESETS)]
    {
        let labels = format!(r#"direction="{direction}",port="{port}",end="{end}""#);
        series.push(("tcpkit_connections_closed_total", labels, n(count)));
    }
    for direction in ["out", "in"] {
        series.push(("tcpkit_connections_active", format!(r#"direction="{direction}",port="{port}""#), 0.0));
        series.push((
            "tcpkit_connection_duration_seconds_count",
            format!(r#"direction="{direction}""#),
            n(OK + RESETS),
        ));
    }
    series
}
