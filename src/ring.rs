//! The ring-buffer reader shared by every subcommand: decode, format into one buffered writer, account for
//! lost events, and stop cleanly on a signal or a closed pipe.
use std::cell::RefCell;
use std::io;

use libbpf_rs::{MapCore, RingBufferBuilder};

use crate::error::{Context, Error, Result};
use crate::event;
use crate::format::Format;
use crate::output::{is_broken_pipe, Output};
use crate::signals;

const EINTR: i32 = 4;

/// Reads events until asked to stop. `lost` reads the kernel's count of events dropped on a full ring.
pub fn run(events: &dyn MapCore, lost: impl Fn() -> u64, format: &mut impl Format) -> Result<()> {
    let out = RefCell::new(Output::stdout());
    let write_error: RefCell<Option<io::Error>> = RefCell::new(None);

    {
        let mut out = out.borrow_mut();
        if let Err(e) = format.header(out.writer()).and_then(|()| out.flush()) {
            return quiet_if_broken_pipe(e);
        }
    }

    let format = RefCell::new(format);
    let mut builder = RingBufferBuilder::new();
    builder
        .add(events, |data: &[u8]| {
            let Some(e) = event::decode(data) else { return 0 };
            match format.borrow_mut().event(&e, out.borrow_mut().writer()) {
                Ok(()) => 0,
                Err(err) => {
                    *write_error.borrow_mut() = Some(err);
                    -1 // stops this poll; the loop below reports the error
                }
            }
        })
        .context(|| "setting up the ring buffer".into())?;
    let ring = builder.build().context(|| "setting up the ring buffer".into())?;

    let mut reported_lost = 0;
    let mut timeout = crate::output::FLUSH_INTERVAL;
    while !signals::stop_requested() {
        let rc = ring.poll_raw(timeout);
        if let Some(err) = write_error.borrow_mut().take() {
            return quiet_if_broken_pipe(err);
        }
        if rc < 0 && rc != -EINTR {
            return Err(Error::runtime(format!("reading the ring buffer: {}", io::Error::from_raw_os_error(-rc))));
        }
        reported_lost = report_lost(lost(), reported_lost);
        timeout = match out.borrow_mut().after_batch() {
            Ok(t) => t,
            Err(e) => return quiet_if_broken_pipe(e),
        };
        if rc == 0 && out.borrow().reader_gone() {
            return Ok(());
        }
    }

    // Stopping: print what the kernel already queued, then the final count of losses.
    ring.consume_raw();
    if let Some(err) = write_error.borrow_mut().take() {
        return quiet_if_broken_pipe(err);
    }
    if let Err(e) = out.borrow_mut().flush() {
        return quiet_if_broken_pipe(e);
    }
    let total_lost = lost();
    report_lost(total_lost, reported_lost);
    if total_lost > 0 {
        eprintln!("tcpkit: {total_lost} events lost in total: the ring buffer was full");
    }
    Ok(())
}

fn report_lost(now: u64, reported: u64) -> u64 {
    if now > reported {
        eprintln!("tcpkit: lost {} events", now - reported);
    }
    now
}

/// `tcpkit … | head` must end quietly and successfully, as any Unix filter does.
fn quiet_if_broken_pipe(err: io::Error) -> Result<()> {
    if is_broken_pipe(&err) {
        Ok(())
    } else {
        Err(Error::runtime(format!("writing output: {err}")))
    }
}
