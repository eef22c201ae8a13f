//! One scrape of `tcpkit metrics` as Prometheus makes it, over loopback: GET /metrics, the whole body read to
//! the close, and the samples of that body (the Prometheus text format, which tcpkit serves to a scraper that
//! does not ask for OpenMetrics) summed by family and labels.
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// What `tcpkit metrics` says on stderr once it listens, before the address it bound.
const SERVING: &str = "tcpkit: serving metrics at http://";
/// The longest a scrape may take, connect to close: Prometheus's default scrape_timeout.
const SCRAPE_LIMIT: Duration = Duration::from_secs(10);
/// The most of a response read: ten thousand series take a few MB.
const RESPONSE_LIMIT: usize = 256 << 20;

/// Where tcpkit serves, from its stderr: "tcpkit: serving metrics at http://127.0.0.1:41234/metrics".
pub(crate) fn served_at(stderr: &str) -> Option<SocketAddr> {
    stderr.lines().find_map(|l| l.strip_prefix(SERVING)?.strip_suffix("/metrics")?.parse().ok())
}

/// One scrape's body, and how long it took from connect to the last byte.
pub(crate) struct Exposition {
    pub(crate) body: String,
    pub(crate) took: Duration,
}

/// GET /metrics, one connection, closed by tcpkit after the body (it answers every request so).
pub(crate) fn get_metrics(addr: SocketAddr) -> io::Result<Exposition> {
    let started = Instant::now();
    let deadline = started + SCRAPE_LIMIT;
    let mut stream = TcpStream::connect_timeout(&addr, SCRAPE_LIMIT)?;
    stream.set_write_timeout(Some(SCRAPE_LIMIT))?;
    stream.write_all(format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes())?;
    let mut response = Vec::new();
    let mut chunk = vec![0u8; 1 << 16];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || response.len() > RESPONSE_LIMIT {
            return Err(io::Error::other(format!(
                "no whole response within {SCRAPE_LIMIT:?} and {RESPONSE_LIMIT} bytes"
            )));
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => response.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let took = started.elapsed();
    let body = body_of(&response).map_err(|why| io::Error::other(format!("GET http://{addr}/metrics: {why}")))?;
    Ok(Exposition { body, took })
}

/// The body of a whole 200 response, as long as its Content-Length says.
fn body_of(response: &[u8]) -> Result<String, String> {
    let end = response.windows(4).position(|w| w == b"\r\n\r\n").ok_or("no end of the response head")?;
    let head = String::from_utf8_lossy(&response[..end]);
    let status = head.lines().next().unwrap_or_default();
    if !status.starts_with("HTTP/1.1 200 ") {
        return Err(format!("answered {status}"));
    }
    let body = &response[end + 4..];
    let length = head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("content-length").then(|| value.trim().parse::<usize>().ok())?
    });
    if length != Some(body.len()) {
        return Err(format!("a body of {} bytes, where Content-Length says {length:?}", body.len()));
    }
    String::from_utf8(body.to_vec()).map_err(|_| "a body that is not UTF-8".into())
}

/// The samples of metric `name` in `body` whose labels include each of `labels` (written as in the body:
/// `direction="in"`), summed.
pub(crate) fn sum(body: &str, name: &str, labels: &[&str]) -> u64 {
    let sum: f64 =
        samples(body, name).filter(|(l, _)| labels.iter().all(|wanted| l.contains(wanted))).map(|(_, v)| v).sum();
    sum.round() as u64
}

/// The series of metric `name` in `body`: its sample lines.
pub(crate) fn series(body: &str, name: &str) -> usize {
    samples(body, name).count()
}

/// Every sample line of every family (a histogram's buckets, sum and count each count).
pub(crate) fn sample_lines(body: &str) -> usize {
    body.lines().filter(|l| !l.is_empty() && !l.starts_with('#')).count()
}

/// The samples of the metric `name` (exactly: not those of `name_bucket`): their labels, between the braces,
/// and their values. `name{a="x",b="y"} 12` or `name 12`.
fn samples<'a>(body: &'a str, name: &'a str) -> impl Iterator<Item = (&'a str, f64)> + 'a {
    body.lines().filter_map(move |line| {
        let rest = line.strip_prefix(name)?;
        let (labels, value) = match rest.strip_prefix('{') {
            Some(rest) => rest.rsplit_once('}')?,
            None => ("", rest.strip_prefix(' ')?),
        };
        Some((labels, value.split_whitespace().next()?.parse().ok()?))
    })
}
