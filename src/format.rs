//! What every output layout shares: the Format trait the reader drives, the clock that turns the kernel's
//! event stamps into wall-clock time, and the names of event types. The layouts themselves are text (bcc's
//! columns) and json; `layout` puts them together, so dependencies run one way: layout -> text, json -> format.
use std::io::{self, Write};

use chrono::{Local, TimeZone};
use nix::time::{clock_gettime, ClockId};

use crate::event::{Event, EVENT_ACCEPT, EVENT_CLOSE, EVENT_CONNECT, EVENT_FAIL};

/// A layout: the lines printed once before events, then one row per event.
pub trait Format {
    fn header(&mut self, w: &mut impl Write) -> io::Result<()>;
    fn event(&mut self, e: &Event, w: &mut impl Write) -> io::Result<()>;
    /// The kernel saw cgroup `id` made at `path` (below the v2 root): a layout that names cgroups learns it
    /// now, for events whose cgroup is gone by the time they are printed.
    fn cgroup_made(&mut self, _id: u64, _path: &str) {}

    /// The kernel saw cgroup `id` removed: a layout that names cgroups may forget it after a while.
    fn cgroup_removed(&mut self, _id: u64) {}

    /// `count` events were lost on a full ring buffer (stderr says so too; text has no record for it).
    fn lost(&mut self, _count: u64, _w: &mut impl Write) -> io::Result<()> {
        Ok(())
    }

    /// Between polls of the ring (every 50 ms at most), never per event: for a layout with work of its own
    /// (metrics answers scrapes), with the kernel's counts of what it could not keep so far.
    fn idle(&mut self, _losses: &Losses) {}
}

/// The kernel's counts of what tcpkit could not keep, each since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Losses {
    /// Events that found the ring buffer full.
    pub events: u64,
    /// Connections whose entry the kernel refused to store in tcpkit's maps (their events may be missing).
    pub unremembered: u64,
    /// The errno (negative) of the last update the kernel refused.
    pub unremembered_error: i64,
    /// Cgroup records that found the ring buffer full: the names of cgroups gone before their events print.
    pub cgroups: u64,
    /// Series the kernel had no room for (metrics: --max-series).
    pub series_dropped: u64,
}

/// Turns the kernel's CLOCK_MONOTONIC event stamps into bcc's time columns.
pub struct Clock {
    first_ns: Option<u64>,
    realtime_minus_monotonic_ns: i128,
    cached_sec: i64,
    cached_hms: [u8; 8],
}

impl Clock {
    pub fn new() -> Self {
        let ns = |id| clock_gettime(id).map(|t| t.tv_sec() as i128 * 1_000_000_000 + t.tv_nsec() as i128).unwrap_or(0);
        let realtime_minus_monotonic_ns = ns(ClockId::CLOCK_REALTIME) - ns(ClockId::CLOCK_MONOTONIC);
        Clock { first_ns: None, realtime_minus_monotonic_ns, cached_sec: i64::MIN, cached_hms: *b"00:00:00" }
    }

    /// The wall clock now, in nanoseconds since the epoch.
    pub fn now_wall_ns() -> i128 {
        clock_gettime(ClockId::CLOCK_REALTIME)
            .map(|t| t.tv_sec() as i128 * 1_000_000_000 + t.tv_nsec() as i128)
            .unwrap_or(0)
    }

    /// Nanoseconds since the first event seen, as bcc's -t counts.
    pub fn since_first_ns(&mut self, ts_ns: u64) -> u64 {
        ts_ns - *self.first_ns.get_or_insert(ts_ns)
    }

    /// Wall-clock time of the event in nanoseconds since the epoch.
    pub fn wall_ns(&self, ts_ns: u64) -> i128 {
        ts_ns as i128 + self.realtime_minus_monotonic_ns
    }

    /// Local HH:MM:SS of the event; formatted once per second, not once per event.
    pub fn hms(&mut self, ts_ns: u64) -> &str {
        let sec = self.wall_ns(ts_ns).div_euclid(1_000_000_000) as i64;
        if sec != self.cached_sec {
            self.cached_sec = sec;
            if let Some(t) = Local.timestamp_opt(sec, 0).single() {
                let text = t.format("%H:%M:%S").to_string();
                self.cached_hms.copy_from_slice(&text.as_bytes()[..8]);
            }
        }
        std::str::from_utf8(&self.cached_hms).unwrap_or("??:??:??")
    }
}

/// bcc's letters and -v words for event types, and F/fail for a failed connect (--failed); U/unknown
/// never comes from tcpkit's programs.
pub fn type_names(kind: u8) -> (&'static str, &'static str) {
    match kind {
        EVENT_CONNECT => ("C", "connect"),
        EVENT_ACCEPT => ("A", "accept"),
        EVENT_CLOSE => ("X", "close"),
        EVENT_FAIL => ("F", "fail"),
        _ => ("U", "unknown"),
    }
}
