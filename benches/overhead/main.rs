//! tcpkit's overhead benchmark (issue 5): what tracing costs a machine that opens and closes TCP connections
//! as fast as it can, measured in one run on one machine. It measures:
//!
//! - the loopback connection rate untraced (the ceiling), and while `tcpkit accept`, `tcpkit tracer` and (when
//!   installed) bpftrace print every event into a file, interleaved untraced/traced so that drift cancels out;
//! - whether every event was printed: expected (from the load's own counts) against printed and lost;
//! - start-up (exec to header printed, programs attached), peak RSS and tcpkit's CPU per printed event;
//! - scaling with client threads and ring-buffer size.
//!
//! `scripts/bench.sh` builds tcpkit and runs this as root; it prints a table and writes
//! target/bench/results.json. The load runs in this process and tcpkit gets `-p <this pid>`, so tcpkit sees
//! exactly the load's events: per connection one accept (`tcpkit accept`), or a connect, an accept and two
//! closes (`tcpkit tracer`), all by this process.
use std::fs;
use std::io;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

mod bpf_cost;
mod load;
mod machine;
mod measure;
mod report;
mod soak;
mod watch;

use bpf_cost::bpf_costs;
use load::Shape;
use machine::machine_info;
use measure::{compare, scale, time_startups};
use report::{machine_line, Report};
use watch::{Bench, Sub, Watcher};

/// The longest a tracer may take to be ready (header printed, programs attached).
const READY_LIMIT: Duration = Duration::from_secs(10);
/// The small ring of the scaling runs.
const SMALL_RING: &str = "16K";
/// Other processes using more than this share of the CPUs during a run make it noise: such a pair is
/// measured again, up to PAIR_ATTEMPTS times, each after waiting up to QUIET_WAIT for the machine to be quiet.
const BUSY_SHARE: f64 = 0.05;
const PAIR_ATTEMPTS: usize = 3;
/// The row of untraced runs compared with untraced runs.
const CONTROL: &str = "untraced (control)";

#[derive(Parser, Debug)]
#[command(name = "overhead", about = "What tcpkit costs: loopback connection rate untraced and traced, and more")]
struct Options {
    /// Connections per measured run, all client threads together
    #[arg(long, default_value_t = 8_000)]
    connections: u64,
    /// Client threads in the interleaved comparison (scaling always runs 1, 2 and 4)
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Rounds of the comparison: untraced twice (the control), untraced then accept, untraced then tracer,
    /// untraced then bpftrace. Many short rounds: one pair's ratio varies by ±15% on a VM, their median by
    /// a few hundredths (see the control row). Even, so that each order (untraced or traced first) runs
    /// as often
    #[arg(long, default_value_t = 16)]
    rounds: usize,
    /// Start-ups timed per subcommand
    #[arg(long, default_value_t = 7)]
    startups: usize,
    /// Seconds after which a run's load gives up
    #[arg(long, default_value_t = 60)]
    time_limit: u64,
    /// Skip the scaling runs
    #[arg(long)]
    no_scaling: bool,
    /// Leave out the peers (bpftrace, libbpf-tools) even when installed
    #[arg(long)]
    no_peers: bool,
    /// Run only the soak instead: `tcpkit tracer --failed -L -o json` at the ceiling for this many seconds,
    /// sampled every 30 s (RSS, per-socket state, events/s, CPU per event), then its totals
    #[arg(long, value_name = "SECONDS")]
    soak: Option<u64>,
    /// Runs per tracer of the BPF time per connection (bpf_stats); 0 skips it
    #[arg(long, default_value_t = 5)]
    bpf_runs: usize,
    /// Leave the load's threads to the scheduler instead of pinning each one to a CPU
    #[arg(long)]
    no_pin: bool,
    /// Who accepts: each client thread its own connections (loop), or one acceptor thread per family
    #[arg(long, value_enum, default_value_t = Shape::Loop)]
    shape: Shape,
    /// The tcpkit binary
    #[arg(long, default_value = env!("CARGO_BIN_EXE_tcpkit"))]
    tcpkit: PathBuf,
    /// An earlier tcpkit build, whose accept and tracer get rows of their own in the same run (before/after
    /// a change, as same-run ratios)
    #[arg(long, value_name = "PATH")]
    baseline: Option<PathBuf>,
    /// A floor build (cargo feature bench-floor: the same hooks, each moving a zeroed record through the
    /// ring), whose accept and tracer get rows of their own: what no tracer on these hooks goes below
    #[arg(long, value_name = "PATH")]
    floor: Option<PathBuf>,
    /// Passed by `cargo bench`; ignored
    #[arg(long, hide = true)]
    bench: bool,
}

/// Whose BPF time per connection is measured: every tcpkit row, and the baseline build's when there is one.
fn bpf_watchers(options: &Options) -> Vec<Watcher> {
    if options.bpf_runs == 0 {
        return Vec::new();
    }
    let subs =
        [Sub::Accept, Sub::AcceptStats, Sub::Tracer, Sub::TracerFailedLifespan, Sub::TracerStats, Sub::TracerJson];
    let mut watchers: Vec<Watcher> = subs.into_iter().map(|sub| Watcher::Tcpkit { sub, ring: None }).collect();
    if options.baseline.is_some() {
        watchers.extend([Watcher::Baseline(Sub::Accept), Watcher::Baseline(Sub::Tracer)]);
    }
    if options.floor.is_some() {
        watchers.extend([Watcher::Floor(Sub::Accept), Watcher::Floor(Sub::Tracer)]);
    }
    watchers
}

fn main() -> ExitCode {
    let options = Options::parse();
    match run(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("overhead: {err}");
            ExitCode::FAILURE
        }
    }
}

fn run(options: &Options) -> io::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        return Err(io::Error::other("tcpkit loads BPF programs: run as root (scripts/bench.sh does)"));
    }
    if options.connections == 0 || options.threads == 0 || options.rounds == 0 || options.startups == 0 {
        return Err(io::Error::other("--connections, --threads, --rounds and --startups must be positive"));
    }
    let mut bench = Bench::new(options)?;
    let machine = machine_info(&bench)?;
    eprintln!("overhead: {}", machine_line(&machine));

    // One untraced run first, unreported: thread stacks, page cache and socket caches get warm.
    bench.measure(&Watcher::Untraced, bench.load(options.threads))?;
    if let Some(seconds) = options.soak {
        let soak = soak::soak(&mut bench, Duration::from_secs(seconds))?;
        print!("{}", report::soak_table(&machine, &soak));
        return Ok(());
    }
    let comparison = compare(&mut bench, options)?;
    let startup = time_startups(&bench, options.startups)?;
    let bpf = bpf_costs(&mut bench, &bpf_watchers(options), options.bpf_runs)?;
    let scaling = if options.no_scaling { Vec::new() } else { scale(&mut bench)? };

    let report = Report { machine, options, comparison, startup, scaling, bpf };
    print!("{}", report.table());
    let path = bench.dir.join("results.json");
    fs::write(&path, serde_json::to_string_pretty(&report.json()).expect("JSON of plain values") + "\n")?;
    println!("\nresults: {}", path.display());
    Ok(())
}
