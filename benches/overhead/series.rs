//! One scrape of many series (`--scrape-series N`): what a GET /metrics costs when `tcpkit metrics` holds
//! about N series in its kernel map, and how much memory it takes. Series are keyed by (cgroup, kind,
//! direction, port, code), so N of them need no N workloads: one connection on loopback to each of N/4 ports,
//! each listened on for that connection only, makes four (its connect and its accept, the close of each end).
//! tcpkit labels only the first ports it sees and sums the rest as port="other", so the scrape has fewer
//! series than the kernel: both are reported.
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use nix::unistd::Pid;

use crate::bpf_cost::map_entries;
use crate::scrape::{self, get_metrics};
use crate::watch::{cpu_time_so_far, start_attached, status_kb, stop, Bench, Sub};

/// Scrapes timed, one after the other.
const SCRAPES: usize = 5;
/// Series one port makes: connect (out), accept (in), and a close of each end.
const SERIES_PER_PORT: usize = 4;
/// The ports listened on, one at a time: below the kernel's ephemeral range (32768 and up by default), so no
/// client's port is ever in the way; a port some other program holds is skipped.
const PORTS: std::ops::RangeInclusive<u16> = 20_000..=32_767;
/// The kernel map's room (--max-series): the series asked for and a quarter more, to a power of two, at least
/// 16384 (10,000 series: 16384) and at most what tcpkit takes.
const MIN_MAX_SERIES: usize = 16_384;
const MAX_MAX_SERIES: usize = 1 << 20;
/// The longest the series may take to make (each connection takes well under a millisecond).
const MAKE_LIMIT: Duration = Duration::from_secs(60);
/// How long one connection may take to connect, and to be accepted.
const CONNECTION_LIMIT: Duration = Duration::from_secs(2);
/// The kernel map has all its series once its count stays the same this long (closes end a little later).
const SETTLED: Duration = Duration::from_millis(300);
const SETTLE_LIMIT: Duration = Duration::from_secs(5);
/// Where series are counted in the scrape.
pub(crate) const OPENED: &str = "tcpkit_connections_opened_total";
const DROPPED: &str = "tcpkit_series_dropped_total";

pub(crate) struct ManySeries {
    pub(crate) asked: usize,
    pub(crate) max_series: usize,
    /// Ports connected to, one connection each.
    pub(crate) ports: usize,
    /// Entries of the kernel's series map before the first scrape.
    pub(crate) kernel_series: usize,
    pub(crate) scrapes: Vec<OneScrape>,
    /// tcpkit's peak RSS once attached, once the series were made (before the first scrape), after the last.
    pub(crate) peak_rss_kb: [u64; 3],
    pub(crate) exit: String,
}

pub(crate) struct OneScrape {
    /// From connect to the last byte of the body.
    pub(crate) took: Duration,
    /// tcpkit's CPU meanwhile (user+sys): the scrape's own work, without the wait for tcpkit's loop to come
    /// by (every 50 ms) that `took` includes.
    pub(crate) cpu: Duration,
    pub(crate) bytes: usize,
    pub(crate) sample_lines: usize,
    pub(crate) opened_series: usize,
    /// Events whose series found the kernel map full: none, if --max-series had room.
    pub(crate) dropped: u64,
}

/// None when `asked` is 0.
pub(crate) fn scrape_many(bench: &mut Bench, asked: usize) -> io::Result<Option<ManySeries>> {
    if asked == 0 {
        return Ok(None);
    }
    let max_series = (asked + asked / 4).next_power_of_two().clamp(MIN_MAX_SERIES, MAX_MAX_SERIES);
    eprintln!(
        "overhead: one scrape of about {asked} series, {SCRAPES} times (tcpkit metrics --max-series {max_series})"
    );
    let mut command = bench.tcpkit_command(Sub::Metrics, None);
    command.args(["--max-series", &max_series.to_string()]);
    let (child, stderr) = start_attached(command, &bench.dir.join("scrape-many-series.err"))?;
    let pid = Pid::from_raw(child.id() as i32);
    let measured = measure(pid, &stderr, asked, max_series);
    let exit = stop(pid)?;
    let mut many = measured?;
    many.exit = exit.describe();
    Ok(Some(many))
}

fn measure(pid: Pid, stderr: &str, asked: usize, max_series: usize) -> io::Result<ManySeries> {
    let addr = scrape::served_at(stderr)
        .ok_or_else(|| io::Error::other(format!("tcpkit metrics did not say where it serves: {}", stderr.trim())))?;
    let at_ready = status_kb(pid, "VmHWM:");
    let ports = connect_to_ports(asked.div_ceil(SERIES_PER_PORT))?;
    let kernel_series = settled_entries(pid);
    eprintln!("overhead:   {ports} ports connected to: {kernel_series} series in the kernel");
    let before = status_kb(pid, "VmHWM:");
    let mut scrapes = Vec::with_capacity(SCRAPES);
    for _ in 0..SCRAPES {
        let cpu = cpu_time_so_far(pid);
        let exposition = get_metrics(addr)?;
        let cpu = cpu_time_so_far(pid).saturating_sub(cpu);
        let body = &exposition.body;
        scrapes.push(OneScrape {
            took: exposition.took,
            cpu,
            bytes: body.len(),
            sample_lines: scrape::sample_lines(body),
            opened_series: scrape::series(body, OPENED),
            dropped: scrape::sum(body, DROPPED, &[]),
        });
    }
    let after = status_kb(pid, "VmHWM:");
    Ok(ManySeries {
        asked,
        max_series,
        ports,
        kernel_series,
        scrapes,
        peak_rss_kb: [at_ready, before, after],
        exit: String::new(),
    })
}

/// One connection to each of `count` ports of 127.0.0.1, each listened on only while it connects, accepted
/// and closed at once (the server end first, as the load does). Returns the ports connected to.
fn connect_to_ports(count: usize) -> io::Result<usize> {
    let deadline = Instant::now() + MAKE_LIMIT;
    let mut made = 0;
    for port in PORTS {
        if made == count || Instant::now() >= deadline {
            break;
        }
        // In use by another program (or refused): not ours to take.
        let Ok(listener) = TcpListener::bind((Ipv4Addr::LOCALHOST, port)) else { continue };
        let client = TcpStream::connect_timeout(&SocketAddr::from((Ipv4Addr::LOCALHOST, port)), CONNECTION_LIMIT)?;
        let server = accept_within(&listener, CONNECTION_LIMIT)?;
        drop(server);
        drop(client);
        made += 1;
    }
    if made < count {
        return Err(io::Error::other(format!("connected to {made} ports of the {count} needed")));
    }
    Ok(made)
}

/// On loopback the connection is queued by the time connect() returns; the limit is for the unexpected.
fn accept_within(listener: &TcpListener, limit: Duration) -> io::Result<TcpStream> {
    listener.set_nonblocking(true)?;
    let deadline = Instant::now() + limit;
    loop {
        match listener.accept() {
            Ok((stream, _)) => return Ok(stream),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Entries of tcpkit's series map once their count has stopped growing, or after SETTLE_LIMIT.
fn settled_entries(pid: Pid) -> usize {
    let deadline = Instant::now() + SETTLE_LIMIT;
    let mut entries = map_entries(pid, "series");
    let mut since = Instant::now();
    while Instant::now() < deadline && since.elapsed() < SETTLED {
        thread::sleep(Duration::from_millis(50));
        let now = map_entries(pid, "series");
        if now != entries {
            (entries, since) = (now, Instant::now());
        }
    }
    entries
}
