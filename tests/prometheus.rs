//! `tcpkit metrics` as a real Prometheus (Debian's package) scrapes it, every second, in its own
//! configuration and data directory: after the known workload (tests/common/metrics.rs), every family has
//! exactly the expected values under the pod's names, as PromQL reads them; and promtool lints what tcpkit
//! serves. Host only (the qemu guests have no Prometheus): tests/metrics.rs checks the same counts there.
mod common;

use common::metrics::*;
use common::node::{Cri, HostRoot};
use common::*;
use nix::sys::signal::Signal;

#[path = "common/prometheus.rs"]
mod prometheus;

use prometheus::Prometheus;

/// The value of the one series `promql` selects.
fn one(prom: &Prometheus, promql: &str) -> f64 {
    let result = prom.query(promql);
    assert_eq!(result.len(), 1, "{promql}: one series expected, got {result:?}");
    result[0].1
}

#[test]
fn prometheus_stores_exactly_what_a_known_workload_did_under_its_pods_names() {
    let root = HostRoot::new("prometheus-names");
    let id = "7a".repeat(32);
    root.cri_spec(Cri::Containerd, &id, "shop", "web-0", Some("api"));
    let base = Cgroup::new();
    let pod = pod_cgroup(&base, &id);
    let base_path = base.path().to_str().unwrap().to_string();
    let (tcpkit, port) = start_metrics(&["--host-root", root.path(), "--cgroup", &base_path]);
    let prom = Prometheus::start(&format!("127.0.0.1:{port}"));
    let server_port = known_workload(&pod);
    prom.wait_scrapes(2);
    for (family, labels, value) in known_workload_series(server_port) {
        let q = format!("{family}{{{POD_LABELS},{labels}}}");
        assert_eq!(one(&prom, &q), value, "{q}");
    }
    let retransmits = format!(r#"tcpkit_retransmits_total{{{POD_LABELS},direction="out",port="{server_port}"}}"#);
    assert_eq!(one(&prom, &retransmits), 0.0, "nothing is lost over the host's loopback");
    // Prometheus asks for OpenMetrics, whose bucket bounds are floats. Over loopback on the host, every
    // handshake ends below the first bucket that a lost SYN would reach.
    let le = format!(r#"tcpkit_handshake_seconds_bucket{{{POD_LABELS},port="{server_port}",le="1.0"}}"#);
    assert_eq!(one(&prom, &le), f64::from(OK + RESETS));
    assert_eq!(one(&prom, "tcpkit_events_lost_total"), 0.0);
    assert_eq!(one(&prom, "tcpkit_series_dropped_total"), 0.0);
    let info = prom.query("tcpkit_build_info");
    assert_eq!(info.len(), 1, "{info:?}");
    assert!(info[0].0.get("version").is_some_and(|v| v.starts_with(env!("CARGO_PKG_VERSION"))), "{info:?}");
    assert_eq!(prom.query(r#"tcpkit_connections_opened_total{pod!="web-0"}"#), vec![], "only the pod's tasks");
    assert_eq!(prom.target_health().0, "up");

    // What Prometheus read, promtool lints as it is served (its linter reads the text format).
    prometheus::promtool_check_metrics(scrape(port).as_bytes()).expect("promtool check metrics");
    drop(prom);
    assert_clean_stop(tcpkit, Signal::SIGTERM);
    drop(pod);
}
