//! Connection quality over paths made with Debian's own tools, checked against `ss -tin`: segments dropped by
//! an nftables rule, and an RTT made by a tbf qdisc on a veth pair between two network namespaces of the
//! test's own. ss reads the same socket's counters through its own path (sock_diag), so it is an oracle
//! nobody here wrote. The qemu guests run busybox, without nft, tc or ss: this file runs on the host only
//! (tests/vm/run-matrix.sh, HOST_ONLY_TESTS); the guests check the same counters against TCP_INFO and
//! RetransSegs in tests/quality.rs.
mod common;

use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};

use common::tracer::*;
use common::*;

/// Runs `tool args...` in the network namespace of process `pid`; its stdout.
fn in_netns(pid: u32, tool: &str, args: &[&str]) -> String {
    in_netns_with_input(pid, tool, args, "")
}

/// The same, with `input` on its stdin.
fn in_netns_with_input(pid: u32, tool: &str, args: &[&str], input: &str) -> String {
    let mut child = Command::new("nsenter")
        .arg(format!("--net=/proc/{pid}/ns/net"))
        .arg(tool)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("nsenter {tool}: {e} (util-linux)"));
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{tool} {args:?} in the namespace of {pid}: {}(needs Debian's iproute2 and nftables: scripts/setup.sh --test)",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// What `ss -tin` says about the TCP socket with local port `lport`, in the namespace of `pid`: its
/// `key:value` words (`rtt` is `srtt/rttvar` in ms, `retrans` is `now/total`).
fn ss(pid: u32, lport: u16) -> HashMap<String, String> {
    let out = in_netns(pid, "ss", &["-tinH", &format!("sport = :{lport}")]);
    let info: HashMap<String, String> = out
        .split_whitespace()
        .filter_map(|w| w.split_once(':'))
        .filter(|(k, v)| !k.is_empty() && !v.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert!(info.contains_key("rtt"), "ss knows the socket on port {lport}: {out:?}");
    info
}

fn ss_number(info: &HashMap<String, String>, key: &str) -> u64 {
    info.get(key).map_or(0, |v| v.parse().unwrap_or_else(|_| panic!("ss {key}:{v}")))
}

/// ss's milliseconds with three decimals, in microseconds.
fn ss_us(ms: &str) -> u64 {
    (ms.parse::<f64>().unwrap_or_else(|_| panic!("ss ms {ms:?}")) * 1000.0).round() as u64
}

/// Waits until everything the socket sent is acknowledged (`bytes_acked` counts the SYN too) and nothing is
/// in flight, then returns what ss says of it: the state just before the close.
fn ss_when_all_acked(pid: u32, lport: u16, sent: u64) -> HashMap<String, String> {
    let mut info = HashMap::new();
    wait_until("all the data acknowledged", || {
        info = ss(pid, lport);
        ss_number(&info, "bytes_acked") == sent + 1 && !info.contains_key("unacked")
    });
    info
}

#[test]
fn retransmits_of_segments_nftables_dropped_are_what_ss_counts() {
    // An nftables rule in the test's namespace drops the data segments arriving for the server until it has
    // dropped two, then is removed: every drop is sent again, and the one after the rule goes through. The
    // rule is on input: a drop on the sender's output is a local send error that TCP does not count as a
    // retransmission (ss showed none).
    const SENT: u64 = 3000; // one segment on lo
    let mut tcpkit = Tcpkit::start_json(&["tracer"]);
    let mut server = Peer::listen(&["--new-netns"], &["--end", "hold"]);
    let ns = server.pid;
    let ruleset = format!(
        "table inet tcpkit_test {{
           counter dropped {{ }}
           chain lost {{ type filter hook input priority 0; tcp dport {} ip length > 100 counter name dropped drop; }}
         }}",
        server.port
    );
    in_netns_with_input(ns, "nft", &["-f", "-"], &ruleset);
    let dropped = || {
        let out = in_netns(ns, "nft", &["list", "counter", "inet", "tcpkit_test", "dropped"]);
        let packets = out.split_whitespace().skip_while(|w| *w != "packets").nth(1).expect("packets N");
        packets.parse::<u64>().unwrap()
    };
    let target = v4(server.port).to_string();
    let args = ["--addr", &target, "--send", "3000", "--end", "hold"];
    let mut client = Peer::spawn(&["--join-netns", &ns.to_string()], "connect", &args);
    let (cport, _) = reported(&mut client, "connected", 1)[0];
    wait_until("two data segments dropped", || dropped() >= 2);
    in_netns(ns, "nft", &["flush", "chain", "inet", "tcpkit_test", "lost"]);
    let drops = dropped();
    let info = ss_when_all_acked(ns, cport, SENT);
    let (_, total) =
        info.get("retrans").unwrap_or_else(|| panic!("{info:?}")).split_once('/').expect("retrans:NOW/TOTAL");
    let total: u64 = total.parse().unwrap();
    assert_eq!(total, drops, "each dropped segment was sent again once: ss {info:?}");
    client.release();
    server.release();
    let x = record(&mut tcpkit, "close", cport, server.port);
    assert_eq!(number(&x, "retransmits"), total, "ss -tin just before the close: {info:?}\n{x}");
    assert_eq!(number(&x, "retransmitted_bytes"), ss_number(&info, "bytes_retrans"), "{info:?}\n{x}");
    assert_eq!(number(&x, "retransmitted_bytes"), drops * SENT, "{x}");
    assert_eq!(number(&x, "bytes_sent"), SENT, "{x}");
}

#[test]
fn rtt_over_a_shaped_veth_is_what_ss_shows() {
    // Two namespaces joined by a veth pair; the client's side sends through a 1 Mbit/s token bucket, so
    // each full segment takes 12 ms to leave and RTT samples are tens of milliseconds, not loopback's tens
    // of microseconds.
    const SENT: u64 = 20000;
    let mut tcpkit = Tcpkit::start_json(&["tracer"]);
    let mut server = Peer::listen(&["--new-netns"], &["--addr", "0.0.0.0:0", "--end", "hold"]);
    let client_ns = Peer::listen(&["--new-netns"], &["--no-accept"]);
    let c = client_ns.pid.to_string();
    // Made from the server's namespace, both ends going straight to their own: nothing appears in the host's.
    in_netns(server.pid, "ip", &["link", "add", "veth0", "type", "veth", "peer", "name", "veth0", "netns", &c]);
    for (pid, addr) in [(server.pid, "10.201.0.1/24"), (client_ns.pid, "10.201.0.2/24")] {
        in_netns(pid, "ip", &["addr", "add", addr, "dev", "veth0"]);
        in_netns(pid, "ip", &["link", "set", "veth0", "up"]);
    }
    in_netns(
        client_ns.pid,
        "tc",
        &["qdisc", "add", "dev", "veth0", "root", "tbf", "rate", "1mbit", "burst", "4kb", "latency", "1s"],
    );
    let target = format!("10.201.0.1:{}", server.port);
    let mut client =
        Peer::spawn(&["--join-netns", &c], "connect", &["--addr", &target, "--send", "20000", "--end", "hold"]);
    let (cport, _) = reported(&mut client, "connected", 1)[0];
    let info = ss_when_all_acked(client_ns.pid, cport, SENT);
    let (srtt, _) = info["rtt"].split_once('/').expect("rtt:SRTT/RTTVAR");
    let (srtt, min_rtt) = (ss_us(srtt), ss_us(&info["minrtt"]));
    assert!(srtt >= 5_000, "the token bucket makes the RTT milliseconds: ss {info:?}");
    client.release();
    server.release();
    let x = record(&mut tcpkit, "close", cport, server.port);
    // The FIN's own sample (a 66-byte segment: half a millisecond at 1 Mbit/s) moves the smoothed RTT by an
    // eighth of its difference from ss's value: the record's is between 7/8 of ss's and ss's plus 2 ms.
    let rtt = number(&x, "rtt_us");
    assert!((srtt * 7 / 8..=srtt + 2_000).contains(&rtt), "rtt_us {rtt}, ss {srtt} µs: {x}");
    assert!(number(&x, "min_rtt_us") <= min_rtt && number(&x, "min_rtt_us") > 0, "ss minrtt {min_rtt}: {x}");
    assert!(number(&x, "rtt_var_us") > 0, "{x}");
    assert_eq!((x["laddr"].as_str(), x["raddr"].as_str()), (Some("10.201.0.2"), Some("10.201.0.1")), "{x}");
}
