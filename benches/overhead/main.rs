//! tcpkit's overhead benchmark (issue 5): what tracing costs a machine that opens and closes TCP connections
//! as fast as it can, measured in one run on one machine. It measures:
//!
//! - the loopback connection rate untraced (the ceiling), and while `tcpkit accept`, `tcpkit tracer` and (when
//!   installed) bpftrace print every event into a file, interleaved untraced/traced so that drift cancels out;
//! - whether every event was printed: expected (from the load's own counts) against printed and lost;
//! - start-up (exec to header printed, programs attached), peak RSS and tcpkit's CPU per printed event;
//! - `tcpkit metrics`, which counts in the kernel and prints nothing, in the same rounds: its rate ratio, its
//!   BPF time and its CPU per connection between scrapes, and one scrape's time and memory with the kernel
//!   holding many series (series.rs);
//! - scaling with client threads and ring-buffer size.
//!
//! `scripts/bench.sh` builds tcpkit and runs this as root; it prints a table and writes
//! target/bench/results.json. The load runs in this process and tcpkit gets `-p <this pid>`, so tcpkit sees
//! exactly the load's events: per connection one accept (`tcpkit accept`), or a connect, an accept and two
//! closes (`tcpkit tracer`), all by this process.
//!
//! The modules depend one way. load, figures, bpf_cost and scrape use none of the others; options uses load;
//! watch (what runs a tracer) uses those; machine, soak and series use watch and what is below it; measure
//! uses machine too; report uses all of them; this file uses them all, and nothing uses it.
use std::fs;
use std::io;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

mod bpf_cost;
mod figures;
mod load;
mod machine;
mod measure;
mod options;
mod report;
mod scrape;
mod series;
mod soak;
mod watch;

use machine::machine_info;
use measure::{bpf_costs, compare, scale, time_startups};
use options::Options;
use report::{machine_line, Report};
use watch::{Bench, Sub, Watcher};

/// Whose BPF time per connection is measured: every tcpkit row, and the baseline build's when there is one.
fn bpf_watchers(options: &Options) -> Vec<Watcher> {
    if options.bpf_runs == 0 {
        return Vec::new();
    }
    let subs = [
        Sub::Accept,
        Sub::AcceptStats,
        Sub::Tracer,
        Sub::TracerFailedLifespan,
        Sub::TracerStats,
        Sub::TracerJson,
        Sub::Metrics,
    ];
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
    // First, as it takes seconds: a failure here ends the run before the long parts.
    let many_series = series::scrape_many(&mut bench, options.scrape_series)?;
    let comparison = compare(&mut bench, options)?;
    let startup = time_startups(&bench, options.startups)?;
    let bpf = bpf_costs(&mut bench, &bpf_watchers(options), options.bpf_runs)?;
    let scaling = if options.no_scaling { Vec::new() } else { scale(&mut bench)? };

    let report = Report { machine, options, comparison, startup, scaling, bpf, many_series };
    print!("{}", report.table());
    let path = bench.dir.join("results.json");
    fs::write(&path, serde_json::to_string_pretty(&report.json()).expect("JSON of plain values") + "\n")?;
    println!("\nresults: {}", path.display());
    Ok(())
}
