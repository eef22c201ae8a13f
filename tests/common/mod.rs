//! Helpers for tcpkit's integration tests: run the real tcpkit binary and the real peer process, make
//! connections on loopback, and wait for lines by condition with a deadline, never by sleeping.
#![allow(dead_code)]

pub mod metrics;
pub mod node;
pub mod tracer;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use libbpf_rs::{MapCore, MapFlags, MapHandle, MapType};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// How long any single expected thing may take; generous for qemu's emulated guests.
pub const DEADLINE: Duration = Duration::from_secs(30);

pub fn tcpkit_bin() -> PathBuf {
    std::env::var_os("TCPKIT_BIN").map(PathBuf::from).unwrap_or_else(|| env!("CARGO_BIN_EXE_tcpkit").into())
}

pub fn peer_bin() -> PathBuf {
    std::env::var_os("TCPKIT_PEER_BIN").map(PathBuf::from).unwrap_or_else(|| env!("CARGO_BIN_EXE_tcpkit-peer").into())
}

/// The backend every test forces, from TCPKIT_TEST_BACKEND (the VM matrix sets it); auto otherwise.
pub fn test_backend() -> String {
    std::env::var("TCPKIT_TEST_BACKEND").unwrap_or_else(|_| "auto".into())
}

/// Fails loudly when not root: these tests load real BPF programs and must never pass by skipping.
pub fn require_root() {
    assert!(nix::unistd::geteuid().is_root(), "tcpkit's integration tests load BPF programs: run them as root");
}

/// Lines of a child's stdout, read on a thread so that waiting can have a deadline.
pub struct Lines {
    rx: Receiver<String>,
    pub seen: Vec<String>,
}

impl Lines {
    pub fn from_reader(out: impl Read + Send + 'static) -> Lines {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Lines { rx, seen: Vec::new() }
    }

    /// The next line that satisfies `pred`, or None when the stream ends or the deadline passes.
    pub fn find(&mut self, deadline: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        let end = Instant::now() + deadline;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if pred(&line) {
                        return Some(line);
                    }
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    /// Every line until the stream ends (the process exited).
    pub fn rest(&mut self, deadline: Duration) -> Vec<String> {
        let end = Instant::now() + deadline;
        let mut out = Vec::new();
        while let Ok(line) = self.rx.recv_timeout(end.saturating_duration_since(Instant::now())) {
            self.seen.push(line.clone());
            out.push(line);
        }
        out
    }
}

/// A child's stream read to its end on a thread: a child that writes much (--debug) must never block on a
/// full pipe, and what it wrote is complete once the child has exited and `finish` returns.
pub struct Drain {
    text: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Drain {
    pub fn new(mut from: impl Read + Send + 'static) -> Drain {
        let text = Arc::new(Mutex::new(String::new()));
        let sink = text.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = from.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Drain { text, reader: Some(reader) }
    }

    /// What has arrived so far.
    pub fn so_far(&self) -> String {
        self.text.lock().unwrap().clone()
    }

    /// Everything, once the writer has closed the stream (call it after the child exited).
    pub fn finish(&mut self) -> String {
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        self.so_far()
    }
}

/// A running `tcpkit` with its stdout read line by line and its stderr captured.
pub struct Tcpkit {
    pub child: Child,
    pub stdout: Lines,
    stderr: Drain,
    pub header: String,
}

impl Tcpkit {
    /// Starts `tcpkit ARGS --backend <test backend>` and waits until its header says it is attached.
    pub fn start(args: &[&str]) -> Tcpkit {
        Self::start_with_header_lines(args, 1)
    }

    /// Starts tcpkit with -o json, which prints no header: --debug's "using the … backend" on stderr says
    /// when it is attached.
    pub fn start_json(args: &[&str]) -> Tcpkit {
        let mut cmd = Command::new(tcpkit_bin());
        cmd.args(args).args(["-o", "json", "--debug", "--backend", &test_backend()]);
        Self::start_json_command(cmd)
    }

    /// As start_json, for a command that runs tcpkit some other way (in a container); it must pass
    /// --debug, whose "using the … backend" on stderr says when tcpkit is attached.
    pub fn start_json_command(cmd: Command) -> Tcpkit {
        let shown = format!("{cmd:?}");
        let mut tcpkit = Self::try_start_command(cmd, 0).expect("starting tcpkit");
        let end = Instant::now() + DEADLINE;
        while !tcpkit.stderr().lines().any(|l| l.starts_with("tcpkit: using the ")) {
            assert!(Instant::now() < end, "{shown} never said it was attached: {}", tcpkit.stderr());
            if let Some(status) = tcpkit.child.try_wait().unwrap() {
                panic!("{shown} ended: {status}; {}", tcpkit.stderr.finish());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        tcpkit
    }

    /// As start, for layouts whose header has several lines (a banner first).
    pub fn start_with_header_lines(args: &[&str], header_lines: usize) -> Tcpkit {
        let backend = test_backend();
        Self::try_start(args, &backend, header_lines)
            .unwrap_or_else(|why| panic!("tcpkit {args:?} --backend {backend} printed no header: {why}"))
    }

    /// Starts tcpkit with a given backend; Err says how it ended when it printed no header.
    pub fn try_start(args: &[&str], backend: &str, header_lines: usize) -> Result<Tcpkit, String> {
        let mut cmd = Command::new(tcpkit_bin());
        cmd.args(args).args(["--backend", backend]);
        Self::try_start_command(cmd, header_lines)
    }

    pub fn try_start_command(mut cmd: Command, header_lines: usize) -> Result<Tcpkit, String> {
        require_root();
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
        let stdout = Lines::from_reader(child.stdout.take().unwrap());
        let stderr = Drain::new(child.stderr.take().unwrap());
        let mut me = Tcpkit { child, stdout, stderr, header: String::new() };
        let mut header = Vec::new();
        for _ in 0..header_lines {
            match me.stdout.find(DEADLINE, |_| true) {
                Some(line) => header.push(line),
                None => {
                    let status = wait_with_deadline(&mut me.child, Duration::from_secs(2));
                    let stderr = if status.is_some() { me.stderr.finish() } else { me.stderr() };
                    return Err(format!("exit {status:?}; stderr: {stderr}"));
                }
            }
        }
        me.header = header.join("\n");
        Ok(me)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stderr(&self) -> String {
        self.stderr.so_far()
    }

    /// The next output line for which `pred` holds; panics with everything seen if none comes in time.
    /// Where tcpkit is, for a test that waited in vain: its state and what each thread waits in.
    fn process_state(&self) -> String {
        let pid = self.pid();
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).map(|d| d.flatten().collect::<Vec<_>>());
        let Ok(tasks) = tasks else { return format!("process {pid} is gone") };
        let read = |path: String| std::fs::read_to_string(path).unwrap_or_default().trim().to_string();
        tasks
            .iter()
            .map(|t| {
                let dir = t.path().display().to_string();
                let stat = read(format!("{dir}/stat"));
                let state = stat.rsplit(") ").next().and_then(|r| r.split(' ').next()).unwrap_or("?").to_string();
                format!(
                    "[{} {} wchan={} {}]",
                    read(format!("{dir}/comm")),
                    state,
                    read(format!("{dir}/wchan")),
                    read(format!("{dir}/syscall"))
                )
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The next line that satisfies `pred` within `wait`, or None (for what may not come yet).
    pub fn line_within(&mut self, wait: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        self.stdout.find(wait, pred)
    }

    pub fn expect_line(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        match self.stdout.find(DEADLINE, pred) {
            Some(line) => line,
            None => panic!(
                "no line {what} within {DEADLINE:?}; lines seen: {:#?}\ntcpkit now: {}\nstderr: {}",
                self.stdout.seen,
                self.process_state(),
                self.stderr()
            ),
        }
    }

    /// Waits until each predicate holds for some line (already seen, or still to come); returns the first
    /// line each one matched, in the predicates' order. Events of separate sockets may come in any order.
    pub fn expect_all(&mut self, what: &str, preds: &[&dyn Fn(&str) -> bool]) -> Vec<String> {
        let end = Instant::now() + DEADLINE;
        // Each line is tried once against the predicates still unmatched: with hundreds of both (64
        // connections' events), trying every predicate on every line again at each new line cost a 64-thread
        // test 25 s of emulated CPU in a qemu guest.
        let mut found: Vec<Option<usize>> = vec![None; preds.len()];
        let mut tried = 0;
        loop {
            let seen = &self.stdout.seen;
            for (i, line) in seen.iter().enumerate().skip(tried) {
                for (p, at) in preds.iter().zip(found.iter_mut()) {
                    if at.is_none() && p(line) {
                        *at = Some(i);
                    }
                }
            }
            tried = seen.len();
            if found.iter().all(Option::is_some) {
                return found.into_iter().map(|i| seen[i.unwrap()].clone()).collect();
            }
            let left = end.saturating_duration_since(Instant::now());
            if self.stdout.find(left, |_| true).is_none() {
                let missing: Vec<usize> = (0..preds.len()).filter(|&i| found[i].is_none()).collect();
                panic!(
                    "{what}: no line for predicates {missing:?} within {DEADLINE:?}; lines seen: {:#?}\nstderr: {}",
                    self.stdout.seen,
                    self.stderr()
                );
            }
        }
    }

    /// Sends `signal`, waits for the exit, and returns the status and any lines printed meanwhile.
    pub fn stop_with(mut self, signal: Signal) -> (ExitStatus, Vec<String>, String) {
        kill(Pid::from_raw(self.child.id() as i32), signal).expect("signalling tcpkit");
        let status = wait_with_deadline(&mut self.child, DEADLINE).expect("tcpkit did not exit after the signal");
        let rest = self.stdout.rest(DEADLINE);
        let stderr = self.stderr.finish();
        (status, rest, stderr)
    }

    pub fn stop(self) -> (ExitStatus, Vec<String>, String) {
        self.stop_with(Signal::SIGINT)
    }

    /// Sends `signal` and checks the clean end every signal must give: exit 0, nothing on stderr, and none
    /// of the BPF programs tcpkit held (at least `min_programs`) still loaded.
    pub fn assert_clean_stop(self, signal: Signal, min_programs: usize) {
        let ids = bpf_prog_ids_of(self.pid());
        assert!(ids.len() >= min_programs, "tcpkit holds too few BPF programs: {ids:?}");
        let (status, _, stderr) = self.stop_with(signal);
        assert_eq!(status.code(), Some(0), "{signal}: {stderr}");
        assert!(stderr.is_empty(), "{signal} printed {stderr:?}");
        let alive: Vec<u32> =
            libbpf_rs::query::ProgInfoIter::default().map(|p| p.id).filter(|id| ids.contains(id)).collect();
        assert!(alive.is_empty(), "programs {alive:?} still loaded after {signal}");
    }

    /// Stops tcpkit, which first prints what the kernel had queued, and returns every line it printed
    /// after its header: absence from these is conclusive for events that happened before the call.
    pub fn stop_and_collect(self) -> Vec<String> {
        self.stop_and_collect_with_stderr().0
    }

    /// As stop_and_collect, with what tcpkit said on stderr (lost events, say).
    pub fn stop_and_collect_with_stderr(mut self) -> (Vec<String>, String) {
        let header_lines = self.header.lines().count();
        let seen = std::mem::take(&mut self.stdout.seen);
        let (status, rest, stderr) = self.stop();
        assert_eq!(status.code(), Some(0), "tcpkit did not end cleanly: {stderr}");
        (seen.into_iter().skip(header_lines).chain(rest).collect(), stderr)
    }
}

impl Drop for Tcpkit {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn wait_with_deadline(child: &mut Child, deadline: Duration) -> Option<ExitStatus> {
    let end = Instant::now() + deadline;
    while Instant::now() < end {
        if let Some(status) = child.try_wait().expect("waiting for a child") {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

/// Runs tcpkit to completion (for flags and errors that end it at once).
pub fn run_tcpkit(args: &[&str]) -> (ExitStatus, String, String) {
    run_tcpkit_cmd(Command::new(tcpkit_bin()).args(args))
}

pub fn run_tcpkit_cmd(cmd: &mut Command) -> (ExitStatus, String, String) {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    // A binary just copied (RunnableByAnyone) is busy for exec while a child that another test thread
    // forked still holds the copy's descriptor, until that child's own exec: try again for a moment.
    let end = Instant::now() + DEADLINE;
    let mut child = loop {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(nix::libc::ETXTBSY) && Instant::now() < end => {
                std::thread::sleep(Duration::from_millis(10))
            }
            spawned => break spawned.expect("spawning"),
        }
    };
    let mut out = Drain::new(child.stdout.take().unwrap());
    let mut err = Drain::new(child.stderr.take().unwrap());
    let status = wait_with_deadline(&mut child, DEADLINE).expect("tcpkit did not exit in time");
    (status, out.finish(), err.finish())
}

/// A JSON line that is the record of type `kind` for the socket with local port `lport` and remote port
/// `rport`.
pub fn json_event(kind: &'static str, lport: u16, rport: u16) -> impl Fn(&str) -> bool {
    move |l: &str| {
        serde_json::from_str::<serde_json::Value>(l)
            .is_ok_and(|r| r["type"] == kind && r["lport"] == lport && r["rport"] == rport)
    }
}

/// The next JSON record of `kind` for the socket with these ports, parsed.
pub fn record(tcpkit: &mut Tcpkit, kind: &'static str, lport: u16, rport: u16) -> serde_json::Value {
    let line = tcpkit.expect_line(&format!("a {kind} record {lport} -> {rport}"), json_event(kind, lport, rport));
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

/// A record's field that must be a number.
pub fn number(r: &serde_json::Value, key: &str) -> u64 {
    r[key].as_u64().unwrap_or_else(|| panic!("{key} is not a number in {r}"))
}

/// Waits until no task is left in a cgroup (an exited peer leaves it a moment later).
pub fn wait_until_empty(dir: &std::path::Path) {
    wait_until(&format!("{} never emptied", dir.display()), || {
        std::fs::read_to_string(dir.join("cgroup.procs")).map_or(true, |p| p.trim().is_empty())
    });
}

/// Polls `cond` until it holds; fails the test, saying `what` never happened, after DEADLINE.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < end, "{what} within {DEADLINE:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until a thread of process `pid` is blocked in accept() or accept4() (its /proc syscall file names
/// the call it sleeps in).
pub fn wait_blocked_in_accept(pid: u32) {
    let calls = [nix::libc::SYS_accept, nix::libc::SYS_accept4].map(|n| n.to_string());
    wait_until(&format!("no thread of process {pid} blocked in accept()"), || {
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the process's threads");
        tasks.flatten().any(|t| {
            std::fs::read_to_string(t.path().join("syscall"))
                .is_ok_and(|s| s.split(' ').next().is_some_and(|n| calls.iter().any(|c| c == n)))
        })
    });
}

/// A copy of the tcpkit binary in a directory of its own that every user may enter, removed on drop. A test
/// that runs tcpkit as another user must not depend on where the checkout lives: a clone in a directory
/// only root may enter (as `mktemp -d` makes them) makes its target/ unreachable to that user.
pub struct RunnableByAnyone {
    dir: PathBuf,
    pub bin: PathBuf,
}

impl RunnableByAnyone {
    pub fn new() -> RunnableByAnyone {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("tcpkit-anyone-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("making a directory for tcpkit's copy");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let bin = dir.join("tcpkit");
        std::fs::copy(tcpkit_bin(), &bin).expect("copying tcpkit");
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        RunnableByAnyone { dir, bin }
    }
}

impl Drop for RunnableByAnyone {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A tcpkit-peer process: listens and accepts, or connects, and reports each step.
pub struct Peer {
    pub child: Child,
    pub out: Lines,
    stdin: Option<ChildStdin>,
    pub pid: u32,
    pub port: u16,
    pub mntns: u64,
    pub netns: u64,
}

impl Peer {
    /// `tcpkit-peer [GLOBAL...] listen [ARGS...]`, returned once it is listening.
    pub fn listen(global: &[&str], args: &[&str]) -> Peer {
        Self::spawn(global, "listen", args)
    }

    pub fn spawn(global: &[&str], mode: &str, args: &[&str]) -> Peer {
        let mut cmd = Command::new(peer_bin());
        cmd.args(global).arg(mode).args(args);
        Self::spawn_command(cmd, mode == "listen")
    }

    /// A peer run some other way (in a container); `listening` when its mode is listen.
    pub fn spawn_command(mut cmd: Command, listening: bool) -> Peer {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
        let out = Lines::from_reader(child.stdout.take().unwrap());
        let stdin = child.stdin.take();
        let mut peer = Peer { child, out, stdin, pid: 0, port: 0, mntns: 0, netns: 0 };
        let value = |p: &mut Peer, key: &str| -> String {
            let line =
                p.out.find(DEADLINE, |l| l.starts_with(&format!("{key} "))).unwrap_or_else(|| panic!("peer: no {key}"));
            line[key.len() + 1..].to_string()
        };
        peer.pid = value(&mut peer, "pid").parse().unwrap();
        peer.mntns = value(&mut peer, "mntns").parse().unwrap();
        peer.netns = value(&mut peer, "netns").parse().unwrap();
        if listening {
            peer.port = value(&mut peer, "port").parse().unwrap();
        }
        peer.out.find(DEADLINE, |l| l == "ready").expect("peer never got ready");
        peer
    }

    /// Lets a peer started with --wait go on.
    pub fn go(&mut self) {
        let stdin = self.stdin.as_mut().expect("peer stdin");
        writeln!(stdin, "go").unwrap();
        stdin.flush().unwrap();
    }

    /// Waits for the peer's report of an accept whose remote port is `rport`.
    pub fn expect_accepted(&mut self, rport: u16) {
        let found = self.out.find(DEADLINE, |l| l.starts_with("accepted ") && l.ends_with(&format!(" {rport}")));
        assert!(found.is_some(), "peer {} never accepted the connection from port {rport}", self.pid);
    }

    /// Waits for the peer's reports of accepts from every port in `rports`, in any order: connections made
    /// one after another need not reach the accept queue in that order (the client's last ACK of each
    /// handshake may be processed on another CPU's backlog).
    pub fn expect_accepted_all(&mut self, rports: &[u16]) {
        let mut left: Vec<u16> = rports.to_vec();
        while !left.is_empty() {
            let found = self
                .out
                .find(DEADLINE, |l| l.starts_with("accepted ") && left.iter().any(|p| l.ends_with(&format!(" {p}"))));
            let Some(line) = found else {
                panic!(
                    "peer {} never accepted the connections from ports {left:?}; it printed {:?}",
                    self.pid, self.out.seen
                )
            };
            left.retain(|p| !line.ends_with(&format!(" {p}")));
        }
    }

    /// Closes the peer's stdin: a peer that holds its connections (--hold, --end hold, hold-reset) now
    /// ends them and exits.
    pub fn release(&mut self) {
        self.stdin.take();
    }

    /// Waits for the peer process to exit by itself.
    pub fn wait_exit(&mut self) {
        assert!(wait_with_deadline(&mut self.child, DEADLINE).is_some(), "peer {} did not exit", self.pid);
    }

    pub fn wait_done(&mut self) {
        let done = self.out.find(DEADLINE, |l| l == "done").is_some();
        assert!(done, "peer {} never finished; it printed {:?}", self.pid, self.out.seen);
    }

    pub fn lines_starting(&self, prefix: &str) -> Vec<String> {
        self.out.seen.iter().filter(|l| l.starts_with(prefix)).cloned().collect()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Connects from the test process; returns the stream and its local port.
pub fn connect(addr: SocketAddr) -> (TcpStream, u16) {
    let s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    let port = s.local_addr().unwrap().port();
    (s, port)
}

/// bcc tcpaccept's row: `%-7d %-12.12s %-2d %-16s %-5d %-16s %-5d`.
pub fn accept_row(pid: u32, comm: &str, ip: u8, raddr: &str, rport: u16, laddr: &str, lport: u16) -> String {
    format!("{pid:<7} {comm:<12.12} {ip:<2} {raddr:<16} {rport:<5} {laddr:<16} {lport:<5}")
}

/// Whitespace-separated columns of a row, counted from the end so that time prefixes do not matter.
pub fn col_from_end(line: &str, n: usize) -> &str {
    let cols: Vec<&str> = line.split_whitespace().collect();
    cols.get(cols.len().wrapping_sub(n + 1)).copied().unwrap_or("")
}

/// True for an accept row whose local port is `lport` and remote port `rport`.
pub fn is_accept_of(line: &str, lport: u16, rport: u16) -> bool {
    col_from_end(line, 0) == lport.to_string() && col_from_end(line, 2) == rport.to_string()
}

/// Mounts bpffs at /sys/fs/bpf when nothing is there yet (fresh machines and qemu guests).
pub fn ensure_bpffs() {
    use nix::mount::{mount, MsFlags};
    let is_bpffs =
        nix::sys::statfs::statfs("/sys/fs/bpf").map(|s| s.filesystem_type().0 == 0xcafe4a11).unwrap_or(false);
    if !is_bpffs {
        std::fs::create_dir_all("/sys/fs/bpf").ok();
        mount(Some("bpf"), "/sys/fs/bpf", Some("bpf"), MsFlags::empty(), None::<&str>).expect("mounting bpffs");
    }
}

/// The cgroup v2 mount point: /sys/fs/cgroup on unified systems, /sys/fs/cgroup/unified on hybrid ones.
pub fn cgroup2_root() -> PathBuf {
    for dir in ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"] {
        let ok = nix::sys::statfs::statfs(dir).map(|s| s.filesystem_type().0 == 0x63677270).unwrap_or(false);
        if ok {
            return dir.into();
        }
    }
    panic!("no cgroup v2 hierarchy is mounted: the cgroup tests need one (mount -t cgroup2 none /sys/fs/cgroup)");
}

pub fn v4(port: u16) -> SocketAddr {
    SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, port))
}

pub fn v6(port: u16) -> SocketAddr {
    SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port))
}

/// A BPF map pinned under /sys/fs/bpf for the filter flags, holding `keys` (value bytes all 1).
pub fn pinned_map(kind: MapType, name: &str, key_size: u32, value_size: u32, keys: &[u64]) -> PathBuf {
    ensure_bpffs();
    let path = PathBuf::from(format!("/sys/fs/bpf/tcpkit-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let opts = libbpf_rs::libbpf_sys::bpf_map_create_opts {
        sz: std::mem::size_of::<libbpf_rs::libbpf_sys::bpf_map_create_opts>() as _,
        ..Default::default()
    };
    let mut map = MapHandle::create(kind, Some(name), key_size, value_size, 64, &opts).expect("creating a map");
    for key in keys {
        map.update(&key.to_ne_bytes()[..key_size as usize], &vec![1u8; value_size as usize], MapFlags::ANY)
            .expect("filling the map");
    }
    map.pin(&path).expect("pinning the map");
    path
}

/// A pinned hash map, as --cgroupmap and --mntnsmap want.
pub fn pinned_hash(name: &str, key_size: u32, value_size: u32, keys: &[u64]) -> PathBuf {
    pinned_map(MapType::Hash, name, key_size, value_size, keys)
}

/// IDs of the BPF objects of one kind ("prog_id" or "map_id") a process holds, from /proc/PID/fdinfo.
pub fn bpf_ids_of(pid: u32, kind: &str) -> Vec<u32> {
    let mut ids = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fdinfo")).unwrap().flatten() {
        let info = std::fs::read_to_string(entry.path()).unwrap_or_default();
        if let Some(id) = info.lines().find_map(|l| l.strip_prefix(kind).and_then(|r| r.strip_prefix(':'))) {
            ids.push(id.trim().parse().unwrap());
        }
    }
    ids
}

pub fn bpf_prog_ids_of(pid: u32) -> Vec<u32> {
    bpf_ids_of(pid, "prog_id")
}

/// Number of entries in the map called `name` that process `pid` holds.
pub fn map_entries_of(pid: u32, name: &str) -> usize {
    for id in bpf_ids_of(pid, "map_id") {
        let Ok(map) = MapHandle::from_map_id(id) else { continue };
        if map.name() == name {
            return map.keys().count();
        }
    }
    panic!("process {pid} holds no BPF map named {name}");
}

/// Bad input: one line on stderr naming the problem, nothing on stdout, exit status 2.
pub fn assert_usage_error(args: &[&str], needle: &str) {
    assert_error(args, 2, needle);
}

/// A machine or kernel that cannot do what was asked: one line naming the fix, exit status 1.
pub fn assert_runtime_error(args: &[&str], needle: &str) {
    assert_error(args, 1, needle);
}

fn assert_error(args: &[&str], code: i32, needle: &str) {
    let (status, out, err) = run_tcpkit(args);
    assert_eq!(status.code(), Some(code), "{args:?} → {err}");
    assert!(out.is_empty(), "{args:?} printed on stdout: {out}");
    assert_eq!(err.lines().count(), 1, "{args:?} error is not one line: {err}");
    assert!(err.starts_with("tcpkit: ") && err.contains(needle), "{args:?} → {err:?}, wanted {needle:?}");
}

/// A cgroup v2 directory made for one test, removed when dropped (once its processes are gone).
pub struct Cgroup(PathBuf);

impl Cgroup {
    pub fn new() -> Cgroup {
        // One directory per call: a test removes its whole tree when it ends, never another test's.
        static MADE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = cgroup2_root().join(format!("tcpkit-test-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("creating a cgroup");
        Cgroup(dir)
    }

    /// A cgroup inside this one.
    pub fn child(&self, name: &str) -> Cgroup {
        let dir = self.0.join(name);
        std::fs::create_dir_all(&dir).expect("creating a child cgroup");
        Cgroup(dir)
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }

    /// The cgroup id BPF sees: the directory's inode number.
    pub fn id(&self) -> u64 {
        std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&self.0).unwrap())
    }

    pub fn add(&self, pid: u32) {
        std::fs::write(self.0.join("cgroup.procs"), pid.to_string()).expect("moving the peer into the cgroup");
    }
}

impl Drop for Cgroup {
    /// Removes the cgroup and everything below it, deepest first, also when a test failed midway (a stale
    /// directory named like a container would be found by the next run's lookups); killed peers leave their
    /// cgroups a moment after they die, so it tries for up to 2 s.
    fn drop(&mut self) {
        let end = Instant::now() + Duration::from_secs(2);
        while self.0.exists() && Instant::now() < end {
            remove_tree(&self.0);
            if self.0.exists() {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

fn remove_tree(dir: &std::path::Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&entry.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}
