//! The soak (issue 14, `--soak SECONDS`): `tcpkit tracer --failed -L -o json` into a pipe, as into a log
//! agent, while the load runs at the single-thread ceiling, back to back, for that long (a file would grow by
//! about 100 MB/s: 54 GB in a 10-minute first attempt). A thread reads the pipe and counts records. Every SLICE it samples tcpkit's RSS, its
//! per-socket state (entries of its owners map, between two loads, when no connection is open: what is left
//! there is a leak), the events the load made and tcpkit's CPU per event: all of them should stay flat, and
//! nothing may be lost.
use std::fs;
use std::io::{self, BufRead, BufReader};
use std::process::{ChildStdout, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use libbpf_rs::query::ProgInfoIter;
use nix::unistd::Pid;

use crate::bpf_cost::{fdinfo_ids, map_entries};
use crate::load::run_load;
use crate::watch::{cpu_time_so_far, start_attached, status_kb, stop, tcpkit_lost, Bench, Sub};

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
    /// Printed and expected records of each type: connect, accept, close, fail.
    pub(crate) by_type: [(u64, u64); 4],
    /// The connections (by client port) whose records do not add up.
    pub(crate) unmatched: Vec<String>,
    /// Closes that name the owner, not the closing task: the network ended them. In this load that is a
    /// connection the client reset while it waited to be accepted, reported by its accept.
    pub(crate) owner_closes: u64,
    /// Each of tcpkit's programs with the runs the kernel skipped (recursion_misses: the program was already
    /// running on that CPU), at the end: an event such a run would have made is missing, and not lost.
    pub(crate) skipped_runs: Vec<(String, u64)>,
}

pub(crate) fn soak(bench: &mut Bench, duration: Duration) -> io::Result<Soak> {
    eprintln!("overhead: soak, {} s of tcpkit {}", duration.as_secs(), Sub::TracerSoak.name());
    let err_path = bench.dir.join("soak.err");
    let mut command = bench.tcpkit_command(Sub::TracerSoak, None);
    command.stdout(Stdio::piped());
    // JSON has no header: nothing comes down the pipe before the programs are attached.
    let (mut child, _) = start_attached(command, &err_path)?;
    let pid = Pid::from_raw(child.id() as i32);
    let counter = count_records(child.stdout.take().expect("stdout is piped"));
    let load = bench.load(1);
    let started = Instant::now();
    let mut samples = vec![sample(pid, started, 0, Duration::ZERO, Duration::ZERO)];
    let (mut expected, mut connected, mut accepted) = (0, 0, 0);
    while started.elapsed() < duration {
        let (slice_start, cpu_before) = (Instant::now(), cpu_time_so_far(pid));
        let slice = SLICE.min(duration.saturating_sub(started.elapsed()));
        let mut events = 0;
        while slice_start.elapsed() < slice {
            let result = run_load(load)?;
            events += Sub::TracerSoak.expected_events(&result);
            (connected, accepted) = (connected + result.connected, accepted + result.accepted);
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
    thread::sleep(Duration::from_millis(300)); // what the kernel still holds reaches the pipe
    let skipped_runs = skipped_runs(pid);
    let exit = stop(pid)?;
    let tally = counter.join().map_err(|_| io::Error::other("the counting thread panicked"))?;
    let counts = tally.counts;
    let unmatched = tally.unmatched();
    let printed = counts.iter().sum();
    let by_type = [(counts[0], connected), (counts[1], accepted), (counts[2], connected + accepted), (counts[3], 0)];
    let stderr = fs::read_to_string(&err_path)?;
    let lost = tcpkit_lost(&stderr);
    let owner_closes = tally.owner_closes;
    Ok(Soak { samples, expected, printed, lost, exit: exit.describe(), by_type, unmatched, owner_closes, skipped_runs })
}

/// Records by type, in the order of TYPES.
const TYPES: [&[u8]; 4] = [b"connect", b"accept", b"close", b"fail"];
const OWNER: &[u8] = b"\"task\":\"owner\"";

/// What came off the pipe: records by type, and per port the records that name it, so that a missing event
/// names its connection's client port (and which side's close it was).
struct Tally {
    counts: [u64; 4],
    /// By port: connects whose local port it is, accepts whose remote port it is, closes whose local port
    /// it is (a client's close), closes whose remote port it is (a server's close of that client).
    ports: Vec<[u32; 4]>,
    /// By port: time_ns of its last connect, to place a connection that does not add up in the run.
    last_connect_ns: Vec<u64>,
    first_connect_ns: u64,
    /// Connections found incomplete when their client port was used again: the port, seconds into the run,
    /// and which end's close is missing.
    incomplete_at: Vec<(usize, f64, &'static str)>,
    owner_closes: u64,
}

impl Tally {
    /// The client ports whose records do not add up: each connect from a port has one client close, each
    /// accept of it one server close.
    fn unmatched(&self) -> Vec<String> {
        let mut found: Vec<String> = self
            .incomplete_at
            .iter()
            .map(|(port, at, end)| format!("client port {port}: a connection {at:.3} s into the run lacks {end}"))
            .collect();
        for (port, &[connects, accepts, client_closes, server_closes]) in self.ports.iter().enumerate() {
            if connects + accepts == 0 || (client_closes == connects && server_closes == accepts) {
                continue; // not a client port (a listener's), or complete
            }
            found.push(format!(
                "client port {port}: {connects} connects, {client_closes} client closes; {accepts} accepts, \
                 {server_closes} server closes"
            ));
        }
        found
    }
}

/// The number after `key` in a record, if the key is there.
fn number_after(line: &[u8], key: &[u8]) -> Option<(usize, usize)> {
    let at = line.windows(key.len()).position(|w| w == key)? + key.len();
    let digits = line[at..].iter().take_while(|c| c.is_ascii_digit()).count();
    let value = line[at..at + digits].iter().fold(0usize, |n, c| n * 10 + usize::from(c - b'0'));
    Some((value, at + digits))
}

/// Reads records off the pipe until it closes, counting them by type (lost records are not events) and
/// by port.
fn count_records(pipe: ChildStdout) -> thread::JoinHandle<Tally> {
    thread::spawn(move || {
        let mut reader = BufReader::with_capacity(1 << 20, pipe);
        let mut tally = Tally {
            counts: [0; 4],
            ports: vec![[0; 4]; 65536],
            last_connect_ns: vec![0; 65536],
            first_connect_ns: 0,
            incomplete_at: Vec::new(),
            owner_closes: 0,
        };
        let mut line = Vec::with_capacity(1024);
        while reader.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
            // {"type":"<type>",...,"lport":N,"raddr":"...","rport":N,...
            let kind = line.get(9..).and_then(|rest| rest.split(|&b| b == b'"').next());
            if let Some(i) = kind.and_then(|kind| TYPES.iter().position(|t| *t == kind)) {
                tally.counts[i] += 1;
                let lport = number_after(&line, b"\"lport\":");
                let rport = lport.and_then(|(_, end)| number_after(&line[end..], b"\"rport\":"));
                if let (Some((lport, _)), Some((rport, _))) = (lport, rport) {
                    let (lport, rport) = (lport & 0xffff, rport & 0xffff);
                    match i {
                        0 => {
                            let [connects, accepts, client_closes, server_closes] = tally.ports[lport];
                            if client_closes != connects || server_closes != accepts {
                                let at = tally.last_connect_ns[lport].saturating_sub(tally.first_connect_ns);
                                let end = match (client_closes != connects, server_closes != accepts) {
                                    (true, true) => "both closes",
                                    (true, false) => "its client close",
                                    _ => "its server close",
                                };
                                tally.incomplete_at.push((lport, at as f64 / 1e9, end));
                                tally.ports[lport] = [connects, accepts, connects, accepts];
                                // counted once
                            }
                            tally.ports[lport][0] += 1;
                            let time = number_after(&line, b"\"time_ns\":").map_or(0, |(t, _)| t as u64);
                            tally.last_connect_ns[lport] = time;
                            if tally.first_connect_ns == 0 {
                                tally.first_connect_ns = time;
                            }
                        }
                        1 => tally.ports[rport][1] += 1,
                        2 => {
                            tally.ports[lport][2] += 1;
                            tally.ports[rport][3] += 1;
                            if line.windows(OWNER.len()).any(|w| w == OWNER) {
                                tally.owner_closes += 1;
                            }
                        }
                        _ => {}
                    }
                }
            }
            line.clear();
        }
        tally
    })
}

fn sample(pid: Pid, started: Instant, events: u64, wall: Duration, cpu: Duration) -> SoakSample {
    let per = |x: f64| if events > 0 { x / events as f64 } else { 0.0 };
    SoakSample {
        at: started.elapsed(),
        rss_kb: status_kb(pid, "VmRSS:"),
        owners: map_entries(pid, "owners"),
        events_per_s: events as f64 / wall.as_secs_f64().max(1e-9),
        cpu_us_per_event: per(cpu.as_secs_f64() * 1e6),
    }
}

/// The programs `pid` holds, each with the runs the kernel skipped so far.
fn skipped_runs(pid: Pid) -> Vec<(String, u64)> {
    let ids = fdinfo_ids(pid, "prog_id:");
    ProgInfoIter::default()
        .filter(|p| ids.contains(&p.id))
        .map(|p| (p.name.to_string_lossy().into_owned(), p.recursion_misses))
        .collect()
}
