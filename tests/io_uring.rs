//! Accepts and connects made through io_uring (IORING_OP_ACCEPT, IORING_OP_CONNECT): no accept() or
//! connect() syscall, yet every backend must report them with the submitting process.
mod common;

use common::tracer::*;
use common::*;

const CONNECTIONS: usize = 20;

#[test]
fn io_uring_accepts_are_reported_by_accept_with_the_server() {
    let mut server = Peer::listen(&[], &["--uring", "--count", &CONNECTIONS.to_string()]);
    let mut tcpkit = Tcpkit::start(&["accept", "-p", &server.pid.to_string()]);
    let target = v4(server.port).to_string();
    let mut client = Peer::spawn(&[], "connect", &["--addr", &target, "--count", &CONNECTIONS.to_string()]);
    let ports = reported(&mut client, "connected", CONNECTIONS);
    reported(&mut server, "accepted", CONNECTIONS);
    // The server accepts in the queue's order, which need not be the order of the connects.
    let sport = server.port;
    let wanted: Vec<_> = ports.iter().map(|&(cport, _)| move |l: &str| is_accept_of(l, sport, cport)).collect();
    let preds: Vec<&dyn Fn(&str) -> bool> = wanted.iter().map(|p| p as &dyn Fn(&str) -> bool).collect();
    let lines = tcpkit.expect_all("the io_uring accepts", &preds);
    for (line, (cport, _)) in lines.iter().zip(&ports) {
        assert_eq!(*line, accept_row(server.pid, PEER, 4, "127.0.0.1", *cport, "127.0.0.1", sport));
    }
    let all = tcpkit.stop_and_collect();
    assert_eq!(all.len(), CONNECTIONS, "each io_uring accept once: {all:#?}");
}

#[test]
fn io_uring_accepts_and_connects_are_reported_by_tracer() {
    let mut tcpkit = start(&["--failed"]);
    let mut server = Peer::listen(&[], &["--uring", "--count", "2", "--addr", "[::1]:0"]);
    let target = v6(server.port).to_string();
    let mut client = Peer::spawn(&[], "connect", &["--addr", &target, "--count", "2", "--uring"]);
    let ports = reported(&mut client, "connected", 2);
    let sport = server.port;
    server.expect_accepted_all(&ports.iter().map(|p| p.0).collect::<Vec<_>>());
    for (cport, _) in ports {
        let lines = tcpkit.expect_all("io_uring C and A", &[&row_of("C", cport, sport), &row_of("A", sport, cport)]);
        let addr = "[::1]";
        assert!(lines[0].starts_with(&row("C", client.pid, PEER, 6, addr, addr, cport, sport)), "{lines:?}");
        assert!(lines[1].starts_with(&row("A", server.pid, PEER, 6, addr, addr, sport, cport)), "{lines:?}");
    }
    // A refused io_uring connect is an F line with the submitting process.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let mut refused = Peer::spawn(&[], "connect", &["--addr", &closed.to_string(), "--uring", "--may-fail"]);
    let failure = refused.out.find(DEADLINE, |l| l.starts_with("failed ")).expect("the refused io_uring connect");
    let lport: u16 = failure.split(' ').nth(1).unwrap().parse().unwrap();
    assert!(failure.ends_with(" ECONNREFUSED"), "{failure}");
    let line = tcpkit.expect_line("the refused io_uring connect", row_of("F", lport, closed.port()));
    let expected = row("F", refused.pid, PEER, 4, "127.0.0.1", "127.0.0.1", lport, closed.port());
    assert_eq!(line, format!("{expected} {:<13}", "ECONNREFUSED"));
}
