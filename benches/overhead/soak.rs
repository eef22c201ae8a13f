//! The soak (issue 14, `--soak SECONDS`): `tcpkit tracer --failed -L -o json` into a file while the load
//! runs at the single-thread ceiling, back to back, for that long. Every SLICE it samples tcpkit's RSS, its
//! per-socket state (entries of its owners map, between two loads, when no connection is open: what is left
//! there is a leak), the events the load made and tcpkit's CPU per event: all of them should stay flat, and
//! nothing may be lost.
use std::fs;
use std::io;
use std::time::{Duration, Instant};

use libbpf_rs::{MapCore, MapHandle};
use nix::unistd::Pid;

use crate::load::run_load;
use crate::watch::{cpu_time_so_far, Bench, Sub};

const SLICE: Duration = Duration::from_secs(30);

pub(crate) struct SoakSample {
    pub(crate) at: Duration,
    pub(crate) rss_kb: u64,
    pub(crate) owners: usize,
    pub(crate) events_per_s: f64,
    pub(crate) cpu_us_per_event: f64,
}

pub(crate) struct Soak {
    pub(crate) samples: Vec<SoakSample>,
    pub(crate) expected: u64,
    pub(crate) printed: u64,
    pub(crate) lost: u64,
    pub(crate) exit: String,
}

pub(crate) fn soak(bench: &mut Bench, duration: Duration) -> io::Result<Soak> {
    eprintln!("overhead: soak, {} s of tcpkit {}", duration.as_secs(), Sub::TracerSoak.name());
    let session = bench.start_session(Sub::TracerSoak)?;
    let pid = session.pid();
    let load = bench.load(1);
    let started = Instant::now();
    let mut samples = vec![sample(pid, started, 0, Duration::ZERO, cpu_time_so_far(pid))];
    let mut expected = 0;
    while started.elapsed() < duration {
        let (slice_start, cpu_before) = (Instant::now(), cpu_time_so_far(pid));
        let slice = SLICE.min(duration.saturating_sub(started.elapsed()));
        let mut events = 0;
        while slice_start.elapsed() < slice {
            events += Sub::TracerSoak.expected_events(&run_load(load)?);
        }
        expected += events;
        let cpu = cpu_time_so_far(pid).saturating_sub(cpu_before);
        samples.push(sample(pid, started, events, slice_start.elapsed(), cpu));
        let last = samples.last().expect("just pushed");
        eprintln!(
            "overhead:   {:>4} s  RSS {} kB, {} owners, {:.0} events/s, {:.2} µs/event",
            last.at.as_secs(),
            last.rss_kb,
            last.owners,
            last.events_per_s,
            last.cpu_us_per_event
        );
    }
    let traced = session.finish(Some(expected))?;
    Ok(Soak { samples, expected, printed: traced.printed, lost: traced.lost, exit: traced.exit })
}

fn sample(pid: Pid, started: Instant, events: u64, wall: Duration, cpu: Duration) -> SoakSample {
    let per = |x: f64| if events > 0 { x / events as f64 } else { 0.0 };
    SoakSample {
        at: started.elapsed(),
        rss_kb: vm_rss_kb(pid),
        owners: map_entries(pid, "owners"),
        events_per_s: events as f64 / wall.as_secs_f64().max(1e-9),
        cpu_us_per_event: per(cpu.as_secs_f64() * 1e6),
    }
}

/// RSS now, VmRSS in /proc/PID/status (kB).
fn vm_rss_kb(pid: Pid) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Entries of the BPF map called `name` that the process holds (0 if it holds none).
fn map_entries(pid: Pid, name: &str) -> usize {
    for entry in fs::read_dir(format!("/proc/{pid}/fdinfo")).into_iter().flatten().flatten() {
        let info = fs::read_to_string(entry.path()).unwrap_or_default();
        let Some(id) = info.lines().find_map(|l| l.strip_prefix("map_id:")?.trim().parse::<u32>().ok()) else {
            continue;
        };
        let Ok(map) = MapHandle::from_map_id(id) else { continue };
        if map.name() == name {
            return map.keys().count();
        }
    }
    0
}
