//! The machine the benchmark ran on.
use std::fs;
use std::io;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::thread;

use crate::watch::{Bench, Sub};

pub(crate) struct Machine {
    pub(crate) kernel: String,
    pub(crate) cpus: usize,
    pub(crate) cpu_model: String,
    pub(crate) date: String,
    pub(crate) tcpkit_version: String,
    pub(crate) backend: String,
    pub(crate) bpftrace_version: Option<String>,
}

pub(crate) fn machine_info(bench: &Bench) -> io::Result<Machine> {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    Ok(Machine {
        kernel: fs::read_to_string("/proc/sys/kernel/osrelease")?.trim().to_string(),
        cpus: thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model: cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name")?.split_once(':').map(|(_, m)| m.trim().to_string()))
            .unwrap_or_else(|| "unknown".into()),
        date: chrono::Local::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
        tcpkit_version: command_output(Command::new(&bench.tcpkit).arg("--version"))?.0.trim().to_string(),
        backend: tcpkit_backend(bench)?,
        bpftrace_version: find_in_path("bpftrace")
            .and_then(|b| command_output(Command::new(b).arg("--version")).ok())
            .map(|(out, _)| out.trim().to_string()),
    })
}

/// The backend tcpkit picks on this kernel, as `--debug` says on stderr.
fn tcpkit_backend(bench: &Bench) -> io::Result<String> {
    let mut command = bench.tcpkit_command(Sub::Accept, None);
    command.args(["--debug", "-d", "0.1"]);
    let (_, stderr) = command_output(&mut command)?;
    stderr
        .lines()
        .find_map(|l| l.strip_prefix("tcpkit: using the ")?.strip_suffix(" backend"))
        .map(str::to_string)
        .ok_or_else(|| io::Error::other(format!("tcpkit accept --debug named no backend: {}", stderr.trim())))
}

fn command_output(command: &mut Command) -> io::Result<(String, String)> {
    let output = command.stdin(Stdio::null()).output()?;
    Ok((String::from_utf8_lossy(&output.stdout).into_owned(), String::from_utf8_lossy(&output.stderr).into_owned()))
}

pub(crate) fn find_in_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?).map(|dir| dir.join(name)).find(|p| p.is_file())
}
