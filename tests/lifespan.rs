//! `tcpkit tracer -L`: how each connection ended (close, peer, abort, reset, timeout), how long it lived
//! and the bytes it carried, on the X lines of both ends, against real connections on real kernels.
mod common;

use std::time::Instant;

use common::tracer::*;
use common::*;
use serde_json::Value;

/// The lifespan columns of an X line: END, MS, TX, RX (the last four columns).
struct Ending {
    end: String,
    ms: Option<f64>,
    tx: u64,
    rx: u64,
}

fn ending(line: &str) -> Ending {
    let c = columns(line);
    let n = c.len();
    assert!(n >= 12, "not an -L row: {line:?}");
    Ending {
        end: c[n - 4].to_string(),
        ms: c[n - 3].parse().ok(),
        tx: c[n - 2].parse().unwrap_or_else(|_| panic!("TX of {line:?}")),
        rx: c[n - 1].parse().unwrap_or_else(|_| panic!("RX of {line:?}")),
    }
}

fn start_lifespan(args: &[&str]) -> Tcpkit {
    start(&[&["-L"], args].concat())
}

/// A server that reads `recv` bytes, writes `send` bytes and ends as `end`; a client that connects, writes
/// and reads the other way, holds the connection `hold_ms`, then ends as `client_end`. Returns both and the
/// client's port once the server has accepted.
fn exchange(send: usize, recv: usize, hold_ms: u64, server_end: &str, client_end: &str) -> (Peer, Peer, u16) {
    let (s, r, h) = (send.to_string(), recv.to_string(), hold_ms.to_string());
    let mut server = Peer::listen(&[], &["--recv", &s, "--send", &r, "--end", server_end]);
    let target = v4(server.port).to_string();
    let args = ["--addr", &target, "--send", &s, "--recv", &r, "--hold-ms", &h, "--end", client_end];
    let mut client = Peer::spawn(&[], "connect", &args);
    let (cport, _) = reported(&mut client, "connected", 1)[0];
    server.expect_accepted(cport);
    (server, client, cport)
}

#[test]
fn close_and_peer_ends_with_their_lifespan_and_exact_bytes() {
    let mut tcpkit = start_lifespan(&[]);
    assert_eq!(
        tcpkit.header,
        format!(
            "{BANNER}\nT  PID    COMM             IP SADDR            DADDR            SPORT  DPORT  \
             END     MS         TX         RX        "
        )
    );
    // The client writes 1000 bytes, reads 77, holds 500 ms and closes first; the server reads to the end
    // and closes second.
    const HOLD_MS: f64 = 500.0;
    let started = Instant::now();
    let (server, client, cport) = exchange(1000, 77, HOLD_MS as u64, "drain", "close");
    let sport = server.port;
    let lines = tcpkit.expect_all(
        "both ends' X",
        &[&row_of("C", cport, sport), &row_of("X", cport, sport), &row_of("X", sport, cport)],
    );
    let longest = started.elapsed().as_secs_f64() * 1000.0;
    let dashes = format!(" {:<7} {:<10} {:<10} {:<10}", "-", "-", "-", "-");
    assert!(lines[0].ends_with(&dashes), "a C row shows - for the lifespan columns: {:?}", lines[0]);
    let (mine, theirs) = (ending(&lines[1]), ending(&lines[2]));
    assert!(lines[1].starts_with(&row("X", client.pid, PEER, 4, "127.0.0.1", "127.0.0.1", cport, sport)));
    assert!(lines[2].starts_with(&row("X", server.pid, PEER, 4, "127.0.0.1", "127.0.0.1", sport, cport)));
    assert_eq!((mine.end.as_str(), mine.tx, mine.rx), ("close", 1000, 77), "{:?}", lines[1]);
    assert_eq!((theirs.end.as_str(), theirs.tx, theirs.rx), ("peer", 77, 1000), "{:?}", lines[2]);
    for (who, e) in [("client", &mine), ("server", &theirs)] {
        let ms = e.ms.unwrap_or_else(|| panic!("{who}: no lifespan"));
        assert!((HOLD_MS..=longest).contains(&ms), "{who} lived {ms} ms: held {HOLD_MS}, all took {longest}");
    }
}

#[test]
fn abort_on_this_end_and_reset_on_the_other() {
    // The server closes with SO_LINGER 0: it sends the reset (abort); the client gets it (reset) in
    // softirq, and its X still names the client.
    let mut tcpkit = start_lifespan(&[]);
    let (server, mut client, cport) = exchange(10, 0, 0, "reset", "hold");
    let sport = server.port;
    let lines = tcpkit.expect_all("both ends' X", &[&row_of("X", sport, cport), &row_of("X", cport, sport)]);
    let (aborted, reset) = (ending(&lines[0]), ending(&lines[1]));
    assert_eq!((aborted.end.as_str(), aborted.rx), ("abort", 10), "{:?}", lines[0]);
    assert_eq!((reset.end.as_str(), reset.tx), ("reset", 10), "{:?}", lines[1]);
    assert!(lines[0].starts_with(&row("X", server.pid, PEER, 4, "127.0.0.1", "127.0.0.1", sport, cport)));
    assert!(lines[1].starts_with(&row("X", client.pid, PEER, 4, "127.0.0.1", "127.0.0.1", cport, sport)));
    client.release();
}

#[test]
fn json_close_records_always_carry_end_duration_and_bytes() {
    // No -L: JSON close records carry them anyway.
    let mut tcpkit = Tcpkit::start_json(&["tracer"]);
    let (server, _client, cport) = exchange(123, 45, 0, "drain", "close");
    let sport = server.port;
    tcpkit.expect_all(
        "the connect and both ends' close",
        &[&json_event("connect", cport, sport), &json_event("close", cport, sport), &json_event("close", sport, cport)],
    );
    let records: Vec<Value> = tcpkit.stop_and_collect().iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    let close = |lport: u16, rport: u16| {
        records
            .iter()
            .find(|r| r["type"] == "close" && r["lport"] == lport && r["rport"] == rport)
            .unwrap_or_else(|| panic!("no close {lport}->{rport}: {records:#?}"))
    };
    let (mine, theirs) = (close(cport, server.port), close(server.port, cport));
    assert_eq!(
        (mine["end"].as_str(), mine["bytes_sent"].as_u64(), mine["bytes_received"].as_u64()),
        (Some("close"), Some(123), Some(45))
    );
    assert_eq!(
        (theirs["end"].as_str(), theirs["bytes_sent"].as_u64(), theirs["bytes_received"].as_u64()),
        (Some("peer"), Some(45), Some(123))
    );
    for r in [mine, theirs] {
        assert!(r["duration_ns"].as_u64().is_some_and(|ns| ns > 0), "duration_ns in {r}");
    }
    let connect = records.iter().find(|r| r["type"] == "connect" && r["lport"] == cport).expect("the connect");
    assert!(connect.get("end").is_none() && connect.get("error").is_none(), "{connect}");
}

/// Tests whose outcome cannot depend on the backend, so the qemu guests run them once per kernel, under auto
/// (tests/vm/README.md): the connecting end's close and its lifespan come from the state-change tracepoint
/// on every backend, and the columns from the output layout. The tests above them check the accepting end's
/// close, whose process and start the backend's own accept hook gives: those run once per backend.
mod any_backend {
    use super::*;

    #[test]
    fn timeout_when_the_peer_goes_silent() {
        // In a namespace of its own the peer connects to itself, takes lo down and writes: TCP_USER_TIMEOUT
        // (1 s) gives up on the retransmissions, in a timer, with no task holding the socket.
        let mut tcpkit = start_lifespan(&[]);
        let mut peer = Peer::spawn(&["--new-netns"], "silent", &["--user-timeout-ms", "1000"]);
        let (lport, rport) = reported(&mut peer, "connected", 1)[0];
        let ended = peer.out.find(DEADLINE, |l| l.starts_with("ended ")).expect("the silent peer's end");
        assert_eq!(ended, format!("ended {lport} ETIMEDOUT"));
        let line = tcpkit.expect_line("the timed-out X", row_of("X", lport, rport));
        assert!(line.starts_with(&row("X", peer.pid, PEER, 4, "127.0.0.1", "127.0.0.1", lport, rport)), "{line:?}");
        let e = ending(&line);
        assert_eq!((e.end.as_str(), e.tx, e.rx), ("timeout", 0, 0), "{line:?}");
        assert!(e.ms.unwrap() >= 1000.0, "{line:?}");
    }

    #[test]
    fn a_connection_from_before_start_has_no_lifespan() {
        let (mut server, mut client, cport) = held_connection();
        let mut tcpkit = start_lifespan(&[]);
        client.release();
        let line = tcpkit.expect_line("the client's X", row_of("X", cport, server.port));
        let e = ending(&line);
        assert_eq!((e.end.as_str(), e.ms), ("close", None), "{line:?}");
        assert_eq!(columns(&line)[columns(&line).len() - 3], "-");
        server.release();
    }

    #[test]
    fn verbose_lifespan_and_failed_columns_line_up_with_the_header() {
        // -N drops NETNS, whose 10-digit inodes overflow bcc's 8 columns (as they do in bcc).
        use std::os::unix::fs::MetadataExt;
        let netns = std::fs::metadata("/proc/self/ns/net").unwrap().ino().to_string();
        let mut tcpkit = start(&["-v", "--failed", "-L", "-N", &netns]);
        let header = tcpkit.header.lines().nth(1).unwrap().to_string();
        assert_eq!(
            header,
            "TYPE         PID    COMM             IP SADDR            DADDR            SPORT  DPORT  \
         ERROR         END     MS         TX         RX        "
        );
        let (server, _client, cport) = exchange(3, 4, 0, "drain", "close");
        let line =
            tcpkit.expect_line("the client's close", |l| l.starts_with("close ") && columns(l)[6] == cport.to_string());
        // Every column starts where its header name does.
        for name in ["SPORT", "DPORT", "ERROR", "END", "MS", "TX", "RX"] {
            let at = header.find(&format!(" {name} ")).or_else(|| header.rfind(&format!(" {name}"))).unwrap() + 1;
            assert_eq!(&line[at - 1..at], " ", "{name} at {at}: {line:?}");
            assert_ne!(&line[at..at + 1], " ", "{name} at {at}: {line:?}");
        }
        drop(server);
    }
}
