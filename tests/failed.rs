//! `tcpkit tracer --failed`: every connect that fails is an F line naming the connecting process, both
//! ends and the error. Real failures on real kernels: refused on loopback; timed out, abandoned, no route
//! and no free local port inside network namespaces the tests make (nothing leaves them: they hold lo only).
mod common;

use common::tracer::*;
use common::*;
use serde_json::Value;

/// The bcc row with --failed's ERROR column.
#[allow(clippy::too_many_arguments)]
fn fail_row(pid: u32, ip: u8, saddr: &str, daddr: &str, sport: u16, dport: u16, error: &str) -> String {
    format!("{} {error:<13}", row("F", pid, PEER, ip, saddr, daddr, sport, dport))
}

fn start_failed(args: &[&str]) -> Tcpkit {
    start(&[&["--failed"], args].concat())
}

/// A peer's `failed LPORT ERRNO` reports, as (local port, errno name).
fn failures(peer: &mut Peer, n: usize) -> Vec<(u16, String)> {
    while peer.lines_starting("failed ").len() < n {
        peer.out
            .find(DEADLINE, |l| l.starts_with("failed "))
            .unwrap_or_else(|| panic!("peer: fewer than {n} failures"));
    }
    let parse = |l: &String| {
        let mut it = l["failed ".len()..].split(' ');
        (it.next().unwrap().parse().unwrap(), it.next().unwrap().to_string())
    };
    peer.lines_starting("failed ").iter().map(parse).collect()
}

/// A port on loopback where nothing listens.
fn closed_port(any: &str) -> std::net::SocketAddr {
    std::net::TcpListener::bind(any).unwrap().local_addr().unwrap()
}

/// Where nothing listens (bound to find a free port), how to address it, the IP column, the addresses shown.
type RefusedCase = (&'static str, fn(u16) -> String, u8, &'static str);

/// A listener inside a new network namespace that drops every SYN: backlog 0 with syncookies off.
fn syn_dropping_listener() -> Peer {
    Peer::listen(
        &["--new-netns", "--sysctl", "net/ipv4/tcp_syncookies=0", "--hold"],
        &["--backlog", "0", "--no-accept"],
    )
}

/// Every failure comes from the state-change tracepoint or the connect() syscall tracepoints, which every
/// backend loads alike, and no test here asserts on an accept: the qemu guests run these once per kernel,
/// under auto (tests/vm/README.md). A test that asserts on an accept or the accepting end's close belongs
/// above this module, where it runs once per backend.
mod any_backend {
    use super::*;

    #[test]
    fn refused_connect_is_one_f_line_with_the_connecting_peer_and_both_ends() {
        let mut tcpkit = start_failed(&[]);
        assert_eq!(
            tcpkit.header,
            format!(
                "{BANNER}\nT  PID    COMM             IP SADDR            DADDR            SPORT  DPORT  ERROR        "
            )
        );
        // IPv4, IPv6, and an IPv6 socket connecting to an IPv4-mapped address (tcp_v6_connect hands it on to
        // tcp_v4_connect), each blocking and not.
        let mapped = |port: u16| format!("[::ffff:127.0.0.1]:{port}");
        let cases: [RefusedCase; 3] = [
            ("127.0.0.1:0", |p| v4(p).to_string(), 4, "127.0.0.1"),
            ("[::1]:0", |p| v6(p).to_string(), 6, "[::1]"),
            ("127.0.0.1:0", mapped, 6, "[::ffff:127.0.0.1]"),
        ];
        for (any, target_of, ip, addr) in cases {
            for how in [&[][..], &["--nonblock"][..]] {
                let port = closed_port(any).port();
                let target = target_of(port);
                let args = [&["--addr", &target, "--may-fail"][..], how].concat();
                let mut client = Peer::spawn(&[], "connect", &args);
                let (lport, error) = failures(&mut client, 1).remove(0);
                assert_eq!(error, "ECONNREFUSED", "{target} {how:?}");
                let line = tcpkit.expect_line("the refused connect", row_of("F", lport, port));
                assert_eq!(line, fail_row(client.pid, ip, addr, addr, lport, port, "ECONNREFUSED"), "{target} {how:?}");
            }
        }
        // Other rows show `-` there: a good connection's C.
        let (server, _client, cport) = {
            let mut server = Peer::listen(&[], &[]);
            let mut client = Peer::spawn(&[], "connect", &["--addr", &v4(server.port).to_string()]);
            let (cport, _) = reported(&mut client, "connected", 1)[0];
            server.expect_accepted(cport);
            (server, client, cport)
        };
        let c = tcpkit.expect_line("a good connect", row_of("C", cport, server.port));
        assert!(c.ends_with(&format!(" {:<13}", "-")), "{c:?}");
    }

    #[test]
    fn timed_out_connect_is_f_etimedout_and_an_abandoned_one_ecanceled() {
        let listener = syn_dropping_listener();
        let target = v4(listener.port).to_string();
        let ns = listener.pid.to_string();
        // A first connection fills the accept queue, if the kernel lets even that one in.
        let mut filler = Peer::spawn(
            &["--join-netns", &ns],
            "connect",
            &["--addr", &target, "--may-fail", "--syn-retries", "1", "--end", "hold"],
        );
        filler.out.find(DEADLINE, |l| l.starts_with("connected ") || l.starts_with("failed ")).expect("the filler");
        let mut tcpkit = start_failed(&[]);
        // One SYN retransmission: the kernel gives up after about 3 s.
        let mut timed_out =
            Peer::spawn(&["--join-netns", &ns], "connect", &["--addr", &target, "--may-fail", "--syn-retries", "1"]);
        let mut abandoned = Peer::spawn(&["--join-netns", &ns], "connect", &["--addr", &target, "--abandon-ms", "300"]);
        let line = abandoned.out.find(DEADLINE, |l| l.starts_with("abandoned ")).expect("the abandoned connect");
        let aport: u16 = line["abandoned ".len()..].parse().unwrap();
        let (tport, error) = failures(&mut timed_out, 1).remove(0);
        assert_eq!(error, "ETIMEDOUT");
        let lines = tcpkit.expect_all(
            "the timed-out and the abandoned connect",
            &[&row_of("F", tport, listener.port), &row_of("F", aport, listener.port)],
        );
        let ip = "127.0.0.1";
        assert_eq!(lines[0], fail_row(timed_out.pid, 4, ip, ip, tport, listener.port, "ETIMEDOUT"));
        assert_eq!(lines[1], fail_row(abandoned.pid, 4, ip, ip, aport, listener.port, "ECANCELED"));
    }

    #[test]
    fn no_route_fails_inside_connect_as_enetunreach() {
        // A namespace with nothing but lo has no route to any other address: connect() fails before a SYN.
        let mut tcpkit = start_failed(&[]);
        for (target, ip, local, shown) in
            [("203.0.113.1:80", 4, "0.0.0.0", "203.0.113.1"), ("[2001:db8::1]:80", 6, "[::]", "[2001:db8::1]")]
        {
            let mut client = Peer::spawn(&["--new-netns"], "connect", &["--addr", target, "--may-fail"]);
            let (lport, error) = failures(&mut client, 1).remove(0);
            assert_eq!((lport, error.as_str()), (0, "ENETUNREACH"));
            let line = tcpkit.expect_line("the unroutable connect", |l| {
                let c = columns(l);
                c.len() > 7 && c[0] == "F" && c[1] == client.pid.to_string()
            });
            assert_eq!(line, fail_row(client.pid, ip, local, shown, 0, 80, "ENETUNREACH"));
        }
    }

    #[test]
    fn no_free_local_port_fails_inside_connect_as_eaddrnotavail() {
        // One local port in the namespace: the second connect to the same server finds none free. The
        // listener's port is outside that range (a fixed port is safe in a namespace of its own).
        let mut server = Peer::listen(
            &["--new-netns", "--sysctl", "net/ipv4/ip_local_port_range=40000 40000"],
            &["--addr", "127.0.0.1:39999", "--end", "hold"],
        );
        let ns = server.pid.to_string();
        let mut tcpkit = start_failed(&[]);
        let target = v4(server.port).to_string();
        let mut client = Peer::spawn(
            &["--join-netns", &ns],
            "connect",
            &["--addr", &target, "--count", "2", "--may-fail", "--end", "hold"],
        );
        let (first, _) = reported(&mut client, "connected", 1)[0];
        assert_eq!(first, 40000);
        server.expect_accepted(first);
        let (lport, error) = failures(&mut client, 1).remove(0);
        assert_eq!(error, "EADDRNOTAVAIL");
        let line = tcpkit.expect_line("the connect with no free port", |l| {
            let c = columns(l);
            c.len() > 7 && c[0] == "F" && c[1] == client.pid.to_string()
        });
        // The connect never had a port of its own; whether its local address is still set when connect()
        // returns depends on the kernel (5.10 keeps it, 6.x resets it).
        let with = |local| fail_row(client.pid, 4, local, "127.0.0.1", lport, server.port, "EADDRNOTAVAIL");
        assert!(line == with("0.0.0.0") || line == with("127.0.0.1"), "{line:?}");
        // Its one failure is the second connect: the first one's state changes gave no F.
        let all = tcpkit.stop_and_collect();
        let mine = |l: &&String| l.starts_with("F ") && columns(l)[1] == client.pid.to_string();
        assert_eq!(all.iter().filter(mine).count(), 1, "{all:#?}");
    }

    #[test]
    fn filters_apply_to_failures_in_the_kernel() {
        let closed = closed_port("127.0.0.1:0");
        let other_closed = closed_port("127.0.0.1:0");
        let mut wanted =
            Peer::spawn(&["--wait"], "connect", &["--addr", &closed.to_string(), "--may-fail", "--count", "2"]);
        let mut other = Peer::spawn(&["--wait"], "connect", &["--addr", &other_closed.to_string(), "--may-fail"]);
        let by_pid = start_failed(&["-p", &wanted.pid.to_string()]);
        let by_port = start_failed(&["-P", &closed.port().to_string()]);
        let by_family = start_failed(&["-6"]);
        other.go();
        failures(&mut other, 1);
        wanted.go();
        let fails = failures(&mut wanted, 2);
        for (name, tcpkit) in [("-p", by_pid), ("-P", by_port)] {
            let mut tcpkit = tcpkit;
            for (lport, _) in &fails {
                tcpkit.expect_line("the wanted failure", row_of("F", *lport, closed.port()));
            }
            let all = tcpkit.stop_and_collect();
            // -P keeps what has the port at either end; any busy process may get it as a local port meanwhile
            // (it was a free ephemeral port), so only the port is certain there.
            let port = closed.port().to_string();
            let kept = |l: &String| match name {
                "-p" => columns(l)[1] == wanted.pid.to_string(),
                _ => columns(l)[6] == port || columns(l)[7] == port,
            };
            assert!(all.iter().all(kept), "{name}: {all:#?}");
        }
        // Other tests running meanwhile fail IPv6 connects of their own, which -6 rightly prints.
        let all = by_family.stop_and_collect();
        let ours = [wanted.pid.to_string(), other.pid.to_string()];
        let ours_failed = |l: &String| l.starts_with("F ") && ours.iter().any(|pid| columns(l)[1] == pid);
        assert!(!all.iter().any(ours_failed), "-6 printed IPv4 failures: {all:#?}");
    }

    #[test]
    fn json_fail_records_carry_the_error_and_every_other_field() {
        let tcpkit = Tcpkit::start_json(&["tracer", "--failed"]);
        let target = closed_port("127.0.0.1:0");
        let mut client = Peer::spawn(&[], "connect", &["--addr", &target.to_string(), "--may-fail"]);
        let (lport, _) = failures(&mut client, 1).remove(0);
        client.wait_exit();
        let records: Vec<Value> = tcpkit.stop_and_collect().iter().map(|l| serde_json::from_str(l).unwrap()).collect();
        let fail = records
            .iter()
            .find(|r| r["type"] == "fail" && r["lport"] == lport)
            .unwrap_or_else(|| panic!("no fail record: {records:#?}"));
        assert_eq!(fail["error"], "ECONNREFUSED");
        assert_eq!(fail["errno"], 111);
        assert_eq!(fail["pid"], client.pid);
        assert_eq!(fail["comm"], PEER);
        assert_eq!(fail["task"], "owner");
        assert_eq!((fail["laddr"].as_str(), fail["raddr"].as_str()), (Some("127.0.0.1"), Some("127.0.0.1")));
        assert_eq!(fail["rport"], target.port());
        for field in ["time_ns", "tid", "uid", "ip", "netns", "mntns", "cgroup_id"] {
            assert!(fail[field].is_number(), "{field} in {fail}");
        }
        for field in ["time", "backend"] {
            assert!(fail[field].is_string(), "{field} in {fail}");
        }
        assert!(fail.get("end").is_none(), "a fail record has no close fields: {fail}");
    }

    #[test]
    fn failed_and_lifespan_are_tracer_flags_only() {
        assert_usage_error(&["accept", "--failed"], "unexpected argument '--failed'");
        assert_usage_error(&["accept", "-L"], "unexpected argument '-L'");
    }
}
