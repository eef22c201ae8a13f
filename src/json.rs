//! -o json: one object per line, every field typed, the same fields for every subcommand. Written straight
//! into the output buffer: no allocation per event (the wall-clock prefix is formatted once per second).
use std::io::{self, Write};
use std::path::Path;

use chrono::{Local, TimeZone};

use crate::columns::{ip, uint, zero_padded};
use crate::event::{Event, EVENT_ACCEPT, EVENT_CLOSE, EVENT_CONNECT, EVENT_FAIL};
use crate::format::{type_names, Clock, Format};
use crate::identity::CgroupCache;

pub struct Json {
    clock: Clock,
    cgroups: CgroupCache,
    backend: &'static str,
    cached_sec: i64,
    /// "YYYY-MM-DDTHH:MM:SS" and "+HH:MM" of `cached_sec`, local time.
    cached_date: String,
    cached_offset: String,
}

const TASK_SOURCES: [&str; 4] = ["unknown", "current", "owner", "unknown"];

impl Json {
    pub fn new(backend: &'static str, host_root: &Path) -> Self {
        Json {
            clock: Clock::new(),
            cgroups: CgroupCache::new(host_root),
            backend,
            cached_sec: i64::MIN,
            cached_date: String::new(),
            cached_offset: String::new(),
        }
    }

    /// `"time":"<RFC 3339, ns, local offset>","time_ns":<ns since the epoch>`
    fn write_time(&mut self, wall_ns: i128, w: &mut impl Write) -> io::Result<()> {
        let wall_ns = u64::try_from(wall_ns).unwrap_or(0); // before 1970 only on a clock set that wrong
        let sec = (wall_ns / 1_000_000_000) as i64;
        if sec != self.cached_sec {
            self.cached_sec = sec;
            if let Some(t) = Local.timestamp_opt(sec, 0).single() {
                self.cached_date = t.format("%Y-%m-%dT%H:%M:%S").to_string();
                self.cached_offset = t.format("%:z").to_string();
            }
        }
        w.write_all(b"\"time\":\"")?;
        w.write_all(self.cached_date.as_bytes())?;
        w.write_all(b".")?;
        w.write_all(zero_padded(wall_ns, 9).as_str().as_bytes())?;
        w.write_all(self.cached_offset.as_bytes())?;
        number(w, b"\",\"time_ns\":", wall_ns)
    }
}

/// `key` (quotes, colon and the comma before it) and a number, without core::fmt: its Display and the
/// io::Write adapter were a third of the reader's time per JSON record (perf).
fn number(w: &mut impl Write, key: &[u8], n: u64) -> io::Result<()> {
    w.write_all(key)?;
    w.write_all(uint(n).as_str().as_bytes())
}

/// `key` and a number, or null when unknown.
fn number_or_null(w: &mut impl Write, key: &[u8], n: Option<impl Into<u64>>) -> io::Result<()> {
    match n {
        Some(n) => number(w, key, n.into()),
        None => {
            w.write_all(key)?;
            w.write_all(b"null")
        }
    }
}

/// The stats fields of a record's type (-S's values; every JSON record has its type's, null when unknown).
fn write_stats(e: &Event, w: &mut impl Write) -> io::Result<()> {
    match e.r#type {
        EVENT_CONNECT | EVENT_FAIL => {
            number_or_null(w, b",\"handshake_ns\":", e.handshake_ns())?;
            number_or_null(w, b",\"syn_retransmits\":", e.syn_retransmits())
        }
        EVENT_ACCEPT => {
            number_or_null(w, b",\"queue_ns\":", e.queue_ns())?;
            number_or_null(w, b",\"backlog\":", e.backlog().map(|b| b.0))?;
            number_or_null(w, b",\"backlog_max\":", e.backlog().map(|b| b.1))
        }
        EVENT_CLOSE => {
            let t = e.transfer();
            number_or_null(w, b",\"rtt_us\":", t.map(|t| t.rtt_us))?;
            number_or_null(w, b",\"rtt_var_us\":", t.map(|t| t.rtt_var_us))?;
            number_or_null(w, b",\"min_rtt_us\":", t.map(|t| t.min_rtt_us))?;
            number_or_null(w, b",\"retransmits\":", t.map(|t| t.retransmits))?;
            number_or_null(w, b",\"retransmitted_bytes\":", e.retransmitted_bytes())?;
            number_or_null(w, b",\"rto_count\":", e.rto_count())?;
            number_or_null(w, b",\"segs_out\":", t.map(|t| t.segs_out))?;
            number_or_null(w, b",\"segs_in\":", t.map(|t| t.segs_in))
        }
        _ => Ok(()),
    }
}

/// `key` and a JSON string that needs no escaping (a name tcpkit chose, an address).
fn plain_string(w: &mut impl Write, key: &[u8], text: &str) -> io::Result<()> {
    w.write_all(key)?;
    w.write_all(b"\"")?;
    w.write_all(text.as_bytes())?;
    w.write_all(b"\"")
}

impl Json {
    /// `"cgroup":…,"container_id":…,"container_runtime":…,"pod_uid":…,"unit":…,"namespace":…,"pod":…,
    /// "container":…`, each null when unknown.
    fn write_identity(&mut self, cgroup_id: u64, w: &mut impl Write) -> io::Result<()> {
        let id = self.cgroups.lookup(cgroup_id);
        let fields: [(&str, Option<&str>); 8] = [
            ("cgroup", id.map(|i| i.cgroup.as_str())),
            ("container_id", id.and_then(|i| i.container_id.as_deref())),
            ("container_runtime", id.and_then(|i| i.container_runtime)),
            ("pod_uid", id.and_then(|i| i.pod_uid.as_deref())),
            ("unit", id.and_then(|i| i.unit.as_deref())),
            ("namespace", id.and_then(|i| i.names.namespace.as_deref())),
            ("pod", id.and_then(|i| i.names.pod.as_deref())),
            ("container", id.and_then(|i| i.names.container.as_deref())),
        ];
        for (name, value) in fields {
            w.write_all(b",\"")?;
            w.write_all(name.as_bytes())?;
            w.write_all(b"\":")?;
            match value {
                Some(v) => write_json_string(v, w)?,
                None => w.write_all(b"null")?,
            }
        }
        Ok(())
    }
}

impl Format for Json {
    fn cgroup_made(&mut self, id: u64, path: &str) {
        self.cgroups.learn(id, path);
    }

    fn cgroup_removed(&mut self, id: u64) {
        self.cgroups.removed(id);
    }

    fn header(&mut self, _w: &mut impl Write) -> io::Result<()> {
        Ok(())
    }

    fn event(&mut self, e: &Event, w: &mut impl Write) -> io::Result<()> {
        let (_, kind) = type_names(e.r#type);
        plain_string(w, b"{\"type\":", kind)?;
        w.write_all(b",")?;
        self.write_time(self.clock.wall_ns(e.ts_ns), w)?;
        let t = &e.task;
        number(w, b",\"pid\":", t.pid.into())?;
        number(w, b",\"tid\":", t.tid.into())?;
        number(w, b",\"uid\":", t.uid.into())?;
        w.write_all(b",\"comm\":")?;
        write_json_string(&e.comm(), w)?;
        number(w, b",\"ip\":", e.ip_version().into())?;
        plain_string(w, b",\"laddr\":", ip(e.local_addr(), false).as_str())?;
        number(w, b",\"lport\":", e.sport.into())?;
        plain_string(w, b",\"raddr\":", ip(e.remote_addr(), false).as_str())?;
        number(w, b",\"rport\":", e.dport.into())?;
        number(w, b",\"netns\":", e.netns.into())?;
        number(w, b",\"mntns\":", t.mntns.into())?;
        number(w, b",\"cgroup_id\":", t.cgroup_id)?;
        plain_string(w, b",\"task\":", TASK_SOURCES.get(e.task_source as usize).unwrap_or(&"unknown"))?;
        plain_string(w, b",\"backend\":", self.backend)?;
        self.write_identity(t.cgroup_id, w)?;
        if let Some(error) = e.error_name() {
            plain_string(w, b",\"error\":", error.as_str())?;
            number(w, b",\"errno\":", e.error.into())?;
        }
        if e.r#type == EVENT_CLOSE {
            match e.end_name() {
                Some(end) => plain_string(w, b",\"end\":", end)?,
                None => w.write_all(b",\"end\":null")?,
            }
            match e.duration() {
                Some(ns) => number(w, b",\"duration_ns\":", ns)?,
                None => w.write_all(b",\"duration_ns\":null")?,
            }
            number(w, b",\"bytes_sent\":", e.bytes_sent)?;
            number(w, b",\"bytes_received\":", e.bytes_received)?;
        }
        write_stats(e, w)?;
        w.write_all(b"}\n")
    }

    fn lost(&mut self, count: u64, w: &mut impl Write) -> io::Result<()> {
        write!(w, "{{\"type\":\"lost\",")?;
        self.write_time(Clock::now_wall_ns(), w)?;
        writeln!(w, ",\"count\":{count}}}")
    }
}

/// A JSON string: quotes, backslashes and control characters escaped (a comm may hold any byte).
/// Runs of plain bytes are copied whole: escapes are all ASCII, so no UTF-8 sequence is ever split.
fn write_json_string(s: &str, w: &mut impl Write) -> io::Result<()> {
    w.write_all(b"\"")?;
    let bytes = s.as_bytes();
    let mut run = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if b != b'"' && b != b'\\' && b >= 0x20 {
            continue;
        }
        w.write_all(&bytes[run..i])?;
        match b {
            b'"' => w.write_all(b"\\\"")?,
            b'\\' => w.write_all(b"\\\\")?,
            _ => write!(w, "\\u{:04x}", b)?,
        }
        run = i + 1;
    }
    w.write_all(&bytes[run..])?;
    w.write_all(b"\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_carry_every_field_in_order_with_its_value() {
        let mut e = Event { family: 10, sport: 8080, dport: 51000, ts_ns: 5_000_000_123, ..Default::default() };
        e.r#type = EVENT_CLOSE;
        (e.task.pid, e.task.tid, e.task.uid, e.task.mntns, e.task.cgroup_id) = (7, 8, 1000, 4026531840, 0);
        e.netns = 4026531833;
        e.task_source = 1;
        e.saddr[10..16].copy_from_slice(&[0xff, 0xff, 127, 0, 0, 1]);
        e.daddr[15] = 1;
        e.task.comm[..5].copy_from_slice(b"a\"b\\c");
        (e.end, e.duration_ns, e.bytes_sent, e.bytes_received) = (4, 1_234_567, 10, 20);
        (e.stats.rtt_us, e.stats.rtt_var_us, e.stats.min_rtt_us, e.stats.retransmits) = (250, 40, 180, 3);
        (e.stats.retransmitted_bytes, e.stats.segs_out, e.stats.segs_in) = (4000, 12, 9);
        e.stats.present = 0b1111; // no retransmitted_bytes (STAT_RETRANS_BYTES), no rto_count (STAT_RTO)
        let mut out = Vec::new();
        Json::new("tracepoint", Path::new("/")).event(&e, &mut out).unwrap();
        let line = String::from_utf8(out).unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let keys = [
            "type",
            "time",
            "time_ns",
            "pid",
            "tid",
            "uid",
            "comm",
            "ip",
            "laddr",
            "lport",
            "raddr",
            "rport",
            "netns",
            "mntns",
            "cgroup_id",
            "task",
            "backend",
            "cgroup",
            "container_id",
            "container_runtime",
            "pod_uid",
            "unit",
            "namespace",
            "pod",
            "container",
            "end",
            "duration_ns",
            "bytes_sent",
            "bytes_received",
            "rtt_us",
            "rtt_var_us",
            "min_rtt_us",
            "retransmits",
            "retransmitted_bytes",
            "rto_count",
            "segs_out",
            "segs_in",
        ];
        let at: Vec<usize> = keys.iter().map(|k| line.find(&format!("\"{k}\":")).expect(k)).collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "order: {line}");
        assert_eq!(v.as_object().unwrap().len(), keys.len(), "{line}");
        let expect = serde_json::json!({
            "type": "close", "pid": 7, "tid": 8, "uid": 1000, "comm": "a\"b\\c", "ip": 6, "laddr": "::ffff:127.0.0.1",
            "lport": 8080, "raddr": "::1", "rport": 51000, "netns": 4026531833u64, "mntns": 4026531840u64, "cgroup_id": 0,
            "task": "current", "backend": "tracepoint", "end": "reset", "duration_ns": 1_234_567, "bytes_sent": 10,
            "bytes_received": 20, "rtt_us": 250, "rtt_var_us": 40, "min_rtt_us": 180, "retransmits": 3,
            "retransmitted_bytes": null, "rto_count": null, "segs_out": 12, "segs_in": 9,
        });
        for (k, want) in expect.as_object().unwrap() {
            assert_eq!(&v[k], want, "{k}: {line}");
        }
        let time = v["time"].as_str().unwrap();
        let nanos = v["time_ns"].as_u64().unwrap() % 1_000_000_000;
        assert!(time.contains(&format!(".{nanos:09}")), "{time} and {nanos}");
    }

    #[test]
    fn escapes_what_json_requires() {
        let mut out = Vec::new();
        write_json_string("a\"b\\c\nd\u{1}é", &mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "\"a\\\"b\\\\c\\u000ad\\u0001é\"");
    }
}
