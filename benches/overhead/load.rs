//! The load: K client threads connect and close, acceptor threads accept and close, all on loopback.
use std::collections::VecDeque;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
use nix::sys::socket::{self, sockopt, AddressFamily, Backlog, SockFlag, SockType, SockaddrStorage};
use nix::sys::time::TimeVal;
use nix::unistd::Pid;

/// A connect that takes longer than this failed (a full listen queue drops SYNs; the retry is 1 s later).
const CONNECT_TIMEOUT: TimeVal = TimeVal::new(2, 0);
/// How long an acceptor blocks in accept() before it looks whether the clients are done.
const ACCEPT_WAKEUP: TimeVal = TimeVal::new(0, 100_000);
/// Acceptors shape: connections a client holds before closing the oldest. By then the acceptor has nearly
/// always closed the other end, so TIME_WAIT lands on the server side: client-side TIME_WAIT would use up the
/// ephemeral ports and make the kernel's port search, not tracing, the bottleneck.
const CLIENT_WINDOW: usize = 32;

#[derive(Clone, Copy, Debug)]
pub(crate) struct Load {
    pub(crate) connections: u64,
    pub(crate) threads: usize,
    pub(crate) time_limit: Duration,
    /// Pin the load's threads to CPUs (see pin_to_cpu).
    pub(crate) pin: bool,
    pub(crate) shape: Shape,
}

/// Who accepts the connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Shape {
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
pub(crate) struct LoadResult {
    /// Client connects that succeeded, and accepts, over both families.
    pub(crate) connected: u64,
    pub(crate) accepted: u64,
    pub(crate) failed: u64,
    pub(crate) wall: Duration,
    /// The time limit ended the run early.
    pub(crate) gave_up: bool,
}

impl LoadResult {
    pub(crate) fn rate(&self) -> f64 {
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
pub(crate) fn run_load(load: Load) -> io::Result<LoadResult> {
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
