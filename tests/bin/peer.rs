//! tcpkit-peer: the other end of tcpkit's integration tests, run as its own process so that the PID it
//! reports differs from the test's. It says what it did on stdout, one `key value` line at a time:
//! `pid P`, `port P`, `mntns I`, `netns I`, `ready`, then `accepted LPORT RPORT` or `connected LPORT RPORT`
//! per connection, and `done`. Every mode is bounded by --count and ends by itself.
use std::io::{self, BufRead, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
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
    /// Wait for a line on stdin after `ready` before doing anything
    #[arg(long)]
    wait: bool,
    /// Stay alive after `done` until stdin closes
    #[arg(long)]
    hold: bool,
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
    },
    /// Connect --count times to --addr
    Connect {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long, default_value_t = 1)]
        count: usize,
    },
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
    say(&format!("pid {}", std::process::id()));
    say(&format!("mntns {}", ns_inode("mnt")));
    say(&format!("netns {}", ns_inode("net")));
    match cli.mode {
        Mode::Listen { addr, count, threads, syscall, nonblock } => {
            let listener = TcpListener::bind(addr).expect("bind");
            listener.set_nonblocking(nonblock).expect("set_nonblocking");
            say(&format!("port {}", listener.local_addr().unwrap().port()));
            ready(cli.wait);
            accept_all(listener, count, threads, syscall, nonblock);
        }
        Mode::Connect { addr, count } => {
            ready(cli.wait);
            for _ in 0..count {
                let s = TcpStream::connect(addr).expect("connect");
                say(&format!("connected {} {}", s.local_addr().unwrap().port(), addr.port()));
            }
        }
    }
    say("done");
    if cli.hold {
        let _ = io::stdin().lock().lines().count();
    }
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

/// Accepts `count` connections across `threads` threads; a thread still blocked in accept() when the
/// count is reached is ended by the process exit.
fn accept_all(listener: TcpListener, count: usize, threads: usize, syscall: Syscall, nonblock: bool) {
    let listener = Arc::new(listener);
    let accepted = Arc::new(AtomicUsize::new(0));
    let (done_tx, done_rx) = mpsc::channel();
    for _ in 0..threads {
        let (listener, accepted, done_tx) = (listener.clone(), accepted.clone(), done_tx.clone());
        std::thread::spawn(move || loop {
            let Some(stream) = accept_one(&listener, syscall, nonblock) else { continue };
            say(&format!("accepted {} {}", stream.local_addr().unwrap().port(), stream.peer_addr().unwrap().port()));
            if accepted.fetch_add(1, Ordering::SeqCst) + 1 == count {
                let _ = done_tx.send(());
            }
        });
    }
    done_rx.recv_timeout(Duration::from_secs(120)).expect("accepted fewer connections than --count within 120 s");
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

/// A new network namespace starts with lo down; `ip link set lo up` without needing iproute2.
fn loopback_up() -> io::Result<()> {
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
            ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
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
