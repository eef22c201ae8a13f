//! The one buffered writer to stdout. Into a terminal every batch of events is flushed at once; into a pipe
//! or file output is buffered, but never held longer than FLUSH_INTERVAL.
use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

pub const FLUSH_INTERVAL: Duration = Duration::from_millis(100);

pub struct Output {
    /// A duplicate of fd 1 rather than io::Stdout, whose line buffer would copy every batch once more and
    /// look for its last newline.
    out: BufWriter<File>,
    terminal: bool,
    pending_since: Option<Instant>,
}

impl Output {
    pub fn stdout() -> io::Result<Self> {
        let stdout = io::stdout();
        let fd = File::from(stdout.as_fd().try_clone_to_owned()?);
        Ok(Output { terminal: stdout.is_terminal(), out: BufWriter::with_capacity(64 * 1024, fd), pending_since: None })
    }

    pub fn writer(&mut self) -> &mut impl Write {
        &mut self.out
    }

    /// Called after each batch: flushes now (terminal, or data older than the interval) or says how long
    /// the reader may wait before it must flush.
    pub fn after_batch(&mut self) -> io::Result<Duration> {
        if self.out.buffer().is_empty() {
            self.pending_since = None;
            return Ok(FLUSH_INTERVAL);
        }
        let since = *self.pending_since.get_or_insert_with(Instant::now);
        let age = since.elapsed();
        if self.terminal || age >= FLUSH_INTERVAL {
            self.flush()?;
            return Ok(FLUSH_INTERVAL);
        }
        Ok(FLUSH_INTERVAL - age)
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.pending_since = None;
        self.out.flush()
    }

    /// True once the reading end of a stdout pipe is gone (`tcpkit … | head` after head exits), so an idle
    /// tracer ends without waiting for an event to fail a write.
    pub fn reader_gone(&self) -> bool {
        let stdout = io::stdout();
        let mut fds = [PollFd::new(stdout.as_fd(), PollFlags::empty())];
        matches!(poll(&mut fds, PollTimeout::ZERO), Ok(1))
            && fds[0].revents().is_some_and(|r| r.intersects(PollFlags::POLLERR | PollFlags::POLLHUP))
    }
}

pub fn is_broken_pipe(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::BrokenPipe
}
