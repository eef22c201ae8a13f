//! What the running kernel allows, and the choice of hooks: fentry/fexit, else kprobes, else tracepoints.
use std::fmt;
use std::mem::MaybeUninit;
use std::path::Path;

use libbpf_rs::OpenObject;

use crate::cli::BackendArg;
use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Fentry,
    Kprobe,
    Tracepoint,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Fentry => "fentry",
            Backend::Kprobe => "kprobe",
            Backend::Tracepoint => "tracepoint",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Backends to try, best first. Auto skips kprobes when the kernel plainly has none: a kprobe program
/// loads fine there and only fails at attach, so trying it would cost a whole load for nothing.
pub fn candidates(choice: BackendArg) -> Vec<Backend> {
    match choice {
        BackendArg::Fentry => vec![Backend::Fentry],
        BackendArg::Kprobe => vec![Backend::Kprobe],
        BackendArg::Tracepoint => vec![Backend::Tracepoint],
        BackendArg::Auto if kprobes_available() => vec![Backend::Fentry, Backend::Kprobe, Backend::Tracepoint],
        BackendArg::Auto => vec![Backend::Fentry, Backend::Tracepoint],
    }
}

pub fn kprobes_available() -> bool {
    Path::new("/sys/bus/event_source/devices/kprobe/type").exists()
        || Path::new("/sys/kernel/tracing/kprobe_events").exists()
        || Path::new("/sys/kernel/debug/tracing/kprobe_events").exists()
}

/// Loads and attaches with the first backend that works. Each attempt gets its own object storage,
/// because a failed load leaves its skeleton unusable.
pub fn load_first<'obj, T>(
    choice: BackendArg,
    slots: &'obj mut [MaybeUninit<OpenObject>; 3],
    debug: bool,
    mut attempt: impl FnMut(Backend, &'obj mut MaybeUninit<OpenObject>) -> Result<T>,
) -> Result<(Backend, T)> {
    let candidates = candidates(choice);
    let mut failures = Vec::new();
    for (backend, slot) in candidates.iter().copied().zip(slots.iter_mut()) {
        match attempt(backend, slot) {
            Ok(loaded) => {
                if debug {
                    eprintln!("tcpkit: using the {backend} backend");
                }
                return Ok((backend, loaded));
            }
            Err(err) => {
                if debug {
                    eprintln!("tcpkit: the {backend} backend failed: {err}");
                }
                failures.push((backend, err));
            }
        }
    }
    let hint = "run with --debug for libbpf's log";
    Err(match failures.as_slice() {
        [(backend, err)] if choice != BackendArg::Auto => {
            Error::runtime(format!("the {backend} backend is not available on this kernel ({err}); {hint}"))
        }
        _ => {
            let each: Vec<String> = failures.iter().map(|(b, e)| format!("{b}: {e}")).collect();
            Error::runtime(format!("no backend works on this kernel ({}); {hint}", each.join("; ")))
        }
    })
}
