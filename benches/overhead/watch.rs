//! What watches the load: nothing, tcpkit or bpftrace, as a child process printing into a file; or
//! `tcpkit metrics`, which prints nothing and is scraped once at the end.
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::libc;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::bpf_cost::{counters_of, ProgCounters};
use crate::figures::thousands;
use crate::load::{run_load, Load, LoadResult, Shape};
use crate::options::{Options, READY_LIMIT};
use crate::scrape;

/// Limits on waiting for a tracer: to finish printing, to exit after SIGINT.
const PRINT_LIMIT: Duration = Duration::from_secs(10);
const EXIT_LIMIT: Duration = Duration::from_secs(10);
/// Output that has not grown for this long is complete: three times tcpkit's 100 ms flush interval.
const QUIET: Duration = Duration::from_millis(300);
/// What tcpkit --debug says on stderr once its programs are attached: ready, when no header says so.
const READY_LINE: &str = "tcpkit: using the ";
/// Where `tcpkit metrics` listens: loopback, a port the kernel picks (its stderr says which).
const METRICS_LISTEN: &str = "127.0.0.1:0";
/// The family whose direction="in" samples count the accepts, and the two that count what was not counted.
const OPENED: &str = "tcpkit_connections_opened_total";
const NOT_COUNTED: [&str; 2] = ["tcpkit_events_lost_total", "tcpkit_series_dropped_total"];
/// bpftrace, the reference peer: one line per state change of any TCP socket, as design.md §7 measured it.
/// BEGIN runs once every probe is attached, so its line says that bpftrace is ready; events start with "E ".
const BPFTRACE_PROGRAM: &str = r#"BEGIN { printf("ready\n"); }
tracepoint:sock:inet_sock_set_state { printf("E %d %s %d %d\n", pid, comm, args->oldstate, args->newstate); }"#;

/// Debian's libbpf-tools as peers: tcplife prints a line per ended connection (and takes -p, as tcpkit does
/// here), tcpstates a line per state change of any TCP socket. Both attach to sock:inet_sock_set_state, so
/// they run on kernels without kprobes, and write through perf buffers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LibbpfTool {
    Tcplife,
    Tcpstates,
}

impl LibbpfTool {
    pub(crate) const ALL: [LibbpfTool; 2] = [LibbpfTool::Tcplife, LibbpfTool::Tcpstates];

    pub(crate) fn name(self) -> &'static str {
        match self {
            LibbpfTool::Tcplife => "tcplife",
            LibbpfTool::Tcpstates => "tcpstates",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sub {
    Accept,
    Tracer,
    /// `tcpkit tracer --failed -L`: the same events, with the failure programs loaded and every close
    /// carrying how it ended, its lifespan and bytes (issue 12's cost).
    TracerFailedLifespan,
    /// `tcpkit tracer -C`: every event's cgroup id named through the identity cache (issue 13's cost).
    TracerContainer,
    /// `tcpkit tracer -S`: every record with how good its connection was, closes at the connection's end
    /// (issue 24's cost).
    TracerStats,
    /// `tcpkit accept -S`: accepts with their queue wait (a handshake program) and backlog (the accept
    /// syscall's entry).
    AcceptStats,
    /// `tcpkit tracer -o json`, as the DaemonSet runs it: identity, lifespan and JSON on every event.
    /// --debug, because JSON has no header: its "using the ... backend" line says when it is attached.
    TracerJson,
    /// `tcpkit tracer --failed -L -o json` (--debug for its ready line): the soak's tracer, everything on.
    TracerSoak,
    /// `tcpkit metrics`: the tracer's hooks with --failed, -L and -S on, each event counted in a kernel map
    /// instead of sent through the ring; user space reads the map when scraped, once, after the load.
    /// --debug for its ready line; it listens on a port of its choosing on loopback (METRICS_LISTEN).
    Metrics,
}

impl Sub {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Sub::Accept => "accept",
            Sub::Tracer => "tracer",
            Sub::TracerFailedLifespan => "tracer --failed -L",
            Sub::TracerContainer => "tracer -C",
            Sub::TracerStats => "tracer -S",
            Sub::AcceptStats => "accept -S",
            Sub::TracerJson => "tracer -o json --debug",
            Sub::TracerSoak => "tracer --failed -L -o json --debug",
            Sub::Metrics => "metrics --debug",
        }
    }

    /// The subcommand and its flags, as tcpkit takes them.
    fn args(self) -> impl Iterator<Item = &'static str> {
        let listen: &[&str] = if self == Sub::Metrics { &["--listen", METRICS_LISTEN] } else { &[] };
        self.name().split(' ').chain(listen.iter().copied())
    }

    /// Lines before the first event: accept prints a header, tracer a banner and a header.
    pub(crate) fn header_lines(self) -> u64 {
        match self {
            Sub::Accept | Sub::AcceptStats => 1,
            Sub::Tracer | Sub::TracerFailedLifespan | Sub::TracerContainer | Sub::TracerStats => 2,
            Sub::TracerJson | Sub::TracerSoak | Sub::Metrics => 0,
        }
    }

    /// Events the load makes tcpkit print. Every accept is one; tracer adds a connect and a close for every
    /// client end that connected, and a close for every accepted server end (a connection the kernel dropped
    /// from a full queue has no server end, hence connects and accepts counted apart). metrics prints none:
    /// what is compared is the accepts it counted (OutputKind::Metrics).
    pub(crate) fn expected_events(self, load: &LoadResult) -> u64 {
        match self {
            Sub::Accept | Sub::AcceptStats | Sub::Metrics => load.accepted,
            Sub::Tracer
            | Sub::TracerFailedLifespan
            | Sub::TracerContainer
            | Sub::TracerStats
            | Sub::TracerJson
            | Sub::TracerSoak => 2 * load.connected + 2 * load.accepted,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Watcher {
    Untraced,
    Tcpkit {
        sub: Sub,
        ring: Option<&'static str>,
    },
    /// The same subcommand from the --baseline binary: an earlier build, measured in the same run.
    Baseline(Sub),
    /// The same subcommand from the --floor binary (cargo feature bench-floor): the hooks and the ring only.
    Floor(Sub),
    Bpftrace(PathBuf),
    Libbpf(LibbpfTool, PathBuf),
}

impl Watcher {
    pub(crate) fn label(&self) -> String {
        match self {
            Watcher::Untraced => "untraced".into(),
            Watcher::Tcpkit { sub, ring: None } => format!("tcpkit {}", sub.name()),
            Watcher::Tcpkit { sub, ring: Some(ring) } => format!("tcpkit {} --ring-size {ring}", sub.name()),
            Watcher::Baseline(sub) => format!("tcpkit {} (baseline build)", sub.name()),
            Watcher::Floor(sub) => format!("floor build, {}", sub.name()),
            Watcher::Bpftrace(_) => "bpftrace".into(),
            Watcher::Libbpf(tool, _) => format!("libbpf-tools {}", tool.name()),
        }
    }
}

/// Connections made, and a tracer's program counters before and after them.
pub(crate) type BpfSnapshots = (u64, (Vec<ProgCounters>, Vec<ProgCounters>));

/// A running tracer whose stdout goes to a file (the fastest place it can write to).
struct Session {
    pid: Pid,
    out: PathBuf,
    err: PathBuf,
    kind: OutputKind,
    cpu_at_ready: Duration,
    switches_at_ready: u64,
    /// Where `tcpkit metrics` serves.
    metrics_at: Option<SocketAddr>,
}

#[derive(Clone, Copy, Debug)]
enum OutputKind {
    Tcpkit(Sub),
    /// `tcpkit metrics`: its "output" is the body of one scrape.
    Metrics,
    Bpftrace,
    /// A header line, which stdio holds back in a file until exit: ready is read from its descriptors.
    Libbpf,
}

impl OutputKind {
    fn of(sub: Sub) -> OutputKind {
        if sub == Sub::Metrics {
            OutputKind::Metrics
        } else {
            OutputKind::Tcpkit(sub)
        }
    }

    fn is_ready(self, text: &str, stderr: &str, pid: Pid) -> bool {
        match self {
            OutputKind::Libbpf => attached_and_reading(pid),
            OutputKind::Tcpkit(sub) if sub.header_lines() > 0 => count_lines(text.as_bytes()) >= sub.header_lines(),
            // --debug's line, once the programs are attached: JSON has no header, metrics prints nothing.
            OutputKind::Tcpkit(_) | OutputKind::Metrics => stderr.lines().any(|l| l.starts_with(READY_LINE)),
            OutputKind::Bpftrace => text.lines().any(|l| l == "ready"),
        }
    }

    /// Events in the output; for metrics, the accepts counted in the scrape's body, over every workload
    /// and port (-p keeps other processes' out).
    fn events(self, text: &str) -> u64 {
        match self {
            OutputKind::Metrics => scrape::sum(text, OPENED, &["direction=\"in\""]),
            // JSON's records of losses are not events.
            OutputKind::Tcpkit(sub) if sub.header_lines() == 0 => {
                text.lines().filter(|l| !l.starts_with("{\"type\":\"lost\"")).count() as u64
            }
            OutputKind::Tcpkit(sub) => count_lines(text.as_bytes()).saturating_sub(sub.header_lines()),
            OutputKind::Bpftrace => text.lines().filter(|l| l.starts_with("E ")).count() as u64,
            OutputKind::Libbpf => count_lines(text.as_bytes()).saturating_sub(1),
        }
    }

    /// Events lost, as the tracer reports them: tcpkit once on stderr at exit, bpftrace as it goes.
    fn lost(self, stdout: &str, stderr: &str) -> u64 {
        match self {
            OutputKind::Tcpkit(_) => tcpkit_lost(stderr),
            OutputKind::Metrics => NOT_COUNTED.iter().map(|name| scrape::sum(stdout, name, &[])).sum(),
            OutputKind::Bpftrace => {
                stdout.lines().chain(stderr.lines()).filter_map(|l| number_between(l, "Lost ", " events")).sum()
            }
            // "lost 12 events on CPU #1"
            OutputKind::Libbpf => stderr.lines().filter_map(|l| number_between(l, "lost ", " events")).sum(),
        }
    }
}

/// A libbpf tool is ready once it holds a BPF link (its program is attached) and an epoll descriptor (its
/// perf buffer exists, so what the program sends from now on is kept).
fn attached_and_reading(pid: Pid) -> bool {
    let targets: Vec<String> = fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| fs::read_link(e.path()).ok())
        .map(|t| t.to_string_lossy().into_owned())
        .collect();
    targets.iter().any(|t| t == "anon_inode:bpf_link") && targets.iter().any(|t| t == "anon_inode:[eventpoll]")
}

/// The events tcpkit says at exit it lost in total (its stderr).
pub(crate) fn tcpkit_lost(stderr: &str) -> u64 {
    stderr.lines().filter_map(|l| number_between(l, "tcpkit: ", " events lost in total")).sum()
}

fn number_between(line: &str, before: &str, after: &str) -> Option<u64> {
    line.trim().strip_prefix(before)?.split_once(after)?.0.trim().parse().ok()
}

pub(crate) fn count_lines(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|&&b| b == b'\n').count() as u64
}

/// What a tracer did in one run.
#[derive(Clone, Debug)]
pub(crate) struct Traced {
    pub(crate) expected: Option<u64>,
    pub(crate) printed: u64,
    pub(crate) lost: u64,
    /// user+sys over its whole life; and from ready to the moment it was stopped, which leaves out the
    /// fixed costs of start-up (loading, verifying, attaching) and exit (detaching, freeing).
    pub(crate) cpu: Duration,
    pub(crate) cpu_events: Duration,
    /// Times it went to sleep while tracing (voluntary context switches): each one is a wake-up, which the
    /// traced processes pay for too.
    pub(crate) wakeups: u64,
    pub(crate) peak_rss_kb: u64,
    pub(crate) exit: String,
    pub(crate) exited_ok: bool,
}

impl Traced {
    pub(crate) fn us_per_event(&self, cpu: Duration) -> Option<f64> {
        (self.printed > 0).then(|| cpu.as_secs_f64() * 1e6 / self.printed as f64)
    }

    pub(crate) fn wakeups_per_event(&self) -> Option<f64> {
        (self.printed > 0).then(|| self.wakeups as f64 / self.printed as f64)
    }

    pub(crate) fn complete(&self) -> bool {
        self.exited_ok && self.lost == 0 && self.expected.is_none_or(|e| e == self.printed)
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Run {
    pub(crate) label: String,
    pub(crate) threads: usize,
    pub(crate) load: LoadResult,
    pub(crate) traced: Option<Traced>,
    /// CPU that other processes used during the load, as a share of the machine: a run that had to share
    /// the machine is noise, and says so.
    pub(crate) background: f64,
}

/// Where everything runs from, and the numbering of output files.
pub(crate) struct Bench {
    pub(crate) tcpkit: PathBuf,
    pub(crate) baseline: Option<PathBuf>,
    pub(crate) floor: Option<PathBuf>,
    pub(crate) dir: PathBuf,
    connections: u64,
    time_limit: Duration,
    pin: bool,
    shape: Shape,
    runs: usize,
}

impl Bench {
    pub(crate) fn new(options: &Options) -> io::Result<Bench> {
        // target/release/tcpkit -> target/bench, wherever the target directory is.
        let target = Path::new(env!("CARGO_BIN_EXE_tcpkit")).ancestors().nth(2).unwrap_or(Path::new("target"));
        let dir = target.join("bench");
        fs::create_dir_all(&dir)?;
        Ok(Bench {
            tcpkit: options.tcpkit.clone(),
            baseline: options.baseline.clone(),
            floor: options.floor.clone(),
            dir,
            connections: options.connections,
            time_limit: Duration::from_secs(options.time_limit),
            pin: !options.no_pin,
            shape: options.shape,
            runs: 0,
        })
    }

    pub(crate) fn load(&self, threads: usize) -> Load {
        Load { connections: self.connections, threads, time_limit: self.time_limit, pin: self.pin, shape: self.shape }
    }

    pub(crate) fn tcpkit_command(&self, sub: Sub, ring: Option<&str>) -> Command {
        Self::command_of(&self.tcpkit, sub, ring)
    }

    fn command_of(binary: &Path, sub: Sub, ring: Option<&str>) -> Command {
        let mut command = Command::new(binary);
        command.args(sub.args()).arg("-p").arg(std::process::id().to_string()).stdin(Stdio::null());
        if let Some(ring) = ring {
            command.args(["--ring-size", ring]);
        }
        command
    }

    /// One run of the load under `watcher`; a tracer is ready before the load starts and has printed
    /// everything before it is stopped.
    pub(crate) fn measure(&mut self, watcher: &Watcher, load: Load) -> io::Result<Run> {
        let session = self.start_watcher(watcher)?;
        let exclude = [Pid::this(), session.as_ref().map_or(Pid::this(), |s| s.pid)];
        let before = other_processes_cpu(&exclude);
        let result = run_load(load)?;
        let background = background_share(&before, &other_processes_cpu(&exclude), result.wall);
        let traced = match (session, watcher) {
            (None, _) => None,
            (Some(session), Watcher::Tcpkit { sub, .. } | Watcher::Baseline(sub) | Watcher::Floor(sub)) => {
                Some(session.finish(Some(sub.expected_events(&result)))?)
            }
            (Some(session), _) => Some(session.finish(None)?),
        };
        let run = Run { label: watcher.label(), threads: load.threads, load: result, traced, background };
        eprintln!("overhead: {}", progress_line(&run));
        Ok(run)
    }

    /// One run of the load under a tracer, with its BPF programs' counters (bpf_stats must be on) just
    /// before and just after the load. Returns the connections made and the two snapshots.
    pub(crate) fn measure_bpf(&mut self, watcher: &Watcher, load: Load) -> io::Result<BpfSnapshots> {
        let session = self.start_watcher(watcher)?.ok_or_else(|| io::Error::other("no tracer to measure"))?;
        let before = counters_of(session.pid);
        let result = run_load(load)?;
        let after = counters_of(session.pid);
        let traced = session.finish(None)?;
        if !traced.exited_ok {
            return Err(io::Error::other(format!("{} ended badly: {}", watcher.label(), traced.exit)));
        }
        eprintln!("overhead:   {:<34} bpf_stats over {} connections", watcher.label(), result.connected);
        Ok((result.connected, (before, after)))
    }

    /// Starts what watches a run (nothing for the untraced run) and waits until it is ready.
    fn start_watcher(&mut self, watcher: &Watcher) -> io::Result<Option<Session>> {
        self.runs += 1;
        let words: Vec<String> = watcher
            .label()
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(str::to_string)
            .collect();
        let name = format!("{:02}-{}", self.runs, words.join("-"));
        Ok(match watcher {
            Watcher::Untraced => None,
            Watcher::Tcpkit { sub, ring } => {
                Some(self.start(self.tcpkit_command(*sub, *ring), &name, OutputKind::of(*sub))?)
            }
            Watcher::Baseline(sub) => {
                let binary = self.baseline.as_deref().expect("a baseline row only with --baseline");
                Some(self.start(Self::command_of(binary, *sub, None), &name, OutputKind::of(*sub))?)
            }
            Watcher::Floor(sub) => {
                let binary = self.floor.as_deref().expect("a floor row only with --floor");
                Some(self.start(Self::command_of(binary, *sub, None), &name, OutputKind::of(*sub))?)
            }
            Watcher::Bpftrace(path) => {
                let mut command = Command::new(path);
                command.args(["-e", BPFTRACE_PROGRAM]).stdin(Stdio::null());
                Some(self.start(command, &name, OutputKind::Bpftrace)?)
            }
            Watcher::Libbpf(tool, path) => {
                let mut command = Command::new(path);
                if *tool == LibbpfTool::Tcplife {
                    command.arg("-p").arg(std::process::id().to_string());
                }
                command.stdin(Stdio::null());
                Some(self.start(command, &name, OutputKind::Libbpf)?)
            }
        })
    }

    /// Starts a tracer with its output in target/bench/NAME.out and .err, and waits until it is ready.
    fn start(&self, mut command: Command, name: &str, kind: OutputKind) -> io::Result<Session> {
        let out = self.dir.join(format!("{name}.out"));
        let err = self.dir.join(format!("{name}.err"));
        let mut child = command.stdout(File::create(&out)?).stderr(File::create(&err)?).spawn()?;
        let pid = Pid::from_raw(child.id() as i32);
        let deadline = Instant::now() + READY_LIMIT;
        loop {
            let read = |path: &Path| fs::read_to_string(path).unwrap_or_default();
            let stderr = read(&err);
            if kind.is_ready(&read(&out), &stderr, pid) {
                let (cpu_at_ready, switches_at_ready) = (cpu_time_so_far(pid), voluntary_switches(pid));
                let metrics_at = scrape::served_at(&stderr);
                if matches!(kind, OutputKind::Metrics) && metrics_at.is_none() {
                    stop(pid)?;
                    return Err(io::Error::other(format!("{name} did not say where it serves: {}", stderr.trim())));
                }
                return Ok(Session { pid, out, err, kind, cpu_at_ready, switches_at_ready, metrics_at });
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
    /// Waits until the output is complete, then stops the tracer and collects what it did. `tcpkit metrics`
    /// has counted everything by the time the load returns (in the kernel, as it happened): it is scraped
    /// once, after its CPU and wake-ups are read, so that those are what it cost between scrapes.
    fn finish(self, expected: Option<u64>) -> io::Result<Traced> {
        let target_lines = match (self.kind, expected) {
            (OutputKind::Tcpkit(sub), Some(n)) => Some(n + sub.header_lines()),
            _ => None,
        };
        if !matches!(self.kind, OutputKind::Metrics) {
            wait_for_output(&self.out, target_lines)?;
        }
        let cpu_before_stop = cpu_time_so_far(self.pid);
        let switches_before_stop = voluntary_switches(self.pid);
        let scraped = self.metrics_at.map(scrape::get_metrics);
        let peak_rss_kb = status_kb(self.pid, "VmHWM:");
        let exit = stop(self.pid)?;
        let stdout = match scraped {
            None => fs::read_to_string(&self.out)?,
            Some(Ok(exposition)) => exposition.body,
            // Counted as nothing: the row says MISSING, and this says why.
            Some(Err(e)) => {
                eprintln!("overhead: scraping tcpkit metrics failed: {e}");
                String::new()
            }
        };
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

/// Starts `command` with its stderr in `err` and waits until tcpkit says there that its programs are attached
/// (--debug's "using the ... backend" line). Returns the child and its stderr so far.
pub(crate) fn start_attached(mut command: Command, err: &Path) -> io::Result<(Child, String)> {
    let mut child = command.stderr(File::create(err)?).spawn()?;
    let deadline = Instant::now() + READY_LIMIT;
    loop {
        let stderr = fs::read_to_string(err)?;
        if stderr.lines().any(|l| l.starts_with(READY_LINE)) {
            return Ok((child, stderr));
        }
        if Instant::now() >= deadline || child.try_wait()?.is_some() {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::other(format!("tcpkit never got ready: {}", stderr.trim())));
        }
        thread::sleep(Duration::from_millis(5));
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
pub(crate) struct Exit {
    status: i32,
    cpu: Duration,
}

impl Exit {
    fn success(&self) -> bool {
        libc::WIFEXITED(self.status) && libc::WEXITSTATUS(self.status) == 0
    }

    pub(crate) fn describe(&self) -> String {
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
pub(crate) fn stop(pid: Pid) -> io::Result<Exit> {
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
pub(crate) fn cpu_time_so_far(pid: Pid) -> Duration {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else { return Duration::ZERO };
    let ns: u64 = tasks
        .flatten()
        .filter_map(|task| fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    Duration::from_nanos(ns)
}

/// A kB figure of /proc/PID/status (`VmHWM:`, the peak RSS; `VmRSS:`, the RSS now); 0 if it cannot be read.
pub(crate) fn status_kb(pid: Pid, field: &str) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
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
pub(crate) fn other_processes_cpu(exclude: &[Pid]) -> Vec<(i32, u64)> {
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
pub(crate) fn background_share(before: &[(i32, u64)], after: &[(i32, u64)], wall: Duration) -> f64 {
    let ticks: u64 =
        after.iter().map(|(pid, t)| t - before.iter().find(|(p, _)| p == pid).map_or(0, |(_, b)| (*b).min(*t))).sum();
    // SAFETY: sysconf only reads a configuration value.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let cpus = thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    ticks as f64 / per_second / (wall.as_secs_f64().max(1e-3) * cpus)
}

/// What one run did, as a line of progress on stderr.
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
