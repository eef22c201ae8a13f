//! What a run is asked to do: the benchmark's options, and the constants its parts share. It depends on
//! nothing of the benchmark but the load's shape, so that every other part may depend on it.
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::load::Shape;

/// The longest a tracer may take to be ready (header printed, programs attached).
pub(crate) const READY_LIMIT: Duration = Duration::from_secs(10);
/// The small ring of the scaling runs.
pub(crate) const SMALL_RING: &str = "16K";
/// Other processes using more than this share of the CPUs during a run make it noise: such a pair is
/// measured again, up to PAIR_ATTEMPTS times, each after waiting up to QUIET_WAIT for the machine to be quiet.
pub(crate) const BUSY_SHARE: f64 = 0.05;
pub(crate) const PAIR_ATTEMPTS: usize = 3;
/// The row of untraced runs compared with untraced runs.
pub(crate) const CONTROL: &str = "untraced (control)";

#[derive(Parser, Debug)]
#[command(name = "overhead", about = "What tcpkit costs: loopback connection rate untraced and traced, and more")]
pub(crate) struct Options {
    /// Connections per measured run, all client threads together
    #[arg(long, default_value_t = 8_000)]
    pub(crate) connections: u64,
    /// Client threads in the interleaved comparison (scaling always runs 1, 2 and 4)
    #[arg(long, default_value_t = 1)]
    pub(crate) threads: usize,
    /// Rounds of the comparison: untraced twice (the control), untraced then accept, untraced then tracer,
    /// untraced then bpftrace. Many short rounds: one pair's ratio varies by ±15% on a VM, their median by
    /// a few hundredths (see the control row). Even, so that each order (untraced or traced first) runs
    /// as often
    #[arg(long, default_value_t = 16)]
    pub(crate) rounds: usize,
    /// Start-ups timed per subcommand
    #[arg(long, default_value_t = 7)]
    pub(crate) startups: usize,
    /// Seconds after which a run's load gives up
    #[arg(long, default_value_t = 60)]
    pub(crate) time_limit: u64,
    /// Skip the scaling runs
    #[arg(long)]
    pub(crate) no_scaling: bool,
    /// Leave out the peers (bpftrace, libbpf-tools) even when installed
    #[arg(long)]
    pub(crate) no_peers: bool,
    /// Run only the soak instead: `tcpkit tracer --failed -L -o json` at the ceiling for this many seconds,
    /// sampled every 30 s (RSS, per-socket state, events/s, CPU per event), then its totals
    #[arg(long, value_name = "SECONDS")]
    pub(crate) soak: Option<u64>,
    /// Runs per tracer of the BPF time per connection (bpf_stats); 0 skips it
    #[arg(long, default_value_t = 5)]
    pub(crate) bpf_runs: usize,
    /// Series that `tcpkit metrics` holds in the kernel when one scrape of it is timed (about four per
    /// loopback port connected to once); 0 skips it
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub(crate) scrape_series: usize,
    /// Leave the load's threads to the scheduler instead of pinning each one to a CPU
    #[arg(long)]
    pub(crate) no_pin: bool,
    /// Who accepts: each client thread its own connections (loop), or one acceptor thread per family
    #[arg(long, value_enum, default_value_t = Shape::Loop)]
    pub(crate) shape: Shape,
    /// The tcpkit binary
    #[arg(long, default_value = env!("CARGO_BIN_EXE_tcpkit"))]
    pub(crate) tcpkit: PathBuf,
    /// An earlier tcpkit build, whose accept and tracer get rows of their own in the same run (before/after
    /// a change, as same-run ratios)
    #[arg(long, value_name = "PATH")]
    pub(crate) baseline: Option<PathBuf>,
    /// A floor build (cargo feature bench-floor: the same hooks, each moving a zeroed record through the
    /// ring), whose accept and tracer get rows of their own: what no tracer on these hooks goes below
    #[arg(long, value_name = "PATH")]
    pub(crate) floor: Option<PathBuf>,
    /// Passed by `cargo bench`; ignored
    #[arg(long, hide = true)]
    pub(crate) bench: bool,
}
