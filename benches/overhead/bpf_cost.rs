//! BPF time per connection (issue 14): with kernel.bpf_stats_enabled on, the load runs under a tracer, and
//! each of the tracer's programs' run_time_ns and run_cnt, read by id before and after the load, say what the
//! kernel spent in them per connection; untraced runs in between say what a connection costs without them.
//! Here: reading a process's programs and maps, and the arithmetic; measure.rs runs the loads.
use std::fs;
use std::io;

use libbpf_rs::query::ProgInfoIter;
use libbpf_rs::{MapCore, MapHandle};
use nix::unistd::Pid;

const STATS_SWITCH: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// One program's counters at a moment.
#[derive(Clone, Debug)]
pub(crate) struct ProgCounters {
    pub(crate) id: u32,
    pub(crate) name: String,
    pub(crate) run_time_ns: u64,
    pub(crate) run_cnt: u64,
}

/// The ids of the BPF objects of one kind (`prog_id:`, `map_id:`) a process holds, from its fdinfo.
pub(crate) fn fdinfo_ids(pid: Pid, key: &str) -> Vec<u32> {
    let mut ids = Vec::new();
    for entry in fs::read_dir(format!("/proc/{pid}/fdinfo")).into_iter().flatten().flatten() {
        let info = fs::read_to_string(entry.path()).unwrap_or_default();
        ids.extend(info.lines().find_map(|l| l.strip_prefix(key)?.trim().parse::<u32>().ok()));
    }
    ids
}

/// The programs a process holds, with their counters now.
pub(crate) fn counters_of(pid: Pid) -> Vec<ProgCounters> {
    let ids = fdinfo_ids(pid, "prog_id:");
    ProgInfoIter::default()
        .filter(|p| ids.contains(&p.id))
        .map(|p| ProgCounters {
            id: p.id,
            name: p.name.to_string_lossy().into_owned(),
            run_time_ns: p.run_time_ns,
            run_cnt: p.run_cnt,
        })
        .collect()
}

/// One program's cost over one load.
#[derive(Clone, Debug)]
pub(crate) struct ProgCost {
    pub(crate) name: String,
    pub(crate) runs_per_conn: f64,
    pub(crate) ns_per_conn: f64,
}

impl ProgCost {
    pub(crate) fn ns_per_run(&self) -> f64 {
        if self.runs_per_conn > 0.0 {
            self.ns_per_conn / self.runs_per_conn
        } else {
            0.0
        }
    }
}

/// What one load under one watcher cost in BPF, against the untraced run next to it.
#[derive(Clone, Debug)]
pub(crate) struct BpfRun {
    pub(crate) untraced_ns_per_conn: f64,
    pub(crate) programs: Vec<ProgCost>,
}

impl BpfRun {
    pub(crate) fn ns_per_conn(&self) -> f64 {
        self.programs.iter().map(|p| p.ns_per_conn).sum()
    }

    /// BPF time per connection as a share of an untraced connection's time.
    pub(crate) fn share(&self) -> f64 {
        self.ns_per_conn() / self.untraced_ns_per_conn
    }
}

/// tcpkit's program names, which the kernel keeps only 15 characters of.
const PROGRAMS: [&str; 9] = [
    "inet_sock_set_state",
    "tp_sys_exit_accept[4]",
    "tp_sys_enter_connect",
    "tp_sys_exit_connect",
    "tp_io_uring_complete",
    "tp_io_uring_submit_sqe",
    "tp_io_uring_task_add",
    "fexit_inet_csk_accept",
    "kretprobe_inet_csk_accept",
];

/// The whole name of a program the kernel names by its first 15 characters. accept and accept4's exits
/// share theirs, and are one row: one of them runs per accept.
fn full_name(kernel: &str) -> String {
    PROGRAMS.iter().find(|p| p.starts_with(kernel)).map_or(kernel.to_string(), |p| p.to_string())
}

/// Per connection: the difference of two snapshots of the same programs, programs of one name summed.
pub(crate) fn cost_between(before: &[ProgCounters], after: &[ProgCounters], connections: u64) -> Vec<ProgCost> {
    let per = |n: u64| n as f64 / connections.max(1) as f64;
    let mut costs: Vec<ProgCost> = Vec::new();
    for a in after {
        let b = before.iter().find(|b| b.id == a.id);
        let runs = per(a.run_cnt - b.map_or(0, |b| b.run_cnt));
        let ns = per(a.run_time_ns - b.map_or(0, |b| b.run_time_ns));
        let name = full_name(&a.name);
        match costs.iter_mut().find(|c| c.name == name) {
            Some(c) => {
                c.runs_per_conn += runs;
                c.ns_per_conn += ns;
            }
            None => costs.push(ProgCost { name, runs_per_conn: runs, ns_per_conn: ns }),
        }
    }
    costs.retain(|c| c.runs_per_conn > 0.0);
    costs.sort_by(|x, y| y.ns_per_conn.total_cmp(&x.ns_per_conn));
    costs
}

/// Turns bpf_stats on for as long as it lives, and back to what it was.
pub(crate) struct StatsOn(String);

impl StatsOn {
    pub(crate) fn new() -> io::Result<StatsOn> {
        let was = fs::read_to_string(STATS_SWITCH)?;
        fs::write(STATS_SWITCH, "1")?;
        Ok(StatsOn(was.trim().to_string()))
    }
}

impl Drop for StatsOn {
    fn drop(&mut self) {
        let _ = fs::write(STATS_SWITCH, &self.0);
    }
}

/// Entries of the BPF map called `name` that the process holds (0 if it holds none).
pub(crate) fn map_entries(pid: Pid, name: &str) -> usize {
    for id in fdinfo_ids(pid, "map_id:") {
        let Ok(map) = MapHandle::from_map_id(id) else { continue };
        if map.name() == name {
            return map.keys().count();
        }
    }
    0
}
