//! The command line: shared filter, output and run-time flags, and one struct per subcommand.
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::ports::PortSet;

#[derive(Parser, Debug)]
#[command(
    name = "tcpkit",
    version = crate::VERSION,
    propagate_version = true,
    about = "Trace TCP connections with eBPF",
    max_term_width = 100
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Trace successful TCP accepts (like bcc's tcpaccept)
    #[command(after_help = ACCEPT_EXAMPLES)]
    Accept(AcceptArgs),
    /// Print a shell completion script for bash, zsh or fish (packages install them)
    #[command(hide = true)]
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Serve per-workload TCP metrics for Prometheus, counted in the kernel
    #[command(after_help = METRICS_EXAMPLES)]
    #[command(mut_arg("ports", |a| a.help("Give these ports a label of their own (the local port of accepted connections, the remote one of connects); the others count as port=\"other\"")))]
    Metrics(MetricsArgs),
    /// Trace connect, accept and close of established TCP connections (like bcc's tcptracer)
    #[command(after_help = TRACER_EXAMPLES)]
    #[command(mut_arg("ports", |a| a.help("Trace connections with one of these ports at either end only: a comma list of ports and ranges, e.g. 80,443,8000-8080")))]
    Tracer(TracerArgs),
}

const TRACER_EXAMPLES: &str = "Examples:
  tcpkit tracer                 # trace connects, accepts and closes
  tcpkit tracer -v              # with type words and the network namespace
  tcpkit tracer -t              # include timestamps
  tcpkit tracer -p 181          # only PID 181
  tcpkit tracer -N 4026531969   # only network namespace 4026531969
  tcpkit tracer -P 80,443 -6    # only IPv6 connections with port 80 or 443 at either end
  tcpkit tracer --failed        # also connects that failed, with their error (ECONNREFUSED, ...)
  tcpkit tracer -L              # closes with how they ended, lifespan and bytes
  tcpkit tracer -S              # handshake time, SYN retransmits, accept-queue wait, RTT, retransmits
  tcpkit tracer -C              # with the container (or systemd unit) of each task
  tcpkit tracer --container 3f2a9c0d81b7   # only that container's connections (or --container NAME)
  tcpkit tracer -C --namespace shop        # only the pods of Kubernetes namespace shop, by name";

#[derive(Args, Debug)]
pub struct TracerArgs {
    /// Print type words (connect, accept, close) and a NETNS column (left out with -N)
    #[arg(short = 'v', long = "verbose")]
    pub verbose: bool,
    /// Also print connects that failed (type F), with an ERROR column
    #[arg(long = "failed")]
    pub failed: bool,
    /// Print how each connection ended, its lifespan and its bytes on X lines (END, MS, TX, RX columns)
    #[arg(short = 'L', long = "lifespan")]
    pub lifespan: bool,
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(flatten)]
    pub filter: FilterArgs,
    #[command(flatten)]
    pub run: RunArgs,
}

const METRICS_EXAMPLES: &str = "Examples:
  tcpkit metrics                          # serve http://0.0.0.0:10070/metrics
  tcpkit metrics --listen 127.0.0.1:10070  # on loopback only
  tcpkit metrics --listen [::]:10070       # on every IPv4 and IPv6 address
  tcpkit metrics -P 80,443,5432           # ports of their own for these, port=\"other\" for the rest
  tcpkit metrics --namespace shop         # only the pods of Kubernetes namespace shop";

/// Where `tcpkit metrics` listens unless told: a port the Prometheus project's list of exporters' default
/// ports leaves free (its wiki's "Default port allocations": 9100 to 9999 are all taken, and exporters
/// since have taken ports from 10001 up, past 10058 by 2026; 10063 to 10079 are free there and unassigned
/// by IANA).
pub const DEFAULT_LISTEN: &str = "0.0.0.0:10070";

#[derive(Args, Debug)]
pub struct MetricsArgs {
    /// Serve /metrics at this address and port (IPv6 in brackets: [::]:10070)
    #[arg(long = "listen", value_name = "ADDR:PORT", default_value = DEFAULT_LISTEN)]
    pub listen: String,
    /// Count at most this many series in the kernel; events of series beyond are counted in
    /// tcpkit_series_dropped_total
    #[arg(long = "max-series", value_name = "N", default_value_t = 8192, value_parser = parse_max_series)]
    pub max_series: u32,
    /// Keep the series of a workload whose cgroup is gone this many seconds more, so that scrapes see its
    /// last counts
    #[arg(long = "forget-after", value_name = "SECONDS", default_value = "300", value_parser = parse_duration)]
    pub forget_after: Duration,
    #[command(flatten)]
    pub filter: FilterArgs,
    #[command(flatten)]
    pub run: RunArgs,
}

const ACCEPT_EXAMPLES: &str = "Examples:
  tcpkit accept                 # trace all TCP accepts
  tcpkit accept -t              # include timestamps
  tcpkit accept -P 80,81 -4     # only IPv4 accepts on local ports 80 and 81
  tcpkit accept -p 181          # only accepts by PID 181
  tcpkit accept -S              # with each connection's wait in the accept queue and the queue's length
  tcpkit accept --cgroupmap /sys/fs/bpf/cgroups   # only cgroups in this pinned BPF map
  tcpkit accept -C              # with the container (or systemd unit) of each accepting task
  tcpkit accept --pod web-0 --namespace shop   # only that Kubernetes pod's accepts";

#[derive(Args, Debug)]
pub struct AcceptArgs {
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(flatten)]
    pub filter: FilterArgs,
    #[command(flatten)]
    pub run: RunArgs,
}

/// Filters: every one runs in the kernel, before an event is reserved.
#[derive(Args, Clone, Debug, Default)]
pub struct FilterArgs {
    /// Trace this process (thread group) only
    #[arg(short = 'p', long = "pid", value_name = "PID", value_parser = parse_pid)]
    pub pid: Option<u32>,
    /// Trace these local ports only: a comma list of ports and ranges, e.g. 80,443,8000-8080
    #[arg(short = 'P', long = "port", value_name = "PORTS", value_parser = parse_ports)]
    pub ports: Option<PortSet>,
    /// Trace IPv4 sockets only
    #[arg(short = '4', long = "ipv4", conflicts_with = "ipv6")]
    pub ipv4: bool,
    /// Trace IPv6 sockets only (IPv4-mapped peers on dual-stack sockets included)
    #[arg(short = '6', long = "ipv6")]
    pub ipv6: bool,
    /// Trace this user ID only
    #[arg(short = 'u', long = "uid", value_name = "UID", value_parser = parse_uid)]
    pub uid: Option<u32>,
    /// Trace this network namespace only (inode number, as in `stat -L -c %i /proc/PID/ns/net`)
    #[arg(short = 'N', long = "netns", value_name = "NETNS", value_parser = parse_netns)]
    pub netns: Option<u32>,
    /// Trace tasks in this cgroup v2 directory or below it only, e.g. /sys/fs/cgroup/system.slice
    #[arg(long = "cgroup", value_name = "PATH")]
    pub cgroup: Option<PathBuf>,
    /// Trace this container's tasks only: its full ID, a unique prefix of at least 12 hex digits, or its
    /// docker or podman name
    #[arg(long = "container", value_name = "ID|NAME", conflicts_with = "cgroup")]
    pub container: Option<String>,
    /// Trace this Kubernetes pod's tasks only, by name (with --namespace when the name is not unique here)
    #[arg(long = "pod", value_name = "NAME", conflicts_with_all = ["cgroup", "container"])]
    pub pod: Option<String>,
    /// Trace the tasks of this Kubernetes namespace's pods only (alone: every pod of it on this node)
    #[arg(long = "namespace", value_name = "NS", conflicts_with_all = ["cgroup", "container"])]
    pub namespace: Option<String>,
    /// Trace tasks whose cgroup v2 id is a key of this pinned BPF hash map only
    #[arg(long = "cgroupmap", value_name = "PATH")]
    pub cgroupmap: Option<PathBuf>,
    /// Trace tasks whose mount namespace inode is a key of this pinned BPF hash map only
    #[arg(long = "mntnsmap", value_name = "PATH")]
    pub mntnsmap: Option<PathBuf>,
    /// Where the node's /var/log, /run and /var/lib are, for container and pod names (in a container: where
    /// the host's are mounted)
    #[arg(long = "host-root", value_name = "DIR", default_value = "/")]
    pub host_root: PathBuf,
}

#[derive(Args, Debug, Default)]
pub struct OutputArgs {
    /// Include a wall-clock time column (HH:MM:SS)
    #[arg(short = 'T', long = "time")]
    pub time: bool,
    /// Include a timestamp column: seconds since the first event (tracer -v: nanoseconds)
    #[arg(short = 't', long = "timestamp")]
    pub timestamp: bool,
    /// Include a UID column
    #[arg(short = 'U', long = "print-uid")]
    pub print_uid: bool,
    /// Include a CONTAINER column: the container's name (namespace/pod/container under Kubernetes), else its
    /// short ID, else the systemd unit, else -
    #[arg(short = 'C', long = "print-container")]
    pub print_container: bool,
    /// Include how good each connection was: handshake, accept-queue wait and backlog, RTT, retransmits
    #[arg(short = 'S', long = "stats")]
    pub stats: bool,
    /// Output format: text (bcc's columns) or json (one object per line)
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,
    /// Same as -o json
    #[arg(long = "json", conflicts_with = "format")]
    pub json: bool,
}

impl OutputArgs {
    pub fn json(&self) -> bool {
        self.json || self.format == OutputFormat::Json
    }

    /// Whether records name each task's cgroup (JSON's identity fields, -C's column).
    pub fn names_cgroups(&self) -> bool {
        self.json() || self.print_container
    }
}

#[derive(ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OutputFormat {
    #[default]
    Text,
    Json,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Exit after printing this many events
    #[arg(short = 'c', long = "count", value_name = "N", value_parser = parse_count)]
    pub count: Option<u64>,
    /// Exit after this many seconds
    #[arg(short = 'd', long = "duration", value_name = "SECONDS", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Ring buffer size in bytes, a power of two from 4K to 256M (K and M suffixes allowed)
    #[arg(long = "ring-size", value_name = "BYTES", value_parser = parse_ring_size, default_value = "256K")]
    pub ring_size: u32,
    /// Kernel hook to use; auto picks the best one the kernel can attach
    #[arg(long = "backend", value_enum, default_value_t = BackendArg::Auto)]
    pub backend: BackendArg,
    /// Print the chosen backend and libbpf's diagnostics on stderr
    #[arg(long = "debug")]
    pub debug: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendArg {
    Auto,
    Fentry,
    Kprobe,
    Tracepoint,
}

/// A number that `valid` accepts; anything else gets the one-line reason `why`.
fn number_where<T: std::str::FromStr>(s: &str, valid: impl Fn(&T) -> bool, why: &str) -> Result<T, String> {
    s.parse::<T>().ok().filter(|n| valid(n)).ok_or_else(|| why.to_string())
}

fn parse_pid(s: &str) -> Result<u32, String> {
    number_where(s, |&pid| pid > 0 && pid <= i32::MAX as u32, "a PID is a positive whole number")
}

fn parse_uid(s: &str) -> Result<u32, String> {
    number_where(s, |&uid| uid != u32::MAX, "a UID is a whole number from 0 to 4294967294")
}

fn parse_count(s: &str) -> Result<u64, String> {
    number_where(s, |&n| n > 0, "a count is a positive whole number")
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let why = "a duration is a positive number of seconds, e.g. 10 or 0.5";
    number_where(s, |&secs: &f64| secs > 0.0 && secs <= 1e9, why).map(Duration::from_secs_f64)
}

/// Bytes with an optional K or M suffix (powers of 1024); the kernel wants a power of two of pages.
fn parse_ring_size(s: &str) -> Result<u32, String> {
    let (digits, unit) = match s.as_bytes().last() {
        Some(b'K' | b'k') => (&s[..s.len() - 1], 1024),
        Some(b'M' | b'm') => (&s[..s.len() - 1], 1024 * 1024),
        _ => (s, 1),
    };
    let bytes = digits.parse::<u64>().ok().and_then(|n| n.checked_mul(unit));
    match bytes {
        Some(b) if b.is_power_of_two() && (4096..=256 << 20).contains(&b) => Ok(b as u32),
        _ => Err("the ring size is a power of two from 4K to 256M, e.g. 64K or 1M".into()),
    }
}

fn parse_max_series(s: &str) -> Result<u32, String> {
    number_where(s, |&n| (16..=1 << 20).contains(&n), "--max-series is a whole number from 16 to 1048576")
}

fn parse_netns(s: &str) -> Result<u32, String> {
    number_where(s, |&ino| ino > 0, "a network namespace is its inode number, e.g. 4026531969")
}

fn parse_ports(s: &str) -> Result<PortSet, String> {
    s.parse()
}
