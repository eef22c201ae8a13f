//! Checks that turn the kernel's terse refusals into messages that name the fix, before anything loads.
use std::fs;
use std::path::Path;

use nix::mount::{mount, MsFlags};

use crate::error::{Error, Result};

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

pub fn check() -> Result<()> {
    check_privileges()?;
    check_btf()?;
    ensure_tracefs()
}

fn check_privileges() -> Result<()> {
    let caps = effective_caps().unwrap_or(0);
    let has = |cap: u32| caps & (1u64 << cap) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        return Ok(());
    }
    Err(Error::runtime("tcpkit needs root (or CAP_BPF and CAP_PERFMON) to load BPF programs: run it with sudo"))
}

/// A seccomp filter is on (mode 2), as container runtimes' default profiles put one on every container.
pub fn seccomp_filter_on() -> bool {
    status_field("Seccomp:").is_some_and(|mode| mode == "2")
}

fn effective_caps() -> Option<u64> {
    u64::from_str_radix(&status_field("CapEff:")?, 16).ok()
}

/// A field of /proc/self/status, trimmed.
fn status_field(name: &str) -> Option<String> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim().to_string())
}

fn check_btf() -> Result<()> {
    if Path::new("/sys/kernel/btf/vmlinux").exists() {
        return Ok(());
    }
    Err(Error::runtime(
        "this kernel has no BTF (/sys/kernel/btf/vmlinux is missing): tcpkit needs a kernel built with \
         CONFIG_DEBUG_INFO_BTF=y (Linux 5.10 or later from most distributions)",
    ))
}

/// libbpf finds tracepoint ids in tracefs; systemd mounts it at boot, minimal systems may not.
fn ensure_tracefs() -> Result<()> {
    let mounted =
        ["/sys/kernel/tracing/events", "/sys/kernel/debug/tracing/events"].iter().any(|p| Path::new(p).is_dir());
    if mounted {
        return Ok(());
    }
    mount(Some("tracefs"), "/sys/kernel/tracing", Some("tracefs"), MsFlags::empty(), None::<&str>).map_err(|e| {
        Error::runtime(format!(
            "tracefs is not mounted and mounting it at /sys/kernel/tracing failed ({e}): \
             mount it with 'mount -t tracefs nodev /sys/kernel/tracing'"
        ))
    })
}
