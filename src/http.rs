//! The HTTP side of `tcpkit metrics`: a small, single-threaded, non-blocking HTTP/1.x server for Prometheus.
//!
//! It runs inside tcpkit's event loop, so it must never block it: every socket is non-blocking, each client is a
//! small state machine (reading its request head, then writing its response) advanced by `Server::serve`, and
//! hostile clients cost a bounded slot, a bounded buffer and a bounded time. Every response closes its
//! connection, the simplest correct HTTP/1.x and one Prometheus copes with.
//!
//! Routes: `GET`/`HEAD /metrics` (query string ignored) is the scrape; `/` is a one-line landing page linking
//! to it, as Prometheus exporters serve; anything else is 404. A GET carrying a body is answered as if it had
//! none; the body is discarded (boundedly) before the close.
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::error::{Context, Error, Result};

/// Prometheus HA pairs, a few curls and an agent fit many times over; more is an attack or a leak.
const MAX_CLIENTS: usize = 32;
/// Half the slots per round: a client accepted this round cannot be pushed out by later arrivals of the same
/// round before it is read again, so a flood cannot starve a real scraper of its one read.
const ACCEPTS_PER_ROUND: usize = MAX_CLIENTS / 2;
/// How many rounds one `serve` may run past its `wait` while connections keep coming: enough to empty the
/// kernel's backlog (std listens with 128), so that a scraper queued behind a flood waits one call, not many.
const ROUNDS_AT_MOST: usize = 128 / ACCEPTS_PER_ROUND;
/// Prometheus's request head is a few hundred bytes; 8 KiB is what common servers allow.
const HEAD_LIMIT: usize = 8 * 1024;
/// A real client sends its request right after connecting; one that dribbles it (slowloris) loses its slot.
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// Prometheus's default scrape_timeout: a reader slower than that has given up anyway.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// What may be read and thrown away before a close, so that unread request bytes do not make the kernel answer
/// with a reset that destroys the response still in flight.
const DRAIN_LIMIT: u64 = 64 * 1024;

const LANDING: &[u8] = b"<html><head><title>tcpkit</title></head>\
<body><h1>tcpkit</h1><p><a href=\"/metrics\">Metrics</a></p></body></html>\n";

/// What a scrape asked for: the exposition format, from the Accept header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exposition {
    Prometheus004,
    OpenMetrics100,
}

impl Exposition {
    pub fn content_type(self) -> &'static str {
        match self {
            Exposition::Prometheus004 => "text/plain; version=0.0.4; charset=utf-8",
            Exposition::OpenMetrics100 => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }

    /// OpenMetrics when any media range names it with a q above 0 (Prometheus 2.x lists it first); the
    /// Prometheus text format otherwise, which every scraper understands.
    fn from_accept(accept: &str) -> Self {
        let wants_openmetrics = |range: &str| {
            let mut parts = range.split(';').map(str::trim);
            let q = parts.clone().skip(1).find_map(|p| p.strip_prefix("q=").or_else(|| p.strip_prefix("Q=")));
            parts.next().is_some_and(|media| media.eq_ignore_ascii_case("application/openmetrics-text"))
                && q.is_none_or(|q| q.parse::<f32>().is_ok_and(|q| q > 0.0))
        };
        if accept.split(',').any(wants_openmetrics) {
            Exposition::OpenMetrics100
        } else {
            Exposition::Prometheus004
        }
    }
}

pub struct Server {
    listener: TcpListener,
    addr: SocketAddr,
    clients: Vec<Client>,
    /// HEAD_TIMEOUT, but a field so that tests need not wait seconds.
    head_timeout: Duration,
}

impl Server {
    /// Binds now (before tcpkit loads BPF, so a bad address fails fast). addr like "127.0.0.1:9999",
    /// "[::1]:9999", "0.0.0.0:9999", "[::]:9999"; names are refused, so what is bound is what was written.
    pub fn bind(addr: &str) -> Result<Server> {
        let wanted: SocketAddr = addr.parse().map_err(|_| {
            Error::usage(format!(
                "invalid --listen address '{addr}': expected ADDRESS:PORT, e.g. 0.0.0.0:10070 or [::]:10070"
            ))
        })?;
        let listener = TcpListener::bind(wanted).map_err(|e| bind_error(wanted, e))?;
        listener.set_nonblocking(true).context(|| format!("cannot make the listener on {wanted} non-blocking"))?;
        let addr = listener.local_addr().context(|| format!("cannot read the address bound for {wanted}"))?;
        Ok(Server { listener, addr, clients: Vec::new(), head_timeout: HEAD_TIMEOUT })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Accepts, reads and answers without blocking; returns after at most `wait` (Duration::ZERO: just what is
    /// ready now). `scrape` is called once per valid GET or HEAD of /metrics and returns the body (HEAD needs
    /// its length).
    pub fn serve(&mut self, wait: Duration, mut scrape: impl FnMut(Exposition) -> Vec<u8>) {
        // Capped, as Instant + Duration::MAX would panic.
        let end = Instant::now() + wait.min(Duration::from_secs(3600));
        for round in 1.. {
            let more_waiting = self.round(&mut scrape);
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                if more_waiting && round < ROUNDS_AT_MOST {
                    continue;
                }
                return;
            }
            // Rounded up: a timeout truncated to 0 ms would spin until the end.
            let millis = u16::try_from(left.as_micros().div_ceil(1000)).unwrap_or(u16::MAX);
            let mut fds = Vec::with_capacity(self.clients.len() + 1);
            fds.push(PollFd::new(self.listener.as_fd(), PollFlags::POLLIN));
            for client in &self.clients {
                let wanted = if let Phase::Writing(..) = client.phase { PollFlags::POLLOUT } else { PollFlags::POLLIN };
                fds.push(PollFd::new(client.stream.as_fd(), wanted));
            }
            // EINTR and the rest alike: the next round finds out what is ready, and `end` bounds the loop.
            let _ = poll(&mut fds, PollTimeout::from(millis));
        }
    }

    /// Clients already here go first, so that one accepted last round is read before new arrivals can evict it.
    /// True when it stopped accepting with connections perhaps still waiting.
    fn round(&mut self, scrape: &mut dyn FnMut(Exposition) -> Vec<u8>) -> bool {
        let now = Instant::now();
        self.clients.retain_mut(|c| c.advance(now, scrape));
        for _ in 0..ACCEPTS_PER_ROUND {
            let stream = match self.listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // WouldBlock, or out of descriptors: try again next call.
                Err(_) => return false,
            };
            // Dropping the stream refuses it: a full house of clients that did send a request keeps its slots.
            if stream.set_nonblocking(true).is_err() || (self.clients.len() >= MAX_CLIENTS && !self.evict_stalled()) {
                continue;
            }
            let mut client = Client { stream, deadline: now + self.head_timeout, phase: Phase::Reading(Vec::new()) };
            // Most clients send the request with the connection: answer them now, not a round later.
            if client.advance(now, scrape) {
                self.clients.push(client);
            }
        }
        true
    }

    /// The slowloris defence: drops the client that has had longest to send its request head and still has not.
    fn evict_stalled(&mut self) -> bool {
        let oldest = (self.clients.iter().enumerate())
            .filter(|(_, c)| matches!(c.phase, Phase::Reading(_)))
            .min_by_key(|(_, c)| c.deadline)
            .map(|(i, _)| i);
        let Some(i) = oldest else { return false };
        self.clients.swap_remove(i);
        true
    }
}

fn bind_error(addr: SocketAddr, e: io::Error) -> Error {
    let fix = match e.kind() {
        io::ErrorKind::AddrInUse => ": another program listens there; choose another --listen port",
        io::ErrorKind::PermissionDenied => {
            ": use a --listen port above 1023, or run as root or with CAP_NET_BIND_SERVICE"
        }
        io::ErrorKind::AddrNotAvailable => ": that address is not this host's; use 0.0.0.0 or [::] for all of them",
        _ => "",
    };
    Error::runtime(format!("cannot listen on {addr}: {e}{fix}"))
}

struct Client {
    stream: TcpStream,
    /// While reading, accept time + head_timeout: the earliest is the oldest client.
    deadline: Instant,
    phase: Phase,
}

enum Phase {
    /// The request head so far, at most HEAD_LIMIT + 1 bytes.
    Reading(Vec<u8>),
    /// The whole response and how much of it the kernel has taken.
    Writing(Vec<u8>, usize),
}

impl Client {
    /// Does what the socket allows now; false when the client is done with (dropping it closes it).
    fn advance(&mut self, now: Instant, scrape: &mut dyn FnMut(Exposition) -> Vec<u8>) -> bool {
        if now >= self.deadline {
            return false;
        }
        if let Phase::Reading(head) = &mut self.phase {
            let response = match read_head(&mut self.stream, head) {
                Ok(true) => respond(head, scrape),
                Ok(false) => return true,
                Err(_) => return false,
            };
            self.phase = Phase::Writing(response, 0);
            self.deadline = now + WRITE_TIMEOUT;
        }
        let Phase::Writing(response, sent) = &mut self.phase else { return true };
        while *sent < response.len() {
            match self.stream.write(&response[*sent..]) {
                Ok(0) => return false,
                Ok(n) => *sent += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(_) => return false,
            }
        }
        drain(&mut self.stream);
        false
    }
}

/// Reads what has arrived; true once there is something to answer (a whole head, or one that cannot become
/// valid), Err when the client is gone.
fn read_head(stream: &mut TcpStream, head: &mut Vec<u8>) -> io::Result<bool> {
    let mut chunk = [0u8; 4096];
    loop {
        let room = (HEAD_LIMIT + 1 - head.len()).min(chunk.len());
        match stream.read(&mut chunk[..room]) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => head.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) => return Err(e),
        }
        // A TLS hello or binary junk never ends its head: answer at once rather than at the deadline.
        if head_end(head).is_some() || head.len() > HEAD_LIMIT || !head[0].is_ascii_uppercase() {
            return Ok(true);
        }
    }
}

/// Where the head ends: the first empty line, LF-only line ends tolerated as RFC 9112 allows.
fn head_end(buf: &[u8]) -> Option<usize> {
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    lf.into_iter().chain(crlf).min()
}

/// The whole response to what `read_head` collected; a HEAD request gets the same without the body.
fn respond(buf: &[u8], scrape: &mut dyn FnMut(Exposition) -> Vec<u8>) -> Vec<u8> {
    let (status, content_type, body) = answer(buf, scrape);
    let allow = if status.starts_with("405") { "Allow: GET, HEAD\r\n" } else { "" };
    let length = body.len();
    let head = format!("HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {length}\r\n");
    let mut out = format!("{head}{allow}Connection: close\r\n\r\n").into_bytes();
    if !buf.starts_with(b"HEAD ") {
        out.extend_from_slice(&body);
    }
    out
}

/// Status line, content type and body.
type Answer = (&'static str, &'static str, Vec<u8>);

fn answer(buf: &[u8], scrape: &mut dyn FnMut(Exposition) -> Vec<u8>) -> Answer {
    let Some(end) = head_end(buf) else {
        return failure(if buf.len() > HEAD_LIMIT { "431 Request Header Fields Too Large" } else { "400 Bad Request" });
    };
    let Some((method, target, exposition)) = parse_head(&buf[..end]) else { return failure("400 Bad Request") };
    if method != "GET" && method != "HEAD" {
        return failure("405 Method Not Allowed");
    }
    match target.split('?').next() {
        Some("/metrics") => ("200 OK", exposition.content_type(), scrape(exposition)),
        Some("/") => ("200 OK", "text/html; charset=utf-8", LANDING.to_vec()),
        _ => failure("404 Not Found"),
    }
}

fn failure(status: &'static str) -> Answer {
    (status, "text/plain; charset=utf-8", format!("{status}\n").into_bytes())
}

/// Method, request target and wanted exposition, or None when this is not an HTTP/1.x request head.
fn parse_head(head: &[u8]) -> Option<(&str, &str, Exposition)> {
    let mut lines = std::str::from_utf8(head).ok()?.lines();
    let mut words = lines.next()?.split(' ');
    let (method, target, version) = (words.next()?, words.next()?, words.next()?);
    let token = |w: &str| !w.is_empty() && w.bytes().all(|b| b.is_ascii_graphic());
    if words.next().is_some() || !token(method) || !token(target) || !matches!(version, "HTTP/1.0" | "HTTP/1.1") {
        return None;
    }
    let accept = lines
        .filter_map(|line| line.split_once(':'))
        .filter(|(name, _)| name.eq_ignore_ascii_case("accept"))
        .map(|(_, value)| Exposition::from_accept(value))
        .max_by_key(|e| *e == Exposition::OpenMetrics100);
    Some((method, target, accept.unwrap_or(Exposition::Prometheus004)))
}

/// Throws away what the client sent beyond its head, boundedly, so that the close is a FIN and not a reset.
fn drain(stream: &mut TcpStream) {
    // Stops at WouldBlock, which is io::copy's error; EINTR it retries.
    let _ = io::copy(&mut Read::by_ref(stream).take(DRAIN_LIMIT), &mut io::sink());
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;

    const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
        version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

    fn small(exposition: Exposition) -> Vec<u8> {
        let eof = if exposition == Exposition::OpenMetrics100 { "# EOF\n" } else { "" };
        format!("up 1\n{eof}").into_bytes()
    }

    /// As tcpkit metrics calls `serve`: Duration::ZERO once per pass of its loop.
    const TCPKIT_LOOP: Option<Duration> = Some(Duration::from_millis(50));

    /// Runs `client` on its own thread and drives the server from this one until it is done: waiting in `serve`
    /// (polling), or calling it with ZERO every `period`.
    fn with_client<T: Send + 'static>(
        server: &mut Server,
        scrape: fn(Exposition) -> Vec<u8>,
        period: Option<Duration>,
        client: impl FnOnce(SocketAddr) -> T + Send + 'static,
    ) -> T {
        let addr = server.local_addr();
        let client = thread::spawn(move || client(addr));
        let give_up = Instant::now() + Duration::from_secs(20);
        while !client.is_finished() && Instant::now() < give_up {
            server.serve(if period.is_some() { Duration::ZERO } else { Duration::from_millis(20) }, scrape);
            thread::sleep(period.unwrap_or_default());
        }
        assert!(client.is_finished(), "the client did not finish within 20 s");
        client.join().unwrap()
    }

    /// Everything the server says before it closes (or goes quiet for 5 s).
    fn exchange(addr: SocketAddr, request: &[u8]) -> String {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = stream.write_all(request);
        let mut reply = Vec::new();
        let _ = stream.read_to_end(&mut reply);
        String::from_utf8_lossy(&reply).into_owned()
    }

    fn ask(request: impl Into<Vec<u8>>) -> String {
        let mut server = Server::bind("127.0.0.1:0").unwrap();
        let request = request.into();
        with_client(&mut server, small, None, move |addr| exchange(addr, &request))
    }

    #[test]
    fn metrics_is_prometheus_text_by_default_over_ipv4_and_ipv6() {
        for listen in ["127.0.0.1:0", "[::1]:0"] {
            let mut server = Server::bind(listen).unwrap();
            let reply = with_client(&mut server, small, None, |addr| {
                exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            });
            assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
            assert!(reply.contains("\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"), "{reply}");
            assert!(reply.contains("\r\nContent-Length: 5\r\nConnection: close\r\n\r\nup 1\n"), "{reply}");
        }
    }

    #[test]
    fn metrics_is_openmetrics_when_prometheus_asks_for_it() {
        let reply = ask(format!("GET /metrics?debug=1 HTTP/1.1\r\nHost: x\r\naccept: {PROMETHEUS_ACCEPT}\r\n\r\n"));
        assert!(reply.contains("\r\nContent-Type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\n"));
        assert!(reply.starts_with("HTTP/1.1 200 OK\r\n") && reply.ends_with("\r\n\r\nup 1\n# EOF\n"), "{reply}");
    }

    #[test]
    fn accept_header_picks_openmetrics_only_when_wanted() {
        use Exposition::*;
        assert_eq!(Exposition::from_accept(PROMETHEUS_ACCEPT), OpenMetrics100);
        assert_eq!(Exposition::from_accept(" Application/OpenMetrics-Text ; Q=0.5"), OpenMetrics100);
        for accept in ["application/openmetrics-text;q=0,text/plain", "application/openmetrics-text;q=x", "*/*", ""] {
            assert_eq!(Exposition::from_accept(accept), Prometheus004, "{accept}");
        }
    }

    #[test]
    fn head_gives_the_length_without_the_body() {
        let reply = ask("HEAD /metrics HTTP/1.1\r\n\r\n");
        assert!(
            reply.starts_with("HTTP/1.1 200 OK\r\n")
                && reply.ends_with("Content-Length: 5\r\nConnection: close\r\n\r\n")
        );
        assert!(ask("HEAD /nope HTTP/1.1\r\n\r\n").ends_with("Content-Length: 14\r\nConnection: close\r\n\r\n"));
    }

    #[test]
    fn the_root_links_to_metrics() {
        let reply = ask("GET / HTTP/1.1\r\n\r\n");
        assert!(reply.starts_with("HTTP/1.1 200 OK\r\nContent-Type: text/html"), "{reply}");
        assert!(reply.contains("href=\"/metrics\""), "{reply}");
    }

    #[test]
    fn requests_that_cannot_be_served_get_the_status_that_says_why() {
        let big_head = format!("GET /metrics HTTP/1.1\r\nX-Filler: {}\r\n\r\n", "a".repeat(10 * 1024));
        let cases: [(&[u8], &str); 12] = [
            (b"GET /metric HTTP/1.1\r\n\r\n", "404 Not Found"),
            (b"GET /metrics/x HTTP/1.0\n\n", "404 Not Found"),
            (b"GET * HTTP/1.1\r\n\r\n", "404 Not Found"),
            (b"POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc", "405 Method Not Allowed"),
            (b"DELETE /metrics HTTP/1.1\r\n\r\n", "405 Method Not Allowed"),
            (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", "400 Bad Request"), // a TLS hello: no line end ever
            (b"hello\r\n\r\n", "400 Bad Request"),
            (b"GET /metrics\r\n\r\n", "400 Bad Request"),
            (b"GET /metrics HTTP/2.0\r\n\r\n", "400 Bad Request"),
            (b"GET  /metrics HTTP/1.1\r\n\r\n", "400 Bad Request"),
            (b"GET /metrics HTTP/1.1\r\nX: \xff\r\n\r\n", "400 Bad Request"),
            (big_head.as_bytes(), "431 Request Header Fields Too Large"),
        ];
        for (request, status) in cases {
            let reply = ask(request);
            assert!(reply.starts_with(&format!("HTTP/1.1 {status}\r\n")), "{request:?}: {reply}");
            assert!(reply.ends_with(&format!("\r\n\r\n{status}\n")), "{request:?}: {reply}");
            assert_eq!(reply.contains("\r\nAllow: GET, HEAD\r\n"), status.starts_with("405"), "{reply}");
        }
    }

    #[test]
    fn stalled_connections_do_not_delay_a_scrape() {
        for period in [None, TCPKIT_LOOP] {
            let mut server = Server::bind("127.0.0.1:0").unwrap();
            let (reply, took) = with_client(&mut server, small, period, |addr| {
                let mut stalled: Vec<TcpStream> = (0..64).map(|_| TcpStream::connect(addr).unwrap()).collect();
                for stream in &mut stalled {
                    let _ = stream.write_all(b"G");
                }
                let start = Instant::now();
                (exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n"), start.elapsed())
            });
            assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{period:?}: {reply}");
            assert!(took < Duration::from_secs(1), "{period:?}: answered after {took:?}");
        }
    }

    #[test]
    fn a_client_that_never_finishes_its_head_is_closed_at_its_deadline() {
        let mut server = Server::bind("127.0.0.1:0").unwrap();
        server.head_timeout = Duration::from_millis(200);
        let (reply, took) = with_client(&mut server, small, None, |addr| {
            let start = Instant::now();
            (exchange(addr, b"GET /met"), start.elapsed())
        });
        assert!(reply.is_empty(), "{reply}");
        assert!(took >= Duration::from_millis(150) && took < Duration::from_secs(2), "closed after {took:?}");
    }

    #[test]
    fn a_client_that_does_not_read_a_large_response_does_not_block_another() {
        fn large(_: Exposition) -> Vec<u8> {
            vec![b'x'; 8 << 20]
        }
        let mut server = Server::bind("127.0.0.1:0").unwrap();
        let (idle, reply, took) = with_client(&mut server, large, None, |addr| {
            let mut idle = TcpStream::connect(addr).unwrap();
            idle.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
            idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            idle.peek(&mut [0]).unwrap(); // the server is writing to it, and it will never read
            let start = Instant::now();
            (idle, exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n"), start.elapsed())
        });
        assert!(reply.starts_with("HTTP/1.1 200 OK\r\n") && reply.ends_with(&"x".repeat(8 << 20)));
        assert!(took < Duration::from_secs(5), "answered after {took:?}");
        server.serve(Duration::ZERO, large);
        assert!(matches!(server.clients[..], [Client { phase: Phase::Writing(..), .. }]), "the idle one was answered");
        drop(idle);
    }

    #[test]
    fn malformed_listen_addresses_are_usage_errors() {
        for listen in ["", "9990", "localhost:9990", "127.0.0.1", "::1:9990", "127.0.0.1:99999", "[::1]"] {
            match Server::bind(listen) {
                Err(Error::Usage(msg)) => assert!(msg.contains(&format!("'{listen}'")), "{msg}"),
                Err(e) => panic!("{listen}: not a usage error: {e}"),
                Ok(_) => panic!("{listen}: bound"),
            }
        }
    }

    #[test]
    fn a_busy_address_is_a_runtime_error_that_names_it() {
        let first = Server::bind("127.0.0.1:0").unwrap();
        let listen = first.local_addr().to_string();
        match Server::bind(&listen) {
            Err(Error::Runtime(msg)) => assert!(msg.contains(&listen) && msg.contains("--listen port"), "{msg}"),
            Err(e) => panic!("not a runtime error: {e}"),
            Ok(_) => panic!("bound {listen} twice"),
        }
    }
}
