//! tcpkit-peer: the other end of tcpkit's integration tests, run as its own process so that the PID it
//! reports differs from the test's. It says what it did on stdout, one `key value` line at a time:
//! `pid P`, `port P`, `mntns I`, `netns I`, `ready`, then `accepted LPORT RPORT` or `connected LPORT RPORT`
//! per connection (`failed LPORT ERRNO-NAME` for a connect allowed to fail, `abandoned LPORT`), and `done`
//! (after `retranssegs N` with --retranssegs).
//! Every mode is bounded by --count and ends by itself (or, with --hold or --end hold, when the test closes
//! its stdin).
mod uring;

use std::io::{self, BufRead, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use nix::libc;
use nix::sched::{unshare, CloneFlags};

#[derive(Parser)]
struct Cli {
    /// Move into a new mount namespace first
    #[arg(long)]
    new_mntns: bool,
    /// Move into a new network namespace first (with loopback up)
    #[arg(long)]
    new_netns: bool,
    /// Move into the network namespace of this process first
    #[arg(long, value_name = "PID")]
    join_netns: Option<u32>,
    /// Switch to this user (and group) ID after the namespace moves
    #[arg(long, value_name = "UID")]
    setuid: Option<u32>,
    /// Socket protocol: tcp, or mptcp and sctp (SOCK_STREAM sockets that must never show as TCP)
    #[arg(long, value_enum, default_value_t = Proto::Tcp)]
    proto: Proto,
    /// Wait for a line on stdin after `ready` before doing anything
    #[arg(long)]
    wait: bool,
    /// Stay alive after `done` until stdin closes
    #[arg(long)]
    hold: bool,
    /// Before `done`, report the network namespace's count of retransmitted segments (RetransSegs)
    #[arg(long)]
    retranssegs: bool,
    /// Set a sysctl (in the peer's network namespace, after the moves), e.g. net/ipv4/tcp_syncookies=0
    #[arg(long, value_name = "KEY=VALUE")]
    sysctl: Vec<String>,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Listen and accept --count connections with --threads threads
    Listen {
        #[arg(long, default_value = "127.0.0.1:0")]
        addr: SocketAddr,
        #[arg(long, default_value_t = 1)]
        count: usize,
        #[arg(long, default_value_t = 1)]
        threads: usize,
        #[arg(long, value_enum, default_value_t = Syscall::Accept4)]
        syscall: Syscall,
        /// Non-blocking listener: wait with poll(), then accept
        #[arg(long)]
        nonblock: bool,
        /// What to do with each accepted connection
        #[arg(long, value_enum, default_value_t = End::Close)]
        end: End,
        /// listen(2) backlog; 0 with syncookies off drops every SYN
        #[arg(long, default_value_t = 1024)]
        backlog: i32,
        /// Listen only: accept nothing, until stdin closes
        #[arg(long)]
        no_accept: bool,
        /// Accept through io_uring (IORING_OP_ACCEPT), not accept4()
        #[arg(long)]
        uring: bool,
        /// Fail if fewer than --count connections came within this many seconds
        #[arg(long, value_name = "SECS", default_value_t = 120)]
        within: u64,
        #[command(flatten)]
        exchange: Exchange,
    },
    /// Connect --count times to --addr, from --threads threads
    Connect {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long, default_value_t = 1)]
        count: usize,
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// What to do with each connection once connected
        #[arg(long, value_enum, default_value_t = End::Close)]
        end: End,
        /// First connect this many times to --refused-addr, where nothing listens; each must be refused
        #[arg(long, default_value_t = 0)]
        refused: usize,
        #[arg(long, default_value = "127.0.0.1:1")]
        refused_addr: SocketAddr,
        #[command(flatten)]
        how: ConnectHow,
        #[command(flatten)]
        exchange: Exchange,
    },
    /// In a network namespace of its own: a connection to itself, then lo goes down and the connecting end
    /// writes until TCP_USER_TIMEOUT gives up on the silent peer
    Silent {
        #[arg(long, default_value_t = 1000)]
        user_timeout_ms: u32,
    },
    /// In a network namespace of its own: a connection to itself whose segments are lost while lo is down
    /// (--down-ms): the connecting end writes --send bytes into it, so that they are retransmitted. Reports
    /// `tcpinfo LPORT KEY=VALUE...` (the kernel's TCP_INFO of that end, once all is acknowledged), or with
    /// --close-first closes that end right after writing and reports `retranssegs N` (the namespace's
    /// RetransSegs from /proc/net/snmp) once both ends are closed
    Lossy {
        #[arg(long, default_value_t = 10000)]
        send: usize,
        #[arg(long, default_value_t = 1000)]
        down_ms: u64,
        #[arg(long)]
        close_first: bool,
    },
    /// In a network namespace of its own: --count connections to itself, whose connecting ends write --send
    /// bytes each while lo is down and close at once. Once lo is up (after --down-ms), their data and FINs
    /// are sent again from TCP's timers, in softirqs, and each end's state changes to its close follow
    /// there; the accepting ends close once they have read everything. `done` when every socket is closed.
    Orphans {
        #[arg(long, default_value_t = 100)]
        count: usize,
        #[arg(long, default_value_t = 3000)]
        send: usize,
        #[arg(long, default_value_t = 500)]
        down_ms: u64,
    },
    /// Send one UDP datagram to --addr from a connected UDP socket
    Udp {
        #[arg(long)]
        addr: SocketAddr,
    },
}

#[derive(ValueEnum, Clone, Copy, PartialEq, Eq)]
enum Proto {
    Tcp,
    Mptcp,
    Sctp,
}

impl Proto {
    fn number(self) -> i32 {
        match self {
            Proto::Tcp => libc::IPPROTO_TCP,
            Proto::Mptcp => 262,
            Proto::Sctp => libc::IPPROTO_SCTP,
        }
    }
}

/// How a connect is made.
#[derive(clap::Args, Clone, Copy)]
struct ConnectHow {
    /// A connect may fail: report `failed LPORT ERRNO-NAME` and go on, rather than panic
    #[arg(long)]
    may_fail: bool,
    /// Non-blocking connect(): EINPROGRESS, then poll for the outcome
    #[arg(long)]
    nonblock: bool,
    /// Connect through io_uring (IORING_OP_CONNECT), not connect()
    #[arg(long)]
    uring: bool,
    /// SYN retransmissions before ETIMEDOUT (TCP_SYNCNT); the kernel's default otherwise
    #[arg(long)]
    syn_retries: Option<i32>,
    /// Non-blocking connect, then close() after this many milliseconds if it is still in progress
    #[arg(long, value_name = "MS")]
    abandon_ms: Option<u64>,
}

/// What a connection carries before it ends, as a request and its response: the connecting end writes
/// its bytes and then reads, the accepting end reads and then writes (its reply acknowledges the request).
#[derive(clap::Args, Clone, Copy)]
struct Exchange {
    /// Write this many bytes
    #[arg(long, default_value_t = 0)]
    send: usize,
    /// Read exactly this many bytes
    #[arg(long, default_value_t = 0)]
    recv: usize,
    /// Then wait this many milliseconds before ending the connection
    #[arg(long, default_value_t = 0)]
    hold_ms: u64,
}

impl Exchange {
    fn run(&self, stream: &mut TcpStream, reads_first: bool) {
        let mut buf = vec![0u8; self.recv];
        if reads_first {
            stream.read_exact(&mut buf).expect("reading the exchange");
        }
        stream.write_all(&vec![b'x'; self.send]).expect("writing the exchange");
        if !reads_first {
            stream.read_exact(&mut buf).expect("reading the exchange");
        }
        if self.recv > 0 {
            ack_now(stream);
        }
        std::thread::sleep(Duration::from_millis(self.hold_ms));
    }
}

/// Sends the ACK of what was read now rather than after the delayed-ACK timer (40 ms or more): a reset
/// that goes first acknowledges nothing, and under emulation the timer can be later than the reset, which
/// left the other end's bytes_acked at 0.
fn ack_now(stream: &TcpStream) {
    set_option(stream, libc::IPPROTO_TCP, libc::TCP_QUICKACK, &(1 as libc::c_int), "TCP_QUICKACK");
}

/// How a connection ends.
#[derive(ValueEnum, Clone, Copy, PartialEq, Eq)]
enum End {
    /// close() at once
    Close,
    /// SO_LINGER 0, then close(): the other end gets a reset
    Reset,
    /// Keep it open until stdin closes, then close()
    Hold,
    /// Keep it open until stdin closes, then reset it
    HoldReset,
    /// Read until the other end closes, then close(): this end closes second
    Drain,
}

#[derive(ValueEnum, Clone, Copy, PartialEq, Eq)]
enum Syscall {
    Accept,
    Accept4,
}

fn main() {
    let cli = Cli::parse();
    if cli.new_mntns {
        unshare(CloneFlags::CLONE_NEWNS).expect("unshare(CLONE_NEWNS) needs root");
    }
    if cli.new_netns {
        unshare(CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET) needs root");
        loopback_up().expect("bringing lo up");
    }
    if let Some(pid) = cli.join_netns {
        let ns = std::fs::File::open(format!("/proc/{pid}/ns/net")).expect("opening the network namespace");
        nix::sched::setns(ns, CloneFlags::CLONE_NEWNET).expect("setns(CLONE_NEWNET) needs root");
    }
    if let Some(id) = cli.setuid {
        nix::unistd::setgid(nix::unistd::Gid::from_raw(id)).expect("setgid needs root");
        nix::unistd::setuid(nix::unistd::Uid::from_raw(id)).expect("setuid needs root");
    }
    for setting in &cli.sysctl {
        let (key, value) = setting.split_once('=').expect("--sysctl KEY=VALUE");
        std::fs::write(format!("/proc/sys/{key}"), value).unwrap_or_else(|e| panic!("sysctl {key}: {e}"));
    }
    say(&format!("pid {}", std::process::id()));
    say(&format!("mntns {}", ns_inode("mnt")));
    say(&format!("netns {}", ns_inode("net")));
    let mut kept = Vec::new();
    match cli.mode {
        Mode::Listen { addr, count, threads, syscall, nonblock, end, backlog, no_accept, uring, within, exchange } => {
            let listener = listen(addr, cli.proto, backlog);
            listener.set_nonblocking(nonblock).expect("set_nonblocking");
            say(&format!("port {}", listener.local_addr().unwrap().port()));
            ready(cli.wait);
            if no_accept {
                let _ = io::stdin().lock().lines().count();
            } else {
                let accept = Accept { syscall, nonblock, uring, end, exchange };
                kept = accept_all(listener, count, threads, Duration::from_secs(within), accept);
            }
        }
        Mode::Connect { addr, count, threads, end, refused, refused_addr, how, exchange } => {
            ready(cli.wait);
            for _ in 0..refused {
                let err = connect(refused_addr, cli.proto).expect_err("a connect that should be refused");
                assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "connect {refused_addr}: {err}");
            }
            kept = connect_all(addr, cli.proto, count, threads, end, how, exchange);
        }
        Mode::Silent { user_timeout_ms } => {
            ready(cli.wait);
            silent(user_timeout_ms);
        }
        Mode::Lossy { send, down_ms, close_first } => {
            ready(cli.wait);
            lossy(send, Duration::from_millis(down_ms), close_first);
        }
        Mode::Orphans { count, send, down_ms } => {
            ready(cli.wait);
            orphans(count, send, Duration::from_millis(down_ms));
        }
        Mode::Udp { addr } => {
            ready(cli.wait);
            let any: SocketAddr = if addr.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().unwrap();
            let sock = std::net::UdpSocket::bind(any).expect("bind udp");
            sock.connect(addr).expect("connect udp");
            sock.send(b"tcpkit").expect("send udp");
            say(&format!("connected {} {}", sock.local_addr().unwrap().port(), addr.port()));
        }
    }
    if cli.retranssegs {
        say(&format!("retranssegs {}", snmp_tcp("RetransSegs")));
    }
    say("done");
    if cli.hold || !kept.is_empty() {
        let _ = io::stdin().lock().lines().count();
    }
    drop(kept);
}

fn end_connection(mut stream: TcpStream, end: End, kept: &Mutex<Vec<TcpStream>>) {
    match end {
        End::Close => drop(stream),
        End::Drain => {
            let _ = io::copy(&mut stream, &mut io::sink());
            drop(stream);
        }
        End::Reset => {
            set_linger_zero(&stream);
            drop(stream);
        }
        End::Hold | End::HoldReset => {
            if end == End::HoldReset {
                set_linger_zero(&stream);
            }
            kept.lock().unwrap().push(stream)
        }
    }
}

/// With SO_LINGER 0, close() sends a reset instead of a FIN.
fn set_linger_zero(stream: &TcpStream) {
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    set_option(stream, libc::SOL_SOCKET, libc::SO_LINGER, &linger, "SO_LINGER");
}

/// setsockopt(2) of one option whose value is a `T`; panics, naming the option, if the kernel refuses it.
fn set_option<T>(stream: &TcpStream, level: libc::c_int, option: libc::c_int, value: &T, name: &str) {
    // SAFETY: `value` points at a live T and the length given is its size; the socket is ours.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            level,
            option,
            value as *const T as *const libc::c_void,
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "{name}: {}", io::Error::last_os_error());
}

/// A SOCK_STREAM socket of the given protocol, as a std stream type (they work for any stream socket).
fn stream_socket(addr: SocketAddr, proto: Proto) -> io::Result<i32> {
    let family = if addr.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    // SAFETY: plain socket(2).
    let fd = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, proto.number()) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data, large enough for either family.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            // SAFETY: storage is large enough and suitably aligned for sockaddr_in.
            let sin = unsafe { &mut *(&mut storage as *mut _ as *mut libc::sockaddr_in) };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe { &mut *(&mut storage as *mut _ as *mut libc::sockaddr_in6) };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr.s6_addr = a.ip().octets();
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

fn listen(addr: SocketAddr, proto: Proto, backlog: i32) -> TcpListener {
    let fd = stream_socket(addr, proto).unwrap_or_else(|e| panic!("socket for {addr}: {e}"));
    // SAFETY: fd is a fresh socket we own; the TcpListener closes it.
    let listener = unsafe { TcpListener::from_raw_fd(fd) };
    let (sa, len) = sockaddr(addr);
    let one: libc::c_int = 1;
    // SAFETY: bind/listen on our socket with a valid address; SO_REUSEADDR with an int.
    unsafe {
        libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, &one as *const _ as *const libc::c_void, 4);
        assert_eq!(
            libc::bind(fd, &sa as *const _ as *const libc::sockaddr, len),
            0,
            "bind {addr}: {}",
            io::Error::last_os_error()
        );
        assert_eq!(libc::listen(fd, backlog), 0, "listen: {}", io::Error::last_os_error());
    }
    listener
}

fn connect(addr: SocketAddr, proto: Proto) -> io::Result<TcpStream> {
    if proto == Proto::Tcp {
        return TcpStream::connect(addr);
    }
    let fd = stream_socket(addr, proto)?;
    // SAFETY: fd is a fresh socket we own; the TcpStream closes it.
    let stream = unsafe { TcpStream::from_raw_fd(fd) };
    let (sa, len) = sockaddr(addr);
    // SAFETY: connect on our socket with a valid address.
    if unsafe { libc::connect(fd, &sa as *const _ as *const libc::sockaddr, len) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(stream)
}

/// A TCP connect made as `how` says; Err carries the socket's local port (0 if it never had one).
fn connect_as(addr: SocketAddr, how: ConnectHow) -> Result<TcpStream, (u16, io::Error)> {
    let fd = stream_socket(addr, Proto::Tcp).map_err(|e| (0, e))?;
    // SAFETY: fd is a fresh socket we own; the TcpStream closes it.
    let stream = unsafe { TcpStream::from_raw_fd(fd) };
    let local_port = |s: &TcpStream| s.local_addr().map_or(0, |a| a.port());
    if let Some(n) = how.syn_retries {
        setsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_SYNCNT, n);
    }
    let (sa, len) = sockaddr(addr);
    let sa_ptr = &sa as *const _ as *const libc::sockaddr;
    if how.uring {
        let mut ring = uring::Ring::new().expect("io_uring_setup");
        return match ring.connect(fd, sa_ptr, len) {
            Ok(()) => Ok(stream),
            Err(e) => Err((local_port(&stream), e)),
        };
    }
    let nonblock = how.nonblock || how.abandon_ms.is_some();
    stream.set_nonblocking(nonblock).expect("set_nonblocking");
    // SAFETY: connect on our socket with a valid address.
    if unsafe { libc::connect(fd, sa_ptr, len) } == 0 {
        stream.set_nonblocking(false).expect("set_nonblocking");
        return Ok(stream);
    }
    let err = io::Error::last_os_error();
    if !nonblock || err.raw_os_error() != Some(libc::EINPROGRESS) {
        return Err((local_port(&stream), err));
    }
    let wait_ms = how.abandon_ms.map_or(-1, |ms| ms as i32);
    let mut fds = [libc::pollfd { fd, events: libc::POLLOUT, revents: 0 }];
    // SAFETY: one valid pollfd.
    let ready = unsafe { libc::poll(fds.as_mut_ptr(), 1, wait_ms) };
    if ready == 0 {
        let port = local_port(&stream);
        drop(stream); // closed while in SYN_SENT
        return Err((port, io::Error::from_raw_os_error(libc::ECANCELED)));
    }
    match stream.take_error() {
        Ok(None) => {
            stream.set_nonblocking(false).expect("set_nonblocking");
            Ok(stream)
        }
        Ok(Some(e)) | Err(e) => Err((local_port(&stream), e)),
    }
}

fn setsockopt_int(fd: i32, level: i32, name: i32, value: i32) {
    // SAFETY: an int option on a socket we own.
    let rc = unsafe { libc::setsockopt(fd, level, name, &value as *const i32 as *const libc::c_void, 4) };
    assert_eq!(rc, 0, "setsockopt {level}/{name}: {}", io::Error::last_os_error());
}

fn errno_name(err: &io::Error) -> String {
    format!("{:?}", nix::errno::Errno::from_raw(err.raw_os_error().unwrap_or(0)))
}

/// Makes `count` connections across `threads` threads; returns those kept open (--end hold).
fn connect_all(
    addr: SocketAddr,
    proto: Proto,
    count: usize,
    threads: usize,
    end: End,
    how: ConnectHow,
    exchange: Exchange,
) -> Vec<TcpStream> {
    let kept = Arc::new(Mutex::new(Vec::new()));
    let next = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..threads.max(1))
        .map(|_| {
            let (kept, next) = (kept.clone(), next.clone());
            std::thread::spawn(move || {
                while next.fetch_add(1, Ordering::SeqCst) < count {
                    let made = match proto {
                        Proto::Tcp => connect_as(addr, how),
                        _ => connect(addr, proto).map_err(|e| (0, e)),
                    };
                    let mut s = match made {
                        Ok(s) => s,
                        Err((port, e)) if e.raw_os_error() == Some(libc::ECANCELED) => {
                            say(&format!("abandoned {port}"));
                            continue;
                        }
                        Err((port, e)) if how.may_fail => {
                            say(&format!("failed {port} {}", errno_name(&e)));
                            continue;
                        }
                        Err((_, e)) => panic!("connect {addr}: {e}"),
                    };
                    say(&format!("connected {} {}", s.local_addr().unwrap().port(), addr.port()));
                    exchange.run(&mut s, false);
                    end_connection(s, end, &kept);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("a connecting thread panicked");
    }
    Arc::try_unwrap(kept).map(|m| m.into_inner().unwrap()).unwrap_or_default()
}

fn say(line: &str) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn ready(wait: bool) {
    say("ready");
    if wait {
        let _ = io::stdin().lock().lines().next();
    }
}

fn ns_inode(kind: &str) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/self/ns/{kind}")).map(|m| m.ino()).unwrap_or(0)
}

/// How each connection is accepted, and what becomes of it.
#[derive(Clone, Copy)]
struct Accept {
    syscall: Syscall,
    nonblock: bool,
    uring: bool,
    end: End,
    exchange: Exchange,
}

/// Accepts `count` connections across `threads` threads, within `within`; a thread still blocked in accept()
/// when the count is reached is ended by the process exit. Returns the connections kept open (--end hold).
fn accept_all(listener: TcpListener, count: usize, threads: usize, within: Duration, how: Accept) -> Vec<TcpStream> {
    let listener = Arc::new(listener);
    let accepted = Arc::new(AtomicUsize::new(0));
    let kept = Arc::new(Mutex::new(Vec::new()));
    let (done_tx, done_rx) = mpsc::channel();
    for _ in 0..threads {
        let (listener, accepted, kept, done_tx) = (listener.clone(), accepted.clone(), kept.clone(), done_tx.clone());
        let mut ring = how.uring.then(|| uring::Ring::new().expect("io_uring_setup"));
        std::thread::spawn(move || loop {
            let stream = match ring.as_mut() {
                Some(ring) => Some(ring.accept(listener.as_raw_fd()).map(|fd| {
                    // SAFETY: fd was just returned by the accept and is ours alone.
                    unsafe { TcpStream::from_raw_fd(fd) }
                }))
                .map(|r| r.unwrap_or_else(|e| panic!("io_uring accept: {e}"))),
                None => accept_one(&listener, how.syscall, how.nonblock),
            };
            let Some(mut stream) = stream else { continue };
            // A connection the other end already ended has no peer address any more: port 0.
            let rport = stream.peer_addr().map_or(0, |a| a.port());
            say(&format!("accepted {} {rport}", stream.local_addr().unwrap().port()));
            how.exchange.run(&mut stream, true);
            end_connection(stream, how.end, &kept);
            if accepted.fetch_add(1, Ordering::SeqCst) + 1 == count {
                let _ = done_tx.send(());
            }
        });
    }
    done_rx.recv_timeout(within).expect("accepted fewer connections than --count within --within seconds");
    let streams = std::mem::take(&mut *kept.lock().unwrap());
    streams
}

fn accept_one(listener: &TcpListener, syscall: Syscall, nonblock: bool) -> Option<TcpStream> {
    if nonblock {
        let mut fds = [libc::pollfd { fd: listener.as_raw_fd(), events: libc::POLLIN, revents: 0 }];
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(fds.as_mut_ptr(), 1, 1000) };
    }
    // SAFETY: plain syscalls on a listening socket we own; a returned fd is owned by the new TcpStream.
    let fd = unsafe {
        match syscall {
            Syscall::Accept => libc::accept(listener.as_raw_fd(), std::ptr::null_mut(), std::ptr::null_mut()),
            Syscall::Accept4 => {
                libc::accept4(listener.as_raw_fd(), std::ptr::null_mut(), std::ptr::null_mut(), libc::SOCK_CLOEXEC)
            }
        }
    };
    if fd < 0 {
        let err = io::Error::last_os_error();
        assert!(err.kind() == io::ErrorKind::WouldBlock || err.kind() == io::ErrorKind::Interrupted, "accept: {err}");
        return None;
    }
    // SAFETY: fd was just returned by accept and is ours alone.
    Some(unsafe { TcpStream::from_raw_fd(fd) })
}

/// A connecting end whose peer goes silent: a connection to itself, then lo goes down (packets on it are
/// dropped from then on) and the connecting end writes until TCP_USER_TIMEOUT ends the connection.
fn silent(user_timeout_ms: u32) {
    let listener = listen("127.0.0.1:0".parse().unwrap(), Proto::Tcp, 16);
    let mut client = TcpStream::connect(listener.local_addr().unwrap()).expect("connect to itself");
    let (server, _) = listener.accept().expect("accept");
    setsockopt_int(client.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, user_timeout_ms as i32);
    let lport = client.local_addr().unwrap().port();
    say(&format!("connected {lport} {}", listener.local_addr().unwrap().port()));
    set_loopback(false).expect("bringing lo down");
    client.write_all(b"into the void").expect("write");
    let mut buf = [0u8; 16];
    let err = client.read(&mut buf).expect_err("a read on a connection whose peer went silent");
    say(&format!("ended {lport} {}", errno_name(&err)));
    let _ = server.into_raw_fd(); // its end stays open until the process exits
}

/// The connection of `lossy` mode: see Mode::Lossy.
fn lossy(send: usize, down: Duration, close_first: bool) {
    let listener = listen("127.0.0.1:0".parse().unwrap(), Proto::Tcp, 16);
    let mut client = TcpStream::connect(listener.local_addr().unwrap()).expect("connect to itself");
    let (mut server, _) = listener.accept().expect("accept");
    let lport = client.local_addr().unwrap().port();
    say(&format!("connected {lport} {}", listener.local_addr().unwrap().port()));
    set_loopback(false).expect("bringing lo down");
    client.write_all(&vec![b'x'; send]).expect("write");
    let client = if close_first {
        drop(client); // with its data in flight: the retransmissions go on after close()
        None
    } else {
        Some(client)
    };
    std::thread::sleep(down);
    set_loopback(true).expect("bringing lo up");
    let mut got = vec![0u8; send];
    server.read_exact(&mut got).expect("reading what was sent");
    match client {
        Some(client) => {
            // Once the last byte is acknowledged nothing more is retransmitted: the counters are final.
            let info = loop {
                let info = tcp_info(&client);
                if info.u32_at(24) == 0 {
                    break info; // tcpi_unacked
                }
                std::thread::sleep(Duration::from_millis(10));
            };
            say(&format!("tcpinfo {lport} {}", info.summary()));
            drop(client);
            let _ = io::copy(&mut server, &mut io::sink());
        }
        None => {
            let _ = io::copy(&mut server, &mut io::sink());
        }
    }
    drop(server);
    if close_first {
        // Both ends' full sockets must be closed before the namespace's count is their whole story.
        wait_until_only_listeners_and_time_wait();
        say(&format!("retranssegs {}", snmp_tcp("RetransSegs")));
    }
}

/// The connections of `orphans` mode: see Mode::Orphans.
fn orphans(count: usize, send: usize, down: Duration) {
    let listener = listen("127.0.0.1:0".parse().unwrap(), Proto::Tcp, 1024);
    let pairs: Vec<(TcpStream, TcpStream)> = (0..count)
        .map(|_| {
            let client = TcpStream::connect(listener.local_addr().unwrap()).expect("connect to itself");
            let (server, _) = listener.accept().expect("accept");
            say(&format!("connected {} {}", client.local_addr().unwrap().port(), server.local_addr().unwrap().port()));
            (client, server)
        })
        .collect();
    set_loopback(false).expect("bringing lo down");
    let servers: Vec<TcpStream> = pairs
        .into_iter()
        .map(|(mut client, server)| {
            client.write_all(&vec![b'x'; send]).expect("write");
            server // the client closes here, its data in flight
        })
        .collect();
    std::thread::sleep(down);
    set_loopback(true).expect("bringing lo up");
    for mut server in servers {
        let _ = io::copy(&mut server, &mut io::sink());
    }
    wait_until_only_listeners_and_time_wait();
}

/// Waits until this network namespace's full TCP sockets are all closed: what is left is listeners (0A) and
/// time-wait sockets (FIN_WAIT2 05 or TIME_WAIT 06 of an orphan).
fn wait_until_only_listeners_and_time_wait() {
    let open = |l: &str| !matches!(l.split_whitespace().nth(3), Some("0A" | "05" | "06"));
    while std::fs::read_to_string("/proc/net/tcp").unwrap().lines().skip(1).any(open) {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// struct tcp_info (uapi/linux/tcp.h) as the kernel wrote it: fields read by offset, as the kernel's
/// version decides how many there are.
struct TcpInfo([u8; 256], usize);

impl TcpInfo {
    fn u32_at(&self, at: usize) -> u32 {
        if at + 4 > self.1 {
            return 0;
        }
        u32::from_ne_bytes(self.0[at..at + 4].try_into().unwrap())
    }

    fn u64_at(&self, at: usize) -> u64 {
        if at + 8 > self.1 {
            return 0;
        }
        u64::from_ne_bytes(self.0[at..at + 8].try_into().unwrap())
    }

    /// The counters tcpkit reports, by the names of its JSON fields.
    fn summary(&self) -> String {
        format!(
            "rtt_us={} rtt_var_us={} retransmits={} segs_out={} segs_in={} min_rtt_us={} retransmitted_bytes={}",
            self.u32_at(68),
            self.u32_at(72),
            self.u32_at(100),
            self.u32_at(136),
            self.u32_at(140),
            self.u32_at(148),
            self.u64_at(208),
        )
    }
}

fn tcp_info(stream: &TcpStream) -> TcpInfo {
    let mut info = TcpInfo([0; 256], 0);
    let mut len = info.0.len() as libc::socklen_t;
    // SAFETY: getsockopt(2) writes at most `len` bytes into the buffer and the length it wrote into `len`.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            info.0.as_mut_ptr() as *mut libc::c_void,
            &mut len,
        )
    };
    assert_eq!(rc, 0, "TCP_INFO: {}", io::Error::last_os_error());
    info.1 = len as usize;
    info
}

/// A counter of the `Tcp:` lines of /proc/net/snmp: this network namespace's.
fn snmp_tcp(name: &str) -> u64 {
    let snmp = std::fs::read_to_string("/proc/net/snmp").expect("reading /proc/net/snmp");
    let mut tcp = snmp.lines().filter(|l| l.starts_with("Tcp:"));
    let (names, values) = (tcp.next().expect("Tcp: names"), tcp.next().expect("Tcp: values"));
    let at = names.split_whitespace().position(|n| n == name).unwrap_or_else(|| panic!("no Tcp {name}"));
    values.split_whitespace().nth(at).unwrap().parse().unwrap()
}

/// A new network namespace starts with lo down; `ip link set lo up` without needing iproute2.
fn loopback_up() -> io::Result<()> {
    set_loopback(true)
}

fn set_loopback(up: bool) -> io::Result<()> {
    // SAFETY: ioctls on a socket we own with a zeroed, NUL-terminated ifreq.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut ifr: libc::ifreq = std::mem::zeroed();
        ifr.ifr_name[..2].copy_from_slice(&[b'l' as libc::c_char, b'o' as libc::c_char]);
        let rc = if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut ifr) < 0 {
            -1
        } else {
            if up {
                ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            } else {
                ifr.ifr_ifru.ifru_flags &= !(libc::IFF_UP as libc::c_short);
            }
            libc::ioctl(fd, libc::SIOCSIFFLAGS, &ifr)
        };
        let err = io::Error::last_os_error();
        libc::close(fd);
        if rc < 0 {
            return Err(err);
        }
    }
    Ok(())
}
