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

/// Backends to try, best first, and those auto skips with the reason. Auto skips fentry when the kernel
/// refuses trampolines, and kprobes when the kernel plainly has none: a kprobe program loads fine there and
/// only fails at attach, so trying it would cost a whole load for nothing.
fn candidates(choice: BackendArg) -> (Vec<Backend>, Vec<(Backend, &'static str)>) {
    let (mut tried, mut skipped) = (Vec::with_capacity(3), Vec::new());
    match choice {
        BackendArg::Fentry => tried.push(Backend::Fentry),
        BackendArg::Kprobe => tried.push(Backend::Kprobe),
        BackendArg::Tracepoint => tried.push(Backend::Tracepoint),
        BackendArg::Auto => {
            match trampolines_refused() {
                true => skipped.push((Backend::Fentry, "the kernel refuses fentry/fexit programs (EPERM)")),
                false => tried.push(Backend::Fentry),
            }
            match kprobes_available() {
                true => tried.push(Backend::Kprobe),
                false => skipped.push((Backend::Kprobe, "the kernel has no kprobes")),
            }
            tried.push(Backend::Tracepoint);
        }
    }
    (tried, skipped)
}

/// Whether the kernel refuses fentry/fexit outright, asked with a two-instruction fexit program that names
/// no function. A kernel that allows trampolines rejects it as malformed (EINVAL: no target); one whose
/// policy refuses them (as the development VM's does) says EPERM before it looks at the target. The
/// question costs well under a millisecond; finding out by a full fentry attempt cost ~25 ms of start-up
/// (kernel BTF parsed, maps made, programs verified, all thrown away). Any other answer leaves fentry to
/// be tried, so this can only skip a backend that would have failed.
fn trampolines_refused() -> bool {
    use libbpf_rs::libbpf_sys as sys;

    let mut mov_r0_0 = sys::bpf_insn { code: (sys::BPF_ALU64 | sys::BPF_MOV | sys::BPF_K) as u8, ..Default::default() };
    mov_r0_0.set_dst_reg(0);
    let exit = sys::bpf_insn { code: (sys::BPF_JMP | sys::BPF_EXIT) as u8, ..Default::default() };
    let insns = [mov_r0_0, exit];
    let mut opts = sys::bpf_prog_load_opts {
        sz: std::mem::size_of::<sys::bpf_prog_load_opts>() as _,
        expected_attach_type: sys::BPF_TRACE_FEXIT,
        ..Default::default()
    };
    // SAFETY: the instructions, license and options outlive the call; libbpf reads them and returns an fd
    // or -errno.
    let fd = unsafe {
        sys::bpf_prog_load(
            sys::BPF_PROG_TYPE_TRACING,
            std::ptr::null(),
            c"GPL".as_ptr(),
            insns.as_ptr(),
            insns.len() as _,
            &mut opts,
        )
    };
    if fd >= 0 {
        // Not expected without a target, but then nothing is refused.
        let _ = nix::unistd::close(fd);
        return false;
    }
    fd == -(nix::errno::Errno::EPERM as i32)
}

/// The io_uring tracepoints the tracepoint backend sees io_uring accepts through.
#[derive(Clone, Copy, Debug, Default)]
pub struct UringTracepoints {
    /// The kernel has io_uring at all (its tracepoint directory).
    pub present: bool,
    /// io_uring:io_uring_complete exists.
    pub complete: bool,
    /// Its record names no request (before 5.19): io_uring_submit_sqe must pair user_data with opcodes.
    pub submit_needed: bool,
    /// io_uring:io_uring_submit_sqe exists.
    pub submit: bool,
    /// io_uring:io_uring_task_add exists (5.8+): pairs accepts submitted before tcpkit started.
    pub task_add: bool,
}

impl UringTracepoints {
    /// Why the tracepoint backend cannot see io_uring accepts on this kernel, if it cannot.
    pub fn blind_spot(&self) -> Option<&'static str> {
        let seen = self.complete && (!self.submit_needed || self.submit);
        (self.present && !seen).then_some(
            "this kernel's io_uring tracepoints cannot say which requests were accepts: accepts made through \
             io_uring are not seen with the tracepoint backend (fentry or kprobe see them)",
        )
    }
}

/// Reads tracefs (preflight mounted it): which io_uring tracepoints exist and what their records hold.
pub fn uring_tracepoints() -> UringTracepoints {
    let Some(dir) = ["/sys/kernel/tracing/events/io_uring", "/sys/kernel/debug/tracing/events/io_uring"]
        .into_iter()
        .map(Path::new)
        .find(|d| d.is_dir())
    else {
        return UringTracepoints::default();
    };
    let complete = std::fs::read_to_string(dir.join("io_uring_complete/format")).ok();
    UringTracepoints {
        present: true,
        complete: complete.is_some(),
        submit_needed: complete.is_some_and(|f| !f.contains(" req;")),
        submit: dir.join("io_uring_submit_sqe").is_dir(),
        task_add: dir.join("io_uring_task_add").is_dir(),
    }
}

fn kprobes_available() -> bool {
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
    let (candidates, skipped) = candidates(choice);
    let mut failures = Vec::new();
    for (backend, why) in skipped {
        if debug {
            eprintln!("tcpkit: skipping the {backend} backend: {why}");
        }
        failures.push((backend, Error::runtime(why.to_string())));
    }
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
    let refused = failures.iter().any(|(_, e)| e.to_string().contains("Operation not permitted"));
    let hint = if refused && crate::preflight::seccomp_filter_on() {
        "a seccomp filter is on and refuses bpf() (container runtimes' default profiles allow it only with \
         CAP_SYS_ADMIN): run tcpkit with seccomp unconfined, see CONTAINERS in tcpkit(8)"
    } else {
        "run with --debug for libbpf's log"
    };
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
