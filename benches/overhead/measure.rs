//! The measurements: interleaved pairs, start-up times, BPF time per connection, scaling.
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::process::{ChildStdout, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::unistd::Pid;

use crate::bpf_cost::{cost_between, BpfRun, StatsOn};
use crate::load::Load;
use crate::machine::find_in_path;
use crate::options::{Options, BUSY_SHARE, CONTROL, PAIR_ATTEMPTS, READY_LIMIT, SMALL_RING};
use crate::watch::{background_share, count_lines, other_processes_cpu, stop, Bench, LibbpfTool, Run, Sub, Watcher};

/// The longest wait for a quiet machine before a pair (see BUSY_SHARE).
const QUIET_WAIT: Duration = Duration::from_secs(30);
/// Client threads of the scaling runs.
const SCALING_THREADS: [usize; 3] = [1, 2, 4];
/// Why the bpftrace row is missing, when it is.
const BPFTRACE_MISSING: &str = "skipped: bpftrace not installed (scripts/bench.sh --with-peers installs it)";
const PEERS_LEFT_OUT: &str = "left out (--no-peers)";
const LIBBPF_TOOLS_MISSING: &str =
    "skipped: libbpf-tools not installed (scripts/bench.sh --with-peers installs Debian's)";

/// An untraced run and the traced run next to it.
#[derive(Clone, Debug)]
pub(crate) struct Pair {
    pub(crate) base: Run,
    pub(crate) traced: Run,
}

impl Pair {
    pub(crate) fn ratio(&self) -> f64 {
        self.traced.load.rate() / self.base.load.rate()
    }

    pub(crate) fn background(&self) -> f64 {
        self.base.background.max(self.traced.background)
    }
}

/// An untraced run and the same load under `watcher`, one right after the other, in the order given (the
/// comparison alternates it: whichever run goes second was measured about 3% faster in untraced-only
/// control pairs, so a fixed order favours one side); again if other processes were busy.
fn measure_pair(bench: &mut Bench, watcher: &Watcher, load: Load, traced_first: bool) -> io::Result<Pair> {
    let mut attempt = 1;
    loop {
        wait_for_quiet();
        let (base, traced) = if traced_first {
            let traced = bench.measure(watcher, load)?;
            (bench.measure(&Watcher::Untraced, load)?, traced)
        } else {
            let base = bench.measure(&Watcher::Untraced, load)?;
            (base, bench.measure(watcher, load)?)
        };
        let pair = Pair { base, traced };
        if pair.background() <= BUSY_SHARE || attempt == PAIR_ATTEMPTS {
            return Ok(pair);
        }
        eprintln!("overhead: other processes used {:.0}% of the CPUs: measuring again", pair.background() * 100.0);
        attempt += 1;
    }
}

/// Waits, up to QUIET_WAIT, for half a second in which other processes use at most BUSY_SHARE of the CPUs.
fn wait_for_quiet() {
    let window = Duration::from_millis(500);
    let deadline = Instant::now() + QUIET_WAIT;
    while Instant::now() < deadline {
        let before = other_processes_cpu(&[Pid::this()]);
        thread::sleep(window);
        if background_share(&before, &other_processes_cpu(&[Pid::this()]), window) <= BUSY_SHARE {
            return;
        }
    }
}

/// The interleaved comparison: one list of pairs per watcher, in round order.
pub(crate) struct Comparison {
    pub(crate) rows: Vec<(String, Vec<Pair>)>,
    /// Why there is no bpftrace row, when there is none.
    pub(crate) bpftrace_skipped: Option<&'static str>,
    /// Why there are no libbpf-tools rows, when there are none.
    pub(crate) libbpf_tools_skipped: Option<&'static str>,
}

pub(crate) fn compare(bench: &mut Bench, options: &Options) -> io::Result<Comparison> {
    let mut watchers = vec![
        Watcher::Tcpkit { sub: Sub::Accept, ring: None },
        Watcher::Tcpkit { sub: Sub::Tracer, ring: None },
        Watcher::Tcpkit { sub: Sub::TracerFailedLifespan, ring: None },
        Watcher::Tcpkit { sub: Sub::TracerContainer, ring: None },
        Watcher::Tcpkit { sub: Sub::TracerStats, ring: None },
        Watcher::Tcpkit { sub: Sub::TracerJson, ring: None },
        Watcher::Tcpkit { sub: Sub::AcceptStats, ring: None },
        Watcher::Tcpkit { sub: Sub::Metrics, ring: None },
    ];
    if bench.baseline.is_some() {
        watchers.extend([Watcher::Baseline(Sub::Accept), Watcher::Baseline(Sub::Tracer)]);
    }
    if bench.floor.is_some() {
        watchers.extend([Watcher::Floor(Sub::Accept), Watcher::Floor(Sub::Tracer)]);
    }
    let find = |name: &str| if options.no_peers { None } else { find_in_path(name) };
    let bpftrace = find("bpftrace");
    if let Some(path) = &bpftrace {
        watchers.push(Watcher::Bpftrace(path.clone()));
    }
    let libbpf_tools: Vec<Watcher> = LibbpfTool::ALL
        .into_iter()
        .filter_map(|tool| find(tool.name()).map(|path| Watcher::Libbpf(tool, path)))
        .collect();
    let libbpf_missing = libbpf_tools.is_empty();
    watchers.extend(libbpf_tools);
    // The control compares two untraced runs exactly as a traced run is compared with its untraced one: its
    // ratio, which should be 1, shows how far the method itself can be off on this machine.
    watchers.insert(0, Watcher::Untraced);
    let mut rows: Vec<(String, Vec<Pair>)> = watchers
        .iter()
        .map(|w| (if *w == Watcher::Untraced { CONTROL.to_string() } else { w.label() }, Vec::new()))
        .collect();
    let load = bench.load(options.threads);
    for round in 1..=options.rounds {
        eprintln!("overhead: round {round} of {}", options.rounds);
        for (watcher, (_, pairs)) in watchers.iter().zip(rows.iter_mut()) {
            pairs.push(measure_pair(bench, watcher, load, round % 2 == 0)?);
        }
    }
    Ok(Comparison {
        rows,
        bpftrace_skipped: bpftrace.is_none().then_some(if options.no_peers {
            PEERS_LEFT_OUT
        } else {
            BPFTRACE_MISSING
        }),
        libbpf_tools_skipped: libbpf_missing.then_some(if options.no_peers {
            PEERS_LEFT_OUT
        } else {
            LIBBPF_TOOLS_MISSING
        }),
    })
}

/// Start-up times (exec to header line) of each subcommand, interleaved; each after a quiet moment.
pub(crate) struct Startup {
    pub(crate) accept: Vec<Duration>,
    pub(crate) tracer: Vec<Duration>,
}

pub(crate) fn time_startups(bench: &Bench, count: usize) -> io::Result<Startup> {
    eprintln!("overhead: start-up, {count} times each");
    let mut startup = Startup { accept: Vec::new(), tracer: Vec::new() };
    for _ in 0..count {
        wait_for_quiet();
        startup.accept.push(time_to_ready(bench, Sub::Accept)?);
        startup.tracer.push(time_to_ready(bench, Sub::Tracer)?);
    }
    Ok(startup)
}

/// From spawn to the header on stdout, which tcpkit prints once its programs are attached. Read from a
/// pipe here (not a file): the header is flushed at once, and a pipe says the moment it arrives.
fn time_to_ready(bench: &Bench, sub: Sub) -> io::Result<Duration> {
    let started = Instant::now();
    let mut child = bench.tcpkit_command(sub, None).stdout(Stdio::piped()).stderr(Stdio::null()).spawn()?;
    let pid = Pid::from_raw(child.id() as i32);
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let header = read_lines(&mut stdout, sub.header_lines(), started + READY_LIMIT);
    let elapsed = started.elapsed();
    let exit = stop(pid)?;
    header.map_err(|e| io::Error::other(format!("tcpkit {} start-up: {e} ({})", sub.name(), exit.describe())))?;
    Ok(elapsed)
}

fn read_lines(pipe: &mut ChildStdout, lines: u64, deadline: Instant) -> io::Result<()> {
    let mut seen = 0;
    let mut buf = [0u8; 4096];
    while seen < lines {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::other(format!("no header in {READY_LIMIT:?}")));
        }
        let mut fds = [PollFd::new(pipe.as_fd(), PollFlags::POLLIN)];
        if poll(&mut fds, PollTimeout::from(left.as_millis().clamp(1, 1000) as u16))? == 0 {
            continue;
        }
        let n = pipe.read(&mut buf)?;
        if n == 0 {
            return Err(io::Error::other("it exited before printing its header"));
        }
        seen += count_lines(&buf[..n]);
    }
    Ok(())
}

/// Scaling: tcpkit tracer with 1, 2 and 4 client threads, default and small ring, one run each, each one
/// against the untraced run just before it.
pub(crate) fn scale(bench: &mut Bench) -> io::Result<Vec<Pair>> {
    eprintln!("overhead: scaling");
    let mut pairs = Vec::new();
    for threads in SCALING_THREADS {
        for ring in [None, Some(SMALL_RING)] {
            let load = bench.load(threads);
            pairs.push(measure_pair(bench, &Watcher::Tcpkit { sub: Sub::Tracer, ring }, load, false)?);
        }
    }
    Ok(pairs)
}

/// `runs` loads under each watcher, each after an untraced one, in rounds (watchers interleaved).
pub(crate) fn bpf_costs(
    bench: &mut Bench,
    watchers: &[Watcher],
    runs: usize,
) -> io::Result<Vec<(String, Vec<BpfRun>)>> {
    if watchers.is_empty() || runs == 0 {
        return Ok(Vec::new());
    }
    eprintln!("overhead: BPF time per connection (bpf_stats), {runs} runs each");
    let _stats = StatsOn::new()?;
    let load = bench.load(1);
    let mut rows: Vec<(String, Vec<BpfRun>)> = watchers.iter().map(|w| (w.label(), Vec::new())).collect();
    for _ in 0..runs {
        for (watcher, (_, row)) in watchers.iter().zip(rows.iter_mut()) {
            let untraced = bench.measure(&Watcher::Untraced, load)?;
            let untraced_ns_per_conn = untraced.load.wall.as_nanos() as f64 / untraced.load.connected.max(1) as f64;
            let (connected, (before, after)) = bench.measure_bpf(watcher, load)?;
            row.push(BpfRun { untraced_ns_per_conn, programs: cost_between(&before, &after, connected) });
        }
    }
    Ok(rows)
}
