//! tcpkit's overhead benchmark (issue 5): what tracing costs a machine that opens and closes TCP connections
//! as fast as it can, measured in one run on one machine. It measures:
//!
//! - the loopback connection rate untraced (the ceiling), and while `tcpkit accept`, `tcpkit tracer` and (when
//!   installed) bpftrace print every event into a file, interleaved untraced/traced so that drift cancels out;
//! - whether every event was printed: expected (from the load's own counts) against printed and lost;
//! - start-up (exec to header printed, programs attached), peak RSS and tcpkit's CPU per printed event;
//! - scaling with client threads and ring-buffer size.
//!
//! `scripts/bench.sh` builds tcpkit and runs this as root; it prints a table and writes
//! target/bench/results.json. The load runs in this process and tcpkit gets `-p <this pid>`, so tcpkit sees
//! exactly the load's events: per connection one accept (`tcpkit accept`), or a connect, an accept and two
//! closes (`tcpkit tracer`), all by this process.
use std::collections::VecDeque;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{ChildStdout, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use clap::Parser;
use nix::libc;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
use nix::sys::signal::{kill, Signal};
use nix::sys::socket::{self, sockopt, AddressFamily, Backlog, SockFlag, SockType, SockaddrStorage};
use nix::sys::time::TimeVal;
use nix::unistd::Pid;
use serde_json::{json, Value};

/// A connect that takes longer than this failed (a full listen queue drops SYNs; the retry is 1 s later).
const CONNECT_TIMEOUT: TimeVal = TimeVal::new(2, 0);
/// How long an acceptor blocks in accept() before it looks whether the clients are done.
const ACCEPT_WAKEUP: TimeVal = TimeVal::new(0, 100_000);
/// Acceptors shape: connections a client holds before closing the oldest. By then the acceptor has nearly
/// always closed the other end, so TIME_WAIT lands on the server side: client-side TIME_WAIT would use up the
/// ephemeral ports and make the kernel's port search, not tracing, the bottleneck.
const CLIENT_WINDOW: usize = 32;
/// Limits on waiting for a tracer: to be ready, to finish printing, to exit after SIGINT.
const READY_LIMIT: Duration = Duration::from_secs(10);
const PRINT_LIMIT: Duration = Duration::from_secs(10);
const EXIT_LIMIT: Duration = Duration::from_secs(10);
/// Output that has not grown for this long is complete: three times tcpkit's 100 ms flush interval.
const QUIET: Duration = Duration::from_millis(300);
const SMALL_RING: &str = "16K";
/// Other processes using more than this share of the CPUs during a run make it noise: such a pair is
/// measured again, up to PAIR_ATTEMPTS times, each after waiting up to QUIET_WAIT for the machine to be quiet.
const BUSY_SHARE: f64 = 0.05;
const PAIR_ATTEMPTS: usize = 3;
const QUIET_WAIT: Duration = Duration::from_secs(30);
const SCALING_THREADS: [usize; 3] = [1, 2, 4];
/// bpftrace, the reference peer: one line per state change of any TCP socket, as design.md §7 measured it.
/// BEGIN runs once every probe is attached, so its line says that bpftrace is ready; events start with "E ".
const BPFTRACE_PROGRAM: &str = r#"BEGIN { printf("ready\n"); }
tracepoint:sock:inet_sock_set_state { printf("E %d %s %d %d\n", pid, comm, args->oldstate, args->newstate); }"#;
/// The row of untraced runs compared with untraced runs.
const CONTROL: &str = "untraced (control)";
const BPFTRACE_MISSING: &str = "skipped: bpftrace not installed (scripts/bench.sh --with-bpftrace installs it)";

/// Targets of issue 5, for this 2-core machine.
const ACCEPT_RATIO_TARGET: f64 = 0.95;
const TRACER_RATIO_TARGET: f64 = 0.90;
const READY_TARGET_MS: f64 = 50.0;
const RSS_TARGET_KB: u64 = 16 * 1024;
const CPU_TARGET_US: f64 = 1.5;

#[derive(Parser, Debug)]
#[command(name = "overhead", about = "What tcpkit costs: loopback connection rate untraced and traced, and more")]
struct Options {
    /// Connections per measured run, all client threads together
    #[arg(long, default_value_t = 8_000)]
    connections: u64,
    /// Client threads in the interleaved comparison (scaling always runs 1, 2 and 4)
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Rounds of the comparison: untraced twice (the control), untraced then accept, untraced then tracer,
    /// untraced then bpftrace. Many short rounds: one pair's ratio varies by ±15% on a VM, their median by
    /// a few hundredths (see the control row). Even, so that each order (untraced or traced first) runs
    /// as often
    #[arg(long, default_value_t = 16)]
    rounds: usize,
    /// Start-ups timed per subcommand
    #[arg(long, default_value_t = 7)]
    startups: usize,
    /// Seconds after which a run's load gives up
    #[arg(long, default_value_t = 60)]
    time_limit: u64,
    /// Skip the scaling runs
    #[arg(long)]
    no_scaling: bool,
    /// Leave the load's threads to the scheduler instead of pinning each one to a CPU
    #[arg(long)]
    no_pin: bool,
    /// Who accepts: each client thread its own connections (loop), or one acceptor thread per family
    #[arg(long, value_enum, default_value_t = Shape::Loop)]
    shape: Shape,
    /// The tcpkit binary
    #[arg(long, default_value = env!("CARGO_BIN_EXE_tcpkit"))]
    tcpkit: PathBuf,
    /// Passed by `cargo bench`; ignored
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() -> ExitCode {
    let options = Options::parse();
    match run(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("overhead: {err}");
            ExitCode::FAILURE
        }
    }
}

fn run(options: &Options) -> io::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        return Err(io::Error::other("tcpkit loads BPF programs: run as root (scripts/bench.sh does)"));
    }
    if options.connections == 0 || options.threads == 0 || options.rounds == 0 || options.startups == 0 {
        return Err(io::Error::other("--connections, --threads, --rounds and --startups must be positive"));
    }
    let mut bench = Bench::new(options)?;
    let machine = machine_info(&bench)?;
    eprintln!("overhead: {}", machine_line(&machine));

    // One untraced run first, unreported: thread stacks, page cache and socket caches get warm.
    bench.measure(&Watcher::Untraced, bench.load(options.threads))?;
    let comparison = compare(&mut bench, options)?;
    let startup = time_startups(&bench, options.startups)?;
    let scaling = if options.no_scaling { Vec::new() } else { scale(&mut bench)? };

    let report = Report { machine, options, comparison, startup, scaling };
    print!("{}", report.table());
    let path = bench.dir.join("results.json");
    fs::write(&path, serde_json::to_string_pretty(&report.json()).expect("JSON of plain values") + "\n")?;
    println!("\nresults: {}", path.display());
    Ok(())
}

// ---- The load: K client threads connect and close, acceptor threads accept and close, all on loopback ----

#[derive(Clone, Copy, Debug)]
struct Load {
    connections: u64,
    threads: usize,
    time_limit: Duration,
    /// Pin the load's threads to CPUs (see pin_to_cpu).
    pin: bool,
    shape: Shape,
}

/// Who accepts the connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Shape {
    /// Each client thread accepts and closes its own connections: no thread ever waits for another, so the
    /// rate is what the CPUs can do (at K=1, issue 5's single-thread maximum rate).
    Loop,
    /// Acceptor threads (one per family) accept and close: every connection wakes one, which on a VM makes
    /// the rate depend on how fast an idle vCPU wakes up more than on CPU time, and noisy. When the acceptors
    /// lag (K=4), a client may also reuse the ports of a connection still queued, which the kernel then resets
    /// (nstat: TcpExtTCPSYNChallenge): tracer prints no close for it, so MISSING may exceed LOST by a few.
    Acceptors,
}

#[derive(Clone, Copy, Debug, Default)]
struct LoadResult {
    /// Client connects that succeeded, and accepts, over both families.
    connected: u64,
    accepted: u64,
    failed: u64,
    wall: Duration,
    /// The time limit ended the run early.
    gave_up: bool,
}

impl LoadResult {
    fn rate(&self) -> f64 {
        self.connected as f64 / self.wall.as_secs_f64().max(1e-9)
    }
}

/// What the acceptors need from the clients: whether they are done, and then how many connections of each
/// family succeeded (so an acceptor stops as soon as it has them all, without waiting for a timeout).
struct Progress {
    clients_done: AtomicBool,
    connected: [AtomicU64; 2],
}

struct ClientResult {
    connected: [u64; 2],
    accepted: u64,
    failed: u64,
    end: Instant,
}

struct AcceptorResult {
    accepted: u64,
    last: Option<Instant>,
}

/// Runs one load: `connections` connections, alternately to 127.0.0.1 and ::1. Its wall time runs from the
/// moment every thread is ready to the last close of either end.
fn run_load(load: Load) -> io::Result<LoadResult> {
    let listeners =
        Arc::new([listen_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?, listen_on((Ipv6Addr::LOCALHOST, 0).into())?]);
    let targets = [listeners[0].local_addr()?, listeners[1].local_addr()?];
    let acceptor_threads = if load.shape == Shape::Acceptors { listeners.len() } else { 0 };
    let progress = Arc::new(Progress { clients_done: AtomicBool::new(false), connected: Default::default() });
    let barrier = Arc::new(Barrier::new(load.threads + acceptor_threads + 1));
    let deadline = Instant::now() + load.time_limit;
    let cpus = allowed_cpus()?;

    let acceptors: Vec<_> = (0..acceptor_threads)
        .map(|family| {
            let (listeners, progress, barrier) = (listeners.clone(), progress.clone(), barrier.clone());
            let cpu = load.pin.then(|| cpus[load.threads % cpus.len()]);
            thread::spawn(move || {
                pin_to_cpu(cpu);
                accept_and_close(&listeners[family], family, &progress, &barrier, deadline)
            })
        })
        .collect();
    let clients: Vec<_> = (0..load.threads)
        .map(|t| {
            let share =
                load.connections / load.threads as u64 + u64::from((t as u64) < load.connections % load.threads as u64);
            let (listeners, barrier) = (listeners.clone(), barrier.clone());
            let cpu = load.pin.then(|| cpus[t % cpus.len()]);
            let accepts_too = load.shape == Shape::Loop;
            thread::spawn(move || {
                pin_to_cpu(cpu);
                // Threads start on different families, so that both listeners stay busy with any K.
                connect_and_close(share, t % 2, targets, accepts_too.then_some(&*listeners), &barrier, deadline)
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();

    let mut result = LoadResult::default();
    let mut end = start;
    let mut connected = [0u64; 2];
    for client in clients {
        let c = client.join().expect("client thread");
        connected[0] += c.connected[0];
        connected[1] += c.connected[1];
        result.accepted += c.accepted;
        result.failed += c.failed;
        end = end.max(c.end);
    }
    for (family, n) in connected.iter().enumerate() {
        progress.connected[family].store(*n, Ordering::Relaxed);
    }
    progress.clients_done.store(true, Ordering::Release);
    for acceptor in acceptors {
        let a = acceptor.join().expect("acceptor thread");
        result.accepted += a.accepted;
        end = end.max(a.last.unwrap_or(start));
    }
    result.connected = connected.iter().sum();
    result.wall = end - start;
    result.gave_up = Instant::now() >= deadline;
    Ok(result)
}

/// The CPUs this process may run on.
fn allowed_cpus() -> io::Result<Vec<usize>> {
    let set = sched_getaffinity(Pid::from_raw(0))?;
    let cpus: Vec<usize> = (0..CpuSet::count()).filter(|&cpu| set.is_set(cpu).unwrap_or(false)).collect();
    if cpus.is_empty() {
        return Err(io::Error::other("no CPU in this process's affinity mask"));
    }
    Ok(cpus)
}

/// Pins the calling thread to `cpu`: client threads take the CPUs in turn, both acceptors (if any) the next
/// one, so that placement is the same in every run. With the acceptors shape, left to the scheduler, a client
/// and its acceptor shared a CPU in some runs and not in others, and identical untraced runs varied by ±20%
/// (±5% pinned). tcpkit itself is never pinned: where it runs is part of what it costs.
fn pin_to_cpu(cpu: Option<usize>) {
    let Some(cpu) = cpu else { return };
    let mut set = CpuSet::new();
    if set.set(cpu).is_ok() {
        let _ = sched_setaffinity(Pid::from_raw(0), &set); // unpinned is slower to compare, not wrong
    }
}

/// A loopback listener with the largest queue the kernel allows, whose accept() wakes up every 100 ms.
fn listen_on(addr: SocketAddr) -> io::Result<TcpListener> {
    let fd = socket::socket(family_of(&addr), SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    socket::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    socket::bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))?;
    socket::listen(&fd, Backlog::MAXCONN)?;
    socket::setsockopt(&fd, sockopt::ReceiveTimeout, &ACCEPT_WAKEUP)?;
    Ok(TcpListener::from(fd))
}

fn family_of(addr: &SocketAddr) -> AddressFamily {
    if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    }
}

/// Accepts and closes at once, until every successful connect of this family was accepted; or until the
/// clients are done and nothing arrived for a whole wake-up period (a connection the kernel dropped from a
/// full queue never comes); or until the deadline.
fn accept_and_close(
    listener: &TcpListener,
    family: usize,
    progress: &Progress,
    barrier: &Barrier,
    deadline: Instant,
) -> AcceptorResult {
    let mut result = AcceptorResult { accepted: 0, last: None };
    barrier.wait();
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                drop(stream);
                result.accepted += 1;
                result.last = Some(Instant::now());
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && progress.clients_done.load(Ordering::Acquire) => break,
            Err(_) => {} // a wake-up with the clients still running, or EINTR: try again
        }
        if progress.clients_done.load(Ordering::Acquire)
            && result.accepted >= progress.connected[family].load(Ordering::Relaxed)
        {
            break;
        }
        if Instant::now() >= deadline {
            break;
        }
    }
    result
}

/// Makes `count` connections, alternating between the two families from `first`. Given the listeners (the
/// loop shape), it accepts each connection itself and closes the server end, then the client end; otherwise
/// it closes each client end CLIENT_WINDOW connections later and leaves accepting to the acceptor threads.
fn connect_and_close(
    count: u64,
    first: usize,
    targets: [SocketAddr; 2],
    listeners: Option<&[TcpListener; 2]>,
    barrier: &Barrier,
    deadline: Instant,
) -> ClientResult {
    let targets = targets.map(|addr| (family_of(&addr), SockaddrStorage::from(addr)));
    let mut result = ClientResult { connected: [0; 2], accepted: 0, failed: 0, end: Instant::now() };
    let mut open = VecDeque::with_capacity(CLIENT_WINDOW + 1);
    barrier.wait();
    for i in 0..count {
        // The clock is cheap, but not free: look at it every 256 connections.
        if i % 256 == 0 && Instant::now() >= deadline {
            break;
        }
        let family = (first + i as usize) % 2;
        let Ok(client) = connect_once(&targets[family]) else {
            result.failed += 1;
            continue;
        };
        result.connected[family] += 1;
        match listeners {
            // On loopback the connection is queued by the time connect() returns. With K > 1 this may be
            // another thread's connection: every thread accepts once per connect, so the counts still add up.
            // The server end closes first, so TIME_WAIT stays there and the client's ports never run out.
            Some(listeners) => {
                if let Ok((server, _)) = listeners[family].accept() {
                    drop(server);
                    result.accepted += 1;
                }
                drop(client);
            }
            None => {
                open.push_back(client);
                if open.len() > CLIENT_WINDOW {
                    open.pop_front();
                }
            }
        }
    }
    open.clear();
    result.end = Instant::now();
    result
}

fn connect_once((family, addr): &(AddressFamily, SockaddrStorage)) -> nix::Result<OwnedFd> {
    let fd = socket::socket(*family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    socket::setsockopt(&fd, sockopt::SendTimeout, &CONNECT_TIMEOUT)?; // bounds a blocking connect
    socket::connect(fd.as_raw_fd(), addr)?;
    Ok(fd)
}

// ---- What watches the load: nothing, tcpkit or bpftrace, as a child process printing into a file ----

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sub {
    Accept,
    Tracer,
}

impl Sub {
    fn name(self) -> &'static str {
        match self {
            Sub::Accept => "accept",
            Sub::Tracer => "tracer",
        }
    }

    /// Lines before the first event: accept prints a header, tracer a banner and a header.
    fn header_lines(self) -> u64 {
        match self {
            Sub::Accept => 1,
            Sub::Tracer => 2,
        }
    }

    /// Events the load makes tcpkit print. Every accept is one; tracer adds a connect and a close for every
    /// client end that connected, and a close for every accepted server end (a connection the kernel dropped
    /// from a full queue has no server end, hence connects and accepts counted apart).
    fn expected_events(self, load: &LoadResult) -> u64 {
        match self {
            Sub::Accept => load.accepted,
            Sub::Tracer => 2 * load.connected + 2 * load.accepted,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Watcher {
    Untraced,
    Tcpkit { sub: Sub, ring: Option<&'static str> },
    Bpftrace(PathBuf),
}

impl Watcher {
    fn label(&self) -> String {
        match self {
            Watcher::Untraced => "untraced".into(),
            Watcher::Tcpkit { sub, ring: None } => format!("tcpkit {}", sub.name()),
            Watcher::Tcpkit { sub, ring: Some(ring) } => format!("tcpkit {} --ring-size {ring}", sub.name()),
            Watcher::Bpftrace(_) => "bpftrace".into(),
        }
    }
}

/// A running tracer whose stdout goes to a file (the fastest place it can write to).
struct Session {
    pid: Pid,
    out: PathBuf,
    err: PathBuf,
    kind: OutputKind,
    cpu_at_ready: Duration,
    switches_at_ready: u64,
}

#[derive(Clone, Copy, Debug)]
enum OutputKind {
    Tcpkit(Sub),
    Bpftrace,
}

impl OutputKind {
    fn is_ready(self, text: &str) -> bool {
        match self {
            OutputKind::Tcpkit(sub) => count_lines(text.as_bytes()) >= sub.header_lines(),
            OutputKind::Bpftrace => text.lines().any(|l| l == "ready"),
        }
    }

    fn events(self, text: &str) -> u64 {
        match self {
            OutputKind::Tcpkit(sub) => count_lines(text.as_bytes()).saturating_sub(sub.header_lines()),
            OutputKind::Bpftrace => text.lines().filter(|l| l.starts_with("E ")).count() as u64,
        }
    }

    /// Events lost, as the tracer reports them: tcpkit once on stderr at exit, bpftrace as it goes.
    fn lost(self, stdout: &str, stderr: &str) -> u64 {
        match self {
            OutputKind::Tcpkit(_) => {
                stderr.lines().filter_map(|l| number_between(l, "tcpkit: ", " events lost in total")).sum()
            }
            OutputKind::Bpftrace => {
                stdout.lines().chain(stderr.lines()).filter_map(|l| number_between(l, "Lost ", " events")).sum()
            }
        }
    }
}

fn number_between(line: &str, before: &str, after: &str) -> Option<u64> {
    line.trim().strip_prefix(before)?.split_once(after)?.0.trim().parse().ok()
}

fn count_lines(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|&&b| b == b'\n').count() as u64
}

/// What a tracer did in one run.
#[derive(Clone, Debug)]
struct Traced {
    expected: Option<u64>,
    printed: u64,
    lost: u64,
    /// user+sys over its whole life; and from ready to the moment it was stopped, which leaves out the
    /// fixed costs of start-up (loading, verifying, attaching) and exit (detaching, freeing).
    cpu: Duration,
    cpu_events: Duration,
    /// Times it went to sleep while tracing (voluntary context switches): each one is a wake-up, which the
    /// traced processes pay for too.
    wakeups: u64,
    peak_rss_kb: u64,
    exit: String,
    exited_ok: bool,
}

impl Traced {
    fn us_per_event(&self, cpu: Duration) -> Option<f64> {
        (self.printed > 0).then(|| cpu.as_secs_f64() * 1e6 / self.printed as f64)
    }

    fn wakeups_per_event(&self) -> Option<f64> {
        (self.printed > 0).then(|| self.wakeups as f64 / self.printed as f64)
    }

    fn complete(&self) -> bool {
        self.exited_ok && self.lost == 0 && self.expected.is_none_or(|e| e == self.printed)
    }
}

#[derive(Clone, Debug)]
struct Run {
    label: String,
    threads: usize,
    load: LoadResult,
    traced: Option<Traced>,
    /// CPU that other processes used during the load, as a share of the machine: a run that had to share
    /// the machine is noise, and says so.
    background: f64,
}

/// Where everything runs from, and the numbering of output files.
struct Bench {
    tcpkit: PathBuf,
    dir: PathBuf,
    connections: u64,
    time_limit: Duration,
    pin: bool,
    shape: Shape,
    runs: usize,
}

impl Bench {
    fn new(options: &Options) -> io::Result<Bench> {
        // target/release/tcpkit -> target/bench, wherever the target directory is.
        let target = Path::new(env!("CARGO_BIN_EXE_tcpkit")).ancestors().nth(2).unwrap_or(Path::new("target"));
        let dir = target.join("bench");
        fs::create_dir_all(&dir)?;
        Ok(Bench {
            tcpkit: options.tcpkit.clone(),
            dir,
            connections: options.connections,
            time_limit: Duration::from_secs(options.time_limit),
            pin: !options.no_pin,
            shape: options.shape,
            runs: 0,
        })
    }

    fn load(&self, threads: usize) -> Load {
        Load { connections: self.connections, threads, time_limit: self.time_limit, pin: self.pin, shape: self.shape }
    }

    fn tcpkit_command(&self, sub: Sub, ring: Option<&str>) -> Command {
        let mut command = Command::new(&self.tcpkit);
        command.arg(sub.name()).arg("-p").arg(std::process::id().to_string()).stdin(Stdio::null());
        if let Some(ring) = ring {
            command.args(["--ring-size", ring]);
        }
        command
    }

    /// One run of the load under `watcher`; a tracer is ready before the load starts and has printed
    /// everything before it is stopped.
    fn measure(&mut self, watcher: &Watcher, load: Load) -> io::Result<Run> {
        self.runs += 1;
        let words: Vec<String> = watcher
            .label()
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(str::to_string)
            .collect();
        let name = format!("{:02}-{}", self.runs, words.join("-"));
        let session = match watcher {
            Watcher::Untraced => None,
            Watcher::Tcpkit { sub, ring } => {
                Some(self.start(self.tcpkit_command(*sub, *ring), &name, OutputKind::Tcpkit(*sub))?)
            }
            Watcher::Bpftrace(path) => {
                let mut command = Command::new(path);
                command.args(["-e", BPFTRACE_PROGRAM]).stdin(Stdio::null());
                Some(self.start(command, &name, OutputKind::Bpftrace)?)
            }
        };
        let exclude = [Pid::this(), session.as_ref().map_or(Pid::this(), |s| s.pid)];
        let before = other_processes_cpu(&exclude);
        let result = run_load(load)?;
        let background = background_share(&before, &other_processes_cpu(&exclude), result.wall);
        let traced = match (session, watcher) {
            (None, _) => None,
            (Some(session), Watcher::Tcpkit { sub, .. }) => Some(session.finish(Some(sub.expected_events(&result)))?),
            (Some(session), _) => Some(session.finish(None)?),
        };
        let run = Run { label: watcher.label(), threads: load.threads, load: result, traced, background };
        eprintln!("overhead: {}", progress_line(&run));
        Ok(run)
    }

    /// Starts a tracer with its output in target/bench/NAME.out and .err, and waits until it is ready.
    fn start(&self, mut command: Command, name: &str, kind: OutputKind) -> io::Result<Session> {
        let out = self.dir.join(format!("{name}.out"));
        let err = self.dir.join(format!("{name}.err"));
        let mut child = command.stdout(File::create(&out)?).stderr(File::create(&err)?).spawn()?;
        let pid = Pid::from_raw(child.id() as i32);
        let deadline = Instant::now() + READY_LIMIT;
        loop {
            if kind.is_ready(&fs::read_to_string(&out).unwrap_or_default()) {
                let (cpu_at_ready, switches_at_ready) = (cpu_time_so_far(pid), voluntary_switches(pid));
                return Ok(Session { pid, out, err, kind, cpu_at_ready, switches_at_ready });
            }
            if let Some(status) = child.try_wait()? {
                let stderr = fs::read_to_string(&err).unwrap_or_default();
                return Err(io::Error::other(format!(
                    "{name} exited before it was ready ({status}): {}",
                    stderr.trim()
                )));
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(io::Error::other(format!("{name} was not ready in {READY_LIMIT:?}")));
            }
            thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Session {
    /// Waits until the output is complete, then stops the tracer and collects what it did.
    fn finish(self, expected: Option<u64>) -> io::Result<Traced> {
        let target_lines = match (self.kind, expected) {
            (OutputKind::Tcpkit(sub), Some(n)) => Some(n + sub.header_lines()),
            _ => None,
        };
        wait_for_output(&self.out, target_lines)?;
        let peak_rss_kb = vm_hwm_kb(self.pid);
        let cpu_before_stop = cpu_time_so_far(self.pid);
        let switches_before_stop = voluntary_switches(self.pid);
        let exit = stop(self.pid)?;
        let stdout = fs::read_to_string(&self.out)?;
        let stderr = fs::read_to_string(&self.err)?;
        Ok(Traced {
            expected,
            printed: self.kind.events(&stdout),
            lost: self.kind.lost(&stdout, &stderr),
            cpu: exit.cpu,
            cpu_events: cpu_before_stop.saturating_sub(self.cpu_at_ready),
            wakeups: switches_before_stop.saturating_sub(self.switches_at_ready),
            peak_rss_kb,
            exited_ok: exit.success(),
            exit: exit.describe(),
        })
    }
}

/// Waits until the file has `target_lines` lines, or has stopped growing, within PRINT_LIMIT.
fn wait_for_output(path: &Path, target_lines: Option<u64>) -> io::Result<()> {
    let mut file = File::open(path)?;
    let (mut lines, mut offset) = (0u64, 0u64);
    let mut buf = vec![0u8; 1 << 16];
    let deadline = Instant::now() + PRINT_LIMIT;
    let mut last_growth = Instant::now();
    loop {
        // Counts only what was appended since the last look: the file can be megabytes.
        file.seek(SeekFrom::Start(offset))?;
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            offset += n as u64;
            lines += count_lines(&buf[..n]);
            last_growth = Instant::now();
        }
        let now = Instant::now();
        if target_lines.is_some_and(|t| lines >= t) || now - last_growth >= QUIET || now >= deadline {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// How a child process ended, with what it used.
struct Exit {
    status: i32,
    cpu: Duration,
}

impl Exit {
    fn success(&self) -> bool {
        libc::WIFEXITED(self.status) && libc::WEXITSTATUS(self.status) == 0
    }

    fn describe(&self) -> String {
        if libc::WIFEXITED(self.status) {
            format!("exit {}", libc::WEXITSTATUS(self.status))
        } else if libc::WIFSIGNALED(self.status) {
            format!("killed by signal {}", libc::WTERMSIG(self.status))
        } else {
            format!("status {:#x}", self.status)
        }
    }
}

/// SIGINT, the clean stop of both tcpkit and bpftrace; SIGKILL if it is still there after EXIT_LIMIT.
fn stop(pid: Pid) -> io::Result<Exit> {
    kill(pid, Signal::SIGINT)?;
    let deadline = Instant::now() + EXIT_LIMIT;
    loop {
        if let Some(exit) = wait4(pid, libc::WNOHANG)? {
            return Ok(exit);
        }
        if Instant::now() >= deadline {
            kill(pid, Signal::SIGKILL)?;
            return wait4(pid, 0)?.ok_or_else(|| io::Error::other("wait4 returned nothing"));
        }
        thread::sleep(Duration::from_millis(2));
    }
}

/// wait4(2): the only wait that also gives the child's user+sys time (µs). Not its ru_maxrss: a child
/// started with vfork (as Command does) inherits this process's peak RSS at exec, so VmHWM is read instead.
fn wait4(pid: Pid, flags: i32) -> io::Result<Option<Exit>> {
    let mut status = 0;
    // SAFETY: rusage is plain data, for which all zeroes is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: both pointers are to live locals of the types wait4 expects.
        let rc = unsafe { libc::wait4(pid.as_raw(), &mut status, flags, &mut usage) };
        if rc == 0 {
            return Ok(None);
        }
        if rc == pid.as_raw() {
            let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
            let cpu = time(usage.ru_utime) + time(usage.ru_stime);
            return Ok(Some(Exit { status, cpu }));
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// CPU time the process has used so far, from each thread's time on a CPU in /proc/PID/task/*/schedstat
/// (ns; the same clock wait4's user+sys total comes from).
fn cpu_time_so_far(pid: Pid) -> Duration {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else { return Duration::ZERO };
    let ns: u64 = tasks
        .flatten()
        .filter_map(|task| fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    Duration::from_nanos(ns)
}

/// Peak RSS so far, VmHWM in /proc/PID/status (kB), read just before the stop; 0 if it cannot be read.
fn vm_hwm_kb(pid: Pid) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Voluntary context switches of the process's main thread (tcpkit has only that one).
fn voluntary_switches(pid: Pid) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix("voluntary_ctxt_switches:")?.trim().parse().ok()).unwrap_or(0)
}

/// User+sys CPU ticks of every user-space process but `exclude`, by PID, from /proc/PID/stat. Kernel threads
/// are left out: softirq threads may be doing the load's own packets.
fn other_processes_cpu(exclude: &[Pid]) -> Vec<(i32, u64)> {
    const PF_KTHREAD: u64 = 0x0020_0000;
    let Ok(entries) = fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| !exclude.contains(&Pid::from_raw(*pid)))
        .filter_map(|pid| {
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // After the command name, which may hold spaces and parentheses: state, ppid, ... (man 5 proc).
            let fields: Vec<u64> =
                stat.rsplit_once(')')?.1.split_whitespace().skip(1).map(|f| f.parse().unwrap_or(0)).collect();
            let (flags, utime, stime) = (*fields.get(5)?, *fields.get(10)?, *fields.get(11)?);
            (flags & PF_KTHREAD == 0).then_some((pid, utime + stime))
        })
        .collect()
}

/// The share of the machine's CPUs that other processes used between two snapshots `wall` apart.
fn background_share(before: &[(i32, u64)], after: &[(i32, u64)], wall: Duration) -> f64 {
    let ticks: u64 =
        after.iter().map(|(pid, t)| t - before.iter().find(|(p, _)| p == pid).map_or(0, |(_, b)| (*b).min(*t))).sum();
    // SAFETY: sysconf only reads a configuration value.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let cpus = thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    ticks as f64 / per_second / (wall.as_secs_f64().max(1e-3) * cpus)
}

// ---- The measurements ----

/// An untraced run and the traced run right after it.
#[derive(Clone, Debug)]
struct Pair {
    base: Run,
    traced: Run,
}

impl Pair {
    fn ratio(&self) -> f64 {
        self.traced.load.rate() / self.base.load.rate()
    }

    fn background(&self) -> f64 {
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
struct Comparison {
    rows: Vec<(String, Vec<Pair>)>,
    /// Why there is no bpftrace row, when there is none.
    bpftrace_skipped: Option<&'static str>,
}

fn compare(bench: &mut Bench, options: &Options) -> io::Result<Comparison> {
    let mut watchers =
        vec![Watcher::Tcpkit { sub: Sub::Accept, ring: None }, Watcher::Tcpkit { sub: Sub::Tracer, ring: None }];
    let bpftrace = find_in_path("bpftrace");
    if let Some(path) = &bpftrace {
        watchers.push(Watcher::Bpftrace(path.clone()));
    }
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
    Ok(Comparison { rows, bpftrace_skipped: bpftrace.is_none().then_some(BPFTRACE_MISSING) })
}

/// Start-up times (exec to header line) of each subcommand, interleaved; each after a quiet moment.
struct Startup {
    accept: Vec<Duration>,
    tracer: Vec<Duration>,
}

fn time_startups(bench: &Bench, count: usize) -> io::Result<Startup> {
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
fn scale(bench: &mut Bench) -> io::Result<Vec<Pair>> {
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

// ---- The machine ----

struct Machine {
    kernel: String,
    cpus: usize,
    cpu_model: String,
    date: String,
    tcpkit_version: String,
    backend: String,
    bpftrace_version: Option<String>,
}

fn machine_info(bench: &Bench) -> io::Result<Machine> {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    Ok(Machine {
        kernel: fs::read_to_string("/proc/sys/kernel/osrelease")?.trim().to_string(),
        cpus: thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model: cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name")?.split_once(':').map(|(_, m)| m.trim().to_string()))
            .unwrap_or_else(|| "unknown".into()),
        date: chrono::Local::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
        tcpkit_version: command_output(Command::new(&bench.tcpkit).arg("--version"))?.0.trim().to_string(),
        backend: tcpkit_backend(bench)?,
        bpftrace_version: find_in_path("bpftrace")
            .and_then(|b| command_output(Command::new(b).arg("--version")).ok())
            .map(|(out, _)| out.trim().to_string()),
    })
}

/// The backend tcpkit picks on this kernel, as `--debug` says on stderr.
fn tcpkit_backend(bench: &Bench) -> io::Result<String> {
    let mut command = bench.tcpkit_command(Sub::Accept, None);
    command.args(["--debug", "-d", "0.1"]);
    let (_, stderr) = command_output(&mut command)?;
    stderr
        .lines()
        .find_map(|l| l.strip_prefix("tcpkit: using the ")?.strip_suffix(" backend"))
        .map(str::to_string)
        .ok_or_else(|| io::Error::other(format!("tcpkit accept --debug named no backend: {}", stderr.trim())))
}

fn command_output(command: &mut Command) -> io::Result<(String, String)> {
    let output = command.stdin(Stdio::null()).output()?;
    Ok((String::from_utf8_lossy(&output.stdout).into_owned(), String::from_utf8_lossy(&output.stderr).into_owned()))
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?).map(|dir| dir.join(name)).find(|p| p.is_file())
}

// ---- The report: a table on stdout, JSON in target/bench/results.json ----

struct Report<'a> {
    machine: Machine,
    options: &'a Options,
    comparison: Comparison,
    startup: Startup,
    scaling: Vec<Pair>,
}

/// A watcher's runs over all rounds, summed up.
struct Summary {
    rate: f64,
    ratio: f64,
    /// First and third quartiles of the pairs' ratios.
    ratio_iqr: (f64, f64),
    expected: Option<u64>,
    printed: u64,
    lost: u64,
    us_per_event: Option<f64>,
    us_per_event_all: Option<f64>,
    peak_rss_kb: u64,
    wakeups_per_event: Option<f64>,
    all_exited_ok: bool,
    failed_connects: u64,
}

fn summarize(pairs: &[Pair]) -> Summary {
    let traced: Vec<&Traced> = pairs.iter().filter_map(|p| p.traced.traced.as_ref()).collect();
    Summary {
        rate: median(pairs.iter().map(|p| p.traced.load.rate()).collect()),
        ratio: median(pairs.iter().map(Pair::ratio).collect()),
        ratio_iqr: quartiles(pairs.iter().map(Pair::ratio).collect()),
        expected: traced.iter().map(|t| t.expected).sum(),
        printed: traced.iter().map(|t| t.printed).sum(),
        lost: traced.iter().map(|t| t.lost).sum(),
        us_per_event: median_of(traced.iter().map(|t| t.us_per_event(t.cpu_events))),
        us_per_event_all: median_of(traced.iter().map(|t| t.us_per_event(t.cpu))),
        peak_rss_kb: traced.iter().map(|t| t.peak_rss_kb).max().unwrap_or(0),
        wakeups_per_event: median_of(traced.iter().map(|t| t.wakeups_per_event())),
        all_exited_ok: traced.iter().all(|t| t.exited_ok),
        failed_connects: pairs.iter().map(|p| p.base.load.failed + p.traced.load.failed).sum(),
    }
}

impl Summary {
    fn is_tcpkit_complete(&self) -> bool {
        self.all_exited_ok && self.lost == 0 && self.expected == Some(self.printed)
    }
}

/// Whether every event was printed, in words: a run that lost events says so.
fn completeness(expected: Option<u64>, printed: u64, lost: u64, exited_ok: bool) -> String {
    let mut words = Vec::new();
    if lost > 0 {
        words.push(format!("LOST {lost}"));
    }
    match expected {
        Some(e) if printed < e => words.push(format!("MISSING {}", e - printed)),
        Some(e) if printed > e => words.push(format!("EXTRA {}", printed - e)),
        Some(_) if words.is_empty() => words.push("all printed".into()),
        Some(_) => {}
        None => words.push("not counted".into()),
    }
    if !exited_ok {
        words.push("BAD EXIT".into());
    }
    words.join(", ")
}

impl Report<'_> {
    fn table(&self) -> String {
        let mut t = String::new();
        t += "tcpkit overhead benchmark\n";
        t += &format!("{}\n", machine_line(&self.machine));
        t += &load_line(self.options);
        t += &self.comparison_table();
        t += &self.rounds_table();
        t += &self.startup_table();
        if !self.scaling.is_empty() {
            t += &self.scaling_table();
        }
        t += &self.targets_table();
        t
    }

    fn comparison_table(&self) -> String {
        let row = |cells: [&str; 12]| {
            format!(
                "{:<18} {:>8} {:>8} {:>11} {:>9} {:>9} {:>6}  {:<14} {:>6} {:>6} {:>6} {:>8}\n",
                cells[0],
                cells[1],
                cells[2],
                cells[3],
                cells[4],
                cells[5],
                cells[6],
                cells[7],
                cells[8],
                cells[9],
                cells[10],
                cells[11]
            )
        };
        let mut t = row([
            "",
            "conn/s",
            "traced/",
            "quartiles",
            "events",
            "printed",
            "lost",
            "complete",
            "CPU",
            "CPU",
            "wake-",
            "peak",
        ]);
        t += &row(["", "", "untraced", "of ratios", "expected", "", "", "", "µs/ev", "all", "ups/ev", "RSS"]);
        let untraced = median(self.all_runs().filter(|r| r.traced.is_none()).map(|r| r.load.rate()).collect());
        t += &row(["untraced", &thousands(untraced as u64), "", "", "", "", "", "", "", "", "", ""]);
        for (label, pairs) in &self.comparison.rows {
            let s = summarize(pairs);
            let iqr = format!("{:.3}-{:.3}", s.ratio_iqr.0, s.ratio_iqr.1);
            if label == CONTROL {
                t += &row([
                    label,
                    &thousands(s.rate as u64),
                    &format!("{:.3}", s.ratio),
                    &iqr,
                    "",
                    "",
                    "",
                    "",
                    "",
                    "",
                    "",
                    "",
                ]);
                continue;
            }
            let mut complete = completeness(s.expected, s.printed, s.lost, s.all_exited_ok);
            if s.failed_connects > 0 {
                complete += &format!(", {} connects failed", s.failed_connects);
            }
            let two_places = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.2}"));
            t += &row([
                label,
                &thousands(s.rate as u64),
                &format!("{:.3}", s.ratio),
                &iqr,
                &s.expected.map_or("-".into(), thousands),
                &thousands(s.printed),
                &s.lost.to_string(),
                &complete,
                &two_places(s.us_per_event),
                &two_places(s.us_per_event_all),
                &two_places(s.wakeups_per_event),
                &format!("{:.1} MB", s.peak_rss_kb as f64 / 1024.0),
            ]);
        }
        if let Some(skipped) = self.comparison.bpftrace_skipped {
            t += &format!("{:<18} {skipped}\n", "bpftrace");
        }
        t += "conn/s and ratios: medians over rounds, each traced run against the untraced run next to it; the \
              control\nrow compares untraced runs in the same way, so its distance from 1 is the method's own error. \
              Events: sums\nover rounds. CPU µs/ev: the tracer's user+sys per printed event while tracing (ready to \
              stop); all: over its\nwhole life, start-up and exit included. Wake-ups/ev: times the tracer slept and \
              was woken, per printed\nevent. bpftrace prints every TCP state change on the machine, so its expected \
              count is not known.\n\n";
        t
    }

    /// Every measured run, comparison and scaling.
    fn all_runs(&self) -> impl Iterator<Item = &Run> {
        let comparison = self.comparison.rows.iter().flat_map(|(_, pairs)| pairs.iter());
        comparison.chain(self.scaling.iter()).flat_map(|p| [&p.base, &p.traced])
    }

    fn rounds_table(&self) -> String {
        let mut t = String::from(
            "each round: conn/s untraced -> traced (ratio); the untraced run goes first in odd rounds, second in even ones\n",
        );
        for round in 0..self.options.rounds {
            let cells: Vec<String> = self
                .comparison
                .rows
                .iter()
                .filter_map(|(label, pairs)| Some((label.trim_start_matches("tcpkit "), pairs.get(round)?)))
                .map(|(label, p)| format!("{label}: {}{}", pair_cell(p), busy_note(p)))
                .collect();
            t += &format!("  {}  {}\n", round + 1, cells.join("   "));
        }
        let busy: Vec<f64> = self.all_runs().map(|r| r.background).collect();
        let note = match busy.iter().any(|&b| b > BUSY_SHARE) {
            true => format!(": pairs marked BUSY were still busy after {PAIR_ATTEMPTS} attempts"),
            false => String::new(),
        };
        t += &format!(
            "other processes used {:.1}% of the CPUs during a measured run (median), {:.1}% at most{note}\n\n",
            median(busy.clone()) * 100.0,
            busy.iter().copied().fold(0.0, f64::max) * 100.0,
        );
        t
    }

    fn startup_table(&self) -> String {
        let mut t = format!(
            "start-up, exec -> ready (header printed, programs attached), {} runs each:\n",
            self.startup.accept.len()
        );
        for (label, times) in [("tcpkit accept", &self.startup.accept), ("tcpkit tracer", &self.startup.tracer)] {
            let ms: Vec<f64> = times.iter().map(|d| d.as_secs_f64() * 1e3).collect();
            t += &format!(
                "  {label:<14} median {:.1} ms (min {:.1}, max {:.1})\n",
                median(ms.clone()),
                ms.iter().copied().fold(f64::INFINITY, f64::min),
                ms.iter().copied().fold(0.0, f64::max)
            );
        }
        t + "\n"
    }

    fn scaling_table(&self) -> String {
        let mut t = String::from("scaling: tcpkit tracer, one run each, against the untraced run just before it\n");
        t += &format!(
            "  {:>1}  {:<7} {:>8} {:>8} {:>6} {:>9} {:>6} {:>6} {:>6}  {}\n",
            "K", "ring", "untraced", "traced", "ratio", "events/s", "lost", "CPU", "wake-", "complete"
        );
        t += &format!(
            "  {:>1}  {:<7} {:>8} {:>8} {:>6} {:>9} {:>6} {:>6} {:>6}\n",
            "", "", "", "", "", "", "", "µs/ev", "ups/ev"
        );
        for pair in &self.scaling {
            let Some(traced) = &pair.traced.traced else { continue };
            let ring = if pair.traced.label.contains(SMALL_RING) { SMALL_RING } else { "default" };
            let events_per_s = traced.expected.unwrap_or(traced.printed) as f64 / pair.traced.load.wall.as_secs_f64();
            let two_places = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.2}"));
            t += &format!(
                "  {:>1}  {:<7} {:>8} {:>8} {:>6.3} {:>9} {:>6} {:>6} {:>6}  {}{}\n",
                pair.traced.threads,
                ring,
                thousands(pair.base.load.rate() as u64),
                thousands(pair.traced.load.rate() as u64),
                pair.ratio(),
                thousands(events_per_s as u64),
                traced.lost,
                two_places(traced.us_per_event(traced.cpu_events)),
                two_places(traced.wakeups_per_event()),
                completeness(traced.expected, traced.printed, traced.lost, traced.exited_ok),
                busy_note(pair)
            );
        }
        t + "  (K: client threads; untraced, traced: conn/s; events/s: events the load made per second)\n\n"
    }

    fn targets_table(&self) -> String {
        let mut t = format!(
            "targets (issue 5, at {} client thread{}):\n",
            self.options.threads,
            if self.options.threads == 1 { "" } else { "s" }
        );
        t += &format!("  {:<50} {:<22} {}\n", "target", "measured", "met");
        for target in self.targets() {
            t += &format!("  {:<50} {:<22} {}\n", target.name, target.measured, if target.met { "yes" } else { "NO" });
        }
        t
    }

    fn tcpkit_rows(&self) -> Vec<(Sub, Summary)> {
        let rows = &self.comparison.rows;
        [Sub::Accept, Sub::Tracer]
            .into_iter()
            .filter_map(|sub| {
                let label = Watcher::Tcpkit { sub, ring: None }.label();
                rows.iter().find(|(l, _)| *l == label).map(|(_, pairs)| (sub, summarize(pairs)))
            })
            .collect()
    }

    fn targets(&self) -> Vec<Target> {
        let rows = self.tcpkit_rows();
        let mut targets = Vec::new();
        for (sub, s) in &rows {
            let goal = if *sub == Sub::Accept { ACCEPT_RATIO_TARGET } else { TRACER_RATIO_TARGET };
            targets.push(Target {
                name: format!("{} traced/untraced >= {goal:.2}", sub.name()),
                measured: format!("{:.3}", s.ratio),
                met: s.ratio >= goal,
            });
        }
        let lost: u64 = rows.iter().map(|(_, s)| s.lost).sum();
        let complete = rows.iter().all(|(_, s)| s.is_tcpkit_complete());
        targets.push(Target {
            name: "no lost events, default ring (accept and tracer)".into(),
            measured: if complete { "0 lost, all printed".into() } else { format!("{lost} lost, see complete") },
            met: complete,
        });
        let ready = [median_ms(&self.startup.accept), median_ms(&self.startup.tracer)];
        targets.push(Target {
            name: format!("exec -> ready <= {READY_TARGET_MS:.0} ms (median; accept, tracer)"),
            measured: format!("{:.1} ms, {:.1} ms", ready[0], ready[1]),
            met: ready.iter().all(|&ms| ms <= READY_TARGET_MS),
        });
        let rss = rows.iter().map(|(_, s)| s.peak_rss_kb).max().unwrap_or(0);
        targets.push(Target {
            name: format!("peak RSS <= {} MB", RSS_TARGET_KB / 1024),
            measured: format!("{:.1} MB", rss as f64 / 1024.0),
            met: rss > 0 && rss <= RSS_TARGET_KB,
        });
        let cpu: Vec<f64> = rows.iter().filter_map(|(_, s)| s.us_per_event).collect();
        let worst = cpu.iter().copied().fold(0.0, f64::max);
        targets.push(Target {
            name: format!("tcpkit CPU <= {CPU_TARGET_US} µs per printed event (tracing)"),
            measured: cpu.iter().map(|v| format!("{v:.2} µs")).collect::<Vec<_>>().join(", "),
            met: !cpu.is_empty() && worst <= CPU_TARGET_US,
        });
        targets
    }

    fn json(&self) -> Value {
        let m = &self.machine;
        let o = self.options;
        json!({
            "machine": {
                "kernel": m.kernel, "cpus": m.cpus, "cpu_model": m.cpu_model, "date": m.date,
                "tcpkit_version": m.tcpkit_version, "backend": m.backend, "bpftrace_version": m.bpftrace_version,
            },
            "options": {
                "connections": o.connections, "threads": o.threads, "rounds": o.rounds, "startups": o.startups,
                "time_limit_s": o.time_limit, "small_ring": SMALL_RING, "pinned": !o.no_pin, "shape": format!("{:?}", o.shape).to_lowercase(),
            },
            "comparison": self.comparison.rows.iter().map(|(label, pairs)| {
                let s = summarize(pairs);
                json!({
                    "watcher": label,
                    "conn_per_s_median": s.rate,
                    "ratio_median": s.ratio,
                    "ratio_quartiles": [s.ratio_iqr.0, s.ratio_iqr.1],
                    "events_expected": s.expected,
                    "printed": s.printed,
                    "lost": s.lost,
                    "complete": completeness(s.expected, s.printed, s.lost, s.all_exited_ok),
                    "cpu_us_per_event_tracing_median": s.us_per_event,
                    "cpu_us_per_event_whole_life_median": s.us_per_event_all,
                    "peak_rss_kb": s.peak_rss_kb,
                    "wakeups_per_event_median": s.wakeups_per_event,
                    "pairs": pairs.iter().map(pair_json).collect::<Vec<_>>(),
                })
            }).collect::<Vec<_>>(),
            "bpftrace_skipped": self.comparison.bpftrace_skipped,
            "startup_ms": {
                "accept": { "median": median_ms(&self.startup.accept), "runs": ms_list(&self.startup.accept) },
                "tracer": { "median": median_ms(&self.startup.tracer), "runs": ms_list(&self.startup.tracer) },
            },
            "scaling": self.scaling.iter().map(pair_json).collect::<Vec<_>>(),
            "targets": self.targets().iter().map(|t| json!({ "target": t.name, "measured": t.measured, "met": t.met })).collect::<Vec<_>>(),
        })
    }
}

struct Target {
    name: String,
    measured: String,
    met: bool,
}

fn pair_cell(pair: &Pair) -> String {
    format!(
        "{} -> {} ({:.3})",
        thousands(pair.base.load.rate() as u64),
        thousands(pair.traced.load.rate() as u64),
        pair.ratio()
    )
}

/// A mark on a pair during which other processes used more than BUSY_SHARE of the machine.
fn busy_note(pair: &Pair) -> String {
    let busy = pair.background();
    if busy > BUSY_SHARE {
        format!(" BUSY {:.0}%", busy * 100.0)
    } else {
        String::new()
    }
}

fn pair_json(pair: &Pair) -> Value {
    json!({ "untraced": run_json(&pair.base), "traced": run_json(&pair.traced), "ratio": pair.ratio() })
}

fn run_json(run: &Run) -> Value {
    let l = &run.load;
    let mut v = json!({
        "watcher": run.label, "threads": run.threads, "connected": l.connected, "accepted": l.accepted,
        "failed_connects": l.failed, "gave_up": l.gave_up, "wall_s": l.wall.as_secs_f64(), "conn_per_s": l.rate(),
        "background_cpu_share": run.background,
    });
    if let Some(t) = &run.traced {
        v["tracer"] = json!({
            "events_expected": t.expected, "printed": t.printed, "lost": t.lost, "complete": t.complete(),
            "cpu_us_whole_life": t.cpu.as_micros() as u64, "cpu_us_tracing": t.cpu_events.as_micros() as u64,
            "cpu_us_per_event_whole_life": t.us_per_event(t.cpu), "cpu_us_per_event_tracing": t.us_per_event(t.cpu_events),
            "wakeups": t.wakeups, "wakeups_per_event": t.wakeups_per_event(),
            "peak_rss_kb": t.peak_rss_kb, "exit": t.exit,
        });
    }
    v
}

fn load_line(o: &Options) -> String {
    let plural = |n: usize| if n == 1 { "" } else { "s" };
    let shape = match o.shape {
        Shape::Loop => "each connecting, accepting and closing both ends",
        Shape::Acceptors => "connecting and closing, one acceptor thread per family accepting and closing",
    };
    format!(
        "load: {} loopback connections per run, IPv4 and IPv6 alternately; {} client thread{}, {shape}; threads {};\n\
         {} round{}, untraced and traced runs interleaved\n\n",
        thousands(o.connections),
        o.threads,
        plural(o.threads),
        if o.no_pin { "unpinned" } else { "pinned to CPUs (tcpkit is not)" },
        o.rounds,
        plural(o.rounds),
    )
}

fn machine_line(m: &Machine) -> String {
    format!(
        "kernel {}, {} CPUs ({}), {}, {} backend, {}",
        m.kernel, m.cpus, m.cpu_model, m.tcpkit_version, m.backend, m.date
    )
}

fn progress_line(run: &Run) -> String {
    let mut line = format!("  {:<32} {:>9} conn/s", run.label, thousands(run.load.rate() as u64));
    if let Some(t) = &run.traced {
        line += &format!(
            ", printed {} of {}, lost {}, {}",
            thousands(t.printed),
            t.expected.map_or("?".into(), thousands),
            t.lost,
            t.exit
        );
    }
    if run.load.failed > 0 || run.load.gave_up {
        line += &format!(", {} connects failed{}", run.load.failed, if run.load.gave_up { ", GAVE UP" } else { "" });
    }
    line
}

fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

/// First and third quartiles (medians of the lower and upper halves).
fn quartiles(mut values: Vec<f64>) -> (f64, f64) {
    values.sort_by(f64::total_cmp);
    let half = values.len() / 2;
    let upper = values.split_off(values.len() - half);
    values.truncate(half);
    (median(values), median(upper))
}

fn median_of(values: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let values: Vec<f64> = values.flatten().collect();
    (!values.is_empty()).then(|| median(values))
}

fn median_ms(times: &[Duration]) -> f64 {
    median(ms_list(times))
}

fn ms_list(times: &[Duration]) -> Vec<f64> {
    times.iter().map(|d| d.as_secs_f64() * 1e3).collect()
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}
