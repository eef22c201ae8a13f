//! Text output in bcc's exact columns (design.md §5).
use std::io::{self, Write};
use std::path::Path;

use crate::cli::OutputArgs;
use crate::columns::{ip, left, thousandths, uint, Row, StackText};
use crate::event::{Event, EVENT_ACCEPT, EVENT_CLOSE};
use crate::format::{type_names, Clock, Format};
use crate::identity::{CgroupCache, Identity, SHORT_ID};

/// The leading time columns: -T wall clock (HH:MM:SS), then -t time since the first event, in seconds
/// (`TIME(s)`, 3 decimals) or, as tcptracer -v prints it, in nanoseconds (`TIME(ns)`).
struct TimeColumns {
    time: bool,
    timestamp: bool,
    nanoseconds: bool,
    clock: Clock,
}

/// -U: a UID column (`%-6s`, as libbpf-tools print it), right before PID.
fn uid_header(print_uid: bool, w: &mut impl Write) -> io::Result<()> {
    if print_uid {
        write!(w, "{:<6} ", "UID")?;
    }
    Ok(())
}

fn uid_column(print_uid: bool, e: &Event, w: &mut impl Write) -> io::Result<()> {
    if print_uid {
        left(w, uint(e.task.uid.into()).as_str(), 6)?;
        w.write_all(b" ")?;
    }
    Ok(())
}

/// -C: the last column, CONTAINER (the container's names, else its short ID, else the systemd unit, else
/// `-`), named through the cgroup cache, which answers a known id without allocating. Wider text (a long
/// pod or unit name) is written whole: nothing comes after it to misalign.
struct ContainerColumn(Option<CgroupCache>);

impl ContainerColumn {
    fn new(args: &OutputArgs, host_root: &Path) -> Self {
        ContainerColumn(args.print_container.then(|| CgroupCache::new(host_root)))
    }

    fn header(&self, lead: &str, w: &mut impl Write) -> io::Result<()> {
        match self.0 {
            Some(_) => write!(w, "{lead}{:<SHORT_ID$}", "CONTAINER"),
            None => Ok(()),
        }
    }

    fn learn(&mut self, id: u64, path: &str) {
        if let Some(cache) = &mut self.0 {
            cache.learn(id, path);
        }
    }

    fn forget(&mut self, id: u64) {
        if let Some(cache) = &mut self.0 {
            cache.removed(id);
        }
    }

    fn cell<'a, W: Write>(&mut self, row: Row<'a, W>, cgroup_id: u64) -> Row<'a, W> {
        match &mut self.0 {
            Some(cache) => row.left(cache.lookup(cgroup_id).map_or("-", Identity::column), SHORT_ID),
            None => row,
        }
    }
}

impl TimeColumns {
    fn new(args: &OutputArgs, nanoseconds: bool) -> Self {
        TimeColumns { time: args.time, timestamp: args.timestamp, nanoseconds, clock: Clock::new() }
    }

    fn header(&self, w: &mut impl Write) -> io::Result<()> {
        if self.time {
            write!(w, "{:<9}", "TIME")?;
        }
        match (self.timestamp, self.nanoseconds) {
            (true, false) => write!(w, "{:<9}", "TIME(s)"),
            (true, true) => write!(w, "{:<14}", "TIME(ns)"),
            (false, _) => Ok(()),
        }
    }

    fn event(&mut self, ts_ns: u64, w: &mut impl Write) -> io::Result<()> {
        if self.time {
            left(w, self.clock.hms(ts_ns), 9)?;
        }
        if self.timestamp {
            let since = self.clock.since_first_ns(ts_ns);
            if self.nanoseconds {
                left(w, uint(since).as_str(), 14)?;
            } else {
                // Seconds with three decimals, rounded to the nearest millisecond.
                let ms = (since + 500_000) / 1_000_000;
                left(w, thousandths(ms / 1000, ms % 1000).as_str(), 9)?;
            }
        }
        Ok(())
    }
}

/// -S: how good each connection was. The tracer's three columns mean what each type's record carries:
/// LAT_MS the handshake (C, F), the wait in the accept queue (A) or the smoothed RTT (X); RETRANS the SYNs
/// (C, F) or segments (X) sent again; BACKLOG the listener's queue/limit at an accept (A). `accept` has only
/// A lines, so it names its two for what they are: QUEUE_MS and BACKLOG.
const LAT_WIDTH: usize = 10;
const RETRANS_WIDTH: usize = 7;
const BACKLOG_WIDTH: usize = 11;

/// `len/max`, the listener's accept queue at an accept, or `-` when unknown.
fn backlog_text(e: &Event) -> StackText<24> {
    let mut text = StackText::new();
    let _ = match e.backlog() {
        Some((len, max)) => std::fmt::Write::write_fmt(&mut text, format_args!("{len}/{max}")),
        None => std::fmt::Write::write_str(&mut text, "-"),
    };
    text
}

/// A count, or `-` when unknown.
fn count_text(n: Option<u32>) -> StackText<20> {
    match n {
        Some(n) => uint(n.into()),
        None => {
            let mut text = StackText::new();
            let _ = std::fmt::Write::write_str(&mut text, "-");
            text
        }
    }
}

/// bcc tcpaccept: `[TIME ][TIME(s) ]PID COMM IP RADDR RPORT LADDR LPORT`, and -S's QUEUE_MS BACKLOG.
pub struct AcceptText {
    times: TimeColumns,
    print_uid: bool,
    stats: bool,
    container: ContainerColumn,
}

impl AcceptText {
    pub fn new(args: &OutputArgs, host_root: &Path) -> Self {
        AcceptText {
            times: TimeColumns::new(args, false),
            print_uid: args.print_uid,
            stats: args.stats,
            container: ContainerColumn::new(args, host_root),
        }
    }
}

impl Format for AcceptText {
    fn cgroup_made(&mut self, id: u64, path: &str) {
        self.container.learn(id, path);
    }

    fn cgroup_removed(&mut self, id: u64) {
        self.container.forget(id);
    }

    fn header(&mut self, w: &mut impl Write) -> io::Result<()> {
        self.times.header(w)?;
        uid_header(self.print_uid, w)?;
        write!(
            w,
            "{:<7} {:<12} {:<2} {:<16} {:<5} {:<16} {:<5}",
            "PID", "COMM", "IP", "RADDR", "RPORT", "LADDR", "LPORT"
        )?;
        if self.stats {
            write!(w, " {:<LAT_WIDTH$} {:<BACKLOG_WIDTH$}", "QUEUE_MS", "BACKLOG")?;
        }
        self.container.header(" ", w)?;
        writeln!(w)
    }

    fn event(&mut self, e: &Event, w: &mut impl Write) -> io::Result<()> {
        self.times.event(e.ts_ns, w)?;
        uid_column(self.print_uid, e, w)?;
        // "{:<7} {:<12.12} {:<2} {:<16} {:<5} {:<16} {:<5}"
        let row = Row::new(w)
            .left(uint(e.pid().into()).as_str(), 7)
            .cut(&e.comm(), 12)
            .left(ip_version(e), 2)
            .left(ip(e.remote_addr(), false).as_str(), 16)
            .left(uint(e.dport.into()).as_str(), 5)
            .left(ip(e.local_addr(), false).as_str(), 16)
            .left(uint(e.sport.into()).as_str(), 5);
        let row = match self.stats {
            true => {
                row.left(milliseconds(e.queue_ns()).as_str(), LAT_WIDTH).left(backlog_text(e).as_str(), BACKLOG_WIDTH)
            }
            false => row,
        };
        self.container.cell(row, e.task.cgroup_id).end()
    }
}

/// bcc tcptracer: a banner, then `T PID COMM IP SADDR DADDR SPORT DPORT` (SADDR/SPORT the local end,
/// IPv6 addresses in brackets); -v spells the type out and adds NETNS unless -N chose one namespace;
/// --failed and -L append their columns.
pub struct TracerText {
    times: TimeColumns,
    columns: TracerColumns,
    print_uid: bool,
    stats: bool,
    container: ContainerColumn,
}

/// The tracer's layout choices beyond the time and UID columns.
#[derive(Clone, Copy, Debug, Default)]
pub struct TracerColumns {
    /// -v: type words, and NETNS when `netns`
    pub verbose: bool,
    /// No -N: -v shows the NETNS column
    pub netns: bool,
    /// --failed: an ERROR column
    pub error: bool,
    /// -L: END, MS, TX and RX columns
    pub lifespan: bool,
}

impl TracerText {
    pub fn new(args: &OutputArgs, columns: TracerColumns, host_root: &Path) -> Self {
        let columns = TracerColumns { netns: columns.verbose && columns.netns, ..columns };
        TracerText {
            times: TimeColumns::new(args, columns.verbose),
            columns,
            print_uid: args.print_uid,
            stats: args.stats,
            container: ContainerColumn::new(args, host_root),
        }
    }

    /// The header of the appended columns. bcc's -v header pads DPORT to 7 where its rows pad to 6 and a
    /// separator: there the first appended name needs no leading space.
    fn tail_header(&self, w: &mut impl Write) -> io::Result<()> {
        let mut lead = if self.columns.verbose && !self.columns.netns { "" } else { " " };
        if self.columns.error {
            write!(w, "{lead}{:<ERROR_WIDTH$}", "ERROR")?;
            lead = " ";
        }
        if self.columns.lifespan {
            write!(w, "{lead}{:<END_WIDTH$} {:<MS_WIDTH$} {:<BYTES_WIDTH$} {:<BYTES_WIDTH$}", "END", "MS", "TX", "RX")?;
            lead = " ";
        }
        if self.stats {
            write!(w, "{lead}{:<LAT_WIDTH$} {:<RETRANS_WIDTH$} {:<BACKLOG_WIDTH$}", "LAT_MS", "RETRANS", "BACKLOG")?;
            lead = " ";
        }
        self.container.header(lead, w)
    }

    /// The appended columns of one row: `-` where a column does not apply to the event's type.
    fn tail<'a, W: Write>(&mut self, row: Row<'a, W>, e: &Event) -> Row<'a, W> {
        let mut row = row;
        if self.columns.error {
            row = match e.error_name() {
                Some(name) => row.left(name.as_str(), ERROR_WIDTH),
                None => row.left("-", ERROR_WIDTH),
            };
        }
        if self.columns.lifespan {
            row = match e.end_name() {
                Some(end) => row
                    .left(end, END_WIDTH)
                    .left(milliseconds(e.duration()).as_str(), MS_WIDTH)
                    .left(uint(e.bytes_sent).as_str(), BYTES_WIDTH)
                    .left(uint(e.bytes_received).as_str(), BYTES_WIDTH),
                None => row.left("-", END_WIDTH).left("-", MS_WIDTH).left("-", BYTES_WIDTH).left("-", BYTES_WIDTH),
            };
        }
        if self.stats {
            let transfer = e.transfer();
            let (latency_ns, retransmits) = match e.r#type {
                EVENT_ACCEPT => (e.queue_ns(), None),
                EVENT_CLOSE => (transfer.map(|t| u64::from(t.rtt_us) * 1000), transfer.map(|t| t.retransmits)),
                _ => (e.handshake_ns(), e.syn_retransmits()),
            };
            row = row
                .left(milliseconds(latency_ns).as_str(), LAT_WIDTH)
                .left(count_text(retransmits).as_str(), RETRANS_WIDTH)
                .left(backlog_text(e).as_str(), BACKLOG_WIDTH);
        }
        self.container.cell(row, e.task.cgroup_id)
    }
}

/// Widths of the appended tracer columns: the longest errno name a connect gives (EADDRNOTAVAIL), the
/// longest end (timeout), milliseconds to the microsecond, bytes.
const ERROR_WIDTH: usize = 13;
const END_WIDTH: usize = 7;
const MS_WIDTH: usize = 10;
const BYTES_WIDTH: usize = 10;

/// A duration in milliseconds with three decimals (microseconds, truncated), or `-` when unknown.
fn milliseconds(duration_ns: Option<u64>) -> StackText<32> {
    match duration_ns {
        Some(ns) => thousandths(ns / 1_000_000, ns / 1000 % 1000),
        None => {
            let mut text = StackText::new();
            let _ = std::fmt::Write::write_str(&mut text, "-");
            text
        }
    }
}

fn ip_version(e: &Event) -> &'static str {
    if e.ip_version() == 4 {
        "4"
    } else {
        "6"
    }
}

impl Format for TracerText {
    fn cgroup_made(&mut self, id: u64, path: &str) {
        self.container.learn(id, path);
    }

    fn cgroup_removed(&mut self, id: u64) {
        self.container.forget(id);
    }

    fn header(&mut self, w: &mut impl Write) -> io::Result<()> {
        writeln!(w, "Tracing TCP established connections. Ctrl-C to end.")?;
        self.times.header(w)?;
        if self.columns.verbose {
            write!(w, "{:<12} ", "TYPE")?;
            uid_header(self.print_uid, w)?;
            write!(
                w,
                "{:<6} {:<16} {:<2} {:<16} {:<16} {:<6} {:<7}",
                "PID", "COMM", "IP", "SADDR", "DADDR", "SPORT", "DPORT"
            )?;
            if self.columns.netns {
                write!(w, "{:<8}", "NETNS")?;
            }
        } else {
            write!(w, "{:<2} ", "T")?;
            uid_header(self.print_uid, w)?;
            write!(
                w,
                "{:<6} {:<16} {:<2} {:<16} {:<16} {:<6} {:<6}",
                "PID", "COMM", "IP", "SADDR", "DADDR", "SPORT", "DPORT"
            )?;
        }
        self.tail_header(w)?;
        writeln!(w)
    }

    fn event(&mut self, e: &Event, w: &mut impl Write) -> io::Result<()> {
        self.times.event(e.ts_ns, w)?;
        let (letter, word) = type_names(e.r#type);
        if self.columns.verbose {
            left(w, word, 12)?;
        } else {
            left(w, letter, 2)?;
        }
        w.write_all(b" ")?;
        uid_column(self.print_uid, e, w)?;
        // "{:<6} {:<16} {:<2} {:<16} {:<16} {:<6} {:<6}[ {:<8}]", IPv6 addresses in brackets
        let row = Row::new(w)
            .left(uint(e.pid().into()).as_str(), 6)
            .left(&e.comm(), 16)
            .left(ip_version(e), 2)
            .left(ip(e.local_addr(), true).as_str(), 16)
            .left(ip(e.remote_addr(), true).as_str(), 16)
            .left(uint(e.sport.into()).as_str(), 6)
            .left(uint(e.dport.into()).as_str(), 6);
        let row = match self.columns.netns {
            true => row.left(uint(e.netns.into()).as_str(), 8),
            false => row,
        };
        self.tail(row, e).end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::sample_event as sample;

    fn render(f: &mut AcceptText, events: &[Event]) -> String {
        let mut out = Vec::new();
        f.header(&mut out).unwrap();
        for e in events {
            f.event(e, &mut out).unwrap();
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn matches_bcc_tcpaccept_columns() {
        let text = render(&mut AcceptText::new(&OutputArgs::default(), Path::new("/")), &[sample()]);
        assert_eq!(
            text,
            "PID     COMM         IP RADDR            RPORT LADDR            LPORT\n\
             1234    a-long-serve 4  127.0.0.2        51000 127.0.0.1        80   \n"
        );
    }

    #[test]
    fn timestamp_counts_from_the_first_event() {
        let mut later = sample();
        later.ts_ns += 1_234_500_000;
        let args = OutputArgs { timestamp: true, ..Default::default() };
        let text = render(&mut AcceptText::new(&args, Path::new("/")), &[sample(), later]);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("TIME(s)  PID     COMM"));
        assert!(lines[1].starts_with("0.000    1234    "));
        assert!(lines[2].starts_with("1.234    1234    ") || lines[2].starts_with("1.235    1234    "));
    }
}
