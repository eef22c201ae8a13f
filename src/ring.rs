//! The ring-buffer reader shared by every subcommand: decode, format into one buffered writer, account for
//! lost events, and stop cleanly on a signal, a closed pipe, -c or -d.
use std::cell::{Cell, RefCell};
use std::io;
use std::time::{Duration, Instant};

use libbpf_rs::{MapCore, RingBufferBuilder};

use crate::error::{Context, Error, Result};
use crate::event;
use crate::format::{Format, Losses};
use crate::output::{is_broken_pipe, Output};
use crate::signals;

const EINTR: i32 = 4;
/// The longest an event waits in the ring before the reader looks (the kernel does not wake it per event).
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// When to stop besides a signal: after `count` printed events (-c), after `duration` (-d).
#[derive(Clone, Copy, Debug, Default)]
pub struct Limits {
    pub count: Option<u64>,
    pub duration: Option<Duration>,
}

/// Reads events until asked to stop. `losses` reads the kernel's counts of what it could not keep;
/// `housekeeping` runs between polls (never per event), for filters that follow the node (--pod).
pub fn run(
    events: &dyn MapCore,
    losses: impl Fn() -> Losses,
    mut housekeeping: impl FnMut() -> Result<()>,
    format: &mut impl Format,
    limits: Limits,
) -> Result<()> {
    let out = RefCell::new(Output::stdout().context(|| "opening standard output".into())?);
    let write_error: RefCell<Option<io::Error>> = RefCell::new(None);
    let deadline = limits.duration.map(|d| Instant::now() + d);

    {
        let mut out = out.borrow_mut();
        if let Err(e) = format.header(out.writer()).and_then(|()| out.flush()) {
            return quiet_if_broken_pipe(e);
        }
    }

    let format = RefCell::new(format);
    let printed = Cell::new(0u64);
    let count_reached = Cell::new(false);
    let mut builder = RingBufferBuilder::new();
    builder
        .add(events, |data: &[u8]| {
            if count_reached.get() {
                return -1; // -c: nothing more, not even what is already queued
            }
            let Some(e) = event::decode(data) else { return 0 };
            match e.r#type {
                event::EVENT_CGROUP => {
                    if let Some(path) = event::cgroup_path(data) {
                        format.borrow_mut().cgroup_made(e.task.cgroup_id, path);
                    }
                    return 0;
                }
                event::EVENT_CGROUP_GONE => {
                    format.borrow_mut().cgroup_removed(e.task.cgroup_id);
                    return 0;
                }
                _ => {}
            }
            if let Err(err) = format.borrow_mut().event(&e, out.borrow_mut().writer()) {
                *write_error.borrow_mut() = Some(err);
                return -1; // stops this poll; the loop below reports the error
            }
            printed.set(printed.get() + 1);
            if limits.count == Some(printed.get()) {
                count_reached.set(true);
                return -1;
            }
            0
        })
        .context(|| "setting up the ring buffer".into())?;
    let ring = builder.build().context(|| "setting up the ring buffer".into())?;

    let mut reported = Losses::default();
    let mut timeout = crate::output::FLUSH_INTERVAL;
    while !signals::stop_requested() && !count_reached.get() {
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if left == Some(Duration::ZERO) {
            break;
        }
        // The kernel wakes us only when a quarter of the ring is full, so we also come by every POLL_INTERVAL.
        let mut rc = ring.poll_raw(left.map_or(timeout, |l| l.min(timeout)).min(POLL_INTERVAL));
        if rc == 0 {
            // A poll that timed out consumes nothing: read what the kernel queued without waking us.
            rc = ring.consume_raw();
        }
        if let Some(err) = write_error.borrow_mut().take() {
            return quiet_if_broken_pipe(err);
        }
        // A callback that stops the poll (-c reached) makes it return that -1: not an error.
        if rc < 0 && rc != -EINTR && !count_reached.get() {
            return Err(Error::runtime(format!("reading the ring buffer: {}", io::Error::from_raw_os_error(-rc))));
        }
        reported = match report_losses(losses(), reported, &mut **format.borrow_mut(), &mut out.borrow_mut()) {
            Ok(n) => n,
            Err(e) => return quiet_if_broken_pipe(e),
        };
        format.borrow_mut().idle(&reported);
        timeout = match out.borrow_mut().after_batch() {
            Ok(t) => t,
            Err(e) => return quiet_if_broken_pipe(e),
        };
        if rc == 0 && out.borrow().reader_gone() {
            return Ok(());
        }
        housekeeping()?;
    }

    // Stopping: print what the kernel already queued (unless -c is satisfied), then the count of losses.
    ring.consume_raw();
    if let Some(err) = write_error.borrow_mut().take() {
        return quiet_if_broken_pipe(err);
    }
    let total = losses();
    let mut out = out.borrow_mut();
    let ended = report_losses(total, reported, &mut **format.borrow_mut(), &mut out).and_then(|_| out.flush());
    if let Err(e) = ended {
        return quiet_if_broken_pipe(e);
    }
    if total.events > 0 {
        eprintln!("tcpkit: {} events lost in total: the ring buffer was full (see --ring-size)", total.events);
    }
    if total.unremembered > 0 {
        eprintln!(
            "tcpkit: {} connections not remembered in total: the kernel refused tcpkit's map updates ({})",
            total.unremembered,
            errno_name(total.unremembered_error)
        );
    }
    Ok(())
}

/// Says on stderr, and in the output where the format has a record for it, how many events were lost
/// since the last report; and how many connections the kernel would not let tcpkit remember, whose events
/// may be missing or name no process.
fn report_losses(now: Losses, reported: Losses, format: &mut impl Format, out: &mut Output) -> io::Result<Losses> {
    if now.events > reported.events {
        eprintln!("tcpkit: lost {} events", now.events - reported.events);
        format.lost(now.events - reported.events, out.writer())?;
    }
    if now.cgroups > reported.cgroups {
        eprintln!(
            "tcpkit: {} cgroup records lost (the ring buffer was full): containers gone before their events print show no name",
            now.cgroups - reported.cgroups
        );
    }
    if now.unremembered > reported.unremembered {
        eprintln!(
            "tcpkit: {} connections not remembered (a kernel map update failed: {}): their events may be missing",
            now.unremembered - reported.unremembered,
            errno_name(now.unremembered_error)
        );
    }
    Ok(now)
}

/// A kernel helper's error (negative errno) by its name: EBUSY, E2BIG.
fn errno_name(err: i64) -> String {
    match i32::try_from(-err).map(nix::errno::Errno::from_raw) {
        Ok(nix::errno::Errno::UnknownErrno) | Err(_) => format!("error {err}"),
        Ok(known) => format!("{known:?}"),
    }
}

/// `tcpkit … | head` must end quietly and successfully, as any Unix filter does.
fn quiet_if_broken_pipe(err: io::Error) -> Result<()> {
    if is_broken_pipe(&err) {
        Ok(())
    } else {
        Err(Error::runtime(format!("writing output: {err}")))
    }
}
