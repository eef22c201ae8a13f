//! The event record as the BPF programs write it, and its decoding.
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::columns::StackText;

/// The one definition of the event, generated from src/bpf/tcpkit.h. Every object includes that header,
/// so the accept skeleton's copy of the type describes the tracer's events too.
pub use crate::skel::accept::types::event as Event;

// SAFETY: the generated struct is #[repr(C)] plain data: integers and byte arrays, any bit pattern valid.
unsafe impl plain::Plain for Event {}

pub const AF_INET: u16 = 2;
const TASK_UNKNOWN: u8 = 3;

/// Event types (src/bpf/tcpkit.h, enum event_type).
pub const EVENT_CONNECT: u8 = 1;
pub const EVENT_ACCEPT: u8 = 2;
pub const EVENT_CLOSE: u8 = 3;
pub const EVENT_FAIL: u8 = 4;
/// Not a connection's: a cgroup made, its id in task.cgroup_id and its path after the record's head.
pub const EVENT_CGROUP: u8 = 5;
/// Not a connection's: a cgroup removed, its id in task.cgroup_id.
pub const EVENT_CGROUP_GONE: u8 = 6;
const DURATION_UNKNOWN: u64 = u64::MAX;

/// How a connection ended (src/bpf/tcpkit.h, enum end_kind), by its value.
const END_NAMES: [&str; 6] = ["", "close", "peer", "abort", "reset", "timeout"];

/// The size of a record without its stats: what the kernel writes when they are not asked for.
const SIZE_WITHOUT_STATS: usize = std::mem::offset_of!(Event, stats);

/// Copies a ring-buffer sample into an event: samples are only 8-byte aligned, so no in-place cast. A sample
/// without stats leaves them zero, none present.
pub fn decode(bytes: &[u8]) -> Option<Event> {
    let mut event = Event::default();
    let len = bytes.len().min(std::mem::size_of::<Event>());
    if len < SIZE_WITHOUT_STATS {
        return None;
    }
    // SAFETY: Event is plain data (see the Plain impl above): any bytes are a valid value.
    let raw = unsafe { plain::as_mut_bytes(&mut event) };
    raw[..len].copy_from_slice(&bytes[..len]);
    Some(event)
}

/// The path of a cgroup record (EVENT_CGROUP), below the v2 root; None where the kernel cut it (at
/// CGROUP_PATH_MAX, filter.bpf.h) or it is not UTF-8.
pub fn cgroup_path(bytes: &[u8]) -> Option<&str> {
    const CGROUP_PATH_MAX: usize = 512;
    let path = bytes.get(SIZE_WITHOUT_STATS..)?;
    let len = path.iter().position(|&b| b == 0)?;
    if len >= CGROUP_PATH_MAX - 1 {
        return None;
    }
    std::str::from_utf8(&path[..len]).ok()
}

impl Event {
    pub fn local_addr(&self) -> IpAddr {
        addr(self.family, &self.saddr)
    }

    pub fn remote_addr(&self) -> IpAddr {
        addr(self.family, &self.daddr)
    }

    /// 4 or 6, as bcc prints it: the socket's family, so an IPv4-mapped peer on a dual-stack socket is 6.
    pub fn ip_version(&self) -> u8 {
        if self.family == AF_INET {
            4
        } else {
            6
        }
    }

    pub fn pid(&self) -> u32 {
        self.task.pid
    }

    /// The task's command name; invalid UTF-8 (a comm is any bytes) shows as U+FFFD. `[unknown]` for a
    /// close that no task made, of a connection older than tcpkit (its PID shows as 0).
    pub fn comm(&self) -> std::borrow::Cow<'_, str> {
        if self.task_source == TASK_UNKNOWN {
            return "[unknown]".into();
        }
        let comm = &self.task.comm;
        let len = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
        String::from_utf8_lossy(&comm[..len])
    }
}

impl Event {
    /// The errno name of a failed connect (`ECONNREFUSED`), formatted on the stack; None for other events.
    pub fn error_name(&self) -> Option<StackText<24>> {
        if self.r#type != EVENT_FAIL {
            return None;
        }
        let mut name = StackText::new();
        let _ = match nix::errno::Errno::from_raw(self.error.into()) {
            nix::errno::Errno::UnknownErrno => fmt::write(&mut name, format_args!("errno-{}", self.error)),
            known => fmt::write(&mut name, format_args!("{known:?}")),
        };
        Some(name)
    }

    /// How a closed connection ended (`close`, `peer`, `abort`, `reset`, `timeout`), when the kernel said.
    pub fn end_name(&self) -> Option<&'static str> {
        END_NAMES.get(usize::from(self.end)).copied().filter(|n| !n.is_empty())
    }

    /// How long a closed connection lived, when tcpkit saw it begin.
    pub fn duration(&self) -> Option<u64> {
        (self.duration_ns != DURATION_UNKNOWN).then_some(self.duration_ns)
    }
}

/// Which stats fields the kernel filled (src/bpf/tcpkit.h, enum stat_bits).
const STAT_HANDSHAKE: u32 = 1 << 0;
const STAT_QUEUE: u32 = 1 << 1;
const STAT_BACKLOG: u32 = 1 << 2;
const STAT_TRANSFER: u32 = 1 << 3;
const STAT_RETRANS_BYTES: u32 = 1 << 4;
const STAT_RTO: u32 = 1 << 5;

/// A connection's transfer counters as the kernel kept them on its socket, at its end (close records).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transfer {
    pub rtt_us: u32,
    pub rtt_var_us: u32,
    pub min_rtt_us: u32,
    pub retransmits: u32,
    pub segs_out: u32,
    pub segs_in: u32,
}

/// How good a connection was (-S, JSON): each None where the record's type does not carry it, where the
/// kernel lacks the counter, or where tcpkit did not see what it is measured from.
impl Event {
    fn stat<T>(&self, bit: u32, value: T) -> Option<T> {
        (self.stats.present & bit != 0).then_some(value)
    }

    /// Connect and fail records: nanoseconds from connect() to ESTABLISHED (or to the failure).
    pub fn handshake_ns(&self) -> Option<u64> {
        self.stat(STAT_HANDSHAKE, self.stats.handshake_ns)
    }

    /// Connect and fail records: SYNs sent again before the answer (or the failure).
    pub fn syn_retransmits(&self) -> Option<u32> {
        self.stat(STAT_HANDSHAKE, self.stats.syn_retransmits)
    }

    /// Accept records: nanoseconds the connection waited, established, in the listener's queue.
    pub fn queue_ns(&self) -> Option<u64> {
        self.stat(STAT_QUEUE, self.stats.queue_ns)
    }

    /// Accept records: the listener's queue length at this accept (this connection included), and its limit.
    pub fn backlog(&self) -> Option<(u32, u32)> {
        self.stat(STAT_BACKLOG, (self.stats.backlog, self.stats.backlog_max))
    }

    /// Close records: RTT, retransmits and segments.
    pub fn transfer(&self) -> Option<Transfer> {
        let s = &self.stats;
        let transfer = Transfer {
            rtt_us: s.rtt_us,
            rtt_var_us: s.rtt_var_us,
            min_rtt_us: s.min_rtt_us,
            retransmits: s.retransmits,
            segs_out: s.segs_out,
            segs_in: s.segs_in,
        };
        self.stat(STAT_TRANSFER, transfer)
    }

    /// Close records: bytes retransmitted (kernels since 4.19).
    pub fn retransmitted_bytes(&self) -> Option<u64> {
        self.stat(STAT_RETRANS_BYTES, self.stats.retransmitted_bytes)
    }

    /// Close records: retransmission timeouts (kernels since 6.7).
    pub fn rto_count(&self) -> Option<u32> {
        self.stat(STAT_RTO, self.stats.rto_count)
    }
}

fn addr(family: u16, bytes: &[u8; 16]) -> IpAddr {
    if family == AF_INET {
        IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(*bytes))
    }
}

/// An accept on 127.0.0.1:80 from 127.0.0.2:51000 by PID 1234 (`a-long-server`), for the layouts' tests.
#[cfg(test)]
pub fn sample_event() -> Event {
    let mut e = Event { family: AF_INET, sport: 80, dport: 51000, ts_ns: 5_000_000_000, ..Default::default() };
    e.task.pid = 1234;
    e.saddr[..4].copy_from_slice(&[127, 0, 0, 1]);
    e.daddr[..4].copy_from_slice(&[127, 0, 0, 2]);
    e.task.comm[..13].copy_from_slice(b"a-long-server");
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_an_unaligned_sample() {
        let mut event = Event { family: AF_INET, sport: 80, ..Default::default() };
        event.task.pid = 42;
        event.saddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        event.task.comm[..4].copy_from_slice(b"sshd");
        let bytes = unsafe { plain::as_bytes(&event) };
        let mut shifted = vec![0u8; bytes.len() + 1];
        shifted[1..].copy_from_slice(bytes);
        let decoded = decode(&shifted[1..]).unwrap();
        assert_eq!(decoded.pid(), 42);
        assert_eq!(decoded.local_addr(), IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(decoded.comm(), "sshd");
        assert!(decode(&bytes[..SIZE_WITHOUT_STATS - 1]).is_none());
    }

    #[test]
    fn a_record_without_stats_has_none() {
        let mut event = Event { family: AF_INET, sport: 80, ..Default::default() };
        event.stats.present = u32::MAX;
        event.stats.rtt_us = 7;
        let bytes = unsafe { plain::as_bytes(&event) };
        let short = decode(&bytes[..SIZE_WITHOUT_STATS]).unwrap();
        assert_eq!((short.sport, short.transfer(), short.handshake_ns()), (80, None, None));
        assert_eq!(decode(bytes).unwrap().transfer().map(|t| t.rtt_us), Some(7));
    }

    #[test]
    fn keeps_ipv4_mapped_addresses_as_ipv6() {
        let mut event = Event { family: 10, ..Default::default() };
        event.daddr = Ipv4Addr::LOCALHOST.to_ipv6_mapped().octets();
        assert_eq!(event.remote_addr().to_string(), "::ffff:127.0.0.1");
        assert_eq!(event.ip_version(), 6);
    }
}
