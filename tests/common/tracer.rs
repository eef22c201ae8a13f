//! Helpers for the tests of `tcpkit tracer`: starting it, its rows in bcc's format, and predicates that find
//! one connection's lines.
use std::net::SocketAddr;

use super::*;

pub const PEER: &str = "tcpkit-peer";
pub type LinePredicate = dyn Fn(&str) -> bool;

pub const BANNER: &str = "Tracing TCP established connections. Ctrl-C to end.";

pub fn start(args: &[&str]) -> Tcpkit {
    let mut all = vec!["tracer"];
    all.extend_from_slice(args);
    let tcpkit = Tcpkit::start_with_header_lines(&all, 2);
    assert!(tcpkit.header.starts_with(&format!("{BANNER}\n")), "no banner: {:?}", tcpkit.header);
    tcpkit
}

/// bcc tcptracer's row: `%-2s %-6d %-16s %-2d %-16s %-16s %-6d %-6d`.
#[allow(clippy::too_many_arguments)]
pub fn row(kind: &str, pid: u32, comm: &str, ip: u8, saddr: &str, daddr: &str, sport: u16, dport: u16) -> String {
    format!("{kind:<2} {pid:<6} {comm:<16} {ip:<2} {saddr:<16} {daddr:<16} {sport:<6} {dport:<6}")
}

/// A default-layout line of type `kind` for the socket with local port `sport` and remote port `dport`.
pub fn event(kind: &'static str, sport: u16, dport: u16) -> impl Fn(&str) -> bool {
    move |l: &str| {
        col_from_end(l, 7) == kind && col_from_end(l, 1) == sport.to_string() && col_from_end(l, 0) == dport.to_string()
    }
}

/// Any line about the socket with local port `sport` and remote port `dport`, in any layout.
pub fn about(sport: u16, dport: u16) -> impl Fn(&str) -> bool {
    move |l: &str| {
        let cols: Vec<&str> = l.split_whitespace().collect();
        cols.windows(2).any(|w| w[0] == sport.to_string() && w[1] == dport.to_string())
    }
}

/// The ports of the connections a peer reported (`connected L R` / `accepted L R`), as (local, remote).
pub fn reported(peer: &mut Peer, what: &str, n: usize) -> Vec<(u16, u16)> {
    reported_within(peer, what, n, DEADLINE)
}

pub fn reported_within(peer: &mut Peer, what: &str, n: usize, deadline: std::time::Duration) -> Vec<(u16, u16)> {
    let prefix = format!("{what} ");
    while peer.lines_starting(&prefix).len() < n {
        peer.out.find(deadline, |l| l.starts_with(&prefix)).unwrap_or_else(|| panic!("peer: fewer than {n} {what}"));
    }
    peer.lines_starting(&prefix)
        .iter()
        .map(|l| {
            let mut it = l[prefix.len()..].split(' ').map(|p| p.parse::<u16>().unwrap());
            (it.next().unwrap(), it.next().unwrap())
        })
        .collect()
}

/// One connection from a client peer to a server peer, both ending with a plain close().
pub fn one_connection(
    server_global: &[&str],
    server_args: &[&str],
    client_global: &[&str],
    addr: impl Fn(u16) -> SocketAddr,
) -> (Peer, Peer, u16) {
    let mut server = Peer::listen(server_global, server_args);
    let target = addr(server.port).to_string();
    let mut client = Peer::spawn(client_global, "connect", &["--addr", &target]);
    let (cport, _) = reported(&mut client, "connected", 1)[0];
    server.expect_accepted(cport);
    (server, client, cport)
}

/// The columns of a default-layout row (no time columns), whatever columns --failed and -L append.
/// A connection between two peers that hold it open until released, the client having sent 5 bytes:
/// (server, client, client port). For connections made before tcpkit starts.
pub fn held_connection() -> (Peer, Peer, u16) {
    let mut server = Peer::listen(&[], &["--end", "hold"]);
    let target = v4(server.port).to_string();
    let mut client = Peer::spawn(&[], "connect", &["--addr", &target, "--send", "5", "--end", "hold"]);
    let (cport, _) = reported(&mut client, "connected", 1)[0];
    server.expect_accepted(cport);
    (server, client, cport)
}

pub fn columns(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

/// A default-layout line of type `kind` for the socket with local port `sport` and remote port `dport`,
/// counted from the start of the row, so that appended columns do not matter.
pub fn row_of(kind: &'static str, sport: u16, dport: u16) -> impl Fn(&str) -> bool {
    move |l: &str| {
        let c = columns(l);
        c.len() > 7 && c[0] == kind && c[6] == sport.to_string() && c[7] == dport.to_string()
    }
}
